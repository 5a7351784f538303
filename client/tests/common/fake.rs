//! A fake cluster in the test process, for leader changes a real single-copy cluster cannot
//! show deterministically: an SC that serves metadata for one topic (leaders switched, or the
//! partition taken offline, by the test; watchers get each change pushed) and fake SPUs that
//! serve produce, fetch and list offsets from one log per partition shared by all of them (as
//! replicated logs would hold the same records), with faults injected by the test: refusals
//! with an error code, silence (a paused leader), "not leader", death (connections closed,
//! new ones refused).
//!
//! The fake SPUs check idempotence the simple way: a batch whose producer id and base
//! sequence are in the log already is answered `DuplicateSequence` with its first offset.
//! Every thread stops when its owner drops; sockets use OS-chosen ports.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_proto::api::admin::{AdminResponse, DescribeTopicResponse, TopicEntry};
use sluice_proto::api::fetch::{
    FetchPartitionHeader, FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopicResponse,
};
use sluice_proto::api::list_offsets::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopicResponse, OffsetSpec,
};
use sluice_proto::api::metadata::{
    Changes, MetadataResponse, MetadataWatchUpdate, PartitionMetadata, SpuMetadata, TopicMetadata,
};
use sluice_proto::api::produce::{
    ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
};
use sluice_proto::api::{ApiKey, Decode, Encode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_frame, Frame, FrameDecoder, FrameHeader};
use sluice_proto::ids::{CoreId, LeaderEpoch, Offset, PartitionId, SpuId, UpdateEpoch};
use sluice_proto::object::{
    EncryptionMode, Endpoint, ReplicaPlacement, TopicName, TopicSpec, TopicStatus,
};
use sluice_proto::record::{set_base_offset, BatchHeader, BATCH_HEADER_LEN};

/// How often server threads look at their stop flag and at state changes.
const TICK: Duration = Duration::from_millis(10);
/// Longest a fetch at the log end is held before an empty answer (the long poll).
const LONG_POLL_MAX: Duration = Duration::from_millis(100);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The batches of every partition, shared by the fake SPUs.
#[derive(Default)]
pub struct Logs {
    partitions: Mutex<Vec<Vec<Vec<u8>>>>,
    appended: Condvar,
}

impl Logs {
    fn new(partition_count: u32) -> Logs {
        Logs {
            partitions: Mutex::new(vec![Vec::new(); partition_count as usize]),
            appended: Condvar::new(),
        }
    }

    /// The offset after the last record of `partition`.
    pub fn end_offset(&self, partition: u32) -> i64 {
        let partitions = lock(&self.partitions);
        end_of(&partitions[partition as usize])
    }

    /// Appends the batches in `records`; returns the first one's offset (or the original
    /// offset of a duplicate, with `DuplicateSequence`).
    fn append(&self, partition: u32, records: &[u8]) -> (ErrorCode, i64) {
        let mut partitions = lock(&self.partitions);
        let log = &mut partitions[partition as usize];
        let mut position = 0;
        let mut first = None;
        while position + BATCH_HEADER_LEN <= records.len() {
            let header = BatchHeader::parse(&records[position..]).expect("a valid batch header");
            let bytes = &records[position..position + header.total_len()];
            position += header.total_len();
            let duplicate = log.iter().find_map(|stored| {
                let stored = BatchHeader::parse(stored).expect("stored batch");
                let same = header.producer_id.get() >= 0
                    && stored.producer_id == header.producer_id
                    && stored.base_sequence == header.base_sequence;
                same.then_some(stored.base_offset.get())
            });
            if let Some(offset) = duplicate {
                return (ErrorCode::DuplicateSequence, offset);
            }
            let offset = end_of(log);
            let mut batch = bytes.to_vec();
            set_base_offset(&mut batch, Offset(offset));
            log.push(batch);
            first.get_or_insert(offset);
        }
        self.appended.notify_all();
        (ErrorCode::None, first.unwrap_or(-1))
    }

