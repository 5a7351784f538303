//! The `check` workload's I/O: producers sending unique values (acks `all`, idempotent,
//! partitions in turn), a delivery listener per producer recording every outcome, optional
//! tailing consumers, then the final read of every partition from its start, and the
//! [`super::history::analyze`] verdict.
//!
//! Outcomes are classified soundly ([`classify`]): a send counts as failed only when the error
//! proves it never reached a log; everything else that is not an acknowledgement is unknown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};
use sluice_client::{
    Acks, ClientError, Cluster, ConsumerConfig, DeliveryListener, ErrorCode, Isolation, Poll,
    ProducerConfig, ProducerRecord, RecordMetadata, StartFrom, TopicSpec,
};

use super::history::{analyze, Analysis, History, Outcome, Seen, Send, ValueId};
use crate::args::{parse_duration, SC_ADDRESS_DEFAULT};
use crate::error::PerfError;
use crate::report::unix_ms_now;
use crate::workload::topic::wait_for_leaders;

/// Parameters of `sluice-perf check`.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckArgs {
    /// SC public address(es), `host:port[,host:port...]`.
    #[arg(long, env = "SLUICE_SC", default_value = SC_ADDRESS_DEFAULT)]
    pub sc: String,
    /// Topic to write to; use a fresh one (values already in it count as unexpected).
    #[arg(long, default_value = "sluice-check")]
    pub topic: String,
    /// Create the topic first (an existing topic is reused as it is).
    #[arg(long)]
    pub create_topic: bool,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Replication factor of a created topic.
    #[arg(long, default_value_t = 1)]
    pub replication: u16,
    /// Minimum in-sync replicas of a created topic (acks `all` is refused below it); default:
    /// the SC's (1 for RF 1, else 2).
    #[arg(long)]
    pub min_in_sync: Option<u16>,
    /// Producer threads, each with its own producer and its own sequence of values.
    #[arg(long, default_value_t = 2)]
    pub producers: u32,
    /// How long the producers send (`30s`, `2m`).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    #[serde(with = "crate::args::duration_seconds")]
    pub duration: Duration,
    /// Records per second over every producer (0: as fast as the producers go).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Bytes per value (at least the id's length).
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Also read every partition with a tailing consumer while producing (checks that no
    /// offset is read with two values across reads).
    #[arg(long)]
    pub tail: bool,
    /// The producers' delivery timeout: a send not acknowledged this long after it was made is
    /// unknown (retries included).
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    #[serde(with = "crate::args::duration_seconds")]
    pub delivery_timeout: Duration,
    /// Longest wait for the final read of every partition (the cluster may be recovering).
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    #[serde(with = "crate::args::duration_seconds")]
    pub read_timeout: Duration,
    /// Write the report (parameters, counts per partition, examples) as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write every acknowledgement's partition, send time and acknowledgement time (ms since
    /// the Unix epoch) to this file, one `partition sent_ms acked_ms` line each: how a fault
    /// injector measures how long each partition took to accept acks `all` again.
    #[arg(long)]
    #[serde(default)]
    pub timeline: Option<PathBuf>,
    /// Stop producing early once this file exists (a fault campaign that is done before
    /// `--duration`); the final read follows as usual.
    #[arg(long)]
    #[serde(default)]
    pub stop_file: Option<PathBuf>,
}

/// The report of a check run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckReport {
    /// How it ran.
    pub parameters: CheckArgs,
    /// The verdict: no violation of any kind.
    pub valid: bool,
    /// Counts and examples.
    pub analysis: Analysis,
    /// Seconds the producers ran.
    pub elapsed_seconds: f64,
}

