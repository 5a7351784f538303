//! Topic objects: how many partitions, how replicated, and the storage settings every replica
//! of the topic applies.
//!
//! Bounds are named constants with their reason; [`TopicSpec::validate`] checks all of them and
//! the [`ConfigError`] it returns states the allowed range.

use serde::{Deserialize, Serialize};

use crate::ids::{CoreId, PartitionId, SpuId};

/// Most partitions in one topic: bounds SC reconcile work and per-SPU directory counts.
pub const PARTITIONS_MAX: u32 = 10_000;
/// Highest replication factor: more copies than this add latency without durability.
pub const REPLICATION_FACTOR_MAX: u16 = 16;
/// Smallest segment: one 4 KiB page, the direct-I/O alignment unit.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment: index entries store 32-bit positions within a segment.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;
/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Largest batch a topic may accept: must fit a frame with room for its headers.
pub const BATCH_BYTES_MAX_LIMIT: u32 = 32 * 1024 * 1024;
/// Default largest batch.
pub const BATCH_BYTES_MAX_DEFAULT: u32 = 1024 * 1024;

/// Why a setting was rejected; the message states what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A number outside its allowed range.
    #[error("{setting} is {value}, allowed {min}..={max}")]
    OutOfRange {
        /// The setting's name.
        setting: &'static str,
        /// The value given.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A structural problem (explicit assignment, combination of settings).
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

/// One replica's place: an SPU and the core on it that owns the replica.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct ReplicaPlacement {
    /// The SPU.
    pub spu: SpuId,
    /// The core of that SPU.
    pub core: CoreId,
}

/// Explicit replicas of one partition; the first is the preferred leader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Replicas, preferred leader first.
    pub replicas: Vec<ReplicaPlacement>,
}

/// How the topic's replicas are placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaSpec {
    /// The SC chooses SPUs and cores.
    Computed {
        /// Number of partitions, 1 to [`PARTITIONS_MAX`].
        partitions: u32,
        /// Copies of each partition, 1 to [`REPLICATION_FACTOR_MAX`] and at most the SPUs.
        replication_factor: u16,
        /// Place replicas without regard to racks.
        ignore_rack: bool,
    },
    /// The operator chose, partition by partition (index = partition id).
    Assigned(Vec<PartitionAssignment>),
}

impl Default for ReplicaSpec {
    fn default() -> Self {
        ReplicaSpec::Computed { partitions: 1, replication_factor: 1, ignore_rack: false }
    }
}

/// What happens to old segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Remove whole sealed segments past retention.
    #[default]
    Delete,
    /// Keep the latest record per key (primary-key tables).
    Compact,
}

/// Which compression the topic accepts or enforces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionType {
    /// Store batches as produced, whatever their codec.
    #[default]
    Any,
    /// Uncompressed only.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// A plain log or a primary-key table (changelog plus key-value store).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// An append-only log.
    #[default]
    Log,
    /// Upserts and deletes by key, with point lookups.
    PrimaryKey,
}

/// When an acknowledged append is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledged means fdatasync returned on every in-sync replica (group commit).
    #[default]
    Sync,
    /// Acknowledged means written; fdatasync runs after this many bytes or this interval.
    Relaxed {
        /// Unsynced bytes that trigger a flush.
        flush_bytes_max: u64,
        /// Longest time between flushes.
        flush_interval_ms: u64,
    },
}

/// Desired state of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// Partitions and replica placement.
    pub replicas: ReplicaSpec,
    /// Acks `all` needs at least this many in-sync replicas (1 to the replication factor).
    pub min_in_sync_replicas: u16,
    /// Remove sealed segments older than this; forever when absent.
    pub retention_time_ms: Option<u64>,
    /// Remove the oldest sealed segments while a partition is larger; unbounded when absent.
    pub retention_bytes: Option<u64>,
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
    /// Largest batch accepted, bytes.
    pub batch_bytes_max: u32,
    /// Delete or compact.
    pub cleanup_policy: CleanupPolicy,
    /// Accepted compression.
    pub compression: CompressionType,
    /// Log or primary-key table.
    pub table_kind: TableKind,
    /// Flush policy.
    pub durability: Durability,
    /// Whether a replica outside the in-sync set may become leader when no in-sync replica is
    /// online. Off by default: such an election may lose acknowledged records.
    #[serde(default)]
    pub unclean_election: bool,
}

