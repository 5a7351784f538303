//! A replica's role and its changes, and the role-specific operations the I/O code calls:
//! the leader's side of a follower fetch and of an epoch question, the follower's handling of
//! answers, in-sync proposals and their answers.
//!
//! Transitions (on the owning core, from the SC's assignments, one at a time per replica):
//! - **Promotion** (the spec names this SPU leader in a newer epoch, or the replica starts as
//!   leader): takes the role gate (no replicated append or cut runs meanwhile), records the
//!   epoch's start at the log's appended end ([`crate::storage::ReplicaLog::assign_epoch`],
//!   checkpointed before anything is appended in the epoch), then leads from the HW the log
//!   holds. What the log holds that is not durable yet is synced, so the leader's own end
//!   counts.
//! - **Demotion / new leader followed**: takes the role gate and starts a follower of the new
//!   leader and epoch, which finds its divergence point before fetching. Waiters of acks `all`
//!   see the role change and answer `RequestTimedOut` (their appends' fate is unknown).
//! - **Same role and epoch**: the leader takes the SC's newer in-sync set.
//! - **A failed promotion** (the epoch's start could not be recorded: a full disk, an I/O
//!   error) leaves the replica serving nothing while the SC names it leader, so nothing else
//!   leads the partition: the background timer tries the promotion again every
//!   [`PROMOTION_RETRY_INTERVAL`] for as long as the spec still names this SPU leader.

use std::time::{Duration, Instant};

use sluice_proto::api::control::{AlterInSyncPartition, AlterInSyncResult};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, Offset, SpuId};
use sluice_proto::object::{InSyncSet, PartitionSpec, ReplicaStatus};

use super::divergence::{self, EpochAnswer, LocalLog};
use super::follower::{self, FollowerState, LogAction, Step};
use super::leader::{LeaderState, Takeover};
use crate::config::SpuConfig;
use crate::server::replica::{frame_batches, leader_settings, Replica};
use crate::storage::{Appended, StorageError};

/// How often a failed promotion is tried again.
pub const PROMOTION_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What a replica is for its current epoch.
#[derive(Debug)]
pub enum Role {
    /// Opened, no role yet (or taking one failed): serves nothing.
    Starting,
    /// Leads.
    Leader(LeaderState),
    /// Follows.
    Follower(FollowerState),
}

/// What a follower sends for one replica in a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPosition {
    /// Its appended end.
    pub fetch_offset: Offset,
    /// Its acknowledged (durable) end.
    pub acknowledged_end: Offset,
    /// The epoch it follows.
    pub epoch: LeaderEpoch,
    /// Its newest batch's epoch.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// The follower state's generation when this was taken.
    pub generation: u64,
}

/// What the follower side wants for one replica now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerStep {
    /// Not a follower (any more).
    NotFollowing,
    /// Ask the leader where this epoch ended.
    AskEpoch {
        /// The epoch to ask about.
        asked: LeaderEpoch,
        /// The epoch followed.
        followed: LeaderEpoch,
        /// The follower state's generation.
        generation: u64,
    },
    /// Fetch from here.
    Fetch(FetchPosition),
    /// Nothing until then.
    WaitUntil(Instant),
}

/// The leader side of one follower fetch, before the read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerFetchCheck {
    /// The follower.
    pub follower: SpuId,
    /// Its appended end.
    pub fetch_offset: Offset,
    /// Its acknowledged end.
    pub acknowledged_end: Offset,
    /// The epoch it follows.
    pub leader_epoch: Option<LeaderEpoch>,
    /// Its newest batch's epoch.
    pub last_fetched_epoch: Option<LeaderEpoch>,
}

