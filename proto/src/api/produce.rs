//! Produce: a client appends record batches to partitions at their leader.
//!
//! Request body, version 0 (big-endian):
//!
//! ```text
//! u8  acks                      0 none, 1 leader, 2 all
//! u32 timeout_ms
//! u32 topic count, per topic:
//!   u16 name length, name bytes
//!   u32 partition count, per partition:
//!     u32 partition id
//!     u32 records length, records: one or more whole RecordBatch v2
//! ```
//!
//! Decoding never copies record bytes: [`ProduceRequest::<Range<usize>>`](ProduceRequest)
//! holds each partition's record position within the body, so a server takes `&mut body[range]`
//! from its own receive buffer and patches base offsets in place before appending. Whether the
//! bytes really are whole, valid batches is the server's check (see [`crate::record`]).
//!
//! Response body, version 0:
//!
//! ```text
//! u32 topic count, per topic:
//!   u16 name length, name bytes
//!   u32 partition count, per partition:
//!     u32 partition id
//!     i16 error code
//!     i64 base offset of the first appended batch (-1 on error)
//!     i64 log append time in ms (-1 when the topic uses create time)
//!     i64 log start offset (-1 when unknown)
//! ```

use std::ops::Range;

use crate::api::{
    check_binary_v0, check_binary_v0_encode, put_optional_offset, put_topic_name,
    read_optional_offset, read_topic_name, Decode, Encode, Request,
};
use crate::codec::{put_bytes, put_count, DecodeError, EncodeError, Reader};
use crate::error_code::ErrorCode;
use crate::ids::{ApiVersion, Offset, PartitionId, TimestampMs};
use crate::object::TopicName;

/// Batches per idempotent producer and partition whose offsets a leader remembers: a retry
/// of one of them is answered with the offset it got when appended. A producer keeps at most
/// this many batches of a partition unacknowledged, so every retry it makes learns its offset
/// (with more, a leader change left hundreds of retried records of a kill test without one).
/// 128 is what the SDK's defaults put in flight (8 requests of up to 16 batches of 64 KiB):
/// a cap of 64 cost one partition 5-11% of its produce throughput.
pub const IDEMPOTENT_BATCHES_REMEMBERED: usize = 128;

/// How durable an append must be before the leader answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Acks {
    /// No response is awaited beyond the leader receiving it.
    None,
    /// Durable on the leader.
    Leader,
    /// Durable on every in-sync replica, and at least the topic's minimum of them.
    #[default]
    All,
}

impl Acks {
    /// Wire value.
    pub const fn number(self) -> u8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => 2,
        }
    }

    /// From the wire value.
    pub fn from_number(number: u8) -> Result<Self, DecodeError> {
        match number {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            2 => Ok(Acks::All),
            other => Err(DecodeError::InvalidValue { field: "acks", value: i64::from(other) }),
        }
    }
}

/// A produce request. `R` is the records: bytes when encoding (`&[u8]`, `Vec<u8>`), their
/// position within the body (`Range<usize>`) when decoded.
///
/// ```
/// use sluice_proto::api::{produce::*, ApiVersion, Decode, Encode};
/// use sluice_proto::ids::PartitionId;
/// use sluice_proto::object::TopicName;
///
/// let request = ProduceRequest {
///     acks: Acks::All,
///     timeout_ms: 5000,
///     topics: vec![ProduceTopic {
///         name: TopicName::new("t").unwrap(),
///         partitions: vec![ProducePartition { partition: PartitionId(0), records: &b"batch"[..] }],
///     }],
/// };
/// let mut body = Vec::new();
/// request.encode(ApiVersion(0), &mut body).unwrap();
/// let decoded = ProduceRequest::decode(ApiVersion(0), &body).unwrap();
/// let range = decoded.topics[0].partitions[0].records.clone();
/// body[range.clone()][0] = b'B'; // a server patches batches in place
/// assert_eq!(&body[range], b"Batch");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceRequest<R> {
    /// Durability required before answering.
    pub acks: Acks,
    /// How long the leader waits for replicas before answering `RequestTimedOut`.
    pub timeout_ms: u32,
    /// Records per topic.
    pub topics: Vec<ProduceTopic<R>>,
}

/// Records for one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceTopic<R> {
    /// The topic.
    pub name: TopicName,
    /// Records per partition.
    pub partitions: Vec<ProducePartition<R>>,
}

/// Records for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducePartition<R> {
    /// The partition.
    pub partition: PartitionId,
    /// One or more whole record batches, or their position in the body.
    pub records: R,
}

impl<R> ProduceRequest<R> {
    /// The same request with each partition's records transformed, e.g. a decoded range
    /// turned into a slice of the body: `request.map_records(|range| &body[range])`.
    pub fn map_records<T>(self, mut map: impl FnMut(R) -> T) -> ProduceRequest<T> {
        let topics = self
            .topics
            .into_iter()
            .map(|topic| ProduceTopic {
                name: topic.name,
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|partition| ProducePartition {
                        partition: partition.partition,
                        records: map(partition.records),
                    })
                    .collect(),
            })
            .collect();
        ProduceRequest { acks: self.acks, timeout_ms: self.timeout_ms, topics }
    }
}

