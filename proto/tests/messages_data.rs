//! Data-plane messages (hand-written binary): round trip, truncation at every byte, golden
//! bytes. Golden bytes pin the published layout documented in each module.

mod common;

use std::ops::Range;

use sluice_proto::api::api_versions::*;
use sluice_proto::api::fetch::*;
use sluice_proto::api::list_offsets::*;
use sluice_proto::api::produce::*;
use sluice_proto::api::replication::*;
use sluice_proto::api::stream_fetch::*;
use sluice_proto::api::{ApiKey, VersionRange};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::*;
use sluice_proto::object::TopicName;

fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap()
}

fn produce_view(decoded: ProduceRequest<Range<usize>>, body: &[u8]) -> ProduceRequest<&[u8]> {
    decoded.map_records(|range| &body[range])
}

fn produce_request() -> ProduceRequest<&'static [u8]> {
    ProduceRequest {
        acks: Acks::All,
        timeout_ms: 1500,
        topics: vec![
            ProduceTopic {
                name: topic("t"),
                partitions: vec![
                    ProducePartition { partition: PartitionId(0), records: &[1, 2, 3] },
                    ProducePartition { partition: PartitionId(7), records: &[] },
                ],
            },
            ProduceTopic { name: topic("u"), partitions: vec![] },
        ],
    }
}

message_tests!(produce_request: ProduceRequest<Range<usize>> = produce_request(),
    view produce_view,
    golden "02 000005dc 00000002
            0001 74 00000002 00000000 00000003 010203 00000007 00000000
            0001 75 00000000");

message_tests!(produce_response: ProduceResponse = ProduceResponse {
        topics: vec![ProduceTopicResponse {
            name: topic("t"),
            partitions: vec![
                ProducePartitionResponse {
                    partition: PartitionId(1),
                    error_code: ErrorCode::None,
                    base_offset: Some(Offset(42)),
                    log_append_time: None,
                    log_start_offset: Some(Offset(0)),
                },
                ProducePartitionResponse::error(PartitionId(2), ErrorCode::NotLeader),
            ],
        }],
    },
    golden "0000000100017400000002000000010000000000000000002affffffffffffffff0000000000000000000000020006ffffffffffffffffffffffffffffffffffffffffffffffff");

fn partition_header(partition: u32) -> FetchPartitionHeader {
    FetchPartitionHeader {
        partition: PartitionId(partition),
        error_code: ErrorCode::None,
        high_watermark: Offset(10),
        last_stable_offset: Offset(10),
        log_end_offset: Offset(12),
        log_start_offset: Offset(0),
    }
}

message_tests!(fetch_request: FetchRequest = FetchRequest {
        isolation: Isolation::ReadCommitted,
        max_wait_ms: 500,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: topic("t"),
            partitions: vec![FetchPartition {
                partition: PartitionId(3),
                fetch_offset: Offset(100),
                partition_max_bytes: 65536,
                current_leader_epoch: Some(LeaderEpoch(2)),
            }, FetchPartition {
                partition: PartitionId(4),
                fetch_offset: Offset(0),
                partition_max_bytes: 1,
                current_leader_epoch: None,
            }],
        }],
    },
    golden "01000001f400000001001000000000000100017400000002000000030000000000000064000100000000000200000004000000000000000000000001ffffffff");

message_tests!(fetch_response: FetchResponse<&[u8]> = FetchResponse {
        topics: vec![FetchTopicResponse {
            name: topic("t"),
            partitions: vec![
                FetchPartitionResponse { header: partition_header(3), records: &[9u8, 8, 7][..] },
                FetchPartitionResponse {
                    header: FetchPartitionHeader::error(PartitionId(4), ErrorCode::OffsetOutOfRange),
                    records: &[][..],
                },
            ],
        }],
    },
    golden "0000000100017400000002000000030000000000000000000a000000000000000a000000000000000c000000000000000000000003090807000000040001ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000000");

message_tests!(stream_fetch_request: StreamFetchRequest = StreamFetchRequest {
        topic: topic("t"),
        partition: PartitionId(1),
        start_offset: Offset(5),
        isolation: Isolation::ReadUncommitted,
        max_bytes_per_push: 4096,
        credit_bytes: 1 << 16,
    },
    golden "000174000000010000000000000005000000100000010000");

message_tests!(stream_fetch_push_records: StreamFetchPush<&[u8]> =
    StreamFetchPush::Records(FetchPartitionResponse {
        header: partition_header(1),
        records: &[0xAAu8, 0xBB][..],
    }),
    golden "00000000010000000000000000000a000000000000000a000000000000000c000000000000000000000002aabb");

