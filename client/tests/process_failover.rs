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
//! read is what stayed. The workload and its checks are `workload/mod.rs`, shared with the
//! reassignment tests (`process_reassign.rs`).
//!
//! The producer's request timeout is 5 s: the SDK producer leaves requests in flight at a
//! paused leader only when they time out (30 s by default), not at the leader change.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_client::SpuId;
use sluice_proto::api::produce::{
    Acks, ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic,
};
use sluice_proto::api::{ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_request, FrameDecoder};
use sluice_proto::ids::{CorrelationId, PartitionId, TimestampMs};
use sluice_proto::object::TopicName;
use sluice_proto::record::BatchBuilder;
use sluice_testkit::process::{ServerProcess, Signal, TestCluster};

mod workload;

use workload::*;

/// Three SPUs, the topic (RF 3, min-in-sync 2) with every replica in sync.
fn start(topic: &str, partitions: u32) -> TestCluster {
    workload::start_cluster(topic, partitions, 3)
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
