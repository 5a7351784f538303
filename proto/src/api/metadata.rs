//! Client <-> SC metadata: where partitions live and how to reach their leaders (postcard).
//!
//! [`MetadataRequest`] answers once with a snapshot. [`MetadataWatchRequest`] opens a
//! subscription: the SC pushes [`MetadataWatchUpdate`] frames with the request's correlation
//! id, first a full snapshot, then deltas. Each update is stamped with an [`UpdateEpoch`]; a
//! delta names the epoch it applies on top of ([`Changes::Delta::base_epoch`]), and a client
//! whose epoch differs discards its view and re-subscribes (or waits for the next full update).

use serde::{Deserialize, Serialize};

use crate::api::{postcard_v0, requests};
use crate::error_code::ErrorCode;
use crate::ids::{CoreId, LeaderEpoch, PartitionId, SpuId, UpdateEpoch};
use crate::object::{EncryptionMode, Endpoint, ReplicaPlacement, TopicName};

/// One change in a delta: an object created or replaced, or removed by key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change<T, K> {
    /// Created or replaced.
    Upsert(T),
    /// Removed.
    Remove(K),
}

/// A full snapshot or the changes since an earlier epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Changes<T, K> {
    /// Every object; replaces the receiver's view.
    Full(Vec<T>),
    /// Changes on top of the view at `base_epoch`.
    Delta {
        /// The epoch the receiver must be at to apply this.
        base_epoch: UpdateEpoch,
        /// Changes in order.
        changes: Vec<Change<T, K>>,
    },
}

impl<T, K> Changes<T, K> {
    /// Whether a receiver at `current` may apply this (a full snapshot always applies).
    pub fn applies_to(&self, current: Option<UpdateEpoch>) -> bool {
        match self {
            Changes::Full(_) => true,
            Changes::Delta { base_epoch, .. } => current == Some(*base_epoch),
        }
    }
}

/// Asks for topics' metadata (all topics when `topics` is `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRequest {
    /// Topics wanted; all when absent.
    pub topics: Option<Vec<TopicName>>,
}

/// How a client reaches an SPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuMetadata {
    /// The SPU.
    pub id: SpuId,
    /// Public (client) endpoint.
    pub public_endpoint: Endpoint,
    /// Public port per core, index = core; empty when only the shared port exists.
    pub core_public_ports: Vec<u16>,
    /// Rack, if known.
    pub rack: Option<String>,
    /// TLS or plaintext.
    pub encryption: EncryptionMode,
    /// Whether the SC hears from it.
    pub online: bool,
}

/// Where one partition is served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    /// The partition.
    pub partition: PartitionId,
    /// `None`, or `LeaderNotAvailable` during an election.
    pub error_code: ErrorCode,
    /// The leader SPU.
    pub leader: SpuId,
    /// The leader's core that owns the replica.
    pub leader_core: CoreId,
    /// Current leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// All replicas, preferred leader first.
    pub replicas: Vec<ReplicaPlacement>,
    /// In-sync replicas.
    pub in_sync_replicas: Vec<SpuId>,
}

/// One topic's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// The topic.
    pub name: TopicName,
    /// `None`, or `UnknownTopicOrPartition` for a requested topic that does not exist.
    pub error_code: ErrorCode,
    /// Partitions in id order.
    pub partitions: Vec<PartitionMetadata>,
}

/// A metadata snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataResponse {
    /// The epoch of the SC's view this snapshot reflects.
    pub epoch: UpdateEpoch,
    /// SPUs hosting the requested topics' replicas (all SPUs for an all-topics request).
    pub spus: Vec<SpuMetadata>,
    /// The topics.
    pub topics: Vec<TopicMetadata>,
}

/// Subscribes to metadata changes (all topics when `topics` is `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataWatchRequest {
    /// Topics wanted; all when absent.
    pub topics: Option<Vec<TopicName>>,
}

/// A pushed metadata update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataWatchUpdate {
    /// Epoch after applying this update.
    pub epoch: UpdateEpoch,
    /// SPU changes.
    pub spus: Changes<SpuMetadata, SpuId>,
    /// Topic changes.
    pub topics: Changes<TopicMetadata, TopicName>,
}

postcard_v0!(MetadataRequest, MetadataResponse, MetadataWatchRequest, MetadataWatchUpdate);
requests! {
    MetadataRequest => MetadataResponse, Metadata;
    MetadataWatchRequest => MetadataWatchUpdate, MetadataWatch;
}
