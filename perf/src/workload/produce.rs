//! Producer threads: each owns a [`Producer`], paces its records (open loop with `--rate`, as
//! fast as back-pressure allows without), stamps each value with its intended send time and
//! records the latency to its acknowledgement from the delivery callback.
//!
//! A record is *measured* when its intended send time is at or after the end of the warm-up;
//! only measured records count in the figures. Failures are counted, the first one kept; a
//! send the client refuses as not retriable stops that producer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_client::{
    ClientError, Cluster, DeliveryListener, Producer, ProducerConfig, ProducerRecord,
    RecordMetadata,
};

use super::keys::KeyGenerator;
use super::{filler_value, stamp_value, Clock};
use crate::args::{KeyDistribution, RunLength};
use crate::error::PerfError;
use crate::histogram::LatencyHistogram;
use crate::pacing::{Pacer, ProducerSlot};
use crate::progress::LiveStats;

/// What every producer thread sends.
#[derive(Clone, Debug)]
pub struct ProducePlan {
    /// Topic.
    pub topic: String,
    /// Value bytes of each record.
    pub record_size: usize,
    /// Key choice.
    pub keys: KeyDistribution,
    /// Seed of the key generators (producer `i` uses `seed + i`).
    pub seed: u64,
    /// Producer threads.
    pub producers: u32,
    /// Open-loop rate over all producers.
    pub rate: Option<f64>,
    /// Measured length (records are shared out among producers).
    pub length: RunLength,
    /// The run's clock: start and end of the warm-up.
    pub clock: Clock,
    /// How long a producer may fall behind an open-loop schedule past the measured end.
    pub drain_timeout: Duration,
    /// Whether the producers' counts and latency are the run's headline figures (shown live);
    /// otherwise (end-to-end, where the consumers' are) they are kept apart
    /// ([`ProduceTotals::latency`]).
    pub live: bool,
}

/// Shared by a plan's producer threads and their delivery callbacks.
#[derive(Debug)]
pub struct ProduceState {
    stats: Arc<LiveStats>,
    live: bool,
    own_latency: Mutex<LatencyHistogram>,
    measured_records: AtomicU64,
    measured_bytes: AtomicU64,
    measured_sent: AtomicU64,
    warmup_records: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    clock: Clock,
    /// Nanoseconds after the clock's start of the latest measured acknowledgement.
    last_ack_nanos: AtomicU64,
    /// Value bytes of every record.
    record_bytes: u64,
}

/// Records between two reads of the clock for the give-up deadline.
const GIVE_UP_CHECK_EVERY: u64 = 1024;

/// The tag of a record sent with [`Producer::send_tagged`]: its intended send time as
/// nanoseconds after the run's start, and whether it is measured (the top bit). The
/// delivery listener needs nothing else, so sending allocates nothing per record.
fn tag_of(clock: &Clock, intended: Instant, measured: bool) -> u64 {
    let nanos = clock.since_start_nanos(intended) & !MEASURED_TAG_BIT;
    if measured {
        nanos | MEASURED_TAG_BIT
    } else {
        nanos
    }
}

const MEASURED_TAG_BIT: u64 = 1 << 63;

impl DeliveryListener for ProduceState {
    fn delivered(&self, tag: u64, result: Result<RecordMetadata, ClientError>) {
        let intended = self.clock.start + Duration::from_nanos(tag & !MEASURED_TAG_BIT);
        self.complete(result, intended, tag & MEASURED_TAG_BIT != 0, self.record_bytes);
    }

