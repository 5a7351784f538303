//! Borrowing, allocation-free reading of v2 batches and their records.
//!
//! - [`RecordBatch::parse`] validates one batch (length, magic, CRC-32C, header consistency).
//! - [`RecordBatch::records`] iterates the records of an uncompressed batch;
//!   [`RecordBatch::decompress_records`] first inflates a compressed batch into a caller-owned,
//!   reusable `Vec<u8>` (bounded) and iterates from there.
//! - [`Batches`] walks consecutive batches in a byte slice (a fetch response's records, a
//!   segment) and stops cleanly at a trailing partial batch.
//!
//! No allocation happens while reading: a [`Record`] borrows its key, value and headers from the
//! batch (or the decompression buffer) and [`Headers`] iterates header slices in place. Every
//! read is bounds-checked; malformed input yields a [`BatchError`], never a panic.
//!
//! Each record is checked in full (all varints, key, value, every header and its UTF-8 key, and
//! that its length field matches) before [`Records`] yields it, so [`Headers`] cannot fail.
//! After the last record, bytes left over are an error, as in Kafka.

use super::compression::Compression;
use super::header::{batch_total_len, BATCH_LENGTH_PREFIX, MAGIC_V2};
use super::header::{validate_batch, BatchError, BatchHeader, TimestampType, BATCH_HEADER_LEN};
use super::varint::{read_varint, read_varlong};
use crate::ids::{Offset, TimestampMs};

/// One validated batch, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatch<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> RecordBatch<'a> {
    /// Validates the batch at the start of `bytes` (see [`validate_batch`]) and borrows exactly
    /// its bytes; anything after it is ignored.
    ///
    /// ```
    /// use sluice_proto::ids::TimestampMs;
    /// use sluice_proto::record::{BatchBuilder, Header, RecordBatch};
    ///
    /// let mut builder = BatchBuilder::new();
    /// let headers = [Header { key: "trace", value: Some(b"42") }];
    /// builder.push_record(TimestampMs(1_000), Some(b"k"), Some(b"v"), &headers).unwrap();
    /// let bytes = builder.finish().to_vec();
    ///
    /// let batch = RecordBatch::parse(&bytes, 1 << 20).unwrap();
    /// for record in batch.records().unwrap() {
    ///     let record = record.unwrap();
    ///     assert_eq!(record.key(), Some(&b"k"[..]));
    ///     assert_eq!(record.headers().next().unwrap().key, "trace");
    /// }
    /// ```
    pub fn parse(bytes: &'a [u8], batch_bytes_max: usize) -> Result<RecordBatch<'a>, BatchError> {
        let header = validate_batch(bytes, batch_bytes_max)?;
        let bytes = bytes
            .get(..header.total_len())
            .ok_or(BatchError::Truncated { needed: header.total_len(), available: bytes.len() })?;
        Ok(RecordBatch { bytes, header })
    }

    /// The decoded header.
    #[inline]
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The bytes after the header: the records, or their compressed stream.
    #[inline]
    pub fn records_bytes(&self) -> &'a [u8] {
        self.bytes.get(BATCH_HEADER_LEN..).unwrap_or_default()
    }

    /// The batch's compression codec.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.header.attributes)
    }

    /// Iterates the records of an uncompressed batch without allocating. A compressed batch
    /// gives [`BatchError::Compressed`]; use [`RecordBatch::decompress_records`].
    pub fn records(&self) -> Result<Records<'a>, BatchError> {
        match self.compression()? {
            Compression::None => Ok(Records::new(self.records_bytes(), &self.header)),
            other => Err(BatchError::Compressed(other.name())),
        }
    }

    /// Iterates the records of any batch. A compressed batch is first inflated into `scratch`
    /// (its previous contents are replaced; its capacity is reused), failing with
    /// [`BatchError::DecompressedTooLarge`] past `decompressed_bytes_max`. An uncompressed
    /// batch is read in place and `scratch` is left untouched.
    ///
    /// Without the `compression` feature a compressed batch gives
    /// [`BatchError::CompressionUnavailable`].
    ///
    /// ```
    /// # #[cfg(feature = "compression")] {
    /// use sluice_proto::ids::TimestampMs;
    /// use sluice_proto::record::{BatchBuilder, Compression, RecordBatch};
    ///
    /// let mut builder = BatchBuilder::new();
    /// builder.push_record(TimestampMs(7), None, Some(b"hello hello hello"), &[]).unwrap();
    /// let mut compressed = Vec::new();
    /// let bytes = builder.finish_compressed(Compression::Zstd, &mut compressed).unwrap();
    ///
    /// let batch = RecordBatch::parse(bytes, 1 << 20).unwrap();
    /// let mut scratch = Vec::new(); // reuse across batches
    /// let values: Vec<_> = batch
    ///     .decompress_records(&mut scratch, 1 << 20)
    ///     .unwrap()
    ///     .map(|record| record.unwrap().value().unwrap().to_vec())
    ///     .collect();
    /// assert_eq!(values, [b"hello hello hello".to_vec()]);
    /// # }
    /// ```
    pub fn decompress_records<'s>(
        &self,
        scratch: &'s mut Vec<u8>,
        decompressed_bytes_max: usize,
    ) -> Result<Records<'s>, BatchError>
    where
        'a: 's,
    {
        let codec = self.compression()?;
        if codec == Compression::None {
            return Ok(Records::new(self.records_bytes(), &self.header));
        }
        decompress_into(codec, self.records_bytes(), scratch, decompressed_bytes_max)?;
        Ok(Records::new(scratch.as_slice(), &self.header))
    }
}

