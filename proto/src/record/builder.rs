//! [`BatchBuilder`]: appends records into one reusable buffer and seals them as a v2 batch.
//!
//! The buffer holds a 61-byte header placeholder followed by the encoded records; each
//! [`BatchBuilder::push_record`] computes the record's exact size first, reserves it once and
//! writes it in place, so pushing allocates nothing beyond the buffer's amortized growth, and
//! nothing at all once the buffer has reached its working size ([`BatchBuilder::clear`] keeps
//! the capacity). [`BatchBuilder::finish`] writes the header and CRC in place and returns the
//! batch; [`BatchBuilder::finish_compressed`] writes header and compressed records into a
//! caller-owned scratch buffer instead, leaving the builder's records untouched, so a producer
//! can still append and re-finish.
//!
//! Offsets are dense: record *n* gets offset delta *n*. Timestamp deltas are relative to the
//! first record's timestamp and may be negative; the max timestamp is tracked as records come.
//! The batch is written with base offset 0 (or [`BatchBuilder::set_base_offset`]) and partition
//! leader epoch -1 unless set; a leader overwrites both in place when it appends.

use super::compression::Compression;
use super::header::{
    write_crc, BatchError, BatchHeader, TimestampType, BATCH_HEADER_LEN, BATCH_LENGTH_PREFIX,
    MAGIC_V2, NO_PRODUCER_ID, NO_TIMESTAMP, OFFSET_BASE_SEQUENCE, OFFSET_PRODUCER_EPOCH,
    OFFSET_PRODUCER_ID,
};
use super::reader::Header;
use super::varint::{put_varint, put_varlong, varint_len, varlong_len};
use crate::ids::{LeaderEpoch, Offset, ProducerId, TimestampMs};

/// Producer id, epoch and base sequence of a batch, for idempotent produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerState {
    /// Producer id, -1 without idempotence.
    pub producer_id: ProducerId,
    /// Producer epoch, -1 without idempotence.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record, -1 without idempotence.
    pub base_sequence: i32,
}

impl ProducerState {
    /// No idempotence: all three fields -1.
    pub const NONE: ProducerState = ProducerState {
        producer_id: ProducerId(NO_PRODUCER_ID),
        producer_epoch: -1,
        base_sequence: -1,
    };
}

impl ProducerState {
    /// Whether the batch takes part in idempotent produce (a producer id of 0 or more).
    pub fn is_idempotent(&self) -> bool {
        self.producer_id.0 >= 0
    }
}

/// The sequence number after a batch of `count` records starting at `base`. Sequences run
/// from 0 to `i32::MAX` and wrap to 0, as in Kafka.
pub fn sequence_after(base: i32, count: i32) -> i32 {
    let next = i64::from(base.max(0)) + i64::from(count.max(0));
    // Both terms are below 2^31, so the sum is below 2^32 and the remainder fits an i32.
    (next % (i64::from(i32::MAX) + 1)) as i32
}

/// How far `sequence` lies behind `next` on the wrapping sequence circle (0 when equal).
pub fn sequence_distance_behind(sequence: i32, next: i32) -> i64 {
    let modulus = i64::from(i32::MAX) + 1;
    (i64::from(next) - i64::from(sequence)).rem_euclid(modulus)
}

/// Rewrites producer id, epoch and base sequence of a finished batch in place and recomputes
/// its CRC (the fields are inside the CRC range). A producer renumbers its unacknowledged
/// batches this way when it starts a new epoch.
///
/// # Panics
/// If `batch` is shorter than [`BATCH_HEADER_LEN`] (a caller bug, not an input error).
pub fn set_producer_state(batch: &mut [u8], producer: ProducerState) {
    batch[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8]
        .copy_from_slice(&producer.producer_id.0.to_be_bytes());
    batch[OFFSET_PRODUCER_EPOCH..OFFSET_PRODUCER_EPOCH + 2]
        .copy_from_slice(&producer.producer_epoch.to_be_bytes());
    batch[OFFSET_BASE_SEQUENCE..OFFSET_BASE_SEQUENCE + 4]
        .copy_from_slice(&producer.base_sequence.to_be_bytes());
    write_crc(batch);
}

impl Default for ProducerState {
    fn default() -> Self {
        ProducerState::NONE
    }
}

