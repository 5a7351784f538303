//! Test support of the SPU's process tests: a cluster of an SC and one real `sluice-spu`
//! (both started by `sluice_testkit::process`; the SC on this process's threads, see
//! [`EmbeddedSc`]), and a small raw-protocol client built on `sluice_proto`.

#![allow(dead_code)]

pub mod replicated;
pub mod tls;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_proto::api::fetch::{
    FetchPartition, FetchPartitionHeader, FetchRequest, FetchResponse, FetchTopic, Isolation,
};
use sluice_proto::api::list_offsets::{
    ListOffsetsPartition, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopic, OffsetSpec,
};
use sluice_proto::api::produce::{
    Acks, ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopic,
};
use sluice_proto::api::replication::{
    FollowerFetchPartition, FollowerFetchRequest, FollowerFetchTopic,
};
use sluice_proto::api::{ApiVersion, Decode, Request};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_request, Frame, FrameDecoder};
use sluice_proto::ids::{
    CoreId, CorrelationId, LeaderEpoch, Offset, PartitionId, SpuId, TimestampMs,
};
use sluice_proto::object::{SpuSpec, SpuType, TopicName, TopicSpec};
use sluice_proto::record::{BatchBuilder, Batches};
#[allow(unused_imports)] // each test binary uses some of them
pub use sluice_testkit::process::{
    metric_sum, scrape_metrics as scrape, wait_for, EmbeddedSc, ServerProcess, SpuProcess,
    CONDITION_TIMEOUT,
};
use sluice_tls::ClientStream;

/// Starts SPU `id` on `data_dir` against the SC at `sc` and waits until it is registered.
pub fn start_spu(
    id: i32,
    sc: SocketAddr,
    data_dir: &std::path::Path,
    cores: u16,
    extra: &[&str],
) -> SpuProcess {
    SpuProcess::builder(data_dir).id(id).sc(sc).cores(cores).flags(extra).start()
}

/// An SC plus one SPU (id 1) with `cores` cores, in a temporary directory.
pub struct Cluster {
    pub spu: SpuProcess,
    pub sc: EmbeddedSc,
    pub dir: tempfile::TempDir,
    pub cores: u16,
}

pub const SPU_ID: i32 = 1;

impl Cluster {
    pub fn start(cores: u16) -> Cluster {
        Self::start_with(cores, &[])
    }

    pub fn start_with(cores: u16, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sc = EmbeddedSc::start(&dir.path().join("sc"));
        let spec = SpuSpec { id: SpuId(SPU_ID), spu_type: SpuType::Custom, ..SpuSpec::default() };
        let registered = sc.admin().register_spu(spec).expect("register the SPU");
        assert!(registered.error_code.is_ok(), "{registered:?}");
        let spu = start_spu(SPU_ID, sc.private_address, &Self::spu_dir(&dir), cores, extra);
        Cluster { spu, sc, dir, cores }
    }

    pub fn spu_dir(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("spu")
    }

    /// Creates a topic of `partitions` partitions (replication 1) and waits until the SPU
    /// serves every partition.
    pub fn create_topic(&self, name: &str, partitions: u32) -> TopicName {
        self.create_topic_with(name, TopicSpec::computed(partitions, 1))
    }

    pub fn create_topic_with(&self, name: &str, spec: TopicSpec) -> TopicName {
        let topic = TopicName::new(name).expect("topic name");
        let partitions = match &spec.replicas {
            sluice_proto::object::topic::ReplicaSpec::Computed { partitions, .. } => *partitions,
            other => panic!("computed replicas expected, got {other:?}"),
        };
        let created = self.sc.admin().create_topic(topic.clone(), spec).expect("create topic");
        assert!(created.error_code.is_ok(), "{created:?}");
        self.wait_served(&topic, partitions);
        topic
    }

    /// Waits until every partition answers a list-offsets request without error.
    pub fn wait_served(&self, topic: &TopicName, partitions: u32) {
        let mut client = SpuClient::connect(self.spu.public_address);
        wait_for(&format!("the SPU to serve {topic}"), || {
            let all = (0..partitions).all(|partition| {
                client
                    .list_offset(topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted)
                    .error_code
                    .is_ok()
            });
            all.then_some(())
        });
    }

    /// The core owning each partition of `topic`, from the SC's metadata.
    pub fn leader_cores(&self, topic: &TopicName) -> Vec<CoreId> {
        let metadata = self.sc.admin().metadata(Some(vec![topic.clone()])).expect("metadata");
        metadata.topics[0].partitions.iter().map(|partition| partition.leader_core).collect()
    }

