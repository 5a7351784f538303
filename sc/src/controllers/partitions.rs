//! The partition rules, pure: leadership and in-sync sets from the SPUs' liveness.
//!
//! The SC is the only authority on a partition's leader, leader epoch and in-sync set (kept in
//! the status with its version, the partition epoch). One pass of [`next_state`] over a
//! partition applies, in order:
//!
//! 1. **An in-sync set without the leader** gets it: an empty set (a partition stored by an
//!    older SC) becomes `[leader]`. An empty set is never read as "every replica".
//! 2. **Leader online**: the partition is online; every in-sync follower whose SPU is not online
//!    leaves the set (at once, not after a lag limit: its SPU's connection closed or its
//!    heartbeats stopped). Then, when the pass may restore preferred leaders, leadership moves
//!    to the preferred replica (the first of the replicas) if it is online, in sync and not the
//!    leader.
//! 3. **Leader offline or gone**: the online in-sync replica with the highest durable end leads
//!    (replica order breaks ties, preferred first); the in-sync set loses the old leader, then
//!    its offline followers. With none, a topic allowing unclean election elects the online
//!    replica with the highest end and the set becomes just it (acknowledged records may be
//!    lost); otherwise the partition is offline with leader and set unchanged, so the old
//!    leader, or an in-sync follower that returns first, leads again.
//! 4. **Leader never connected** (SPU `init`): nothing changes; it has not failed.
//! 5. **A move of the replicas** in progress takes its next step ([`super::reassign::step`])
//!    in a pass where the rules above change nothing.
//!
//! Apart from the passes, [`leader_restarted`] applies when a leader's SPU registers a new
//! session: it keeps leading, in the next leader epoch. A restart may have cost its log an
//! unsynced tail that followers already copied; in the same epoch it would append different
//! records at the same offsets, which followers (who find divergence by epoch) cannot detect.
//!
//! ## Invariants (asserted on every decision)
//!
//! - The leader is one of the replicas, and it is in the in-sync set (also while the partition
//!   is offline: the last leader stays in it); the set is never empty, holds only replicas,
//!   each once.
//! - The leader epoch only grows, by one at each change of leader (or restart of the leader's
//!   SPU); the partition epoch only grows, by one at each stored change of leader, leader
//!   epoch or in-sync set.
//! - A replica outside the in-sync set is elected only when the topic allows unclean election.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use sluice_proto::ids::{LeaderEpoch, Offset, SpuId};
use sluice_proto::object::{PartitionResolution, PartitionStatus, SpuResolution};

use super::reducer::Action;
use crate::cache::Snapshot;
use crate::objects::PartitionObject;

/// Whether a pass moves leadership back to preferred replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreferredLeaders {
    /// Move leadership to each eligible preferred replica.
    Restore,
    /// Leave leadership where it is (unless an election is needed).
    Leave,
}

/// What changed in a partition, for the log line written with the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionEvent {
    /// The leader was added to an in-sync set without it (an empty set, stored by an older SC,
    /// becomes the leader alone).
    LeaderAddedToInSync {
        /// The leader.
        leader: SpuId,
    },
    /// Followers whose SPUs are not online left the in-sync set.
    FollowersLeft {
        /// The followers removed.
        removed: Vec<SpuId>,
    },
    /// An in-sync replica replaced a leader whose SPU is offline.
    Elected(LeaderChange),
    /// No in-sync replica was online; the topic allows unclean election, so a replica outside
    /// the in-sync set now leads (acknowledged records may be lost).
    UncleanlyElected(LeaderChange),
    /// The leader's SPU is offline and no replica may replace it.
    Offline {
        /// The leader, which leads again when it returns.
        leader: SpuId,
    },
    /// Leadership moved back to the preferred replica.
    PreferredRestored(LeaderChange),
    /// A step of a move of the partition's replicas ([`super::reassign`]).
    Reassignment(super::reassign::ReassignEvent),
    /// Leadership moved off an SPU on an operator's request (another in-sync replica leads).
    MovedOff(LeaderChange),
}

/// A change of leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// The leader before.
    pub from: SpuId,
    /// The leader after.
    pub to: SpuId,
    /// The new leader epoch.
    pub leader_epoch: LeaderEpoch,
}

