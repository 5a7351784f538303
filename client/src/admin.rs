//! [`Admin`]: topics, partitions, SPUs and SPU groups, through the SC's public API.
//!
//! Every call is one blocking request to the active SC (with fail-over, see [`crate::sc`]).
//! A refusal by the SC is [`ClientError::Server`] with its code and message (for example
//! `TopicAlreadyExists`, or the configuration error text saying what is allowed). Reads are
//! retried at the next SC when a connection drops; mutations are not (their outcome is then
//! unknown: list before retrying).

use std::sync::Arc;

use sluice_proto::api::admin::{
    AdminResponse, AlterTopicPartitionsRequest, CreateSpuGroupRequest, CreateTopicRequest,
    DecommissionSpuRequest, DeleteSpuGroupRequest, DeleteTopicRequest, DescribeTopicRequest,
    DescribeTopicResponse, ListPartitionsRequest, ListPartitionsResponse, ListSpuGroupsRequest,
    ListSpuGroupsResponse, ListSpusRequest, ListSpusResponse, ListTopicsRequest,
    ListTopicsResponse, PartitionEntry, PartitionReassignment, ReassignPartitionsRequest,
    ReassignPartitionsResponse, RebalanceLeadersRequest, RebalanceLeadersResponse,
    RegisterSpuRequest, SpuEntry, SpuGroupEntry, TopicEntry, UnregisterSpuRequest,
};
use sluice_proto::api::cluster::{
    HoldLeadershipRequest, HoldLeadershipResponse, PlanRebalanceRequest, PlanRebalanceResponse,
};
use sluice_proto::api::security::{
    CreateAclsRequest, CreateTokenRequest, CreateTokenResponse, DeleteAclsRequest, ListAclsRequest,
    ListAclsResponse, ListTokensRequest, ListTokensResponse, RevokeTokenRequest, TokenInfo,
};
use sluice_proto::api::{Decode, Request};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::SpuId;
use sluice_proto::object::{
    AclBinding, Principal, SpuGroupName, SpuGroupSpec, SpuSpec, TokenName, TopicName, TopicSpec,
};

use crate::error::ClientError;
use crate::sc::{Retry, ScClient, Shape};

/// Administration of the cluster. Cheap to clone; `Send + Sync`.
///
/// ```no_run
/// use sluice_client::{ClientConfig, Cluster, TopicSpec};
/// let cluster = Cluster::connect(ClientConfig::new("127.0.0.1:9003"))?;
/// let admin = cluster.admin();
/// admin.create_topic("orders", TopicSpec::computed(3, 1))?;
/// for topic in admin.list_topics()? {
///     println!("{} {:?}", topic.name, topic.status.resolution);
/// }
/// # Ok::<(), sluice_client::ClientError>(())
/// ```
#[derive(Clone)]
pub struct Admin {
    sc: Arc<ScClient>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Admin").field("sc", &self.sc.config().sc_addresses).finish()
    }
}

/// The error code every admin response carries.
trait HasErrorCode {
    fn error_code(&self) -> ErrorCode;
}

macro_rules! has_error_code {
    ($($ty:ty),*) => {$(
        impl HasErrorCode for $ty {
            fn error_code(&self) -> ErrorCode {
                self.error_code
            }
        }
    )*};
}
has_error_code!(
    ListTopicsResponse,
    DescribeTopicResponse,
    ListSpusResponse,
    ListSpuGroupsResponse,
    ListPartitionsResponse,
    ListAclsResponse,
    ListTokensResponse
);

fn token_name(name: &str) -> Result<TokenName, ClientError> {
    TokenName::new(name).map_err(|error| ClientError::InvalidInput {
        what: "token name",
        reason: error.to_string(),
    })
}

fn topic_name(name: &str) -> Result<TopicName, ClientError> {
    TopicName::new(name).map_err(|error| ClientError::InvalidInput {
        what: "topic name",
        reason: error.to_string(),
    })
}