    /// A client connected to the per-core port of `core`.
    pub fn core_client(&self, core: CoreId) -> SpuClient {
        SpuClient::connect(self.spu.core_addresses[core.index()])
    }
}

/// A blocking raw-protocol client of the SPU's public API, plaintext or TLS.
pub struct SpuClient {
    stream: ClientStream,
    decoder: FrameDecoder,
    next_correlation_id: i32,
}

impl SpuClient {
    pub fn connect(address: SocketAddr) -> SpuClient {
        let stream = TcpStream::connect(address).expect("connect to the SPU");
        stream.set_nodelay(true).unwrap();
        SpuClient::over(ClientStream::Plain(stream))
    }

    /// Connects with TLS, verifying the SPU as `server_name`; the handshake's error when it
    /// fails.
    pub fn connect_tls(
        address: SocketAddr,
        tls: &sluice_tls::ClientTls,
        server_name: &str,
    ) -> Result<SpuClient, sluice_tls::TlsError> {
        let socket = TcpStream::connect(address).expect("connect to the SPU");
        socket.set_nodelay(true).unwrap();
        let mut stream = ClientStream::connect(socket, tls.config(), server_name)?;
        stream.handshake(CONDITION_TIMEOUT)?;
        Ok(SpuClient::over(stream))
    }

    pub fn over(stream: ClientStream) -> SpuClient {
        SpuClient { stream, decoder: FrameDecoder::new(256 << 20), next_correlation_id: 1 }
    }

    /// The connection (TLS state, peer certificate).
    pub fn stream(&self) -> &ClientStream {
        &self.stream
    }

    /// Reads what the server sent within `timeout`, raw (`Err`: closed or failed).
    pub fn read_raw(&mut self, timeout: Duration) -> std::io::Result<Vec<u8>> {
        self.stream.socket().set_read_timeout(Some(timeout)).unwrap();
        let mut chunk = vec![0u8; 4096];
        let read = self.stream.read(&mut chunk)?;
        chunk.truncate(read);
        Ok(chunk)
    }

    pub fn send<R: Request>(&mut self, request: &R) -> CorrelationId {
        let correlation_id = CorrelationId(self.next_correlation_id);
        self.next_correlation_id += 1;
        let mut out = Vec::new();
        encode_request(&mut out, ApiVersion(0), correlation_id, request).unwrap();
        self.stream.write_all(&out).expect("send a request");
        self.stream.flush().expect("send a request");
        correlation_id
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send bytes");
        self.stream.flush().expect("send bytes");
    }

    /// The next frame, `None` when nothing came within `timeout`. Panics when the connection
    /// closed.
    pub fn next_frame_within(&mut self, timeout: Duration) -> Option<Frame> {
        self.read_frame_or_eof(timeout).expect("the SPU closed the connection")
    }

