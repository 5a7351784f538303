//! Consumer threads: partitions are shared out round robin among the threads; each thread owns
//! its [`PartitionConsumer`]s and polls them in turn.
//!
//! Two modes. *Catch-up* reads from the beginning and stops at the end offset seen at start
//! (or at `--records` / `--duration`); a record is measured when it arrives after the warm-up.
//! *End-to-end* reads new records only and stops when told; a record is measured when its
//! stamped send time is after the warm-up, and its latency is the time the poll that returned
//! it came back minus that stamp (one clock, read once per poll).
//! Latencies go to a thread-local histogram merged into the live one every
//! [`MERGE_INTERVAL`], so the hot loop takes no lock per record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{Cluster, ConsumerConfig, PartitionConsumer, Poll, StartFrom};
use sluice_proto::api::fetch::Isolation;

use super::{monotonic_nanos, value_send_nanos, Clock};
use crate::args::{IsolationLevel, RunLength};
use crate::error::PerfError;
use crate::histogram::LatencyHistogram;
use crate::progress::LiveStats;

/// How often a consumer thread hands its latencies to the live histogram.
const MERGE_INTERVAL: Duration = Duration::from_millis(100);
/// Poll wait of a thread reading one partition (it has nothing else to do).
const POLL_WAIT_SINGLE: Duration = Duration::from_millis(50);
/// Poll wait of a thread reading several partitions (the others must not wait long).
const POLL_WAIT_SHARED: Duration = Duration::from_millis(1);

/// What the consumers do.
#[derive(Clone, Copy, Debug)]
pub enum ConsumeMode {
    /// From the beginning up to the end seen at start, or the given length.
    CatchUp {
        /// `None`: until the end.
        length: Option<RunLength>,
    },
    /// New records only, until stopped; end-to-end latency per record.
    EndToEnd,
}

/// What every consumer thread reads.
#[derive(Clone, Debug)]
pub struct ConsumePlan {
    /// Topic.
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Consumer threads (at most one per partition is useful).
    pub consumers: u32,
    /// Isolation.
    pub isolation: IsolationLevel,
    /// Mode.
    pub mode: ConsumeMode,
    /// The run's clock.
    pub clock: Clock,
}

/// Shared by a plan's consumer threads.
#[derive(Debug)]
pub struct ConsumeState {
    stats: Arc<LiveStats>,
    /// Set to stop every thread.
    pub stop: AtomicBool,
    measured_records: AtomicU64,
    measured_bytes: AtomicU64,
    warmup_records: AtomicU64,
    /// Nanoseconds after the clock's start of the latest measured record.
    last_record_nanos: AtomicU64,
    /// Nanoseconds after the clock's start of the first measured record.
    first_record_nanos: AtomicU64,
    /// End-to-end: records stamped before this (raw monotonic nanoseconds) are warm-up.
    warmup_end_nanos: AtomicU64,
}

/// Totals of all consumer threads.
#[derive(Clone, Debug, Default)]
pub struct ConsumeTotals {
    /// Measured records received.
    pub records: u64,
    /// Their value bytes.
    pub bytes: u64,
    /// Records received during the warm-up.
    pub warmup_records: u64,
    /// When the first and the last measured record arrived.
    pub first_and_last: Option<(Instant, Instant)>,
    /// Latency of polls that returned records.
    pub poll_latency: LatencyHistogram,
}

impl ConsumeState {
    /// State counting into `stats`.
    pub fn new(stats: Arc<LiveStats>) -> Arc<ConsumeState> {
        Arc::new(ConsumeState {
            stats,
            stop: AtomicBool::new(false),
            measured_records: AtomicU64::new(0),
            measured_bytes: AtomicU64::new(0),
            warmup_records: AtomicU64::new(0),
            last_record_nanos: AtomicU64::new(0),
            first_record_nanos: AtomicU64::new(u64::MAX),
            warmup_end_nanos: AtomicU64::new(0),
        })
    }

