//! Kafka RecordBatch v2 (magic 2), byte for byte: header access, validation, a borrowing
//! reader, a builder into a reusable buffer, and client-side compression.
//!
//! # Layout
//!
//! A batch is a 61-byte big-endian header ([`header`] has the byte table) followed by its
//! records, or by one compressed stream of them when attribute bits 0-2 name a codec
//! ([`Compression`]). Each record is:
//!
//! ```text
//! length          varint   bytes after this field
//! attributes      i8       unused, 0
//! timestamp delta varlong  from the batch's first timestamp
//! offset delta    varint   from the batch's base offset
//! key length      varint   -1 for a null key
//! key             bytes
//! value length    varint   -1 for a null value
//! value           bytes
//! header count    varint
//!   key length    varint   header keys are UTF-8 strings, never null
//!   key           bytes
//!   value length  varint   -1 for a null header value
//!   value         bytes
//! ```
//!
//! Varints are zigzag-encoded base-128 ([`varint`]).
//!
//! # What the CRC covers
//!
//! The CRC-32C at bytes 17..21 covers bytes 21 to the end: attributes, the rest of the header
//! and the (possibly compressed) records. It does *not* cover the base offset, the batch length,
//! the partition leader epoch or the magic, so a leader assigns offsets and stamps its epoch in
//! place ([`set_base_offset`], [`set_partition_leader_epoch`]) and the producer's CRC stays
//! valid from producer to disk to consumer. The fields outside the CRC are checked
//! separately by [`validate_batch`]: the batch length must be within
//! `[49, batch_bytes_max - 12]` with all its bytes present, the magic must be 2, and the base
//! offset must be non-negative with the batch's offsets fitting an i64.
//!
//! # Allocation
//!
//! - Reading ([`RecordBatch`], [`Records`], [`Record`], [`Headers`], [`Batches`]) never
//!   allocates: records borrow their key, value and header slices from the batch.
//! - Reading a compressed batch ([`RecordBatch::decompress_records`]) inflates into a caller's
//!   reusable `Vec<u8>` up to a caller-given bound, then reads in place as above.
//! - [`BatchBuilder`] writes into one reusable buffer: no per-record allocation, and none at all
//!   once the buffer has grown to the batch size ([`BatchBuilder::clear`] keeps it).
//!   Compressing writes into a caller's reusable `Vec<u8>`; the codecs keep small internal
//!   state of their own.
//!
//! # Failure modes
//!
//! Every function that reads bytes returns [`BatchError`] on malformed input (truncated,
//! wrong length or magic, CRC mismatch, corrupt record, unknown codec, decompression bomb) and
//! never panics. Only the in-place setters panic, on a slice shorter than the header, which
//! is a caller bug: call them on bytes [`validate_batch`] accepted.
//!
//! # Example
//!
//! ```
//! use sluice_proto::ids::{LeaderEpoch, Offset, TimestampMs};
//! use sluice_proto::record::{
//!     set_base_offset, set_partition_leader_epoch, validate_batch, BatchBuilder, Header,
//!     RecordBatch,
//! };
//!
//! // Producer side.
//! let mut builder = BatchBuilder::new();
//! builder.push_record(TimestampMs(1_700_000_000_000), Some(b"user-1"), Some(b"login"), &[])?;
//! builder.push_record(TimestampMs(1_700_000_000_005), None, None, &[
//!     Header { key: "source", value: Some(b"web") },
//! ])?;
//! let mut batch = builder.finish().to_vec();
//!
//! // Leader side: validate, assign offsets, stamp the epoch; the CRC stays valid.
//! validate_batch(&batch, 1 << 20)?;
//! set_base_offset(&mut batch, Offset(500));
//! set_partition_leader_epoch(&mut batch, LeaderEpoch(3));
//!
//! // Consumer side.
//! let batch = RecordBatch::parse(&batch, 1 << 20)?;
//! let offsets: Vec<i64> =
//!     batch.records()?.map(|record| record.map(|r| r.offset().get())).collect::<Result<_, _>>()?;
//! assert_eq!(offsets, [500, 501]);
//! # Ok::<(), sluice_proto::record::BatchError>(())
//! ```

pub mod builder;
pub mod compression;
pub mod header;
pub mod reader;
pub mod varint;

#[cfg(test)]
mod tests;

pub use builder::{
    sequence_after, sequence_distance_behind, set_producer_state, BatchBuilder, ProducerState,
};
pub use compression::Compression;
pub use header::{
    batch_total_len, compute_crc, set_base_offset, set_partition_leader_epoch, validate_batch,
    write_crc, BatchError, BatchHeader, TimestampType, ATTRIBUTE_CONTROL,
    ATTRIBUTE_LOG_APPEND_TIME, ATTRIBUTE_TRANSACTIONAL, BATCH_HEADER_LEN, BATCH_LENGTH_MIN,
    BATCH_LENGTH_PREFIX, MAGIC_V2, NO_PRODUCER_ID, NO_TIMESTAMP,
};
pub use reader::{Batches, Header, Headers, Record, RecordBatch, Records};
