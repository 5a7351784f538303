//! Moving a partition's replicas to other SPUs, pure (Kafka's KIP-455 protocol).
//!
//! A move is kept in the partition spec ([`Reassignment`]: target, original, throttle), so it
//! is level-triggered: every controller pass, on this SC or on the next one after a restart or
//! a takeover, looks at the stored partition and takes the next step. [`begin`] and [`cancel`]
//! are what an admin request writes; [`step`] is what each pass does after the liveness rules
//! of [`super::partitions`] found nothing to change:
//!
//! 1. **Widen.** The replicas are the union: the target, then the original replicas not in it.
//!    The replicas being added are not in the in-sync set; their SPUs open them and follow the
//!    leader (their fetches limited to the throttle), and the leader proposes each one into the
//!    set once it has caught up (`AlterInSync`).
//! 2. **Wait** until every target replica is in the in-sync set.
//! 3. **Move leadership** if the leader is not in the target: to the first target replica that
//!    is online (it is in sync), in the next leader epoch and partition epoch.
//! 4. **Shrink.** The replicas become the target and the in-sync set its members (all of the
//!    target), in the next partition epoch; the move ends. SPUs no longer named drop their
//!    replicas (and, after their retention, the files).
//!
//! A pass takes one step at most and none while the partition is not online (the leader's SPU
//! offline: the election of [`super::partitions`] comes first). [`cancel`] makes the original
//! replicas the target, with the same protocol, so nothing is dropped before they are in sync.
//!
//! ## Invariants (asserted on every step)
//!
//! - The leader is one of the replicas, and in the in-sync set.
//! - A replica is dropped only when every target replica is in sync, so at least
//!   max(min-in-sync, 1) replicas of the target hold every acknowledged record (acknowledged
//!   means durable on every in-sync replica); the move completes only then.
//! - Leadership moves only to an in-sync target replica; the leader epoch grows by one then.
//! - The partition epoch grows at every change of leader or in-sync set.

use std::collections::BTreeSet;

use sluice_proto::ids::SpuId;
use sluice_proto::object::{
    PartitionResolution, PartitionSpec, Reassignment, ReplicaPlacement, SpuResolution,
};

use super::partitions::LeaderChange;
use crate::objects::PartitionObject;

/// Why a move cannot begin (or be cancelled).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReassignError {
    /// The partition is being moved already.
    #[error("the partition is being moved already (to {target:?}); wait or cancel it first")]
    InProgress {
        /// The SPUs of the move in progress.
        target: Vec<SpuId>,
    },
    /// Nothing to cancel.
    #[error("the partition is not being moved; there is nothing to cancel")]
    NotInProgress,
    /// An empty target.
    #[error("the target names no replica")]
    EmptyTarget,
    /// The same SPU twice.
    #[error("the target names SPU {spu} twice")]
    DuplicateSpu {
        /// The SPU.
        spu: SpuId,
    },
    /// Fewer target replicas than the topic's min-in-sync: acks `all` would stop.
    #[error(
        "the target has {replicas} replicas, fewer than the topic's min-in-sync \
         {min_in_sync}"
    )]
    BelowMinInSync {
        /// Target replicas.
        replicas: usize,
        /// The topic's min-in-sync.
        min_in_sync: u16,
    },
    /// An SPU that is not registered.
    #[error("SPU {spu} is not registered")]
    UnknownSpu {
        /// The SPU.
        spu: SpuId,
    },
    /// A core the SPU does not have.
    #[error("SPU {spu} has {cores} cores; core {core} does not exist")]
    CoreOutOfRange {
        /// The SPU.
        spu: SpuId,
        /// The core named.
        core: u16,
        /// The SPU's cores.
        cores: u16,
    },
    /// A replica that stays on its SPU would change cores, which a move does not do.
    #[error(
        "SPU {spu} keeps its replica on core {current}; moving a replica between the cores of \
         one SPU is not supported"
    )]
    CoreChange {
        /// The SPU.
        spu: SpuId,
        /// The core it is on.
        current: u16,
    },
}

/// What a step did, for the log line written with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReassignEvent {
    /// The replicas became the union of target and original.
    Widened {
        /// The replicas now.
        replicas: Vec<SpuId>,
    },
    /// Leadership moved into the target.
    LeaderMoved(LeaderChange),
    /// The replicas shrank to the target; the move is over.
    Completed {
        /// The replicas now.
        replicas: Vec<SpuId>,
        /// The SPUs whose replicas were dropped.
        dropped: Vec<SpuId>,
    },
}

