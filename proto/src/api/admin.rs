//! Client <-> SC administration (postcard): topics, SPUs, SPU groups, partitions.
//!
//! Mutations answer with an [`AdminResponse`]: an error code and, on failure, a message for
//! the operator (e.g. the [`ConfigError`](crate::object::ConfigError) text saying what is
//! allowed). Listings return spec and status side by side, as stored.

use serde::{Deserialize, Serialize};

use crate::api::{postcard_v0, requests};
use crate::error_code::ErrorCode;
use crate::ids::{CoreId, SpuId};
use crate::object::{
    PartitionKey, PartitionSpec, PartitionStatus, ReplicaPlacement, SpuGroupName, SpuGroupSpec,
    SpuGroupStatus, SpuSpec, SpuStatus, TopicName, TopicSpec, TopicStatus,
};

/// The outcome of an admin mutation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminResponse {
    /// `None` on success.
    pub error_code: ErrorCode,
    /// Details for the operator on failure.
    pub message: Option<String>,
}

impl AdminResponse {
    /// Success.
    pub fn ok() -> Self {
        Self::default()
    }

    /// A failure with a message.
    pub fn error(error_code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error_code, message: Some(message.into()) }
    }
}

/// Creates a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    /// Its name.
    pub name: TopicName,
    /// Its spec.
    pub spec: TopicSpec,
    /// Validate only; create nothing.
    pub dry_run: bool,
}

/// Deletes a topic (its replicas stop; files are kept by the SPUs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicRequest {
    /// Its name.
    pub name: TopicName,
}

/// Lists topics (all when `names` is `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopicsRequest {
    /// Topics wanted; all when absent.
    pub names: Option<Vec<TopicName>>,
}

/// A topic as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEntry {
    /// Its name.
    pub name: TopicName,
    /// Desired state.
    pub spec: TopicSpec,
    /// Observed state.
    pub status: TopicStatus,
}

/// Topics found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopicsResponse {
    /// `None`, or why listing failed.
    pub error_code: ErrorCode,
    /// The topics.
    pub topics: Vec<TopicEntry>,
}

/// One topic with its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeTopicRequest {
    /// Its name.
    pub name: TopicName,
}

/// A partition as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    /// Topic and partition.
    pub key: PartitionKey,
    /// Desired state.
    pub spec: PartitionSpec,
    /// Observed state.
    pub status: PartitionStatus,
}

/// The topic and its partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeTopicResponse {
    /// `None`, or `TopicNotFound`.
    pub error_code: ErrorCode,
    /// The topic, when found.
    pub topic: Option<TopicEntry>,
    /// Its partitions in id order.
    pub partitions: Vec<PartitionEntry>,
}

/// Registers a custom SPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSpuRequest {
    /// Its spec (type custom).
    pub spec: SpuSpec,
}

/// Unregisters a custom SPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisterSpuRequest {
    /// Its id.
    pub id: SpuId,
}

/// Lists every SPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSpusRequest;

/// An SPU as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuEntry {
    /// Desired state.
    pub spec: SpuSpec,
    /// Observed state.
    pub status: SpuStatus,
}

/// SPUs found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSpusResponse {
    /// `None`, or why listing failed.
    pub error_code: ErrorCode,
    /// The SPUs in id order.
    pub spus: Vec<SpuEntry>,
}

/// Creates an SPU group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpuGroupRequest {
    /// Its name.
    pub name: SpuGroupName,
    /// Its spec.
    pub spec: SpuGroupSpec,
}

/// Deletes an SPU group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSpuGroupRequest {
    /// Its name.
    pub name: SpuGroupName,
}

/// Lists every SPU group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSpuGroupsRequest;

/// An SPU group as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuGroupEntry {
    /// Its name.
    pub name: SpuGroupName,
    /// Desired state.
    pub spec: SpuGroupSpec,
    /// Observed state.
    pub status: SpuGroupStatus,
}

/// SPU groups found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSpuGroupsResponse {
    /// `None`, or why listing failed.
    pub error_code: ErrorCode,
    /// The groups in name order.
    pub groups: Vec<SpuGroupEntry>,
}

/// Lists partitions (of one topic, or all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPartitionsRequest {
    /// Only this topic's partitions, when present.
    pub topic: Option<TopicName>,
}

/// Partitions found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPartitionsResponse {
    /// `None`, or why listing failed.
    pub error_code: ErrorCode,
    /// The partitions in key order.
    pub partitions: Vec<PartitionEntry>,
}

/// Moves leadership back to each partition's preferred replica (the first of its replicas)
/// where that replica is online and in sync and does not lead (of one topic, or all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceLeadersRequest {
    /// Only this topic's partitions, when present.
    pub topic: Option<TopicName>,
}

/// What a leader rebalance did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceLeadersResponse {
    /// `None`, or why it failed (`TopicNotFound`, `ScUnavailable`).
    pub error_code: ErrorCode,
    /// Details for the operator on failure.
    pub message: Option<String>,
    /// Partitions whose leadership moved to their preferred replica.
    pub moved: Vec<PartitionKey>,
    /// Partitions whose preferred replica does not lead and cannot now (offline or not in
    /// sync).
    pub not_eligible: Vec<PartitionKey>,
}