impl Default for TopicSpec {
    fn default() -> Self {
        Self {
            replicas: ReplicaSpec::default(),
            min_in_sync_replicas: 1,
            retention_time_ms: None,
            retention_bytes: None,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            cleanup_policy: CleanupPolicy::Delete,
            compression: CompressionType::Any,
            table_kind: TableKind::Log,
            durability: Durability::Sync,
            unclean_election: false,
        }
    }
}

fn check_range(setting: &'static str, value: i64, min: i64, max: i64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange { setting, value, min, max });
    }
    Ok(())
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl TopicSpec {
    /// A topic with `partitions` partitions of `replication_factor` copies, other settings
    /// default.
    pub fn computed(partitions: u32, replication_factor: u16) -> Self {
        Self {
            replicas: ReplicaSpec::Computed { partitions, replication_factor, ignore_rack: false },
            ..Self::default()
        }
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        match &self.replicas {
            ReplicaSpec::Computed { partitions, .. } => *partitions,
            ReplicaSpec::Assigned(assignment) => {
                u32::try_from(assignment.len()).unwrap_or(u32::MAX)
            }
        }
    }

    /// Copies of each partition (of the first one, for an explicit assignment).
    pub fn replication_factor(&self) -> u16 {
        match &self.replicas {
            ReplicaSpec::Computed { replication_factor, .. } => *replication_factor,
            ReplicaSpec::Assigned(assignment) => assignment
                .first()
                .map_or(0, |partition| u16::try_from(partition.replicas.len()).unwrap_or(0)),
        }
    }

    /// Checks every setting against its bounds.
    ///
    /// ```
    /// use sluice_proto::object::{ConfigError, TopicSpec};
    /// assert!(TopicSpec::computed(3, 2).validate().is_ok());
    /// let error = TopicSpec::computed(0, 1).validate().unwrap_err();
    /// assert_eq!(error.to_string(), "partitions is 0, allowed 1..=10000");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_replicas()?;
        let replication_factor = i64::from(self.replication_factor());
        check_range(
            "min_in_sync_replicas",
            i64::from(self.min_in_sync_replicas),
            1,
            replication_factor,
        )?;
        let segment_bytes = saturating_i64(self.segment_bytes);
        check_range(
            "segment_bytes",
            segment_bytes,
            SEGMENT_BYTES_MIN as i64,
            SEGMENT_BYTES_MAX as i64,
        )?;
        let batch_max = i64::from(BATCH_BYTES_MAX_LIMIT).min(segment_bytes);
        check_range("batch_bytes_max", i64::from(self.batch_bytes_max), 1024, batch_max)?;
        if let Some(retention_time_ms) = self.retention_time_ms {
            check_range("retention_time_ms", saturating_i64(retention_time_ms), 1, i64::MAX)?;
        }
        if let Some(retention_bytes) = self.retention_bytes {
            check_range("retention_bytes", saturating_i64(retention_bytes), 1, i64::MAX)?;
        }
        if let Durability::Relaxed { flush_bytes_max, flush_interval_ms } = self.durability {
            check_range("flush_bytes_max", saturating_i64(flush_bytes_max), 1, i64::MAX)?;
            check_range("flush_interval_ms", saturating_i64(flush_interval_ms), 1, 3_600_000)?;
        }
        if self.table_kind == TableKind::PrimaryKey && self.cleanup_policy != CleanupPolicy::Compact
        {
            return Err(ConfigError::Invalid {
                setting: "cleanup_policy",
                reason: "a primary-key table needs cleanup policy compact".into(),
            });
        }
        Ok(())
    }

    fn validate_replicas(&self) -> Result<(), ConfigError> {
        let max_partitions = i64::from(PARTITIONS_MAX);
        let max_factor = i64::from(REPLICATION_FACTOR_MAX);
        match &self.replicas {
            ReplicaSpec::Computed { partitions, replication_factor, .. } => {
                check_range("partitions", i64::from(*partitions), 1, max_partitions)?;
                check_range("replication_factor", i64::from(*replication_factor), 1, max_factor)
            }
            ReplicaSpec::Assigned(assignment) => {
                let count = i64::try_from(assignment.len()).unwrap_or(i64::MAX);
                check_range("partitions", count, 1, max_partitions)?;
                let factor = assignment[0].replicas.len();
                check_range("replication_factor", factor as i64, 1, max_factor)?;
                for (index, partition) in assignment.iter().enumerate() {
                    validate_assignment(index, partition, factor)?;
                }
                Ok(())
            }
        }
    }
}

