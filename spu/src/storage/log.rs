//! [`ReplicaLog`]: one partition replica's log, owned by one executor (core).
//!
//! Shared state lives in `RefCell`s inside an `Rc`; no borrow is ever held across an `.await`
//! (every async step copies what it needs out of the state, awaits, then borrows again). File
//! I/O that changes the active segment runs under two gates ([`IoGate`]): the *write gate*
//! serializes write rounds, the *sync gate* serializes fdatasyncs, so one round can be written
//! while the previous one is being synced (an fdatasync makes durable only what was written
//! when it was issued, and the sync step records exactly that point). Roll, truncate and close
//! take both, always the write gate first. Appends and reads never wait for either except when
//! an append must roll or has too many unwritten bytes staged.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sluice_proto::ids::{LeaderEpoch, Offset, TimestampMs};
use sluice_proto::record::{
    set_base_offset, set_partition_leader_epoch, validate_batch, BatchHeader,
};

use crate::storage::checkpoint::{self, EpochEntry, HIGH_WATERMARK_FILE, LOG_START_FILE};
use crate::storage::config::LogConfig;
use crate::storage::disk_guard::DiskGuard;
use crate::storage::error::{IoContext, StorageError, StorageResult};
use crate::storage::file_cache::SegmentFileCache;
use crate::storage::producers::{Admission, ProducerTable};
use crate::storage::read::{self, CopiedRead, ReadSlices};
use crate::storage::runtime::{self, DirectFile, SharedBuffer};
use crate::storage::scan::{BatchMeta, HeaderWalk, HEADER_CHUNK_BYTES};
use crate::storage::segment::{
    self, ActiveSegment, LogPoint, SealedSegment, SegmentPaths, LOG_EXTENSION,
};
use crate::storage::signal::{IoGate, IoGuard, Signal};

/// Unwritten bytes an append may leave staged before it writes them itself (backpressure for
/// callers that never wait for *written*).
pub const UNWRITTEN_BYTES_MAX: u64 = 64 << 20;
/// Discards (failed rounds, truncations) remembered to answer waiters precisely.
const DISCARDS_REMEMBERED: usize = 64;

/// Wall clock in milliseconds, behind a trait so tests can drive segment age and retention.
pub trait Clock {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> TimestampMs;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        TimestampMs(now.as_millis() as i64)
    }
}

/// How far back from the active segment's end [`ReplicaLog::open`] reads batch headers to
/// rebuild the idempotent producers' state: what a producer may retry after a restart is
/// what it had in flight (at most 16 requests of 1 MiB per partition with the Sluice client),
/// and the headers are read a page at a time, so opening stays cheap with many partitions.
pub const PRODUCER_SCAN_BYTES: u64 = 16 * 1024 * 1024;

/// Receipt of an append: the offsets assigned. The batch is *appended* (staged in memory);
/// pass the receipt to [`ReplicaLog::wait_written`] / [`ReplicaLog::wait_durable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// Offset after the batch (the log end offset once it is written).
    pub next_offset: Offset,
    /// Largest record timestamp of the batch.
    pub max_timestamp: TimestampMs,
    discard_generation: u64,
}

#[cfg(test)]
impl Appended {
    /// A receipt for unit tests of the layers above.
    pub(crate) fn for_tests(last_offset: Offset, next_offset: Offset) -> Appended {
        Appended {
            base_offset: last_offset,
            last_offset,
            next_offset,
            max_timestamp: TimestampMs(0),
            discard_generation: 0,
        }
    }
}

/// What retention or `delete_before` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Sealed segments deleted.
    pub segments_deleted: u32,
    /// Their total size.
    pub bytes_deleted: u64,
    /// Log start offset afterwards.
    pub log_start: Offset,
}

pub(crate) struct LogState {
    pub(crate) sealed: BTreeMap<Offset, SealedSegment>,
    pub(crate) active: ActiveSegment,
    pub(crate) log_start: Offset,
    high_watermark: Offset,
    high_watermark_checkpointed: Option<Offset>,
    epochs: Vec<EpochEntry>,
    /// Bumped at every change of `epochs`; `epochs_persisted` is the value last written to the
    /// leader-epoch checkpoint. Written before any write round that could put a batch of a new
    /// epoch on the file, so the checkpoint always covers every written batch's epoch.
    epochs_version: u64,
    epochs_persisted: u64,
    rolling: bool,
    closed: bool,
    discard_generation: u64,
    discards: VecDeque<(u64, Offset)>,
    /// Sequence state of idempotent producers ([`super::producers`]).
    producers: ProducerTable,
}

impl LogState {
    /// Dropped appended batches (a failed round, a truncation): their waiters learn it, and the
    /// producers' state is rebuilt from what the log still holds (by the caller).
    fn record_discard(&mut self, new_end: Offset) {
        self.producers.clear();
        self.discard_generation += 1;
        self.discards.push_back((self.discard_generation, new_end));
        if self.discards.len() > DISCARDS_REMEMBERED {
            self.discards.pop_front();
        }
    }

    /// Whether a batch appended at `generation` and ending at `next_offset` was discarded.
    fn was_discarded(&self, generation: u64, next_offset: Offset) -> bool {
        if generation == self.discard_generation {
            return false;
        }
        match self.discards.front() {
            Some((oldest, _)) if *oldest <= generation + 1 => {
                self.discards.iter().any(|(at, end)| *at > generation && *end < next_offset)
            }
            _ => true,
        }
    }

    fn log_end(&self) -> Offset {
        self.active.written.next_offset
    }

    fn set_epochs(&mut self, epochs: Vec<EpochEntry>) {
        self.epochs = epochs;
        self.epochs_version += 1;
    }

    fn size_bytes(&self) -> u64 {
        self.sealed.values().map(|segment| segment.size_bytes).sum::<u64>()
            + self.active.written.position
    }
}

