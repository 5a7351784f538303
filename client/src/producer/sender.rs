//! The producer's sender thread: seals lingered batches, sends ready ones to their leader core,
//! and settles responses (resolve, retry or fail).
//!
//! One loop, woken by `send` (a new or sealed batch), by a response (over a channel from the
//! connection reader threads), or by the next deadline (linger, retry backoff). It never
//! blocks on a socket read; writing a request blocks only while the kernel buffer is full.
//!
//! Leader changes and failovers ([`crate::error::recovery`] decides per batch): a partition
//! without a leader in the metadata (an election, `PartitionOffline`) waits a backoff with a
//! metadata refresh; a refused or failed request with a retriable error (`NotLeader`,
//! `NotEnoughReplicas`, `NotEnoughReplicasAfterAppend`, `PartitionOffline`, a closed
//! connection, a timeout) puts its batches back at the front of their partition in send
//! order, refreshing the metadata when the leader may have moved, and they are sent again
//! (to the new leader) after the backoff, until each batch's `delivery_timeout`. The
//! partition's last such error is kept, so a record that times out says why. A request whose
//! partitions the metadata has all moved to another leader is not waited for: a leader that
//! hangs (a stopped process, a dead host) keeps its connection open and never answers, and the
//! SC elects a successor once its heartbeats stop; the request's batches are retried at the
//! successor as if the request had failed with `NotLeader`, and the old leader's late answer,
//! if any, is ignored. Idempotence
//! makes a retry of a batch that was appended (`NotEnoughReplicasAfterAppend`, a lost
//! answer) a duplicate, acknowledged without a second write.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use sluice_proto::api::produce::{
    Acks, ProducePartitionResponse, ProduceResponse, IDEMPOTENT_BATCHES_REMEMBERED,
};
use sluice_proto::api::Decode;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::Frame;

use super::accumulator::{lock_queue, Batch, PartitionQueue, TopicQueues};
use super::delivery::{BatchOutcome, Notify};
use super::request::{PartitionBatches, ProduceBatches, PRODUCE_REQUEST_BYTES_MAX};
use super::ProducerShared;
use crate::error::{recovery, ClientError, Recovery};
use crate::metadata::RouteError;

/// Longest sleep with nothing to do, so a lost wake-up costs at most this much.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// A produce request's response (or failure), handed over by a connection reader thread.
/// The request itself stays with the sender loop (its batches were written from there).
struct Completed {
    ticket: u64,
    result: Result<Frame, ClientError>,
    address: String,
}

struct SenderLoop<'a> {
    shared: &'a Arc<ProducerShared>,
    completed_sender: Sender<Completed>,
    /// Requests awaiting their response, by ticket, with the address they went to.
    in_flight: HashMap<u64, (String, ProduceBatches)>,
    /// Tickets given up on because their partitions' leaders moved; their late answers (or
    /// timeouts) are dropped when they come.
    abandoned: HashSet<u64>,
    /// The metadata of the last check for moved leaders (checked again when it changes).
    checked_metadata: Option<Arc<crate::metadata::MetadataSnapshot>>,
    next_ticket: u64,
    /// The current request frame's bytes other than its batches, reused.
    head: Vec<u8>,
    cuts: Vec<usize>,
}

/// What one pass over the queues found.
struct Pass {
    next_wake: Option<Instant>,
    anything_pending: bool,
    /// Batches past their delivery timeout, with their partition's last retriable error.
    expired: Vec<(Batch, Option<ClientError>)>,
}

/// Marks the producer stopped when the sender thread ends, also by a panic, so that `flush`
/// and `send` report [`ClientError::Closed`] instead of waiting forever.
struct StoppedOnExit<'a>(&'a ProducerShared);

impl Drop for StoppedOnExit<'_> {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.resolved.notify_all();
    }
}

