//! The data path of a real `sluice-spu` (2 cores) registered with an SC: produce and fetch
//! byte-identical across cores and partitions, list offsets, long-poll fetch, stream fetch,
//! and the shared port forwarding to the owning core.

mod process_common;

use std::time::{Duration, Instant};

use process_common::{
    batch, metric_sum, record_values, scrape, value_for, wait_for, Cluster, SpuClient,
};
use sluice_proto::api::fetch::Isolation;
use sluice_proto::api::list_offsets::OffsetSpec;
use sluice_proto::api::produce::Acks;
use sluice_proto::api::stream_fetch::{
    StreamFetchCancel, StreamFetchCredit, StreamFetchPush, StreamFetchRequest,
};
use sluice_proto::api::{ApiKey, ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{CoreId, Offset, PartitionId, TimestampMs};

const CORES: u16 = 2;

#[test]
fn produce_and_fetch_back_byte_identical_on_every_core_and_partition() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("events", 4);
    let cores = cluster.leader_cores(&topic);
    assert_eq!(cores.len(), 4);
    assert!(
        cores.contains(&CoreId(0)) && cores.contains(&CoreId(1)),
        "partitions spread over both cores: {cores:?}"
    );
    let mut produced: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
    for round in 0..5 {
        for (partition, core) in cores.iter().enumerate() {
            // Shard-aware path: the owning core's own port.
            let mut client = cluster.core_client(*core);
            let values: Vec<Vec<u8>> = (0..20)
                .map(|index| value_for(partition as u32, round * 20 + index, 100 + index * 13))
                .collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let outcome =
                client.produce(&topic, partition as u32, &batch(&refs, 1_000), Acks::Leader);
            assert_eq!(outcome.error_code, ErrorCode::None);
            assert_eq!(outcome.base_offset, Some(Offset((round * 20) as i64)));
            produced[partition].extend(values);
        }
    }
    for (partition, core) in cores.iter().enumerate() {
        let mut client = cluster.core_client(*core);
        let fetched = client.fetch_values(&topic, partition as u32, Offset(0), 100);
        assert_eq!(fetched.len(), 100);
        for (index, (offset, value)) in fetched.iter().enumerate() {
            assert_eq!(*offset, Offset(index as i64));
            assert_eq!(value, &produced[partition][index], "partition {partition} record {index}");
        }
        let (header, records) =
            client.fetch(&topic, partition as u32, Offset(100), (0, 0), Isolation::ReadCommitted);
        assert_eq!(header.error_code, ErrorCode::None);
        assert!(records.is_empty());
        assert_eq!(header.high_watermark, Offset(100));
        assert_eq!(header.log_end_offset, Offset(100));
        let (header, _) =
            client.fetch(&topic, partition as u32, Offset(101), (0, 0), Isolation::ReadCommitted);
        assert_eq!(header.error_code, ErrorCode::OffsetOutOfRange);
    }
}

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("offsets", 2);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    for partition in 0..2 {
        let earliest =
            client.list_offset(&topic, partition, OffsetSpec::Earliest, Isolation::ReadCommitted);
        assert_eq!((earliest.error_code, earliest.offset), (ErrorCode::None, Some(Offset(0))));
        for (index, timestamp) in [1_000, 2_000, 3_000].into_iter().enumerate() {
            let value = value_for(partition, index, 10);
            let outcome =
                client.produce(&topic, partition, &batch(&[&value, &value], timestamp), Acks::All);
            assert_eq!(outcome.base_offset, Some(Offset(index as i64 * 2)));
        }
        let latest =
            client.list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted);
        assert_eq!(latest.offset, Some(Offset(6)));
        let uncommitted =
            client.list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadUncommitted);
        assert_eq!(uncommitted.offset, Some(Offset(6)));
        let spec = OffsetSpec::ByTimestamp(TimestampMs(1_500));
        let by_time = client.list_offset(&topic, partition, spec, Isolation::ReadCommitted);
        assert_eq!(by_time.offset, Some(Offset(2)));
        let spec = OffsetSpec::ByTimestamp(TimestampMs(9_000));
        let none = client.list_offset(&topic, partition, spec, Isolation::ReadCommitted);
        assert_eq!((none.error_code, none.offset), (ErrorCode::None, None));
    }
}

