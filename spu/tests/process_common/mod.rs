//! Test harness for the `sluice-spu` process: an SC, a real `sluice-spu` child process on
//! OS-chosen ports (killed by its `Child` handle on drop), and a small raw-protocol client
//! built on `sluice_proto`.
//!
//! The SC runs in this test process through the `sluice_sc` library (`Sc::start`, the very
//! code the `sluice-sc` binary runs on its own threads): a dev-dependency cannot give this
//! package the SC's binary path (Cargo only exports `CARGO_BIN_EXE_*` for the package's own
//! binaries), and building it from inside a test would contend for Cargo's build lock. The SPU,
//! the process under test, is the real binary.

#![allow(dead_code)]

pub mod replicated;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
use sluice_proto::api::{ApiVersion, Decode, Request};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_request, Frame, FrameDecoder};
use sluice_proto::ids::{
    CoreId, CorrelationId, LeaderEpoch, Offset, PartitionId, SpuId, TimestampMs,
};
use sluice_proto::object::{SpuSpec, SpuType, TopicName, TopicSpec};
use sluice_proto::record::{BatchBuilder, Batches};
use sluice_sc::admin_client::AdminClient;
use sluice_sc::config::ScArgs;
use sluice_sc::process::Sc;

/// Longest wait for a process to report its addresses.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for an eventually true condition or a response.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `condition` until it returns `Some`, or panics with `what` after the deadline.
pub fn wait_for<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An SC running on this process's threads; stopped on drop.
pub struct ScGuard {
    sc: Option<Sc>,
    pub public_address: SocketAddr,
    pub private_address: SocketAddr,
}

impl ScGuard {
    pub fn start(data_dir: &Path) -> ScGuard {
        let args = ScArgs {
            metrics_address: Some("127.0.0.1:0".parse().unwrap()),
            public_address: Some("127.0.0.1:0".parse().unwrap()),
            private_address: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data_dir.to_owned()),
            heartbeat_timeout_ms: Some(3_000),
            ..ScArgs::default()
        };
        let sc = Sc::start(&args.resolve().expect("SC config")).expect("start the SC");
        ScGuard {
            public_address: sc.public_address,
            private_address: sc.private_address,
            sc: Some(sc),
        }
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::connect(self.public_address).expect("connect to the SC")
    }
}

impl Drop for ScGuard {
    fn drop(&mut self) {
        if let Some(sc) = self.sc.take() {
            sc.shutdown();
        }
    }
}

/// The binary under test: `SLUICE_SPU_BIN` (e.g. a release build for measurements), else the
/// one Cargo built for these tests.
pub fn spu_binary() -> PathBuf {
    std::env::var_os("SLUICE_SPU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sluice-spu")))
}

/// The Prometheus text of the SPU's metrics endpoint.
pub fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(CONDITION_TIMEOUT)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: spu\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the metrics");
    assert!(text.starts_with("HTTP/1.") && text.contains(" 200 "), "{text}");
    text
}

/// The sum over cores (and other labels) of the series named `name`.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A running `sluice-spu`; killed on drop.
pub struct SpuProcess {
    child: Child,
    pub public_address: SocketAddr,
    pub private_address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub core_addresses: Vec<SocketAddr>,
    /// Each core's own private (replication) port.
    pub core_private_addresses: Vec<SocketAddr>,
}

