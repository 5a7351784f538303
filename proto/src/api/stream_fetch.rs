//! Streaming fetch: one request opens a stream of pushed responses for one partition, paced by
//! a byte credit window the client extends.
//!
//! Flow control: the server may have at most `credit_bytes` record bytes pushed and not yet
//! re-credited. Each push spends its records length; a [`StreamFetchCredit`] gives bytes back.
//! The client cancels with [`StreamFetchCancel`]; the server's last push on a stream is always
//! [`StreamFetchPush::End`] (after a cancel, an error, or a leader change). Credit and cancel
//! name the stream by the correlation id of the [`StreamFetchRequest`] that opened it; every
//! push carries that correlation id in its frame header.
//!
//! Request body, version 0 (big-endian):
//!
//! ```text
//! u16 topic name length, name bytes
//! u32 partition id
//! i64 start offset
//! u8  isolation                      0 uncommitted, 1 committed
//! u32 max bytes per push
//! u32 initial credit window, bytes
//! ```
//!
//! Push body (the response), version 0:
//!
//! ```text
//! u8 kind = 0 (records): fetch partition header (42 bytes, records length last), records
//! u8 kind = 1 (end):     i16 error code, i64 next offset the stream would have read
//! ```
//!
//! Credit body: `i32 stream correlation id, u32 credit bytes`. Cancel body: `i32 stream
//! correlation id`. Both are one-way.

use crate::api::fetch::{FetchPartitionHeader, FetchPartitionResponse, Isolation};
use crate::api::{
    check_binary_v0, check_binary_v0_encode, put_topic_name, read_topic_name, ApiKey, Decode,
    Encode, NoResponse, Request,
};
use crate::codec::{DecodeError, EncodeError, Reader};
use crate::error_code::ErrorCode;
use crate::ids::{ApiVersion, CorrelationId, Offset, PartitionId};
use crate::object::TopicName;

/// Opens a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFetchRequest {
    /// The topic.
    pub topic: TopicName,
    /// The partition.
    pub partition: PartitionId,
    /// First offset to push.
    pub start_offset: Offset,
    /// Committed or uncommitted reads.
    pub isolation: Isolation,
    /// Record bytes per push at most.
    pub max_bytes_per_push: u32,
    /// Initial credit window, bytes.
    pub credit_bytes: u32,
}

impl Encode for StreamFetchRequest {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        put_topic_name(out, &self.topic)?;
        out.extend_from_slice(&self.partition.get().to_be_bytes());
        out.extend_from_slice(&self.start_offset.get().to_be_bytes());
        out.push(self.isolation.number());
        out.extend_from_slice(&self.max_bytes_per_push.to_be_bytes());
        out.extend_from_slice(&self.credit_bytes.to_be_bytes());
        Ok(())
    }
}

impl Decode<'_> for StreamFetchRequest {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let request = Self {
            topic: read_topic_name(&mut reader)?,
            partition: PartitionId(reader.u32("partition")?),
            start_offset: Offset(reader.i64("start offset")?),
            isolation: Isolation::from_number(reader.u8("isolation")?)?,
            max_bytes_per_push: reader.u32("max bytes per push")?,
            credit_bytes: reader.u32("credit bytes")?,
        };
        reader.finish()?;
        Ok(request)
    }
}

impl Request for StreamFetchRequest {
    const API_KEY: ApiKey = ApiKey::StreamFetch;
    type Response<'a> = StreamFetchPush<&'a [u8]>;
}

const PUSH_KIND_RECORDS: u8 = 0;
const PUSH_KIND_END: u8 = 1;

/// One pushed frame of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFetchPush<R> {
    /// Records, in the fetch partition format.
    Records(FetchPartitionResponse<R>),
    /// The stream is over; no more pushes follow.
    End {
        /// Why: `None` after a cancel, else the error (e.g. `NotLeader`).
        error_code: ErrorCode,
        /// The offset the stream would have pushed next (resume point).
        next_offset: Offset,
    },
}

impl StreamFetchPush<&[u8]> {
    /// Appends the body of a records push without its records; the caller appends or splices
    /// exactly `records_len` bytes after it (count them in `finish_frame`'s `spliced_len`).
    pub fn encode_records_header(
        header: &FetchPartitionHeader,
        records_len: u32,
        out: &mut Vec<u8>,
    ) {
        out.push(PUSH_KIND_RECORDS);
        header.encode(records_len, out);
    }
}

impl<R: AsRef<[u8]>> Encode for StreamFetchPush<R> {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        match self {
            StreamFetchPush::Records(partition) => {
                out.push(PUSH_KIND_RECORDS);
                partition.encode(out)
            }
            StreamFetchPush::End { error_code, next_offset } => {
                out.push(PUSH_KIND_END);
                out.extend_from_slice(&error_code.code().to_be_bytes());
                out.extend_from_slice(&next_offset.get().to_be_bytes());
                Ok(())
            }
        }
    }
}

impl<'a> Decode<'a> for StreamFetchPush<&'a [u8]> {
    fn decode(version: ApiVersion, body: &'a [u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let push = match reader.u8("push kind")? {
            PUSH_KIND_RECORDS => {
                StreamFetchPush::Records(FetchPartitionResponse::decode(&mut reader)?)
            }
            PUSH_KIND_END => StreamFetchPush::End {
                error_code: ErrorCode::from_code(reader.i16("error code")?),
                next_offset: Offset(reader.i64("next offset")?),
            },
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "push kind",
                    value: i64::from(other),
                })
            }
        };
        reader.finish()?;
        Ok(push)
    }
}

/// Extends a stream's credit window (one-way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFetchCredit {
    /// Correlation id of the request that opened the stream.
    pub stream: CorrelationId,
    /// Bytes of credit given back.
    pub credit_bytes: u32,
}

impl Encode for StreamFetchCredit {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        out.extend_from_slice(&self.stream.get().to_be_bytes());
        out.extend_from_slice(&self.credit_bytes.to_be_bytes());
        Ok(())
    }
}

impl Decode<'_> for StreamFetchCredit {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let stream = CorrelationId(reader.i32("stream")?);
        let credit_bytes = reader.u32("credit bytes")?;
        reader.finish()?;
        Ok(Self { stream, credit_bytes })
    }
}

impl Request for StreamFetchCredit {
    const API_KEY: ApiKey = ApiKey::StreamFetchCredit;
    type Response<'a> = NoResponse;
}

/// Cancels a stream (one-way); the server answers on the stream with a final `End` push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFetchCancel {
    /// Correlation id of the request that opened the stream.
    pub stream: CorrelationId,
}

impl Encode for StreamFetchCancel {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        out.extend_from_slice(&self.stream.get().to_be_bytes());
        Ok(())
    }
}

impl Decode<'_> for StreamFetchCancel {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let stream = CorrelationId(reader.i32("stream")?);
        reader.finish()?;
        Ok(Self { stream })
    }
}

impl Request for StreamFetchCancel {
    const API_KEY: ApiKey = ApiKey::StreamFetchCancel;
    type Response<'a> = NoResponse;
}
