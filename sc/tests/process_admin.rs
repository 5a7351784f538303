//! The public admin API of a real `sluice-sc` process.

use sluice_proto::api::admin::{AdminResponse, CreateTopicRequest};
use sluice_proto::api::{ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::encode_request;
use sluice_proto::ids::{CorrelationId, SpuId};
use sluice_proto::object::{
    Endpoint, SpuGroupName, SpuGroupResolution, SpuGroupSpec, SpuSpec, SpuType, TopicName,
    TopicResolution, TopicSpec,
};
use sluice_sc::admin_client::AdminClient;
use sluice_testkit::process::{wait_for, ScProcess, ServerProcess};

fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap()
}

fn custom_spu(id: i32) -> SpuSpec {
    SpuSpec {
        id: SpuId(id),
        spu_type: SpuType::Custom,
        public_endpoint: Endpoint::new("127.0.0.1", 9005),
        private_endpoint: Endpoint::new("127.0.0.1", 9006),
        ..SpuSpec::default()
    }
}

fn assert_ok(response: &AdminResponse) {
    assert!(response.error_code.is_ok(), "{response:?}");
}

fn assert_error(response: &AdminResponse, code: ErrorCode) {
    assert_eq!(response.error_code, code, "{response:?}");
    assert!(response.message.as_deref().is_some_and(|text| !text.is_empty()), "{response:?}");
}

fn wait_provisioned(client: &mut AdminClient, name: &TopicName) {
    wait_for("topic provisioned", || {
        let described = client.describe_topic(name.clone()).unwrap();
        let topic = described.topic?;
        let partitions = topic.spec.partition_count() as usize;
        (topic.status.resolution == TopicResolution::Provisioned
            && described.partitions.len() == partitions)
            .then_some(())
    });
}

#[test]
fn topic_lifecycle_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = ScProcess::start(&dir.path().join("data"));
    let mut client = sc.admin();
    // No SPU yet: replication factor 1 is already above the SPU count.
    let refused = client.create_topic(topic("orders"), TopicSpec::computed(3, 1)).unwrap();
    assert_error(&refused, ErrorCode::ReplicationFactorAboveSpuCount);
    for id in 1..=3 {
        assert_ok(&client.register_spu(custom_spu(id)).unwrap());
    }
    assert_error(&client.register_spu(custom_spu(2)).unwrap(), ErrorCode::SpuAlreadyExists);
    assert_ok(&client.create_topic(topic("orders"), TopicSpec::computed(3, 2)).unwrap());
    let duplicate = client.create_topic(topic("orders"), TopicSpec::computed(1, 1)).unwrap();
    assert_error(&duplicate, ErrorCode::TopicAlreadyExists);
    let message = duplicate.message.unwrap_or_default();
    assert!(message.contains("already exists"), "a duplicate is not a deletion: {message}");
    let too_wide = client.create_topic(topic("wide"), TopicSpec::computed(1, 4)).unwrap();
    assert_error(&too_wide, ErrorCode::ReplicationFactorAboveSpuCount);
    let bad_segment = TopicSpec { segment_bytes: 10, ..TopicSpec::computed(1, 1) };
    let invalid = client.create_topic(topic("bad"), bad_segment).unwrap();
    assert_error(&invalid, ErrorCode::InvalidConfig);
    assert!(invalid.message.unwrap().contains("segment_bytes"));
    let zero_partitions = TopicSpec::computed(0, 0);
    assert_ok(&client.create_topic(topic("defaults"), zero_partitions).unwrap());

    wait_provisioned(&mut client, &topic("orders"));
    let described = client.describe_topic(topic("orders")).unwrap();
    assert_eq!(described.partitions.len(), 3);
    for partition in &described.partitions {
        assert_eq!(partition.spec.replicas.len(), 2);
        assert_eq!(partition.spec.leader, partition.spec.replicas[0].spu);
    }
    let listed = client.list_topics().unwrap();
    let names: Vec<&str> = listed.topics.iter().map(|entry| entry.name.as_str()).collect();
    assert_eq!(names, ["defaults", "orders"]);
    let defaults = &listed.topics[0].spec;
    assert_eq!((defaults.partition_count(), defaults.replication_factor()), (1, 1));

    let metadata = client.metadata(Some(vec![topic("orders"), topic("nope")])).unwrap();
    assert_eq!(metadata.topics[0].partitions.len(), 3);
    assert_eq!(metadata.topics[1].error_code, ErrorCode::UnknownTopicOrPartition);

    assert_ok(&client.delete_topic(topic("orders")).unwrap());
    assert_error(&client.delete_topic(topic("orders")).unwrap(), ErrorCode::TopicNotFound);
    assert_eq!(
        client.describe_topic(topic("orders")).unwrap().error_code,
        ErrorCode::TopicNotFound
    );
    wait_for("partitions of a deleted topic removed", || {
        let partitions = client.list_partitions(Some(topic("orders"))).unwrap().partitions;
        partitions.is_empty().then_some(())
    });
    assert!(sc.terminate().status.success(), "SIGTERM must stop the SC cleanly");
}

