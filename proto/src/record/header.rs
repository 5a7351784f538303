//! The fixed 61-byte header of a Kafka RecordBatch v2 (magic 2), read and patched in place.
//!
//! Layout (big-endian), byte offsets from the start of the batch:
//!
//! | bytes  | field                  | covered by CRC |
//! |--------|------------------------|----------------|
//! | 0..8   | base offset (i64)      | no             |
//! | 8..12  | batch length (i32): bytes after this field | no |
//! | 12..16 | partition leader epoch (i32) | no       |
//! | 16     | magic (i8) = 2         | no             |
//! | 17..21 | CRC-32C (u32) of bytes 21..end | -      |
//! | 21..23 | attributes (i16)       | yes            |
//! | 23..27 | last offset delta (i32)| yes            |
//! | 27..35 | first timestamp (i64)  | yes            |
//! | 35..43 | max timestamp (i64)    | yes            |
//! | 43..51 | producer id (i64)      | yes            |
//! | 51..53 | producer epoch (i16)   | yes            |
//! | 53..57 | base sequence (i32)    | yes            |
//! | 57..61 | record count (i32)     | yes            |
//!
//! Because the base offset and the partition leader epoch lie before the CRC'd range, a leader
//! assigns offsets by patching those two fields without recomputing the CRC
//! ([`set_base_offset`], [`set_partition_leader_epoch`]).

use crate::ids::{LeaderEpoch, Offset, ProducerId, TimestampMs};

/// Size of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before the batch-length field's payload: base offset (8) + batch length (4).
pub const BATCH_LENGTH_PREFIX: usize = 12;
/// The only magic value Sluice accepts.
pub const MAGIC_V2: i8 = 2;
/// Smallest valid value of the batch-length field (a header with no records).
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_LEN - BATCH_LENGTH_PREFIX) as i32;

pub(crate) const OFFSET_BASE_OFFSET: usize = 0;
pub(crate) const OFFSET_BATCH_LENGTH: usize = 8;
pub(crate) const OFFSET_LEADER_EPOCH: usize = 12;
pub(crate) const OFFSET_MAGIC: usize = 16;
pub(crate) const OFFSET_CRC: usize = 17;
pub(crate) const OFFSET_ATTRIBUTES: usize = 21;
pub(crate) const OFFSET_LAST_OFFSET_DELTA: usize = 23;
pub(crate) const OFFSET_FIRST_TIMESTAMP: usize = 27;
pub(crate) const OFFSET_MAX_TIMESTAMP: usize = 35;
pub(crate) const OFFSET_PRODUCER_ID: usize = 43;
pub(crate) const OFFSET_PRODUCER_EPOCH: usize = 51;
pub(crate) const OFFSET_BASE_SEQUENCE: usize = 53;
pub(crate) const OFFSET_RECORD_COUNT: usize = 57;

/// Why a batch header (or a whole batch) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header or than the batch length claims.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the header or length field requires.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The batch-length field is below the header size or above the caller's limit.
    #[error("invalid batch length {length} (allowed {min}..={max})")]
    InvalidLength {
        /// Value of the batch-length field.
        length: i64,
        /// Minimum allowed.
        min: i64,
        /// Maximum allowed.
        max: i64,
    },
    /// Magic byte other than 2.
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    UnsupportedMagic(i8),
    /// Stored CRC does not match the bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC computed over the batch.
        computed: u32,
    },
    /// Record count, last offset delta or timestamps are inconsistent.
    #[error("corrupt batch: {0}")]
    Corrupt(&'static str),
    /// Attributes name a compression codec this build does not know.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// Compression or decompression failed.
    #[error("compression error: {0}")]
    Compression(String),
    /// Decompressed records would exceed the caller's bound.
    #[error("decompressed records exceed {limit} bytes")]
    DecompressedTooLarge {
        /// The caller's bound in bytes.
        limit: usize,
    },
    /// Plain record iteration was asked of a compressed batch; decompress it first.
    #[error("batch is compressed ({0}); use the decompressing reader")]
    Compressed(&'static str),
    /// This build has no codecs (the `compression` feature is off).
    #[error("compression support is not compiled in (feature `compression`)")]
    CompressionUnavailable,
    /// A record is malformed: bad varint, length past its end, bytes left over, or a header
    /// key that is not UTF-8.
    #[error("corrupt record {index}: {reason}")]
    CorruptRecord {
        /// Position of the record in its batch, from 0.
        index: i32,
        /// What was wrong.
        reason: &'static str,
    },
    /// The builder cannot take this record: the batch would pass a format limit (record count
    /// or a length over i32, or a timestamp delta that overflows).
    #[error("record does not fit the batch: {0}")]
    RecordDoesNotFit(&'static str),
}

impl BatchError {
    /// True when the bytes themselves are bad (truncated, corrupt, CRC mismatch): the batch
    /// must not be stored or served. Retrying with the *same bytes* never helps; re-fetching
    /// bytes that a network corrupted may. False for limits and missing codecs.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            BatchError::Truncated { .. }
                | BatchError::InvalidLength { .. }
                | BatchError::UnsupportedMagic(_)
                | BatchError::CrcMismatch { .. }
                | BatchError::Corrupt(_)
                | BatchError::CorruptRecord { .. }
                | BatchError::UnknownCompression(_)
                | BatchError::Compression(_)
        )
    }
}

