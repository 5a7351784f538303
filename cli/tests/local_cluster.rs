//! The whole path through real processes: `sluice cluster start --local` (an SC and 2 SPUs of
//! 1 core), status, topics, produce and consume, stop, a second start that reattaches the data,
//! and a stop that leaves no process behind.

mod common;

use std::collections::BTreeMap;

use common::{pid_alive, sluice, sluice_with_input, LocalCluster, Recorded};
use sluice_testkit::process::wait_until;

const RECORDS: usize = 1000;

fn lines() -> String {
    (0..RECORDS).map(|index| format!("record-{index:04}\n")).collect()
}

fn assert_all_gone(processes: &[Recorded]) {
    for process in processes {
        assert!(!pid_alive(process.pid), "{} (pid {}) still runs", process.name, process.pid);
    }
}

/// Creates the topics, checks list/describe JSON, produces the records.
fn create_and_produce(sc: &str) {
    sluice(&["--sc", sc, "topic", "create", "ordered", "--partitions", "1"])
        .success("topic create ordered");
    sluice(&["--sc", sc, "topic", "create", "spread", "-p", "2", "--retention-time", "7d"])
        .success("topic create spread");
    let listed = sluice(&["--sc", sc, "topic", "list", "-O", "json"]).success("topic list").json();
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|topic| topic["name"].as_str())
        .collect();
    assert_eq!(names, ["ordered", "spread"]);
    let described = sluice(&["--sc", sc, "topic", "describe", "spread", "-O", "json"])
        .success("describe")
        .json();
    assert_eq!(described["topic"]["spec"]["retention_time_ms"], 7 * 86_400_000u64);
    let partitions = described["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2);
    let again = sluice(&["--sc", sc, "topic", "create", "ordered"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let table = sluice(&["--sc", sc, "topic", "list"]).success("topic list table");
    assert!(table.stdout.starts_with("NAME"), "{}", table.stdout);
    let input = lines();
    sluice_with_input(&["--sc", sc, "produce", "ordered"], Some(input.as_bytes()))
        .success("produce ordered");
    let keyed: String =
        (0..RECORDS).map(|index| format!("key-{}=v{index:04}\n", index % 7)).collect();
    sluice_with_input(
        &[
            "--sc",
            sc,
            "produce",
            "spread",
            "--key-separator",
            "=",
            "--acks",
            "leader",
            "--compression",
            "zstd",
        ],
        Some(keyed.as_bytes()),
    )
    .success("produce spread");
}

/// Consumes both topics from the beginning and checks every record came back in order.
fn check_records(sc: &str) {
    let consumed =
        sluice(&["--sc", sc, "consume", "ordered", "-B", "-d"]).success("consume ordered");
    assert_eq!(consumed.stdout, lines(), "records differ or are out of order");
    let first = sluice(&["--sc", sc, "consume", "ordered", "-p", "0", "--offset", "10", "-n", "2"])
        .success("consume --offset");
    assert_eq!(first.stdout, "record-0010\nrecord-0011\n");
    let spread = sluice(&[
        "--sc",
        sc,
        "consume",
        "spread",
        "-B",
        "-d",
        "--format",
        "{partition} {key} {value}",
    ])
    .success("consume spread");
    // Per partition, offsets ascend; per key, values keep the order they were produced in.
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, String> = BTreeMap::new();
    for line in spread.stdout.lines() {
        let mut fields = line.split(' ');
        let (partition, key, value) =
            (fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap());
        per_key.entry(key.into()).or_default().push(value.into());
        let previous = partition_of_key.insert(key.into(), partition.into());
        assert!(previous.is_none_or(|previous| previous == partition), "key {key} moved");
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), RECORDS);
    for (key, values) in &per_key {
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, &sorted, "values of {key} out of order");
    }
}

fn spu_ids(sc: &str) -> Vec<i64> {
    let spus = sluice(&["--sc", sc, "spu", "list", "-O", "json"]).success("spu list").json();
    spus.as_array().expect("array").iter().map(|spu| spu["spec"]["id"].as_i64().unwrap()).collect()
}