#[test]
fn spus_and_spu_groups() {
    let dir = tempfile::tempdir().unwrap();
    let sc = ScProcess::start(&dir.path().join("data"));
    let mut client = sc.admin();
    assert_ok(&client.register_spu(custom_spu(5)).unwrap());
    let managed = SpuSpec { spu_type: SpuType::Managed, ..custom_spu(6) };
    assert_error(&client.register_spu(managed).unwrap(), ErrorCode::InvalidRequest);
    let ids: Vec<i32> =
        client.list_spus().unwrap().spus.iter().map(|spu| spu.spec.id.get()).collect();
    assert_eq!(ids, [5]);

    let group = SpuGroupName::new("main").unwrap();
    let spec = SpuGroupSpec { replicas: 3, first_id: SpuId(100), ..SpuGroupSpec::default() };
    assert_ok(&client.create_spu_group(group.clone(), spec.clone()).unwrap());
    assert_error(
        &client.create_spu_group(group.clone(), spec).unwrap(),
        ErrorCode::SpuGroupAlreadyExists,
    );
    let clash = SpuGroupSpec { replicas: 2, first_id: SpuId(4), ..SpuGroupSpec::default() };
    let refused = client.create_spu_group(SpuGroupName::new("clash").unwrap(), clash).unwrap();
    assert_error(&refused, ErrorCode::SpuAlreadyExists);
    wait_for("managed SPUs generated", || {
        let spus = client.list_spus().unwrap().spus;
        let ids: Vec<i32> = spus.iter().map(|spu| spu.spec.id.get()).collect();
        (ids == [5, 100, 101, 102]).then_some(())
    });
    let groups = client.list_spu_groups().unwrap().groups;
    assert_eq!(groups.len(), 1);
    wait_for("group reserved", || {
        let groups = client.list_spu_groups().unwrap().groups;
        (groups[0].status.resolution == SpuGroupResolution::Reserved).then_some(())
    });
    let unregister_managed = client.unregister_spu(SpuId(100)).unwrap();
    assert_error(&unregister_managed, ErrorCode::InvalidRequest);
    assert_ok(&client.unregister_spu(SpuId(5)).unwrap());
    assert_error(&client.unregister_spu(SpuId(5)).unwrap(), ErrorCode::SpuNotFound);
    assert_ok(&client.delete_spu_group(group.clone()).unwrap());
    assert_error(&client.delete_spu_group(group).unwrap(), ErrorCode::SpuGroupNotFound);
    wait_for("managed SPUs removed with their group", || {
        client.list_spus().unwrap().spus.is_empty().then_some(())
    });
}