fn group_name(name: &str) -> Result<SpuGroupName, ClientError> {
    SpuGroupName::new(name).map_err(|error| ClientError::InvalidInput {
        what: "SPU group name",
        reason: error.to_string(),
    })
}

impl Admin {
    pub(crate) fn new(sc: Arc<ScClient>) -> Admin {
        Admin { sc }
    }

    /// Sends a mutation; `Ok` when the SC applied it.
    fn mutate<R: Request>(&self, request: &R) -> Result<(), ClientError> {
        let response: AdminResponse =
            self.sc.call(request, Shape::ErrorCodeFirst, Retry::Mutation)?;
        if response.error_code.is_ok() {
            Ok(())
        } else {
            Err(ClientError::server_message(response.error_code, response.message))
        }
    }

    /// Sends a read; `Ok` when the response carries no error code.
    fn read<R: Request, T: for<'a> Decode<'a> + HasErrorCode>(
        &self,
        request: &R,
    ) -> Result<T, ClientError> {
        let response: T = self.sc.call(request, Shape::ErrorCodeFirst, Retry::ReadOnly)?;
        match response.error_code() {
            ErrorCode::None => Ok(response),
            code => Err(ClientError::server(code)),
        }
    }

    /// Creates a topic. `TopicAlreadyExists`, `InvalidConfig`, `InvalidReplicationFactor`, ...
    /// come back as [`ClientError::Server`].
    pub fn create_topic(&self, name: &str, spec: TopicSpec) -> Result<(), ClientError> {
        self.mutate(&CreateTopicRequest { name: topic_name(name)?, spec, dry_run: false })
    }

    /// Checks a topic's name and spec without creating it.
    pub fn validate_topic(&self, name: &str, spec: TopicSpec) -> Result<(), ClientError> {
        self.mutate(&CreateTopicRequest { name: topic_name(name)?, spec, dry_run: true })
    }