struct Shared {
    directory: PathBuf,
    config: RefCell<LogConfig>,
    state: RefCell<LogState>,
    gate: Rc<IoGate>,
    /// Serializes fdatasyncs; taken after `gate` by whoever needs both.
    sync_gate: Rc<IoGate>,
    /// Held by the zero-fill task while it writes; taken last by [`ReplicaLog::exclusive`].
    zero_gate: Rc<IoGate>,
    /// Serializes high-watermark checkpoint writes (they share a temporary file name).
    checkpoint_gate: Rc<IoGate>,
    /// Notified whenever the zero-fill task ends.
    zeros_done: Signal,
    roll_done: Signal,
    files: SegmentFileCache,
    clock: Rc<dyn Clock>,
    guard: RefCell<DiskGuard>,
    stats: Cell<LogStats>,
    observer: RefCell<Option<Rc<dyn LogObserver>>>,
}

/// Told how long each write round and fdatasync took (metrics). Called on the owning core.
pub trait LogObserver {
    /// A write round finished (successfully or not) after `elapsed`.
    fn write_round(&self, elapsed: std::time::Duration);
    /// An fdatasync finished after `elapsed`.
    fn sync(&self, elapsed: std::time::Duration);
}

/// Counters of one log's I/O.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Write rounds completed.
    pub write_rounds: u64,
    /// fdatasyncs completed.
    pub syncs: u64,
}

/// A replica's log. Cheap to clone (a handle); all clones must stay on the owning executor.
#[derive(Clone)]
pub struct ReplicaLog {
    shared: Rc<Shared>,
}

fn list_segment_bases(directory: &Path) -> StorageResult<Vec<Offset>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(directory).at(directory)? {
        let path = entry.at(directory)?.path();
        let (Some(stem), Some(extension)) = (path.file_stem(), path.extension()) else { continue };
        let stem = stem.to_string_lossy();
        let parsed = (stem.len() == 20).then(|| stem.parse::<i64>().ok()).flatten();
        match (parsed, extension.to_string_lossy().as_ref()) {
            (Some(base), LOG_EXTENSION) => bases.push(Offset(base)),
            (Some(base), _) if !SegmentPaths::new(directory, Offset(base)).log.exists() => {
                // An index left behind by an interrupted deletion.
                let _ = fs::remove_file(&path);
            }
            _ => {}
        }
    }
    bases.sort();
    Ok(bases)
}

impl ReplicaLog {
    /// Opens the replica log in `directory` (created if absent) with the system clock.
    pub async fn open(
        directory: &Path,
        config: LogConfig,
        files: SegmentFileCache,
    ) -> StorageResult<ReplicaLog> {
        Self::open_with_clock(directory, config, files, Rc::new(SystemClock)).await
    }

    /// Opens with an explicit clock. Recovers the active segment (see the module contract),
    /// opens sealed segments lazily (indexes mapped, files through `files`).
    pub async fn open_with_clock(
        directory: &Path,
        config: LogConfig,
        files: SegmentFileCache,
        clock: Rc<dyn Clock>,
    ) -> StorageResult<ReplicaLog> {
        config.validate()?;
        fs::create_dir_all(directory).at(directory)?;
        let mut bases = list_segment_bases(directory)?;
        let start_checkpoint = checkpoint::read_offset(directory, LOG_START_FILE);
        let active = loop {
            let Some(&last) = bases.last() else {
                let base = start_checkpoint.unwrap_or(Offset(0));
                break ActiveSegment::create(directory, base, &config).await?;
            };
            let (active, report) = ActiveSegment::open(directory, last, &config).await?;
            if report.torn_tail {
                tracing::warn!(
                    ?directory,
                    cut_bytes = report.truncated_bytes,
                    "truncated a torn log tail"
                );
            }
            if active.appended.position > 0 || bases.len() == 1 {
                break active;
            }
            // An empty newest segment after an interrupted roll: continue in the previous one.
            drop(active);
            SegmentPaths::new(directory, last).remove()?;
            bases.pop();
        };
        let mut sealed = BTreeMap::new();
        for pair in bases.windows(2) {
            let segment = SealedSegment::open(directory, pair[0], pair[1], &config)?;
            sealed.insert(pair[0], segment);
        }
        let mut active = active;
        if active.appended.position > 0 {
            active.first_append_ms = Some(clock.now_ms());
        }
        let first_base = bases.first().copied().unwrap_or(active.base_offset);
        let log_end = active.written.next_offset;
        let log_start = start_checkpoint.unwrap_or(first_base).max(first_base).min(log_end);
        if start_checkpoint.is_some_and(|checkpointed| checkpointed != log_start) {
            // A start past the recovered end (deleted before a crash lost the tail) follows it.
            checkpoint::write_offset(directory, LOG_START_FILE, log_start)?;
        }
        let high_watermark = checkpoint::read_offset(directory, HIGH_WATERMARK_FILE)
            .unwrap_or(log_start)
            .clamp(log_start, log_end);
        let state = LogState {
            sealed,
            active,
            log_start,
            high_watermark,
            high_watermark_checkpointed: None,
            epochs: Vec::new(),
            epochs_version: 0,
            epochs_persisted: 0,
            rolling: false,
            closed: false,
            discard_generation: 0,
            discards: VecDeque::new(),
            producers: ProducerTable::default(),
        };
        let log = ReplicaLog {
            shared: Rc::new(Shared {
                directory: directory.to_path_buf(),
                state: RefCell::new(state),
                gate: Rc::new(IoGate::default()),
                sync_gate: Rc::new(IoGate::default()),
                zero_gate: Rc::new(IoGate::default()),
                checkpoint_gate: Rc::new(IoGate::default()),
                zeros_done: Signal::default(),
                roll_done: Signal::default(),
                files,
                clock,
                guard: RefCell::new(DiskGuard::new(directory)),
                config: RefCell::new(config),
                stats: Cell::new(LogStats::default()),
                observer: RefCell::new(None),
            }),
        };
        log.load_epochs()?;
        log.delete_segments_below_start()?;
        log.rebuild_producers()?;
        Ok(log)
    }