pub(super) fn run(shared: &Arc<ProducerShared>, wake: &Receiver<()>) {
    let _stopped_on_exit = StoppedOnExit(shared);
    // Unbounded, yet bounded in practice: at most `max_in_flight` requests per partition.
    let (completed_sender, completed) = crossbeam_channel::unbounded();
    let mut sender = SenderLoop {
        shared,
        completed_sender,
        in_flight: HashMap::new(),
        abandoned: HashSet::new(),
        checked_metadata: None,
        next_ticket: 0,
        head: Vec::new(),
        cuts: Vec::new(),
    };
    loop {
        while let Ok(done) = completed.try_recv() {
            sender.complete(done);
        }
        let now = Instant::now();
        let pass = sender.drain(now);
        if shared.closing.load(Ordering::Acquire)
            && sender.in_flight.is_empty()
            && !pass.anything_pending
        {
            break;
        }
        let timeout =
            pass.next_wake.map_or(IDLE_WAIT, |at| at.saturating_duration_since(now)).min(IDLE_WAIT);
        select! {
            recv(completed) -> done => if let Ok(done) = done { sender.complete(done) },
            recv(wake) -> _ => {},
            default(timeout) => {},
        }
    }
    tracing::debug!("producer sender thread finished");
}

impl SenderLoop<'_> {
    /// Seals lingered batches, fails expired ones, and sends every partition that is ready.
    fn drain(&mut self, now: Instant) -> Pass {
        let shared = self.shared;
        let snapshot = shared.cluster.metadata.cache.snapshot();
        self.abandon_moved(&snapshot);
        let flushing =
            shared.flushing.load(Ordering::Acquire) > 0 || shared.closing.load(Ordering::Acquire);
        self.grow_topics(&snapshot);
        let topics: Vec<Arc<TopicQueues>> = shared
            .topics
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .cloned()
            .collect();
        let mut pass = Pass { next_wake: None, anything_pending: false, expired: Vec::new() };
        let mut requests: HashMap<String, ProduceBatches> = HashMap::new();
        let mut refresh = false;
        for topic in &topics {
            for (index, queue) in topic.partitions.iter().enumerate() {
                let partition = u32::try_from(index).unwrap_or(u32::MAX);
                let mut queue = lock_queue(queue);
                if queue.is_empty() {
                    continue;
                }
                pass.anything_pending = true;
                let ready = self.prepare(topic, partition, &mut queue, now, flushing, &mut pass);
                if !ready {
                    continue;
                }
                let route = match snapshot.route(topic.name.as_str(), partition) {
                    Ok(route) => route,
                    Err(reason) => {
                        tracing::debug!(topic = %topic.name, partition, ?reason, "no leader yet");
                        refresh = true;
                        let code = match reason {
                            RouteError::NoLeader(code) => code,
                            RouteError::UnknownTopic | RouteError::UnknownPartition { .. } => {
                                ErrorCode::UnknownTopicOrPartition
                            }
                        };
                        queue.last_error =
                            Some(ClientError::partition(code, topic.name.as_str(), partition));
                        let retry_at = now + shared.config.retry_backoff;
                        queue.retry_at = Some(retry_at);
                        wake_at(&mut pass, retry_at);
                        continue;
                    }
                };
                let request = requests.entry(route.address).or_default();
                if let Some(batches) = take_batches(&mut queue, request.record_bytes) {
                    request.record_bytes += batches.iter().map(Batch::wire_len).sum::<usize>();
                    request.partitions.push(PartitionBatches {
                        topic: Arc::clone(topic),
                        partition,
                        batches,
                    });
                } else {
                    wake_at(&mut pass, now); // the request is full: another one next pass
                }
            }
        }
        let timeout = shared.config.delivery_timeout;
        for (batch, last_error) in std::mem::take(&mut pass.expired) {
            let last_error = last_error.map(Box::new);
            self.resolve(batch, Err(ClientError::DeliveryTimeout { after: timeout, last_error }));
        }
        if refresh {
            shared.cluster.metadata.request_refresh();
        }
        for (address, request) in requests {
            if !request.partitions.is_empty() {
                self.send(address, request);
            }
        }
        pass
    }

    /// Seals a lingered batch and collects expired ones; returns whether the partition may be
    /// sent now.
    fn prepare(
        &self,
        topic: &TopicQueues,
        partition: u32,
        queue: &mut PartitionQueue,
        now: Instant,
        flushing: bool,
        pass: &mut Pass,
    ) -> bool {
        let config = &self.shared.config;
        if let Some(open) = &queue.open {
            let due = open.created + config.linger;
            if flushing || now >= due {
                queue.seal_open(self.shared.batch_limits());
                topic.sticky.advance_from(partition, topic.partition_count());
            } else {
                wake_at(pass, due);
            }
        }
        if queue.in_flight >= config.max_in_flight
            || queue.sealed.is_empty()
            || queue.batches_in_flight >= IDEMPOTENT_BATCHES_REMEMBERED
        {
            return false;
        }
        while queue
            .sealed
            .front()
            .is_some_and(|batch| now >= batch.created + config.delivery_timeout)
        {
            let last_error = queue.last_error.clone();
            if let Some(batch) = queue.sealed.pop_front() {
                // The batches after it could never be appended in sequence.
                queue.sequencing.new_epoch_needed |= batch.producer.is_idempotent();
                pass.expired.push((batch, last_error));
            }
        }
        if queue.sequencing.new_epoch_needed && queue.in_flight > 0 {
            // The new epoch waits for the answers of the old one.
            return false;
        }
        if let Some(oldest) = queue.sealed.front() {
            wake_at(pass, oldest.created + config.delivery_timeout);
        }
        match queue.retry_at {
            Some(retry_at) if now < retry_at => {
                wake_at(pass, retry_at);
                false
            }
            _ => {
                queue.retry_at = None;
                if queue.in_flight == 0 && queue.needs_new_epoch() {
                    tracing::debug!(
                        topic = %topic.name,
                        partition,
                        epoch = queue.sequencing.epoch,
                        "starting a new producer epoch"
                    );
                    queue.start_new_epoch();
                }
                !queue.sealed.is_empty()
            }
        }
    }

    /// Gives topics whose partition count grew queues for the new partitions.
    fn grow_topics(&self, snapshot: &crate::metadata::MetadataSnapshot) {
        let grown: Vec<(String, u32)> = {
            let topics = self.shared.topics.read().unwrap_or_else(|poison| poison.into_inner());
            topics
                .iter()
                .filter_map(|(name, queues)| {
                    let count = snapshot.partition_count(name)?;
                    (count > queues.partition_count()).then(|| (name.clone(), count))
                })
                .collect()
        };
        if grown.is_empty() {
            return;
        }
        for (name, count) in grown {
            self.shared.grow_topic(&name, count);
        }
    }

    fn send(&mut self, address: String, mut request: ProduceBatches) {
        let shared = self.shared;
        let connection = match shared.cluster.pool.get(&address) {
            Ok(connection) => connection,
            Err(error) => {
                shared.cluster.metadata.request_refresh();
                return self.settle_all(request, &Err(error));
            }
        };
        let correlation_id = connection.next_correlation_id();
        let request_timeout = shared.cluster.config.request_timeout;
        let timeout_ms = u32::try_from(request_timeout.as_millis()).unwrap_or(u32::MAX);
        self.head.clear();
        self.cuts.clear();
        let acks = shared.config.acks;
        if let Err(error) =
            request.encode(acks, timeout_ms, correlation_id, &mut self.head, &mut self.cuts)
        {
            return self.settle_all(request, &Err(ClientError::Encode(error)));
        }
        if acks == Acks::None {
            let unknown = BatchOutcome { base_offset: -1, log_append_time: None };
            let mut frame = request.io_slices(&self.head, &self.cuts);
            let result = connection.send_vectored(correlation_id, &mut frame, None);
            drop(frame);
            return self.settle_all_outcome(request, result.map(|()| unknown));
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let completed = self.completed_sender.clone();
        let sent_to = address.clone();
        let completion: crate::connection::Completion = Box::new(move |result| {
            let _ignored = completed.send(Completed { ticket, result, address });
        });
        // Any failure reaches the completion; `send` itself cannot fail when one is given. The
        // completion is only read by this thread's loop, after the request is in `in_flight`.
        let mut frame = request.io_slices(&self.head, &self.cuts);
        let _ignored = connection.send_vectored(
            correlation_id,
            &mut frame,
            Some((completion, "produce", request_timeout)),
        );
        drop(frame);
        self.in_flight.insert(ticket, (sent_to, request));
    }

    /// Gives up on in-flight requests whose partitions all have another leader in `snapshot`
    /// than the address they were sent to: their batches are retried at the new leader now
    /// instead of after the request timeout (a hung leader never answers). Only when the
    /// metadata changed since the last check.
    fn abandon_moved(&mut self, snapshot: &Arc<crate::metadata::MetadataSnapshot>) {
        if self.checked_metadata.as_ref().is_some_and(|checked| Arc::ptr_eq(checked, snapshot)) {
            return;
        }
        self.checked_metadata = Some(Arc::clone(snapshot));
        let moved: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (address, request))| {
                !request.partitions.is_empty()
                    && request.partitions.iter().all(|partition| {
                        snapshot
                            .route(partition.topic.name.as_str(), partition.partition)
                            .is_ok_and(|route| route.address != *address)
                    })
            })
            .map(|(ticket, _)| *ticket)
            .collect();
        for ticket in moved {
            let Some((address, request)) = self.in_flight.remove(&ticket) else { continue };
            tracing::debug!(%address, ticket, "leader moved: retrying an unanswered request");
            self.abandoned.insert(ticket);
            for partition in request.partitions {
                let error = ClientError::partition(
                    ErrorCode::NotLeader,
                    partition.topic.name.as_str(),
                    partition.partition,
                );
                self.settle(partition, &Err(error));
            }
        }
    }

    fn complete(&mut self, done: Completed) {
        let Some((_, request)) = self.in_flight.remove(&done.ticket) else {
            if !self.abandoned.remove(&done.ticket) {
                tracing::error!(
                    ticket = done.ticket,
                    "a produce response for no request in flight"
                );
            }
            return;
        };
        let frame = match done.result {
            Ok(frame) => frame,
            Err(error) => return self.settle_all(request, &Err(error)),
        };
        let response = match ProduceResponse::decode(frame.header.api_version, &frame.body) {
            Ok(response) => response,
            Err(error) => {
                let error = ClientError::decode(&done.address, &error);
                return self.settle_all(request, &Err(error));
            }
        };
        for partition in request.partitions {
            let answer = response
                .topics
                .iter()
                .filter(|topic| topic.name == partition.topic.name)
                .flat_map(|topic| topic.partitions.iter())
                .find(|answer| answer.partition.get() == partition.partition);
            let outcome = match answer {
                Some(answer) => Ok(*answer),
                None => Err(ClientError::Protocol {
                    peer: done.address.clone(),
                    reason: format!(
                        "no answer for {}/{}",
                        partition.topic.name, partition.partition
                    ),
                }),
            };
            self.settle(partition, &outcome);
        }
    }

    fn settle_all(
        &mut self,
        request: ProduceBatches,
        outcome: &Result<ProducePartitionResponse, ClientError>,
    ) {
        for partition in request.partitions {
            self.settle(partition, outcome);
        }
    }

    fn settle_all_outcome(
        &mut self,
        request: ProduceBatches,
        result: Result<BatchOutcome, ClientError>,
    ) {
        for partition in request.partitions {
            let mut queue = lock_queue(&partition.topic.partitions[partition.partition as usize]);
            queue.in_flight = queue.in_flight.saturating_sub(1);
            queue.batches_in_flight =
                queue.batches_in_flight.saturating_sub(partition.batches.len());
            drop(queue);
            match &result {
                Ok(outcome) => {
                    for batch in partition.batches {
                        self.resolve(batch, Ok(*outcome));
                    }
                }
                Err(error) => self.retry_or_fail(partition, error.clone()),
            }
        }
    }

    /// Resolves, retries or fails one partition's batches after its answer.
    fn settle(
        &mut self,
        partition: PartitionBatches,
        outcome: &Result<ProducePartitionResponse, ClientError>,
    ) {
        let answer = match outcome {
            // A duplicate is a batch the SPU had appended before (an idempotent retry).
            Ok(answer)
                if answer.error_code.is_ok()
                    || answer.error_code == ErrorCode::DuplicateSequence =>
            {
                *answer
            }
            Ok(answer) => {
                let error = ClientError::partition_refusal(
                    answer.error_code,
                    || self.shared.cluster.sc.principal_text(),
                    "write",
                    partition.topic.name.as_str(),
                    partition.partition,
                );
                return self.retry_or_fail(partition, error);
            }
            Err(error) => return self.retry_or_fail(partition, error.clone()),
        };
        {
            let mut queue = lock_queue(&partition.topic.partitions[partition.partition as usize]);
            queue.in_flight = queue.in_flight.saturating_sub(1);
            queue.batches_in_flight =
                queue.batches_in_flight.saturating_sub(partition.batches.len());
            queue.last_error = None;
            for batch in &partition.batches {
                queue.acknowledged(batch.producer, batch.record_count());
            }
        }
        let mut base_offset = answer.base_offset.map_or(-1, |offset| offset.get());
        let log_append_time = answer.log_append_time.map(|time| time.get());
        for batch in partition.batches {
            let count = i64::from(batch.record_count());
            self.resolve(batch, Ok(BatchOutcome { base_offset, log_append_time }));
            if base_offset >= 0 {
                base_offset += count;
            }
        }
        self.shared.wake_sender();
    }

    /// Puts retriable failures back at the front of their partition (until their delivery
    /// timeout); fails the rest.
    fn retry_or_fail(&mut self, partition: PartitionBatches, error: ClientError) {
        let config = &self.shared.config;
        let now = Instant::now();
        let mut failed = Vec::new();
        let mut refresh = false;
        {
            let mut queue = lock_queue(&partition.topic.partitions[partition.partition as usize]);
            queue.in_flight = queue.in_flight.saturating_sub(1);
            queue.batches_in_flight =
                queue.batches_in_flight.saturating_sub(partition.batches.len());
            if error.is_retriable() {
                tracing::debug!(topic = %partition.topic.name, partition = partition.partition, %error, "retrying");
                for mut batch in partition.batches {
                    batch.retried = true;
                    let age = now.saturating_duration_since(batch.created);
                    let decision = recovery(&error, age, config.delivery_timeout);
                    refresh |= decision == Recovery::RefreshAndRetry;
                    if decision == Recovery::Fail {
                        failed.push(batch);
                    } else {
                        // Back in send order, also when several requests of the partition
                        // fail and their answers arrive in any order.
                        let at =
                            queue.sealed.partition_point(|queued| queued.sequence < batch.sequence);
                        queue.sealed.insert(at, batch);
                    }
                }
                queue.retry_at = Some(now + config.retry_backoff);
                queue.last_error = Some(error.clone());
            } else {
                failed = partition.batches;
            }
            // A batch failing for good leaves a gap the SPU would never fill; an unknown
            // producer means the SPU lost its state: either way, a new epoch (once nothing is
            // in flight).
            let unknown_producer =
                matches!(&error, ClientError::Server { code: ErrorCode::UnknownProducerId, .. });
            if unknown_producer || failed.iter().any(|batch| batch.producer.is_idempotent()) {
                queue.sequencing.new_epoch_needed = true;
            }
        }
        if refresh {
            self.shared.cluster.metadata.request_refresh();
        }
        let failure = if error.is_retriable() {
            ClientError::DeliveryTimeout {
                after: config.delivery_timeout,
                last_error: Some(Box::new(error)),
            }
        } else {
            error
        };
        for batch in failed {
            self.resolve(batch, Err(failure.clone()));
        }
        self.shared.wake_sender();
    }

    /// Settles one batch: its future, its callbacks, its buffer space, its builder.
    fn resolve(&self, batch: Batch, result: Result<BatchOutcome, ClientError>) {
        let shared = self.shared;
        batch.shared.resolve(result.clone());
        let partition = batch.shared.partition();
        // One pass in send order: boxed callbacks run as the pass reaches them, tagged records
        // go to the listener's batch call (one call per batch, not per record).
        let mut records = batch.callbacks.into_iter().filter_map(|pending| {
            let record = match &result {
                Ok(outcome) => Ok(outcome.record(partition, pending.index, pending.timestamp)),
                Err(error) => Err(error.clone()),
            };
            match pending.notify {
                Notify::Callback(callback) => {
                    if catch_unwind(AssertUnwindSafe(move || callback(record))).is_err() {
                        tracing::error!("a producer delivery callback panicked");
                    }
                    None
                }
                Notify::Tag(tag) => Some((tag, record)),
            }
        });
        if let Some(listener) = &shared.listener {
            if catch_unwind(AssertUnwindSafe(|| listener.delivered_batch(&mut records))).is_err() {
                tracing::error!("the producer's delivery listener panicked");
            }
        }
        // What the listener left (or all, without one): the remaining callbacks still run.
        records.for_each(drop);
        shared.budget.release(batch.reserved_bytes);
        shared.builders.give_back(batch.builder);
        let mut unresolved = shared.unresolved.lock().unwrap_or_else(|poison| poison.into_inner());
        unresolved.remove(&batch.sequence);
        drop(unresolved);
        shared.resolved.notify_all();
    }
}

