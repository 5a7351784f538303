//! Seeded randomized model of one RF 3 partition (min in-sync 2): three SPUs and the SC, driven
//! through appends (acks `all`), follower fetches and epoch questions, in-sync proposals and
//! their answers, live status reports, controller passes, crashes with torn tails and restarts,
//! with messages lost, delayed and reordered. The decisions are the real ones: `LeaderState`
//! and `FollowerState` (with `divergence`) on the SPUs, `next_state`, `leader_restarted` and
//! `judge` on the SC; the glue around them follows `spu/src/replication/role.rs`, and the
//! replica log is an in-memory model ([`log::ModelLog`]).
//!
//! Checked after every step:
//! - no acknowledged (acks `all`) record is lost or changed: every leader holds each one;
//! - every replica's log below its HW is the one committed history (so replicas agree up to
//!   their HWs, same epoch and value at each offset);
//! - the HW a leader serving committed reads exposes never goes back, across leader changes;
//! - leader epochs only grow (the SC's, each replica's role, each log's history); a follower
//!   appends only at its end; a cut never goes below the HW the follower holds
//!   (`follower::check_cut` panics).
//!
//! Assumption (stated by `leader.rs`): an SC request older than `PROPOSAL_TIMEOUT` is judged or
//! dead, so the model drops proposals and answers delivered later than that.
//!
//! A failure prints its seed: `SLUICE_TEST_SEED=<n>` replays one; `SLUICE_MODEL_CASES=<count>`
//! runs more (default 1500), from `SLUICE_MODEL_FIRST_SEED` (default 0).

#[path = "replication_model/log.rs"]
mod log;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::{AppendRefusal, Batch, ModelLog};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_proto::api::control::AlterInSyncPartition;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, Offset, PartitionEpoch, PartitionId, SpuId};
use sluice_proto::object::{
    InSyncSet, PartitionKey, PartitionResolution, PartitionSpec, PartitionStatus, ReplicaStatus,
    SpuResolution, TopicName,
};
use sluice_sc::controllers::partitions::{leader_restarted, next_state, PreferredLeaders};
use sluice_sc::controllers::reducer::placement;
use sluice_sc::objects::PartitionObject;
use sluice_sc::spu_link::in_sync::{judge, Verdict};
use sluice_spu::replication::divergence::{self, EpochAnswer, LocalLog};
use sluice_spu::replication::follower::{self, FollowerState, LogAction, Step};
use sluice_spu::replication::leader::{
    AckState, LeaderSettings, LeaderState, Takeover, PROPOSAL_TIMEOUT,
};

const CASES_DEFAULT: u64 = 2000;
const STEPS: usize = 600;
/// Chance that a step crashes an SPU.
const CRASH_PROBABILITY: f64 = 0.005;
const SPUS: [SpuId; 3] = [SpuId(1), SpuId(2), SpuId(3)];
const SETTINGS: LeaderSettings =
    LeaderSettings { min_in_sync: 2, lag_max: Duration::from_millis(1500) };
/// A follower gives up on a request after this long (the fetch wait plus the grace).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(3000);
/// Records per fetch answer at most.
const FETCH_BATCHES_MAX: usize = 4;

enum Role {
    Starting,
    Leader(LeaderState),
    Follower(FollowerState),
}

/// What a follower sent with a fetch (role.rs `FetchPosition`).
#[derive(Clone, Copy, Debug)]
struct Position {
    fetch_offset: Offset,
    acknowledged_end: Offset,
    epoch: LeaderEpoch,
    last_fetched_epoch: Option<LeaderEpoch>,
    generation: u64,
}

/// The sending follower's fetch session, for its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    spu: SpuId,
    incarnation: u64,
    number: u64,
}

#[derive(Debug)]
enum Body {
    Fetch(Position),
    FetchAnswer {
        position: Position,
        error_code: ErrorCode,
        records: Vec<Batch>,
        high_watermark: Offset,
    },
    Ask {
        asked: LeaderEpoch,
        followed: LeaderEpoch,
        generation: u64,
    },
    EpochAnswer {
        asked: LeaderEpoch,
        followed: LeaderEpoch,
        generation: u64,
        answer: Result<EpochAnswer, ErrorCode>,
    },
    Propose(AlterInSyncPartition),
    ProposalAnswer {
        leader_epoch: LeaderEpoch,
        in_sync: InSyncSet,
    },
    Report {
        leader_epoch: LeaderEpoch,
        statuses: Vec<ReplicaStatus>,
    },
}

