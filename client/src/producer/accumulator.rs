//! Per-partition batching: records are copied into the open batch of their partition; full
//! (or lingered) batches are sealed and wait for the sender thread.
//!
//! Ownership: each partition's [`PartitionQueue`] sits behind its own mutex, taken by `send`
//! (to append) and by the sender thread (to seal, take and requeue). No lock is held across
//! I/O. Order: batches leave a partition queue front first and a failed request's batches go
//! back in send order. With idempotence each batch gets the partition's next sequence number
//! when it is sealed ([`Sequencing`]); the SPU appends a partition's batches only in sequence,
//! so records of one partition are written in `send` order even when one of several requests
//! in flight fails and is retried.
//!
//! Memory: [`BufferBudget`] bounds the bytes of records buffered and in flight
//! (`buffer_bytes_max`); `send` blocks while it is used up. [`BuilderPool`] keeps batch
//! buffers for reuse, so a steady producer allocates nothing per batch.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_proto::ids::ProducerId;
use sluice_proto::ids::TimestampMs;
use sluice_proto::object::TopicName;
use sluice_proto::record::{
    sequence_after, set_producer_state, BatchBuilder, BatchError, Compression, Header,
    ProducerState, BATCH_HEADER_LEN,
};

use super::delivery::{BatchShared, Notify, PendingCallback};
use super::partitioner::StickyPartition;
use crate::error::ClientError;

/// Bytes a record may take beyond its key, value and header bytes: length, attributes,
/// timestamp and offset deltas, key and value lengths, header count (varints at their widest).
pub(crate) const RECORD_OVERHEAD_BYTES_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
/// Bytes each header may take beyond its key and value: two varint lengths.
pub(crate) const HEADER_OVERHEAD_BYTES_MAX: usize = 10;
/// Acknowledgements past a gap remembered per partition: more than the batches of the 16
/// requests a partition may have in flight need.
const ACKED_AHEAD_MAX: usize = 256;
/// Batch buffers kept for reuse; more than the partitions a producer usually fills at once.
const BUILDER_POOL_MAX: usize = 64;

/// One batch being filled or waiting to be sent.
pub(crate) struct Batch {
    pub builder: BatchBuilder,
    /// The compressed batch, made when sealed (`None`: send the builder's bytes).
    pub compressed: Option<Vec<u8>>,
    pub shared: Arc<BatchShared>,
    pub callbacks: Vec<PendingCallback>,
    pub created: Instant,
    /// Bytes charged to the [`BufferBudget`] for this batch.
    pub reserved_bytes: usize,
    /// Sequence number in creation order, for `flush`.
    pub sequence: u64,
    /// Producer id, epoch and base sequence in its header ([`ProducerState::NONE`] without
    /// idempotence); set when sealed.
    pub producer: ProducerState,
    /// Sent before without a clear outcome: it goes alone in its partition's next request, so
    /// the SPU, recognizing it as appended before, can answer with the offset it got then (a
    /// request of several batches has one base offset, which retried batches interleaved with
    /// other producers' may not share).
    pub retried: bool,
}

#[cfg(test)]
impl Batch {
    /// A batch of `values` (timestamp 1, no key), sequence 0, not idempotent: for tests.
    pub(crate) fn for_tests(values: &[&[u8]]) -> Batch {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder
                .push_record(TimestampMs(1), None, Some(value), &[])
                .expect("a test record fits");
        }
        Batch {
            builder,
            compressed: None,
            shared: Arc::new(BatchShared::new(0)),
            callbacks: Vec::new(),
            created: Instant::now(),
            reserved_bytes: 0,
            sequence: 0,
            producer: ProducerState::NONE,
            retried: false,
        }
    }
}

impl Batch {
    /// Writes producer id, epoch and base sequence into the batch (its header and CRC are
    /// rewritten when it is sent; a compressed batch is patched now).
    pub(crate) fn set_producer(&mut self, producer: ProducerState) {
        self.producer = producer;
        self.builder.set_producer(producer);
        if let Some(compressed) = &mut self.compressed {
            set_producer_state(compressed, producer);
        }
    }

    /// The bytes to send: header and (possibly compressed) records, CRC written.
    pub(crate) fn wire_bytes(&mut self) -> &[u8] {
        match &self.compressed {
            Some(compressed) => compressed,
            None => self.builder.finish(),
        }
    }