impl Replica {
    /// Applies the SC's assignment: topic settings, the in-sync set and the role for the spec's
    /// epoch (see the module docs).
    pub async fn apply_assignment(&self, spec: PartitionSpec, in_sync: InSyncSet, spu: &SpuConfig) {
        self.apply_spec_settings(&spec, spu);
        let settings = leader_settings(&spec, self.lag_max);
        let leads = spec.leader == self.me;
        *self.spec.borrow_mut() = spec.clone();
        *self.in_sync.borrow_mut() = in_sync.clone();
        let keep = match &mut *self.role.borrow_mut() {
            Role::Leader(leader) if leads && leader.epoch() == spec.leader_epoch => {
                leader.set_settings(settings);
                // A move widens and then shrinks the replicas within one leader epoch.
                leader.set_replicas(spec.replicas.iter().map(|replica| replica.spu).collect());
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
            self.advance_high_watermark();
            return;
        }
        let _gate = self.role_gate.acquire().await;
        if leads {
            self.promote(&spec, in_sync, spu).await;
        } else {
            self.promotion_retry_at.set(None);
            tracing::info!(key = %self.key, leader = %spec.leader, epoch = %spec.leader_epoch, "following");
            *self.role.borrow_mut() =
                Role::Follower(FollowerState::new(spec.leader, spec.leader_epoch));
        }
        self.visible.notify();
    }

    /// Tries a failed promotion again once its retry is due, if the spec still names this SPU
    /// leader (see the module docs). The background timer calls it.
    pub async fn retry_promotion(&self, spu: &SpuConfig) {
        let due = self.promotion_retry_at.get().is_some_and(|at| Instant::now() >= at);
        if !due || self.is_closed() {
            return;
        }
        let _gate = self.role_gate.acquire().await;
        let spec = self.spec.borrow().clone();
        // A newer assignment may have come while the gate was held.
        if self.promotion_retry_at.get().is_none() || spec.leader != self.me || self.is_closed() {
            return;
        }
        let in_sync = self.in_sync.borrow().clone();
        self.promote(&spec, in_sync, spu).await;
        if self.promotion_retry_at.get().is_none() {
            tracing::info!(key = %self.key, epoch = %spec.leader_epoch, "leading after a failed promotion");
        }
        self.visible.notify();
    }

    async fn promote(&self, spec: &PartitionSpec, in_sync: InSyncSet, spu: &SpuConfig) {
        *self.role.borrow_mut() = Role::Starting;
        let retrying = self.promotion_retry_at.take().is_some();
        if let Err(error) = self.log.assign_epoch(spec.leader_epoch).await {
            if retrying {
                tracing::debug!(key = %self.key, %error, "still cannot record the new leader epoch");
            } else {
                tracing::error!(
                    key = %self.key,
                    %error,
                    "cannot record the new leader epoch; not leading (trying again every {:?})",
                    PROMOTION_RETRY_INTERVAL
                );
            }
            self.promotion_retry_at.set(Some(Instant::now() + PROMOTION_RETRY_INTERVAL));
            return;
        }
        let takeover = Takeover {
            me: self.me,
            epoch: spec.leader_epoch,
            epoch_start: self.log.appended_end_offset(),
            replicas: spec.replicas.iter().map(|replica| replica.spu).collect(),
            in_sync,
            high_watermark: self.log.high_watermark(),
        };
        tracing::info!(
            key = %self.key,
            epoch = %spec.leader_epoch,
            start = %takeover.epoch_start,
            high_watermark = %takeover.high_watermark,
            "leading"
        );
        let settings = leader_settings(spec, spu.replica_lag_max);
        *self.role.borrow_mut() =
            Role::Leader(LeaderState::new(takeover, settings, Instant::now()));
        // What it appended as follower may not be durable yet: its own end must count.
        if self.log.durable_end_offset() < self.log.appended_end_offset() {
            if let Err(error) = self.log.sync().await {
                tracing::warn!(key = %self.key, %error, "sync after taking over failed");
            }
        }
        self.advance_high_watermark();
    }

    // ----- leader side ----------------------------------------------------------------------

    /// Checks and records a follower's fetch position (the leader side of a follower fetch).
    /// `Ok` means its records from `fetch_offset` may be sent; the HW may have moved.
    pub fn on_follower_fetch(
        &self,
        check: FollowerFetchCheck,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        let log_end = self.log.log_end_offset();
        let own_end = self.acknowledged_end();
        let moved = {
            let mut role = self.role.borrow_mut();
            let Role::Leader(leader) = &mut *role else { return Err(ErrorCode::NotLeader) };
            match check.leader_epoch {
                Some(epoch) if epoch == leader.epoch() => {}
                Some(epoch) if epoch > leader.epoch() => return Err(ErrorCode::UnknownLeaderEpoch),
                _ => return Err(ErrorCode::FencedLeaderEpoch),
            }
            if check.fetch_offset < self.log.log_start_offset() {
                return Err(ErrorCode::OffsetOutOfRange);
            }
            let epochs = self.log.epochs();
            if !divergence::follower_matches(
                &epochs,
                log_end,
                check.last_fetched_epoch,
                check.fetch_offset,
            ) {
                return Err(ErrorCode::LogDiverged);
            }
            let recorded = leader.on_fetch(
                check.follower,
                check.fetch_offset,
                check.acknowledged_end,
                log_end,
                now,
            );
            if recorded.is_err() {
                return Err(ErrorCode::InvalidRequest);
            }
            leader.update_high_watermark(own_end).then(|| leader.high_watermark())
        };
        if let Some(high_watermark) = moved {
            assert!(
                high_watermark >= self.log.high_watermark(),
                "the HW of {} went back",
                self.key
            );
            self.log.set_high_watermark(high_watermark);
            self.visible.notify();
        }
        Ok(())
    }

    /// The leader's answer to a follower asking where `epoch` ended. The current epoch ends at
    /// the written end, the end follower fetches are checked against
    /// ([`Replica::on_follower_fetch`]): a follower cut at an appended but unwritten end would
    /// be told its log diverged until the write round finished.
    pub fn epoch_answer(&self, epoch: LeaderEpoch) -> Result<EpochAnswer, ErrorCode> {
        if !self.is_leader() {
            return Err(ErrorCode::NotLeader);
        }
        let epochs = self.log.epochs();
        Ok(divergence::answer(
            &epochs,
            self.log.log_end_offset(),
            self.log.log_start_offset(),
            epoch,
        ))
    }

    /// A change of the in-sync set to propose to the SC now, if the leader wants one.
    pub fn propose_in_sync(&self, now: Instant) -> Option<AlterInSyncPartition> {
        let mut role = self.role.borrow_mut();
        let Role::Leader(leader) = &mut *role else { return None };
        let proposal = leader.propose(now)?;
        tracing::info!(
            key = %self.key,
            from = ?leader.in_sync().replicas,
            to = ?proposal.in_sync_replicas,
            "proposing an in-sync set"
        );
        Some(AlterInSyncPartition {
            key: self.key.clone(),
            leader_epoch: leader.epoch(),
            partition_epoch: proposal.based_on,
            in_sync_replicas: proposal.in_sync_replicas,
        })
    }

    /// The SC's answer to a proposal of this replica.
    pub fn on_in_sync_answer(&self, result: &AlterInSyncResult) {
        {
            let mut role = self.role.borrow_mut();
            let Role::Leader(leader) = &mut *role else { return };
            if result.error_code.is_ok() {
                tracing::info!(key = %self.key, in_sync = ?result.in_sync.replicas, "in-sync set stored");
            } else {
                tracing::info!(key = %self.key, code = %result.error_code, "in-sync proposal refused");
            }
            leader.on_proposal_answer(result.leader_epoch, result.in_sync.clone());
        }
        self.advance_high_watermark();
    }

    /// The followers' status as this leader sees it (empty when not leading).
    pub fn follower_statuses(&self) -> Vec<ReplicaStatus> {
        match &*self.role.borrow() {
            Role::Leader(leader) => leader.follower_statuses(self.log.log_end_offset()),
            _ => Vec::new(),
        }
    }

    /// Whether this replica leads with fewer in-sync replicas than replicas.
    pub fn is_under_replicated(&self) -> bool {
        match &*self.role.borrow() {
            Role::Leader(leader) => leader.in_sync().replicas.len() < leader.replicas().len(),
            _ => false,
        }
    }

    /// The leader epoch this replica leads in.
    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        match &*self.role.borrow() {
            Role::Leader(leader) => Some(leader.epoch()),
            _ => None,
        }
    }

