//! Request handlers of the public API (produce, fetch, list offsets, API versions): decode the
//! body, run per-partition operations ([`super::ops`]) in request order, encode the response
//! frame into the caller's buffer.
//!
//! Error policy at this edge: per-partition failures are per-partition error codes and never
//! fail the request; a body that does not decode returns [`HandlerError::Undecodable`] and the
//! connection answers it where the format allows (or closes). Fetch long-polls: the first
//! pass reads every partition; while fewer than `min_bytes` came back, no partition has more to
//! read and `max_wait_ms` has not passed, the handler waits until any partition gets records
//! (appends wake it; remote partitions are watched by their owner core) and reads again.

use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel;
use sluice_proto::api::api_versions::ApiVersionsResponse;
use sluice_proto::api::fetch::FetchRequest;
use sluice_proto::api::list_offsets::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use sluice_proto::api::produce::{
    Acks, ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
};
use sluice_proto::api::splice::FetchResponseWriter;
use sluice_proto::api::{ApiKey, Decode};
use sluice_proto::codec::DecodeError;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_frame, FrameHeader};
use sluice_proto::ids::PartitionId;
use sluice_proto::object::{AclOperation, PartitionKey, TopicName};

use crate::metrics::Counter;
use crate::server::access::ConnectionAccess;
use crate::server::connection::Outgoing;
use crate::server::core::Core;
use crate::server::ops::{self, PartitionRead, ReadMode, ReadRecords};
use crate::server::replica::StagedProduce;
use crate::server::shard::{ListOffsetOutcome, ProduceOutcome, ReadRequest};

/// Longest long-poll a fetch may ask for; longer waits are cut to this.
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Most record bytes in one fetch response, whatever the request asks: what a client's
/// default frame limit holds (the SDK asks for at most this). Bounds what a copied (forwarded
/// or `--zero-copy false`) response allocates for one request.
pub const FETCH_RESPONSE_BYTES_MAX: u32 = sluice_proto::frame::FRAME_BYTES_MAX_DEFAULT - 64 * 1024;

/// The APIs the public port serves.
pub const PUBLIC_APIS: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::StreamFetch,
    ApiKey::StreamFetchCredit,
    ApiKey::StreamFetchCancel,
    ApiKey::Authenticate,
];

/// Why a request got no normal response.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The body does not decode for its API and version.
    #[error("{api_key} body does not decode: {source}")]
    Undecodable {
        /// The API.
        api_key: ApiKey,
        /// The decoder's reason.
        source: DecodeError,
    },
    /// The response cannot be encoded (a count over a format limit).
    #[error("response does not encode: {0}")]
    Encode(#[from] sluice_proto::codec::EncodeError),
}

fn response_header(request: &FrameHeader) -> FrameHeader {
    *request
}

/// Appends an API versions response with `error_code` (also the answer to an unknown API key
/// or version: every client can read it).
pub fn api_versions(
    header: &FrameHeader,
    error_code: ErrorCode,
    out: &mut Vec<u8>,
) -> Result<(), HandlerError> {
    let mut response = ApiVersionsResponse::for_keys(PUBLIC_APIS);
    response.error_code = error_code;
    encode_frame(out, &response_header(header), &response)?;
    Ok(())
}

/// Authenticates the connection with an access token (never logged).
pub fn authenticate(
    core: &Rc<Core>,
    access: &mut ConnectionAccess,
    header: &FrameHeader,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, HandlerError> {
    let request =
        sluice_proto::api::security::AuthenticateRequest::decode(header.api_version, body)
            .map_err(|source| HandlerError::Undecodable {
                api_key: ApiKey::Authenticate,
                source,
            })?;
    let response = access.authenticate(&core.security.get(), &request);
    encode_frame(out, &response_header(header), &response)?;
    Ok(!response.error_code.is_ok())
}

/// A produce request after its appends: every partition is settled or waits for its
/// acknowledgement; the response is whole once all of them are.
pub struct ProduceInProgress {
    header: FrameHeader,
    acks: Acks,
    topics: Vec<(TopicName, Vec<(PartitionId, StagedProduce)>)>,
}

/// Decodes a produce request and appends every partition's batches in request order (the
/// order of a connection's requests is the order of their appends). Nothing is awaited but
/// the appends themselves (and forwarding to another core).
pub async fn produce_stage(
    core: &Rc<Core>,
    header: &FrameHeader,
    body: &mut [u8],
    access: &mut ConnectionAccess,
) -> Result<ProduceInProgress, HandlerError> {
    let request = ProduceRequest::<Range<usize>>::decode(header.api_version, body)
        .map_err(|source| HandlerError::Undecodable { api_key: ApiKey::Produce, source })?;
    let security = core.security.get();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let refused = access.check(&security, AclOperation::Write, &topic.name);
        for partition in topic.partitions {
            if let Some(code) = refused {
                let outcome = ProduceOutcome::error(code);
                partitions.push((partition.partition, StagedProduce::Settled(outcome)));
                continue;
            }
            let key = PartitionKey::new(topic.name.clone(), partition.partition);
            let records = &mut body[partition.records];
            let staged =
                ops::stage_produce(core, key, records, request.acks, request.timeout_ms).await;
            partitions.push((partition.partition, staged));
        }
        topics.push((topic.name, partitions));
    }
    Ok(ProduceInProgress { header: response_header(header), acks: request.acks, topics })
}