#[cfg(feature = "compression")]
fn decompress_into(
    codec: Compression,
    input: &[u8],
    scratch: &mut Vec<u8>,
    decompressed_bytes_max: usize,
) -> Result<(), BatchError> {
    super::compression::decompress(codec, input, scratch, decompressed_bytes_max)
}

#[cfg(not(feature = "compression"))]
fn decompress_into(
    _codec: Compression,
    _input: &[u8],
    _scratch: &mut Vec<u8>,
    _decompressed_bytes_max: usize,
) -> Result<(), BatchError> {
    Err(BatchError::CompressionUnavailable)
}

/// One record header, borrowed. The key is a UTF-8 string (checked when reading); the value
/// may be null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header<'a> {
    /// Header name.
    pub key: &'a str,
    /// Header value; `None` is Kafka's null (length -1), distinct from empty.
    pub value: Option<&'a [u8]>,
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    offset: Offset,
    timestamp: TimestampMs,
    offset_delta: i32,
    timestamp_delta: i64,
    attributes: i8,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Headers<'a>,
}

impl<'a> Record<'a> {
    /// Absolute offset: batch base offset plus offset delta.
    #[inline]
    pub fn offset(&self) -> Offset {
        self.offset
    }
    /// Timestamp: first timestamp plus delta, or the batch max timestamp for log-append time.
    #[inline]
    pub fn timestamp(&self) -> TimestampMs {
        self.timestamp
    }
    /// Offset delta as stored.
    #[inline]
    pub fn offset_delta(&self) -> i32 {
        self.offset_delta
    }
    /// Timestamp delta as stored.
    #[inline]
    pub fn timestamp_delta(&self) -> i64 {
        self.timestamp_delta
    }
    /// Record attributes (unused by Kafka, always 0 when written by Sluice).
    #[inline]
    pub fn attributes(&self) -> i8 {
        self.attributes
    }
    /// Key, `None` when null.
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }
    /// Value, `None` when null (a tombstone).
    #[inline]
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }
    /// The headers, iterated in place.
    #[inline]
    pub fn headers(&self) -> Headers<'a> {
        self.headers
    }
}

/// Iterator over a record's headers; validated with the record, so it cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    bytes: &'a [u8],
    remaining: u32,
}