    /// Deletes a topic (SPUs stop serving it; they keep its files).
    pub fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.mutate(&DeleteTopicRequest { name: topic_name(name)? })
    }

    /// Every topic with its spec and status.
    pub fn list_topics(&self) -> Result<Vec<TopicEntry>, ClientError> {
        let response: ListTopicsResponse = self.read(&ListTopicsRequest { names: None })?;
        Ok(response.topics)
    }

    /// One topic and its partitions (`TopicNotFound` when it does not exist).
    pub fn describe_topic(
        &self,
        name: &str,
    ) -> Result<(TopicEntry, Vec<PartitionEntry>), ClientError> {
        let response: DescribeTopicResponse =
            self.read(&DescribeTopicRequest { name: topic_name(name)? })?;
        match response.topic {
            Some(topic) => Ok((topic, response.partitions)),
            None => Err(ClientError::server(ErrorCode::TopicNotFound)),
        }
    }

    /// Partitions with their status: of one topic, or of all when `topic` is `None`.
    pub fn list_partitions(&self, topic: Option<&str>) -> Result<Vec<PartitionEntry>, ClientError> {
        let topic = topic.map(topic_name).transpose()?;
        let response: ListPartitionsResponse = self.read(&ListPartitionsRequest { topic })?;
        Ok(response.partitions)
    }

    /// Moves the leadership of each partition (of `topic`, or of every topic) back to its
    /// preferred replica (the first of its replicas) where that replica is online and in sync
    /// and does not lead already. The response lists the partitions moved and those whose
    /// preferred replica cannot lead now. Repeating it is harmless (it only ever moves a
    /// leader to its preferred replica), so a dropped connection retries it at the next SC.
    /// `TopicNotFound` for an unknown topic; an SC too old to serve it answers
    /// `InvalidRequest`.
    pub fn rebalance_leaders(
        &self,
        topic: Option<&str>,
    ) -> Result<RebalanceLeadersResponse, ClientError> {
        let topic = topic.map(topic_name).transpose()?;
        let response: RebalanceLeadersResponse = self.sc.call(
            &RebalanceLeadersRequest { topic },
            Shape::ErrorCodeFirst,
            Retry::ReadOnly,
        )?;
        if response.error_code.is_ok() {
            Ok(response)
        } else {
            Err(ClientError::server_message(response.error_code, response.message))
        }
    }

    /// Grows a topic to `partitions` partitions: the new ones are placed like a new topic's and
    /// existing ones stay where they are; producers and consumers see them through the
    /// metadata watch. Keyed records may then go to another partition than before (the key
    /// hash is taken modulo the new count). `InvalidPartitions` unless `partitions` is larger
    /// than the current count, `TopicNotFound` for an unknown topic.
    pub fn alter_topic_partitions(&self, name: &str, partitions: u32) -> Result<(), ClientError> {
        self.mutate(&AlterTopicPartitionsRequest { name: topic_name(name)?, partitions })
    }

    /// Starts moving partitions' replicas (or cancels moves), each partition on its own; the
    /// results say, per partition, the target or why not (`ReassignmentInProgress`,
    /// `UnknownSpu`, `InvalidReplicaAssignment`, ...). `throttle_bytes_per_second` limits the
    /// fetches of each replica being added. Follow the moves with [`Admin::list_partitions`]
    /// (a moving partition's spec carries its `reassignment`). Not retried at another SC when
    /// the connection drops (list the partitions first).
    pub fn reassign_partitions(
        &self,
        partitions: Vec<PartitionReassignment>,
        throttle_bytes_per_second: Option<u64>,
    ) -> Result<ReassignPartitionsResponse, ClientError> {
        let request = ReassignPartitionsRequest { partitions, throttle_bytes_per_second };
        self.reassignment_call(&request)
    }

    /// Starts moving every replica off SPU `id` (targets chosen by the SC); the results list
    /// the moves. `ReplicationFactorAboveSpuCount` when the other SPUs are too few for some
    /// partition (nothing is moved then). Once no partition names the SPU, unregister it with
    /// [`Admin::unregister_spu`]. Repeating it starts nothing twice.
    pub fn decommission_spu(
        &self,
        id: SpuId,
        throttle_bytes_per_second: Option<u64>,
    ) -> Result<ReassignPartitionsResponse, ClientError> {
        self.reassignment_call(&DecommissionSpuRequest { id, throttle_bytes_per_second })
    }

    fn reassignment_call<R: Request>(
        &self,
        request: &R,
    ) -> Result<ReassignPartitionsResponse, ClientError> {
        let response: ReassignPartitionsResponse =
            self.sc.call(request, Shape::ErrorCodeFirst, Retry::Mutation)?;
        if response.error_code.is_ok() {
            Ok(response)
        } else {
            Err(ClientError::server_message(response.error_code, response.message))
        }
    }

    /// A plan that evens replicas and preferred leaders over every core of every online SPU
    /// with few replica moves, emptying the SPUs in `drain`, with its balance report. Changes
    /// nothing (the plan is carried out by partition reassignment), so it is retried at the
    /// next SC on a dropped connection. `SpuNotFound` for an SPU to drain that is not
    /// registered; `InvalidRequest` when no plan fits (the message says why).
    pub fn plan_rebalance(&self, drain: &[SpuId]) -> Result<PlanRebalanceResponse, ClientError> {
        let response: PlanRebalanceResponse = self.sc.call(
            &PlanRebalanceRequest { drain: drain.to_vec() },
            Shape::ErrorCodeFirst,
            Retry::ReadOnly,
        )?;
        if response.error_code.is_ok() {
            Ok(response)
        } else {
            Err(ClientError::server_message(response.error_code, response.message))
        }
    }

    /// Moves the leadership of every partition `spu` leads to another online in-sync replica
    /// and keeps preferred-leader restores off `spu` for `hold` (at most an hour; the hold
    /// lives in the active SC's memory). A zero `hold` releases the SPU and moves nothing. The
    /// response lists the partitions moved and those no other replica could take. Repeating
    /// it is harmless, so a dropped connection retries it at the next SC.
    pub fn hold_leadership(
        &self,
        spu: SpuId,
        hold: std::time::Duration,
    ) -> Result<HoldLeadershipResponse, ClientError> {
        let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let response: HoldLeadershipResponse = self.sc.call(
            &HoldLeadershipRequest { spu, hold_ms },
            Shape::ErrorCodeFirst,
            Retry::ReadOnly,
        )?;
        if response.error_code.is_ok() {
            Ok(response)
        } else {
            Err(ClientError::server_message(response.error_code, response.message))
        }
    }

    /// Every SPU with its spec and status.
    pub fn list_spus(&self) -> Result<Vec<SpuEntry>, ClientError> {
        let response: ListSpusResponse = self.read(&ListSpusRequest)?;
        Ok(response.spus)
    }

    /// Registers a custom SPU (`SpuAlreadyExists` if its id is taken).
    pub fn register_spu(&self, spec: SpuSpec) -> Result<(), ClientError> {
        self.mutate(&RegisterSpuRequest { spec })
    }

    /// Unregisters a custom SPU (`SpuNotFound` if there is none with that id).
    pub fn unregister_spu(&self, id: SpuId) -> Result<(), ClientError> {
        self.mutate(&UnregisterSpuRequest { id })
    }

    /// Creates an SPU group: managed SPUs with ids from `spec.first_id`.
    pub fn create_spu_group(&self, name: &str, spec: SpuGroupSpec) -> Result<(), ClientError> {
        self.mutate(&CreateSpuGroupRequest { name: group_name(name)?, spec })
    }

    /// Every SPU group with its spec and status.
    pub fn list_spu_groups(&self) -> Result<Vec<SpuGroupEntry>, ClientError> {
        let response: ListSpuGroupsResponse = self.read(&ListSpuGroupsRequest)?;
        Ok(response.groups)
    }

    /// Deletes an SPU group.
    pub fn delete_spu_group(&self, name: &str) -> Result<(), ClientError> {
        self.mutate(&DeleteSpuGroupRequest { name: group_name(name)? })
    }

    /// Adds ACL bindings (existing ones are kept as they are). Needs alter on the cluster.
    pub fn create_acls(&self, bindings: Vec<AclBinding>) -> Result<(), ClientError> {
        self.mutate(&CreateAclsRequest { bindings })
    }

    /// Removes ACL bindings (missing ones are ignored).
    pub fn delete_acls(&self, bindings: Vec<AclBinding>) -> Result<(), ClientError> {
        self.mutate(&DeleteAclsRequest { bindings })
    }

    /// ACL bindings, of one principal or all, sorted.
    pub fn list_acls(&self, principal: Option<Principal>) -> Result<Vec<AclBinding>, ClientError> {
        let response: ListAclsResponse = self.read(&ListAclsRequest { principal })?;
        Ok(response.bindings)
    }

    /// Creates an access token named `name` and returns its text, which the cluster does not
    /// keep: store it now (it authenticates as `User:<name>`).
    pub fn create_token(&self, name: &str) -> Result<String, ClientError> {
        let request = CreateTokenRequest { name: token_name(name)? };
        let response: CreateTokenResponse =
            self.sc.call(&request, Shape::ErrorCodeFirst, Retry::Mutation)?;
        match (response.error_code, response.token) {
            (ErrorCode::None, Some(token)) => Ok(token),
            (code, _) => Err(ClientError::server_message(code, response.message)),
        }
    }

    /// Revokes an access token: requests authenticated by it are refused from now on.
    pub fn revoke_token(&self, name: &str) -> Result<(), ClientError> {
        self.mutate(&RevokeTokenRequest { name: token_name(name)? })
    }

    /// Access tokens: names and creation times (never secrets).
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let response: ListTokensResponse = self.read(&ListTokensRequest)?;
        Ok(response.tokens)
    }
}
