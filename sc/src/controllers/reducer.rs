//! The pure reducers: `(snapshot, now) -> actions`, no I/O, no clock, no randomness.
//!
//! Reducers are level-triggered: they look at the whole [`Snapshot`] and emit the writes that
//! move it towards the specs, and nothing when it is already there (so a pass over an
//! up-to-date snapshot is empty and the controller loop converges). Each action names the version
//! it was computed from; the action step writes with put-if-version, so a stale action fails
//! with a conflict and is recomputed on the next pass.
//!
//! Topic lifecycle (why a restart never moves a partition):
//! 1. A topic without a replica map gets one: [`assign_replicas`] with the load of every other
//!    topic's map, written into the topic status (resolution `pending`). Failures (no SPUs,
//!    replication factor above the SPU count) become status `insufficient_resources` with the
//!    reason and are retried on every pass, so the topic resolves when SPUs appear.
//! 2. Each entry of the map without a partition object is created, with exactly the map's
//!    replicas. The map is written once and never recomputed, so a crash between steps only
//!    delays the partitions; it cannot place them elsewhere.
//! 3. Once every partition exists the topic is `provisioned`.
//!
//! A partition is created with every replica in sync (partition epoch 1); from then on its
//! leadership and in-sync set follow the rules of [`super::partitions`].

use sluice_proto::ids::{CoreId, LeaderEpoch, PartitionEpoch, PartitionId, SpuId, TimestampMs};
use sluice_proto::object::{
    Endpoint, PartitionAssignment, PartitionKey, PartitionReplicas as TopicPartitionReplicas,
    PartitionSpec, PartitionStatus, ReplicaConfig, ReplicaPlacement, ReplicaSpec, SpuGroupName,
    SpuGroupResolution, SpuGroupStatus, SpuResolution, SpuSpec, SpuStatus, SpuType, TopicName,
    TopicResolution, TopicSpec, TopicStatus,
};

use std::collections::BTreeSet;

pub use super::partitions::{
    reduce_partitions, reduce_partitions_holding, PartitionEvent, PreferredLeaders,
};
use crate::assignment::{
    assign_replicas, AssignmentError, AssignmentRequest, PartitionReplicas, ReplicaLoad,
    ReplicaSlot, SpuResources,
};
use crate::cache::Snapshot;
use crate::objects::{PartitionObject, SpuGroupObject, SpuObject, TopicObject};
use crate::store::Version;

/// A store write decided by a reducer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Replace a topic (its status changed) if still at `version`.
    UpdateTopic {
        /// The topic.
        name: TopicName,
        /// The version the change was computed from.
        version: Version,
        /// The new object.
        object: TopicObject,
    },
    /// Create a partition (must not exist).
    CreatePartition {
        /// The partition.
        key: PartitionKey,
        /// The object.
        object: PartitionObject,
    },
    /// Replace a partition's object if still at `version`.
    UpdatePartition {
        /// The partition.
        key: PartitionKey,
        /// The version the change was computed from.
        version: Version,
        /// The new object.
        object: PartitionObject,
        /// What changed in its leadership or in-sync set (logged once written).
        events: Vec<PartitionEvent>,
    },
    /// Delete a partition whose topic is gone.
    DeletePartition {
        /// The partition.
        key: PartitionKey,
        /// Its version.
        version: Version,
    },
    /// Create an SPU (a managed SPU of a group).
    CreateSpu {
        /// The object.
        object: SpuObject,
    },
    /// Replace an SPU's object if still at `version`.
    UpdateSpu {
        /// The SPU.
        id: SpuId,
        /// The version the change was computed from.
        version: Version,
        /// The new object.
        object: SpuObject,
    },
    /// Delete a managed SPU whose group is gone.
    DeleteSpu {
        /// The SPU.
        id: SpuId,
        /// Its version.
        version: Version,
    },
    /// Replace an SPU group (its status changed) if still at `version`.
    UpdateSpuGroup {
        /// The group.
        name: SpuGroupName,
        /// The version the change was computed from.
        version: Version,
        /// The new object.
        object: SpuGroupObject,
    },
}

