//! Every request and response Sluice speaks, data plane and control plane.
//!
//! Each message is a body inside a [`frame`](crate::frame); the frame header names the
//! [`ApiKey`] and the [`ApiVersion`], and a response echoes both with the request's correlation
//! id. Every request type implements [`Request`], which names its response type, so a typed
//! client call cannot pair a request with the wrong response.
//!
//! Two encodings:
//! - **Data plane** (produce, fetch, stream fetch, list offsets, API versions, follower fetch):
//!   hand-written big-endian binary ([`crate::codec`]) so that record bytes sit at known
//!   positions: a server rewrites produced batches in place inside its receive buffer and
//!   splices stored batches from a file straight after a response's partition header.
//! - **Control plane** (metadata, admin, SC <-> SPU, leader-epoch queries): postcard-encoded
//!   serde structs. The frame's version selects the layout: `decode` dispatches on it, so a v1
//!   is added by keeping the v0 structs and converting.
//!
//! Modules, one per message family:
//! - [`api_versions`], [`produce`], [`fetch`], [`stream_fetch`], [`list_offsets`]: client <-> SPU.
//! - [`metadata`], [`admin`]: client <-> SC.
//! - [`control`]: SC <-> SPU.
//! - [`replication`]: SPU <-> SPU.
//! - [`security`]: authentication (client <-> SC and SPU), ACLs and tokens (client <-> SC),
//!   the security snapshot (SC -> SPU).
//! - [`splice`]: building fetch-format responses whose records are spliced from files.
//!
//! | key | request | response | encoding |
//! |-----|---------|----------|----------|
//! | 0 `ApiVersions` | [`api_versions::ApiVersionsRequest`] | [`api_versions::ApiVersionsResponse`] | binary |
//! | 1 `Produce` | [`produce::ProduceRequest`] | [`produce::ProduceResponse`] | binary |
//! | 2 `Fetch` | [`fetch::FetchRequest`] | [`fetch::FetchResponse`] | binary |
//! | 3 `ListOffsets` | [`list_offsets::ListOffsetsRequest`] | [`list_offsets::ListOffsetsResponse`] | binary |
//! | 4 `StreamFetch` | [`stream_fetch::StreamFetchRequest`] | [`stream_fetch::StreamFetchPush`] (many) | binary |
//! | 5 `StreamFetchCredit` | [`stream_fetch::StreamFetchCredit`] | none | binary |
//! | 6 `StreamFetchCancel` | [`stream_fetch::StreamFetchCancel`] | none (the stream ends) | binary |
//! | 7 `Authenticate` | [`security::AuthenticateRequest`] | [`security::AuthenticateResponse`] | postcard |
//! | 100 `Metadata` | [`metadata::MetadataRequest`] | [`metadata::MetadataResponse`] | postcard |
//! | 101 `MetadataWatch` | [`metadata::MetadataWatchRequest`] | [`metadata::MetadataWatchUpdate`] (many) | postcard |
//! | 110..=141 admin | [`admin`] `*Request` | [`admin::AdminResponse`] or `*Response` | postcard |
//! | 150..=152 cluster | [`cluster`] `*Request` | [`cluster`] `*Response` | postcard |
//! | 160..=165 ACLs, tokens | [`security`] `*Request` | [`admin::AdminResponse`] or `*Response` | postcard |
//! | 200 `SpuRegister` | [`control::SpuRegisterRequest`] | [`control::SpuRegisterResponse`] | postcard |
//! | 201 `Heartbeat` | [`control::HeartbeatRequest`] | [`control::HeartbeatResponse`] | postcard |
//! | 202..=205 | [`control::SpuUpdate`], [`control::ReplicaUpdate`], [`control::RequestSnapshot`], [`control::LiveReplicaStatus`] | none | postcard |
//! | 206 `AlterInSync` | [`control::AlterInSyncRequest`] | [`control::AlterInSyncResponse`] | postcard |
//! | 207 `SecurityUpdate` | [`security::SecurityUpdate`] | none | postcard |
//! | 208 `SecurityApplied` | [`security::SecurityApplied`] | none | postcard |
//! | 300 `FollowerFetch` | [`replication::FollowerFetchRequest`] | [`fetch::FetchResponse`] | binary |
//! | 301 `LeaderEpochEndOffset` | [`replication::LeaderEpochEndOffsetRequest`] | [`replication::LeaderEpochEndOffsetResponse`] | postcard |
//!
//! Versions: every API is at version 0 today. [`ApiKey::versions`] is the single table the
//! frame decoder checks and `ApiVersions` reports.

