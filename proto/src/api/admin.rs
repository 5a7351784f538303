//! Client <-> SC administration (postcard): topics, SPUs, SPU groups, partitions.
//!
//! Mutations answer with an [`AdminResponse`]: an error code and, on failure, a message for
//! the operator (e.g. the [`ConfigError`](crate::object::ConfigError) text saying what is
//! allowed). Listings return spec and status side by side, as stored.

use serde::{Deserialize, Serialize};

use crate::api::{postcard_v0, requests};
use crate::error_code::ErrorCode;
use crate::ids::SpuId;
use crate::object::{
    PartitionKey, PartitionSpec, PartitionStatus, SpuGroupName, SpuGroupSpec, SpuGroupStatus,
    SpuSpec, SpuStatus, TopicName, TopicSpec, TopicStatus,
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

postcard_v0!(
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
}
