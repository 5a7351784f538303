//! Atomic KV transactions (`PUT /v1/txn`).
//!
//! Invariants: at most [`TXN_OPERATIONS_MAX`] operations and values within
//! [`crate::VALUE_BYTES_MAX`], checked before sending; either every operation is applied or none
//! is, and a rolled-back transaction is [`ConsulError::TxnAborted`] naming each failed
//! operation by its index in the submitted list.

use serde::{Deserialize, Serialize};

use crate::client::{Call, ConsulClient};
use crate::error::{ConsulError, TxnOpError};
use crate::kv::check_value_size;
use crate::types::{encode_value, ConsulIndex, Indexed, KvEntry, RawKvEntry, SessionId};

/// Most operations Consul accepts in one transaction.
pub const TXN_OPERATIONS_MAX: usize = 64;

/// One KV operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write `value` unconditionally.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Flags.
        flags: u64,
    },
    /// Write `value` only if the key's `ModifyIndex` is `index` (0: only if absent).
    Cas {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Flags.
        flags: u64,
        /// Expected `ModifyIndex`.
        index: ConsulIndex,
    },
    /// Acquire the key's lock for `session`, writing `value`.
    Lock {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Session that acquires.
        session: SessionId,
    },
    /// Release the key's lock held by `session`.
    Unlock {
        /// Key.
        key: String,
        /// Session that holds the lock.
        session: SessionId,
    },
    /// Read the key (fails the transaction if it does not exist).
    Get {
        /// Key.
        key: String,
    },
    /// Read every key under the prefix.
    GetTree {
        /// Prefix.
        prefix: String,
    },
    /// Fail unless the key's `ModifyIndex` is `index`.
    CheckIndex {
        /// Key.
        key: String,
        /// Expected `ModifyIndex`.
        index: ConsulIndex,
    },
    /// Fail unless the key is locked by `session`.
    CheckSession {
        /// Key.
        key: String,
        /// Expected lock holder.
        session: SessionId,
    },
    /// Fail if the key exists.
    CheckNotExists {
        /// Key.
        key: String,
    },
    /// Delete the key.
    Delete {
        /// Key.
        key: String,
    },
    /// Delete every key under the prefix.
    DeleteTree {
        /// Prefix.
        prefix: String,
    },
    /// Delete the key only if its `ModifyIndex` is `index`.
    DeleteCas {
        /// Key.
        key: String,
        /// Expected `ModifyIndex`.
        index: ConsulIndex,
    },
}

/// Consul's JSON shape of one operation.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireKvOp<'a> {
    verb: &'static str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
}

#[derive(Serialize)]
struct WireOp<'a> {
    #[serde(rename = "KV")]
    kv: WireKvOp<'a>,
}

