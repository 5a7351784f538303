//! Cross-core messages: the only way one core's code reaches another core's replicas.
//!
//! Every core joins one glommio channel mesh of [`ShardMessage`]s (bounded, lock-free SPSC
//! queues between each pair of cores). A request for a replica owned by another core is sent
//! as an owned [`ShardOp`] (produce records are copied once into it) and answered with a
//! [`ShardReply`] carrying the same id; the asking core keeps a local map from id to a
//! one-shot local channel. A reply for an id nobody waits for any more (a long-poll whose
//! caller already answered) is dropped. Core 0 also sends every core the desired replica set
//! ([`ShardMessage::Replicas`]) and the peers ([`ShardMessage::Peers`]); the other cores send
//! core 0 the live status of the replicas they lead ([`ShardMessage::Status`]) and their
//! in-sync set proposals for the SC ([`ShardMessage::AlterInSync`]), whose answers core 0
//! routes back to the owning core ([`ShardMessage::InSyncAnswers`]).
//!
//! Failure modes: a peer whose queue is full makes the sender wait (back-pressure, bounded by
//! [`MESH_QUEUE_CAPACITY`]); a closed mesh (shutdown) turns a forwarded request into
//! `ErrorCode::ReplicaNotAvailable` for the caller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use sluice_proto::api::control::{
    AlterInSyncPartition, AlterInSyncResult, LiveReplica, ReplicaAssignment, SpuPeer,
};
use sluice_proto::api::fetch::{FetchPartitionHeader, Isolation};
use sluice_proto::api::list_offsets::OffsetSpec;
use sluice_proto::api::produce::Acks;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, Offset, SpuId, TimestampMs};
use sluice_proto::object::PartitionKey;

/// Messages queued between two cores at most (each direction); a full queue makes the sender
/// wait, so a slow core slows its callers instead of growing memory.
pub const MESH_QUEUE_CAPACITY: usize = 1024;

/// The desired replica set as core 0 received it from the SC: each hosted partition's spec and
/// in-sync set.
pub type ReplicaSet = Arc<BTreeMap<PartitionKey, ReplicaAssignment>>;

/// The peers as core 0 received them from the SC.
pub type Peers = Arc<BTreeMap<SpuId, SpuPeer>>;

/// A message between two cores.
pub enum ShardMessage {
    /// Do `op` on a replica this core owns and answer with `id`.
    Request {
        /// Chosen by the asking core; echoed by the reply.
        id: u64,
        /// The operation.
        op: ShardOp,
    },
    /// The answer to a request.
    Reply {
        /// The request's id.
        id: u64,
        /// The outcome.
        reply: ShardReply,
    },
    /// Core 0 -> every core: the complete desired replica set.
    Replicas(ReplicaSet),
    /// Any core -> core 0: the live status of the replicas it leads (complete for that core).
    Status {
        /// The reporting core.
        core: usize,
        /// One entry per replica it leads.
        replicas: Vec<LiveReplica>,
    },
    /// Core 0 -> every core: the peers (their replication ports).
    Peers(Peers),
    /// Core 0 -> every core: ACLs, token digests and enforcement, as the SC pushed them.
    Security(Arc<sluice_proto::api::security::SecurityUpdate>),
    /// Any core -> core 0: in-sync set proposals of the replicas it leads, for the SC.
    AlterInSync(Vec<AlterInSyncPartition>),
    /// Core 0 -> the owning core: the SC's answers to its proposals.
    InSyncAnswers(Vec<AlterInSyncResult>),
}

/// An operation forwarded to the core owning the replica.
pub enum ShardOp {
    /// Append one or more batches.
    Produce {
        /// The partition.
        key: PartitionKey,
        /// Durability before the answer.
        acks: Acks,
        /// Longest wait for the replicas (acks `all`), from the request.
        timeout_ms: u32,
        /// Whole batches, copied once from the receiving core's buffer.
        records: Vec<u8>,
    },
    /// Read whole batches (copied into the reply).
    Fetch {
        /// The partition.
        key: PartitionKey,
        /// Where to read.
        read: ReadRequest,
    },
    /// Wait until the partition has records at or after `offset` visible to `isolation`, or
    /// `deadline` passes (long-poll fetch).
    WaitForData {
        /// The partition.
        key: PartitionKey,
        /// First offset the caller lacks.
        offset: Offset,
        /// Which end counts.
        isolation: Isolation,
        /// Give up then.
        deadline: Instant,
    },
    /// Look up an offset.
    ListOffset {
        /// The partition.
        key: PartitionKey,
        /// What to look up.
        spec: OffsetSpec,
        /// What "latest" means.
        isolation: Isolation,
    },
}

/// Where one partition read starts and how much it may return.
#[derive(Clone, Copy, Debug)]
pub struct ReadRequest {
    /// First offset wanted.
    pub offset: Offset,
    /// Record bytes at most (at least one batch is returned when available).
    pub bytes_max: u32,
    /// HW or LEO bound.
    pub isolation: Isolation,
    /// The leader epoch the reader believes current; checked when present.
    pub leader_epoch: Option<LeaderEpoch>,
}

/// The outcome of a [`ShardOp`].
pub enum ShardReply {
    /// Of [`ShardOp::Produce`].
    Produce(ProduceOutcome),
    /// Of [`ShardOp::Fetch`]: header, copied records, the offset after them.
    Fetch(FetchPartitionHeader, Vec<u8>, Offset),
    /// Of [`ShardOp::WaitForData`]: data may be there now (or the deadline passed).
    Waited,
    /// Of [`ShardOp::ListOffset`].
    ListOffset(ListOffsetOutcome),
    /// The owning core could not run the operation.
    Failed(ErrorCode),
}

/// What an append of one partition's batches gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceOutcome {
    /// `None` on success.
    pub error_code: ErrorCode,
    /// Offset of the first appended record.
    pub base_offset: Option<Offset>,
    /// The partition's first offset.
    pub log_start_offset: Option<Offset>,
    /// Records appended.
    pub records: u64,
}

impl ProduceOutcome {
    /// A failure without offsets.
    pub fn error(error_code: ErrorCode) -> ProduceOutcome {
        ProduceOutcome { error_code, base_offset: None, log_start_offset: None, records: 0 }
    }
}

/// What an offset lookup gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOffsetOutcome {
    /// `None` on success.
    pub error_code: ErrorCode,
    /// The offset, if any.
    pub offset: Option<Offset>,
    /// The timestamp of that record for timestamp lookups.
    pub timestamp: Option<TimestampMs>,
}

impl ListOffsetOutcome {
    /// A failure.
    pub fn error(error_code: ErrorCode) -> ListOffsetOutcome {
        ListOffsetOutcome { error_code, offset: None, timestamp: None }
    }
}
