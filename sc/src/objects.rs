//! The stored form of each cluster object: spec and status side by side in one JSON document,
//! under the store key conventions of `sluice_proto::object` (SPU id in decimal, names, and
//! `<topic>-<partition>` for partitions).

use serde::{Deserialize, Serialize};
use sluice_proto::ids::SpuId;
use sluice_proto::object::{
    PartitionKey, PartitionSpec, PartitionStatus, SpuGroupName, SpuGroupSpec, SpuGroupStatus,
    SpuSpec, SpuStatus, TopicName, TopicSpec, TopicStatus,
};

use crate::store::{ObjectKey, StoreError};

/// A topic as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicObject {
    /// Desired state.
    pub spec: TopicSpec,
    /// Observed state; its `replica_map`, once written, never changes (partitions never move).
    pub status: TopicStatus,
}

/// An SPU as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuObject {
    /// Desired state.
    pub spec: SpuSpec,
    /// Observed state.
    pub status: SpuStatus,
}

/// An SPU group as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuGroupObject {
    /// Desired state.
    pub spec: SpuGroupSpec,
    /// Observed state.
    pub status: SpuGroupStatus,
}

/// A partition as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionObject {
    /// Desired state (replicas never change once written).
    pub spec: PartitionSpec,
    /// Observed state.
    pub status: PartitionStatus,
}

/// The store key of a topic.
pub fn topic_key(name: &TopicName) -> Result<ObjectKey, StoreError> {
    ObjectKey::new(name.as_str())
}

/// The store key of an SPU.
pub fn spu_key(id: SpuId) -> Result<ObjectKey, StoreError> {
    ObjectKey::new(id.get().to_string())
}

/// The store key of an SPU group.
pub fn spu_group_key(name: &SpuGroupName) -> Result<ObjectKey, StoreError> {
    ObjectKey::new(name.as_str())
}

/// The store key of a partition.
pub fn partition_key(key: &PartitionKey) -> Result<ObjectKey, StoreError> {
    ObjectKey::new(key.to_string())
}