impl<R: AsRef<[u8]>> Encode for ProduceRequest<R> {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        out.push(self.acks.number());
        out.extend_from_slice(&self.timeout_ms.to_be_bytes());
        put_count(out, self.topics.len(), "produce topics")?;
        for topic in &self.topics {
            put_topic_name(out, &topic.name)?;
            put_count(out, topic.partitions.len(), "produce partitions")?;
            for partition in &topic.partitions {
                out.extend_from_slice(&partition.partition.get().to_be_bytes());
                put_bytes(out, partition.records.as_ref(), "produce records")?;
            }
        }
        Ok(())
    }
}

/// Smallest encoded topic: empty name length and partition count.
const TOPIC_BYTES_MIN: usize = 2 + 4;
/// Smallest encoded partition: id and records length.
const PRODUCE_PARTITION_BYTES_MIN: usize = 4 + 4;

impl Decode<'_> for ProduceRequest<Range<usize>> {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let acks = Acks::from_number(reader.u8("acks")?)?;
        let timeout_ms = reader.u32("timeout_ms")?;
        let topic_count = reader.count(TOPIC_BYTES_MIN, "produce topics")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = read_topic_name(&mut reader)?;
            let partition_count =
                reader.count(PRODUCE_PARTITION_BYTES_MIN, "produce partitions")?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                let partition = PartitionId(reader.u32("partition")?);
                let records = reader.length_prefixed_range("produce records")?;
                partitions.push(ProducePartition { partition, records });
            }
            topics.push(ProduceTopic { name, partitions });
        }
        reader.finish()?;
        Ok(ProduceRequest { acks, timeout_ms, topics })
    }
}

impl<R: AsRef<[u8]>> Request for ProduceRequest<R> {
    const API_KEY: crate::api::ApiKey = crate::api::ApiKey::Produce;
    type Response<'a> = ProduceResponse;
}

/// The outcome per partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProduceResponse {
    /// Outcomes per topic.
    pub topics: Vec<ProduceTopicResponse>,
}

/// Outcomes for one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceTopicResponse {
    /// The topic.
    pub name: TopicName,
    /// Outcomes per partition.
    pub partitions: Vec<ProducePartitionResponse>,
}

/// The outcome for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// The partition.
    pub partition: PartitionId,
    /// `None` on success. `RequestTimedOut` means the outcome is unknown.
    pub error_code: ErrorCode,
    /// Offset given to the first record appended; `None` on error.
    pub base_offset: Option<Offset>,
    /// The append time when the topic stamps log-append time.
    pub log_append_time: Option<TimestampMs>,
    /// The partition's first offset, when known.
    pub log_start_offset: Option<Offset>,
}

impl ProducePartitionResponse {
    /// A failure for `partition` with no offsets.
    pub fn error(partition: PartitionId, error_code: ErrorCode) -> Self {
        Self {
            partition,
            error_code,
            base_offset: None,
            log_append_time: None,
            log_start_offset: None,
        }
    }
}

/// Bytes of one encoded partition outcome.
const PRODUCE_PARTITION_RESPONSE_BYTES: usize = 4 + 2 + 8 + 8 + 8;

impl Encode for ProduceResponse {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        put_count(out, self.topics.len(), "produce response topics")?;
        for topic in &self.topics {
            put_topic_name(out, &topic.name)?;
            put_count(out, topic.partitions.len(), "produce response partitions")?;
            for partition in &topic.partitions {
                out.extend_from_slice(&partition.partition.get().to_be_bytes());
                out.extend_from_slice(&partition.error_code.code().to_be_bytes());
                put_optional_offset(out, partition.base_offset);
                let append_time = partition.log_append_time.map_or(-1, TimestampMs::get);
                out.extend_from_slice(&append_time.to_be_bytes());
                put_optional_offset(out, partition.log_start_offset);
            }
        }
        Ok(())
    }
}

impl Decode<'_> for ProduceResponse {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let topic_count = reader.count(TOPIC_BYTES_MIN, "produce response topics")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = read_topic_name(&mut reader)?;
            let partition_count =
                reader.count(PRODUCE_PARTITION_RESPONSE_BYTES, "produce response partitions")?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                let partition = PartitionId(reader.u32("partition")?);
                let error_code = ErrorCode::from_code(reader.i16("error code")?);
                let base_offset = read_optional_offset(&mut reader, "base offset")?;
                let log_append_time = match reader.i64("log append time")? {
                    -1 => None,
                    millis => Some(TimestampMs(millis)),
                };
                let log_start_offset = read_optional_offset(&mut reader, "log start offset")?;
                partitions.push(ProducePartitionResponse {
                    partition,
                    error_code,
                    base_offset,
                    log_append_time,
                    log_start_offset,
                });
            }
            topics.push(ProduceTopicResponse { name, partitions });
        }
        reader.finish()?;
        Ok(ProduceResponse { topics })
    }
}
