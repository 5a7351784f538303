//! `sluice-perf` against a real cluster: a real `sluice-sc` and `sluice-spu` (from the same
//! target directory) on OS-chosen ports, then `produce`, `consume` and `e2e` as processes with
//! `--json`, whose reports must parse and count every record; `suite` in a short form (its
//! standard runs, and its replicated runs on three SPUs); and `failover` with a few events.
//! No timed assertions: figures are whatever the machine gives.

use std::path::Path;
use std::process::Command;

use sluice_perf::cluster::{LocalCluster, LocalClusterConfig};
use sluice_perf::failover::{FailoverReport, FaultKind};
use sluice_perf::report::{RunReport, SuiteReport, WorkloadKind};
use sluice_testkit::process::{bin_dir, require_binaries};

const PERF: &str = env!("CARGO_BIN_EXE_sluice-perf");

/// Both server binaries must be built next to sluice-perf; say how when they are not.
fn require_servers() {
    require_binaries(&["sluice-sc", "sluice-spu"]);
}

fn start_cluster(directory: &Path) -> LocalCluster {
    require_servers();
    LocalCluster::start(
        &LocalClusterConfig::single_spu(directory.join("cluster"), None, Some(bin_dir()))
            .without_disk_floors(),
    )
    .unwrap_or_else(|error| panic!("the local cluster did not start: {error}"))
}

/// Runs `sluice-perf <arguments>` and parses the report it wrote.
fn perf_run(cluster: &LocalCluster, report: &Path, arguments: &[&str]) -> RunReport {
    let mut command = Command::new(PERF);
    command.envs(sluice_perf::cluster::spu_disk_floors_off_env());
    command.args(arguments).arg("--sc").arg(&cluster.sc_public_address).arg("--json").arg(report);
    for pid in cluster.pids() {
        command.arg(format!("--server-pid={pid}"));
    }
    let output = command.output().expect("run sluice-perf");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sluice-perf {arguments:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("records/s"), "no final table:\n{stdout}");
    let text = std::fs::read_to_string(report).expect("the report was written");
    RunReport::from_json(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

#[test]
fn produce_consume_and_e2e_reports_count_every_record() {
    let directory = tempfile::tempdir().unwrap();
    let cluster = start_cluster(directory.path());
    let produced = perf_run(
        &cluster,
        &directory.path().join("produce.json"),
        &["produce", "--topic=perf-test", "--create-topic", "--partitions=2", "--records=3000"],
    );
    assert_eq!(produced.workload, WorkloadKind::Produce);
    let results = &produced.results;
    assert_eq!((results.records, results.errors), (3000, 0), "{results:?}");
    assert_eq!(results.bytes, 3000 * 1024);
    assert!(results.records_per_second > 0.0 && results.mebibytes_per_second > 0.0);
    let latency = results.produce_latency.as_ref().expect("produce latency");
    assert_eq!(latency.count, 3000);
    assert!(latency.p50_us <= latency.p99_us && latency.p99_us <= latency.max_us);
    assert_eq!(produced.server_processes.len(), 2, "{:?}", produced.server_processes);
    assert!(produced.server_processes.iter().any(|process| process.command.contains("spu")));
    assert!(produced.server_processes.iter().all(|process| process.resident_bytes_end > 0));

    let consumed = perf_run(
        &cluster,
        &directory.path().join("consume.json"),
        &["consume", "--topic=perf-test", "--consumers=2"],
    );
    assert_eq!(consumed.workload, WorkloadKind::Consume);
    assert_eq!((consumed.results.records, consumed.results.bytes), (3000, 3000 * 1024));
    assert!(consumed.results.poll_latency.as_ref().is_some_and(|latency| latency.count > 0));

    let end_to_end = perf_run(
        &cluster,
        &directory.path().join("e2e.json"),
        &[
            "e2e",
            "--topic=perf-e2e",
            "--create-topic",
            "--records=2000",
            "--rate=4000",
            "--warmup=250ms",
            "--record-size=256",
            "--key-distribution=uniform:16",
        ],
    );
    let results = &end_to_end.results;
    assert_eq!((results.records, results.errors), (2000, 0), "{results:?}");
    assert_eq!(results.bytes, 2000 * 256);
    assert!(results.warmup_records > 0, "records of the warm-up are left out: {results:?}");
    assert_eq!(results.target_records_per_second, Some(4000.0));
    let latency = results.e2e_latency.as_ref().expect("end-to-end latency");
    assert_eq!(latency.count, 2000);
    assert!(latency.min_us > 0 && latency.p99_99_us <= latency.max_us);
    assert_eq!(results.produce_latency.as_ref().map(|latency| latency.count), Some(2000));
}

#[test]
fn a_workload_against_no_cluster_fails_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let output = Command::new(PERF)
        .envs(sluice_perf::cluster::spu_disk_floors_off_env())
        .args(["produce", "--records=10", "--sc", &address.to_string()])
        .output()
        .expect("run sluice-perf");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&address.to_string()), "the error names the SC: {stderr}");
}

