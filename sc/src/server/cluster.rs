//! Cluster-operation handlers: rebalance plans and leadership holds.
//!
//! Error policy (mapped here, once):
//! - `PlanRebalance`: an SPU to drain that is not registered: `SpuNotFound`; a plan that
//!   cannot be made (no SPU online, every SPU drained, a partition with nowhere to go):
//!   `InvalidRequest` with the planner's reason. Nothing is written.
//! - `HoldLeadership`: an SPU that is not registered: `SpuNotFound`; too many holds:
//!   `InvalidRequest`; a store failure: `ScUnavailable` (moves already written stay).
//!   Partitions that no other in-sync replica can lead are listed, not an error.

use std::collections::BTreeSet;
use std::time::Duration;

use sluice_proto::api::cluster::{
    BalanceFigures, CoreBalanceChange, CountRange, HoldLeadershipRequest, HoldLeadershipResponse,
    PlanRebalanceRequest, PlanRebalanceResponse, RebalanceMove,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::SpuId;
use sluice_proto::object::{PartitionKey, ReplicaPlacement};

use super::ServerContext;
use crate::assignment::{
    plan_rebalance, BalanceSummary, CurrentPartition, MinMax, PartitionReplicas, RebalanceError,
    ReplicaSlot, SpuResources,
};
use crate::controllers::partitions::{self, log_event, PartitionEvent};
use crate::objects::{partition_key, PartitionObject};
use crate::store::{ExpectedVersion, ObjectKind, StoreError, TypedStore, Version};

/// Longest wait for the cache to show the leadership moves before answering.
const WRITE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at one partition's put-if-version before giving up on it.
const WRITE_ATTEMPTS: usize = 5;

fn slots(replicas: &[ReplicaPlacement]) -> PartitionReplicas {
    PartitionReplicas {
        replicas: replicas
            .iter()
            .map(|replica| ReplicaSlot { spu: replica.spu, core: replica.core })
            .collect(),
    }
}

fn placements(replicas: &PartitionReplicas) -> Vec<ReplicaPlacement> {
    replicas
        .replicas
        .iter()
        .map(|slot| ReplicaPlacement { spu: slot.spu, core: slot.core })
        .collect()
}

fn range(counts: MinMax) -> CountRange {
    CountRange { min: counts.min, max: counts.max }
}

fn figures(summary: &BalanceSummary) -> BalanceFigures {
    BalanceFigures {
        replicas_per_core: range(summary.replicas_per_core),
        replicas_per_spu: range(summary.replicas_per_spu),
        leaders_per_core: range(summary.leaders_per_core),
        leaders_per_spu: range(summary.leaders_per_spu),
    }
}

impl ServerContext {
    /// A rebalance plan over the SPUs online (and the SPUs to drain, online or not), from the
    /// partitions' current replicas. Writes nothing.
    pub fn plan_rebalance(&self, request: &PlanRebalanceRequest) -> PlanRebalanceResponse {
        let snapshot = self.cache.snapshot();
        let drain: BTreeSet<SpuId> = request.drain.iter().copied().collect();
        if let Some(spu) = drain.iter().find(|spu| !snapshot.spus.contains_key(spu)) {
            return PlanRebalanceResponse {
                error_code: ErrorCode::SpuNotFound,
                message: Some(format!("SPU {spu} is not registered")),
                ..PlanRebalanceResponse::default()
            };
        }
        let spus: Vec<SpuResources> = snapshot
            .spus
            .values()
            .filter(|spu| spu.value.status.is_online() || drain.contains(&spu.value.spec.id))
            .map(|spu| SpuResources {
                id: spu.value.spec.id,
                rack: spu.value.spec.rack.clone(),
                cores: spu.value.status.cores.max(1),
            })
            .collect();
        let current: Vec<CurrentPartition> = snapshot
            .partitions
            .iter()
            .map(|(key, partition)| CurrentPartition {
                key: key.clone(),
                replicas: slots(&partition.value.spec.replicas),
            })
            .collect();
        let plan = match plan_rebalance(&spus, &current, &drain) {
            Ok(plan) => plan,
            Err(error) => {
                let error_code = match error {
                    RebalanceError::UnknownDrainSpu { .. } => ErrorCode::SpuNotFound,
                    _ => ErrorCode::InvalidRequest,
                };
                return PlanRebalanceResponse {
                    error_code,
                    message: Some(format!("no rebalance plan: {error}")),
                    ..PlanRebalanceResponse::default()
                };
            }
        };
        let report = &plan.report;
        tracing::info!(
            partitions = plan.moves.len(),
            replica_moves = report.replica_moves,
            leader_changes = report.leader_changes,
            drain = ?drain,
            "rebalance planned"
        );
        PlanRebalanceResponse {
            error_code: ErrorCode::None,
            message: None,
            moves: plan
                .moves
                .iter()
                .map(|change| RebalanceMove {
                    key: change.key.clone(),
                    from: placements(&change.from),
                    to: placements(&change.to),
                })
                .collect(),
            cores: report
                .cores
                .iter()
                .map(|core| CoreBalanceChange {
                    spu: core.slot.spu,
                    core: core.slot.core,
                    replicas_before: core.replicas_before,
                    replicas_after: core.replicas_after,
                    leaders_before: core.leaders_before,
                    leaders_after: core.leaders_after,
                })
                .collect(),
            before: figures(&report.before),
            after: figures(&report.after),
            replica_moves: report.replica_moves,
            leader_changes: report.leader_changes,
            replica_moves_lower_bound: report.replica_moves_lower_bound,
        }
    }

    /// Holds (or with `hold_ms` 0 releases) an SPU and moves the leadership of every partition
    /// it leads to another online in-sync replica.
    pub fn hold_leadership(&self, request: &HoldLeadershipRequest) -> HoldLeadershipResponse {
        let snapshot = self.cache.snapshot();
        let spu = request.spu;
        if !snapshot.spus.contains_key(&spu) {
            return HoldLeadershipResponse {
                error_code: ErrorCode::SpuNotFound,
                message: Some(format!("SPU {spu} is not registered")),
                ..HoldLeadershipResponse::default()
            };
        }
        if request.hold_ms == 0 {
            self.holds.release(spu);
            tracing::info!(%spu, "leadership hold released");
            return HoldLeadershipResponse::default();
        }
        if let Err(error) = self.holds.hold(spu, Duration::from_millis(request.hold_ms)) {
            return HoldLeadershipResponse {
                error_code: ErrorCode::InvalidRequest,
                message: Some(error.to_string()),
                ..HoldLeadershipResponse::default()
            };
        }
        tracing::info!(%spu, hold_ms = request.hold_ms, "leadership hold; moving leaders off");
        let online = |id| snapshot.spus.get(&id).is_some_and(|spu| spu.value.status.is_online());
        let mut response = HoldLeadershipResponse::default();
        let mut newest = Version::ZERO;
        for (key, partition) in &snapshot.partitions {
            if partition.value.spec.leader != spu {
                continue;
            }
            match self.move_leader_off(key, spu, &online) {
                Ok(Some(version)) => {
                    newest = newest.max(version);
                    response.moved.push(key.clone());
                }
                Ok(None) => response.not_moved.push(key.clone()),
                Err(error) => {
                    response.error_code = ErrorCode::ScUnavailable;
                    response.message = Some(format!("metadata store: {error}"));
                    break;
                }
            }
        }
        if newest > Version::ZERO && !self.cache.wait_for_revision(newest, WRITE_VISIBLE_TIMEOUT) {
            tracing::warn!(version = newest.get(), "leader moves not yet visible in the cache");
        }
        response
    }

    /// Moves one partition's leadership off `spu` if it still leads in the store; the version
    /// written, or `None` when it no longer leads or no other replica can.
    fn move_leader_off(
        &self,
        key: &PartitionKey,
        spu: SpuId,
        online: &dyn Fn(SpuId) -> bool,
    ) -> Result<Option<Version>, StoreError> {
        let store_key = partition_key(key)?;
        for _attempt in 0..WRITE_ATTEMPTS {
            let Some(current) =
                self.store.get_typed::<PartitionObject>(ObjectKind::Partition, &store_key)?
            else {
                return Ok(None);
            };
            let Some((moved, change)) = partitions::move_leader_off(&current.value, spu, online)
            else {
                return Ok(None);
            };
            let expected = ExpectedVersion::Exactly(current.version);
            match self.store.put_typed(ObjectKind::Partition, &store_key, &moved, expected, None) {
                Ok(version) => {
                    log_event(key, &PartitionEvent::MovedOff(change));
                    return Ok(Some(version));
                }
                Err(error) if error.is_conflict() => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Unavailable { reason: format!("partition {key} keeps changing") })
    }
}