/// Whether leadership can move back to a partition's preferred replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preferred {
    /// The preferred replica leads already.
    Leads,
    /// It is online and in sync, and the current leader is online: it can take over.
    Eligible,
    /// It is offline or out of sync (or the current leader is not online): not now.
    NotEligible,
}

/// Partitions: delete those whose topic is gone; apply [`next_state`] to the others.
pub fn reduce_partitions(snapshot: &Snapshot, preferred: PreferredLeaders) -> Vec<Action> {
    reduce_partitions_holding(snapshot, preferred, &BTreeSet::new())
}

/// [`reduce_partitions`] where leadership is not restored to preferred replicas on `held`
/// SPUs (see [`super::holds`]).
pub fn reduce_partitions_holding(
    snapshot: &Snapshot,
    preferred: PreferredLeaders,
    held: &BTreeSet<SpuId>,
) -> Vec<Action> {
    let resolution = |spu: SpuId| snapshot.spus.get(&spu).map(|spu| spu.value.status.resolution);
    let mut actions = Vec::new();
    for (key, partition) in &snapshot.partitions {
        if !snapshot.topics.contains_key(&key.topic) {
            actions.push(Action::DeletePartition { key: key.clone(), version: partition.version });
            continue;
        }
        let (mut object, mut events) =
            next_state_holding(&partition.value, &resolution, preferred, held);
        // A move takes its next step only in a pass where the liveness rules change nothing.
        if object == partition.value {
            if let Some((moved, event)) = super::reassign::step(&object, &resolution) {
                object = moved;
                events.push(PartitionEvent::Reassignment(event));
            }
        }
        if object != partition.value {
            actions.push(Action::UpdatePartition {
                key: key.clone(),
                version: partition.version,
                object,
                events,
            });
        }
    }
    actions
}

/// One partition's next state given each SPU's resolution (`None`: no such SPU), and what
/// changed. Returns the partition unchanged when nothing is to be done.
pub fn next_state(
    partition: &PartitionObject,
    resolution: &dyn Fn(SpuId) -> Option<SpuResolution>,
    preferred: PreferredLeaders,
) -> (PartitionObject, Vec<PartitionEvent>) {
    next_state_holding(partition, resolution, preferred, &BTreeSet::new())
}

/// [`next_state`] where a preferred replica on a `held` SPU does not get leadership back.
pub fn next_state_holding(
    partition: &PartitionObject,
    resolution: &dyn Fn(SpuId) -> Option<SpuResolution>,
    preferred: PreferredLeaders,
    held: &BTreeSet<SpuId>,
) -> (PartitionObject, Vec<PartitionEvent>) {
    let online = |spu: SpuId| resolution(spu) == Some(SpuResolution::Online);
    let mut object = partition.clone();
    let mut events = Vec::new();
    if !object.status.in_sync_replicas.contains(&object.spec.leader) {
        object.status.in_sync_replicas.insert(0, object.spec.leader);
        events.push(PartitionEvent::LeaderAddedToInSync { leader: object.spec.leader });
    }
    match resolution(object.spec.leader) {
        Some(SpuResolution::Online) => {
            object.status.resolution = PartitionResolution::Online;
            remove_offline_followers(&mut object, &online, &mut events);
            let preferred_held =
                object.spec.replicas.first().is_some_and(|replica| held.contains(&replica.spu));
            if preferred == PreferredLeaders::Restore
                && !preferred_held
                && preferred_leader(&object, &online) == Preferred::Eligible
            {
                events.push(PartitionEvent::PreferredRestored(move_to_preferred(&mut object)));
            }
        }
        Some(SpuResolution::Offline) | None => replace_leader(&mut object, &online, &mut events),
        Some(SpuResolution::Init) => {}
    }
    finish(partition, &mut object);
    (object, events)
}

/// Bumps the partition epoch once if leader or in-sync set changed, and checks the invariants.
fn finish(before: &PartitionObject, after: &mut PartitionObject) {
    let leader_changed = after.spec.leader != before.spec.leader;
    let changed = leader_changed || after.status.in_sync_replicas != before.status.in_sync_replicas;
    if changed {
        after.status.partition_epoch = before.status.partition_epoch.next();
    }
    if leader_changed {
        assert_eq!(after.spec.leader_epoch, before.spec.leader_epoch.next(), "one bump per leader");
        assert!(after.spec.replicas.iter().any(|replica| replica.spu == after.spec.leader));
    } else {
        assert_eq!(after.spec.leader_epoch, before.spec.leader_epoch);
    }
    let in_sync = &after.status.in_sync_replicas;
    assert!(!in_sync.is_empty(), "an in-sync set is never empty");
    assert!(in_sync.contains(&after.spec.leader), "the leader is in sync: {after:?}");
}

