//! `sluice-perf abuse` against a real `sluice-sc` and `sluice-spu` (from the same target
//! directory) on OS-chosen ports, in short forms: idle connections by the thousand, garbage,
//! half frames and oversized prefixes, slow consumers, a flooding producer. The assertions are
//! on correctness and bounded memory with generous bounds, never on latency.
//!
//! Regression tests among them: 2,000 idle connections on the SC (it refused every connection
//! past 256, new clients included), each costing one descriptor on either server and the SC's
//! thread no more than a wake-up per 5 s; half frames announcing 60 MiB to the SPU (it allocated and
//! zeroed the announced length per connection, 1.2 GB for 20 of them).

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_perf::cluster::{find_binary, LocalCluster, LocalClusterConfig};

const PERF: &str = env!("CARGO_BIN_EXE_sluice-perf");

/// Generous bound of the SPU's RSS under any of these abuses (it idles at ~30-90 MiB).
const SPU_RSS_MIB_MAX: f64 = 400.0;

fn bin_dir() -> PathBuf {
    Path::new(PERF).parent().expect("sluice-perf has a directory").to_path_buf()
}

fn start_cluster(directory: &Path, spu_flags: &[&str], sc_flags: &[&str]) -> LocalCluster {
    for (name, environment) in [("sluice-sc", "SLUICE_SC_BIN"), ("sluice-spu", "SLUICE_SPU_BIN")] {
        let found = find_binary(name, environment, Some(&bin_dir()));
        assert!(
            found.as_ref().is_ok_and(|path| path.starts_with(bin_dir()))
                || std::env::var_os(environment).is_some(),
            "{name} is not built in {}: `cargo build -p sluice-sc -p sluice-spu`",
            bin_dir().display()
        );
    }
    LocalCluster::start(
        &LocalClusterConfig {
            spu_flags: spu_flags.iter().map(|flag| flag.to_string()).collect(),
            sc_flags: sc_flags.iter().map(|flag| flag.to_string()).collect(),
            ..LocalClusterConfig::single_spu(directory.join("cluster"), Some(1), Some(bin_dir()))
        }
        .without_disk_floors(),
    )
    .unwrap_or_else(|error| panic!("the local cluster did not start: {error}"))
}

/// Runs `sluice-perf abuse <arguments>` and returns its JSON report; the run must succeed.
fn abuse(cluster: &LocalCluster, directory: &Path, arguments: &[&str]) -> serde_json::Value {
    let report = directory.join("abuse.json");
    let output = Command::new(PERF)
        .envs(sluice_perf::cluster::spu_disk_floors_off_env())
        .arg("abuse")
        .args(arguments)
        .arg("--sc")
        .arg(&cluster.sc_public_address)
        .arg("--topic=abuse")
        .arg("--create-topic")
        .arg(format!("--spu-pid={}", cluster.spu_pid().expect("the SPU runs")))
        .arg(format!("--sc-pid={}", cluster.sc_pid().expect("the SC runs")))
        .arg("--json")
        .arg(&report)
        .output()
        .expect("run sluice-perf abuse");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sluice-perf abuse {arguments:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nSPU \
         log:\n{}",
        output.status,
        sluice_perf::cluster::log_tail(&cluster.data_dir.join("logs/spu-1.log"), 30)
    );
    eprintln!("{stdout}");
    let text = std::fs::read_to_string(&report).expect("the report is written");
    serde_json::from_str(&text).expect("the report parses")
}

fn figure(report: &serde_json::Value, name: &str) -> f64 {
    report["figures"]
        .as_array()
        .and_then(|figures| figures.iter().find(|figure| figure["name"] == name))
        .and_then(|figure| figure["value"].as_f64())
        .unwrap_or_else(|| panic!("no figure {name:?} in {report:#}"))
}

/// Largest RSS of `server` over the report's samples, MiB.
fn rss_mib_max(report: &serde_json::Value, server: &str) -> f64 {
    report["servers"]
        .as_array()
        .expect("server samples")
        .iter()
        .filter(|sample| sample["server"] == server)
        .filter_map(|sample| sample["rss_mib"].as_f64())
        .fold(0.0, f64::max)
}

