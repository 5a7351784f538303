//! One core's state: the replicas it owns, the desired replica set (to route any partition to
//! its owning core), and its end of the cross-core mesh.
//!
//! Ownership: a [`Core`] is created inside its executor and shared (`Rc`) by that executor's
//! tasks only. Replicas are opened and closed by one reconcile task per core, in the order the
//! replica sets arrive, so two opens of one directory never race. A removed replica is closed
//! (its files stay); adding it again reopens the same directory.
//!
//! Routing ([`Core::route`]): a partition absent from the desired set is
//! `UnknownTopicOrPartition` (the SC sends an SPU only the replicas it hosts, so this includes
//! partitions hosted by other SPUs); one this SPU hosts as a follower is `NotLeader`; else its
//! owner core is the placement the SC chose. Both codes are retriable after a metadata refresh. On the owner, a replica still opening is `ReplicaNotAvailable`
//! (retriable).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::channel_mesh::Senders;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::TaskQueueHandle;
use sluice_proto::api::control::{
    AlterInSyncPartition, AlterInSyncRequest, AlterInSyncResult, ReplicaAssignment,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{CoreId, SpuId};
use sluice_proto::object::PartitionKey;

use crate::config::SpuConfig;
use crate::metrics::{CoreProbe, Counter, Gauge};
use crate::replication::fetcher::Fetchers;
use crate::server::deleted;
use crate::server::replica::{log_config, Replica};
use crate::server::shard::{ReplicaSet, ShardMessage, ShardOp, ShardReply};
use crate::storage::{ReplicaLog, SegmentFileCache};
use crate::tls::CoreTlsHandle;

/// Where a partition's requests go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// This core owns it.
    Local,
    /// Another core of this SPU owns it.
    Remote(usize),
}

/// The task queues of a core: client traffic, replication, background work.
#[derive(Clone, Copy, Debug)]
pub struct Queues {
    /// Connections and their requests.
    pub client: TaskQueueHandle,
    /// Follower fetches (the private port).
    pub replication: TaskQueueHandle,
    /// Retention, relaxed flushes, status reports, replica opening.
    pub background: TaskQueueHandle,
}

/// A core's shared state.
pub struct Core {
    /// This core's index (= its CPU and its mesh peer id).
    pub index: usize,
    /// Cores of this SPU.
    pub cores: usize,
    /// The process configuration.
    pub config: Arc<SpuConfig>,
    /// Task queues.
    pub queues: Queues,
    desired: RefCell<ReplicaSet>,
    replicas: RefCell<HashMap<PartitionKey, Rc<Replica>>>,
    files: SegmentFileCache,
    mesh: Senders<ShardMessage>,
    pending: RefCell<HashMap<u64, LocalSender<ShardReply>>>,
    next_request_id: Cell<u64>,
    reconcile: RefCell<Option<LocalSender<ReplicaSet>>>,
    /// This core's metrics (written only here).
    pub probe: Rc<CoreProbe>,
    /// The fetcher tasks of this core's follower replicas.
    pub fetchers: Fetchers,
    /// Core 0: where in-sync proposals go to the SC link.
    link_requests: RefCell<Option<LocalSender<AlterInSyncRequest>>>,
    /// This core's TLS configurations (`None`: plaintext).
    pub tls: CoreTlsHandle,
    /// ACLs, token digests and enforcement as the SC last pushed them.
    pub security: crate::server::access::SecurityCell,
}

/// Replica sets waiting for the reconcile task at most: only the latest matters, so a small
/// bound suffices (a full queue drops the older set in favour of a later one).
const RECONCILE_QUEUE_CAPACITY: usize = 4;