impl<'a> Headers<'a> {
    /// Number of headers not yet yielded.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.remaining as usize
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let mut cursor = Cursor { bytes: self.bytes, position: 0 };
        // Already validated by `parse_record`; a failure here would mean a bug, and ends the
        // iteration rather than panicking.
        let header = cursor.header().ok()?;
        self.bytes = cursor.rest();
        self.remaining -= 1;
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Validated with the record: every counted header is there.
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for Headers<'_> {}

/// Bounds-checked reads from record bytes; errors are static reasons.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    #[inline]
    fn varint(&mut self) -> Result<i32, &'static str> {
        let (value, used) = read_varint(self.rest())?;
        self.position += used;
        Ok(value)
    }

    #[inline]
    fn varlong(&mut self) -> Result<i64, &'static str> {
        let (value, used) = read_varlong(self.rest())?;
        self.position += used;
        Ok(value)
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, &'static str> {
        let byte = *self.rest().first().ok_or("record ends before its attributes")?;
        self.position += 1;
        Ok(byte)
    }

    #[inline]
    fn slice(&mut self, length: usize) -> Result<&'a [u8], &'static str> {
        let slice = self.rest().get(..length).ok_or("field length runs past the record")?;
        self.position += length;
        Ok(slice)
    }

    /// Kafka nullable bytes: varint length, -1 for null.
    #[inline]
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            length if length < 0 => Err("negative field length"),
            length => self.slice(length as usize).map(Some),
        }
    }

    fn header(&mut self) -> Result<Header<'a>, &'static str> {
        let key_length = self.varint()?;
        let key_length = usize::try_from(key_length).map_err(|_| "negative header key length")?;
        let key =
            std::str::from_utf8(self.slice(key_length)?).map_err(|_| "header key is not UTF-8")?;
        let value = self.nullable_bytes()?;
        Ok(Header { key, value })
    }
}

/// Where record timestamps come from, fixed per batch.
#[derive(Debug, Clone, Copy)]
struct RecordContext {
    base_offset: Offset,
    first_timestamp: TimestampMs,
    log_append_time: Option<TimestampMs>,
}

/// Iterator over the records of one batch. Yields an error at the first malformed record (or
/// when bytes are missing or left over) and then ends.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    index: i32,
    record_count: i32,
    context: RecordContext,
    done: bool,
}

