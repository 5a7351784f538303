//! `sluice cluster start --local --metadata consul`: the SC keeps the metadata in a real Consul
//! agent (`consul agent -dev`, killed on drop), so a restart finds the topics there even with
//! no embedded store left in the data directory.

mod common;

use common::{pid_alive, sluice, sluice_with_input, LocalCluster};
use sluice_testkit::process::consul_agent;
use sluice_testkit::process::wait_until;

#[test]
fn local_cluster_on_consul_reattaches_from_consul() {
    let agent = consul_agent();
    let consul = agent.http_address();
    let flags = ["--metadata", "consul", "--consul-addr", consul.as_str(), "--cores", "1"];
    let cluster = LocalCluster::new();
    cluster.start(&flags).success("cluster start on consul");
    assert_eq!(cluster.status()["metadata"], "consul");
    let sc = cluster.sc_address();
    sluice(&["--sc", &sc, "topic", "create", "kept"]).success("topic create");
    let input: String = (0..20).map(|index| format!("line {index}\n")).collect();
    sluice_with_input(&["--sc", &sc, "produce", "kept"], Some(input.as_bytes())).success("produce");
    let processes = cluster.recorded();
    cluster.stop().success("cluster stop");
    for process in &processes {
        assert!(!pid_alive(process.pid), "{} still runs", process.name);
    }
    // Nothing of the metadata may come from the data directory.
    let _ = std::fs::remove_dir_all(cluster.dir().join("sc"));
    let restarted = cluster.start(&flags).success("second start on consul");
    assert!(restarted.stderr.contains("reattaching"), "{}", restarted.stderr);
    let sc = cluster.sc_address();
    let consumed = sluice(&["--sc", &sc, "consume", "kept", "-B", "-d"]).success("consume");
    assert_eq!(consumed.stdout, input);
}

/// `kill -9` of the SC of a Consul-backed local cluster: `cluster start --local` starts a new
/// SC, which is a standby until Consul releases the dead SC's lock, and waits for that
/// election (saying so) instead of failing; the SPU that kept running is reached again. Then
/// everything is killed, and a start of the whole cluster waits for the election too.
#[test]
fn a_killed_sc_on_consul_is_restarted_after_the_election() {
    let agent = consul_agent();
    let consul = agent.http_address();
    let flags = ["--metadata", "consul", "--consul-addr", consul.as_str(), "--cores", "1"];
    let cluster = LocalCluster::new();
    cluster.start(&flags).success("cluster start on consul");
    let sc = cluster.sc_address();
    sluice(&["--sc", &sc, "topic", "create", "kept"]).success("topic create");
    sluice_with_input(&["--sc", &sc, "produce", "kept"], Some(b"before\n")).success("produce");

    let kill_nine = |name: &str| {
        let pid = cluster.recorded().iter().find(|process| process.name == name).expect(name).pid;
        let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        assert!(status.expect("run kill").success());
        wait_until(&format!("{name} to be gone"), || !pid_alive(pid));
    };
    kill_nine("sc");
    let restarted = cluster.start(&flags).success("start after kill -9 of the SC");
    assert!(restarted.stderr.contains("restarting the SC (consul store"), "{}", restarted.stderr);
    assert!(restarted.stderr.contains("waiting for the SC election"), "{}", restarted.stderr);
    assert!(restarted.stderr.contains("the SC election is over"), "{}", restarted.stderr);
    assert!(restarted.stdout.contains("running again: started sc;"), "{}", restarted.stdout);
    assert_eq!(cluster.sc_address(), sc, "the new SC listens where the old one did");
    sluice_with_input(&["--sc", &sc, "produce", "kept"], Some(b"after\n")).success("produce");
    let consumed = sluice(&["--sc", &sc, "consume", "kept", "-B", "-d"]).success("consume");
    assert_eq!(consumed.stdout, "before\nafter\n");

    kill_nine("spu-5001");
    kill_nine("sc");
    let whole = cluster.start(&flags).success("start after kill -9 of everything");
    assert!(whole.stderr.contains("waiting for the SC election"), "{}", whole.stderr);
    assert!(whole.stdout.contains("Local cluster ready"), "{}", whole.stdout);
    let sc = cluster.sc_address();
    let consumed = sluice(&["--sc", &sc, "consume", "kept", "-B", "-d"]).success("consume");
    assert_eq!(consumed.stdout, "before\nafter\n");
}