    pub(crate) fn wire_len(&self) -> usize {
        self.compressed.as_ref().map_or(self.builder.encoded_len(), Vec::len)
    }

    pub(crate) fn record_count(&self) -> i32 {
        self.builder.record_count()
    }

    /// Compresses the records once, when the batch stops growing. A codec failure sends the
    /// batch uncompressed rather than losing it.
    pub(crate) fn seal(&mut self, compression: Compression) {
        if compression == Compression::None || self.builder.is_empty() {
            return;
        }
        let mut scratch = Vec::new();
        match self.builder.finish_compressed(compression, &mut scratch) {
            Ok(_) => self.compressed = Some(scratch),
            Err(error) => tracing::warn!(%error, "compression failed; sending uncompressed"),
        }
    }
}

/// A partition's idempotence state on the producer side: the epoch and sequence numbers its
/// batches get, and what the SPU acknowledged.
///
/// Invariants: sealed batches carry consecutive sequences of `epoch` in queue order (a
/// retried batch goes back in order); `acked_next` is the sequence after the last batch of
/// the contiguous acknowledged prefix, also when answers come out of order (a retried batch
/// refused while a later one is acknowledged as a duplicate: the later one waits in
/// `acked_ahead` until the prefix reaches it). A batch at the front of the queue whose sequence is
/// not `acked_next`, once nothing is in flight, means a batch before it failed for good:
/// the SPU would refuse the rest as out of order forever, so the partition starts a new
/// epoch and renumbers its batches from 0 ([`PartitionQueue::start_new_epoch`]); so does an
/// "unknown producer" answer.
#[derive(Debug, Default)]
pub(crate) struct Sequencing {
    pub epoch: i16,
    /// Base sequence of the next batch sealed.
    pub next: i32,
    /// Sequence after the contiguous acknowledged prefix.
    pub acked_next: i32,
    /// Acknowledged batches past a gap in the prefix, as (base sequence, sequence after).
    pub acked_ahead: Vec<(i32, i32)>,
    /// Start a new epoch before sending again (once nothing is in flight).
    pub new_epoch_needed: bool,
}

/// The batches of one partition.
#[derive(Default)]
pub(crate) struct PartitionQueue {
    /// The batch records are appended to.
    pub open: Option<Batch>,
    /// Sealed batches, oldest first.
    pub sealed: VecDeque<Batch>,
    /// Produce requests for this partition awaiting their response (at most
    /// [`crate::ProducerConfig::max_in_flight`]).
    pub in_flight: usize,
    /// Batches in those requests: a producer keeps at most
    /// [`IDEMPOTENT_BATCHES_REMEMBERED`] of them, so a leader knows the offset of any it
    /// retries.
    ///
    /// [`IDEMPOTENT_BATCHES_REMEMBERED`]: sluice_proto::api::produce::IDEMPOTENT_BATCHES_REMEMBERED
    pub batches_in_flight: usize,
    /// No request before this instant (backoff after a retriable error).
    pub retry_at: Option<Instant>,
    /// The last retriable error of this partition, reported if its batches time out.
    pub last_error: Option<ClientError>,
    /// Epoch and sequences (used with idempotence only).
    pub sequencing: Sequencing,
}

impl PartitionQueue {
    /// Moves the open batch, if any, to the sealed queue, giving it the partition's next
    /// sequence when `limits.producer` is set. Returns whether one moved.
    pub(crate) fn seal_open(&mut self, limits: BatchLimits) -> bool {
        match self.open.take() {
            Some(mut batch) => {
                let producer = match limits.producer {
                    Some(producer_id) => {
                        let base_sequence = self.sequencing.next;
                        self.sequencing.next = sequence_after(base_sequence, batch.record_count());
                        ProducerState {
                            producer_id,
                            producer_epoch: self.sequencing.epoch,
                            base_sequence,
                        }
                    }
                    None => ProducerState::NONE,
                };
                // Before compressing: the compressed batch's header is written from it.
                batch.set_producer(producer);
                batch.seal(limits.compression);
                self.sealed.push_back(batch);
                true
            }
            None => false,
        }
    }

