//! The leader's side of replication on the private port: follower fetches and epoch questions,
//! served by the core that owns the leader replica (followers connect to that core's own
//! private port, so the bytes never cross cores).
//!
//! A follower fetch is answered like a consumer fetch (same long-poll, same zero-copy / tail
//! cache send path), reading up to the leader's log end (uncommitted: followers replicate what
//! is written). Each partition's position is checked and recorded once, when the request
//! arrives ([`Replica::on_follower_fetch`]): its acknowledged end may move the high watermark
//! and wake acks `all` waiters at once, before any long-poll wait. A partition this core does
//! not own, or does not lead, is answered `NotLeader`; a follower whose log parts from the
//! leader's, `LogDiverged` (it then asks where its epoch ended and cuts there). A replica
//! that a move is adding reads within its throttle ([`super::throttle`]).

use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_proto::api::fetch::Isolation;
use sluice_proto::api::replication::{
    EpochEndOffset, FollowerFetchRequest, LeaderEpochEndOffsetRequest, LeaderEpochEndOffsetResponse,
};
use sluice_proto::api::{ApiKey, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_frame, FrameHeader};
use sluice_proto::ids::{LeaderEpoch, Offset, SpuId};
use sluice_proto::object::{PartitionKey, TopicName};

use super::divergence::EpochAnswer;
use super::role::FollowerFetchCheck;
use crate::metrics::Counter;
use crate::server::abuse_log;
use crate::server::connection::Outgoing;
use crate::server::core::Core;
use crate::server::handlers::{self, FetchSummary, HandlerError, FETCH_WAIT_MAX};
use crate::server::ops::{self, PartitionRead, ReadRecords};
use crate::server::replica::{FetchAllowance, Replica};
use crate::tls::PeerIdentity;

/// Serves one follower fetch; the response's records are sent without copying where the
/// platform allows.
pub async fn follower_fetch(
    core: &Rc<Core>,
    header: &FrameHeader,
    body: &[u8],
    peer: &PeerIdentity,
) -> Result<(Outgoing, FetchSummary), HandlerError> {
    let request = FollowerFetchRequest::decode(header.api_version, body)
        .map_err(|source| HandlerError::Undecodable { api_key: ApiKey::FollowerFetch, source })?;
    let refused = refuse_identity(core, peer, request.follower);
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    // Checked and recorded once: the positions are the follower's as of this request.
    let now = Instant::now();
    let replicas: Vec<Vec<Result<Rc<Replica>, ErrorCode>>> = request
        .topics
        .iter()
        .map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| {
                    if let Some(code) = refused {
                        return Err(code);
                    }
                    let key = PartitionKey::new(topic.name.clone(), partition.partition);
                    let replica = core.hosted_replica(&key).ok_or(ErrorCode::NotLeader)?;
                    let check = FollowerFetchCheck {
                        follower: request.follower,
                        fetch_offset: partition.fetch_offset,
                        acknowledged_end: partition.log_end_offset,
                        leader_epoch: partition.leader_epoch,
                        last_fetched_epoch: partition.last_fetched_epoch,
                    };
                    replica.on_follower_fetch(check, now)?;
                    Ok(replica)
                })
                .collect()
        })
        .collect();
    let reads = loop {
        let (reads, throttled) = read_pass(&request, &replicas);
        let total: usize = reads.iter().flatten().map(|read| read.records.len()).sum();
        let any_error = reads.iter().flatten().any(|read| !read.header.error_code.is_ok());
        if total >= request.min_bytes as usize || any_error || Instant::now() >= deadline {
            break reads;
        }
        wait_any(&replicas, &reads, &throttled, deadline).await;
        // A wait that ends at once must not keep the core: other tasks run between passes.
        glommio::yield_if_needed().await;
    };
    let bytes: usize = reads.iter().flatten().map(|read| read.records.len()).sum();
    core.probe.add(Counter::ReplicationBytesServed, bytes as u64);
    let names: Vec<&TopicName> = request.topics.iter().map(|topic| &topic.name).collect();
    handlers::fetch_response(header, &names, reads)
}