impl SpuProcess {
    /// Starts SPU `id` on `data_dir` against the SC at `sc` and waits until it is registered.
    pub fn start(id: i32, sc: SocketAddr, data_dir: &Path, cores: u16, extra: &[&str]) -> Self {
        let ready_file = data_dir.with_extension(format!("ready-{id}"));
        let _ = std::fs::remove_file(&ready_file);
        let mut command = Command::new(spu_binary());
        command
            .arg(format!("--id={id}"))
            .arg(format!("--sc={sc}"))
            .arg("--public-address=127.0.0.1:0")
            .arg("--private-address=127.0.0.1:0")
            .arg("--metrics-address=127.0.0.1:0")
            .arg(format!("--cores={cores}"))
            .arg("--free-bytes-min=0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--ready-file")
            .arg(&ready_file)
            .args(extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = die_with_parent(&mut command).spawn().expect("spawn sluice-spu");
        let deadline = Instant::now() + READY_TIMEOUT;
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                break text;
            }
            if let Some(status) = child.try_wait().expect("poll sluice-spu") {
                panic!("sluice-spu exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "sluice-spu not ready within {READY_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_file(&ready_file);
        let address = |name: &str| -> SocketAddr {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} address in {text:?}"))
                .parse()
                .expect("address")
        };
        let core_addresses = (0..cores).map(|core| address(&format!("core.{core}"))).collect();
        let core_private_addresses =
            (0..cores).map(|core| address(&format!("core_private.{core}"))).collect();
        SpuProcess {
            public_address: address("public"),
            private_address: address("private"),
            metrics_address: address("metrics"),
            core_addresses,
            core_private_addresses,
            child,
        }
    }

    /// `kill -9`, then reap.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill sluice-spu");
        self.child.wait().expect("reap sluice-spu");
    }

    /// SIGTERM, then wait for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll sluice-spu") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "sluice-spu did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll sluice-spu").is_none()
    }
}

impl Drop for SpuProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SC plus one SPU (id 1) with `cores` cores, in a temporary directory.
pub struct Cluster {
    pub spu: SpuProcess,
    pub sc: ScGuard,
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
        let sc = ScGuard::start(&dir.path().join("sc"));
        let spec = SpuSpec { id: SpuId(SPU_ID), spu_type: SpuType::Custom, ..SpuSpec::default() };
        let registered = sc.admin().register_spu(spec).expect("register the SPU");
        assert!(registered.error_code.is_ok(), "{registered:?}");
        let spu = SpuProcess::start(SPU_ID, sc.private_address, &Self::spu_dir(&dir), cores, extra);
        Cluster { spu, sc, dir, cores }
    }

    pub fn spu_dir(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("spu")
    }

    /// Kills the SPU with SIGKILL and starts it again on the same data directory.
    pub fn restart_spu_after_kill(&mut self) {
        self.spu.kill();
        self.start_spu_again();
    }

    /// Starts the SPU again on the same data directory (the previous process is gone).
    pub fn start_spu_again(&mut self) {
        let data_dir = Self::spu_dir(&self.dir);
        self.spu = SpuProcess::start(SPU_ID, self.sc.private_address, &data_dir, self.cores, &[]);
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

/// A blocking raw-protocol client of the SPU's public API.
pub struct SpuClient {
    stream: TcpStream,
    decoder: FrameDecoder,
    next_correlation_id: i32,
}

impl SpuClient {
    pub fn connect(address: SocketAddr) -> SpuClient {
        let stream = TcpStream::connect(address).expect("connect to the SPU");
        stream.set_nodelay(true).unwrap();
        SpuClient { stream, decoder: FrameDecoder::new(256 << 20), next_correlation_id: 1 }
    }

    pub fn send<R: Request>(&mut self, request: &R) -> CorrelationId {
        let correlation_id = CorrelationId(self.next_correlation_id);
        self.next_correlation_id += 1;
        let mut out = Vec::new();
        encode_request(&mut out, ApiVersion(0), correlation_id, request).unwrap();
        self.stream.write_all(&out).expect("send a request");
        correlation_id
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send bytes");
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
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(()),
                Ok(read) => self.decoder.feed(&chunk[..read]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) if error.kind() == ErrorKind::ConnectionReset => return Err(()),
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

/// Makes `command`'s process die with the thread that starts it: a test process that is
/// itself killed (a timeout, ^C) never runs the drop that kills its children, and orphaned
/// servers would keep running (found burning the CPUs under a later benchmark).
fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only prctl(2), async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}