/// Takes the partition's sealed batches, front first, while the request stays under
/// [`PRODUCE_REQUEST_BYTES_MAX`]; `None` when not even the first fits a non-empty request. A
/// retried batch goes alone ([`Batch::retried`]).
fn take_batches(queue: &mut PartitionQueue, request_bytes: usize) -> Option<Vec<Batch>> {
    let first_len = queue.sealed.front()?.wire_len();
    if request_bytes > 0 && request_bytes + first_len > PRODUCE_REQUEST_BYTES_MAX {
        return None;
    }
    if queue.batches_in_flight >= IDEMPOTENT_BATCHES_REMEMBERED {
        return None;
    }
    let mut bytes = request_bytes;
    let mut taken = Vec::new();
    while let Some(front) = queue.sealed.front() {
        if !taken.is_empty()
            && (bytes + front.wire_len() > PRODUCE_REQUEST_BYTES_MAX
                || front.retried
                || queue.batches_in_flight + taken.len() >= IDEMPOTENT_BATCHES_REMEMBERED)
        {
            break;
        }
        bytes += front.wire_len();
        let retried = front.retried;
        taken.extend(queue.sealed.pop_front());
        if retried {
            break;
        }
    }
    queue.in_flight += 1;
    queue.batches_in_flight += taken.len();
    assert!(
        queue.batches_in_flight <= IDEMPOTENT_BATCHES_REMEMBERED,
        "more batches in flight than a leader remembers for retries"
    );
    Some(taken)
}

