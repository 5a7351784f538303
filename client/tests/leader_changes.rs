//! Leader changes and failovers against a fake cluster in this process (`common::fake`): an SC
//! whose metadata the test changes (an election, a partition offline) and SPUs that answer
//! `NotLeader`, refuse with a code, stay silent (paused), or close their connections (dying),
//! over one log per partition shared by all of them (as replicated logs would hold the same
//! records). Each test drives the real SDK and checks that it follows the partition to its
//! new leader at the same offset, retries what is retriable, and says what happened when it
//! gives up.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake::{FakeCluster, ProduceFault};
use sluice_client::{
    ClientConfig, ClientError, Cluster, ConsumerConfig, ErrorCode, Poll, ProducerConfig,
    ProducerRecord, SpuId, StartFrom,
};
use sluice_testkit::process::wait_for;

const TOPIC: &str = "orders";
/// Longest wait for records a test expects.
const RECORDS_WAIT: Duration = Duration::from_secs(30);

fn connect(fake: &FakeCluster, request_timeout: Duration) -> Cluster {
    let mut config = ClientConfig::new(&fake.sc.address.to_string());
    config.request_timeout = request_timeout;
    Cluster::connect(config).expect("connect to the fake SC")
}

fn producer(cluster: &Cluster) -> sluice_client::Producer {
    let config = ProducerConfig {
        linger: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(20),
        delivery_timeout: Duration::from_secs(30),
        ..ProducerConfig::default()
    };
    cluster.producer(config).expect("producer")
}

/// Produces `values` to partition 0, one at a time; returns their offsets.
fn produce(producer: &sluice_client::Producer, values: std::ops::Range<u32>) -> Vec<i64> {
    values
        .map(|value| {
            let bytes = value.to_be_bytes();
            let record = ProducerRecord::new(TOPIC, &bytes).with_partition(0);
            producer.send(&record).expect("send").wait().expect("delivered").offset.unwrap().get()
        })
        .collect()
}

/// A consumer of partition 0 polling on a thread of its own from offset 0; it stops when
/// this guard drops.
struct ConsumerThread {
    records: Receiver<Result<(i64, u32), ClientError>>,
    stop: Arc<AtomicBool>,
}

impl Drop for ConsumerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn spawn_consumer(cluster: &Cluster) -> ConsumerThread {
    let config = ConsumerConfig {
        start: StartFrom::Offset(sluice_client::Offset(0)),
        ..ConsumerConfig::default()
    };
    let mut consumer = cluster.consumer(TOPIC, 0, config).expect("consumer");
    let (sender, records) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Acquire) {
            match consumer.poll(Duration::from_millis(100)) {
                Ok(Poll::Records(records)) => {
                    for record in records {
                        let value = u32::from_be_bytes(record.value.unwrap().try_into().unwrap());
                        let _ = sender.send(Ok((record.offset.get(), value)));
                    }
                }
                Ok(Poll::Idle | Poll::End) => {}
                Err(error) => {
                    let _ = sender.send(Err(error));
                }
            }
        }
    });
    ConsumerThread { records, stop }
}

/// The next `count` records of the consumer thread, in order.
fn take(consumer: &ConsumerThread, count: usize) -> Vec<(i64, u32)> {
    let deadline = Instant::now() + RECORDS_WAIT;
    let mut taken = Vec::new();
    while taken.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.records.recv_timeout(left) {
            Ok(Ok(record)) => taken.push(record),
            Ok(Err(error)) => panic!("the consumer failed after {} records: {error}", taken.len()),
            Err(RecvTimeoutError::Timeout) => {
                panic!("only {} of {count} records came", taken.len())
            }
            Err(RecvTimeoutError::Disconnected) => panic!("the consumer thread ended"),
        }
    }
    taken
}

fn in_order(first: u32, count: u32) -> Vec<(i64, u32)> {
    (first..first + count).map(|value| (i64::from(value), value)).collect()
}

/// Waits until the client's metadata names `spu` as partition 0's leader.
fn wait_leader(cluster: &Cluster, spu: i32) {
    let moved = cluster.wait_for_metadata(RECORDS_WAIT, |snapshot| {
        snapshot.route(TOPIC, 0).ok().filter(|route| route.spu == SpuId(spu))
    });
    assert!(moved.is_some(), "the client never saw SPU {spu} lead");
}