#[inline]
fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}
#[inline]
fn be_i32(bytes: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(raw)
}
#[inline]
fn be_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Attribute bit 3: set when record timestamps are the broker's append time.
pub const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: the batch holds control records (transaction markers).
pub const ATTRIBUTE_CONTROL: i16 = 0x20;
/// Producer id, epoch and base sequence of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Timestamp Kafka writes in the header of a batch without records.
pub const NO_TIMESTAMP: i64 = -1;

/// What a batch's record timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// Set by the producer when it created each record.
    #[default]
    CreateTime,
    /// Set by the broker when it appended the batch; every record's timestamp is then the
    /// batch's max timestamp.
    LogAppendTime,
}

impl TimestampType {
    /// The type named by a batch's attributes.
    pub const fn from_attributes(attributes: i16) -> TimestampType {
        if attributes & ATTRIBUTE_LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// The attribute bits of this type.
    pub const fn attribute_bits(self) -> i16 {
        match self {
            TimestampType::CreateTime => 0,
            TimestampType::LogAppendTime => ATTRIBUTE_LOG_APPEND_TIME,
        }
    }
}

/// A decoded copy of a batch header. Cheap (`Copy`); the batch bytes stay where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Bytes after the batch-length field (total batch size minus 12).
    pub batch_length: i32,
    /// Leader epoch stamped by the leader that appended the batch.
    pub partition_leader_epoch: LeaderEpoch,
    /// Magic (2).
    pub magic: i8,
    /// CRC-32C of bytes 21..end.
    pub crc: u32,
    /// Attributes: bits 0-2 compression, bit 3 timestamp type, bit 4 transactional, bit 5 control.
    pub attributes: i16,
    /// Offset delta of the last record (record count - 1 for a dense batch).
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub first_timestamp: TimestampMs,
    /// Largest record timestamp.
    pub max_timestamp: TimestampMs,
    /// Producer id, -1 when not idempotent.
    pub producer_id: ProducerId,
    /// Producer epoch, -1 when not idempotent.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 when not idempotent.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the 61-byte header at the start of `bytes`. Checks only that the bytes are there
    /// and the magic is 2; see [`validate_batch`] for the full check.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_LEN, available: bytes.len() });
        }
        let magic = bytes[OFFSET_MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: Offset(be_i64(bytes, OFFSET_BASE_OFFSET)),
            batch_length: be_i32(bytes, OFFSET_BATCH_LENGTH),
            partition_leader_epoch: LeaderEpoch(be_i32(bytes, OFFSET_LEADER_EPOCH)),
            magic,
            crc: be_i32(bytes, OFFSET_CRC) as u32,
            attributes: be_i16(bytes, OFFSET_ATTRIBUTES),
            last_offset_delta: be_i32(bytes, OFFSET_LAST_OFFSET_DELTA),
            first_timestamp: TimestampMs(be_i64(bytes, OFFSET_FIRST_TIMESTAMP)),
            max_timestamp: TimestampMs(be_i64(bytes, OFFSET_MAX_TIMESTAMP)),
            producer_id: ProducerId(be_i64(bytes, OFFSET_PRODUCER_ID)),
            producer_epoch: be_i16(bytes, OFFSET_PRODUCER_EPOCH),
            base_sequence: be_i32(bytes, OFFSET_BASE_SEQUENCE),
            record_count: be_i32(bytes, OFFSET_RECORD_COUNT),
        })
    }

    /// Whole size of the batch in bytes (header included).
    #[inline]
    pub fn total_len(&self) -> usize {
        BATCH_LENGTH_PREFIX + self.batch_length.max(0) as usize
    }

    /// Offset of the last record in the batch. Saturates instead of overflowing on a header
    /// [`validate_batch`] would reject (it checks that the next offset fits an i64).
    #[inline]
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset.0.saturating_add(i64::from(self.last_offset_delta)))
    }

    /// What the record timestamps mean.
    #[inline]
    pub fn timestamp_type(&self) -> TimestampType {
        TimestampType::from_attributes(self.attributes)
    }

    /// Whether the batch belongs to a transaction.
    #[inline]
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records.
    #[inline]
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// Writes this header into the first [`BATCH_HEADER_LEN`] bytes of `out`, CRC included as
    /// stored in `self.crc` (see [`write_crc`] to compute it once the records follow).
    ///
    /// # Panics
    /// If `out` is shorter than [`BATCH_HEADER_LEN`] (a caller bug, not an input error).
    pub fn write_to(&self, out: &mut [u8]) {
        let out = &mut out[..BATCH_HEADER_LEN];
        out[OFFSET_BASE_OFFSET..OFFSET_BATCH_LENGTH]
            .copy_from_slice(&self.base_offset.0.to_be_bytes());
        out[OFFSET_BATCH_LENGTH..OFFSET_LEADER_EPOCH]
            .copy_from_slice(&self.batch_length.to_be_bytes());
        out[OFFSET_LEADER_EPOCH..OFFSET_MAGIC]
            .copy_from_slice(&self.partition_leader_epoch.0.to_be_bytes());
        out[OFFSET_MAGIC] = self.magic as u8;
        out[OFFSET_CRC..OFFSET_ATTRIBUTES].copy_from_slice(&self.crc.to_be_bytes());
        out[OFFSET_ATTRIBUTES..OFFSET_LAST_OFFSET_DELTA]
            .copy_from_slice(&self.attributes.to_be_bytes());
        out[OFFSET_LAST_OFFSET_DELTA..OFFSET_FIRST_TIMESTAMP]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        out[OFFSET_FIRST_TIMESTAMP..OFFSET_MAX_TIMESTAMP]
            .copy_from_slice(&self.first_timestamp.0.to_be_bytes());
        out[OFFSET_MAX_TIMESTAMP..OFFSET_PRODUCER_ID]
            .copy_from_slice(&self.max_timestamp.0.to_be_bytes());
        out[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_EPOCH]
            .copy_from_slice(&self.producer_id.0.to_be_bytes());
        out[OFFSET_PRODUCER_EPOCH..OFFSET_BASE_SEQUENCE]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        out[OFFSET_BASE_SEQUENCE..OFFSET_RECORD_COUNT]
            .copy_from_slice(&self.base_sequence.to_be_bytes());
        out[OFFSET_RECORD_COUNT..BATCH_HEADER_LEN]
            .copy_from_slice(&self.record_count.to_be_bytes());
    }

    /// Offset after the last record: where the next batch starts (saturating, as
    /// [`BatchHeader::last_offset`]).
    #[inline]
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0.saturating_add(1))
    }
}

