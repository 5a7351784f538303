//! Failure handling of a real `sluice-spu`: unknown topics and partitions, batches over the
//! size limit, malformed frames and bodies, clients that disconnect mid-request, replication
//! client requests on the private port, restarts after `kill -9` and SIGTERM. Each case checks the
//! clear error and that other connections and partitions are unharmed.

mod process_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use process_common::{
    batch, follower_fetch_request, record_values, value_for, wait_for, Cluster, ServerProcess,
    SpuClient,
};
use sluice_proto::api::api_versions::ApiVersionsResponse;
use sluice_proto::api::fetch::{FetchResponse, Isolation};
use sluice_proto::api::list_offsets::OffsetSpec;
use sluice_proto::api::produce::{Acks, ProducePartition, ProduceRequest, ProduceTopic};
use sluice_proto::api::replication::FollowerFetchRequest;
use sluice_proto::api::{ApiKey, ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, Offset, PartitionId, SpuId};
use sluice_proto::object::{TopicName, TopicSpec};

const CORES: u16 = 2;

/// Produces one small record and fetches it back: the SPU still serves `topic`/`partition`.
fn assert_serves(cluster: &Cluster, topic: &TopicName, partition: u32) {
    let mut client = SpuClient::connect(cluster.spu.public_address);
    let value = b"still serving".to_vec();
    let outcome = client.produce(topic, partition, &batch(&[&value], 1), Acks::Leader);
    assert_eq!(outcome.error_code, ErrorCode::None);
    let offset = outcome.base_offset.expect("an offset");
    let fetched = client.fetch_values(topic, partition, offset, 1);
    assert_eq!(fetched[0], (offset, value));
}

#[test]
fn unknown_topic_and_partition_get_clear_errors() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("known", 2);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    let unknown = TopicName::new("unknown").unwrap();
    for (name, partition) in [(&unknown, 0), (&topic, 7)] {
        let outcome = client.produce(name, partition, &batch(&[b"x"], 1), Acks::Leader);
        assert_eq!(outcome.error_code, ErrorCode::UnknownTopicOrPartition);
        assert_eq!(outcome.base_offset, None);
        let (header, records) =
            client.fetch(name, partition, Offset(0), (0, 0), Isolation::ReadCommitted);
        assert_eq!(header.error_code, ErrorCode::UnknownTopicOrPartition);
        assert!(records.is_empty());
        let listed =
            client.list_offset(name, partition, OffsetSpec::Latest, Isolation::ReadCommitted);
        assert_eq!(listed.error_code, ErrorCode::UnknownTopicOrPartition);
    }
    // A stream on an unknown topic ends at once with the error.
    let stream = client.send(&sluice_proto::api::stream_fetch::StreamFetchRequest {
        topic: unknown.clone(),
        partition: PartitionId(0),
        start_offset: Offset(0),
        isolation: Isolation::ReadCommitted,
        max_bytes_per_push: 1 << 20,
        credit_bytes: 1 << 20,
    });
    let frame = client.next_frame();
    assert_eq!(frame.header.correlation_id, stream);
    let push = sluice_proto::api::stream_fetch::StreamFetchPush::decode(ApiVersion(0), &frame.body)
        .unwrap();
    assert_eq!(
        push,
        sluice_proto::api::stream_fetch::StreamFetchPush::End {
            error_code: ErrorCode::UnknownTopicOrPartition,
            next_offset: Offset(0)
        }
    );
    // A long-poll on an unknown partition answers at once instead of waiting.
    let (header, _) = client.fetch(&unknown, 0, Offset(0), (10_000, 1), Isolation::ReadCommitted);
    assert_eq!(header.error_code, ErrorCode::UnknownTopicOrPartition);
    // A reader ahead of the partition's leader epoch is told so.
    let metadata = cluster.sc.admin().metadata(Some(vec![topic.clone()])).unwrap();
    let current = metadata.topics[0].partitions[0].leader_epoch;
    for (epoch, expected) in [
        (current, ErrorCode::None),
        (sluice_proto::ids::LeaderEpoch(current.get() + 5), ErrorCode::UnknownLeaderEpoch),
    ] {
        let request = sluice_proto::api::fetch::FetchRequest {
            isolation: Isolation::ReadCommitted,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: vec![sluice_proto::api::fetch::FetchTopic {
                name: topic.clone(),
                partitions: vec![sluice_proto::api::fetch::FetchPartition {
                    partition: PartitionId(0),
                    fetch_offset: Offset(0),
                    partition_max_bytes: 1 << 20,
                    current_leader_epoch: Some(epoch),
                }],
            }],
        };
        let frame = client.call(&request);
        let response = FetchResponse::decode(ApiVersion(0), &frame.body).unwrap();
        assert_eq!(response.topics[0].partitions[0].header.error_code, expected);
    }
    assert_serves(&cluster, &topic, 0);
    assert_serves(&cluster, &topic, 1);
}