#[derive(Debug)]
struct Message {
    /// The follower session a fetch or question belongs to (its answer goes back to it).
    session: Option<Session>,
    from: SpuId,
    /// `None`: the SC.
    to: Option<SpuId>,
    /// The receiver's incarnation when sent (a restart closes its connections).
    to_incarnation: u64,
    sent_at: Instant,
    body: Body,
}

struct Spu {
    id: SpuId,
    up: bool,
    incarnation: u64,
    log: ModelLog,
    role: Role,
    /// The newest epoch this incarnation took a role in.
    role_epoch: Option<LeaderEpoch>,
    /// The follower's fetch session: its number and when its request went out.
    session_number: u64,
    outstanding: Option<Instant>,
    /// Appended batches the follower waits to see durable before it adopts this leader HW.
    awaiting: Option<Offset>,
}

struct Sc {
    partition: PartitionObject,
    resolution: BTreeMap<SpuId, SpuResolution>,
    /// The incarnation of each SPU's current session.
    session: BTreeMap<SpuId, u64>,
}

/// An acks `all` append waiting for its answer.
struct Waiting {
    spu: SpuId,
    incarnation: u64,
    epoch: LeaderEpoch,
    offset: Offset,
    value: u64,
}

struct Model {
    rng: StdRng,
    now: Instant,
    spus: Vec<Spu>,
    sc: Sc,
    network: Vec<Message>,
    waiting: Vec<Waiting>,
    acknowledged: BTreeMap<Offset, Batch>,
    /// The committed history: the longest prefix any replica's HW covered.
    committed: Vec<Batch>,
    /// The highest HW a leader serving committed reads exposed.
    exposed_high_watermark: Offset,
    sc_leader_epoch: LeaderEpoch,
    next_value: u64,
    trace: Vec<String>,
}

fn key() -> PartitionKey {
    PartitionKey::new(TopicName::new("model").expect("a valid name"), PartitionId(0))
}

impl Model {
    fn new(seed: u64) -> Model {
        let partition = PartitionObject {
            spec: PartitionSpec {
                replicas: SPUS.iter().map(|spu| placement(spu.get(), 0)).collect(),
                leader: SPUS[0],
                leader_epoch: LeaderEpoch(0),
                ..PartitionSpec::default()
            },
            status: PartitionStatus {
                resolution: PartitionResolution::Online,
                in_sync_replicas: SPUS.to_vec(),
                partition_epoch: PartitionEpoch(0),
                ..PartitionStatus::default()
            },
        };
        let spus = SPUS
            .iter()
            .map(|id| Spu {
                id: *id,
                up: true,
                incarnation: 0,
                log: ModelLog::default(),
                role: Role::Starting,
                role_epoch: None,
                session_number: 0,
                outstanding: None,
                awaiting: None,
            })
            .collect();
        let sc = Sc {
            partition,
            resolution: SPUS.iter().map(|spu| (*spu, SpuResolution::Online)).collect(),
            session: SPUS.iter().map(|spu| (*spu, 0)).collect(),
        };
        let mut model = Model {
            rng: StdRng::seed_from_u64(seed),
            now: Instant::now(),
            spus,
            sc,
            network: Vec::new(),
            waiting: Vec::new(),
            acknowledged: BTreeMap::new(),
            committed: Vec::new(),
            exposed_high_watermark: Offset(0),
            sc_leader_epoch: LeaderEpoch(0),
            next_value: 0,
            trace: Vec::new(),
        };
        for index in 0..SPUS.len() {
            model.assign(index);
        }
        model
    }

    fn index(id: SpuId) -> usize {
        SPUS.iter().position(|spu| *spu == id).expect("a replica")
    }

    fn send(&mut self, session: Option<Session>, from: SpuId, to: Option<SpuId>, body: Body) {
        let to_incarnation = to.map_or(0, |to| self.spus[Self::index(to)].incarnation);
        self.network.push(Message { session, from, to, to_incarnation, sent_at: self.now, body });
    }

