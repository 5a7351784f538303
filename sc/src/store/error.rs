//! Errors of the metadata store. Each variant says whether retrying the same call is safe.

use std::io;
use std::path::PathBuf;

use super::types::{ExpectedVersion, ObjectKind, Version};

/// Everything a [`super::MetadataStore`] operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The precondition did not hold: the object is at another version (or absent, or present).
    /// Nothing was written. Retrying the same call fails again: re-read, decide, write again.
    #[error("version conflict on {kind}/{key}: expected {expected}, found {}", found_text(*.actual))]
    VersionConflict {
        /// Kind of the object.
        kind: ObjectKind,
        /// Key of the object.
        key: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The object's current version, `None` if it does not exist.
        actual: Option<Version>,
    },
    /// The key is not a valid object key. Not retryable.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The value is not acceptable to this backend (e.g. not a JSON document). Not retryable.
    #[error("invalid value for {kind}/{key}: {reason}")]
    InvalidValue {
        /// Kind of the object.
        kind: ObjectKind,
        /// Key of the object.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A stored value does not decode into the requested type. Not retryable.
    #[error("cannot decode {kind}/{key}: {source}")]
    Decode {
        /// Kind of the object.
        kind: ObjectKind,
        /// Key of the object.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A value does not encode as JSON. Not retryable.
    #[error("cannot encode {kind}/{key}: {source}")]
    Encode {
        /// Kind of the object.
        kind: ObjectKind,
        /// Key of the object.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Another process holds the store's directory. Retry once that process has exited.
    #[error("metadata store {dir} is locked by {}", holder_text(*.holder_pid))]
    Locked {
        /// The store directory.
        dir: PathBuf,
        /// The holder's process id, when it wrote one.
        holder_pid: Option<u32>,
    },
    /// The fencing token is no longer current: another SC has taken over. Nothing was written.
    /// Never retry with the same token; step down.
    #[error("write fenced: {reason}")]
    Fenced {
        /// What the backend found instead.
        reason: String,
    },
    /// A file operation failed. For a write, the change may or may not be on disk: the store
    /// refuses further writes ([`StoreError::Poisoned`]) and must be reopened, after which a
    /// re-read tells the outcome.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What the store was doing.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A stored file is damaged or not in the store's format. Needs an operator; not retryable.
    #[error("corrupt metadata file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An earlier write failed half-way, so memory and disk may disagree; this handle accepts no
    /// more writes. Reopen the store (after which the outcome of that write is visible).
    #[error("metadata store refuses writes after an earlier I/O failure; reopen it")]
    Poisoned,
    /// The backend cannot be reached (network, agent down). Reads may be retried; for a write
    /// the outcome is unknown: re-read before deciding to write again.
    #[error("metadata store unavailable: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
    },
    /// The backend refused the call or cannot work as configured (permission denied, TLS
    /// failure, bad address, an answer it cannot understand). Not retryable: needs an operator.
    #[error("metadata store backend error: {reason}")]
    Backend {
        /// The backend's own message.
        reason: String,
    },
}

impl StoreError {
    /// Whether repeating exactly the same call may succeed without first re-reading the store.
    pub fn is_retry_safe(&self) -> bool {
        matches!(self, StoreError::Locked { .. })
    }

    /// Whether the error says the caller's view is stale (re-read, then decide again).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::VersionConflict { .. })
    }
}

fn found_text(actual: Option<Version>) -> String {
    match actual {
        Some(version) => format!("version {version}"),
        None => "no object".to_owned(),
    }
}

fn holder_text(holder_pid: Option<u32>) -> String {
    match holder_pid {
        Some(pid) => format!("process {pid}"),
        None => "another process (pid unknown)".to_owned(),
    }
}