/// What the reducers need besides the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReduceContext {
    /// The current time.
    pub now: TimestampMs,
    /// When this SC's controller started (its term began).
    pub started: TimestampMs,
    /// An online SPU whose last heartbeat is older than this is marked offline.
    pub heartbeat_timeout_ms: i64,
    /// Whether this pass moves leadership back to preferred replicas (the controller allows it
    /// once per leader rebalance interval).
    pub preferred_leaders: PreferredLeaders,
}

/// Every reducer, in dependency order (groups create SPUs, SPUs are needed by topics).
pub fn reduce(snapshot: &Snapshot, context: ReduceContext) -> Vec<Action> {
    reduce_holding(snapshot, context, &BTreeSet::new())
}

/// [`reduce`] where leadership is not restored to preferred replicas on the `held` SPUs
/// ([`super::holds`]).
pub fn reduce_holding(
    snapshot: &Snapshot,
    context: ReduceContext,
    held: &BTreeSet<SpuId>,
) -> Vec<Action> {
    let mut actions = reduce_spu_groups(snapshot);
    actions.extend(reduce_spus(snapshot, context));
    actions.extend(reduce_topics(snapshot));
    actions.extend(reduce_partitions_holding(snapshot, context.preferred_leaders, held));
    actions
}

/// The assignment's view of the cluster: every registered SPU; an SPU that has not reported
/// its cores yet counts as one core (core 0 always exists).
pub fn spu_resources(snapshot: &Snapshot) -> Vec<SpuResources> {
    snapshot
        .spus
        .values()
        .map(|spu| SpuResources {
            id: spu.value.spec.id,
            rack: spu.value.spec.rack.clone(),
            cores: spu.value.status.cores.max(1),
        })
        .collect()
}

fn to_assignment(replicas: &[ReplicaPlacement]) -> PartitionReplicas {
    PartitionReplicas {
        replicas: replicas
            .iter()
            .map(|placement| ReplicaSlot { spu: placement.spu, core: placement.core })
            .collect(),
    }
}

fn to_placements(replicas: &PartitionReplicas) -> Vec<ReplicaPlacement> {
    replicas
        .replicas
        .iter()
        .map(|slot| ReplicaPlacement { spu: slot.spu, core: slot.core })
        .collect()
}

/// The assignment request for a topic spec.
pub fn assignment_request(spec: &TopicSpec) -> AssignmentRequest {
    match &spec.replicas {
        ReplicaSpec::Computed { partitions, replication_factor, .. } => {
            AssignmentRequest::Computed {
                partitions: *partitions,
                replication_factor: *replication_factor,
            }
        }
        ReplicaSpec::Assigned(partitions) => AssignmentRequest::Explicit(
            partitions
                .iter()
                .map(|PartitionAssignment { replicas }| to_assignment(replicas))
                .collect(),
        ),
    }
}

/// Topics: assign replica maps, create missing partitions, resolve status.
pub fn reduce_topics(snapshot: &Snapshot) -> Vec<Action> {
    let spus = spu_resources(snapshot);
    let mut load = ReplicaLoad::new();
    for topic in snapshot.topics.values() {
        for partition in &topic.value.status.replica_map {
            load.add_partition(&to_assignment(&partition.replicas));
        }
    }
    let mut actions = Vec::new();
    for (name, topic) in &snapshot.topics {
        let object = &topic.value;
        let status = if object.status.replica_map.is_empty() {
            assign_topic(&spus, &mut load, &object.spec)
        } else if let Some(grown) = grow_topic(&spus, &mut load, object) {
            grown
        } else {
            actions.extend(missing_partitions(snapshot, name, object));
            let complete = object.status.replica_map.iter().all(|entry| {
                snapshot.partitions.contains_key(&PartitionKey::new(name.clone(), entry.partition))
            });
            let resolution =
                if complete { TopicResolution::Provisioned } else { TopicResolution::Pending };
            let replica_map = moved_replica_map(snapshot, name, &object.status.replica_map);
            TopicStatus { resolution, reason: None, replica_map }
        };
        if status != object.status {
            let object = TopicObject { spec: object.spec.clone(), status };
            actions.push(Action::UpdateTopic {
                name: name.clone(),
                version: topic.version,
                object,
            });
        }
    }
    actions
}

