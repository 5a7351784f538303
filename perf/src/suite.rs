//! `sluice-perf suite`: the machine's limits and Sluice's standard runs in one go, on one
//! machine, and every Sluice figure beside its limit.
//!
//! Steps: fio (64 KiB sequential direct writes, with and without fdatasync; 1 MiB writes 4
//! in flight with an fdatasync per 4; direct reads 16 in flight) in the data directory and
//! iperf3 single-stream loopback. Then the run groups (`--runs`), each on its own local
//! cluster, started for it and stopped after it:
//!
//! - `standard` (1 SPU, all cores): produce to 1 partition with `acks all` and the catch-up
//!   consume of that topic; produce to 2 partitions; end-to-end at half the best produce
//!   rate; produce to 100 partitions (last, so that the SPU's peak resident set, read against
//!   its target, covers a core hosting many replicas).
//! - `replicated` (3 SPUs of 1 core each): produce to 1 partition at RF 1, then at RF 3 with
//!   min in-sync 2 (acks all: every in-sync replica has the batch durably), their ratio read
//!   against issue 18's 0.3; end-to-end at half the RF 3 rate; produce to 100 partitions at
//!   RF 3 (every SPU hosts all 100 replicas) for the SPUs' resident set.
//!
//! Then the comparison table and the JSON report under `--results-dir`. A step that fails is
//! recorded as failed and the others still run; a run with failed records is named in the
//! summary. Each topic is deleted as soon as no later run reads it (the suite's SPUs remove a
//! deleted topic's files at once), so the disk holds one run's data at a time (about 15 GB on
//! the development VM, times the replication factor), not everything written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::args::{AckLevel, RunGroup, SuiteArgs, WorkloadArgs};
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
/// SPUs of the replicated runs (issue 18: RF 3 on 3 SPUs).
const REPLICATED_SPUS: u32 = 3;
/// Replication factor and minimum in-sync replicas of the replicated runs.
const REPLICATION: u16 = 3;
const MIN_IN_SYNC: u16 = 2;
/// Issue 18's target for produce at RF 3 (acks all) against RF 1 on the same cluster.
const RF3_OVER_RF1_TARGET: f64 = 0.3;

