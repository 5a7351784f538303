//! Producer and consumer against real processes: one `sluice-sc` and two `sluice-spu` of two
//! cores each, custom SPUs registered through the admin API.
//!
//! Record contents are generated from a seed (`SLUICE_TEST_SEED`, printed on failure) and the
//! record's index, so expected bytes are recomputed instead of kept; `SLUICE_TEST_RECORDS`
//! sets how many records the round trip sends (default 1,000,000: keys, headers, null and empty
//! values and 200 values of 1 MiB, over 4 partitions on 2 SPUs x 2 cores).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use sluice_client::{
    key_partition, Acks, ClientError, Compression, ConsumerConfig, ConsumerRecord, DeliveryFuture,
    Isolation, Offset, PartitionConsumer, Partitioner, Poll, ProducerConfig, ProducerRecord,
    RecordMetadata, StartFrom, TopicSpec,
};
use sluice_testkit::process::{wait_for, TestCluster};

const MIB: usize = 1024 * 1024;

fn seed() -> u64 {
    std::env::var("SLUICE_TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(0x5eed_2026)
}

fn record_count() -> usize {
    std::env::var("SLUICE_TEST_RECORDS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(1_000_000)
}

/// splitmix64: a tiny seeded generator, enough for test data.
fn mix(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    state = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    state = (state ^ (state >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    state ^ (state >> 31)
}

/// Record `index` of the data set: keys (some null), headers, empty and null values, a few
/// values of exactly 1 MiB, other values of random length and content.
fn generated(seed: u64, index: usize) -> ConsumerRecord {
    let random = mix(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let key = (index % 7 != 0).then(|| format!("key-{}", random % 1000).into_bytes());
    let value = if index % 13 == 0 {
        None
    } else if index % 11 == 0 {
        Some(Vec::new())
    } else if index % 4999 == 17 {
        Some((0..MIB).map(|byte| (byte as u64 ^ random) as u8).collect())
    } else {
        let length = (random >> 8) as usize % 300;
        Some((0..length).map(|byte| mix(random + byte as u64) as u8).collect())
    };
    let headers = match index % 3 {
        0 => vec![],
        1 => vec![("trace".to_owned(), index.to_be_bytes().to_vec())],
        _ => vec![("a".to_owned(), vec![]), ("b".to_owned(), random.to_le_bytes().to_vec())],
    };
    ConsumerRecord {
        offset: Offset(-1),
        timestamp: 1_700_000_000_000 + index as i64,
        key,
        value,
        headers,
    }
}

fn send_generated(
    producer: &sluice_client::Producer,
    topic: &str,
    record: &ConsumerRecord,
) -> DeliveryFuture {
    let headers: Vec<(&str, &[u8])> =
        record.headers.iter().map(|(key, value)| (key.as_str(), value.as_slice())).collect();
    let to_send = ProducerRecord {
        topic,
        partition: None,
        key: record.key.as_deref(),
        value: record.value.as_deref(),
        headers: &headers,
        timestamp: Some(record.timestamp),
    };
    producer.send(&to_send).expect("send")
}

/// Every record of a partition from the beginning to the end seen at start.
fn consume_all(consumer: &mut PartitionConsumer) -> Vec<ConsumerRecord> {
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "consumer did not reach the end");
        match consumer.poll(Duration::from_secs(1)).expect("poll") {
            Poll::Records(batch) => records.extend(batch.map(|view| view.to_owned_record())),
            Poll::Idle => {}
            Poll::End => return records,
        }
    }
}

fn assert_same(seed: u64, index: usize, expected: &ConsumerRecord, actual: &ConsumerRecord) {
    let context = format!("record {index} (seed {seed}, offset {})", actual.offset.get());
    assert_eq!(actual.key, expected.key, "{context}: key");
    assert!(actual.value == expected.value, "{context}: value differs");
    assert_eq!(actual.headers, expected.headers, "{context}: headers");
    assert_eq!(actual.timestamp, expected.timestamp, "{context}: timestamp");
}

#[test]
fn produce_and_consume_byte_identical_in_order_over_two_spus_of_two_cores() {
    let cluster = TestCluster::start(2, 2);
    let topic = "round-trip";
    let partition_count = 4;
    // 1 MiB values need batches above the default 1 MiB limit.
    let spec =
        TopicSpec { batch_bytes_max: 2 * MIB as u32, ..TopicSpec::computed(partition_count, 1) };
    cluster.create_topic_with(topic, spec);
    let placements: Vec<(i32, u16)> = (0..partition_count)
        .map(|partition| {
            let route = cluster.cluster.metadata().route(topic, partition).unwrap();
            // Shard-aware: the route is the owning core's own port, as the SPU reported it.
            let spu = cluster.spus.iter().find(|spu| spu.id() == route.spu.get()).unwrap();
            let core_address = spu.core_addresses[usize::from(route.core.get())];
            assert_eq!(route.address, core_address.to_string(), "partition {partition}");
            (route.spu.get(), route.core.get())
        })
        .collect();
    // Spread over both SPUs and both cores of each.
    let spread: std::collections::HashSet<_> = placements.iter().collect();
    assert_eq!(spread.len(), 4, "{placements:?}");
    println!("partition placements (spu, core): {placements:?}");

    let seed = seed();
    let count = record_count();
    let producer = cluster.cluster.producer(ProducerConfig::default()).unwrap();
    let deliveries: Vec<DeliveryFuture> =
        (0..count).map(|index| send_generated(&producer, topic, &generated(seed, index))).collect();
    producer.flush().unwrap();
    let mut by_partition: BTreeMap<u32, Vec<(i64, usize)>> = BTreeMap::new();
    for (index, delivery) in deliveries.into_iter().enumerate() {
        assert!(delivery.is_done(), "flush returned before record {index} was resolved");
        let metadata = delivery.wait().unwrap_or_else(|error| panic!("record {index}: {error}"));
        by_partition
            .entry(metadata.partition)
            .or_default()
            .push((metadata.offset.unwrap().get(), index));
    }
    for (partition, written) in &mut by_partition {
        // Offsets are dense and follow send order within a partition.
        let offsets: Vec<i64> = written.iter().map(|(offset, _)| *offset).collect();
        let first = offsets[0];
        assert_eq!(
            offsets,
            (first..first + offsets.len() as i64).collect::<Vec<_>>(),
            "partition {partition}"
        );
    }

    for partition in 0..partition_count {
        let config =
            ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
        let mut consumer = cluster.cluster.consumer(topic, partition, config).unwrap();
        let consumed = consume_all(&mut consumer);
        let written = by_partition.get(&partition).cloned().unwrap_or_default();
        assert_eq!(consumed.len(), written.len(), "records in partition {partition} (seed {seed})");
        for ((offset, index), actual) in written.iter().zip(&consumed) {
            assert_eq!(actual.offset.get(), *offset);
            assert_same(seed, *index, &generated(seed, *index), actual);
        }
    }
}

#[test]
fn keys_land_where_kafka_puts_them_and_explicit_partitions_are_kept() {
    let cluster = TestCluster::start(1, 2);
    cluster.create_topic("keyed", 3);
    let producer = cluster.cluster.producer(ProducerConfig::default()).unwrap();
    for index in 0..200u32 {
        let key = format!("user-{index}");
        let delivery =
            producer.send(&ProducerRecord::new("keyed", b"v").with_key(key.as_bytes())).unwrap();
        assert_eq!(delivery.partition(), key_partition(key.as_bytes(), 3), "key {key}");
    }
    let explicit = producer.send(&ProducerRecord::new("keyed", b"v").with_partition(2)).unwrap();
    assert_eq!(explicit.wait().unwrap().partition, 2);
    let beyond = producer.send(&ProducerRecord::new("keyed", b"v").with_partition(3)).unwrap_err();
    assert!(
        matches!(beyond, ClientError::UnknownPartition { partition_count: 3, .. }),
        "{beyond:?}"
    );
    let unknown = producer.send(&ProducerRecord::new("no-such-topic", b"v")).unwrap_err();
    assert!(matches!(unknown, ClientError::UnknownTopic { .. }), "{unknown:?}");
    assert!(unknown.to_string().contains("sluice topic create"), "{unknown}");
    producer.flush().unwrap();

    // Sticky: keyless records fill one partition's batch before moving on.
    let sticky = cluster
        .cluster
        .producer(ProducerConfig {
            partitioner: Partitioner::Sticky,
            linger: Duration::from_secs(5),
            ..Default::default()
        })
        .unwrap();
    let partitions: Vec<u32> = (0..10)
        .map(|_| {
            sticky
                .send(&ProducerRecord::new("keyed", b"x").with_key(b"ignored"))
                .unwrap()
                .partition()
        })
        .collect();
    assert!(partitions.windows(2).all(|pair| pair[0] == pair[1]), "{partitions:?}");
    sticky.flush().unwrap();
}

#[test]
fn consumer_tails_while_a_producer_writes() {
    let cluster = TestCluster::start(2, 2);
    cluster.create_topic("tail", 1);
    let config = ConsumerConfig {
        start: StartFrom::End,
        isolation: Isolation::ReadCommitted,
        ..Default::default()
    };
    let mut consumer = cluster.cluster.consumer("tail", 0, config).unwrap();
    assert!(matches!(consumer.poll(Duration::from_millis(50)).unwrap(), Poll::Idle));

    let total = 5_000usize;
    let producer = cluster
        .cluster
        .producer(ProducerConfig { linger: Duration::from_millis(1), ..Default::default() })
        .unwrap();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writer = std::thread::spawn({
        let acknowledged = Arc::clone(&acknowledged);
        move || {
            for index in 0..total {
                let value = format!("value-{index}");
                let acknowledged = Arc::clone(&acknowledged);
                producer
                    .send_with_callback(
                        &ProducerRecord::new("tail", value.as_bytes()),
                        move |result| {
                            result.expect("delivery");
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        },
                    )
                    .unwrap();
                if index % 500 == 0 {
                    std::thread::sleep(Duration::from_millis(5)); // let the consumer catch up
                }
            }
            producer.flush().unwrap();
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < total {
        assert!(Instant::now() < deadline, "tailing consumer saw {} of {total}", seen.len());
        if let Poll::Records(records) = consumer.poll(Duration::from_millis(200)).unwrap() {
            for record in records {
                seen.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            }
        }
    }
    writer.join().unwrap();
    assert_eq!(acknowledged.load(Ordering::SeqCst), total);
    let expected: Vec<String> = (0..total).map(|index| format!("value-{index}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(consumer.position(), Offset(total as i64));
}

#[test]
fn start_positions_offset_end_and_timestamp() {
    let cluster = TestCluster::start(1, 1);
    cluster.create_topic("positions", 1);
    let producer = cluster.cluster.producer(ProducerConfig::default()).unwrap();
    let base_time = 1_800_000_000_000i64;
    let deliveries: Vec<DeliveryFuture> = (0..100i64)
        .map(|index| {
            let value = index.to_be_bytes();
            let record = ProducerRecord::new("positions", &value)
                .with_partition(0)
                .with_timestamp(base_time + index * 10);
            producer.send(&record).unwrap()
        })
        .collect();
    producer.flush().unwrap();
    let offsets: Vec<i64> = deliveries
        .into_iter()
        .map(|delivery| delivery.wait().unwrap().offset.unwrap().get())
        .collect();
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());

    let first_value = |start: StartFrom| -> Option<i64> {
        let config = ConsumerConfig { start, stop_at_end: true, ..Default::default() };
        let mut consumer = cluster.cluster.consumer("positions", 0, config).unwrap();
        consume_all(&mut consumer)
            .first()
            .map(|record| i64::from_be_bytes(record.value.clone().unwrap().try_into().unwrap()))
    };
    assert_eq!(first_value(StartFrom::Beginning), Some(0));
    assert_eq!(first_value(StartFrom::Offset(sluice_client::Offset(42))), Some(42));
    assert_eq!(first_value(StartFrom::Timestamp(base_time + 555)), Some(56));
    assert_eq!(first_value(StartFrom::Timestamp(base_time + 10_000)), None);
    assert_eq!(first_value(StartFrom::End), None);
    let config = ConsumerConfig { start: StartFrom::End, stop_at_end: true, ..Default::default() };
    let consumer = cluster.cluster.consumer("positions", 0, config).unwrap();
    assert_eq!(consumer.end_offset(), Some(Offset(100)));
    // The owned-record iterator: blocks per record, ends at the end offset.
    let config = ConsumerConfig {
        start: StartFrom::Offset(sluice_client::Offset(90)),
        stop_at_end: true,
        ..Default::default()
    };
    let mut consumer = cluster.cluster.consumer("positions", 0, config).unwrap();
    let owned: Vec<(i64, i64)> = consumer
        .records()
        .map(|record| record.map(|record| (record.offset.get(), record.timestamp)).unwrap())
        .collect();
    let expected: Vec<(i64, i64)> =
        (90..100).map(|offset| (offset, base_time + offset * 10)).collect();
    assert_eq!(owned, expected);
}

#[test]
fn every_codec_and_acks_level_round_trips() {
    let cluster = TestCluster::start(1, 2);
    cluster.create_topic("codecs", 1);
    let mut expected = Vec::new();
    for (round, (compression, acks)) in [
        (Compression::Gzip, Acks::Leader),
        (Compression::Snappy, Acks::All),
        (Compression::Lz4, Acks::All),
        (Compression::Zstd, Acks::Leader),
        // Last: nothing is reported back, so the replica must be known to be up already.
        (Compression::None, Acks::None),
    ]
    .into_iter()
    .enumerate()
    {
        let producer = cluster
            .cluster
            .producer(ProducerConfig { compression, acks, ..Default::default() })
            .unwrap();
        let mut deliveries = Vec::new();
        for index in 0..300 {
            let value = format!("{round}-{index}-{}", "compressible ".repeat(index % 20));
            deliveries.push(
                producer
                    .send(&ProducerRecord::new("codecs", value.as_bytes()).with_key(b"k"))
                    .unwrap(),
            );
            expected.push(value);
        }
        // Awaited as futures, from a minimal executor (no runtime).
        let last: RecordMetadata = block_on(async {
            let mut last = None;
            for delivery in deliveries {
                last = Some(delivery.await.unwrap());
            }
            last.unwrap()
        });
        if acks == Acks::None {
            assert_eq!(last.offset, None, "acks none reports no offset");
        } else {
            assert!(
                last.offset.is_some_and(|offset| offset.get() >= 299),
                "{compression:?}: {last:?}"
            );
        }
    }
    // acks none gives no confirmation: wait until the log has everything.
    let config =
        ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
    let values = wait_for("all records readable", || {
        let mut consumer = cluster.cluster.consumer("codecs", 0, config.clone()).unwrap();
        let consumed = consume_all(&mut consumer);
        (consumed.len() == expected.len()).then_some(consumed)
    });
    let values: Vec<String> = values
        .into_iter()
        .map(|record| String::from_utf8(record.value.unwrap()).unwrap())
        .collect();
    assert_eq!(values, expected);
}

#[test]
fn back_pressure_bounds_buffered_bytes_and_errors_are_clear() {
    let cluster = TestCluster::start(1, 1);
    cluster.create_topic("pressure", 1);
    let config = ProducerConfig {
        buffer_bytes_max: 256 * 1024,
        batch_bytes: 16 * 1024,
        ..Default::default()
    };
    let producer = cluster.cluster.producer(config).unwrap();
    let value = vec![7u8; 8 * 1024];
    // 8 MiB through a 256 KiB buffer: `send` must wait for acknowledgements along the way.
    let deliveries: Vec<DeliveryFuture> = (0..1024)
        .map(|_| producer.send(&ProducerRecord::new("pressure", &value)).unwrap())
        .collect();
    producer.flush().unwrap();
    assert!(deliveries.into_iter().all(|delivery| delivery.wait().is_ok()));
    let too_big = vec![0u8; 300 * 1024];
    let error = producer.send(&ProducerRecord::new("pressure", &too_big)).unwrap_err();
    assert!(matches!(error, ClientError::RecordTooLarge { .. }), "{error:?}");
    assert!(error.to_string().contains("buffer_bytes_max"), "{error}");
}

#[test]
fn delivery_timeout_names_the_last_error_of_a_full_volume() {
    // A free-space floor no volume meets: every append is refused with StorageFull, which is
    // retriable, so the producer retries until its delivery timeout and then says why.
    let cluster =
        TestCluster::builder(1, 1).spu_flags(&["--free-bytes-min=18446744073709551615"]).start();
    cluster.create_topic("full", 1);
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(50),
        ..Default::default()
    };
    let producer = cluster.cluster.producer(config).unwrap();
    let delivery = producer.send(&ProducerRecord::new("full", b"nowhere to go")).unwrap();
    let error = delivery.wait().unwrap_err();
    match &error {
        ClientError::DeliveryTimeout { last_error: Some(last), .. } => {
            assert_eq!(last.code(), Some(sluice_client::ErrorCode::StorageFull), "{error}");
        }
        other => panic!("expected a delivery timeout naming StorageFull, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("gave up after") && message.contains("StorageFull"), "{message}");
}

/// A minimal executor: polls a future on this thread, parking until woken.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread, Mutex<bool>);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            *self.1.lock().unwrap() = true;
            self.0.unpark();
        }
    }
    let unpark = Arc::new(Unpark(std::thread::current(), Mutex::new(false)));
    let waker = Waker::from(Arc::clone(&unpark));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        while !std::mem::take(&mut *unpark.1.lock().unwrap()) {
            std::thread::park();
        }
    }
}

#[test]
fn many_threads_share_one_producer_and_each_keeps_its_order() {
    let cluster = TestCluster::start(1, 2);
    cluster.create_topic("shared", 2);
    let producer = cluster.cluster.producer(ProducerConfig::default()).unwrap();
    let threads = 32u32;
    let per_thread = 300u32;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let producer = producer.clone();
            scope.spawn(move || {
                // One key per thread: all of a thread's records go to one partition, in order.
                let key = format!("thread-{thread}");
                for sequence in 0..per_thread {
                    let value = [thread.to_be_bytes(), sequence.to_be_bytes()].concat();
                    let record = ProducerRecord::new("shared", &value).with_key(key.as_bytes());
                    drop(producer.send(&record).unwrap());
                }
            });
        }
    });
    producer.flush().unwrap();
    let mut next_sequence = vec![0u32; threads as usize];
    for partition in 0..2 {
        let config =
            ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
        let mut consumer = cluster.cluster.consumer("shared", partition, config).unwrap();
        for record in consume_all(&mut consumer) {
            let value = record.value.unwrap();
            let thread = u32::from_be_bytes(value[..4].try_into().unwrap()) as usize;
            let sequence = u32::from_be_bytes(value[4..].try_into().unwrap());
            assert_eq!(sequence, next_sequence[thread], "thread {thread} out of order");
            next_sequence[thread] += 1;
        }
    }
    assert!(next_sequence.iter().all(|&count| count == per_thread), "{next_sequence:?}");
}

/// Collects what a [`sluice_client::DeliveryListener`] is told.
#[derive(Default)]
struct Collected(Mutex<Vec<(u64, Result<RecordMetadata, String>)>>);

impl sluice_client::DeliveryListener for Collected {
    fn delivered(&self, tag: u64, result: Result<RecordMetadata, ClientError>) {
        self.0.lock().unwrap().push((tag, result.map_err(|error| error.to_string())));
    }
}

/// A producer with 4 KiB batches reporting tagged sends to `listener`.
fn small_batch_producer(
    cluster: &TestCluster,
    listener: Arc<dyn sluice_client::DeliveryListener>,
) -> sluice_client::Producer {
    let config = ProducerConfig { batch_bytes: 4096, ..Default::default() };
    cluster.cluster.producer_with_listener(config, listener).unwrap()
}

#[test]
fn tagged_sends_report_every_record_once_to_the_listener() {
    let cluster = TestCluster::start(1, 1);
    cluster.create_topic("tagged", 2);
    let collected = Arc::new(Collected::default());
    let producer = small_batch_producer(&cluster, collected.clone());
    let total = 3_000u64;
    for tag in 0..total {
        let value = format!("value-{tag}");
        let record =
            ProducerRecord::new("tagged", value.as_bytes()).with_partition((tag % 2) as u32);
        producer.send_tagged(&record, 1_000_000 + tag).unwrap();
    }
    producer.flush().unwrap();
    let collected = std::mem::take(&mut *collected.0.lock().unwrap());
    assert_eq!(collected.len(), total as usize, "one report per record");
    let mut next_offset = [0i64; 2];
    let mut tags: Vec<u64> = Vec::new();
    for (tag, result) in collected {
        let metadata = result.expect("delivered");
        let index = tag - 1_000_000;
        assert_eq!(metadata.partition, (index % 2) as u32, "tag {tag}");
        // Records of one partition are acknowledged in send order with consecutive offsets.
        assert_eq!(
            metadata.offset.unwrap().get(),
            next_offset[metadata.partition as usize],
            "tag {tag}"
        );
        next_offset[metadata.partition as usize] += 1;
        tags.push(tag);
    }
    tags.sort_unstable();
    assert_eq!(tags, (1_000_000..1_000_000 + total).collect::<Vec<_>>());

    // A producer without a listener refuses tagged sends and says how to get one.
    let plain = cluster.cluster.producer(ProducerConfig::default()).unwrap();
    let error = plain.send_tagged(&ProducerRecord::new("tagged", b"x"), 1).unwrap_err();
    assert!(error.to_string().contains("producer_with_listener"), "{error}");
}

/// A listener that takes whole batches and reads only the first record of each.
#[derive(Default)]
struct FirstOfEachBatch {
    batches: AtomicUsize,
    first_tags: Mutex<Vec<u64>>,
}

impl sluice_client::DeliveryListener for FirstOfEachBatch {
    fn delivered(&self, tag: u64, _result: Result<RecordMetadata, ClientError>) {
        panic!("delivered({tag}) called although delivered_batch is overridden");
    }

    fn delivered_batch(
        &self,
        records: &mut dyn Iterator<Item = (u64, Result<RecordMetadata, ClientError>)>,
    ) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        if let Some((tag, result)) = records.next() {
            result.expect("delivered");
            self.first_tags.lock().unwrap().push(tag);
        }
    }
}