    /// A batch's records share one acknowledgement time: one clock read, one histogram lock
    /// and one update of each counter per batch (per record, these were most of the sender
    /// thread's own work at 400,000 records/s).
    fn delivered_batch(
        &self,
        records: &mut dyn Iterator<Item = (u64, Result<RecordMetadata, ClientError>)>,
    ) {
        let now = Instant::now();
        let (mut done, mut warmup, mut measured) = (0u64, 0u64, 0u64);
        let mut latencies = if self.live { None } else { Some(lock(&self.own_latency)) };
        let mut live_latencies = self.live.then(|| self.stats.latency());
        for (tag, result) in records {
            if let Err(error) = result {
                self.fail(&error);
                continue;
            }
            done += 1;
            if tag & MEASURED_TAG_BIT == 0 {
                warmup += 1;
                continue;
            }
            measured += 1;
            let intended = self.clock.start + Duration::from_nanos(tag & !MEASURED_TAG_BIT);
            let latency = now.saturating_duration_since(intended);
            if let Some(histogram) = live_latencies.as_mut() {
                histogram.record(latency);
            } else if let Some(histogram) = latencies.as_mut() {
                histogram.record(latency);
            }
        }
        drop(live_latencies);
        drop(latencies);
        if self.live && done > 0 {
            self.stats.add(done, done * self.record_bytes);
        }
        if warmup > 0 {
            self.warmup_records.fetch_add(warmup, Ordering::Relaxed);
        }
        if measured > 0 {
            self.measured_records.fetch_add(measured, Ordering::Relaxed);
            self.measured_bytes.fetch_add(measured * self.record_bytes, Ordering::Relaxed);
            let since_start = now.saturating_duration_since(self.clock.start).as_nanos() as u64;
            self.last_ack_nanos.fetch_max(since_start, Ordering::Relaxed);
        }
    }
}

/// Totals of all producer threads of a plan.
#[derive(Clone, Debug, Default)]
pub struct ProduceTotals {
    /// Measured records acknowledged.
    pub records: u64,
    /// Their value bytes.
    pub bytes: u64,
    /// Measured records handed to a producer.
    pub sent: u64,
    /// Warm-up records acknowledged.
    pub warmup_records: u64,
    /// Failed records.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Produce latency (empty when it went to the live histogram).
    pub latency: LatencyHistogram,
    /// When the last measured record was acknowledged.
    pub last_ack: Option<Instant>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProduceState {
    /// State for `plan`, counting into `stats`.
    pub fn new(plan: &ProducePlan, stats: Arc<LiveStats>) -> Arc<ProduceState> {
        Arc::new(ProduceState {
            stats,
            live: plan.live,
            own_latency: Mutex::new(LatencyHistogram::new()),
            measured_records: AtomicU64::new(0),
            measured_bytes: AtomicU64::new(0),
            measured_sent: AtomicU64::new(0),
            warmup_records: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            clock: plan.clock,
            last_ack_nanos: AtomicU64::new(0),
            record_bytes: plan.record_size as u64,
        })
    }

    fn fail(&self, error: &ClientError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(error.to_string());
        }
    }