/// Records the probe received in its window named `phase`.
fn probe_received(report: &serde_json::Value, phase: &str) -> u64 {
    report["probe"]
        .as_array()
        .and_then(|windows| windows.iter().find(|window| window["phase"] == phase))
        .and_then(|window| window["received"].as_u64())
        .unwrap_or_else(|| panic!("no probe window {phase:?} in {report:#}"))
}

#[test]
fn thousands_of_idle_connections_are_held_beside_a_working_client() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let cluster = start_cluster(directory.path(), &[], &[]);
    let report = abuse(
        &cluster,
        directory.path(),
        &["idle", "--connections=2000", "--window=2s", "--probe-rate=100"],
    );
    for server in ["spu", "sc"] {
        let open = figure(&report, &format!("{server} connections still open after the hold"));
        assert_eq!(open, 2000.0, "{server}: {report:#}");
    }
    assert!(probe_received(&report, "idle held") > 0, "{report:#}");
    assert!(rss_mib_max(&report, "spu") < SPU_RSS_MIB_MAX, "{report:#}");
    // An idle connection costs each server its socket and nothing more (the SPU took a second
    // descriptor per connection from accept on, so 10,000 of them hit a 20,000 limit).
    for server in ["spu", "sc"] {
        let descriptors = figure(&report, &format!("{server} descriptors per idle connection"));
        assert!((0.9..1.1).contains(&descriptors), "{server}: {descriptors}\n{report:#}");
    }
    // The SC's connection threads sleep between shutdown checks (5 s); they woke every 100 ms,
    // then every 1 s (10,000 idle connections: 10,000 wake-ups a second, probe p99 +19 ms). A
    // slow machine wakes them less, never more.
    let wakeups = figure(&report, "sc wake-ups per idle connection per second");
    assert!(wakeups < 0.6, "{wakeups} wake-ups per idle SC connection per second\n{report:#}");
}

#[test]
fn garbage_half_frames_and_oversized_prefixes_are_closed_and_harm_no_one() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let timeout = "--frame-read-timeout-ms=1000";
    let cluster = start_cluster(directory.path(), &[timeout], &[timeout]);
    let report = abuse(
        &cluster,
        directory.path(),
        &["garbage", "--connections=20", "--window=2s", "--close-wait=10s", "--probe-rate=100"],
    );
    for server in ["spu", "sc"] {
        for kind in ["random", "half-frame", "oversized"] {
            let closed =
                figure(&report, &format!("{server} {kind}: connections closed by the server"));
            assert_eq!(closed, 20.0, "{server} {kind}: {report:#}");
        }
    }
    // 20 half frames announcing 60 MiB each: memory follows the bytes received.
    assert!(rss_mib_max(&report, "spu") < SPU_RSS_MIB_MAX, "{report:#}");
    assert!(probe_received(&report, "after") > 0, "{report:#}");
    let log = std::fs::read_to_string(cluster.data_dir.join("logs/spu-1.log")).expect("SPU log");
    assert!(log.contains("closing a client connection"), "no close logged:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn slow_consumers_hold_bounded_memory_and_do_not_stop_others() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let cluster = start_cluster(directory.path(), &[], &[]);
    let report = abuse(
        &cluster,
        directory.path(),
        &[
            "slow-consumer",
            "--connections=4",
            "--fetches=32",
            "--preload-bytes=33554432",
            "--window=3s",
            "--probe-rate=100",
        ],
    );
    assert!(probe_received(&report, "slow consumers") > 0, "{report:#}");
    assert!(rss_mib_max(&report, "spu") < SPU_RSS_MIB_MAX, "{report:#}");
}

#[test]
fn a_flooded_partition_leaves_the_others_served() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let cluster = start_cluster(directory.path(), &[], &[]);
    let report = abuse(&cluster, directory.path(), &["flood", "--window=2s", "--probe-rate=100"]);
    assert!(probe_received(&report, "flood") > 0, "{report:#}");
    assert!(figure(&report, "flood rate") > 0.0, "{report:#}");
    assert_eq!(figure(&report, "flood records failed"), 0.0, "{report:#}");
}