/// Grows a topic to `partitions` partitions. The new partitions are placed like a new topic's;
/// existing partitions never move. Keyed records may then go to another partition than before
/// (the key hash is taken modulo the new count). Refused with `InvalidPartitions` unless
/// `partitions` is larger than the current count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterTopicPartitionsRequest {
    /// The topic.
    pub name: TopicName,
    /// The new partition count.
    pub partitions: u32,
}

/// One replica of a reassignment's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaTarget {
    /// The SPU.
    pub spu: SpuId,
    /// The core owning the replica; `None`: the SC chooses (the core the SPU already uses for
    /// this partition, else its least-loaded core).
    pub core: Option<CoreId>,
}

/// What to do with one partition's replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReassignmentChange {
    /// Move to these replicas, preferred leader first.
    Move(Vec<ReplicaTarget>),
    /// Cancel the move in progress: go back to the replicas it started from (the same
    /// protocol, so nothing is dropped before the original replicas are in sync).
    Cancel,
}

/// One partition of a reassignment request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReassignment {
    /// The partition.
    pub key: PartitionKey,
    /// Its move.
    pub change: ReassignmentChange,
}

/// Moves the replicas of partitions to other SPUs (add as followers, wait until in sync, move
/// leadership, drop the old ones), each partition on its own; the SC carries the moves on after
/// a restart. A partition already moving is refused (`ReassignmentInProgress`) unless the
/// request cancels its move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignPartitionsRequest {
    /// The partitions and their targets.
    pub partitions: Vec<PartitionReassignment>,
    /// Fetch rate limit of each replica being added, bytes per second (`None`: unlimited).
    pub throttle_bytes_per_second: Option<u64>,
}

/// What became of one partition of a reassignment (or decommission) request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentResult {
    /// The partition.
    pub key: PartitionKey,
    /// `None` when the move was stored.
    pub error_code: ErrorCode,
    /// Why not, for the operator.
    pub message: Option<String>,
    /// The replicas it moves to (empty on failure).
    pub target: Vec<ReplicaPlacement>,
}

/// The outcome of a reassignment request, partition by partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignPartitionsResponse {
    /// `None`, or why the whole request failed (`ScUnavailable`).
    pub error_code: ErrorCode,
    /// Details for the operator on failure.
    pub message: Option<String>,
    /// One result per partition, in request order.
    pub results: Vec<ReassignmentResult>,
}

/// Moves every replica off an SPU: the SC chooses each partition's replacement like a new
/// replica's placement (other SPUs, racks, least-loaded cores) and starts the moves. Refused
/// with `ReplicationFactorAboveSpuCount` when the other SPUs are too few for some partition's
/// replication factor. The SPU is unregistered once no partition names it (the CLI waits and
/// asks; a repeated request starts nothing twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecommissionSpuRequest {
    /// The SPU.
    pub id: SpuId,
    /// Fetch rate limit of each replica being added, bytes per second (`None`: unlimited).
    pub throttle_bytes_per_second: Option<u64>,
}

postcard_v0!(
    AlterTopicPartitionsRequest,
    ReassignPartitionsRequest,
    ReassignPartitionsResponse,
    DecommissionSpuRequest,
    RebalanceLeadersRequest,
    RebalanceLeadersResponse,
    AdminResponse,
    CreateTopicRequest,
    DeleteTopicRequest,
    ListTopicsRequest,
    ListTopicsResponse,
    DescribeTopicRequest,
    DescribeTopicResponse,
    RegisterSpuRequest,
    UnregisterSpuRequest,
    ListSpusRequest,
    ListSpusResponse,
    CreateSpuGroupRequest,
    DeleteSpuGroupRequest,
    ListSpuGroupsRequest,
    ListSpuGroupsResponse,
    ListPartitionsRequest,
    ListPartitionsResponse,
);

requests! {
    CreateTopicRequest => AdminResponse, CreateTopic;
    DeleteTopicRequest => AdminResponse, DeleteTopic;
    ListTopicsRequest => ListTopicsResponse, ListTopics;
    DescribeTopicRequest => DescribeTopicResponse, DescribeTopic;
    RegisterSpuRequest => AdminResponse, RegisterSpu;
    UnregisterSpuRequest => AdminResponse, UnregisterSpu;
    ListSpusRequest => ListSpusResponse, ListSpus;
    CreateSpuGroupRequest => AdminResponse, CreateSpuGroup;
    DeleteSpuGroupRequest => AdminResponse, DeleteSpuGroup;
    ListSpuGroupsRequest => ListSpuGroupsResponse, ListSpuGroups;
    ListPartitionsRequest => ListPartitionsResponse, ListPartitions;
    RebalanceLeadersRequest => RebalanceLeadersResponse, RebalanceLeaders;
    AlterTopicPartitionsRequest => AdminResponse, AlterTopicPartitions;
    ReassignPartitionsRequest => ReassignPartitionsResponse, ReassignPartitions;
    DecommissionSpuRequest => ReassignPartitionsResponse, DecommissionSpu;
}