    /// Whole batches holding offsets at or after `offset`, waiting up to `wait` for some.
    fn read(&self, partition: u32, offset: i64, wait: Duration) -> (Vec<u8>, i64) {
        let deadline = Instant::now() + wait;
        let mut partitions = lock(&self.partitions);
        loop {
            let log = &partitions[partition as usize];
            let end = end_of(log);
            let bytes: Vec<u8> = log
                .iter()
                .filter(|batch| {
                    BatchHeader::parse(batch).expect("stored batch").next_offset().get() > offset
                })
                .flatten()
                .copied()
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if !bytes.is_empty() || left.is_zero() {
                return (bytes, end);
            }
            partitions = self
                .appended
                .wait_timeout(partitions, left)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }
}

fn end_of(log: &[Vec<u8>]) -> i64 {
    log.last().map_or(0, |batch| BatchHeader::parse(batch).expect("batch").next_offset().get())
}

/// What a fake SPU does with the next produce of a partition.
#[derive(Clone, Copy, Debug)]
pub enum ProduceFault {
    /// Answer this error and write nothing.
    Refuse(ErrorCode),
    /// Append, then answer this error (as if replicas fell away after the leader wrote).
    AppendThenRefuse(ErrorCode),
}

/// How a fake SPU behaves; change it through [`FakeSpu::behave`].
#[derive(Debug)]
pub struct Behaviour {
    /// Whether it leads its partitions: if not, produce, fetch and list offsets get
    /// `NotLeader`.
    pub leader: bool,
    /// Read requests and never answer (a `SIGSTOP`ped process).
    pub paused: bool,
    /// Requests that arrived while paused (never answered).
    pub unanswered: usize,
    /// Faults for the next produce requests, front first.
    pub produce_faults: VecDeque<ProduceFault>,
    /// Errors for the next fetches, front first.
    pub fetch_errors: VecDeque<ErrorCode>,
    /// Every fetch offset asked, in order, with the answer's error code.
    pub fetches: Vec<(i64, ErrorCode)>,
    /// Produce answers refused with `NotLeader`.
    pub not_leader_answers: usize,
    /// Close each connection as soon as a request arrives on it (a process dying under its
    /// clients), without answering.
    pub reset_connections: bool,
    /// Connections closed that way.
    pub resets: usize,
}

struct SpuShared {
    id: SpuId,
    topic: TopicName,
    logs: Arc<Logs>,
    behaviour: Mutex<Behaviour>,
    dead: Arc<AtomicBool>,
    streams: Mutex<Vec<TcpStream>>,
}

/// A fake SPU serving the topic's partitions from the shared logs.
pub struct FakeSpu {
    shared: Arc<SpuShared>,
    pub address: SocketAddr,
}

impl FakeSpu {
    fn start(id: i32, topic: &TopicName, logs: Arc<Logs>) -> FakeSpu {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake SPU");
        let address = listener.local_addr().expect("address");
        let shared = Arc::new(SpuShared {
            id: SpuId(id),
            topic: topic.clone(),
            logs,
            behaviour: Mutex::new(Behaviour {
                leader: true,
                paused: false,
                unanswered: 0,
                produce_faults: VecDeque::new(),
                fetch_errors: VecDeque::new(),
                fetches: Vec::new(),
                not_leader_answers: 0,
                reset_connections: false,
                resets: 0,
            }),
            dead: Arc::new(AtomicBool::new(false)),
            streams: Mutex::new(Vec::new()),
        });
        let thread_shared = Arc::clone(&shared);
        accept_loop(listener, Arc::clone(&shared.dead), move |stream| {
            if let Ok(copy) = stream.try_clone() {
                lock(&thread_shared.streams).push(copy);
            }
            let reset = serve(stream, &thread_shared.dead, |frame| {
                if frame.is_some() && lock(&thread_shared.behaviour).reset_connections {
                    return Answer::Close;
                }
                spu_answer(&thread_shared, frame).map_or(Answer::Nothing, Answer::Bytes)
            });
            if reset {
                lock(&thread_shared.behaviour).resets += 1;
            }
        });
        FakeSpu { shared, address }
    }

    pub fn id(&self) -> SpuId {
        self.shared.id
    }

    /// Changes its behaviour.
    pub fn behave<T>(&self, change: impl FnOnce(&mut Behaviour) -> T) -> T {
        change(&mut lock(&self.shared.behaviour))
    }

    /// Dies: every connection is closed and new ones are refused.
    pub fn kill(&self) {
        self.shared.dead.store(true, Ordering::Release);
        for stream in lock(&self.shared.streams).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FakeSpu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Accepts connections until `stop` is set (then the listener closes: connections are
/// refused), handing each to `handle` on a thread of its own.
fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) {
    listener.set_nonblocking(true).expect("non-blocking listener");
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let handle = Arc::clone(&handle);
                    std::thread::spawn(move || handle(stream));
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                Err(_) => return,
            }
        }
    });
}

