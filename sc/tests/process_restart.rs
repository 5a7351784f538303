//! Crash and restart of a real `sluice-sc`: state stays consistent and no partition moves.

use std::collections::BTreeMap;

use sluice_proto::ids::SpuId;
use sluice_proto::object::{
    Endpoint, PartitionKey, ReplicaPlacement, SpuSpec, SpuType, TopicName, TopicResolution,
    TopicSpec,
};
use sluice_sc::admin_client::AdminClient;
use sluice_testkit::process::{wait_for, ScProcess, ServerProcess};

const TOPICS: usize = 12;
const PARTITIONS: u32 = 16;

type Assignments = BTreeMap<PartitionKey, Vec<ReplicaPlacement>>;

fn assignments(client: &mut AdminClient) -> Assignments {
    let partitions = client.list_partitions(None).unwrap().partitions;
    partitions.into_iter().map(|entry| (entry.key, entry.spec.replicas)).collect()
}

/// Waits until every topic is provisioned with all its partitions; returns the assignments.
fn settled(client: &mut AdminClient) -> Assignments {
    wait_for("every topic provisioned with all partitions", || {
        let topics = client.list_topics().unwrap().topics;
        let done = topics.iter().all(|topic| {
            topic.status.resolution == TopicResolution::Provisioned
                && topic.status.replica_map.len() == PARTITIONS as usize
        });
        let found = assignments(client);
        (done && found.len() == topics.len() * PARTITIONS as usize).then_some(found)
    })
}

#[test]
fn kill_during_topic_creation_then_restart_keeps_every_partition_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sc = ScProcess::start(&data);
    let mut client = sc.admin();
    for id in 0..3 {
        let spec = SpuSpec {
            id: SpuId(id),
            spu_type: SpuType::Custom,
            public_endpoint: Endpoint::new("127.0.0.1", 9005),
            ..SpuSpec::default()
        };
        assert!(client.register_spu(spec).unwrap().error_code.is_ok());
    }
    let mut created = Vec::new();
    for index in 0..TOPICS {
        let name = TopicName::new(format!("topic-{index}")).unwrap();
        let response =
            client.create_topic(name.clone(), TopicSpec::computed(PARTITIONS, 2)).unwrap();
        assert!(response.error_code.is_ok(), "{response:?}");
        created.push(name);
    }
    // Whatever partitions exist at the kill must be exactly where they are after restarts.
    let before_kill = assignments(&mut client);
    eprintln!(
        "{} of {} partitions existed at the kill",
        before_kill.len(),
        TOPICS * PARTITIONS as usize
    );
    sc.kill();

    let mut sc = ScProcess::start(&data);
    let mut client = sc.admin();
    let after_restart = settled(&mut client);
    let topics: Vec<TopicName> =
        client.list_topics().unwrap().topics.into_iter().map(|topic| topic.name).collect();
    assert_eq!(topics.len(), created.len(), "every acknowledged topic survives");
    for name in &created {
        assert!(topics.contains(name), "{name} lost");
        for partition in 0..PARTITIONS {
            let key = PartitionKey::new(name.clone(), sluice_proto::ids::PartitionId(partition));
            assert!(after_restart.contains_key(&key), "{key} missing");
        }
    }
    for (key, replicas) in &before_kill {
        assert_eq!(after_restart.get(key), Some(replicas), "{key} moved across the crash");
    }
    for replicas in after_restart.values() {
        assert_eq!(replicas.len(), 2);
        assert_ne!(replicas[0].spu, replicas[1].spu);
    }

    // A clean restart moves nothing either.
    assert!(sc.terminate().status.success());
    let sc = ScProcess::start(&data);
    let mut client = sc.admin();
    assert_eq!(settled(&mut client), after_restart, "a restart must move no partition");
}