    /// Whether the partition must start a new epoch before it sends: asked for, or a gap
    /// between the acknowledged prefix and the front batch (a batch before it failed for
    /// good). Only meaningful with nothing in flight.
    pub(crate) fn needs_new_epoch(&self) -> bool {
        let Some(front) = self.sealed.front() else {
            return false;
        };
        front.producer.is_idempotent()
            && (self.sequencing.new_epoch_needed
                || front.producer.producer_epoch != self.sequencing.epoch
                || front.producer.base_sequence != self.sequencing.acked_next)
    }

    /// Starts a new epoch: renumbers the sealed batches from sequence 0 in queue order. Call
    /// only with nothing in flight (answers of the old epoch would otherwise still arrive).
    pub(crate) fn start_new_epoch(&mut self) {
        let sequencing = &mut self.sequencing;
        // Epochs stay non-negative: -1 means "no idempotence" on the wire.
        sequencing.epoch = if sequencing.epoch == i16::MAX { 0 } else { sequencing.epoch + 1 };
        sequencing.new_epoch_needed = false;
        sequencing.acked_next = 0;
        sequencing.acked_ahead.clear();
        let mut next = 0;
        for batch in &mut self.sealed {
            let producer = ProducerState {
                producer_id: batch.producer.producer_id,
                producer_epoch: sequencing.epoch,
                base_sequence: next,
            };
            next = sequence_after(next, batch.record_count());
            batch.set_producer(producer);
        }
        sequencing.next = next;
    }

    /// Notes an acknowledged batch (or one the SPU had appended before): the acknowledged
    /// prefix grows when it is the next one.
    pub(crate) fn acknowledged(&mut self, producer: ProducerState, record_count: i32) {
        let sequencing = &mut self.sequencing;
        if !producer.is_idempotent() || producer.producer_epoch != sequencing.epoch {
            return;
        }
        let after = sequence_after(producer.base_sequence, record_count);
        if producer.base_sequence != sequencing.acked_next {
            // Acknowledged before a batch in front of it (which is being retried): counted
            // once the prefix reaches it, so that it is not taken for a gap.
            if sequencing.acked_ahead.len() >= ACKED_AHEAD_MAX {
                sequencing.acked_ahead.remove(0);
            }
            sequencing.acked_ahead.push((producer.base_sequence, after));
            return;
        }
        sequencing.acked_next = after;
        while let Some(index) =
            sequencing.acked_ahead.iter().position(|(base, _)| *base == sequencing.acked_next)
        {
            sequencing.acked_next = sequencing.acked_ahead.swap_remove(index).1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_none() && self.sealed.is_empty() && self.in_flight == 0
    }

    /// Copies a record into the open batch. The open batch is sealed first when the record
    /// would take it past `batch_bytes` (a record larger than that gets a batch of its own),
    /// and sealed after when it reached `batch_bytes`. `new_batch` makes the batch when none
    /// is open. On failure the queue is as before, and a batch made for this record (empty)
    /// is handed back for the caller to discard. `handle` makes what the caller keeps of the
    /// batch (a delivery future needs its shared state; a callback or tag needs nothing, and
    /// cloning an `Arc` per record costs an atomic on a line the sender thread also touches).
    pub(crate) fn append<H>(
        &mut self,
        record: Appending<'_>,
        limits: BatchLimits,
        new_batch: impl FnOnce() -> Batch,
        handle: impl FnOnce(&Arc<BatchShared>) -> H,
    ) -> Result<Appended<H>, Box<AppendFailure>> {
        let mut sealed = false;
        if let Some(open) = &self.open {
            let size = open.builder.record_encoded_len(
                record.timestamp,
                record.key,
                record.value,
                record.headers,
            );
            if !open.builder.is_empty() && open.builder.encoded_len() + size > limits.batch_bytes {
                sealed = self.seal_open(limits);
            }
        }
        let created = self.open.is_none();
        let open = self.open.get_or_insert_with(new_batch);
        let index = u32::try_from(open.builder.record_count()).unwrap_or(u32::MAX);
        if let Err(error) =
            open.builder.push_record(record.timestamp, record.key, record.value, record.headers)
        {
            let discarded = if created { self.open.take() } else { None };
            return Err(Box::new(AppendFailure { error, discarded }));
        }
        open.reserved_bytes += record.reserved_bytes;
        if let Some(notify) = record.notify {
            open.callbacks.push(PendingCallback {
                index,
                timestamp: record.timestamp.get(),
                notify,
            });
        }
        let batch = handle(&open.shared);
        if open.builder.encoded_len() >= limits.batch_bytes {
            sealed |= self.seal_open(limits);
        }
        Ok(Appended { batch, index, created, sealed })
    }
}

/// A record on its way into a batch.
pub(crate) struct Appending<'a> {
    pub timestamp: TimestampMs,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
    /// Bytes charged to the buffer budget for it.
    pub reserved_bytes: usize,
    pub notify: Option<Notify>,
}