/// Removes every in-sync replica other than the leader whose SPU is not online.
fn remove_offline_followers(
    object: &mut PartitionObject,
    online: &dyn Fn(SpuId) -> bool,
    events: &mut Vec<PartitionEvent>,
) {
    let leader = object.spec.leader;
    let (kept, removed): (Vec<SpuId>, Vec<SpuId>) =
        object.status.in_sync_replicas.iter().partition(|spu| **spu == leader || online(**spu));
    if !removed.is_empty() {
        object.status.in_sync_replicas = kept;
        events.push(PartitionEvent::FollowersLeft { removed });
    }
}

/// The leader's SPU is offline: elects an online in-sync replica, else (if allowed) any online
/// replica, else marks the partition offline.
fn replace_leader(
    object: &mut PartitionObject,
    online: &dyn Fn(SpuId) -> bool,
    events: &mut Vec<PartitionEvent>,
) {
    let old_leader = object.spec.leader;
    let in_sync = object.status.in_sync_replicas.clone();
    let eligible = |spu: SpuId| spu != old_leader && online(spu);
    if let Some(new_leader) = best_replica(object, |spu| eligible(spu) && in_sync.contains(&spu)) {
        let change = lead(object, new_leader);
        object.status.in_sync_replicas.retain(|spu| *spu != old_leader);
        events.push(PartitionEvent::Elected(change));
        remove_offline_followers(object, online, events);
        return;
    }
    if object.spec.config.unclean_election {
        if let Some(new_leader) = best_replica(object, eligible) {
            let change = lead(object, new_leader);
            object.status.in_sync_replicas = vec![new_leader];
            events.push(PartitionEvent::UncleanlyElected(change));
            return;
        }
    }
    if object.status.resolution != PartitionResolution::Offline {
        object.status.resolution = PartitionResolution::Offline;
        events.push(PartitionEvent::Offline { leader: old_leader });
    }
}

/// Makes `new_leader` lead in the next leader epoch; the partition is online.
fn lead(object: &mut PartitionObject, new_leader: SpuId) -> LeaderChange {
    let change = LeaderChange {
        from: object.spec.leader,
        to: new_leader,
        leader_epoch: object.spec.leader_epoch.next(),
    };
    object.spec.leader = new_leader;
    object.spec.leader_epoch = change.leader_epoch;
    object.status.resolution = PartitionResolution::Online;
    change
}

/// The replica passing `eligible` with the highest reported end; replica order breaks ties.
fn best_replica(object: &PartitionObject, eligible: impl Fn(SpuId) -> bool) -> Option<SpuId> {
    object
        .spec
        .replicas
        .iter()
        .enumerate()
        .filter(|(_, replica)| eligible(replica.spu))
        .max_by_key(|(index, replica)| (reported_end(&object.status, replica.spu), Reverse(*index)))
        .map(|(_, replica)| replica.spu)
}

/// The highest end reported for `spu` (by the leader, for itself or a follower): the durable
/// end, or the log end where no durable end was reported (an SPU of an older version).
fn reported_end(status: &PartitionStatus, spu: SpuId) -> Option<Offset> {
    std::iter::once(&status.leader)
        .chain(&status.replicas)
        .filter(|report| report.spu == spu)
        .map(|report| {
            if report.durable_end_offset > Offset(0) {
                report.durable_end_offset
            } else {
                report.log_end_offset
            }
        })
        .max()
}

/// The leader's SPU registered a new session (it restarted, or reconnected): the partition is
/// led by the same SPU in the next leader epoch (and partition epoch), so that the records it
/// appends after a crash that cut its unsynced tail never carry the epoch of records followers
/// may have copied from that tail. `None` when `spu` does not lead the partition.
pub fn leader_restarted(partition: &PartitionObject, spu: SpuId) -> Option<PartitionObject> {
    if partition.spec.leader != spu {
        return None;
    }
    let mut restarted = partition.clone();
    restarted.spec.leader_epoch = partition.spec.leader_epoch.next();
    restarted.status.partition_epoch = partition.status.partition_epoch.next();
    if !restarted.status.in_sync_replicas.contains(&spu) {
        restarted.status.in_sync_replicas.insert(0, spu);
    }
    assert!(restarted.spec.leader_epoch > partition.spec.leader_epoch);
    assert!(restarted.status.partition_epoch > partition.status.partition_epoch);
    Some(restarted)
}

