//! Kafka RecordBatch v2 (magic 2), byte for byte: header access, validation, a borrowing
//! reader, a builder into a reusable buffer, and client-side compression.

pub mod header;

pub use header::{
    batch_total_len, compute_crc, set_base_offset, set_partition_leader_epoch, validate_batch,
    BatchError, BatchHeader, BATCH_HEADER_LEN, BATCH_LENGTH_MIN, BATCH_LENGTH_PREFIX, MAGIC_V2,
};
