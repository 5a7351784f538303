//! The in-memory cache of every cluster object, fed only by the metadata store's watch.
//!
//! ## Ownership
//!
//! One thread, the *cache sync* thread ([`run_sync`]), owns every change: it lists each kind,
//! watches from the oldest listing revision, applies events, and on [`WatchEvent::Resync`] (or a
//! broken watch) lists again. Everyone else reads through [`Cache::snapshot`], an immutable
//! [`Snapshot`] behind an `Arc`: readers never block the writer and always see one consistent
//! revision. The writer copies the snapshot only when a reader still holds the old one.
//!
//! ## Invariants
//!
//! - An event never moves an object back in time: a put or delete whose version is not above
//!   the cached object's version is ignored (listings taken at different revisions may replay a
//!   few events already reflected).
//! - [`Snapshot::revision`] only grows while the watch runs; [`Cache::wait_for_revision`] lets a
//!   writer (the admin API) wait until its own write is visible before answering.
//! - Subscribers ([`Cache::subscribe`]) get a coalesced "changed" signal after every applied
//!   batch; a slow subscriber misses intermediate signals, never the latest one.
//!
//! ## Failure modes
//!
//! An object that does not decode is logged and left out of the cache (an operator must fix
//! it). A store error while listing is retried after [`RELIST_BACKOFF`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::de::DeserializeOwned;
use sluice_proto::ids::SpuId;
use sluice_proto::object::{
    AclBinding, PartitionKey, SpuGroupName, TokenDigest, TokenName, TopicName,
};

use crate::objects::{PartitionObject, SpuGroupObject, SpuObject, TopicObject};
use crate::store::{MetadataStore, ObjectKey, ObjectKind, StoreError, Version, WatchEvent};

/// Wait before listing again after a store error.
pub const RELIST_BACKOFF: Duration = Duration::from_millis(500);
/// How often the sync thread checks the shutdown flag while no event arrives.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// Most events applied before a snapshot is published (bounds reader staleness).
const EVENTS_PER_BATCH_MAX: usize = 1024;

/// One cached object with the version of its last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached<T> {
    /// Store version of the object.
    pub version: Version,
    /// The decoded object.
    pub value: T,
}

/// Every object, consistent as of `revision`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The store revision this snapshot reflects.
    pub revision: Version,
    /// Whether the store has been listed at least once (false only before the first listing).
    pub listed: bool,
    /// Topics by name.
    pub topics: BTreeMap<TopicName, Cached<TopicObject>>,
    /// SPUs by id.
    pub spus: BTreeMap<SpuId, Cached<SpuObject>>,
    /// SPU groups by name.
    pub spu_groups: BTreeMap<SpuGroupName, Cached<SpuGroupObject>>,
    /// Partitions by key.
    pub partitions: BTreeMap<PartitionKey, Cached<PartitionObject>>,
    /// ACL bindings by store key.
    pub acls: BTreeMap<ObjectKey, Cached<AclBinding>>,
    /// Access-token digests by name.
    pub tokens: BTreeMap<TokenName, Cached<TokenDigest>>,
}

impl Snapshot {
    /// Partitions of one topic, in partition order.
    pub fn topic_partitions<'a>(
        &'a self,
        topic: &'a TopicName,
    ) -> impl Iterator<Item = (&'a PartitionKey, &'a Cached<PartitionObject>)> + 'a {
        self.partitions.iter().filter(move |(key, _)| &key.topic == topic)
    }

    /// Applies one put or delete (a resync is handled by the caller).
    pub fn apply(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Put { kind, key, version, value } => {
                self.put(*kind, key, *version, value);
            }
            WatchEvent::Delete { kind, key, version } => self.delete(*kind, key, *version),
            WatchEvent::Resync { .. } => return,
        }
        if let Some(version) = event.version() {
            self.revision = self.revision.max(version);
        }
    }

    fn put(&mut self, kind: ObjectKind, key: &ObjectKey, version: Version, value: &[u8]) {
        let text = key.as_str();
        match kind {
            ObjectKind::Topic => {
                put_into(&mut self.topics, TopicName::new(text).ok(), version, value)
            }
            ObjectKind::Spu => {
                put_into(&mut self.spus, text.parse().ok().map(SpuId), version, value)
            }
            ObjectKind::SpuGroup => {
                put_into(&mut self.spu_groups, SpuGroupName::new(text).ok(), version, value);
            }
            ObjectKind::Partition => {
                put_into(&mut self.partitions, text.parse().ok(), version, value);
            }
            ObjectKind::Acl => put_into(&mut self.acls, Some(key.clone()), version, value),
            ObjectKind::Token => {
                put_into(&mut self.tokens, TokenName::new(text).ok(), version, value);
            }
        }
    }

    fn delete(&mut self, kind: ObjectKind, key: &ObjectKey, version: Version) {
        let text = key.as_str();
        match kind {
            ObjectKind::Topic => delete_from(&mut self.topics, TopicName::new(text).ok(), version),
            ObjectKind::Spu => delete_from(&mut self.spus, text.parse().ok().map(SpuId), version),
            ObjectKind::SpuGroup => {
                delete_from(&mut self.spu_groups, SpuGroupName::new(text).ok(), version);
            }
            ObjectKind::Partition => delete_from(&mut self.partitions, text.parse().ok(), version),
            ObjectKind::Acl => delete_from(&mut self.acls, Some(key.clone()), version),
            ObjectKind::Token => delete_from(&mut self.tokens, TokenName::new(text).ok(), version),
        }
    }
}