#[test]
fn oversized_and_corrupt_batches_are_refused_per_partition() {
    let cluster = Cluster::start(CORES);
    let spec = TopicSpec { batch_bytes_max: 16 * 1024, ..TopicSpec::computed(2, 1) };
    let topic = cluster.create_topic_with("limited", spec);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    let big = vec![7u8; 20 * 1024];
    let outcome = client.produce(&topic, 0, &batch(&[&big], 1), Acks::Leader);
    assert_eq!(outcome.error_code, ErrorCode::MessageTooLarge);
    let mut corrupt = batch(&[b"payload"], 1);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let outcome = client.produce(&topic, 1, &corrupt, Acks::Leader);
    assert_eq!(outcome.error_code, ErrorCode::CorruptMessage);
    let truncated = &batch(&[b"payload"], 1)[..30];
    let outcome = client.produce(&topic, 1, truncated, Acks::Leader);
    assert_eq!(outcome.error_code, ErrorCode::CorruptMessage);
    // Nothing was appended, and the same connection goes on.
    let listed = client.list_offset(&topic, 0, OffsetSpec::Latest, Isolation::ReadUncommitted);
    assert_eq!(listed.offset, Some(Offset(0)));
    let outcome = client.produce(&topic, 0, &batch(&[b"small"], 1), Acks::Leader);
    assert_eq!((outcome.error_code, outcome.base_offset), (ErrorCode::None, Some(Offset(0))));
    assert_serves(&cluster, &topic, 1);
}

fn read_response(stream: &mut TcpStream) -> Option<(u16, i32, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).ok()?;
    let mut rest = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut rest).ok()?;
    let key = u16::from_be_bytes([rest[0], rest[1]]);
    let correlation = i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    Some((key, correlation, rest.split_off(8)))
}

fn closed(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn malformed_frames_get_errors_and_harm_nothing_else() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("sturdy", 2);

    // Unknown API key: an error response, and the connection goes on.
    let mut stream = TcpStream::connect(cluster.spu.public_address).unwrap();
    stream.write_all(&[0, 0, 0, 9, 0x7e, 0x7e, 0, 0, 0, 0, 0, 42, 1]).unwrap();
    let (key, correlation, body) = read_response(&mut stream).expect("an error response");
    assert_eq!((key, correlation), (ApiKey::ApiVersions.number(), 42));
    let response = ApiVersionsResponse::decode(ApiVersion(0), &body).unwrap();
    assert_eq!(response.error_code, ErrorCode::UnknownApiKey);
    // Unsupported version of a known key: same.
    stream.write_all(&[0, 0, 0, 8, 0, 1, 0, 9, 0, 0, 0, 43]).unwrap();
    let (_, correlation, body) = read_response(&mut stream).expect("an error response");
    assert_eq!(correlation, 43);
    let response = ApiVersionsResponse::decode(ApiVersion(0), &body).unwrap();
    assert_eq!(response.error_code, ErrorCode::UnsupportedVersion);
    // A produce body that does not decode: the connection is closed.
    stream.write_all(&[0, 0, 0, 11, 0, 1, 0, 0, 0, 0, 0, 44, 9, 9, 9]).unwrap();
    assert!(closed(&mut stream), "undecodable body closes the connection");

    // A frame over the maximum: FrameTooLarge, then closed, before any body is read.
    let mut stream = TcpStream::connect(cluster.spu.public_address).unwrap();
    stream.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 1, 0, 0, 0, 0, 0, 45]).unwrap();
    let (_, correlation, body) = read_response(&mut stream).expect("an error response");
    assert_eq!(correlation, 45);
    let response = ApiVersionsResponse::decode(ApiVersion(0), &body).unwrap();
    assert_eq!(response.error_code, ErrorCode::FrameTooLarge);
    assert!(closed(&mut stream));
    // A frame shorter than its header.
    let mut stream = TcpStream::connect(cluster.spu.public_address).unwrap();
    stream.write_all(&[0, 0, 0, 3, 1, 2, 3]).unwrap();
    let (_, _, body) = read_response(&mut stream).expect("an error response");
    let response = ApiVersionsResponse::decode(ApiVersion(0), &body).unwrap();
    assert_eq!(response.error_code, ErrorCode::InvalidRequest);
    assert!(closed(&mut stream));

    assert_serves(&cluster, &topic, 0);
    assert_serves(&cluster, &topic, 1);
}

