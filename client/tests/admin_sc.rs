//! The admin API and the metadata watch against a real `sluice-sc` (no SPU needed), and SC
//! fail-over over several addresses: refused connections and a standby answering
//! `NotController`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use sluice_client::{
    ClientConfig, ClientError, Cluster, ErrorCode, SpuGroupSpec, SpuId, SpuSpec, TopicSpec,
};
use sluice_proto::api::admin::AdminResponse;
use sluice_proto::frame::{encode_frame, FrameDecoder};
use sluice_proto::object::{Endpoint, SpuType};
use sluice_testkit::process::{wait_for, ScProcess, ServerProcess, CONDITION_TIMEOUT};

fn custom_spu(id: i32) -> SpuSpec {
    SpuSpec {
        id: SpuId(id),
        spu_type: SpuType::Custom,
        rack: None,
        public_endpoint: Endpoint::new("127.0.0.1", 19_005),
        private_endpoint: Endpoint::new("127.0.0.1", 19_006),
        encryption: Default::default(),
    }
}

/// An address that refuses connections (a listener bound, then closed).
fn refused_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A fake standby SC: answers every request with `NotController` under its header.
fn standby_sc() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut decoder = FrameDecoder::new(1 << 20);
                let mut chunk = [0u8; 4096];
                loop {
                    let read = match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(read) => read,
                    };
                    decoder.feed(&chunk[..read]);
                    while let Ok(Some(frame)) = decoder.next_frame() {
                        let body = AdminResponse::error(ErrorCode::NotController, "standby");
                        let mut out = Vec::new();
                        encode_frame(&mut out, &frame.header, &body).unwrap();
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    address
}

#[test]
fn unreachable_sc_says_how_to_start_a_cluster() {
    let error = Cluster::connect(ClientConfig::new(&refused_address())).unwrap_err();
    assert!(matches!(error, ClientError::ScUnreachable { .. }), "{error:?}");
    assert!(error.is_retriable());
    assert!(error.to_string().contains("sluice cluster start --local"), "{error}");
}

#[test]
fn only_standbys_is_no_active_controller() {
    let error = Cluster::connect(ClientConfig::new(&standby_sc())).unwrap_err();
    assert!(matches!(error, ClientError::NoActiveController { .. }), "{error:?}");
}

#[test]
fn fails_over_past_refused_and_standby_addresses() {
    let directory = tempfile::tempdir().unwrap();
    let sc = ScProcess::start(&directory.path().join("sc"));
    let addresses = format!("{},{},{}", refused_address(), standby_sc(), sc.public_address);
    let cluster = Cluster::connect(ClientConfig::new(&addresses)).unwrap();
    let admin = cluster.admin();
    admin.register_spu(custom_spu(7)).unwrap();
    assert_eq!(admin.list_spus().unwrap().len(), 1);
    // The metadata watch found the active SC too: the new SPU is pushed without a refresh.
    let seen = cluster.wait_for_metadata(CONDITION_TIMEOUT, |snapshot| {
        snapshot.spus.contains_key(&SpuId(7)).then_some(())
    });
    assert!(seen.is_some(), "the watch never delivered SPU 7");
}