/// Whether leadership can move to the preferred replica now.
pub fn preferred_leader(object: &PartitionObject, online: &dyn Fn(SpuId) -> bool) -> Preferred {
    let Some(preferred) = object.spec.replicas.first().map(|replica| replica.spu) else {
        return Preferred::NotEligible;
    };
    if preferred == object.spec.leader {
        return Preferred::Leads;
    }
    let in_sync = object.status.in_sync_replicas.contains(&preferred);
    if in_sync && online(preferred) && online(object.spec.leader) {
        Preferred::Eligible
    } else {
        Preferred::NotEligible
    }
}

/// Moves leadership to the preferred replica (in the next leader epoch and partition epoch;
/// the in-sync set is unchanged). Only for a partition [`preferred_leader`] finds eligible.
pub fn move_to_preferred(object: &mut PartitionObject) -> LeaderChange {
    let preferred = object.spec.replicas.first().map(|replica| replica.spu);
    let preferred = preferred
        .filter(|spu| object.status.in_sync_replicas.contains(spu))
        .expect("only an in-sync preferred replica takes over");
    lead(object, preferred)
}

/// [`move_to_preferred`] for a caller outside a pass: bumps the partition epoch too.
pub fn restore_preferred(object: &PartitionObject) -> (PartitionObject, LeaderChange) {
    let mut moved = object.clone();
    let change = move_to_preferred(&mut moved);
    finish(object, &mut moved);
    (moved, change)
}

/// Moves leadership off `spu` (which leads the partition and is online) to the online in-sync
/// replica with the highest reported end (replica order breaks ties), in the next leader epoch
/// and partition epoch; the in-sync set is unchanged (the old leader follows). `None` when
/// `spu` does not lead or no other replica is online and in sync.
pub fn move_leader_off(
    object: &PartitionObject,
    spu: SpuId,
    online: &dyn Fn(SpuId) -> bool,
) -> Option<(PartitionObject, LeaderChange)> {
    if object.spec.leader != spu {
        return None;
    }
    let in_sync = &object.status.in_sync_replicas;
    let new_leader = best_replica(object, |replica| {
        replica != spu && online(replica) && in_sync.contains(&replica)
    })?;
    let mut moved = object.clone();
    let change = lead(&mut moved, new_leader);
    finish(object, &mut moved);
    Some((moved, change))
}

/// Writes the log line of a stored change.
pub fn log_event(partition: &sluice_proto::object::PartitionKey, event: &PartitionEvent) {
    match event {
        PartitionEvent::LeaderAddedToInSync { leader } => {
            tracing::info!(%partition, %leader, "leader added to the in-sync set");
        }
        PartitionEvent::FollowersLeft { removed } => {
            tracing::info!(%partition, ?removed, "followers on offline SPUs left the in-sync set");
        }
        PartitionEvent::Elected(change) => tracing::info!(
            %partition, from = %change.from, to = %change.to, leader_epoch = %change.leader_epoch,
            "new leader elected from the in-sync set"
        ),
        PartitionEvent::MovedOff(change) => tracing::info!(
            %partition, from = %change.from, to = %change.to, leader_epoch = %change.leader_epoch,
            "leadership moved off an SPU on request"
        ),
        PartitionEvent::UncleanlyElected(change) => tracing::warn!(
            %partition, from = %change.from, to = %change.to, leader_epoch = %change.leader_epoch,
            "unclean election: no in-sync replica is online, a replica outside the in-sync set \
             leads; acknowledged records may be lost"
        ),
        PartitionEvent::Offline { leader } => tracing::warn!(
            %partition, %leader,
            "partition offline: its leader's SPU is offline and no in-sync replica is online"
        ),
        PartitionEvent::PreferredRestored(change) => tracing::info!(
            %partition, from = %change.from, to = %change.to, leader_epoch = %change.leader_epoch,
            "leadership moved back to the preferred replica"
        ),
        PartitionEvent::Reassignment(event) => super::reassign::log_event(partition, event),
    }
}

#[cfg(test)]
#[path = "partitions_tests.rs"]
mod tests;
