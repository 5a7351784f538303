//! One hosted replica on its owning core: the storage log plus what serving it needs (the
//! partition spec, its replication role, a signal woken when new records become visible or the
//! role changes, the edge mapping of storage errors to client error codes).
//!
//! Ownership: a [`Replica`] lives in one core's [`super::core::Core`] and is only touched by
//! that core's tasks (`Rc`, `RefCell`s never borrowed across an `.await`).
//!
//! Roles ([`crate::replication`]): a replica leads or follows for a leader epoch. As leader
//! its high watermark (HW) is the smallest acknowledged end of the in-sync set
//! ([`crate::replication::leader`]); acks `leader` waits for its own durability, acks `all` for
//! the HW to pass the append with at least `min-in-sync` replicas in sync (refused with
//! `NotEnoughReplicas` before appending when fewer are), and an append whose leadership ends
//! before that is answered `RequestTimedOut` (its outcome is unknown). A replica's
//! *acknowledged end* is its durable end for topics with `Durability::Sync` and its written
//! end for `Durability::Relaxed`. The log end offset (LEO) is the written end: uncommitted
//! readers see a batch once it is on the file. Relaxed topics are synced by the core's
//! background timer every `flush_interval_ms` (their `flush_bytes_max` is not applied yet: the
//! log exposes no unsynced byte count).
//!
//! Produce: the batches of one partition are framed first (lengths, size limit), then each is
//! appended in place (the log patches base offset and leader epoch in the caller's buffer, no
//! copy before the staging buffer). A partition request with several batches is fully
//! validated (CRC included) before the first append, so it is appended whole or not at all
//! (a storage error in the middle leaves a prefix, which an idempotent producer's retry then
//! skips as duplicates). Batches of idempotent producers are checked against the log's
//! producer table ([`crate::storage::producers`]): retries of appended batches are skipped and
//! answered `DuplicateSequence` when the whole request was such retries. A request is
//! answered with its base offset whenever its batches lie one after another in the log, retries
//! of recent batches included (the table remembers where they went): the SDK takes it as the
//! offset of the request's first record.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use sluice_proto::api::fetch::{FetchPartitionHeader, Isolation};
use sluice_proto::api::list_offsets::OffsetSpec;
use sluice_proto::api::produce::Acks;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, Offset, PartitionId, SpuId};
use sluice_proto::object::topic::Durability;
use sluice_proto::object::{InSyncSet, PartitionKey, PartitionSpec, ReplicaStatus};

use crate::replication::throttle::FetchThrottle;
use sluice_proto::record::{validate_batch, BATCH_LENGTH_MIN, BATCH_LENGTH_PREFIX};

use crate::config::SpuConfig;
use crate::replication::leader::{AckState, LeaderSettings};
use crate::replication::role::Role;
use crate::server::shard::{ListOffsetOutcome, ProduceOutcome, ReadRequest};
use crate::storage::producers::SequenceError;
use crate::storage::signal::{IoGate, Signal};
use crate::storage::{Appended, LogConfig, ReadSlices, ReplicaLog, StorageError};

/// A replica hosted by this core.
pub struct Replica {
    pub(crate) key: PartitionKey,
    pub(crate) log: ReplicaLog,
    pub(crate) spec: RefCell<PartitionSpec>,
    /// The in-sync set the SC last sent.
    pub(crate) in_sync: RefCell<InSyncSet>,
    /// Leader or follower, for the spec's epoch.
    pub(crate) role: RefCell<Role>,
    /// Held by whoever changes the log as follower (appends, cuts) and by role changes, so a
    /// promotion never races a replicated append.
    pub(crate) role_gate: Rc<IoGate>,
    /// This SPU.
    pub(crate) me: SpuId,
    /// How long a follower may lag before it leaves the in-sync set.
    pub(crate) lag_max: std::time::Duration,
    /// Bumped whenever the LEO, the HW or the role moves (wakes long-polls, streams and acks).
    pub(crate) visible: Signal,
    closed: Cell<bool>,
    /// When a relaxed topic's log was last synced by the background timer.
    last_sync: Cell<std::time::Instant>,
    /// As leader: the fetch throttle of each follower a move is adding (`replication::throttle`).
    throttles: RefCell<std::collections::BTreeMap<SpuId, FetchThrottle>>,
    /// Set when taking the leadership the SC assigned failed (the epoch could not be recorded,
    /// e.g. on a full disk): when the background timer tries again.
    pub(crate) promotion_retry_at: Cell<Option<std::time::Instant>>,
}