impl TxnOp {
    fn wire(&self) -> WireKvOp<'_> {
        let bare = |verb, key| WireKvOp {
            verb,
            key,
            value: None,
            flags: None,
            index: None,
            session: None,
        };
        match self {
            Self::Set { key, value, flags } => WireKvOp {
                value: Some(encode_value(value)),
                flags: Some(*flags),
                ..bare("set", key)
            },
            Self::Cas { key, value, flags, index } => WireKvOp {
                value: Some(encode_value(value)),
                flags: Some(*flags),
                index: Some(index.get()),
                ..bare("cas", key)
            },
            Self::Lock { key, value, session } => WireKvOp {
                value: Some(encode_value(value)),
                session: Some(session.as_str()),
                ..bare("lock", key)
            },
            Self::Unlock { key, session } => {
                WireKvOp { session: Some(session.as_str()), ..bare("unlock", key) }
            }
            Self::Get { key } => bare("get", key),
            Self::GetTree { prefix } => bare("get-tree", prefix),
            Self::CheckIndex { key, index } => {
                WireKvOp { index: Some(index.get()), ..bare("check-index", key) }
            }
            Self::CheckSession { key, session } => {
                WireKvOp { session: Some(session.as_str()), ..bare("check-session", key) }
            }
            Self::CheckNotExists { key } => bare("check-not-exists", key),
            Self::Delete { key } => bare("delete", key),
            Self::DeleteTree { prefix } => bare("delete-tree", prefix),
            Self::DeleteCas { key, index } => {
                WireKvOp { index: Some(index.get()), ..bare("delete-cas", key) }
            }
        }
    }

    fn value(&self) -> Option<(&str, &[u8])> {
        match self {
            Self::Set { key, value, .. }
            | Self::Cas { key, value, .. }
            | Self::Lock { key, value, .. } => Some((key, value)),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireResult {
    #[serde(rename = "KV")]
    kv: Option<RawKvEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireError {
    op_index: usize,
    what: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireAnswer {
    results: Option<Vec<WireResult>>,
    errors: Option<Vec<WireError>>,
}

impl ConsulClient {
    /// Applies `operations` atomically and returns the entries the operations produced, in
    /// order (reads return values; writes return metadata without the value, whose
    /// `modify_index` is the write's index; deletes and checks return nothing).
    ///
    /// Consul's transaction answer carries no `X-Consul-Index`: the returned index is the
    /// largest `modify_index` among the entries (0 when none, e.g. only deletes and checks);
    /// a later read (even of a deleted key) answers with an index at or above the transaction's.
    ///
    /// # Errors
    /// [`ConsulError::TooManyTxnOperations`] or [`ConsulError::ValueTooLarge`] before sending;
    /// [`ConsulError::TxnAborted`] when a check or write failed (nothing applied); transport
    /// errors and error statuses.
    ///
    /// ```no_run
    /// use sluice_kvstore_consul::{ConsulError, ConsulIndex, TxnOp};
    /// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
    /// let operations = vec![
    ///     TxnOp::CheckIndex { key: "sluice/epoch".into(), index: ConsulIndex::new(42) },
    ///     TxnOp::Set { key: "sluice/topics/orders".into(), value: b"{}".to_vec(), flags: 0 },
    /// ];
    /// match client.txn(&operations) {
    ///     Ok(results) => println!("applied at index {}", results.index),
    ///     Err(ConsulError::TxnAborted { errors }) => println!("failed: {}", errors[0]),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
    /// ```
    pub fn txn(&self, operations: &[TxnOp]) -> Result<Indexed<Vec<KvEntry>>, ConsulError> {
        if operations.len() > TXN_OPERATIONS_MAX {
            return Err(ConsulError::TooManyTxnOperations {
                count: operations.len(),
                count_max: TXN_OPERATIONS_MAX,
            });
        }
        for (key, value) in operations.iter().filter_map(TxnOp::value) {
            check_value_size(key, value)?;
        }
        let wire: Vec<WireOp<'_>> = operations.iter().map(|op| WireOp { kv: op.wire() }).collect();
        let body = serde_json::to_vec(&wire).map_err(|error| ConsulError::Config {
            reason: format!("cannot encode the transaction: {error}"),
        })?;
        let reply = self.execute(Call::new("PUT", "/v1/txn".into()).body(&body))?;
        if reply.status != 409 && !reply.is_success() {
            return Err(reply.into_error());
        }
        let answer: WireAnswer = reply.json()?;
        let errors = answer.errors.unwrap_or_default();
        if reply.status == 409 || !errors.is_empty() {
            let errors = errors
                .into_iter()
                .map(|error| TxnOpError { op_index: error.op_index, what: error.what })
                .collect();
            return Err(ConsulError::TxnAborted { errors });
        }
        let mut entries = Vec::new();
        for raw in answer.results.unwrap_or_default().into_iter().filter_map(|result| result.kv) {
            entries.push(raw.into_entry().map_err(|detail| reply.decode_error(detail))?);
        }
        let index = entries.iter().map(|entry| entry.modify_index).max().unwrap_or_default();
        Ok(Indexed { index: reply.index.unwrap_or(index), value: entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_encode_as_consul_expects() {
        let op = TxnOp::Cas {
            key: "a".into(),
            value: b"hi".to_vec(),
            flags: 3,
            index: ConsulIndex::new(9),
        };
        let json = serde_json::to_string(&WireOp { kv: op.wire() }).unwrap();
        assert_eq!(json, r#"{"KV":{"Verb":"cas","Key":"a","Value":"aGk=","Flags":3,"Index":9}}"#);
        let op = TxnOp::CheckNotExists { key: "b".into() };
        let json = serde_json::to_string(&WireOp { kv: op.wire() }).unwrap();
        assert_eq!(json, r#"{"KV":{"Verb":"check-not-exists","Key":"b"}}"#);
    }
}
