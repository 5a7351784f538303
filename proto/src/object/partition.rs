//! Partition objects: the replicas of one partition, its leader and leader epoch (spec, set by
//! the SC), and what the replicas report (status).
//!
//! Invariants: the leader is one of the replicas; the leader epoch only grows (the SC bumps it
//! at every election); the in-sync set (in the status, where the SC keeps it authoritatively)
//! is never empty for a partition that has been created, contains the leader while the
//! partition is online, and changes only with a new [`PartitionEpoch`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{LeaderEpoch, Offset, PartitionEpoch, PartitionId, SpuId};
use crate::object::name::{NameError, TopicName};
use crate::object::topic::{CleanupPolicy, Durability, ReplicaPlacement, TableKind, TopicSpec};

/// A partition of a topic. Its string form `topic-3` names store keys and replica directories.
///
/// ```
/// use sluice_proto::ids::PartitionId;
/// use sluice_proto::object::{PartitionKey, TopicName};
///
/// let key = PartitionKey::new(TopicName::new("web-logs").unwrap(), PartitionId(3));
/// assert_eq!(key.to_string(), "web-logs-3");
/// assert_eq!("web-logs-3".parse::<PartitionKey>().unwrap(), key);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionKey {
    /// The topic.
    pub topic: TopicName,
    /// The partition within it.
    pub partition: PartitionId,
}

impl PartitionKey {
    /// A key from its parts.
    pub fn new(topic: TopicName, partition: PartitionId) -> Self {
        Self { topic, partition }
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Why a string is not a partition key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartitionKeyError {
    /// No `-<number>` suffix.
    #[error("partition key must be <topic>-<partition number>, got {0:?}")]
    Format(String),
    /// The topic part is not a valid name.
    #[error(transparent)]
    Topic(#[from] NameError),
}

impl FromStr for PartitionKey {
    type Err = PartitionKeyError;

    fn from_str(key: &str) -> Result<Self, PartitionKeyError> {
        let format_error = || PartitionKeyError::Format(key.to_owned());
        let (topic, partition) = key.rsplit_once('-').ok_or_else(format_error)?;
        let all_digits = !partition.is_empty() && partition.bytes().all(|b| b.is_ascii_digit());
        let partition: u32 = if all_digits {
            partition.parse().map_err(|_| format_error())?
        } else {
            return Err(format_error());
        };
        Ok(Self { topic: TopicName::new(topic)?, partition: PartitionId(partition) })
    }
}

/// The topic settings a replica applies, copied into each partition spec so an SPU needs
/// nothing but its replica updates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaConfig {
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
    /// Largest batch accepted.
    pub batch_bytes_max: u32,
    /// Remove sealed segments older than this.
    pub retention_time_ms: Option<u64>,
    /// Remove the oldest sealed segments while larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete or compact.
    pub cleanup_policy: CleanupPolicy,
    /// Flush policy.
    pub durability: Durability,
    /// Acks `all` needs this many in-sync replicas.
    pub min_in_sync_replicas: u16,
    /// Log or primary-key table.
    pub table_kind: TableKind,
    /// Whether a replica outside the in-sync set may be elected when no in-sync one is online
    /// (it may lose acknowledged records).
    #[serde(default)]
    pub unclean_election: bool,
}

impl From<&TopicSpec> for ReplicaConfig {
    fn from(topic: &TopicSpec) -> Self {
        Self {
            segment_bytes: topic.segment_bytes,
            batch_bytes_max: topic.batch_bytes_max,
            retention_time_ms: topic.retention_time_ms,
            retention_bytes: topic.retention_bytes,
            cleanup_policy: topic.cleanup_policy,
            durability: topic.durability,
            min_in_sync_replicas: topic.min_in_sync_replicas,
            table_kind: topic.table_kind,
            unclean_election: topic.unclean_election,
        }
    }
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self::from(&TopicSpec::default())
    }
}

/// Desired state of a partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    /// Replicas, preferred leader first.
    pub replicas: Vec<ReplicaPlacement>,
    /// The current leader (one of the replicas).
    pub leader: SpuId,
    /// Epoch of the current leadership.
    pub leader_epoch: LeaderEpoch,
    /// Settings from the topic.
    pub config: ReplicaConfig,
    /// The move of this partition's replicas in progress, if any (see [`Reassignment`]).
    #[serde(default)]
    pub reassignment: Option<Reassignment>,
}

/// A move of a partition's replicas to other SPUs, in progress (as Kafka's KIP-455): while it
/// lasts the partition's replicas are the union of `target` and `original` (target first), the
/// replicas being added follow the leader (at most `throttle_bytes_per_second` each) until
/// they are in sync, then leadership moves into the target if needed, then the replicas shrink
/// to `target` and the SPUs of the others drop theirs. Kept in the partition spec, so it
/// survives an SC restart and the SC carries on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// The replicas the partition ends with, preferred leader first.
    pub target: Vec<ReplicaPlacement>,
    /// The replicas it had when the move began.
    pub original: Vec<ReplicaPlacement>,
    /// Fetch rate limit of each replica being added, bytes per second (`None`: unlimited).
    pub throttle_bytes_per_second: Option<u64>,
}