    // ----- SPU side: assignments and roles (role.rs apply_assignment / promote) -----------

    fn assign(&mut self, index: usize) {
        let spu = &self.spus[index];
        if !spu.up || self.sc.session.get(&spu.id) != Some(&spu.incarnation) {
            return;
        }
        let spec = self.sc.partition.spec.clone();
        let in_sync = self.sc.partition.status.in_sync();
        let leads = spec.leader == spu.id;
        let spu = &mut self.spus[index];
        if let Some(epoch) = spu.role_epoch {
            assert!(spec.leader_epoch >= epoch, "an assignment went back from epoch {epoch}");
        }
        let keep = match &mut spu.role {
            Role::Leader(leader) if leads && leader.epoch() == spec.leader_epoch => {
                leader.on_assignment(in_sync.clone());
                true
            }
            Role::Follower(follower)
                if !leads
                    && follower.leader() == spec.leader
                    && follower.epoch() == spec.leader_epoch =>
            {
                true
            }
            _ => false,
        };
        if keep {
            self.advance_high_watermark(index);
            return;
        }
        spu.role_epoch = Some(spec.leader_epoch);
        spu.awaiting = None;
        self.waiting.retain(|waiting| waiting.spu != spu.id);
        if leads {
            spu.log.assign_epoch(spec.leader_epoch);
            let takeover = Takeover {
                me: spu.id,
                epoch: spec.leader_epoch,
                epoch_start: spu.log.appended_end(),
                replicas: SPUS.to_vec(),
                in_sync,
                high_watermark: spu.log.high_watermark(),
            };
            spu.role = Role::Leader(LeaderState::new(takeover, SETTINGS, self.now));
            spu.log.sync();
            self.trace.push(format!("{} leads in {}", spu.id, spec.leader_epoch));
            self.advance_high_watermark(index);
        } else {
            spu.role = Role::Follower(FollowerState::new(spec.leader, spec.leader_epoch));
            spu.outstanding = None;
        }
    }

    fn advance_high_watermark(&mut self, index: usize) {
        let spu = &mut self.spus[index];
        let own_end = spu.log.durable_end();
        if let Role::Leader(leader) = &mut spu.role {
            if leader.update_high_watermark(own_end) {
                assert!(leader.high_watermark() >= spu.log.high_watermark(), "HW went back");
                spu.log.set_high_watermark(leader.high_watermark());
            }
        }
    }

    // ----- leader side ---------------------------------------------------------------------

    fn append(&mut self, index: usize) {
        let value = self.next_value;
        let spu = &mut self.spus[index];
        let Role::Leader(leader) = &spu.role else { return };
        if !leader.enough_in_sync() {
            return;
        }
        self.next_value += 1;
        let offset = spu.log.appended_end();
        let epoch = leader.epoch();
        spu.log.append(Batch { epoch, value });
        self.waiting.push(Waiting {
            spu: spu.id,
            incarnation: spu.incarnation,
            epoch,
            offset,
            value,
        });
    }

    /// Answers acks `all` waiters whose fate is known (role.rs wait_committed).
    fn settle_waiters(&mut self) {
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.retain(|append| {
            let spu = &self.spus[Self::index(append.spu)];
            let Role::Leader(leader) = &spu.role else { return false };
            if !spu.up || spu.incarnation != append.incarnation || leader.epoch() != append.epoch {
                return false;
            }
            match leader.ack_state(append.offset.next()) {
                AckState::Waiting => true,
                AckState::TooFewInSync => false,
                AckState::Acknowledged => {
                    let batch = Batch { epoch: append.epoch, value: append.value };
                    assert_eq!(spu.log.batch(append.offset), Some(batch), "acknowledging");
                    self.acknowledged.insert(append.offset, batch);
                    false
                }
            }
        });
        self.waiting = waiting;
    }

