//! Core-aware replica assignment: which `(SPU, core)` pairs host each new partition, and
//! ([`plan_rebalance`], in `rebalance.rs`) which existing partitions to move to even them out.
//!
//! Pure and deterministic: no I/O, no clock, no randomness. The topic reducer calls
//! [`assign_replicas`] with its cached view of the cluster ([`SpuResources`] per SPU) and the
//! [`ReplicaLoad`] of every existing partition of every topic; the action step writes the
//! returned partitions to the store. The function only adds partitions: existing partitions
//! appear only as load and are never moved.
//!
//! ## Guarantees of a computed assignment
//!
//! - Each partition has `replication_factor` replicas on distinct SPUs; the first replica is the
//!   preferred leader.
//! - Rack spread: a partition's replicas cover `min(replication_factor, racks)` distinct racks.
//!   An SPU without a rack is its own failure domain (a rack of one), so a cluster without rack
//!   information reduces to "distinct SPUs".
//! - Balance, greedily and relative to the existing load: every replica goes to the rack, then
//!   the SPU, with the fewest replicas per core among those the rack rule allows, and within
//!   that SPU to its least-loaded core. The preferred leader is the least-leading SPU among
//!   those that can join an equally balanced replica set, and on its SPU the least-loaded core
//!   with the fewest leaders.
//! - On a cluster where balance is feasible (equal cores per SPU; no racks, or racks of equal
//!   size), starting empty and creating topics one after another (property-tested in
//!   `sc/tests/assignment_properties.rs`): replicas per core and per SPU differ by at most one;
//!   with one replication factor for all topics, leaders per SPU and per core differ by at most
//!   one as well; with mixed replication factors by at most two (a topic of replication
//!   factor 1 must put its leaders wherever replicas are missing).
//! - Where balance is not feasible (uneven racks, uneven core counts, a skewed existing load)
//!   the same rules apply and the result is as even as the greedy order allows; no bound is
//!   promised. `examples/assignment_balance.rs` prints the figures for a sample cluster.
//!
//! ## Explicit assignments
//!
//! [`AssignmentRequest::Explicit`] is validated (known SPUs, cores in range, distinct SPUs per
//! partition, the same replication factor for every partition) and returned unchanged; the
//! operator's placement is not rebalanced and not checked for rack spread.

mod load;
mod placement;
mod rebalance;
pub mod replace;

pub use load::{BalanceSummary, CoreLoad, MinMax, ReplicaLoad};
pub use rebalance::{
    plan_rebalance, CoreBalance, CurrentPartition, PartitionMove, RebalanceError, RebalancePlan,
    RebalanceReport, REBALANCE_PARTITIONS_MAX,
};

use serde::{Deserialize, Serialize};
use sluice_proto::ids::{CoreId, SpuId};
use std::collections::BTreeSet;

/// Most partitions one request may create. Bounds the work and memory of one call; far above
/// what one topic needs.
pub const PARTITIONS_PER_REQUEST_MAX: u32 = 100_000;

/// What the assignment needs to know about one SPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuResources {
    /// The SPU.
    pub id: SpuId,
    /// Its rack (failure domain), if known.
    pub rack: Option<String>,
    /// Number of cores (shards) that can own replicas; at least 1.
    pub cores: u16,
}

/// One replica's home: an SPU and the core on it that owns the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaSlot {
    /// The SPU.
    pub spu: SpuId,
    /// The owning core on that SPU.
    pub core: CoreId,
}

/// The replicas of one partition; the first is the preferred leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReplicas {
    /// Distinct SPUs, preferred leader first.
    pub replicas: Vec<ReplicaSlot>,
}

impl PartitionReplicas {
    /// The replica that should lead when it is in sync.
    pub fn preferred_leader(&self) -> Option<ReplicaSlot> {
        self.replicas.first().copied()
    }
}

/// What to assign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignmentRequest {
    /// Place `partitions` new partitions with `replication_factor` replicas each.
    Computed {
        /// Number of partitions to create.
        partitions: u32,
        /// Replicas per partition.
        replication_factor: u16,
    },
    /// Use this placement (partition `i` is element `i`) after validating it.
    Explicit(Vec<PartitionReplicas>),
}

