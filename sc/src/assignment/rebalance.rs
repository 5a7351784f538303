//! Rebalance planning: new replica lists for existing partitions so that replicas and
//! preferred leaders are even over every core of every SPU, with few replica moves.
//!
//! Pure and deterministic, like the rest of [`super`]: the input is every partition's current
//! replicas (first = preferred leader), the SPUs that may host replicas (id, rack, cores) and
//! the SPUs to drain; the output is a [`RebalancePlan`]: the partitions whose replica list
//! changes, with the old and new lists, and a [`RebalanceReport`] (replicas and leaders per
//! core and per SPU before and after, moves, leader changes, a lower bound on the moves).
//! Executing the plan (adding replicas, waiting for them to catch up, dropping the old ones)
//! is the partition reassignment's job, not this module's.
//!
//! ## Steps
//!
//! 1. **Evacuate.** Every replica on an SPU being drained, or on a core its SPU no longer has,
//!    goes to the least-loaded legal core (most racks for its partition first).
//! 2. **Replicas.** Repeatedly one replica moves from a core to a less loaded one: first from
//!    the most loaded cores to the least loaded ones while they differ by two or more, then,
//!    between cores that differ by one, from an SPU with at least two more replicas to one of
//!    as many cores. Each move lowers `(sum over cores of load², sum over SPUs of total²)`
//!    lexicographically, so the loop ends, and no move ever widens the spread.
//! 3. **Leaders.** Leadership is only reordered within replica sets (cheap: no data moves):
//!    from a core with many preferred leaders, a breadth-first search follows "partition led
//!    here has a replica there" edges to a core with at least two fewer (or one fewer on an
//!    SPU with fewer leaders per core), and shifts one leadership along each edge of the path.
//!    This is the augmenting-path rule of optimal semi-matchings: when no such path is left,
//!    the leader counts are as even as the replica sets allow.
//!
//! ## Legal moves
//!
//! A replica moves only to a core of an SPU that is in the cluster and not drained, never to an
//! SPU holding another replica of its partition (moving between cores of its own SPU is
//! allowed), and never so that its partition covers fewer racks than before (an SPU without a
//! rack is a rack of its own). Replicas on SPUs that are not in the cluster (offline or
//! unregistered) stay where they are and are not counted: the caller passes only SPUs that can
//! receive replicas.
//!
//! ## Guarantees (property-tested in `sc/tests/rebalance_properties.rs`)
//!
//! - The plan is valid: replication factor kept, distinct SPUs, existing SPUs and cores only,
//!   no partition loses rack coverage; a drained SPU keeps no replica.
//! - Without a drain, replicas per core never spread wider than before. Leaders per core are
//!   as even as the final replica sets allow; on uneven clusters (SPUs of different core
//!   counts, uneven racks) that can be wider than before, but never wider than
//!   `max(before, 2)` in the tests (6,000 random clusters).
//! - On a cluster where balance is feasible (equal cores per SPU; no racks, or racks of equal
//!   size; one replication factor): after the plan replicas per core and per SPU differ by at
//!   most one, and leaders per core by at most one.
//! - The replica moves are at most twice [`RebalanceReport::replica_moves_lower_bound`] (the
//!   moves any plan reaching the ideal balance needs); 3 -> 6 SPUs with 300 partitions at
//!   RF 3 takes exactly the bound, 450.
//! - A balanced cluster gets an empty plan, and a plan's result gets an empty plan (a fixed
//!   point).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sluice_proto::ids::{CoreId, SpuId};
use sluice_proto::object::PartitionKey;

use super::{validate_cluster, SpuResources};
use super::{AssignmentError, BalanceSummary, PartitionReplicas, ReplicaLoad, ReplicaSlot};

/// Most partitions one plan may cover. Bounds the planner's memory and time (the leader step is
/// quadratic in the worst case); far above a cluster's partition count.
pub const REBALANCE_PARTITIONS_MAX: usize = 200_000;

/// One existing partition as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentPartition {
    /// Topic and partition.
    pub key: PartitionKey,
    /// Its replicas, preferred leader first.
    pub replicas: PartitionReplicas,
}

/// One partition whose replica list changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMove {
    /// Topic and partition.
    pub key: PartitionKey,
    /// The replicas now.
    pub from: PartitionReplicas,
    /// The replicas after the move, preferred leader first.
    pub to: PartitionReplicas,
}