impl Reassignment {
    /// The replicas while the move lasts: the target, then the original ones not in it.
    pub fn union(&self) -> Vec<ReplicaPlacement> {
        let mut replicas = self.target.clone();
        for replica in &self.original {
            if !replicas.iter().any(|kept| kept.spu == replica.spu) {
                replicas.push(*replica);
            }
        }
        replicas
    }

    /// The SPUs of the replicas being added (in the target, not in the original).
    pub fn adding(&self) -> impl Iterator<Item = SpuId> + '_ {
        self.target
            .iter()
            .map(|replica| replica.spu)
            .filter(|spu| !self.original.iter().any(|replica| replica.spu == *spu))
    }

    /// The SPUs of the replicas being removed (in the original, not in the target).
    pub fn removing(&self) -> impl Iterator<Item = SpuId> + '_ {
        self.original
            .iter()
            .map(|replica| replica.spu)
            .filter(|spu| !self.target.iter().any(|replica| replica.spu == *spu))
    }

    /// Whether `spu` is being added and its fetches are throttled: the rate, if so.
    pub fn throttle_for(&self, spu: SpuId) -> Option<u64> {
        self.throttle_bytes_per_second.filter(|_| self.adding().any(|adding| adding == spu))
    }
}

impl PartitionSpec {
    /// The leader's placement, if the leader is among the replicas.
    pub fn leader_placement(&self) -> Option<ReplicaPlacement> {
        self.replicas.iter().copied().find(|replica| replica.spu == self.leader)
    }

    /// The replicas other than the leader.
    pub fn followers(&self) -> impl Iterator<Item = ReplicaPlacement> + '_ {
        self.replicas.iter().copied().filter(move |replica| replica.spu != self.leader)
    }
}

/// What one replica reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The SPU holding it.
    pub spu: SpuId,
    /// High watermark as that replica knows it.
    pub high_watermark: Offset,
    /// Log end offset: the offset after its last written batch.
    pub log_end_offset: Offset,
    /// The offset after its last durable batch (what it could not lose in a crash): what the
    /// high watermark and elections count.
    #[serde(default)]
    pub durable_end_offset: Offset,
    /// Records behind the leader's log end offset (0 for the leader).
    pub lag_records: u64,
}

/// Whether the partition can serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionResolution {
    /// Not reported yet.
    #[default]
    Init,
    /// The leader serves.
    Online,
    /// The leader's SPU is offline; an election is pending.
    LeaderOffline,
    /// No replica can lead (no in-sync replica is online, and unclean election is off).
    Offline,
}

/// Observed state of a partition. The in-sync set and its version are the SC's own record
/// (changed by elections, by the SC when a follower's SPU goes offline, and by accepted
/// proposals of the leader); the offsets come from the leader's live replica status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Online or not.
    pub resolution: PartitionResolution,
    /// The leader's own report.
    pub leader: ReplicaStatus,
    /// In-sync replicas, leader included.
    pub in_sync_replicas: Vec<SpuId>,
    /// Version of the leadership and in-sync set; bumped by the SC at every change.
    #[serde(default)]
    pub partition_epoch: PartitionEpoch,
    /// Followers' reports, as the leader sees them.
    pub replicas: Vec<ReplicaStatus>,
}

/// The in-sync set of a partition with the version it has at the SC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InSyncSet {
    /// In-sync replicas, leader included.
    pub replicas: Vec<SpuId>,
    /// The partition epoch of this set.
    pub partition_epoch: PartitionEpoch,
}

impl PartitionStatus {
    /// The in-sync set and its version.
    pub fn in_sync(&self) -> InSyncSet {
        InSyncSet { replicas: self.in_sync_replicas.clone(), partition_epoch: self.partition_epoch }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parse_errors() {
        assert!("topic".parse::<PartitionKey>().is_err());
        assert!("topic-".parse::<PartitionKey>().is_err());
        assert!("topic-+1".parse::<PartitionKey>().is_err());
        assert!("-1".parse::<PartitionKey>().is_err());
        assert!("t-99999999999".parse::<PartitionKey>().is_err());
        let key: PartitionKey = "a-b-0".parse().unwrap();
        assert_eq!(key.topic.as_str(), "a-b");
    }

    #[test]
    fn leader_placement() {
        let replica = |spu| ReplicaPlacement { spu: SpuId(spu), core: crate::ids::CoreId(1) };
        let spec = PartitionSpec {
            replicas: vec![replica(1), replica(2)],
            leader: SpuId(2),
            ..PartitionSpec::default()
        };
        assert_eq!(spec.leader_placement(), Some(replica(2)));
        assert_eq!(spec.followers().collect::<Vec<_>>(), vec![replica(1)]);
    }
}
