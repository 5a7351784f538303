//! The producer: batching per partition, partitioners, compression, acks, retries, delivery
//! results, flush and back-pressure.
//!
//! Threads: `send` runs on the caller's thread and only copies the record into its partition's
//! open batch (after waiting for buffer space); one sender thread per producer seals lingered
//! batches, groups ready batches by leader core into produce requests, and handles responses
//! (resolving delivery futures, running callbacks, retrying). Responses are read by the
//! connection reader threads and handed to the sender thread over a channel.
//!
//! Delivery guarantees: at least once. A retriable error (not leader, timeout, dropped
//! connection, ...) puts the batches back at the front of their partition after
//! `retry_backoff`, until `delivery_timeout` after their creation, in send order. Up to
//! `max_in_flight` requests per partition are in flight on the partition's one connection.
//! With idempotence (the default with acks `leader` and `all`) every batch carries the
//! producer's id, its partition's epoch and its base sequence, and the SPU appends a
//! partition's batches only in sequence: a request failing alone cannot be overtaken by later
//! ones, and a retry of a batch whose answer was lost is not written again. When a batch fails
//! for good (or the SPU lost the producer's state: a new leader, a restart) the partition
//! starts a new epoch at sequence 0 once nothing is in flight; a batch whose outcome was
//! unknown at that point may then be written twice. Without idempotence, a request failing
//! alone may land after later ones, and a timeout or a dropped connection may write a record
//! twice.
//!
//! Dropping the last handle does not lose buffered records: the sender thread delivers them
//! (within `delivery_timeout`) and then exits. Call [`Producer::flush`] to wait for that.

mod accumulator;
mod delivery;
pub(crate) mod partitioner;
mod request;
mod sender;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use sluice_proto::api::produce::Acks;
use sluice_proto::ids::{ProducerId, TimestampMs};
use sluice_proto::object::TopicName;
use sluice_proto::record::{Header, ProducerState};

use crate::cluster::ClusterInner;
use crate::config::{Partitioner, ProducerConfig};
use crate::error::ClientError;
use accumulator::{
    lock_queue, record_bytes_max, Appending, Batch, BatchLimits, BufferBudget, BuilderPool,
    TopicQueues,
};
use delivery::{BatchShared, Notify};
pub use delivery::{DeliveryFuture, DeliveryListener, RecordMetadata};

/// Headers converted without allocating when a record has at most this many.
const HEADERS_ON_STACK: usize = 8;

/// One record to send. Borrowed: `send` copies it into a batch and returns.
///
/// ```
/// use sluice_client::ProducerRecord;
/// let headers = [("trace-id", &b"42"[..])];
/// let record = ProducerRecord::new("orders", b"{\"total\": 10}")
///     .with_key(b"customer-7")
///     .with_headers(&headers);
/// assert_eq!(record.partition, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
    /// The key (`None` is Kafka's null key).
    pub key: Option<&'a [u8]>,
    /// The value (`None` is Kafka's null value, a tombstone; `Some(b"")` is empty).
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Create time in ms since the Unix epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    /// A record with a value and nothing else.
    pub fn new(topic: &'a str, value: &'a [u8]) -> ProducerRecord<'a> {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value: Some(value),
            headers: &[],
            timestamp: None,
        }
    }

    /// The same record with a key.
    pub fn with_key(self, key: &'a [u8]) -> ProducerRecord<'a> {
        ProducerRecord { key: Some(key), ..self }
    }

    /// The same record for one partition.
    pub fn with_partition(self, partition: u32) -> ProducerRecord<'a> {
        ProducerRecord { partition: Some(partition), ..self }
    }

    /// The same record with headers.
    pub fn with_headers(self, headers: &'a [(&'a str, &'a [u8])]) -> ProducerRecord<'a> {
        ProducerRecord { headers, ..self }
    }

    /// The same record with a create time (ms since the Unix epoch).
    pub fn with_timestamp(self, timestamp: i64) -> ProducerRecord<'a> {
        ProducerRecord { timestamp: Some(timestamp), ..self }
    }
}

/// Where an appended record went (what its delivery future needs).
struct AppendedRecord<H> {
    batch: H,
    index: u32,
    timestamp: i64,
}

