//! The follower side's I/O: one task and one connection per (this core, leader SPU, leader
//! core), carrying every follower replica of this core whose leader replica lives on that
//! core. The decisions are the replicas' follower state machines ([`super::follower`], through
//! [`Replica::follower_step`] and friends); this module only moves bytes.
//!
//! One round of a session: epoch questions for every replica that must find its divergence
//! point (one request), else one long-poll follower fetch for every replica that is fetching,
//! carrying each replica's appended end and acknowledged (durable) end. The leader's batches
//! are appended at each log's end, exactly as they came, and the next fetch is sent once they
//! are acknowledged here (durable), so the leader learns the new durable ends in it: a round
//! costs a network round trip plus a write round and an fdatasync per partition that moved,
//! the fdatasyncs of a round's partitions running concurrently.
//!
//! Membership ([`Fetchers::reconcile`]) follows the core's replicas after every replica set
//! and every SPU update: a replica moves to the group of its new leader, a group without
//! members stops. Failure modes: a refused connection, a dead leader or a silent one (no
//! answer within the long poll plus [`ANSWER_GRACE`]) ends the session; the task reconnects
//! with a backoff, or stops when its group is emptied (the SC elected a new leader elsewhere).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use sluice_proto::api::control::SpuPeer;
use sluice_proto::api::fetch::FetchResponse;
use sluice_proto::api::replication::{
    EpochQuery, FollowerFetchPartition, FollowerFetchRequest, FollowerFetchTopic,
    LeaderEpochEndOffsetRequest, LeaderEpochEndOffsetResponse,
};
use sluice_proto::api::{ApiVersion, Decode, Request};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_request, Frame, FrameDecoder};
use sluice_proto::ids::{CorrelationId, LeaderEpoch, SpuId};
use sluice_proto::object::{PartitionKey, TopicName};
use sluice_tls::spu_name;

use super::role::{FetchPosition, FollowerStep};
use super::serve::decode_answer;
use crate::metrics::Counter;
use crate::server::core::Core;
use crate::server::replica::Replica;
use crate::storage::signal::Signal;
use crate::tls::{HandshakeError, LinkStream};

/// How long the leader may hold a fetch that finds nothing new.
pub const FETCH_WAIT_MS: u32 = 500;
/// Record bytes per fetch answer at most (over every partition of a connection): bounds the
/// follower's receive buffer per connection.
pub const FETCH_BYTES_MAX: u32 = 8 << 20;
/// Record bytes per partition per fetch answer at most.
pub const PARTITION_FETCH_BYTES_MAX: u32 = 4 << 20;
/// Longest wait for a connection to a leader core.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An answer later than the request's own wait plus this is taken for a dead leader.
pub const ANSWER_GRACE: Duration = Duration::from_secs(5);
/// First and longest pause between connection attempts to one leader core.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest frame a leader may answer with: the fetch maximum plus headers.
const FRAME_BYTES_MAX: u32 = FETCH_BYTES_MAX + (1 << 20);
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Idle wait when no replica of a group has anything to do.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// A leader's core: where a group of follower replicas fetches from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaderCore {
    /// The leader SPU.
    pub spu: SpuId,
    /// The core of that SPU owning the leader replicas.
    pub core: usize,
}

/// The follower replicas of one group and its task's controls.
#[derive(Default)]
struct Group {
    members: RefCell<BTreeMap<PartitionKey, Rc<Replica>>>,
    changed: Signal,
    stopped: Cell<bool>,
}

impl Group {
    /// Waits until the group changes or `timeout` passes.
    async fn changed_or(&self, generation: u64, timeout: Duration) {
        let changed = self.changed.changed(generation);
        let expired = glommio::timer::sleep(timeout);
        future::or(changed, async {
            expired.await;
        })
        .await;
    }
}

/// A core's fetcher tasks, grouped by leader core.
#[derive(Default)]
pub struct Fetchers {
    peers: RefCell<Arc<BTreeMap<SpuId, SpuPeer>>>,
    groups: RefCell<HashMap<LeaderCore, Rc<Group>>>,
}

impl Fetchers {
    /// Takes the SC's view of the peers (their replication ports) and regroups.
    pub fn set_peers(&self, core: &Rc<Core>, peers: Arc<BTreeMap<SpuId, SpuPeer>>) {
        *self.peers.borrow_mut() = peers;
        for group in self.groups.borrow().values() {
            group.changed.notify();
        }
        self.reconcile(core);
    }

