//! Client <-> SC cluster operations (postcard): rebalance plans and leadership holds.
//!
//! - [`PlanRebalanceRequest`] asks the SC for a plan that evens replicas and preferred leaders
//!   over every core of every online SPU (optionally emptying SPUs to drain). It changes
//!   nothing: the plan is carried out by partition reassignment.
//! - [`HoldLeadershipRequest`] moves leadership off one SPU (each partition it leads is led by
//!   another online in-sync replica) and keeps it off for a while: preferred-leader restores
//!   skip the SPU until the hold ends or is released (`hold_ms` 0). A hold lives in the active
//!   SC's memory only; an SC takeover ends it.

use serde::{Deserialize, Serialize};

use crate::api::{postcard_v0, requests};
use crate::error_code::ErrorCode;
use crate::ids::{CoreId, SpuId};
use crate::object::{PartitionKey, ReplicaPlacement};

/// Plans a rebalance of every partition over the SPUs that are online.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRebalanceRequest {
    /// SPUs to empty (for a decommission): the plan moves every replica off them.
    pub drain: Vec<SpuId>,
}

/// One partition whose replicas the plan changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceMove {
    /// Topic and partition.
    pub key: PartitionKey,
    /// Its replicas now, preferred leader first.
    pub from: Vec<ReplicaPlacement>,
    /// Its replicas after the plan, preferred leader first.
    pub to: Vec<ReplicaPlacement>,
}

/// Replicas and preferred leaders of one core, now and after the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreBalanceChange {
    /// The SPU.
    pub spu: SpuId,
    /// The core.
    pub core: CoreId,
    /// Replicas now.
    pub replicas_before: u32,
    /// Replicas after.
    pub replicas_after: u32,
    /// Preferred leaders now.
    pub leaders_before: u32,
    /// Preferred leaders after.
    pub leaders_after: u32,
}

/// The smallest and largest of a set of counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRange {
    /// Smallest.
    pub min: u32,
    /// Largest.
    pub max: u32,
}

/// How evenly replicas and preferred leaders are spread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceFigures {
    /// Replicas per core, over every core of every SPU.
    pub replicas_per_core: CountRange,
    /// Replicas per SPU.
    pub replicas_per_spu: CountRange,
    /// Preferred leaders per core.
    pub leaders_per_core: CountRange,
    /// Preferred leaders per SPU.
    pub leaders_per_spu: CountRange,
}

/// The plan and its balance report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRebalanceResponse {
    /// `None`, or why no plan was made (`SpuNotFound` for an SPU to drain that is not online,
    /// `InvalidRequest` when the replicas cannot fit, `ScUnavailable`).
    pub error_code: ErrorCode,
    /// Details for the operator on failure.
    pub message: Option<String>,
    /// Partitions whose replicas change, in key order; empty when the cluster is balanced.
    pub moves: Vec<RebalanceMove>,
    /// Every core of the SPUs online, now and after.
    pub cores: Vec<CoreBalanceChange>,
    /// Min / max now, over every SPU online.
    pub before: BalanceFigures,
    /// Min / max after, over the SPUs that stay.
    pub after: BalanceFigures,
    /// Replicas placed on a new (SPU, core): each copies its partition's data.
    pub replica_moves: u32,
    /// Partitions whose preferred leader moves to another SPU.
    pub leader_changes: u32,
    /// The replica moves any plan reaching the ideal balance needs.
    pub replica_moves_lower_bound: u32,
}

/// Moves leadership off an SPU and keeps it off for `hold_ms` (0: ends a hold, moves nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldLeadershipRequest {
    /// The SPU.
    pub spu: SpuId,
    /// How long preferred-leader restores leave the SPU alone, in milliseconds; 0 releases.
    pub hold_ms: u64,
}

/// What a leadership hold did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldLeadershipResponse {
    /// `None`, or why it failed (`SpuNotFound`, `ScUnavailable`).
    pub error_code: ErrorCode,
    /// Details for the operator on failure.
    pub message: Option<String>,
    /// Partitions now led by another in-sync replica.
    pub moved: Vec<PartitionKey>,
    /// Partitions the SPU still leads: no other replica is online and in sync.
    pub not_moved: Vec<PartitionKey>,
}

postcard_v0!(
    PlanRebalanceRequest,
    PlanRebalanceResponse,
    HoldLeadershipRequest,
    HoldLeadershipResponse,
);

requests! {
    PlanRebalanceRequest => PlanRebalanceResponse, PlanRebalance;
    HoldLeadershipRequest => HoldLeadershipResponse, HoldLeadership;
}