fn assign_topic(spus: &[SpuResources], load: &mut ReplicaLoad, spec: &TopicSpec) -> TopicStatus {
    match assign_replicas(spus, load, &assignment_request(spec)) {
        Ok(partitions) => {
            let mut replica_map = Vec::with_capacity(partitions.len());
            for (index, partition) in partitions.iter().enumerate() {
                load.add_partition(partition);
                replica_map.push(TopicPartitionReplicas {
                    partition: PartitionId(u32::try_from(index).unwrap_or(u32::MAX)),
                    replicas: to_placements(partition),
                });
            }
            TopicStatus { resolution: TopicResolution::Pending, reason: None, replica_map }
        }
        Err(error) => {
            let resolution = match error {
                AssignmentError::NoSpus
                | AssignmentError::SpuWithoutCores { .. }
                | AssignmentError::ReplicationFactorTooLarge { .. } => {
                    TopicResolution::InsufficientResources
                }
                _ => TopicResolution::InvalidConfig,
            };
            TopicStatus { resolution, reason: Some(error.to_string()), replica_map: Vec::new() }
        }
    }
}

/// A topic whose spec asks for more partitions than its replica map holds (`topic alter
/// --partitions`): the new partitions are assigned like a new topic's, given the load of every
/// partition, and appended to the map (existing entries never change). `None` when the map is
/// complete. An assignment failure leaves the map as it is and names the reason.
fn grow_topic(
    spus: &[SpuResources],
    load: &mut ReplicaLoad,
    topic: &TopicObject,
) -> Option<TopicStatus> {
    let ReplicaSpec::Computed { partitions, replication_factor, .. } = topic.spec.replicas else {
        return None;
    };
    let current = u32::try_from(topic.status.replica_map.len()).unwrap_or(u32::MAX);
    if partitions <= current {
        return None;
    }
    let request =
        AssignmentRequest::Computed { partitions: partitions - current, replication_factor };
    let mut replica_map = topic.status.replica_map.clone();
    match assign_replicas(spus, load, &request) {
        Ok(added) => {
            for (index, partition) in added.iter().enumerate() {
                load.add_partition(partition);
                let id = current.saturating_add(u32::try_from(index).unwrap_or(u32::MAX));
                replica_map.push(TopicPartitionReplicas {
                    partition: PartitionId(id),
                    replicas: to_placements(partition),
                });
            }
            Some(TopicStatus { resolution: TopicResolution::Pending, reason: None, replica_map })
        }
        Err(error) => {
            let reason = Some(format!("cannot add partitions: {error}"));
            let status = TopicStatus { resolution: topic.status.resolution, reason, replica_map };
            (status != topic.status).then_some(status)
        }
    }
}

/// The replica map with the replicas of partitions whose move completed (their spec is the
/// truth once no move is in progress), so the load of later assignments counts them where
/// they are.
fn moved_replica_map(
    snapshot: &Snapshot,
    name: &TopicName,
    replica_map: &[TopicPartitionReplicas],
) -> Vec<TopicPartitionReplicas> {
    replica_map
        .iter()
        .map(|entry| {
            let key = PartitionKey::new(name.clone(), entry.partition);
            match snapshot.partitions.get(&key) {
                Some(partition) if partition.value.spec.reassignment.is_none() => {
                    TopicPartitionReplicas {
                        partition: entry.partition,
                        replicas: partition.value.spec.replicas.clone(),
                    }
                }
                _ => entry.clone(),
            }
        })
        .collect()
}

fn missing_partitions(snapshot: &Snapshot, name: &TopicName, topic: &TopicObject) -> Vec<Action> {
    let mut actions = Vec::new();
    for entry in &topic.status.replica_map {
        let key = PartitionKey::new(name.clone(), entry.partition);
        if snapshot.partitions.contains_key(&key) {
            continue;
        }
        let Some(leader) = entry.replicas.first() else { continue };
        let spec = PartitionSpec {
            replicas: entry.replicas.clone(),
            leader: leader.spu,
            leader_epoch: LeaderEpoch(0),
            config: ReplicaConfig::from(&topic.spec),
            reassignment: None,
        };
        // Every replica starts in sync: there is nothing to lag behind yet.
        let status = PartitionStatus {
            in_sync_replicas: entry.replicas.iter().map(|replica| replica.spu).collect(),
            partition_epoch: PartitionEpoch(1),
            ..PartitionStatus::default()
        };
        let object = PartitionObject { spec, status };
        actions.push(Action::CreatePartition { key, object });
    }
    actions
}

