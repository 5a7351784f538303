//! Plain-text tables for the end of a run and of the suite (stdout).

use std::fmt::Write;

use crate::histogram::{format_micros, LatencySummary};
use crate::machine::{MachineCpu, STEAL_PERCENT_DISTURBED};
use crate::report::{Comparison, Limits, Measured, RunReport};
use crate::server_cpu::ProcessUsage;

/// The final table of one run.
pub fn run_table(report: &RunReport) -> String {
    let results = &report.results;
    let mut text = String::new();
    let _ =
        writeln!(text, "sluice-perf {} on topic {:?}", report.workload, report.parameters.topic);
    let mut row = |name: &str, value: String| {
        let _ = writeln!(text, "  {name:<22} {value}");
    };
    row("records", results.records.to_string());
    row("elapsed", format!("{:.2} s", results.elapsed_seconds));
    row("records/s", format!("{:.0}", results.records_per_second));
    row("throughput", format!("{:.1} MiB/s", results.mebibytes_per_second));
    if let Some(target) = results.target_records_per_second {
        row("target rate", format!("{target:.0} records/s (open loop)"));
    }
    if results.errors > 0 {
        row("errors", results.errors.to_string());
        if let Some(first) = &results.first_error {
            row("first error", first.clone());
        }
    }
    for (name, latency) in [
        ("produce latency", &results.produce_latency),
        ("end-to-end latency", &results.e2e_latency),
        ("poll latency", &results.poll_latency),
    ] {
        if let Some(latency) = latency {
            text.push_str(&latency_rows(name, latency));
        }
    }
    text.push_str(&process_rows(&report.server_processes));
    if let Some(cpu) = &report.machine_cpu {
        text.push_str(&machine_cpu_row(cpu));
    }
    text
}

fn machine_cpu_row(cpu: &MachineCpu) -> String {
    let mut text = format!(
        "  machine CPU: user {:.1}%, system {:.1}%, interrupts {:.1}%, iowait {:.1}%, idle \
         {:.1}%, steal {:.1}%\n",
        cpu.user_percent,
        cpu.system_percent,
        cpu.interrupts_percent,
        cpu.iowait_percent,
        cpu.idle_percent,
        cpu.steal_percent
    );
    if cpu.steal_percent > STEAL_PERCENT_DISTURBED {
        text.push_str(
            "  warning: the hypervisor took CPU time from this machine during the run (steal): \
             its figures measured a busy host as much as Sluice\n",
        );
    }
    text
}

fn latency_rows(name: &str, latency: &LatencySummary) -> String {
    let mut text = format!("  {name} ({} samples)\n", latency.count);
    for (label, micros) in latency.rows() {
        let _ = writeln!(text, "    {label:<20} {}", format_micros(micros));
    }
    text
}

fn process_rows(processes: &[ProcessUsage]) -> String {
    let mut text = String::new();
    for process in processes {
        let _ = writeln!(
            text,
            "  server {} (pid {}): {:.2} CPU s ({:.2} cores), RSS {:.1} MiB (peak {:.1})",
            process.command,
            process.pid,
            process.cpu_seconds,
            process.cpu_cores_busy,
            process.resident_bytes_end as f64 / 1048576.0,
            process.resident_bytes_peak as f64 / 1048576.0
        );
    }
    text
}

/// The limits measured by the suite.
pub fn limits_table(limits: &Limits) -> String {
    let mut text = String::from("machine limits\n");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(text, "  {name:<36} {value}");
    };
    for (name, fio) in [
        ("fio 64 KiB direct writes", &limits.fio_direct_write),
        ("fio 64 KiB direct writes + fdatasync", &limits.fio_direct_write_fdatasync),
        ("fio 1 MiB writes x4, fdatasync per 4", &limits.fio_grouped_durable_write),
        ("fio 64 KiB direct reads, 16 in flight", &limits.fio_direct_read),
    ] {
        row(
            name,
            match fio {
                Measured::Ok(fio) => format!("{:.1} MiB/s", fio.bytes_per_second / 1048576.0),
                Measured::Failed(why) => format!("not measured: {why}"),
            },
        );
    }
    row(
        "iperf3 loopback, 1 stream",
        match &limits.iperf3_loopback {
            Measured::Ok(iperf) => format!(
                "{:.1} MiB/s ({:.2} Gbit/s)",
                iperf.bytes_per_second / 1048576.0,
                iperf.bits_per_second / 1e9
            ),
            Measured::Failed(why) => format!("not measured: {why}"),
        },
    );
    text
}

/// Every Sluice figure beside its limit.
pub fn comparison_table(comparisons: &[Comparison]) -> String {
    let mut text = format!(
        "{:<44} {:>14} {:<30} {:>14} {:>7}\n",
        "sluice", "value", "limit", "limit value", "ratio"
    );
    let show = |value: f64, unit: &str| {
        if unit == "µs" {
            format_micros(value as u64)
        } else {
            format!("{value:.1} {unit}")
        }
    };
    for comparison in comparisons {
        let _ = writeln!(
            text,
            "{:<44} {:>14} {:<30} {:>14} {:>7.2}",
            comparison.figure,
            show(comparison.value, &comparison.unit),
            comparison.limit,
            show(comparison.limit_value, &comparison.unit),
            comparison.ratio
        );
    }
    text
}