/// What a server does about a request (or a tick without one).
enum Answer {
    Bytes(Vec<u8>),
    Nothing,
    /// Close the connection without answering.
    Close,
}

/// Reads frames from `stream` and answers each as `answer` says, until the peer closes, `stop`
/// is set, or `answer` closes it (then returns true). `answer` also runs once per [`TICK`]
/// without a frame (`None`), for pushes.
fn serve(
    mut stream: TcpStream,
    stop: &AtomicBool,
    mut answer: impl FnMut(Option<&Frame>) -> Answer,
) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(TICK));
    let mut decoder = FrameDecoder::new(64 << 20);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut frames = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(read) => decoder.feed(&chunk[..read]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return false,
        }
        while let Ok(Some(frame)) = decoder.next_frame() {
            frames.push(frame);
        }
        for frame in frames.drain(..).map(Some).chain([None]) {
            match answer(frame.as_ref()) {
                Answer::Bytes(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        return false;
                    }
                }
                Answer::Nothing => {}
                Answer::Close => {
                    let _ = stream.shutdown(Shutdown::Both);
                    return true;
                }
            }
        }
    }
    false
}

fn encoded<M: Encode>(header: &FrameHeader, message: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, header, message).expect("encode a fake answer");
    out
}

fn spu_answer(shared: &SpuShared, frame: Option<&Frame>) -> Option<Vec<u8>> {
    let frame = frame?;
    {
        let mut behaviour = lock(&shared.behaviour);
        if behaviour.paused {
            behaviour.unanswered += 1;
            return None;
        }
    }
    let header = &frame.header;
    match header.api_key {
        ApiKey::Produce => Some(encoded(header, &produce(shared, frame))),
        ApiKey::Fetch => Some(encoded(header, &fetch(shared, frame))),
        ApiKey::ListOffsets => Some(encoded(header, &list_offsets(shared, frame))),
        _ => None,
    }
}

fn produce(shared: &SpuShared, frame: &Frame) -> ProduceResponse {
    let request: ProduceRequest<Range<usize>> =
        ProduceRequest::decode(frame.header.api_version, &frame.body).expect("produce request");
    let mut topics = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::new();
        for partition in topic.partitions {
            let id = partition.partition;
            let records = &frame.body[partition.records];
            let fault = {
                let mut behaviour = lock(&shared.behaviour);
                if !behaviour.leader {
                    behaviour.not_leader_answers += 1;
                    partitions.push(ProducePartitionResponse::error(id, ErrorCode::NotLeader));
                    continue;
                }
                behaviour.produce_faults.pop_front()
            };
            let answer = match fault {
                Some(ProduceFault::Refuse(code)) => ProducePartitionResponse::error(id, code),
                Some(ProduceFault::AppendThenRefuse(code)) => {
                    shared.logs.append(id.get(), records);
                    ProducePartitionResponse::error(id, code)
                }
                None => {
                    let (code, offset) = shared.logs.append(id.get(), records);
                    ProducePartitionResponse {
                        partition: id,
                        error_code: code,
                        base_offset: Some(Offset(offset)),
                        log_append_time: None,
                        log_start_offset: Some(Offset(0)),
                    }
                }
            };
            partitions.push(answer);
        }
        topics.push(ProduceTopicResponse { name: topic.name, partitions });
    }
    ProduceResponse { topics }
}