#[test]
fn long_poll_fetch_is_woken_by_a_produce_and_times_out_empty() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("longpoll", 2);
    for partition in 0..2u32 {
        // Through the shared port: one partition is on the other core (forwarded wait).
        let mut consumer = SpuClient::connect(cluster.spu.public_address);
        let empty_started = Instant::now();
        let (header, records) =
            consumer.fetch(&topic, partition, Offset(0), (300, 1), Isolation::ReadCommitted);
        assert_eq!(header.error_code, ErrorCode::None);
        assert!(records.is_empty());
        assert!(empty_started.elapsed() >= Duration::from_millis(250), "the fetch waited");

        let request = sluice_proto::api::fetch::FetchRequest {
            isolation: Isolation::ReadCommitted,
            max_wait_ms: 15_000,
            min_bytes: 1,
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
        consumer.send(&request);
        assert!(
            consumer.next_frame_within(Duration::from_millis(200)).is_none(),
            "no answer before any record exists"
        );
        let mut producer = SpuClient::connect(cluster.spu.public_address);
        let value = value_for(partition, 0, 64);
        let outcome = producer.produce(&topic, partition, &batch(&[&value], 5), Acks::Leader);
        assert_eq!(outcome.error_code, ErrorCode::None);
        let frame = consumer.next_frame();
        let response =
            sluice_proto::api::fetch::FetchResponse::decode(ApiVersion(0), &frame.body).unwrap();
        let records = response.topics[0].partitions[0].records;
        assert_eq!(record_values(records), vec![(Offset(0), value)]);
    }
}

fn decode_push(frame: &sluice_proto::frame::Frame) -> (ErrorCode, Offset, Vec<(Offset, Vec<u8>)>) {
    assert_eq!(frame.header.api_key, ApiKey::StreamFetch);
    match StreamFetchPush::decode(ApiVersion(0), &frame.body).expect("push") {
        StreamFetchPush::Records(partition) => {
            (partition.header.error_code, Offset(-1), record_values(partition.records))
        }
        StreamFetchPush::End { error_code, next_offset } => (error_code, next_offset, Vec::new()),
    }
}

#[test]
fn stream_fetch_tails_a_producer_with_credit_and_cancel() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("tail", 2);
    for partition in 0..2u32 {
        let mut consumer = SpuClient::connect(cluster.spu.public_address);
        let open = StreamFetchRequest {
            topic: topic.clone(),
            partition: PartitionId(partition),
            start_offset: Offset(0),
            isolation: Isolation::ReadCommitted,
            max_bytes_per_push: 1 << 20,
            credit_bytes: 1,
        };
        let stream = consumer.send(&open);
        let mut producer = SpuClient::connect(cluster.spu.public_address);
        let values: Vec<Vec<u8>> =
            (0..10).map(|index| value_for(partition, index, 50 + index)).collect();
        let expected: Vec<(Offset, Vec<u8>)> = values
            .iter()
            .enumerate()
            .map(|(index, value)| (Offset(index as i64), value.clone()))
            .collect();
        let mut received: Vec<(Offset, Vec<u8>)> = Vec::new();
        producer.produce(&topic, partition, &batch(&[&values[0]], 7), Acks::Leader);
        for (index, expected_record) in expected.iter().enumerate() {
            let frame = consumer.next_frame();
            assert_eq!(frame.header.correlation_id, stream);
            let (code, _, records) = decode_push(&frame);
            assert_eq!(code, ErrorCode::None);
            assert_eq!(records, vec![expected_record.clone()], "one batch per push");
            received.extend(records);
            if let Some(value) = values.get(index + 1) {
                producer.produce(&topic, partition, &batch(&[value], 7), Acks::Leader);
                // The next record exists, but the credit (1 byte) is spent: no push until more.
                assert!(
                    consumer.next_frame_within(Duration::from_millis(100)).is_none(),
                    "no push without credit"
                );
            }
            consumer.send(&StreamFetchCredit { stream, credit_bytes: 1 });
        }
        assert_eq!(received, expected);
        consumer.send(&StreamFetchCancel { stream });
        let end = wait_for("the end push", || {
            let frame = consumer.next_frame_within(Duration::from_millis(100))?;
            let (code, next, records) = decode_push(&frame);
            records.is_empty().then_some((code, next))
        });
        assert_eq!(end, (ErrorCode::None, Offset(10)));
    }
}