    fn on_fetch(&mut self, index: usize, message: &Message, position: Position) {
        let follower = message.from;
        let now = self.now;
        let spu = &mut self.spus[index];
        let log_end = spu.log.log_end();
        let own_end = spu.log.durable_end();
        let checked = match &mut spu.role {
            Role::Leader(leader) => {
                if position.epoch > leader.epoch() {
                    Err(ErrorCode::UnknownLeaderEpoch)
                } else if position.epoch < leader.epoch() {
                    Err(ErrorCode::FencedLeaderEpoch)
                } else if !divergence::follower_matches(
                    &spu.log.epochs,
                    log_end,
                    position.last_fetched_epoch,
                    position.fetch_offset,
                ) {
                    Err(ErrorCode::LogDiverged)
                } else {
                    let recorded = leader.on_fetch(
                        follower,
                        position.fetch_offset,
                        position.acknowledged_end,
                        log_end,
                        now,
                    );
                    assert!(recorded.is_ok());
                    Ok(())
                }
            }
            _ => Err(ErrorCode::NotLeader),
        };
        if checked.is_ok() {
            if let Role::Leader(leader) = &mut spu.role {
                if leader.update_high_watermark(own_end) {
                    spu.log.set_high_watermark(leader.high_watermark());
                }
            }
        }
        let mut records = Vec::new();
        if checked.is_ok() {
            let mut at = position.fetch_offset;
            while at < log_end && records.len() < FETCH_BATCHES_MAX {
                records.push(spu.log.batch(at).expect("below the log end"));
                at = at.next();
            }
        }
        let body = Body::FetchAnswer {
            position,
            error_code: checked.err().unwrap_or(ErrorCode::None),
            records,
            high_watermark: spu.log.high_watermark(),
        };
        let (from, session) = (spu.id, message.session);
        self.send(session, from, Some(follower), body);
    }

    fn on_ask(
        &mut self,
        index: usize,
        message: &Message,
        asked: LeaderEpoch,
        followed: LeaderEpoch,
        generation: u64,
    ) {
        let spu = &self.spus[index];
        let answer = match spu.role {
            Role::Leader(_) => {
                Ok(divergence::answer(&spu.log.epochs, spu.log.appended_end(), Offset(0), asked))
            }
            _ => Err(ErrorCode::NotLeader),
        };
        let body = Body::EpochAnswer { asked, followed, generation, answer };
        let (from, session) = (spu.id, message.session);
        self.send(session, from, Some(message.from), body);
    }

    fn propose(&mut self, index: usize) {
        let now = self.now;
        let spu = &mut self.spus[index];
        let Role::Leader(leader) = &mut spu.role else { return };
        let Some(proposal) = leader.propose(now) else { return };
        let body = Body::Propose(AlterInSyncPartition {
            key: key(),
            leader_epoch: leader.epoch(),
            partition_epoch: proposal.based_on,
            in_sync_replicas: proposal.in_sync_replicas,
        });
        let from = spu.id;
        self.send(None, from, None, body);
    }

    fn report(&mut self, index: usize) {
        let spu = &self.spus[index];
        let Role::Leader(leader) = &spu.role else { return };
        let mut statuses = vec![ReplicaStatus {
            spu: spu.id,
            high_watermark: spu.log.high_watermark(),
            log_end_offset: spu.log.log_end(),
            durable_end_offset: spu.log.durable_end(),
            lag_records: 0,
        }];
        statuses.extend(leader.follower_statuses(spu.log.log_end()));
        let body = Body::Report { leader_epoch: leader.epoch(), statuses };
        let from = spu.id;
        self.send(None, from, None, body);
    }

    // ----- follower side (role.rs follower_step / on_epoch_answer / on_fetch_answer) --------

    fn follower_round(&mut self, index: usize) {
        let now = self.now;
        let spu = &mut self.spus[index];
        if spu.awaiting.is_some() {
            return;
        }
        if let Some(since) = spu.outstanding {
            if now.saturating_duration_since(since) < ANSWER_TIMEOUT {
                return;
            }
            // No answer in time: the session ends, a new one starts.
            spu.session_number += 1;
            spu.outstanding = None;
        }
        let latest = spu.log.epochs.last().map(|entry| entry.epoch);
        let Role::Follower(follower) = &mut spu.role else { return };
        let leader = follower.leader();
        let session =
            Session { spu: spu.id, incarnation: spu.incarnation, number: spu.session_number };
        let body = match follower.next_step(latest, now) {
            Step::WaitUntil(_) => return,
            Step::AskEpoch(asked) => {
                Body::Ask { asked, followed: follower.epoch(), generation: follower.generation() }
            }
            Step::Fetch => Body::Fetch(Position {
                fetch_offset: spu.log.appended_end(),
                acknowledged_end: spu.log.durable_end(),
                epoch: follower.epoch(),
                last_fetched_epoch: latest,
                generation: follower.generation(),
            }),
        };
        spu.outstanding = Some(now);
        let from = spu.id;
        self.send(Some(session), from, Some(leader), body);
    }