/// `Some(AuthorizationFailed)` when the connection's certificate does not name the follower the
/// request claims to be (an SPU's identity on a TLS link is its certificate's, never its
/// claim); logged (rate-limited) and counted.
fn refuse_identity(core: &Core, peer: &PeerIdentity, follower: SpuId) -> Option<ErrorCode> {
    if peer.may_act_as_spu(follower) {
        return None;
    }
    core.probe.add(Counter::IdentityRefusals, 1);
    let cluster = core.tls.as_deref().map_or("", |tls| tls.cluster());
    abuse_log::refused(&format!(
        "replication refused: the request claims follower SPU {follower} but the certificate \
         names {peer} (expected spu-{follower}.{cluster})"
    ));
    Some(ErrorCode::AuthorizationFailed)
}

/// Per partition of a request (flattened), when a throttled one may read again (`None`: not
/// throttled now).
type Throttled = Vec<Option<Instant>>;

/// Reads every partition from the follower's offset up to the leader's log end, within the
/// fetch throttle of a replica a move is adding.
fn read_pass(
    request: &FollowerFetchRequest,
    replicas: &[Vec<Result<Rc<Replica>, ErrorCode>>],
) -> (Vec<Vec<PartitionRead>>, Throttled) {
    let mut budget = request.max_bytes;
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut throttled = Vec::new();
    let now = Instant::now();
    for (topic, topic_replicas) in request.topics.iter().zip(replicas) {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition, replica) in topic.partitions.iter().zip(topic_replicas) {
            let offset = partition.fetch_offset;
            let mut ready_at = None;
            let read = match replica {
                Err(code) => PartitionRead::error(partition.partition, *code, offset),
                Ok(replica) => {
                    let mut bytes_max = partition.partition_max_bytes.min(budget);
                    match replica.follower_allowance(request.follower, now) {
                        FetchAllowance::Unlimited => {}
                        FetchAllowance::Bytes(allowed) => {
                            bytes_max = bytes_max.min(u32::try_from(allowed).unwrap_or(u32::MAX));
                        }
                        FetchAllowance::WaitUntil(at) => {
                            bytes_max = 0;
                            ready_at = Some(at);
                        }
                    }
                    let read = read_for_follower(replica, partition.partition, offset, bytes_max);
                    replica.follower_sent(request.follower, read.records.len() as u64);
                    read
                }
            };
            budget = budget.saturating_sub(read.records.len() as u32);
            partitions.push(read);
            throttled.push(ready_at);
        }
        topics.push(partitions);
    }
    (topics, throttled)
}

fn read_for_follower(
    replica: &Replica,
    partition: sluice_proto::ids::PartitionId,
    offset: Offset,
    bytes_max: u32,
) -> PartitionRead {
    let log = replica.log();
    let end = log.log_end_offset();
    // A replica closed while a fetch waited (removed from this SPU by a move or a deletion)
    // keeps its last role: without this a long poll on it would read nothing, find its wait
    // over at once (a closed replica never waits) and spin the core until its deadline.
    if replica.is_closed() || !replica.is_leader() {
        return PartitionRead::error(partition, ErrorCode::NotLeader, offset);
    }
    if bytes_max == 0 || offset >= end {
        let mut read = PartitionRead::error(partition, ErrorCode::None, offset);
        read.header = replica.fetch_header(partition, ErrorCode::None);
        return read;
    }
    match log.read(offset, u64::from(bytes_max), end) {
        Ok(slices) => PartitionRead {
            header: replica.fetch_header(partition, ErrorCode::None),
            first_offset: slices.first_offset,
            next_offset: slices.next_offset,
            records: ReadRecords::Slices(slices),
        },
        Err(error) => {
            let code = crate::server::replica::error_code(&error);
            let mut read = PartitionRead::error(partition, code, offset);
            read.header = replica.fetch_header(partition, code);
            read
        }
    }
}

