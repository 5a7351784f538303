//! Watch threads: Consul blocking queries on the cluster prefix, merged with the write journal
//! into the trait's ordered [`WatchEvent`] stream (see the parent module's docs for the rules).
//!
//! One thread per watch owns a [`PrefixWatch`] and the channel's sender. It tracks `position`,
//! the Consul index up to which every change has been delivered; each answer at a higher index
//! is turned into the events of `(position, index]`: this handle's journaled changes (exact)
//! plus whatever the answer shows that the journal does not explain (other writers).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use sluice_kvstore_consul::{
    ConsulClient, Indexed, KvEntry, PrefixChange, PrefixWatch, WatchOptions,
};

use super::journal::{Journal, JournalEntry};
use super::{map_error, Layout};
use crate::store::WATCH_CHANNEL_EVENTS_MAX;
use crate::store::{ObjectKey, ObjectKind, StoreError, Version, WatchEvent};

/// How often a watch blocked on a full channel checks whether the store was dropped.
const SEND_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Everything a watch thread needs, gathered by [`super::ConsulStore::watch`].
pub(super) struct WatchStart {
    pub client: ConsulClient,
    pub layout: Layout,
    pub journal: Arc<Journal>,
    pub closed: Arc<AtomicBool>,
    pub wait: Duration,
    pub kinds: Vec<ObjectKind>,
    pub from: Version,
    /// Consul's KV index, read before the snapshot.
    pub kv_revision: Version,
    /// The journal's epoch when the watch was asked for.
    pub epoch: u64,
}

/// Reads the cluster's current state and starts the watch thread.
pub(super) fn start(start: WatchStart) -> Result<Receiver<WatchEvent>, StoreError> {
    let snapshot = start
        .client
        .kv_get_recursive(&start.layout.cluster_prefix)
        .map_err(|error| map_error(error, None))?;
    let (sender, receiver) = crossbeam_channel::bounded(WATCH_CHANNEL_EVENTS_MAX);
    // A write may need several requests (a fence re-check and a retry); allow for all of them.
    let journal_wait = start.client.request_timeout() * 4;
    let watcher = Watcher { start, sender, journal_wait };
    std::thread::Builder::new()
        .name("consul-store-watch".into())
        .spawn(move || watcher.run(snapshot))
        .map_err(|error| StoreError::Backend {
            reason: format!("cannot start a watch thread: {error}"),
        })?;
    Ok(receiver)
}

struct Watcher {
    start: WatchStart,
    sender: Sender<WatchEvent>,
    journal_wait: Duration,
}

/// Whether the watch goes on.
enum Flow {
    Continue,
    Stop,
}

impl Watcher {
    fn run(self, snapshot: Indexed<Vec<KvEntry>>) {
        let snapshot_index = Version(snapshot.index.get());
        let from = self.start.from;
        if from > self.start.kv_revision.max(snapshot_index) {
            // A version Consul never handed out: it lost its state since.
            self.resync(snapshot_index);
            return;
        }
        if from < snapshot_index {
            let Some(events) = self.gap_events(&snapshot.value, snapshot_index) else {
                self.resync(snapshot_index);
                return;
            };
            if let Flow::Stop = self.send_all(events) {
                return;
            }
        }
        let options = WatchOptions::with_wait(self.start.wait);
        let prefix = self.start.layout.cluster_prefix.clone();
        let mut watch =
            PrefixWatch::starting_from(self.start.client.clone(), prefix, snapshot, options);
        self.follow(&mut watch, snapshot_index);
    }

