//! `sluice-perf suite`: the machine's limits and Sluice's standard runs in one go, on one
//! machine, and every Sluice figure beside its limit.
//!
//! Steps: fio (64 KiB sequential direct writes, with and without fdatasync; 1 MiB writes 4
//! in flight with an fdatasync per 4; direct reads 16 in flight) in the data directory and iperf3 single-stream loopback; a local cluster (1 SPU, all cores); produce to
//! 1 partition with `acks all` and the catch-up consume of that topic; produce to 2
//! partitions; end-to-end at half the best produce rate; produce to 100 partitions (last, so
//! that the SPU's peak resident set, read against its target, covers a core hosting many
//! replicas); then the comparison table and the JSON report under `--results-dir`. A step that
//! fails is recorded as failed and the others still run; a run with failed records is named in
//! the summary. Each topic is deleted as soon as no later run reads it (the suite's SPU
//! removes a deleted topic's files at once), so the disk holds one run's data at a time (about
//! 15 GB on the development VM), not everything written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::args::{AckLevel, SuiteArgs, WorkloadArgs};
use crate::cluster::{LocalCluster, LocalClusterConfig};
use crate::error::PerfError;
use crate::limits::fio::{self, FioConfig};
use crate::limits::iperf;
use crate::machine::{GitInfo, MachineInfo};
use crate::report::{
    suite_file_name, unix_ms_now, write_json, Comparison, Limits, Measured, RunReport, SuiteReport,
    SuiteRun, WorkloadKind, SCHEMA_VERSION, SUITE_SCHEMA,
};
use crate::table;
use crate::workload::run::run;

/// Targets of issue 7 on the 2-core machine, read against the figures.
const E2E_P99_TARGET_US: f64 = 5_000.0;
const E2E_P99_99_TARGET_US: f64 = 20_000.0;
const SPU_RESIDENT_TARGET_BYTES: f64 = 100.0 * 1024.0 * 1024.0;
/// Partitions of the many-partition produce run (issue 7's memory target is stated for 100).
const MANY_PARTITIONS: u32 = 100;

/// Runs the suite; returns the report and the path it was saved to.
pub fn run_suite(args: &SuiteArgs) -> Result<(SuiteReport, PathBuf), PerfError> {
    let data_dir = DataDir::new(args.data_dir.clone())?;
    let limits = measure_limits(args, data_dir.path());
    eprint!("{}", table::limits_table(&limits));
    eprintln!("starting a local cluster in {}", data_dir.path().display());
    let cluster = LocalCluster::start(&LocalClusterConfig {
        data_dir: data_dir.path().join("cluster"),
        cores: args.cores,
        bin_dir: args.bin_dir.clone(),
    })?;
    let runs = standard_runs(args, &cluster);
    drop(cluster);
    let comparisons = compare(&limits, &runs);
    let report = SuiteReport {
        schema: SUITE_SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created_unix_ms: unix_ms_now(),
        parameters: args.clone(),
        machine: MachineInfo::probe(),
        git: GitInfo::probe(),
        limits,
        runs,
        comparisons,
    };
    let path = args.results_dir.join(suite_file_name(report.created_unix_ms, &report.git));
    write_json(&path, &report)?;
    Ok((report, path))
}

fn measure_limits(args: &SuiteArgs, directory: &Path) -> Limits {
    if args.skip_limits {
        let skipped = || "skipped (--skip-limits)".to_owned();
        return Limits {
            fio_direct_write: Measured::Failed(skipped()),
            fio_direct_write_fdatasync: Measured::Failed(skipped()),
            fio_grouped_durable_write: Measured::Failed(skipped()),
            fio_direct_read: Measured::Failed(skipped()),
            iperf3_loopback: Measured::Failed(skipped()),
        };
    }
    eprintln!(
        "measuring limits: fio writes and reads in {}, iperf3 on loopback",
        directory.display()
    );
    let fio_run = |fdatasync| {
        Measured::from(fio::run(&FioConfig::sequential_64k(
            directory,
            args.limit_duration,
            fdatasync,
        )))
    };
    Limits {
        fio_direct_write: fio_run(false),
        fio_direct_write_fdatasync: fio_run(true),
        fio_grouped_durable_write: Measured::from(fio::run(&FioConfig::grouped_durable_writes(
            directory,
            args.limit_duration,
        ))),
        fio_direct_read: Measured::from(fio::run(&FioConfig::sequential_64k_reads(
            directory,
            args.limit_duration,
        ))),
        iperf3_loopback: iperf::run_loopback(args.limit_duration).into(),
    }
}