/// State shared by the producer handles and the sender thread.
pub(crate) struct ProducerShared {
    pub cluster: Arc<ClusterInner>,
    pub config: ProducerConfig,
    /// This producer's id in batch headers, when idempotent (random, 63 bits).
    pub producer_id: Option<ProducerId>,
    /// Receives the outcomes of [`Producer::send_tagged`].
    pub listener: Option<Arc<dyn DeliveryListener>>,
    pub topics: RwLock<HashMap<String, Arc<TopicQueues>>>,
    pub budget: BufferBudget,
    pub builders: BuilderPool,
    /// Wakes the sender thread (new batch with a linger deadline, sealed batch, flush, close).
    pub wake: Sender<()>,
    /// Number of `flush` calls waiting: while above zero, linger is skipped.
    pub flushing: AtomicUsize,
    /// Set when the last handle is dropped: the sender delivers what is left and exits.
    pub closing: AtomicBool,
    /// Set by the sender thread when it exits.
    pub stopped: AtomicBool,
    pub next_sequence: AtomicU64,
    /// Sequence numbers of batches not resolved yet, for `flush`.
    pub unresolved: Mutex<std::collections::BTreeSet<u64>>,
    pub resolved: Condvar,
}

impl ProducerShared {
    /// Gives `topic` queues for `count` partitions if it has fewer (never fewer than now);
    /// returns its queues, `None` for a topic this producer has not used.
    pub(crate) fn grow_topic(&self, topic: &str, count: u32) -> Option<Arc<TopicQueues>> {
        let mut topics = self.topics.write().unwrap_or_else(|poison| poison.into_inner());
        let queues = topics.get_mut(topic)?;
        if count > queues.partition_count() {
            *queues = Arc::new(queues.grown(count));
        }
        Some(Arc::clone(queues))
    }

    pub(crate) fn wake_sender(&self) {
        let _ignored = self.wake.try_send(());
    }

    pub(crate) fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            batch_bytes: self.config.batch_bytes,
            compression: self.config.compression,
            producer: self.producer_id,
        }
    }
}

/// Drops with the last [`Producer`] clone and tells the sender thread to finish.
struct ProducerHandle {
    shared: Arc<ProducerShared>,
}

impl Drop for ProducerHandle {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake_sender();
    }
}

/// Sends records; cheap to clone and safe to share between threads (`Send + Sync`).
///
/// ```no_run
/// use sluice_client::{ClientConfig, Cluster, ProducerConfig, ProducerRecord};
///
/// let cluster = Cluster::connect(ClientConfig::new("127.0.0.1:9003"))?;
/// let producer = cluster.producer(ProducerConfig::default())?;
/// for i in 0..1000u32 {
///     let key = i.to_be_bytes();
///     // Returns once the record is copied into a batch; the future resolves on the ack.
///     let _delivery = producer.send(&ProducerRecord::new("orders", b"hello").with_key(&key))?;
/// }
/// producer.flush()?; // every record above is acknowledged (or failed)
/// # Ok::<(), sluice_client::ClientError>(())
/// ```
#[derive(Clone)]
pub struct Producer {
    handle: Arc<ProducerHandle>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Producer").field("config", &self.handle.shared.config).finish()
    }
}

