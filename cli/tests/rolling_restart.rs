//! `sluice cluster rolling-restart` on a local cluster of 3 SPUs (1 core each), a topic of
//! replication 3 and min-in-sync 2, while an SDK producer (acks `all`, idempotent) and a
//! committed reader per partition run: nothing acknowledged is lost, duplicated or reordered
//! (the checks of the failover tests), every SPU was restarted (new PIDs), and every
//! partition ends fully in sync. Prints the produce acknowledgement latency (p50 / p99 / max)
//! before and during the rolling restart; no timing is asserted.
//!
//! `cargo test -p sluice-cli --test rolling_restart -- --nocapture` shows the figures.

mod common;

use std::time::{Duration, Instant};

use common::workload::{percentiles, Workload};
use common::{sluice, LocalCluster};
use sluice_client::{ClientConfig, Cluster};

const PARTITIONS: u32 = 2;
/// Acknowledgements collected before the restart, for the baseline latency.
const BASELINE_RECORDS: u64 = 1_000;

fn spu_pids(cluster: &LocalCluster) -> Vec<(String, u32)> {
    let mut pids: Vec<(String, u32)> = cluster
        .recorded()
        .into_iter()
        .filter(|process| process.name.starts_with("spu-"))
        .map(|process| (process.name, process.pid))
        .collect();
    pids.sort();
    pids
}

#[test]
fn rolling_restart_while_producing_loses_nothing() {
    let cluster = LocalCluster::new();
    cluster.start(&["--spus", "3", "--cores", "1"]).success("cluster start");
    let sc = cluster.sc_address();
    let dir = cluster.dir_text();
    sluice(&["--sc", &sc, "topic", "create", "orders", "-p", "2", "-r", "3", "--min-in-sync", "2"])
        .success("topic create");
    let client = Cluster::connect(ClientConfig::new(sc.as_str())).expect("connect");
    let workload = Workload::start(&client, "orders", PARTITIONS);
    workload.wait_progress(BASELINE_RECORDS, "before the restart");
    let before_pids = spu_pids(&cluster);

    let restart_started = Instant::now();
    let run = sluice(&[
        "--sc",
        &sc,
        "cluster",
        "rolling-restart",
        "--data-dir",
        &dir,
        "--step-timeout",
        "90s",
    ]);
    let restart_ended = Instant::now();
    let run = run.success("cluster rolling-restart");
    println!("{}", run.stdout);
    for step in ["[1/3]", "[2/3]", "[3/3]"] {
        assert!(run.stdout.contains(&format!("{step} SPU")), "{}", run.stdout);
    }
    assert!(run.stdout.contains("leadership moved off"), "{}", run.stdout);
    assert!(run.stdout.contains("rolling restart done"), "{}", run.stdout);
    let after_pids = spu_pids(&cluster);
    assert_eq!(before_pids.len(), 3);
    for ((name, before), (_, after)) in before_pids.iter().zip(&after_pids) {
        assert_ne!(before, after, "{name} was not restarted");
    }
    workload.wait_progress(200, "after the restart");
    let outcomes = workload.finish();

    let phase = |from: Instant, to: Instant| -> Vec<Duration> {
        outcomes
            .latencies
            .iter()
            .filter(|(sent, _)| *sent >= from && *sent < to)
            .map(|(_, latency)| *latency)
            .collect()
    };
    let first = outcomes.latencies.iter().map(|(sent, _)| *sent).min().expect("acknowledgements");
    let before = percentiles(&phase(first, restart_started));
    let during = percentiles(&phase(restart_started, restart_ended));
    let after = percentiles(&phase(restart_ended, Instant::now()));
    println!(
        "rolling restart of 3 SPUs took {:.1} s",
        (restart_ended - restart_started).as_secs_f64()
    );
    for (name, (p50, p99, max, count)) in [("before", before), ("during", during), ("after", after)]
    {
        println!(
            "produce acks all latency {name:>6}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} \
             ms ({count} records)"
        );
    }
    let table = sluice(&["--sc", &sc, "partition", "list", "-O", "json"]).success("list").json();
    for entry in table.as_array().expect("array") {
        let in_sync = entry["status"]["in_sync_replicas"].as_array().expect("in sync").len();
        assert_eq!(in_sync, 3, "not fully in sync after the restart: {entry}");
    }
}

/// The operator's commands do the stop and start (as `ssh {host} systemctl ...` would on a
/// datacenter cluster); here they are the local cluster's own `cluster spu stop` and `cluster
/// start`, so real processes restart. `--spus` restarts one SPU of three.
#[test]
fn rolling_restart_by_commands_restarts_the_chosen_spus() {
    let cluster = LocalCluster::new();
    cluster.start(&["--spus", "3", "--cores", "1"]).success("cluster start");
    let sc = cluster.sc_address();
    let dir = cluster.dir_text();
    sluice(&["--sc", &sc, "topic", "create", "orders", "-p", "2", "-r", "3", "--min-in-sync", "2"])
        .success("topic create");
    let client = Cluster::connect(ClientConfig::new(sc.as_str())).expect("connect");
    let workload = Workload::start(&client, "orders", PARTITIONS);
    workload.wait_progress(200, "before the restart");
    let before_pids = spu_pids(&cluster);
    let bin = common::sluice_bin();
    let bin = bin.to_str().expect("a UTF-8 path");
    let stop = format!("{bin} cluster spu stop {{id}} --data-dir {dir} --timeout 30s");
    let start = format!("{bin} cluster start --local --data-dir {dir}");
    let run = sluice(&[
        "--sc",
        &sc,
        "cluster",
        "rolling-restart",
        "--stop-command",
        &stop,
        "--start-command",
        &start,
        "--spus",
        "5002",
        "--step-timeout",
        "90s",
    ])
    .success("cluster rolling-restart by commands");
    println!("{}", run.stdout);
    assert!(run.stdout.contains("rolling restart of 1 SPUs (5002)"), "{}", run.stdout);
    assert!(run.stdout.contains("[1/1] SPU 5002: running:"), "{}", run.stdout);
    assert!(run.stdout.contains("rolling restart done"), "{}", run.stdout);
    let after_pids = spu_pids(&cluster);
    let changed: Vec<&str> = before_pids
        .iter()
        .zip(&after_pids)
        .filter(|(before, after)| before.1 != after.1)
        .map(|(before, _)| before.0.as_str())
        .collect();
    assert_eq!(changed, ["spu-5002"], "before {before_pids:?}, after {after_pids:?}");
    workload.wait_progress(200, "after the restart");
    workload.finish();

    let failing = sluice(&[
        "--sc",
        &sc,
        "cluster",
        "rolling-restart",
        "--stop-command",
        "true",
        "--start-command",
        "true",
        "--spus",
        "42",
    ]);
    assert_eq!(failing.status.code(), Some(1));
    assert!(failing.stderr.contains("SPU 42 is not registered"), "{}", failing.stderr);
}