    /// End-to-end: records stamped before `nanos` (raw monotonic) are warm-up. Set before
    /// anything is produced.
    pub fn set_warmup_end_nanos(&self, nanos: u64) {
        self.warmup_end_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Measured records received so far.
    pub fn measured_records(&self) -> u64 {
        self.measured_records.load(Ordering::Relaxed)
    }

    fn totals(&self, clock: &Clock, poll_latency: LatencyHistogram) -> ConsumeTotals {
        let first = self.first_record_nanos.load(Ordering::Relaxed);
        let last = self.last_record_nanos.load(Ordering::Relaxed);
        ConsumeTotals {
            records: self.measured_records(),
            bytes: self.measured_bytes.load(Ordering::Relaxed),
            warmup_records: self.warmup_records.load(Ordering::Relaxed),
            first_and_last: (first != u64::MAX).then(|| {
                (
                    clock.start + Duration::from_nanos(first),
                    clock.start + Duration::from_nanos(last.max(first)),
                )
            }),
            poll_latency,
        }
    }
}

/// Consumer threads running in the background; [`RunningConsumers::join`] collects them.
pub struct RunningConsumers {
    threads: Vec<std::thread::JoinHandle<Result<LatencyHistogram, PerfError>>>,
    state: Arc<ConsumeState>,
    clock: Clock,
}

impl RunningConsumers {
    /// Starts the threads of `plan` and returns once every consumer has its start position
    /// (so an end-to-end run may begin producing).
    pub fn start(
        cluster: &Cluster,
        plan: &ConsumePlan,
        state: &Arc<ConsumeState>,
    ) -> Result<RunningConsumers, PerfError> {
        let threads_count = plan.consumers.clamp(1, plan.partitions.max(1));
        let (ready_sender, ready) = mpsc::channel::<bool>();
        let mut threads = Vec::new();
        for index in 0..threads_count {
            let partitions: Vec<u32> = (0..plan.partitions)
                .filter(|partition| partition % threads_count == index)
                .collect();
            let (cluster, plan, state) = (cluster.clone(), plan.clone(), Arc::clone(state));
            let ready_sender = ready_sender.clone();
            let thread = std::thread::Builder::new()
                .name(format!("perf-consumer-{index}"))
                .spawn(move || consume_thread(&cluster, &plan, &partitions, &state, &ready_sender))
                .map_err(|error| PerfError::io("spawn a consumer thread", error))?;
            threads.push(thread);
        }
        drop(ready_sender);
        let running = RunningConsumers { threads, state: Arc::clone(state), clock: plan.clock };
        for _ in 0..threads_count {
            // `false` (or a thread gone): a consumer could not open; its error is the one
            // `join` returns.
            if !ready.recv().unwrap_or(false) {
                return match running.join() {
                    Err(error) => Err(error),
                    Ok(_) => {
                        Err(PerfError::Timeout("a consumer thread ended before opening".into()))
                    }
                };
            }
        }
        Ok(running)
    }

    /// Whether every thread has finished (catch-up reached its end).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|thread| thread.is_finished())
    }

    /// Stops (if still running) and waits for every thread; the first error wins.
    pub fn join(self) -> Result<ConsumeTotals, PerfError> {
        self.state.stop.store(true, Ordering::Relaxed);
        let mut poll_latency = LatencyHistogram::new();
        let mut first_error = None;
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(histogram)) => poll_latency.merge(&histogram),
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(_) => {
                    first_error.get_or_insert(PerfError::InvalidParameters(
                        "a consumer thread panicked".into(),
                    ));
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(self.state.totals(&self.clock, poll_latency)),
        }
    }
}

