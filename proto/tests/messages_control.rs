//! Control-plane messages (postcard): round trip, truncation at every byte, golden bytes.
//! Golden bytes pin postcard's layout of each v0 struct: reordering or retyping a field is a
//! wire break and must become a new version instead.

mod common;

use sluice_proto::api::admin::*;
use sluice_proto::api::control::*;
use sluice_proto::api::metadata::*;
use sluice_proto::api::replication::*;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::*;
use sluice_proto::object::*;

fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap()
}

fn key(name: &str, partition: u32) -> PartitionKey {
    PartitionKey::new(topic(name), PartitionId(partition))
}

fn placement(spu: i32, core: u16) -> ReplicaPlacement {
    ReplicaPlacement { spu: SpuId(spu), core: CoreId(core) }
}

fn spu_spec(id: i32) -> SpuSpec {
    SpuSpec {
        id: SpuId(id),
        spu_type: SpuType::Custom,
        rack: Some("r1".into()),
        public_endpoint: Endpoint::new("h", 9005),
        private_endpoint: Endpoint::new("h", 9006),
        encryption: EncryptionMode::Plaintext,
    }
}

fn spu_status() -> SpuStatus {
    SpuStatus {
        resolution: SpuResolution::Online,
        cores: 2,
        core_public_ports: vec![9010, 9011],
        core_private_ports: vec![9020, 9021],
        version: "0.1.0".into(),
        last_heartbeat: Some(TimestampMs(1000)),
        incarnation: None,
    }
}

fn topic_spec() -> TopicSpec {
    TopicSpec {
        retention_time_ms: Some(60_000),
        durability: Durability::Relaxed { flush_bytes_max: 4096, flush_interval_ms: 100 },
        ..TopicSpec::computed(2, 2)
    }
}

fn replica_status(spu: i32) -> ReplicaStatus {
    ReplicaStatus {
        spu: SpuId(spu),
        high_watermark: Offset(5),
        log_end_offset: Offset(7),
        durable_end_offset: Offset(6),
        lag_records: 2,
    }
}

fn spu_peer(id: i32) -> SpuPeer {
    SpuPeer { spec: spu_spec(id), core_private_ports: vec![9020], online: true }
}

fn in_sync() -> InSyncSet {
    InSyncSet { replicas: vec![SpuId(1), SpuId(2)], partition_epoch: PartitionEpoch(4) }
}

fn partition_spec() -> PartitionSpec {
    PartitionSpec {
        replicas: vec![placement(1, 0), placement(2, 1)],
        leader: SpuId(1),
        leader_epoch: LeaderEpoch(3),
        config: ReplicaConfig::from(&topic_spec()),
        reassignment: None,
    }
}

fn partition_entry() -> PartitionEntry {
    PartitionEntry {
        key: key("t", 0),
        spec: partition_spec(),
        status: PartitionStatus {
            resolution: PartitionResolution::Online,
            leader: replica_status(1),
            in_sync_replicas: vec![SpuId(1), SpuId(2)],
            partition_epoch: PartitionEpoch(4),
            replicas: vec![replica_status(2)],
        },
    }
}

fn topic_entry() -> TopicEntry {
    TopicEntry {
        name: topic("t"),
        spec: topic_spec(),
        status: TopicStatus {
            resolution: TopicResolution::Provisioned,
            reason: None,
            replica_map: vec![PartitionReplicas {
                partition: PartitionId(0),
                replicas: vec![placement(1, 0), placement(2, 1)],
            }],
        },
    }
}

fn spu_metadata() -> SpuMetadata {
    SpuMetadata {
        id: SpuId(1),
        public_endpoint: Endpoint::new("h", 9005),
        core_public_ports: vec![],
        rack: None,
        encryption: EncryptionMode::Tls,
        online: true,
    }
}

fn topic_metadata() -> TopicMetadata {
    TopicMetadata {
        name: topic("t"),
        error_code: ErrorCode::None,
        partitions: vec![PartitionMetadata {
            partition: PartitionId(0),
            error_code: ErrorCode::None,
            leader: SpuId(1),
            leader_core: CoreId(1),
            leader_epoch: LeaderEpoch(4),
            replicas: vec![placement(1, 1)],
            in_sync_replicas: vec![SpuId(1)],
        }],
    }
}

// Client <-> SC: metadata.
message_tests!(metadata_request: MetadataRequest =
    MetadataRequest { topics: Some(vec![topic("t")]) }, golden "01010174");