    /// Rebuilds the idempotent producers' state from the newest batches of the active
    /// segment (its last [`PRODUCER_SCAN_BYTES`] at most, from an index entry), so that a
    /// producer retrying across a restart is still recognized. A producer whose last batch
    /// lies further back is unknown and starts a new epoch.
    fn rebuild_producers(&self) -> StorageResult<()> {
        let mut state = self.shared.state.borrow_mut();
        let batch_bytes_max = self.shared.config.borrow().batch_bytes_max;
        let state = &mut *state;
        let active = &state.active;
        let end = active.written.position;
        let start = active
            .indexes
            .entry_at_or_below_position(end.saturating_sub(PRODUCER_SCAN_BYTES))
            .unwrap_or(LogPoint { position: 0, next_offset: active.base_offset });
        let mut walk = HeaderWalk::with_chunk(
            &active.read_file,
            &active.paths.log,
            start.position,
            end,
            batch_bytes_max,
            HEADER_CHUNK_BYTES,
        );
        walk.seek(start.position, start.next_offset);
        while let Some((header, meta)) = walk.next_header()? {
            let appended = Appended {
                base_offset: meta.base_offset,
                last_offset: Offset(meta.next_offset.0 - 1),
                next_offset: meta.next_offset,
                max_timestamp: meta.max_timestamp,
                discard_generation: state.discard_generation,
            };
            state.producers.record(&header, appended);
        }
        Ok(())
    }

    fn load_epochs(&self) -> StorageResult<()> {
        let directory = &self.shared.directory;
        let mut state = self.shared.state.borrow_mut();
        let log_end = state.log_end();
        let epochs = match checkpoint::read_epochs(directory) {
            Some(epochs) => epochs,
            None => {
                let mut rebuilt: Vec<EpochEntry> = Vec::new();
                let batch_bytes_max = self.shared.config.borrow().batch_bytes_max;
                read::for_each_batch(&state, &self.shared.files, batch_bytes_max, |meta| {
                    if rebuilt.last().is_none_or(|last| meta.epoch > last.epoch) {
                        rebuilt
                            .push(EpochEntry { epoch: meta.epoch, start_offset: meta.base_offset });
                    }
                })?;
                rebuilt
            }
        };
        let kept: Vec<EpochEntry> =
            epochs.into_iter().filter(|entry| entry.start_offset < log_end).collect();
        checkpoint::write_epochs(directory, &kept)?;
        state.epochs = kept;
        Ok(())
    }

    // ----- appends -------------------------------------------------------------------------

    /// Appends one batch as leader: validates it (length, CRC, record count), assigns offsets by
    /// rewriting its base offset and stamps `epoch`, then stages it. Returns once the batch is
    /// *appended*; it may first roll the segment or write staged bytes (backpressure).
    pub async fn append(&self, batch: &mut [u8], epoch: LeaderEpoch) -> StorageResult<Appended> {
        let header = self.prepare_append(batch).await?;
        let mut state = self.shared.state.borrow_mut();
        let base_offset = state.active.appended.next_offset;
        if let Some(last) = state.epochs.last() {
            if epoch < last.epoch {
                return Err(StorageError::EpochRegression { epoch, latest: last.epoch });
            }
        }
        match state.producers.admit(&header)? {
            Admission::Append => {}
            Admission::Duplicate { last, base_offset } => {
                return Err(StorageError::DuplicateSequence { last, base_offset })
            }
        }
        set_base_offset(batch, base_offset);
        set_partition_leader_epoch(batch, epoch);
        let header = BatchHeader { base_offset, partition_leader_epoch: epoch, ..header };
        let appended = self.stage(&mut state, batch, &header)?;
        state.producers.record(&header, appended);
        Ok(appended)
    }

    /// Appends one batch as follower: the batch keeps the offsets and epoch the leader gave it
    /// and must start exactly at this log's end.
    pub async fn append_replicated(&self, batch: &[u8]) -> StorageResult<Appended> {
        let header = self.prepare_append(batch).await?;
        let mut state = self.shared.state.borrow_mut();
        let expected = state.active.appended.next_offset;
        if header.base_offset != expected {
            return Err(StorageError::NotAtLogEnd {
                base_offset: header.base_offset,
                log_end: expected,
            });
        }
        if let Some(last) = state.epochs.last() {
            if header.partition_leader_epoch < last.epoch {
                return Err(StorageError::EpochRegression {
                    epoch: header.partition_leader_epoch,
                    latest: last.epoch,
                });
            }
        }
        let appended = self.stage(&mut state, batch, &header)?;
        state.producers.record(&header, appended);
        Ok(appended)
    }

    /// Validation, disk guard, roll and backpressure: everything before a batch can be staged.
    async fn prepare_append(&self, batch: &[u8]) -> StorageResult<BatchHeader> {
        let config = self.shared.config.borrow().clone();
        let header = validate_batch(batch, config.batch_bytes_max)?;
        if header.total_len() != batch.len() {
            return Err(StorageError::InvalidRequest(format!(
                "{} trailing bytes after the batch",
                batch.len() - header.total_len()
            )));
        }
        let length = batch.len() as u64;
        if length > config.segment_bytes_max {
            return Err(StorageError::BatchTooLarge {
                batch_bytes: batch.len(),
                limit_bytes: config.segment_bytes_max as usize,
            });
        }
        loop {
            let (rolling, needs_roll, unwritten) = {
                let state = self.shared.state.borrow();
                if state.closed {
                    return Err(StorageError::Closed);
                }
                let delta = i64::from(header.last_offset_delta) + 1;
                let now = self.shared.clock.now_ms();
                let needs_roll = state.active.is_full(length, delta, &config, now);
                let unwritten = state.active.appended.position - state.active.written.position;
                (state.rolling, needs_roll, unwritten)
            };
            if rolling {
                let seen = self.shared.roll_done.generation();
                if self.shared.state.borrow().rolling {
                    self.shared.roll_done.changed(seen).await;
                }
            } else if needs_roll {
                self.roll().await?;
            } else if unwritten >= UNWRITTEN_BYTES_MAX {
                self.flush().await?;
            } else {
                break;
            }
        }
        self.shared.guard.borrow_mut().check(&config, length)?;
        Ok(header)
    }