fn fetch(shared: &SpuShared, frame: &Frame) -> FetchResponse<Vec<u8>> {
    let request =
        FetchRequest::decode(frame.header.api_version, &frame.body).expect("fetch request");
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(LONG_POLL_MAX);
    let mut topics = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::new();
        for partition in topic.partitions {
            let id = partition.partition;
            let offset = partition.fetch_offset.get();
            let refusal = {
                let mut behaviour = lock(&shared.behaviour);
                let refusal = if behaviour.leader {
                    behaviour.fetch_errors.pop_front()
                } else {
                    Some(ErrorCode::NotLeader)
                };
                behaviour.fetches.push((offset, refusal.unwrap_or(ErrorCode::None)));
                refusal
            };
            if let Some(code) = refusal {
                let header = FetchPartitionHeader::error(id, code);
                partitions.push(FetchPartitionResponse { header, records: Vec::new() });
                continue;
            }
            let (records, end) = shared.logs.read(id.get(), offset, wait);
            if !lock(&shared.behaviour).leader {
                // Deposed during the long poll: what it would return is the new leader's.
                let header = FetchPartitionHeader::error(id, ErrorCode::NotLeader);
                partitions.push(FetchPartitionResponse { header, records: Vec::new() });
                continue;
            }
            let header = FetchPartitionHeader {
                partition: id,
                error_code: ErrorCode::None,
                high_watermark: Offset(end),
                last_stable_offset: Offset(end),
                log_end_offset: Offset(end),
                log_start_offset: Offset(0),
            };
            partitions.push(FetchPartitionResponse { header, records });
        }
        topics.push(FetchTopicResponse { name: topic.name, partitions });
    }
    FetchResponse { topics }
}

fn list_offsets(shared: &SpuShared, frame: &Frame) -> ListOffsetsResponse {
    let request = ListOffsetsRequest::decode(frame.header.api_version, &frame.body)
        .expect("list offsets request");
    let leader = lock(&shared.behaviour).leader;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| ListOffsetsTopicResponse {
            name: topic.name,
            partitions: topic
                .partitions
                .into_iter()
                .map(|partition| {
                    let offset = match partition.spec {
                        OffsetSpec::Earliest => 0,
                        _ => shared.logs.end_offset(partition.partition.get()),
                    };
                    ListOffsetsPartitionResponse {
                        partition: partition.partition,
                        error_code: if leader { ErrorCode::None } else { ErrorCode::NotLeader },
                        offset: leader.then_some(Offset(offset)),
                        timestamp: None,
                    }
                })
                .collect(),
        })
        .collect();
    ListOffsetsResponse { topics }
}

/// A partition as the fake SC describes it.
#[derive(Clone, Copy, Debug)]
struct PartitionView {
    leader: SpuId,
    leader_epoch: LeaderEpoch,
    error_code: ErrorCode,
}

struct ScState {
    epoch: u64,
    partitions: Vec<PartitionView>,
    spus: Vec<(SpuId, SocketAddr)>,
}

struct ScShared {
    topic: TopicName,
    state: Mutex<ScState>,
    stop: Arc<AtomicBool>,
}

impl ScShared {
    fn metadata(&self) -> (u64, Vec<SpuMetadata>, Vec<TopicMetadata>) {
        let state = lock(&self.state);
        let spus = state
            .spus
            .iter()
            .map(|(id, address)| SpuMetadata {
                id: *id,
                public_endpoint: Endpoint::new("127.0.0.1", address.port()),
                core_public_ports: Vec::new(),
                rack: None,
                encryption: EncryptionMode::Plaintext,
                online: true,
            })
            .collect();
        let replicas: Vec<ReplicaPlacement> = state
            .spus
            .iter()
            .map(|(id, _)| ReplicaPlacement { spu: *id, core: CoreId(0) })
            .collect();
        let partitions = state
            .partitions
            .iter()
            .enumerate()
            .map(|(index, view)| PartitionMetadata {
                partition: PartitionId(index as u32),
                error_code: view.error_code,
                leader: view.leader,
                leader_core: CoreId(0),
                leader_epoch: view.leader_epoch,
                replicas: replicas.clone(),
                in_sync_replicas: replicas.iter().map(|replica| replica.spu).collect(),
            })
            .collect();
        let topic =
            TopicMetadata { name: self.topic.clone(), error_code: ErrorCode::None, partitions };
        (state.epoch, spus, vec![topic])
    }
}

/// The fake SC: metadata, metadata watch and describe topic.
pub struct FakeSc {
    shared: Arc<ScShared>,
    pub address: SocketAddr,
}

impl FakeSc {
    fn start(
        topic: &TopicName,
        partitions: Vec<PartitionView>,
        spus: Vec<(SpuId, SocketAddr)>,
    ) -> FakeSc {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake SC");
        let address = listener.local_addr().expect("address");
        let shared = Arc::new(ScShared {
            topic: topic.clone(),
            state: Mutex::new(ScState { epoch: 1, partitions, spus }),
            stop: Arc::new(AtomicBool::new(false)),
        });
        let thread_shared = Arc::clone(&shared);
        accept_loop(listener, Arc::clone(&shared.stop), move |stream| {
            let mut watch: Option<(FrameHeader, u64)> = None;
            serve(stream, &thread_shared.stop, |frame| {
                sc_answer(&thread_shared, frame, &mut watch).map_or(Answer::Nothing, Answer::Bytes)
            });
        });
        FakeSc { shared, address }
    }