message_tests!(metadata_response: MetadataResponse = MetadataResponse {
        epoch: UpdateEpoch(9),
        spus: vec![spu_metadata()],
        topics: vec![topic_metadata()],
    }, golden "0901020168ad4600000101010174000100000201080102010102");
message_tests!(metadata_watch_request: MetadataWatchRequest =
    MetadataWatchRequest { topics: None }, golden "00");
message_tests!(metadata_watch_update_full: MetadataWatchUpdate = MetadataWatchUpdate {
        epoch: UpdateEpoch(1),
        spus: Changes::Full(vec![spu_metadata()]),
        topics: Changes::Full(vec![topic_metadata()]),
    }, golden "010001020168ad460000010100010174000100000201080102010102");
message_tests!(metadata_watch_update_delta: MetadataWatchUpdate = MetadataWatchUpdate {
        epoch: UpdateEpoch(2),
        spus: Changes::Delta { base_epoch: UpdateEpoch(1), changes: vec![Change::Remove(SpuId(1))] },
        topics: Changes::Delta {
            base_epoch: UpdateEpoch(1),
            changes: vec![Change::Upsert(topic_metadata()), Change::Remove(topic("old"))],
        },
    }, golden "02010101010201010200017400010000020108010201010201036f6c64");

// Client <-> SC: admin.
message_tests!(admin_response: AdminResponse =
    AdminResponse::error(ErrorCode::TopicAlreadyExists, "t exists"), golden "4801087420657869737473");
message_tests!(create_topic_request: CreateTopicRequest = CreateTopicRequest {
        name: topic("t"),
        spec: topic_spec(),
        dry_run: false,
    }, golden "0174000202000101e0d403008080808004808040000000018020640000");
message_tests!(create_topic_request_assigned: CreateTopicRequest = CreateTopicRequest {
        name: topic("t"),
        spec: TopicSpec {
            replicas: ReplicaSpec::Assigned(vec![PartitionAssignment {
                replicas: vec![placement(1, 0), placement(2, 3)],
            }]),
            table_kind: TableKind::PrimaryKey,
            cleanup_policy: CleanupPolicy::Compact,
            compression: CompressionType::Zstd,
            ..TopicSpec::default()
        },
        dry_run: true,
    }, golden "0174010102020004030100008080808004808040010501000001");
message_tests!(delete_topic_request: DeleteTopicRequest =
    DeleteTopicRequest { name: topic("t") }, golden "0174");
message_tests!(list_topics_request: ListTopicsRequest =
    ListTopicsRequest { names: None }, golden "00");
message_tests!(list_topics_response: ListTopicsResponse = ListTopicsResponse {
        error_code: ErrorCode::None,
        topics: vec![topic_entry()],
    }, golden "00010174000202000101e0d4030080808080048080400000000180206400040001000202000401");
message_tests!(describe_topic_request: DescribeTopicRequest =
    DescribeTopicRequest { name: topic("t") }, golden "0174");
message_tests!(describe_topic_response: DescribeTopicResponse = DescribeTopicResponse {
        error_code: ErrorCode::None,
        topic: Some(topic_entry()),
        partitions: vec![partition_entry()],
    }, golden "00010174000202000101e0d40300808080800480804000000001802064000400010002020004010101740002020004010206808080800480804001e0d4030000018020640100000001020a0e0c020202040401040a0e0c02");
message_tests!(register_spu_request: RegisterSpuRequest =
    RegisterSpuRequest { spec: spu_spec(5001) }, golden "924e01010272310168ad460168ae4600");
message_tests!(unregister_spu_request: UnregisterSpuRequest =
    UnregisterSpuRequest { id: SpuId(5001) }, golden "924e");
message_tests!(list_spus_request: ListSpusRequest = ListSpusRequest, golden "");
message_tests!(list_spus_response: ListSpusResponse = ListSpusResponse {
        error_code: ErrorCode::None,
        spus: vec![SpuEntry { spec: spu_spec(1), status: spu_status() }],
    }, golden "00010201010272310168ad460168ae4600010202b246b34602bc46bd4605302e312e3001d00f00");
message_tests!(create_spu_group_request: CreateSpuGroupRequest = CreateSpuGroupRequest {
        name: SpuGroupName::new("main").unwrap(),
        spec: SpuGroupSpec {
            replicas: 3,
            first_id: SpuId(5000),
            rack: None,
            storage: StorageConfig { log_dir: Some("/data".into()), size_bytes: Some(1 << 30) },
        },
    }, golden "046d61696e03904e0001052f64617461018080808004");