/// What a follower may fetch now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchAllowance {
    /// No limit.
    Unlimited,
    /// At most this many bytes.
    Bytes(u64),
    /// Nothing before this instant.
    WaitUntil(std::time::Instant),
}

/// A produce after its appends: settled (an error, or acks `none`), or waiting for its
/// acknowledgement.
pub enum StagedProduce {
    /// Nothing left to wait for.
    Settled(ProduceOutcome),
    /// Appended; the outcome once written or durable.
    Pending(PendingProduce),
}

/// Appended batches waiting to be written and durable before they are acknowledged.
pub struct PendingProduce {
    replica: Rc<Replica>,
    last: Appended,
    outcome: ProduceOutcome,
    acks: Acks,
    epoch: LeaderEpoch,
    deadline: std::time::Instant,
}

impl PendingProduce {
    /// Waits for the acks level (written, then durable unless relaxed; for acks `all`, the HW
    /// past the append); the outcome to answer.
    pub async fn acknowledge(self) -> ProduceOutcome {
        if let Err(error) = self.replica.complete(&self.last).await {
            return ProduceOutcome::error(error_code(&error));
        }
        if self.acks != Acks::All {
            return self.outcome;
        }
        match self.replica.wait_committed(self.epoch, self.last.next_offset, self.deadline).await {
            Ok(()) => self.outcome,
            Err(code) => ProduceOutcome::error(code),
        }
    }
}

/// Bounds of a produce request's `timeout_ms`: how long an acks `all` append waits for its
/// replicas before it is answered `RequestTimedOut`.
const PRODUCE_WAIT_MS_MIN: u64 = 100;
const PRODUCE_WAIT_MS_MAX: u64 = 300_000;

/// The storage settings of a replica: its spec's topic settings and the SPU's own.
pub fn log_config(spec: &PartitionSpec, spu: &SpuConfig) -> LogConfig {
    let defaults = LogConfig::default();
    LogConfig {
        segment_bytes_max: spec.config.segment_bytes,
        batch_bytes_max: spec.config.batch_bytes_max as usize,
        retention_ms: spec.config.retention_time_ms,
        retention_bytes: spec.config.retention_bytes,
        free_bytes_min: spu.free_bytes_min,
        free_space_ratio_min: spu.free_space_ratio_min,
        zero_fill_bytes: spu.zero_fill_bytes,
        // Set once the replica is open: its share of the core's budget.
        tail_cache_bytes: 0,
        ..defaults
    }
}

/// The leader settings of a replica: its spec's minimum in-sync count, the SPU's lag limit.
pub fn leader_settings(spec: &PartitionSpec, lag_max: std::time::Duration) -> LeaderSettings {
    LeaderSettings { min_in_sync: spec.config.min_in_sync_replicas, lag_max }
}

/// The client error code for a storage error (the one edge mapping).
pub fn error_code(error: &StorageError) -> ErrorCode {
    match error {
        StorageError::StorageFull { .. } => ErrorCode::StorageFull,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::InvalidBatch(batch) if batch.is_corruption() => ErrorCode::CorruptMessage,
        StorageError::InvalidBatch(_) => ErrorCode::InvalidRecord,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::Corruption { .. } => ErrorCode::UnknownServerError,
        StorageError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        // A replica that lost leadership (a newer epoch is in its log already).
        StorageError::EpochRegression { .. } | StorageError::NotAtLogEnd { .. } => {
            ErrorCode::NotLeader
        }
        // Its fate is unknown to the caller only in name: discarded appends are not in the
        // log, but the rule for unknown outcomes applies to I/O errors after staging.
        StorageError::AppendDiscarded { .. } | StorageError::Io { .. } => {
            ErrorCode::RequestTimedOut
        }
        StorageError::Sequence(SequenceError::OutOfOrder { .. }) => ErrorCode::OutOfOrderSequence,
        StorageError::Sequence(SequenceError::UnknownProducer { .. }) => {
            ErrorCode::UnknownProducerId
        }
        StorageError::DuplicateSequence { .. } => ErrorCode::DuplicateSequence,
        StorageError::Closed => ErrorCode::ReplicaNotAvailable,
        StorageError::Runtime(_) => ErrorCode::UnknownServerError,
    }
}

