//! The acknowledged-records workload of the client's process tests (`process_failover.rs`,
//! `process_reassign.rs`): an SDK producer (acks `all`, idempotent) sending to every partition
//! of a topic from its own thread, recording the (partition, offset) of every acknowledged
//! record, with a committed reader tailing each partition; and the checks that follow each
//! fault or move ([`Workload::finish`]): every acknowledged record is readable (committed) at
//! its acknowledged offset with its value, no record is in a partition twice, each partition
//! holds its acknowledged records in the order they were sent, everything a reader saw is
//! what stayed, and the replicas' logs are byte-identical (segment files read directly) up to
//! the HW and past. The partition count may grow (`topic alter`).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_client::{
    Cluster, ConsumerConfig, Poll, ProducerConfig, ProducerRecord, SpuId, StartFrom, TopicSpec,
};
use sluice_proto::api::admin::PartitionEntry;
use sluice_proto::api::produce::Acks;
use sluice_proto::ids::PartitionId;
use sluice_testkit::process::{wait_for, SpuProcess, TestCluster};

/// Every SPU: a short lag limit and frequent heartbeats, so in-sync changes come quickly.
pub const SPU_FLAGS: &[&str] = &["--replica-lag-max-ms=3000", "--heartbeat-interval-ms=200"];
/// The SC marks a silent SPU offline after this long.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 2_000;
/// Records sent and not yet answered at most (the producer thread waits for answers beyond).
pub const IN_FLIGHT_MAX: u64 = 64;
/// Records per second the producer thread sends at most (the machine has 2 cores).
pub const SEND_RATE_MAX: u64 = 1_000;
/// The producer's request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Acknowledgements the workload must make between two steps (production goes on).
pub const PROGRESS_RECORDS: u64 = 30;

/// What the producer thread saw.
#[derive(Default)]
pub struct Outcomes {
    /// Records sent (indexes `0..sent`).
    pub sent: u64,
    /// Index -> (partition, offset) of each acknowledged record.
    pub acknowledged: BTreeMap<u64, (u32, i64)>,
    /// Index -> error of each record that failed.
    pub failed: BTreeMap<u64, String>,
}

impl Outcomes {
    pub fn answered(&self) -> u64 {
        (self.acknowledged.len() + self.failed.len()) as u64
    }
}

/// The value of record `index`.
pub fn value(index: u64) -> Vec<u8> {
    format!("record-{index:08}").into_bytes()
}

/// The value of a record written by the test itself, not the producer.
pub const PROBE: &[u8] = b"probe";

/// The first byte of bulk values a test writes before its workload starts.
pub const FILLER: u8 = b'#';

/// The index a stored value names (`None` for [`PROBE`] and filler values).
pub fn index_of(value: &[u8]) -> Option<u64> {
    if value == PROBE || value.first() == Some(&FILLER) {
        return None;
    }
    let text = std::str::from_utf8(value).expect("utf-8 value");
    let index = text.strip_prefix("record-").and_then(|index| index.parse().ok());
    assert!(index.is_some(), "a value the producer never sent: {text:?}");
    index
}

/// An SDK producer sending to every partition of a topic from its own thread until finished.
pub struct Workload {
    pub topic: String,
    /// The partitions the producer sends to (grows with `topic alter`).
    pub partitions: Arc<AtomicU32>,
    pub reader_cluster: Cluster,
    pub stop: Arc<AtomicBool>,
    pub outcomes: Arc<(Mutex<Outcomes>, Condvar)>,
    pub thread: Option<JoinHandle<()>>,
    /// Per partition, a committed reader tailing it the whole time: what it read, in order.
    pub readers: Vec<JoinHandle<Records>>,
}

/// (offset, value) pairs, in the order read.
pub type Records = Vec<(i64, Vec<u8>)>;