#[test]
fn a_batch_listener_is_called_once_per_batch_and_callbacks_still_run() {
    let cluster = TestCluster::start(1, 1);
    cluster.create_topic("batched", 1);
    let listener = Arc::new(FirstOfEachBatch::default());
    let producer = small_batch_producer(&cluster, listener.clone());
    let callbacks = Arc::new(AtomicUsize::new(0));
    let total = 2_000u64;
    for tag in 0..total {
        let value = format!("value-{tag:06}");
        let record = ProducerRecord::new("batched", value.as_bytes());
        if tag % 10 == 0 {
            // Mixed into the same batches: boxed callbacks, which must all run even though
            // the listener leaves most of each batch's tagged records unread.
            let counter = Arc::clone(&callbacks);
            producer
                .send_with_callback(&record, move |result| {
                    result.expect("delivered");
                    counter.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
        } else {
            producer.send_tagged(&record, tag).unwrap();
        }
    }
    producer.flush().unwrap();
    assert_eq!(callbacks.load(Ordering::Relaxed), (total / 10) as usize);
    let first_tags = std::mem::take(&mut *listener.first_tags.lock().unwrap());
    let batches = listener.batches.load(Ordering::Relaxed);
    // ~20 bytes of value per record in 4 KiB batches: many batches, each reported once.
    assert!(batches >= 10, "{batches} batch calls for {total} records");
    assert_eq!(first_tags.len(), batches, "every batch held tagged records");
    assert!(first_tags.windows(2).all(|pair| pair[0] < pair[1]), "batches in send order");
    assert_eq!(first_tags[0], 1, "the first tagged record (0 went with a callback)");
}