    fn follows_at(spu: &Spu, epoch: LeaderEpoch, generation: u64) -> bool {
        matches!(&spu.role, Role::Follower(follower) if follower.epoch() == epoch && follower.generation() == generation)
    }

    fn apply_log_action(&mut self, index: usize, action: LogAction) {
        let spu = &mut self.spus[index];
        match action {
            LogAction::None => {}
            LogAction::Truncate(cut) => {
                follower::check_cut(cut, spu.log.high_watermark(), false);
                self.trace.push(format!("{} cuts at {cut}", spu.id));
                spu.log.truncate_to(cut);
            }
            LogAction::RestartAt(start) => panic!("no retention in the model: restart at {start}"),
        }
    }

    fn on_epoch_answer(
        &mut self,
        index: usize,
        asked: LeaderEpoch,
        followed: LeaderEpoch,
        generation: u64,
        answer: Result<EpochAnswer, ErrorCode>,
    ) {
        let now = self.now;
        let spu = &mut self.spus[index];
        if !Self::follows_at(spu, followed, generation) {
            return;
        }
        let local = LocalLog { epochs: &spu.log.epochs, log_end: spu.log.appended_end() };
        let Role::Follower(follower) = &mut spu.role else { return };
        let action = follower.on_epoch_answer(local, asked, answer, now);
        self.apply_log_action(index, action);
    }

    fn on_fetch_answer(
        &mut self,
        index: usize,
        position: Position,
        error_code: ErrorCode,
        records: &[Batch],
        high_watermark: Offset,
    ) {
        let now = self.now;
        let spu = &mut self.spus[index];
        if !Self::follows_at(spu, position.epoch, position.generation) {
            return;
        }
        if !error_code.is_ok() {
            let Role::Follower(follower) = &mut spu.role else { return };
            let action = follower.on_fetch_error(error_code, Offset(0), now);
            self.apply_log_action(index, action);
            return;
        }
        let mut appended = false;
        if !records.is_empty() && spu.log.appended_end() == position.fetch_offset {
            for (at, batch) in records.iter().enumerate() {
                let base = Offset(position.fetch_offset.get() + at as i64);
                match spu.log.append_replicated(base, *batch) {
                    Ok(()) => appended = true,
                    Err(AppendRefusal::NotAtLogEnd | AppendRefusal::EpochRegression) => {
                        if let Role::Follower(follower) = &mut spu.role {
                            follower.on_fetch_error(ErrorCode::LogDiverged, Offset(0), now);
                        }
                        break;
                    }
                }
            }
        }
        if appended {
            spu.awaiting = Some(high_watermark);
        } else {
            Self::adopt_high_watermark(spu, high_watermark);
        }
    }

    fn adopt_high_watermark(spu: &mut Spu, leader_high_watermark: Offset) {
        if !matches!(spu.role, Role::Follower(_)) {
            return;
        }
        let current = spu.log.high_watermark();
        let adopted =
            follower::adopt_high_watermark(current, leader_high_watermark, spu.log.log_end());
        spu.log.set_high_watermark(adopted);
    }

    /// The follower's appended batches became durable: it adopts the HW and fetches again.
    fn acknowledge(&mut self, index: usize) {
        let spu = &mut self.spus[index];
        let Some(high_watermark) = spu.awaiting.take() else { return };
        spu.log.sync();
        Self::adopt_high_watermark(spu, high_watermark);
    }

    // ----- SC side -------------------------------------------------------------------------