/// The first fetch offsets SPU `id` was asked, with their answers.
fn fetches(fake: &FakeCluster, id: i32) -> Vec<(i64, ErrorCode)> {
    fake.spu(id).behave(|behaviour| behaviour.fetches.clone())
}

#[test]
fn consumer_follows_a_new_leader_at_the_same_offset() {
    let fake = FakeCluster::start(TOPIC, 1, 2);
    let cluster = connect(&fake, Duration::from_secs(10));
    let producer = producer(&cluster);
    assert_eq!(produce(&producer, 0..10), (0..10).collect::<Vec<i64>>());
    let consumer = spawn_consumer(&cluster);
    assert_eq!(take(&consumer, 10), in_order(0, 10));

    // SPU 1 stops leading; the SC has not elected anyone yet: the consumer is told "not
    // leader" and keeps refreshing and asking at the same offset.
    fake.spu(1).behave(|behaviour| behaviour.leader = false);
    wait_for("fetches refused with NotLeader", || {
        let refused =
            fetches(&fake, 1).iter().filter(|(_, code)| *code == ErrorCode::NotLeader).count();
        (refused >= 2).then_some(())
    });
    fake.sc.elect(0, SpuId(2));
    assert_eq!(produce(&producer, 10..20), (10..20).collect::<Vec<i64>>());
    assert_eq!(take(&consumer, 10), in_order(10, 10));
    let refused_at: Vec<i64> = fetches(&fake, 1)
        .into_iter()
        .filter(|(_, code)| *code == ErrorCode::NotLeader)
        .map(|(offset, _)| offset)
        .collect();
    assert!(refused_at.iter().all(|offset| *offset == 10), "{refused_at:?}");
    assert_eq!(fetches(&fake, 2).first(), Some(&(10, ErrorCode::None)), "same offset, new leader");
    assert_eq!(fake.logs.end_offset(0), 20, "nothing written twice");
}

#[test]
fn offset_not_available_is_retried_at_the_same_offset() {
    let fake = FakeCluster::start(TOPIC, 1, 2);
    let cluster = connect(&fake, Duration::from_secs(10));
    let producer = producer(&cluster);
    produce(&producer, 0..5);
    let consumer = spawn_consumer(&cluster);
    assert_eq!(take(&consumer, 5), in_order(0, 5));
    // The new leader cannot prove its high watermark for its first three answers.
    fake.spu(2).behave(|behaviour| {
        behaviour.fetch_errors.extend([ErrorCode::OffsetNotAvailable; 3]);
    });
    fake.spu(1).behave(|behaviour| behaviour.leader = false);
    fake.sc.elect(0, SpuId(2));
    wait_leader(&cluster, 2);
    produce(&producer, 5..10);
    assert_eq!(take(&consumer, 5), in_order(5, 5));
    let asked = fetches(&fake, 2);
    let not_available = ErrorCode::OffsetNotAvailable;
    assert_eq!(
        asked[..4],
        [(5, not_available), (5, not_available), (5, not_available), (5, ErrorCode::None)],
        "{asked:?}"
    );
}

#[test]
fn a_paused_leader_is_left_for_the_new_one_without_waiting_for_the_request_timeout() {
    let fake = FakeCluster::start(TOPIC, 1, 2);
    let request_timeout = Duration::from_secs(30);
    let cluster = connect(&fake, request_timeout);
    let producer = producer(&cluster);
    produce(&producer, 0..5);
    let consumer = spawn_consumer(&cluster);
    assert_eq!(take(&consumer, 5), in_order(0, 5));
    // SPU 1 is paused with the consumer's long poll in flight; the SC elects SPU 2.
    fake.spu(1).behave(|behaviour| behaviour.paused = true);
    wait_for("the consumer's fetch to reach the paused SPU", || {
        (fake.spu(1).behave(|behaviour| behaviour.unanswered) > 0).then_some(())
    });
    let elected = Instant::now();
    fake.sc.elect(0, SpuId(2));
    wait_leader(&cluster, 2);
    produce(&producer, 5..10);
    assert_eq!(take(&consumer, 5), in_order(5, 5));
    let waited = elected.elapsed();
    assert!(waited < request_timeout / 3, "the consumer took {waited:?} to move");
}

