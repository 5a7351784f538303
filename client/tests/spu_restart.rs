//! Faults against real processes: an SPU killed (`kill -9`) and restarted on new ports while a
//! producer writes and a consumer tails. The client must reroute through the metadata
//! (the restarted SPU publishes new per-core ports), retry, keep every acknowledged record at
//! its acknowledged offset, and keep each partition's records in send order (a retry after an
//! unknown outcome may add a duplicate, never reorder). And the SC stopped: producing and
//! consuming go on from the cached metadata, admin calls fail with a clear error.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{
    ConsumerConfig, Poll, ProducerConfig, ProducerRecord, RecordMetadata, StartFrom,
};
use sluice_testkit::process::{wait_for, ServerProcess, TestCluster};

#[test]
fn acknowledged_records_survive_an_spu_crash_and_order_is_kept() {
    let mut cluster = TestCluster::start(1, 2);
    let topic = "crash";
    cluster.create_topic(topic, 2);
    let config = ProducerConfig {
        linger: Duration::from_millis(2),
        retry_backoff: Duration::from_millis(50),
        delivery_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let producer = cluster.cluster.producer(config).unwrap();
    type Outcomes = Arc<Mutex<BTreeMap<u32, Result<RecordMetadata, String>>>>;
    let outcomes: Outcomes = Arc::default();
    let send = |index: u32| {
        let value = index.to_be_bytes();
        let outcomes = Arc::clone(&outcomes);
        producer
            .send_with_callback(&ProducerRecord::new(topic, &value), move |result| {
                outcomes.lock().unwrap().insert(index, result.map_err(|error| error.to_string()));
            })
            .unwrap();
    };
    let total = 6_000u32;
    for index in 0..total / 2 {
        send(index);
    }
    // Crash once part of it is acknowledged, with more still buffered and in flight.
    wait_for("some acknowledgements", || (outcomes.lock().unwrap().len() > 500).then_some(()));
    cluster.spus[0].restart();
    for index in total / 2..total {
        send(index);
    }
    producer.flush().unwrap();
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), total as usize);
    let failed: Vec<_> = outcomes.iter().filter(|(_, outcome)| outcome.is_err()).take(5).collect();
    assert!(failed.is_empty(), "records failed despite retries: {failed:?}");

    for partition in 0..2 {
        let config =
            ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
        let mut consumer = cluster.cluster.consumer(topic, partition, config).unwrap();
        let mut by_offset = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "consumer did not reach the end");
            match consumer.poll(Duration::from_secs(1)).unwrap() {
                Poll::Records(records) => {
                    for record in records {
                        let value: [u8; 4] = record.value.unwrap().try_into().unwrap();
                        by_offset.insert(record.offset.get(), u32::from_be_bytes(value));
                    }
                }
                Poll::Idle => {}
                Poll::End => break,
            }
        }
        // Every acknowledgement names the offset that holds the record.
        for (index, outcome) in &outcomes {
            let metadata = outcome.as_ref().unwrap();
            if metadata.partition == partition {
                assert_eq!(
                    by_offset.get(&metadata.offset.unwrap().get()),
                    Some(index),
                    "record {index} at {metadata:?}"
                );
            }
        }
        // First occurrences follow send order; duplicates (unknown outcome, retried) only repeat.
        let mut seen = HashSet::new();
        let firsts: Vec<u32> =
            by_offset.values().copied().filter(|index| seen.insert(*index)).collect();
        assert!(firsts.windows(2).all(|pair| pair[0] < pair[1]), "partition {partition} reordered");
        let duplicates = by_offset.len() - firsts.len();
        println!(
            "partition {partition}: {} records, {duplicates} duplicates from retries",
            by_offset.len()
        );
    }
}

#[test]
fn tailing_consumer_resumes_after_an_spu_crash() {
    let mut cluster = TestCluster::start(1, 1);
    cluster.create_topic("resume", 1);
    let producer = cluster.cluster.producer(ProducerConfig::default()).unwrap();
    for index in 0..100u32 {
        let delivery = producer.send(&ProducerRecord::new("resume", &index.to_be_bytes())).unwrap();
        drop(delivery); // checked through the consumer
    }
    producer.flush().unwrap();
    let config = ConsumerConfig { start: StartFrom::Beginning, ..Default::default() };
    let mut consumer = cluster.cluster.consumer("resume", 0, config).unwrap();
    let mut values = Vec::new();
    let mut take =
        |consumer: &mut sluice_client::PartitionConsumer, until: usize| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while values.len() < until {
                assert!(Instant::now() < deadline, "consumer stuck at {} of {until}", values.len());
                if let Poll::Records(records) = consumer.poll(Duration::from_millis(200)).unwrap() {
                    values.extend(records.map(|record| {
                        u32::from_be_bytes(record.value.unwrap().try_into().unwrap())
                    }));
                }
            }
        };
    take(&mut consumer, 100);
    cluster.spus[0].restart();
    for index in 100..200u32 {
        let delivery = producer.send(&ProducerRecord::new("resume", &index.to_be_bytes())).unwrap();
        drop(delivery); // checked through the consumer
    }
    producer.flush().unwrap();
    take(&mut consumer, 200);
    assert_eq!(values, (0..200).collect::<Vec<_>>());
}

#[test]
fn data_path_keeps_working_while_the_sc_is_down() {
    let cluster = TestCluster::start(1, 2);
    cluster.create_topic("no-sc", 2);
    let producer = cluster.cluster.producer(ProducerConfig::default()).unwrap();
    let first = producer.send(&ProducerRecord::new("no-sc", b"before").with_partition(1)).unwrap();
    assert_eq!(first.wait().unwrap().offset.unwrap().get(), 0);
    let TestCluster { spus, cluster: client, mut sc, directory, .. } = cluster;
    sc.kill();
    // Routes come from the cached metadata; SPUs serve without the SC.
    let second = producer.send(&ProducerRecord::new("no-sc", b"after").with_partition(1)).unwrap();
    assert_eq!(second.wait().unwrap().offset.unwrap().get(), 1);
    let config = ConsumerConfig { start: StartFrom::Beginning, ..Default::default() };
    let mut consumer = client.consumer("no-sc", 1, config).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values.len() < 2 {
        assert!(Instant::now() < deadline, "consumer got {values:?}");
        if let Poll::Records(records) = consumer.poll(Duration::from_millis(200)).unwrap() {
            values.extend(records.map(|record| record.value.unwrap().to_vec()));
        }
    }
    assert_eq!(values, [b"before".to_vec(), b"after".to_vec()]);
    // Admin needs the SC: a clear error, not a hang.
    let error = client.admin().list_topics().unwrap_err();
    assert!(error.to_string().contains("sluice cluster start --local"), "{error}");
    drop((spus, directory));
}