impl Core {
    /// A core with no replicas; returns the receiver the reconcile task reads.
    pub fn new(
        index: usize,
        config: Arc<SpuConfig>,
        queues: Queues,
        mesh: Senders<ShardMessage>,
        probe: Rc<CoreProbe>,
        tls: CoreTlsHandle,
    ) -> (Rc<Core>, LocalReceiver<ReplicaSet>) {
        let (reconcile, sets) = local_channel::new_bounded(RECONCILE_QUEUE_CAPACITY);
        let core = Rc::new(Core {
            index,
            cores: usize::from(config.cores),
            config,
            queues,
            desired: RefCell::new(Arc::new(BTreeMap::new())),
            replicas: RefCell::new(HashMap::new()),
            files: SegmentFileCache::default(),
            mesh,
            pending: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            reconcile: RefCell::new(Some(reconcile)),
            probe,
            fetchers: Fetchers::default(),
            link_requests: RefCell::new(None),
            tls,
            security: crate::server::access::SecurityCell::default(),
        });
        (core, sets)
    }

    /// Enforces `update` on this core (unless older than the current one) and publishes the
    /// version enforced, which core 0's SC link reports once every core has it.
    pub fn apply_security(&self, update: &sluice_proto::api::security::SecurityUpdate) {
        self.security.apply(update);
        let version = i64::try_from(self.security.get().version).unwrap_or(i64::MAX);
        self.probe.set(crate::metrics::Gauge::SecurityVersion, version);
    }

    /// This SPU's id.
    pub fn spu(&self) -> SpuId {
        self.config.id
    }

    /// The core of this SPU that owns a replica the SC placed on `core`. The SC places by the
    /// core count the SPU registered; an SPU restarted with fewer cores folds the extra ones
    /// onto its existing cores instead of leaving their replicas unserved.
    pub fn owner_core(&self, core: CoreId) -> usize {
        core.index() % self.cores.max(1)
    }

    /// Where requests for `key` go, or the error code that answers them.
    pub fn route(&self, key: &PartitionKey) -> Result<Route, ErrorCode> {
        let desired = self.desired.borrow();
        let spec = &desired.get(key).ok_or(ErrorCode::UnknownTopicOrPartition)?.spec;
        if spec.leader != self.spu() {
            return Err(ErrorCode::NotLeader);
        }
        let placement = spec.leader_placement().ok_or(ErrorCode::LeaderNotAvailable)?;
        let owner = self.owner_core(placement.core);
        Ok(if owner == self.index { Route::Local } else { Route::Remote(owner) })
    }

    /// The open replica `key` on this core, if this core owns and leads it.
    pub fn local_replica(&self, key: &PartitionKey) -> Result<Rc<Replica>, ErrorCode> {
        match self.route(key)? {
            Route::Local => {}
            Route::Remote(_) => return Err(ErrorCode::NotLeader),
        }
        let replica = self.replicas.borrow().get(key).cloned();
        match replica {
            Some(replica) if replica.is_leader() => Ok(replica),
            Some(_) => Err(ErrorCode::NotLeader),
            None => Err(ErrorCode::ReplicaNotAvailable),
        }
    }

    /// The open replica `key` if this core owns it, whatever its role.
    pub fn hosted_replica(&self, key: &PartitionKey) -> Option<Rc<Replica>> {
        self.replicas.borrow().get(key).cloned()
    }

    /// Core 0: connects the in-sync proposals to the SC link.
    pub fn set_link_requests(&self, sender: LocalSender<AlterInSyncRequest>) {
        *self.link_requests.borrow_mut() = Some(sender);
    }

    /// Sends in-sync proposals of this core's leaders to the SC (through core 0). A full queue
    /// or a lost link drops them: the leader proposes again after its proposal timeout.
    pub async fn send_proposals(&self, partitions: Vec<AlterInSyncPartition>) {
        if partitions.is_empty() {
            return;
        }
        self.probe.add(Counter::InSyncProposals, partitions.len() as u64);
        if self.index != 0 {
            self.send_to(0, ShardMessage::AlterInSync(partitions)).await;
            return;
        }
        let link = self.link_requests.borrow();
        let Some(link) = link.as_ref() else { return };
        let request = AlterInSyncRequest { spu: self.spu(), partitions };
        if link.try_send(request).is_err() {
            tracing::debug!("in-sync proposals queue full; the leaders propose again later");
        }
    }

