//! Failover with real processes (issue 18): a `sluice-sc` and three `sluice-spu` children, a
//! topic of replication 3 with `min-in-sync` 2, and an SDK producer (acks `all`, idempotent)
//! sending the whole time from its own thread, recording the (partition, offset) of every
//! acknowledged record.
//!
//! Faults: the leader of a partition `kill -9`ed and restarted again and again
//! (`SLUICE_FAILOVER_KILLS`, default 20; every fourth time restarted at once, racing the
//! election); a leader paused (`SIGSTOP`) past the SC's heartbeat timeout and resumed, with an
//! acks `all` produce waiting in its socket; a follower paused and resumed; every SPU
//! restarted one after another (SIGTERM); the SC `kill -9`ed while it moves a killed leader's
//! partitions, and restarted on its data directory and ports.
//!
//! After each, [`Workload::finish`] checks: every acknowledged record is readable (committed)
//! at its acknowledged offset with its value, no record is in a partition twice, each
//! partition holds its acknowledged records in the order they were sent, and every replica's
//! log is byte-identical to the leader's (segment files read directly) up to the HW and past.
//! A committed reader tails each partition throughout: it never goes back, and everything it
//! read is what stayed.
//!
//! The producer's request timeout is 5 s: the SDK producer leaves requests in flight at a
//! paused leader only when they time out (30 s by default), not at the leader change.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_client::{
    Cluster, ConsumerConfig, Poll, ProducerConfig, ProducerRecord, SpuId, StartFrom, TopicSpec,
};
use sluice_proto::api::admin::PartitionEntry;
use sluice_proto::api::produce::{
    Acks, ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic,
};
use sluice_proto::api::{ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_request, FrameDecoder};
use sluice_proto::ids::{CorrelationId, PartitionId, TimestampMs};
use sluice_proto::object::TopicName;
use sluice_proto::record::BatchBuilder;
use sluice_testkit::process::{wait_for, ServerProcess, Signal, TestCluster};

/// Every SPU: a short lag limit and frequent heartbeats, so in-sync changes come quickly.
const SPU_FLAGS: &[&str] = &["--replica-lag-max-ms=3000", "--heartbeat-interval-ms=200"];
/// The SC marks a silent SPU offline after this long (the paused leader's case).
const HEARTBEAT_TIMEOUT_MS: u64 = 2_000;
/// Records sent and not yet answered at most (the producer thread waits for answers beyond).
const IN_FLIGHT_MAX: u64 = 64;
/// Records per second the producer thread sends at most (the machine has 2 cores).
const SEND_RATE_MAX: u64 = 1_000;
/// The producer's request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Acknowledgements the workload must make between two faults (production goes on).
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