/// Where a move stands (for progress reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// No move.
    Idle,
    /// Target replicas not in sync yet.
    CatchingUp {
        /// Those replicas.
        waiting: Vec<SpuId>,
    },
    /// Every target replica is in sync; leadership moves into the target next.
    MovingLeader,
    /// Every target replica is in sync and one of them leads; the old ones are dropped next.
    Completing,
}

fn spus(replicas: &[ReplicaPlacement]) -> Vec<SpuId> {
    replicas.iter().map(|replica| replica.spu).collect()
}

/// Starts moving `partition` to `target` (cores resolved), with the fetch throttle of the
/// replicas being added. `None`: the target is the current replica list already.
pub fn begin(
    partition: &PartitionObject,
    target: Vec<ReplicaPlacement>,
    throttle_bytes_per_second: Option<u64>,
) -> Result<Option<PartitionObject>, ReassignError> {
    if let Some(moving) = &partition.spec.reassignment {
        return Err(ReassignError::InProgress { target: spus(&moving.target) });
    }
    check_target(&partition.spec, &target)?;
    if target == partition.spec.replicas {
        return Ok(None);
    }
    let mut next = partition.clone();
    let reassignment = Reassignment {
        target,
        original: partition.spec.replicas.clone(),
        throttle_bytes_per_second,
    };
    next.spec.replicas = reassignment.union();
    next.spec.reassignment = Some(reassignment);
    check(&next);
    Ok(Some(next))
}

/// Cancels the move in progress: the original replicas become the target, and the replicas
/// added so far are dropped once the original ones are in sync (the same protocol).
pub fn cancel(partition: &PartitionObject) -> Result<PartitionObject, ReassignError> {
    let Some(moving) = &partition.spec.reassignment else {
        return Err(ReassignError::NotInProgress);
    };
    let mut next = partition.clone();
    let reassignment = Reassignment {
        target: moving.original.clone(),
        original: partition.spec.replicas.clone(),
        throttle_bytes_per_second: moving.throttle_bytes_per_second,
    };
    // The same replicas, the original ones first again (their first is preferred).
    next.spec.replicas = reassignment.union();
    next.spec.reassignment = Some(reassignment);
    check(&next);
    Ok(next)
}

/// The target's shape: non-empty, distinct SPUs, at least min-in-sync replicas, and a replica
/// that stays on its SPU keeps its core.
fn check_target(spec: &PartitionSpec, target: &[ReplicaPlacement]) -> Result<(), ReassignError> {
    if target.is_empty() {
        return Err(ReassignError::EmptyTarget);
    }
    let mut seen = BTreeSet::new();
    for replica in target {
        if !seen.insert(replica.spu) {
            return Err(ReassignError::DuplicateSpu { spu: replica.spu });
        }
        let current = spec.replicas.iter().find(|current| current.spu == replica.spu);
        if let Some(current) = current.filter(|current| current.core != replica.core) {
            return Err(ReassignError::CoreChange {
                spu: replica.spu,
                current: current.core.get(),
            });
        }
    }
    let min_in_sync = spec.config.min_in_sync_replicas.max(1);
    if target.len() < usize::from(min_in_sync) {
        return Err(ReassignError::BelowMinInSync { replicas: target.len(), min_in_sync });
    }
    Ok(())
}

/// Where the move of `partition` stands.
pub fn progress(partition: &PartitionObject) -> Progress {
    let Some(moving) = &partition.spec.reassignment else { return Progress::Idle };
    let in_sync = &partition.status.in_sync_replicas;
    let waiting: Vec<SpuId> = moving
        .target
        .iter()
        .map(|replica| replica.spu)
        .filter(|spu| !in_sync.contains(spu))
        .collect();
    if !waiting.is_empty() {
        return Progress::CatchingUp { waiting };
    }
    if moving.target.iter().any(|replica| replica.spu == partition.spec.leader) {
        Progress::Completing
    } else {
        Progress::MovingLeader
    }
}