/// Builds one v2 batch at a time into a reusable buffer.
///
/// ```
/// use sluice_proto::ids::{Offset, TimestampMs};
/// use sluice_proto::record::{BatchBuilder, Header, RecordBatch};
///
/// let mut builder = BatchBuilder::with_capacity(64 * 1024);
/// builder.set_base_offset(Offset(100));
/// for i in 0..3u8 {
///     let headers = [Header { key: "n", value: Some(&[i][..]) }];
///     // Stop before the batch would pass a size target.
///     let size = builder.record_encoded_len(TimestampMs(1_000), None, Some(b"payload"), &headers);
///     assert!(builder.encoded_len() + size <= 64 * 1024);
///     builder.push_record(TimestampMs(1_000 + i64::from(i)), None, Some(b"payload"), &headers)?;
/// }
/// let batch = RecordBatch::parse(builder.finish(), 1 << 20)?;
/// assert_eq!(batch.header().record_count, 3);
/// assert_eq!(batch.header().max_timestamp, TimestampMs(1_002));
/// assert_eq!(batch.header().last_offset(), Offset(102));
///
/// builder.clear(); // same capacity, next batch
/// assert_eq!(builder.record_count(), 0);
/// # Ok::<(), sluice_proto::record::BatchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buffer: Vec<u8>,
    base_offset: Offset,
    partition_leader_epoch: LeaderEpoch,
    producer: ProducerState,
    timestamp_type: TimestampType,
    first_timestamp: TimestampMs,
    max_timestamp: TimestampMs,
    record_count: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

/// Encoded size of Kafka nullable bytes (varint length, -1 for null, then the bytes).
#[inline]
fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => 1,
        Some(bytes) => varint_len(length_i32(bytes.len())) + bytes.len(),
    }
}

/// A length as the i32 the format stores; saturates so that an oversized length makes the size
/// oversized too (and `push_record` rejects it) instead of wrapping.
#[inline]
fn length_i32(length: usize) -> i32 {
    i32::try_from(length).unwrap_or(i32::MAX)
}

#[inline]
fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, length_i32(bytes.len()));
            out.extend_from_slice(bytes);
        }
    }
}

impl BatchBuilder {
    /// An empty builder; the buffer grows on the first records.
    pub fn new() -> BatchBuilder {
        BatchBuilder::with_capacity(BATCH_HEADER_LEN)
    }