    // ----- follower side --------------------------------------------------------------------

    /// The leader this replica follows and its epoch.
    pub fn followed(&self) -> Option<(SpuId, LeaderEpoch)> {
        match &*self.role.borrow() {
            Role::Follower(follower) => Some((follower.leader(), follower.epoch())),
            _ => None,
        }
    }

    /// What the follower side does next.
    pub fn follower_step(&self, now: Instant) -> FollowerStep {
        let latest = self.log.epochs().last().map(|entry| entry.epoch);
        let mut role = self.role.borrow_mut();
        let Role::Follower(follower) = &mut *role else { return FollowerStep::NotFollowing };
        match follower.next_step(latest, now) {
            Step::AskEpoch(asked) => FollowerStep::AskEpoch {
                asked,
                followed: follower.epoch(),
                generation: follower.generation(),
            },
            Step::WaitUntil(at) => FollowerStep::WaitUntil(at),
            Step::Fetch => FollowerStep::Fetch(FetchPosition {
                fetch_offset: self.log.appended_end_offset(),
                acknowledged_end: self.acknowledged_end(),
                epoch: follower.epoch(),
                last_fetched_epoch: latest,
                generation: follower.generation(),
            }),
        }
    }

    /// Whether this replica still follows in the state a request was made in.
    fn follows_at(&self, epoch: LeaderEpoch, generation: u64) -> bool {
        matches!(
            &*self.role.borrow(),
            Role::Follower(follower) if follower.epoch() == epoch && follower.generation() == generation
        )
    }

