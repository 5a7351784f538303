//! Fetch: a client reads record batches from partitions.
//!
//! Request body, version 0 (big-endian):
//!
//! ```text
//! u8  isolation                 0 read uncommitted (up to LEO), 1 read committed (up to HW)
//! u32 max_wait_ms               how long to wait for min_bytes
//! u32 min_bytes                 answer once this much is available (or max_wait_ms passed)
//! u32 max_bytes                 record bytes per response, all partitions together
//! u32 topic count, per topic:
//!   u16 name length, name bytes
//!   u32 partition count, per partition:
//!     u32 partition id
//!     i64 fetch offset
//!     u32 partition max bytes
//!     i32 current leader epoch  (-1: unknown, not checked)
//! ```
//!
//! Response body, version 0 (also the body of a follower fetch response):
//!
//! ```text
//! u32 topic count, per topic:
//!   u16 name length, name bytes
//!   u32 partition count, per partition:
//!     FETCH_PARTITION_HEADER_LEN = 42 bytes of partition header:
//!       u32 partition id, i16 error code,
//!       i64 high watermark, i64 last stable offset, i64 log end offset, i64 log start offset,
//!       u32 records length
//!     records: whole batches as stored
//! ```
//!
//! The records sit right after a fixed-size header, so a server writes the header with
//! [`FetchPartitionHeader::encode`] (given only the records' length) and splices the stored
//! bytes from the segment file after it; [`super::splice::FetchResponseWriter`] does the
//! bookkeeping for a whole response. Decoding borrows the records from the body.

use crate::api::{
    check_binary_v0, check_binary_v0_encode, put_topic_name, read_topic_name, Decode, Encode,
    Request,
};
use crate::codec::{put_count, u32_len, DecodeError, EncodeError, Reader};
use crate::error_code::ErrorCode;
use crate::ids::{ApiVersion, LeaderEpoch, Offset, PartitionId};
use crate::object::TopicName;

/// Which records a reader may see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// Up to the leader's log end offset.
    ReadUncommitted,
    /// Up to the high watermark (held by every in-sync replica).
    #[default]
    ReadCommitted,
}

impl Isolation {
    /// Wire value.
    pub const fn number(self) -> u8 {
        match self {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        }
    }

    /// From the wire value.
    pub fn from_number(number: u8) -> Result<Self, DecodeError> {
        match number {
            0 => Ok(Isolation::ReadUncommitted),
            1 => Ok(Isolation::ReadCommitted),
            other => Err(DecodeError::InvalidValue { field: "isolation", value: i64::from(other) }),
        }
    }
}

/// Writes an optional leader epoch as `i32`, `-1` for none.
pub(crate) fn put_optional_epoch(out: &mut Vec<u8>, epoch: Option<LeaderEpoch>) {
    out.extend_from_slice(&epoch.map_or(-1, LeaderEpoch::get).to_be_bytes());
}

/// Reads an optional leader epoch; `-1` is none, other negatives are invalid.
pub(crate) fn read_optional_epoch(
    reader: &mut Reader<'_>,
    field: &'static str,
) -> Result<Option<LeaderEpoch>, DecodeError> {
    match reader.i32(field)? {
        -1 => Ok(None),
        epoch if epoch >= 0 => Ok(Some(LeaderEpoch(epoch))),
        epoch => Err(DecodeError::InvalidValue { field, value: i64::from(epoch) }),
    }
}

/// A fetch request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// Committed or uncommitted reads.
    pub isolation: Isolation,
    /// Longest wait for `min_bytes`.
    pub max_wait_ms: u32,
    /// Answer as soon as this many record bytes are available.
    pub min_bytes: u32,
    /// Record bytes per response, all partitions together.
    pub max_bytes: u32,
    /// Partitions per topic.
    pub topics: Vec<FetchTopic>,
}

