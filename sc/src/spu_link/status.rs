//! Store writes of the SPU connection manager: SPU liveness and live replica status (offsets
//! only: the in-sync set is changed by the controllers and by [`super::in_sync`]).
//!
//! Each write reads the object from the store (not the cache, which may lag) and writes it back
//! with put-if-version, retrying a few times when a controller wrote in between.

use sluice_proto::api::control::{LiveReplica, SpuRegisterRequest};
use sluice_proto::ids::{SpuId, TimestampMs};
use sluice_proto::object::{PartitionResolution, SpuResolution, SpuType};

use crate::controllers::partitions::leader_restarted;
use crate::objects::{partition_key, spu_key, PartitionObject, SpuObject};
use crate::store::{
    ExpectedVersion, MetadataStore, ObjectKind, StoreError, TypedStore, Version, Versioned,
};

/// Attempts of one read-modify-write before giving up until the next occasion.
const WRITE_ATTEMPTS_MAX: usize = 5;

/// Reads `(kind, key)`, applies `change`, writes it back if `change` returned true.
pub(super) fn modify<T>(
    store: &dyn MetadataStore,
    kind: ObjectKind,
    key: &crate::store::ObjectKey,
    mut change: impl FnMut(&mut T) -> bool,
) -> Result<Option<Version>, StoreError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    for _attempt in 0..WRITE_ATTEMPTS_MAX {
        let Some(Versioned { version, mut value, .. }) = store.get_typed::<T>(kind, key)? else {
            return Ok(None);
        };
        if !change(&mut value) {
            return Ok(Some(version));
        }
        match store.put_typed(kind, key, &value, ExpectedVersion::Exactly(version), None) {
            Ok(version) => return Ok(Some(version)),
            Err(error) if error.is_conflict() => continue,
            Err(error) => return Err(error),
        }
    }
    Err(StoreError::Unavailable { reason: format!("{kind}/{key} keeps changing") })
}

/// Records a registration: online, cores, ports, version, heartbeat; a managed SPU also takes
/// the endpoints it reports (a custom SPU keeps the operator's).
pub fn record_registration(
    store: &dyn MetadataStore,
    request: &SpuRegisterRequest,
    now: TimestampMs,
) -> Result<Option<Version>, StoreError> {
    modify(store, ObjectKind::Spu, &spu_key(request.id)?, |spu: &mut SpuObject| {
        spu.status.resolution = SpuResolution::Online;
        spu.status.cores = request.cores;
        spu.status.core_public_ports = request.core_public_ports.clone();
        spu.status.core_private_ports = request.core_private_ports.clone();
        spu.status.version = request.version.clone();
        spu.status.incarnation = Some(request.incarnation);
        spu.status.last_heartbeat = Some(now);
        if spu.spec.spu_type == SpuType::Managed {
            spu.spec.public_endpoint = request.public_endpoint.clone();
            spu.spec.private_endpoint = request.private_endpoint.clone();
        }
        true
    })
}

/// Whether the registering SPU runs another process than at its last registration: then its
/// logs may have lost their unsynced tails. A first registration is not a restart (nothing was
/// appended to the replicas it leads yet).
pub fn restarted_since_last_registration(
    store: &dyn MetadataStore,
    request: &SpuRegisterRequest,
) -> Result<bool, StoreError> {
    let stored = store.get_typed::<SpuObject>(ObjectKind::Spu, &spu_key(request.id)?)?;
    Ok(stored.is_some_and(|spu| {
        spu.value.status.incarnation.is_some_and(|last| last != request.incarnation)
    }))
}

/// Records that the SPU's process restarted: every partition it leads continues in the
/// next leader epoch ([`leader_restarted`]). Returns the newest version written.
pub fn record_leader_restarts(
    store: &dyn MetadataStore,
    id: SpuId,
) -> Result<Option<Version>, StoreError> {
    let listing = store.list_typed::<PartitionObject>(ObjectKind::Partition)?;
    let mut newest = None;
    for partition in listing.objects.iter().filter(|partition| partition.value.spec.leader == id) {
        let written = modify(
            store,
            ObjectKind::Partition,
            &partition.key,
            |partition: &mut PartitionObject| {
                let Some(restarted) = leader_restarted(partition, id) else { return false };
                tracing::info!(
                    spu = %id,
                    leader_epoch = %restarted.spec.leader_epoch,
                    "the leader's SPU registered again: its leadership continues in the next epoch"
                );
                *partition = restarted;
                true
            },
        )?;
        newest = newest.max(written);
    }
    Ok(newest)
}

/// Records that the SPU was heard from at `now`: online again if it was not, and the stored
/// heartbeat refreshed when it is older than `refresh_ms` (bounds store writes per SPU).
pub fn record_heartbeat(
    store: &dyn MetadataStore,
    id: SpuId,
    now: TimestampMs,
    refresh_ms: i64,
) -> Result<Option<Version>, StoreError> {
    modify(store, ObjectKind::Spu, &spu_key(id)?, |spu: &mut SpuObject| {
        let stale = spu
            .status
            .last_heartbeat
            .is_none_or(|last| now.get().saturating_sub(last.get()) >= refresh_ms);
        if spu.status.resolution == SpuResolution::Online && !stale {
            return false;
        }
        if spu.status.resolution != SpuResolution::Online {
            tracing::info!(spu = %id, "SPU is back online");
        }
        spu.status.resolution = SpuResolution::Online;
        spu.status.last_heartbeat = Some(now);
        true
    })
}

/// Records that the SPU's control connection ended: offline at once (the controllers then
/// move its leaderships and shrink the in-sync sets it was in).
pub fn record_session_end(
    store: &dyn MetadataStore,
    id: SpuId,
) -> Result<Option<Version>, StoreError> {
    modify(store, ObjectKind::Spu, &spu_key(id)?, |spu: &mut SpuObject| {
        if spu.status.resolution != SpuResolution::Online {
            return false;
        }
        tracing::info!(spu = %id, "SPU offline: its control connection ended");
        spu.status.resolution = SpuResolution::Offline;
        true
    })
}

/// Writes a leader's live replica status into the partition's status (only from the current
/// leader in the current leader epoch; anything else is stale and ignored).
pub fn record_live_replica(
    store: &dyn MetadataStore,
    spu: SpuId,
    report: &LiveReplica,
) -> Result<Option<Version>, StoreError> {
    let key = partition_key(&report.key)?;
    modify(store, ObjectKind::Partition, &key, |partition: &mut PartitionObject| {
        if partition.spec.leader != spu || partition.spec.leader_epoch != report.leader_epoch {
            tracing::debug!(partition = %report.key, %spu, "stale live replica status ignored");
            return false;
        }
        let mut status = partition.status.clone();
        status.resolution = PartitionResolution::Online;
        status.leader = report.leader;
        status.replicas = report.followers.clone();
        if status == partition.status {
            return false;
        }
        partition.status = status;
        true
    })
}