#[test]
fn suite_runs_in_short_form_and_its_report_parses() {
    require_servers();
    let directory = tempfile::tempdir().unwrap();
    let results = directory.path().join("results");
    let output = Command::new(PERF)
        .envs(sluice_perf::cluster::spu_disk_floors_off_env())
        .args(["suite", "--duration=1s", "--warmup=0s", "--limit-duration=1s", "--record-size=512"])
        .arg("--runs=standard")
        .arg("--data-dir")
        .arg(directory.path().join("data"))
        .arg("--results-dir")
        .arg(&results)
        .arg("--bin-dir")
        .arg(bin_dir())
        .output()
        .expect("run sluice-perf suite");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "suite failed:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let files: Vec<_> =
        std::fs::read_dir(&results).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("suite-") && name.ends_with(".json"), "{name}");
    let report = SuiteReport::from_json(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert!(report.limits.fio_direct_write.value().is_some(), "{:?}", report.limits);
    assert!(report.limits.fio_direct_write_fdatasync.value().is_some());
    assert!(report.limits.fio_direct_read.value().is_some());
    assert!(report.limits.fio_grouped_durable_write.value().is_some());
    assert!(report.limits.iperf3_loopback.value().is_some());
    let names: Vec<&str> = report.runs.iter().map(|run| run.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "produce-1-partition",
            "consume-catch-up",
            "produce-2-partitions",
            "e2e-half-max-rate",
            "produce-100-partitions"
        ]
    );
    assert!(report.runs.iter().all(|run| run.report.value().is_some()), "{:?}", report.runs);
    // Produce against 4 limits (x3), consume against 2, two e2e percentiles, SPU memory.
    assert_eq!(report.comparisons.len(), 17, "{:?}", report.comparisons);
    assert!(report.comparisons.iter().all(|comparison| comparison.ratio.is_finite()));
    assert!(stdout.contains("ratio"), "{stdout}");
}