    /// The address of a leader core's private port, once the peer is known.
    fn address(&self, leader: LeaderCore) -> Option<SocketAddr> {
        let peers = self.peers.borrow();
        let peer = peers.get(&leader.spu)?;
        let port = match peer.core_private_ports.get(leader.core) {
            Some(port) => *port,
            None => peer.spec.private_endpoint.port,
        };
        let host = peer.spec.private_endpoint.host.as_str();
        (host, port).to_socket_addrs().ok()?.next()
    }

    /// The leader core a follower replica fetches from: the core its leader's placement names,
    /// folded onto the leader's core count (as the leader folds it).
    fn leader_core(&self, replica: &Replica, leader: SpuId) -> LeaderCore {
        let placed = replica
            .spec()
            .replicas
            .iter()
            .find(|placement| placement.spu == leader)
            .map_or(0, |placement| placement.core.index());
        let cores =
            self.peers.borrow().get(&leader).map_or(0, |peer| peer.core_private_ports.len());
        LeaderCore { spu: leader, core: if cores == 0 { placed } else { placed % cores } }
    }

    /// Regroups the core's follower replicas; starts and stops tasks as groups appear and go.
    pub fn reconcile(&self, core: &Rc<Core>) {
        let mut wanted: HashMap<LeaderCore, BTreeMap<PartitionKey, Rc<Replica>>> = HashMap::new();
        for replica in core.replicas() {
            if let Some((leader, _)) = replica.followed() {
                let group = self.leader_core(&replica, leader);
                wanted.entry(group).or_default().insert(replica.key().clone(), replica);
            }
        }
        let mut groups = self.groups.borrow_mut();
        groups.retain(|leader, group| {
            let keep = wanted.contains_key(leader);
            if !keep {
                group.stopped.set(true);
                group.changed.notify();
            }
            keep
        });
        for (leader, members) in wanted {
            let group = groups.entry(leader).or_insert_with(|| {
                let group = Rc::new(Group::default());
                let task = run_group(Rc::clone(core), leader, Rc::clone(&group));
                match glommio::spawn_local_into(task, core.queues.replication) {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(error) => tracing::error!(%error, "cannot start a fetcher"),
                }
                group
            });
            let changed = {
                let current = group.members.borrow();
                current.len() != members.len()
                    || current
                        .iter()
                        .zip(&members)
                        .any(|((a, x), (b, y))| a != b || !Rc::ptr_eq(x, y))
            };
            if changed {
                *group.members.borrow_mut() = members;
                group.changed.notify();
            }
        }
    }

    /// Stops every task (shutdown).
    pub fn stop_all(&self) {
        for (_, group) in self.groups.borrow_mut().drain() {
            group.stopped.set(true);
            group.changed.notify();
        }
    }
}

/// One group's task: connects to the leader core and runs sessions until the group stops.
async fn run_group(core: Rc<Core>, leader: LeaderCore, group: Rc<Group>) {
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    while !group.stopped.get() {
        let generation = group.changed.generation();
        let Some(address) = core.fetchers.address(leader) else {
            if !warned {
                warned = true;
                tracing::warn!(
                    leader = %leader.spu,
                    core = leader.core,
                    "the leader's private endpoint is not known or does not resolve; its followers here wait (check the SPU's registered private endpoint)"
                );
            }
            group.changed_or(generation, IDLE_WAIT).await;
            continue;
        };
        // With TLS the leader is verified as `spu-<leader id>.<cluster>`, whatever its address.
        let tls = core.tls.as_deref().map(|tls| (tls, spu_name(leader.spu.get(), tls.cluster())));
        match LinkStream::connect(address, CONNECT_TIMEOUT, tls).await {
            Ok(stream) => {
                tracing::debug!(leader = %leader.spu, core = leader.core, %address, "fetching");
                let mut session = Session::new(stream, core.spu());
                let reason = session.run(&core, &group).await;
                if !group.stopped.get() {
                    tracing::info!(leader = %leader.spu, %address, %reason, "fetch session ended");
                }
                backoff = BACKOFF_MIN;
            }
            Err(HandshakeError::Connect(error)) => {
                tracing::debug!(leader = %leader.spu, %address, %error, "cannot reach the leader");
            }
            Err(error) => {
                tracing::warn!(leader = %leader.spu, %address, %error, "TLS with the leader failed");
            }
        }
        if group.stopped.get() {
            return;
        }
        group.changed_or(generation, backoff).await;
        backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
    }
}