impl PartitionMove {
    /// Replicas in `to` that are not in `from` (a replica changing core counts as moved).
    pub fn replica_moves(&self) -> usize {
        self.to.replicas.iter().filter(|slot| !self.from.replicas.contains(slot)).count()
    }

    /// Whether the preferred leader's SPU changes.
    pub fn leader_changed(&self) -> bool {
        self.from.replicas.first().map(|slot| slot.spu)
            != self.to.replicas.first().map(|slot| slot.spu)
    }
}

/// Replicas and preferred leaders of one core, before and after the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreBalance {
    /// The core.
    pub slot: ReplicaSlot,
    /// Replicas on it now.
    pub replicas_before: u32,
    /// Replicas on it after the plan.
    pub replicas_after: u32,
    /// Preferred leaders on it now.
    pub leaders_before: u32,
    /// Preferred leaders on it after the plan.
    pub leaders_after: u32,
}

/// How the plan changes the balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebalanceReport {
    /// Min / max now, over every core and SPU of the cluster (drained ones included).
    pub before: BalanceSummary,
    /// Min / max after the plan, over the cores and SPUs that stay (drained ones excluded).
    pub after: BalanceSummary,
    /// Every core of the cluster, in SPU and core order.
    pub cores: Vec<CoreBalance>,
    /// Replicas the plan places on a new (SPU, core): each copies the partition's data.
    pub replica_moves: u32,
    /// Partitions whose preferred leader moves to another SPU.
    pub leader_changes: u32,
    /// Replica moves that any plan reaching the ideal balance needs (each move takes one
    /// replica off one core and SPU and puts it on one other): the largest of the excess over
    /// `ceil(replicas / cores)` summed over cores, the shortfall under `floor(replicas /
    /// cores)` summed over cores, and the same two over SPUs (an SPU's share is its cores'
    /// share); every replica on a drained SPU counts as excess.
    pub replica_moves_lower_bound: u32,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebalancePlan {
    /// Partitions whose replicas change, in key order; empty when the cluster is balanced.
    pub moves: Vec<PartitionMove>,
    /// Balance before and after.
    pub report: RebalanceReport,
}

