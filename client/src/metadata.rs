//! The client's view of the cluster: SPUs (endpoints, per-core ports, online) and topics
//! (partition -> leader, leader core, leader epoch), as [`MetadataSnapshot`]s.
//!
//! Ownership: one [`MetadataCache`] per cluster handle. Only the metadata thread
//! ([`crate::watch`]) and explicit refreshes replace its snapshot; everyone else reads an
//! `Arc<MetadataSnapshot>` that never changes under them.
//!
//! Invariants:
//! - A snapshot is immutable; an update builds a new one ([`MetadataSnapshot::apply`], pure and
//!   unit-tested).
//! - A delta applies only on top of the epoch it names; otherwise [`Gap`] is returned and the
//!   watch re-subscribes, which starts with a full snapshot.
//! - A one-shot refresh replaces the view only when its epoch is not older than the current
//!   one, so a slow refresh never rolls back a newer pushed update.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sluice_proto::api::metadata::{
    Change, Changes, MetadataResponse, MetadataWatchUpdate, PartitionMetadata, SpuMetadata,
    TopicMetadata,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{CoreId, LeaderEpoch, PartitionId, SpuId, UpdateEpoch};

/// The cluster as last seen: SPUs and topics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataSnapshot {
    /// The SC's epoch this view reflects; `None` before the first update.
    pub epoch: Option<UpdateEpoch>,
    /// SPUs by id.
    pub spus: BTreeMap<SpuId, SpuMetadata>,
    /// Topics by name (only topics that exist).
    pub topics: BTreeMap<String, TopicMetadata>,
}

/// Where to send a partition's requests: its leader's owning core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The leader SPU.
    pub spu: SpuId,
    /// The leader's core that owns the replica.
    pub core: CoreId,
    /// The partition's leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// `host:port` of that core (`core_public_ports[core]`, or the shared public port).
    pub address: String,
}

/// Why a partition has no route right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The topic is not in the metadata.
    UnknownTopic,
    /// The partition is beyond the topic's partition count.
    UnknownPartition {
        /// The topic's partition count.
        partition_count: u32,
    },
    /// The partition has no usable leader (election, leader offline, endpoint unknown).
    NoLeader(ErrorCode),
}

/// A delta whose base epoch is not the current one: re-subscribe for a full snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The epoch the receiver was at.
    pub current: Option<UpdateEpoch>,
    /// The update's epoch.
    pub update: UpdateEpoch,
}

impl MetadataSnapshot {
    /// A snapshot from a one-shot metadata response (topics reported as unknown are left out).
    pub fn from_response(response: MetadataResponse) -> MetadataSnapshot {
        MetadataSnapshot {
            epoch: Some(response.epoch),
            spus: response.spus.into_iter().map(|spu| (spu.id, spu)).collect(),
            topics: response
                .topics
                .into_iter()
                .filter(|topic| topic.error_code != ErrorCode::UnknownTopicOrPartition)
                .map(|topic| (topic.name.as_str().to_owned(), topic))
                .collect(),
        }
    }

    /// The snapshot after `update`, or [`Gap`] when a delta does not apply on top of this one.
    pub fn apply(&self, update: MetadataWatchUpdate) -> Result<MetadataSnapshot, Gap> {
        let gap = Gap { current: self.epoch, update: update.epoch };
        if !update.spus.applies_to(self.epoch) || !update.topics.applies_to(self.epoch) {
            return Err(gap);
        }
        let spus = apply_changes(&self.spus, update.spus, |spu| spu.id, |id| *id);
        let topics = apply_changes(
            &self.topics,
            update.topics,
            |topic| topic.name.as_str().to_owned(),
            |name| name.as_str().to_owned(),
        );
        let topics = topics
            .into_iter()
            .filter(|(_, topic)| topic.error_code != ErrorCode::UnknownTopicOrPartition)
            .collect();
        Ok(MetadataSnapshot { epoch: Some(update.epoch), spus, topics })
    }

    /// One topic's metadata.
    pub fn topic(&self, topic: &str) -> Option<&TopicMetadata> {
        self.topics.get(topic)
    }

    /// The number of partitions of `topic`, if it exists.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topic(topic).map(|topic| u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX))
    }

    /// One partition's metadata.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionMetadata> {
        let partitions = &self.topic(topic)?.partitions;
        let by_index = partitions.get(partition as usize);
        match by_index {
            Some(found) if found.partition == PartitionId(partition) => Some(found),
            _ => partitions.iter().find(|found| found.partition == PartitionId(partition)),
        }
    }

    /// Where `topic`/`partition` is served: its leader's owning core.
    pub fn route(&self, topic: &str, partition: u32) -> Result<Route, RouteError> {
        let Some(topic_metadata) = self.topic(topic) else {
            return Err(RouteError::UnknownTopic);
        };
        let Some(partition_metadata) = self.partition(topic, partition) else {
            let partition_count = u32::try_from(topic_metadata.partitions.len()).unwrap_or(0);
            return Err(RouteError::UnknownPartition { partition_count });
        };
        if !partition_metadata.error_code.is_ok() {
            return Err(RouteError::NoLeader(partition_metadata.error_code));
        }
        let leader = partition_metadata.leader;
        let Some(spu) = self.spus.get(&leader) else {
            return Err(RouteError::NoLeader(ErrorCode::LeaderNotAvailable));
        };
        let core = partition_metadata.leader_core;
        Ok(Route {
            spu: leader,
            core,
            leader_epoch: partition_metadata.leader_epoch,
            address: core_address(spu, core),
        })
    }
}

