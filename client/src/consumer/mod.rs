//! [`PartitionConsumer`]: reads one partition from a start position, continuously or up to the
//! end offset seen at start.
//!
//! Transport: pipelined long-poll `Fetch`, one request in flight. As soon as a response with
//! records arrives, the next fetch (from the offset after its last whole batch) is sent, and
//! only then are the received records handed to the caller: the network and the SPU work
//! while the application processes the previous response. `Fetch` rather than `StreamFetch`
//! because each request names its offset, so leader changes, SPU restarts, reconnects and
//! errors are handled by sending the same request again to the new leader, with no stream
//! state or credit to rebuild; a long poll (`max_wait_ms`) answers as soon as records arrive,
//! so a tailing consumer sees new records within one round trip, like a pushed stream. The
//! cost is one small request per response, negligible next to responses of up to `max_bytes`.
//!
//! Ownership: a consumer is used by one thread at a time (`&mut self`); the responses arrive
//! on the connection's reader thread and are handed over through a one-slot channel. Each
//! consumer fetches over a connection of its own (to the leader's owning core): an SPU serves
//! one request at a time per connection, so a long poll on the shared connection would stall
//! the producers using it. List offsets, short, goes over the shared pool.
//!
//! Failure modes and leader changes ([`crate::error::recovery`] decides, pure and unit-tested):
//! - the leader moved, died or paused (`NotLeader`, `LeaderNotAvailable`, `PartitionOffline`,
//!   a fenced epoch, a closed connection, a timeout): the metadata is refreshed and the same
//!   fetch (same offset) is sent again after a backoff, to the new leader once the metadata
//!   names one;
//! - the leader is right but cannot answer yet (`OffsetNotAvailable` from a new leader that
//!   cannot prove its high watermark, `SpuBusy`, `StorageFull`): the same fetch is sent again
//!   to it after the backoff;
//! - while a fetch is in flight, a change of the partition's route in the metadata (a new
//!   leader, a new leader epoch, new ports after a restart) abandons it and fetches from the
//!   new route at once, so a paused leader costs the election time, not a request timeout;
//! - if retriable errors persist for `request_timeout` the last one is returned (a later
//!   `poll` starts trying again); `OffsetOutOfRange` and other non-retriable codes are
//!   returned at once.

mod records;

use std::cell::Cell;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use sluice_proto::api::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
use sluice_proto::api::list_offsets::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopic, OffsetSpec,
};
use sluice_proto::api::{ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_request, Frame};
use sluice_proto::ids::{LeaderEpoch, Offset, PartitionId, TimestampMs};
use sluice_proto::object::TopicName;
use sluice_proto::record::{BatchHeader, RecordBatch, BATCH_HEADER_LEN};

use crate::cluster::ClusterInner;
use crate::config::{ConsumerConfig, StartFrom};
use crate::connection::Connection;
use crate::error::{recovery, ClientError, Recovery};
use crate::metadata::RouteError;
use records::Filter;
pub use records::{ConsumerRecord, RecordHeaders, RecordView, Records};

/// How long the SPU holds a fetch with nothing new before answering empty: short enough to
/// notice a leader change or shutdown quickly, long enough to keep idle traffic negligible.
const FETCH_WAIT_MS: u32 = 500;
/// Pause before retrying after a retriable error.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How often a consumer waiting for a fetch looks at the metadata for a new route: the
/// longest a leader change goes unnoticed while a fetch to the old leader hangs.
const ROUTE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Largest fetch size: the connection's frame limit minus room for headers.
const FETCH_BYTES_MAX: u32 = crate::connection::RESPONSE_FRAME_BYTES_MAX - 64 * 1024;
/// Decompressed bytes of one batch at most (a decompression bomb fails instead).
const DECOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;

/// What one `poll` gives.
#[derive(Debug)]
pub enum Poll<'a> {
    /// Records, borrowed until the next `poll`.
    Records(Records<'a>),
    /// Nothing new within the timeout.
    Idle,
    /// Caught up with the end offset seen at start (only with `stop_at_end`).
    End,
}

/// Where a fetch went: the leader's core address and the leader epoch it had then.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteSeen {
    address: String,
    leader_epoch: LeaderEpoch,
}