#[test]
fn shared_port_forwards_to_the_owning_core() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("shared", 4);
    let cores = cluster.leader_cores(&topic);
    // Every core's port, and the shared one, accept requests for every partition.
    let mut clients: Vec<SpuClient> =
        cluster.spu.core_addresses.iter().map(|address| SpuClient::connect(*address)).collect();
    clients.push(SpuClient::connect(cluster.spu.public_address));
    let mut next = [0i64; 4];
    for (index, client) in clients.iter_mut().enumerate() {
        for partition in 0..4u32 {
            let value = value_for(partition, index, 200);
            let outcome = client.produce(&topic, partition, &batch(&[&value], 9), Acks::Leader);
            assert_eq!(outcome.error_code, ErrorCode::None, "via client {index}");
            assert_eq!(outcome.base_offset, Some(Offset(next[partition as usize])));
            next[partition as usize] += 1;
        }
    }
    for (partition, core) in cores.iter().enumerate() {
        let other = CoreId(1 - core.get());
        let mut remote = cluster.core_client(other);
        let mut local = cluster.core_client(*core);
        let (remote_header, remote_records) =
            remote.fetch(&topic, partition as u32, Offset(0), (0, 0), Isolation::ReadCommitted);
        let (local_header, local_records) =
            local.fetch(&topic, partition as u32, Offset(0), (0, 0), Isolation::ReadCommitted);
        assert_eq!(remote_header, local_header);
        assert_eq!(remote_records, local_records, "forwarded fetch is byte-identical");
        assert_eq!(record_values(&local_records).len(), clients.len());
    }
}

/// Fetches through both ports from the tail cache (the default: the newest writes are still in
/// memory), and without it with direct reads, sendfile (`--direct-reads false`) and copying
/// (`--zero-copy false`): the same bytes every way, and the metrics say which path moved them.
#[test]
fn zero_copy_switch_serves_identical_bytes_and_counts_them() {
    let mut fetched = Vec::new();
    let direct = "sluice_spu_fetch_direct_bytes_total";
    let sendfile = "sluice_spu_fetch_zero_copy_bytes_total";
    let copied = "sluice_spu_fetch_copied_bytes_total";
    let memory = "sluice_spu_fetch_memory_bytes_total";
    let no_cache = "--tail-cache-bytes=0";
    for (flags, name, others) in [
        (&[no_cache][..], direct, [sendfile, copied, memory]),
        (&[no_cache, "--direct-reads=false"][..], sendfile, [direct, copied, memory]),
        (&[no_cache, "--zero-copy=false"][..], copied, [direct, sendfile, memory]),
        (&[][..], memory, [direct, sendfile, copied]),
    ] {
        let cluster = Cluster::start_with(CORES, flags);
        let topic = cluster.create_topic("copying", 2);
        let mut client = SpuClient::connect(cluster.spu.public_address);
        let mut all = Vec::new();
        for partition in 0..2u32 {
            let values: Vec<Vec<u8>> =
                (0..50).map(|index| value_for(partition, index, 1000)).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            assert!(client
                .produce(&topic, partition, &batch(&refs, 3), Acks::Leader)
                .error_code
                .is_ok());
            for core in 0..CORES {
                let mut direct = cluster.core_client(CoreId(core));
                let (header, records) =
                    direct.fetch(&topic, partition, Offset(0), (0, 0), Isolation::ReadCommitted);
                assert_eq!(header.error_code, ErrorCode::None);
                assert_eq!(record_values(&records).len(), 50);
                all.push(records);
            }
        }
        // Counters move right after the send completes: poll until they show both partitions.
        let text = wait_for(&format!("{name} to count both local fetches"), || {
            let text = scrape(cluster.spu.metrics_address);
            (metric_sum(&text, name) >= 2 * 50 * 1000).then_some(text)
        });
        // Sendfile copies one byte per wait for a full socket buffer; the others never
        // sendfile, and never mix.
        let waits = metric_sum(&text, "sluice_spu_socket_writable_waits_total");
        for other in others {
            let allowed = if name == sendfile && other == copied { waits } else { 0 };
            assert!(metric_sum(&text, other) <= allowed, "{other} with {flags:?}");
        }
        assert!(metric_sum(&text, "sluice_spu_records_produced_total") >= 100);
        assert!(metric_sum(&text, "sluice_spu_requests_forwarded_total") >= 2);
        fetched.push(all);
    }
    assert_eq!(fetched[0], fetched[1], "direct reads and sendfile send the same bytes");
    assert_eq!(fetched[0], fetched[2], "direct reads and copying send the same bytes");
    assert_eq!(fetched[0], fetched[3], "direct reads and the tail cache send the same bytes");
}