/// Tails a partition with the SDK's consumer (committed reads) until `stop`; returns every
/// record read, in the order read.
pub fn tail(
    cluster: Cluster,
    topic: String,
    partition: u32,
    stop: Arc<AtomicBool>,
) -> Vec<(i64, Vec<u8>)> {
    let config = ConsumerConfig { start: StartFrom::Beginning, ..ConsumerConfig::default() };
    // Created while the faults may have begun already (a paused leader times it out).
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
    pub fn start(test: &TestCluster, topic: &str, partition_count: u32) -> Workload {
        let partitions = Arc::new(AtomicU32::new(partition_count));
        let config = ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(2),
            retry_backoff: Duration::from_millis(50),
            delivery_timeout: Duration::from_secs(90),
            ..ProducerConfig::default()
        };
        // The SDK producer leaves requests in flight at a paused leader only after its
        // request timeout (30 s by default; the consumer leaves at the leader change): a
        // shorter one keeps the paused leader's case short.
        let mut client_config = test.sc.client_config();
        client_config.request_timeout = REQUEST_TIMEOUT;
        let cluster = Cluster::connect(client_config).expect("connect the producer's client");
        let producer = cluster.producer(config).expect("producer");
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes: Arc<(Mutex<Outcomes>, Condvar)> = Arc::default();
        let thread = {
            let (stop, outcomes, topic, partitions) = (
                Arc::clone(&stop),
                Arc::clone(&outcomes),
                topic.to_owned(),
                Arc::clone(&partitions),
            );
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut index = 0u64;
                while !stop.load(Ordering::Acquire) {
                    {
                        // A bounded window: wait for answers, not for time.
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
                    let count = partitions.load(Ordering::Acquire);
                    let partition = (index % u64::from(count)) as u32;
                    let record_value = value(index);
                    let record =
                        ProducerRecord::new(&topic, &record_value).with_partition(partition);
                    let sink = Arc::clone(&outcomes);
                    producer
                        .send_with_callback(&record, move |result| {
                            let (lock, answered) = &*sink;
                            let mut state = lock.lock().unwrap();
                            match result {
                                Ok(metadata) => {
                                    state.acknowledged.insert(
                                        index,
                                        (metadata.partition, metadata.offset.unwrap().get()),
                                    );
                                }
                                Err(error) => {
                                    state.failed.insert(index, error.to_string());
                                }
                            }
                            answered.notify_all();
                        })
                        .expect("send");
                    index += 1;
                    // Pace the sends: at most SEND_RATE_MAX records a second.
                    let due = started + Duration::from_micros(index * 1_000_000 / SEND_RATE_MAX);
                    if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(ahead);
                    }
                }
                producer.flush().expect("flush");
            })
        };
        let mut workload = Workload {
            topic: topic.to_owned(),
            partitions,
            reader_cluster: cluster,
            stop,
            outcomes,
            thread: Some(thread),
            readers: Vec::new(),
        };
        workload.add_readers(partition_count);
        workload
    }

    /// A committed reader for each partition below `count` that has none.
    pub fn add_readers(&mut self, count: u32) {
        for partition in self.readers.len() as u32..count {
            let (cluster, topic, stop) =
                (self.reader_cluster.clone(), self.topic.clone(), Arc::clone(&self.stop));
            self.readers.push(std::thread::spawn(move || tail(cluster, topic, partition, stop)));
        }
    }

    /// The topic grew to `count` partitions: send to all of them, read all of them.
    pub fn grow(&mut self, count: u32) {
        // The workload's own client learns the partitions through its metadata watch.
        wait_for("the workload's client to see the new partitions", || {
            let snapshot = self.reader_cluster.metadata();
            (0..count).all(|partition| snapshot.route(&self.topic, partition).is_ok()).then_some(())
        });
        self.add_readers(count);
        self.partitions.store(count, Ordering::Release);
    }

    pub fn acknowledged_count(&self) -> u64 {
        self.outcomes.0.lock().unwrap().acknowledged.len() as u64
    }

    /// Waits until `PROGRESS_RECORDS` more records than now are acknowledged.
    pub fn wait_progress(&self, what: &str) {
        let started = Instant::now();
        let target = self.acknowledged_count() + PROGRESS_RECORDS;
        wait_for(&format!("{PROGRESS_RECORDS} more acknowledgements {what}"), || {
            (self.acknowledged_count() >= target).then_some(())
        });
        let waited = started.elapsed();
        if waited > Duration::from_secs(2) {
            eprintln!("{PROGRESS_RECORDS} more acknowledgements {what} took {waited:?}");
        }
    }

    /// Stops sending, waits for every answer, then checks everything (see the module docs).
    pub fn finish(mut self, test: &TestCluster) {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().expect("the producer thread");
        let read: Vec<Records> = std::mem::take(&mut self.readers)
            .into_iter()
            .map(|reader| reader.join().expect("a reader thread"))
            .collect();
        let outcomes = std::mem::take(&mut *self.outcomes.0.lock().unwrap());
        let failed: Vec<_> = outcomes.failed.iter().take(5).collect();
        assert!(
            failed.is_empty(),
            "{} records failed despite retries: {failed:?}",
            outcomes.failed.len()
        );
        assert_eq!(outcomes.acknowledged.len() as u64, outcomes.sent, "every record answered");
        eprintln!("{} records acknowledged", outcomes.sent);
        for partition in 0..self.partitions.load(Ordering::Acquire) {
            let replicas =
                partition_entry(test, &self.topic, partition).unwrap().spec.replicas.len();
            wait_in_sync(test, &self.topic, partition, replicas);
            let stored = check_partition(test, &self.topic, partition, &outcomes);
            check_reader(&self.topic, partition, &read[partition as usize], &stored);
            check_logs_identical(test, &self.topic, partition);
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The partition as the SC stores it (`None` while the SC does not answer).
pub fn partition_entry(test: &TestCluster, topic: &str, partition: u32) -> Option<PartitionEntry> {
    let entries = test.cluster.admin().list_partitions(Some(topic)).ok()?;
    entries.into_iter().find(|entry| entry.key.partition == PartitionId(partition))
}

/// Waits until the partition's in-sync set has `count` members; returns the partition.
pub fn wait_in_sync(
    test: &TestCluster,
    topic: &str,
    partition: u32,
    count: usize,
) -> PartitionEntry {
    wait_for(&format!("{count} in-sync replicas of {topic}-{partition}"), || {
        let entry = partition_entry(test, topic, partition)?;
        (entry.status.in_sync_replicas.len() == count).then_some(entry)
    })
}

/// The position of SPU `id` in `test.spus`.
pub fn spu_index(test: &TestCluster, id: SpuId) -> usize {
    test.spus.iter().position(|spu| SpuId(spu.id()) == id).expect("an SPU of the test")
}

/// Every committed record of the partition, read with the SDK's consumer, by offset.
pub fn read_committed(test: &TestCluster, topic: &str, partition: u32) -> BTreeMap<i64, Vec<u8>> {
    let config =
        ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
    let mut consumer = test.cluster.consumer(topic, partition, config).expect("consumer");
    let mut stored = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "reading {topic}-{partition} did not end");
        match consumer.poll(Duration::from_secs(1)).expect("poll") {
            Poll::Records(records) => {
                for record in records {
                    let value = record.value.map(|value| value.to_vec()).unwrap_or_default();
                    assert!(
                        stored.insert(record.offset.get(), value).is_none(),
                        "offset {} twice",
                        record.offset.get()
                    );
                }
            }
            Poll::Idle => {}
            Poll::End => return stored,
        }
    }
}

