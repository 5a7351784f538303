//! Delivery results: one shared outcome per batch, read by a [`DeliveryFuture`] per record.
//!
//! Ownership: the producer's sender thread resolves a batch exactly once ([`BatchOutcome`] or
//! an error); every record's future holds an `Arc` of the batch's [`BatchShared`] (one
//! allocation per batch, none per record) plus its own index and timestamp. Futures are woken
//! from the sender thread, so they work in any async runtime; [`DeliveryFuture::wait`] blocks a
//! plain thread on a condition variable instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use sluice_proto::ids::Offset;

use crate::error::ClientError;

/// Where a record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: u32,
    /// The record's offset; `None` with `acks none` (no answer is awaited).
    pub offset: Option<Offset>,
    /// The record's timestamp (ms since the Unix epoch): its create time, or the log append
    /// time when the topic stamps that.
    pub timestamp: i64,
}

/// The outcome of a whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchOutcome {
    /// Offset of the batch's first record; `-1` when unknown (`acks none`).
    pub base_offset: i64,
    /// The append time the leader stamped, when the topic uses log append time.
    pub log_append_time: Option<i64>,
}

impl BatchOutcome {
    pub(crate) fn record(&self, partition: u32, index: u32, timestamp: i64) -> RecordMetadata {
        let offset = (self.base_offset >= 0).then(|| Offset(self.base_offset + i64::from(index)));
        RecordMetadata { partition, offset, timestamp: self.log_append_time.unwrap_or(timestamp) }
    }
}

struct BatchState {
    outcome: Option<Result<BatchOutcome, ClientError>>,
    wakers: Vec<Waker>,
}

/// The shared, resolve-once outcome of one batch.
pub(crate) struct BatchShared {
    partition: u32,
    state: Mutex<BatchState>,
    resolved: Condvar,
}