/// Why a record was not appended, with the empty batch made for it (if any).
pub(crate) struct AppendFailure {
    pub error: BatchError,
    pub discarded: Option<Batch>,
}

/// Batch size, codec, and the producer id when idempotent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchLimits {
    pub batch_bytes: usize,
    pub compression: Compression,
    pub producer: Option<ProducerId>,
}

/// Where [`PartitionQueue::append`] put a record.
pub(crate) struct Appended<H> {
    /// What the caller keeps of the batch.
    pub batch: H,
    /// Its index within the batch.
    pub index: u32,
    /// Whether a batch was opened for it (the sender must learn its linger deadline).
    pub created: bool,
    /// Whether a batch was sealed (ready to send).
    pub sealed: bool,
}

/// The partition queues of one topic.
pub(crate) struct TopicQueues {
    pub name: TopicName,
    pub partitions: Vec<Arc<Mutex<PartitionQueue>>>,
    pub sticky: StickyPartition,
}

impl TopicQueues {
    pub(crate) fn new(name: TopicName, partition_count: u32, sticky_start: u32) -> TopicQueues {
        TopicQueues {
            name,
            partitions: (0..partition_count).map(|_| Arc::default()).collect(),
            sticky: StickyPartition::new(sticky_start),
        }
    }

    /// The same queues plus new ones up to `partition_count` (partitions only grow).
    pub(crate) fn grown(&self, partition_count: u32) -> TopicQueues {
        let mut partitions = self.partitions.clone();
        partitions.resize_with(partition_count as usize, Arc::default);
        let sticky = StickyPartition::new(self.sticky.current(self.partition_count()));
        TopicQueues { name: self.name.clone(), partitions, sticky }
    }

    pub(crate) fn partition_count(&self) -> u32 {
        u32::try_from(self.partitions.len()).unwrap_or(u32::MAX)
    }
}

/// Locks a partition queue, surviving a poisoned lock (a panicking user callback elsewhere
/// must not wedge the producer).
pub(crate) fn lock_queue(queue: &Mutex<PartitionQueue>) -> MutexGuard<'_, PartitionQueue> {
    queue.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Upper bound of the bytes a record adds to a batch.
pub(crate) fn record_bytes_max(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
) -> usize {
    let headers_bytes: usize = headers
        .iter()
        .map(|(key, value)| key.len() + value.len() + HEADER_OVERHEAD_BYTES_MAX)
        .sum();
    RECORD_OVERHEAD_BYTES_MAX
        + key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len)
        + headers_bytes
}

/// Bytes of records buffered or in flight, bounded by `buffer_bytes_max`.
pub(crate) struct BufferBudget {
    used_bytes: Mutex<usize>,
    freed: Condvar,
    max_bytes: usize,
}

impl BufferBudget {
    pub(crate) fn new(max_bytes: usize) -> BufferBudget {
        BufferBudget { used_bytes: Mutex::new(0), freed: Condvar::new(), max_bytes }
    }