/// The next step of the move of `partition` (see the module docs), or `None` when there is
/// none now. `resolution` gives each SPU's liveness (`None`: no such SPU).
pub fn step(
    partition: &PartitionObject,
    resolution: &dyn Fn(SpuId) -> Option<SpuResolution>,
) -> Option<(PartitionObject, ReassignEvent)> {
    let moving = partition.spec.reassignment.as_ref()?;
    let online = |spu: SpuId| resolution(spu) == Some(SpuResolution::Online);
    let mut next = partition.clone();
    let union = moving.union();
    if partition.spec.replicas != union {
        let event = ReassignEvent::Widened { replicas: spus(&union) };
        next.spec.replicas = union;
        check(&next);
        return Some((next, event));
    }
    if partition.status.resolution != PartitionResolution::Online || !online(partition.spec.leader)
    {
        return None;
    }
    match progress(partition) {
        Progress::Idle | Progress::CatchingUp { .. } => None,
        Progress::MovingLeader => {
            let new_leader =
                moving.target.iter().map(|replica| replica.spu).find(|spu| online(*spu))?;
            assert!(partition.status.in_sync_replicas.contains(&new_leader));
            let change = LeaderChange {
                from: partition.spec.leader,
                to: new_leader,
                leader_epoch: partition.spec.leader_epoch.next(),
            };
            next.spec.leader = new_leader;
            next.spec.leader_epoch = change.leader_epoch;
            next.status.partition_epoch = partition.status.partition_epoch.next();
            check(&next);
            Some((next, ReassignEvent::LeaderMoved(change)))
        }
        Progress::Completing => {
            let target = moving.target.clone();
            let in_sync: Vec<SpuId> = partition
                .status
                .in_sync_replicas
                .iter()
                .copied()
                .filter(|spu| target.iter().any(|replica| replica.spu == *spu))
                .collect();
            // Every target replica holds every acknowledged record before any other goes.
            assert_eq!(in_sync.len(), target.len(), "shrinking before the target is in sync");
            let min_in_sync = usize::from(partition.spec.config.min_in_sync_replicas.max(1));
            assert!(in_sync.len() >= min_in_sync, "shrinking below min-in-sync");
            let dropped: Vec<SpuId> = partition
                .spec
                .replicas
                .iter()
                .map(|replica| replica.spu)
                .filter(|spu| !target.iter().any(|replica| replica.spu == *spu))
                .collect();
            next.spec.replicas = target;
            next.spec.reassignment = None;
            next.status.in_sync_replicas = in_sync;
            next.status.partition_epoch = partition.status.partition_epoch.next();
            next.status.replicas.retain(|report| !dropped.contains(&report.spu));
            check(&next);
            let replicas = spus(&next.spec.replicas);
            Some((next, ReassignEvent::Completed { replicas, dropped }))
        }
    }
}

/// The invariants of a partition with or without a move.
fn check(partition: &PartitionObject) {
    let spec = &partition.spec;
    let in_sync = &partition.status.in_sync_replicas;
    assert!(spec.replicas.iter().any(|replica| replica.spu == spec.leader), "leader not a replica");
    assert!(in_sync.contains(&spec.leader), "leader not in sync: {partition:?}");
    assert!(
        in_sync.iter().all(|spu| spec.replicas.iter().any(|replica| replica.spu == *spu)),
        "an in-sync member that is not a replica: {partition:?}"
    );
    if let Some(moving) = &spec.reassignment {
        assert!(!moving.target.is_empty(), "a move without a target");
        assert_eq!(spec.replicas, moving.union(), "a moving partition's replicas are the union");
    }
}

/// Writes the log line of a stored step.
pub fn log_event(partition: &sluice_proto::object::PartitionKey, event: &ReassignEvent) {
    match event {
        ReassignEvent::Widened { replicas } => {
            tracing::info!(%partition, ?replicas, "reassignment: replicas being added follow the leader");
        }
        ReassignEvent::LeaderMoved(change) => tracing::info!(
            %partition, from = %change.from, to = %change.to, leader_epoch = %change.leader_epoch,
            "reassignment: leadership moved into the target"
        ),
        ReassignEvent::Completed { replicas, dropped } => {
            tracing::info!(%partition, ?replicas, ?dropped, "reassignment completed");
        }
    }
}

#[cfg(test)]
#[path = "reassign_tests.rs"]
mod tests;