/// Rough cost of the shared-port forward path against the owner's own port (not a benchmark
/// assertion: it prints figures). Run against a release build:
/// `cargo build --release -p sluice-spu && SLUICE_SPU_BIN=target/release/sluice-spu \
///  cargo test -p sluice-spu --test process_data_path measure_forward -- --ignored --nocapture`
#[test]
#[ignore = "measurement; prints figures"]
fn measure_forward_cost_against_the_owner_port() {
    let cluster = Cluster::start(CORES);
    let spec = sluice_proto::object::TopicSpec {
        durability: sluice_proto::object::topic::Durability::Relaxed {
            flush_bytes_max: 64 << 20,
            flush_interval_ms: 1000,
        },
        ..sluice_proto::object::TopicSpec::computed(2, 1)
    };
    let topic = cluster.create_topic_with("measure", spec);
    let cores = cluster.leader_cores(&topic);
    let values: Vec<Vec<u8>> = (0..100).map(|index| value_for(0, index, 1024)).collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let records = batch(&refs, 1);
    let batches = 500;
    let megabytes = (records.len() * batches) as f64 / 1e6;
    for (label, partition, port) in [
        ("owner port", 0u32, cluster.spu.core_addresses[cores[0].index()]),
        ("other core's port (forwarded)", 1u32, cluster.spu.core_addresses[1 - cores[1].index()]),
    ] {
        let mut client = SpuClient::connect(port);
        let started = Instant::now();
        for _ in 0..batches {
            let outcome = client.produce(&topic, partition, &records, Acks::Leader);
            assert_eq!(outcome.error_code, ErrorCode::None);
        }
        let produce_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut offset = Offset(0);
        let mut bytes = 0usize;
        while offset < Offset((batches * 100) as i64) {
            let (header, fetched) =
                client.fetch(&topic, partition, offset, (0, 0), Isolation::ReadUncommitted);
            assert_eq!(header.error_code, ErrorCode::None);
            bytes += fetched.len();
            let last = sluice_proto::record::Batches::new(&fetched, 64 << 20).last().unwrap();
            offset = last.unwrap().header().next_offset();
        }
        let fetch_seconds = started.elapsed().as_secs_f64();
        println!(
            "{label}: produce {:.0} MB/s, fetch {:.0} MB/s ({} MB each way)",
            megabytes / produce_seconds,
            bytes as f64 / 1e6 / fetch_seconds,
            megabytes as u64
        );
    }
}