#[test]
fn malformed_input_gets_error_responses() {
    let dir = tempfile::tempdir().unwrap();
    let sc = ScProcess::start(&dir.path().join("data"));
    let mut client = sc.admin();
    // Unknown API key 999: error response echoing it, the connection stays usable.
    client.send_raw(&[0, 0, 0, 9, 0x03, 0xe7, 0, 0, 0, 0, 0, 7, 0xaa]).unwrap();
    let frame = client.read_frame().unwrap();
    assert_eq!((frame.api_key, frame.correlation_id), (999, 7));
    let body = AdminResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!(body.error_code, ErrorCode::UnknownApiKey);
    // Unsupported version of a known key.
    client.send_raw(&[0, 0, 0, 8, 0, 112, 0, 9, 0, 0, 0, 8]).unwrap();
    let frame = client.read_frame().unwrap();
    let body = AdminResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!((frame.correlation_id, body.error_code), (8, ErrorCode::UnsupportedVersion));
    // A body that does not decode.
    client.send_raw(&[0, 0, 0, 10, 0, 110, 0, 0, 0, 0, 0, 9, 0xff, 0xff]).unwrap();
    let frame = client.read_frame().unwrap();
    let body = AdminResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!((frame.correlation_id, body.error_code), (9, ErrorCode::InvalidRequest));
    // An invalid topic name, encoded by hand (the typed API cannot build one).
    let mut body = Vec::new();
    let spec = TopicSpec::computed(1, 1);
    let raw = postcard::to_stdvec(&("bad/name", spec, false)).unwrap();
    body.extend_from_slice(&raw);
    let mut frame = Vec::new();
    frame.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&[0, 110, 0, 0, 0, 0, 0, 10]);
    frame.extend_from_slice(&body);
    client.send_raw(&frame).unwrap();
    let answer = client.read_frame().unwrap();
    let response = AdminResponse::decode(ApiVersion(0), &answer.body).unwrap();
    assert_eq!(response.error_code, ErrorCode::InvalidTopicName, "{response:?}");
    // Still usable after all that.
    assert!(client.list_topics().unwrap().topics.is_empty());
    // A frame above the maximum: an error response, then the connection is closed.
    client.send_raw(&[0x10, 0, 0, 0, 0, 110, 0, 0, 0, 0, 0, 11]).unwrap();
    let frame = client.read_frame().unwrap();
    let body = AdminResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!(body.error_code, ErrorCode::FrameTooLarge);
    assert!(client.read_frame().is_err(), "the connection must be closed");
    // The server is fine.
    let mut other = sc.admin();
    let mut out = Vec::new();
    let request =
        CreateTopicRequest { name: topic("t"), spec: TopicSpec::computed(1, 1), dry_run: true };
    encode_request(&mut out, ApiVersion(0), CorrelationId(1), &request).unwrap();
    other.send_raw(&out).unwrap();
    let frame = other.read_frame().unwrap();
    let body = AdminResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!(body.error_code, ErrorCode::ReplicationFactorAboveSpuCount);
}

#[test]
fn metadata_watch_pushes_topology_changes() {
    let dir = tempfile::tempdir().unwrap();
    let sc = ScProcess::start(&dir.path().join("data"));
    let mut watcher = sc.admin();
    let subscription = watcher.watch_metadata(None).unwrap();
    let first = watcher.next_watch_update(subscription).unwrap();
    let sluice_proto::api::metadata::Changes::Full(topics) = &first.topics else {
        panic!("first update must be full")
    };
    assert!(topics.is_empty());
    let mut client = sc.admin();
    assert_ok(&client.register_spu(custom_spu(1)).unwrap());
    assert_ok(&client.create_topic(topic("events"), TopicSpec::computed(2, 1)).unwrap());
    let mut last_epoch = first.epoch;
    wait_for("pushed metadata with the new topic's partitions", || {
        let update = watcher.next_watch_update(subscription).unwrap();
        assert!(update.epoch > last_epoch, "epochs grow");
        last_epoch = update.epoch;
        let sluice_proto::api::metadata::Changes::Full(topics) = update.topics else {
            return None;
        };
        (topics.len() == 1 && topics[0].partitions.len() == 2).then_some(())
    });
}

#[test]
fn help_explains_every_flag() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-sc"))
        .arg("--help")
        .output()
        .expect("run sluice-sc --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--config",
        "--public-address",
        "--private-address",
        "--metrics-address",
        "--store",
        "--data-dir",
        "--consul-address",
        "--consul-token",
        "--consul-key-prefix",
        "--cluster",
        "--topic-partitions",
        "--topic-replication-factor",
        "--topic-retention-ms",
        "--topic-segment-bytes",
        "--heartbeat-timeout-ms",
        "--ready-file",
        "SLUICE_SC_PUBLIC_ADDRESS",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}