    /// The leader's answer to the question about `asked`: cuts the log where it parts from the
    /// leader's, when it does.
    pub async fn on_epoch_answer(
        &self,
        followed: LeaderEpoch,
        generation: u64,
        asked: LeaderEpoch,
        answer: Result<EpochAnswer, ErrorCode>,
    ) {
        let _gate = self.role_gate.acquire().await;
        if !self.follows_at(followed, generation) {
            return;
        }
        let epochs = self.log.epochs();
        let local = LocalLog { epochs: &epochs, log_end: self.log.appended_end_offset() };
        let action = match &mut *self.role.borrow_mut() {
            Role::Follower(follower) => {
                follower.on_epoch_answer(local, asked, answer, Instant::now())
            }
            _ => return,
        };
        self.apply_log_action(action).await;
    }

    async fn apply_log_action(&self, action: LogAction) {
        let outcome = match action {
            LogAction::None => return,
            LogAction::Truncate(cut) => {
                let unclean = self.spec.borrow().config.unclean_election;
                follower::check_cut(cut, self.log.high_watermark(), unclean);
                tracing::info!(key = %self.key, %cut, log_end = %self.log.appended_end_offset(), "cutting the log where it parts from the leader's");
                self.log.truncate_to(cut).await
            }
            LogAction::RestartAt(start) => {
                tracing::info!(key = %self.key, %start, "the leader's log starts after this one ends: starting over");
                self.log.reset_to(start).await
            }
        };
        if let Err(error) = outcome {
            tracing::error!(key = %self.key, %error, "cutting the follower's log failed");
            if let Role::Follower(follower) = &mut *self.role.borrow_mut() {
                follower.on_fetch_error(ErrorCode::LogDiverged, Offset(0), Instant::now());
            }
        }
    }

    /// A fetch answer for this replica: appends the leader's batches at the log end (or acts on
    /// the error). Returns the last batch appended, for the caller to wait until it is
    /// acknowledged (durable) before the next fetch reports it.
    pub async fn on_fetch_answer(
        &self,
        position: FetchPosition,
        error_code: ErrorCode,
        leader_log_start: Offset,
        records: &[u8],
    ) -> Option<Appended> {
        let _gate = self.role_gate.acquire().await;
        if !self.follows_at(position.epoch, position.generation) {
            return None;
        }
        if !error_code.is_ok() {
            let action = match &mut *self.role.borrow_mut() {
                Role::Follower(follower) => {
                    follower.on_fetch_error(error_code, leader_log_start, Instant::now())
                }
                _ => return None,
            };
            self.apply_log_action(action).await;
            return None;
        }
        if records.is_empty() || self.log.appended_end_offset() != position.fetch_offset {
            return None;
        }
        let batch_bytes_max = self.log.config().batch_bytes_max.max(records.len());
        let batches = match frame_batches(records, batch_bytes_max) {
            Ok(batches) => batches,
            Err(code) => {
                tracing::warn!(key = %self.key, %code, "malformed records from the leader");
                self.fetch_failed(ErrorCode::CorruptMessage);
                return None;
            }
        };
        let mut last = None;
        for range in batches {
            match self.log.append_replicated(&records[range]).await {
                Ok(appended) => last = Some(appended),
                Err(StorageError::NotAtLogEnd { .. } | StorageError::EpochRegression { .. }) => {
                    self.fetch_failed(ErrorCode::LogDiverged);
                    break;
                }
                Err(error) => {
                    tracing::warn!(key = %self.key, %error, "replicated append failed");
                    self.fetch_failed(ErrorCode::UnknownServerError);
                    break;
                }
            }
        }
        last
    }

    fn fetch_failed(&self, code: ErrorCode) {
        if let Role::Follower(follower) = &mut *self.role.borrow_mut() {
            follower.on_fetch_error(code, Offset(0), Instant::now());
        }
    }

    /// After the leader's HW came with a fetch answer: the follower's HW follows it.
    pub fn adopt_leader_high_watermark(&self, leader_high_watermark: Offset) {
        if !matches!(*self.role.borrow(), Role::Follower(_)) {
            return;
        }
        let current = self.log.high_watermark();
        let adopted = follower::adopt_high_watermark(
            current,
            leader_high_watermark,
            self.log.log_end_offset(),
        );
        if adopted > current {
            self.log.set_high_watermark(adopted);
        }
    }

    /// Waits until `appended` is acknowledged here (durable, or written for relaxed topics).
    pub async fn wait_acknowledged(&self, appended: &Appended) -> Result<(), StorageError> {
        if self.relaxed() {
            self.log.wait_written(appended).await
        } else {
            self.log.wait_durable(appended).await
        }
    }
}