#[test]
fn admin_round_trip_and_refusals() {
    let directory = tempfile::tempdir().unwrap();
    let sc = ScProcess::start(&directory.path().join("sc"));
    let cluster = Cluster::connect(sc.client_config()).unwrap();
    let admin = cluster.admin();

    // SPUs.
    admin.register_spu(custom_spu(1)).unwrap();
    let again = admin.register_spu(custom_spu(1)).unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::SpuAlreadyExists), "{again}");
    let spus = admin.list_spus().unwrap();
    assert_eq!(spus.iter().map(|spu| spu.spec.id).collect::<Vec<_>>(), [SpuId(1)]);

    // Topics: one registered SPU hosts replication factor 1, not 2.
    admin.create_topic("orders", TopicSpec::computed(3, 1)).unwrap();
    let duplicate = admin.create_topic("orders", TopicSpec::computed(3, 1)).unwrap_err();
    assert_eq!(duplicate.code(), Some(ErrorCode::TopicAlreadyExists));
    assert!(!duplicate.is_retriable());
    let too_many = admin.create_topic("wide", TopicSpec::computed(1, 2)).unwrap_err();
    assert_eq!(too_many.code(), Some(ErrorCode::ReplicationFactorAboveSpuCount), "{too_many}");
    assert!(too_many.to_string().contains("SPUs"), "{too_many}");
    admin.validate_topic("dry", TopicSpec::computed(1, 1)).unwrap();
    let invalid = admin.create_topic("bad name!", TopicSpec::computed(1, 1)).unwrap_err();
    assert!(matches!(invalid, ClientError::InvalidInput { .. }), "{invalid:?}");
    let huge = admin.create_topic("huge", TopicSpec::computed(1_000_000, 1)).unwrap_err();
    assert_eq!(huge.code(), Some(ErrorCode::InvalidPartitions), "{huge}");
    assert!(huge.to_string().contains("allowed"), "{huge}");

    let names: Vec<String> =
        admin.list_topics().unwrap().into_iter().map(|topic| topic.name.to_string()).collect();
    assert_eq!(names, ["orders"]);
    let (topic, partitions) = admin.describe_topic("orders").unwrap();
    assert_eq!(topic.spec.partition_count(), 3);
    let listed = wait_for("partitions of orders", || {
        let listed = admin.list_partitions(Some("orders")).unwrap();
        (listed.len() == 3).then_some(listed)
    });
    assert!(partitions.len() <= 3);
    assert_eq!(listed.len(), 3);
    assert_eq!(cluster.partition_count("orders").unwrap(), 3);
    let missing = cluster.partition_count("missing").unwrap_err();
    assert!(matches!(missing, ClientError::UnknownTopic { .. }), "{missing:?}");

    admin.delete_topic("orders").unwrap();
    let gone = admin.describe_topic("orders").unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::TopicNotFound), "{gone}");
    assert!(admin.list_topics().unwrap().is_empty());

    // SPU groups.
    let group = SpuGroupSpec { replicas: 2, first_id: SpuId(100), ..Default::default() };
    admin.create_spu_group("local", group.clone()).unwrap();
    let duplicate = admin.create_spu_group("local", group).unwrap_err();
    assert_eq!(duplicate.code(), Some(ErrorCode::SpuGroupAlreadyExists));
    let groups = admin.list_spu_groups().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].name.as_str(), "local");
    admin.delete_spu_group("local").unwrap();
    assert!(admin.list_spu_groups().unwrap().is_empty());
    let missing = admin.delete_spu_group("never-created").unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::SpuGroupNotFound), "{missing}");

    admin.unregister_spu(SpuId(1)).unwrap();
    let missing = admin.unregister_spu(SpuId(1)).unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::SpuNotFound), "{missing}");
}

#[test]
fn admin_moves_to_a_restarted_sc_and_watch_follows() {
    let directory = tempfile::tempdir().unwrap();
    let mut first = ScProcess::start(&directory.path().join("first"));
    let second_directory = directory.path().join("second");
    let second = ScProcess::start(&second_directory);
    let addresses = format!("{},{}", first.public_address, second.public_address);
    let cluster = Cluster::connect(ClientConfig::new(&addresses)).unwrap();
    cluster.admin().register_spu(custom_spu(1)).unwrap();
    first.kill();
    // The next call finds the first SC gone and moves to the second (a separate store here,
    // so it does not know SPU 1: that shows which SC answered).
    let spus = cluster.admin().list_spus().unwrap();
    assert!(spus.is_empty(), "answered by the second SC");
    cluster.admin().register_spu(custom_spu(2)).unwrap();
    let seen = cluster.wait_for_metadata(Duration::from_secs(30), |snapshot| {
        snapshot.spus.contains_key(&SpuId(2)).then_some(())
    });
    assert!(seen.is_some(), "the watch did not move to the second SC");
}