    fn store(&mut self, next: PartitionObject, why: &str) {
        let before = &self.sc.partition;
        assert!(
            next.spec.leader_epoch >= before.spec.leader_epoch,
            "the SC's leader epoch went back"
        );
        assert!(next.status.partition_epoch >= before.status.partition_epoch);
        if next.spec.leader_epoch != before.spec.leader_epoch
            || next.spec.leader != before.spec.leader
        {
            self.trace.push(format!(
                "SC {why}: leader {} epoch {} in sync {:?}",
                next.spec.leader, next.spec.leader_epoch, next.status.in_sync_replicas
            ));
        }
        self.sc_leader_epoch = next.spec.leader_epoch;
        self.sc.partition = next;
    }

    fn sc_pass(&mut self) {
        let preferred = if self.rng.gen_bool(0.2) {
            PreferredLeaders::Restore
        } else {
            PreferredLeaders::Leave
        };
        let resolution = self.sc.resolution.clone();
        let (next, _) =
            next_state(&self.sc.partition, &|spu| resolution.get(&spu).copied(), preferred);
        self.store(next, "pass");
    }

    fn sc_on_propose(&mut self, from: SpuId, proposal: &AlterInSyncPartition) {
        let resolution = self.sc.resolution.clone();
        let online = |spu: SpuId| resolution.get(&spu) == Some(&SpuResolution::Online);
        if self.rng.gen_bool(0.05) {
            // The store failed (the write may or may not have landed).
            if self.rng.gen_bool(0.5) {
                self.store_proposal(from, proposal);
            }
            let body = Body::ProposalAnswer {
                leader_epoch: LeaderEpoch::default(),
                in_sync: InSyncSet::default(),
            };
            self.send(None, from, Some(from), body);
            return;
        }
        let verdict = judge(&self.sc.partition, from, proposal, &online);
        if let Verdict::Accepted(_) = verdict {
            self.store_proposal(from, proposal);
        }
        let body = Body::ProposalAnswer {
            leader_epoch: self.sc.partition.spec.leader_epoch,
            in_sync: self.sc.partition.status.in_sync(),
        };
        self.send(None, from, Some(from), body);
    }

    fn store_proposal(&mut self, proposer: SpuId, proposal: &AlterInSyncPartition) {
        let resolution = self.sc.resolution.clone();
        let online = |spu: SpuId| resolution.get(&spu) == Some(&SpuResolution::Online);
        if let Verdict::Accepted(in_sync) = judge(&self.sc.partition, proposer, proposal, &online) {
            let mut next = self.sc.partition.clone();
            next.status.in_sync_replicas = in_sync;
            next.status.partition_epoch = next.status.partition_epoch.next();
            self.store(next, "in-sync proposal");
        }
    }

    fn sc_on_report(&mut self, from: SpuId, leader_epoch: LeaderEpoch, statuses: &[ReplicaStatus]) {
        let partition = &mut self.sc.partition;
        if partition.spec.leader != from || partition.spec.leader_epoch != leader_epoch {
            return;
        }
        partition.status.leader = statuses[0];
        partition.status.replicas = statuses[1..].to_vec();
    }

    fn crash(&mut self, index: usize) {
        let spu = &mut self.spus[index];
        if !spu.up {
            return;
        }
        spu.up = false;
        spu.log.crash(&mut self.rng);
        spu.role = Role::Starting;
        spu.role_epoch = None;
        spu.awaiting = None;
        spu.outstanding = None;
        self.trace.push(format!("{} crashed, log end {}", spu.id, spu.log.appended_end()));
    }

    fn session_ends(&mut self, index: usize) {
        let spu = &self.spus[index];
        if !spu.up && self.sc.session.get(&spu.id) == Some(&spu.incarnation) {
            self.sc.resolution.insert(spu.id, SpuResolution::Offline);
        }
    }

    /// Restart and registration (session.rs `register`).
    fn restart(&mut self, index: usize) {
        let spu = &mut self.spus[index];
        if spu.up {
            return;
        }
        spu.up = true;
        spu.incarnation += 1;
        spu.session_number = 0;
        let id = spu.id;
        self.sc.session.insert(id, spu.incarnation);
        self.sc.resolution.insert(id, SpuResolution::Online);
        if let Some(restarted) = leader_restarted(&self.sc.partition, id) {
            self.store(restarted, "leader restarted");
        }
        self.assign(index);
    }

