//! Admin requests that grow and move: adding partitions to a topic, moving partitions'
//! replicas to other SPUs (or cancelling a move), and moving every replica off an SPU
//! (decommission). They only write specs; the controllers carry the moves out
//! ([`crate::controllers::reassign`]), on this SC or the next one.
//!
//! Error policy (in addition to [`super::handlers`]'): a partition count that does not grow
//! the topic: `InvalidPartitions`; a move of a partition already moving:
//! `ReassignmentInProgress`; a cancel of a partition not moving: `NoReassignmentInProgress`; an
//! unknown SPU in a target: `UnknownSpu`; any other bad target: `InvalidReplicaAssignment`; a
//! decommission that leaves too few SPUs for some partition: `ReplicationFactorAboveSpuCount`
//! (nothing is started then).

use sluice_proto::api::admin::{
    AdminResponse, AlterTopicPartitionsRequest, DecommissionSpuRequest, ReassignPartitionsRequest,
    ReassignPartitionsResponse, ReassignmentChange, ReassignmentResult, ReplicaTarget,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::SpuId;
use sluice_proto::object::topic::PARTITIONS_MAX;
use sluice_proto::object::{PartitionKey, ReplicaPlacement, ReplicaSpec};

use super::ServerContext;
use crate::assignment::replace::{least_loaded_core, replacement};
use crate::assignment::{PartitionReplicas, ReplicaLoad, ReplicaSlot, SpuResources};
use crate::cache::Snapshot;
use crate::controllers::reassign::{self, ReassignError};
use crate::controllers::reducer::spu_resources;
use crate::objects::{partition_key, topic_key, PartitionObject, TopicObject};
use crate::store::{ExpectedVersion, ObjectKind, StoreError, TypedStore, Version};

/// Read-modify-write attempts of one object before giving up (`ScUnavailable`).
const WRITE_ATTEMPTS_MAX: usize = 5;

/// The load of every partition's current replicas (a moving partition's union counts).
pub fn current_load(snapshot: &Snapshot) -> ReplicaLoad {
    let mut load = ReplicaLoad::new();
    for partition in snapshot.partitions.values() {
        load.add_partition(&slots(&partition.value.spec.replicas));
    }
    load
}

fn slots(replicas: &[ReplicaPlacement]) -> PartitionReplicas {
    PartitionReplicas {
        replicas: replicas
            .iter()
            .map(|replica| ReplicaSlot { spu: replica.spu, core: replica.core })
            .collect(),
    }
}

/// The target's placements: a replica that stays keeps its core; a new one takes the named
/// core, else its SPU's least-loaded core (`load`).
pub fn resolve_target(
    spus: &[SpuResources],
    load: &ReplicaLoad,
    partition: &PartitionObject,
    target: &[ReplicaTarget],
) -> Result<Vec<ReplicaPlacement>, ReassignError> {
    target
        .iter()
        .enumerate()
        .map(|(index, wanted)| {
            let Some(spu) = spus.iter().find(|spu| spu.id == wanted.spu) else {
                return Err(ReassignError::UnknownSpu { spu: wanted.spu });
            };
            let current = partition.spec.replicas.iter().find(|replica| replica.spu == wanted.spu);
            let core = match (wanted.core, current) {
                (Some(core), _) if core.get() >= spu.cores => {
                    return Err(ReassignError::CoreOutOfRange {
                        spu: spu.id,
                        core: core.get(),
                        cores: spu.cores,
                    })
                }
                (Some(core), _) => core,
                (None, Some(current)) => current.core,
                (None, None) => least_loaded_core(spu, load, index == 0),
            };
            Ok(ReplicaPlacement { spu: spu.id, core })
        })
        .collect()
}

/// One partition of a decommission: its target, or why it cannot move now.
pub type PlannedMove = (PartitionKey, Result<Vec<ReplicaPlacement>, ReassignError>);

/// The targets that move every replica off `leaving`: each partition naming it gets a
/// replacement in the same position (see [`replacement`]). Partitions moving already are
/// skipped where `leaving` is only being removed, and refused where it is in the target.
/// Fails as a whole when the other SPUs are too few for some partition.
pub fn decommission_plan(snapshot: &Snapshot, leaving: SpuId) -> Result<Vec<PlannedMove>, String> {
    let spus = spu_resources(snapshot);
    let mut load = current_load(snapshot);
    let others = spus.iter().filter(|spu| spu.id != leaving).count();
    let mut plan = Vec::new();
    for (key, partition) in &snapshot.partitions {
        let spec = &partition.value.spec;
        let Some(position) = spec.replicas.iter().position(|replica| replica.spu == leaving) else {
            continue;
        };
        if let Some(moving) = &spec.reassignment {
            if moving.target.iter().any(|replica| replica.spu == leaving) {
                let target = moving.target.iter().map(|replica| replica.spu).collect();
                plan.push((key.clone(), Err(ReassignError::InProgress { target })));
            }
            continue;
        }
        if spec.replicas.len() > others {
            return Err(format!(
                "partition {key} has {} replicas but only {others} SPUs would remain without \
                 SPU {leaving}; add an SPU first",
                spec.replicas.len()
            ));
        }
        let kept: Vec<ReplicaSlot> =
            slots(&spec.replicas).replicas.into_iter().filter(|slot| slot.spu != leaving).collect();
        let slot = replacement(&spus, &load, &kept, &[leaving], position == 0)
            .map_err(|error| format!("partition {key}: {error}"))?;
        let mut target = spec.replicas.clone();
        target[position] = ReplicaPlacement { spu: slot.spu, core: slot.core };
        load.add_partition(&PartitionReplicas { replicas: vec![slot] });
        plan.push((key.clone(), Ok(target)));
    }
    Ok(plan)
}

fn refusal(key: &PartitionKey, error: &ReassignError) -> ReassignmentResult {
    let error_code = match error {
        ReassignError::InProgress { .. } => ErrorCode::ReassignmentInProgress,
        ReassignError::NotInProgress => ErrorCode::NoReassignmentInProgress,
        ReassignError::UnknownSpu { .. } => ErrorCode::UnknownSpu,
        _ => ErrorCode::InvalidReplicaAssignment,
    };
    ReassignmentResult {
        key: key.clone(),
        error_code,
        message: Some(format!("partition {key}: {error}")),
        target: Vec::new(),
    }
}

/// The change a request asks of one partition, with its cores resolved.
enum Change {
    Move(Vec<ReplicaPlacement>),
    Cancel,
}

impl ServerContext {
    /// Grows a topic's partition count (see [`AlterTopicPartitionsRequest`]).
    pub fn alter_topic_partitions(&self, request: &AlterTopicPartitionsRequest) -> AdminResponse {
        let key = match topic_key(&request.name) {
            Ok(key) => key,
            Err(error) => {
                return AdminResponse::error(ErrorCode::InvalidTopicName, error.to_string())
            }
        };
        for _attempt in 0..WRITE_ATTEMPTS_MAX {
            let current = match self.store.get_typed::<TopicObject>(ObjectKind::Topic, &key) {
                Ok(Some(current)) => current,
                Ok(None) => {
                    let message = format!("topic {} does not exist", request.name);
                    return AdminResponse::error(ErrorCode::TopicNotFound, message);
                }
                Err(error) => return store_error(&error),
            };
            let mut object = current.value.clone();
            let ReplicaSpec::Computed { partitions, .. } = &mut object.spec.replicas else {
                let message = format!(
                    "topic {} has an explicit replica assignment; partitions are added only to \
                     topics whose replicas the SC places",
                    request.name
                );
                return AdminResponse::error(ErrorCode::InvalidPartitions, message);
            };
            if request.partitions <= *partitions || request.partitions > PARTITIONS_MAX {
                let message = format!(
                    "topic {} has {} partitions; the new count must be larger, at most \
                     {PARTITIONS_MAX} (partitions are never removed)",
                    request.name, *partitions
                );
                return AdminResponse::error(ErrorCode::InvalidPartitions, message);
            }
            let before = *partitions;
            *partitions = request.partitions;
            let expected = ExpectedVersion::Exactly(current.version);
            match self.store.put_typed(ObjectKind::Topic, &key, &object, expected, None) {
                Ok(version) => {
                    tracing::info!(
                        topic = %request.name, from = before, to = request.partitions,
                        "partitions added"
                    );
                    return self.written_version(version);
                }
                Err(error) if error.is_conflict() => continue,
                Err(error) => return store_error(&error),
            }
        }
        AdminResponse::error(ErrorCode::ScUnavailable, "the topic keeps changing; retry")
    }

    /// Starts (or cancels) moves of partitions' replicas, each partition on its own.
    pub fn reassign_partitions(
        &self,
        request: &ReassignPartitionsRequest,
    ) -> ReassignPartitionsResponse {
        let snapshot = self.cache.snapshot();
        let spus = spu_resources(&snapshot);
        let mut load = current_load(&snapshot);
        let mut response = ReassignPartitionsResponse::default();
        let mut newest = Version::ZERO;
        for wanted in &request.partitions {
            let Some(partition) = snapshot.partitions.get(&wanted.key) else {
                response.results.push(ReassignmentResult {
                    key: wanted.key.clone(),
                    error_code: ErrorCode::UnknownTopicOrPartition,
                    message: Some(format!("partition {} does not exist", wanted.key)),
                    target: Vec::new(),
                });
                continue;
            };
            let change = match &wanted.change {
                ReassignmentChange::Cancel => Change::Cancel,
                ReassignmentChange::Move(target) => {
                    match resolve_target(&spus, &load, &partition.value, target) {
                        Ok(target) => Change::Move(target),
                        Err(error) => {
                            response.results.push(refusal(&wanted.key, &error));
                            continue;
                        }
                    }
                }
            };
            if let Change::Move(target) = &change {
                load.add_partition(&slots(target));
            }
            match self.start_move(&wanted.key, &change, request.throttle_bytes_per_second) {
                Ok((result, version)) => {
                    newest = newest.max(version);
                    response.results.push(result);
                }
                Err(error) => {
                    response.error_code = ErrorCode::ScUnavailable;
                    response.message = Some(format!("metadata store: {error}"));
                    break;
                }
            }
        }
        self.wait_visible(newest);
        response
    }

    /// Moves every replica off an SPU (see [`DecommissionSpuRequest`]).
    pub fn decommission_spu(&self, request: &DecommissionSpuRequest) -> ReassignPartitionsResponse {
        let snapshot = self.cache.snapshot();
        if !snapshot.spus.contains_key(&request.id) {
            return ReassignPartitionsResponse {
                error_code: ErrorCode::SpuNotFound,
                message: Some(format!("SPU {} is not registered", request.id)),
                results: Vec::new(),
            };
        }
        let plan = match decommission_plan(&snapshot, request.id) {
            Ok(plan) => plan,
            Err(reason) => {
                return ReassignPartitionsResponse {
                    error_code: ErrorCode::ReplicationFactorAboveSpuCount,
                    message: Some(format!("cannot decommission SPU {}: {reason}", request.id)),
                    results: Vec::new(),
                }
            }
        };
        let mut response = ReassignPartitionsResponse::default();
        let mut newest = Version::ZERO;
        for (key, target) in plan {
            let target = match target {
                Ok(target) => target,
                Err(error) => {
                    response.results.push(refusal(&key, &error));
                    continue;
                }
            };
            let throttle = request.throttle_bytes_per_second;
            match self.start_move(&key, &Change::Move(target), throttle) {
                Ok((result, version)) => {
                    newest = newest.max(version);
                    response.results.push(result);
                }
                Err(error) => {
                    response.error_code = ErrorCode::ScUnavailable;
                    response.message = Some(format!("metadata store: {error}"));
                    break;
                }
            }
        }
        tracing::info!(spu = %request.id, moves = response.results.len(), "decommission started");
        self.wait_visible(newest);
        response
    }

    /// Writes one partition's move (or cancel) from its stored state; the result and the
    /// version written (zero when nothing was).
    fn start_move(
        &self,
        key: &PartitionKey,
        change: &Change,
        throttle_bytes_per_second: Option<u64>,
    ) -> Result<(ReassignmentResult, Version), StoreError> {
        let store_key = partition_key(key)?;
        for _attempt in 0..WRITE_ATTEMPTS_MAX {
            let Some(current) =
                self.store.get_typed::<PartitionObject>(ObjectKind::Partition, &store_key)?
            else {
                let error = ReassignError::EmptyTarget;
                return Ok((refusal(key, &error), Version::ZERO));
            };
            let next = match change {
                Change::Move(target) => {
                    reassign::begin(&current.value, target.clone(), throttle_bytes_per_second)
                }
                Change::Cancel => reassign::cancel(&current.value).map(Some),
            };
            let next = match next {
                Ok(Some(next)) => next,
                Ok(None) => {
                    let result = ReassignmentResult {
                        key: key.clone(),
                        error_code: ErrorCode::None,
                        message: Some("the partition has these replicas already".into()),
                        target: current.value.spec.replicas.clone(),
                    };
                    return Ok((result, Version::ZERO));
                }
                Err(error) => return Ok((refusal(key, &error), Version::ZERO)),
            };
            let target = next
                .spec
                .reassignment
                .as_ref()
                .map(|moving| moving.target.clone())
                .unwrap_or_default();
            let expected = ExpectedVersion::Exactly(current.version);
            match self.store.put_typed(ObjectKind::Partition, &store_key, &next, expected, None) {
                Ok(version) => {
                    tracing::info!(
                        partition = %key, ?target, throttle = ?throttle_bytes_per_second,
                        cancel = matches!(change, Change::Cancel), "reassignment started"
                    );
                    let result = ReassignmentResult {
                        key: key.clone(),
                        error_code: ErrorCode::None,
                        message: None,
                        target,
                    };
                    return Ok((result, version));
                }
                Err(error) if error.is_conflict() => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Unavailable { reason: format!("partition {key} keeps changing") })
    }

    fn wait_visible(&self, version: Version) {
        if version > Version::ZERO
            && !self.cache.wait_for_revision(version, super::handlers::WRITE_VISIBLE_TIMEOUT)
        {
            tracing::warn!(version = version.get(), "admin writes not yet visible in the cache");
        }
    }

    fn written_version(&self, version: Version) -> AdminResponse {
        self.wait_visible(version);
        AdminResponse::ok()
    }
}

fn store_error(error: &StoreError) -> AdminResponse {
    AdminResponse::error(ErrorCode::ScUnavailable, format!("metadata store: {error}"))
}
