//! The Consul backend of the metadata store, for datacenters (on `sluice-kvstore-consul`).
//!
//! ## Layout (readable by an operator: `consul kv get sluice/default/topics/orders`)
//!
//! ```text
//! <key_prefix>/<cluster>/spus/<key>          one object: its JSON document, as written
//! <key_prefix>/<cluster>/spu-groups/<key>
//! <key_prefix>/<cluster>/topics/<key>
//! <key_prefix>/<cluster>/partitions/<key>
//! <key_prefix>/<cluster>/last-delete         {"kind", "key"} of the newest delete (see below)
//! <key_prefix>/<cluster>/revision            never written: reading it gives Consul's KV index
//! ```
//!
//! Values must be JSON documents (the typed layer writes pretty JSON); they are stored byte for
//! byte, so `consul kv get` shows exactly what the SC wrote.
//!
//! ## Versions
//!
//! An object's version is its Consul `ModifyIndex`, the raft index of its last write: one
//! cluster-wide, strictly increasing counter, which is the store-wide revision of the trait.
//! - **Put** is a transaction `cas` on the `ModifyIndex` (index 0 for a create); the answer
//!   carries the new `ModifyIndex`.
//! - **Delete** is a transaction `check-index` + `delete` that also rewrites the `last-delete`
//!   key. Consul answers nothing for a delete, but all operations of a transaction share one
//!   raft index, so the `ModifyIndex` of `last-delete` in the answer *is* the delete's version:
//!   exact, above the object's last version and below any later write.
//! - **List** reads the kind's subtree; its revision is the larger of the subtree's
//!   `X-Consul-Index` and Consul's KV index read just before, which is a revision the listing is
//!   consistent at and is at least every version handed out before the call.
//!
//! ## Watches
//!
//! A watch is a thread running the crate's [`sluice_kvstore_consul::PrefixWatch`] (blocking
//! queries on `<key_prefix>/<cluster>/`) and translating each answer into [`WatchEvent`]s:
//! - Changes made **through this store handle** are delivered exactly, every one with its
//!   version, from an in-memory journal (see `journal.rs`): intermediate values of a busy key
//!   and exact delete versions included.
//! - Changes made **by other writers** (an operator's `consul kv put`, another process) are seen
//!   at the granularity of blocking-query answers: a key written several times between two
//!   answers is delivered once with its last value, and a foreign delete is delivered with the
//!   answer's index as its version (at or above the real one).
//! - [`WatchEvent::Resync`] is sent (and the watch ends) when the Consul index goes backwards
//!   (the agent or cluster lost its state, e.g. a restarted `-dev` agent; this handle's next
//!   write getting a version below an earlier one proves it too), when `from` is above
//!   everything Consul knows, when changes the watch needs were dropped from the bounded
//!   journal, or when changes between `from` and the start of the watch cannot all be explained.
//! - While Consul is unreachable a watch backs off (the crate's
//!   [`sluice_kvstore_consul::WatchOptions`]) and emits nothing; it resumes, or resyncs, when
//!   Consul answers again. A watch thread ends when its
//!   receiver is found dropped (at the next event it sends: crossbeam offers no way to ask
//!   earlier, so an idle dropped watch keeps one blocking query open until then) or when the
//!   store is dropped
//!   (within [`ConsulStoreConfig::watch_wait`] plus the request timeout).
//!
//! ## Fencing
//!
//! A write with a [`FencingToken`] is one transaction that first checks `check-session` (the
//! lock key is held by the token's session) and `check-index` on the lock key's `ModifyIndex`
//! as read when its `LockIndex` and session matched the token; so a deposed SC's write fails as
//! a whole with [`StoreError::Fenced`]. The lock key's `ModifyIndex` is cached per token and
//! re-read when the check fails (the holder may have rewritten the lock's value).
//!
//! ## Failure modes
//!
//! Every call is bounded by the Consul client's request timeout. An unreachable agent, a
//! timeout, a broken connection or a retriable Consul status (no leader, 429) is
//! [`StoreError::Unavailable`] with Consul's message (for a write, the outcome is unknown:
//! re-read). Anything else Consul refuses (ACLs, TLS, an undecodable answer) is
//! [`StoreError::Backend`], not retryable.