message_tests!(delete_spu_group_request: DeleteSpuGroupRequest =
    DeleteSpuGroupRequest { name: SpuGroupName::new("main").unwrap() }, golden "046d61696e");
message_tests!(list_spu_groups_request: ListSpuGroupsRequest = ListSpuGroupsRequest, golden "");
message_tests!(list_spu_groups_response: ListSpuGroupsResponse = ListSpuGroupsResponse {
        error_code: ErrorCode::None,
        groups: vec![SpuGroupEntry {
            name: SpuGroupName::new("main").unwrap(),
            spec: SpuGroupSpec { replicas: 1, ..SpuGroupSpec::default() },
            status: SpuGroupStatus {
                resolution: SpuGroupResolution::Reserved,
                reason: None,
                resolved_spus: vec![SpuId(0)],
            },
        }],
    }, golden "0001046d61696e010000000002000100");
message_tests!(list_partitions_request: ListPartitionsRequest =
    ListPartitionsRequest { topic: Some(topic("t")) }, golden "010174");
message_tests!(list_partitions_response: ListPartitionsResponse = ListPartitionsResponse {
        error_code: ErrorCode::None,
        partitions: vec![partition_entry()],
    }, golden "000101740002020004010206808080800480804001e0d4030000018020640100000001020a0e0c020202040401040a0e0c02");

// SC <-> SPU.
message_tests!(spu_register_request: SpuRegisterRequest = SpuRegisterRequest {
        id: SpuId(1),
        cores: 2,
        core_public_ports: vec![9010, 9011],
        core_private_ports: vec![9020, 9021],
        public_endpoint: Endpoint::new("127.0.0.1", 9005),
        private_endpoint: Endpoint::new("127.0.0.1", 9006),
        version: "0.1.0".into(),
        incarnation: 300,
    }, golden "020202b246b34602bc46bd46093132372e302e302e31ad46093132372e302e302e31ae4605302e312e30ac02");
message_tests!(spu_register_response_accepted: SpuRegisterResponse =
    SpuRegisterResponse::Accepted, golden "00");
message_tests!(spu_register_response_refused: SpuRegisterResponse =
    SpuRegisterResponse::Refused { error_code: ErrorCode::UnknownSpu, reason: "id 9".into() },
    golden "01da0f0469642039");
message_tests!(heartbeat_request: HeartbeatRequest =
    HeartbeatRequest { sent_at: TimestampMs(1_700_000_000_000) }, golden "80a0abfef962");
message_tests!(heartbeat_response: HeartbeatResponse = HeartbeatResponse {
        request_sent_at: TimestampMs(1),
        responder_time: TimestampMs(2),
    }, golden "0204");
message_tests!(spu_update_full: SpuUpdate = SpuUpdate {
        epoch: UpdateEpoch(1),
        changes: Changes::Full(vec![spu_peer(1), spu_peer(2)]),
    }, golden "0100020201010272310168ad460168ae460001bc46010401010272310168ad460168ae460001bc4601");
message_tests!(spu_update_delta: SpuUpdate = SpuUpdate {
        epoch: UpdateEpoch(3),
        changes: Changes::Delta {
            base_epoch: UpdateEpoch(2),
            changes: vec![Change::Upsert(spu_peer(3)), Change::Remove(SpuId(1))],
        },
    }, golden "03010202000601010272310168ad460168ae460001bc46010102");
message_tests!(replica_update_full: ReplicaUpdate = ReplicaUpdate {
        epoch: UpdateEpoch(1),
        changes: Changes::Full(vec![ReplicaAssignment {
            key: key("t", 0),
            spec: partition_spec(),
            in_sync: in_sync(),
        }]),
    }, golden "01000101740002020004010206808080800480804001e0d4030000018020640100000002020404");
message_tests!(replica_update_delta: ReplicaUpdate = ReplicaUpdate {
        epoch: UpdateEpoch(5),
        changes: Changes::Delta {
            base_epoch: UpdateEpoch(4),
            changes: vec![Change::Remove(key("t", 1))],
        },
    }, golden "0501040101017401");
message_tests!(request_snapshot: RequestSnapshot = RequestSnapshot {
        kind: SnapshotKind::Replicas,
        last_applied: Some(UpdateEpoch(4)),
    }, golden "010104");