use std::fmt;

use crate::codec::{DecodeError, EncodeError};
pub use crate::ids::ApiVersion;

pub mod admin;
pub mod api_versions;
pub mod cluster;
pub mod control;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod replication;
pub mod security;
pub mod splice;
pub mod stream_fetch;

/// Writes a message body for one API version.
pub trait Encode {
    /// Appends the body for `version` to `out`.
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError>;
}

/// Reads a message body for one API version; the result may borrow from `body`.
pub trait Decode<'a>: Sized {
    /// Decodes a whole body: trailing bytes are an error.
    fn decode(version: ApiVersion, body: &'a [u8]) -> Result<Self, DecodeError>;
}

/// A request: its API key and the type of its response.
///
/// ```
/// use sluice_proto::api::{list_offsets::ListOffsetsRequest, ApiKey, Request};
/// assert_eq!(<ListOffsetsRequest as Request>::API_KEY, ApiKey::ListOffsets);
/// ```
pub trait Request: Encode {
    /// The API key in the frame header.
    const API_KEY: ApiKey;
    /// The response a server sends back (or [`NoResponse`] for one-way messages). It may
    /// borrow the received frame (fetch records, for one).
    type Response<'a>: Decode<'a> + Encode;
}

/// The "response" of a one-way message: nothing is sent back. Encodes to an empty body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoResponse;