    fn stage(
        &self,
        state: &mut LogState,
        batch: &[u8],
        header: &BatchHeader,
    ) -> StorageResult<Appended> {
        if state.closed || state.rolling {
            return Err(StorageError::Closed);
        }
        let meta = BatchMeta::from_header(header, state.active.appended.position);
        if state.epochs.last().is_none_or(|last| header.partition_leader_epoch > last.epoch) {
            // Persisted by the next write round, before this batch can reach the file.
            let mut epochs = state.epochs.clone();
            epochs.push(EpochEntry {
                epoch: header.partition_leader_epoch,
                start_offset: meta.base_offset,
            });
            if epochs.len() > checkpoint::LEADER_EPOCH_ENTRIES_MAX {
                epochs.remove(0);
            }
            state.set_epochs(epochs);
        }
        state.active.append(batch, meta, self.shared.clock.now_ms());
        Ok(Appended {
            base_offset: meta.base_offset,
            last_offset: Offset(meta.next_offset.0 - 1),
            next_offset: meta.next_offset,
            max_timestamp: meta.max_timestamp,
            discard_generation: state.discard_generation,
        })
    }

    // ----- written and durable --------------------------------------------------------------

    /// Waits until the batch is *written* (on the file; visible to readers).
    pub async fn wait_written(&self, appended: &Appended) -> StorageResult<()> {
        self.wait_until(appended, false).await
    }

    /// Waits until the batch is *durable* (an fdatasync covering it returned). Concurrent
    /// callers share fdatasyncs (group commit).
    pub async fn wait_durable(&self, appended: &Appended) -> StorageResult<()> {
        self.wait_until(appended, true).await
    }

    async fn wait_until(&self, appended: &Appended, durable: bool) -> StorageResult<()> {
        loop {
            if self.reached(appended, durable)? {
                return Ok(());
            }
            if !self.reached(appended, false)? {
                let _guard = self.shared.gate.acquire().await;
                if !self.reached(appended, false)? {
                    self.write_round().await?;
                }
            }
            if durable {
                // The write gate is released: the next round is written while this sync runs.
                let _sync = self.shared.sync_gate.acquire().await;
                if self.reached(appended, true)? {
                    return Ok(());
                }
                self.sync_round().await?;
            }
        }
    }

    /// All three gates, write gate first, zero gate last (roll, truncate, close): no round,
    /// no fdatasync and no zero-fill runs while they are held.
    async fn exclusive(&self) -> (IoGuard, IoGuard, IoGuard) {
        let write = self.shared.gate.acquire().await;
        let sync = self.shared.sync_gate.acquire().await;
        let zeros = self.shared.zero_gate.acquire().await;
        (write, sync, zeros)
    }

    fn reached(&self, appended: &Appended, durable: bool) -> StorageResult<bool> {
        let state = self.shared.state.borrow();
        if state.was_discarded(appended.discard_generation, appended.next_offset) {
            return Err(StorageError::AppendDiscarded { next_offset: appended.next_offset });
        }
        let point = if durable { state.active.durable } else { state.active.written };
        Ok(point.next_offset >= appended.next_offset)
    }

    /// Changes [`LogConfig::tail_cache_bytes`] (kept across rolls); chunks over the new bound
    /// are dropped now.
    pub fn set_tail_cache_bytes(&self, bytes: usize) {
        self.shared.config.borrow_mut().tail_cache_bytes = bytes;
        self.shared.state.borrow_mut().active.recent.set_bytes_max(bytes);
    }

    /// Reports write round and fdatasync durations to `observer` from now on.
    pub fn set_observer(&self, observer: Rc<dyn LogObserver>) {
        *self.shared.observer.borrow_mut() = Some(observer);
    }

    fn observe(&self, report: impl FnOnce(&dyn LogObserver)) {
        let observer = self.shared.observer.borrow().clone();
        if let Some(observer) = observer {
            report(observer.as_ref());
        }
    }

    /// Writes everything appended so far; returns the log end offset after it.
    pub async fn flush(&self) -> StorageResult<Offset> {
        let _guard = self.shared.gate.acquire().await;
        self.write_round().await?;
        Ok(self.log_end_offset())
    }

    /// Writes and fdatasyncs everything appended so far; returns the durable end offset.
    pub async fn sync(&self) -> StorageResult<Offset> {
        {
            let _guard = self.shared.gate.acquire().await;
            self.write_round().await?;
        }
        let _sync = self.shared.sync_gate.acquire().await;
        self.sync_round().await?;
        Ok(self.durable_end_offset())
    }

