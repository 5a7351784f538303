//! Leader changes with real processes: an SC and two SPUs, a topic of replication 2. The SC
//! elects the other replica when the leader's SPU is paused (`SIGSTOP`, heartbeats stop) or
//! killed, and the SDK follows: a tailing consumer leaves its fetch to the paused leader for
//! the new one without waiting for its request timeout, and a producer sending through a
//! `kill -9` of the leader gets every record acknowledged.
//!
//! The SPUs of this tree do not copy records between replicas yet, so these tests check only
//! what was written after the election; with replication the same steps keep everything.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{
    Cluster, ConsumerConfig, Poll, ProducerConfig, ProducerRecord, SpuId, StartFrom, TopicSpec,
};
use sluice_testkit::process::{wait_for, ServerProcess, Signal, TestCluster};

/// The leader of `topic`'s partition 0 in the client's metadata, once it is not `not`.
fn leader(cluster: &Cluster, topic: &str, not: Option<SpuId>) -> SpuId {
    wait_for("a leader of partition 0", || {
        let _ = cluster.refresh_metadata();
        let route = cluster.metadata().route(topic, 0).ok()?;
        (Some(route.spu) != not).then_some(route.spu)
    })
}

#[test]
fn a_tailing_consumer_moves_off_a_paused_leader() {
    let test = TestCluster::start(2, 1);
    test.create_topic_with("paused", TopicSpec::computed(1, 2));
    let request_timeout = Duration::from_secs(60);
    let mut config = test.sc.client_config();
    config.request_timeout = request_timeout;
    let client = Cluster::connect(config).expect("connect");
    let old = leader(&client, "paused", None);
    let config = ConsumerConfig {
        start: StartFrom::Offset(sluice_client::Offset(0)),
        ..ConsumerConfig::default()
    };
    let mut consumer = client.consumer("paused", 0, config).expect("consumer");
    assert!(matches!(consumer.poll(Duration::from_millis(300)).unwrap(), Poll::Idle));

    // The consumer's long poll now waits at the leader; pause it.
    let paused = test.spus.iter().find(|spu| SpuId(spu.id()) == old).expect("the leader's SPU");
    paused.signal(Signal::Stop);
    let stopped_at = Instant::now();
    let new = leader(&test.cluster, "paused", Some(old));
    let producer = test.cluster.producer(ProducerConfig::default()).expect("producer");
    let delivery = producer.send(&ProducerRecord::new("paused", b"after").with_partition(0));
    let offset =
        delivery.expect("send").wait().expect("written at the new leader").offset.unwrap().get();
    let value = loop {
        assert!(
            stopped_at.elapsed() < request_timeout / 2,
            "the consumer stayed on the paused SPU"
        );
        if let Poll::Records(records) = consumer.poll(Duration::from_millis(200)).unwrap() {
            let record = records.into_iter().next().expect("a record");
            break (record.offset.get(), record.value.unwrap().to_vec());
        }
    };
    assert_eq!(value, (offset, b"after".to_vec()), "read from the new leader {new}");
    paused.signal(Signal::Continue);
}

#[test]
fn a_producer_rides_through_a_killed_leader() {
    let mut test = TestCluster::start(2, 1);
    test.create_topic_with("killed", TopicSpec::computed(1, 2));
    let old = leader(&test.cluster, "killed", None);
    let config = ProducerConfig {
        linger: Duration::from_millis(2),
        retry_backoff: Duration::from_millis(50),
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = test.cluster.producer(config).expect("producer");
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let acknowledged: Arc<Mutex<Vec<(u32, i64)>>> = Arc::default();
    let send = |index: u32| {
        let (failures, acknowledged) = (Arc::clone(&failures), Arc::clone(&acknowledged));
        let bytes = index.to_be_bytes();
        producer
            .send_with_callback(
                &ProducerRecord::new("killed", &bytes),
                move |result| match result {
                    Ok(metadata) => {
                        acknowledged.lock().unwrap().push((index, metadata.offset.unwrap().get()))
                    }
                    Err(error) => failures.lock().unwrap().push(error.to_string()),
                },
            )
            .expect("send");
    };
    for index in 0..500 {
        send(index);
    }
    wait_for("acknowledgements before the kill", || {
        (acknowledged.lock().unwrap().len() > 100).then_some(())
    });
    let victim = test.spus.iter_mut().find(|spu| SpuId(spu.id()) == old).expect("the leader");
    victim.kill();
    let new = leader(&test.cluster, "killed", Some(old));
    for index in 500..1000 {
        send(index);
    }
    producer.flush().expect("flush");
    assert!(failures.lock().unwrap().is_empty(), "{:?}", failures.lock().unwrap());
    assert_eq!(acknowledged.lock().unwrap().len(), 1000);

    // Records sent after the election are at the new leader, at their acknowledged offsets.
    let config =
        ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
    let mut consumer = test.cluster.consumer("killed", 0, config).expect("consumer");
    let mut stored = std::collections::BTreeMap::new();
    loop {
        match consumer.poll(Duration::from_secs(1)).expect("poll") {
            Poll::Records(records) => {
                for record in records {
                    let value = u32::from_be_bytes(record.value.unwrap().try_into().unwrap());
                    stored.insert(record.offset.get(), value);
                }
            }
            Poll::Idle => {}
            Poll::End => break,
        }
    }
    for (index, offset) in acknowledged.lock().unwrap().iter().filter(|(index, _)| *index >= 500) {
        assert_eq!(stored.get(offset), Some(index), "record {index} at {offset} on {new}");
    }
}
