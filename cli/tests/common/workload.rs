//! An SDK producer (acks `all`, idempotent) and a committed reader per partition running while
//! a test disturbs the cluster, and the checks of `client/tests/process_failover.rs`: every
//! acknowledged record is at its acknowledged offset, once, in send order; everything a reader
//! saw is what stayed. Also records each acknowledgement's latency (send to callback), so a
//! test can print percentiles per phase.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_client::{
    Acks, Cluster, ConsumerConfig, Poll, ProducerConfig, ProducerRecord, StartFrom,
};

/// Records sent and not yet answered at most.
const IN_FLIGHT_MAX: u64 = 64;
/// Records per second the producer sends at most (the machine has 2 cores).
const SEND_RATE_MAX: u64 = 500;
/// Longest wait for a condition of the workload.
const WAIT_MAX: Duration = Duration::from_secs(120);

/// What the producer saw.
#[derive(Default)]
pub struct Outcomes {
    /// Records sent (indexes `0..sent`).
    pub sent: u64,
    /// Index -> (partition, offset) of each acknowledged record.
    pub acknowledged: BTreeMap<u64, (u32, i64)>,
    /// Index -> error of each record that failed.
    pub failed: BTreeMap<u64, String>,
    /// (when sent, latency until acknowledged) of each acknowledged record.
    pub latencies: Vec<(Instant, Duration)>,
}

impl Outcomes {
    fn answered(&self) -> u64 {
        (self.acknowledged.len() + self.failed.len()) as u64
    }
}

fn value(index: u64) -> Vec<u8> {
    format!("record-{index:08}").into_bytes()
}

fn index_of(value: &[u8]) -> u64 {
    let text = std::str::from_utf8(value).expect("utf-8 value");
    let index = text.strip_prefix("record-").and_then(|index| index.parse().ok());
    index.unwrap_or_else(|| panic!("a value the producer never sent: {text:?}"))
}

/// (offset, value) pairs in the order read.
type Records = Vec<(i64, Vec<u8>)>;

/// The producer thread and the readers.
pub struct Workload {
    cluster: Cluster,
    topic: String,
    partitions: u32,
    stop: Arc<AtomicBool>,
    outcomes: Arc<(Mutex<Outcomes>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<Records>>,
}

fn tail(cluster: Cluster, topic: String, partition: u32, stop: Arc<AtomicBool>) -> Records {
    let config = ConsumerConfig { start: StartFrom::Beginning, ..ConsumerConfig::default() };
    let mut consumer = loop {
        match cluster.consumer(&topic, partition, config.clone()) {
            Ok(consumer) => break consumer,
            Err(error) if error.is_retriable() && !stop.load(Ordering::Acquire) => {}
            Err(error) => panic!("{topic}-{partition}: no reader: {error}"),
        }
    };
    let mut read = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(200)) {
            Ok(Poll::Records(records)) => {
                for record in records {
                    let value = record.value.map(|value| value.to_vec()).unwrap_or_default();
                    read.push((record.offset.get(), value));
                }
            }
            Ok(Poll::Idle | Poll::End) => {}
            Err(error) => {
                assert!(error.is_retriable(), "{topic}-{partition}: the reader failed: {error}")
            }
        }
    }
    read
}