/// Runs the suite; returns the report and the path it was saved to.
pub fn run_suite(args: &SuiteArgs) -> Result<(SuiteReport, PathBuf), PerfError> {
    let data_dir = DataDir::new(args.data_dir.clone())?;
    let limits = measure_limits(args, data_dir.path());
    eprint!("{}", table::limits_table(&limits));
    let mut runs = Vec::new();
    if args.runs.contains(&RunGroup::Standard) {
        let directory = data_dir.path().join("cluster");
        eprintln!("starting a local cluster (1 SPU) in {}", directory.display());
        let cluster = LocalCluster::start(&LocalClusterConfig::single_spu(
            directory,
            args.cores,
            args.bin_dir.clone(),
        ))?;
        runs.extend(standard_runs(args, &cluster));
    }
    if args.runs.contains(&RunGroup::Replicated) {
        let directory = data_dir.path().join("cluster-replicated");
        eprintln!(
            "starting a local cluster ({REPLICATED_SPUS} SPUs, 1 core each) in {}",
            directory.display()
        );
        let cluster = LocalCluster::start(&LocalClusterConfig {
            spus: REPLICATED_SPUS,
            ..LocalClusterConfig::single_spu(directory, Some(1), args.bin_dir.clone())
        })?;
        runs.extend(replicated_runs(args, &cluster));
    }
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

/// Runs `workload` as `kind`, prints its table, and records it as `name`.
fn attempt(
    runs: &mut Vec<SuiteRun>,
    name: &str,
    kind: WorkloadKind,
    workload: WorkloadArgs,
) -> Measured<RunReport> {
    eprintln!("suite: {name}");
    let report = Measured::from(run(kind, &workload));
    match &report {
        Measured::Ok(report) => println!("{}", table::run_table(report)),
        Measured::Failed(why) => eprintln!("suite: {name} failed: {why}"),
    }
    runs.push(SuiteRun { name: name.into(), report: report.clone() });
    report
}

/// Deletes `topics` and waits for their files to go (see [`LocalCluster::delete_topics`]).
fn delete(cluster: &LocalCluster, topics: &[&str]) {
    // The suite writes tens of GB: each topic goes as soon as no later run needs it, so that
    // at most one run's data is on the disk at a time (two did not fit a 40 GB volume with the
    // SPU's free-space floor, and the second run's appends were refused).
    if let Err(error) = cluster.delete_topics(topics) {
        eprintln!("suite: could not delete {topics:?} ({error}); their disk space stays used");
    }
}

/// End-to-end at half of `best` (partitions, records/s), or a failed run when there is none.
fn e2e_half_rate(
    runs: &mut Vec<SuiteRun>,
    name: &str,
    best: Option<(u32, f64)>,
    workload: WorkloadArgs,
) {
    if let Some((partitions, rate)) = best.filter(|(_, rate)| *rate > 0.0) {
        let workload =
            WorkloadArgs { partitions, consumers: partitions, rate: Some(rate / 2.0), ..workload };
        attempt(runs, name, WorkloadKind::E2e, workload);
    } else {
        let report = Measured::Failed("no produce run measured a rate".into());
        runs.push(SuiteRun { name: name.into(), report });
    }
}

fn standard_runs(args: &SuiteArgs, cluster: &LocalCluster) -> Vec<SuiteRun> {
    let mut runs = Vec::new();
    let delete = |topics: &[&str]| delete(cluster, topics);
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
    e2e_half_rate(&mut runs, "e2e-half-max-rate", best, suite_workload(args, cluster, "perf-e2e"));
    delete(&["perf-e2e"]);
    attempt(
        &mut runs,
        "produce-100-partitions",
        WorkloadKind::Produce,
        WorkloadArgs {
            partitions: args.many_partitions,
            ..suite_workload(args, cluster, "perf-p100")
        },
    );
    delete(&["perf-p100"]);
    runs
}

/// Issue 18's runs on three SPUs of one core each: RF 1 against RF 3 on the same cluster (the
/// RF 1 partition's leader has one core like each RF 3 replica), e2e at half the RF 3 rate,
/// and 100 partitions at RF 3 (each SPU hosting 100 replicas, a third of them leaders) last,
/// for the SPUs' resident set.
fn replicated_runs(args: &SuiteArgs, cluster: &LocalCluster) -> Vec<SuiteRun> {
    let mut runs = Vec::new();
    let delete = |topics: &[&str]| delete(cluster, topics);
    let replicated = |topic: &str| WorkloadArgs {
        replication: REPLICATION,
        min_in_sync: MIN_IN_SYNC,
        ..suite_workload(args, cluster, topic)
    };
    attempt(
        &mut runs,
        "rf1-produce-1-partition",
        WorkloadKind::Produce,
        WorkloadArgs { partitions: 1, ..suite_workload(args, cluster, "perf-rf1") },
    );
    delete(&["perf-rf1"]);
    let rf3 = attempt(
        &mut runs,
        "rf3-produce-1-partition",
        WorkloadKind::Produce,
        WorkloadArgs { partitions: 1, ..replicated("perf-rf3") },
    );
    delete(&["perf-rf3"]);
    let best = rf3.value().map(|report| (1, report.results.records_per_second));
    e2e_half_rate(&mut runs, "rf3-e2e-half-max-rate", best, replicated("perf-rf3-e2e"));
    delete(&["perf-rf3-e2e"]);
    attempt(
        &mut runs,
        "rf3-produce-100-partitions",
        WorkloadKind::Produce,
        WorkloadArgs { partitions: args.many_partitions, ..replicated("perf-rf3-p100") },
    );
    delete(&["perf-rf3-p100"]);
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
    // The replicated runs' SPUs are apart: one core each, and replicas to follow.
    let spu_peak = |replicated: bool| {
        runs.iter()
            .filter(|run| run.name.starts_with("rf") == replicated)
            .filter_map(|run| run.report.value())
            .flat_map(|report| report.server_processes.iter())
            .filter(|process| process.command.contains("spu"))
            .map(|process| process.resident_bytes_peak)
            .max()
    };
    let target = SPU_RESIDENT_TARGET_BYTES / MIB;
    if let Some(peak) = spu_peak(false) {
        push("SPU peak resident set".into(), peak as f64 / MIB, "MiB RSS", "target", target);
    }
    let rf1 =
        run_named(runs, "rf1-produce-1-partition").map(|report| report.results.bytes_per_second);
    if let Some(rf3) = run_named(runs, "rf3-produce-1-partition") {
        let value = rf3.results.bytes_per_second / MIB;
        let label = "produce RF 3 (3 SPUs, min in-sync 2), 1 partition, acks all";
        if let Some(rf1) = rf1 {
            push(label.into(), value, "MiB/s", "RF 1 on the same 3 SPUs", rf1 / MIB);
            let target = RF3_OVER_RF1_TARGET * rf1 / MIB;
            push(label.into(), value, "MiB/s", "target: 0.3 x RF 1", target);
        }
        if let Some(single) = run_named(runs, "produce-1-partition") {
            let limit = "produce 1 partition, 1 SPU with all cores";
            push(label.into(), value, "MiB/s", limit, single.results.bytes_per_second / MIB);
        }
    }
    if let Some(latency) = run_named(runs, "rf3-e2e-half-max-rate")
        .and_then(|report| report.results.e2e_latency.as_ref())
    {
        let figure = "e2e p99 at half the RF 3 max rate";
        push(figure.into(), latency.p99_us as f64, "µs", "target", E2E_P99_TARGET_US);
        let figure = "e2e p99.99 at half the RF 3 max rate";
        push(figure.into(), latency.p99_99_us as f64, "µs", "target", E2E_P99_99_TARGET_US);
    }
    if let Some(peak) = spu_peak(true) {
        let figure = "SPU peak resident set, RF 3 runs (3 SPUs)";
        push(figure.into(), peak as f64 / MIB, "MiB RSS", "target", target);
    }
    // After creating the partitions and the run's traffic: what each SPU holds for them.
    let end = run_named(runs, "rf3-produce-100-partitions").and_then(|report| {
        let spus = report.server_processes.iter().filter(|process| process.command.contains("spu"));
        spus.map(|process| process.resident_bytes_end).max()
    });
    if let Some(end) = end {
        let figure = "SPU resident set after the many-partition RF 3 run (largest of 3)";
        push(figure.into(), end as f64 / MIB, "MiB RSS", "target", target);
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
