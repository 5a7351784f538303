//! Seeded randomized test of moving replicas (`controllers::reassign`) together with the
//! SC's other partition rules: moves start and are cancelled at random over six SPUs that go
//! offline and come back, leaders append, followers copy (and cut a diverging tail after a
//! leader change), leaders propose in-sync sets (judged as the SC judges them), and
//! controller passes run with some of their writes lost (as a conflict loses them). Every
//! replica's log is modelled by its end offset. After every step:
//!
//! - the leader is a replica and in the in-sync set; the set holds only replicas;
//! - nothing acknowledged is lost: every in-sync replica (so the leader) holds every
//!   acknowledged record (acknowledged: below the HW of an in-sync set of at least
//!   min-in-sync members, as acks `all` counts);
//! - a replica is dropped only when every target replica is in sync and at least
//!   min-in-sync of them are; a move completes only then;
//! - a moving partition's replicas are the union of target and original.
//!
//! At the end every SPU comes back and, without faults, every move completes.
//!
//! A failure prints its seed: `SLUICE_TEST_SEED=<n>` replays one; `SLUICE_MODEL_CASES=<count>`
//! runs more (default 300), from `SLUICE_MODEL_FIRST_SEED` (default 0).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_proto::api::control::AlterInSyncPartition;
use sluice_proto::ids::{CoreId, SpuId, TimestampMs};
use sluice_proto::object::{
    PartitionKey, ReplicaPlacement, SpuResolution, SpuType, TopicName, TopicSpec, TopicStatus,
};
use sluice_sc::cache::{Cached, Snapshot};
use sluice_sc::controllers::reassign::{begin, cancel};
use sluice_sc::controllers::reducer::{
    managed_spu, reduce, Action, PreferredLeaders, ReduceContext,
};
use sluice_sc::objects::{PartitionObject, TopicObject};
use sluice_sc::spu_link::in_sync::{judge, Verdict};
use sluice_sc::store::Version;

const SPUS: i32 = 6;
const MIN_IN_SYNC: u16 = 2;
const STEPS: usize = 400;
const CASES_DEFAULT: u64 = 300;
const NOW: TimestampMs = TimestampMs(1_000_000);

struct Model {
    snapshot: Snapshot,
    rng: StdRng,
    version: u64,
    /// Log end offset of each replica that exists (a dropped replica's log is gone).
    logs: BTreeMap<(PartitionKey, SpuId), u64>,
    /// The highest acknowledged end of each partition.
    acknowledged: BTreeMap<PartitionKey, u64>,
    moves_started: u64,
    moves_completed: u64,
}

impl Model {
    fn new(seed: u64) -> Model {
        let mut model = Model {
            snapshot: Snapshot::default(),
            rng: StdRng::seed_from_u64(seed),
            version: 0,
            logs: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            moves_started: 0,
            moves_completed: 0,
        };
        for id in 0..SPUS {
            let mut spu = managed_spu(SpuId(id), None);
            spu.spec.spu_type = SpuType::Custom;
            spu.status.cores = 1;
            spu.status.resolution = SpuResolution::Online;
            spu.status.last_heartbeat = Some(NOW);
            let version = model.next_version();
            model.snapshot.spus.insert(SpuId(id), Cached { version, value: spu });
        }
        let spec = TopicSpec { min_in_sync_replicas: MIN_IN_SYNC, ..TopicSpec::computed(3, 3) };
        let topic = TopicObject { spec, status: TopicStatus::default() };
        let version = model.next_version();
        model
            .snapshot
            .topics
            .insert(TopicName::new("moving").unwrap(), Cached { version, value: topic });
        for _ in 0..3 {
            model.pass(1.0);
        }
        assert_eq!(model.snapshot.partitions.len(), 3, "partitions created");
        let replicas: Vec<(PartitionKey, SpuId)> = model
            .snapshot
            .partitions
            .iter()
            .flat_map(|(key, partition)| {
                partition.value.spec.replicas.iter().map(|replica| (key.clone(), replica.spu))
            })
            .collect();
        for replica in replicas {
            model.logs.insert(replica, 0);
        }
        model
    }

