//! The SPU side of the control protocol (`sluice_spu::sc_link::run`, on a glommio executor)
//! against a real SC, and against a scripted SC for the cases a healthy SC never produces
//! (silence, an epoch gap).
//!
//! The real SC runs in this test process through the `sluice_sc` library (`Sc::start`, the
//! code the `sluice-sc` binary runs): Cargo gives a test no path to another package's binary.
//! Restarting it means shutting it down (its connections close) and starting it again on the
//! same data directory and the same private port.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::channels::local_channel;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use sluice_proto::api::control::{
    LiveReplica, LiveReplicaStatus, ReplicaAssignment, ReplicaUpdate, RequestSnapshot,
    SnapshotKind, SpuRegisterRequest, SpuRegisterResponse,
};
use sluice_proto::api::metadata::{Change, Changes};
use sluice_proto::api::{ApiKey, ApiVersion, Decode, Encode};
use sluice_proto::frame::{encode_frame, Frame, FrameDecoder, FrameHeader};
use sluice_proto::ids::{CorrelationId, LeaderEpoch, Offset, PartitionId, SpuId, UpdateEpoch};
use sluice_proto::object::{
    Endpoint, PartitionKey, PartitionSpec, ReplicaStatus, SpuSpec, SpuType, TopicName, TopicSpec,
};
use sluice_sc::admin_client::AdminClient;
use sluice_sc::config::{ScArgs, StoreBackend};
use sluice_spu::sc_link::{self, ScLinkConfig, ScLinkEvent};
use sluice_testkit::process::{consul_agent, wait_for_within, ConsulAgent, EmbeddedSc};

/// Longest wait for an expected event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Heartbeat interval of the link under test against a real SC.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// Against the scripted SC, which never sends heartbeats: long enough for each scripted step
/// on a loaded machine, short enough that the silence at the end is noticed within seconds.
const SCRIPTED_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(700);

/// `sc_link::run` on its own glommio executor; events and status cross over std channels.
struct Link {
    events: mpsc::Receiver<ScLinkEvent>,
    status: mpsc::Sender<LiveReplicaStatus>,
    stop: Arc<AtomicBool>,
    executor: Option<ExecutorJoinHandle<()>>,
}

fn registration(id: i32) -> SpuRegisterRequest {
    SpuRegisterRequest {
        id: SpuId(id),
        cores: 2,
        core_public_ports: vec![19105, 19106],
        core_private_ports: vec![19205, 19206],
        public_endpoint: Endpoint::new("127.0.0.1", 19005),
        private_endpoint: Endpoint::new("127.0.0.1", 19006),
        version: "sc-link-test".into(),
        incarnation: 7,
    }
}

impl Link {
    fn start(sc_addresses: Vec<String>, id: i32) -> Link {
        Self::start_with(sc_addresses, id, HEARTBEAT_INTERVAL)
    }