/// Waits until any partition of the request has records past what the pass returned, or the
/// deadline.
/// A throttled partition waits for its throttle, not for records (it has some already).
async fn wait_any(
    replicas: &[Vec<Result<Rc<Replica>, ErrorCode>>],
    reads: &[Vec<PartitionRead>],
    throttled: &[Option<Instant>],
    deadline: Instant,
) {
    let mut waits: Vec<_> = replicas
        .iter()
        .flatten()
        .zip(reads.iter().flatten())
        .zip(throttled)
        .filter_map(|((replica, read), ready_at)| {
            if let Some(ready_at) = *ready_at {
                let until = ready_at.min(deadline);
                return Some(Box::pin(async move {
                    let now = Instant::now();
                    if until > now {
                        glommio::timer::sleep(until - now).await;
                    }
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>);
            }
            let replica = Rc::clone(replica.as_ref().ok()?);
            let offset = read.next_offset;
            Some(Box::pin(async move {
                ops::wait_local(&replica, offset, Isolation::ReadUncommitted, deadline).await
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>)
        })
        .collect();
    if waits.is_empty() {
        let now = Instant::now();
        if deadline > now {
            glommio::timer::sleep(deadline - now).await;
        }
        return;
    }
    futures_lite::future::poll_fn(move |context| {
        if waits.iter_mut().any(|wait| wait.as_mut().poll(context).is_ready()) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Answers followers asking where their epochs ended on this leader.
pub fn epoch_end_offsets(
    core: &Core,
    header: &FrameHeader,
    body: &[u8],
    out: &mut Vec<u8>,
    peer: &PeerIdentity,
) -> Result<bool, HandlerError> {
    let request =
        LeaderEpochEndOffsetRequest::decode(header.api_version, body).map_err(|source| {
            HandlerError::Undecodable { api_key: ApiKey::LeaderEpochEndOffset, source }
        })?;
    let refused = refuse_identity(core, peer, request.follower);
    let mut failed = false;
    let results = request
        .queries
        .into_iter()
        .map(|query| {
            if let Some(code) = refused {
                failed = true;
                return encode_answer(query.key, Err(code));
            }
            let answer = core
                .hosted_replica(&query.key)
                .ok_or(ErrorCode::NotLeader)
                .and_then(|replica| replica.epoch_answer(query.leader_epoch));
            failed |= answer.is_err();
            encode_answer(query.key, answer)
        })
        .collect();
    encode_frame(out, header, &LeaderEpochEndOffsetResponse { results })?;
    Ok(failed)
}

/// The wire form of an answer: a leader epoch of -1 means "no epoch at or below the one
/// asked", with the leader's first offset as the end offset.
pub fn encode_answer(key: PartitionKey, answer: Result<EpochAnswer, ErrorCode>) -> EpochEndOffset {
    match answer {
        Ok(EpochAnswer::Ended { epoch, end_offset }) => {
            EpochEndOffset { key, error_code: ErrorCode::None, leader_epoch: epoch, end_offset }
        }
        Ok(EpochAnswer::NoneAtOrBelow { first_offset }) => EpochEndOffset {
            key,
            error_code: ErrorCode::None,
            leader_epoch: LeaderEpoch(-1),
            end_offset: first_offset,
        },
        Err(error_code) => EpochEndOffset {
            key,
            error_code,
            leader_epoch: LeaderEpoch(-1),
            end_offset: Offset(-1),
        },
    }
}

/// The answer an [`EpochEndOffset`] carries.
pub fn decode_answer(result: &EpochEndOffset) -> Result<EpochAnswer, ErrorCode> {
    if !result.error_code.is_ok() {
        return Err(result.error_code);
    }
    if result.leader_epoch.get() < 0 {
        return Ok(EpochAnswer::NoneAtOrBelow { first_offset: result.end_offset.max(Offset(0)) });
    }
    Ok(EpochAnswer::Ended { epoch: result.leader_epoch, end_offset: result.end_offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_through_the_wire_form() {
        let key: PartitionKey = "t-0".parse().unwrap();
        for answer in [
            Ok(EpochAnswer::Ended { epoch: LeaderEpoch(3), end_offset: Offset(17) }),
            Ok(EpochAnswer::NoneAtOrBelow { first_offset: Offset(40) }),
            Err(ErrorCode::NotLeader),
        ] {
            assert_eq!(decode_answer(&encode_answer(key.clone(), answer)), answer);
        }
    }
}
