//! Random data-plane messages round-trip, and decoded record positions point at the bytes
//! that were encoded (the property the SPU's in-place rewrite and splice rely on).

mod common;

use proptest::prelude::*;
use sluice_proto::api::fetch::*;
use sluice_proto::api::produce::*;
use sluice_proto::api::{ApiVersion, Decode, Encode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{Offset, PartitionId};
use sluice_proto::object::TopicName;

fn name() -> impl Strategy<Value = TopicName> {
    "[a-zA-Z0-9._-]{1,20}".prop_filter_map("reserved", |name| TopicName::new(name).ok())
}

fn records() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

fn produce() -> impl Strategy<Value = ProduceRequest<Vec<u8>>> {
    let partition = (any::<u32>(), records())
        .prop_map(|(id, records)| ProducePartition { partition: PartitionId(id), records });
    let topic = (name(), proptest::collection::vec(partition, 0..4))
        .prop_map(|(name, partitions)| ProduceTopic { name, partitions });
    let acks = prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::All)];
    (acks, any::<u32>(), proptest::collection::vec(topic, 0..4))
        .prop_map(|(acks, timeout_ms, topics)| ProduceRequest { acks, timeout_ms, topics })
}

fn fetch_response() -> impl Strategy<Value = FetchResponse<Vec<u8>>> {
    let header = (any::<u32>(), any::<i16>(), any::<[i64; 4]>()).prop_map(|(id, code, offsets)| {
        FetchPartitionHeader {
            partition: PartitionId(id),
            error_code: ErrorCode::from_code(code),
            high_watermark: Offset(offsets[0]),
            last_stable_offset: Offset(offsets[1]),
            log_end_offset: Offset(offsets[2]),
            log_start_offset: Offset(offsets[3]),
        }
    });
    let partition = (header, records())
        .prop_map(|(header, records)| FetchPartitionResponse { header, records });
    let topic = (name(), proptest::collection::vec(partition, 0..4))
        .prop_map(|(name, partitions)| FetchTopicResponse { name, partitions });
    proptest::collection::vec(topic, 0..4).prop_map(|topics| FetchResponse { topics })
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn produce_round_trips_with_exact_record_ranges(request in produce()) {
        let mut body = Vec::new();
        request.encode(ApiVersion(0), &mut body).unwrap();
        let decoded = ProduceRequest::decode(ApiVersion(0), &body).unwrap();
        let view = decoded.map_records(|range| body[range].to_vec());
        prop_assert_eq!(view, request);
    }

    #[test]
    fn fetch_response_round_trips(response in fetch_response()) {
        let mut body = Vec::new();
        response.encode(ApiVersion(0), &mut body).unwrap();
        let decoded = FetchResponse::decode(ApiVersion(0), &body).unwrap();
        let owned = FetchResponse {
            topics: decoded.topics.into_iter().map(|topic| FetchTopicResponse {
                name: topic.name,
                partitions: topic.partitions.into_iter().map(|partition| {
                    FetchPartitionResponse { header: partition.header, records: partition.records.to_vec() }
                }).collect(),
            }).collect(),
        };
        prop_assert_eq!(owned, response);
    }
}
