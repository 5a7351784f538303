//! A leader's proposals to change in-sync sets (`AlterInSync`, Kafka's AlterPartition).
//!
//! The leader relies on a shrunken in-sync set only once the SC has stored it, so a leader cut
//! off from the SC can never commit alone; and the SC stores a proposal only if it was computed
//! by the current leader, in the current leader epoch, from the current set. [`judge`] decides,
//! purely, in this order:
//!
//! 1. the proposer leads the partition (`NotLeader`), in the proposal's leader epoch
//!    (`FencedLeaderEpoch`);
//! 2. the proposal is based on the stored partition epoch (`InvalidUpdateVersion`);
//! 3. the proposed set is non-empty, contains the leader, names only replicas of the
//!    partition, each once (`InvalidRequest`);
//! 4. every member it adds has an online SPU (`IneligibleReplica`): a follower whose SPU the SC
//!    sees offline would be removed again at once.
//!
//! [`alter_in_sync`] reads each partition from the store (not the cache, which may lag),
//! judges, and writes the new set with the next partition epoch using put-if-version; when a
//! controller or another request wrote in between, it reads again and judges again. A store
//! failure is answered `ScUnavailable` without a set (the outcome is unknown: the leader keeps
//! the proposal and sends it again; a retry based on the old epoch is refused with the set
//! actually stored). Every other answer carries the partition's leader epoch and in-sync set
//! as they are after the request. The session answers once its cache shows the
//! writes, so whatever the leader does next (and any admin request after it) sees the new set.

use std::collections::BTreeSet;

use sluice_proto::api::control::{
    AlterInSyncPartition, AlterInSyncRequest, AlterInSyncResponse, AlterInSyncResult,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, SpuId};
use sluice_proto::object::InSyncSet;

use crate::cache::Snapshot;
use crate::objects::{partition_key, PartitionObject};
use crate::store::{ExpectedVersion, MetadataStore, ObjectKind, TypedStore, Version, Versioned};

/// Attempts of one proposal's read-judge-write before answering `ScUnavailable`.
const WRITE_ATTEMPTS_MAX: usize = 5;

/// What to do with one proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refused, with the reason.
    Refused(ErrorCode),
    /// The proposed set is the stored one (as a set): nothing to write.
    Unchanged,
    /// Store this set with the next partition epoch.
    Accepted(Vec<SpuId>),
}

/// Judges `proposal` by `proposer` against the stored `partition`; `online` tells whether an
/// SPU is online.
pub fn judge(
    partition: &PartitionObject,
    proposer: SpuId,
    proposal: &AlterInSyncPartition,
    online: &dyn Fn(SpuId) -> bool,
) -> Verdict {
    let (spec, status) = (&partition.spec, &partition.status);
    if spec.leader != proposer {
        return Verdict::Refused(ErrorCode::NotLeader);
    }
    if proposal.leader_epoch != spec.leader_epoch {
        return Verdict::Refused(ErrorCode::FencedLeaderEpoch);
    }
    if proposal.partition_epoch != status.partition_epoch {
        return Verdict::Refused(ErrorCode::InvalidUpdateVersion);
    }
    let proposed = &proposal.in_sync_replicas;
    let members: BTreeSet<SpuId> = proposed.iter().copied().collect();
    let is_replica = |spu: &SpuId| spec.replicas.iter().any(|replica| replica.spu == *spu);
    if members.len() != proposed.len()
        || !members.contains(&proposer)
        || !members.iter().all(is_replica)
    {
        return Verdict::Refused(ErrorCode::InvalidRequest);
    }
    let current: BTreeSet<SpuId> = status.in_sync_replicas.iter().copied().collect();
    if members.difference(&current).any(|added| !online(*added)) {
        return Verdict::Refused(ErrorCode::IneligibleReplica);
    }
    if members == current {
        return Verdict::Unchanged;
    }
    Verdict::Accepted(proposed.clone())
}

/// The answer to an `AlterInSync` request, and the newest version it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// One result per proposal.
    pub response: AlterInSyncResponse,
    /// The newest store version written (`None`: nothing stored).
    pub newest_write: Option<Version>,
}