/// Splits `records` into whole batches (byte ranges) without trusting lengths beyond the
/// buffer; a batch over `batch_bytes_max` is `MessageTooLarge`, bad framing `CorruptMessage`.
pub(crate) fn frame_batches(
    records: &[u8],
    batch_bytes_max: usize,
) -> Result<Vec<std::ops::Range<usize>>, ErrorCode> {
    let mut batches = Vec::with_capacity(1);
    let mut position = 0;
    while position < records.len() {
        let rest = &records[position..];
        let Some(prefix) = rest.get(..BATCH_LENGTH_PREFIX) else {
            return Err(ErrorCode::CorruptMessage);
        };
        let length = i32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        if length < BATCH_LENGTH_MIN {
            return Err(ErrorCode::CorruptMessage);
        }
        let total = BATCH_LENGTH_PREFIX + length as usize;
        if total > batch_bytes_max {
            return Err(ErrorCode::MessageTooLarge);
        }
        if total > rest.len() {
            return Err(ErrorCode::CorruptMessage);
        }
        batches.push(position..position + total);
        position += total;
    }
    if batches.is_empty() {
        return Err(ErrorCode::CorruptMessage);
    }
    Ok(batches)
}

/// Where a produce request's batches lie in the log, batch by batch (appended now, or retries
/// of batches appended before): its base offset, when they lie one after another.
#[derive(Default)]
struct Placement {
    /// The first batch's base offset and the offset after the last batch so far.
    span: Option<(Offset, Offset)>,
    /// A batch whose place is unknown, or one not right after the previous.
    broken: bool,
}

impl Placement {
    /// The next batch: its base offset and the offset after it, if known.
    fn add(&mut self, batch: Option<(Offset, Offset)>) {
        match (batch, self.span) {
            (None, _) => self.broken = true,
            (Some((base, next)), None) => self.span = Some((base, next)),
            (Some((base, next)), Some((first, end))) => {
                self.broken |= base != end;
                self.span = Some((first, next));
            }
        }
    }

    /// The request's base offset, when its batches lie one after another.
    fn base_offset(&self) -> Option<Offset> {
        match self.span {
            Some((first, _)) if !self.broken => Some(first),
            _ => None,
        }
    }
}

/// A framed batch's last offset delta (its record count less one).
fn last_offset_delta(batch: &[u8]) -> i32 {
    i32::from_be_bytes([batch[23], batch[24], batch[25], batch[26]])
}

impl Replica {
    /// Wraps an opened log; it serves once [`Replica::apply_assignment`] gave it a role.
    pub fn new(
        key: PartitionKey,
        log: ReplicaLog,
        spec: PartitionSpec,
        spu: &SpuConfig,
    ) -> Rc<Replica> {
        Rc::new(Replica {
            key,
            log,
            spec: RefCell::new(spec),
            in_sync: RefCell::new(InSyncSet::default()),
            role: RefCell::new(Role::Starting),
            role_gate: Rc::new(IoGate::default()),
            me: spu.id,
            lag_max: spu.replica_lag_max,
            visible: Signal::default(),
            closed: Cell::new(false),
            last_sync: Cell::new(std::time::Instant::now()),
            throttles: RefCell::default(),
            promotion_retry_at: Cell::new(None),
        })
    }

    /// What `follower` may fetch now: limited while a move adds it and it is not in sync.
    pub fn follower_allowance(&self, follower: SpuId, now: std::time::Instant) -> FetchAllowance {
        let rate = self
            .spec
            .borrow()
            .reassignment
            .as_ref()
            .and_then(|moving| moving.throttle_for(follower));
        let in_sync = self.in_sync.borrow().replicas.contains(&follower);
        let mut throttles = self.throttles.borrow_mut();
        let Some(rate) = rate.filter(|_| !in_sync) else {
            throttles.remove(&follower);
            return FetchAllowance::Unlimited;
        };
        let throttle = throttles.entry(follower).or_insert_with(|| FetchThrottle::new(rate, now));
        if throttle.rate() != rate {
            throttle.set_rate(rate, now);
        }
        match throttle.read_bytes_max(now) {
            0 => FetchAllowance::WaitUntil(throttle.ready_at()),
            bytes => FetchAllowance::Bytes(bytes),
        }
    }

    /// Counts bytes sent to a throttled follower.
    pub fn follower_sent(&self, follower: SpuId, bytes: u64) {
        if let Some(throttle) = self.throttles.borrow_mut().get_mut(&follower) {
            throttle.consume(bytes);
        }
    }