impl BatchShared {
    pub(crate) fn new(partition: u32) -> BatchShared {
        BatchShared {
            partition,
            state: Mutex::new(BatchState { outcome: None, wakers: Vec::new() }),
            resolved: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Sets the outcome (first call wins) and wakes every waiter.
    pub(crate) fn resolve(&self, outcome: Result<BatchOutcome, ClientError>) {
        let wakers = {
            let mut state = self.lock();
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        self.resolved.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    pub(crate) fn partition(&self) -> u32 {
        self.partition
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.lock().outcome.is_some()
    }

    fn record(
        &self,
        index: u32,
        timestamp: i64,
        outcome: &Result<BatchOutcome, ClientError>,
    ) -> Result<RecordMetadata, ClientError> {
        match outcome {
            Ok(batch) => Ok(batch.record(self.partition, index, timestamp)),
            Err(error) => Err(error.clone()),
        }
    }

    fn wait(&self, index: u32, timestamp: i64) -> Result<RecordMetadata, ClientError> {
        let mut state = self.lock();
        loop {
            if let Some(outcome) = &state.outcome {
                return self.record(index, timestamp, outcome);
            }
            state = self.resolved.wait(state).unwrap_or_else(|poison| poison.into_inner());
        }
    }

    fn poll(
        &self,
        index: u32,
        timestamp: i64,
        waker: &Waker,
    ) -> Poll<Result<RecordMetadata, ClientError>> {
        let mut state = self.lock();
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(self.record(index, timestamp, outcome));
        }
        if !state.wakers.iter().any(|known| known.will_wake(waker)) {
            state.wakers.push(waker.clone());
        }
        Poll::Pending
    }
}

/// The delivery result of one record: a [`Future`] for async code, [`DeliveryFuture::wait`]
/// for plain threads. Dropping it does not cancel the delivery.
///
/// ```no_run
/// # fn demo(producer: &sluice_client::Producer) -> Result<(), sluice_client::ClientError> {
/// use sluice_client::ProducerRecord;
/// let delivery = producer.send(&ProducerRecord::new("orders", b"hello"))?;
/// let metadata = delivery.wait()?; // or `delivery.await?` in an async fn
/// println!("written at offset {:?} of partition {}", metadata.offset, metadata.partition);
/// # Ok(()) }
/// ```
#[must_use = "a delivery result reports whether the record was written"]
pub struct DeliveryFuture {
    batch: Arc<BatchShared>,
    index: u32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub(crate) fn new(batch: Arc<BatchShared>, index: u32, timestamp: i64) -> DeliveryFuture {
        DeliveryFuture { batch, index, timestamp }
    }

    /// Blocks the calling thread until the record is acknowledged or has failed.
    pub fn wait(self) -> Result<RecordMetadata, ClientError> {
        self.batch.wait(self.index, self.timestamp)
    }

    /// Whether the outcome is known (then `wait` returns at once).
    pub fn is_done(&self) -> bool {
        self.batch.is_resolved()
    }

    /// The partition the record was put in.
    pub fn partition(&self) -> u32 {
        self.batch.partition
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        self.batch.poll(self.index, self.timestamp, context.waker())
    }
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DeliveryFuture")
            .field("partition", &self.batch.partition)
            .field("index", &self.index)
            .field("done", &self.is_done())
            .finish()
    }
}

/// A delivery callback, boxed.
pub(crate) type DeliveryCallback = Box<dyn FnOnce(Result<RecordMetadata, ClientError>) + Send>;

/// Receives the outcome of every record sent with [`Producer::send_tagged`], with the tag
/// given at send time: one listener per producer instead of one boxed callback per record,
/// so sending allocates nothing per record. Runs on the producer's sender thread: keep it
/// short.
///
/// [`Producer::send_tagged`]: crate::Producer::send_tagged
pub trait DeliveryListener: Send + Sync + 'static {
    /// Record `tag` was acknowledged (with its offset) or failed for good.
    fn delivered(&self, tag: u64, result: Result<RecordMetadata, ClientError>);

    /// The tagged records of one batch, in send order, all settled at once (acknowledged
    /// together, or failed with the same error). The sender calls this once per batch; the
    /// default calls [`DeliveryListener::delivered`] for each record. Override it to do
    /// per-batch work once (read a clock, take a lock) instead of per record. Records the
    /// listener leaves unread are dropped.
    fn delivered_batch(
        &self,
        records: &mut dyn Iterator<Item = (u64, Result<RecordMetadata, ClientError>)>,
    ) {
        for (tag, result) in records {
            self.delivered(tag, result);
        }
    }
}

/// How a record's outcome is reported besides the batch's futures.
pub(crate) enum Notify {
    /// A boxed callback ([`crate::Producer::send_with_callback`]).
    Callback(DeliveryCallback),
    /// The producer's [`DeliveryListener`], with this tag.
    Tag(u64),
}

/// A per-record notification waiting for its batch.
pub(crate) struct PendingCallback {
    pub index: u32,
    pub timestamp: i64,
    pub notify: Notify,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn futures_of_one_batch_share_its_outcome() {
        let batch = Arc::new(BatchShared::new(3));
        let mut first = DeliveryFuture::new(Arc::clone(&batch), 0, 1_000);
        let second = DeliveryFuture::new(Arc::clone(&batch), 1, 1_001);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut context = Context::from_waker(&waker);
        assert!(Pin::new(&mut first).poll(&mut context).is_pending());
        assert!(Pin::new(&mut first).poll(&mut context).is_pending()); // one waker kept
        let resolver = std::thread::spawn({
            let batch = Arc::clone(&batch);
            move || batch.resolve(Ok(BatchOutcome { base_offset: 40, log_append_time: None }))
        });
        let metadata = second.wait().unwrap();
        resolver.join().unwrap();
        assert_eq!(
            metadata,
            RecordMetadata { partition: 3, offset: Some(Offset(41)), timestamp: 1_001 }
        );
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        match Pin::new(&mut first).poll(&mut context) {
            Poll::Ready(Ok(metadata)) => assert_eq!(metadata.offset, Some(Offset(40))),
            other => panic!("expected ready, got {other:?}"),
        }
        // First resolution wins.
        batch.resolve(Err(ClientError::Closed));
        assert!(DeliveryFuture::new(batch, 2, 0).wait().is_ok());
    }

    #[test]
    fn unknown_offsets_and_append_time() {
        let unknown = BatchOutcome { base_offset: -1, log_append_time: None };
        assert_eq!(unknown.record(0, 5, 7).offset, None);
        let stamped = BatchOutcome { base_offset: 10, log_append_time: Some(99) };
        assert_eq!(
            stamped.record(1, 2, 7),
            RecordMetadata { partition: 1, offset: Some(Offset(12)), timestamp: 99 }
        );
        let batch = Arc::new(BatchShared::new(0));
        batch.resolve(Err(ClientError::server(
            sluice_proto::error_code::ErrorCode::MessageTooLarge,
        )));
        let error = DeliveryFuture::new(batch, 0, 0).wait().unwrap_err();
        assert!(!error.is_retriable());
    }
}