#[test]
fn a_producer_leaves_a_paused_leader_for_the_new_one_without_waiting_for_the_request_timeout() {
    let fake = FakeCluster::start(TOPIC, 1, 2);
    let request_timeout = Duration::from_secs(30);
    let cluster = connect(&fake, request_timeout);
    let producer = producer(&cluster);
    produce(&producer, 0..5);
    // SPU 1 hangs with produce requests in flight (its connection stays open); the SC elects
    // SPU 2. The unanswered requests are sent again to SPU 2 once the metadata says so.
    fake.spu(1).behave(|behaviour| behaviour.paused = true);
    let pending: Vec<_> = (5..10u32)
        .map(|value| {
            let bytes = value.to_be_bytes();
            producer.send(&ProducerRecord::new(TOPIC, &bytes).with_partition(0)).expect("send")
        })
        .collect();
    wait_for("a produce request to reach the paused SPU", || {
        (fake.spu(1).behave(|behaviour| behaviour.unanswered) > 0).then_some(())
    });
    let elected = Instant::now();
    fake.sc.elect(0, SpuId(2));
    for future in pending {
        future.wait().expect("acknowledged by the new leader");
    }
    let waited = elected.elapsed();
    assert!(waited < request_timeout / 3, "the producer took {waited:?} to move");
    let consumer = spawn_consumer(&cluster);
    assert_eq!(take(&consumer, 10), in_order(0, 10), "lost, duplicated or reordered");
}

#[test]
fn a_dying_leader_is_followed_to_the_new_one() {
    let fake = FakeCluster::start(TOPIC, 1, 2);
    let cluster = connect(&fake, Duration::from_secs(10));
    let producer = producer(&cluster);
    produce(&producer, 0..5);
    let consumer = spawn_consumer(&cluster);
    assert_eq!(take(&consumer, 5), in_order(0, 5));
    // Every connection to SPU 1 closes at its first request: the consumer reconnects,
    // refreshing the metadata, until the SC elects SPU 2.
    fake.spu(1).behave(|behaviour| behaviour.reset_connections = true);
    wait_for("the consumer to reconnect after closed connections", || {
        (fake.spu(1).behave(|behaviour| behaviour.resets) >= 3).then_some(())
    });
    fake.spu(1).kill();
    fake.sc.elect(0, SpuId(2));
    wait_leader(&cluster, 2);
    produce(&producer, 5..10);
    assert_eq!(take(&consumer, 5), in_order(5, 5));
    assert_eq!(fetches(&fake, 2).first(), Some(&(5, ErrorCode::None)));
}

#[test]
fn producer_follows_a_new_leader_without_losing_or_duplicating_records() {
    let fake = FakeCluster::start(TOPIC, 1, 2);
    let cluster = connect(&fake, Duration::from_secs(10));
    let producer = Arc::new(producer(&cluster));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let total = 2_000u32;
    let sending = {
        let (producer, failures) = (Arc::clone(&producer), Arc::clone(&failures));
        std::thread::spawn(move || {
            for value in 0..total {
                let failures = Arc::clone(&failures);
                let bytes = value.to_be_bytes();
                let record = ProducerRecord::new(TOPIC, &bytes).with_partition(0);
                producer
                    .send_with_callback(&record, move |result| {
                        if let Err(error) = result {
                            failures.lock().unwrap().push(error.to_string());
                        }
                    })
                    .expect("send");
                if value % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(5)); // spread over the election
                }
            }
        })
    };
    wait_for("some records written", || (fake.logs.end_offset(0) > 200).then_some(()));
    fake.spu(1).behave(|behaviour| behaviour.leader = false);
    wait_for("produce refused with NotLeader", || {
        (fake.spu(1).behave(|behaviour| behaviour.not_leader_answers) > 0).then_some(())
    });
    fake.sc.elect(0, SpuId(2));
    sending.join().expect("sending thread");
    producer.flush().expect("flush");
    assert!(failures.lock().unwrap().is_empty(), "{:?}", failures.lock().unwrap());
    let consumer = spawn_consumer(&cluster);
    assert_eq!(
        take(&consumer, total as usize),
        in_order(0, total),
        "lost, duplicated or reordered"
    );
    assert_eq!(fake.logs.end_offset(0), i64::from(total));
}

