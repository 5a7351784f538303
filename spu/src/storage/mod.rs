//! The SPU storage engine: one segmented, replicated log per partition replica.
//!
//! # Layout
//!
//! A replica directory `<data-dir>/spu-<id>/<topic>-<partition>/` holds segments named by their
//! base offset (20 digits, zero-padded): `<base>.log` (record batches exactly as on the wire),
//! `<base>.index` (sparse offset -> position) and `<base>.timeindex` (max timestamp -> offset),
//! plus `leader-epoch.checkpoint`, `high-watermark.checkpoint` and `log-start-offset.checkpoint`
//! (each replaced atomically: temp file, fsync, rename, directory fsync).
//!
//! # Contract
//!
//! * **Ownership.** A [`ReplicaLog`] belongs to one single-threaded executor. Handles are `Rc`;
//!   state is in `RefCell`s that are never borrowed across an `.await`.
//! * **Appended.** [`ReplicaLog::append`] validates the batch (length, CRC-32C, record count),
//!   assigns offsets by rewriting the base offset and leader epoch in the header (outside the
//!   CRC), and copies it into an aligned staging buffer. It is not yet visible to readers.
//! * **Written.** A write round writes every staged byte with O_DIRECT (glommio DMA file) from
//!   the page holding the previous end: positions and lengths are multiples of 4096
//!   ([`config::IO_ALIGNMENT_BYTES`]); the partial last page stays in memory and is written again,
//!   with the new bytes after it, by the next round, zero-padded on the file. A round's writes
//!   never overlap and are issued together. Once a round returns, its batches are *written*:
//!   readers see them ([`ReplicaLog::wait_written`]). The buffers of the last rounds stay in
//!   memory ([`recent`], up to [`LogConfig::tail_cache_bytes`]): reads of the newest bytes of
//!   the active segment take them from there ([`FileSlice::memory`]) instead of the disk.
//!   When [`LogConfig::zero_fill_bytes`] is not 0 (the SPU's default is 0), a background task
//!   per active segment writes zeros over the preallocated space some MiB
//!   ahead of the log end, so that appends overwrite written
//!   blocks and their fdatasync needs no journal commit. It is started by a round when due,
//!   writes only past everything appended, and a round that would reach the range being
//!   zeroed waits for it; roll, truncate and close wait for it too (its gate is the third
//!   one they take).
//! * **Idempotent producers.** A batch with a producer id is checked against the producer's
//!   sequence state when it gets its offsets ([`producers`]): a retry of an appended batch is
//!   not appended again ([`StorageError::DuplicateSequence`]), and a batch that would skip
//!   over missing ones is refused ([`StorageError::Sequence`]), so the log holds each
//!   producer's batches once and in order. Followers update the state from what they
//!   replicate; dropping appended batches clears it; opening rebuilds it from the newest
//!   batches of the active segment.
//! * **Durable.** After an fdatasync returns, everything written before it is *durable*
//!   ([`ReplicaLog::wait_durable`]). Concurrent waiters share one write round and one
//!   fdatasync (group commit). Indexes only get entries for durable batches, so an index on
//!   disk never points past durable data.
//! * **Concurrency.** Appends, reads and waits may run concurrently from many tasks of the
//!   owning executor. Write rounds run one at a time under the log's write gate, fdatasyncs
//!   one at a time under its sync gate, so the next round is written while the previous one
//!   is synced; roll, truncation and close take both gates and the zero-fill task's. Reads
//!   never block on a gate and return only written bytes.
//! * **Failure of a write.** Every staged batch not yet written is dropped (its waiters get
//!   [`StorageError::AppendDiscarded`], safe to retry) and the file is cut back to the written
//!   end. ENOSPC anywhere becomes [`StorageError::StorageFull`]; the disk guard refuses appends
//!   earlier, while the volume's free space is under the configured floor.
//! * **Torn tail recovery.** On open the active segment is rescanned from its last index entry
//!   (checked against the log first; a lying index is rebuilt from the first batch); the scan
//!   checks length, CRC and offset continuity of every batch and cuts the file at the first bad
//!   one. After a crash the log is therefore a prefix of what was written, and it holds at least
//!   everything that was durable.
//! * **Sealed segments** are immutable: exact-sized files, final indexes. Their bytes are
//!   checked on read: the splice path ([`ReplicaLog::read`]) checks the header of a read's
//!   first batch and of every batch the offset index does not cover (length inside the
//!   segment, magic, offset continuity) and takes the other boundaries from the index, which
//!   was checked against the log when the segment was opened; the copying path
//!   ([`ReplicaLog::read_into`]) checks every CRC: there bad bytes are an error, never served.
//!   A spliced batch is checked by the client's CRC-32C.
//! * **Deletion.** Retention deletes whole sealed segments; a reader below the new log start
//!   gets [`StorageError::OffsetOutOfRange`]; a reader already holding a [`FileSlice`] of a
//!   deleted segment keeps reading it (the handle is refcounted; unlink-after-open).
//! * **Memory.** A replica holds memory in proportion to its traffic, not to its
//!   configuration: staging buffers are taken per write round, sized from the replica's recent
//!   rounds (64 KiB up to [`LogConfig::write_buffer_bytes`]) and freed when written and out of
//!   the tail cache (the last [`recent::RECENT_ROUNDS`] rounds, at most
//!   [`LogConfig::tail_cache_bytes`] of buffers per log); zero-fill
//!   writes share one buffer per executor; index pages are resident only where entries are
//!   (and not at all for sealed segments until a lookup reads them); see
//!   [`index`] and [`segment`].
//! * **Blocking calls.** Reads use positioned reads of the page cache (`pread`), checkpoints and
//!   unlinks use std calls; all are short. Only appends' data path goes through io_uring.

pub mod checkpoint;
pub mod config;
pub mod disk_guard;
pub mod error;
pub mod file_cache;
pub mod index;
pub mod log;
pub mod producers;
pub mod read;
pub mod recent;
pub mod runtime;
pub mod scan;
pub mod segment;
pub(crate) mod signal;
#[doc(hidden)]
pub mod test_support;

pub use config::LogConfig;
pub use error::{StorageError, StorageResult};
pub use file_cache::SegmentFileCache;
pub use log::{Appended, Clock, LogObserver, LogStats, ReplicaLog, RetentionReport, SystemClock};
pub use read::{CopiedRead, FileSlice, ReadSlices};
