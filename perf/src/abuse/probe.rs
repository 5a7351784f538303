//! The well-behaved client beside the abusers: an SDK producer sending stamped records at a
//! steady rate to one partition (acks all) and an SDK consumer reading them, measuring each
//! record's end-to-end latency (consume time minus intended send time, one monotonic clock).
//! Figures are taken per window, so a baseline and the abused period come from the same run,
//! the same processes and the same connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_client::{
    Acks, Cluster, ConsumerConfig, Isolation, Poll, ProducerConfig, ProducerRecord, StartFrom,
};

use crate::error::PerfError;
use crate::histogram::LatencyHistogram;
use crate::workload::{monotonic_nanos, stamp_value, value_send_nanos};

/// Bytes of each probe record's value (the stamp and filler).
const PROBE_VALUE_BYTES: usize = 256;
/// Longest poll of the probe consumer, so that it notices the stop.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Latency figures of one window.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeWindow {
    /// What was going on (baseline, during, after).
    pub phase: String,
    /// Records sent by the probe in the window.
    pub sent: u64,
    /// Records received by the probe consumer in the window.
    pub received: u64,
    /// Send errors in the window.
    pub errors: u64,
    /// End-to-end latency, milliseconds.
    pub p50_ms: f64,
    /// End-to-end latency, milliseconds.
    pub p99_ms: f64,
    /// End-to-end latency, milliseconds.
    pub max_ms: f64,
}

struct Shared {
    stop: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    latency: Mutex<LatencyHistogram>,
}

/// A running probe; stopped on drop.
pub struct Probe {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Probe {
    /// Starts producing `rate` records/s to `topic`/`partition` and consuming them.
    pub fn start(
        cluster: &Cluster,
        topic: &str,
        partition: u32,
        rate: f64,
    ) -> Result<Probe, PerfError> {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(PerfError::InvalidParameters("--probe-rate must be positive".into()));
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            latency: Mutex::new(LatencyHistogram::new()),
        });
        let consumer_config = ConsumerConfig {
            start: StartFrom::End,
            isolation: Isolation::ReadCommitted,
            ..ConsumerConfig::default()
        };
        let mut consumer = cluster.consumer(topic, partition, consumer_config)?;
        let producer = cluster.producer(ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(0),
            ..ProducerConfig::default()
        })?;
        let consuming = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("probe-consumer".into())
                .spawn(move || {
                    while !shared.stop.load(Ordering::Relaxed) {
                        match consumer.poll(POLL_WAIT) {
                            Ok(Poll::Records(records)) => {
                                let now = monotonic_nanos();
                                let mut latency =
                                    shared.latency.lock().unwrap_or_else(|p| p.into_inner());
                                let mut count = 0;
                                for record in records {
                                    count += 1;
                                    if let Some(sent) = record.value.and_then(value_send_nanos) {
                                        latency.record_us(now.saturating_sub(sent) / 1000);
                                    }
                                }
                                shared.received.fetch_add(count, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(error) => note_error(&shared, error.to_string()),
                        }
                    }
                })
                .map_err(|error| PerfError::io("spawn the probe consumer", error))?
        };
        let producing = {
            let shared = Arc::clone(&shared);
            let topic = topic.to_string();
            let interval = Duration::from_secs_f64(1.0 / rate);
            std::thread::Builder::new()
                .name("probe-producer".into())
                .spawn(move || {
                    let mut value = crate::workload::filler_value(PROBE_VALUE_BYTES);
                    let mut next = Instant::now();
                    while !shared.stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if now < next {
                            std::thread::sleep(next - now);
                        }
                        // Stamped with the intended send time: lateness of the sender counts.
                        let lateness = Instant::now().saturating_duration_since(next);
                        let stamp = monotonic_nanos()
                            .saturating_sub(u64::try_from(lateness.as_nanos()).unwrap_or(0));
                        stamp_value(&mut value, stamp);
                        let record = ProducerRecord::new(&topic, &value).with_partition(partition);
                        let counters = Arc::clone(&shared);
                        let outcome = producer.send_with_callback(&record, move |result| {
                            if let Err(error) = result {
                                note_error(&counters, error.to_string());
                            }
                        });
                        match outcome {
                            Ok(()) => {
                                shared.sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => note_error(&shared, error.to_string()),
                        }
                        next += interval;
                    }
                    let _ = producer.flush();
                })
                .map_err(|error| PerfError::io("spawn the probe producer", error))?
        };
        Ok(Probe { shared, threads: vec![consuming, producing] })
    }

    /// Measures for `length` and returns the window's figures as `phase`.
    pub fn window(&self, phase: &str, length: Duration) -> ProbeWindow {
        self.measure(phase, || std::thread::sleep(length))
    }

    /// Measures while `during` runs and returns the window's figures as `phase`.
    pub fn measure(&self, phase: &str, during: impl FnOnce()) -> ProbeWindow {
        let counts = |shared: &Shared| {
            [&shared.sent, &shared.received, &shared.errors]
                .map(|counter| counter.load(Ordering::Relaxed))
        };
        self.latency().clear();
        let before = counts(&self.shared);
        during();
        let after = counts(&self.shared);
        let latency = self.latency().clone();
        let ms = |quantile: f64| latency.quantile_us(quantile) as f64 / 1000.0;
        ProbeWindow {
            phase: phase.to_string(),
            sent: after[0] - before[0],
            received: after[1] - before[1],
            errors: after[2] - before[2],
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
        }
    }

    /// The first error the probe met, if any.
    pub fn first_error(&self) -> Option<String> {
        self.shared.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn latency(&self) -> std::sync::MutexGuard<'_, LatencyHistogram> {
        self.shared.latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn note_error(shared: &Shared, error: String) {
    shared.errors.fetch_add(1, Ordering::Relaxed);
    shared.first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(error);
}
