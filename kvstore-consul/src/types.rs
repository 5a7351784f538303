//! Value types shared by the KV, session, transaction and watch modules.
//!
//! Consul's JSON (PascalCase fields, base64 values) is decoded here into typed entries; no
//! other module sees Consul's wire shapes for KV entries.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

/// A Consul Raft index (`X-Consul-Index`, `CreateIndex`, `ModifyIndex`): grows with every write
/// to the cluster, resets when a cluster loses its state (a `-dev` agent restarted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConsulIndex(u64);

impl ConsulIndex {
    /// Wraps a raw index.
    pub const fn new(index: u64) -> Self {
        Self(index)
    }

    /// The raw index.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConsulIndex {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// How many times a key has been acquired by a session (`LockIndex`); with the key and the
/// session it forms a fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LockIndex(u64);

impl LockIndex {
    /// Wraps a raw lock index.
    pub const fn new(index: u64) -> Self {
        Self(index)
    }

    /// The raw lock index.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for LockIndex {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A Consul session id (a UUID string).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// Wraps a session id as Consul returned it.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// One key of the KV store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Full key.
    pub key: String,
    /// Value bytes (empty when Consul stores no value).
    pub value: Vec<u8>,
    /// Opaque 64-bit flags set by the writer.
    pub flags: u64,
    /// Index of the write that created the key.
    pub create_index: ConsulIndex,
    /// Index of the last write to the key; the CAS index for [`crate::PutOptions::cas`].
    pub modify_index: ConsulIndex,
    /// Times the key was acquired by a session.
    pub lock_index: LockIndex,
    /// Session holding the key's lock, if any.
    pub session: Option<SessionId>,
}

/// A result with the `X-Consul-Index` it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed<T> {
    /// The index to pass to a blocking query that waits for the next change.
    pub index: ConsulIndex,
    /// The result.
    pub value: T,
}

/// Consul's JSON shape of a KV entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RawKvEntry {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    session: Option<String>,
}

impl RawKvEntry {
    /// Decodes the base64 value; a bad encoding is reported as a text for a decode error.
    pub(crate) fn into_entry(self) -> Result<KvEntry, String> {
        let value = match self.value {
            Some(encoded) => {
                base64::engine::general_purpose::STANDARD.decode(encoded.as_bytes()).map_err(
                    |error| format!("value of key {:?} is not base64: {error}", self.key),
                )?
            }
            None => Vec::new(),
        };
        Ok(KvEntry {
            key: self.key,
            value,
            flags: self.flags,
            create_index: ConsulIndex(self.create_index),
            modify_index: ConsulIndex(self.modify_index),
            lock_index: LockIndex(self.lock_index),
            session: self.session.filter(|session| !session.is_empty()).map(SessionId),
        })
    }
}

/// Base64 text of a value, as Consul's JSON APIs (transactions) expect it.
pub(crate) fn encode_value(value: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(value)
}

/// Consul's duration syntax (`"10s"`, `"1500ms"`), exact to the millisecond.
pub(crate) fn duration_text(duration: std::time::Duration) -> String {
    let milliseconds = duration.as_millis();
    if milliseconds % 1000 == 0 {
        format!("{}s", milliseconds / 1000)
    } else {
        format!("{milliseconds}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_entry_decodes() {
        let json = r#"{"LockIndex":2,"Key":"a/b","Flags":7,"Value":"aGVsbG8=",
            "CreateIndex":13,"ModifyIndex":14,"Session":"abc"}"#;
        let raw: RawKvEntry = serde_json::from_str(json).unwrap();
        let entry = raw.into_entry().unwrap();
        assert_eq!(entry.value, b"hello");
        assert_eq!(entry.flags, 7);
        assert_eq!(entry.modify_index, ConsulIndex::new(14));
        assert_eq!(entry.lock_index, LockIndex::new(2));
        assert_eq!(entry.session, Some(SessionId::new("abc")));
    }

    #[test]
    fn null_value_is_empty_and_bad_base64_is_an_error() {
        let raw: RawKvEntry = serde_json::from_str(r#"{"Key":"k","Value":null}"#).unwrap();
        assert!(raw.into_entry().unwrap().value.is_empty());
        let raw: RawKvEntry = serde_json::from_str(r#"{"Key":"k","Value":"!!"}"#).unwrap();
        assert!(raw.into_entry().is_err());
    }

    #[test]
    fn durations_are_in_milliseconds() {
        assert_eq!(duration_text(std::time::Duration::from_secs(10)), "10s");
        assert_eq!(duration_text(std::time::Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_text(std::time::Duration::ZERO), "0s");
    }
}
