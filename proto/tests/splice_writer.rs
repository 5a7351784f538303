//! The splice writer produces, once the spliced records are put in place, exactly the bytes of
//! the plain encoder: a client cannot tell a spliced response from a copied one.

use sluice_proto::api::fetch::*;
use sluice_proto::api::splice::{FetchResponseWriter, WirePart};
use sluice_proto::api::{ApiKey, ApiVersion};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_frame, FrameHeader};
use sluice_proto::ids::{CorrelationId, Offset, PartitionId};
use sluice_proto::object::TopicName;

fn header(partition: u32) -> FetchPartitionHeader {
    FetchPartitionHeader {
        partition: PartitionId(partition),
        error_code: ErrorCode::None,
        high_watermark: Offset(5),
        last_stable_offset: Offset(5),
        log_end_offset: Offset(6),
        log_start_offset: Offset(1),
    }
}

#[test]
fn spliced_response_equals_copied_response() {
    let frame = FrameHeader {
        api_key: ApiKey::FollowerFetch,
        api_version: ApiVersion(0),
        correlation_id: CorrelationId(11),
    };
    let file_records: [&[u8]; 3] = [&[1, 2, 3], &[], &[4; 100]];
    let response = FetchResponse {
        topics: vec![
            FetchTopicResponse {
                name: TopicName::new("a").unwrap(),
                partitions: vec![
                    FetchPartitionResponse { header: header(0), records: file_records[0] },
                    FetchPartitionResponse { header: header(1), records: &[9, 9][..] },
                    FetchPartitionResponse { header: header(2), records: file_records[1] },
                ],
            },
            FetchTopicResponse { name: TopicName::new("empty").unwrap(), partitions: vec![] },
            FetchTopicResponse {
                name: TopicName::new("b").unwrap(),
                partitions: vec![FetchPartitionResponse {
                    header: header(7),
                    records: file_records[2],
                }],
            },
        ],
    };
    let mut expected = Vec::new();
    encode_frame(&mut expected, &frame, &response).unwrap();

    let mut buffer = vec![0xEE; 3]; // earlier bytes in a reused buffer stay untouched
    let mut writer = FetchResponseWriter::begin(&mut buffer, &frame);
    writer.topic(&TopicName::new("a").unwrap()).unwrap();
    assert_eq!(writer.partition_to_splice(&header(0), 3), 0);
    writer.partition_with_records(&header(1), &[9, 9]).unwrap();
    assert_eq!(writer.partition_to_splice(&header(2), 0), 1);
    writer.topic(&TopicName::new("empty").unwrap()).unwrap();
    writer.topic(&TopicName::new("b").unwrap()).unwrap();
    assert_eq!(writer.partition_to_splice(&header(7), 100), 2);
    let plan = writer.finish().unwrap();

    let mut wire = Vec::new();
    for part in &plan.parts {
        match part {
            WirePart::Buffer(range) => wire.extend_from_slice(&buffer[range.clone()]),
            WirePart::Splice { index, len } => {
                assert_eq!(file_records[*index].len(), *len as usize);
                wire.extend_from_slice(file_records[*index]);
            }
        }
    }
    assert_eq!(&buffer[..3], &[0xEE; 3]);
    assert_eq!(plan.frame_len, expected.len());
    assert_eq!(wire, expected);
}