    /// The next frame; `Err(())` when the SPU closed the connection, `Ok(None)` on timeout.
    pub fn read_frame_or_eof(&mut self, timeout: Duration) -> Result<Option<Frame>, ()> {
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("a well-formed frame") {
                return Ok(Some(frame));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream
                .socket()
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(()),
                Ok(read) => self.decoder.feed(&chunk[..read]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        // InvalidData: a TLS alert (the server refused the connection).
                        ErrorKind::ConnectionReset
                            | ErrorKind::UnexpectedEof
                            | ErrorKind::InvalidData
                    ) =>
                {
                    return Err(())
                }
                Err(error) => panic!("read: {error}"),
            }
        }
    }

    pub fn next_frame(&mut self) -> Frame {
        self.next_frame_within(CONDITION_TIMEOUT).expect("a response in time")
    }

    /// Sends `request` and returns the response frame (checked correlation id).
    pub fn call<R: Request>(&mut self, request: &R) -> Frame {
        let correlation_id = self.send(request);
        let frame = self.next_frame();
        assert_eq!(frame.header.correlation_id, correlation_id);
        frame
    }

    pub fn produce_request(
        &mut self,
        topic: &TopicName,
        partition: u32,
        records: &[u8],
        acks: Acks,
    ) -> ProduceResponse {
        let request = ProduceRequest {
            acks,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: topic.clone(),
                partitions: vec![ProducePartition { partition: PartitionId(partition), records }],
            }],
        };
        let frame = self.call(&request);
        ProduceResponse::decode(ApiVersion(0), &frame.body).expect("produce response")
    }

    pub fn produce(
        &mut self,
        topic: &TopicName,
        partition: u32,
        records: &[u8],
        acks: Acks,
    ) -> ProducePartitionResponse {
        self.produce_request(topic, partition, records, acks).topics[0].partitions[0]
    }

    pub fn fetch(
        &mut self,
        topic: &TopicName,
        partition: u32,
        offset: Offset,
        wait: (u32, u32),
        isolation: Isolation,
    ) -> (FetchPartitionHeader, Vec<u8>) {
        let (max_wait_ms, min_bytes) = wait;
        let request = FetchRequest {
            isolation,
            max_wait_ms,
            min_bytes,
            max_bytes: 64 << 20,
            topics: vec![FetchTopic {
                name: topic.clone(),
                partitions: vec![FetchPartition {
                    partition: PartitionId(partition),
                    fetch_offset: offset,
                    partition_max_bytes: 16 << 20,
                    current_leader_epoch: None::<LeaderEpoch>,
                }],
            }],
        };
        let frame = self.call(&request);
        let response = FetchResponse::decode(ApiVersion(0), &frame.body).expect("fetch response");
        let partition = &response.topics[0].partitions[0];
        (partition.header, partition.records.to_vec())
    }

    pub fn list_offset(
        &mut self,
        topic: &TopicName,
        partition: u32,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> ListOffsetsPartitionResponse {
        let request = ListOffsetsRequest {
            isolation,
            topics: vec![ListOffsetsTopic {
                name: topic.clone(),
                partitions: vec![ListOffsetsPartition { partition: PartitionId(partition), spec }],
            }],
        };
        let frame = self.call(&request);
        let response =
            ListOffsetsResponse::decode(ApiVersion(0), &frame.body).expect("list offsets response");
        response.topics[0].partitions[0]
    }

    /// Fetches from `offset` until `count` records came back; returns (offset, value) pairs.
    pub fn fetch_values(
        &mut self,
        topic: &TopicName,
        partition: u32,
        offset: Offset,
        count: usize,
    ) -> Vec<(Offset, Vec<u8>)> {
        let mut values = Vec::with_capacity(count);
        let mut next = offset;
        wait_for("records to fetch", || {
            let (header, records) =
                self.fetch(topic, partition, next, (100, 1), Isolation::ReadCommitted);
            assert_eq!(header.error_code, ErrorCode::None, "fetch error");
            for (record_offset, value) in record_values(&records) {
                if record_offset >= next {
                    values.push((record_offset, value));
                    next = record_offset.next();
                }
            }
            (values.len() >= count).then_some(())
        });
        values
    }
}

/// A batch of the given values (no keys) with timestamp `timestamp`.
pub fn batch(values: &[&[u8]], timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push_record(TimestampMs(timestamp), None, Some(value), &[]).expect("record");
    }
    builder.finish().to_vec()
}

/// Every (offset, value) of the record batches in `records`.
pub fn record_values(records: &[u8]) -> Vec<(Offset, Vec<u8>)> {
    let mut values = Vec::new();
    for batch in Batches::new(records, 64 << 20) {
        let batch = batch.expect("a valid batch");
        for record in batch.records().expect("records") {
            let record = record.expect("a valid record");
            values.push((record.offset(), record.value().unwrap_or_default().to_vec()));
        }
    }
    values
}

/// Deterministic value bytes for record `index` of partition `partition`.
pub fn value_for(partition: u32, index: usize, length: usize) -> Vec<u8> {
    (0..length).map(|position| (partition as usize * 31 + index * 7 + position) as u8).collect()
}

/// A follower fetch of one partition as SPU `follower` following in `leader_epoch`, from
/// `fetch_offset` (also its log end), answered after `max_wait_ms` unless `min_bytes` arrive.
pub fn follower_fetch_request(
    follower: SpuId,
    topic: &TopicName,
    partition: u32,
    fetch_offset: Offset,
    leader_epoch: Option<LeaderEpoch>,
    (max_wait_ms, min_bytes): (u32, u32),
) -> FollowerFetchRequest {
    FollowerFetchRequest {
        follower,
        max_wait_ms,
        min_bytes,
        max_bytes: 1 << 20,
        topics: vec![FollowerFetchTopic {
            name: topic.clone(),
            partitions: vec![FollowerFetchPartition {
                partition: PartitionId(partition),
                fetch_offset,
                log_end_offset: fetch_offset,
                leader_epoch,
                last_fetched_epoch: None,
                partition_max_bytes: 1 << 20,
            }],
        }],
    }
}