    fn complete(
        &self,
        result: Result<RecordMetadata, ClientError>,
        intended: Instant,
        measured: bool,
        bytes: u64,
    ) {
        if let Err(error) = result {
            self.fail(&error);
            return;
        }
        let now = Instant::now();
        if self.live {
            self.stats.add(1, bytes);
        }
        if !measured {
            self.warmup_records.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.measured_records.fetch_add(1, Ordering::Relaxed);
        self.measured_bytes.fetch_add(bytes, Ordering::Relaxed);
        let latency = now.saturating_duration_since(intended);
        if self.live {
            self.stats.latency().record(latency);
        } else {
            lock(&self.own_latency).record(latency);
        }
        let since_start = now.saturating_duration_since(self.clock.start).as_nanos() as u64;
        self.last_ack_nanos.fetch_max(since_start, Ordering::Relaxed);
    }

    /// Measured records acknowledged so far.
    pub fn measured_records(&self) -> u64 {
        self.measured_records.load(Ordering::Relaxed)
    }

    /// The totals (call after every producer flushed).
    pub fn totals(&self) -> ProduceTotals {
        let last_ack_nanos = self.last_ack_nanos.load(Ordering::Relaxed);
        ProduceTotals {
            records: self.measured_records(),
            bytes: self.measured_bytes.load(Ordering::Relaxed),
            sent: self.measured_sent.load(Ordering::Relaxed),
            warmup_records: self.warmup_records.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            first_error: lock(&self.first_error).clone(),
            latency: lock(&self.own_latency).clone(),
            last_ack: (last_ack_nanos > 0)
                .then(|| self.clock.start + Duration::from_nanos(last_ack_nanos)),
        }
    }
}

/// Runs producer threads for `plan` until it is done and every record is resolved.
pub fn run_producers(
    cluster: &Cluster,
    config: &ProducerConfig,
    plan: &ProducePlan,
    state: &Arc<ProduceState>,
) -> Result<(), PerfError> {
    let producers = (0..plan.producers)
        .map(|_| cluster.producer_with_listener(config.clone(), Arc::clone(state) as _))
        .collect::<Result<Vec<_>, _>>()?;
    let results: Vec<Result<(), PerfError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = producers
            .into_iter()
            .enumerate()
            .map(|(index, producer)| {
                let slot = ProducerSlot { index: index as u64, count: u64::from(plan.producers) };
                scope.spawn(move || produce_loop(&producer, plan, slot, state))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    Err(PerfError::InvalidParameters("a producer thread panicked".into()))
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

/// This producer's share of `total` records.
fn share(total: u64, slot: ProducerSlot) -> u64 {
    total / slot.count + u64::from(slot.index < total % slot.count)
}

fn produce_loop(
    producer: &Producer,
    plan: &ProducePlan,
    slot: ProducerSlot,
    state: &Arc<ProduceState>,
) -> Result<(), PerfError> {
    let mut value = filler_value(plan.record_size);
    let mut keys = KeyGenerator::new(plan.keys, plan.seed.wrapping_add(slot.index));
    let pacer = plan.rate.map(|rate| Pacer::new(plan.clock.start, slot, rate));
    let measured_quota = match plan.length {
        RunLength::Records(total) => Some(share(total, slot)),
        RunLength::Duration(_) => None,
    };
    let measure_end = match plan.length {
        RunLength::Duration(duration) => Some(plan.clock.warmup_end + duration),
        RunLength::Records(_) => None,
    };
    // A producer far behind an open-loop schedule stops here instead of sending late records
    // for ever; what it did not send shows as a lower rate than the target.
    let give_up_at = measure_end.map(|end| end + plan.drain_timeout);
    let mut measured_sent = 0u64;
    let mut outcome = Ok(());
    for sequence in 0u64.. {
        let intended = match &pacer {
            Some(pacer) => pacer.intended_time(sequence),
            None => Instant::now(),
        };
        let measured = intended >= plan.clock.warmup_end;
        // The clock is read for the give-up check once per GIVE_UP_CHECK_EVERY records: a
        // clock read per record was a visible share of this thread at 400,000 records/s.
        if measure_end.is_some_and(|end| intended >= end)
            || measured_quota.is_some_and(|quota| measured && measured_sent >= quota)
            || (sequence % GIVE_UP_CHECK_EVERY == 0
                && give_up_at.is_some_and(|give_up_at| Instant::now() >= give_up_at))
        {
            break;
        }
        if let Some(pacer) = &pacer {
            pacer.wait_for(sequence);
        }
        if measured {
            state.stats.measuring.store(true, Ordering::Relaxed);
            measured_sent += 1;
        }
        stamp_value(&mut value, plan.clock.nanos_at(intended));
        let record = ProducerRecord {
            topic: &plan.topic,
            partition: None,
            key: keys.key(sequence),
            value: Some(&value),
            headers: &[],
            // The intended send time, without another clock read.
            timestamp: Some(plan.clock.unix_ms_at(intended)),
        };
        let sent = producer.send_tagged(&record, tag_of(&plan.clock, intended, measured));
        if let Err(error) = sent {
            state.fail(&error);
            if !error.is_retriable() {
                outcome = Err(PerfError::Client(error));
                break;
            }
        }
    }
    state.measured_sent.fetch_add(measured_sent, Ordering::Relaxed);
    let flushed = producer.flush().map_err(PerfError::Client);
    outcome.and(flushed)
}
