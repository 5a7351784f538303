//! Partition operations, wherever the partition lives: each function routes to this core's
//! replica (no copy: produce appends straight from the connection's receive buffer) or forwards
//! an owned [`ShardOp`] to the owning core (one copy each way), and [`execute`] runs a forwarded
//! operation on the owner.
//!
//! Why forward rather than hand the connection over: one request may name partitions of
//! several cores (a multi-partition produce or fetch), which a handoff could only serve by
//! moving the connection back and forth; forwarding splits the request per partition and keeps
//! the connection's order of responses, and it needs no descriptor passing between threads.
//! The cost is one copy of the records each way, which shard-aware clients (ours: per-core
//! ports) never pay; measured figures are in the module docs of [`super::connection`].

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use sluice_proto::api::fetch::{FetchPartitionHeader, Isolation};
use sluice_proto::api::list_offsets::OffsetSpec;
use sluice_proto::api::produce::Acks;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{Offset, PartitionId};
use sluice_proto::object::PartitionKey;

use crate::metrics::Gauge;
use crate::server::core::{Core, Route};
use crate::server::replica::{Replica, StagedProduce};
use crate::server::shard::{
    ListOffsetOutcome, ProduceOutcome, ReadRequest, ShardMessage, ShardOp, ShardReply,
};
use crate::storage::ReadSlices;

/// How a read hands its records over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// File slices for a local partition (sent with sendfile or copied at send time); a
    /// forwarded read is copied anyway.
    Slices,
    /// Always copied (CRC-checked) into memory.
    Copy,
}

/// The records of one partition read.
pub enum ReadRecords {
    /// Bytes in memory.
    Copied(Vec<u8>),
    /// Ranges of segment files (this core only).
    Slices(ReadSlices),
}

