//! The controllers: listener -> pure reducer -> action step, for SPU groups, SPUs, topics and
//! partitions.
//!
//! ## Shape
//!
//! - **Listener**: the controller thread ([`run`]) wakes on every cache change (a coalesced
//!   signal from [`Cache::subscribe`]) and at least every [`BACKSTOP_INTERVAL`] (heartbeat
//!   timeouts need a clock, and a failed write must be retried even if nothing changes). An
//!   SPU's silence counts from the thread's start at the earliest, so a new SC (restarted or
//!   taking over) does not mark offline SPUs that have not had time to reconnect to it.
//! - **Reducer**: [`reducer::reduce`], pure over the [`crate::cache::Snapshot`]; see its docs for
//!   the topic lifecycle that keeps partitions in place across restarts, and [`partitions`] for
//!   leadership and in-sync sets. Moving leaders back to preferred replicas is allowed in one
//!   pass per leader rebalance interval (a flag of the pass, so the reducer stays pure), and
//!   never to an SPU under a leadership hold ([`holds`]; the SPUs held are an input of the pass).
//! - **Action step**: [`execute`] writes each action with put-if-version (create = must be
//!   absent). A conflict means the reducer saw a stale snapshot: it is logged at debug level and
//!   the next pass decides again. After a pass with writes the thread waits (bounded) until the
//!   cache reflects them, so it does not compute the same actions twice.
//!
//! The controller never reads the store directly and never writes the cache: its writes come
//! back through the store's watch like everyone else's.

pub mod holds;
pub mod partitions;
pub mod reassign;
pub mod reducer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use sluice_proto::ids::TimestampMs;

use self::reducer::{Action, PreferredLeaders, ReduceContext};
use crate::cache::Cache;
use crate::objects::{partition_key, spu_group_key, spu_key, topic_key};
use crate::store::{ExpectedVersion, MetadataStore, ObjectKind, StoreError, TypedStore, Version};

/// Longest time between two reducer passes.
pub const BACKSTOP_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for the cache to reflect a pass's writes.
const WRITE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> TimestampMs {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    TimestampMs(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// What the controller thread is configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerSettings {
    /// Time without a heartbeat before an SPU is offline.
    pub heartbeat_timeout: Duration,
    /// How often leadership may move back to preferred replicas on its own; `None`: never
    /// (only on an operator's `RebalanceLeaders`).
    pub leader_rebalance_interval: Option<Duration>,
}

/// The controller thread's body; returns when `shutdown` is set.
pub fn run(
    store: Arc<dyn MetadataStore>,
    cache: Arc<Cache>,
    settings: ControllerSettings,
    holds: Arc<holds::LeadershipHolds>,
    shutdown: Arc<AtomicBool>,
) {
    let changes = cache.subscribe();
    let heartbeat_timeout_ms =
        i64::try_from(settings.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
    let started = now_ms();
    let mut last_rebalance = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        match changes.recv_timeout(BACKSTOP_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let snapshot = cache.snapshot();
        let rebalance_due = settings
            .leader_rebalance_interval
            .is_some_and(|interval| last_rebalance.elapsed() >= interval);
        let preferred_leaders =
            if rebalance_due { PreferredLeaders::Restore } else { PreferredLeaders::Leave };
        if rebalance_due {
            last_rebalance = Instant::now();
        }
        let context =
            ReduceContext { now: now_ms(), started, heartbeat_timeout_ms, preferred_leaders };
        let actions = reducer::reduce_holding(&snapshot, context, &holds.held());
        let mut newest = Version::ZERO;
        for action in actions {
            match execute(store.as_ref(), &action) {
                Ok(version) => newest = newest.max(version),
                Err(error) if error.is_conflict() => {
                    tracing::debug!(%error, "stale controller action; deciding again");
                }
                Err(error) => tracing::warn!(%error, ?action, "controller action failed"),
            }
        }
        if newest > Version::ZERO {
            cache.wait_for_revision(newest, WRITE_VISIBLE_TIMEOUT);
        }
    }
}

/// Writes one action to the store; returns the version written.
pub fn execute(store: &dyn MetadataStore, action: &Action) -> Result<Version, StoreError> {
    let exactly = ExpectedVersion::Exactly;
    match action {
        Action::UpdateTopic { name, version, object } => {
            tracing::info!(topic = %name, resolution = ?object.status.resolution, "topic status");
            store.put_typed(ObjectKind::Topic, &topic_key(name)?, object, exactly(*version), None)
        }
        Action::CreatePartition { key, object } => {
            tracing::info!(partition = %key, replicas = ?object.spec.replicas, "partition created");
            let store_key = partition_key(key)?;
            store.put_typed(
                ObjectKind::Partition,
                &store_key,
                object,
                ExpectedVersion::Absent,
                None,
            )
        }
        Action::UpdatePartition { key, version, object, events } => {
            let store_key = partition_key(key)?;
            let written = store.put_typed(
                ObjectKind::Partition,
                &store_key,
                object,
                exactly(*version),
                None,
            )?;
            for event in events {
                partitions::log_event(key, event);
                match event {
                    partitions::PartitionEvent::Elected(_) => {
                        crate::metrics::METRICS.record_election(false);
                    }
                    partitions::PartitionEvent::UncleanlyElected(_) => {
                        crate::metrics::METRICS.record_election(true);
                    }
                    _ => {}
                }
            }
            Ok(written)
        }
        Action::DeletePartition { key, version } => {
            tracing::info!(partition = %key, "partition deleted");
            store.delete(ObjectKind::Partition, &partition_key(key)?, *version, None)
        }
        Action::CreateSpu { object } => {
            tracing::info!(spu = %object.spec.id, "managed SPU created");
            let key = spu_key(object.spec.id)?;
            store.put_typed(ObjectKind::Spu, &key, object, ExpectedVersion::Absent, None)
        }
        Action::UpdateSpu { id, version, object } => {
            tracing::info!(spu = %id, resolution = ?object.status.resolution, "SPU status");
            store.put_typed(ObjectKind::Spu, &spu_key(*id)?, object, exactly(*version), None)
        }
        Action::DeleteSpu { id, version } => {
            tracing::info!(spu = %id, "managed SPU deleted");
            store.delete(ObjectKind::Spu, &spu_key(*id)?, *version, None)
        }
        Action::UpdateSpuGroup { name, version, object } => {
            let key = spu_group_key(name)?;
            store.put_typed(ObjectKind::SpuGroup, &key, object, exactly(*version), None)
        }
    }
}