/// A question about one replica's epoch, asked in a batch.
struct Question {
    replica: Rc<Replica>,
    asked: LeaderEpoch,
    followed: LeaderEpoch,
    generation: u64,
}

/// One connection to a leader core.
struct Session {
    stream: LinkStream,
    decoder: FrameDecoder,
    chunk: Vec<u8>,
    me: SpuId,
    next_correlation_id: i32,
}

impl Session {
    fn new(stream: LinkStream, me: SpuId) -> Session {
        Session {
            stream,
            decoder: FrameDecoder::new(FRAME_BYTES_MAX),
            chunk: vec![0; READ_CHUNK_BYTES],
            me,
            next_correlation_id: 1,
        }
    }

    /// Rounds until the group stops or the connection fails; returns why it ended.
    async fn run(&mut self, core: &Rc<Core>, group: &Group) -> String {
        loop {
            if group.stopped.get() {
                return "the group stopped".into();
            }
            let members: Vec<Rc<Replica>> = group.members.borrow().values().cloned().collect();
            let now = Instant::now();
            let mut questions = Vec::new();
            let mut fetches = Vec::new();
            let mut wake_at: Option<Instant> = None;
            for replica in members {
                match replica.follower_step(now) {
                    FollowerStep::NotFollowing => {}
                    FollowerStep::AskEpoch { asked, followed, generation } => {
                        questions.push(Question { replica, asked, followed, generation })
                    }
                    FollowerStep::Fetch(position) => fetches.push((replica, position)),
                    FollowerStep::WaitUntil(at) => {
                        wake_at = Some(wake_at.map_or(at, |current| current.min(at)))
                    }
                }
            }
            let outcome = if !questions.is_empty() {
                self.ask(questions).await
            } else if !fetches.is_empty() {
                self.fetch(core, fetches).await
            } else {
                let generation = group.changed.generation();
                let wait = wake_at.map_or(IDLE_WAIT, |at| at.saturating_duration_since(now));
                group.changed_or(generation, wait.min(IDLE_WAIT)).await;
                Ok(())
            };
            if let Err(reason) = outcome {
                return reason;
            }
        }
    }