    fn next_version(&mut self) -> Version {
        self.version += 1;
        self.snapshot.revision = Version(self.version);
        Version(self.version)
    }

    fn online(&self, spu: SpuId) -> bool {
        self.snapshot.spus.get(&spu).is_some_and(|spu| spu.value.status.is_online())
    }

    fn log(&self, key: &PartitionKey, spu: SpuId) -> u64 {
        self.logs.get(&(key.clone(), spu)).copied().unwrap_or(0)
    }

    fn put_partition(&mut self, key: PartitionKey, object: PartitionObject) {
        let before = self.snapshot.partitions.get(&key).map(|cached| cached.value.clone());
        if let Some(before) = &before {
            self.check_transition(&key, before, &object);
        }
        let version = self.next_version();
        self.snapshot.partitions.insert(key, Cached { version, value: object });
    }

    /// What a stored change may do to the replicas.
    fn check_transition(
        &mut self,
        key: &PartitionKey,
        before: &PartitionObject,
        after: &PartitionObject,
    ) {
        let dropped: Vec<SpuId> = before
            .spec
            .replicas
            .iter()
            .map(|replica| replica.spu)
            .filter(|spu| !after.spec.replicas.iter().any(|replica| replica.spu == *spu))
            .collect();
        if !dropped.is_empty() {
            let target =
                before.spec.reassignment.as_ref().expect("replicas drop only at a move's end");
            for replica in &target.target {
                assert!(
                    before.status.in_sync_replicas.contains(&replica.spu),
                    "{key}: {dropped:?} dropped while target replica {} is not in sync",
                    replica.spu
                );
            }
            let in_sync_target = after.status.in_sync_replicas.len();
            assert!(in_sync_target >= usize::from(MIN_IN_SYNC), "{key}: dropped below min-in-sync");
            for spu in dropped {
                self.logs.remove(&(key.clone(), spu));
            }
        }
        if before.spec.reassignment.is_some() && after.spec.reassignment.is_none() {
            self.moves_completed += 1;
            for replica in &after.spec.replicas {
                assert!(
                    after.status.in_sync_replicas.contains(&replica.spu),
                    "{key}: completed before in sync"
                );
            }
        }
        if after.spec.leader != before.spec.leader {
            assert!(
                before.status.in_sync_replicas.contains(&after.spec.leader),
                "{key}: leader {} was not in sync",
                after.spec.leader
            );
        }
        for replica in &after.spec.replicas {
            self.logs.entry((key.clone(), replica.spu)).or_insert(0);
        }
    }

    /// A controller pass; each write lands with probability `applied` (else it conflicted).
    fn pass(&mut self, applied: f64) {
        let preferred_leaders = if self.rng.gen_bool(0.2) {
            PreferredLeaders::Restore
        } else {
            PreferredLeaders::Leave
        };
        let context = ReduceContext {
            now: NOW,
            started: TimestampMs(0),
            heartbeat_timeout_ms: 60_000,
            preferred_leaders,
        };
        for action in reduce(&self.snapshot, context) {
            if !self.rng.gen_bool(applied) {
                continue;
            }
            match action {
                Action::UpdateTopic { name, object, .. } => {
                    let version = self.next_version();
                    self.snapshot.topics.insert(name, Cached { version, value: object });
                }
                Action::CreatePartition { key, object } => {
                    let version = self.next_version();
                    self.snapshot.partitions.insert(key, Cached { version, value: object });
                }
                Action::UpdatePartition { key, object, .. } => self.put_partition(key, object),
                other => panic!("unexpected action {other:?}"),
            }
        }
    }

    fn random_partition(&mut self) -> (PartitionKey, PartitionObject) {
        let index = self.rng.gen_range(0..self.snapshot.partitions.len());
        let (key, partition) = self.snapshot.partitions.iter().nth(index).unwrap();
        (key.clone(), partition.value.clone())
    }