    /// One write round (caller holds the gate). On failure every unwritten append is dropped
    /// and the file is cut back to the written end, so nothing half-written can resurface.
    /// A round never writes where the zero-fill task is writing: it waits for the task first.
    /// Afterwards it starts the zero-fill task when due (see [`LogConfig::zero_fill_bytes`]).
    async fn write_round(&self) -> StorageResult<()> {
        self.persist_epochs().await?;
        let (file, round, path) = {
            let mut state = self.shared.state.borrow_mut();
            let Some(round) = state.active.take_round() else { return Ok(()) };
            (Rc::clone(&state.active.direct), round, state.active.paths.log.clone())
        };
        self.preallocate_ahead(&file, round.end.position, &path).await;
        self.wait_for_zeros(|active| active.round_must_wait_for_zeros(round.end.position)).await;
        // The round's writes go to the device together (they never overlap); written one
        // after another, a round of 30 staging buffers took 30 device latencies (~8 ms).
        let started = std::time::Instant::now();
        // Shared, so the buffers stay readable after the write (reads of the tail).
        let shared: Vec<(SharedBuffer, u64, usize)> = round
            .writes
            .into_iter()
            .map(|write| (write.buffer.into_shared(), write.position, write.data_len))
            .collect();
        let mut writes: Vec<_> = shared
            .iter()
            .map(|(buffer, position, _)| {
                let file = Rc::clone(&file);
                let buffer = buffer.clone();
                let position = *position;
                runtime::spawn(async move {
                    (file.write_shared_at(&buffer, position).await, buffer.len())
                })
            })
            .collect();
        let mut outcome = Ok(());
        // Every write is awaited, also after a failure: the cut below must not race one.
        for write in writes.drain(..) {
            let (result, expected) = write.await;
            let failure = match result {
                Ok(written) if written == expected => continue,
                Ok(written) => std::io::Error::other(format!("short write {written}/{expected}")),
                Err(error) => error,
            };
            if outcome.is_ok() {
                outcome = Err(StorageError::io(&path, failure));
            }
        }
        self.observe(|observer| observer.write_round(started.elapsed()));
        if let Err(error) = outcome {
            let written_end = {
                let mut state = self.shared.state.borrow_mut();
                state.active.abort_round();
                let end = state.active.written;
                state.active.limit_zero_fill(end.position);
                state.record_discard(end.next_offset);
                end
            };
            // The zero-fill task stops at the new limit; the cut waits until it has.
            self.wait_for_zeros(|active| active.zeroing()).await;
            if let Err(cut_error) = file.truncate(written_end.position).await {
                tracing::error!(%cut_error, ?path, "could not cut the log after a failed write");
            }
            if let Err(rebuild_error) = self.rebuild_producers() {
                tracing::warn!(%rebuild_error, ?path, "idempotent producers' state not rebuilt");
            }
            return Err(error);
        }
        let zero_fill_due = {
            let mut state = self.shared.state.borrow_mut();
            state.active.finish_round(round.end, shared);
            let due = state.active.zero_fill_due(round.end.position);
            if due {
                state.active.mark_zero_task_spawned();
            }
            due
        };
        if zero_fill_due {
            runtime::spawn_detached(zero_fill_task(Rc::downgrade(&self.shared), file));
        }
        let mut stats = self.shared.stats.get();
        stats.write_rounds += 1;
        self.shared.stats.set(stats);
        Ok(())
    }

    /// Writes the leader-epoch checkpoint if the history changed since it was last written, on
    /// the executor's blocking thread (caller holds the write gate, which serializes these
    /// writes).
    async fn persist_epochs(&self) -> StorageResult<()> {
        let (version, entries) = {
            let state = self.shared.state.borrow();
            if state.epochs_version == state.epochs_persisted {
                return Ok(());
            }
            (state.epochs_version, state.epochs.clone())
        };
        let directory = self.shared.directory.clone();
        runtime::blocking(move || checkpoint::write_epochs(&directory, &entries)).await?;
        let mut state = self.shared.state.borrow_mut();
        state.epochs_persisted = state.epochs_persisted.max(version);
        Ok(())
    }

    /// Records that a leader of `epoch` takes over at the log's end: the epoch's start offset
    /// goes into the leader-epoch history (and its checkpoint, before this returns), so a
    /// follower asking where an older epoch ended gets this offset even before any batch of the
    /// new epoch is appended. A no-op for an epoch not newer than the log's latest.
    pub async fn assign_epoch(&self, epoch: LeaderEpoch) -> StorageResult<()> {
        let _guard = self.shared.gate.acquire().await;
        {
            let mut state = self.shared.state.borrow_mut();
            if state.epochs.last().is_some_and(|last| last.epoch >= epoch) {
                return Ok(());
            }
            let start_offset = state.active.appended.next_offset;
            let mut epochs = state.epochs.clone();
            epochs.push(EpochEntry { epoch, start_offset });
            if epochs.len() > checkpoint::LEADER_EPOCH_ENTRIES_MAX {
                epochs.remove(0);
            }
            state.set_epochs(epochs);
        }
        self.persist_epochs().await
    }

    /// Waits while the zero-fill task runs and `blocked` holds for the active segment. Never
    /// waits when the caller holds the zero gate: the task writes only while holding it.
    async fn wait_for_zeros(&self, blocked: impl Fn(&ActiveSegment) -> bool) {
        loop {
            let seen = self.shared.zeros_done.generation();
            if !blocked(&self.shared.state.borrow().active) {
                return;
            }
            self.shared.zeros_done.changed(seen).await;
        }
    }

    /// Extends the file ahead of a round ending at `round_end` when due (caller holds the
    /// gate; see [`LogConfig::preallocate_bytes`]). Not fatal: on a full volume the write
    /// itself reports ENOSPC, and the disk guard refuses appends well before that.
    async fn preallocate_ahead(&self, file: &DirectFile, round_end: u64, path: &Path) {
        let due = self.shared.state.borrow().active.preallocation_due(round_end);
        let Some(length) = due else { return };
        match file.preallocate(length).await {
            Ok(()) => self.shared.state.borrow_mut().active.preallocated(length),
            Err(error) => tracing::debug!(%error, ?path, length, "extending the segment failed"),
        }
    }

    /// fdatasync of the active segment up to what is written now (caller holds the sync
    /// gate; writes completing meanwhile are covered by the next sync).
    async fn sync_round(&self) -> StorageResult<()> {
        let (file, point, path) = {
            let state = self.shared.state.borrow();
            if state.active.durable == state.active.written {
                return Ok(());
            }
            (Rc::clone(&state.active.direct), state.active.written, state.active.paths.log.clone())
        };
        let started = std::time::Instant::now();
        let synced = file.sync_data().await;
        self.observe(|observer| observer.sync(started.elapsed()));
        synced.at(&path)?;
        let mut stats = self.shared.stats.get();
        stats.syncs += 1;
        self.shared.stats.set(stats);
        self.shared.state.borrow_mut().active.mark_durable(point)
    }

    // ----- roll -----------------------------------------------------------------------------

    /// Seals the active segment and starts a new one (no-op while it is empty). Appends wait.
    pub async fn roll(&self) -> StorageResult<()> {
        let _guards = self.exclusive().await;
        self.shared.state.borrow_mut().rolling = true;
        let outcome = self.roll_locked().await;
        self.shared.state.borrow_mut().rolling = false;
        self.shared.roll_done.notify();
        outcome
    }