impl Workload {
    /// Starts producing to every partition of `topic` (round robin) and tailing each.
    pub fn start(cluster: &Cluster, topic: &str, partitions: u32) -> Workload {
        let config = ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(2),
            retry_backoff: Duration::from_millis(50),
            delivery_timeout: Duration::from_secs(90),
            ..ProducerConfig::default()
        };
        let producer = cluster.producer(config).expect("producer");
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes: Arc<(Mutex<Outcomes>, Condvar)> = Arc::default();
        let thread = {
            let (stop, outcomes, topic) =
                (Arc::clone(&stop), Arc::clone(&outcomes), topic.to_owned());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut index = 0u64;
                while !stop.load(Ordering::Acquire) {
                    {
                        let (lock, answered) = &*outcomes;
                        let mut state = lock.lock().unwrap();
                        while state.sent - state.answered() >= IN_FLIGHT_MAX
                            && !stop.load(Ordering::Acquire)
                        {
                            state =
                                answered.wait_timeout(state, Duration::from_millis(100)).unwrap().0;
                        }
                        state.sent = index + 1;
                    }
                    let partition = (index % u64::from(partitions)) as u32;
                    let record_value = value(index);
                    let record =
                        ProducerRecord::new(&topic, &record_value).with_partition(partition);
                    let sink = Arc::clone(&outcomes);
                    let sent_at = Instant::now();
                    producer
                        .send_with_callback(&record, move |result| {
                            let latency = sent_at.elapsed();
                            let (lock, answered) = &*sink;
                            let mut state = lock.lock().unwrap();
                            match result {
                                Ok(metadata) => {
                                    state.acknowledged.insert(
                                        index,
                                        (metadata.partition, metadata.offset.unwrap().get()),
                                    );
                                    state.latencies.push((sent_at, latency));
                                }
                                Err(error) => {
                                    state.failed.insert(index, error.to_string());
                                }
                            }
                            answered.notify_all();
                        })
                        .expect("send");
                    index += 1;
                    let due = started + Duration::from_micros(index * 1_000_000 / SEND_RATE_MAX);
                    if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(ahead);
                    }
                }
                producer.flush().expect("flush");
            })
        };
        let readers = (0..partitions)
            .map(|partition| {
                let (cluster, topic, stop) = (cluster.clone(), topic.to_owned(), Arc::clone(&stop));
                std::thread::spawn(move || tail(cluster, topic, partition, stop))
            })
            .collect();
        Workload {
            cluster: cluster.clone(),
            topic: topic.to_owned(),
            partitions,
            stop,
            outcomes,
            thread: Some(thread),
            readers,
        }
    }

    /// Records acknowledged so far.
    pub fn acknowledged_count(&self) -> u64 {
        self.outcomes.0.lock().unwrap().acknowledged.len() as u64
    }

    /// Waits until `records` more records than now are acknowledged.
    pub fn wait_progress(&self, records: u64, what: &str) {
        let target = self.acknowledged_count() + records;
        let deadline = Instant::now() + WAIT_MAX;
        while self.acknowledged_count() < target {
            assert!(Instant::now() < deadline, "no {records} more acknowledgements {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops, waits for every answer, checks everything; returns the outcomes (latencies).
    pub fn finish(mut self) -> Outcomes {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().expect("the producer thread");
        let read: Vec<Records> = std::mem::take(&mut self.readers)
            .into_iter()
            .map(|reader| reader.join().expect("a reader thread"))
            .collect();
        let outcomes = std::mem::take(&mut *self.outcomes.0.lock().unwrap());
        let failed: Vec<_> = outcomes.failed.iter().take(5).collect();
        assert!(failed.is_empty(), "{} records failed: {failed:?}", outcomes.failed.len());
        assert_eq!(outcomes.acknowledged.len() as u64, outcomes.sent, "every record answered");
        eprintln!("{} records acknowledged", outcomes.sent);
        for partition in 0..self.partitions {
            let stored = self.check_partition(partition, &outcomes);
            check_reader(&self.topic, partition, &read[partition as usize], &stored);
        }
        outcomes
    }

    fn read_committed(&self, partition: u32) -> BTreeMap<i64, Vec<u8>> {
        let topic = &self.topic;
        let config =
            ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
        let mut consumer = self.cluster.consumer(topic, partition, config).expect("consumer");
        let mut stored = BTreeMap::new();
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            assert!(Instant::now() < deadline, "reading {topic}-{partition} did not end");
            match consumer.poll(Duration::from_secs(1)).expect("poll") {
                Poll::Records(records) => {
                    for record in records {
                        let value = record.value.map(|value| value.to_vec()).unwrap_or_default();
                        let offset = record.offset.get();
                        assert!(stored.insert(offset, value).is_none(), "offset {offset} twice");
                    }
                }
                Poll::Idle => {}
                Poll::End => return stored,
            }
        }
    }

    /// Every acknowledged record at its offset with its value, none twice, in send order.
    fn check_partition(&self, partition: u32, outcomes: &Outcomes) -> BTreeMap<i64, Vec<u8>> {
        let topic = &self.topic;
        let stored = self.read_committed(partition);
        let mut seen: HashMap<u64, i64> = HashMap::new();
        for (offset, stored_value) in &stored {
            let index = index_of(stored_value);
            assert!(index < outcomes.sent, "{topic}-{partition} at {offset}: {index} never sent");
            if let Some(first) = seen.insert(index, *offset) {
                panic!("{topic}-{partition}: record {index} at {first} and again at {offset}");
            }
        }
        let mut previous: Option<(u64, i64)> = None;
        for (index, (record_partition, acknowledged_offset)) in &outcomes.acknowledged {
            if *record_partition != partition {
                continue;
            }
            let Some(offset) = seen.get(index).copied() else {
                panic!(
                    "{topic}-{partition}: acknowledged record {index} (offset \
                     {acknowledged_offset}) is missing"
                );
            };
            assert_eq!(offset, *acknowledged_offset, "{topic}-{partition}: record {index}");
            if let Some((previous_index, previous_offset)) = previous {
                assert!(
                    offset > previous_offset,
                    "{topic}-{partition}: record {index} at {offset} after record \
                     {previous_index} at {previous_offset}"
                );
            }
            previous = Some((*index, offset));
        }
        stored
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Offsets only forward, and every record read as it is in the end.
fn check_reader(
    topic: &str,
    partition: u32,
    read: &[(i64, Vec<u8>)],
    stored: &BTreeMap<i64, Vec<u8>>,
) {
    let mut previous = -1;
    for (offset, value) in read {
        assert!(
            *offset > previous,
            "{topic}-{partition}: the reader got {offset} after {previous}"
        );
        previous = *offset;
        assert_eq!(stored.get(offset), Some(value), "{topic}-{partition}: the reader at {offset}");
    }
    eprintln!("{topic}-{partition}: a committed reader read {} records", read.len());
}

/// p50 / p99 / max of `latencies`, in milliseconds, and the count.
pub fn percentiles(latencies: &[Duration]) -> (f64, f64, f64, usize) {
    if latencies.is_empty() {
        return (0.0, 0.0, 0.0, 0);
    }
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = |quantile: f64| {
        let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99), at(1.0), sorted.len())
}