#[test]
fn many_concurrent_clients_on_every_port() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("crowd", 4);
    let mut ports = cluster.spu.core_addresses.clone();
    ports.push(cluster.spu.public_address);
    let clients = 200usize;
    let batches = 10usize;
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (topic, address) = (topic.clone(), ports[client % ports.len()]);
            std::thread::spawn(move || {
                let mut connection = SpuClient::connect(address);
                let partition = (client % 4) as u32;
                let mut offsets = Vec::new();
                for index in 0..batches {
                    let value = format!("client {client} batch {index}").into_bytes();
                    let outcome =
                        connection.produce(&topic, partition, &batch(&[&value], 1), Acks::Leader);
                    assert_eq!(outcome.error_code, ErrorCode::None);
                    offsets.push((outcome.base_offset.unwrap(), value));
                }
                (partition, offsets)
            })
        })
        .collect();
    let mut per_partition: Vec<Vec<(Offset, Vec<u8>)>> = vec![Vec::new(); 4];
    for thread in threads {
        let (partition, offsets) = thread.join().expect("client thread");
        per_partition[partition as usize].extend(offsets);
    }
    let mut reader = SpuClient::connect(cluster.spu.public_address);
    for (partition, mut acknowledged) in per_partition.into_iter().enumerate() {
        acknowledged.sort();
        let expected_count = clients / 4 * batches;
        assert_eq!(acknowledged.len(), expected_count);
        let fetched = reader.fetch_values(&topic, partition as u32, Offset(0), expected_count);
        assert_eq!(fetched, acknowledged, "partition {partition}: every ack is where it says");
    }
}

#[test]
fn api_versions_lists_the_public_apis() {
    let cluster = Cluster::start(1);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    let frame = client.call(&sluice_proto::api::api_versions::ApiVersionsRequest);
    let response =
        sluice_proto::api::api_versions::ApiVersionsResponse::decode(ApiVersion(0), &frame.body)
            .unwrap();
    assert_eq!(response.error_code, ErrorCode::None);
    for key in [ApiKey::Produce, ApiKey::Fetch, ApiKey::ListOffsets, ApiKey::StreamFetch] {
        assert_eq!(response.versions(key), Some(key.versions()), "{key}");
    }
    assert_eq!(response.versions(ApiKey::CreateTopic), None);
    assert_eq!(cluster.spu.core_addresses.len(), 1);
}

#[test]
fn pipelined_produce_requests_are_appended_and_answered_in_order() {
    use sluice_proto::api::produce::{
        ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic,
    };
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("pipelined", 2);
    let cores = cluster.leader_cores(&topic);
    let mut client = cluster.core_client(cores[0]);
    // 40 requests of 10 records each, sent before reading any answer, with a list-offsets
    // request in the middle: answers come back in request order, offsets follow send order.
    let requests = 40usize;
    let mut sent = Vec::new();
    for index in 0..requests {
        let values: Vec<Vec<u8>> =
            (0..10).map(|record| value_for(0, index * 10 + record, 200)).collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let records = batch(&refs, 1_000);
        let request = ProduceRequest {
            acks: Acks::All,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: topic.clone(),
                partitions: vec![ProducePartition {
                    partition: PartitionId(0),
                    records: &records[..],
                }],
            }],
        };
        sent.push((client.send(&request), true));
        if index == requests / 2 {
            let list = sluice_proto::api::list_offsets::ListOffsetsRequest {
                isolation: Isolation::ReadUncommitted,
                topics: vec![sluice_proto::api::list_offsets::ListOffsetsTopic {
                    name: topic.clone(),
                    partitions: vec![sluice_proto::api::list_offsets::ListOffsetsPartition {
                        partition: PartitionId(0),
                        spec: OffsetSpec::Latest,
                    }],
                }],
            };
            sent.push((client.send(&list), false));
        }
    }
    let mut next_offset = 0i64;
    for (correlation_id, is_produce) in sent {
        let frame = client.next_frame();
        assert_eq!(frame.header.correlation_id, correlation_id, "answers in request order");
        if !is_produce {
            continue;
        }
        let response = ProduceResponse::decode(ApiVersion(0), &frame.body).expect("produce");
        let answer = &response.topics[0].partitions[0];
        assert_eq!(answer.error_code, ErrorCode::None);
        assert_eq!(answer.base_offset, Some(Offset(next_offset)), "appended in request order");
        next_offset += 10;
    }
    let fetched = client.fetch_values(&topic, 0, Offset(0), requests * 10);
    for (index, (offset, value)) in fetched.iter().enumerate() {
        assert_eq!(*offset, Offset(index as i64));
        assert_eq!(value, &value_for(0, index, 200));
    }
}

