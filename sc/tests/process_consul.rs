//! `sluice-sc --store consul` against a real `consul agent -dev` (killed on drop): topics are
//! created, survive a `kill -9` of the SC, and keep their placement.

mod process_common;

use std::collections::BTreeMap;

use process_common::{wait_for, ScProcess};
use sluice_kvstore_consul::testing::ConsulAgent;
use sluice_proto::ids::SpuId;
use sluice_proto::object::{SpuSpec, SpuType, TopicName, TopicResolution, TopicSpec};
use sluice_sc::admin_client::AdminClient;

fn placements(client: &mut AdminClient) -> BTreeMap<String, Vec<i32>> {
    let partitions = client.list_partitions(None).unwrap().partitions;
    partitions
        .into_iter()
        .map(|entry| {
            let spus = entry.spec.replicas.iter().map(|replica| replica.spu.get()).collect();
            (entry.key.to_string(), spus)
        })
        .collect()
}

#[test]
fn consul_backed_sc_creates_topics_and_survives_a_crash() {
    let agent = ConsulAgent::start().unwrap_or_else(|error| panic!("{error}"));
    let dir = tempfile::tempdir().unwrap();
    let address = format!("--consul-address={}", agent.http_address());
    let flags = ["--store=consul", address.as_str(), "--cluster=process-test"];
    let sc = ScProcess::start(&dir.path().join("unused"), &flags);
    let mut client = sc.client();
    for id in 1..=2 {
        let spec = SpuSpec { id: SpuId(id), spu_type: SpuType::Custom, ..SpuSpec::default() };
        assert!(client.register_spu(spec).unwrap().error_code.is_ok());
    }
    let name = TopicName::new("orders").unwrap();
    assert!(client
        .create_topic(name.clone(), TopicSpec::computed(4, 2))
        .unwrap()
        .error_code
        .is_ok());
    let before = wait_for("topic provisioned in Consul", || {
        let topics = client.list_topics().unwrap().topics;
        let provisioned = topics.first()?.status.resolution == TopicResolution::Provisioned;
        let found = placements(&mut client);
        (provisioned && found.len() == 4).then_some(found)
    });
    let stored = agent.client().kv_get("sluice/process-test/topics/orders").unwrap();
    assert!(stored.is_some(), "the topic is readable in Consul under the cluster prefix");
    sc.kill();

    let sc = ScProcess::start(&dir.path().join("unused"), &flags);
    let mut client = sc.client();
    assert_eq!(placements(&mut client), before, "no partition moved across the crash");
}
