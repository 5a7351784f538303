//! List offsets: the earliest, latest, or first-at-a-timestamp offset of partitions.
//!
//! Request body, version 0 (big-endian):
//!
//! ```text
//! u8  isolation                 latest means HW when committed, LEO when uncommitted
//! u32 topic count, per topic:
//!   u16 name length, name bytes
//!   u32 partition count, per partition:
//!     u32 partition id
//!     u8  kind                  0 earliest, 1 latest, 2 by timestamp
//!     i64 timestamp ms          (0 unless kind is 2)
//! ```
//!
//! Response body, version 0:
//!
//! ```text
//! u32 topic count, per topic:
//!   u16 name length, name bytes
//!   u32 partition count, per partition:
//!     u32 partition id, i16 error code,
//!     i64 offset (-1: none, e.g. no record at or after the timestamp),
//!     i64 timestamp ms of that record (-1 when not a timestamp lookup)
//! ```

use crate::api::fetch::Isolation;
use crate::api::{
    check_binary_v0, check_binary_v0_encode, put_optional_offset, put_topic_name,
    read_optional_offset, read_topic_name, ApiKey, Decode, Encode, Request,
};
use crate::codec::{put_count, DecodeError, EncodeError, Reader};
use crate::error_code::ErrorCode;
use crate::ids::{ApiVersion, Offset, PartitionId, TimestampMs};
use crate::object::TopicName;

/// Which offset to look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The offset the next record will get (HW for committed readers).
    Latest,
    /// The first record whose timestamp is at or after this one.
    ByTimestamp(TimestampMs),
}

/// A list offsets request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    /// What "latest" means.
    pub isolation: Isolation,
    /// Per topic.
    pub topics: Vec<ListOffsetsTopic>,
}

/// Lookups in one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListOffsetsTopic {
    /// The topic.
    pub name: TopicName,
    /// Lookups per partition.
    pub partitions: Vec<ListOffsetsPartition>,
}

/// One lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    /// The partition.
    pub partition: PartitionId,
    /// What to look up.
    pub spec: OffsetSpec,
}

const TOPIC_BYTES_MIN: usize = 2 + 4;
const LIST_PARTITION_BYTES: usize = 4 + 1 + 8;
const LIST_PARTITION_RESPONSE_BYTES: usize = 4 + 2 + 8 + 8;

impl Encode for ListOffsetsRequest {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        out.push(self.isolation.number());
        put_count(out, self.topics.len(), "list offsets topics")?;
        for topic in &self.topics {
            put_topic_name(out, &topic.name)?;
            put_count(out, topic.partitions.len(), "list offsets partitions")?;
            for partition in &topic.partitions {
                out.extend_from_slice(&partition.partition.get().to_be_bytes());
                let (kind, timestamp) = match partition.spec {
                    OffsetSpec::Earliest => (0u8, 0),
                    OffsetSpec::Latest => (1, 0),
                    OffsetSpec::ByTimestamp(timestamp) => (2, timestamp.get()),
                };
                out.push(kind);
                out.extend_from_slice(&timestamp.to_be_bytes());
            }
        }
        Ok(())
    }
}

fn read_offset_spec(reader: &mut Reader<'_>) -> Result<OffsetSpec, DecodeError> {
    let kind = reader.u8("offset spec")?;
    let timestamp = reader.i64("timestamp")?;
    match (kind, timestamp) {
        (0, 0) => Ok(OffsetSpec::Earliest),
        (1, 0) => Ok(OffsetSpec::Latest),
        (2, timestamp) => Ok(OffsetSpec::ByTimestamp(TimestampMs(timestamp))),
        (0 | 1, timestamp) => {
            Err(DecodeError::InvalidValue { field: "timestamp", value: timestamp })
        }
        (kind, _) => {
            Err(DecodeError::InvalidValue { field: "offset spec", value: i64::from(kind) })
        }
    }
}

impl Decode<'_> for ListOffsetsRequest {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let isolation = Isolation::from_number(reader.u8("isolation")?)?;
        let topic_count = reader.count(TOPIC_BYTES_MIN, "list offsets topics")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = read_topic_name(&mut reader)?;
            let partition_count = reader.count(LIST_PARTITION_BYTES, "list offsets partitions")?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                let partition = PartitionId(reader.u32("partition")?);
                let spec = read_offset_spec(&mut reader)?;
                partitions.push(ListOffsetsPartition { partition, spec });
            }
            topics.push(ListOffsetsTopic { name, partitions });
        }
        reader.finish()?;
        Ok(Self { isolation, topics })
    }
}

impl Request for ListOffsetsRequest {
    const API_KEY: ApiKey = ApiKey::ListOffsets;
    type Response<'a> = ListOffsetsResponse;
}

/// Offsets found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// Per topic.
    pub topics: Vec<ListOffsetsTopicResponse>,
}

/// Offsets found in one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListOffsetsTopicResponse {
    /// The topic.
    pub name: TopicName,
    /// Per partition.
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

/// The result of one lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOffsetsPartitionResponse {
    /// The partition.
    pub partition: PartitionId,
    /// `None` on success.
    pub error_code: ErrorCode,
    /// The offset; `None` when no record matches the timestamp.
    pub offset: Option<Offset>,
    /// The matching record's timestamp, for timestamp lookups.
    pub timestamp: Option<TimestampMs>,
}

impl Encode for ListOffsetsResponse {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        put_count(out, self.topics.len(), "list offsets response topics")?;
        for topic in &self.topics {
            put_topic_name(out, &topic.name)?;
            put_count(out, topic.partitions.len(), "list offsets response partitions")?;
            for partition in &topic.partitions {
                out.extend_from_slice(&partition.partition.get().to_be_bytes());
                out.extend_from_slice(&partition.error_code.code().to_be_bytes());
                put_optional_offset(out, partition.offset);
                out.extend_from_slice(
                    &partition.timestamp.map_or(-1, TimestampMs::get).to_be_bytes(),
                );
            }
        }
        Ok(())
    }
}

impl Decode<'_> for ListOffsetsResponse {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let topic_count = reader.count(TOPIC_BYTES_MIN, "list offsets response topics")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = read_topic_name(&mut reader)?;
            let partition_count =
                reader.count(LIST_PARTITION_RESPONSE_BYTES, "list offsets response partitions")?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                partitions.push(ListOffsetsPartitionResponse {
                    partition: PartitionId(reader.u32("partition")?),
                    error_code: ErrorCode::from_code(reader.i16("error code")?),
                    offset: read_optional_offset(&mut reader, "offset")?,
                    timestamp: match reader.i64("timestamp")? {
                        -1 => None,
                        millis => Some(TimestampMs(millis)),
                    },
                });
            }
            topics.push(ListOffsetsTopicResponse { name, partitions });
        }
        reader.finish()?;
        Ok(Self { topics })
    }
}