    /// Applies the SC's answers to this core's leaders; core 0 routes others' to their core.
    pub async fn deliver_in_sync_answers(&self, results: Vec<AlterInSyncResult>) {
        let mut others: BTreeMap<usize, Vec<AlterInSyncResult>> = BTreeMap::new();
        for result in results {
            let owner = self.placement_core(&result.key);
            match owner {
                Some(owner) if owner != self.index => others.entry(owner).or_default().push(result),
                _ => {
                    if let Some(replica) = self.hosted_replica(&result.key) {
                        replica.on_in_sync_answer(&result);
                    }
                }
            }
        }
        for (owner, results) in others {
            self.send_to(owner, ShardMessage::InSyncAnswers(results)).await;
        }
    }

    /// The core of this SPU owning `key`'s replica, from the desired set.
    fn placement_core(&self, key: &PartitionKey) -> Option<usize> {
        let desired = self.desired.borrow();
        let assignment = desired.get(key)?;
        let spu = self.spu();
        let placement = assignment.spec.replicas.iter().find(|replica| replica.spu == spu)?;
        Some(self.owner_core(placement.core))
    }

    /// Every open replica of this core.
    pub fn replicas(&self) -> Vec<Rc<Replica>> {
        self.replicas.borrow().values().cloned().collect()
    }

    /// Takes a new desired replica set: routing uses it at once, the reconcile task opens and
    /// closes this core's replicas.
    pub fn set_desired(&self, set: ReplicaSet) {
        *self.desired.borrow_mut() = Arc::clone(&set);
        let reconcile = self.reconcile.borrow();
        let Some(reconcile) = reconcile.as_ref() else { return };
        if reconcile.try_send(set).is_err() {
            // The queue holds sets not applied yet; the reconcile task applies the latest
            // desired set whenever it takes one, so dropping this one loses nothing.
            tracing::debug!(core = self.index, "reconcile queue full");
        }
    }

    /// Ends the reconcile task once it has applied what is queued; it then closes every
    /// replica (shutdown).
    pub fn stop_reconcile(&self) {
        self.reconcile.borrow_mut().take();
    }

    /// The desired set in force.
    pub fn desired(&self) -> ReplicaSet {
        Arc::clone(&self.desired.borrow())
    }

    /// The replicas this core must host: placed on this SPU and this core.
    fn wanted_here(&self, set: &ReplicaSet) -> BTreeMap<PartitionKey, ReplicaAssignment> {
        let spu = self.spu();
        set.iter()
            .filter(|(_, assignment)| {
                assignment.spec.replicas.iter().any(|replica| {
                    replica.spu == spu && self.owner_core(replica.core) == self.index
                })
            })
            .map(|(key, assignment)| (key.clone(), assignment.clone()))
            .collect()
    }

    /// Runs the reconcile task: opens, updates and closes replicas as sets arrive.
    pub async fn run_reconcile(self: Rc<Self>, sets: LocalReceiver<ReplicaSet>) {
        while sets.recv().await.is_some() {
            let latest = self.desired();
            self.reconcile_once(&latest).await;
        }
        self.fetchers.stop_all();
        for replica in self.replicas() {
            replica.close().await;
        }
        self.replicas.borrow_mut().clear();
    }

    /// Gives every replica of this core an equal share of the core's tail cache budget
    /// (`--tail-cache-bytes`): the memory kept is bounded per core however many partitions
    /// it hosts.
    fn share_tail_cache(&self) {
        let replicas = self.replicas();
        let budget = usize::try_from(self.config.tail_cache_bytes).unwrap_or(usize::MAX);
        let share = budget / replicas.len().max(1);
        for replica in replicas {
            replica.log().set_tail_cache_bytes(share);
        }
    }

    fn count_replicas(&self) {
        let replicas = self.replicas();
        let leaders = replicas.iter().filter(|replica| replica.is_leader()).count();
        self.probe.set(Gauge::ReplicasLeader, leaders as i64);
        self.probe.set(Gauge::ReplicasFollower, (replicas.len() - leaders) as i64);
        let open = self.replicas.borrow().keys().cloned().collect();
        self.probe.health().set_replicas_open(self.index, open);
    }

