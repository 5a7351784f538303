//! Growing and moving with real processes (issue 21): a `sluice-sc` and four `sluice-spu`
//! children, a topic of replication 3 with `min-in-sync` 2, and an SDK producer (acks `all`,
//! idempotent) sending the whole time from its own thread, with a committed reader tailing
//! each partition, while partitions are added (`topic alter`), a partition's replicas move to
//! other SPUs (leader included), a move is resumed by a restarted SC after a `kill -9` in its
//! middle, a move goes on after the added SPU and then the leader are killed and restarted in
//! its middle, and an SPU is decommissioned. A throttled move's catch-up is timed against its
//! rate.
//!
//! After each, [`Workload::finish`] checks what the failover tests check: every acknowledged
//! record is readable at its acknowledged offset, none twice, in send order, everything a
//! reader saw is what stayed, and the partition's replicas hold byte-identical logs up to the
//! HW and past. The workload is the failover tests' (`process_failover.rs`), with a partition
//! count that can grow.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_client::{
    Cluster, ConsumerConfig, ErrorCode, Poll, ProducerConfig, ProducerRecord, SpuId, StartFrom,
    TopicSpec,
};
use sluice_proto::api::admin::{
    PartitionEntry, PartitionReassignment, ReassignmentChange, ReplicaTarget,
};
use sluice_proto::api::produce::Acks;
use sluice_proto::ids::PartitionId;
use sluice_proto::object::{PartitionKey, TopicName};
use sluice_testkit::process::{wait_for, ServerProcess, SpuProcess, TestCluster};

/// Every SPU: a short lag limit and frequent heartbeats, so in-sync changes come quickly.
const SPU_FLAGS: &[&str] = &["--replica-lag-max-ms=3000", "--heartbeat-interval-ms=200"];
/// The SC marks a silent SPU offline after this long.
const HEARTBEAT_TIMEOUT_MS: u64 = 2_000;
/// Records sent and not yet answered at most (the producer thread waits for answers beyond).
const IN_FLIGHT_MAX: u64 = 64;
/// Records per second the producer thread sends at most (the machine has 2 cores).
const SEND_RATE_MAX: u64 = 1_000;
/// The producer's request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Acknowledgements the workload must make between two steps (production goes on).
const PROGRESS_RECORDS: u64 = 30;

/// What the producer thread saw.
#[derive(Default)]
struct Outcomes {
    /// Records sent (indexes `0..sent`).
    sent: u64,
    /// Index -> (partition, offset) of each acknowledged record.
    acknowledged: BTreeMap<u64, (u32, i64)>,
    /// Index -> error of each record that failed.
    failed: BTreeMap<u64, String>,
}

impl Outcomes {
    fn answered(&self) -> u64 {
        (self.acknowledged.len() + self.failed.len()) as u64
    }
}

/// The value of record `index`.
fn value(index: u64) -> Vec<u8> {
    format!("record-{index:08}").into_bytes()
}

/// The value of a record written by the test itself, not the producer.
const PROBE: &[u8] = b"probe";

/// The first byte of bulk values a test writes before its workload starts.
const FILLER: u8 = b'#';

/// The index a stored value names (`None` for [`PROBE`] and filler values).
fn index_of(value: &[u8]) -> Option<u64> {
    if value == PROBE || value.first() == Some(&FILLER) {
        return None;
    }
    let text = std::str::from_utf8(value).expect("utf-8 value");
    let index = text.strip_prefix("record-").and_then(|index| index.parse().ok());
    assert!(index.is_some(), "a value the producer never sent: {text:?}");
    index
}