    // ----- the network ---------------------------------------------------------------------

    fn deliver(&mut self) {
        if self.network.is_empty() {
            return;
        }
        let pick =
            if self.rng.gen_bool(0.5) { 0 } else { self.rng.gen_range(0..self.network.len()) };
        let message = self.network.remove(pick);
        if self.rng.gen_bool(0.05) {
            return; // lost
        }
        let sc_bound = matches!(message.body, Body::Propose(_) | Body::ProposalAnswer { .. });
        if sc_bound && self.now.saturating_duration_since(message.sent_at) >= PROPOSAL_TIMEOUT {
            return;
        }
        let Some(to) = message.to else {
            match &message.body {
                Body::Propose(proposal) => {
                    let proposal = proposal.clone();
                    self.sc_on_propose(message.from, &proposal);
                }
                Body::Report { leader_epoch, statuses } => {
                    let statuses = statuses.clone();
                    self.sc_on_report(message.from, *leader_epoch, &statuses);
                }
                other => panic!("not for the SC: {other:?}"),
            }
            return;
        };
        let index = Self::index(to);
        let spu = &self.spus[index];
        if !spu.up || spu.incarnation != message.to_incarnation {
            return;
        }
        if let Some(session) = message.session {
            // Answers go to the follower session that asked only.
            let answer =
                matches!(message.body, Body::FetchAnswer { .. } | Body::EpochAnswer { .. });
            if answer {
                let current = Session {
                    spu: spu.id,
                    incarnation: spu.incarnation,
                    number: spu.session_number,
                };
                if session != current {
                    return;
                }
                self.spus[index].outstanding = None;
            }
        }
        match message.body {
            Body::Fetch(position) => self.on_fetch(index, &message, position),
            Body::Ask { asked, followed, generation } => {
                self.on_ask(index, &message, asked, followed, generation)
            }
            Body::FetchAnswer { position, error_code, ref records, high_watermark } => {
                let records = records.clone();
                self.on_fetch_answer(index, position, error_code, &records, high_watermark)
            }
            Body::EpochAnswer { asked, followed, generation, answer } => {
                self.on_epoch_answer(index, asked, followed, generation, answer)
            }
            Body::ProposalAnswer { leader_epoch, ref in_sync } => {
                let in_sync = in_sync.clone();
                if let Role::Leader(leader) = &mut self.spus[index].role {
                    leader.on_proposal_answer(leader_epoch, in_sync);
                }
                self.advance_high_watermark(index);
            }
            Body::Propose(_) | Body::Report { .. } => panic!("for the SC"),
        }
    }

    // ----- one step and the invariants -----------------------------------------------------

    fn step(&mut self) {
        self.now += Duration::from_millis(self.rng.gen_range(0..30));
        let index = self.rng.gen_range(0..SPUS.len());
        let up = self.spus[index].up;
        if self.rng.gen_bool(CRASH_PROBABILITY) {
            if self.spus.iter().filter(|spu| spu.up).count() > 1 || self.rng.gen_bool(0.2) {
                self.crash(index);
            }
        } else {
            match self.rng.gen_range(0..100) {
                0..=14 if up => self.append(index),
                15..=34 if up => self.follower_round(index),
                35..=64 => self.deliver(),
                65..=72 if up => self.acknowledge(index),
                73..=74 if up => self.spus[index].log.write(),
                75..=79 if up => {
                    self.spus[index].log.sync();
                    self.advance_high_watermark(index);
                }
                80..=82 if up => self.propose(index),
                83..=84 if up => self.report(index),
                85 if up => self.spus[index].log.checkpoint_high_watermark(),
                86..=88 => self.sc_pass(),
                89..=93 => {
                    // The SC pushes its assignment to every SPU it has a session with.
                    for spu in 0..SPUS.len() {
                        self.assign(spu);
                    }
                }
                94..=96 => self.session_ends(index),
                97..=99 => self.restart(index),
                _ => {}
            }
        }
        self.settle_waiters();
    }