    fn toggle_spu(&mut self) {
        let id = SpuId(self.rng.gen_range(0..SPUS));
        let mut spu = self.snapshot.spus[&id].value.clone();
        spu.status.resolution =
            if spu.status.is_online() { SpuResolution::Offline } else { SpuResolution::Online };
        let version = self.next_version();
        self.snapshot.spus.insert(id, Cached { version, value: spu });
    }

    /// The leader appends records, and acks `all` acknowledges what the in-sync set holds.
    fn append(&mut self) {
        let (key, partition) = self.random_partition();
        let leader = partition.spec.leader;
        if !self.online(leader) {
            return;
        }
        let records = self.rng.gen_range(1..5);
        *self.logs.get_mut(&(key.clone(), leader)).expect("the leader has a log") += records;
        self.acknowledge(&key, &partition);
    }

    fn acknowledge(&mut self, key: &PartitionKey, partition: &PartitionObject) {
        let in_sync = &partition.status.in_sync_replicas;
        if in_sync.len() < usize::from(MIN_IN_SYNC) || !self.online(partition.spec.leader) {
            return;
        }
        let high_watermark = in_sync.iter().map(|spu| self.log(key, *spu)).min().unwrap_or(0);
        let acknowledged = self.acknowledged.entry(key.clone()).or_insert(0);
        *acknowledged = (*acknowledged).max(high_watermark);
    }

    /// An online follower copies from an online leader; a longer log is cut to the leader's.
    fn replicate(&mut self) {
        let (key, partition) = self.random_partition();
        let leader = partition.spec.leader;
        let followers: Vec<SpuId> = partition.spec.followers().map(|replica| replica.spu).collect();
        if followers.is_empty() || !self.online(leader) {
            return;
        }
        let follower = followers[self.rng.gen_range(0..followers.len())];
        if !self.online(follower) {
            return;
        }
        let leader_end = self.log(&key, leader);
        let step = self.rng.gen_range(0..8);
        let end = self.logs.get_mut(&(key.clone(), follower)).expect("a replica has a log");
        *end = if *end > leader_end { leader_end } else { (*end + step).min(leader_end) };
        self.acknowledge(&key, &partition);
    }

    /// The leader proposes: caught-up online followers in, lagging ones (sometimes) out.
    fn propose(&mut self) {
        let (key, partition) = self.random_partition();
        let leader = partition.spec.leader;
        let leader_end = self.log(&key, leader);
        let mut in_sync = Vec::new();
        for replica in &partition.spec.replicas {
            let spu = replica.spu;
            let member = partition.status.in_sync_replicas.contains(&spu);
            let caught_up = self.online(spu) && self.log(&key, spu) == leader_end;
            let keep = spu == leader || caught_up || (member && self.rng.gen_bool(0.7));
            if keep {
                in_sync.push(spu);
            }
        }
        let proposal = AlterInSyncPartition {
            key: key.clone(),
            leader_epoch: partition.spec.leader_epoch,
            partition_epoch: partition.status.partition_epoch,
            in_sync_replicas: in_sync,
        };
        let verdict = judge(&partition, leader, &proposal, &|spu| self.online(spu));
        let Verdict::Accepted(in_sync) = verdict else { return };
        let mut next = partition;
        next.status.in_sync_replicas = in_sync;
        next.status.partition_epoch = next.status.partition_epoch.next();
        self.put_partition(key, next);
    }

    fn start_move(&mut self) {
        let (key, partition) = self.random_partition();
        if partition.spec.reassignment.is_some() {
            if self.rng.gen_bool(0.2) {
                let cancelled = cancel(&partition).expect("a move to cancel");
                self.put_partition(key, cancelled);
            }
            return;
        }
        let count = self.rng.gen_range(usize::from(MIN_IN_SYNC)..=4);
        let mut spus: Vec<i32> = (0..SPUS).collect();
        let mut target = Vec::new();
        while target.len() < count {
            let spu = spus.remove(self.rng.gen_range(0..spus.len()));
            target.push(ReplicaPlacement { spu: SpuId(spu), core: CoreId(0) });
        }
        if let Some(next) = begin(&partition, target, None).expect("a valid target") {
            self.moves_started += 1;
            self.put_partition(key, next);
        }
    }