    async fn roll_locked(&self) -> StorageResult<()> {
        self.write_round().await?;
        self.sync_round().await?;
        let (end, file, path) = {
            let state = self.shared.state.borrow();
            if state.active.written.position == 0 {
                return Ok(());
            }
            (state.active.written, Rc::clone(&state.active.direct), state.active.paths.log.clone())
        };
        let config = self.shared.config.borrow().clone();
        // The new segment exists before the old one is cut: if it cannot be created (ENOSPC)
        // the old one simply stays active.
        let new_active =
            ActiveSegment::create(&self.shared.directory, end.next_offset, &config).await?;
        file.truncate(end.position).await.at(&path)?;
        file.sync_data().await.at(&path)?;
        drop(file);
        let old = std::mem::replace(&mut self.shared.state.borrow_mut().active, new_active);
        let (sealed, read_file) = old.into_sealed()?;
        self.shared.files.insert(&sealed.paths.log, read_file);
        self.shared.state.borrow_mut().sealed.insert(sealed.base_offset, sealed);
        checkpoint::sync_directory(&self.shared.directory)
    }

    // ----- truncation, deletion, retention --------------------------------------------------

    /// Removes every batch at or after `offset` (a follower diverging from a new leader). The
    /// cut is at a batch boundary: a batch holding `offset` is removed whole. Below the log
    /// start the log is emptied and restarts at `offset`.
    pub async fn truncate_to(&self, offset: Offset) -> StorageResult<()> {
        let _guards = self.exclusive().await;
        self.write_round().await?;
        self.sync_round().await?;
        let (log_start, log_end) = {
            let state = self.shared.state.borrow();
            (state.log_start, state.log_end())
        };
        if offset >= log_end {
            return Ok(());
        }
        if offset <= log_start {
            self.restart_at(offset).await?;
        } else {
            self.drop_segments_from(offset).await?;
            self.truncate_active(offset).await?;
        }
        {
            let mut state = self.shared.state.borrow_mut();
            let new_end = state.log_end();
            state.record_discard(new_end);
            let mut epochs = state.epochs.clone();
            epochs.retain(|entry| entry.start_offset < new_end);
            state.set_epochs(epochs);
            if new_end < state.log_start {
                // The batch holding the cut started below the log start: the start follows.
                checkpoint::write_offset(&self.shared.directory, LOG_START_FILE, new_end)?;
                state.log_start = new_end;
            }
            state.high_watermark = state.high_watermark.min(new_end);
        }
        self.persist_epochs().await?;
        self.rebuild_producers()
    }

    /// Deletes whole segments starting at or after `offset`, newest first; if the active one
    /// goes, the sealed segment holding `offset` becomes active again.
    async fn drop_segments_from(&self, offset: Offset) -> StorageResult<()> {
        let config = self.shared.config.borrow().clone();
        let doomed: Vec<SegmentPaths> = {
            let mut state = self.shared.state.borrow_mut();
            let later: Vec<Offset> = state.sealed.range(offset..).map(|(base, _)| *base).collect();
            later
                .iter()
                .rev()
                .filter_map(|base| state.sealed.remove(base))
                .map(|segment| segment.paths)
                .collect()
        };
        let active_base = self.shared.state.borrow().active.base_offset;
        if active_base >= offset {
            self.shared.state.borrow().active.paths.remove()?;
        }
        for paths in &doomed {
            self.shared.files.remove(&paths.log);
            paths.remove()?;
        }
        if active_base >= offset {
            let reopen = self.shared.state.borrow_mut().sealed.pop_last();
            if let Some((base, segment)) = reopen {
                self.shared.files.remove(&segment.paths.log);
                drop(segment);
                let (active, _) =
                    ActiveSegment::open(&self.shared.directory, base, &config).await?;
                self.shared.state.borrow_mut().active = active;
            }
        }
        checkpoint::sync_directory(&self.shared.directory)
    }

    /// Cuts the active segment at the batch boundary at or below `offset`.
    async fn truncate_active(&self, offset: Offset) -> StorageResult<()> {
        let config = self.shared.config.borrow().clone();
        let (file, path, cut) = {
            let state = self.shared.state.borrow();
            let active = &state.active;
            let start = active.indexes.position_floor(offset);
            let mut walk = HeaderWalk::new(
                &active.read_file,
                &active.paths.log,
                start,
                active.written.position,
                config.batch_bytes_max,
            );
            let mut cut = active.written;
            while let Some(meta) = walk.next_batch()? {
                if meta.next_offset > offset {
                    cut = LogPoint { position: meta.position, next_offset: meta.base_offset };
                    break;
                }
            }
            (Rc::clone(&active.direct), active.paths.log.clone(), cut)
        };
        file.truncate(cut.position).await.at(&path)?;
        file.sync_data().await.at(&path)?;
        file.preallocate(config.allocation_for(cut.position)).await.at(&path)?;
        self.shared.state.borrow_mut().active.reset_after_truncate(cut)
    }

    /// Empties the log and restarts it at `offset` (a follower whose whole log lies below the
    /// leader's log start).
    pub async fn reset_to(&self, offset: Offset) -> StorageResult<()> {
        let _guards = self.exclusive().await;
        self.write_round().await?;
        self.sync_round().await?;
        self.restart_at(offset).await?;
        {
            let mut state = self.shared.state.borrow_mut();
            state.record_discard(offset);
            state.set_epochs(Vec::new());
            state.high_watermark = offset;
        }
        self.persist_epochs().await?;
        self.rebuild_producers()
    }