impl ReadRecords {
    /// Record bytes.
    pub fn len(&self) -> usize {
        match self {
            ReadRecords::Copied(bytes) => bytes.len(),
            ReadRecords::Slices(slices) => slices.bytes as usize,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One partition's read.
pub struct PartitionRead {
    /// Offsets and error code.
    pub header: FetchPartitionHeader,
    /// Whole batches.
    pub records: ReadRecords,
    /// Offset of the first returned batch, when any.
    pub first_offset: Option<Offset>,
    /// Where the next read continues.
    pub next_offset: Offset,
}

impl PartitionRead {
    /// A failed read.
    pub fn error(partition: PartitionId, code: ErrorCode, offset: Offset) -> PartitionRead {
        PartitionRead {
            header: FetchPartitionHeader::error(partition, code),
            records: ReadRecords::Copied(Vec::new()),
            first_offset: None,
            next_offset: offset,
        }
    }

    /// Records returned (offset span of the batches; compacted gaps count too).
    pub fn record_count(&self) -> u64 {
        self.first_offset.map_or(0, |first| (self.next_offset.get() - first.get()).max(0) as u64)
    }

    /// Whether the reader has everything visible to it (nothing more to read now).
    pub fn caught_up(&self, isolation: Isolation) -> bool {
        let end = match isolation {
            Isolation::ReadCommitted => self.header.high_watermark,
            Isolation::ReadUncommitted => self.header.log_end_offset,
        };
        !self.header.error_code.is_ok() || self.next_offset >= end
    }
}

fn unexpected(reply: &ShardReply) -> ErrorCode {
    match reply {
        ShardReply::Failed(code) => *code,
        _ => ErrorCode::UnknownServerError,
    }
}

/// Appends `records` (whole batches) to `key` and returns what is left to wait for: a local
/// partition answers once [`acknowledge`]d; a partition of another core is forwarded and
/// settled here (the owner waits for the acks).
pub async fn stage_produce(
    core: &Rc<Core>,
    key: PartitionKey,
    records: &mut [u8],
    acks: Acks,
    timeout_ms: u32,
) -> StagedProduce {
    match core.route(&key) {
        Err(code) => StagedProduce::Settled(ProduceOutcome::error(code)),
        Ok(Route::Local) => match core.local_replica(&key) {
            Ok(replica) => replica.stage_produce(records, acks, timeout_ms).await,
            Err(code) => StagedProduce::Settled(ProduceOutcome::error(code)),
        },
        Ok(Route::Remote(owner)) => {
            let op = ShardOp::Produce { key, acks, timeout_ms, records: records.to_vec() };
            StagedProduce::Settled(match core.forward(owner, op).await {
                ShardReply::Produce(outcome) => outcome,
                other => ProduceOutcome::error(unexpected(&other)),
            })
        }
    }
}

/// The outcome of a staged produce, waiting for its acknowledgement if it has one to wait for
/// (counted in the `ProduceWaiting` gauge meanwhile).
pub async fn acknowledge(core: &Core, staged: StagedProduce) -> ProduceOutcome {
    match staged {
        StagedProduce::Settled(outcome) => outcome,
        StagedProduce::Pending(pending) => {
            core.probe.adjust(Gauge::ProduceWaiting, 1);
            let outcome = pending.acknowledge().await;
            core.probe.adjust(Gauge::ProduceWaiting, -1);
            outcome
        }
    }
}

/// Base offset of the first batch in `records` (its first 8 bytes).
fn first_batch_offset(records: &[u8]) -> Option<Offset> {
    let bytes: [u8; 8] = records.get(..8)?.try_into().ok()?;
    Some(Offset(i64::from_be_bytes(bytes)))
}

fn read_local(
    replica: &Replica,
    partition: PartitionId,
    read: &ReadRequest,
    mode: ReadMode,
) -> PartitionRead {
    let outcome = match mode {
        ReadMode::Slices => replica
            .read(read)
            .map(|slices| (slices.first_offset, slices.next_offset, ReadRecords::Slices(slices))),
        ReadMode::Copy => {
            let mut records = Vec::new();
            replica.read_into(read, &mut records).map(|next_offset| {
                (first_batch_offset(&records), next_offset, ReadRecords::Copied(records))
            })
        }
    };
    match outcome {
        Ok((first_offset, next_offset, records)) => PartitionRead {
            header: replica.fetch_header(partition, ErrorCode::None),
            records,
            first_offset,
            next_offset,
        },
        Err(code) => PartitionRead {
            header: replica.fetch_header(partition, code),
            records: ReadRecords::Copied(Vec::new()),
            first_offset: None,
            next_offset: read.offset,
        },
    }
}

/// Reads whole batches of `key`: file slices when local and `mode` allows, else copied.
pub async fn read(
    core: &Rc<Core>,
    key: PartitionKey,
    read: ReadRequest,
    mode: ReadMode,
) -> PartitionRead {
    let partition = key.partition;
    match core.route(&key) {
        Err(code) => PartitionRead::error(partition, code, read.offset),
        Ok(Route::Local) => match core.local_replica(&key) {
            Ok(replica) => read_local(&replica, partition, &read, mode),
            Err(code) => PartitionRead::error(partition, code, read.offset),
        },
        Ok(Route::Remote(owner)) => match core.forward(owner, ShardOp::Fetch { key, read }).await {
            ShardReply::Fetch(header, records, next_offset) => PartitionRead {
                header,
                first_offset: first_batch_offset(&records),
                records: ReadRecords::Copied(records),
                next_offset,
            },
            other => PartitionRead::error(partition, unexpected(&other), read.offset),
        },
    }
}

/// Waits on this core until `replica` has records at or after `offset` for `isolation`, the
/// replica closes, or `deadline` passes.
pub async fn wait_local(
    replica: &Replica,
    offset: Offset,
    isolation: Isolation,
    deadline: Instant,
) {
    loop {
        let generation = replica.visible_generation();
        if replica.is_closed() || replica.readable_end(isolation) > offset {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let changed = async {
            replica.visible_changed(generation).await;
            true
        };
        let expired = async {
            glommio::timer::sleep(deadline - now).await;
            false
        };
        if !future::or(changed, expired).await {
            return;
        }
    }
}

/// Waits until `key` has records at or after `offset`, wherever it lives, or `deadline`.
pub async fn wait(
    core: &Rc<Core>,
    key: PartitionKey,
    offset: Offset,
    isolation: Isolation,
    deadline: Instant,
) {
    match core.route(&key) {
        Err(_) => {}
        Ok(Route::Local) => {
            if let Ok(replica) = core.local_replica(&key) {
                wait_local(&replica, offset, isolation, deadline).await;
            }
        }
        Ok(Route::Remote(owner)) => {
            let op = ShardOp::WaitForData { key, offset, isolation, deadline };
            let _ = core.forward(owner, op).await;
        }
    }
}

/// Looks up an offset of `key`.
pub async fn list_offset(
    core: &Rc<Core>,
    key: PartitionKey,
    spec: OffsetSpec,
    isolation: Isolation,
) -> ListOffsetOutcome {
    match core.route(&key) {
        Err(code) => ListOffsetOutcome::error(code),
        Ok(Route::Local) => match core.local_replica(&key) {
            Ok(replica) => replica.list_offset(spec, isolation),
            Err(code) => ListOffsetOutcome::error(code),
        },
        Ok(Route::Remote(owner)) => {
            match core.forward(owner, ShardOp::ListOffset { key, spec, isolation }).await {
                ShardReply::ListOffset(outcome) => outcome,
                other => ListOffsetOutcome::error(unexpected(&other)),
            }
        }
    }
}

/// Longest a forwarded long-poll may hold the owner's task: bounds waiters left behind by a
/// caller that already answered.
pub const FORWARDED_WAIT_MAX: Duration = Duration::from_secs(60);

/// Runs a forwarded operation on the owning core.
pub async fn execute(core: &Rc<Core>, op: ShardOp) -> ShardReply {
    match op {
        ShardOp::Produce { key, acks, timeout_ms, mut records } => match core.local_replica(&key) {
            Ok(replica) => {
                ShardReply::Produce(replica.produce(&mut records, acks, timeout_ms).await)
            }
            Err(code) => ShardReply::Failed(code),
        },
        ShardOp::Fetch { key, read } => match core.local_replica(&key) {
            Ok(replica) => {
                let result = read_local(&replica, key.partition, &read, ReadMode::Copy);
                let records = match result.records {
                    ReadRecords::Copied(bytes) => bytes,
                    ReadRecords::Slices(_) => Vec::new(),
                };
                ShardReply::Fetch(result.header, records, result.next_offset)
            }
            Err(code) => ShardReply::Failed(code),
        },
        ShardOp::WaitForData { key, offset, isolation, deadline } => {
            if let Ok(replica) = core.local_replica(&key) {
                let deadline = deadline.min(Instant::now() + FORWARDED_WAIT_MAX);
                wait_local(&replica, offset, isolation, deadline).await;
            }
            ShardReply::Waited
        }
        ShardOp::ListOffset { key, spec, isolation } => match core.local_replica(&key) {
            Ok(replica) => ShardReply::ListOffset(replica.list_offset(spec, isolation)),
            Err(code) => ShardReply::Failed(code),
        },
    }
}

/// Where core 0 hands the leader statuses other cores report (core index, statuses).
pub type StatusSink = Rc<dyn Fn(usize, Vec<sluice_proto::api::control::LiveReplica>)>;

/// Serves the mesh messages arriving from `peer`: requests run as tasks in the client queue
/// (so a long-poll never blocks the queue behind it), replies go to their waiters, replica
/// sets to the core, status reports to `on_status` (core 0 only).
pub async fn serve_peer(
    core: Rc<Core>,
    receiver: glommio::channels::shared_channel::ConnectedReceiver<ShardMessage>,
    peer: usize,
    on_status: Option<StatusSink>,
) {
    while let Some(message) = receiver.recv().await {
        match message {
            ShardMessage::Request { id, op } => {
                let queue = core.queues.client;
                let core = Rc::clone(&core);
                let spawned = glommio::spawn_local_into(
                    async move {
                        core.probe.adjust(Gauge::InboxDepth, 1);
                        let reply = execute(&core, op).await;
                        core.probe.adjust(Gauge::InboxDepth, -1);
                        core.send_to(peer, ShardMessage::Reply { id, reply }).await;
                    },
                    queue,
                );
                if let Ok(task) = spawned {
                    task.detach();
                }
            }
            ShardMessage::Reply { id, reply } => core.deliver_reply(id, reply),
            ShardMessage::Replicas(set) => core.set_desired(set),
            ShardMessage::Peers(peers) => core.fetchers.set_peers(&core, peers),
            ShardMessage::Security(update) => core.apply_security(&update),
            ShardMessage::AlterInSync(partitions) => core.send_proposals(partitions).await,
            ShardMessage::InSyncAnswers(results) => core.deliver_in_sync_answers(results).await,
            ShardMessage::Status { core: from, replicas } => {
                if let Some(on_status) = &on_status {
                    on_status(from, replicas);
                }
            }
        }
    }
}