    fn check(&self) {
        for (key, partition) in &self.snapshot.partitions {
            let (spec, status) = (&partition.value.spec, &partition.value.status);
            assert!(
                spec.replicas.iter().any(|replica| replica.spu == spec.leader),
                "{key}: leader not a replica"
            );
            assert!(status.in_sync_replicas.contains(&spec.leader), "{key}: leader not in sync");
            for spu in &status.in_sync_replicas {
                assert!(
                    spec.replicas.iter().any(|replica| replica.spu == *spu),
                    "{key}: {spu} in sync, not a replica"
                );
                let acknowledged = self.acknowledged.get(key).copied().unwrap_or(0);
                assert!(
                    self.log(key, *spu) >= acknowledged,
                    "{key}: in-sync replica {spu} lost acknowledged records ({} < {acknowledged})",
                    self.log(key, *spu)
                );
            }
            if let Some(moving) = &spec.reassignment {
                assert_eq!(spec.replicas, moving.union(), "{key}: replicas are the union");
            }
        }
    }

    fn step(&mut self) {
        match self.rng.gen_range(0..100) {
            0..=9 => self.toggle_spu(),
            10..=29 => self.append(),
            30..=54 => self.replicate(),
            55..=69 => self.propose(),
            70..=79 => self.start_move(),
            _ => self.pass(0.8),
        }
        self.check();
    }

    /// Every SPU online, no faults: every move must complete.
    fn settle(&mut self) {
        for id in 0..SPUS {
            let mut spu = self.snapshot.spus[&SpuId(id)].value.clone();
            spu.status.resolution = SpuResolution::Online;
            let version = self.next_version();
            self.snapshot.spus.insert(SpuId(id), Cached { version, value: spu });
        }
        // Random partitions and followers each step, a few records per replication: a
        // six-replica partition far behind needs thousands of steps (seed 4026 needed more
        // than 2,000); the loop ends as soon as every move completed.
        for _ in 0..20_000 {
            match self.rng.gen_range(0..3) {
                0 => self.replicate(),
                1 => self.propose(),
                _ => self.pass(1.0),
            }
            self.check();
            if self
                .snapshot
                .partitions
                .values()
                .all(|partition| partition.value.spec.reassignment.is_none())
            {
                return;
            }
        }
        let stuck: Vec<_> = self
            .snapshot
            .partitions
            .iter()
            .filter(|(_, partition)| partition.value.spec.reassignment.is_some())
            .map(|(key, partition)| (key.to_string(), partition.value.clone()))
            .collect();
        panic!("moves did not complete without faults: {stuck:?}");
    }
}

fn run(seed: u64) -> (u64, u64) {
    let mut model = Model::new(seed);
    for _ in 0..STEPS {
        model.step();
    }
    model.settle();
    (model.moves_started, model.moves_completed)
}

#[test]
fn reassignment_keeps_its_invariants() {
    let env = |name: &str| std::env::var(name).ok().and_then(|value| value.parse::<u64>().ok());
    let seeds = match env("SLUICE_TEST_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let first = env("SLUICE_MODEL_FIRST_SEED").unwrap_or(0);
            first..first + env("SLUICE_MODEL_CASES").unwrap_or(CASES_DEFAULT)
        }
    };
    let (mut started, mut completed) = (0, 0);
    for seed in seeds {
        match std::panic::catch_unwind(|| run(seed)) {
            Ok((seed_started, seed_completed)) => {
                started += seed_started;
                completed += seed_completed;
            }
            Err(panic) => {
                eprintln!("reassignment model failed with SLUICE_TEST_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("{started} moves started, {completed} completed (cancels included)");
    assert!(completed > 0, "the model completed no move");
}