#[test]
fn clients_disconnecting_mid_request_harm_nothing() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("abrupt", 2);
    for partition in 0..2u32 {
        // Half a frame, then gone.
        let mut frame = Vec::new();
        let request = sluice_proto::api::produce::ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 1000,
            topics: vec![sluice_proto::api::produce::ProduceTopic {
                name: topic.clone(),
                partitions: vec![sluice_proto::api::produce::ProducePartition {
                    partition: PartitionId(partition),
                    records: batch(&[&value_for(partition, 0, 4096)], 1),
                }],
            }],
        };
        sluice_proto::frame::encode_request(
            &mut frame,
            ApiVersion(0),
            sluice_proto::ids::CorrelationId(1),
            &request,
        )
        .unwrap();
        let mut stream = TcpStream::connect(cluster.spu.public_address).unwrap();
        stream.write_all(&frame[..frame.len() / 2]).unwrap();
        drop(stream);
        // A whole request whose answer nobody reads.
        let mut stream = TcpStream::connect(cluster.spu.public_address).unwrap();
        stream.write_all(&frame).unwrap();
        drop(stream);
        // A long-poll abandoned while waiting.
        let mut waiting = SpuClient::connect(cluster.spu.public_address);
        let fetch = sluice_proto::api::fetch::FetchRequest {
            isolation: Isolation::ReadCommitted,
            max_wait_ms: 10_000,
            min_bytes: 1 << 20,
            max_bytes: 1 << 20,
            topics: vec![sluice_proto::api::fetch::FetchTopic {
                name: topic.clone(),
                partitions: vec![sluice_proto::api::fetch::FetchPartition {
                    partition: PartitionId(partition),
                    fetch_offset: Offset(0),
                    partition_max_bytes: 1 << 20,
                    current_leader_epoch: None,
                }],
            }],
        };
        waiting.send(&fetch);
        drop(waiting);
    }
    for partition in 0..2u32 {
        // The unanswered produce either landed whole (offset 0) or not at all.
        let mut client = SpuClient::connect(cluster.spu.public_address);
        let end = wait_for("the abandoned append to settle", || {
            let listed =
                client.list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted);
            let uncommitted = client.list_offset(
                &topic,
                partition,
                OffsetSpec::Latest,
                Isolation::ReadUncommitted,
            );
            (listed.offset == uncommitted.offset).then_some(listed.offset)
        });
        assert!(matches!(end, Some(Offset(0)) | Some(Offset(1))), "{end:?}");
        if end == Some(Offset(1)) {
            let (_, records) =
                client.fetch(&topic, partition, Offset(0), (0, 0), Isolation::ReadCommitted);
            assert_eq!(record_values(&records), vec![(Offset(0), value_for(partition, 0, 4096))]);
        }
        assert_serves(&cluster, &topic, partition);
    }
}

/// A follower fetch of one partition from offset 0, as SPU 2 following in `leader_epoch`.
fn follower_fetch(
    topic: &TopicName,
    partition: u32,
    leader_epoch: Option<LeaderEpoch>,
) -> FollowerFetchRequest {
    follower_fetch_request(SpuId(2), topic, partition, Offset(0), leader_epoch, (0, 0))
}

