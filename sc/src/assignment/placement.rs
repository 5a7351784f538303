//! The greedy placement behind [`super::assign_replicas`].
//!
//! Per partition, in three steps, each updating the running load so the next partition sees it:
//!
//! 1. **Replica set.** Pick `replication_factor` distinct SPUs one by one. While some rack is not
//!    yet used by this partition, only SPUs of unused racks are eligible (rack spread). Among
//!    eligible SPUs take the lowest replica key `(rack replicas per core, SPU replicas per core,
//!    least-loaded core's replicas)`: racks fill evenly, then SPUs within them. Ties: the first
//!    pick prefers few leaders per core, later picks prefer many, so that SPUs short of leaders
//!    stay free to lead the next partitions.
//! 2. **Leader.** SPUs are tried in order of leaders per core as a forced first pick; the first
//!    one whose set has the same sorted replica keys as the greedy set (so balance is exactly as
//!    good) leads, with that set. Without leader-first, a replication factor of 2 on 16 SPUs
//!    drifts to a leader spread of 5; with it the spread stays within one.
//! 3. **Cores.** On each SPU the least-loaded core; among equally loaded cores the leader takes
//!    the one with the fewest leaders and a follower the one with the fewest followers, which
//!    keeps every core's leader count even as roles alternate.
//!
//! Why this balances: picking the `k` least-loaded of a set whose loads differ by at most one
//! keeps them within one, at the rack level and then inside each rack; an SPU's cores are filled
//! round-robin, so with equal core counts cores differ by at most one across the cluster.
//! Cost per partition: `O(replication_factor * SPUs)` for the greedy set, times the number of
//! leader candidates tried (usually one; at most the SPUs whose key is in the set).

use sluice_proto::ids::CoreId;
use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;

use super::{PartitionReplicas, ReplicaLoad, ReplicaSlot, SpuResources};

/// `numerator / denominator`, compared exactly.
#[derive(Clone, Copy, Debug)]
struct Ratio {
    numerator: u64,
    denominator: u64,
}

impl Ratio {
    fn new(numerator: u64, denominator: u64) -> Ratio {
        Ratio { numerator, denominator: denominator.max(1) }
    }
}

impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ratio {}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        let left = u128::from(self.numerator) * u128::from(other.denominator);
        let right = u128::from(other.numerator) * u128::from(self.denominator);
        left.cmp(&right)
    }
}

struct SpuState {
    slot_spu: sluice_proto::ids::SpuId,
    rack: usize,
    replicas: Vec<u32>,
    leaders: Vec<u32>,
    replicas_total: u64,
    leaders_total: u64,
}

impl SpuState {
    fn cores(&self) -> u64 {
        self.replicas.len() as u64
    }

    fn least_loaded_core_replicas(&self) -> u32 {
        self.replicas.iter().copied().min().unwrap_or(0)
    }

    fn leader_fill(&self) -> Ratio {
        Ratio::new(self.leaders_total, self.cores())
    }

    /// The core for a new replica: least replicas, then fewest of the replica's role.
    fn choose_core(&self, is_leader: bool) -> usize {
        let role_count = |core: usize| {
            if is_leader {
                self.leaders[core]
            } else {
                self.replicas[core] - self.leaders[core]
            }
        };
        (0..self.replicas.len())
            .min_by_key(|&core| (self.replicas[core], role_count(core), core))
            .unwrap_or(0)
    }
}

/// See [`Placement::replica_key`].
type ReplicaKey = (Ratio, Ratio, u32);

struct ReplicaSet {
    members: Vec<usize>,
    /// The replica key of each member before the partition (its load signature: two sets with
    /// the same sorted keys leave the cluster equally balanced).
    keys: Vec<ReplicaKey>,
}

struct RackState {
    cores: u64,
    replicas: u64,
}

struct Placement {
    spus: Vec<SpuState>,
    racks: Vec<RackState>,
}

/// Places `partitions` partitions of `replication_factor` replicas. Inputs are validated.
pub fn place(
    spus: &[SpuResources],
    existing: &ReplicaLoad,
    partitions: u32,
    replication_factor: usize,
) -> Vec<PartitionReplicas> {
    let mut placement = Placement::new(spus, existing);
    (0..partitions).map(|_| placement.place_partition(replication_factor)).collect()
}

impl Placement {
    fn new(spus: &[SpuResources], existing: &ReplicaLoad) -> Placement {
        let mut rack_index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut racks: Vec<RackState> = Vec::new();
        let mut states = Vec::with_capacity(spus.len());
        for spu in spus {
            // An SPU without a rack is a failure domain of its own.
            let rack = match &spu.rack {
                Some(name) => *rack_index.entry(name.as_str()).or_insert_with(|| {
                    racks.push(RackState { cores: 0, replicas: 0 });
                    racks.len() - 1
                }),
                None => {
                    racks.push(RackState { cores: 0, replicas: 0 });
                    racks.len() - 1
                }
            };
            let cores = usize::from(spu.cores);
            let mut state = SpuState {
                slot_spu: spu.id,
                rack,
                replicas: vec![0; cores],
                leaders: vec![0; cores],
                replicas_total: 0,
                leaders_total: 0,
            };
            for core in 0..spu.cores {
                let load = existing.core(ReplicaSlot { spu: spu.id, core: CoreId(core) });
                state.replicas[usize::from(core)] = load.replicas;
                state.leaders[usize::from(core)] = load.leaders;
                state.replicas_total += u64::from(load.replicas);
                state.leaders_total += u64::from(load.leaders);
            }
            racks[rack].cores += u64::from(spu.cores);
            racks[rack].replicas += state.replicas_total;
            states.push(state);
        }
        Placement { spus: states, racks }
    }