message_tests!(live_replica_status: LiveReplicaStatus = LiveReplicaStatus {
        spu: SpuId(1),
        replicas: vec![LiveReplica {
            key: key("t", 0),
            leader_epoch: LeaderEpoch(3),
            leader: replica_status(1),
            followers: vec![replica_status(2)],
        }],
    }, golden "020101740006020a0e0c0201040a0e0c02");

message_tests!(alter_in_sync_request: AlterInSyncRequest = AlterInSyncRequest {
        spu: SpuId(1),
        partitions: vec![AlterInSyncPartition {
            key: key("t", 0),
            leader_epoch: LeaderEpoch(3),
            partition_epoch: PartitionEpoch(4),
            in_sync_replicas: vec![SpuId(1)],
        }],
    }, golden "020101740006040102");
message_tests!(alter_in_sync_response: AlterInSyncResponse = AlterInSyncResponse {
        partitions: vec![AlterInSyncResult {
            key: key("t", 0),
            error_code: ErrorCode::InvalidUpdateVersion,
            leader_epoch: LeaderEpoch(3),
            in_sync: in_sync(),
        }],
    }, golden "01017400be010602020404");
message_tests!(rebalance_leaders_request: RebalanceLeadersRequest =
    RebalanceLeadersRequest { topic: Some(topic("t")) }, golden "010174");
message_tests!(rebalance_leaders_response: RebalanceLeadersResponse = RebalanceLeadersResponse {
        error_code: ErrorCode::None,
        message: None,
        moved: vec![key("t", 0)],
        not_eligible: vec![key("t", 1)],
    }, golden "00000101740001017401");

message_tests!(alter_topic_partitions_request: AlterTopicPartitionsRequest =
    AlterTopicPartitionsRequest { name: topic("t"), partitions: 12 }, golden "01740c");
message_tests!(reassign_partitions_request: ReassignPartitionsRequest = ReassignPartitionsRequest {
        partitions: vec![
            PartitionReassignment {
                key: key("t", 0),
                change: ReassignmentChange::Move(vec![
                    ReplicaTarget { spu: SpuId(4), core: None },
                    ReplicaTarget { spu: SpuId(5), core: Some(CoreId(1)) },
                ]),
            },
            PartitionReassignment { key: key("t", 1), change: ReassignmentChange::Cancel },
        ],
        throttle_bytes_per_second: Some(1 << 20),
    }, golden "02017400000208000a01010174010101808040");
message_tests!(reassign_partitions_response: ReassignPartitionsResponse =
    ReassignPartitionsResponse {
        error_code: ErrorCode::None,
        message: None,
        results: vec![ReassignmentResult {
            key: key("t", 0),
            error_code: ErrorCode::ReassignmentInProgress,
            message: Some("moving".into()),
            target: vec![placement(4, 0)],
        }],
    }, golden "000001017400f80f01066d6f76696e67010800");
message_tests!(decommission_spu_request: DecommissionSpuRequest =
    DecommissionSpuRequest { id: SpuId(3), throttle_bytes_per_second: None }, golden "0600");

// SPU <-> SPU.
message_tests!(leader_epoch_end_offset_request: LeaderEpochEndOffsetRequest =
    LeaderEpochEndOffsetRequest {
        follower: SpuId(2),
        queries: vec![EpochQuery { key: key("t", 0), leader_epoch: LeaderEpoch(2) }],
    }, golden "040101740004");
message_tests!(leader_epoch_end_offset_response: LeaderEpochEndOffsetResponse =
    LeaderEpochEndOffsetResponse {
        results: vec![EpochEndOffset {
            key: key("t", 0),
            error_code: ErrorCode::None,
            leader_epoch: LeaderEpoch(2),
            end_offset: Offset(120),
        }],
    }, golden "010174000004f001");

#[test]
fn invalid_names_inside_postcard_bodies_are_rejected() {
    use sluice_proto::api::Decode;
    let mut body = common::encode_v0(&DeleteTopicRequest { name: topic("ab") });
    assert_eq!(body, [2, b'a', b'b']);
    body[1] = b'/';
    assert!(DeleteTopicRequest::decode(common::V0, &body).is_err());
}

#[test]
fn deltas_apply_only_on_their_base() {
    let delta: Changes<SpuSpec, SpuId> =
        Changes::Delta { base_epoch: UpdateEpoch(4), changes: vec![] };
    assert!(delta.applies_to(Some(UpdateEpoch(4))));
    assert!(!delta.applies_to(Some(UpdateEpoch(3))));
    assert!(!delta.applies_to(None));
    assert!(Changes::<SpuSpec, SpuId>::Full(vec![]).applies_to(None));
}