mod journal;
mod watch;

pub use self::journal::{JOURNAL_BYTES_MAX, JOURNAL_EVENTS_MAX};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::Receiver;
use sluice_kvstore_consul::{
    ConsulClient, ConsulConfig, ConsulError, ConsulIndex, KvEntry, SessionId, TxnOp,
};

use self::journal::{Journal, JournalEntry};
use super::{
    check_value, ExpectedVersion, FencingToken, Listing, MetadataStore, ObjectKey, ObjectKind,
    StoreError, StoredObject, Version, WatchEvent,
};

/// Default longest wait of one watch query: short enough that a watch thread notices a closed
/// store within seconds, long enough that idle watches cost little.
pub const DEFAULT_WATCH_WAIT: Duration = Duration::from_secs(5);

/// Fenced writes tried again after the lock key changed under the same holder (its value was
/// rewritten): more than that means the lock is churning, and the write reports it as fenced.
const FENCE_ATTEMPTS_MAX: usize = 3;

/// Where and how the Consul store keeps its objects.
#[derive(Clone, Debug)]
pub struct ConsulStoreConfig {
    /// How to reach the Consul agent (address, token, TLS, request timeout).
    pub consul: ConsulConfig,
    /// First path segment(s) of every key, e.g. `sluice` (may contain `/`).
    pub key_prefix: String,
    /// The cluster's name: several clusters can share one Consul.
    pub cluster: String,
    /// Longest wait of one blocking query of a watch.
    pub watch_wait: Duration,
}

impl ConsulStoreConfig {
    /// Objects under `sluice/default/`, watches waiting [`DEFAULT_WATCH_WAIT`].
    pub fn new(consul: ConsulConfig) -> Self {
        Self {
            consul,
            key_prefix: "sluice".into(),
            cluster: "default".into(),
            watch_wait: DEFAULT_WATCH_WAIT,
        }
    }

    /// Sets the key prefix.
    pub fn with_key_prefix(mut self, key_prefix: impl Into<String>) -> Self {
        self.key_prefix = key_prefix.into();
        self
    }

    /// Sets the cluster name.
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// Sets the watch wait.
    pub fn with_watch_wait(mut self, watch_wait: Duration) -> Self {
        self.watch_wait = watch_wait;
        self
    }
}

/// The key paths of one cluster.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// `<key_prefix>/<cluster>/`.
    cluster_prefix: String,
}

impl Layout {
    fn new(key_prefix: &str, cluster: &str) -> Result<Layout, StoreError> {
        let invalid = |reason: &str| StoreError::Backend {
            reason: format!("invalid Consul store configuration: {reason}"),
        };
        let segments: Vec<&str> = key_prefix.trim_matches('/').split('/').collect();
        if segments.iter().any(|segment| ObjectKey::new(*segment).is_err()) {
            return Err(invalid(&format!(
                "key prefix {key_prefix:?} must be `/`-separated names of ASCII letters, digits, \
                 `.`, `_` and `-`"
            )));
        }
        if ObjectKey::new(cluster).is_err() {
            return Err(invalid(&format!(
                "cluster name {cluster:?} must be 1 to 249 ASCII letters, digits, `.`, `_` and `-`"
            )));
        }
        Ok(Layout { cluster_prefix: format!("{}/{cluster}/", segments.join("/")) })
    }

    fn kind_prefix(&self, kind: ObjectKind) -> String {
        format!("{}{}/", self.cluster_prefix, kind.as_str())
    }

    fn object_path(&self, kind: ObjectKind, key: &ObjectKey) -> String {
        format!("{}{}/{}", self.cluster_prefix, kind.as_str(), key.as_str())
    }

    fn last_delete_path(&self) -> String {
        format!("{}last-delete", self.cluster_prefix)
    }

    fn revision_path(&self) -> String {
        format!("{}revision", self.cluster_prefix)
    }

