//! Replica and leader counts per `(SPU, core)`, and balance summaries over a cluster.

use sluice_proto::ids::{CoreId, SpuId};
use std::collections::BTreeMap;

use super::{PartitionReplicas, ReplicaSlot, SpuResources};

/// Replicas and preferred leaders hosted by one core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreLoad {
    /// Replicas (leaders included) owned by the core.
    pub replicas: u32,
    /// Partitions whose preferred leader is on the core.
    pub leaders: u32,
}

/// The load of existing partitions, per `(SPU, core)`.
///
/// Built from every partition of every topic; the first replica of each counts as its leader.
/// Slots of SPUs that are no longer in the cluster (or cores beyond an SPU's current count) are
/// kept but ignored by the assignment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLoad {
    cores: BTreeMap<ReplicaSlot, CoreLoad>,
}

impl ReplicaLoad {
    /// No load.
    pub fn new() -> ReplicaLoad {
        ReplicaLoad::default()
    }

    /// The load of all `partitions`.
    pub fn from_partitions<'a>(
        partitions: impl IntoIterator<Item = &'a PartitionReplicas>,
    ) -> ReplicaLoad {
        let mut load = ReplicaLoad::new();
        for partition in partitions {
            load.add_partition(partition);
        }
        load
    }

    /// Counts one more partition.
    pub fn add_partition(&mut self, partition: &PartitionReplicas) {
        for (index, slot) in partition.replicas.iter().enumerate() {
            let core = self.cores.entry(*slot).or_default();
            core.replicas += 1;
            if index == 0 {
                core.leaders += 1;
            }
        }
    }

    /// The load of one core (zero if it hosts nothing).
    pub fn core(&self, slot: ReplicaSlot) -> CoreLoad {
        self.cores.get(&slot).copied().unwrap_or_default()
    }

    /// Every core with a non-zero load.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaSlot, CoreLoad)> + '_ {
        self.cores.iter().map(|(slot, load)| (*slot, *load))
    }

    /// Minimum and maximum counts over every core and SPU of `spus` (idle ones included).
    pub fn balance(&self, spus: &[SpuResources]) -> BalanceSummary {
        let mut summary = BalanceSummary::default();
        for spu in spus {
            let mut spu_replicas = 0;
            let mut spu_leaders = 0;
            for core in 0..spu.cores {
                let load = self.core(ReplicaSlot { spu: spu.id, core: CoreId(core) });
                summary.replicas_per_core.include(load.replicas);
                summary.leaders_per_core.include(load.leaders);
                spu_replicas += load.replicas;
                spu_leaders += load.leaders;
            }
            summary.replicas_per_spu.include(spu_replicas);
            summary.leaders_per_spu.include(spu_leaders);
        }
        summary
    }

    /// Replicas hosted by `spu` over all its cores.
    pub fn spu_replicas(&self, spu: SpuId) -> u32 {
        self.iter().filter(|(slot, _)| slot.spu == spu).map(|(_, load)| load.replicas).sum()
    }
}

/// The smallest and largest of a set of counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinMax {
    /// Smallest count (0 when empty).
    pub min: u32,
    /// Largest count (0 when empty).
    pub max: u32,
    /// How many counts were included.
    pub samples: u32,
}

impl MinMax {
    fn include(&mut self, value: u32) {
        if self.samples == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.samples += 1;
    }

    /// `max - min`.
    pub fn spread(&self) -> u32 {
        self.max - self.min
    }
}

/// How evenly replicas and leaders are spread over a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalanceSummary {
    /// Replicas per core, over every core of every SPU.
    pub replicas_per_core: MinMax,
    /// Replicas per SPU.
    pub replicas_per_spu: MinMax,
    /// Preferred leaders per SPU.
    pub leaders_per_spu: MinMax,
    /// Preferred leaders per core, over every core of every SPU.
    pub leaders_per_core: MinMax,
}