    /// The partition.
    pub fn key(&self) -> &PartitionKey {
        &self.key
    }

    /// The storage log.
    pub fn log(&self) -> &ReplicaLog {
        &self.log
    }

    /// The spec in force.
    pub fn spec(&self) -> PartitionSpec {
        self.spec.borrow().clone()
    }

    /// The in-sync set the SC last sent.
    pub fn in_sync(&self) -> InSyncSet {
        self.in_sync.borrow().clone()
    }

    /// Replaces the spec's topic settings in the log (the role is [`Replica::apply_assignment`]'s).
    pub(crate) fn apply_spec_settings(&self, spec: &PartitionSpec, spu: &SpuConfig) {
        let mut config = log_config(spec, spu);
        // The core sets the tail cache share (see `Core::share_tail_cache`), not the spec.
        config.tail_cache_bytes = self.log.config().tail_cache_bytes;
        if config != self.log.config() {
            if let Err(error) = self.log.update_config(config) {
                tracing::warn!(key = %self.key, %error, "topic settings not applied");
            }
        }
    }

    /// Whether this replica leads its partition now.
    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader(_))
    }

    /// Stops serving: waiters wake and see the replica gone. Files stay.
    pub async fn close(&self) {
        self.closed.set(true);
        self.visible.notify();
        if let Err(error) = self.log.close().await {
            tracing::warn!(key = %self.key, %error, "closing the replica log failed");
        }
    }

    /// Whether [`Replica::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub(crate) fn relaxed(&self) -> bool {
        matches!(self.spec.borrow().config.durability, Durability::Relaxed { .. })
    }

    /// What this replica could not lose: its durable end (its written end for relaxed topics).
    pub fn acknowledged_end(&self) -> Offset {
        if self.relaxed() {
            self.log.log_end_offset()
        } else {
            self.log.durable_end_offset()
        }
    }

    /// As leader, recomputes the HW from its own acknowledged end and its followers'; wakes
    /// readers and waiters either way (the LEO may have moved).
    pub fn advance_high_watermark(&self) {
        let own_end = self.acknowledged_end();
        let moved = match &mut *self.role.borrow_mut() {
            Role::Leader(leader) => {
                leader.update_high_watermark(own_end).then(|| leader.high_watermark())
            }
            _ => None,
        };
        if let Some(high_watermark) = moved {
            assert!(
                high_watermark >= self.log.high_watermark(),
                "the HW of {} would go back from {} to {high_watermark}",
                self.key,
                self.log.high_watermark()
            );
            self.log.set_high_watermark(high_watermark);
        }
        self.visible.notify();
    }

    /// Waits until the HW passes `end` while this replica leads in `epoch` (acks `all`).
    async fn wait_committed(
        &self,
        epoch: LeaderEpoch,
        end: Offset,
        deadline: std::time::Instant,
    ) -> Result<(), ErrorCode> {
        loop {
            let generation = self.visible.generation();
            let state = match &*self.role.borrow() {
                Role::Leader(leader) if leader.epoch() == epoch => leader.ack_state(end),
                // Leadership ended: the append may or may not survive on the new leader.
                _ => return Err(ErrorCode::RequestTimedOut),
            };
            match state {
                AckState::Acknowledged => return Ok(()),
                AckState::TooFewInSync => return Err(ErrorCode::NotEnoughReplicasAfterAppend),
                AckState::Waiting => {}
            }
            if self.is_closed() {
                return Err(ErrorCode::RequestTimedOut);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(ErrorCode::RequestTimedOut);
            }
            let changed = async {
                self.visible.changed(generation).await;
                true
            };
            let expired = async {
                glommio::timer::sleep(deadline - now).await;
                false
            };
            futures_lite::future::or(changed, expired).await;
        }
    }

    /// The current generation of the visibility signal.
    pub fn visible_generation(&self) -> u64 {
        self.visible.generation()
    }

    /// Completes once the LEO or HW moved after `generation` was read.
    pub async fn visible_changed(&self, generation: u64) {
        self.visible.changed(generation).await
    }

    /// The end a reader with `isolation` may read up to.
    pub fn readable_end(&self, isolation: Isolation) -> Offset {
        match isolation {
            Isolation::ReadCommitted => self.log.high_watermark(),
            Isolation::ReadUncommitted => self.log.log_end_offset(),
        }
    }

    /// Appends the batches in `records` (patched in place) as leader; answers per `acks`
    /// (an acks `all` append waits at most `timeout_ms` for its replicas).
    pub async fn produce(
        self: &Rc<Self>,
        records: &mut [u8],
        acks: Acks,
        timeout_ms: u32,
    ) -> ProduceOutcome {
        match self.stage_produce(records, acks, timeout_ms).await {
            StagedProduce::Settled(outcome) => outcome,
            StagedProduce::Pending(pending) => pending.acknowledge().await,
        }
    }

    /// The first half of [`Replica::produce`]: frames, validates and appends the batches
    /// (offsets assigned, order fixed) and returns what is left to wait for. A connection
    /// runs this in request order and the acknowledgement concurrently, so several requests
    /// of one connection share write rounds and fdatasyncs.
    pub async fn stage_produce(
        self: &Rc<Self>,
        records: &mut [u8],
        acks: Acks,
        timeout_ms: u32,
    ) -> StagedProduce {
        match self.stage_produce_inner(records, acks, timeout_ms).await {
            Ok(pending) => StagedProduce::Pending(pending),
            Err(outcome) => StagedProduce::Settled(outcome),
        }
    }

    async fn stage_produce_inner(
        self: &Rc<Self>,
        records: &mut [u8],
        acks: Acks,
        timeout_ms: u32,
    ) -> Result<PendingProduce, ProduceOutcome> {
        let batch_bytes_max = self.spec.borrow().config.batch_bytes_max as usize;
        let epoch = match &*self.role.borrow() {
            Role::Leader(leader) if acks == Acks::All && !leader.enough_in_sync() => {
                return Err(ProduceOutcome::error(ErrorCode::NotEnoughReplicas));
            }
            Role::Leader(leader) => leader.epoch(),
            Role::Starting => return Err(ProduceOutcome::error(ErrorCode::ReplicaNotAvailable)),
            Role::Follower(_) => return Err(ProduceOutcome::error(ErrorCode::NotLeader)),
        };
        let wait_ms = u64::from(timeout_ms).clamp(PRODUCE_WAIT_MS_MIN, PRODUCE_WAIT_MS_MAX);
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
        let batches = match frame_batches(records, batch_bytes_max) {
            Ok(batches) => batches,
            Err(code) => return Err(ProduceOutcome::error(code)),
        };
        if batches.len() > 1 {
            for range in &batches {
                if let Err(error) = validate_batch(&records[range.clone()], batch_bytes_max) {
                    let code = if error.is_corruption() {
                        ErrorCode::CorruptMessage
                    } else {
                        ErrorCode::InvalidRecord
                    };
                    return Err(ProduceOutcome::error(code));
                }
            }
        }
        let mut first: Option<Appended> = None;
        let mut last: Option<Appended> = None;
        // The last appended batch of the producer of skipped duplicates (it covers them).
        let mut duplicates_covered_by: Option<Appended> = None;
        let mut placement = Placement::default();
        for range in batches {
            let batch = &mut records[range];
            match self.log.append(batch, epoch).await {
                Ok(appended) => {
                    first.get_or_insert(appended);
                    last = Some(appended);
                    placement.add(Some((appended.base_offset, appended.next_offset)));
                }
                Err(StorageError::DuplicateSequence { last: covering, base_offset }) => {
                    tracing::debug!(key = %self.key, ?base_offset, "idempotent retry of an appended batch");
                    duplicates_covered_by = Some(covering);
                    let records = i64::from(last_offset_delta(batch)) + 1;
                    placement.add(base_offset.map(|base| (base, Offset(base.get() + records))));
                }
                Err(error) => {
                    tracing::debug!(key = %self.key, %error, "append refused");
                    return Err(ProduceOutcome::error(error_code(&error)));
                }
            }
        }
        let log_start_offset = Some(self.log.log_start_offset());
        let (outcome, last) = match (first, last, duplicates_covered_by) {
            // Appended. The offset is reported only where the request's batches lie one after
            // another in the log (retried ones skipped included), as the client counts on.
            (Some(first), Some(last), _) => (
                ProduceOutcome {
                    error_code: ErrorCode::None,
                    base_offset: placement.base_offset(),
                    log_start_offset,
                    records: (last.next_offset.get() - first.base_offset.get()).max(0) as u64,
                },
                last,
            ),
            // Only retries: answered once what covers them is as durable as `acks` asks, with
            // the offset they got when appended (while the log knows it, as above).
            (_, _, Some(covering)) => (
                ProduceOutcome {
                    error_code: ErrorCode::DuplicateSequence,
                    base_offset: placement.base_offset(),
                    log_start_offset,
                    records: 0,
                },
                covering,
            ),
            _ => return Err(ProduceOutcome::error(ErrorCode::CorruptMessage)),
        };
        match acks {
            Acks::None => {
                let replica = Rc::clone(self);
                glommio::spawn_local(async move {
                    let _ = replica.complete(&last).await;
                })
                .detach();
                Err(outcome)
            }
            Acks::Leader | Acks::All => Ok(PendingProduce {
                replica: Rc::clone(self),
                last,
                outcome,
                acks,
                epoch,
                deadline,
            }),
        }
    }

    /// Waits until `appended` is written (visible) and then durable (or only written for
    /// relaxed topics), advancing the HW and waking readers at each step.
    async fn complete(&self, appended: &Appended) -> Result<(), StorageError> {
        self.log.wait_written(appended).await?;
        self.visible.notify();
        if !self.relaxed() {
            self.log.wait_durable(appended).await?;
        }
        self.advance_high_watermark();
        Ok(())
    }

    /// The fetch partition header with the current offsets.
    pub fn fetch_header(
        &self,
        partition: PartitionId,
        error_code: ErrorCode,
    ) -> FetchPartitionHeader {
        let high_watermark = self.log.high_watermark();
        FetchPartitionHeader {
            partition,
            error_code,
            high_watermark,
            last_stable_offset: high_watermark,
            log_end_offset: self.log.log_end_offset(),
            log_start_offset: self.log.log_start_offset(),
        }
    }

    /// `FencedLeaderEpoch` for a reader behind the current leader epoch, `UnknownLeaderEpoch`
    /// for one ahead of it (this SPU has not seen the newer spec yet); `OffsetNotAvailable` for
    /// a committed reader while this new leader cannot prove its HW yet.
    fn check_epoch(&self, read: &ReadRequest) -> Result<(), ErrorCode> {
        let current = self.spec.borrow().leader_epoch;
        match read.leader_epoch {
            Some(epoch) if epoch < current => return Err(ErrorCode::FencedLeaderEpoch),
            Some(epoch) if epoch > current => return Err(ErrorCode::UnknownLeaderEpoch),
            _ => {}
        }
        self.check_committed(read.isolation)
    }

    /// Committed reads wait for a new leader's HW to reach its epoch's start (the HW readers
    /// saw from the previous leader is at most that), so the HW they see never goes back.
    fn check_committed(&self, isolation: Isolation) -> Result<(), ErrorCode> {
        match (&*self.role.borrow(), isolation) {
            (Role::Leader(leader), Isolation::ReadCommitted)
                if !leader.committed_reads_allowed() =>
            {
                Err(ErrorCode::OffsetNotAvailable)
            }
            (Role::Leader(_), _) => Ok(()),
            (Role::Starting, _) => Err(ErrorCode::ReplicaNotAvailable),
            (Role::Follower(_), _) => Err(ErrorCode::NotLeader),
        }
    }

    /// Whole batches for a read, as file slices (no copy). Out of range is an error; at or past
    /// the readable end the result is empty.
    pub fn read(&self, read: &ReadRequest) -> Result<ReadSlices, ErrorCode> {
        self.check_epoch(read)?;
        let upper = self.readable_end(read.isolation);
        let log_start = self.log.log_start_offset();
        if read.offset < log_start || read.offset > self.log.log_end_offset() {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        if read.offset >= upper {
            return Ok(ReadSlices { next_offset: read.offset, ..ReadSlices::default() });
        }
        let bytes_max = u64::from(read.bytes_max.max(1));
        self.log.read(read.offset, bytes_max, upper).map_err(|error| error_code(&error))
    }

    /// Like [`Replica::read`] but copies the batches (CRC-checked) to the end of `out`.
    pub fn read_into(&self, read: &ReadRequest, out: &mut Vec<u8>) -> Result<Offset, ErrorCode> {
        self.check_epoch(read)?;
        let upper = self.readable_end(read.isolation);
        if read.offset < self.log.log_start_offset() || read.offset > self.log.log_end_offset() {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        if read.offset >= upper {
            return Ok(read.offset);
        }
        let bytes_max = u64::from(read.bytes_max.max(1));
        match self.log.read_into(read.offset, bytes_max, upper, out) {
            Ok(copied) => Ok(copied.next_offset),
            Err(error) => Err(error_code(&error)),
        }
    }

    /// Earliest, latest or by-timestamp offset.
    pub fn list_offset(&self, spec: OffsetSpec, isolation: Isolation) -> ListOffsetOutcome {
        if let Err(code) = self.check_committed(isolation) {
            return ListOffsetOutcome::error(code);
        }
        let found = |offset: Option<Offset>, timestamp| ListOffsetOutcome {
            error_code: ErrorCode::None,
            offset,
            timestamp,
        };
        match spec {
            OffsetSpec::Earliest => found(Some(self.log.log_start_offset()), None),
            OffsetSpec::Latest => found(Some(self.readable_end(isolation)), None),
            OffsetSpec::ByTimestamp(timestamp) => match self.log.offset_for_timestamp(timestamp) {
                Ok(Some(offset)) if offset < self.readable_end(isolation) => {
                    found(Some(offset), Some(timestamp))
                }
                Ok(_) => found(None, None),
                Err(error) => ListOffsetOutcome::error(error_code(&error)),
            },
        }
    }

    /// This replica's own status for the live replica status report.
    pub fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            spu: self.me,
            high_watermark: self.log.high_watermark(),
            log_end_offset: self.log.log_end_offset(),
            durable_end_offset: self.acknowledged_end(),
            lag_records: 0,
        }
    }

    /// Syncs a relaxed topic's unsynced bytes (background flush) and advances the HW.
    /// Relaxed topics only, once their `flush_interval_ms` passed since the last sync.
    pub async fn background_sync(&self) {
        let interval_ms = match self.spec.borrow().config.durability {
            Durability::Relaxed { flush_interval_ms, .. } => flush_interval_ms,
            Durability::Sync => return,
        };
        let due = self.last_sync.get() + std::time::Duration::from_millis(interval_ms);
        if std::time::Instant::now() < due {
            return;
        }
        self.last_sync.set(std::time::Instant::now());
        if self.log.appended_end_offset() == self.log.durable_end_offset() {
            return;
        }
        if let Err(error) = self.log.sync().await {
            tracing::warn!(key = %self.key, %error, "background sync failed");
        }
        self.advance_high_watermark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_prefix(length: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; 12];
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        bytes
    }

    #[test]
    fn a_request_has_a_base_offset_only_where_its_batches_are_contiguous() {
        let span = |base: i64, next: i64| Some((Offset(base), Offset(next)));
        let placed = |batches: &[Option<(Offset, Offset)>]| {
            let mut placement = Placement::default();
            for batch in batches {
                placement.add(*batch);
            }
            placement.base_offset()
        };
        assert_eq!(placed(&[]), None);
        assert_eq!(placed(&[span(5, 8)]), Some(Offset(5)));
        assert_eq!(placed(&[span(5, 8), span(8, 9)]), Some(Offset(5)));
        assert_eq!(placed(&[span(5, 8), span(9, 10)]), None);
        assert_eq!(placed(&[None, span(8, 9)]), None);
        assert_eq!(placed(&[span(5, 8), None]), None);
    }

    #[test]
    fn framing_rejects_bad_lengths() {
        assert_eq!(frame_batches(&[], 1 << 20), Err(ErrorCode::CorruptMessage));
        assert_eq!(frame_batches(&[0; 5], 1 << 20), Err(ErrorCode::CorruptMessage));
        assert_eq!(frame_batches(&batch_prefix(-1), 1 << 20), Err(ErrorCode::CorruptMessage));
        assert_eq!(frame_batches(&batch_prefix(2 << 20), 1 << 20), Err(ErrorCode::MessageTooLarge));
        // Claims more than present.
        assert_eq!(frame_batches(&batch_prefix(100), 1 << 20), Err(ErrorCode::CorruptMessage));
        let mut whole = batch_prefix(BATCH_LENGTH_MIN);
        whole.resize(12 + BATCH_LENGTH_MIN as usize, 0);
        let expected: Vec<std::ops::Range<usize>> = std::iter::once(0..whole.len()).collect();
        assert_eq!(frame_batches(&whole, 1 << 20), Ok(expected));
    }
}
