//! The commands that grow and reshape a cluster, run as a user runs them, against a real
//! `sluice-sc` and four `sluice-spu` processes while a producer (acks all) and tailing readers
//! run: `topic alter --partitions`, `partition reassign` (`--to-spus --wait`, `--plan`,
//! `--status`, `--cancel`) and `spu decommission`. Every acknowledged record is read back at its
//! offset, once, in order.

mod common;

use std::time::{Duration, Instant};

use common::workload::Workload;
use common::{replicas, sluice};
use sluice_client::TopicSpec;
use sluice_testkit::process::TestCluster;

fn replicas_of(sc: &str, partition: u64) -> Vec<i64> {
    replicas(sc).remove(&("orders".to_owned(), partition)).expect("the partition is listed")
}

fn sorted(mut spus: Vec<i64>) -> Vec<i64> {
    spus.sort_unstable();
    spus
}

/// Polls `done` until it holds (deadline 60 s).
fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn alter_reassign_cancel_and_decommission_by_command_lose_nothing() {
    let test = TestCluster::start(4, 1);
    let sc = test.sc.public_address.to_string();
    test.create_topic_with("orders", TopicSpec::computed(2, 3));
    let workload = Workload::start(&test.cluster, "orders", 2);
    workload.wait_progress(200, "before the changes");

    // More partitions; fewer are refused with the reason.
    let altered = sluice(&["--sc", &sc, "topic", "alter", "orders", "--partitions", "3"])
        .success("topic alter");
    assert!(altered.stdout.contains("now has 3 partitions"), "{}", altered.stdout);
    assert!(altered.stdout.contains("a key may now go to a different partition"));
    wait("the third partition", || replicas(&sc).len() == 3);
    let fewer = sluice(&["--sc", &sc, "topic", "alter", "orders", "--partitions", "2"]);
    assert_eq!(fewer.status.code(), Some(1));
    assert!(fewer.stderr.contains("cannot change the partitions"), "{}", fewer.stderr);

    // Partition 0 onto the SPU it lacks, followed to the end.
    let before = replicas_of(&sc, 0);
    let spare = (1..=4).find(|spu| !before.contains(spu)).expect("an SPU without partition 0");
    let target = [spare, before[1], before[2]];
    let target_text = target.map(|spu| spu.to_string()).join(",");
    let moved = sluice(&[
        "--sc",
        &sc,
        "partition",
        "reassign",
        "orders",
        "0",
        "--to-spus",
        &target_text,
        "--throttle",
        "64",
        "--wait",
    ])
    .success("reassign --wait");
    assert!(moved.stdout.contains(&format!("moving to SPUs {target_text}")), "{}", moved.stdout);
    assert!(moved.stdout.contains("every move completed"), "{}", moved.stdout);
    assert_eq!(replicas_of(&sc, 0), target, "the preferred leader first");

    // Partition 1 by a plan file.
    let before = replicas_of(&sc, 1);
    let spare = (1..=4).find(|spu| !before.contains(spu)).expect("an SPU without partition 1");
    let plan = serde_json::json!({ "partitions": [
        { "topic": "orders", "partition": 1, "replicas": [before[0], spare, before[2]] }
    ]});
    let plan_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(plan_file.path(), plan.to_string()).unwrap();
    let plan_path = plan_file.path().display().to_string();
    sluice(&["--sc", &sc, "partition", "reassign", "--plan", &plan_path, "--wait"])
        .success("reassign --plan");
    assert_eq!(replicas_of(&sc, 1), [before[0], spare, before[2]]);

    // A move crawling at 1 KiB/s shows in --status, and --cancel takes the partition back.
    workload.wait_progress(2_000, "a log worth copying");
    let before = replicas_of(&sc, 1);
    let spare = (1..=4).find(|spu| !before.contains(spu)).expect("an SPU without partition 1");
    let slow_target = format!("{},{},{}", before[0], before[1], spare);
    sluice(&[
        "--sc",
        &sc,
        "partition",
        "reassign",
        "orders",
        "1",
        "--to-spus",
        &slow_target,
        "--throttle",
        "0.001",
    ])
    .success("a slow move");
    let status =
        sluice(&["--sc", &sc, "partition", "reassign", "--status", "-O", "json"]).success("status");
    let rows = status.json();
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "one replica being added: {rows:?}");
    assert_eq!(rows[0]["spu"].as_i64(), Some(spare), "{rows:?}");
    assert_eq!(rows[0]["in_sync"].as_bool(), Some(false), "1 KiB/s cannot have caught up");
    let table = sluice(&["--sc", &sc, "partition", "reassign", "--status"]).success("status table");
    assert!(table.stdout.contains("catching up"), "{}", table.stdout);
    sluice(&["--sc", &sc, "partition", "reassign", "orders", "1", "--cancel", "--wait"])
        .success("cancel");
    assert_eq!(replicas_of(&sc, 1), before, "cancelled: back to where the move started");
    let idle = sluice(&["--sc", &sc, "partition", "reassign", "--status"]).success("idle");
    assert!(idle.stdout.contains("no move in progress"), "{}", idle.stdout);

    // SPU 4 emptied and unregistered.
    let decommissioned =
        sluice(&["--sc", &sc, "spu", "decommission", "4"]).success("spu decommission");
    assert!(decommissioned.stdout.contains("SPU 4 unregistered"), "{}", decommissioned.stdout);
    assert!(replicas(&sc).values().all(|spus| spus.len() == 3 && !spus.contains(&4)));
    let spus = sluice(&["--sc", &sc, "spu", "list", "-O", "json"]).success("spu list").json();
    let ids: Vec<i64> = spus
        .as_array()
        .expect("SPUs")
        .iter()
        .map(|spu| spu["spec"]["id"].as_i64().expect("an id"))
        .collect();
    assert_eq!(sorted(ids), [1, 2, 3]);

    workload.wait_progress(200, "after the changes");
    let outcomes = workload.finish();
    println!("{} records acknowledged during the changes, none lost", outcomes.sent);
}