/// Reads only the total length of the batch at the start of `bytes` (12 bytes needed), checked
/// against `[BATCH_HEADER_LEN, batch_bytes_max]`. Use it to frame batches in a stream without
/// trusting the length before it is bounded.
pub fn batch_total_len(bytes: &[u8], batch_bytes_max: usize) -> Result<usize, BatchError> {
    if bytes.len() < BATCH_LENGTH_PREFIX {
        return Err(BatchError::Truncated { needed: BATCH_LENGTH_PREFIX, available: bytes.len() });
    }
    let length = be_i32(bytes, OFFSET_BATCH_LENGTH);
    let max =
        i64::try_from(batch_bytes_max.saturating_sub(BATCH_LENGTH_PREFIX)).unwrap_or(i64::MAX);
    if length < BATCH_LENGTH_MIN || i64::from(length) > max {
        return Err(BatchError::InvalidLength {
            length: i64::from(length),
            min: i64::from(BATCH_LENGTH_MIN),
            max,
        });
    }
    Ok(BATCH_LENGTH_PREFIX + length as usize)
}

/// CRC-32C of a batch's covered range (attributes to the end). `batch` must be exactly one batch;
/// a slice shorter than the header yields the CRC of nothing rather than a panic.
///
/// `crc-fast` folds with carry-less multiplies (VPCLMULQDQ where the CPU has it): in an SPU
/// taking ~600 MiB/s of produce it was 8% of the core's samples, where the `crc32c` crate's
/// loop of CRC32 instructions was 17%.
#[inline]
pub fn compute_crc(batch: &[u8]) -> u32 {
    let covered = batch.get(OFFSET_ATTRIBUTES..).unwrap_or_default();
    // CRC-32/ISCSI is CRC-32C; its 64-bit result holds a 32-bit value.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, covered) as u32
}

