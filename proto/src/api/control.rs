//! SC <-> SPU control protocol (postcard). The SPU opens the connection to the SC (the SC never
//! dials out) and sends [`SpuRegisterRequest`] first.
//!
//! After an accepted registration:
//! - the SC pushes [`SpuUpdate`] and [`ReplicaUpdate`] (one-way), each stamped with an
//!   [`UpdateEpoch`]: first a full snapshot, then deltas naming the epoch they apply on top of.
//!   An SPU that sees a delta whose base is not its current epoch ignores it and sends
//!   [`RequestSnapshot`]; the SC answers with full updates.
//! - either side sends [`HeartbeatRequest`] and answers [`HeartbeatResponse`].
//! - the SPU sends [`LiveReplicaStatus`] (one-way) for the replicas it leads whenever HW, LEO
//!   or the in-sync set change, and periodically as a backstop. It only reports: the SC keeps
//!   the in-sync set itself.
//! - a leader proposes a change of a partition's in-sync set with [`AlterInSyncRequest`]; the
//!   SC stores it only if the leader and its leader epoch are current and the proposal is based
//!   on the current [`PartitionEpoch`], and answers [`AlterInSyncResponse`] with the set it
//!   stored (or the one it keeps). The leader relies on a shrunken set only once it is stored,
//!   so a leader cut off from the SC can never commit alone (Kafka's AlterPartition).

use serde::{Deserialize, Serialize};

use crate::api::metadata::Changes;
use crate::api::{postcard_v0, requests, NoResponse};
use crate::error_code::ErrorCode;
use crate::ids::{LeaderEpoch, PartitionEpoch, SpuId, TimestampMs, UpdateEpoch};
use crate::object::{Endpoint, InSyncSet, PartitionKey, PartitionSpec, ReplicaStatus, SpuSpec};

/// An SPU introduces itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuRegisterRequest {
    /// Its id (must be registered with the SC).
    pub id: SpuId,
    /// Cores (shards) it runs.
    pub cores: u16,
    /// Public port per core, index = core; empty when only the shared port exists.
    pub core_public_ports: Vec<u16>,
    /// Private (replication) port per core, index = core.
    pub core_private_ports: Vec<u16>,
    /// Where clients reach it.
    pub public_endpoint: Endpoint,
    /// Where other SPUs reach it.
    pub private_endpoint: Endpoint,
    /// Its software version.
    pub version: String,
    /// A number the SPU process draws when it starts. Another one than last time tells the SC
    /// the process restarted, and may have lost the unsynced tail of its logs: the partitions
    /// it leads then continue in a new leader epoch. A reconnection keeps its epochs.
    pub incarnation: u64,
}

/// The SC's answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpuRegisterResponse {
    /// Registered; updates follow.
    Accepted,
    /// Refused (e.g. `UnknownSpu`, `NotController`); the SPU retries later or elsewhere.
    Refused {
        /// Why.
        error_code: ErrorCode,
        /// Details for the operator.
        reason: String,
    },
}

/// Liveness probe, either direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The sender's clock when sending.
    pub sent_at: TimestampMs,
}

/// Liveness answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The request's `sent_at`, echoed (round-trip time without clock agreement).
    pub request_sent_at: TimestampMs,
    /// The responder's clock.
    pub responder_time: TimestampMs,
}

/// How an SPU reaches a peer SPU: its spec and the private port of each of its cores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuPeer {
    /// The peer's spec (its private endpoint's host is where to connect).
    pub spec: SpuSpec,
    /// Private port per core of the peer, index = core (from its registration).
    pub core_private_ports: Vec<u16>,
    /// Whether the SC hears from it.
    pub online: bool,
}

/// SPU peers the receiving SPU needs (their per-core private ports).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuUpdate {
    /// Epoch after applying this update.
    pub epoch: UpdateEpoch,
    /// Full or delta.
    pub changes: Changes<SpuPeer, SpuId>,
}