/// The response being handed out.
struct Current {
    frame: Frame,
    /// Unconsumed record bytes within `frame.body`.
    remaining: Range<usize>,
}

/// What the next `poll` returns, found without holding a borrow.
enum Run {
    /// Uncompressed batches at this range of the current body.
    Uncompressed(Range<usize>, i64),
    /// One compressed batch at this range.
    Compressed(Range<usize>, i64),
}

/// Reads one partition. See the module docs for how.
///
/// ```no_run
/// use std::time::Duration;
/// use sluice_client::{ClientConfig, Cluster, ConsumerConfig, Poll, StartFrom};
///
/// let cluster = Cluster::connect(ClientConfig::new("127.0.0.1:9003"))?;
/// let config = ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
/// let mut consumer = cluster.consumer("orders", 0, config)?;
/// loop {
///     match consumer.poll(Duration::from_secs(1))? {
///         Poll::Records(records) => {
///             for record in records {
///                 println!("{}: {:?}", record.offset, record.value);
///             }
///         }
///         Poll::Idle => continue,
///         Poll::End => break,
///     }
/// }
/// # Ok::<(), sluice_client::ClientError>(())
/// ```
pub struct PartitionConsumer {
    cluster: Arc<ClusterInner>,
    topic: TopicName,
    partition: u32,
    config: ConsumerConfig,
    /// The next offset handed to the caller.
    position: i64,
    /// The offset the next fetch starts at.
    fetch_offset: i64,
    /// With `stop_at_end`: the end offset seen at start.
    end_offset: Option<i64>,
    fetch_bytes: u32,
    current: Option<Current>,
    in_flight: Option<Receiver<Result<Frame, ClientError>>>,
    /// The route the in-flight fetch was sent on.
    in_flight_route: Option<RouteSeen>,
    /// This consumer's own connection for fetches, with its address.
    connection: Option<(String, Arc<Connection>)>,
    retry_at: Option<Instant>,
    failing_since: Option<Instant>,
    scratch: Vec<u8>,
    record_error: Cell<Option<ClientError>>,
    /// Started at a timestamp: records before it are skipped until one at or after it is seen.
    timestamp_min: Cell<Option<i64>>,
}

impl std::fmt::Debug for PartitionConsumer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PartitionConsumer")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("position", &self.position)
            .field("end_offset", &self.end_offset)
            .finish_non_exhaustive()
    }
}