/// Why no plan was made. None is retryable as is: the cluster or the request must change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RebalanceError {
    /// The cluster description is invalid (no SPU, an SPU without cores, an SPU listed twice).
    #[error(transparent)]
    Cluster(#[from] AssignmentError),
    /// An SPU to drain is not in the cluster.
    #[error("SPU {spu} is not among the SPUs online; only those can be drained")]
    UnknownDrainSpu {
        /// The SPU.
        spu: SpuId,
    },
    /// Every SPU would be drained.
    #[error("draining every SPU leaves nowhere to put replicas")]
    NothingLeftAfterDrain,
    /// A partition has no replicas.
    #[error("partition {partition} has no replicas")]
    EmptyReplicas {
        /// The partition.
        partition: PartitionKey,
    },
    /// A partition lists one SPU twice.
    #[error("partition {partition} places more than one replica on SPU {spu}")]
    DuplicateSpuInPartition {
        /// The partition.
        partition: PartitionKey,
        /// The SPU.
        spu: SpuId,
    },
    /// A replica must leave its SPU but every remaining SPU already holds its partition.
    #[error(
        "partition {partition} cannot leave SPU {spu}: its {replication_factor} replicas need \
         {replication_factor} SPUs, and every other SPU already holds one"
    )]
    NoRoomToEvacuate {
        /// The partition.
        partition: PartitionKey,
        /// The SPU it must leave.
        spu: SpuId,
        /// Its replication factor.
        replication_factor: usize,
    },
    /// More than [`REBALANCE_PARTITIONS_MAX`] partitions.
    #[error("{count} partitions; a plan covers at most {max}")]
    TooManyPartitions {
        /// Partitions given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Plans the moves that balance `partitions` over `spus`, emptying the SPUs in `drain`.
pub fn plan_rebalance(
    spus: &[SpuResources],
    partitions: &[CurrentPartition],
    drain: &BTreeSet<SpuId>,
) -> Result<RebalancePlan, RebalanceError> {
    validate_cluster(spus)?;
    validate_partitions(partitions)?;
    if let Some(spu) = drain.iter().find(|id| !spus.iter().any(|spu| spu.id == **id)) {
        return Err(RebalanceError::UnknownDrainSpu { spu: *spu });
    }
    if spus.iter().all(|spu| drain.contains(&spu.id)) {
        return Err(RebalanceError::NothingLeftAfterDrain);
    }
    let mut planner = Planner::new(spus, partitions, drain);
    let replica_moves_lower_bound = planner.lower_bound();
    planner.evacuate()?;
    while planner.move_one_replica() {}
    while planner.shift_one_leadership() {}

    let staying: Vec<SpuResources> =
        spus.iter().filter(|spu| !drain.contains(&spu.id)).cloned().collect();
    let before_load = ReplicaLoad::from_partitions(partitions.iter().map(|p| &p.replicas));
    let after_load = ReplicaLoad::from_partitions(planner.replicas.iter());
    let mut moves = Vec::new();
    for (current, after) in partitions.iter().zip(&planner.replicas) {
        if current.replicas != *after {
            moves.push(PartitionMove {
                key: current.key.clone(),
                from: current.replicas.clone(),
                to: after.clone(),
            });
        }
    }
    moves.sort_by(|left, right| left.key.cmp(&right.key));
    let cores = spus
        .iter()
        .flat_map(|spu| (0..spu.cores).map(|core| ReplicaSlot { spu: spu.id, core: CoreId(core) }))
        .map(|slot| {
            let (before, after) = (before_load.core(slot), after_load.core(slot));
            CoreBalance {
                slot,
                replicas_before: before.replicas,
                replicas_after: after.replicas,
                leaders_before: before.leaders,
                leaders_after: after.leaders,
            }
        })
        .collect();
    let report = RebalanceReport {
        before: before_load.balance(spus),
        after: after_load.balance(&staying),
        cores,
        replica_moves: moves.iter().map(|m| m.replica_moves() as u32).sum(),
        leader_changes: moves.iter().filter(|m| m.leader_changed()).count() as u32,
        replica_moves_lower_bound,
    };
    Ok(RebalancePlan { moves, report })
}

fn validate_partitions(partitions: &[CurrentPartition]) -> Result<(), RebalanceError> {
    if partitions.len() > REBALANCE_PARTITIONS_MAX {
        return Err(RebalanceError::TooManyPartitions {
            count: partitions.len(),
            max: REBALANCE_PARTITIONS_MAX,
        });
    }
    for partition in partitions {
        if partition.replicas.replicas.is_empty() {
            return Err(RebalanceError::EmptyReplicas { partition: partition.key.clone() });
        }
        let mut seen = BTreeSet::new();
        for slot in &partition.replicas.replicas {
            if !seen.insert(slot.spu) {
                return Err(RebalanceError::DuplicateSpuInPartition {
                    partition: partition.key.clone(),
                    spu: slot.spu,
                });
            }
        }
    }
    Ok(())
}

/// A core of the cluster: SPU index and core index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Core {
    spu: usize,
    core: usize,
}

/// A failure domain: a named rack, or an SPU without one (a rack of its own).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rack {
    Named(usize),
    Alone(SpuId),
}

struct SpuInfo {
    id: SpuId,
    rack: Rack,
    cores: usize,
    drained: bool,
}

/// Counts of one kind (replicas or leaders) per core, with per-SPU totals.
struct Counts {
    per_core: Vec<Vec<u32>>,
    per_spu: Vec<u64>,
}

impl Counts {
    fn new(spus: &[SpuInfo]) -> Counts {
        Counts {
            per_core: spus.iter().map(|spu| vec![0; spu.cores]).collect(),
            per_spu: vec![0; spus.len()],
        }
    }

    fn get(&self, core: Core) -> u32 {
        self.per_core[core.spu][core.core]
    }

    fn add(&mut self, core: Core) {
        self.per_core[core.spu][core.core] += 1;
        self.per_spu[core.spu] += 1;
    }

    fn remove(&mut self, core: Core) {
        self.per_core[core.spu][core.core] -= 1;
        self.per_spu[core.spu] -= 1;
    }
}

struct Planner {
    spus: Vec<SpuInfo>,
    index: BTreeMap<SpuId, usize>,
    /// The working replica lists, partition order as given.
    replicas: Vec<PartitionReplicas>,
    /// The replica lists as given.
    original: Vec<PartitionReplicas>,
    keys: Vec<PartitionKey>,
    replica_counts: Counts,
    leader_counts: Counts,
    /// Partitions with a replica on each core.
    hosted: Vec<Vec<BTreeSet<usize>>>,
}