    /// Delivers the changes of each answer until the watch ends.
    fn follow(&self, watch: &mut PrefixWatch, mut position: Version) {
        let mut failing = false;
        while !self.start.closed.load(Ordering::Acquire) {
            let change = match watch.poll() {
                Ok(change) => change,
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "metadata watch query failed; backing off");
                    }
                    failing = true;
                    continue;
                }
            };
            failing = false;
            let index = Version(watch.index().get());
            if index < position {
                tracing::info!(%index, %position, "Consul index went backwards; watch resyncs");
                self.start.journal.reset();
                self.resync(index);
                return;
            }
            if index == position && change.is_none() {
                continue;
            }
            if !self.start.journal.wait_for_writes_in_flight(self.journal_wait) {
                self.resync(index);
                return;
            }
            let Some(journaled) =
                self.start.journal.changes_between(self.start.epoch, position, index)
            else {
                self.resync(index);
                return;
            };
            let events = self.merge(position, index, change.as_ref(), &journaled);
            if let Flow::Stop = self.send_all(events) {
                return;
            }
            position = index;
        }
    }

    fn wanted(&self, kind: ObjectKind) -> bool {
        self.start.kinds.contains(&kind)
    }

    /// The events of `(position, index]`: the journal's, plus the changes in the answer the
    /// journal does not explain (other writers), in version order.
    fn merge(
        &self,
        position: Version,
        index: Version,
        change: Option<&PrefixChange>,
        journaled: &[JournalEntry],
    ) -> Vec<WatchEvent> {
        let mut events = self.journal_events(journaled);
        let puts: HashSet<(ObjectKind, ObjectKey, Version)> = journaled
            .iter()
            .filter(|entry| entry.value.is_some())
            .map(|entry| (entry.kind, entry.key.clone(), entry.version))
            .collect();
        let deletes: HashSet<(ObjectKind, ObjectKey)> = journaled
            .iter()
            .filter(|entry| entry.value.is_none())
            .map(|entry| (entry.kind, entry.key.clone()))
            .collect();
        if let Some(change) = change {
            for entry in change.added.iter().chain(&change.modified) {
                let Some((kind, key)) = self.start.layout.parse(&entry.key) else { continue };
                let version = Version(entry.modify_index.get());
                if !self.wanted(kind) || version <= position {
                    continue;
                }
                let key_version = (kind, key, version);
                if !puts.contains(&key_version) {
                    let (kind, key, version) = key_version;
                    events.push(WatchEvent::Put { kind, key, version, value: entry.value.clone() });
                }
            }
            for entry in &change.deleted {
                let Some((kind, key)) = self.start.layout.parse(&entry.key) else { continue };
                let kind_key = (kind, key);
                if self.wanted(kind) && !deletes.contains(&kind_key) {
                    // Another writer's delete: its exact index is unknown, the answer's is an
                    // upper bound.
                    events.push(WatchEvent::Delete { kind, key: kind_key.1, version: index });
                }
            }
        }
        events.sort_by_key(WatchEvent::version);
        events
    }

    fn journal_events(&self, journaled: &[JournalEntry]) -> Vec<WatchEvent> {
        journaled
            .iter()
            .filter(|entry| self.wanted(entry.kind))
            .map(|entry| match &entry.value {
                Some(value) => WatchEvent::Put {
                    kind: entry.kind,
                    key: entry.key.clone(),
                    version: entry.version,
                    value: value.clone(),
                },
                None => WatchEvent::Delete {
                    kind: entry.kind,
                    key: entry.key.clone(),
                    version: entry.version,
                },
            })
            .collect()
    }

    /// The events between `from` and the snapshot the watch starts at, or `None` when they
    /// cannot all be told: journaled changes were dropped, or the snapshot shows a change
    /// (e.g. another writer's delete) that neither the journal nor the entries explain.
    fn gap_events(&self, entries: &[KvEntry], snapshot_index: Version) -> Option<Vec<WatchEvent>> {
        let from = self.start.from;
        if !self.start.journal.wait_for_writes_in_flight(self.journal_wait) {
            return None;
        }
        let journaled =
            self.start.journal.changes_between(self.start.epoch, from, snapshot_index)?;
        let journaled_versions: HashSet<Version> =
            journaled.iter().map(|entry| entry.version).collect();
        let mut explained = journaled_versions.iter().copied().max().unwrap_or(from);
        let mut events = self.journal_events(&journaled);
        let last_delete_path = self.start.layout.last_delete_path();
        for entry in entries {
            let version = Version(entry.modify_index.get());
            if version <= from {
                continue;
            }
            // Any key under the prefix explains its own index; only deletes leave none.
            explained = explained.max(version);
            if entry.key == last_delete_path {
                if !journaled_versions.contains(&version) {
                    return None; // another writer's delete
                }
                continue;
            }
            let Some((kind, key)) = self.start.layout.parse(&entry.key) else { continue };
            if self.wanted(kind) && !journaled_versions.contains(&version) {
                events.push(WatchEvent::Put { kind, key, version, value: entry.value.clone() });
            }
        }
        if snapshot_index > explained {
            return None;
        }
        events.sort_by_key(WatchEvent::version);
        Some(events)
    }

    fn send_all(&self, events: Vec<WatchEvent>) -> Flow {
        for event in events {
            if event.version().is_some_and(|version| version <= self.start.from) {
                continue;
            }
            if let Flow::Stop = self.send(event) {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Sends one event, waiting while the channel is full; stops when the receiver is gone or
    /// the store was dropped.
    fn send(&self, mut event: WatchEvent) -> Flow {
        loop {
            match self.sender.send_timeout(event, SEND_CHECK_INTERVAL) {
                Ok(()) => return Flow::Continue,
                Err(SendTimeoutError::Disconnected(_)) => return Flow::Stop,
                Err(SendTimeoutError::Timeout(unsent)) => {
                    if self.start.closed.load(Ordering::Acquire) {
                        return Flow::Stop;
                    }
                    event = unsent;
                }
            }
        }
    }

    fn resync(&self, oldest_version: Version) {
        let _ = self.send(WatchEvent::Resync { oldest_version });
    }
}