    /// Empties the log and restarts it at `offset`.
    async fn restart_at(&self, offset: Offset) -> StorageResult<()> {
        let config = self.shared.config.borrow().clone();
        let doomed: Vec<SegmentPaths> = {
            let mut state = self.shared.state.borrow_mut();
            let sealed = std::mem::take(&mut state.sealed);
            let mut paths: Vec<SegmentPaths> =
                sealed.into_values().rev().map(|segment| segment.paths).collect();
            paths.insert(0, state.active.paths.clone());
            paths
        };
        checkpoint::write_offset(&self.shared.directory, LOG_START_FILE, offset)?;
        for paths in &doomed {
            self.shared.files.remove(&paths.log);
            paths.remove()?;
        }
        let active = ActiveSegment::create(&self.shared.directory, offset, &config).await?;
        let mut state = self.shared.state.borrow_mut();
        state.active = active;
        state.log_start = offset;
        Ok(())
    }

    /// Advances the log start offset to `offset` (retention, delete-records) and deletes the
    /// sealed segments wholly below it. Readers below the new start get `OffsetOutOfRange`;
    /// readers already holding a slice of a deleted segment keep reading it.
    pub fn delete_before(&self, offset: Offset) -> StorageResult<RetentionReport> {
        let mut state = self.shared.state.borrow_mut();
        if offset > state.log_end() {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: state.log_start,
                log_end: state.log_end(),
            });
        }
        if offset > state.log_start {
            checkpoint::write_offset(&self.shared.directory, LOG_START_FILE, offset)?;
            state.log_start = offset;
            state.high_watermark = state.high_watermark.max(offset);
        }
        drop(state);
        self.delete_segments_below_start()
    }

    fn delete_segments_below_start(&self) -> StorageResult<RetentionReport> {
        let mut state = self.shared.state.borrow_mut();
        let mut report = RetentionReport::default();
        let log_start = state.log_start;
        while let Some(entry) = state.sealed.first_entry() {
            if entry.get().next_offset > log_start {
                break;
            }
            let segment = entry.remove();
            self.shared.files.remove(&segment.paths.log);
            segment.paths.remove()?;
            report.segments_deleted += 1;
            report.bytes_deleted += segment.size_bytes;
        }
        report.log_start = state.log_start;
        Ok(report)
    }

    /// Applies time and size retention: deletes the oldest sealed segments whose newest record
    /// is older than `retention_ms`, and more while the log exceeds `retention_bytes`. The
    /// active segment is never deleted.
    pub fn apply_retention(&self) -> StorageResult<RetentionReport> {
        let config = self.shared.config.borrow().clone();
        let now = self.shared.clock.now_ms();
        let delete_through = {
            let state = self.shared.state.borrow();
            let mut remaining = state.size_bytes();
            let mut through = None;
            for segment in state.sealed.values() {
                let expired = config.retention_ms.is_some_and(|limit| {
                    let cutoff = now.0.saturating_sub(limit.min(i64::MAX as u64) as i64);
                    segment.max_timestamp().is_none_or(|max| max.0 < cutoff)
                });
                let oversized = config.retention_bytes.is_some_and(|limit| remaining > limit);
                if !(expired || oversized) {
                    break;
                }
                remaining -= segment.size_bytes;
                through = Some(segment.next_offset);
            }
            through
        };
        match delete_through {
            Some(offset) => self.delete_before(offset),
            None => Ok(RetentionReport {
                log_start: self.log_start_offset(),
                ..RetentionReport::default()
            }),
        }
    }

    // ----- reads ----------------------------------------------------------------------------

    /// Whole written batches from the one holding `start`, up to `bytes_max` bytes (at least one
    /// batch), none ending above `upper` (pass the HW for committed reads, the LEO otherwise).
    pub fn read(&self, start: Offset, bytes_max: u64, upper: Offset) -> StorageResult<ReadSlices> {
        let batch_bytes_max = self.shared.config.borrow().batch_bytes_max;
        let state = self.shared.state.borrow();
        read::read_slices(&state, &self.shared.files, batch_bytes_max, start, bytes_max, upper)
    }

    /// Like [`ReplicaLog::read`] but copies the batches to the end of `out`, verifying each
    /// batch's CRC. On corruption nothing is appended.
    pub fn read_into(
        &self,
        start: Offset,
        bytes_max: u64,
        upper: Offset,
        out: &mut Vec<u8>,
    ) -> StorageResult<CopiedRead> {
        use std::os::unix::fs::FileExt;
        let slices = self.read(start, bytes_max, upper)?;
        let begin = out.len();
        for slice in &slices.slices {
            if !slice.memory().is_empty() {
                for piece in slice.memory() {
                    out.extend_from_slice(piece.as_slice());
                }
                continue;
            }
            let at = out.len();
            out.resize(at + slice.length() as usize, 0);
            if let Err(error) = slice.file().read_exact_at(&mut out[at..], slice.position()) {
                out.truncate(begin);
                return Err(StorageError::io(&self.shared.directory, error));
            }
        }
        let batch_bytes_max = self.shared.config.borrow().batch_bytes_max;
        let mut cursor = begin;
        let mut batches = 0;
        while cursor < out.len() {
            match validate_batch(&out[cursor..], batch_bytes_max) {
                Ok(header) => cursor += header.total_len(),
                Err(error) => {
                    out.truncate(begin);
                    return Err(StorageError::corruption(
                        &self.shared.directory,
                        (cursor - begin) as u64,
                        format!("batch {batches} of a read from offset {start}: {error}"),
                    ));
                }
            }
            batches += 1;
        }
        Ok(CopiedRead {
            next_offset: slices.next_offset,
            bytes: (out.len() - begin) as u64,
            batches,
        })
    }

    /// Base offset of the first batch whose max timestamp is at least `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: TimestampMs) -> StorageResult<Option<Offset>> {
        let batch_bytes_max = self.shared.config.borrow().batch_bytes_max;
        let state = self.shared.state.borrow();
        read::offset_for_timestamp(&state, &self.shared.files, batch_bytes_max, timestamp)
    }

    // ----- epochs, watermarks, state ---------------------------------------------------------

    /// For a follower's `epoch`: the largest epoch `<=` it this log knows and the offset where
    /// that epoch ended here (the next epoch's start, or the log end). `None` when unknown.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let state = self.shared.state.borrow();
        checkpoint::end_offset_for_epoch(&state.epochs, state.active.appended.next_offset, epoch)
    }

    /// The leader-epoch history (epoch, first offset).
    pub fn epochs(&self) -> Vec<EpochEntry> {
        self.shared.state.borrow().epochs.clone()
    }

    /// Log end offset: the offset after the last *written* batch (what readers can see).
    pub fn log_end_offset(&self) -> Offset {
        self.shared.state.borrow().log_end()
    }

    /// Offset after the last *appended* batch (what the next append gets).
    pub fn appended_end_offset(&self) -> Offset {
        self.shared.state.borrow().active.appended.next_offset
    }

    /// Offset after the last *durable* batch.
    pub fn durable_end_offset(&self) -> Offset {
        self.shared.state.borrow().active.durable.next_offset
    }

    /// First offset still held.
    pub fn log_start_offset(&self) -> Offset {
        self.shared.state.borrow().log_start
    }

    /// The high watermark (clamped to the log).
    pub fn high_watermark(&self) -> Offset {
        self.shared.state.borrow().high_watermark
    }

    /// Sets the high watermark (clamped to `[log start, log end]`); persisted by
    /// [`ReplicaLog::checkpoint_high_watermark`] and on close.
    pub fn set_high_watermark(&self, high_watermark: Offset) {
        let mut state = self.shared.state.borrow_mut();
        state.high_watermark = high_watermark.clamp(state.log_start, state.log_end());
    }

    /// Writes the high-watermark checkpoint if it changed, on the executor's blocking thread.
    pub async fn checkpoint_high_watermark(&self) -> StorageResult<()> {
        let _guard = self.shared.checkpoint_gate.acquire().await;
        let high_watermark = {
            let state = self.shared.state.borrow();
            if state.high_watermark_checkpointed == Some(state.high_watermark) {
                return Ok(());
            }
            state.high_watermark
        };
        let directory = self.shared.directory.clone();
        runtime::blocking(move || {
            checkpoint::write_offset(&directory, HIGH_WATERMARK_FILE, high_watermark)
        })
        .await?;
        self.shared.state.borrow_mut().high_watermark_checkpointed = Some(high_watermark);
        Ok(())
    }

    /// I/O counters.
    pub fn stats(&self) -> LogStats {
        self.shared.stats.get()
    }

    /// Number of segments (sealed plus the active one).
    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().sealed.len() + 1
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        let state = self.shared.state.borrow();
        state.sealed.keys().copied().chain(std::iter::once(state.active.base_offset)).collect()
    }

    /// Written bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared.state.borrow().size_bytes()
    }

    /// The replica directory.
    pub fn directory(&self) -> &Path {
        &self.shared.directory
    }

    /// Replaces the configuration (e.g. retention or the disk-guard floor). Segment size
    /// changes apply to the next segment.
    pub fn update_config(&self, config: LogConfig) -> StorageResult<()> {
        config.validate()?;
        self.shared.state.borrow_mut().active.recent.set_bytes_max(config.tail_cache_bytes);
        *self.shared.config.borrow_mut() = config;
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> LogConfig {
        self.shared.config.borrow().clone()
    }

    /// Makes everything appended durable, checkpoints the high watermark and closes the
    /// files. The files stay; opening the directory again gives back the same log.
    pub async fn close(&self) -> StorageResult<()> {
        {
            let _guards = self.exclusive().await;
            self.write_round().await?;
            self.sync_round().await?;
            self.shared.state.borrow_mut().closed = true;
        }
        self.checkpoint_high_watermark().await?;
        let state = self.shared.state.borrow();
        for segment in state.sealed.values() {
            self.shared.files.remove(&segment.paths.log);
        }
        Ok(())
    }
}

