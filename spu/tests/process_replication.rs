//! Replication with real processes: three `sluice-spu` children and an SC, RF 3.
//!
//! What is checked: acks `all` answers once every in-sync replica has the batch durably and
//! the followers' logs hold exactly the leader's bytes; a leader's `kill -9` elects an in-sync
//! follower that serves every acknowledged record, at its acknowledged offset; the killed
//! replica comes back as a follower, cuts what the new leader does not have and catches up;
//! with two of three replicas down acks `all` is refused with `NotEnoughReplicas` while
//! committed reads go on.

mod process_common;

use process_common::replicated::{log_batches, read_all, Replicated};
use process_common::{batch, wait_for};
use sluice_proto::api::produce::Acks;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{Offset, PartitionId};
use sluice_proto::object::{PartitionKey, TopicName};

/// Produces `count` one-record batches with acks all to the partition's leader; returns the
/// acknowledged (offset, value) pairs.
fn produce(
    cluster: &mut Replicated,
    topic: &TopicName,
    from: usize,
    count: usize,
) -> Vec<(Offset, Vec<u8>)> {
    let (_, mut client) = cluster.leader_client(topic, 0);
    (from..from + count)
        .map(|index| {
            let value = format!("value-{index}").into_bytes();
            let outcome = client.produce(topic, 0, &batch(&[&value], 1), Acks::All);
            assert_eq!(outcome.error_code, ErrorCode::None, "record {index}");
            (outcome.base_offset.expect("an offset"), value)
        })
        .collect()
}

#[test]
fn acks_all_replicates_to_every_in_sync_replica_and_a_leader_crash_loses_nothing() {
    let mut cluster = Replicated::start(3);
    let topic = cluster.create_topic("replicated", 1, 3, 2);
    let key = PartitionKey::new(topic.clone(), PartitionId(0));
    let acknowledged = produce(&mut cluster, &topic, 0, 50);
    assert_eq!(acknowledged.first().unwrap().0, Offset(0));
    // Acknowledged means durable on every in-sync replica: every log has every batch.
    let entry = cluster.partition(&topic, 0);
    assert_eq!(entry.status.in_sync_replicas.len(), 3);
    let leader_log =
        log_batches(&cluster.data_dir(entry.spec.leader.get()), entry.spec.leader.get(), &key);
    assert_eq!(leader_log.len(), 50);
    for spu in 1..=3 {
        let log = log_batches(&cluster.data_dir(spu), spu, &key);
        assert_eq!(log, leader_log, "replica on SPU {spu} differs from the leader's log");
    }

    // kill -9 of the leader: an in-sync follower takes over with a new epoch and serves all.
    let old_leader = entry.spec.leader;
    cluster.kill(old_leader.get());
    let after = wait_for("a new leader", || {
        let entry = cluster.partition(&topic, 0);
        (entry.spec.leader != old_leader).then_some(entry)
    });
    assert!(after.spec.leader_epoch > entry.spec.leader_epoch);
    let more = produce(&mut cluster, &topic, 50, 20);
    assert_eq!(more.first().unwrap().0, Offset(50), "the new leader continues at the old end");
    let read = read_all(&mut cluster, &topic);
    for (offset, value) in acknowledged.iter().chain(&more) {
        assert_eq!(read.get(offset), Some(value), "acknowledged record at {offset}");
    }
    assert_eq!(read.len(), 70, "no record twice, nothing else");

    // The old leader returns as a follower and catches up.
    cluster.restart(old_leader.get());
    cluster.wait_in_sync(&topic, 0, 3);
    let new_leader = cluster.partition(&topic, 0).spec.leader;
    let reference = log_batches(&cluster.data_dir(new_leader.get()), new_leader.get(), &key);
    wait_for("the returned replica's log to match", || {
        let log = log_batches(&cluster.data_dir(old_leader.get()), old_leader.get(), &key);
        (log == reference).then_some(())
    });
}