message_tests!(stream_fetch_push_end: StreamFetchPush<&[u8]> = StreamFetchPush::<&[u8]>::End {
        error_code: ErrorCode::NotLeader,
        next_offset: Offset(77),
    },
    golden "010006000000000000004d");

message_tests!(stream_fetch_credit: StreamFetchCredit = StreamFetchCredit {
        stream: CorrelationId(9),
        credit_bytes: 8192,
    },
    golden "00000009 00002000");

message_tests!(stream_fetch_cancel: StreamFetchCancel = StreamFetchCancel {
        stream: CorrelationId(-2),
    },
    golden "fffffffe");

message_tests!(list_offsets_request: ListOffsetsRequest = ListOffsetsRequest {
        isolation: Isolation::ReadCommitted,
        topics: vec![ListOffsetsTopic {
            name: topic("t"),
            partitions: vec![
                ListOffsetsPartition { partition: PartitionId(0), spec: OffsetSpec::Earliest },
                ListOffsetsPartition { partition: PartitionId(1), spec: OffsetSpec::Latest },
                ListOffsetsPartition {
                    partition: PartitionId(2),
                    spec: OffsetSpec::ByTimestamp(TimestampMs(1_700_000_000_000)),
                },
            ],
        }],
    },
    golden "010000000100017400000003000000000000000000000000000000000101000000000000000000000002020000018bcfe56800");

message_tests!(list_offsets_response: ListOffsetsResponse = ListOffsetsResponse {
        topics: vec![ListOffsetsTopicResponse {
            name: topic("t"),
            partitions: vec![
                ListOffsetsPartitionResponse {
                    partition: PartitionId(2),
                    error_code: ErrorCode::None,
                    offset: Some(Offset(31)),
                    timestamp: Some(TimestampMs(1_700_000_000_123)),
                },
                ListOffsetsPartitionResponse {
                    partition: PartitionId(3),
                    error_code: ErrorCode::UnknownTopicOrPartition,
                    offset: None,
                    timestamp: None,
                },
            ],
        }],
    },
    golden "0000000100017400000002000000020000000000000000001f0000018bcfe5687b000000030003ffffffffffffffffffffffffffffffff");

message_tests!(api_versions_request: ApiVersionsRequest = ApiVersionsRequest, golden "");

message_tests!(api_versions_response: ApiVersionsResponse = ApiVersionsResponse {
        error_code: ErrorCode::None,
        apis: vec![
            ApiVersionEntry { api_key: ApiKey::Produce.number(), versions: ApiKey::Produce.versions() },
            ApiVersionEntry {
                api_key: 999,
                versions: VersionRange { min: ApiVersion(1), max: ApiVersion(3) },
            },
        ],
    },
    golden "00000000000200010000000003e700010003");

message_tests!(follower_fetch_request: FollowerFetchRequest = FollowerFetchRequest {
        follower: SpuId(5002),
        max_wait_ms: 100,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FollowerFetchTopic {
            name: topic("t"),
            partitions: vec![FollowerFetchPartition {
                partition: PartitionId(0),
                fetch_offset: Offset(10),
                log_end_offset: Offset(10),
                leader_epoch: Some(LeaderEpoch(3)),
                last_fetched_epoch: Some(LeaderEpoch(2)),
                partition_max_bytes: 1 << 20,
            }],
        }],
    },
    golden "0000138a000000640000000100100000000000010001740000000100000000000000000000000a000000000000000a000000030000000200100000");

#[test]
fn produce_records_are_patched_in_place() {
    let mut body = common::encode_v0(&produce_request());
    let decoded = ProduceRequest::decode(common::V0, &body).unwrap();
    let range = decoded.topics[0].partitions[0].records.clone();
    body[range.clone()].copy_from_slice(&[7, 7, 7]);
    let again = ProduceRequest::decode(common::V0, &body).unwrap();
    assert_eq!(&body[again.topics[0].partitions[0].records.clone()], &[7, 7, 7]);
    assert_eq!(range, 24..27);
}

#[test]
fn invalid_enum_values_are_errors() {
    let mut body = common::encode_v0(&produce_request());
    body[0] = 3; // acks
    assert!(ProduceRequest::decode(common::V0, &body).is_err());
    let mut body = common::encode_v0(&StreamFetchPush::<&[u8]>::End {
        error_code: ErrorCode::None,
        next_offset: Offset(0),
    });
    body[0] = 2; // push kind
    assert!(StreamFetchPush::decode(common::V0, &body).is_err());
}

use sluice_proto::api::Decode;