/// SPUs: an online SPU silent for longer than the heartbeat timeout goes offline. Silence counts
/// from the controller's start at the earliest: after a restart or a takeover, SPUs get one
/// heartbeat timeout to reconnect before their leaderships move.
pub fn reduce_spus(snapshot: &Snapshot, context: ReduceContext) -> Vec<Action> {
    let mut actions = Vec::new();
    for (id, spu) in &snapshot.spus {
        let status = &spu.value.status;
        let last = status.last_heartbeat.map_or(i64::MIN, TimestampMs::get);
        let last = last.max(context.started.get());
        let silent_ms = context.now.get().saturating_sub(last);
        if status.resolution == SpuResolution::Online && silent_ms > context.heartbeat_timeout_ms {
            let mut object = spu.value.clone();
            object.status.resolution = SpuResolution::Offline;
            actions.push(Action::UpdateSpu { id: *id, version: spu.version, object });
        }
    }
    actions
}

/// Which group owns a managed SPU id (the first group by name whose range holds it).
fn owning_group(snapshot: &Snapshot, id: SpuId) -> Option<&SpuGroupName> {
    snapshot
        .spu_groups
        .iter()
        .find(|(_, group)| group.value.spec.spu_ids().any(|member| member == id))
        .map(|(name, _)| name)
}

/// SPU groups: generate managed SPUs `first_id..first_id + replicas`, delete managed SPUs of
/// no group, resolve the group's status.
pub fn reduce_spu_groups(snapshot: &Snapshot) -> Vec<Action> {
    let mut actions = Vec::new();
    for (name, group) in &snapshot.spu_groups {
        let spec = &group.value.spec;
        let mut conflicts = Vec::new();
        for id in spec.spu_ids() {
            match snapshot.spus.get(&id) {
                None if owning_group(snapshot, id) == Some(name) => {
                    actions.push(Action::CreateSpu { object: managed_spu(id, spec.rack.clone()) });
                }
                None => conflicts.push(id),
                Some(spu) if spu.value.spec.spu_type == SpuType::Custom => conflicts.push(id),
                Some(_) if owning_group(snapshot, id) != Some(name) => conflicts.push(id),
                Some(_) => {}
            }
        }
        let status = if conflicts.is_empty() {
            SpuGroupStatus {
                resolution: SpuGroupResolution::Reserved,
                reason: None,
                resolved_spus: spec.spu_ids().collect(),
            }
        } else {
            let ids: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
            SpuGroupStatus {
                resolution: SpuGroupResolution::Invalid,
                reason: Some(format!("SPU ids already taken: {}", ids.join(", "))),
                resolved_spus: Vec::new(),
            }
        };
        if status != group.value.status {
            let object = SpuGroupObject { spec: spec.clone(), status };
            actions.push(Action::UpdateSpuGroup {
                name: name.clone(),
                version: group.version,
                object,
            });
        }
    }
    for (id, spu) in &snapshot.spus {
        if spu.value.spec.spu_type == SpuType::Managed && owning_group(snapshot, *id).is_none() {
            actions.push(Action::DeleteSpu { id: *id, version: spu.version });
        }
    }
    actions
}

/// A managed SPU as generated from a group; endpoints are filled in when it connects.
pub fn managed_spu(id: SpuId, rack: Option<String>) -> SpuObject {
    SpuObject {
        spec: SpuSpec {
            id,
            spu_type: SpuType::Managed,
            rack,
            public_endpoint: Endpoint::default(),
            private_endpoint: Endpoint::default(),
            encryption: Default::default(),
        },
        status: SpuStatus::default(),
    }
}

/// The core of a placement (for tests and logs).
pub fn placement(spu: i32, core: u16) -> ReplicaPlacement {
    ReplicaPlacement { spu: SpuId(spu), core: CoreId(core) }
}

#[cfg(test)]
#[path = "reducer_tests.rs"]
mod tests;