/// Runs `sluice-perf suite` with `arguments` (short runs, no limits) into a fresh results
/// directory and parses its one report.
fn short_suite(directory: &Path, arguments: &[&str]) -> (SuiteReport, String) {
    let results = directory.join("results");
    let output = Command::new(PERF)
        .envs(sluice_perf::cluster::spu_disk_floors_off_env())
        .args(["suite", "--duration=1s", "--warmup=0s", "--record-size=512", "--skip-limits"])
        .args(arguments)
        .arg("--data-dir")
        .arg(directory.join("data"))
        .arg("--results-dir")
        .arg(&results)
        .arg("--bin-dir")
        .arg(bin_dir())
        .output()
        .expect("run sluice-perf suite");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "suite failed:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let files: Vec<_> =
        std::fs::read_dir(&results).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let report = SuiteReport::from_json(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    (report, stdout)
}

#[test]
fn suite_replicated_runs_compare_rf3_with_rf1_on_three_spus() {
    require_servers();
    let directory = tempfile::tempdir().unwrap();
    let (report, stdout) =
        short_suite(directory.path(), &["--runs=replicated", "--many-partitions=4"]);
    let names: Vec<&str> = report.runs.iter().map(|run| run.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "rf1-produce-1-partition",
            "rf3-produce-1-partition",
            "rf3-e2e-half-max-rate",
            "rf3-produce-100-partitions"
        ]
    );
    for run in &report.runs {
        let measured = run.report.value().unwrap_or_else(|| panic!("{} failed: {run:?}", run.name));
        assert_eq!(measured.results.errors, 0, "{}: {:?}", run.name, measured.results);
        assert!(measured.results.records > 0, "{}: {:?}", run.name, measured.results);
        // The SC and all three SPUs are accounted for.
        let spus =
            measured.server_processes.iter().filter(|process| process.command.contains("spu"));
        assert_eq!(spus.count(), 3, "{}: {:?}", run.name, measured.server_processes);
    }
    let rf3 = report.runs[1].report.value().unwrap();
    assert_eq!((rf3.parameters.replication, rf3.parameters.min_in_sync), (3, 2));
    assert_eq!(report.runs[3].report.value().unwrap().parameters.partitions, 4);
    let figures: Vec<(&str, &str)> = report
        .comparisons
        .iter()
        .map(|comparison| (comparison.figure.as_str(), comparison.limit.as_str()))
        .collect();
    assert!(
        figures.iter().any(|(figure, limit)| figure.starts_with("produce RF 3")
            && *limit == "RF 1 on the same 3 SPUs"),
        "{figures:?}"
    );
    // RF 3 against RF 1 (ratio and target), two e2e percentiles, peak and end resident set.
    assert_eq!(report.comparisons.len(), 6, "{:?}", report.comparisons);
    assert!(report.comparisons.iter().all(|comparison| comparison.ratio.is_finite()));
    assert!(stdout.contains("ratio"), "{stdout}");
}

#[test]
fn failover_measures_a_few_events_and_writes_its_report() {
    require_servers();
    let directory = tempfile::tempdir().unwrap();
    let report_path = directory.path().join("failover.json");
    let output = Command::new(PERF)
        .envs(sluice_perf::cluster::spu_disk_floors_off_env())
        .args(["failover", "--leader-kills=2", "--leader-stops=1", "--follower-kills=1"])
        .arg("--stall-window=1s")
        .arg("--data-dir")
        .arg(directory.path().join("data"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--json")
        .arg(&report_path)
        .output()
        .expect("run sluice-perf failover");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // No timed assertion: a missed target exits non-zero, which a loaded machine may cause;
    // the report must be complete either way.
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|error| {
        panic!("no report ({error}):\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    let report: FailoverReport = serde_json::from_str(&text).unwrap();
    assert_eq!(report.samples.len(), 4, "{report:?}");
    let kinds: Vec<FaultKind> = report.samples.iter().map(|sample| sample.kind).collect();
    assert_eq!(
        kinds,
        [
            FaultKind::LeaderKill,
            FaultKind::LeaderKill,
            FaultKind::LeaderStop,
            FaultKind::FollowerKill
        ]
    );
    for sample in &report.samples {
        assert!(sample.first_ack_ms > 0.0, "{sample:?}");
        if sample.kind == FaultKind::FollowerKill {
            assert_ne!(sample.spu, sample.leader_before, "{sample:?}");
        } else {
            assert_eq!(sample.spu, sample.leader_before, "{sample:?}");
            assert!(sample.new_leader_seen_ms.is_some(), "{sample:?}");
        }
    }
    assert_eq!(report.summaries.len(), 4, "{:?}", report.summaries);
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.records_acknowledged > 0);
    assert!(stderr.contains("leader kill -9 2/2"), "progress lines: {stderr}");
    assert!(stdout.contains("p99 ms"), "summary table: {stdout}");
}