fn wake_at(pass: &mut Pass, at: Instant) {
    pass.next_wake = Some(pass.next_wake.map_or(at, |current| current.min(at)));
}

#[cfg(test)]
mod tests {
    use sluice_proto::object::TopicName;

    use super::*;

    fn batch(sequence: u64, retried: bool) -> Batch {
        Batch { sequence, retried, ..Batch::for_tests(&[b"value"]) }
    }

    fn sequences(batches: &[Batch]) -> Vec<u64> {
        batches.iter().map(|batch| batch.sequence).collect()
    }

    #[test]
    fn retried_batches_go_alone_and_fresh_ones_together() {
        let topic = TopicQueues::new(TopicName::new("t").unwrap(), 1, 0);
        let mut queue = lock_queue(&topic.partitions[0]);
        for (sequence, retried) in [(0, true), (1, true), (2, false), (3, false), (4, true)] {
            queue.sealed.push_back(batch(sequence, retried));
        }
        assert_eq!(sequences(&take_batches(&mut queue, 0).unwrap()), [0]);
        assert_eq!(sequences(&take_batches(&mut queue, 0).unwrap()), [1]);
        assert_eq!(sequences(&take_batches(&mut queue, 0).unwrap()), [2, 3]);
        assert_eq!(sequences(&take_batches(&mut queue, 0).unwrap()), [4]);
        assert!(take_batches(&mut queue, 0).is_none());
        assert_eq!(queue.in_flight, 4);
        assert_eq!(queue.batches_in_flight, 5);
    }

    #[test]
    fn batches_in_flight_stay_within_what_a_leader_remembers() {
        let topic = TopicQueues::new(TopicName::new("t").unwrap(), 1, 0);
        let mut queue = lock_queue(&topic.partitions[0]);
        let total = IDEMPOTENT_BATCHES_REMEMBERED as u64 + 10;
        for sequence in 0..total {
            queue.sealed.push_back(batch(sequence, false));
        }
        let first = take_batches(&mut queue, 0).unwrap();
        assert_eq!(first.len(), IDEMPOTENT_BATCHES_REMEMBERED, "one request up to the limit");
        assert!(take_batches(&mut queue, 0).is_none(), "nothing more until answers come");
        // An answer frees its batches.
        queue.in_flight -= 1;
        queue.batches_in_flight -= first.len();
        assert_eq!(take_batches(&mut queue, 0).unwrap().len(), 10);
    }
}