/// The index a stored value names (`None` for [`PROBE`]).
fn index_of(value: &[u8]) -> Option<u64> {
    if value == PROBE {
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
    partitions: u32,
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
    fn start(test: &TestCluster, topic: &str, partitions: u32) -> Workload {
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
            let (stop, outcomes, topic) =
                (Arc::clone(&stop), Arc::clone(&outcomes), topic.to_owned());
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
                    let partition = (index % u64::from(partitions)) as u32;
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
        let readers = (0..partitions)
            .map(|partition| {
                let (cluster, topic, stop) = (cluster.clone(), topic.to_owned(), Arc::clone(&stop));
                std::thread::spawn(move || tail(cluster, topic, partition, stop))
            })
            .collect();
        Workload {
            topic: topic.to_owned(),
            partitions,
            stop,
            outcomes,
            thread: Some(thread),
            readers,
        }
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
        for partition in 0..self.partitions {
            wait_in_sync(test, &self.topic, partition, 3);
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

/// Waits until the SC names a leader of the partition other than `old`; returns the partition.
fn wait_new_leader(test: &TestCluster, topic: &str, partition: u32, old: SpuId) -> PartitionEntry {
    wait_for(&format!("a leader of {topic}-{partition} other than {old}"), || {
        let entry = partition_entry(test, topic, partition)?;
        (entry.spec.leader != old).then_some(entry)
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
        let logs: Vec<_> = test.spus.iter().map(|spu| spu.log_batches(topic, partition)).collect();
        if end >= high_watermark && logs.iter().all(|log| *log == reference) {
            return;
        }
        if Instant::now() >= deadline {
            let mut report = format!(
                "{topic}-{partition}: logs differ (leader {}, HW {high_watermark}, its log ends at {end})",
                entry.spec.leader
            );
            for (spu, log) in test.spus.iter().zip(&logs) {
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

/// Three SPUs, the topic (RF 3, min-in-sync 2) with every replica in sync.
fn start(topic: &str, partitions: u32) -> TestCluster {
    let test = TestCluster::builder(3, 1)
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

fn kills() -> usize {
    std::env::var("SLUICE_FAILOVER_KILLS").ok().and_then(|kills| kills.parse().ok()).unwrap_or(20)
}

#[test]
fn leaders_killed_again_and_again_lose_nothing() {
    let topic = "killed";
    let partitions = 2;
    let mut test = start(topic, partitions);
    let workload = Workload::start(&test, topic, partitions);
    let started = Instant::now();
    for round in 0..kills() {
        let partition = (round % partitions as usize) as u32;
        let entry = wait_in_sync(&test, topic, partition, 3);
        workload.wait_progress(&format!("before kill {round}"));
        let old = entry.spec.leader;
        let victim = spu_index(&test, old);
        test.spus[victim].kill();
        if round % 4 == 3 {
            // Back at once: its registration races the election its death started.
            test.spus[victim].restart();
            continue;
        }
        let after = wait_new_leader(&test, topic, partition, old);
        assert!(after.spec.leader_epoch > entry.spec.leader_epoch);
        test.spus[victim].restart();
    }
    workload.wait_progress("after the last kill");
    eprintln!("{} kills in {:?}", kills(), started.elapsed());
    workload.finish(&test);
}

/// An acks `all` produce of one record, written on an open connection, answered later.
struct RawProduce {
    stream: TcpStream,
}

impl RawProduce {
    fn send(stream: TcpStream, topic: &str, partition: u32, value: &[u8]) -> RawProduce {
        let mut builder = BatchBuilder::new();
        builder.push_record(TimestampMs(1), None, Some(value), &[]).expect("record");
        let records = builder.finish().to_vec();
        let request = ProduceRequest {
            acks: Acks::All,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: TopicName::new(topic).unwrap(),
                partitions: vec![ProducePartition {
                    partition: PartitionId(partition),
                    records: records.as_slice(),
                }],
            }],
        };
        let mut out = Vec::new();
        encode_request(&mut out, ApiVersion(0), CorrelationId(1), &request).unwrap();
        let mut stream = stream;
        stream.write_all(&out).expect("send the produce");
        RawProduce { stream }
    }

    /// The answer's error code and offset; `None` when the connection closed first.
    fn answer(mut self) -> Option<(ErrorCode, Option<i64>)> {
        self.stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = decoder.next_frame().expect("a frame") {
                let response =
                    ProduceResponse::decode(frame.header.api_version, &frame.body).unwrap();
                let answer = &response.topics[0].partitions[0];
                return Some((answer.error_code, answer.base_offset.map(|offset| offset.get())));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(count) => decoder.feed(&chunk[..count]),
            }
        }
    }
}

#[test]
fn a_paused_leader_is_replaced_acknowledges_nothing_after_and_truncates() {
    let topic = "paused";
    let test = start(topic, 1);
    let workload = Workload::start(&test, topic, 1);
    workload.wait_progress("before the pause");
    let entry = wait_in_sync(&test, topic, 0, 3);
    let old = entry.spec.leader;
    let paused = &test.spus[spu_index(&test, old)];
    let core = entry.spec.leader_placement().expect("leader placement").core;
    let probe_stream = TcpStream::connect(paused.core_addresses[core.index()]).expect("connect");
    paused.signal(Signal::Stop);
    let after = wait_new_leader(&test, topic, 0, old);
    assert!(after.spec.leader_epoch > entry.spec.leader_epoch);
    workload.wait_progress("at the new leader");
    // Written while it is stopped, read by it first thing after SIGCONT, as leader of its old
    // epoch: it must not be acknowledged unless the new leader has it.
    let probe = RawProduce::send(probe_stream, topic, 0, PROBE);
    paused.signal(Signal::Continue);
    let answer = probe.answer();
    eprintln!("the replaced leader answered {answer:?}");
    workload.wait_progress("after the resume");
    wait_in_sync(&test, topic, 0, 3);
    let stored = read_committed(&test, topic, 0);
    let probe_stored =
        stored.iter().find(|(_, value)| value.as_slice() == PROBE).map(|(at, _)| *at);
    match answer {
        // Acknowledged: it must be there, at its offset.
        Some((ErrorCode::None, offset)) => {
            assert_eq!(probe_stored, offset, "acknowledged by the replaced leader, then lost")
        }
        // An unknown outcome (a timeout, a dropped connection) may go either way.
        Some((ErrorCode::RequestTimedOut, _)) | None => {}
        // A definite refusal: not written.
        Some((code, _)) => assert_eq!(probe_stored, None, "refused with {code:?}, yet stored"),
    }
    workload.finish(&test);
}

#[test]
fn a_paused_follower_leaves_the_in_sync_set_and_returns() {
    let topic = "paused-follower";
    let test = start(topic, 1);
    let workload = Workload::start(&test, topic, 1);
    workload.wait_progress("before the pause");
    let entry = wait_in_sync(&test, topic, 0, 3);
    let follower = test.spus.iter().find(|spu| SpuId(spu.id()) != entry.spec.leader).unwrap();
    follower.signal(Signal::Stop);
    // acks `all` goes on once the set without it is stored.
    wait_in_sync(&test, topic, 0, 2);
    workload.wait_progress("while a follower is paused");
    follower.signal(Signal::Continue);
    wait_in_sync(&test, topic, 0, 3);
    workload.wait_progress("after the follower's return");
    workload.finish(&test);
}

#[test]
fn a_rolling_restart_loses_nothing() {
    let topic = "rolling";
    let partitions = 2;
    let mut test = start(topic, partitions);
    let workload = Workload::start(&test, topic, partitions);
    for index in 0..test.spus.len() {
        for partition in 0..partitions {
            wait_in_sync(&test, topic, partition, 3);
        }
        workload.wait_progress(&format!("before restarting SPU {}", test.spus[index].id()));
        test.spus[index].terminate();
        test.spus[index].restart();
    }
    workload.wait_progress("after the rolling restart");
    workload.finish(&test);
}

#[test]
fn an_sc_killed_during_a_failover_finishes_it_after_its_restart() {
    let topic = "sc-killed";
    let mut test = start(topic, 1);
    let workload = Workload::start(&test, topic, 1);
    // The SC dies at once, a little after, or well into the election the SPU's death starts.
    for (round, delay_ms) in [0u64, 5, 50].into_iter().enumerate() {
        let entry = wait_in_sync(&test, topic, 0, 3);
        workload.wait_progress(&format!("before round {round}"));
        let old = entry.spec.leader;
        let victim = spu_index(&test, old);
        test.spus[victim].kill();
        std::thread::sleep(Duration::from_millis(delay_ms));
        test.sc.restart();
        let after = wait_new_leader(&test, topic, 0, old);
        assert!(after.spec.leader_epoch > entry.spec.leader_epoch);
        workload.wait_progress(&format!("after the SC's restart in round {round}"));
        test.spus[victim].restart();
    }
    workload.finish(&test);
}