    fn start_with(sc_addresses: Vec<String>, id: i32, heartbeat_interval: Duration) -> Link {
        let (event_sender, events) = mpsc::channel();
        let (status, status_receiver) = mpsc::channel::<LiveReplicaStatus>();
        let stop = Arc::new(AtomicBool::new(false));
        let config = ScLinkConfig {
            sc_addresses,
            discovered: None,
            register: registration(id),
            heartbeat_interval,
            reconnect_backoff: Duration::from_millis(50),
            tls: None,
            enforced_security: None,
        };
        let stopping = Arc::clone(&stop);
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("sc-link-test")
            .spawn(move || async move {
                let (local_events, local_events_receiver) = local_channel::new_bounded(64);
                let (local_status, local_status_receiver) = local_channel::new_bounded(64);
                glommio::spawn_local(async move {
                    while let Some(event) = local_events_receiver.recv().await {
                        if event_sender.send(event).is_err() {
                            return;
                        }
                    }
                })
                .detach();
                let stop_polling = Arc::clone(&stopping);
                glommio::spawn_local(async move {
                    while !stop_polling.load(Ordering::Relaxed) {
                        while let Ok(report) = status_receiver.try_recv() {
                            let _ = local_status.send(report).await;
                        }
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                })
                .detach();
                let shutdown = async move {
                    while !stopping.load(Ordering::Relaxed) {
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                };
                // The in-sync proposals' sender stays open for the link's lifetime.
                let (_proposals, proposals_receiver) = local_channel::new_bounded(4);
                sc_link::run(
                    config,
                    local_events,
                    local_status_receiver,
                    proposals_receiver,
                    shutdown,
                )
                .await
                .expect("valid link configuration");
            })
            .expect("start a glommio executor (needs `ulimit -l unlimited`)");
        Link { events, status, stop, executor: Some(executor) }
    }

    /// The next event matching `wanted`, skipping others.
    fn expect<T>(&self, what: &str, mut wanted: impl FnMut(ScLinkEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .recv_timeout(remaining)
                .unwrap_or_else(|error| panic!("no {what} from the link: {error}"));
            if let Some(found) = wanted(event) {
                return found;
            }
        }
    }

    /// The next replica set with exactly `count` partitions.
    fn replicas(&self, count: usize) -> Arc<BTreeMap<PartitionKey, ReplicaAssignment>> {
        self.expect(&format!("replica set of {count}"), |event| match event {
            ScLinkEvent::Replicas(replicas) if replicas.len() == count => Some(replicas),
            _ => None,
        })
    }

    fn connected(&self) -> SocketAddr {
        self.expect("connection", |event| match event {
            ScLinkEvent::Connected { sc } => Some(sc),
            _ => None,
        })
    }

    fn disconnected(&self) -> String {
        self.expect("disconnection", |event| match event {
            ScLinkEvent::Disconnected { reason } => Some(reason),
            _ => None,
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(executor) = self.executor.take() {
            let _ = executor.join();
        }
    }
}

/// An SC on this process's threads with the embedded store, on `private_address`.
fn start_sc(data_dir: &Path, private_address: &str) -> EmbeddedSc {
    let private_address = Some(private_address.parse().expect("an address"));
    EmbeddedSc::start_with(ScArgs { private_address, ..EmbeddedSc::args(data_dir) })
}

/// An SC on a Consul agent: active if it wins the lock, standby otherwise.
fn start_sc_on_consul(agent: &ConsulAgent) -> EmbeddedSc {
    EmbeddedSc::start_with(ScArgs {
        data_dir: None,
        store: Some(StoreBackend::Consul),
        consul_address: Some(agent.http_address()),
        cluster: Some("sc-link".into()),
        ..EmbeddedSc::args(Path::new(""))
    })
}

fn register_spu(admin: &mut AdminClient, id: i32) {
    let spec = SpuSpec { id: SpuId(id), spu_type: SpuType::Custom, ..SpuSpec::default() };
    assert!(admin.register_spu(spec).unwrap().error_code.is_ok());
}

fn create_topic(admin: &mut AdminClient, name: &str, partitions: u32) {
    let spec = TopicSpec::computed(partitions, 1);
    assert!(admin.create_topic(TopicName::new(name).unwrap(), spec).unwrap().error_code.is_ok());
}

fn wait_for<T>(what: &str, condition: impl FnMut() -> Option<T>) -> T {
    wait_for_within(what, EVENT_TIMEOUT, condition)
}

fn status_report(key: &PartitionKey, high_watermark: i64) -> LiveReplicaStatus {
    let leader = ReplicaStatus {
        spu: SpuId(1),
        high_watermark: Offset(high_watermark),
        log_end_offset: Offset(high_watermark),
        durable_end_offset: Offset(high_watermark),
        lag_records: 0,
    };
    LiveReplicaStatus {
        spu: SpuId(1),
        replicas: vec![LiveReplica {
            key: key.clone(),
            leader_epoch: LeaderEpoch(0),
            leader,
            followers: vec![],
        }],
    }
}

fn recorded_high_watermark(admin: &mut AdminClient, key: &PartitionKey) -> Option<i64> {
    let partitions = admin.list_partitions(None).ok()?.partitions;
    let entry = partitions.into_iter().find(|entry| &entry.key == key)?;
    Some(entry.status.leader.high_watermark.get())
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn registers_follows_topics_and_survives_an_sc_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sc = start_sc(&dir.path().join("sc"), "127.0.0.1:0");
    let mut admin = sc.admin();
    register_spu(&mut admin, 1);
    // A dead first address: the link moves on to the next one.
    let link = Link::start(vec![closed_port(), sc.private_address.to_string()], 1);
    assert_eq!(link.connected(), sc.private_address);
    let spus = link.expect("SPU specs", |event| match event {
        ScLinkEvent::Spus(spus) => Some(spus),
        _ => None,
    });
    assert!(spus.contains_key(&SpuId(1)));
    wait_for("the SC to record the reported cores", || {
        let spus = admin.list_spus().ok()?.spus;
        (spus.first()?.status.core_public_ports == [19105, 19106]).then_some(())
    });

    create_topic(&mut admin, "first", 2);
    let first = link.replicas(2);
    assert!(first.values().all(|assignment| assignment.spec.leader == SpuId(1)));
    create_topic(&mut admin, "second", 3);
    let both = link.replicas(5);
    assert!(first.keys().all(|key| both.contains_key(key)), "a delta adds to the set");

    let key = PartitionKey::new(TopicName::new("first").unwrap(), PartitionId(0));
    link.status.send(status_report(&key, 42)).unwrap();
    wait_for("live replica status recorded", || {
        (recorded_high_watermark(&mut admin, &key)? == 42).then_some(())
    });

    // Restart the SC on the same port; status reported meanwhile reaches the new SC.
    let private = sc.private_address.to_string();
    sc.stop();
    let reason = link.disconnected();
    assert!(!reason.is_empty());
    link.status.send(status_report(&key, 77)).unwrap();
    let sc = start_sc(&dir.path().join("sc"), &private);
    assert_eq!(link.connected().to_string(), private);
    let again = link.replicas(5);
    assert_eq!(again, both, "the full snapshot after reconnecting is the same replica set");
    let mut admin = sc.admin();
    wait_for("status resent to the restarted SC", || {
        (recorded_high_watermark(&mut admin, &key)? == 77).then_some(())
    });
}

#[test]
fn unknown_spu_is_refused_until_registered() {
    let dir = tempfile::tempdir().unwrap();
    let sc = start_sc(&dir.path().join("sc"), "127.0.0.1:0");
    let link = Link::start(vec![sc.private_address.to_string()], 7);
    // Refused: no connection while the SPU is unknown (several retries fit in this window).
    match link.events.recv_timeout(Duration::from_secs(1)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("an unknown SPU must not be connected: {other:?}"),
    }
    let mut admin = sc.admin();
    register_spu(&mut admin, 7);
    assert_eq!(link.connected(), sc.private_address, "the link keeps retrying");
}

/// A scripted SC: accepts one registration, then does what the test says.
struct ScriptedSc {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl ScriptedSc {
    fn accept(listener: &TcpListener) -> ScriptedSc {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut sc = ScriptedSc { stream, decoder: FrameDecoder::new(1 << 20) };
        let frame = sc.next(ApiKey::SpuRegister);
        let request = SpuRegisterRequest::decode(frame.header.api_version, &frame.body).unwrap();
        assert_eq!(request, registration(1));
        sc.write(frame.header, &SpuRegisterResponse::Accepted);
        sc
    }

    fn write<M: Encode>(&mut self, header: FrameHeader, message: &M) {
        let mut out = Vec::new();
        encode_frame(&mut out, &header, message).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    fn push(&mut self, update: &ReplicaUpdate) {
        let header = FrameHeader {
            api_key: ApiKey::ReplicaUpdate,
            api_version: ApiVersion(0),
            correlation_id: CorrelationId(9),
        };
        self.write(header, update);
    }

    /// The next frame with `key` (heartbeats and others skipped).
    fn next(&mut self, key: ApiKey) -> Frame {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(frame) = self.decoder.next_frame().unwrap() {
                if frame.header.api_key == key {
                    return frame;
                }
            }
            assert!(Instant::now() < deadline, "no {key} from the SPU");
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the SPU closed the connection"),
                Ok(read) => self.decoder.feed(&chunk[..read]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) => panic!("read: {error}"),
            }
        }
    }
}

fn assignment(partition: u32) -> ReplicaAssignment {
    let key = PartitionKey::new(TopicName::new("gap").unwrap(), PartitionId(partition));
    let spec = PartitionSpec { leader: SpuId(1), ..PartitionSpec::default() };
    ReplicaAssignment { key, spec, in_sync: Default::default() }
}

#[test]
fn epoch_gap_asks_for_a_snapshot_and_silence_drops_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let link = Link::start_with(vec![address], 1, SCRIPTED_HEARTBEAT_INTERVAL);
    let mut sc = ScriptedSc::accept(&listener);
    link.connected();
    sc.push(&ReplicaUpdate { epoch: UpdateEpoch(1), changes: Changes::Full(vec![assignment(0)]) });
    link.replicas(1);
    // Epoch 2 never arrives: the delta on top of it is a gap.
    let changes = vec![Change::Upsert(assignment(1))];
    let skipped = Changes::Delta { base_epoch: UpdateEpoch(2), changes };
    sc.push(&ReplicaUpdate { epoch: UpdateEpoch(3), changes: skipped });
    let frame = sc.next(ApiKey::RequestSnapshot);
    let request = RequestSnapshot::decode(frame.header.api_version, &frame.body).unwrap();
    assert_eq!(request.kind, SnapshotKind::Replicas);
    assert_eq!(request.last_applied, Some(UpdateEpoch(1)));
    let full = Changes::Full(vec![assignment(0), assignment(1), assignment(2)]);
    sc.push(&ReplicaUpdate { epoch: UpdateEpoch(4), changes: full });
    link.replicas(3);

    // The SC goes silent (its heartbeats stop, ours go unanswered): the link drops it.
    let reason = link.disconnected();
    assert!(reason.contains("heartbeat"), "{reason}");
    drop(sc);
    // And reconnects.
    let _again = ScriptedSc::accept(&listener);
    link.connected();
}

#[test]
fn standby_is_skipped_and_the_link_follows_the_new_active_sc() {
    let agent = consul_agent();
    let active = start_sc_on_consul(&agent);
    assert!(active.is_active());
    let standby = start_sc_on_consul(&agent);
    assert!(!standby.is_active(), "the second SC on the same cluster stands by");
    let mut admin = active.admin();
    register_spu(&mut admin, 1);
    create_topic(&mut admin, "orders", 3);
    wait_for("partitions", || {
        (admin.list_partitions(None).ok()?.partitions.len() == 3).then_some(())
    });

    // The standby comes first in the list: it refuses with NotController, the link moves on.
    let addresses = vec![standby.private_address.to_string(), active.private_address.to_string()];
    let link = Link::start(addresses, 1);
    assert_eq!(link.connected(), active.private_address);
    let before = link.replicas(3);

    // A clean stop releases the lock: the standby takes over and the link follows it.
    active.stop();
    link.disconnected();
    assert_eq!(link.connected(), standby.private_address);
    assert!(standby.is_active());
    assert_eq!(link.replicas(3), before, "the new active SC sends the same replica set");
}
