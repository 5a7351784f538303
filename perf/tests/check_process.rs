//! `sluice-perf check` against a real cluster (a real `sluice-sc` and `sluice-spu` from the same
//! target directory, OS-chosen ports): a clean run is valid, counts every send and read, and
//! writes a JSON report; the verdict's exit status follows the analysis (hand-made histories
//! with each kind of violation are in the library's unit tests); at RF 3 on 3 SPUs, SPUs
//! killed with `kill -9` while it runs lose nothing.

use std::process::Command;

use sluice_perf::cluster::{LocalCluster, LocalClusterConfig};
use sluice_testkit::process::bin_dir;

const PERF: &str = env!("CARGO_BIN_EXE_sluice-perf");

#[test]
fn a_clean_run_is_valid_and_counts_every_send() {
    let directory = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&LocalClusterConfig::single_spu(
        directory.path().join("cluster"),
        None,
        Some(bin_dir()),
    ).without_disk_floors())
    .unwrap_or_else(|error| panic!("the local cluster did not start (build sluice-sc and sluice-spu with the same target directory): {error}"));
    let report = directory.path().join("check.json");
    let output = Command::new(PERF)
        .envs(sluice_perf::cluster::spu_disk_floors_off_env())
        .args(["check", "--topic=checked", "--create-topic", "--partitions=2", "--producers=2"])
        .args(["--duration=2s", "--rate=2000", "--tail"])
        .arg("--sc")
        .arg(&cluster.sc_public_address)
        .arg("--json")
        .arg(&report)
        .output()
        .expect("run sluice-perf check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "check failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("verdict: valid"), "{stdout}");
    let text = std::fs::read_to_string(&report).expect("the report was written");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(json["valid"], true);
    let total = &json["analysis"]["total"];
    let count = |name: &str| total[name].as_u64().unwrap_or_else(|| panic!("{name} in {total}"));
    assert!(count("acknowledged") > 100, "{total}");
    assert_eq!(count("sent"), count("acknowledged") + count("failed") + count("unknown"));
    assert_eq!(count("read"), count("acknowledged") + count("unknown_read"), "{total}");
    for kind in
        ["lost", "duplicated", "inconsistent_offsets", "reordered", "aborted_reads", "unexpected"]
    {
        assert_eq!(count(kind), 0, "{kind}");
    }
    assert_eq!(
        json["analysis"]["partitions"].as_object().map(|partitions| partitions.len()),
        Some(2),
        "{text}\n{stderr}"
    );

    // Run again on the same topic: the values already there carry this run's own ids (producer
    // 0, sequences from 0) at other offsets than the ones acknowledged now, so the verdict is
    // invalid and the exit status 1.
    let output = Command::new(PERF)
        .envs(sluice_perf::cluster::spu_disk_floors_off_env())
        .args(["check", "--topic=checked", "--producers=1", "--duration=1s", "--rate=500"])
        .arg("--sc")
        .arg(&cluster.sc_public_address)
        .output()
        .expect("run sluice-perf check again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("verdict: INVALID"), "{stdout}");
}

#[test]
fn spus_killed_during_a_check_at_rf_3_lose_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(
        &LocalClusterConfig {
            data_dir: directory.path().join("cluster"),
            cores: Some(1),
            bin_dir: Some(bin_dir()),
            spus: 3,
            sc_flags: Vec::new(),
            spu_flags: Vec::new(),
        }
        .without_disk_floors(),
    )
    .unwrap_or_else(|error| panic!("the local cluster did not start: {error}"));
    let report = directory.path().join("check.json");
    let check = Command::new(PERF)
        .envs(sluice_perf::cluster::spu_disk_floors_off_env())
        .args(["check", "--topic=killed", "--create-topic", "--partitions=3", "--replication=3"])
        .args(["--min-in-sync=2", "--producers=2", "--duration=12s", "--rate=1000", "--tail"])
        .arg("--sc")
        .arg(&cluster.sc_public_address)
        .arg("--json")
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice-perf check");
    // Each SPU leads one of the three partitions: kill each once, then start it again, while
    // the check produces. The check must see them all acknowledged and read back.
    let started = std::time::Instant::now();
    for (round, id) in cluster.spu_ids().into_iter().enumerate() {
        let due = std::time::Duration::from_secs(2 + 3 * round as u64);
        std::thread::sleep(due.saturating_sub(started.elapsed()));
        cluster.kill_spu(id).expect("kill an SPU");
        std::thread::sleep(std::time::Duration::from_millis(500));
        cluster.restart_spu(id).expect("restart the SPU");
    }
    let output = check.wait_with_output().expect("sluice-perf check ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "check failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let text = std::fs::read_to_string(&report).expect("the report was written");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let total = &json["analysis"]["total"];
    let count = |name: &str| total[name].as_u64().unwrap_or_else(|| panic!("{name} in {total}"));
    assert_eq!(json["valid"], true, "{total}");
    assert!(count("acknowledged") > 1000, "{total}");
    // Retries after the kills still learn their offsets.
    assert_eq!(count("acknowledged_without_offset"), 0, "{total}");
}
