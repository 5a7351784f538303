//! `sluice cluster rebalance` against a real `sluice-sc` with 3, then 6 `sluice-spu` processes:
//! the dry run's plan moves replicas onto the new SPUs until every SPU holds the same number,
//! `-O json` prints exactly a plan file, `--drain` empties an SPU; then the rebalance is carried
//! out while a producer (acks all) and tailing readers run, and every acknowledged record is
//! read back at its offset, once, in order.

mod common;

use std::collections::BTreeMap;

use common::workload::Workload;
use common::{replicas, sluice};
use sluice_client::TopicSpec;
use sluice_testkit::process::TestCluster;

const PARTITIONS: u32 = 12;

/// The plan file applied to `current`.
fn apply(
    current: &BTreeMap<(String, u64), Vec<i64>>,
    plan: &serde_json::Value,
) -> BTreeMap<(String, u64), Vec<i64>> {
    let mut after = current.clone();
    let fields: Vec<&String> = plan.as_object().expect("a plan file is an object").keys().collect();
    assert_eq!(fields, ["partitions"], "plan file fields: {plan}");
    for entry in plan["partitions"].as_array().expect("a list of partitions") {
        let fields: Vec<&String> = entry.as_object().expect("object").keys().collect();
        assert_eq!(fields, ["partition", "replicas", "topic"], "plan entry fields: {entry}");
        let key = (
            entry["topic"].as_str().expect("topic").to_owned(),
            entry["partition"].as_u64().expect("partition"),
        );
        let spus: Vec<i64> = entry["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|replica| {
                assert!(replica["core"].is_u64(), "the planned core: {replica}");
                replica["spu"].as_i64().expect("an SPU id")
            })
            .collect();
        assert!(after.insert(key, spus).is_some(), "a plan entry for an unknown partition");
    }
    after
}

fn per_spu(replicas: &BTreeMap<(String, u64), Vec<i64>>) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for spus in replicas.values() {
        for spu in spus {
            *counts.entry(*spu).or_default() += 1;
        }
    }
    counts
}

#[test]
fn dry_run_plans_moves_onto_new_spus() {
    let mut test = TestCluster::start(3, 1);
    let sc = test.sc.public_address.to_string();
    test.create_topic_with("orders", TopicSpec::computed(PARTITIONS, 3));
    let balanced = sluice(&["--sc", &sc, "cluster", "rebalance", "--dry-run", "-O", "json"])
        .success("rebalance on 3 SPUs")
        .json();
    assert_eq!(balanced, serde_json::json!({ "partitions": [] }), "3 SPUs at RF 3 are balanced");

    for id in 4..=6 {
        test.add_spu(id);
    }
    test.wait_spus_online(6);
    let current = replicas(&sc);
    let table = sluice(&["--sc", &sc, "cluster", "rebalance", "--dry-run"]).success("table");
    println!("{}", table.stdout);
    assert!(table.stdout.contains("replicas per core"), "{}", table.stdout);
    assert!(table.stdout.contains("Dry run: nothing changed"), "{}", table.stdout);
    let plan = sluice(&["--sc", &sc, "cluster", "rebalance", "--dry-run", "-O", "json"])
        .success("plan file")
        .json();
    let after = apply(&current, &plan);
    let counts = per_spu(&after);
    println!("replicas per SPU before {:?}, after {counts:?}", per_spu(&current));
    assert_eq!(counts.len(), 6, "every SPU holds replicas: {counts:?}");
    assert!(counts.values().all(|count| *count == 6), "36 replicas over 6 SPUs: {counts:?}");
    for spus in after.values() {
        let mut distinct = spus.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "three distinct SPUs: {spus:?}");
    }
    // Nothing was executed.
    assert_eq!(replicas(&sc), current);

    let drained =
        sluice(&["--sc", &sc, "cluster", "rebalance", "--dry-run", "--drain", "1", "-O", "json"])
            .success("drain")
            .json();
    let after_drain = apply(&current, &drained);
    assert!(after_drain.values().all(|spus| !spus.contains(&1)), "SPU 1 keeps replicas");

    // Carried out under load: the moves end, the balance is the plan's, nothing acknowledged is
    // lost.
    let workload = Workload::start(&test.cluster, "orders", PARTITIONS);
    workload.wait_progress(200, "before the rebalance");
    let executed =
        sluice(&["--sc", &sc, "cluster", "rebalance", "--throttle", "64"]).success("rebalance");
    println!("{}", executed.stdout);
    assert!(executed.stdout.contains("every move completed"), "{}", executed.stdout);
    assert!(executed.stdout.contains("rebalance complete"), "{}", executed.stdout);
    workload.wait_progress(200, "after the rebalance");
    let outcomes = workload.finish();
    println!("{} records acknowledged during the rebalance, none lost", outcomes.sent);
    let moved = replicas(&sc);
    assert_eq!(per_spu(&moved), counts, "the executed balance is the plan's");
    let again = sluice(&["--sc", &sc, "cluster", "rebalance", "--dry-run", "-O", "json"])
        .success("after")
        .json();
    assert_eq!(again, serde_json::json!({ "partitions": [] }), "balanced after the rebalance");
    let unknown = sluice(&["--sc", &sc, "cluster", "rebalance", "--dry-run", "--drain", "99"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(unknown.stderr.contains("SPU 99 is not registered"), "{}", unknown.stderr);
}