/// Registers and unregisters a custom SPU; creates, lists and deletes an SPU group.
fn check_spu_admin(sc: &str) {
    sluice(&[
        "--sc",
        sc,
        "spu",
        "register",
        "--id",
        "7",
        "--public-address",
        "127.0.0.1:19005",
        "--private-address",
        "127.0.0.1:19006",
    ])
    .success("spu register");
    assert_eq!(spu_ids(sc), [7, 5001, 5002]);
    sluice(&["--sc", sc, "spu", "unregister", "--id", "7"]).success("spu unregister");
    assert_eq!(spu_ids(sc), [5001, 5002]);
    sluice(&["--sc", sc, "spu-group", "create", "extra", "--replicas", "2", "--first-id", "9001"])
        .success("spu-group create");
    let groups = sluice(&["--sc", sc, "spu-group", "list", "-O", "yaml"]).success("group list");
    assert!(groups.stdout.contains("name: extra"), "{}", groups.stdout);
    assert!(groups.stdout.contains("first_id: 9001"), "{}", groups.stdout);
    sluice(&["--sc", sc, "spu-group", "delete", "extra"]).success("spu-group delete");
    let groups =
        sluice(&["--sc", sc, "spu-group", "list", "-O", "json"]).success("group list").json();
    let names: Vec<String> = groups
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|group| group["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["local"]);
}

#[test]
fn local_cluster_start_use_stop_and_reattach() {
    let cluster = LocalCluster::new();
    let started = cluster.start(&["--spus", "2", "--cores", "1"]).success("cluster start");
    assert!(started.stdout.contains("Local cluster ready"), "{}", started.stdout);
    assert!(started.stderr.contains("SPUs online: 2 of 2"), "{}", started.stderr);
    let status = cluster.status();
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["processes"].as_array().expect("processes").len(), 3);
    let sc = cluster.sc_address();
    assert!(started.stdout.contains(&sc), "start did not print the SC address {sc}");
    let spus = sluice(&["--sc", &sc, "spu", "list", "-O", "json"]).success("spu list").json();
    let online: Vec<i64> = spus
        .as_array()
        .expect("array")
        .iter()
        .filter(|spu| spu["status"]["resolution"] == "online")
        .map(|spu| spu["spec"]["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(online, [5001, 5002]);

    check_address_hint(&cluster, &sc);

    // A second start while it runs changes nothing.
    let again = cluster.start(&[]).success("second start while running");
    assert!(again.stdout.contains("already runs"), "{}", again.stdout);

    create_and_produce(&sc);
    check_records(&sc);
    check_spu_admin(&sc);

    let first_processes = cluster.recorded();
    assert_eq!(first_processes.len(), 3);
    cluster.stop().success("cluster stop");
    assert_all_gone(&first_processes);
    assert!(!cluster.dir().join("cluster.json").exists());

    // Same data directory: the SPU group, topics and records come back.
    let restarted = cluster.start(&[]).success("second start");
    assert!(restarted.stderr.contains("reattaching"), "{}", restarted.stderr);
    let sc = cluster.sc_address();
    check_records(&sc);
    let second_processes = cluster.recorded();
    check_partial_cluster(&cluster, &second_processes);
    cluster.stop().success("second stop");
    assert_all_gone(&second_processes);
}

/// An unreachable `--sc` while the default local cluster runs elsewhere: the error names the
/// address to use (the default data directory is `$HOME/.sluice/local`).
fn check_address_hint(cluster: &LocalCluster, sc: &str) {
    let home = tempfile::tempdir().expect("home directory");
    std::fs::create_dir(home.path().join(".sluice")).expect("mkdir .sluice");
    std::os::unix::fs::symlink(cluster.dir(), home.path().join(".sluice/local")).expect("link");
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("127.0.0.1:{}", listener.local_addr().expect("address").port())
    };
    let run =
        common::sluice_full(&["--sc", &nowhere, "topic", "list"], None, &[("HOME", home.path())]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains(&format!("pass `--sc {sc}`")), "{}", run.stderr);
}

/// The pid recorded for `name`.
fn pid_of(processes: &[Recorded], name: &str) -> u32 {
    processes.iter().find(|process| process.name == name).unwrap_or_else(|| panic!("{name}")).pid
}

/// Part of the cluster ends (an SPU killed with `cluster spu kill`, one stopped with `cluster
/// spu stop`, the SC killed with `kill -9`): status says so (exit 1), and each start brings
/// back just what is missing, with the same ids, the SC on the same address, and the data.
fn check_partial_cluster(cluster: &LocalCluster, processes: &[Recorded]) {
    let dir = cluster.dir_text();
    let victim = pid_of(processes, "spu-5002");
    let killed = sluice(&["cluster", "spu", "kill", "5002", "--data-dir", &dir]).success("kill");
    let expected = format!("SPU 5002 (pid {victim}) killed with SIGKILL");
    assert!(killed.stdout.contains(&expected), "{}", killed.stdout);
    assert!(!pid_alive(victim), "SPU 5002 still runs");
    let again = sluice(&["cluster", "spu", "kill", "5002", "--data-dir", &dir]).success("again");
    assert!(again.stdout.contains("is not running"), "{}", again.stdout);
    let unknown = sluice(&["cluster", "spu", "stop", "7", "--data-dir", &dir]);
    assert_eq!(unknown.status.code(), Some(1), "{}", unknown.stdout);
    assert!(
        unknown.stderr.contains("no SPU 7") && unknown.stderr.contains("its SPUs are 5001, 5002")
    );

    let status = sluice(&["cluster", "status", "--data-dir", &dir, "-O", "json"]);
    assert_eq!(status.status.code(), Some(1), "{}", status.stderr);
    assert_eq!(status.json()["running"], false);
    assert!(status.stderr.contains("not (fully) running"), "{}", status.stderr);

    let started = cluster.start(&[]).success("start the missing SPU");
    assert!(started.stdout.contains("running again: started spu-5002;"), "{}", started.stdout);
    assert!(started.stderr.contains("restarting SPU 5002 (1 core)"), "{}", started.stderr);
    let now = cluster.recorded();
    assert_eq!(pid_of(&now, "sc"), pid_of(processes, "sc"), "the SC was restarted");
    assert_eq!(pid_of(&now, "spu-5001"), pid_of(processes, "spu-5001"), "SPU 5001 restarted");
    assert!(pid_alive(pid_of(&now, "spu-5002")));
    assert_eq!(cluster.status()["running"], true);

    let stopped = sluice(&["cluster", "spu", "stop", "5001", "--data-dir", &dir]).success("stop");
    assert!(stopped.stdout.contains("stopped after SIGTERM"), "{}", stopped.stdout);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.dir().join("cluster.json")).unwrap())
            .unwrap();
    let sc = state["sc_public_address"].as_str().expect("SC address").to_owned();
    let sc_pid = pid_of(&now, "sc");
    let kill = std::process::Command::new("kill").args(["-KILL", &sc_pid.to_string()]).status();
    assert!(kill.expect("run kill").success());
    wait_until("the killed SC to be gone", || !pid_alive(sc_pid));
    let started = cluster.start(&[]).success("start the SC and SPU 5001");
    assert!(started.stdout.contains("started sc, spu-5001;"), "{}", started.stdout);
    assert!(started.stderr.contains("restarting the SC (embedded store"), "{}", started.stderr);
    assert_eq!(cluster.sc_address(), sc, "the SC moved");
    check_records(&sc);
}
