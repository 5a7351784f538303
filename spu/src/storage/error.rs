//! The storage error type. Every variant says whether retrying the same call is safe
//! ([`StorageError::is_retry_safe`]); the server maps them to client error codes at its edge.

use std::io;
use std::path::PathBuf;

use sluice_proto::ids::{LeaderEpoch, Offset};
use sluice_proto::record::BatchError;

use super::log::Appended;
use super::producers::SequenceError;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Free space on the data volume is under the configured floor (or the kernel returned
    /// ENOSPC). Nothing already written was damaged; retry once space is back.
    #[error("storage full: {free_bytes} bytes free, at least {required_bytes} required")]
    StorageFull {
        /// Free bytes seen on the volume (0 when the kernel reported ENOSPC).
        free_bytes: u64,
        /// The configured floor.
        required_bytes: u64,
    },
    /// The requested offset is outside `[log start offset, log end offset]`.
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        requested: Offset,
        /// First offset still held.
        log_start: Offset,
        /// Log end offset (next offset to be written).
        log_end: Offset,
    },
    /// A batch handed to append is malformed (length, CRC, magic, record count). Retrying the
    /// same bytes fails again.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// A batch is larger than `batch_bytes_max` or than a segment can hold.
    #[error("batch of {batch_bytes} bytes exceeds the limit of {limit_bytes}")]
    BatchTooLarge {
        /// Size of the batch.
        batch_bytes: usize,
        /// The limit it exceeds.
        limit_bytes: usize,
    },
    /// Bytes on disk do not form valid batches where they must (a sealed segment, an index
    /// entry that lies). The data is never served; an operator must repair or re-replicate.
    #[error("corrupt data in {path:?} at position {position}: {reason}")]
    Corruption {
        /// File holding the bad bytes.
        path: PathBuf,
        /// Byte position in that file.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// Truncation below the high watermark or log start, or another call that contradicts the
    /// log's state. Retrying the same call fails again.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An append's leader epoch is older than the newest epoch in the log (a leader that was
    /// replaced appending late). Nothing was appended.
    #[error("append with leader epoch {epoch} below the log's latest epoch {latest}")]
    EpochRegression {
        /// The append's epoch.
        epoch: LeaderEpoch,
        /// The newest epoch in the log.
        latest: LeaderEpoch,
    },
    /// A replicated batch does not start at the log's end (the follower's log moved since the
    /// fetch was made). Nothing was appended; the follower fetches again from its end.
    #[error("replicated batch starts at {base_offset} but the log ends at {log_end}")]
    NotAtLogEnd {
        /// The batch's first offset.
        base_offset: Offset,
        /// The log's appended end.
        log_end: Offset,
    },
    /// The batch was appended but later dropped before it was written (a failed write round
    /// or a truncation); it is not in the log, so appending it again is safe.
    #[error("append ending at offset {next_offset} was discarded before it was written")]
    AppendDiscarded {
        /// Offset after the discarded batch.
        next_offset: Offset,
    },
    /// An idempotent producer's batch is out of order or from an unknown producer or epoch
    /// ([`crate::storage::producers`]); nothing was appended.
    #[error("{0}")]
    Sequence(#[from] SequenceError),
    /// An idempotent producer's batch was appended before (a retry); nothing was appended
    /// again. `last` is the producer's last appended batch, which covers it.
    #[error("duplicate of a batch appended before (an idempotent retry)")]
    DuplicateSequence {
        /// The producer's last appended batch.
        last: Appended,
        /// The offset the batch got when it was appended, if the log still knows it.
        base_offset: Option<Offset>,
    },
    /// The log was closed or a previous write failure left it unusable until reopened.
    #[error("log closed")]
    Closed,
    /// Locked-memory limit too low for the I/O runtime (glommio needs `ulimit -l`).
    #[error("runtime unavailable: {0} (raise the locked-memory limit: ulimit -l unlimited)")]
    Runtime(String),
    /// Any other I/O failure. The outcome of the operation is unknown; the log stays
    /// consistent (unwritten appends were rolled back), so retrying is safe.
    #[error("I/O error on {path:?}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl StorageError {
    /// Whether the caller may retry the same call and expect it to succeed once the condition
    /// clears (space freed, transient I/O error).
    pub fn is_retry_safe(&self) -> bool {
        match self {
            StorageError::StorageFull { .. }
            | StorageError::Io { .. }
            | StorageError::AppendDiscarded { .. } => true,
            StorageError::OffsetOutOfRange { .. }
            | StorageError::InvalidBatch(_)
            | StorageError::BatchTooLarge { .. }
            | StorageError::Corruption { .. }
            | StorageError::InvalidRequest(_)
            | StorageError::EpochRegression { .. }
            | StorageError::NotAtLogEnd { .. }
            | StorageError::Sequence(_)
            | StorageError::DuplicateSequence { .. }
            | StorageError::Closed
            | StorageError::Runtime(_) => false,
        }
    }

    /// Wraps an I/O error, turning ENOSPC/EDQUOT into [`StorageError::StorageFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> StorageError {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                StorageError::StorageFull { free_bytes: 0, required_bytes: 0 }
            }
            _ => StorageError::Io { path: path.into(), source },
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> StorageError {
        StorageError::Corruption { path: path.into(), position, reason: reason.into() }
    }
}

/// Result alias for storage calls.
pub type StorageResult<T> = Result<T, StorageError>;

/// Adds a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> StorageResult<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> StorageResult<T> {
        self.map_err(|source| StorageError::io(path, source))
    }
}
