//! `sluice cluster start --local --metadata consul`: the SC keeps the metadata in a real Consul
//! agent (`consul agent -dev`, killed on drop), so a restart finds the topics there even with
//! no embedded store left in the data directory.

mod common;

use common::{pid_alive, sluice, sluice_with_input, LocalCluster};
use sluice_kvstore_consul::testing::ConsulAgent;

#[test]
fn local_cluster_on_consul_reattaches_from_consul() {
    let agent = ConsulAgent::start().unwrap_or_else(|error| panic!("{error}"));
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