/// Answers an `AlterInSync` request from `proposer`'s control session: judges and stores each
/// proposal, in order. SPU liveness comes from `snapshot`.
pub fn alter_in_sync(
    store: &dyn MetadataStore,
    snapshot: &Snapshot,
    proposer: SpuId,
    request: &AlterInSyncRequest,
) -> Answer {
    let online =
        |spu: SpuId| snapshot.spus.get(&spu).is_some_and(|spu| spu.value.status.is_online());
    let mut newest_write = None;
    let partitions = request
        .partitions
        .iter()
        .map(|proposal| {
            if request.spu != proposer {
                tracing::warn!(spu = %proposer, named = %request.spu, "AlterInSync names another SPU");
                return refusal(proposal, ErrorCode::InvalidRequest);
            }
            let (result, written) = alter_one(store, proposer, proposal, &online);
            newest_write = newest_write.max(written);
            result
        })
        .collect();
    Answer { response: AlterInSyncResponse { partitions }, newest_write }
}

fn refusal(proposal: &AlterInSyncPartition, error_code: ErrorCode) -> AlterInSyncResult {
    AlterInSyncResult {
        key: proposal.key.clone(),
        error_code,
        leader_epoch: LeaderEpoch::default(),
        in_sync: InSyncSet::default(),
    }
}

fn answer(
    proposal: &AlterInSyncPartition,
    error_code: ErrorCode,
    partition: &PartitionObject,
) -> AlterInSyncResult {
    AlterInSyncResult {
        key: proposal.key.clone(),
        error_code,
        leader_epoch: partition.spec.leader_epoch,
        in_sync: partition.status.in_sync(),
    }
}

/// One proposal's result, and the version written if it was stored.
fn alter_one(
    store: &dyn MetadataStore,
    proposer: SpuId,
    proposal: &AlterInSyncPartition,
    online: &dyn Fn(SpuId) -> bool,
) -> (AlterInSyncResult, Option<Version>) {
    let Ok(key) = partition_key(&proposal.key) else {
        return (refusal(proposal, ErrorCode::UnknownTopicOrPartition), None);
    };
    for _attempt in 0..WRITE_ATTEMPTS_MAX {
        let read = store.get_typed::<PartitionObject>(ObjectKind::Partition, &key);
        let Versioned { version, value: current, .. } = match read {
            Ok(Some(current)) => current,
            Ok(None) => return (refusal(proposal, ErrorCode::UnknownTopicOrPartition), None),
            Err(error) => {
                tracing::warn!(partition = %proposal.key, %error, "cannot read a partition");
                return (refusal(proposal, ErrorCode::ScUnavailable), None);
            }
        };
        let in_sync = match judge(&current, proposer, proposal, online) {
            Verdict::Refused(error_code) => return (answer(proposal, error_code, &current), None),
            Verdict::Unchanged => return (answer(proposal, ErrorCode::None, &current), None),
            Verdict::Accepted(in_sync) => in_sync,
        };
        let mut next = current.clone();
        next.status.in_sync_replicas = in_sync;
        next.status.partition_epoch = current.status.partition_epoch.next();
        assert!(next.status.in_sync_replicas.contains(&next.spec.leader));
        let expected = ExpectedVersion::Exactly(version);
        match store.put_typed(ObjectKind::Partition, &key, &next, expected, None) {
            Ok(written) => {
                tracing::info!(
                    partition = %proposal.key,
                    from = ?current.status.in_sync_replicas,
                    to = ?next.status.in_sync_replicas,
                    partition_epoch = %next.status.partition_epoch,
                    "in-sync set changed by its leader"
                );
                return (answer(proposal, ErrorCode::None, &next), Some(written));
            }
            Err(error) if error.is_conflict() => continue,
            Err(error) => {
                tracing::warn!(partition = %proposal.key, %error, "cannot store an in-sync set");
                // Without the set: the write may have landed, and an answer naming the set
                // before it would tell the leader its proposal was refused.
                return (refusal(proposal, ErrorCode::ScUnavailable), None);
            }
        }
    }
    tracing::warn!(partition = %proposal.key, "partition keeps changing; proposal not stored");
    (refusal(proposal, ErrorCode::ScUnavailable), None)
}

#[cfg(test)]
#[path = "in_sync_tests.rs"]
mod tests;
