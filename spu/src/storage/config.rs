//! Tunables of one replica log. Every bound is named here with the reason for its default.

use crate::storage::error::{StorageError, StorageResult};

/// Alignment of every direct write: a page, which also satisfies any logical block size.
pub const IO_ALIGNMENT_BYTES: u64 = 4096;

/// Configuration of a [`crate::storage::ReplicaLog`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll the active segment once it holds this many bytes (default 1 GiB, as in Kafka).
    pub segment_bytes_max: u64,
    /// Roll the active segment once its first batch is older than this (default 7 days).
    pub segment_age_ms_max: u64,
    /// One offset-index and at most one time-index entry per this many log bytes (4 KiB keeps
    /// a lookup within one page of scanning).
    pub index_interval_bytes: u64,
    /// Largest batch accepted by append (default 8 MiB; also bounds recovery reads).
    pub batch_bytes_max: usize,
    /// Delete sealed segments whose newest record is older than this; `None` keeps forever.
    pub retention_ms: Option<u64>,
    /// Delete oldest sealed segments while the log is larger than this; `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// Refuse appends while the data volume has less free space than this fraction ...
    pub free_space_ratio_min: f64,
    /// ... or than this many bytes, whichever is larger (defaults 5% / 2 GiB).
    pub free_bytes_min: u64,
    /// Largest in-memory staging buffer for direct writes (default 1 MiB); larger batches get
    /// a buffer of their own size. A replica's buffers follow its traffic from 64 KiB up to
    /// this (`segment::STAGING_BUFFER_BYTES_MIN`), so memory grows with the busy replicas,
    /// not with the hosted ones.
    pub write_buffer_bytes: usize,
    /// Zeros written at a time over the preallocated space ahead of the log end, by a
    /// background task a write round starts when it ends within half of this of the zeroed
    /// end (default 8 MiB; 0 turns it off). Rounds do not wait for it unless they would reach
    /// the range being zeroed.
    ///
    /// Why: the segment is preallocated with fallocate, so its blocks start as *unwritten*
    /// extents. A direct write into them makes ext4 convert the extent when the write
    /// completes, and the next fdatasync then has to commit the journal; the partial last
    /// page, written again by the next round, makes every round a mixed written/unwritten
    /// write. Appends landing on blocks already written with zeros are pure overwrites: their
    /// fdatasync needs no journal commit. Measured (storage_append bench, vs fio on the same
    /// file system): durable appends from ~0.5 to ~1.0 of fio, written ones from ~0.55 to
    /// ~0.75 with the zeros written inside the round, ~0.8 with the background task. The cost: the device writes the log's space twice (zeros, then data), which
    /// matters where write bandwidth or flash wear is the limit. Zeros past the log end are
    /// what recovery already expects there, and zero-filling never extends the file.
    pub zero_fill_bytes: u64,
    /// The active segment's file is extended with fallocate this many bytes at a time, ahead
    /// of the writes (default 64 MiB; 0 allocates the whole `segment_bytes_max` at once).
    ///
    /// Why not the whole segment: a replica should hold disk in proportion to its data, not to
    /// its segment size; 100 idle partitions with 1 GiB segments would otherwise pin 100 GiB.
    /// Allocating ahead keeps what preallocation is for: writes land inside the file's size
    /// (on ext4 a size-extending direct write takes the journalled path).
    pub preallocate_bytes: u64,
    /// Buffer bytes of the newest write rounds kept in memory to serve reads of the log's
    /// tail (default 4 MiB; 0 turns it off; see [`crate::storage::recent`]). At most the
    /// last few rounds are kept, so a quiet replica holds only its last small buffers. The
    /// SPU sets each log's share of its core's budget
    /// ([`crate::storage::ReplicaLog::set_tail_cache_bytes`]).
    pub tail_cache_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_age_ms_max: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            batch_bytes_max: 8 << 20,
            retention_ms: None,
            retention_bytes: None,
            free_space_ratio_min: 0.05,
            free_bytes_min: 2 << 30,
            write_buffer_bytes: 1 << 20,
            zero_fill_bytes: 8 << 20,
            preallocate_bytes: 64 << 20,
            tail_cache_bytes: 4 << 20,
        }
    }
}

impl LogConfig {
    /// Bytes to allocate for an active segment whose data ends at `end`: up to a step ahead of
    /// it, never past `segment_bytes_max` unless the data already is.
    pub fn allocation_for(&self, end: u64) -> u64 {
        if self.preallocate_bytes == 0 {
            return self.segment_bytes_max.max(end);
        }
        let ahead = end.div_ceil(IO_ALIGNMENT_BYTES) * IO_ALIGNMENT_BYTES + self.preallocate_bytes;
        ahead.min(self.segment_bytes_max).max(end)
    }

    /// Checks the limits the on-disk formats rely on (32-bit positions in the index).
    pub fn validate(&self) -> StorageResult<()> {
        let position_max = u64::from(u32::MAX) - self.batch_bytes_max as u64;
        if self.segment_bytes_max == 0 || self.segment_bytes_max > position_max {
            return Err(StorageError::InvalidRequest(format!(
                "segment_bytes_max {} must be in 1..={position_max}",
                self.segment_bytes_max
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(StorageError::InvalidRequest("index_interval_bytes must be > 0".into()));
        }
        if self.batch_bytes_max < sluice_proto::record::BATCH_HEADER_LEN {
            return Err(StorageError::InvalidRequest("batch_bytes_max below a header".into()));
        }
        if !(0.0..1.0).contains(&self.free_space_ratio_min) {
            return Err(StorageError::InvalidRequest("free_space_ratio_min not in [0, 1)".into()));
        }
        Ok(())
    }

    /// Index entries a segment can need: one per interval, plus the first and the final one.
    pub(crate) fn index_entries_max(&self) -> u64 {
        self.segment_bytes_max / self.index_interval_bytes + 2
    }
}