    /// The object a key path names, if it names one.
    fn parse(&self, path: &str) -> Option<(ObjectKind, ObjectKey)> {
        let rest = path.strip_prefix(&self.cluster_prefix)?;
        let (kind, key) = rest.split_once('/')?;
        Some((ObjectKind::from_name(kind)?, ObjectKey::new(key).ok()?))
    }
}

/// The Consul-backed [`MetadataStore`]. See the module docs for its layout and guarantees.
pub struct ConsulStore {
    client: ConsulClient,
    layout: Layout,
    watch_wait: Duration,
    journal: Arc<Journal>,
    /// The last fencing token checked and its lock key's `ModifyIndex` at that time.
    fence_cache: Mutex<Option<(FencingToken, ConsulIndex)>>,
    /// Set on drop; watch threads exit when they see it.
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for ConsulStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConsulStore")
            .field("address", &self.client.base_url())
            .field("cluster_prefix", &self.layout.cluster_prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for ConsulStore {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl ConsulStore {
    /// Connects to Consul and checks that it answers.
    ///
    /// # Errors
    /// [`StoreError::Backend`] for a configuration that cannot work (bad prefix or cluster
    /// name, bad address or TLS settings); [`StoreError::Unavailable`] when Consul does not
    /// answer within the request timeout.
    pub fn open(config: ConsulStoreConfig) -> Result<ConsulStore, StoreError> {
        let layout = Layout::new(&config.key_prefix, &config.cluster)?;
        let client = ConsulClient::new(config.consul).map_err(|error| map_error(error, None))?;
        let store = ConsulStore {
            client,
            layout,
            watch_wait: config.watch_wait,
            journal: Arc::new(Journal::default()),
            fence_cache: Mutex::new(None),
            closed: Arc::new(AtomicBool::new(false)),
        };
        store.kv_revision()?;
        Ok(store)
    }

    /// The Consul client the store uses.
    pub fn client(&self) -> &ConsulClient {
        &self.client
    }

    /// `<key_prefix>/<cluster>/`, the prefix of every key the store writes.
    pub fn cluster_prefix(&self) -> &str {
        &self.layout.cluster_prefix
    }

    /// The key path of an object, e.g. `sluice/default/topics/orders`.
    pub fn object_path(&self, kind: ObjectKind, key: &ObjectKey) -> String {
        self.layout.object_path(kind, key)
    }

    /// Consul's KV index now (the index of reading a key that is never written).
    fn kv_revision(&self) -> Result<Version, StoreError> {
        let read = self.client.kv_get_indexed(&self.layout.revision_path());
        Ok(Version(read.map_err(|error| map_error(error, None))?.index.get()))
    }

    fn current_version(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
    ) -> Result<Option<Version>, StoreError> {
        let entry = self.client.kv_get(&self.layout.object_path(kind, key));
        let entry = entry.map_err(|error| map_error(error, Some((kind, key))))?;
        Ok(entry.map(|entry| Version(entry.modify_index.get())))
    }

    fn conflict(&self, kind: ObjectKind, key: &ObjectKey, expected: ExpectedVersion) -> StoreError {
        match self.current_version(kind, key) {
            Ok(actual) => {
                StoreError::VersionConflict { kind, key: key.to_string(), expected, actual }
            }
            Err(error) => error,
        }
    }

    /// The checks that make a write fenced: the lock is held by the token's session and is
    /// still at the `ModifyIndex` it had when its `LockIndex` matched the token.
    fn fence_checks(&self, token: &FencingToken) -> Result<[TxnOp; 2], StoreError> {
        let cached = self.fence_cache.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let lock_modify_index = match cached {
            Some((cached_token, index)) if cached_token == *token => index,
            _ => {
                let index = self.read_lock(token)?;
                let mut cache = self.fence_cache.lock().unwrap_or_else(PoisonError::into_inner);
                *cache = Some((token.clone(), index));
                index
            }
        };
        Ok([
            TxnOp::CheckSession {
                key: token.lock_key.clone(),
                session: SessionId::new(token.session.clone()),
            },
            TxnOp::CheckIndex { key: token.lock_key.clone(), index: lock_modify_index },
        ])
    }

    /// Reads the lock key and checks it against the token; returns its `ModifyIndex`.
    fn read_lock(&self, token: &FencingToken) -> Result<ConsulIndex, StoreError> {
        let entry = self.client.kv_get(&token.lock_key).map_err(|error| map_error(error, None))?;
        let Some(entry) = entry else {
            return Err(StoreError::Fenced {
                reason: format!("leadership lock {} does not exist", token.lock_key),
            });
        };
        check_lock(token, &entry)?;
        Ok(entry.modify_index)
    }

    fn forget_fence(&self) {
        *self.fence_cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Runs `operations` behind the fence checks of `fence` (if any). A failed fence check is
    /// re-checked against a fresh read of the lock: [`StoreError::Fenced`] if the token is no
    /// longer current, another attempt if only the lock's value changed.
    fn fenced_txn(
        &self,
        operations: &[TxnOp],
        fence: Option<&FencingToken>,
    ) -> Result<Result<Vec<KvEntry>, FailedOperation>, StoreError> {
        for _ in 0..FENCE_ATTEMPTS_MAX {
            let mut all = Vec::with_capacity(operations.len() + 2);
            if let Some(token) = fence {
                all.extend(self.fence_checks(token)?);
            }
            let checks = all.len();
            all.extend_from_slice(operations);
            match self.client.txn(&all) {
                Ok(answer) => return Ok(Ok(answer.value)),
                Err(ConsulError::TxnAborted { errors }) => {
                    let first = errors.iter().map(|error| error.op_index).min().unwrap_or(checks);
                    if first >= checks {
                        return Ok(Err(FailedOperation));
                    }
                    self.forget_fence();
                    if let Some(token) = fence {
                        self.read_lock(token)?;
                    }
                }
                Err(error) => return Err(map_error(error, None)),
            }
        }
        Err(StoreError::Fenced {
            reason: format!(
                "leadership lock {} kept changing during {FENCE_ATTEMPTS_MAX} attempts",
                fence.map_or("", |token| token.lock_key.as_str())
            ),
        })
    }
}

/// An aborted transaction whose failed operation was one of the caller's (not a fence check).
struct FailedOperation;

/// Checks a lock entry against a token.
fn check_lock(token: &FencingToken, entry: &KvEntry) -> Result<(), StoreError> {
    let holder = entry.session.as_ref().map(SessionId::as_str);
    if holder != Some(token.session.as_str()) {
        return Err(StoreError::Fenced {
            reason: format!(
                "leadership lock {} is held by {}, not by session {}",
                token.lock_key,
                holder
                    .map_or_else(|| "no session".to_owned(), |holder| format!("session {holder}")),
                token.session
            ),
        });
    }
    if entry.lock_index.get() != token.lock_index {
        return Err(StoreError::Fenced {
            reason: format!(
                "leadership lock {} is at lock index {}, the token has {}",
                token.lock_key, entry.lock_index, token.lock_index
            ),
        });
    }
    Ok(())
}

/// Maps a Consul error, keeping Consul's message and its retry-safety.
pub(crate) fn map_error(
    error: ConsulError,
    object: Option<(ObjectKind, &ObjectKey)>,
) -> StoreError {
    if error.is_retriable() {
        return StoreError::Unavailable { reason: error.to_string() };
    }
    match (error, object) {
        (error @ ConsulError::ValueTooLarge { .. }, Some((kind, key))) => {
            StoreError::InvalidValue { kind, key: key.to_string(), reason: error.to_string() }
        }
        (error, _) => StoreError::Backend { reason: error.to_string() },
    }
}

fn stored_object(key: ObjectKey, entry: KvEntry) -> StoredObject {
    StoredObject { key, version: Version(entry.modify_index.get()), value: entry.value }
}

impl MetadataStore for ConsulStore {
    fn get(&self, kind: ObjectKind, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let entry = self.client.kv_get(&self.layout.object_path(kind, key));
        let entry = entry.map_err(|error| map_error(error, Some((kind, key))))?;
        Ok(entry.map(|entry| stored_object(key.clone(), entry)))
    }

    fn list(&self, kind: ObjectKind) -> Result<Listing, StoreError> {
        let before = self.kv_revision()?;
        let subtree = self.client.kv_get_recursive(&self.layout.kind_prefix(kind));
        let subtree = subtree.map_err(|error| map_error(error, None))?;
        let mut objects = Vec::with_capacity(subtree.value.len());
        for entry in subtree.value {
            match self.layout.parse(&entry.key) {
                Some((parsed_kind, key)) if parsed_kind == kind => {
                    objects.push(stored_object(key, entry));
                }
                _ => tracing::warn!(key = %entry.key, "ignoring a Consul key that names no object"),
            }
        }
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(Listing { revision: before.max(Version(subtree.index.get())), objects })
    }

    fn put(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        value: &[u8],
        expected: ExpectedVersion,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError> {
        check_value(kind, key, value)?;
        let cas_index = match expected {
            ExpectedVersion::Absent => 0,
            ExpectedVersion::Exactly(Version::ZERO) => {
                return Err(self.conflict(kind, key, expected))
            }
            ExpectedVersion::Exactly(version) => version.get(),
        };
        let path = self.layout.object_path(kind, key);
        let operation = TxnOp::Cas {
            key: path.clone(),
            value: value.to_vec(),
            flags: 0,
            index: ConsulIndex::new(cas_index),
        };
        let ticket = self.journal.begin();
        let outcome = self.fenced_txn(std::slice::from_ref(&operation), fence);
        let written = match &outcome {
            Ok(Ok(entries)) => {
                entries.iter().find(|entry| entry.key == path).map(|entry| JournalEntry {
                    kind,
                    key: key.clone(),
                    version: Version(entry.modify_index.get()),
                    value: Some(value.to_vec()),
                })
            }
            _ => None,
        };
        let version = written.as_ref().map(|entry| entry.version);
        self.journal.finish(ticket, written);
        match outcome? {
            Ok(_) => version.ok_or_else(|| StoreError::Backend {
                reason: format!("Consul's answer to the write of {path} has no entry for it"),
            }),
            Err(FailedOperation) => Err(self.conflict(kind, key, expected)),
        }
    }

    fn delete(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        version: Version,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError> {
        let expected = ExpectedVersion::Exactly(version);
        if version == Version::ZERO {
            return Err(self.conflict(kind, key, expected));
        }
        let path = self.layout.object_path(kind, key);
        let marker_path = self.layout.last_delete_path();
        let marker = serde_json::json!({ "kind": kind.as_str(), "key": key.as_str() });
        let marker = serde_json::to_vec_pretty(&marker).unwrap_or_default();
        let operations = [
            TxnOp::CheckIndex { key: path.clone(), index: ConsulIndex::new(version.get()) },
            TxnOp::Delete { key: path.clone() },
            TxnOp::Set { key: marker_path.clone(), value: marker, flags: 0 },
        ];
        let ticket = self.journal.begin();
        let outcome = self.fenced_txn(&operations, fence);
        let deleted = match &outcome {
            Ok(Ok(entries)) => {
                entries.iter().find(|entry| entry.key == marker_path).map(|entry| JournalEntry {
                    kind,
                    key: key.clone(),
                    version: Version(entry.modify_index.get()),
                    value: None,
                })
            }
            _ => None,
        };
        let delete_version = deleted.as_ref().map(|entry| entry.version);
        self.journal.finish(ticket, deleted);
        match outcome? {
            Ok(_) => delete_version.ok_or_else(|| StoreError::Backend {
                reason: format!("Consul's answer to the delete of {path} has no index"),
            }),
            Err(FailedOperation) => Err(self.conflict(kind, key, expected)),
        }
    }

    fn watch(
        &self,
        kinds: &[ObjectKind],
        from: Version,
    ) -> Result<Receiver<WatchEvent>, StoreError> {
        watch::start(watch::WatchStart {
            client: self.client.clone(),
            layout: self.layout.clone(),
            journal: Arc::clone(&self.journal),
            closed: Arc::clone(&self.closed),
            wait: self.watch_wait,
            kinds: kinds.to_vec(),
            from,
            epoch: self.journal.epoch(),
            kv_revision: self.kv_revision()?,
        })
    }
}