impl ProduceInProgress {
    /// Whether the client expects a response (acks other than `none`).
    pub fn answers(&self) -> bool {
        self.acks != Acks::None
    }

    /// Waits for every partition's acknowledgement and encodes the response into `out` (not
    /// for acks `none`). Returns whether any partition failed.
    pub async fn finish(self, core: &Rc<Core>, out: &mut Vec<u8>) -> Result<bool, HandlerError> {
        let mut response = ProduceResponse { topics: Vec::with_capacity(self.topics.len()) };
        let mut failed = false;
        for (name, staged) in self.topics {
            let mut partitions = Vec::with_capacity(staged.len());
            for (partition, staged) in staged {
                let outcome = ops::acknowledge(core, staged).await;
                core.probe.add(Counter::RecordsProduced, outcome.records);
                match outcome.error_code {
                    ErrorCode::DuplicateSequence => core.probe.add(Counter::ProduceDuplicates, 1),
                    ErrorCode::OutOfOrderSequence | ErrorCode::UnknownProducerId => {
                        core.probe.add(Counter::ProduceSequenceRefusals, 1);
                        failed = true;
                    }
                    code => failed |= !code.is_ok(),
                }
                partitions.push(ProducePartitionResponse {
                    partition,
                    error_code: outcome.error_code,
                    base_offset: outcome.base_offset,
                    log_append_time: None,
                    log_start_offset: outcome.log_start_offset,
                });
            }
            response.topics.push(ProduceTopicResponse { name, partitions });
        }
        if self.acks != Acks::None {
            encode_frame(out, &self.header, &response)?;
        }
        Ok(failed)
    }
}

/// List offsets. Returns whether any partition failed.
pub async fn list_offsets(
    core: &Rc<Core>,
    header: &FrameHeader,
    body: &[u8],
    out: &mut Vec<u8>,
    access: &mut ConnectionAccess,
) -> Result<bool, HandlerError> {
    let request = ListOffsetsRequest::decode(header.api_version, body)
        .map_err(|source| HandlerError::Undecodable { api_key: ApiKey::ListOffsets, source })?;
    let security = core.security.get();
    let mut response = ListOffsetsResponse { topics: Vec::with_capacity(request.topics.len()) };
    let mut failed = false;
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let refused = access.check(&security, AclOperation::Describe, &topic.name);
        for partition in topic.partitions {
            let key = PartitionKey::new(topic.name.clone(), partition.partition);
            let outcome = match refused {
                Some(code) => ListOffsetOutcome::error(code),
                None => ops::list_offset(core, key, partition.spec, request.isolation).await,
            };
            failed |= !outcome.error_code.is_ok();
            partitions.push(ListOffsetsPartitionResponse {
                partition: partition.partition,
                error_code: outcome.error_code,
                offset: outcome.offset,
                timestamp: outcome.timestamp,
            });
        }
        response.topics.push(ListOffsetsTopicResponse { name: topic.name, partitions });
    }
    encode_frame(out, &response_header(header), &response)?;
    Ok(failed)
}

/// One pass over every partition of a fetch, within the byte budgets.
async fn fetch_pass(
    core: &Rc<Core>,
    request: &FetchRequest,
    mode: ReadMode,
    refused: &[Option<ErrorCode>],
) -> Vec<Vec<PartitionRead>> {
    let mut budget = request.max_bytes.min(FETCH_RESPONSE_BYTES_MAX);
    let mut topics = Vec::with_capacity(request.topics.len());
    for (index, topic) in request.topics.iter().enumerate() {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let refused = refused.get(index).copied().flatten();
        for partition in &topic.partitions {
            let key = PartitionKey::new(topic.name.clone(), partition.partition);
            let bytes_max = partition.partition_max_bytes.min(budget);
            let result = if let Some(code) = refused {
                PartitionRead::error(partition.partition, code, partition.fetch_offset)
            } else if bytes_max == 0 {
                PartitionRead::error(partition.partition, ErrorCode::None, partition.fetch_offset)
            } else {
                let read = ReadRequest {
                    offset: partition.fetch_offset,
                    bytes_max,
                    isolation: request.isolation,
                    leader_epoch: partition.current_leader_epoch,
                };
                ops::read(core, key, read, mode).await
            };
            budget = budget.saturating_sub(result.records.len() as u32);
            partitions.push(result);
        }
        topics.push(partitions);
    }
    topics
}