    async fn call<R: Request>(&mut self, request: &R, wait: Duration) -> Result<Frame, String> {
        let correlation_id = CorrelationId(self.next_correlation_id);
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut out = Vec::new();
        encode_request(&mut out, ApiVersion(0), correlation_id, request)
            .map_err(|error| format!("encode: {error}"))?;
        self.stream.write_all(&out).await.map_err(|error| format!("write: {error}"))?;
        // TLS keeps written bytes in its records until flushed (a no-op on plaintext).
        self.stream.flush().await.map_err(|error| format!("write: {error}"))?;
        let deadline = Instant::now() + wait + ANSWER_GRACE;
        let frame = loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(error) => return Err(format!("bad frame from the leader: {error}")),
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err("no answer from the leader in time".into());
            }
            let read = future::or(async { Some(self.stream.read(&mut self.chunk).await) }, async {
                glommio::timer::sleep(remaining).await;
                None
            })
            .await;
            match read {
                None => return Err("no answer from the leader in time".into()),
                Some(Ok(0)) => return Err("closed by the leader".into()),
                Some(Ok(count)) => self.decoder.feed(&self.chunk[..count]),
                Some(Err(error)) => return Err(format!("read: {error}")),
            }
        };
        if frame.header.correlation_id != correlation_id || frame.header.api_key != R::API_KEY {
            return Err(format!("unexpected answer {} from the leader", frame.header.api_key));
        }
        Ok(frame)
    }

    /// The leader refused this SPU's identity (its certificate does not name this SPU).
    fn refused(&self, code: ErrorCode) -> String {
        let reason = format!(
            "the leader refused SPU {} ({code}): the certificate this SPU presents does not name \
             it (see the leader's log)",
            self.me
        );
        tracing::warn!(spu = %self.me, %reason, "replication refused");
        reason
    }

    async fn ask(&mut self, questions: Vec<Question>) -> Result<(), String> {
        let request = LeaderEpochEndOffsetRequest {
            follower: self.me,
            queries: questions
                .iter()
                .map(|question| EpochQuery {
                    key: question.replica.key().clone(),
                    leader_epoch: question.asked,
                })
                .collect(),
        };
        let frame = self.call(&request, Duration::ZERO).await?;
        let response = LeaderEpochEndOffsetResponse::decode(frame.header.api_version, &frame.body)
            .map_err(|error| format!("undecodable epoch answer: {error}"))?;
        if let Some(refused) = response
            .results
            .iter()
            .find(|result| result.error_code == ErrorCode::AuthorizationFailed)
        {
            return Err(self.refused(refused.error_code));
        }
        if response.results.len() != questions.len() {
            return Err("epoch answers do not match the questions".into());
        }
        for (question, result) in questions.iter().zip(&response.results) {
            if &result.key != question.replica.key() {
                return Err("epoch answers do not match the questions".into());
            }
            let answer = decode_answer(result);
            let replica = &question.replica;
            replica
                .on_epoch_answer(question.followed, question.generation, question.asked, answer)
                .await;
        }
        Ok(())
    }

    async fn fetch(
        &mut self,
        core: &Rc<Core>,
        fetches: Vec<(Rc<Replica>, FetchPosition)>,
    ) -> Result<(), String> {
        let mut topics: Vec<FollowerFetchTopic> = Vec::new();
        for (replica, position) in &fetches {
            let key = replica.key();
            let partition = FollowerFetchPartition {
                partition: key.partition,
                fetch_offset: position.fetch_offset,
                log_end_offset: position.acknowledged_end,
                leader_epoch: Some(position.epoch),
                last_fetched_epoch: position.last_fetched_epoch,
                partition_max_bytes: PARTITION_FETCH_BYTES_MAX,
            };
            match topics.iter_mut().find(|topic| topic.name == key.topic) {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(FollowerFetchTopic {
                    name: key.topic.clone(),
                    partitions: vec![partition],
                }),
            }
        }
        let request = FollowerFetchRequest {
            follower: self.me,
            max_wait_ms: FETCH_WAIT_MS,
            min_bytes: 1,
            max_bytes: FETCH_BYTES_MAX,
            topics,
        };
        let wait = Duration::from_millis(u64::from(FETCH_WAIT_MS));
        let frame = self.call(&request, wait).await?;
        let response = FetchResponse::<&[u8]>::decode(frame.header.api_version, &frame.body)
            .map_err(|error| format!("undecodable fetch answer: {error}"))?;
        if let Some(refused) = response
            .topics
            .iter()
            .flat_map(|topic| &topic.partitions)
            .find(|answer| answer.header.error_code == ErrorCode::AuthorizationFailed)
        {
            return Err(self.refused(refused.header.error_code));
        }
        let mut acknowledging = Vec::new();
        for topic in &response.topics {
            for answer in &topic.partitions {
                let Some((replica, position)) =
                    find(&fetches, &topic.name, answer.header.partition)
                else {
                    continue;
                };
                let header = answer.header;
                let appended = replica
                    .on_fetch_answer(
                        *position,
                        header.error_code,
                        header.log_start_offset,
                        answer.records,
                    )
                    .await;
                core.probe.add(Counter::ReplicationBytesFetched, answer.records.len() as u64);
                let replica = Rc::clone(replica);
                acknowledging.push(glommio::spawn_local(async move {
                    if let Some(appended) = appended {
                        if let Err(error) = replica.wait_acknowledged(&appended).await {
                            tracing::warn!(key = %replica.key(), %error, "replicated batches not made durable");
                        }
                    }
                    replica.adopt_leader_high_watermark(header.high_watermark);
                }));
            }
        }
        for task in acknowledging {
            task.await;
        }
        Ok(())
    }
}

fn find<'a>(
    fetches: &'a [(Rc<Replica>, FetchPosition)],
    topic: &TopicName,
    partition: sluice_proto::ids::PartitionId,
) -> Option<&'a (Rc<Replica>, FetchPosition)> {
    fetches.iter().find(|(replica, _)| {
        let key = replica.key();
        &key.topic == topic && key.partition == partition
    })
}