    fn place_partition(&mut self, replication_factor: usize) -> PartitionReplicas {
        let members = self.choose_members(replication_factor);
        for &spu in &members {
            let rack = self.spus[spu].rack;
            self.racks[rack].replicas += 1;
        }
        let replicas = members
            .iter()
            .enumerate()
            .map(|(position, &spu)| self.commit_replica(spu, position == 0))
            .collect();
        PartitionReplicas { replicas }
    }

    /// Steps 1 and 2: the replica set, leader first. The default set is the greedy one; then
    /// the SPUs with the fewest leaders per core are tried as forced first picks, and the first
    /// whose set is exactly as balanced (the same sorted replica keys) leads.
    fn choose_members(&self, replication_factor: usize) -> Vec<usize> {
        let default = self.choose_replica_set(replication_factor, None);
        let mut target = default.keys.clone();
        target.sort();
        let mut candidates: Vec<usize> = (0..self.spus.len())
            .filter(|&index| target.binary_search(&self.replica_key(index, 0)).is_ok())
            .collect();
        candidates.sort_by_key(|&index| (self.spus[index].leader_fill(), index));
        for candidate in candidates {
            let trial = self.choose_replica_set(replication_factor, Some(candidate));
            let mut keys = trial.keys;
            keys.sort();
            if keys == target {
                return trial.members;
            }
        }
        let mut members = default.members;
        let leader = (0..members.len())
            .min_by_key(|&position| (self.spus[members[position]].leader_fill(), position))
            .unwrap_or(0);
        members.swap(0, leader);
        members
    }

    /// Step 1: distinct SPUs, racks spread, least loaded first; `first` forces the first pick.
    /// Does not change the load. Among equally loaded SPUs the first pick prefers few leaders
    /// and later picks prefer many, keeping low-leader SPUs free to lead later partitions.
    fn choose_replica_set(&self, replication_factor: usize, first: Option<usize>) -> ReplicaSet {
        let mut set = ReplicaSet {
            members: Vec::with_capacity(replication_factor),
            keys: Vec::with_capacity(replication_factor),
        };
        let mut rack_added = vec![0u64; self.racks.len()];
        for pick in 0..replication_factor {
            let available = |index: &usize| !set.members.contains(index);
            let unused_rack_left = (0..self.spus.len())
                .filter(available)
                .any(|index| rack_added[self.spus[index].rack] == 0);
            let eligible = (0..self.spus.len())
                .filter(available)
                .filter(|&index| !(unused_rack_left && rack_added[self.spus[index].rack] > 0));
            let key = |index: usize| self.replica_key(index, rack_added[self.spus[index].rack]);
            let best = match (pick, first) {
                (0, Some(forced)) => Some(forced),
                (0, None) => eligible
                    .min_by_key(|&index| (key(index), self.spus[index].leader_fill(), index)),
                _ => eligible.min_by_key(|&index| {
                    (key(index), Reverse(self.spus[index].leader_fill()), index)
                }),
            };
            let Some(best) = best else { break };
            set.keys.push(self.replica_key(best, 0));
            set.members.push(best);
            rack_added[self.spus[best].rack] += 1;
        }
        set
    }

    /// How loaded an SPU is for one more replica, lower first: its rack's replicas per core
    /// (counting `rack_added` replicas of the partition being placed), its own replicas per
    /// core, and its least-loaded core.
    fn replica_key(&self, index: usize, rack_added: u64) -> ReplicaKey {
        let spu = &self.spus[index];
        let rack = &self.racks[spu.rack];
        (
            Ratio::new(rack.replicas + rack_added, rack.cores),
            Ratio::new(spu.replicas_total, spu.cores()),
            spu.least_loaded_core_replicas(),
        )
    }

    /// Step 3: picks the core on `spu` and counts the replica there.
    fn commit_replica(&mut self, spu: usize, is_leader: bool) -> ReplicaSlot {
        let state = &mut self.spus[spu];
        let core = state.choose_core(is_leader);
        state.replicas[core] += 1;
        state.replicas_total += 1;
        if is_leader {
            state.leaders[core] += 1;
            state.leaders_total += 1;
        }
        let core = CoreId(u16::try_from(core).expect("core index comes from a u16 core count"));
        ReplicaSlot { spu: state.slot_spu, core }
    }
}