impl Producer {
    pub(crate) fn start(
        cluster: Arc<ClusterInner>,
        config: ProducerConfig,
        listener: Option<Arc<dyn DeliveryListener>>,
    ) -> Result<Producer, ClientError> {
        config.validate()?;
        let (wake, wake_receiver): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
        let idempotent = config.idempotence && config.acks != Acks::None;
        let producer_id = idempotent.then(random_producer_id);
        if let Some(producer_id) = producer_id {
            tracing::debug!(producer_id = producer_id.0, "idempotent producer");
        }
        let shared = Arc::new(ProducerShared {
            cluster,
            producer_id,
            budget: BufferBudget::new(config.buffer_bytes_max),
            builders: BuilderPool::new(config.batch_bytes),
            config,
            listener,
            topics: RwLock::new(HashMap::new()),
            wake,
            flushing: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            next_sequence: AtomicU64::new(0),
            unresolved: Mutex::new(std::collections::BTreeSet::new()),
            resolved: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sluice-producer".into())
            .spawn(move || sender::run(&thread_shared, &wake_receiver))
            .map_err(|error| ClientError::InvalidInput {
                what: "producer thread",
                reason: error.to_string(),
            })?;
        Ok(Producer { handle: Arc::new(ProducerHandle { shared }) })
    }

    /// Copies `record` into its partition's batch and returns its delivery result.
    ///
    /// Blocks while `buffer_bytes_max` bytes are buffered or in flight (back-pressure), at
    /// most `delivery_timeout`. Fails at once for an unknown topic or partition, a record
    /// larger than the buffer, or a closed producer.
    pub fn send(&self, record: &ProducerRecord<'_>) -> Result<DeliveryFuture, ClientError> {
        let appended = self.append(record, None, Arc::clone)?;
        Ok(DeliveryFuture::new(appended.batch, appended.index, appended.timestamp))
    }

    /// Like [`Producer::send`], but calls `callback` with the delivery result instead of
    /// returning a future. Callbacks run on the producer's sender thread: keep them short.
    pub fn send_with_callback(
        &self,
        record: &ProducerRecord<'_>,
        callback: impl FnOnce(Result<RecordMetadata, ClientError>) + Send + 'static,
    ) -> Result<(), ClientError> {
        self.append(record, Some(Notify::Callback(Box::new(callback))), |_| ()).map(|_| ())
    }

    /// Like [`Producer::send_with_callback`], but the outcome goes to the producer's
    /// [`DeliveryListener`] (see [`crate::Cluster::producer_with_listener`]) with `tag`:
    /// nothing is allocated per record. Fails with `InvalidInput` on a producer made
    /// without a listener.
    pub fn send_tagged(&self, record: &ProducerRecord<'_>, tag: u64) -> Result<(), ClientError> {
        if self.handle.shared.listener.is_none() {
            return Err(ClientError::InvalidInput {
                what: "send_tagged",
                reason: "this producer has no delivery listener: make it with \
                         Cluster::producer_with_listener"
                    .into(),
            });
        }
        self.append(record, Some(Notify::Tag(tag)), |_| ()).map(|_| ())
    }

    /// Sends every buffered record now (ignoring linger) and blocks until every record sent
    /// before this call is acknowledged or has failed (their futures and callbacks tell which).
    pub fn flush(&self) -> Result<(), ClientError> {
        let shared = &self.handle.shared;
        let target = shared.next_sequence.load(Ordering::Acquire);
        shared.flushing.fetch_add(1, Ordering::AcqRel);
        shared.wake_sender();
        let mut unresolved = shared.unresolved.lock().unwrap_or_else(|poison| poison.into_inner());
        let result = loop {
            if unresolved.first().is_none_or(|&oldest| oldest >= target) {
                break Ok(());
            }
            if shared.stopped.load(Ordering::Acquire) {
                break Err(ClientError::Closed);
            }
            unresolved = shared
                .resolved
                .wait_timeout(unresolved, crate::connection::SWEEP_INTERVAL)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        };
        drop(unresolved);
        shared.flushing.fetch_sub(1, Ordering::AcqRel);
        result
    }

    fn append<H>(
        &self,
        record: &ProducerRecord<'_>,
        notify: Option<Notify>,
        handle: impl FnOnce(&Arc<BatchShared>) -> H,
    ) -> Result<AppendedRecord<H>, ClientError> {
        let shared = &self.handle.shared;
        if shared.stopped.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let mut topic = self.topic_queues(record.topic)?;
        if record.partition.is_some_and(|partition| partition >= topic.partition_count()) {
            // The cluster's metadata may know partitions the sender has not added yet.
            topic = self.grow_to_metadata(record.topic, topic)?;
        }
        let (partition, sticky) = choose_partition(shared.config.partitioner, &topic, record)?;
        let bytes = record_bytes_max(record.key, record.value, record.headers);
        shared.budget.reserve(bytes, shared.config.delivery_timeout)?;
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let mut stack = [Header { key: "", value: None }; HEADERS_ON_STACK];
        let heap: Vec<Header<'_>>;
        let headers: &[Header<'_>] = if record.headers.len() <= HEADERS_ON_STACK {
            for (slot, (key, value)) in stack.iter_mut().zip(record.headers) {
                *slot = Header { key, value: Some(value) };
            }
            &stack[..record.headers.len()]
        } else {
            heap = record
                .headers
                .iter()
                .map(|(key, value)| Header { key, value: Some(value) })
                .collect();
            &heap
        };
        let appending = Appending {
            timestamp: TimestampMs(timestamp),
            key: record.key,
            value: record.value,
            headers,
            reserved_bytes: bytes,
            notify,
        };
        let limits = shared.batch_limits();
        let mut queue = lock_queue(&topic.partitions[partition as usize]);
        let appended = queue.append(appending, limits, || self.new_batch(partition), handle);
        drop(queue);
        let appended = match appended {
            Ok(appended) => appended,
            Err(failure) => {
                shared.budget.release(bytes);
                let reason = failure.error.to_string();
                if let Some(batch) = failure.discarded {
                    self.discard(batch);
                }
                return Err(ClientError::InvalidInput { what: "record", reason });
            }
        };
        if appended.sealed && sticky {
            topic.sticky.advance_from(partition, topic.partition_count());
        }
        if appended.created || appended.sealed {
            shared.wake_sender();
        }
        Ok(AppendedRecord { batch: appended.batch, index: appended.index, timestamp })
    }

    /// Forgets an empty batch that was never queued.
    fn discard(&self, batch: Batch) {
        let shared = &self.handle.shared;
        shared.builders.give_back(batch.builder);
        shared
            .unresolved
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&batch.sequence);
        shared.resolved.notify_all();
    }

    fn new_batch(&self, partition: u32) -> Batch {
        let shared = &self.handle.shared;
        let sequence = shared.next_sequence.fetch_add(1, Ordering::AcqRel);
        shared.unresolved.lock().unwrap_or_else(|poison| poison.into_inner()).insert(sequence);
        Batch {
            builder: shared.builders.take(),
            compressed: None,
            shared: Arc::new(BatchShared::new(partition)),
            callbacks: Vec::new(),
            created: Instant::now(),
            reserved_bytes: 0,
            sequence,
            producer: ProducerState::NONE,
            retried: false,
        }
    }

    /// `topic`'s queues grown to the partition count the cluster's metadata shows now (the
    /// sender grows them too, on its next pass: a record for a partition that a topic alter
    /// just added must not fail in between).
    fn grow_to_metadata(
        &self,
        topic: &str,
        queues: Arc<TopicQueues>,
    ) -> Result<Arc<TopicQueues>, ClientError> {
        let shared = &self.handle.shared;
        let count = shared.cluster.partition_count(topic)?;
        if count <= queues.partition_count() {
            return Ok(queues);
        }
        Ok(shared.grow_topic(topic, count).unwrap_or(queues))
    }

    /// The queues of `topic`, created from the cluster's metadata on first use.
    fn topic_queues(&self, topic: &str) -> Result<Arc<TopicQueues>, ClientError> {
        let shared = &self.handle.shared;
        if let Some(queues) =
            shared.topics.read().unwrap_or_else(|poison| poison.into_inner()).get(topic)
        {
            return Ok(Arc::clone(queues));
        }
        let name = TopicName::new(topic).map_err(|error| ClientError::InvalidInput {
            what: "topic name",
            reason: error.to_string(),
        })?;
        let partition_count = shared.cluster.partition_count(topic)?;
        let mut topics = shared.topics.write().unwrap_or_else(|poison| poison.into_inner());
        let sticky_start = rand_start(partition_count);
        let queues = topics
            .entry(topic.to_owned())
            .or_insert_with(|| Arc::new(TopicQueues::new(name, partition_count, sticky_start)));
        Ok(Arc::clone(queues))
    }
}

/// The partition for `record`, and whether the sticky partitioner chose it.
fn choose_partition(
    partitioner: Partitioner,
    topic: &TopicQueues,
    record: &ProducerRecord<'_>,
) -> Result<(u32, bool), ClientError> {
    let partition_count = topic.partition_count();
    if partition_count == 0 {
        return Err(ClientError::UnknownTopic { topic: record.topic.to_owned() });
    }
    match (record.partition, partitioner, record.key) {
        (Some(partition), _, _) if partition < partition_count => Ok((partition, false)),
        (Some(partition), _, _) => Err(ClientError::UnknownPartition {
            topic: record.topic.to_owned(),
            partition,
            partition_count,
        }),
        (None, Partitioner::Murmur2Key, Some(key)) => {
            Ok((partitioner::key_partition(key, partition_count), false))
        }
        (None, _, _) => Ok((topic.sticky.current(partition_count), true)),
    }
}

/// A start for the sticky partitioner that differs between producers, so that many keyless
/// producers do not all fill partition 0 first.
fn rand_start(partition_count: u32) -> u32 {
    let nanos =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
    if partition_count == 0 {
        0
    } else {
        (nanos ^ std::process::id()) % partition_count
    }
}

/// A producer id from the standard library's randomly keyed hasher (seeded from the OS per
/// thread), the clock and the process id: unique among producers in practice (63 random
/// bits), without a round trip to the cluster.
fn random_producer_id() -> ProducerId {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    ProducerId(i64::try_from(hasher.finish() >> 1).unwrap_or(0))
}

/// Now, in ms since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}