/// `host:port` of an SPU core: its own port when the SPU published per-core ports, else the
/// shared public port (any core accepts any request there).
pub fn core_address(spu: &SpuMetadata, core: CoreId) -> String {
    let port = spu.core_public_ports.get(core.index()).copied().unwrap_or(spu.public_endpoint.port);
    let host = &spu.public_endpoint.host;
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn apply_changes<T: Clone, K, Key: Ord + Clone>(
    current: &BTreeMap<Key, T>,
    changes: Changes<T, K>,
    key_of: impl Fn(&T) -> Key,
    key_of_removed: impl Fn(&K) -> Key,
) -> BTreeMap<Key, T> {
    match changes {
        Changes::Full(objects) => {
            objects.into_iter().map(|object| (key_of(&object), object)).collect()
        }
        Changes::Delta { changes, .. } => {
            let mut next = current.clone();
            for change in changes {
                match change {
                    Change::Upsert(object) => {
                        next.insert(key_of(&object), object);
                    }
                    Change::Remove(key) => {
                        next.remove(&key_of_removed(&key));
                    }
                }
            }
            next
        }
    }
}

/// The current snapshot, replaced as updates arrive; waiters are woken on every change.
pub(crate) struct MetadataCache {
    current: Mutex<Arc<MetadataSnapshot>>,
    changed: Condvar,
}

impl MetadataCache {
    pub(crate) fn new() -> MetadataCache {
        MetadataCache {
            current: Mutex::new(Arc::new(MetadataSnapshot::default())),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<MetadataSnapshot> {
        Arc::clone(&self.current.lock().unwrap_or_else(|poison| poison.into_inner()))
    }

    /// Replaces the view.
    #[cfg(test)]
    pub(crate) fn store(&self, snapshot: MetadataSnapshot) {
        let mut current = self.current.lock().unwrap_or_else(|poison| poison.into_inner());
        *current = Arc::new(snapshot);
        self.changed.notify_all();
    }

    /// Replaces the view unless it is older than the current one (one-shot refreshes).
    pub(crate) fn store_if_not_older(&self, snapshot: MetadataSnapshot) {
        let mut current = self.current.lock().unwrap_or_else(|poison| poison.into_inner());
        if current.epoch.is_none() || snapshot.epoch >= current.epoch {
            *current = Arc::new(snapshot);
        }
        self.changed.notify_all();
    }

    /// Applies a pushed update on top of the current view.
    pub(crate) fn apply(&self, update: MetadataWatchUpdate) -> Result<(), Gap> {
        let mut current = self.current.lock().unwrap_or_else(|poison| poison.into_inner());
        let next = current.apply(update)?;
        *current = Arc::new(next);
        self.changed.notify_all();
        Ok(())
    }

    /// Waits until `accept` returns `Some` for the current snapshot or `timeout` passes.
    pub(crate) fn wait_for<T>(
        &self,
        timeout: Duration,
        mut accept: impl FnMut(&MetadataSnapshot) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut current = self.current.lock().unwrap_or_else(|poison| poison.into_inner());
        loop {
            if let Some(value) = accept(&current) {
                return Some(value);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            current = self
                .changed
                .wait_timeout(current, left)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::object::{EncryptionMode, Endpoint, ReplicaPlacement, TopicName};

    fn spu(id: i32, ports: Vec<u16>) -> SpuMetadata {
        SpuMetadata {
            id: SpuId(id),
            public_endpoint: Endpoint::new("127.0.0.1", 9005),
            core_public_ports: ports,
            rack: None,
            encryption: EncryptionMode::Plaintext,
            online: true,
        }
    }

    fn topic(name: &str, leaders: &[(i32, u16)]) -> TopicMetadata {
        TopicMetadata {
            name: TopicName::new(name).unwrap(),
            error_code: ErrorCode::None,
            partitions: leaders
                .iter()
                .enumerate()
                .map(|(index, &(leader, core))| PartitionMetadata {
                    partition: PartitionId(index as u32),
                    error_code: ErrorCode::None,
                    leader: SpuId(leader),
                    leader_core: CoreId(core),
                    leader_epoch: LeaderEpoch(1),
                    replicas: vec![ReplicaPlacement { spu: SpuId(leader), core: CoreId(core) }],
                    in_sync_replicas: vec![SpuId(leader)],
                })
                .collect(),
        }
    }

    fn full(epoch: u64, spus: Vec<SpuMetadata>, topics: Vec<TopicMetadata>) -> MetadataWatchUpdate {
        MetadataWatchUpdate {
            epoch: UpdateEpoch(epoch),
            spus: Changes::Full(spus),
            topics: Changes::Full(topics),
        }
    }

    #[test]
    fn full_update_replaces_and_routes_to_the_owning_core() {
        let snapshot = MetadataSnapshot::default()
            .apply(full(
                3,
                vec![spu(1, vec![7001, 7002]), spu(2, vec![])],
                vec![topic("orders", &[(1, 1), (2, 0)])],
            ))
            .unwrap();
        assert_eq!(snapshot.epoch, Some(UpdateEpoch(3)));
        assert_eq!(snapshot.partition_count("orders"), Some(2));
        let route = snapshot.route("orders", 0).unwrap();
        assert_eq!((route.spu, route.core), (SpuId(1), CoreId(1)));
        assert_eq!(route.address, "127.0.0.1:7002");
        // No per-core ports: the shared public port.
        assert_eq!(snapshot.route("orders", 1).unwrap().address, "127.0.0.1:9005");
        assert_eq!(
            snapshot.route("orders", 2),
            Err(RouteError::UnknownPartition { partition_count: 2 })
        );
        assert_eq!(snapshot.route("missing", 0), Err(RouteError::UnknownTopic));
    }

    #[test]
    fn delta_applies_on_its_base_epoch_only() {
        let base =
            MetadataSnapshot::default().apply(full(5, vec![spu(1, vec![])], vec![])).unwrap();
        let delta = MetadataWatchUpdate {
            epoch: UpdateEpoch(6),
            spus: Changes::Delta {
                base_epoch: UpdateEpoch(5),
                changes: vec![Change::Upsert(spu(2, vec![])), Change::Remove(SpuId(1))],
            },
            topics: Changes::Delta {
                base_epoch: UpdateEpoch(5),
                changes: vec![Change::Upsert(topic("t", &[(2, 0)]))],
            },
        };
        let next = base.apply(delta.clone()).unwrap();
        assert_eq!(next.spus.keys().copied().collect::<Vec<_>>(), [SpuId(2)]);
        assert_eq!(next.partition_count("t"), Some(1));
        // The same delta again: its base is no longer current.
        assert_eq!(
            next.apply(delta),
            Err(Gap { current: Some(UpdateEpoch(6)), update: UpdateEpoch(6) })
        );
        // A delta before any full snapshot is a gap too.
        let orphan = MetadataWatchUpdate {
            epoch: UpdateEpoch(1),
            spus: Changes::Delta { base_epoch: UpdateEpoch(0), changes: vec![] },
            topics: Changes::Full(vec![]),
        };
        assert!(MetadataSnapshot::default().apply(orphan).is_err());
    }

    #[test]
    fn removed_topic_and_leaderless_partition() {
        let mut leaderless = topic("t", &[(1, 0)]);
        leaderless.partitions[0].error_code = ErrorCode::LeaderNotAvailable;
        let base = MetadataSnapshot::default()
            .apply(full(1, vec![spu(1, vec![])], vec![leaderless, topic("gone", &[(1, 0)])]))
            .unwrap();
        assert_eq!(base.route("t", 0), Err(RouteError::NoLeader(ErrorCode::LeaderNotAvailable)));
        let delta = MetadataWatchUpdate {
            epoch: UpdateEpoch(2),
            spus: Changes::Delta { base_epoch: UpdateEpoch(1), changes: vec![] },
            topics: Changes::Delta {
                base_epoch: UpdateEpoch(1),
                changes: vec![Change::Remove(TopicName::new("gone").unwrap())],
            },
        };
        let next = base.apply(delta).unwrap();
        assert!(next.topic("gone").is_none());
        // A leader whose SPU is unknown has no route.
        let orphan = MetadataSnapshot::default()
            .apply(full(1, vec![], vec![topic("t", &[(9, 0)])]))
            .unwrap();
        assert!(matches!(orphan.route("t", 0), Err(RouteError::NoLeader(_))));
    }

    #[test]
    fn refresh_never_rolls_back_a_newer_view() {
        let cache = MetadataCache::new();
        cache.store(MetadataSnapshot { epoch: Some(UpdateEpoch(9)), ..Default::default() });
        cache.store_if_not_older(MetadataSnapshot {
            epoch: Some(UpdateEpoch(8)),
            ..Default::default()
        });
        assert_eq!(cache.snapshot().epoch, Some(UpdateEpoch(9)));
        let response = MetadataResponse {
            epoch: UpdateEpoch(10),
            spus: vec![spu(1, vec![])],
            topics: vec![TopicMetadata {
                name: TopicName::new("nope").unwrap(),
                error_code: ErrorCode::UnknownTopicOrPartition,
                partitions: vec![],
            }],
        };
        cache.store_if_not_older(MetadataSnapshot::from_response(response));
        let snapshot = cache.snapshot();
        assert_eq!(snapshot.epoch, Some(UpdateEpoch(10)));
        assert!(snapshot.topics.is_empty());
        assert_eq!(cache.wait_for(Duration::from_millis(1), |view| view.epoch), snapshot.epoch);
        assert_eq!(cache.wait_for(Duration::from_millis(1), |_| None::<()>), None);
    }
}