/// A batch of `count` values of `partition` from `first` on, from an idempotent producer.
fn idempotent_batch(
    producer: i64,
    epoch: i16,
    sequence: i32,
    first: usize,
    count: usize,
) -> Vec<u8> {
    let mut builder = sluice_proto::record::BatchBuilder::new();
    builder.set_producer(sluice_proto::record::ProducerState {
        producer_id: sluice_proto::ids::ProducerId(producer),
        producer_epoch: epoch,
        base_sequence: sequence,
    });
    for index in first..first + count {
        let value = value_for(0, index, 64);
        builder.push_record(TimestampMs(1_000), None, Some(&value), &[]).expect("record");
    }
    builder.finish().to_vec()
}

#[test]
fn idempotent_batches_are_appended_once_and_in_sequence() {
    let mut cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("idempotent", 1);
    let core = cluster.leader_cores(&topic)[0];
    let mut client = cluster.core_client(core);
    let produce = |client: &mut process_common::SpuClient, records: &[u8]| {
        let answer = client.produce(&topic, 0, records, Acks::All);
        (answer.error_code, answer.base_offset)
    };
    // Producer 77, epoch 0: records 0..5 at sequence 0.
    let first = idempotent_batch(77, 0, 0, 0, 5);
    assert_eq!(produce(&mut client, &first), (ErrorCode::None, Some(Offset(0))));
    // The same batch again (a retry after a lost answer): acknowledged with the offset it got,
    // not written again.
    assert_eq!(produce(&mut client, &first), (ErrorCode::DuplicateSequence, Some(Offset(0))));
    // A batch after a gap (sequence 10, 5 expected) cannot overtake the missing one.
    let third = idempotent_batch(77, 0, 10, 10, 5);
    assert_eq!(produce(&mut client, &third), (ErrorCode::OutOfOrderSequence, None));
    assert_eq!(
        produce(&mut client, &idempotent_batch(77, 0, 5, 5, 5)),
        (ErrorCode::None, Some(Offset(5)))
    );
    assert_eq!(produce(&mut client, &third), (ErrorCode::None, Some(Offset(10))));
    // A producer the partition does not know must start at sequence 0.
    assert_eq!(
        produce(&mut client, &idempotent_batch(78, 0, 3, 100, 1)),
        (ErrorCode::UnknownProducerId, None)
    );
    // A new epoch starts at 0; after it the old epoch is unknown.
    assert_eq!(
        produce(&mut client, &idempotent_batch(77, 1, 0, 15, 2)),
        (ErrorCode::None, Some(Offset(15)))
    );
    assert_eq!(
        produce(&mut client, &idempotent_batch(77, 0, 15, 100, 1)),
        (ErrorCode::UnknownProducerId, None)
    );
    // One request with a retried batch and a new one: only the new one is written; they lie
    // one after another in the log, so the request's base offset is the retried batch's.
    let mut both = idempotent_batch(77, 1, 0, 15, 2);
    both.extend_from_slice(&idempotent_batch(77, 1, 2, 17, 3));
    assert_eq!(produce(&mut client, &both), (ErrorCode::None, Some(Offset(15))));
    // Batches without a producer id are not checked.
    let plain = batch(&[&value_for(0, 20, 64)], 1_000);
    assert_eq!(produce(&mut client, &plain), (ErrorCode::None, Some(Offset(20))));
    let fetched = client.fetch_values(&topic, 0, Offset(0), 21);
    let values: Vec<Vec<u8>> = fetched.iter().map(|(_, value)| value.clone()).collect();
    let expected: Vec<Vec<u8>> = (0..21).map(|index| value_for(0, index, 64)).collect();
    assert!(values == expected, "each record once, in sequence order: {} records", values.len());
    // One duplicate-only request; one gap and two unknown producers refused.
    let text = scrape(cluster.spu.metrics_address);
    assert_eq!(metric_sum(&text, "sluice_spu_produce_duplicates_total"), 1, "{text}");
    assert_eq!(metric_sum(&text, "sluice_spu_produce_sequence_refusals_total"), 3, "{text}");
    // After a crash and restart the SPU rebuilds the producers from the newest batches: a
    // retry of the last batch is still a duplicate and the next sequence follows it.
    drop(client);
    cluster.spu.restart();
    cluster.wait_served(&topic, 1);
    let mut client = cluster.core_client(core);
    assert_eq!(
        produce(&mut client, &idempotent_batch(77, 1, 2, 17, 3)),
        (ErrorCode::DuplicateSequence, Some(Offset(17)))
    );
    assert_eq!(
        produce(&mut client, &idempotent_batch(77, 1, 6, 100, 1)),
        (ErrorCode::OutOfOrderSequence, None)
    );
    assert_eq!(
        produce(&mut client, &idempotent_batch(77, 1, 5, 21, 1)),
        (ErrorCode::None, Some(Offset(21)))
    );
}