/// Every acknowledged record at its offset with its value, none twice, in send order.
pub fn check_partition(
    test: &TestCluster,
    topic: &str,
    partition: u32,
    outcomes: &Outcomes,
) -> BTreeMap<i64, Vec<u8>> {
    let stored = read_committed(test, topic, partition);
    let mut seen: HashMap<u64, i64> = HashMap::new();
    for (offset, stored_value) in &stored {
        let Some(index) = index_of(stored_value) else { continue };
        assert!(
            index < outcomes.sent,
            "{topic}-{partition} at {offset}: record {index} never sent"
        );
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
            panic!("{topic}-{partition}: acknowledged record {index} (offset {acknowledged_offset}) is missing");
        };
        // A retry the new leader had already (replicated from the old one) is answered with
        // the offset the batch got then, so every acknowledgement carries its offset.
        assert_eq!(
            offset, *acknowledged_offset,
            "{topic}-{partition}: acknowledged record {index}"
        );
        if let Some((previous_index, previous_offset)) = previous {
            assert!(
                offset > previous_offset,
                "{topic}-{partition}: record {index} at {offset} after record {previous_index} at {previous_offset}"
            );
        }
        previous = Some((*index, offset));
    }
    stored
}

/// What a committed reader saw during the faults: offsets only forward, and every record as
/// it is in the end (a committed read of something later cut or replaced would show here).
pub fn check_reader(
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
        assert_eq!(
            stored.get(offset),
            Some(value),
            "{topic}-{partition}: the reader saw {:?} at {offset}",
            String::from_utf8_lossy(value)
        );
    }
    eprintln!(
        "{topic}-{partition}: a committed reader read {} records during the faults",
        read.len()
    );
}

