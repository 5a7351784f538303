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
//! HW and past. The workload and its checks are `workload/mod.rs`, shared with the failover
//! tests (`process_failover.rs`).

use std::time::{Duration, Instant};

use sluice_client::{ErrorCode, ProducerConfig, ProducerRecord, SpuId};
use sluice_proto::api::admin::{
    PartitionEntry, PartitionReassignment, ReassignmentChange, ReplicaTarget,
};
use sluice_proto::api::produce::Acks;
use sluice_proto::ids::PartitionId;
use sluice_proto::object::{PartitionKey, TopicName};
use sluice_testkit::process::{wait_for, ServerProcess, TestCluster};

mod workload;

use workload::*;

/// Four SPUs, the topic (RF 3, min-in-sync 2) with every replica in sync.
fn start(topic: &str, partitions: u32) -> TestCluster {
    workload::start_cluster(topic, partitions, 4)
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
