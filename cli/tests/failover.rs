//! A failover watched on one machine, as a user would do it: a local cluster of 3 SPUs, a
//! topic of replication 3 and min-in-sync 2, `sluice produce` running while the leader of a
//! partition is killed with `sluice cluster spu kill`; `sluice partition list` shows the new
//! leader with its epoch bumped and the dead replica offline; the producer rides through and
//! exits 0; `sluice cluster start --local` brings back just the killed SPU.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{sluice, LocalCluster};
use sluice_testkit::process::wait_until;

const LINES: usize = 300;

/// Partition `partition`'s leader and leader epoch, from `partition list -O json`.
fn leader_of(sc: &str, partition: u64) -> (i64, i64) {
    let listed = sluice(&["--sc", sc, "partition", "list", "--topic", "orders", "-O", "json"])
        .success("partition list")
        .json();
    let entry = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|entry| entry["key"]["partition"] == partition)
        .expect("the partition");
    for field in ["partition_epoch", "in_sync_replicas", "replicas", "leader"] {
        assert!(entry["status"].get(field).is_some(), "no status.{field} in {entry}");
    }
    (entry["spec"]["leader"].as_i64().unwrap(), entry["spec"]["leader_epoch"].as_i64().unwrap())
}

fn consumed_lines(sc: &str) -> Vec<String> {
    let consumed = sluice(&["--sc", sc, "consume", "orders", "-B", "-d"]).success("consume");
    consumed.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn produce_rides_through_a_leader_killed_with_cluster_spu_kill() {
    let cluster = LocalCluster::new();
    cluster.start(&["--spus", "3", "--cores", "1"]).success("cluster start");
    let sc = cluster.sc_address();
    let dir = cluster.dir_text();
    sluice(&["--sc", &sc, "topic", "create", "orders", "-p", "2", "-r", "3", "--min-in-sync", "2"])
        .success("topic create");
    let table = sluice(&["--sc", &sc, "partition", "list"]).success("partition list");
    assert_eq!(table.stdout.lines().count(), 1 + 2 * 3, "a row per replica:\n{}", table.stdout);

    let mut producer = Command::new(common::sluice_bin())
        .args(["--sc", &sc, "produce", "orders"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice produce");
    let mut input = producer.stdin.take().expect("stdin");
    for index in 0..LINES {
        writeln!(input, "first-{index:03}").expect("write a line");
    }
    input.flush().expect("flush");
    wait_until("records to arrive", || !consumed_lines(&sc).is_empty());

    let (leader, epoch) = leader_of(&sc, 0);
    let killed = sluice(&["cluster", "spu", "kill", &leader.to_string(), "--data-dir", &dir])
        .success("cluster spu kill");
    assert!(killed.stdout.contains("killed with SIGKILL"), "{}", killed.stdout);
    wait_until("a new leader of partition 0", || {
        let (now, now_epoch) = leader_of(&sc, 0);
        now != leader && now_epoch > epoch
    });
    let table = sluice(&["--sc", &sc, "partition", "list"]).success("partition list");
    let leader_text = leader.to_string();
    let offline_rows = table
        .stdout
        .lines()
        .map(|line| line.split_whitespace().rev().collect::<Vec<_>>())
        .filter(|cells| cells.len() >= 5 && cells[4] == leader_text && cells[2] == "offline")
        .count();
    assert_eq!(offline_rows, 2, "the killed SPU's replicas:\n{}", table.stdout);

    for index in 0..LINES {
        writeln!(input, "second-{index:03}").expect("write a line");
    }
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(120);
    while producer.try_wait().expect("poll sluice produce").is_none() {
        assert!(Instant::now() < deadline, "sluice produce did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = producer.wait_with_output().expect("sluice produce output");
    assert!(
        output.status.success(),
        "sluice produce failed across the failover: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // What was produced after the election is there, once each and in order.
    let second: Vec<String> =
        consumed_lines(&sc).into_iter().filter(|line| line.starts_with("second-")).collect();
    let mut sorted = second.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), LINES, "lost or duplicated: {} of {LINES}", second.len());
    assert_eq!(second.len(), LINES);

    let started = cluster.start(&[]).success("start the killed SPU");
    assert!(started.stdout.contains(&format!("started spu-{leader};")), "{}", started.stdout);
    let table = sluice(&["--sc", &sc, "partition", "list"]).success("partition list");
    assert!(!table.stdout.contains("offline"), "{}", table.stdout);

    // Leader rebalancing: served by SCs that have it; older ones say so clearly.
    let rebalanced = sluice(&["--sc", &sc, "partition", "rebalance-leaders", "--topic", "orders"]);
    if rebalanced.status.success() {
        assert!(
            rebalanced.stdout.contains("preferred replica")
                || rebalanced.stdout.contains("nothing moved"),
            "{}",
            rebalanced.stdout
        );
    } else {
        assert!(
            rebalanced.stderr.contains("does not serve leader rebalancing"),
            "{}",
            rebalanced.stderr
        );
    }
}