    /// An empty builder whose buffer holds `bytes` (header included) before it must grow.
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        let mut buffer = Vec::with_capacity(bytes.max(BATCH_HEADER_LEN));
        buffer.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buffer,
            base_offset: Offset(0),
            partition_leader_epoch: LeaderEpoch(-1),
            producer: ProducerState::NONE,
            timestamp_type: TimestampType::CreateTime,
            first_timestamp: TimestampMs(NO_TIMESTAMP),
            max_timestamp: TimestampMs(NO_TIMESTAMP),
            record_count: 0,
        }
    }

    /// Sets the base offset written by the next `finish` (default 0).
    pub fn set_base_offset(&mut self, base_offset: Offset) -> &mut Self {
        self.base_offset = base_offset;
        self
    }

    /// Sets the partition leader epoch written by the next `finish` (default -1).
    pub fn set_partition_leader_epoch(&mut self, epoch: LeaderEpoch) -> &mut Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Sets producer id, epoch and base sequence (default [`ProducerState::NONE`]).
    pub fn set_producer(&mut self, producer: ProducerState) -> &mut Self {
        self.producer = producer;
        self
    }

    /// Sets the timestamp type bit (default create time).
    pub fn set_timestamp_type(&mut self, timestamp_type: TimestampType) -> &mut Self {
        self.timestamp_type = timestamp_type;
        self
    }

    /// Records pushed since creation or the last [`BatchBuilder::clear`].
    #[inline]
    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    /// Whether no record has been pushed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Size of the uncompressed batch `finish` would return, header included.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes that pushing this record now would add to [`BatchBuilder::encoded_len`] (before
    /// compression), so a producer can stop before a size target.
    pub fn record_encoded_len(
        &self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> usize {
        let timestamp_delta = self.timestamp_delta(timestamp).unwrap_or(i64::MAX);
        let body = Self::body_len(timestamp_delta, self.record_count, key, value, headers);
        varint_len(length_i32(body)) + body
    }

    fn timestamp_delta(&self, timestamp: TimestampMs) -> Option<i64> {
        if self.record_count == 0 {
            Some(0)
        } else {
            timestamp.0.checked_sub(self.first_timestamp.0)
        }
    }

    fn body_len(
        timestamp_delta: i64,
        offset_delta: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> usize {
        let headers_len = headers.iter().fold(0usize, |sum, header| {
            let key = header.key.as_bytes();
            sum.saturating_add(varint_len(length_i32(key.len())) + key.len())
                .saturating_add(nullable_len(header.value))
        });
        (1 + varlong_len(timestamp_delta) + varint_len(offset_delta))
            .saturating_add(nullable_len(key))
            .saturating_add(nullable_len(value))
            .saturating_add(varint_len(length_i32(headers.len())))
            .saturating_add(headers_len)
    }

    /// Appends one record. `None` key or value is Kafka's null (length -1); `Some(&[])` is an
    /// empty value. Fails, leaving the builder unchanged, if the batch would pass a format
    /// limit (more than `i32::MAX` records or bytes, a timestamp delta that overflows i64).
    pub fn push_record(
        &mut self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> Result<(), BatchError> {
        if self.record_count == i32::MAX {
            return Err(BatchError::RecordDoesNotFit("record count would exceed i32"));
        }
        let timestamp_delta = self
            .timestamp_delta(timestamp)
            .ok_or(BatchError::RecordDoesNotFit("timestamp delta overflows i64"))?;
        let offset_delta = self.record_count;
        let body = Self::body_len(timestamp_delta, offset_delta, key, value, headers);
        let body_i32 = i32::try_from(body)
            .map_err(|_| BatchError::RecordDoesNotFit("record longer than i32::MAX bytes"))?;
        let record_len = varint_len(body_i32) + body;
        let batch_length = self.buffer.len() - BATCH_LENGTH_PREFIX + record_len;
        if i32::try_from(batch_length).is_err() {
            return Err(BatchError::RecordDoesNotFit("batch longer than i32::MAX bytes"));
        }

        self.buffer.reserve(record_len);
        let start = self.buffer.len();
        let out = &mut self.buffer;
        put_varint(out, body_i32);
        out.push(0); // record attributes: unused
        put_varlong(out, timestamp_delta);
        put_varint(out, offset_delta);
        put_nullable(out, key);
        put_nullable(out, value);
        put_varint(out, length_i32(headers.len()));
        for header in headers {
            put_nullable(out, Some(header.key.as_bytes()));
            put_nullable(out, header.value);
        }
        debug_assert_eq!(self.buffer.len() - start, record_len);

        if self.record_count == 0 {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else if timestamp > self.max_timestamp {
            self.max_timestamp = timestamp;
        }
        self.record_count += 1;
        Ok(())
    }

    fn header(&self, compression: Compression, batch_len: usize) -> BatchHeader {
        BatchHeader {
            base_offset: self.base_offset,
            // `push_record` keeps the uncompressed length within i32; compressed lengths are
            // checked by `finish_compressed`.
            batch_length: length_i32(batch_len - BATCH_LENGTH_PREFIX),
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC_V2,
            crc: 0,
            attributes: compression.code() | self.timestamp_type.attribute_bits(),
            last_offset_delta: (self.record_count - 1).max(0),
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer.producer_id,
            producer_epoch: self.producer.producer_epoch,
            base_sequence: self.producer.base_sequence,
            record_count: self.record_count,
        }
    }

    /// Writes the header and CRC in place and returns the complete uncompressed batch. The
    /// builder keeps its records: pushing more and finishing again gives a larger batch.
    pub fn finish(&mut self) -> &[u8] {
        let header = self.header(Compression::None, self.buffer.len());
        header.write_to(&mut self.buffer);
        write_crc(&mut self.buffer);
        &self.buffer
    }

    /// Writes a batch whose records are compressed with `compression` into `scratch`
    /// (replacing its contents, reusing its capacity) and returns it. The builder's own
    /// buffer keeps the uncompressed records.
    ///
    /// ```
    /// use sluice_proto::ids::TimestampMs;
    /// use sluice_proto::record::{BatchBuilder, Compression, RecordBatch};
    ///
    /// let mut builder = BatchBuilder::new();
    /// builder.push_record(TimestampMs(5), Some(b"key"), Some(&[7; 1000]), &[])?;
    /// let mut scratch = Vec::new();
    /// let batch = builder.finish_compressed(Compression::Lz4, &mut scratch)?;
    /// assert!(batch.len() < 200);
    /// let batch = RecordBatch::parse(batch, 1 << 20)?;
    /// assert_eq!(batch.compression()?, Compression::Lz4);
    /// # Ok::<(), sluice_proto::record::BatchError>(())
    /// ```
    #[cfg(feature = "compression")]
    pub fn finish_compressed<'s>(
        &mut self,
        compression: Compression,
        scratch: &'s mut Vec<u8>,
    ) -> Result<&'s [u8], BatchError> {
        scratch.clear();
        scratch.resize(BATCH_HEADER_LEN, 0);
        let records = &self.buffer[BATCH_HEADER_LEN..];
        super::compression::compress(compression, records, scratch)?;
        if i32::try_from(scratch.len() - BATCH_LENGTH_PREFIX).is_err() {
            return Err(BatchError::RecordDoesNotFit("compressed batch longer than i32::MAX"));
        }
        let header = self.header(compression, scratch.len());
        header.write_to(scratch);
        write_crc(scratch);
        Ok(scratch)
    }

    /// Forgets every record, keeping the buffer's capacity and the settings (base offset,
    /// epoch, producer state, timestamp type).
    pub fn clear(&mut self) {
        self.buffer.truncate(BATCH_HEADER_LEN);
        self.first_timestamp = TimestampMs(NO_TIMESTAMP);
        self.max_timestamp = TimestampMs(NO_TIMESTAMP);
        self.record_count = 0;
    }

    /// The buffer's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }
}