#[test]
fn producer_retries_not_enough_replicas_and_an_offline_partition() {
    let fake = FakeCluster::start(TOPIC, 1, 2);
    let cluster = connect(&fake, Duration::from_secs(10));
    let producer = producer(&cluster);
    // Too few in-sync replicas three times, then written but answered "fell below the
    // minimum after the append": the retry is a duplicate, acknowledged at its offset.
    fake.spu(1).behave(|behaviour| {
        behaviour.produce_faults.extend([ProduceFault::Refuse(ErrorCode::NotEnoughReplicas); 3]);
        behaviour
            .produce_faults
            .push_back(ProduceFault::AppendThenRefuse(ErrorCode::NotEnoughReplicasAfterAppend));
    });
    assert_eq!(produce(&producer, 0..1), [0]);
    assert_eq!(fake.logs.end_offset(0), 1, "written once");
    assert!(fake.spu(1).behave(|behaviour| behaviour.produce_faults.is_empty()));

    // The partition goes offline (no in-sync replica online), then SPU 2 is elected.
    fake.sc.take_offline(0);
    fake.spu(1).behave(|behaviour| behaviour.leader = false);
    let offline =
        cluster.wait_for_metadata(RECORDS_WAIT, |snapshot| snapshot.route(TOPIC, 0).err());
    assert!(offline.is_some(), "the client never saw the partition offline");
    let bytes = 1u32.to_be_bytes();
    let record = ProducerRecord::new(TOPIC, &bytes).with_partition(0);
    let delivery = producer.send(&record).expect("send");
    fake.sc.elect(0, SpuId(2));
    assert_eq!(delivery.wait().expect("delivered after the election").offset.unwrap().get(), 1);
}

#[test]
fn delivery_timeout_says_the_partition_is_offline() {
    let fake = FakeCluster::start(TOPIC, 1, 1);
    let cluster = connect(&fake, Duration::from_secs(10));
    fake.sc.take_offline(0);
    let gone = cluster.wait_for_metadata(RECORDS_WAIT, |snapshot| snapshot.route(TOPIC, 0).err());
    assert!(gone.is_some());
    let config = ProducerConfig {
        delivery_timeout: Duration::from_millis(500),
        retry_backoff: Duration::from_millis(20),
        ..ProducerConfig::default()
    };
    let producer = cluster.producer(config).expect("producer");
    let record = ProducerRecord::new(TOPIC, b"nowhere").with_partition(0);
    let error = producer.send(&record).expect("send").wait().unwrap_err();
    match &error {
        ClientError::DeliveryTimeout { last_error: Some(last), .. } => {
            assert_eq!(last.code(), Some(ErrorCode::PartitionOffline), "{error}");
        }
        other => panic!("expected a delivery timeout naming the offline partition: {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("partition orders/0 is offline: no in-sync replica"), "{message}");
}

#[test]
fn consumer_gives_up_after_its_request_timeout_saying_why() {
    let fake = FakeCluster::start(TOPIC, 1, 1);
    let request_timeout = Duration::from_secs(1);
    let cluster = connect(&fake, request_timeout);
    let config = ConsumerConfig {
        start: StartFrom::Offset(sluice_client::Offset(0)),
        ..ConsumerConfig::default()
    };
    let mut consumer = cluster.consumer(TOPIC, 0, config).expect("consumer");
    fake.sc.take_offline(0);
    fake.spu(1).behave(|behaviour| behaviour.leader = false);
    let started = Instant::now();
    let error = loop {
        assert!(started.elapsed() < RECORDS_WAIT, "the consumer never gave up");
        match consumer.poll(Duration::from_millis(200)) {
            Ok(_) => {}
            Err(error) => break error,
        }
    };
    assert!(started.elapsed() >= request_timeout, "gave up after {:?}", started.elapsed());
    assert!(error.is_retriable(), "{error:?}");
    assert!(
        matches!(error.code(), Some(ErrorCode::PartitionOffline | ErrorCode::NotLeader)),
        "{error:?}"
    );
    // Polling again tries again: once SPU 1 leads, the consumer reads on.
    fake.spu(1).behave(|behaviour| behaviour.leader = true);
    fake.sc.elect(0, SpuId(1));
    wait_leader(&cluster, 1);
    assert!(matches!(consumer.poll(Duration::from_secs(5)), Ok(Poll::Idle)));
}