#[test]
fn private_port_serves_only_replication_and_refuses_the_rest_clearly() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("replicated", 1);
    // The private port of the core owning the partition: a core serves only its own replicas.
    let core = cluster.leader_cores(&topic)[0];
    let mut private = SpuClient::connect(cluster.spu.core_private_addresses[core.index()]);
    // A client API on the private port: `UnknownApiKey`, and the connection stays usable.
    let records = batch(&[b"not here"], 1);
    let produce = ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 1_000,
        topics: vec![ProduceTopic {
            name: topic.clone(),
            partitions: vec![ProducePartition {
                partition: PartitionId(0),
                records: records.as_slice(),
            }],
        }],
    };
    let frame = private.call(&produce);
    let response = ApiVersionsResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!(response.error_code, ErrorCode::UnknownApiKey);
    // A partition this SPU does not host: `NotLeader` (the follower asks again later).
    let frame = private.call(&follower_fetch(&topic, 7, Some(LeaderEpoch(1))));
    let response = FetchResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!(response.topics[0].partitions[0].header.error_code, ErrorCode::NotLeader);
    // A follower that names no epoch is behind the leader's: `FencedLeaderEpoch`.
    let frame = private.call(&follower_fetch(&topic, 0, None));
    let response = FetchResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!(response.topics[0].partitions[0].header.error_code, ErrorCode::FencedLeaderEpoch);
    // One ahead of it (the leader has not seen the newer spec yet): `UnknownLeaderEpoch`.
    let frame = private.call(&follower_fetch(&topic, 0, Some(LeaderEpoch(1_000))));
    let response = FetchResponse::decode(ApiVersion(0), &frame.body).unwrap();
    assert_eq!(response.topics[0].partitions[0].header.error_code, ErrorCode::UnknownLeaderEpoch);
    // Nothing of it harmed the partition.
    assert_serves(&cluster, &topic, 0);
}

#[test]
fn restart_after_kill_keeps_every_acknowledged_record() {
    let mut cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("durable", 2);
    let mut acknowledged: Vec<Vec<(Offset, Vec<u8>)>> = vec![Vec::new(); 2];
    let mut client = SpuClient::connect(cluster.spu.public_address);
    for index in 0..30 {
        for partition in 0..2u32 {
            let values: Vec<Vec<u8>> =
                (0..3).map(|record| value_for(partition, index * 3 + record, 500)).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let outcome = client.produce(&topic, partition, &batch(&refs, 1), Acks::Leader);
            assert_eq!(outcome.error_code, ErrorCode::None);
            let base = outcome.base_offset.unwrap();
            for (record, value) in values.into_iter().enumerate() {
                acknowledged[partition as usize].push((Offset(base.get() + record as i64), value));
            }
        }
    }
    // Unacknowledged appends in flight at the kill may or may not survive; acked ones must.
    for partition in 0..2u32 {
        client.send(&sluice_proto::api::produce::ProduceRequest {
            acks: Acks::None,
            timeout_ms: 1000,
            topics: vec![sluice_proto::api::produce::ProduceTopic {
                name: topic.clone(),
                partitions: vec![sluice_proto::api::produce::ProducePartition {
                    partition: PartitionId(partition),
                    records: batch(&[b"maybe"], 1),
                }],
            }],
        });
    }
    cluster.spu.restart();
    cluster.wait_served(&topic, 2);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    for partition in 0..2u32 {
        let expected = &acknowledged[partition as usize];
        let fetched = client.fetch_values(&topic, partition, Offset(0), expected.len());
        assert_eq!(&fetched[..expected.len()], &expected[..], "partition {partition}");
        let end =
            client.list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted);
        let outcome = client.produce(&topic, partition, &batch(&[b"after"], 1), Acks::Leader);
        assert_eq!(outcome.base_offset, end.offset, "appends continue at the recovered end");
    }
}

#[test]
fn sigterm_stops_cleanly_and_the_data_stays() {
    let mut cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("graceful", 2);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    for partition in 0..2u32 {
        // Acks none: no response at all.
        client.send(&sluice_proto::api::produce::ProduceRequest {
            acks: Acks::None,
            timeout_ms: 1000,
            topics: vec![sluice_proto::api::produce::ProduceTopic {
                name: topic.clone(),
                partitions: vec![sluice_proto::api::produce::ProducePartition {
                    partition: PartitionId(partition),
                    records: batch(&[b"kept"], 1),
                }],
            }],
        });
    }
    for partition in 0..2u32 {
        // Requests of a connection run in order: this answer comes after the append ran.
        let listed =
            client.list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadUncommitted);
        assert_eq!(listed.error_code, ErrorCode::None);
    }
    drop(client);
    // Acks none: nothing awaited; a clean stop must still make the appends durable.
    assert!(cluster.spu.terminate().status.success(), "sluice-spu exits 0 on SIGTERM");
    cluster.spu.restart();
    cluster.wait_served(&topic, 2);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    for partition in 0..2u32 {
        let fetched = client.fetch_values(&topic, partition, Offset(0), 1);
        assert_eq!(fetched, vec![(Offset(0), b"kept".to_vec())]);
    }
}
