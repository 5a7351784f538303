//! How long each fault kept partitions from accepting acks `all` (pure).
//!
//! The input is the acknowledgement timeline of `sluice-perf check --timeline`: for every
//! acknowledged send, its partition, when it was sent (its create time) and when its
//! acknowledgement came. A fault injected at `t` is over for a partition at the acknowledgement
//! of the first record *sent at or after* `t` to it: only a leader that works again can
//! acknowledge it, so the figure covers detection, election, the clients' metadata refresh and
//! their retries. A fault's recovery time is the longest over the partitions it touched; a
//! partition that never acknowledged anything sent after `t` leaves it unknown.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One acknowledged send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Its partition.
    pub partition: u32,
    /// When it was sent (ms since the Unix epoch).
    pub sent_ms: i64,
    /// When it was acknowledged (ms since the Unix epoch).
    pub acked_ms: i64,
}

/// Parses a timeline (`partition sent_ms acked_ms` lines) and sorts it by send time.
pub fn parse_timeline(text: &str) -> Result<Vec<Ack>, String> {
    let mut acks = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<_> = line.split_ascii_whitespace().collect();
        let parsed = match fields.as_slice() {
            [partition, sent, acked] => partition
                .parse()
                .ok()
                .zip(sent.parse().ok())
                .zip(acked.parse().ok())
                .map(|((partition, sent_ms), acked_ms)| Ack { partition, sent_ms, acked_ms }),
            _ => None,
        };
        acks.push(parsed.ok_or_else(|| {
            format!("line {}: expected `partition sent_ms acked_ms`, got {line:?}", number + 1)
        })?);
    }
    acks.sort_unstable_by_key(|ack| (ack.sent_ms, ack.partition));
    Ok(acks)
}

/// Milliseconds from `injected_ms` until every partition of `partitions` acknowledged a record
/// sent at or after it; `None` when one never did. `acks` sorted by send time.
pub fn recovery_ms(acks: &[Ack], injected_ms: i64, partitions: &BTreeSet<u32>) -> Option<u64> {
    let start = acks.partition_point(|ack| ack.sent_ms < injected_ms);
    let mut waiting = partitions.clone();
    let mut longest = 0i64;
    for ack in &acks[start..] {
        if waiting.remove(&ack.partition) {
            longest = longest.max(ack.acked_ms - injected_ms);
            if waiting.is_empty() {
                break;
            }
        }
        // Sends are in time order but acknowledgements are not: a later send to another
        // partition may be acknowledged before this partition's first; keep scanning until
        // each partition's first send after the fault is seen.
    }
    waiting.is_empty().then(|| longest.max(0) as u64)
}

/// p50, p99 and max of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// The percentiles of `values` (nearest rank); `None` for no values.
pub fn percentiles(values: &[u64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = |quantile: f64| {
        let index = (quantile * sorted.len() as f64).ceil() as usize;
        sorted[index.clamp(1, sorted.len()) - 1]
    };
    Some(Percentiles {
        count: sorted.len(),
        p50: rank(0.50),
        p99: rank(0.99),
        max: *sorted.last().expect("not empty"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(partition: u32, sent_ms: i64, acked_ms: i64) -> Ack {
        Ack { partition, sent_ms, acked_ms }
    }

    #[test]
    fn the_first_record_sent_after_the_fault_ends_it_for_its_partition() {
        let acks =
            parse_timeline("0 100 105\n1 101 107\n0 200 900\n1 201 260\n0 300 905\n1 301 310\n")
                .unwrap();
        // Partition 0's first send after 150 was acknowledged at 900; partition 1's at 260.
        assert_eq!(recovery_ms(&acks, 150, &BTreeSet::from([0])), Some(750));
        assert_eq!(recovery_ms(&acks, 150, &BTreeSet::from([1])), Some(110));
        assert_eq!(recovery_ms(&acks, 150, &BTreeSet::from([0, 1])), Some(750));
        // Acknowledgements of records sent before the fault do not count.
        assert_eq!(recovery_ms(&acks, 101, &BTreeSet::from([0])), Some(799));
        // A partition with nothing acknowledged after the fault: unknown.
        assert_eq!(recovery_ms(&acks, 150, &BTreeSet::from([2])), None);
        assert_eq!(recovery_ms(&acks, 400, &BTreeSet::from([0])), None);
    }

    #[test]
    fn timelines_are_sorted_by_send_time_and_bad_lines_are_named() {
        let acks = parse_timeline("1 20 30\n\n0 10 50\n").unwrap();
        assert_eq!(acks, vec![ack(0, 10, 50), ack(1, 20, 30)]);
        let error = parse_timeline("0 10 50\n0 x 3\n").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
        assert!(parse_timeline("0 10\n").is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentiles(&[]), None);
        let values: Vec<u64> = (1..=200).rev().collect();
        let summary = percentiles(&values).unwrap();
        assert_eq!((summary.count, summary.p50, summary.p99, summary.max), (200, 100, 198, 200));
        let one = percentiles(&[7]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
    }
}