/// The zero-fill task of one active segment (see [`LogConfig::zero_fill_bytes`]): takes the
/// zero gate, claims the range past everything appended, and writes zeros over it piece by
/// piece while the log is open and `file` is still its active segment's. Zeros only make later
/// writes and fdatasyncs cheaper: a failure stops zero-filling this segment, nothing else.
///
/// It holds the log weakly: a log dropped without closing (a simulated crash) stops it at the
/// next piece. Roll, truncate and close take the zero gate, so they never cut or seal a file
/// under it.
async fn zero_fill_task(log: std::rc::Weak<Shared>, file: Rc<DirectFile>) {
    let Some(gate) = log.upgrade().map(|shared| Rc::clone(&shared.zero_gate)) else { return };
    let _zeros = gate.acquire().await;
    let claimed = log.upgrade().and_then(|shared| {
        let mut state = shared.state.borrow_mut();
        let current = !state.closed && Rc::ptr_eq(&state.active.direct, &file);
        current.then(|| state.active.claim_zero_range())
    });
    let Some(range) = claimed else { return };
    if let Some((from, to)) = range {
        let mut position = from;
        while position < to {
            let length = segment::ZERO_WRITE_BYTES.min(to - position);
            let allowed = log.upgrade().is_some_and(|shared| {
                let state = shared.state.borrow();
                !state.closed
                    && Rc::ptr_eq(&state.active.direct, &file)
                    && state.active.zero_write_allowed(position, length)
            });
            if !allowed {
                break;
            }
            let outcome = file.write_zeros_at(position, length as usize).await;
            let Some(shared) = log.upgrade() else { return };
            let mut state = shared.state.borrow_mut();
            match outcome {
                Ok(written) if written as u64 == length => {
                    position += length;
                    state.active.zero_filled(position);
                }
                failed => {
                    let error = failed.map_or_else(
                        |error| error.to_string(),
                        |written| format!("short zero write {written}/{length}"),
                    );
                    tracing::debug!(%error, path = ?state.active.paths.log, "zero-filling ahead failed; stopped");
                    state.active.limit_zero_fill(position);
                    break;
                }
            }
        }
    }
    if let Some(shared) = log.upgrade() {
        let mut state = shared.state.borrow_mut();
        if Rc::ptr_eq(&state.active.direct, &file) {
            state.active.zero_task_ended();
        }
        drop(state);
        shared.zeros_done.notify();
    }
}
