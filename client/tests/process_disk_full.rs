//! A leader elected while its disk is full (found by the fault campaign, `deploy/faults/run
//! --seed 202`: a partition stayed without a working leader for 26 s after a `disk-full`).
//!
//! A `sluice-sc` and two `sluice-spu`, SPU 2's data on a small volume of its own; a topic with
//! replicas [1, 2] (SPU 1 leads), min in-sync 1. Records are acknowledged with acks `all`, then
//! SPU 2's volume is filled to its last block and SPU 1 is killed: the SC elects SPU 2, which
//! cannot record the new leader epoch and serves nothing. Once the space is freed it must take
//! the leadership by itself (the SC still names it, and nothing else will change): a produce
//! with acks `all` succeeds and every record acknowledged before is read back at its offset.
//!
//! Needs root (a loop mount); elsewhere it says so and does nothing.

use std::time::{Duration, Instant};

use sluice_client::{
    Acks, ConsumerConfig, Poll, ProducerConfig, ProducerRecord, StartFrom, TopicSpec,
};
use sluice_proto::ids::{CoreId, Offset, PartitionId, SpuId};
use sluice_proto::object::{PartitionAssignment, ReplicaPlacement, ReplicaSpec};
use sluice_testkit::process::{wait_for, Output, ServerProcess, SpuProcess, TestCluster};
use sluice_testkit::volume::{is_root, LoopVolume};

const TOPIC: &str = "full";
const RECORDS: u64 = 200;

fn placement(spu: i32) -> ReplicaPlacement {
    ReplicaPlacement { spu: SpuId(spu), core: CoreId(0) }
}

/// (leader, in-sync replicas) as the SC stores them.
fn leadership(test: &TestCluster) -> Option<(SpuId, Vec<SpuId>)> {
    let entries = test.cluster.admin().list_partitions(Some(TOPIC)).ok()?;
    let entry = entries.into_iter().find(|entry| entry.key.partition == PartitionId(0))?;
    Some((entry.spec.leader, entry.status.in_sync_replicas.clone()))
}

#[test]
fn a_leader_elected_on_a_full_disk_leads_once_space_is_freed() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to loop-mount a small volume");
        return;
    }
    let volume = LoopVolume::new(256);
    let mut test = TestCluster::start(1, 1);
    let spu = SpuProcess::builder(volume.path())
        .id(2)
        .sc(test.sc.private_address)
        .cores(1)
        .output(Output::File(test.directory.path().join("spu-2.log")))
        .register_custom(test.sc.public_address)
        .start();
    test.spus.push(spu);
    test.wait_spus_online(2);
    let spec = TopicSpec {
        replicas: ReplicaSpec::Assigned(vec![PartitionAssignment {
            replicas: vec![placement(1), placement(2)],
        }]),
        min_in_sync_replicas: 1,
        segment_bytes: 16 << 20,
        ..TopicSpec::default()
    };
    test.create_topic_with(TOPIC, spec);
    wait_for("both replicas in sync", || {
        let (leader, in_sync) = leadership(&test)?;
        (leader == SpuId(1) && in_sync.len() == 2).then_some(())
    });

    let config = ProducerConfig {
        acks: Acks::All,
        delivery_timeout: Duration::from_secs(30),
        ..ProducerConfig::default()
    };
    let producer = test.cluster.producer(config.clone()).expect("producer");
    let acknowledged: Vec<(u64, i64)> = (0..RECORDS)
        .map(|index| {
            let value = format!("before-{index}");
            let delivery = producer.send(&ProducerRecord::new(TOPIC, value.as_bytes()));
            let metadata = delivery.expect("send").wait().expect("acknowledged");
            (index, metadata.offset.unwrap().get())
        })
        .collect();
    drop(producer);
    let (_, in_sync) = leadership(&test).expect("the partition");
    assert_eq!(in_sync.len(), 2, "SPU 2 left the in-sync set before the fault");

    let filler = volume.path().join("filler");
    let filled = volume.fill(&filler);
    eprintln!("SPU 2's volume filled with {} MiB", filled >> 20);
    let probe = volume.path().join("probe");
    assert!(std::fs::write(&probe, b"x").is_err(), "a 1-byte file still fits");
    test.spus[0].kill();
    wait_for("the SC to elect SPU 2", || {
        let (leader, _) = leadership(&test)?;
        (leader == SpuId(2)).then_some(())
    });
    wait_for("SPU 2 to fail to take the leadership on its full disk", || {
        test.spus[1].log().contains("cannot record the new leader epoch").then_some(())
    });
    volume.free(&filler);
    let freed = Instant::now();

    let producer = test.cluster.producer(config).expect("producer");
    let delivery = producer.send(&ProducerRecord::new(TOPIC, b"after")).expect("send");
    let after = delivery.wait().unwrap_or_else(|error| {
        panic!("SPU 2 never led after the space was freed (the SC names it leader): {error}")
    });
    eprintln!("acknowledged by SPU 2 {:?} after the space was freed", freed.elapsed());

    let consumer_config =
        ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
    let mut consumer = test.cluster.consumer(TOPIC, 0, consumer_config).expect("consumer");
    let mut read = Vec::new();
    loop {
        match consumer.poll(Duration::from_secs(1)).expect("poll") {
            Poll::Records(records) => {
                for record in records {
                    read.push((
                        record.offset.get(),
                        record.value.map(|value| value.to_vec()).unwrap_or_default(),
                    ));
                }
            }
            Poll::Idle => {}
            Poll::End => break,
        }
    }
    for (index, offset) in &acknowledged {
        let value = format!("before-{index}").into_bytes();
        assert!(
            read.iter().any(|(at, stored)| at == offset && *stored == value),
            "record {index} acknowledged at {offset} is not there"
        );
    }
    assert!(read
        .iter()
        .any(|(at, stored)| Some(Offset(*at)) == after.offset && stored == b"after"));
    assert_eq!(read.len() as u64, RECORDS + 1, "exactly the records sent");
}