fn put_into<K: Ord, T: DeserializeOwned>(
    map: &mut BTreeMap<K, Cached<T>>,
    key: Option<K>,
    version: Version,
    value: &[u8],
) {
    let Some(key) = key else {
        tracing::warn!(version = version.get(), "object with an invalid key left out of the cache");
        return;
    };
    if map.get(&key).is_some_and(|cached| cached.version >= version) {
        return;
    }
    match serde_json::from_slice::<T>(value) {
        Ok(value) => {
            map.insert(key, Cached { version, value });
        }
        Err(error) => {
            tracing::error!(version = version.get(), %error, "undecodable object left out");
            map.remove(&key);
        }
    }
}

fn delete_from<K: Ord, T>(map: &mut BTreeMap<K, Cached<T>>, key: Option<K>, version: Version) {
    let Some(key) = key else { return };
    if map.get(&key).is_some_and(|cached| cached.version < version) {
        map.remove(&key);
    }
}

/// The shared, read-only view of the cache (written only by [`run_sync`]).
#[derive(Debug, Default)]
pub struct Cache {
    current: Mutex<Arc<Snapshot>>,
    advanced: Condvar,
    subscribers: Mutex<Vec<Sender<()>>>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Arc<Cache> {
        Arc::new(Cache::default())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A receiver signalled after every change (coalesced: capacity one).
    pub fn subscribe(&self) -> Receiver<()> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).push(sender);
        receiver
    }

    /// Waits until the snapshot reflects `revision`; `false` on timeout.
    pub fn wait_for_revision(&self, revision: Version, timeout: Duration) -> bool {
        self.wait_until(timeout, |snapshot| snapshot.listed && snapshot.revision >= revision)
    }

    /// Waits until the first listing is in; `false` on timeout.
    pub fn wait_listed(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |snapshot| snapshot.listed)
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&Snapshot) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        while !done(&current) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            current = self
                .advanced
                .wait_timeout(current, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn publish(&self, snapshot: Arc<Snapshot>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
        self.advanced.notify_all();
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|sender| match sender.try_send(()) {
            Ok(()) | Err(crossbeam_channel::TrySendError::Full(())) => true,
            Err(crossbeam_channel::TrySendError::Disconnected(())) => false,
        });
    }
}

/// Lists every kind into a fresh snapshot; returns it and the revision to watch from.
fn list_all(store: &dyn MetadataStore) -> Result<(Snapshot, Version), StoreError> {
    let mut snapshot = Snapshot::default();
    let mut watch_from: Option<Version> = None;
    for kind in ObjectKind::ALL {
        let listing = store.list(kind)?;
        watch_from = Some(watch_from.map_or(listing.revision, |from| from.min(listing.revision)));
        for object in &listing.objects {
            snapshot.put(kind, &object.key, object.version, &object.value);
        }
    }
    let watch_from = watch_from.unwrap_or_default();
    snapshot.revision = watch_from;
    snapshot.listed = true;
    Ok((snapshot, watch_from))
}

/// The cache sync thread's body: list, watch, apply, resync; returns when `shutdown` is set.
pub fn run_sync(store: Arc<dyn MetadataStore>, cache: Arc<Cache>, shutdown: Arc<AtomicBool>) {
    while !shutdown.load(Ordering::Relaxed) {
        let started = list_all(store.as_ref())
            .and_then(|(snapshot, from)| Ok((snapshot, store.watch(&ObjectKind::ALL, from)?)));
        let (snapshot, events) = match started {
            Ok(started) => started,
            Err(error) => {
                tracing::warn!(%error, "cannot list the metadata store; retrying");
                std::thread::sleep(RELIST_BACKOFF);
                continue;
            }
        };
        tracing::debug!(revision = snapshot.revision.get(), "cache listed");
        cache.publish(Arc::new(snapshot));
        follow(&events, &cache, &shutdown);
    }
}

