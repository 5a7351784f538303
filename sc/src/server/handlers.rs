//! Admin request handlers: validate, write the store with put/delete-if-version, wait until the
//! cache shows the write (read-your-writes for the next request), answer.
//!
//! Error policy (internal errors are mapped to wire codes here, once):
//! - a name that does not validate: `InvalidTopicName` / `InvalidSpuGroupName`;
//! - a setting out of range: `InvalidPartitions`, `InvalidReplicationFactor`,
//!   `InvalidReplicaAssignment` or `InvalidConfig`, with the allowed range in the message;
//! - replication factor above the registered SPU count: `ReplicationFactorAboveSpuCount`;
//! - an object that exists / does not: `*AlreadyExists` / `*NotFound`;
//! - a store failure: `ScUnavailable` (retriable; for a write the outcome is unknown);
//! - `RebalanceLeaders` of a topic that does not exist: `TopicNotFound`; partitions whose
//!   preferred replica cannot lead now (offline, out of sync, or its SPU under a leadership
//!   hold) are listed, not an error.

use std::time::Duration;

use sluice_proto::api::admin::{
    AdminResponse, CreateSpuGroupRequest, CreateTopicRequest, DeleteSpuGroupRequest,
    DeleteTopicRequest, DescribeTopicRequest, DescribeTopicResponse, ListPartitionsRequest,
    ListPartitionsResponse, ListSpuGroupsResponse, ListSpusResponse, ListTopicsRequest,
    ListTopicsResponse, PartitionEntry, RebalanceLeadersRequest, RebalanceLeadersResponse,
    RegisterSpuRequest, SpuEntry, SpuGroupEntry, TopicEntry, UnregisterSpuRequest,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::object::{
    ConfigError, ReplicaSpec, SpuGroupStatus, SpuStatus, SpuType, TopicSpec, TopicStatus,
};

use super::ServerContext;
use crate::assignment::AssignmentRequest;
use crate::cache::Snapshot;
use crate::controllers::partitions::{self, log_event, PartitionEvent, Preferred};
use crate::controllers::reducer::{assignment_request, spu_resources};
use crate::objects::{
    partition_key, spu_group_key, spu_key, topic_key, PartitionObject, SpuGroupObject, SpuObject,
    TopicObject,
};
use crate::store::{ExpectedVersion, ObjectKey, ObjectKind, StoreError, TypedStore, Version};

/// Longest wait for the cache to show an admin write before answering anyway.
pub(crate) const WRITE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn store_error(error: &StoreError) -> AdminResponse {
    AdminResponse::error(ErrorCode::ScUnavailable, format!("metadata store: {error}"))
}

fn config_error(error: &ConfigError) -> AdminResponse {
    let setting = match error {
        ConfigError::OutOfRange { setting, .. } | ConfigError::Invalid { setting, .. } => *setting,
    };
    let code = match setting {
        "partitions" => ErrorCode::InvalidPartitions,
        "replication_factor" => ErrorCode::InvalidReplicationFactor,
        "assignment" => ErrorCode::InvalidReplicaAssignment,
        _ => ErrorCode::InvalidConfig,
    };
    AdminResponse::error(code, error.to_string())
}

impl ServerContext {
    pub(super) fn written(&self, version: Version) -> AdminResponse {
        if !self.cache.wait_for_revision(version, WRITE_VISIBLE_TIMEOUT) {
            tracing::warn!(version = version.get(), "admin write not yet visible in the cache");
        }
        AdminResponse::ok()
    }

    /// Fills unset settings (zero partitions, replication factor or segment size, no retention)
    /// from the configured defaults.
    fn with_defaults(&self, mut spec: TopicSpec) -> TopicSpec {
        let defaults = self.topic_defaults;
        if let ReplicaSpec::Computed { partitions, replication_factor, .. } = &mut spec.replicas {
            if *partitions == 0 {
                *partitions = defaults.partitions;
            }
            if *replication_factor == 0 {
                *replication_factor = defaults.replication_factor;
            }
        }
        if spec.segment_bytes == 0 {
            spec.segment_bytes = defaults.segment_bytes;
        }
        if spec.retention_time_ms.is_none() {
            spec.retention_time_ms = defaults.retention_ms;
        }
        spec
    }

    /// Creates a topic.
    pub fn create_topic(&self, request: CreateTopicRequest) -> AdminResponse {
        let spec = self.with_defaults(request.spec);
        if let Err(error) = spec.validate() {
            return config_error(&error);
        }
        let snapshot = self.cache.snapshot();
        if let Some(refusal) = check_placement(&snapshot, &spec) {
            return refusal;
        }
        if snapshot.topics.contains_key(&request.name) {
            let message = format!("topic {} already exists", request.name);
            return AdminResponse::error(ErrorCode::TopicAlreadyExists, message);
        }
        if snapshot.topic_partitions(&request.name).next().is_some() {
            let message = format!("topic {} is still being deleted; retry later", request.name);
            return AdminResponse::error(ErrorCode::TopicAlreadyExists, message);
        }
        if request.dry_run {
            return AdminResponse::ok();
        }
        let key = match topic_key(&request.name) {
            Ok(key) => key,
            Err(error) => {
                return AdminResponse::error(ErrorCode::InvalidTopicName, error.to_string())
            }
        };
        let object = TopicObject { spec, status: TopicStatus::default() };
        match self.store.put_typed(ObjectKind::Topic, &key, &object, ExpectedVersion::Absent, None)
        {
            Ok(version) => {
                tracing::info!(topic = %request.name, "topic created");
                self.written(version)
            }
            Err(error) if error.is_conflict() => AdminResponse::error(
                ErrorCode::TopicAlreadyExists,
                format!("topic {} already exists", request.name),
            ),
            Err(error) => store_error(&error),
        }
    }

    /// Deletes a topic; the controller then deletes its partitions.
    pub fn delete_topic(&self, request: &DeleteTopicRequest) -> AdminResponse {
        let not_found = || {
            AdminResponse::error(
                ErrorCode::TopicNotFound,
                format!("topic {} does not exist", request.name),
            )
        };
        match topic_key(&request.name) {
            Ok(key) => self.delete_object(ObjectKind::Topic, &key, not_found),
            Err(_) => not_found(),
        }
    }

    pub(super) fn delete_object(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        not_found: impl Fn() -> AdminResponse,
    ) -> AdminResponse {
        // A concurrent status write by a controller may move the version between get and delete.
        for _attempt in 0..5 {
            let current = match self.store.get(kind, key) {
                Ok(Some(object)) => object,
                Ok(None) => return not_found(),
                Err(error) => return store_error(&error),
            };
            match self.store.delete(kind, key, current.version, None) {
                Ok(version) => {
                    tracing::info!(%kind, %key, "deleted");
                    return self.written(version);
                }
                Err(error) if error.is_conflict() => continue,
                Err(error) => return store_error(&error),
            }
        }
        AdminResponse::error(ErrorCode::ScUnavailable, format!("{kind}/{key} keeps changing"))
    }

    /// Lists topics.
    pub fn list_topics(&self, request: &ListTopicsRequest) -> ListTopicsResponse {
        let snapshot = self.cache.snapshot();
        let topics = snapshot
            .topics
            .iter()
            .filter(|(name, _)| request.names.as_ref().is_none_or(|names| names.contains(name)))
            .map(|(name, topic)| TopicEntry {
                name: name.clone(),
                spec: topic.value.spec.clone(),
                status: topic.value.status.clone(),
            })
            .collect();
        ListTopicsResponse { error_code: ErrorCode::None, topics }
    }

    /// One topic with its partitions.
    pub fn describe_topic(&self, request: &DescribeTopicRequest) -> DescribeTopicResponse {
        let snapshot = self.cache.snapshot();
        let Some(topic) = snapshot.topics.get(&request.name) else {
            return DescribeTopicResponse {
                error_code: ErrorCode::TopicNotFound,
                ..DescribeTopicResponse::default()
            };
        };
        DescribeTopicResponse {
            error_code: ErrorCode::None,
            topic: Some(TopicEntry {
                name: request.name.clone(),
                spec: topic.value.spec.clone(),
                status: topic.value.status.clone(),
            }),
            partitions: partition_entries(&snapshot, Some(&request.name)),
        }
    }

    /// Lists partitions.
    pub fn list_partitions(&self, request: &ListPartitionsRequest) -> ListPartitionsResponse {
        let snapshot = self.cache.snapshot();
        let partitions = partition_entries(&snapshot, request.topic.as_ref());
        ListPartitionsResponse { error_code: ErrorCode::None, partitions }
    }

    /// Moves leadership back to each preferred replica that is online and in sync (of one
    /// topic, or all), now; answers which partitions moved and which cannot move now.
    pub fn rebalance_leaders(&self, request: &RebalanceLeadersRequest) -> RebalanceLeadersResponse {
        let snapshot = self.cache.snapshot();
        if let Some(topic) = &request.topic {
            if !snapshot.topics.contains_key(topic) {
                return RebalanceLeadersResponse {
                    error_code: ErrorCode::TopicNotFound,
                    message: Some(format!("topic {topic} does not exist")),
                    ..RebalanceLeadersResponse::default()
                };
            }
        }
        let online = |spu| snapshot.spus.get(&spu).is_some_and(|spu| spu.value.status.is_online());
        let held = self.holds.held();
        let mut response = RebalanceLeadersResponse::default();
        let mut newest = Version::ZERO;
        for (key, partition) in &snapshot.partitions {
            if request.topic.as_ref().is_some_and(|topic| *topic != key.topic) {
                continue;
            }
            let preferred_held = partition
                .value
                .spec
                .replicas
                .first()
                .is_some_and(|replica| held.contains(&replica.spu));
            match partitions::preferred_leader(&partition.value, &online) {
                Preferred::Leads => {}
                Preferred::Eligible if preferred_held => response.not_eligible.push(key.clone()),
                Preferred::NotEligible => response.not_eligible.push(key.clone()),
                Preferred::Eligible => match self.restore_preferred(key, &online) {
                    Ok(Some(version)) => {
                        newest = newest.max(version);
                        response.moved.push(key.clone());
                    }
                    Ok(None) => response.not_eligible.push(key.clone()),
                    Err(error) => {
                        response.error_code = ErrorCode::ScUnavailable;
                        response.message = Some(format!("metadata store: {error}"));
                        break;
                    }
                },
            }
        }
        if newest > Version::ZERO && !self.cache.wait_for_revision(newest, WRITE_VISIBLE_TIMEOUT) {
            tracing::warn!(version = newest.get(), "leader moves not yet visible in the cache");
        }
        response
    }

    /// Moves one partition's leadership to its preferred replica if it is still eligible in
    /// the store; the version written, or `None` when it no longer is.
    fn restore_preferred(
        &self,
        key: &sluice_proto::object::PartitionKey,
        online: &dyn Fn(sluice_proto::ids::SpuId) -> bool,
    ) -> Result<Option<Version>, StoreError> {
        let store_key = partition_key(key)?;
        for _attempt in 0..5 {
            let Some(current) =
                self.store.get_typed::<PartitionObject>(ObjectKind::Partition, &store_key)?
            else {
                return Ok(None);
            };
            if partitions::preferred_leader(&current.value, online) != Preferred::Eligible {
                return Ok(None);
            }
            let (moved, change) = partitions::restore_preferred(&current.value);
            let expected = ExpectedVersion::Exactly(current.version);
            match self.store.put_typed(ObjectKind::Partition, &store_key, &moved, expected, None) {
                Ok(version) => {
                    log_event(key, &PartitionEvent::PreferredRestored(change));
                    return Ok(Some(version));
                }
                Err(error) if error.is_conflict() => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Unavailable { reason: format!("partition {key} keeps changing") })
    }

    /// Registers a custom SPU.
    pub fn register_spu(&self, request: RegisterSpuRequest) -> AdminResponse {
        let spec = request.spec;
        if spec.spu_type != SpuType::Custom {
            let message = "only custom SPUs are registered; managed SPUs come from SPU groups";
            return AdminResponse::error(ErrorCode::InvalidRequest, message);
        }
        if spec.id.get() < 0 {
            let message = format!("SPU id {} is negative; ids are 0 or more", spec.id);
            return AdminResponse::error(ErrorCode::InvalidRequest, message);
        }
        let snapshot = self.cache.snapshot();
        if let Some((name, _)) = snapshot
            .spu_groups
            .iter()
            .find(|(_, group)| group.value.spec.spu_ids().any(|id| id == spec.id))
        {
            let message = format!("SPU id {} belongs to SPU group {name}", spec.id);
            return AdminResponse::error(ErrorCode::SpuAlreadyExists, message);
        }
        let id = spec.id;
        let key = match spu_key(id) {
            Ok(key) => key,
            Err(error) => {
                return AdminResponse::error(ErrorCode::InvalidRequest, error.to_string())
            }
        };
        let object = SpuObject { spec, status: SpuStatus::default() };
        match self.store.put_typed(ObjectKind::Spu, &key, &object, ExpectedVersion::Absent, None) {
            Ok(version) => {
                tracing::info!(spu = %id, "custom SPU registered");
                self.written(version)
            }
            Err(error) if error.is_conflict() => AdminResponse::error(
                ErrorCode::SpuAlreadyExists,
                format!("SPU {id} is already registered"),
            ),
            Err(error) => store_error(&error),
        }
    }

    /// Unregisters a custom SPU.
    pub fn unregister_spu(&self, request: UnregisterSpuRequest) -> AdminResponse {
        let not_found = || {
            AdminResponse::error(
                ErrorCode::SpuNotFound,
                format!("SPU {} is not registered", request.id),
            )
        };
        let snapshot = self.cache.snapshot();
        let Some(spu) = snapshot.spus.get(&request.id) else { return not_found() };
        if spu.value.spec.spu_type == SpuType::Managed {
            let message =
                format!("SPU {} is managed by an SPU group; delete the group", request.id);
            return AdminResponse::error(ErrorCode::InvalidRequest, message);
        }
        match spu_key(request.id) {
            Ok(key) => self.delete_object(ObjectKind::Spu, &key, not_found),
            Err(_) => not_found(),
        }
    }

    /// Lists SPUs.
    pub fn list_spus(&self) -> ListSpusResponse {
        let snapshot = self.cache.snapshot();
        let spus = snapshot
            .spus
            .values()
            .map(|spu| SpuEntry { spec: spu.value.spec.clone(), status: spu.value.status.clone() })
            .collect();
        ListSpusResponse { error_code: ErrorCode::None, spus }
    }

    /// Creates an SPU group; the controller generates its SPUs.
    pub fn create_spu_group(&self, request: CreateSpuGroupRequest) -> AdminResponse {
        if let Err(error) = request.spec.validate() {
            return AdminResponse::error(ErrorCode::InvalidConfig, error.to_string());
        }
        let snapshot = self.cache.snapshot();
        if let Some(refusal) = check_group_ids(&snapshot, &request) {
            return refusal;
        }
        let key = match spu_group_key(&request.name) {
            Ok(key) => key,
            Err(error) => {
                return AdminResponse::error(ErrorCode::InvalidSpuGroupName, error.to_string())
            }
        };
        let object = SpuGroupObject { spec: request.spec, status: SpuGroupStatus::default() };
        let absent = ExpectedVersion::Absent;
        match self.store.put_typed(ObjectKind::SpuGroup, &key, &object, absent, None) {
            Ok(version) => {
                tracing::info!(group = %request.name, "SPU group created");
                self.written(version)
            }
            Err(error) if error.is_conflict() => AdminResponse::error(
                ErrorCode::SpuGroupAlreadyExists,
                format!("SPU group {} already exists", request.name),
            ),
            Err(error) => store_error(&error),
        }
    }

    /// Deletes an SPU group; the controller deletes its managed SPUs.
    pub fn delete_spu_group(&self, request: &DeleteSpuGroupRequest) -> AdminResponse {
        let not_found = || {
            AdminResponse::error(
                ErrorCode::SpuGroupNotFound,
                format!("SPU group {} does not exist", request.name),
            )
        };
        match spu_group_key(&request.name) {
            Ok(key) => self.delete_object(ObjectKind::SpuGroup, &key, not_found),
            Err(_) => not_found(),
        }
    }

    /// Lists SPU groups.
    pub fn list_spu_groups(&self) -> ListSpuGroupsResponse {
        let snapshot = self.cache.snapshot();
        let groups = snapshot
            .spu_groups
            .iter()
            .map(|(name, group)| SpuGroupEntry {
                name: name.clone(),
                spec: group.value.spec.clone(),
                status: group.value.status.clone(),
            })
            .collect();
        ListSpuGroupsResponse { error_code: ErrorCode::None, groups }
    }
}

/// Refuses a topic the registered SPUs cannot host.
fn check_placement(snapshot: &Snapshot, spec: &TopicSpec) -> Option<AdminResponse> {
    let spus = spu_resources(snapshot);
    match &spec.replicas {
        ReplicaSpec::Computed { replication_factor, .. } => {
            let factor = usize::from(*replication_factor);
            (factor > spus.len()).then(|| {
                AdminResponse::error(
                    ErrorCode::ReplicationFactorAboveSpuCount,
                    format!(
                        "replication factor {factor} needs {factor} SPUs, but {} are registered",
                        spus.len()
                    ),
                )
            })
        }
        ReplicaSpec::Assigned(_) => {
            let AssignmentRequest::Explicit(partitions) = assignment_request(spec) else {
                return None;
            };
            crate::assignment::validate_explicit(&spus, &partitions).err().map(|error| {
                AdminResponse::error(ErrorCode::InvalidReplicaAssignment, error.to_string())
            })
        }
    }
}

/// Refuses a group whose id range overlaps another group's or a custom SPU.
fn check_group_ids(snapshot: &Snapshot, request: &CreateSpuGroupRequest) -> Option<AdminResponse> {
    for id in request.spec.spu_ids() {
        if let Some(spu) = snapshot.spus.get(&id) {
            if spu.value.spec.spu_type == SpuType::Custom {
                let message = format!("SPU id {id} is taken by a custom SPU");
                return Some(AdminResponse::error(ErrorCode::SpuAlreadyExists, message));
            }
        }
        let overlapping = snapshot.spu_groups.iter().find(|(name, group)| {
            **name != request.name && group.value.spec.spu_ids().any(|member| member == id)
        });
        if let Some((name, _)) = overlapping {
            let message = format!("SPU id {id} belongs to SPU group {name}");
            return Some(AdminResponse::error(ErrorCode::SpuAlreadyExists, message));
        }
    }
    None
}

fn partition_entries(
    snapshot: &Snapshot,
    topic: Option<&sluice_proto::object::TopicName>,
) -> Vec<PartitionEntry> {
    snapshot
        .partitions
        .iter()
        .filter(|(key, _)| topic.is_none_or(|topic| &key.topic == topic))
        .map(|(key, partition)| PartitionEntry {
            key: key.clone(),
            spec: partition.value.spec.clone(),
            status: partition.value.status.clone(),
        })
        .collect()
}
