//! The vocabulary of the metadata store: object kinds, validated keys, versions, write
//! preconditions, fencing tokens, listings and watch events.
//!
//! Everything here is backend-agnostic. Values are raw bytes (JSON documents); the typed layer
//! in [`super::typed`] turns them into Rust types.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::error::StoreError;

/// Longest key accepted, in bytes. Matches Kafka's topic-name limit, and `<key>.json` stays
/// within Linux's 255-byte file-name limit.
pub const KEY_BYTES_MAX: usize = 249;

/// The kinds of object the SC stores. Each kind is its own namespace of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// Streaming Processing Units, keyed by SPU id.
    Spu,
    /// SPU groups (managed SPUs are generated from them), keyed by group name.
    SpuGroup,
    /// Topics, keyed by topic name.
    Topic,
    /// Partitions, keyed by `<topic>-<partition>`.
    Partition,
    /// ACL bindings, keyed by the hex SHA-256 of the binding's JSON (one object per binding,
    /// so adding and removing never race on a shared document).
    Acl,
    /// Access-token digests, keyed by token name.
    Token,
}

impl ObjectKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Spu,
        ObjectKind::SpuGroup,
        ObjectKind::Topic,
        ObjectKind::Partition,
        ObjectKind::Acl,
        ObjectKind::Token,
    ];

    /// The kind's name as used in paths (`<dir>/<name>/...`, `sluice/<name>/...`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Spu => "spus",
            ObjectKind::SpuGroup => "spu-groups",
            ObjectKind::Topic => "topics",
            ObjectKind::Partition => "partitions",
            ObjectKind::Acl => "acls",
            ObjectKind::Token => "tokens",
        }
    }

    /// The kind whose [`ObjectKind::as_str`] is `name`.
    pub fn from_name(name: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated object key: 1 to [`KEY_BYTES_MAX`] bytes of ASCII letters, digits, `.`, `_` and
/// `-`, and neither `.` nor `..`. Every such key is a safe file name and a safe Consul key
/// segment, so no backend needs to escape it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<ObjectKey, StoreError> {
        let key = key.into();
        match Self::problem(&key) {
            None => Ok(ObjectKey(key)),
            Some(reason) => Err(StoreError::InvalidKey { key, reason }),
        }
    }

    fn problem(key: &str) -> Option<&'static str> {
        if key.is_empty() {
            return Some("empty");
        }
        if key.len() > KEY_BYTES_MAX {
            return Some("longer than 249 bytes");
        }
        if key == "." || key == ".." {
            return Some("`.` and `..` are reserved");
        }
        let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
        if !key.bytes().all(allowed) {
            return Some("only ASCII letters, digits, `.`, `_` and `-` are allowed");
        }
        None
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ObjectKey::new(text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The store's revision at which an object was last written (or deleted).
///
/// Versions come from one counter for the whole store: every successful write gets a version
/// greater than every version handed out before, across restarts. `Version(0)` is never the
/// version of an object; it stands for "before anything" (watch from the start of the history).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The revision before any write.
    pub const ZERO: Version = Version(0);

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What a conditional put expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The object must not exist (create).
    Absent,
    /// The object must exist at exactly this version (update).
    Exactly(Version),
}

impl From<Option<Version>> for ExpectedVersion {
    /// `None` (or `Some(Version(0))`) means "must be absent".
    fn from(version: Option<Version>) -> Self {
        match version {
            None | Some(Version::ZERO) => ExpectedVersion::Absent,
            Some(version) => ExpectedVersion::Exactly(version),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Absent => f.write_str("absent"),
            ExpectedVersion::Exactly(version) => write!(f, "version {version}"),
        }
    }
}

/// Proof that the writer is the active SC, attached to writes.
///
/// Opaque to callers: the SC gets one when it wins leadership and passes it on every write.
/// - **Consul**: the leadership lock's key, its `LockIndex` and the session holding it; a write
///   is a transaction that first checks the lock key is still held by that session, so a
///   deposed SC's write fails with [`StoreError::Fenced`] instead of landing.
/// - **Embedded**: the store itself holds an exclusive `flock` on its directory for as long as
///   it is open, so only one process can write at all; the token is accepted and not checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FencingToken {
    /// Key of the leadership lock.
    pub lock_key: String,
    /// How many times the lock has been acquired (Consul's `LockIndex`).
    pub lock_index: u64,
    /// The session that holds the lock.
    pub session: String,
}

/// One stored object with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// The object's key within its kind.
    pub key: ObjectKey,
    /// Version of the last write of this object.
    pub version: Version,
    /// The JSON document, as bytes.
    pub value: Vec<u8>,
}

/// Every object of one kind, consistent as of `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The store revision the listing reflects; watch from here to see every later change.
    pub revision: Version,
    /// The objects, sorted by key.
    pub objects: Vec<StoredObject>,
}

/// A change delivered to a watcher, in version order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// An object was created or updated.
    Put {
        /// The object's kind.
        kind: ObjectKind,
        /// The object's key.
        key: ObjectKey,
        /// The version of this write.
        version: Version,
        /// The new JSON document.
        value: Vec<u8>,
    },
    /// An object was deleted.
    Delete {
        /// The object's kind.
        kind: ObjectKind,
        /// The object's key.
        key: ObjectKey,
        /// The version (store revision) of the delete.
        version: Version,
    },
    /// The watcher fell behind the store's bounded history (or asked for a version the store no
    /// longer remembers): events were lost. This is the last event of the watch; list every kind
    /// again and start a new watch from the listing's revision.
    Resync {
        /// The oldest version the store can still watch from.
        oldest_version: Version,
    },
}

impl WatchEvent {
    /// The version of a put or delete; `None` for a resync.
    pub fn version(&self) -> Option<Version> {
        match self {
            WatchEvent::Put { version, .. } | WatchEvent::Delete { version, .. } => Some(*version),
            WatchEvent::Resync { .. } => None,
        }
    }
}