    fn check(&mut self) {
        for spu in &self.spus {
            let high_watermark = spu.log.high_watermark();
            let covered = usize::try_from(high_watermark.get()).expect("an offset");
            for (at, batch) in spu.log.batches.iter().take(covered).enumerate() {
                match self.committed.get(at) {
                    Some(committed) => assert_eq!(
                        committed, batch,
                        "{} holds another record at {at} below its HW {high_watermark}",
                        spu.id
                    ),
                    None => self.committed.push(*batch),
                }
            }
            if let Role::Leader(leader) = &spu.role {
                assert!(leader.high_watermark() <= spu.log.durable_end());
                for (offset, batch) in &self.acknowledged {
                    assert_eq!(
                        spu.log.batch(*offset),
                        Some(*batch),
                        "leader {} (epoch {}) lacks acknowledged record {offset}",
                        spu.id,
                        leader.epoch()
                    );
                }
                if leader.committed_reads_allowed() && leader.epoch() == self.sc_leader_epoch {
                    assert!(
                        leader.high_watermark() >= self.exposed_high_watermark,
                        "leader {} exposes HW {} below {} shown before",
                        spu.id,
                        leader.high_watermark(),
                        self.exposed_high_watermark
                    );
                    self.exposed_high_watermark = leader.high_watermark();
                }
            }
        }
        for (offset, batch) in &self.acknowledged {
            let at = usize::try_from(offset.get()).expect("an offset");
            assert_eq!(self.committed.get(at), Some(batch), "acknowledged {offset} not committed");
        }
    }
}

/// What one case did, for the summary.
#[derive(Default)]
struct Totals {
    acknowledged: usize,
    leaderships: usize,
    cuts: usize,
    restarts: usize,
}

fn run_case(seed: u64, totals: &mut Totals) -> Result<(), String> {
    let mut model = Model::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..STEPS {
            model.step();
            model.check();
        }
    }));
    if std::env::var("SLUICE_MODEL_VERBOSE").is_ok() {
        for spu in &model.spus {
            let role = match &spu.role {
                Role::Starting => "starting".to_owned(),
                Role::Leader(leader) => format!(
                    "leader {:?} pending {:?} in sync {:?}",
                    leader.epoch(),
                    leader.pending(),
                    leader.in_sync()
                ),
                Role::Follower(follower) => {
                    format!("follower {:?} {:?}", follower.epoch(), follower.phase())
                }
            };
            eprintln!("{} up {} end {} durable {} hw {} epochs {:?} {role} awaiting {:?} outstanding {:?}", spu.id, spu.up, spu.log.appended_end(), spu.log.durable_end(), spu.log.high_watermark(), spu.log.epochs, spu.awaiting, spu.outstanding.is_some());
        }
        eprintln!("sc {:?} network {}", model.sc.partition, model.network.len());
    }
    totals.acknowledged += model.acknowledged.len();
    totals.leaderships += model.trace.iter().filter(|line| line.contains(" leads in ")).count();
    totals.cuts += model.trace.iter().filter(|line| line.contains(" cuts at ")).count();
    totals.restarts += model.trace.iter().filter(|line| line.contains("leader restarted")).count();
    outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_default();
        let recent = model.trace.iter().rev().take(12).rev().cloned().collect::<Vec<_>>();
        format!("{message}\nlast events: {recent:#?}")
    })
}

#[test]
fn replication_model() {
    let env = |name: &str| std::env::var(name).ok().and_then(|value| value.parse::<u64>().ok());
    let seeds = match env("SLUICE_TEST_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let first = env("SLUICE_MODEL_FIRST_SEED").unwrap_or(0);
            first..first + env("SLUICE_MODEL_CASES").unwrap_or(CASES_DEFAULT)
        }
    };
    let started = Instant::now();
    let mut totals = Totals::default();
    for seed in seeds.clone() {
        if let Err(failure) = run_case(seed, &mut totals) {
            panic!("replication model failed with SLUICE_TEST_SEED={seed}: {failure}");
        }
    }
    let Totals { acknowledged, leaderships, cuts, restarts } = totals;
    eprintln!(
        "seeds {seeds:?} in {:?}: {acknowledged} records acknowledged, {leaderships} \
         leaderships taken, {cuts} follower cuts, {restarts} leader restarts",
        started.elapsed()
    );
}