/// Why an assignment was refused. None is retryable as is: the request or the cluster must
/// change first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// The cluster has no SPU.
    #[error("no SPUs are registered; start or register an SPU first")]
    NoSpus,
    /// An SPU reports zero cores.
    #[error("SPU {spu} has no cores to host replicas")]
    SpuWithoutCores {
        /// The SPU.
        spu: SpuId,
    },
    /// The same SPU id appears twice in the cluster description.
    #[error("SPU {spu} is listed twice")]
    DuplicateSpuInCluster {
        /// The SPU.
        spu: SpuId,
    },
    /// Zero partitions requested.
    #[error("a topic needs at least one partition")]
    NoPartitions,
    /// More partitions than [`PARTITIONS_PER_REQUEST_MAX`].
    #[error("{requested} partitions requested; at most {max} per request")]
    TooManyPartitions {
        /// Requested count.
        requested: u32,
        /// The limit.
        max: u32,
    },
    /// Replication factor 0.
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
    /// More replicas per partition than SPUs.
    #[error(
        "replication factor {replication_factor} needs {replication_factor} SPUs, but only \
         {spus} are registered"
    )]
    ReplicationFactorTooLarge {
        /// Requested replication factor.
        replication_factor: usize,
        /// SPUs available.
        spus: usize,
    },
    /// An explicit partition has no replicas.
    #[error("partition {partition} has no replicas")]
    EmptyReplicas {
        /// Index of the partition.
        partition: usize,
    },
    /// Explicit partitions disagree on the replication factor.
    #[error(
        "partition {partition} has {actual} replicas but partition 0 has {expected}; every \
         partition needs the same replication factor"
    )]
    InconsistentReplicationFactor {
        /// Index of the partition.
        partition: usize,
        /// Replicas of partition 0.
        expected: usize,
        /// Replicas of this partition.
        actual: usize,
    },
    /// An explicit replica names an SPU that is not in the cluster.
    #[error("partition {partition} names unknown SPU {spu}")]
    UnknownSpu {
        /// Index of the partition.
        partition: usize,
        /// The SPU.
        spu: SpuId,
    },
    /// An explicit replica names a core the SPU does not have.
    #[error("partition {partition} names core {core} of SPU {spu}, which has {cores} cores")]
    CoreOutOfRange {
        /// Index of the partition.
        partition: usize,
        /// The SPU.
        spu: SpuId,
        /// The named core.
        core: CoreId,
        /// The SPU's core count.
        cores: u16,
    },
    /// An explicit partition places two replicas on one SPU.
    #[error("partition {partition} places more than one replica on SPU {spu}")]
    DuplicateSpuInPartition {
        /// Index of the partition.
        partition: usize,
        /// The SPU.
        spu: SpuId,
    },
}

/// Assigns the partitions of `request` on the cluster `spus`, given the `existing` load.
///
/// Returns one [`PartitionReplicas`] per new partition, in partition order. Never touches
/// existing partitions. To create several topics in a row, add each result to the load
/// ([`ReplicaLoad::add_partition`]) before the next call.
pub fn assign_replicas(
    spus: &[SpuResources],
    existing: &ReplicaLoad,
    request: &AssignmentRequest,
) -> Result<Vec<PartitionReplicas>, AssignmentError> {
    validate_cluster(spus)?;
    match request {
        AssignmentRequest::Computed { partitions, replication_factor } => {
            let replication_factor = usize::from(*replication_factor);
            validate_computed(spus, *partitions, replication_factor)?;
            Ok(placement::place(spus, existing, *partitions, replication_factor))
        }
        AssignmentRequest::Explicit(partitions) => {
            validate_explicit(spus, partitions)?;
            Ok(partitions.clone())
        }
    }
}

fn validate_cluster(spus: &[SpuResources]) -> Result<(), AssignmentError> {
    if spus.is_empty() {
        return Err(AssignmentError::NoSpus);
    }
    let mut seen = BTreeSet::new();
    for spu in spus {
        if spu.cores == 0 {
            return Err(AssignmentError::SpuWithoutCores { spu: spu.id });
        }
        if !seen.insert(spu.id) {
            return Err(AssignmentError::DuplicateSpuInCluster { spu: spu.id });
        }
    }
    Ok(())
}

fn validate_computed(
    spus: &[SpuResources],
    partitions: u32,
    replication_factor: usize,
) -> Result<(), AssignmentError> {
    if partitions == 0 {
        return Err(AssignmentError::NoPartitions);
    }
    if partitions > PARTITIONS_PER_REQUEST_MAX {
        return Err(AssignmentError::TooManyPartitions {
            requested: partitions,
            max: PARTITIONS_PER_REQUEST_MAX,
        });
    }
    if replication_factor == 0 {
        return Err(AssignmentError::ZeroReplicationFactor);
    }
    if replication_factor > spus.len() {
        return Err(AssignmentError::ReplicationFactorTooLarge {
            replication_factor,
            spus: spus.len(),
        });
    }
    Ok(())
}

/// Checks an explicit placement against the cluster (see [`AssignmentError`] for each rule).
pub fn validate_explicit(
    spus: &[SpuResources],
    partitions: &[PartitionReplicas],
) -> Result<(), AssignmentError> {
    validate_cluster(spus)?;
    if partitions.is_empty() {
        return Err(AssignmentError::NoPartitions);
    }
    if partitions.len() > PARTITIONS_PER_REQUEST_MAX as usize {
        return Err(AssignmentError::TooManyPartitions {
            requested: u32::try_from(partitions.len()).unwrap_or(u32::MAX),
            max: PARTITIONS_PER_REQUEST_MAX,
        });
    }
    let expected = partitions[0].replicas.len();
    for (partition, replicas) in partitions.iter().enumerate() {
        let replicas = &replicas.replicas;
        if replicas.is_empty() {
            return Err(AssignmentError::EmptyReplicas { partition });
        }
        if replicas.len() != expected {
            return Err(AssignmentError::InconsistentReplicationFactor {
                partition,
                expected,
                actual: replicas.len(),
            });
        }
        let mut seen = BTreeSet::new();
        for slot in replicas {
            let Some(spu) = spus.iter().find(|spu| spu.id == slot.spu) else {
                return Err(AssignmentError::UnknownSpu { partition, spu: slot.spu });
            };
            if slot.core.get() >= spu.cores {
                return Err(AssignmentError::CoreOutOfRange {
                    partition,
                    spu: slot.spu,
                    core: slot.core,
                    cores: spu.cores,
                });
            }
            if !seen.insert(slot.spu) {
                return Err(AssignmentError::DuplicateSpuInPartition { partition, spu: slot.spu });
            }
        }
    }
    Ok(())
}