/// Defaults of every workload flag, as `sluice-perf produce` with no flag would have them.
pub fn default_workload_args() -> WorkloadArgs {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        workload: WorkloadArgs,
    }
    Defaults::try_parse_from(["sluice-perf"])
        .map(|defaults| defaults.workload)
        .expect("the workload flags all have defaults")
}

fn suite_workload(args: &SuiteArgs, cluster: &LocalCluster, topic: &str) -> WorkloadArgs {
    WorkloadArgs {
        sc: cluster.sc_public_address.clone(),
        topic: topic.into(),
        create_topic: true,
        record_size: args.record_size,
        producers: args.producers,
        acks: AckLevel::All,
        duration: Some(args.duration),
        warmup: args.warmup,
        server_pids: cluster.pids(),
        ..default_workload_args()
    }
}

fn standard_runs(args: &SuiteArgs, cluster: &LocalCluster) -> Vec<SuiteRun> {
    let mut runs = Vec::new();
    let attempt =
        |runs: &mut Vec<SuiteRun>, name: &str, kind: WorkloadKind, workload: WorkloadArgs| {
            eprintln!("suite: {name}");
            let report = Measured::from(run(kind, &workload));
            match &report {
                Measured::Ok(report) => println!("{}", table::run_table(report)),
                Measured::Failed(why) => eprintln!("suite: {name} failed: {why}"),
            }
            runs.push(SuiteRun { name: name.into(), report: report.clone() });
            report
        };
    // The suite writes tens of GB: each topic goes as soon as no later run needs it, so that
    // at most one run's data is on the disk at a time (two did not fit a 40 GB volume with the
    // SPU's free-space floor, and the second run's appends were refused).
    let delete = |topics: &[&str]| {
        if let Err(error) = cluster.delete_topics(topics) {
            eprintln!("suite: could not delete {topics:?} ({error}); their disk space stays used");
        }
    };
    let one = attempt(
        &mut runs,
        "produce-1-partition",
        WorkloadKind::Produce,
        WorkloadArgs { partitions: 1, ..suite_workload(args, cluster, "perf-p1") },
    );
    attempt(
        &mut runs,
        "consume-catch-up",
        WorkloadKind::Consume,
        WorkloadArgs {
            create_topic: false,
            duration: None,
            warmup: Duration::ZERO,
            ..suite_workload(args, cluster, "perf-p1")
        },
    );
    delete(&["perf-p1"]);
    let two = attempt(
        &mut runs,
        "produce-2-partitions",
        WorkloadKind::Produce,
        WorkloadArgs { partitions: 2, ..suite_workload(args, cluster, "perf-p2") },
    );
    delete(&["perf-p2"]);
    let best = [(1u32, one.value()), (2, two.value())]
        .into_iter()
        .filter_map(|(partitions, report)| Some((partitions, report?.results.records_per_second)))
        .max_by(|left, right| left.1.total_cmp(&right.1));
    if let Some((partitions, rate)) = best.filter(|(_, rate)| *rate > 0.0) {
        attempt(
            &mut runs,
            "e2e-half-max-rate",
            WorkloadKind::E2e,
            WorkloadArgs {
                partitions,
                consumers: partitions,
                rate: Some(rate / 2.0),
                ..suite_workload(args, cluster, "perf-e2e")
            },
        );
    } else {
        runs.push(SuiteRun {
            name: "e2e-half-max-rate".into(),
            report: Measured::Failed("no produce run measured a rate".into()),
        });
    }
    delete(&["perf-e2e"]);
    attempt(
        &mut runs,
        "produce-100-partitions",
        WorkloadKind::Produce,
        WorkloadArgs { partitions: MANY_PARTITIONS, ..suite_workload(args, cluster, "perf-p100") },
    );
    runs
}

fn run_named<'a>(runs: &'a [SuiteRun], name: &str) -> Option<&'a RunReport> {
    runs.iter().find(|run| run.name == name)?.report.value()
}