/// Fraction of the pages of `path`'s first `length` bytes that are in the page cache.
fn cached_fraction(path: &std::path::Path, length: usize) -> f64 {
    let file = std::fs::File::open(path).expect("segment file");
    // SAFETY: a read-only private mapping of a file only this test reads; the SPU only appends
    // past `length` meanwhile, and the mapping is used for mincore only (never dereferenced).
    let map = unsafe { memmap2::MmapOptions::new().len(length).map(&file) }.expect("mmap");
    let pages = length.div_ceil(4096);
    let mut resident = vec![0u8; pages];
    // SAFETY: `map` is a live page-aligned mapping of `length` bytes; `resident` has one byte
    // per page of it.
    let result =
        unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, length, resident.as_mut_ptr()) };
    assert_eq!(result, 0, "mincore: {}", std::io::Error::last_os_error());
    resident.iter().filter(|page| *page & 1 == 1).count() as f64 / pages as f64
}

#[test]
fn sent_records_leave_the_page_cache_unless_kept() {
    // (direct reads, drop sent pages): direct reads never fill the page cache; sendfile does,
    // and the pages go once sent unless they are kept.
    for (direct, drop_pages) in [(true, false), (false, true), (false, false)] {
        let flags = [format!("--direct-reads={direct}"), format!("--drop-sent-pages={drop_pages}")];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let cluster = Cluster::start_with(CORES, &flags);
        let topic = cluster.create_topic("cached", 1);
        let mut client = SpuClient::connect(cluster.spu.public_address);
        let mut data_bytes = 0;
        for round in 0..10 {
            let values: Vec<Vec<u8>> =
                (0..200).map(|index| value_for(round, index, 1000)).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let records = batch(&refs, 3);
            data_bytes += records.len();
            let produced = client.produce(&topic, 0, &records, Acks::Leader);
            assert!(produced.error_code.is_ok(), "{produced:?}");
        }
        let segment = Cluster::spu_dir(&cluster.dir)
            .join(format!("spu-{}", process_common::SPU_ID))
            .join(format!("{}-0", topic.as_str()))
            .join(format!("{:020}.log", 0));
        // Written with O_DIRECT: not in the page cache until someone reads it.
        let before = cached_fraction(&segment, data_bytes);
        assert!(before < 0.1, "{before:.2} of the written log is cached before any read");
        // From the owning core's own port: the shared port forwards (and copies) the response.
        let mut client = cluster.core_client(cluster.leader_cores(&topic)[0]);
        let (header, records) =
            client.fetch(&topic, 0, Offset(0), (0, 0), Isolation::ReadUncommitted);
        assert_eq!(header.error_code, ErrorCode::None);
        assert_eq!(records.len(), data_bytes, "one response holds the whole log");
        if direct {
            let cached = cached_fraction(&segment, data_bytes);
            assert!(cached < 0.1, "direct reads left {cached:.2} of the log cached");
        } else if drop_pages {
            // The last response's pages go when the connection ends.
            drop(client);
            wait_for("the sent pages to leave the page cache", || {
                (cached_fraction(&segment, data_bytes) < 0.1).then_some(())
            });
        } else {
            let cached = cached_fraction(&segment, data_bytes);
            assert!(cached > 0.9, "--drop-sent-pages=false kept only {cached:.2} cached");
        }
    }
}