impl PartitionConsumer {
    pub(crate) fn open(
        cluster: Arc<ClusterInner>,
        topic: &str,
        partition: u32,
        config: ConsumerConfig,
    ) -> Result<PartitionConsumer, ClientError> {
        let name = TopicName::new(topic).map_err(|error| ClientError::InvalidInput {
            what: "topic name",
            reason: error.to_string(),
        })?;
        let partition_count = cluster.partition_count(topic)?;
        if partition >= partition_count {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partition_count,
            });
        }
        if config.max_bytes == 0 {
            return Err(ClientError::InvalidInput {
                what: "consumer config",
                reason: "max_bytes must be above 0".into(),
            });
        }
        let mut consumer = PartitionConsumer {
            cluster,
            topic: name,
            partition,
            fetch_bytes: config.max_bytes.min(FETCH_BYTES_MAX),
            config,
            position: 0,
            fetch_offset: 0,
            end_offset: None,
            current: None,
            in_flight: None,
            in_flight_route: None,
            connection: None,
            retry_at: None,
            failing_since: None,
            scratch: Vec::new(),
            record_error: Cell::new(None),
            timestamp_min: Cell::new(None),
        };
        consumer.position = consumer.start_offset()?;
        consumer.fetch_offset = consumer.position;
        if consumer.config.stop_at_end {
            consumer.end_offset = Some(consumer.list_offset(OffsetSpec::Latest)?.unwrap_or(0));
        }
        Ok(consumer)
    }

    /// The next offset `poll` will hand out.
    pub fn position(&self) -> Offset {
        Offset(self.position)
    }

    /// With `stop_at_end`: the end offset seen at start (the consumer stops before it).
    pub fn end_offset(&self) -> Option<Offset> {
        self.end_offset.map(Offset)
    }

    /// The topic and partition read.
    pub fn partition(&self) -> (&str, u32) {
        (self.topic.as_str(), self.partition)
    }

    fn start_offset(&mut self) -> Result<i64, ClientError> {
        match self.config.start {
            StartFrom::Offset(offset) if offset.0 >= 0 => Ok(offset.0),
            StartFrom::Offset(offset) => Err(ClientError::InvalidInput {
                what: "start offset",
                reason: format!("{offset} is negative"),
            }),
            StartFrom::Beginning => Ok(self.list_offset(OffsetSpec::Earliest)?.unwrap_or(0)),
            StartFrom::End => Ok(self.list_offset(OffsetSpec::Latest)?.unwrap_or(0)),
            StartFrom::Timestamp(timestamp) => {
                match self.list_offset(OffsetSpec::ByTimestamp(TimestampMs(timestamp)))? {
                    Some(offset) => {
                        self.timestamp_min.set(Some(timestamp));
                        Ok(offset)
                    }
                    None => Ok(self.list_offset(OffsetSpec::Latest)?.unwrap_or(0)),
                }
            }
        }
    }

    /// Looks up an offset at the partition's leader, retrying retriable errors for up to
    /// `request_timeout`.
    fn list_offset(&self, spec: OffsetSpec) -> Result<Option<i64>, ClientError> {
        let request = ListOffsetsRequest {
            isolation: self.config.isolation,
            topics: vec![ListOffsetsTopic {
                name: self.topic.clone(),
                partitions: vec![ListOffsetsPartition {
                    partition: PartitionId(self.partition),
                    spec,
                }],
            }],
        };
        let window = self.cluster.config.request_timeout;
        let started = Instant::now();
        loop {
            let error = match self.try_list_offset(&request) {
                Ok(offset) => return Ok(offset),
                Err(error) => error,
            };
            match recovery(&error, started.elapsed() + RETRY_BACKOFF, window) {
                Recovery::Fail => return Err(error),
                Recovery::RefreshAndRetry => self.cluster.metadata.request_refresh(),
                Recovery::Retry => {}
            }
            tracing::debug!(topic = %self.topic, partition = self.partition, %error, "list offsets: retrying");
            std::thread::sleep(RETRY_BACKOFF);
        }
    }

    fn try_list_offset(&self, request: &ListOffsetsRequest) -> Result<Option<i64>, ClientError> {
        let address = self.route()?.address;
        let connection = self.cluster.pool.get(&address)?;
        let frame =
            connection.call(request, "list offsets", self.cluster.config.request_timeout)?;
        let response = ListOffsetsResponse::decode(frame.header.api_version, &frame.body)
            .map_err(|error| ClientError::decode(&address, &error))?;
        let answer = response
            .topics
            .iter()
            .filter(|topic| topic.name == self.topic)
            .flat_map(|topic| topic.partitions.iter())
            .find(|answer| answer.partition == PartitionId(self.partition))
            .ok_or_else(|| ClientError::Protocol {
                peer: address.clone(),
                reason: "list offsets response without the partition".into(),
            })?;
        if !answer.error_code.is_ok() {
            return Err(self.refusal(answer.error_code, "describe"));
        }
        Ok(answer.offset.map(Offset::get))
    }

    /// The error of an SPU's answer to `operation` on this partition.
    fn refusal(&self, code: ErrorCode, operation: &str) -> ClientError {
        let principal = || self.cluster.sc.principal_text();
        ClientError::partition_refusal(
            code,
            principal,
            operation,
            self.topic.as_str(),
            self.partition,
        )
    }

    fn partition_error(&self, code: ErrorCode) -> ClientError {
        ClientError::partition(code, self.topic.as_str(), self.partition)
    }

    /// The partition's leader as the metadata names it now.
    fn route(&self) -> Result<RouteSeen, ClientError> {
        let snapshot = self.cluster.metadata.cache.snapshot();
        match snapshot.route(self.topic.as_str(), self.partition) {
            Ok(route) => Ok(RouteSeen { address: route.address, leader_epoch: route.leader_epoch }),
            // The topic was found at open: not in this view yet (or deleted since); retried.
            Err(RouteError::UnknownTopic | RouteError::UnknownPartition { .. }) => {
                Err(self.partition_error(ErrorCode::UnknownTopicOrPartition))
            }
            Err(RouteError::NoLeader(code)) => Err(self.partition_error(code)),
        }
    }

    /// Whether the metadata names another route than the in-flight fetch's (a new leader or
    /// epoch, or the leader's new ports after a restart). No route at all (an election in
    /// progress) is not a move: the fetch in flight may still be answered.
    fn route_moved(&self) -> bool {
        let Some(sent_on) = &self.in_flight_route else { return false };
        self.route().is_ok_and(|now| now != *sent_on)
    }

    /// Forgets the in-flight fetch and closes the connection it went on (its answer, if one
    /// ever comes, is dropped), so the next fetch goes to the current route.
    fn abandon_fetch(&mut self) {
        self.in_flight = None;
        self.in_flight_route = None;
        self.connection = None;
    }

    /// The next records, waiting up to `timeout` for them.
    ///
    /// Returns [`Poll::Records`] with at least one batch's worth of bytes (possibly no record
    /// at all if the batch only held records before the position), [`Poll::Idle`] when nothing
    /// arrived in time, [`Poll::End`] once a `stop_at_end` consumer has read everything before
    /// the end offset seen at start.
    pub fn poll(&mut self, timeout: Duration) -> Result<Poll<'_>, ClientError> {
        if let Some(error) = self.record_error.take() {
            return Err(error);
        }
        let deadline = Instant::now() + timeout;
        let run = loop {
            if self.end_offset.is_some_and(|end| self.position >= end) {
                return Ok(Poll::End);
            }
            if let Some(run) = self.next_run() {
                break run;
            }
            if !self.wait_for_response(deadline)? {
                return Ok(Poll::Idle);
            }
        };
        let Some(current) = self.current.as_ref() else {
            return Ok(Poll::Idle);
        };
        let filter = Filter {
            offset_min: self.position,
            offset_end: self.end_offset,
            timestamp_min: &self.timestamp_min,
            error: &self.record_error,
        };
        match run {
            Run::Uncompressed(range, next) => {
                self.position = next;
                let bytes = &current.frame.body[range];
                Ok(Poll::Records(Records::uncompressed(bytes, filter)))
            }
            Run::Compressed(range, next) => {
                self.position = next;
                let batch = RecordBatch::parse(&current.frame.body[range], usize::MAX)?;
                let records =
                    batch.decompress_records(&mut self.scratch, DECOMPRESSED_BYTES_MAX)?;
                Ok(Poll::Records(Records::decompressed(records, filter)))
            }
        }
    }

    /// The next run of whole batches in the current response, skipping batches entirely
    /// before the position.
    fn next_run(&mut self) -> Option<Run> {
        let current = self.current.as_mut()?;
        let body = &current.frame.body;
        let mut start = current.remaining.start;
        let end = current.remaining.end;
        let mut run_end = start;
        let mut next_offset = self.position;
        let mut compressed_run = false;
        while run_end < end {
            let Some(header) = whole_batch(&body[run_end..end]) else { break };
            let batch_end = run_end + header.total_len();
            let is_compressed = header.attributes & 0x07 != 0;
            if header.next_offset().get() <= self.position && run_end == start {
                // Entirely before the position: skip without handing it out.
                start = batch_end;
                run_end = batch_end;
                continue;
            }
            if is_compressed && run_end > start {
                break; // hand out the uncompressed run first
            }
            run_end = batch_end;
            next_offset = next_offset.max(header.next_offset().get());
            if is_compressed {
                compressed_run = true;
                break;
            }
        }
        if run_end == start {
            // Nothing left that is whole: the rest (a partial batch, if any) is fetched again.
            self.current = None;
            return None;
        }
        current.remaining = run_end..end;
        Some(if compressed_run {
            Run::Compressed(start..run_end, next_offset)
        } else {
            Run::Uncompressed(start..run_end, next_offset)
        })
    }

    /// Waits for the in-flight fetch (sending one when there is none) until `deadline`.
    /// Returns whether a response with records became current.
    fn wait_for_response(&mut self, deadline: Instant) -> Result<bool, ClientError> {
        loop {
            if self.in_flight.is_none() {
                if let Some(retry_at) = self.retry_at {
                    let now = Instant::now();
                    if now < retry_at {
                        if deadline <= now {
                            return Ok(false);
                        }
                        std::thread::sleep((retry_at - now).min(deadline - now));
                        continue;
                    }
                    self.retry_at = None;
                }
                if let Err(error) = self.send_fetch() {
                    self.retry_later(error)?;
                    continue;
                }
            }
            let Some(receiver) = self.in_flight.as_ref() else { continue };
            let left = deadline.saturating_duration_since(Instant::now());
            let result = match receiver.recv_timeout(left.min(ROUTE_CHECK_INTERVAL)) {
                Ok(result) => result,
                Err(RecvTimeoutError::Timeout) => {
                    if self.route_moved() {
                        tracing::debug!(topic = %self.topic, partition = self.partition, "leader moved; fetching from the new one");
                        self.abandon_fetch();
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
            };
            self.in_flight = None;
            self.in_flight_route = None;
            match result.and_then(|frame| self.accept(frame)) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(error) => self.retry_later(error)?,
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Schedules a retry (at the same offset) for a retriable error that has not persisted
    /// too long; returns other errors.
    fn retry_later(&mut self, error: ClientError) -> Result<(), ClientError> {
        let now = Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        match recovery(&error, now.duration_since(since), self.cluster.config.request_timeout) {
            Recovery::Fail => {
                self.failing_since = None;
                return Err(error);
            }
            Recovery::RefreshAndRetry => self.cluster.metadata.request_refresh(),
            Recovery::Retry => {}
        }
        tracing::debug!(topic = %self.topic, partition = self.partition, offset = self.fetch_offset, %error, "fetch: retrying");
        self.retry_at = Some(now + RETRY_BACKOFF);
        Ok(())
    }

    fn send_fetch(&mut self) -> Result<(), ClientError> {
        let route = self.route()?;
        let connection = self.fetch_connection(&route.address)?;
        let request = FetchRequest {
            isolation: self.config.isolation,
            max_wait_ms: FETCH_WAIT_MS,
            min_bytes: 1,
            max_bytes: self.fetch_bytes,
            topics: vec![FetchTopic {
                name: self.topic.clone(),
                partitions: vec![FetchPartition {
                    partition: PartitionId(self.partition),
                    fetch_offset: Offset(self.fetch_offset),
                    partition_max_bytes: self.fetch_bytes,
                    current_leader_epoch: None,
                }],
            }],
        };
        let correlation_id = connection.next_correlation_id();
        let mut frame = Vec::with_capacity(128);
        encode_request(&mut frame, ApiVersion(0), correlation_id, &request)?;
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let completion: crate::connection::Completion = Box::new(move |result| {
            let _ignored = sender.send(result);
        });
        let timeout =
            self.cluster.config.request_timeout + Duration::from_millis(u64::from(FETCH_WAIT_MS));
        connection.send(correlation_id, &frame, Some((completion, "fetch", timeout)))?;
        self.in_flight = Some(receiver);
        self.in_flight_route = Some(route);
        Ok(())
    }

    /// The consumer's own connection to `address`, opened (again) when there is none, it
    /// failed, or the leader moved. Long-poll fetches are not sent over the shared pool: an SPU
    /// serves one request at a time per connection, so a fetch waiting for records there would
    /// hold up the produce requests queued behind it.
    fn fetch_connection(&mut self, address: &str) -> Result<Arc<Connection>, ClientError> {
        if let Some((current, connection)) = &self.connection {
            if current == address && !connection.is_closed() {
                return Ok(Arc::clone(connection));
            }
        }
        let config = &self.cluster.config;
        let token = config.token.as_deref().map(|token| (token, config.request_timeout));
        let connection = Arc::new(Connection::open_as(
            address,
            config.connect_timeout,
            self.cluster.sc.transport(),
            token,
        )?);
        self.connection = Some((address.to_owned(), Arc::clone(&connection)));
        Ok(connection)
    }

    /// Takes a fetch response: on records, makes it current and sends the next fetch at once.
    /// Returns whether records arrived.
    fn accept(&mut self, frame: Frame) -> Result<bool, ClientError> {
        let peer = self.topic.to_string();
        let (error_code, records) = {
            let response = FetchResponse::decode(frame.header.api_version, &frame.body)
                .map_err(|error| ClientError::decode(&peer, &error))?;
            let answer = response
                .topics
                .iter()
                .filter(|topic| topic.name == self.topic)
                .flat_map(|topic| topic.partitions.iter())
                .find(|answer| answer.header.partition == PartitionId(self.partition))
                .ok_or_else(|| ClientError::Protocol {
                    peer: peer.clone(),
                    reason: "fetch response without the partition".into(),
                })?;
            let start = answer.records.as_ptr() as usize - frame.body.as_ptr() as usize;
            (answer.header.error_code, start..start + answer.records.len())
        };
        if !error_code.is_ok() {
            return Err(self.refusal(error_code, "read"));
        }
        self.failing_since = None;
        if records.is_empty() {
            return Ok(false);
        }
        let next_fetch = whole_batches_end(&frame.body[records.clone()]);
        match next_fetch {
            Some(next_offset) => {
                self.fetch_offset = self.fetch_offset.max(next_offset);
                self.current = Some(Current { frame, remaining: records });
                let caught_up = self.end_offset.is_some_and(|end| self.fetch_offset >= end);
                if !caught_up {
                    // Prefetch while the caller processes this response; a failure here is
                    // retried on the next poll.
                    if let Err(error) = self.send_fetch() {
                        tracing::debug!(%error, "prefetch not sent");
                    }
                }
                Ok(true)
            }
            None => {
                // Not even one whole batch fits: ask for more bytes next time.
                self.fetch_bytes = self.fetch_bytes.saturating_mul(2).min(FETCH_BYTES_MAX);
                Ok(false)
            }
        }
    }

    /// Owned records, blocking until each arrives; ends at the end offset with `stop_at_end`.
    /// Convenient, but allocates per record: use [`PartitionConsumer::poll`] for throughput.
    pub fn records(&mut self) -> OwnedRecords<'_> {
        OwnedRecords { consumer: self, buffered: std::collections::VecDeque::new(), ended: false }
    }
}

/// The header of the whole batch at the start of `bytes`, if all of it is there.
fn whole_batch(bytes: &[u8]) -> Option<BatchHeader> {
    if bytes.len() < BATCH_HEADER_LEN {
        return None;
    }
    let header = BatchHeader::parse(bytes).ok()?;
    (header.batch_length > 0 && header.total_len() <= bytes.len()).then_some(header)
}

/// The offset after the last whole batch in `bytes`; `None` if there is no whole batch.
fn whole_batches_end(bytes: &[u8]) -> Option<i64> {
    let mut position = 0;
    let mut next = None;
    while let Some(header) = whole_batch(&bytes[position..]) {
        position += header.total_len();
        next = Some(header.next_offset().get());
    }
    next
}

/// Iterator of owned records; see [`PartitionConsumer::records`].
pub struct OwnedRecords<'a> {
    consumer: &'a mut PartitionConsumer,
    buffered: std::collections::VecDeque<ConsumerRecord>,
    ended: bool,
}

impl Iterator for OwnedRecords<'_> {
    type Item = Result<ConsumerRecord, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Some(Ok(record));
            }
            if self.ended {
                return None;
            }
            match self.consumer.poll(Duration::from_secs(1)) {
                Ok(Poll::Records(records)) => {
                    self.buffered.extend(records.map(|view| view.to_owned_record()));
                }
                Ok(Poll::Idle) => {}
                Ok(Poll::End) => self.ended = true,
                Err(error) => {
                    self.ended = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::record::{set_base_offset, BatchBuilder};

    fn batch(base: i64, count: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for _ in 0..count {
            builder.push_record(TimestampMs(1), None, Some(b"v"), &[]).unwrap();
        }
        let mut bytes = builder.finish().to_vec();
        set_base_offset(&mut bytes, Offset(base));
        bytes
    }

    #[test]
    fn whole_batches_end_ignores_a_partial_tail() {
        let mut bytes = batch(5, 3);
        bytes.extend(batch(8, 2));
        assert_eq!(whole_batches_end(&bytes), Some(10));
        let partial = batch(10, 4);
        bytes.extend_from_slice(&partial[..partial.len() - 1]);
        assert_eq!(whole_batches_end(&bytes), Some(10));
        assert_eq!(whole_batches_end(&partial[..30]), None);
        assert_eq!(whole_batches_end(&[]), None);
    }
}