impl<'a> Records<'a> {
    fn new(bytes: &'a [u8], header: &BatchHeader) -> Records<'a> {
        let log_append_time = match header.timestamp_type() {
            TimestampType::LogAppendTime => Some(header.max_timestamp),
            TimestampType::CreateTime => None,
        };
        Records {
            bytes,
            index: 0,
            record_count: header.record_count.max(0),
            context: RecordContext {
                base_offset: header.base_offset,
                first_timestamp: header.first_timestamp,
                log_append_time,
            },
            done: false,
        }
    }

    /// Records not yet yielded, per the header's record count.
    #[inline]
    pub fn remaining(&self) -> usize {
        if self.done {
            0
        } else {
            (self.record_count - self.index) as usize
        }
    }

    fn fail(&mut self, reason: &'static str) -> Option<Result<Record<'a>, BatchError>> {
        self.done = true;
        Some(Err(BatchError::CorruptRecord { index: self.index, reason }))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index >= self.record_count {
            self.done = true;
            if !self.bytes.is_empty() {
                return self.fail("bytes left after the last record");
            }
            return None;
        }
        match parse_record(self.bytes, &self.context) {
            Ok((record, used)) => {
                self.bytes = self.bytes.get(used..).unwrap_or_default();
                self.index += 1;
                Some(Ok(record))
            }
            Err(reason) => self.fail(reason),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Plus one for a possible error item (a bad record, or bytes after the last one).
        (0, Some(self.remaining() + usize::from(!self.done)))
    }
}

/// Parses and fully validates the record at the start of `input`; returns it and the bytes it
/// took (length varint included).
fn parse_record<'a>(
    input: &'a [u8],
    context: &RecordContext,
) -> Result<(Record<'a>, usize), &'static str> {
    let (length, length_size) = read_varint(input)?;
    let length = usize::try_from(length).map_err(|_| "negative record length")?;
    let body = input
        .get(length_size..)
        .and_then(|rest| rest.get(..length))
        .ok_or("record length runs past the batch")?;
    let mut cursor = Cursor { bytes: body, position: 0 };
    let attributes = cursor.byte()? as i8;
    let timestamp_delta = cursor.varlong()?;
    let offset_delta = cursor.varint()?;
    let key = cursor.nullable_bytes()?;
    let value = cursor.nullable_bytes()?;
    let header_count = cursor.varint()?;
    let header_count = u32::try_from(header_count).map_err(|_| "negative header count")?;
    let headers_start = cursor.position;
    for _ in 0..header_count {
        cursor.header()?;
    }
    if cursor.position != body.len() {
        return Err("record length does not match its fields");
    }
    let offset = context
        .base_offset
        .checked_add_delta(i64::from(offset_delta))
        .ok_or("offset delta overflows the offset")?;
    // Kafka adds the delta with wrapping (Java long) arithmetic; so do we.
    let timestamp = context
        .log_append_time
        .unwrap_or(TimestampMs(context.first_timestamp.0.wrapping_add(timestamp_delta)));
    let headers = Headers { bytes: &body[headers_start..], remaining: header_count };
    let record = Record {
        offset,
        timestamp,
        offset_delta,
        timestamp_delta,
        attributes,
        key,
        value,
        headers,
    };
    Ok((record, length_size + length))
}

/// Iterator over consecutive batches in a byte slice, such as the records of a fetch response
/// or a segment file's contents.
///
/// Each complete batch is validated as by [`RecordBatch::parse`] and yielded. Iteration ends
/// with `None` when the bytes run out, or when what is left is the start of a batch whose bytes
/// are not all there (a *partial* batch: Kafka fetch responses may end with one); that tail is
/// then available from [`Batches::partial_tail`]. A batch that is corrupt (bad length field,
/// magic, CRC, header) yields one error and ends the iteration.
///
/// ```
/// use sluice_proto::ids::TimestampMs;
/// use sluice_proto::record::{BatchBuilder, Batches};
///
/// let mut builder = BatchBuilder::new();
/// builder.push_record(TimestampMs(1), None, Some(b"a"), &[]).unwrap();
/// let mut fetched = builder.finish().to_vec();
/// fetched.extend_from_slice(&builder.finish()[..20]); // a fetch cut the second batch short
///
/// let mut batches = Batches::new(&fetched, 1 << 20);
/// assert_eq!(batches.by_ref().count(), 1);
/// assert_eq!(batches.partial_tail().map(<[u8]>::len), Some(20));
/// ```
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    remaining: &'a [u8],
    batch_bytes_max: usize,
    partial_tail: Option<&'a [u8]>,
    done: bool,
}

impl<'a> Batches<'a> {
    /// Iterates the batches in `bytes`, each at most `batch_bytes_max` bytes long.
    pub fn new(bytes: &'a [u8], batch_bytes_max: usize) -> Batches<'a> {
        Batches { remaining: bytes, batch_bytes_max, partial_tail: None, done: false }
    }

    /// After the iteration ended: the bytes of a trailing partial batch, if there was one.
    pub fn partial_tail(&self) -> Option<&'a [u8]> {
        self.partial_tail
    }

    /// Bytes not yet consumed (the partial tail once iteration ended on one).
    pub fn remaining_bytes(&self) -> &'a [u8] {
        self.remaining
    }

    fn end_partial(&mut self) -> Option<Result<RecordBatch<'a>, BatchError>> {
        self.done = true;
        self.partial_tail = Some(self.remaining);
        None
    }

    fn end_error(&mut self, error: BatchError) -> Option<Result<RecordBatch<'a>, BatchError>> {
        self.done = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<RecordBatch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.remaining.is_empty() {
            self.done = true;
            return None;
        }
        // What is there of the header must already be right, even for a partial batch.
        if let Some(&magic) = self.remaining.get(super::header::OFFSET_MAGIC) {
            if magic as i8 != MAGIC_V2 {
                return self.end_error(BatchError::UnsupportedMagic(magic as i8));
            }
        }
        if self.remaining.len() < BATCH_LENGTH_PREFIX {
            return self.end_partial();
        }
        let total = match batch_total_len(self.remaining, self.batch_bytes_max) {
            Ok(total) => total,
            Err(error) => return self.end_error(error),
        };
        let Some((batch_bytes, rest)) = self.remaining.split_at_checked(total) else {
            return self.end_partial();
        };
        match RecordBatch::parse(batch_bytes, self.batch_bytes_max) {
            Ok(batch) => {
                self.remaining = rest;
                Some(Ok(batch))
            }
            Err(error) => self.end_error(error),
        }
    }
}