impl Encode for NoResponse {
    fn encode(&self, _version: ApiVersion, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl Decode<'_> for NoResponse {
    fn decode(_version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        match body.len() {
            0 => Ok(NoResponse),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

/// An inclusive range of supported versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionRange {
    /// Oldest supported version.
    pub min: ApiVersion,
    /// Newest supported version.
    pub max: ApiVersion,
}

impl VersionRange {
    /// Whether `version` lies in the range.
    pub fn contains(self, version: ApiVersion) -> bool {
        self.min <= version && version <= self.max
    }
}

const V0: VersionRange = VersionRange { min: ApiVersion(0), max: ApiVersion(0) };

macro_rules! api_keys {
    ($($(#[$meta:meta])* $name:ident = $number:literal, $versions:expr, $one_way:literal;)*) => {
        /// Every API, with its fixed wire number (never reused).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ApiKey {
            $($(#[$meta])* $name,)*
        }

        impl ApiKey {
            /// Every key, in number order.
            pub const ALL: &'static [ApiKey] = &[$(ApiKey::$name,)*];

            /// The wire number.
            pub const fn number(self) -> u16 {
                match self {
                    $(ApiKey::$name => $number,)*
                }
            }

            /// The key for a wire number, if this build knows it.
            pub const fn from_number(number: u16) -> Option<ApiKey> {
                match number {
                    $($number => Some(ApiKey::$name),)*
                    _ => None,
                }
            }

            /// The versions this build encodes and decodes.
            pub const fn versions(self) -> VersionRange {
                match self {
                    $(ApiKey::$name => $versions,)*
                }
            }

            /// Whether the receiver sends nothing back for this message.
            pub const fn is_one_way(self) -> bool {
                match self {
                    $(ApiKey::$name => $one_way,)*
                }
            }
        }
    };
}

api_keys! {
    /// Client -> any server: which keys and versions are supported.
    ApiVersions = 0, V0, false;
    /// Client -> leader SPU: append record batches.
    Produce = 1, V0, false;
    /// Client -> SPU: read record batches.
    Fetch = 2, V0, false;
    /// Client -> SPU: offsets by earliest / latest / timestamp.
    ListOffsets = 3, V0, false;
    /// Client -> SPU: open a stream of pushed fetch responses for one partition.
    StreamFetch = 4, V0, false;
    /// Client -> SPU: extend a stream's flow-control credit (one-way).
    StreamFetchCredit = 5, V0, true;
    /// Client -> SPU: cancel a stream (one-way; the stream's last push says it ended).
    StreamFetchCancel = 6, V0, true;
    /// Client -> SC or SPU: act as the principal of an access token from now on.
    Authenticate = 7, V0, false;
    /// Client -> SC: topics, partitions, leaders and SPU endpoints.
    Metadata = 100, V0, false;
    /// Client -> SC: subscribe to metadata; updates are pushed with the request's correlation id.
    MetadataWatch = 101, V0, false;
    /// Client -> SC: create a topic.
    CreateTopic = 110, V0, false;
    /// Client -> SC: delete a topic.
    DeleteTopic = 111, V0, false;
    /// Client -> SC: list topics with their specs and statuses.
    ListTopics = 112, V0, false;
    /// Client -> SC: one topic with its partitions.
    DescribeTopic = 113, V0, false;
    /// Client -> SC: grow a topic's partition count.
    AlterTopicPartitions = 114, V0, false;
    /// Client -> SC: register a custom SPU.
    RegisterSpu = 120, V0, false;
    /// Client -> SC: unregister a custom SPU.
    UnregisterSpu = 121, V0, false;
    /// Client -> SC: list SPUs.
    ListSpus = 122, V0, false;
    /// Client -> SC: move every replica off an SPU.
    DecommissionSpu = 123, V0, false;
    /// Client -> SC: create an SPU group (managed SPUs).
    CreateSpuGroup = 130, V0, false;
    /// Client -> SC: delete an SPU group.
    DeleteSpuGroup = 131, V0, false;
    /// Client -> SC: list SPU groups.
    ListSpuGroups = 132, V0, false;
    /// Client -> SC: list partitions with their statuses.
    ListPartitions = 140, V0, false;
    /// Client -> SC: move leadership back to preferred replicas that are in sync.
    RebalanceLeaders = 141, V0, false;
    /// Client -> SC: move partitions' replicas to other SPUs (or cancel such a move).
    ReassignPartitions = 150, V0, false;
    /// Client -> SC: a plan that evens replicas and leaders over every core (changes nothing).
    PlanRebalance = 151, V0, false;
    /// Client -> SC: move leadership off an SPU and keep it off for a while (or release it).
    HoldLeadership = 152, V0, false;
    /// Client -> SC: add ACL bindings.
    CreateAcls = 160, V0, false;
    /// Client -> SC: remove ACL bindings.
    DeleteAcls = 161, V0, false;
    /// Client -> SC: list ACL bindings.
    ListAcls = 162, V0, false;
    /// Client -> SC: create an access token (its text is answered once).
    CreateToken = 163, V0, false;
    /// Client -> SC: revoke an access token.
    RevokeToken = 164, V0, false;
    /// Client -> SC: list access tokens (no secrets).
    ListTokens = 165, V0, false;
    /// SPU -> SC: first message on the control connection.
    SpuRegister = 200, V0, false;
    /// SC <-> SPU: liveness, either direction.
    Heartbeat = 201, V0, false;
    /// SC -> SPU: SPU specs, full or delta (one-way).
    SpuUpdate = 202, V0, true;
    /// SC -> SPU: replica assignments, full or delta (one-way).
    ReplicaUpdate = 203, V0, true;
    /// SPU -> SC: an update epoch gap was seen; send full snapshots (one-way).
    RequestSnapshot = 204, V0, true;
    /// SPU -> SC: live replica status of the replicas it leads (one-way).
    LiveReplicaStatus = 205, V0, true;
    /// Leader SPU -> SC: change the in-sync sets of partitions it leads.
    AlterInSync = 206, V0, false;
    /// SC -> SPU: ACL bindings, token digests and superusers, always whole (one-way).
    SecurityUpdate = 207, V0, true;
    /// SPU -> SC: every core enforces the security snapshot of a version (one-way).
    SecurityApplied = 208, V0, true;
    /// Follower SPU -> leader SPU: pull records and the leader's high watermark.
    FollowerFetch = 300, V0, false;
    /// Follower SPU -> leader SPU: end offset of a leader epoch, for truncation.
    LeaderEpochEndOffset = 301, V0, false;
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}({})", self.number())
    }
}

/// Implements [`Encode`] and [`Decode`] for a postcard (control-plane) body at version 0.
macro_rules! postcard_v0 {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::api::Encode for $ty {
            fn encode(
                &self,
                version: $crate::ids::ApiVersion,
                out: &mut Vec<u8>,
            ) -> Result<(), $crate::codec::EncodeError> {
                match version.get() {
                    0 => $crate::codec::put_postcard(out, self),
                    _ => Err($crate::codec::EncodeError::UnsupportedVersion { version }),
                }
            }
        }

        impl<'a> $crate::api::Decode<'a> for $ty {
            fn decode(
                version: $crate::ids::ApiVersion,
                body: &'a [u8],
            ) -> Result<Self, $crate::codec::DecodeError> {
                match version.get() {
                    0 => $crate::codec::take_postcard(body),
                    _ => Err($crate::codec::DecodeError::UnsupportedVersion { version }),
                }
            }
        }
    )*};
}
pub(crate) use postcard_v0;

/// Implements [`Request`] for request types whose response does not borrow.
macro_rules! requests {
    ($($request:ty => $response:ty, $key:ident;)*) => {$(
        impl $crate::api::Request for $request {
            const API_KEY: $crate::api::ApiKey = $crate::api::ApiKey::$key;
            type Response<'a> = $response;
        }
    )*};
}
pub(crate) use requests;

/// Reads a `u16`-length-prefixed topic name and validates it.
pub(crate) fn read_topic_name(
    reader: &mut crate::codec::Reader<'_>,
) -> Result<crate::object::TopicName, DecodeError> {
    let name = reader.str("topic name")?;
    crate::object::TopicName::new(name).map_err(|error| DecodeError::InvalidString {
        field: "topic name",
        reason: error.to_string(),
    })
}

/// Writes a topic name as a `u16`-length-prefixed string.
pub(crate) fn put_topic_name(
    out: &mut Vec<u8>,
    name: &crate::object::TopicName,
) -> Result<(), EncodeError> {
    crate::codec::put_str(out, name.as_str(), "topic name")
}

/// Writes an optional offset as `i64`, `-1` for none.
pub(crate) fn put_optional_offset(out: &mut Vec<u8>, offset: Option<crate::ids::Offset>) {
    out.extend_from_slice(&offset.map_or(-1, crate::ids::Offset::get).to_be_bytes());
}

/// Reads an optional offset written by [`put_optional_offset`]; other negatives are invalid.
pub(crate) fn read_optional_offset(
    reader: &mut crate::codec::Reader<'_>,
    field: &'static str,
) -> Result<Option<crate::ids::Offset>, DecodeError> {
    match reader.i64(field)? {
        -1 => Ok(None),
        value if value >= 0 => Ok(Some(crate::ids::Offset(value))),
        value => Err(DecodeError::InvalidValue { field, value }),
    }
}

/// Rejects versions other than 0 for the hand-written binary bodies.
pub(crate) fn check_binary_v0(version: ApiVersion) -> Result<(), DecodeError> {
    match version.get() {
        0 => Ok(()),
        _ => Err(DecodeError::UnsupportedVersion { version }),
    }
}

/// Rejects versions other than 0 when encoding the hand-written binary bodies.
pub(crate) fn check_binary_v0_encode(version: ApiVersion) -> Result<(), EncodeError> {
    match version.get() {
        0 => Ok(()),
        _ => Err(EncodeError::UnsupportedVersion { version }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_numbers_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for key in ApiKey::ALL {
            assert!(seen.insert(key.number()));
            assert_eq!(ApiKey::from_number(key.number()), Some(*key));
        }
        assert_eq!(ApiKey::from_number(9999), None);
        assert_eq!(ApiKey::Produce.number(), 1);
        assert_eq!(ApiKey::FollowerFetch.number(), 300);
    }
}