/// Every Sluice figure beside the limit (or target) it is read against.
pub fn compare(limits: &Limits, runs: &[SuiteRun]) -> Vec<Comparison> {
    const MIB: f64 = 1024.0 * 1024.0;
    let mut comparisons = Vec::new();
    let mut push = |figure: String, value: f64, unit: &str, limit: &str, limit_value: f64| {
        let lower_is_better = unit == "µs" || unit == "MiB RSS";
        let ratio =
            if lower_is_better { limit_value / value.max(1e-9) } else { value / limit_value };
        comparisons.push(Comparison {
            figure,
            value,
            unit: unit.into(),
            limit: limit.into(),
            limit_value,
            ratio,
        });
    };
    let fio_sync = limits.fio_direct_write_fdatasync.value().map(|fio| fio.bytes_per_second);
    let fio_plain = limits.fio_direct_write.value().map(|fio| fio.bytes_per_second);
    let fio_grouped = limits.fio_grouped_durable_write.value().map(|fio| fio.bytes_per_second);
    let iperf = limits.iperf3_loopback.value().map(|iperf| iperf.bytes_per_second);
    for (name, label) in [
        ("produce-1-partition", "produce 1 partition, acks all"),
        ("produce-2-partitions", "produce 2 partitions, acks all"),
        ("produce-100-partitions", "produce 100 partitions, acks all"),
    ] {
        let Some(report) = run_named(runs, name) else { continue };
        let value = report.results.bytes_per_second / MIB;
        for (limit, limit_value) in [
            ("iperf3 loopback", iperf),
            ("fio direct write + fdatasync", fio_sync),
            // Acks all waits for fdatasync; the SPU groups a partition's writes into rounds
            // of several MiB, each synced once, so this is the disk's bound for it.
            ("fio grouped durable write", fio_grouped),
            ("fio direct write", fio_plain),
        ] {
            if let Some(limit_value) = limit_value {
                push(label.into(), value, "MiB/s", limit, limit_value / MIB);
            }
        }
    }
    let fio_read = limits.fio_direct_read.value().map(|fio| fio.bytes_per_second);
    if let Some(report) = run_named(runs, "consume-catch-up") {
        let value = report.results.bytes_per_second / MIB;
        // The log is larger than memory and written with O_DIRECT: a consumer catching up
        // reads it from the device, so the device's read bandwidth bounds it too.
        for (limit, limit_value) in [("iperf3 loopback", iperf), ("fio direct read", fio_read)] {
            if let Some(limit_value) = limit_value {
                push("consume catch-up".into(), value, "MiB/s", limit, limit_value / MIB);
            }
        }
    }
    if let Some(latency) =
        run_named(runs, "e2e-half-max-rate").and_then(|report| report.results.e2e_latency.as_ref())
    {
        let p99 = latency.p99_us as f64;
        push("e2e p99 at half the max rate".into(), p99, "µs", "target", E2E_P99_TARGET_US);
        let p9999 = latency.p99_99_us as f64;
        push("e2e p99.99 at half the max rate".into(), p9999, "µs", "target", E2E_P99_99_TARGET_US);
    }
    let spu_peak = runs
        .iter()
        .filter_map(|run| run.report.value())
        .flat_map(|report| report.server_processes.iter())
        .filter(|process| process.command.contains("spu"))
        .map(|process| process.resident_bytes_peak)
        .max();
    if let Some(peak) = spu_peak {
        let target = SPU_RESIDENT_TARGET_BYTES / MIB;
        push("SPU peak resident set".into(), peak as f64 / MIB, "MiB RSS", "target", target);
    }
    comparisons
}

/// The suite's data directory: the given one (kept), or a fresh one under the temporary
/// directory (removed when dropped).
struct DataDir {
    path: PathBuf,
    remove: bool,
}

impl DataDir {
    fn new(given: Option<PathBuf>) -> Result<DataDir, PerfError> {
        let (path, remove) = match given {
            Some(path) => (path, false),
            None => (
                std::env::temp_dir().join(format!(
                    "sluice-perf-suite-{}-{}",
                    std::process::id(),
                    unix_ms_now()
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&path)
            .map_err(|error| PerfError::io(format!("create {}", path.display()), error))?;
        Ok(DataDir { path, remove })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