#[test]
fn two_replicas_down_refuse_acks_all_and_keep_committed_reads() {
    let mut cluster = Replicated::start(3);
    let topic = cluster.create_topic("quorum", 1, 3, 2);
    let acknowledged = produce(&mut cluster, &topic, 0, 10);
    let leader = cluster.partition(&topic, 0).spec.leader;
    let followers: Vec<i32> = (1..=3).filter(|spu| *spu != leader.get()).collect();
    for follower in &followers {
        cluster.kill(*follower);
    }
    cluster.wait_in_sync(&topic, 0, 1);
    let (_, mut client) = cluster.leader_client(&topic, 0);
    // The SC stored the shrink before the leader heard its answer: until then an append may
    // still go in and be refused after it (NotEnoughReplicasAfterAppend); then every acks
    // `all` produce is refused before its append.
    wait_for("acks all refused before the append", || {
        let refused = client.produce(&topic, 0, &batch(&[b"late"], 1), Acks::All);
        match refused.error_code {
            ErrorCode::NotEnoughReplicas => Some(()),
            ErrorCode::NotEnoughReplicasAfterAppend => None,
            other => panic!("acks all with one in-sync replica of three answered {other:?}"),
        }
    });
    for _ in 0..3 {
        let refused = client.produce(&topic, 0, &batch(&[b"late"], 1), Acks::All);
        assert_eq!(refused.error_code, ErrorCode::NotEnoughReplicas);
    }
    let read = read_all(&mut cluster, &topic);
    for (offset, value) in &acknowledged {
        assert_eq!(read.get(offset), Some(value));
    }
    // One follower back: acks all works again.
    cluster.restart(followers[0]);
    cluster.wait_in_sync(&topic, 0, 2);
    let more = produce(&mut cluster, &topic, 10, 5);
    assert_eq!(more.len(), 5);
}

/// A follower's long poll waiting on a leader whose replica is then removed from it (here the
/// topic is deleted; a move that replaces the leader does the same) is answered at once with
/// `NotLeader`. It used to spin the leader's core until the poll's deadline (a closed replica
/// never waits, and its last role still said leader): a move that replaced a leader stalled
/// acks `all` of every partition that core followed for up to the 500 ms of a follower's poll.
#[test]
fn a_long_poll_on_a_replica_that_goes_away_is_answered_at_once() {
    use process_common::follower_fetch_request;
    use sluice_proto::api::{fetch::FetchResponse, ApiVersion, Decode};

    let mut cluster = Replicated::start(2);
    let topic = cluster.create_topic("leaving", 1, 2, 1);
    let entry = cluster.partition(&topic, 0);
    // Until the leader serves the partition a follower fetch is refused with NotLeader.
    let (leader, _client) = cluster.leader_client(&topic, 0);
    let follower = entry.spec.replicas.iter().map(|replica| replica.spu).find(|spu| *spu != leader);
    let follower = follower.expect("a follower");
    // The test fetches in the follower's name too (plaintext trusts the claim).
    let core = entry.spec.leader_placement().expect("leader placement").core;
    let spu = cluster.spu(leader.get());
    let address = spu.core_private_addresses[core.index() % spu.core_private_addresses.len()];
    let mut private = process_common::SpuClient::connect(address);
    let poll_ms = 20_000;
    let leader_epoch = Some(entry.spec.leader_epoch);
    let wait = (poll_ms, 1);
    private.send(&follower_fetch_request(follower, &topic, 0, Offset(0), leader_epoch, wait));
    // The poll waits: nothing is past offset 0.
    if let Some(early) = private.next_frame_within(std::time::Duration::from_millis(500)) {
        let response = FetchResponse::decode(ApiVersion(0), &early.body).expect("a response");
        panic!("answered before the deletion: {:?}", response.topics[0].partitions[0].header);
    }
    let deleted = cluster.sc.admin().delete_topic(topic.clone()).expect("delete the topic");
    assert!(deleted.error_code.is_ok(), "{deleted:?}");
    let started = std::time::Instant::now();
    let frame = private.next_frame();
    let waited = started.elapsed();
    let response = FetchResponse::decode(ApiVersion(0), &frame.body).expect("a fetch response");
    let code = response.topics[0].partitions[0].header.error_code;
    println!("answered after {waited:?} with {code:?}");
    assert_eq!(
        code,
        ErrorCode::NotLeader,
        "the poll on the removed replica ran to its deadline ({poll_ms} ms) instead"
    );
}