fn open_consumers(
    cluster: &Cluster,
    plan: &ConsumePlan,
    partitions: &[u32],
) -> Result<Vec<PartitionConsumer>, PerfError> {
    let config = ConsumerConfig {
        start: match plan.mode {
            ConsumeMode::CatchUp { .. } => StartFrom::Beginning,
            ConsumeMode::EndToEnd => StartFrom::End,
        },
        isolation: match plan.isolation {
            IsolationLevel::Committed => Isolation::ReadCommitted,
            IsolationLevel::Uncommitted => Isolation::ReadUncommitted,
        },
        stop_at_end: matches!(plan.mode, ConsumeMode::CatchUp { .. }),
        ..ConsumerConfig::default()
    };
    partitions
        .iter()
        .map(|&partition| cluster.consumer(&plan.topic, partition, config.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PerfError::Client)
}

fn consume_thread(
    cluster: &Cluster,
    plan: &ConsumePlan,
    partitions: &[u32],
    state: &ConsumeState,
    ready: &mpsc::Sender<bool>,
) -> Result<LatencyHistogram, PerfError> {
    let opened = open_consumers(cluster, plan, partitions);
    let _ = ready.send(opened.is_ok());
    let mut consumers = opened?;
    let mut reader = Reader::new(plan, state);
    let wait = if consumers.len() == 1 { POLL_WAIT_SINGLE } else { POLL_WAIT_SHARED };
    let mut ended = vec![false; consumers.len()];
    while !state.stop.load(Ordering::Relaxed) && !ended.iter().all(|&ended| ended) {
        for (consumer, ended) in consumers.iter_mut().zip(ended.iter_mut()) {
            if *ended {
                continue;
            }
            let polled_at = Instant::now();
            match consumer.poll(wait).map_err(PerfError::Client)? {
                Poll::Records(records) => {
                    let mut counts = reader.poll_returned(polled_at);
                    for record in records {
                        reader.record(&mut counts, record.value.unwrap_or(&[]));
                    }
                    reader.apply(&counts);
                }
                Poll::Idle => {}
                Poll::End => *ended = true,
            }
            reader.maybe_merge(false);
            if reader.length_reached() {
                state.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    reader.maybe_merge(true);
    Ok(reader.poll_latency)
}

/// What one poll returned, counted locally and applied to the shared state at once.
#[derive(Debug, Default)]
struct PollCounts {
    /// Raw monotonic time the poll returned: the arrival time of each of its records.
    arrived_nanos: u64,
    /// The same instant, as nanoseconds since the run's start.
    since_start_nanos: u64,
    /// End-to-end: records stamped before this are warm-up.
    warmup_end_nanos: u64,
    records: u64,
    bytes: u64,
    warmup_records: u64,
    measured_records: u64,
    measured_bytes: u64,
}

/// Per-thread counting of received records.
struct Reader<'a> {
    plan: &'a ConsumePlan,
    state: &'a ConsumeState,
    pending_latency: LatencyHistogram,
    poll_latency: LatencyHistogram,
    last_merge: Instant,
    measuring: bool,
}

impl<'a> Reader<'a> {
    fn new(plan: &'a ConsumePlan, state: &'a ConsumeState) -> Reader<'a> {
        Reader {
            plan,
            state,
            pending_latency: LatencyHistogram::new(),
            poll_latency: LatencyHistogram::new(),
            last_merge: Instant::now(),
            measuring: false,
        }
    }

    /// Starts counting the records of a poll that just returned: the clock is read here,
    /// once per poll, and every record of the poll arrived at this instant.
    fn poll_returned(&mut self, polled_at: Instant) -> PollCounts {
        let now = Instant::now();
        self.measuring = match self.plan.mode {
            ConsumeMode::CatchUp { .. } => now >= self.plan.clock.warmup_end,
            ConsumeMode::EndToEnd => true,
        };
        if self.measuring && matches!(self.plan.mode, ConsumeMode::CatchUp { .. }) {
            self.poll_latency.record(now - polled_at);
        }
        PollCounts {
            arrived_nanos: monotonic_nanos(),
            since_start_nanos: self.plan.clock.since_start_nanos(now),
            warmup_end_nanos: self.state.warmup_end_nanos.load(Ordering::Relaxed),
            ..PollCounts::default()
        }
    }

    /// Counts one record of the poll (no shared state touched: see [`Reader::apply`]).
    fn record(&mut self, counts: &mut PollCounts, value: &[u8]) {
        let bytes = value.len() as u64;
        counts.records += 1;
        counts.bytes += bytes;
        let measured = match self.plan.mode {
            ConsumeMode::CatchUp { .. } => self.measuring,
            ConsumeMode::EndToEnd => match value_send_nanos(value) {
                Some(sent) if sent >= counts.warmup_end_nanos => {
                    let latency = counts.arrived_nanos.saturating_sub(sent);
                    self.pending_latency.record(Duration::from_nanos(latency));
                    true
                }
                _ => false,
            },
        };
        if measured {
            counts.measured_records += 1;
            counts.measured_bytes += bytes;
        } else {
            counts.warmup_records += 1;
        }
    }

    /// Adds a poll's counts to the shared state: a handful of atomic operations per poll
    /// instead of seven per record (two consumer threads updating the same counters per
    /// record kept their cache lines moving between the cores).
    fn apply(&self, counts: &PollCounts) {
        if counts.records == 0 {
            return;
        }
        let state = self.state;
        state.stats.add(counts.records, counts.bytes);
        if counts.warmup_records > 0 {
            state.warmup_records.fetch_add(counts.warmup_records, Ordering::Relaxed);
        }
        if counts.measured_records == 0 {
            return;
        }
        state.stats.measuring.store(true, Ordering::Relaxed);
        state.measured_records.fetch_add(counts.measured_records, Ordering::Relaxed);
        state.measured_bytes.fetch_add(counts.measured_bytes, Ordering::Relaxed);
        state.first_record_nanos.fetch_min(counts.since_start_nanos, Ordering::Relaxed);
        state.last_record_nanos.fetch_max(counts.since_start_nanos, Ordering::Relaxed);
    }

    fn maybe_merge(&mut self, force: bool) {
        if self.pending_latency.count() > 0
            && (force || self.last_merge.elapsed() >= MERGE_INTERVAL)
        {
            self.state.stats.latency().merge(&self.pending_latency);
            self.pending_latency.clear();
            self.last_merge = Instant::now();
        }
    }

    fn length_reached(&self) -> bool {
        match self.plan.mode {
            ConsumeMode::CatchUp { length: Some(RunLength::Records(records)) } => {
                self.state.measured_records() >= records
            }
            ConsumeMode::CatchUp { length: Some(RunLength::Duration(duration)) } => {
                Instant::now() >= self.plan.clock.warmup_end + duration
            }
            ConsumeMode::CatchUp { length: None } | ConsumeMode::EndToEnd => false,
        }
    }
}