/// Partitions to read in one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchTopic {
    /// The topic.
    pub name: TopicName,
    /// Partitions to read.
    pub partitions: Vec<FetchPartition>,
}

/// Where to read in one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPartition {
    /// The partition.
    pub partition: PartitionId,
    /// First offset wanted.
    pub fetch_offset: Offset,
    /// Record bytes for this partition at most.
    pub partition_max_bytes: u32,
    /// The leader epoch the client believes current; checked when present.
    pub current_leader_epoch: Option<LeaderEpoch>,
}

const TOPIC_BYTES_MIN: usize = 2 + 4;
const FETCH_PARTITION_BYTES: usize = 4 + 8 + 4 + 4;

impl Encode for FetchRequest {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        out.push(self.isolation.number());
        out.extend_from_slice(&self.max_wait_ms.to_be_bytes());
        out.extend_from_slice(&self.min_bytes.to_be_bytes());
        out.extend_from_slice(&self.max_bytes.to_be_bytes());
        put_count(out, self.topics.len(), "fetch topics")?;
        for topic in &self.topics {
            put_topic_name(out, &topic.name)?;
            put_count(out, topic.partitions.len(), "fetch partitions")?;
            for partition in &topic.partitions {
                out.extend_from_slice(&partition.partition.get().to_be_bytes());
                out.extend_from_slice(&partition.fetch_offset.get().to_be_bytes());
                out.extend_from_slice(&partition.partition_max_bytes.to_be_bytes());
                put_optional_epoch(out, partition.current_leader_epoch);
            }
        }
        Ok(())
    }
}

impl Decode<'_> for FetchRequest {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let isolation = Isolation::from_number(reader.u8("isolation")?)?;
        let max_wait_ms = reader.u32("max_wait_ms")?;
        let min_bytes = reader.u32("min_bytes")?;
        let max_bytes = reader.u32("max_bytes")?;
        let topic_count = reader.count(TOPIC_BYTES_MIN, "fetch topics")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = read_topic_name(&mut reader)?;
            let partition_count = reader.count(FETCH_PARTITION_BYTES, "fetch partitions")?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                partitions.push(FetchPartition {
                    partition: PartitionId(reader.u32("partition")?),
                    fetch_offset: Offset(reader.i64("fetch offset")?),
                    partition_max_bytes: reader.u32("partition max bytes")?,
                    current_leader_epoch: read_optional_epoch(&mut reader, "leader epoch")?,
                });
            }
            topics.push(FetchTopic { name, partitions });
        }
        reader.finish()?;
        Ok(FetchRequest { isolation, max_wait_ms, min_bytes, max_bytes, topics })
    }
}

impl Request for FetchRequest {
    const API_KEY: crate::api::ApiKey = crate::api::ApiKey::Fetch;
    type Response<'a> = FetchResponse<&'a [u8]>;
}

/// Bytes of an encoded partition header, records length included.
pub const FETCH_PARTITION_HEADER_LEN: usize = 4 + 2 + 8 * 4 + 4;

/// Everything about one partition in a fetch response except its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPartitionHeader {
    /// The partition.
    pub partition: PartitionId,
    /// `None` on success; records are empty otherwise.
    pub error_code: ErrorCode,
    /// Offset up to which every in-sync replica holds the log.
    pub high_watermark: Offset,
    /// Offset up to which committed readers may read (equal to the HW without transactions).
    pub last_stable_offset: Offset,
    /// The leader's log end offset.
    pub log_end_offset: Offset,
    /// The partition's first offset.
    pub log_start_offset: Offset,
}

impl FetchPartitionHeader {
    /// A header carrying only an error.
    pub fn error(partition: PartitionId, error_code: ErrorCode) -> Self {
        let unknown = Offset(-1);
        Self {
            partition,
            error_code,
            high_watermark: unknown,
            last_stable_offset: unknown,
            log_end_offset: unknown,
            log_start_offset: unknown,
        }
    }

