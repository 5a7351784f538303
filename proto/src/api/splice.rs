//! Building a fetch-format response whose record bytes are spliced from files instead of
//! copied into the buffer.
//!
//! [`FetchResponseWriter`] writes the frame header, topic names, counts and partition headers
//! into a reusable `Vec`, leaves a gap after each partition header whose records the server
//! will splice, and returns a [`WirePlan`]: the order in which buffer ranges and spliced records
//! go on the wire. The frame length counts the spliced bytes. Counts are patched at the end, so
//! the caller streams topics and partitions without knowing them up front.

use std::ops::Range;

use crate::api::fetch::FetchPartitionHeader;
use crate::api::put_topic_name;
use crate::codec::{u32_len, EncodeError};
use crate::frame::{begin_frame, finish_frame, FrameHeader, FrameStart};
use crate::object::TopicName;

/// One piece of a response on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WirePart {
    /// Send these bytes of the buffer.
    Buffer(Range<usize>),
    /// Splice the records of the `index`-th [`FetchResponseWriter::partition_to_splice`] call:
    /// exactly `len` bytes.
    Splice {
        /// Which spliced partition, counting from 0 in call order.
        index: usize,
        /// Bytes to splice.
        len: u32,
    },
}

/// The wire order of a response built by [`FetchResponseWriter`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WirePlan {
    /// Parts in wire order.
    pub parts: Vec<WirePart>,
    /// Total bytes on the wire, frame header included.
    pub frame_len: usize,
}

/// Writes a fetch-format response (fetch, follower fetch) with spliced records.
///
/// ```
/// use sluice_proto::api::fetch::{FetchPartitionHeader, FetchResponse};
/// use sluice_proto::api::splice::{FetchResponseWriter, WirePart};
/// use sluice_proto::api::{ApiKey, ApiVersion, Decode};
/// use sluice_proto::error_code::ErrorCode;
/// use sluice_proto::frame::FrameHeader;
/// use sluice_proto::ids::{CorrelationId, Offset, PartitionId};
/// use sluice_proto::object::TopicName;
///
/// let frame = FrameHeader {
///     api_key: ApiKey::Fetch,
///     api_version: ApiVersion(0),
///     correlation_id: CorrelationId(1),
/// };
/// let header = FetchPartitionHeader::error(PartitionId(0), ErrorCode::None);
/// let mut buffer = Vec::new();
/// let mut writer = FetchResponseWriter::begin(&mut buffer, &frame);
/// writer.topic(&TopicName::new("t").unwrap()).unwrap();
/// writer.partition_to_splice(&header, 3);
/// let plan = writer.finish().unwrap();
///
/// // What the socket sees: buffer parts with the file's bytes spliced in between.
/// let mut wire = Vec::new();
/// for part in &plan.parts {
///     match part {
///         WirePart::Buffer(range) => wire.extend_from_slice(&buffer[range.clone()]),
///         WirePart::Splice { len, .. } => wire.extend(std::iter::repeat(7u8).take(*len as usize)),
///     }
/// }
/// assert_eq!(wire.len(), plan.frame_len);
/// let response = FetchResponse::decode(ApiVersion(0), &wire[12..]).unwrap();
/// assert_eq!(response.topics[0].partitions[0].records, &[7, 7, 7]);
/// ```
#[derive(Debug)]
pub struct FetchResponseWriter<'a> {
    out: &'a mut Vec<u8>,
    frame: FrameStart,
    frame_position: usize,
    topic_count_position: usize,
    topic_count: u32,
    partition_count_position: Option<usize>,
    partition_count: u32,
    parts: Vec<WirePart>,
    buffer_from: usize,
    spliced_len: usize,
    splice_count: usize,
}

impl<'a> FetchResponseWriter<'a> {
    /// Begins a frame with `header` at the end of `out`.
    pub fn begin(out: &'a mut Vec<u8>, header: &FrameHeader) -> Self {
        let frame_position = out.len();
        let frame = begin_frame(out, header);
        let topic_count_position = out.len();
        out.extend_from_slice(&[0; 4]);
        Self {
            out,
            frame,
            frame_position,
            topic_count_position,
            topic_count: 0,
            partition_count_position: None,
            partition_count: 0,
            parts: Vec::new(),
            buffer_from: frame_position,
            spliced_len: 0,
            splice_count: 0,
        }
    }

    /// Starts a topic; the partitions written next belong to it.
    pub fn topic(&mut self, name: &TopicName) -> Result<(), EncodeError> {
        self.close_topic();
        put_topic_name(self.out, name)?;
        self.partition_count_position = Some(self.out.len());
        self.out.extend_from_slice(&[0; 4]);
        self.topic_count += 1;
        Ok(())
    }

    /// Writes a partition header; the caller splices exactly `records_len` bytes here (see
    /// [`WirePart::Splice`]). Returns the splice index. Call [`Self::topic`] first.
    pub fn partition_to_splice(
        &mut self,
        header: &FetchPartitionHeader,
        records_len: u32,
    ) -> usize {
        assert!(self.partition_count_position.is_some(), "partition before topic");
        header.encode(records_len, self.out);
        self.partition_count += 1;
        let index = self.splice_count;
        self.splice_count += 1;
        if records_len > 0 {
            self.parts.push(WirePart::Buffer(self.buffer_from..self.out.len()));
            self.parts.push(WirePart::Splice { index, len: records_len });
            self.buffer_from = self.out.len();
            self.spliced_len += records_len as usize;
        }
        index
    }

    /// Writes a partition header followed by records copied into the buffer.
    pub fn partition_with_records(
        &mut self,
        header: &FetchPartitionHeader,
        records: &[u8],
    ) -> Result<(), EncodeError> {
        assert!(self.partition_count_position.is_some(), "partition before topic");
        header.encode(u32_len(records.len(), "fetch records")?, self.out);
        self.out.extend_from_slice(records);
        self.partition_count += 1;
        Ok(())
    }

    fn close_topic(&mut self) {
        if let Some(position) = self.partition_count_position.take() {
            self.out[position..position + 4].copy_from_slice(&self.partition_count.to_be_bytes());
        }
        self.partition_count = 0;
    }

    /// Patches counts and the frame length; returns the wire order.
    pub fn finish(mut self) -> Result<WirePlan, EncodeError> {
        self.close_topic();
        let position = self.topic_count_position;
        self.out[position..position + 4].copy_from_slice(&self.topic_count.to_be_bytes());
        let frame_len = match finish_frame(self.out, self.frame, self.spliced_len) {
            Ok(frame_len) => frame_len,
            Err(error) => {
                self.out.truncate(self.frame_position);
                return Err(error);
            }
        };
        if self.buffer_from < self.out.len() {
            self.parts.push(WirePart::Buffer(self.buffer_from..self.out.len()));
        }
        Ok(WirePlan { parts: self.parts, frame_len })
    }
}