/// Waits until every replica's log holds exactly the leader's batches, which reach its HW.
pub fn check_logs_identical(test: &TestCluster, topic: &str, partition: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Some(entry) = partition_entry(test, topic, partition) else { continue };
        let high_watermark = entry.status.leader.high_watermark.get();
        let leader = &test.spus[spu_index(test, entry.spec.leader)];
        let reference = leader.log_batches(topic, partition);
        let end = reference.last().map_or(0, |(base, batch)| base.get() + batch_records(batch));
        let hosts: Vec<&SpuProcess> = test
            .spus
            .iter()
            .filter(|spu| entry.spec.replicas.iter().any(|replica| replica.spu == SpuId(spu.id())))
            .collect();
        let logs: Vec<_> = hosts.iter().map(|spu| spu.log_batches(topic, partition)).collect();
        if end >= high_watermark && logs.iter().all(|log| *log == reference) {
            return;
        }
        if Instant::now() >= deadline {
            let mut report = format!(
                "{topic}-{partition}: logs differ (leader {}, HW {high_watermark}, its log ends at {end})",
                entry.spec.leader
            );
            for (spu, log) in hosts.iter().zip(&logs) {
                let differs = log.iter().zip(&reference).position(|(a, b)| a != b);
                let last = log.last().map(|(base, batch)| (*base, batch_records(batch)));
                report += &format!(
                    "\n  SPU {}: {} batches, last (base, records) {last:?}, first difference at batch {differs:?}",
                    spu.id(),
                    log.len()
                );
                if let Some(position) = differs {
                    let (ours, theirs) = (&log[position], &reference[position]);
                    report += &format!(
                        " (base {} vs {}, {} vs {} bytes, epoch {:?} vs {:?})",
                        ours.0,
                        theirs.0,
                        ours.1.len(),
                        theirs.1.len(),
                        &ours.1[12..16],
                        &theirs.1[12..16]
                    );
                }
            }
            panic!("{report}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The record count of a batch (`last offset delta + 1`).
pub fn batch_records(batch: &[u8]) -> i64 {
    let delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
    i64::from(delta) + 1
}

/// Waits until the SC names a leader of the partition other than `old`; returns the partition.
pub fn wait_new_leader(
    test: &TestCluster,
    topic: &str,
    partition: u32,
    old: SpuId,
) -> PartitionEntry {
    wait_for(&format!("a leader of {topic}-{partition} other than {old}"), || {
        let entry = partition_entry(test, topic, partition)?;
        (entry.spec.leader != old).then_some(entry)
    })
}

/// `spus` SPUs, the topic (RF 3, min-in-sync 2) with every replica in sync.
pub fn start_cluster(topic: &str, partitions: u32, spus: i32) -> TestCluster {
    let test = TestCluster::builder(spus, 1)
        .spu_flags(SPU_FLAGS)
        .heartbeat_timeout_ms(HEARTBEAT_TIMEOUT_MS)
        .start();
    let spec = TopicSpec { min_in_sync_replicas: 2, ..TopicSpec::computed(partitions, 3) };
    test.create_topic_with(topic, spec);
    for partition in 0..partitions {
        wait_in_sync(&test, topic, partition, 3);
    }
    test
}
