//! Objects as the metadata store keeps them: readable JSON that round-trips, with names and
//! keys validated on the way in.

use sluice_proto::ids::*;
use sluice_proto::object::*;

fn round_trip<T>(value: &T) -> String
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).unwrap();
    assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
    json
}

#[test]
fn specs_and_statuses_round_trip_as_readable_json() {
    let placement = ReplicaPlacement { spu: SpuId(1), core: CoreId(2) };
    let topic = TopicSpec {
        replicas: ReplicaSpec::Assigned(vec![PartitionAssignment { replicas: vec![placement] }]),
        durability: Durability::Relaxed { flush_bytes_max: 1 << 20, flush_interval_ms: 50 },
        ..TopicSpec::default()
    };
    let json = round_trip(&topic);
    assert!(json.contains(r#""assigned":[{"replicas":[{"spu":1,"core":2}]}]"#), "{json}");
    assert!(json.contains(r#""relaxed":{"flush_bytes_max":1048576"#), "{json}");
    round_trip(&TopicStatus {
        resolution: TopicResolution::InsufficientResources,
        reason: Some("need 3 SPUs, 1 online".into()),
        replica_map: vec![PartitionReplicas {
            partition: PartitionId(0),
            replicas: vec![placement],
        }],
    });
    let spu = SpuSpec {
        id: SpuId(5001),
        spu_type: SpuType::Managed,
        rack: None,
        public_endpoint: Endpoint::new("::1", 9005),
        private_endpoint: Endpoint::new("::1", 9006),
        encryption: EncryptionMode::Tls,
    };
    assert_eq!(spu.public_endpoint.to_string(), "[::1]:9005");
    assert!(round_trip(&spu).contains(r#""spu_type":"managed""#));
    round_trip(&SpuStatus { resolution: SpuResolution::Offline, ..SpuStatus::default() });
    round_trip(&SpuGroupSpec { replicas: 2, ..SpuGroupSpec::default() });
    round_trip(&SpuGroupStatus::default());
    round_trip(&PartitionSpec {
        replicas: vec![placement],
        leader: SpuId(1),
        leader_epoch: LeaderEpoch(7),
        config: ReplicaConfig::default(),
        reassignment: None,
    });
    round_trip(&PartitionStatus::default());
    let key = PartitionKey::new(TopicName::new("t").unwrap(), PartitionId(3));
    assert_eq!(round_trip(&key), r#"{"topic":"t","partition":3}"#);
}

#[test]
fn invalid_names_never_deserialize() {
    let json = r#"{"topic":"bad/name","partition":3}"#;
    let error = serde_json::from_str::<PartitionKey>(json).unwrap_err().to_string();
    assert!(error.contains("[a-zA-Z0-9._-]"), "{error}");
    assert!("bad/name-3".parse::<PartitionKey>().is_err());
}

#[test]
fn settings_errors_say_what_is_allowed() {
    let spec = TopicSpec { batch_bytes_max: 10, ..TopicSpec::default() };
    assert_eq!(
        spec.validate().unwrap_err().to_string(),
        "batch_bytes_max is 10, allowed 1024..=33554432"
    );
    let spec = TopicSpec { table_kind: TableKind::PrimaryKey, ..TopicSpec::default() };
    assert!(spec.validate().unwrap_err().to_string().contains("compact"));
    let spec = SpuGroupSpec { replicas: 2, first_id: SpuId(i32::MAX), ..SpuGroupSpec::default() };
    assert!(spec.validate().unwrap_err().to_string().starts_with("first_id is"));
}