fn validate_assignment(
    index: usize,
    partition: &PartitionAssignment,
    factor: usize,
) -> Result<(), ConfigError> {
    if partition.replicas.len() != factor {
        return Err(ConfigError::Invalid {
            setting: "assignment",
            reason: format!(
                "partition {index} has {} replicas; every partition needs {factor}",
                partition.replicas.len()
            ),
        });
    }
    for (position, replica) in partition.replicas.iter().enumerate() {
        if partition.replicas[..position].iter().any(|earlier| earlier.spu == replica.spu) {
            return Err(ConfigError::Invalid {
                setting: "assignment",
                reason: format!("partition {index} places two replicas on SPU {}", replica.spu),
            });
        }
    }
    Ok(())
}

/// How far the SC got with a topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicResolution {
    /// Not processed yet.
    #[default]
    Init,
    /// Waiting for replicas to be placed.
    Pending,
    /// Not enough online SPUs for the replication factor.
    InsufficientResources,
    /// A setting is invalid.
    InvalidConfig,
    /// Partitions created.
    Provisioned,
    /// Being deleted.
    Deleting,
}

/// The replicas of one partition as resolved by the SC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReplicas {
    /// The partition.
    pub partition: PartitionId,
    /// Its replicas, leader-preferred first.
    pub replicas: Vec<ReplicaPlacement>,
}

/// Observed state of a topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStatus {
    /// Where the SC is with it.
    pub resolution: TopicResolution,
    /// Why it is not provisioned, for the operator.
    pub reason: Option<String>,
    /// Replicas per partition.
    pub replica_map: Vec<PartitionReplicas>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(spu: i32) -> ReplicaPlacement {
        ReplicaPlacement { spu: SpuId(spu), core: CoreId(0) }
    }

    #[test]
    fn bounds() {
        assert!(TopicSpec::computed(1, 0).validate().is_err());
        assert!(TopicSpec::computed(PARTITIONS_MAX + 1, 1).validate().is_err());
        let spec = TopicSpec { min_in_sync_replicas: 3, ..TopicSpec::computed(1, 2) };
        assert!(matches!(
            spec.validate(),
            Err(ConfigError::OutOfRange { setting: "min_in_sync_replicas", .. })
        ));
        let spec = TopicSpec { segment_bytes: 100, ..TopicSpec::default() };
        assert!(spec.validate().unwrap_err().to_string().contains("segment_bytes"));
    }

    #[test]
    fn assignment_rules() {
        let spec = |partitions: Vec<Vec<ReplicaPlacement>>| TopicSpec {
            replicas: ReplicaSpec::Assigned(
                partitions.into_iter().map(|replicas| PartitionAssignment { replicas }).collect(),
            ),
            ..TopicSpec::default()
        };
        assert!(spec(vec![vec![placement(1), placement(2)]]).validate().is_ok());
        assert!(spec(vec![]).validate().is_err());
        assert!(spec(vec![vec![placement(1), placement(1)]]).validate().is_err());
        assert!(spec(vec![vec![placement(1)], vec![placement(1), placement(2)]])
            .validate()
            .is_err());
    }

    #[test]
    fn json_is_readable() {
        let json = serde_json::to_string(&TopicSpec::computed(2, 1)).unwrap();
        assert!(json.contains("\"computed\":{\"partitions\":2"), "{json}");
        assert_eq!(serde_json::from_str::<TopicSpec>(&json).unwrap(), TopicSpec::computed(2, 1));
    }
}