/// An SDK producer sending to every partition of a topic from its own thread until finished.
struct Workload {
    topic: String,
    /// The partitions the producer sends to (grows with `topic alter`).
    partitions: Arc<AtomicU32>,
    reader_cluster: Cluster,
    stop: Arc<AtomicBool>,
    outcomes: Arc<(Mutex<Outcomes>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// Per partition, a committed reader tailing it the whole time: what it read, in order.
    readers: Vec<JoinHandle<Records>>,
}

/// (offset, value) pairs, in the order read.
type Records = Vec<(i64, Vec<u8>)>;

/// Tails a partition with the SDK's consumer (committed reads) until `stop`; returns every
/// record read, in the order read.
fn tail(
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
                    read.push((record.offset, value));
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
    fn start(test: &TestCluster, topic: &str, partition_count: u32) -> Workload {
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
                                    state
                                        .acknowledged
                                        .insert(index, (metadata.partition, metadata.offset));
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
    fn add_readers(&mut self, count: u32) {
        for partition in self.readers.len() as u32..count {
            let (cluster, topic, stop) =
                (self.reader_cluster.clone(), self.topic.clone(), Arc::clone(&self.stop));
            self.readers.push(std::thread::spawn(move || tail(cluster, topic, partition, stop)));
        }
    }

    /// The topic grew to `count` partitions: send to all of them, read all of them.
    fn grow(&mut self, count: u32) {
        // The workload's own client learns the partitions through its metadata watch.
        wait_for("the workload's client to see the new partitions", || {
            let snapshot = self.reader_cluster.metadata();
            (0..count).all(|partition| snapshot.route(&self.topic, partition).is_ok()).then_some(())
        });
        self.add_readers(count);
        self.partitions.store(count, Ordering::Release);
    }

    fn acknowledged_count(&self) -> u64 {
        self.outcomes.0.lock().unwrap().acknowledged.len() as u64
    }

    /// Waits until `PROGRESS_RECORDS` more records than now are acknowledged.
    fn wait_progress(&self, what: &str) {
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
    fn finish(mut self, test: &TestCluster) {
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
fn partition_entry(test: &TestCluster, topic: &str, partition: u32) -> Option<PartitionEntry> {
    let entries = test.cluster.admin().list_partitions(Some(topic)).ok()?;
    entries.into_iter().find(|entry| entry.key.partition == PartitionId(partition))
}

/// Waits until the partition's in-sync set has `count` members; returns the partition.
fn wait_in_sync(test: &TestCluster, topic: &str, partition: u32, count: usize) -> PartitionEntry {
    wait_for(&format!("{count} in-sync replicas of {topic}-{partition}"), || {
        let entry = partition_entry(test, topic, partition)?;
        (entry.status.in_sync_replicas.len() == count).then_some(entry)
    })
}

/// The position of SPU `id` in `test.spus`.
fn spu_index(test: &TestCluster, id: SpuId) -> usize {
    test.spus.iter().position(|spu| SpuId(spu.id()) == id).expect("an SPU of the test")
}

/// Every committed record of the partition, read with the SDK's consumer, by offset.
fn read_committed(test: &TestCluster, topic: &str, partition: u32) -> BTreeMap<i64, Vec<u8>> {
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
                        stored.insert(record.offset, value).is_none(),
                        "offset {} twice",
                        record.offset
                    );
                }
            }
            Poll::Idle => {}
            Poll::End => return stored,
        }
    }
}