impl Planner {
    fn new(
        spus: &[SpuResources],
        partitions: &[CurrentPartition],
        drain: &BTreeSet<SpuId>,
    ) -> Planner {
        let mut rack_names: BTreeMap<&str, usize> = BTreeMap::new();
        let infos: Vec<SpuInfo> = spus
            .iter()
            .map(|spu| {
                let rack = match &spu.rack {
                    Some(name) => {
                        let next = rack_names.len();
                        Rack::Named(*rack_names.entry(name.as_str()).or_insert(next))
                    }
                    None => Rack::Alone(spu.id),
                };
                SpuInfo {
                    id: spu.id,
                    rack,
                    cores: usize::from(spu.cores),
                    drained: drain.contains(&spu.id),
                }
            })
            .collect();
        let index = infos.iter().enumerate().map(|(index, spu)| (spu.id, index)).collect();
        let mut planner = Planner {
            replica_counts: Counts::new(&infos),
            leader_counts: Counts::new(&infos),
            hosted: infos.iter().map(|spu| vec![BTreeSet::new(); spu.cores]).collect(),
            spus: infos,
            index,
            replicas: partitions.iter().map(|p| p.replicas.clone()).collect(),
            original: partitions.iter().map(|p| p.replicas.clone()).collect(),
            keys: partitions.iter().map(|p| p.key.clone()).collect(),
        };
        for partition in 0..planner.replicas.len() {
            planner.count(partition, true);
        }
        planner
    }

    /// The core of `slot` if its SPU is in the cluster and has that core.
    fn core_of(&self, slot: ReplicaSlot) -> Option<Core> {
        let spu = *self.index.get(&slot.spu)?;
        let core = usize::from(slot.core.get());
        (core < self.spus[spu].cores).then_some(Core { spu, core })
    }

    fn slot(&self, core: Core) -> ReplicaSlot {
        let core_id = u16::try_from(core.core).expect("core index comes from a u16 core count");
        ReplicaSlot { spu: self.spus[core.spu].id, core: CoreId(core_id) }
    }

    fn is_active(&self, core: Core) -> bool {
        !self.spus[core.spu].drained
    }

    fn active_cores(&self) -> Vec<Core> {
        (0..self.spus.len())
            .filter(|&spu| !self.spus[spu].drained)
            .flat_map(|spu| (0..self.spus[spu].cores).map(move |core| Core { spu, core }))
            .collect()
    }

    /// Adds (or removes) one partition's replicas and leader to the counts.
    fn count(&mut self, partition: usize, add: bool) {
        let slots = self.replicas[partition].replicas.clone();
        for (position, slot) in slots.into_iter().enumerate() {
            let Some(core) = self.core_of(slot) else { continue };
            if add {
                self.replica_counts.add(core);
                self.hosted[core.spu][core.core].insert(partition);
            } else {
                self.replica_counts.remove(core);
                self.hosted[core.spu][core.core].remove(&partition);
            }
            if position == 0 {
                if add {
                    self.leader_counts.add(core);
                } else {
                    self.leader_counts.remove(core);
                }
            }
        }
    }

    fn rack_of(&self, slot: ReplicaSlot) -> Rack {
        match self.index.get(&slot.spu) {
            Some(&spu) => self.spus[spu].rack.clone(),
            None => Rack::Alone(slot.spu),
        }
    }

    fn racks(&self, slots: &[ReplicaSlot]) -> usize {
        slots.iter().map(|slot| self.rack_of(*slot)).collect::<BTreeSet<_>>().len()
    }

    /// The racks `partition` would cover with its replica at `position` on `to`, if that move
    /// is legal apart from the rack rule.
    fn racks_after(&self, partition: usize, position: usize, to: Core) -> Option<usize> {
        let slots = &self.replicas[partition].replicas;
        let from = slots[position];
        let target = self.slot(to);
        if target == from || !self.is_active(to) {
            return None;
        }
        let other_here =
            slots.iter().enumerate().any(|(at, slot)| at != position && slot.spu == target.spu);
        if other_here {
            return None;
        }
        let mut after = slots.clone();
        after[position] = target;
        Some(self.racks(&after))
    }

    fn apply_move(&mut self, partition: usize, position: usize, to: Core) {
        self.count(partition, false);
        let slot = self.slot(to);
        self.replicas[partition].replicas[position] = slot;
        self.count(partition, true);
    }