/// Waits until any partition of `request` may have records past what `reads` returned, or
/// `deadline`. Each partition is watched by a task of its own (remote ones on their owner), so
/// the first wake answers; the others end by the deadline at the latest.
async fn wait_any(
    core: &Rc<Core>,
    request: &FetchRequest,
    reads: &[Vec<PartitionRead>],
    deadline: Instant,
) {
    let partitions: usize = reads.iter().map(Vec::len).sum();
    let (woken, wakes) = local_channel::new_bounded::<()>(partitions.max(1));
    let woken = Rc::new(woken);
    for (topic, topic_reads) in request.topics.iter().zip(reads) {
        for (partition, read) in topic.partitions.iter().zip(topic_reads) {
            if !read.header.error_code.is_ok() {
                continue;
            }
            let key = PartitionKey::new(topic.name.clone(), partition.partition);
            let (core, woken, offset) = (Rc::clone(core), Rc::clone(&woken), read.next_offset);
            let isolation = request.isolation;
            let task = glommio::spawn_local(async move {
                ops::wait(&core, key, offset, isolation, deadline).await;
                let _ = woken.try_send(());
            });
            task.detach();
        }
    }
    let now = Instant::now();
    if now >= deadline {
        return;
    }
    let expired = async {
        glommio::timer::sleep(deadline - now).await;
    };
    let first = async {
        let _ = wakes.recv().await;
    };
    futures_lite::future::or(first, expired).await;
}

/// Fetch with long-poll. Local partitions' records go out as file slices (sendfile, or copied
/// at send time with `--zero-copy false`); forwarded ones were copied by their owner.
pub async fn fetch(
    core: &Rc<Core>,
    header: &FrameHeader,
    body: &[u8],
    access: &mut ConnectionAccess,
) -> Result<(Outgoing, FetchSummary), HandlerError> {
    let request = FetchRequest::decode(header.api_version, body)
        .map_err(|source| HandlerError::Undecodable { api_key: ApiKey::Fetch, source })?;
    let security = core.security.get();
    let refused: Vec<Option<ErrorCode>> = request
        .topics
        .iter()
        .map(|topic| access.check(&security, AclOperation::Read, &topic.name))
        .collect();
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let reads = loop {
        let reads = fetch_pass(core, &request, ReadMode::Slices, &refused).await;
        let total: usize = reads.iter().flatten().map(|read| read.records.len()).sum();
        let all_caught_up = reads.iter().flatten().all(|read| read.caught_up(request.isolation));
        let any_error = reads.iter().flatten().any(|read| !read.header.error_code.is_ok());
        let enough =
            total >= request.min_bytes as usize || (total > 0 && !all_caught_up) || any_error;
        if enough || Instant::now() >= deadline {
            break reads;
        }
        wait_any(core, &request, &reads, deadline).await;
    };
    let names: Vec<&TopicName> = request.topics.iter().map(|topic| &topic.name).collect();
    fetch_response(header, &names, reads)
}

/// Encodes the reads of a fetch (or follower fetch) as one response: copied records inline,
/// file slices spliced at send time.
pub fn fetch_response(
    header: &FrameHeader,
    names: &[&TopicName],
    reads: Vec<Vec<PartitionRead>>,
) -> Result<(Outgoing, FetchSummary), HandlerError> {
    let mut summary = FetchSummary::default();
    let mut buffer = Vec::with_capacity(256);
    let mut writer = FetchResponseWriter::begin(&mut buffer, &response_header(header));
    let mut spliced = Vec::new();
    for (name, reads) in names.iter().zip(reads) {
        writer.topic(name)?;
        for read in reads {
            summary.records += read.record_count();
            summary.errors |= !read.header.error_code.is_ok();
            match read.records {
                ReadRecords::Copied(bytes) => {
                    writer.partition_with_records(&read.header, &bytes)?
                }
                ReadRecords::Slices(slices) => {
                    let length = u32::try_from(slices.bytes).unwrap_or(u32::MAX);
                    writer.partition_to_splice(&read.header, length);
                    spliced.push(slices.slices);
                }
            }
        }
    }
    let plan = writer.finish()?;
    Ok((Outgoing::Plan { buffer, plan, slices: spliced }, summary))
}

/// What a fetch response carried, for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchSummary {
    /// Records returned.
    pub records: u64,
    /// Whether any partition carried an error code.
    pub errors: bool,
}