    /// Appends the header and the records length, but not the records: the caller appends or
    /// splices exactly `records_len` bytes after it.
    ///
    /// ```
    /// use sluice_proto::api::fetch::{FetchPartitionHeader, FETCH_PARTITION_HEADER_LEN};
    /// use sluice_proto::error_code::ErrorCode;
    /// use sluice_proto::ids::PartitionId;
    ///
    /// let mut out = Vec::new();
    /// FetchPartitionHeader::error(PartitionId(0), ErrorCode::NotLeader).encode(0, &mut out);
    /// assert_eq!(out.len(), FETCH_PARTITION_HEADER_LEN);
    /// ```
    pub fn encode(&self, records_len: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.partition.get().to_be_bytes());
        out.extend_from_slice(&self.error_code.code().to_be_bytes());
        out.extend_from_slice(&self.high_watermark.get().to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.get().to_be_bytes());
        out.extend_from_slice(&self.log_end_offset.get().to_be_bytes());
        out.extend_from_slice(&self.log_start_offset.get().to_be_bytes());
        out.extend_from_slice(&records_len.to_be_bytes());
    }

    /// Reads a header and its records length.
    pub fn decode(reader: &mut Reader<'_>) -> Result<(Self, u32), DecodeError> {
        let header = Self {
            partition: PartitionId(reader.u32("partition")?),
            error_code: ErrorCode::from_code(reader.i16("error code")?),
            high_watermark: Offset(reader.i64("high watermark")?),
            last_stable_offset: Offset(reader.i64("last stable offset")?),
            log_end_offset: Offset(reader.i64("log end offset")?),
            log_start_offset: Offset(reader.i64("log start offset")?),
        };
        Ok((header, reader.u32("records length")?))
    }
}

/// One partition's part of a fetch response. `R` is `&[u8]` when decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPartitionResponse<R> {
    /// Offsets and error.
    pub header: FetchPartitionHeader,
    /// Whole record batches.
    pub records: R,
}

impl<R: AsRef<[u8]>> FetchPartitionResponse<R> {
    /// Appends header and records.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let records = self.records.as_ref();
        self.header.encode(u32_len(records.len(), "fetch records")?, out);
        out.extend_from_slice(records);
        Ok(())
    }
}

impl<'a> FetchPartitionResponse<&'a [u8]> {
    /// Reads header and records, borrowing the records.
    pub fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let (header, records_len) = FetchPartitionHeader::decode(reader)?;
        let records = reader.bytes(records_len as usize, "fetch records")?;
        Ok(Self { header, records })
    }
}

/// Partitions of one topic in a fetch response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchTopicResponse<R> {
    /// The topic.
    pub name: TopicName,
    /// Its partitions.
    pub partitions: Vec<FetchPartitionResponse<R>>,
}

/// A fetch response (also the follower fetch response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResponse<R> {
    /// Per topic.
    pub topics: Vec<FetchTopicResponse<R>>,
}

impl<R: AsRef<[u8]>> Encode for FetchResponse<R> {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        put_count(out, self.topics.len(), "fetch response topics")?;
        for topic in &self.topics {
            put_topic_name(out, &topic.name)?;
            put_count(out, topic.partitions.len(), "fetch response partitions")?;
            for partition in &topic.partitions {
                partition.encode(out)?;
            }
        }
        Ok(())
    }
}

impl<'a> Decode<'a> for FetchResponse<&'a [u8]> {
    fn decode(version: ApiVersion, body: &'a [u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let topic_count = reader.count(TOPIC_BYTES_MIN, "fetch response topics")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = read_topic_name(&mut reader)?;
            let partition_count =
                reader.count(FETCH_PARTITION_HEADER_LEN, "fetch response partitions")?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                partitions.push(FetchPartitionResponse::decode(&mut reader)?);
            }
            topics.push(FetchTopicResponse { name, partitions });
        }
        reader.finish()?;
        Ok(FetchResponse { topics })
    }
}
