//! `sluice-perf check`: a history checker in the manner of Jepsen's Kafka checker. Producers
//! write unique values (acks `all`, idempotent), every outcome is recorded, everything is read
//! back, and [`history::analyze`] reports lost, duplicated, inconsistent, reordered, aborted and
//! unexpected records per partition. [`run`] is the I/O; [`history`] is pure and tested with
//! hand-made histories holding each kind of violation.

pub mod history;
pub mod run;

use std::fmt::Write;

use history::{Analysis, Counts};

/// The per-partition table of a check (stdout).
pub fn table(analysis: &Analysis) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:>9} {:>9} {:>12} {:>7} {:>8} {:>9} {:>15} {:>6} {:>10} {:>12} {:>9} {:>8} {:>10}",
        "partition",
        "sent",
        "acknowledged",
        "failed",
        "unknown",
        "read",
        "unknown read",
        "lost",
        "duplicated",
        "inconsistent",
        "reordered",
        "aborted",
        "unexpected"
    );
    let mut row = |name: String, counts: &Counts| {
        let _ = writeln!(
            text,
            "{name:>9} {:>9} {:>12} {:>7} {:>8} {:>9} {:>15} {:>6} {:>10} {:>12} {:>9} {:>8} {:>10}",
            counts.sent,
            counts.acknowledged,
            counts.failed,
            counts.unknown,
            counts.read,
            format!("{}/{}", counts.unknown_read, counts.unknown),
            counts.lost,
            counts.duplicated,
            counts.inconsistent_offsets,
            counts.reordered,
            counts.aborted_reads,
            counts.unexpected
        );
    };
    for (partition, counts) in &analysis.partitions {
        row(partition.to_string(), counts);
    }
    row("total".into(), &analysis.total);
    text
}