/// Whether `error` proves the record never reached a log ([`Outcome::Failed`]); anything else
/// ([`Outcome::Unknown`]) may have been appended: timeouts, lost connections, delivery
/// timeouts, and every code that can follow an append (`NotEnoughReplicasAfterAppend`,
/// sequence errors after a lost answer).
pub fn classify(error: &ClientError) -> Outcome {
    match error {
        ClientError::InvalidInput { .. }
        | ClientError::RecordTooLarge { .. }
        | ClientError::UnknownTopic { .. }
        | ClientError::UnknownPartition { .. } => Outcome::Failed,
        ClientError::Server {
            code:
                ErrorCode::CorruptMessage
                | ErrorCode::InvalidRecord
                | ErrorCode::MessageTooLarge
                | ErrorCode::InvalidRequiredAcks,
            ..
        } => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// When one send was made and acknowledged (`--timeline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckTime {
    /// The partition it was sent to.
    pub partition: u32,
    /// The record's create time (ms since the Unix epoch), stamped when it was sent.
    pub sent_unix_ms: i64,
    /// When its acknowledgement came (ms since the Unix epoch).
    pub acked_unix_ms: i64,
}

/// One producer's outcomes so far.
#[derive(Default)]
struct Outcomes {
    sends: Vec<Send>,
    /// Filled only with `--timeline`.
    acks: Vec<AckTime>,
}

/// Records one producer's outcomes.
struct Recorder {
    producer: u32,
    partitions: u32,
    timeline: bool,
    outcomes: Mutex<Outcomes>,
    settled: AtomicU64,
    acknowledged: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    unknown: Arc<AtomicU64>,
}

impl DeliveryListener for Recorder {
    fn delivered(&self, tag: u64, result: Result<RecordMetadata, ClientError>) {
        self.delivered_batch(&mut std::iter::once((tag, result)));
    }

    fn delivered_batch(
        &self,
        records: &mut dyn Iterator<Item = (u64, Result<RecordMetadata, ClientError>)>,
    ) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = unix_ms_now() as i64;
        for (sequence, result) in records {
            let outcome = match result {
                Ok(metadata) => {
                    if self.timeline {
                        outcomes.acks.push(AckTime {
                            partition: metadata.partition,
                            sent_unix_ms: metadata.timestamp,
                            acked_unix_ms: now,
                        });
                    }
                    Outcome::Acknowledged {
                        offset: metadata.offset.map_or(-1, |offset| offset.get()),
                    }
                }
                Err(error) => classify(&error),
            };
            let counter = match outcome {
                Outcome::Acknowledged { .. } => &self.acknowledged,
                Outcome::Failed => &self.failed,
                Outcome::Unknown => &self.unknown,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let id = ValueId { producer: self.producer, sequence };
            let partition = (sequence % u64::from(self.partitions)) as u32;
            outcomes.sends.push(Send { id, partition, outcome });
            self.settled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the check: produce for `--duration`, read everything back, analyze; prints progress to
/// stderr.
pub fn run_check(args: &CheckArgs) -> Result<CheckReport, PerfError> {
    if args.producers == 0 {
        return Err(PerfError::InvalidParameters("--producers must be at least 1".into()));
    }
    let cluster = crate::connection::connect(&args.sc)?;
    if args.create_topic {
        let mut spec = TopicSpec::computed(args.partitions, args.replication);
        if let Some(min_in_sync) = args.min_in_sync {
            spec.min_in_sync_replicas = min_in_sync;
        }
        match cluster.admin().create_topic(&args.topic, spec) {
            Ok(()) => {}
            Err(ClientError::Server { code: ErrorCode::TopicAlreadyExists, .. }) => {
                eprintln!("topic {:?} exists; reusing it as it is", args.topic);
            }
            Err(error) => return Err(error.into()),
        }
    }
    let partitions = wait_for_leaders(&cluster, &args.topic, args.read_timeout)?;
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));

    let tails: Vec<_> = if args.tail {
        (0..partitions)
            .map(|partition| {
                let cluster = Arc::clone(&cluster);
                let stop = Arc::clone(&stop);
                let topic = args.topic.clone();
                std::thread::spawn(move || tail(&cluster, &topic, partition, &stop))
            })
            .collect()
    } else {
        Vec::new()
    };

    let started = Instant::now();
    let per_producer_rate = args.rate as f64 / f64::from(args.producers);
    let producers: Vec<_> = (0..args.producers)
        .map(|producer| {
            let recorder = Arc::new(Recorder {
                producer,
                partitions,
                timeline: args.timeline.is_some(),
                outcomes: Mutex::new(Outcomes::default()),
                settled: AtomicU64::new(0),
                acknowledged: Arc::clone(&acknowledged),
                failed: Arc::clone(&failed),
                unknown: Arc::clone(&unknown),
            });
            let cluster = Arc::clone(&cluster);
            let args = args.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                produce(&cluster, &args, recorder, per_producer_rate, partitions, &stop)
            })
        })
        .collect();

    let mut last_print = Instant::now();
    let stop_requested = || args.stop_file.as_ref().is_some_and(|path| path.exists());
    while started.elapsed() < args.duration && !stop_requested() {
        std::thread::sleep(
            Duration::from_millis(100).min(args.duration - started.elapsed().min(args.duration)),
        );
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "check: {:>4.0} s: {} acknowledged, {} failed, {} unknown",
                started.elapsed().as_secs_f64(),
                acknowledged.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                unknown.load(Ordering::Relaxed)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed_seconds = started.elapsed().as_secs_f64();
    let mut history = History::default();
    let mut acks = Vec::new();
    for producer in producers {
        let outcomes = producer
            .join()
            .map_err(|_| PerfError::tool("sluice-perf check", "a producer thread panicked"))??;
        history.sends.extend(outcomes.sends);
        acks.extend(outcomes.acks);
    }
    if let Some(path) = &args.timeline {
        write_timeline(path, &mut acks)?;
    }
    eprintln!(
        "check: produced for {elapsed_seconds:.1} s: {} sends ({} acknowledged, {} failed, {} unknown); reading back",
        history.sends.len(),
        acknowledged.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        unknown.load(Ordering::Relaxed)
    );
    for tail in tails {
        let seen = tail
            .join()
            .map_err(|_| PerfError::tool("sluice-perf check", "a tailing reader panicked"))??;
        history.tail_reads.extend(seen);
    }
    for partition in 0..partitions {
        let seen = read_partition(&cluster, &args.topic, partition, args.read_timeout)?;
        eprintln!("check: partition {partition}: {} records read", seen.len());
        history.final_read.extend(seen);
    }
    let analysis = analyze(&history);
    Ok(CheckReport {
        parameters: args.clone(),
        valid: analysis.is_valid(),
        analysis,
        elapsed_seconds,
    })
}

/// One producer thread: sends its values to the partitions in turn at `rate` per second until
/// stopped, flushes, waits until every send settled; returns its sends.
fn produce(
    cluster: &Cluster,
    args: &CheckArgs,
    recorder: Arc<Recorder>,
    rate: f64,
    partitions: u32,
    stop: &AtomicBool,
) -> Result<Outcomes, PerfError> {
    let config = ProducerConfig {
        acks: Acks::All,
        idempotence: true,
        delivery_timeout: args.delivery_timeout,
        ..ProducerConfig::default()
    };
    let producer = cluster
        .producer_with_listener(config, Arc::clone(&recorder) as Arc<dyn DeliveryListener>)?;
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let started = Instant::now();
    let mut value = Vec::with_capacity(args.value_size.max(32));
    let mut sequence: u64 = 0;
    let mut refused: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(interval) = interval {
            let due = started + interval.mul_f64(sequence as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
        }
        ValueId { producer: recorder.producer, sequence }.encode(args.value_size, &mut value);
        let partition = (sequence % u64::from(partitions)) as u32;
        let record = ProducerRecord::new(&args.topic, &value).with_partition(partition);
        match producer.send_tagged(&record, sequence) {
            Ok(()) => {}
            Err(error) => {
                // Refused before it was buffered: never sent.
                refused += 1;
                recorder.delivered(sequence, Err(error));
            }
        }
        sequence += 1;
    }
    if let Err(error) = producer.flush() {
        eprintln!("check: producer {}: flush: {error}", recorder.producer);
    }
    let deadline = Instant::now() + args.delivery_timeout + Duration::from_secs(10);
    while recorder.settled.load(Ordering::Relaxed) < sequence {
        if Instant::now() >= deadline {
            return Err(PerfError::Timeout(format!(
                "producer {}: {} of {sequence} sends settled",
                recorder.producer,
                recorder.settled.load(Ordering::Relaxed)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if refused > 0 {
        eprintln!(
            "check: producer {}: {refused} sends refused before buffering",
            recorder.producer
        );
    }
    drop(producer);
    let outcomes = std::mem::take(
        &mut *recorder.outcomes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    Ok(outcomes)
}

/// Writes `--timeline`: one `partition sent_ms acked_ms` line per acknowledgement, in send
/// order.
fn write_timeline(path: &std::path::Path, acks: &mut [AckTime]) -> Result<(), PerfError> {
    use std::io::Write as _;
    acks.sort_unstable_by_key(|ack| (ack.sent_unix_ms, ack.partition));
    let io = |source| PerfError::io(format!("writing {}", path.display()), source);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for ack in acks.iter() {
        writeln!(out, "{} {} {}", ack.partition, ack.sent_unix_ms, ack.acked_unix_ms)
            .map_err(io)?;
    }
    out.flush().map_err(io)
}

/// A tailing reader of one partition while the run lasts: every record it sees.
fn tail(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    stop: &AtomicBool,
) -> Result<Vec<Seen>, PerfError> {
    let config = ConsumerConfig { start: StartFrom::Beginning, ..ConsumerConfig::default() };
    let mut consumer = cluster.consumer(topic, partition, config)?;
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Ok(Poll::Records(records)) => {
                for record in records {
                    seen.push(Seen {
                        partition,
                        offset: record.offset.get(),
                        value: record.value.unwrap_or_default().to_vec(),
                    });
                }
            }
            Ok(Poll::Idle | Poll::End) => {}
            // The cluster is being hurt on purpose: a reader retries through it.
            Err(error) if error.is_retriable() => std::thread::sleep(Duration::from_millis(100)),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(seen)
}

/// Reads a partition from its start to its end (committed), retrying through failovers until
/// `timeout`.
fn read_partition(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    timeout: Duration,
) -> Result<Vec<Seen>, PerfError> {
    let deadline = Instant::now() + timeout;
    let mut records: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut last_error = None;
    while Instant::now() < deadline {
        let start = records.keys().next_back().map_or(StartFrom::Beginning, |last| {
            StartFrom::Offset(sluice_client::Offset(last + 1))
        });
        let config = ConsumerConfig {
            start,
            isolation: Isolation::ReadCommitted,
            stop_at_end: true,
            ..ConsumerConfig::default()
        };
        let mut consumer = match cluster.consumer(topic, partition, config) {
            Ok(consumer) => consumer,
            Err(error) if error.is_retriable() => {
                last_error = Some(error);
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        loop {
            match consumer.poll(Duration::from_millis(500)) {
                Ok(Poll::Records(batch)) => {
                    for record in batch {
                        records
                            .insert(record.offset.get(), record.value.unwrap_or_default().to_vec());
                    }
                }
                Ok(Poll::Idle) => {
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Ok(Poll::End) => {
                    return Ok(records
                        .into_iter()
                        .map(|(offset, value)| Seen { partition, offset, value })
                        .collect());
                }
                Err(error) if error.is_retriable() => {
                    last_error = Some(error);
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    Err(PerfError::Timeout(format!(
        "reading {topic}-{partition} back: {} records read after {timeout:?}; last error: {}",
        records.len(),
        last_error.map_or_else(|| "none".to_string(), |error| error.to_string())
    )))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_errors_that_prove_no_append_are_failures() {
        let server = |code| ClientError::Server { code, message: String::new() };
        assert_eq!(classify(&server(ErrorCode::CorruptMessage)), Outcome::Failed);
        assert_eq!(classify(&server(ErrorCode::MessageTooLarge)), Outcome::Failed);
        assert_eq!(classify(&ClientError::UnknownTopic { topic: "t".into() }), Outcome::Failed);
        for code in [
            ErrorCode::NotEnoughReplicasAfterAppend,
            ErrorCode::RequestTimedOut,
            ErrorCode::OutOfOrderSequence,
            ErrorCode::NotLeader,
        ] {
            assert_eq!(classify(&server(code)), Outcome::Unknown, "{code:?}");
        }
        let timeout =
            ClientError::DeliveryTimeout { after: Duration::from_secs(1), last_error: None };
        assert_eq!(classify(&timeout), Outcome::Unknown);
        let timeout = ClientError::Timeout { operation: "produce", after: Duration::from_secs(1) };
        assert_eq!(classify(&timeout), Outcome::Unknown);
    }
}