/// A replica the receiving SPU must host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAssignment {
    /// Topic and partition.
    pub key: PartitionKey,
    /// Replicas, leader, epoch and storage settings.
    pub spec: PartitionSpec,
    /// The in-sync set as the SC stores it, with its version.
    pub in_sync: InSyncSet,
}

/// Replicas the receiving SPU hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaUpdate {
    /// Epoch after applying this update.
    pub epoch: UpdateEpoch,
    /// Full or delta; a removal stops the replica but keeps its files.
    pub changes: Changes<ReplicaAssignment, PartitionKey>,
}

/// Which snapshot an SPU needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// SPU specs.
    Spus,
    /// Replica assignments.
    Replicas,
    /// Both.
    All,
}

/// An SPU saw an epoch gap and asks for full snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSnapshot {
    /// What to resend.
    pub kind: SnapshotKind,
    /// The epoch the SPU last applied, for the SC's log.
    pub last_applied: Option<UpdateEpoch>,
}

/// Status of one replica the SPU leads (offsets only: the in-sync set is the SC's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveReplica {
    /// Topic and partition.
    pub key: PartitionKey,
    /// The epoch the leader leads in.
    pub leader_epoch: LeaderEpoch,
    /// The leader's own HW and LEO.
    pub leader: ReplicaStatus,
    /// Each follower's LEO and lag, as the leader sees it.
    pub followers: Vec<ReplicaStatus>,
}

/// Live replica status (LRS) for replicas the SPU leads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveReplicaStatus {
    /// The reporting SPU.
    pub spu: SpuId,
    /// One entry per replica it leads (or only those that changed).
    pub replicas: Vec<LiveReplica>,
}

/// A leader's proposals to change the in-sync sets of partitions it leads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterInSyncRequest {
    /// The proposing SPU (the leader).
    pub spu: SpuId,
    /// One proposal per partition.
    pub partitions: Vec<AlterInSyncPartition>,
}

/// One proposal: the in-sync set the leader wants, and the state it was computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterInSyncPartition {
    /// The partition.
    pub key: PartitionKey,
    /// The epoch the leader leads in.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch of the in-sync set the proposal changes.
    pub partition_epoch: PartitionEpoch,
    /// The proposed in-sync set, leader included.
    pub in_sync_replicas: Vec<SpuId>,
}

/// The SC's answers, one per proposal, same order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterInSyncResponse {
    /// One answer per proposal.
    pub partitions: Vec<AlterInSyncResult>,
}

/// What the SC did with one proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterInSyncResult {
    /// The partition.
    pub key: PartitionKey,
    /// `None`: stored. Otherwise why not: `NotLeader` / `FencedLeaderEpoch` (the proposer no
    /// longer leads in that epoch), `InvalidUpdateVersion` (based on an older set),
    /// `IneligibleReplica` (a proposed member is offline or not a replica),
    /// `UnknownTopicOrPartition`, `ScUnavailable` (the store failed: outcome unknown).
    pub error_code: ErrorCode,
    /// The partition's current leader epoch at the SC.
    pub leader_epoch: LeaderEpoch,
    /// The in-sync set the SC holds after the request (the proposal's when stored).
    pub in_sync: InSyncSet,
}

postcard_v0!(
    AlterInSyncRequest,
    AlterInSyncResponse,
    SpuRegisterRequest,
    SpuRegisterResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    SpuUpdate,
    ReplicaUpdate,
    RequestSnapshot,
    LiveReplicaStatus,
);

requests! {
    AlterInSyncRequest => AlterInSyncResponse, AlterInSync;
    SpuRegisterRequest => SpuRegisterResponse, SpuRegister;
    HeartbeatRequest => HeartbeatResponse, Heartbeat;
    SpuUpdate => NoResponse, SpuUpdate;
    ReplicaUpdate => NoResponse, ReplicaUpdate;
    RequestSnapshot => NoResponse, RequestSnapshot;
    LiveReplicaStatus => NoResponse, LiveReplicaStatus;
}
