//! SPU <-> SPU replication: followers pull from leaders on the private port.
//!
//! **Follower fetch** (binary, so the leader splices records exactly as for a client fetch).
//! Request body, version 0 (big-endian):
//!
//! ```text
//! i32 follower SPU id
//! u32 max_wait_ms, u32 min_bytes, u32 max_bytes
//! u32 topic count, per topic:
//!   u16 name length, name bytes
//!   u32 partition count, per partition:
//!     u32 partition id
//!     i64 fetch offset             where the follower wants records from
//!     i64 follower log end offset  what the follower holds (durable); moves the leader's HW
//!     i32 leader epoch             the epoch the follower follows; the leader fences others
//!     i32 last fetched epoch       epoch of the follower's last batch (-1: empty log)
//!     u32 partition max bytes
//! ```
//!
//! The response is a [`FetchResponse`] (same layout, see [`super::fetch`]): the partition
//! header's high watermark is the leader's HW, which the follower adopts. A follower whose
//! (last fetched epoch, fetch offset) is not a point of the leader's log is answered
//! `LogDiverged` and finds its truncation point with the epoch query below; its reported end
//! counts for nothing until then (it may hold batches the leader does not have).
//!
//! **Leader epoch end offset** (postcard): after a leader change a follower asks the new leader
//! for the end offset of the latest epoch it has, and truncates its log to that offset, so logs
//! never diverge. The leader answers with the largest epoch at or below the one asked and the
//! first offset after that epoch's records (its LEO for the current epoch).

use serde::{Deserialize, Serialize};

use crate::api::fetch::{put_optional_epoch, read_optional_epoch, FetchResponse};
use crate::api::{
    check_binary_v0, check_binary_v0_encode, postcard_v0, put_topic_name, read_topic_name,
    requests, ApiKey, Decode, Encode, Request,
};
use crate::codec::{put_count, DecodeError, EncodeError, Reader};
use crate::error_code::ErrorCode;
use crate::ids::{ApiVersion, LeaderEpoch, Offset, PartitionId, SpuId};
use crate::object::{PartitionKey, TopicName};

/// A follower's pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerFetchRequest {
    /// The follower.
    pub follower: SpuId,
    /// Longest wait for `min_bytes`.
    pub max_wait_ms: u32,
    /// Answer as soon as this many record bytes are available.
    pub min_bytes: u32,
    /// Record bytes per response.
    pub max_bytes: u32,
    /// Replicas per topic.
    pub topics: Vec<FollowerFetchTopic>,
}

/// Replicas of one topic the follower pulls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerFetchTopic {
    /// The topic.
    pub name: TopicName,
    /// Per partition.
    pub partitions: Vec<FollowerFetchPartition>,
}

/// One replica's pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerFetchPartition {
    /// The partition.
    pub partition: PartitionId,
    /// First offset wanted.
    pub fetch_offset: Offset,
    /// The follower's durable log end offset.
    pub log_end_offset: Offset,
    /// The epoch the follower follows; `None` when it has not learned one.
    pub leader_epoch: Option<LeaderEpoch>,
    /// The leader epoch of the follower's last batch; `None` for an empty log.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// Record bytes for this partition at most.
    pub partition_max_bytes: u32,
}

const TOPIC_BYTES_MIN: usize = 2 + 4;
const FOLLOWER_PARTITION_BYTES: usize = 4 + 8 + 8 + 4 + 4 + 4;

impl Encode for FollowerFetchRequest {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        out.extend_from_slice(&self.follower.get().to_be_bytes());
        out.extend_from_slice(&self.max_wait_ms.to_be_bytes());
        out.extend_from_slice(&self.min_bytes.to_be_bytes());
        out.extend_from_slice(&self.max_bytes.to_be_bytes());
        put_count(out, self.topics.len(), "follower fetch topics")?;
        for topic in &self.topics {
            put_topic_name(out, &topic.name)?;
            put_count(out, topic.partitions.len(), "follower fetch partitions")?;
            for partition in &topic.partitions {
                out.extend_from_slice(&partition.partition.get().to_be_bytes());
                out.extend_from_slice(&partition.fetch_offset.get().to_be_bytes());
                out.extend_from_slice(&partition.log_end_offset.get().to_be_bytes());
                put_optional_epoch(out, partition.leader_epoch);
                put_optional_epoch(out, partition.last_fetched_epoch);
                out.extend_from_slice(&partition.partition_max_bytes.to_be_bytes());
            }
        }
        Ok(())
    }
}

impl Decode<'_> for FollowerFetchRequest {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let follower = SpuId(reader.i32("follower")?);
        let max_wait_ms = reader.u32("max_wait_ms")?;
        let min_bytes = reader.u32("min_bytes")?;
        let max_bytes = reader.u32("max_bytes")?;
        let topic_count = reader.count(TOPIC_BYTES_MIN, "follower fetch topics")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = read_topic_name(&mut reader)?;
            let partition_count =
                reader.count(FOLLOWER_PARTITION_BYTES, "follower fetch partitions")?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                partitions.push(FollowerFetchPartition {
                    partition: PartitionId(reader.u32("partition")?),
                    fetch_offset: Offset(reader.i64("fetch offset")?),
                    log_end_offset: Offset(reader.i64("log end offset")?),
                    leader_epoch: read_optional_epoch(&mut reader, "leader epoch")?,
                    last_fetched_epoch: read_optional_epoch(&mut reader, "last fetched epoch")?,
                    partition_max_bytes: reader.u32("partition max bytes")?,
                });
            }
            topics.push(FollowerFetchTopic { name, partitions });
        }
        reader.finish()?;
        Ok(Self { follower, max_wait_ms, min_bytes, max_bytes, topics })
    }
}

impl Request for FollowerFetchRequest {
    const API_KEY: ApiKey = ApiKey::FollowerFetch;
    type Response<'a> = FetchResponse<&'a [u8]>;
}

/// Asks a leader for the end offsets of leader epochs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderEpochEndOffsetRequest {
    /// The asking follower.
    pub follower: SpuId,
    /// One query per replica.
    pub queries: Vec<EpochQuery>,
}

/// The epoch a follower asks about for one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochQuery {
    /// The partition.
    pub key: PartitionKey,
    /// The latest epoch in the follower's log.
    pub leader_epoch: LeaderEpoch,
}

/// The leader's answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderEpochEndOffsetResponse {
    /// One answer per query, same order.
    pub results: Vec<EpochEndOffset>,
}

/// The end of an epoch on the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEndOffset {
    /// The partition.
    pub key: PartitionKey,
    /// `None` on success; `NotLeader`, `FencedLeaderEpoch`, ... otherwise.
    pub error_code: ErrorCode,
    /// The largest epoch on the leader at or below the one asked.
    pub leader_epoch: LeaderEpoch,
    /// First offset after that epoch's records; the follower truncates to it.
    pub end_offset: Offset,
}

postcard_v0!(LeaderEpochEndOffsetRequest, LeaderEpochEndOffsetResponse);
requests! {
    LeaderEpochEndOffsetRequest => LeaderEpochEndOffsetResponse, LeaderEpochEndOffset;
}
