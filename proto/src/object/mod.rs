//! The cluster's objects: a spec (desired state, written by operators and the SC) and a status
//! (observed state, written by the SC from what SPUs report) for each kind.
//!
//! | kind       | key                          | spec                  | status                  |
//! |------------|------------------------------|-----------------------|-------------------------|
//! | SPU        | [`SpuId`](crate::ids::SpuId) | [`SpuSpec`]           | [`SpuStatus`]           |
//! | SPU group  | [`SpuGroupName`]             | [`SpuGroupSpec`]      | [`SpuGroupStatus`]      |
//! | topic      | [`TopicName`]                | [`TopicSpec`]         | [`TopicStatus`]         |
//! | partition  | [`PartitionKey`]             | [`PartitionSpec`]     | [`PartitionStatus`]     |
//! | ACL        | digest of the binding        | [`AclBinding`]        | none                    |
//! | token      | [`TokenName`]                | [`TokenDigest`]       | none                    |
//!
//! All types are serde: the metadata store keeps them as readable JSON (an operator can read
//! them with `consul kv get`), the control protocol sends them as postcard. Names validate on
//! construction and on deserialization, so an invalid name never exists in memory; settings
//! validate with `validate()`, returning a [`ConfigError`] that says what is allowed.
//!
//! Store layout convention: one key per object, `<kind>/<key>`, where the key is the name, the
//! SPU id in decimal, or the partition key's string form `topic-3`.

pub mod acl;
pub mod name;
pub mod partition;
pub mod spu;
pub mod spu_group;
pub mod topic;

pub use acl::{
    AclBinding, AclOperation, AclPermission, AclResource, Principal, PrincipalError, Sha256Digest,
    TokenDigest, TopicPrefix,
};
pub use name::{NameError, SpuGroupName, TokenName, TopicName, NAME_LENGTH_MAX};
pub use partition::{
    InSyncSet, PartitionKey, PartitionKeyError, PartitionResolution, PartitionSpec,
    PartitionStatus, Reassignment, ReplicaConfig, ReplicaStatus,
};
pub use spu::{EncryptionMode, Endpoint, SpuResolution, SpuSpec, SpuStatus, SpuType};
pub use spu_group::{SpuGroupResolution, SpuGroupSpec, SpuGroupStatus, StorageConfig};
pub use topic::{
    CleanupPolicy, CompressionType, ConfigError, Durability, PartitionAssignment,
    PartitionReplicas, ReplicaPlacement, ReplicaSpec, TableKind, TopicResolution, TopicSpec,
    TopicStatus,
};