    /// Whether the replica at `slot` must leave: its SPU is drained or lacks its core.
    fn must_leave(&self, slot: ReplicaSlot) -> bool {
        match self.index.get(&slot.spu) {
            None => false,
            Some(&spu) => {
                self.spus[spu].drained || usize::from(slot.core.get()) >= self.spus[spu].cores
            }
        }
    }

    /// Step 1: every replica that must leave goes to the best legal core.
    fn evacuate(&mut self) -> Result<(), RebalanceError> {
        let cores = self.active_cores();
        for partition in 0..self.replicas.len() {
            for position in 0..self.replicas[partition].replicas.len() {
                let slot = self.replicas[partition].replicas[position];
                if !self.must_leave(slot) {
                    continue;
                }
                let is_leader = position == 0;
                let best = cores
                    .iter()
                    .filter_map(|&core| {
                        let racks = self.racks_after(partition, position, core)?;
                        let role = if is_leader { self.leader_counts.get(core) } else { 0 };
                        let spu = self.replica_counts.per_spu[core.spu] * 1_000_000
                            / self.spus[core.spu].cores as u64;
                        Some((
                            (
                                std::cmp::Reverse(racks),
                                self.replica_counts.get(core),
                                spu,
                                role,
                                core,
                            ),
                            core,
                        ))
                    })
                    .min()
                    .map(|(_, core)| core);
                let Some(core) = best else {
                    return Err(RebalanceError::NoRoomToEvacuate {
                        partition: self.keys[partition].clone(),
                        spu: slot.spu,
                        replication_factor: self.replicas[partition].replicas.len(),
                    });
                };
                self.apply_move(partition, position, core);
            }
        }
        Ok(())
    }

    /// Whether moving one item (replica or leadership) from `from` to `to` makes `counts`
    /// more even: the cores differ by two or more, or by one and they are on SPUs with as many
    /// cores whose totals differ by two or more (the core counts swap, the SPUs come closer).
    fn improves(&self, counts: &Counts, from: Core, to: Core) -> bool {
        let (high, low) = (counts.get(from), counts.get(to));
        if high >= low + 2 {
            return true;
        }
        // Between SPUs of different sizes, per-core balance is all that is asked: evening
        // their totals per core would move replicas without narrowing any spread.
        if high != low + 1 || from.spu == to.spu {
            return false;
        }
        if self.spus[from.spu].cores != self.spus[to.spu].cores {
            return false;
        }
        counts.per_spu[from.spu] >= counts.per_spu[to.spu] + 2
    }

    /// Cores ordered most loaded first (ties: the SPU with the most per core first).
    fn by_load(&self, counts: &Counts) -> Vec<Core> {
        let mut cores = self.active_cores();
        let per_core_of_spu =
            |core: &Core| counts.per_spu[core.spu] * 1_000_000 / self.spus[core.spu].cores as u64;
        cores.sort_by_key(|core| {
            (std::cmp::Reverse(counts.get(*core)), std::cmp::Reverse(per_core_of_spu(core)), *core)
        });
        cores
    }

    /// Step 2: one replica move that makes replicas more even; false when none is left.
    fn move_one_replica(&mut self) -> bool {
        let order = self.by_load(&self.replica_counts);
        for &from in &order {
            for &to in order.iter().rev() {
                if self.replica_counts.get(to) >= self.replica_counts.get(from) {
                    break;
                }
                if !self.improves(&self.replica_counts, from, to) {
                    continue;
                }
                if let Some((partition, position)) = self.candidate(from, to) {
                    self.apply_move(partition, position, to);
                    return true;
                }
            }
        }
        false
    }

    /// The replica on `from` to move to `to`: legal; a leader last unless `to` has fewer
    /// leaders; more racks first; then partitions with fewer replicas moved already (moves
    /// spread over many partitions, each keeping most of its in-sync replicas); then a leader
    /// when `from` has more leaders than `to`, else a follower; then the first partition.
    fn candidate(&self, from: Core, to: Core) -> Option<(usize, usize)> {
        let prefer_leader = self.leader_counts.get(from) > self.leader_counts.get(to);
        let from_slot = self.slot(from);
        self.hosted[from.spu][from.core]
            .iter()
            .filter_map(|&partition| {
                let slots = &self.replicas[partition].replicas;
                let position = slots.iter().position(|slot| *slot == from_slot)?;
                // A leader that would land on a core with as many leaders or more comes last:
                // the leader step cannot always undo that.
                let leader_last =
                    position == 0 && self.leader_counts.get(to) >= self.leader_counts.get(from);
                let before = self.racks(slots);
                let after = self.racks_after(partition, position, to)?;
                let role_matches = (position == 0) == prefer_leader;
                let moved = slots
                    .iter()
                    .filter(|slot| !self.original[partition].replicas.contains(slot))
                    .count();
                (after >= before).then_some((
                    (leader_last, std::cmp::Reverse(after), moved, !role_matches, partition),
                    (partition, position),
                ))
            })
            .min()
            .map(|(_, found)| found)
    }