/// Every acknowledged record at its offset with its value, none twice, in send order.
fn check_partition(
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
fn check_logs_identical(test: &TestCluster, topic: &str, partition: u32) {
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
fn batch_records(batch: &[u8]) -> i64 {
    let delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
    i64::from(delta) + 1
}

/// Four SPUs, the topic (RF 3, min-in-sync 2) with every replica in sync.
fn start(topic: &str, partitions: u32) -> TestCluster {
    let test = TestCluster::builder(4, 1)
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

fn key(topic: &str, partition: u32) -> PartitionKey {
    PartitionKey::new(TopicName::new(topic).unwrap(), PartitionId(partition))
}

/// Starts moving `topic`-`partition` to `target` (SPU ids), with a throttle in bytes/s.
fn reassign(
    test: &TestCluster,
    topic: &str,
    partition: u32,
    target: &[i32],
    throttle: Option<u64>,
) {
    let target = target.iter().map(|spu| ReplicaTarget { spu: SpuId(*spu), core: None }).collect();
    let request = PartitionReassignment {
        key: key(topic, partition),
        change: ReassignmentChange::Move(target),
    };
    let response =
        test.cluster.admin().reassign_partitions(vec![request], throttle).expect("reassign");
    let result = &response.results[0];
    assert!(result.error_code.is_ok(), "move refused: {result:?}");
}

/// Waits until the partition's move ended with exactly `target`'s SPUs, all in sync.
fn wait_moved(test: &TestCluster, topic: &str, partition: u32, target: &[i32]) -> PartitionEntry {
    let target: Vec<SpuId> = target.iter().copied().map(SpuId).collect();
    let started = Instant::now();
    let entry = wait_for(&format!("{topic}-{partition} moved to {target:?}"), || {
        let entry = partition_entry(test, topic, partition)?;
        let replicas: Vec<SpuId> = entry.spec.replicas.iter().map(|replica| replica.spu).collect();
        (entry.spec.reassignment.is_none() && replicas == target).then_some(entry)
    });
    eprintln!("{topic}-{partition} moved to {target:?} in {:?}", started.elapsed());
    assert!(target.contains(&entry.spec.leader), "the leader is in the target");
    entry
}

/// Waits until SPU `spu` no longer holds the partition's replica directory (renamed when
/// the replica is dropped).
fn wait_dropped(test: &TestCluster, topic: &str, partition: u32, spu: SpuId) {
    let host = &test.spus[spu_index(test, spu)];
    let directory = host.data_dir().join(format!("spu-{spu}")).join(format!("{topic}-{partition}"));
    wait_for(&format!("SPU {spu} to drop {topic}-{partition}"), || {
        (!directory.exists()).then_some(())
    });
}

/// The SPU of the test that hosts no replica of the partition.
fn outsider(entry: &PartitionEntry) -> i32 {
    (1..=4)
        .find(|spu| !entry.spec.replicas.iter().any(|replica| replica.spu == SpuId(*spu)))
        .expect("an SPU without the partition")
}

#[test]
fn topic_alter_adds_partitions_that_producers_use() {
    let test = start("grow", 2);
    let mut workload = Workload::start(&test, "grow", 2);
    workload.wait_progress("before growing");
    let refused = test.cluster.admin().alter_topic_partitions("grow", 2);
    assert!(
        matches!(
            refused,
            Err(sluice_client::ClientError::Server { code: ErrorCode::InvalidPartitions, .. })
        ),
        "not growing is refused: {refused:?}"
    );
    let before: Vec<PartitionEntry> = test.cluster.admin().list_partitions(Some("grow")).unwrap();
    test.cluster.admin().alter_topic_partitions("grow", 4).expect("grow to 4");
    wait_for("4 partitions with leaders in the client's metadata", || {
        let snapshot = test.cluster.metadata();
        (0..4).all(|partition| snapshot.route("grow", partition).is_ok()).then_some(())
    });
    let after = test.cluster.admin().list_partitions(Some("grow")).unwrap();
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.spec.replicas, new.spec.replicas, "existing partitions never move");
    }
    for partition in 2..4 {
        wait_in_sync(&test, "grow", partition, 3);
    }
    workload.grow(4);
    workload.wait_progress("after growing");
    // A keyless producer created before the change moves on to the new partitions by itself.
    let producer = test
        .cluster
        .producer(ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .unwrap();
    let used = wait_for("keyless records in a new partition", || {
        let delivered = producer.send(&ProducerRecord::new("grow", PROBE)).ok()?.wait().ok()?;
        (delivered.partition >= 2).then_some(delivered.partition)
    });
    eprintln!("a keyless record went to new partition {used}");
    workload.finish(&test);
}

#[test]
fn reassign_moves_replicas_and_the_leader() {
    let test = start("move", 1);
    let workload = Workload::start(&test, "move", 1);
    workload.wait_progress("before the move");
    let entry = partition_entry(&test, "move", 0).unwrap();
    let old_leader = entry.spec.leader;
    let followers: Vec<i32> = entry.spec.followers().map(|replica| replica.spu.get()).collect();
    let target = [outsider(&entry), followers[0], followers[1]];
    reassign(&test, "move", 0, &target, None);
    let moved = wait_moved(&test, "move", 0, &target);
    assert_ne!(moved.spec.leader, old_leader, "the leader moved off the dropped SPU");
    wait_dropped(&test, "move", 0, old_leader);
    workload.wait_progress("after the move");
    workload.finish(&test);
}

#[test]
fn reassign_resumes_after_the_sc_is_killed() {
    let mut test = start("resume", 1);
    let workload = Workload::start(&test, "resume", 1);
    workload.wait_progress("before the move");
    let entry = partition_entry(&test, "resume", 0).unwrap();
    let replicas: Vec<i32> = entry.spec.replicas.iter().map(|replica| replica.spu.get()).collect();
    // Replace the last replica; throttled so that the SC dies while the copy runs.
    let target = [replicas[0], replicas[1], outsider(&entry)];
    reassign(&test, "resume", 0, &target, Some(256 * 1024));
    test.sc.kill();
    std::thread::sleep(Duration::from_millis(300)); // the SC stays down a moment (not a wait)
    test.sc.restart();
    let moved = wait_moved(&test, "resume", 0, &target);
    assert!(moved.status.in_sync_replicas.len() == 3);
    wait_dropped(&test, "resume", 0, SpuId(replicas[2]));
    workload.wait_progress("after the move");
    workload.finish(&test);
}

#[test]
fn reassign_resumes_after_spus_are_killed() {
    let mut test = start("crash", 1);
    // 2 MiB at 256 KiB/s: the copy runs for about 8 s, so the kills land while it does.
    let producer = test
        .cluster
        .producer(ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .unwrap();
    let value = vec![FILLER; 16 * 1024];
    let deliveries: Vec<_> = (0..128)
        .map(|_| producer.send(&ProducerRecord::new("crash", &value).with_partition(0)).unwrap())
        .collect();
    for delivery in deliveries {
        delivery.wait().expect("acknowledged");
    }
    drop(producer);
    let workload = Workload::start(&test, "crash", 1);
    workload.wait_progress("before the move");
    let entry = partition_entry(&test, "crash", 0).unwrap();
    let replicas: Vec<i32> = entry.spec.replicas.iter().map(|replica| replica.spu.get()).collect();
    let added = outsider(&entry);
    let target = [replicas[1], replicas[2], added];
    reassign(&test, "crash", 0, &target, Some(256 * 1024));
    // The SPU being added crashes mid-copy, then the leader does.
    let index = spu_index(&test, SpuId(added));
    test.spus[index].kill();
    test.spus[index].restart();
    let entry = partition_entry(&test, "crash", 0).unwrap();
    assert!(entry.spec.reassignment.is_some(), "the move ended before the kills: {entry:?}");
    let leader = spu_index(&test, entry.spec.leader);
    test.spus[leader].kill();
    test.spus[leader].restart();
    let moved = wait_moved(&test, "crash", 0, &target);
    assert_eq!(moved.status.in_sync_replicas.len(), 3);
    wait_dropped(&test, "crash", 0, SpuId(replicas[0]));
    workload.wait_progress("after the move");
    workload.finish(&test);
}

#[test]
fn decommission_moves_every_replica_off_an_spu() {
    let test = start("leave", 2);
    let workload = Workload::start(&test, "leave", 2);
    workload.wait_progress("before the decommission");
    let leaving = SpuId(1);
    let response = test.cluster.admin().decommission_spu(leaving, None).expect("decommission");
    assert!(response.results.iter().all(|result| result.error_code.is_ok()), "{response:?}");
    assert!(!response.results.is_empty(), "SPU 1 hosts replicas of an RF 3 topic on 4 SPUs");
    wait_for("no partition on SPU 1", || {
        let partitions = test.cluster.admin().list_partitions(None).ok()?;
        let named = partitions
            .iter()
            .any(|entry| entry.spec.replicas.iter().any(|replica| replica.spu == leaving));
        (!named).then_some(())
    });
    test.cluster.admin().unregister_spu(leaving).expect("unregister the emptied SPU");
    // Three SPUs remain for RF 3: one more decommission is refused, moving nothing.
    let refused = test.cluster.admin().decommission_spu(SpuId(2), None);
    assert!(
        matches!(
            refused,
            Err(sluice_client::ClientError::Server {
                code: ErrorCode::ReplicationFactorAboveSpuCount,
                ..
            })
        ),
        "{refused:?}"
    );
    workload.wait_progress("after the decommission");
    workload.finish(&test);
}

/// Bytes of records in a partition before the throttled move.
const THROTTLE_DATA_BYTES: u64 = 8 << 20;
/// The throttle of that move.
const THROTTLE_BYTES_PER_SECOND: u64 = 2 << 20;

#[test]
fn a_throttled_move_copies_at_its_rate() {
    let test = start("slow", 1);
    let producer = test
        .cluster
        .producer(ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .unwrap();
    let value = vec![b'x'; 16 * 1024];
    let records = THROTTLE_DATA_BYTES / value.len() as u64;
    let deliveries: Vec<_> = (0..records)
        .map(|_| producer.send(&ProducerRecord::new("slow", &value).with_partition(0)).unwrap())
        .collect();
    for delivery in deliveries {
        delivery.wait().expect("acknowledged");
    }
    let entry = partition_entry(&test, "slow", 0).unwrap();
    let end = entry.status.leader.log_end_offset.get();
    let replicas: Vec<i32> = entry.spec.replicas.iter().map(|replica| replica.spu.get()).collect();
    let added = outsider(&entry);
    let target = [replicas[0], replicas[1], replicas[2], added];
    let started = Instant::now();
    reassign(&test, "slow", 0, &target, Some(THROTTLE_BYTES_PER_SECOND));
    wait_moved(&test, "slow", 0, &target);
    let elapsed = started.elapsed();
    let rate = THROTTLE_DATA_BYTES as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{THROTTLE_DATA_BYTES} bytes ({end} records) copied to SPU {added} in {elapsed:?}: \
         {:.2} MiB/s against a throttle of {:.2} MiB/s",
        rate / (1 << 20) as f64,
        THROTTLE_BYTES_PER_SECOND as f64 / (1 << 20) as f64
    );
    // 8 MiB at 2 MiB/s takes 4 s; allow for the bucket's burst and one read past it.
    assert!(elapsed > Duration::from_secs(2), "the copy took {elapsed:?}: not throttled");
    let copy = test.spus[spu_index(&test, SpuId(added))].log_batches("slow", 0);
    let reference = test.spus[spu_index(&test, SpuId(replicas[0]))].log_batches("slow", 0);
    assert_eq!(copy.len(), reference.len(), "the added replica holds every batch");
}