    /// Makes `spu` the leader of `partition` with the next leader epoch (an election).
    pub fn elect(&self, partition: u32, spu: SpuId) {
        let mut state = lock(&self.shared.state);
        let view = &mut state.partitions[partition as usize];
        view.leader = spu;
        view.leader_epoch = LeaderEpoch(view.leader_epoch.get() + 1);
        view.error_code = ErrorCode::None;
        state.epoch += 1;
    }

    /// Marks `partition` offline (no in-sync replica online), as the SC reports it.
    pub fn take_offline(&self, partition: u32) {
        let mut state = lock(&self.shared.state);
        state.partitions[partition as usize].error_code = ErrorCode::PartitionOffline;
        state.epoch += 1;
    }
}

impl Drop for FakeSc {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

fn sc_answer(
    shared: &ScShared,
    frame: Option<&Frame>,
    watch: &mut Option<(FrameHeader, u64)>,
) -> Option<Vec<u8>> {
    let Some(frame) = frame else {
        // No request: push the metadata to a watcher when it changed.
        let (header, sent) = watch.as_mut()?;
        let (epoch, spus, topics) = shared.metadata();
        if epoch == *sent {
            return None;
        }
        *sent = epoch;
        let update = MetadataWatchUpdate {
            epoch: UpdateEpoch(epoch),
            spus: Changes::Full(spus),
            topics: Changes::Full(topics),
        };
        return Some(encoded(header, &update));
    };
    let header = &frame.header;
    let (epoch, spus, topics) = shared.metadata();
    match header.api_key {
        ApiKey::Metadata => {
            Some(encoded(header, &MetadataResponse { epoch: UpdateEpoch(epoch), spus, topics }))
        }
        ApiKey::MetadataWatch => {
            *watch = Some((*header, epoch));
            let update = MetadataWatchUpdate {
                epoch: UpdateEpoch(epoch),
                spus: Changes::Full(spus),
                topics: Changes::Full(topics),
            };
            Some(encoded(header, &update))
        }
        ApiKey::DescribeTopic => {
            let partition_count = lock(&shared.state).partitions.len() as u32;
            let topic = TopicEntry {
                name: shared.topic.clone(),
                spec: TopicSpec::computed(partition_count, 2),
                status: TopicStatus::default(),
            };
            let response = DescribeTopicResponse {
                error_code: ErrorCode::None,
                topic: Some(topic),
                partitions: Vec::new(),
            };
            Some(encoded(header, &response))
        }
        other => {
            let message = format!("the fake SC does not serve {other}");
            Some(encoded(header, &AdminResponse::error(ErrorCode::InvalidRequest, message)))
        }
    }
}

/// A fake SC and fake SPUs `1..=spu_count` serving `topic`, every partition led by SPU 1.
pub struct FakeCluster {
    pub sc: FakeSc,
    pub spus: Vec<FakeSpu>,
    pub logs: Arc<Logs>,
    pub topic: String,
}

impl FakeCluster {
    pub fn start(topic: &str, partition_count: u32, spu_count: i32) -> FakeCluster {
        let name = TopicName::new(topic).expect("topic name");
        let logs = Arc::new(Logs::new(partition_count));
        let spus: Vec<FakeSpu> =
            (1..=spu_count).map(|id| FakeSpu::start(id, &name, Arc::clone(&logs))).collect();
        let views = (0..partition_count)
            .map(|_| PartitionView {
                leader: SpuId(1),
                leader_epoch: LeaderEpoch(0),
                error_code: ErrorCode::None,
            })
            .collect();
        let addresses = spus.iter().map(|spu| (spu.id(), spu.address)).collect();
        let sc = FakeSc::start(&name, views, addresses);
        FakeCluster { sc, spus, logs, topic: topic.to_owned() }
    }

    /// The fake SPU with this id.
    pub fn spu(&self, id: i32) -> &FakeSpu {
        self.spus.iter().find(|spu| spu.id() == SpuId(id)).expect("a fake SPU with that id")
    }
}