    /// Step 3: one shift of leadership along a path of replica sets; false when none is left.
    fn shift_one_leadership(&mut self) -> bool {
        let mut led: BTreeMap<Core, Vec<usize>> = BTreeMap::new();
        for (partition, replicas) in self.replicas.iter().enumerate() {
            if let Some(core) = replicas.replicas.first().and_then(|slot| self.core_of(*slot)) {
                led.entry(core).or_default().push(partition);
            }
        }
        for from in self.by_load(&self.leader_counts) {
            if let Some(path) = self.leadership_path(from, &led) {
                for (partition, position) in path {
                    self.count(partition, false);
                    let slot = self.replicas[partition].replicas.remove(position);
                    self.replicas[partition].replicas.insert(0, slot);
                    self.count(partition, true);
                }
                return true;
            }
        }
        false
    }

    /// A path of (partition, position of its new leader) from `from` to the core with the
    /// fewest leaders that [`Self::improves`] on, breadth first; `None` when there is none.
    fn leadership_path(
        &self,
        from: Core,
        led: &BTreeMap<Core, Vec<usize>>,
    ) -> Option<Vec<(usize, usize)>> {
        let mut parent: BTreeMap<Core, (Core, usize, usize)> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        let mut best: Option<Core> = None;
        while let Some(core) = queue.pop_front() {
            for &partition in led.get(&core).map(Vec::as_slice).unwrap_or_default() {
                for (position, slot) in self.replicas[partition].replicas.iter().enumerate() {
                    let Some(next) = self.core_of(*slot) else { continue };
                    if next == from || parent.contains_key(&next) || !self.is_active(next) {
                        continue;
                    }
                    parent.insert(next, (core, partition, position));
                    queue.push_back(next);
                    if self.improves(&self.leader_counts, from, next)
                        && best.is_none_or(|best| {
                            self.leader_counts.get(next) < self.leader_counts.get(best)
                        })
                    {
                        best = Some(next);
                    }
                }
            }
        }
        let mut path = Vec::new();
        let mut at = best?;
        while at != from {
            let (previous, partition, position) = parent[&at];
            path.push((partition, position));
            at = previous;
        }
        // The partitions of a path are distinct (each is led from a different core), so the
        // order of the shifts does not matter.
        Some(path)
    }

    /// See [`RebalanceReport::replica_moves_lower_bound`].
    fn lower_bound(&self) -> u32 {
        let cores = self.active_cores();
        let mut leaving = 0u64;
        let mut total = 0u64;
        for replicas in &self.replicas {
            for slot in &replicas.replicas {
                if self.must_leave(*slot) {
                    leaving += 1;
                    total += 1;
                } else if self.core_of(*slot).is_some() {
                    total += 1;
                }
            }
        }
        let core_count = cores.len() as u64;
        let ceil = total.div_ceil(core_count);
        let floor = total / core_count;
        let mut core_excess = leaving;
        let mut core_shortfall = 0;
        for &core in &cores {
            let load = u64::from(self.replica_counts.get(core));
            core_excess += load.saturating_sub(ceil);
            core_shortfall += floor.saturating_sub(load);
        }
        let mut spu_excess = leaving;
        let mut spu_shortfall = 0;
        for (index, spu) in self.spus.iter().enumerate() {
            if spu.drained {
                continue;
            }
            let share_high = (total * spu.cores as u64).div_ceil(core_count);
            let share_low = total * spu.cores as u64 / core_count;
            let load: u64 = (0..spu.cores)
                .map(|core| u64::from(self.replica_counts.get(Core { spu: index, core })))
                .sum();
            spu_excess += load.saturating_sub(share_high);
            spu_shortfall += share_low.saturating_sub(load);
        }
        let bound = core_excess.max(core_shortfall).max(spu_excess).max(spu_shortfall);
        u32::try_from(bound).unwrap_or(u32::MAX)
    }
}