/// Computes the CRC-32C of `batch` (exactly one batch, header included) and stores it in the
/// header. Used after any change inside the CRC range (attributes onwards).
///
/// # Panics
/// If `batch` is shorter than [`BATCH_HEADER_LEN`] (a caller bug, not an input error).
pub fn write_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[OFFSET_CRC..OFFSET_ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
}

/// Fully validates the single batch at the start of `bytes`: length within
/// `[header, batch_bytes_max]` and present, magic 2, CRC-32C, and header consistency (a record
/// count of at least 0, and a last offset delta of at least record count - 1 when records
/// exist; timestamps may come in any order, as in Kafka). Returns the header; the batch is
/// `&bytes[..header.total_len()]`. Records are checked when read ([`crate::record::Records`]).
pub fn validate_batch(bytes: &[u8], batch_bytes_max: usize) -> Result<BatchHeader, BatchError> {
    let total = batch_total_len(bytes, batch_bytes_max)?;
    if bytes.len() < total {
        return Err(BatchError::Truncated { needed: total, available: bytes.len() });
    }
    let header = BatchHeader::parse(bytes)?;
    let batch = &bytes[..total];
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    if header.record_count < 0 {
        return Err(BatchError::Corrupt("negative record count"));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::Corrupt("negative last offset delta"));
    }
    if header.record_count > 0 && header.last_offset_delta < header.record_count - 1 {
        return Err(BatchError::Corrupt("last offset delta below record count"));
    }
    // Producers send base offset 0 and leaders assign offsets >= 0; the offset after the batch
    // must fit an i64 so that offset arithmetic on a valid batch never overflows.
    let next_offset = header.base_offset.0.checked_add(i64::from(header.last_offset_delta) + 1);
    if header.base_offset.0 < 0 || next_offset.is_none() {
        return Err(BatchError::Corrupt("base offset out of range"));
    }
    Ok(header)
}

/// Rewrites the base offset in place (not covered by the CRC, so the CRC stays valid).
///
/// # Panics
/// If `batch` is shorter than 8 bytes; call it on a batch [`validate_batch`] accepted.
#[inline]
pub fn set_base_offset(batch: &mut [u8], base_offset: Offset) {
    batch[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&base_offset.0.to_be_bytes());
}

/// Rewrites the partition leader epoch in place (not covered by the CRC, so the CRC stays
/// valid).
///
/// # Panics
/// If `batch` is shorter than 16 bytes; call it on a batch [`validate_batch`] accepted.
#[inline]
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: LeaderEpoch) {
    batch[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&epoch.0.to_be_bytes());
}

#[cfg(test)]
mod crc_tests {
    use super::{compute_crc, OFFSET_ATTRIBUTES};

    /// The CRC-32C check value (of "123456789"), the empty input, a short slice.
    #[test]
    fn compute_crc_is_crc32c() {
        let mut batch = vec![0xAAu8; OFFSET_ATTRIBUTES];
        assert_eq!(compute_crc(&batch), 0);
        batch.extend_from_slice(b"123456789");
        assert_eq!(compute_crc(&batch), 0xE306_9283);
        assert_eq!(compute_crc(&batch[..3]), 0);
    }
}