    /// Charges `bytes`, waiting up to `timeout` for space (back-pressure).
    pub(crate) fn reserve(&self, bytes: usize, timeout: Duration) -> Result<(), ClientError> {
        if bytes > self.max_bytes {
            return Err(ClientError::RecordTooLarge {
                size_bytes: bytes,
                max_bytes: self.max_bytes,
            });
        }
        let mut used = self.used_bytes.lock().unwrap_or_else(|poison| poison.into_inner());
        // The clock is read only when there is no room (a read per record showed in profiles).
        let mut deadline = None;
        while *used + bytes > self.max_bytes {
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(ClientError::Timeout {
                    operation: "waiting for producer buffer space (buffer_bytes_max)",
                    after: timeout,
                });
            };
            used =
                self.freed.wait_timeout(used, left).unwrap_or_else(|poison| poison.into_inner()).0;
        }
        *used += bytes;
        Ok(())
    }

    pub(crate) fn release(&self, bytes: usize) {
        let mut used = self.used_bytes.lock().unwrap_or_else(|poison| poison.into_inner());
        *used = used.saturating_sub(bytes);
        drop(used);
        self.freed.notify_all();
    }

    #[cfg(test)]
    pub(crate) fn used_bytes(&self) -> usize {
        *self.used_bytes.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Batch builders kept for reuse.
pub(crate) struct BuilderPool {
    builders: Mutex<Vec<BatchBuilder>>,
    batch_bytes: usize,
}

impl BuilderPool {
    pub(crate) fn new(batch_bytes: usize) -> BuilderPool {
        BuilderPool { builders: Mutex::new(Vec::new()), batch_bytes }
    }

    /// An empty builder with room for one batch.
    pub(crate) fn take(&self) -> BatchBuilder {
        let reused = self.builders.lock().unwrap_or_else(|poison| poison.into_inner()).pop();
        reused.unwrap_or_else(|| BatchBuilder::with_capacity(self.batch_bytes + BATCH_HEADER_LEN))
    }

    /// Returns a builder; oversized ones (a huge record made them grow) are dropped so the
    /// pool stays near `batch_bytes` per builder.
    pub(crate) fn give_back(&self, mut builder: BatchBuilder) {
        if builder.capacity() > self.batch_bytes.saturating_mul(2) + BATCH_HEADER_LEN {
            return;
        }
        builder.clear();
        let mut builders = self.builders.lock().unwrap_or_else(|poison| poison.into_inner());
        if builders.len() < BUILDER_POOL_MAX {
            builders.push(builder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::ids::TimestampMs;
    use sluice_proto::record::{Header, RecordBatch};

    #[test]
    fn record_bound_covers_the_encoded_size() {
        let headers = [("trace", &b"abc"[..]), ("", &b""[..])];
        let proto_headers: Vec<Header<'_>> =
            headers.iter().map(|(key, value)| Header { key, value: Some(value) }).collect();
        let mut builder = BatchBuilder::new();
        for (key, value) in [(None, None), (Some(&b"k"[..]), Some(&[9u8; 300][..]))] {
            let exact =
                builder.record_encoded_len(TimestampMs(i64::MAX), key, value, &proto_headers);
            assert!(exact <= record_bytes_max(key, value, &headers), "{exact}");
            builder.push_record(TimestampMs(1), key, value, &proto_headers).unwrap();
        }
    }

    #[test]
    fn budget_blocks_until_released_and_times_out() {
        let budget = Arc::new(BufferBudget::new(100));
        budget.reserve(80, Duration::from_secs(1)).unwrap();
        let error = budget.reserve(30, Duration::from_millis(20)).unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
        assert!(matches!(
            budget.reserve(101, Duration::ZERO),
            Err(ClientError::RecordTooLarge { size_bytes: 101, max_bytes: 100 })
        ));
        let waiter = std::thread::spawn({
            let budget = Arc::clone(&budget);
            move || budget.reserve(30, Duration::from_secs(30))
        });
        budget.release(80);
        waiter.join().unwrap().unwrap();
        assert_eq!(budget.used_bytes(), 30);
    }

    #[test]
    fn sealing_compresses_once_and_keeps_order() {
        let lz4 =
            BatchLimits { batch_bytes: 1 << 20, compression: Compression::Lz4, producer: None };
        let mut queue = PartitionQueue::default();
        for round in 0..2u8 {
            let mut builder = BatchBuilder::new();
            builder.push_record(TimestampMs(1), None, Some(&[round; 500]), &[]).unwrap();
            queue.open = Some(Batch {
                builder,
                compressed: None,
                shared: Arc::new(BatchShared::new(0)),
                callbacks: Vec::new(),
                created: Instant::now(),
                reserved_bytes: 0,
                sequence: u64::from(round),
                producer: ProducerState::NONE,
                retried: false,
            });
            assert!(queue.seal_open(lz4));
        }
        assert!(!queue.seal_open(lz4));
        assert_eq!(queue.sealed.len(), 2);
        let mut first = queue.sealed.pop_front().unwrap();
        assert_eq!(first.sequence, 0);
        assert!(first.wire_len() < 200);
        let batch = RecordBatch::parse(first.wire_bytes(), 1 << 20).unwrap();
        assert_eq!(batch.compression().unwrap(), Compression::Lz4);
    }

    fn empty_batch() -> Batch {
        Batch::for_tests(&[])
    }

    fn appending(value: &[u8]) -> Appending<'_> {
        Appending {
            timestamp: TimestampMs(1),
            key: None,
            value: Some(value),
            headers: &[],
            reserved_bytes: value.len(),
            notify: None,
        }
    }

    #[test]
    fn append_fills_batches_up_to_the_size_and_seals_them() {
        let limits =
            BatchLimits { batch_bytes: 210, compression: Compression::None, producer: None };
        let mut queue = PartitionQueue::default();
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            let appended =
                queue.append(appending(&[1; 40]), limits, empty_batch, Arc::clone).ok().unwrap();
            outcomes.push((appended.index, appended.created, appended.sealed));
        }
        // 61 header bytes + 3 records of 47 bytes fit in 210; the fourth opens a new batch.
        assert_eq!(
            outcomes,
            [
                (0, true, false),
                (1, false, false),
                (2, false, false),
                (0, true, true),
                (1, false, false)
            ]
        );
        assert_eq!(queue.sealed.len(), 1);
        assert_eq!(queue.sealed[0].record_count(), 3);
        assert_eq!(queue.sealed[0].reserved_bytes, 120);
        // A record larger than the batch size: the open batch is sealed, the big record gets a
        // batch of its own, sealed at once.
        let appended =
            queue.append(appending(&[2; 500]), limits, empty_batch, Arc::clone).ok().unwrap();
        assert!(appended.created && appended.sealed);
        assert_eq!(appended.index, 0);
        assert!(queue.open.is_none());
        let counts: Vec<i32> = queue.sealed.iter().map(Batch::record_count).collect();
        assert_eq!(counts, [3, 2, 1]);
    }

    #[test]
    fn a_record_that_cannot_be_written_leaves_no_empty_batch() {
        let limits =
            BatchLimits { batch_bytes: 1 << 20, compression: Compression::None, producer: None };
        let mut queue = PartitionQueue::default();
        queue.append(appending(b"first"), limits, empty_batch, Arc::clone).ok().unwrap();
        // A timestamp delta that overflows i64 cannot be written into this batch.
        let overflow = Appending { timestamp: TimestampMs(i64::MIN), ..appending(b"x") };
        let failure = queue.append(overflow, limits, empty_batch, Arc::clone).err().unwrap();
        assert!(failure.discarded.is_none());
        assert_eq!(queue.open.as_ref().unwrap().record_count(), 1);
        // Failing on a batch made for the record hands it back instead of leaving it empty.
        let mut fresh = PartitionQueue::default();
        let far = Appending { timestamp: TimestampMs(i64::MIN), ..appending(b"x") };
        let mut first = empty_batch();
        first.builder.push_record(TimestampMs(i64::MAX), None, None, &[]).unwrap();
        fresh.sealed.push_back(first);
        assert!(
            fresh.append(far, limits, empty_batch, Arc::clone).is_ok(),
            "a new batch takes any timestamp"
        );
        let overflow = Appending { timestamp: TimestampMs(i64::MAX), ..appending(b"y") };
        let failure = fresh.append(overflow, limits, empty_batch, Arc::clone).err().unwrap();
        assert!(failure.discarded.is_none(), "the open batch already had a record");
    }

    #[test]
    fn sealed_batches_get_consecutive_sequences_and_a_new_epoch_renumbers_them() {
        let limits = BatchLimits {
            batch_bytes: 1 << 20,
            compression: Compression::None,
            producer: Some(ProducerId(42)),
        };
        let mut queue = PartitionQueue::default();
        for records in [3, 2, 4] {
            for _ in 0..records {
                queue.append(appending(b"v"), limits, empty_batch, Arc::clone).ok().unwrap();
            }
            assert!(queue.seal_open(limits));
        }
        let states = |queue: &mut PartitionQueue| -> Vec<(i16, i32)> {
            queue
                .sealed
                .iter_mut()
                .map(|batch| {
                    let header = *RecordBatch::parse(batch.wire_bytes(), 1 << 20).unwrap().header();
                    assert_eq!(header.producer_id, ProducerId(42));
                    (header.producer_epoch, header.base_sequence)
                })
                .collect()
        };
        assert_eq!(states(&mut queue), [(0, 0), (0, 3), (0, 5)]);
        assert!(!queue.needs_new_epoch());
        // The first batch is acknowledged; the second failed for good: a gap before the third.
        let first = queue.sealed.pop_front().unwrap();
        queue.acknowledged(first.producer, first.record_count());
        assert_eq!(queue.sequencing.acked_next, 3);
        assert!(!queue.needs_new_epoch());
        queue.sealed.pop_front();
        assert!(queue.needs_new_epoch());
        queue.start_new_epoch();
        assert_eq!(states(&mut queue), [(1, 0)]);
        assert!(!queue.needs_new_epoch());
        // An acknowledgement of another epoch or out of line does not move the prefix.
        queue.acknowledged(first.producer, first.record_count());
        assert_eq!(queue.sequencing.acked_next, 0);
        // Asked for explicitly (an unknown producer answer), and kept valid when compressed.
        let lz4 = BatchLimits { compression: Compression::Lz4, ..limits };
        queue.append(appending(&[5; 600]), lz4, empty_batch, Arc::clone).ok().unwrap();
        assert!(queue.seal_open(lz4));
        assert_eq!(states(&mut queue), [(1, 0), (1, 4)]);
        queue.sequencing.new_epoch_needed = true;
        assert!(queue.needs_new_epoch());
        queue.start_new_epoch();
        assert_eq!(states(&mut queue), [(2, 0), (2, 4)]);
        assert_eq!(queue.sequencing.next, 5);
        let compressed = queue.sealed[1].wire_bytes();
        sluice_proto::record::validate_batch(compressed, 1 << 20).expect("CRC rewritten");
    }

    #[test]
    fn acknowledgements_out_of_order_are_no_gap() {
        let limits = BatchLimits {
            batch_bytes: 1 << 20,
            compression: Compression::None,
            producer: Some(ProducerId(7)),
        };
        let mut queue = PartitionQueue::default();
        for _ in 0..4 {
            queue.append(appending(b"v"), limits, empty_batch, Arc::clone).ok().unwrap();
            assert!(queue.seal_open(limits));
        }
        let batches: Vec<Batch> = queue.sealed.drain(..).collect();
        // The second and fourth batches are acknowledged (duplicates of appended batches)
        // while the first is refused and goes back to be retried.
        queue.acknowledged(batches[1].producer, 1);
        queue.acknowledged(batches[3].producer, 1);
        assert_eq!(queue.sequencing.acked_next, 0);
        let mut batches = batches.into_iter();
        let first = batches.next().unwrap();
        let third = batches.nth(1).unwrap();
        queue.sealed.push_back(first);
        assert!(!queue.needs_new_epoch(), "the front batch is the prefix's next");
        let first = queue.sealed.pop_front().unwrap();
        queue.acknowledged(first.producer, 1);
        assert_eq!(queue.sequencing.acked_next, 2, "the second was acknowledged already");
        queue.sealed.push_back(third);
        assert!(!queue.needs_new_epoch());
        let third = queue.sealed.pop_front().unwrap();
        queue.acknowledged(third.producer, 1);
        assert_eq!(queue.sequencing.acked_next, 4);
        assert!(queue.sequencing.acked_ahead.is_empty());
    }

    #[test]
    fn pool_reuses_and_drops_oversized_builders() {
        let pool = BuilderPool::new(1024);
        let mut builder = pool.take();
        builder.push_record(TimestampMs(1), None, Some(b"x"), &[]).unwrap();
        pool.give_back(builder);
        let reused = pool.take();
        assert!(reused.is_empty());
        let mut huge = BatchBuilder::new();
        huge.push_record(TimestampMs(1), None, Some(&[0; 10_000]), &[]).unwrap();
        pool.give_back(huge);
        pool.give_back(reused);
        assert_eq!(pool.builders.lock().unwrap().len(), 1);
    }
}