/// Applies watch events until a resync, a closed watch or shutdown.
fn follow(events: &Receiver<WatchEvent>, cache: &Cache, shutdown: &AtomicBool) {
    while !shutdown.load(Ordering::Relaxed) {
        let first = match events.recv_timeout(SHUTDOWN_POLL) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                tracing::warn!("metadata store watch closed; listing again");
                std::thread::sleep(RELIST_BACKOFF);
                return;
            }
        };
        let mut snapshot = cache.snapshot();
        let writable = Arc::make_mut(&mut snapshot);
        let mut resync = false;
        let mut next = Some(first);
        let mut applied = 0;
        while let Some(event) = next.take() {
            if matches!(event, WatchEvent::Resync { .. }) {
                resync = true;
                break;
            }
            writable.apply(&event);
            applied += 1;
            if applied < EVENTS_PER_BATCH_MAX {
                next = events.try_recv().ok();
            }
        }
        cache.publish(snapshot);
        if resync {
            tracing::info!("cache fell behind the store's history; resyncing");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{ExpectedVersion, TypedStore};
    use sluice_proto::object::{TopicSpec, TopicStatus};

    fn topic_json(partitions: u32) -> Vec<u8> {
        let object = TopicObject {
            spec: TopicSpec::computed(partitions, 1),
            status: TopicStatus::default(),
        };
        serde_json::to_vec(&object).unwrap()
    }

    fn put(kind: ObjectKind, key: &str, version: u64, value: Vec<u8>) -> WatchEvent {
        WatchEvent::Put {
            kind,
            key: ObjectKey::new(key).unwrap(),
            version: Version(version),
            value,
        }
    }

    #[test]
    fn stale_events_never_move_an_object_back() {
        let mut snapshot = Snapshot::default();
        snapshot.apply(&put(ObjectKind::Topic, "a", 5, topic_json(5)));
        snapshot.apply(&put(ObjectKind::Topic, "a", 3, topic_json(3)));
        let name = TopicName::new("a").unwrap();
        assert_eq!(snapshot.topics[&name].value.spec.partition_count(), 5);
        let delete = |version| WatchEvent::Delete {
            kind: ObjectKind::Topic,
            key: ObjectKey::new("a").unwrap(),
            version: Version(version),
        };
        snapshot.apply(&delete(4));
        assert!(snapshot.topics.contains_key(&name), "an older delete is ignored");
        snapshot.apply(&delete(6));
        assert!(snapshot.topics.is_empty());
        assert_eq!(snapshot.revision, Version(6));
        snapshot.apply(&put(ObjectKind::Topic, "b", 7, br#"{"not": "a topic"}"#.to_vec()));
        assert!(snapshot.topics.is_empty(), "an undecodable object is left out");
        snapshot.apply(&put(ObjectKind::Partition, "no_number", 8, b"{}".to_vec()));
        assert!(snapshot.partitions.is_empty(), "a key that is not a partition key is left out");
    }

    #[test]
    fn sync_thread_lists_then_follows_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetadataStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let key = ObjectKey::new("early").unwrap();
        let object =
            TopicObject { spec: TopicSpec::computed(2, 1), status: TopicStatus::default() };
        store.put_typed(ObjectKind::Topic, &key, &object, ExpectedVersion::Absent, None).unwrap();
        let cache = Cache::new();
        let shutdown = Arc::new(AtomicBool::new(false));
        let thread = {
            let (store, cache, shutdown) = (store.clone(), cache.clone(), shutdown.clone());
            std::thread::spawn(move || run_sync(store, cache, shutdown))
        };
        assert!(cache.wait_listed(Duration::from_secs(10)));
        assert!(cache.snapshot().topics.contains_key(&TopicName::new("early").unwrap()));
        let key = ObjectKey::new("late").unwrap();
        let version = store
            .put_typed(ObjectKind::Topic, &key, &object, ExpectedVersion::Absent, None)
            .unwrap();
        assert!(cache.wait_for_revision(version, Duration::from_secs(10)));
        assert_eq!(cache.snapshot().topics.len(), 2);
        shutdown.store(true, Ordering::Relaxed);
        thread.join().unwrap();
    }
}