    async fn reconcile_once(self: &Rc<Self>, set: &ReplicaSet) {
        let wanted = self.wanted_here(set);
        let obsolete: Vec<Rc<Replica>> = self
            .replicas
            .borrow()
            .iter()
            .filter(|(key, _)| !wanted.contains_key(*key))
            .map(|(_, replica)| Rc::clone(replica))
            .collect();
        for replica in obsolete {
            self.replicas.borrow_mut().remove(replica.key());
            replica.close().await;
            match deleted::mark_deleted(replica.log().directory()) {
                Ok(marked) => tracing::info!(
                    core = self.index,
                    key = %replica.key(),
                    directory = %marked.display(),
                    "replica removed; its files go after the deleted-replica retention"
                ),
                Err(error) => tracing::warn!(
                    core = self.index,
                    key = %replica.key(),
                    %error,
                    "replica removed; its directory could not be marked deleted and stays"
                ),
            }
        }
        for (key, assignment) in wanted {
            let existing = self.replicas.borrow().get(&key).cloned();
            match existing {
                Some(replica) => {
                    if replica.spec() != assignment.spec || replica.in_sync() != assignment.in_sync
                    {
                        replica
                            .apply_assignment(assignment.spec, assignment.in_sync, &self.config)
                            .await;
                    }
                }
                None => self.open_replica(key, assignment).await,
            }
        }
        self.share_tail_cache();
        self.count_replicas();
        self.fetchers.reconcile(self);
    }

    async fn open_replica(&self, key: PartitionKey, assignment: ReplicaAssignment) {
        let ReplicaAssignment { spec, in_sync, .. } = assignment;
        let directory = self.config.replicas_dir().join(key.to_string());
        let config = log_config(&spec, &self.config);
        match ReplicaLog::open(&directory, config, self.files.clone()).await {
            Ok(log) => {
                log.set_observer(Rc::clone(&self.probe) as Rc<dyn crate::storage::LogObserver>);
                tracing::info!(
                    core = self.index,
                    %key,
                    log_end = %log.log_end_offset(),
                    "replica open"
                );
                let replica = Replica::new(key.clone(), log, spec.clone(), &self.config);
                replica.apply_assignment(spec, in_sync, &self.config).await;
                self.replicas.borrow_mut().insert(key, replica);
            }
            Err(error) => {
                tracing::error!(core = self.index, %key, %error, "cannot open the replica");
            }
        }
    }

    /// Sends `op` to `owner` and waits for its reply.
    pub async fn forward(&self, owner: usize, op: ShardOp) -> ShardReply {
        let id = self.next_request_id.get();
        self.next_request_id.set(id.wrapping_add(1));
        self.probe.add(Counter::RequestsForwarded, 1);
        let (sender, receiver) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, sender);
        // Removes the entry however this future ends (a caller may drop it mid-wait).
        let _pending = PendingGuard { core: self, id };
        if self.mesh.send_to(owner, ShardMessage::Request { id, op }).await.is_err() {
            return ShardReply::Failed(ErrorCode::ReplicaNotAvailable);
        }
        receiver.recv().await.unwrap_or(ShardReply::Failed(ErrorCode::ReplicaNotAvailable))
    }

    /// Delivers a reply to the task waiting for it (dropped when nobody waits any more).
    pub fn deliver_reply(&self, id: u64, reply: ShardReply) {
        let waiting = self.pending.borrow_mut().remove(&id);
        if let Some(sender) = waiting {
            let _ = sender.try_send(reply);
        }
    }

    /// Sends a message to another core (replies, replica sets, status).
    pub async fn send_to(&self, peer: usize, message: ShardMessage) -> bool {
        self.mesh.send_to(peer, message).await.is_ok()
    }

    /// Closes this core's side of the mesh (shutdown).
    pub fn close_mesh(&self) {
        self.mesh.close();
    }
}

struct PendingGuard<'a> {
    core: &'a Core,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.core.pending.borrow_mut().remove(&self.id);
    }
}
