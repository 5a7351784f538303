//! Watches: Consul blocking queries on a key or a prefix, reporting only real changes.
//!
//! Each [`KeyWatch::poll`] / [`PrefixWatch::poll`] makes one blocking query and returns
//! `Ok(None)` when nothing the watch covers changed (the wait expired, or Consul woke the
//! query for an unrelated write), or the change since the last result.
//!
//! Consul's rules for blocking queries are followed by [`BlockingLoop`]:
//! - an index that goes backwards (the cluster lost its state, e.g. a restarted `-dev` agent)
//!   resets the watch to index 0, whose query answers at once with the current state;
//! - an index below 1 is treated as 1 (index 0 would never block);
//! - after a failed query the next one does not block (index 0): the failure may have been a
//!   restart that lost the cluster's state, and a fresh agent would otherwise hold a query on
//!   an index from its past for the whole wait before answering with its smaller index;
//! - the client timeout is the wait plus Consul's wait/16 jitter plus the request timeout;
//! - requests are at least [`WatchOptions::request_interval_min`] apart, and after errors back
//!   off exponentially up to [`WatchOptions::error_backoff_max`], so a loop never spins.
//!
//! Failure modes: while the agent is unreachable each poll returns the transport error
//! (retriable) after at most the backoff; the watch keeps its last state and resumes when the
//! agent answers again. A watch is owned by one thread; [`spawn_watch`] runs one on its own
//! thread and delivers changes over a bounded channel.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::client::{Blocking, ConsulClient, BLOCKING_WAIT_MAX};
use crate::error::ConsulError;
use crate::types::{ConsulIndex, Indexed, KvEntry};

/// Timing of a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Longest time one blocking query waits for a change (capped at Consul's 10 minutes).
    pub wait: Duration,
    /// Least time between the starts of two consecutive queries.
    pub request_interval_min: Duration,
    /// First pause after a failed query; doubles per consecutive failure.
    pub error_backoff_initial: Duration,
    /// Longest pause after failed queries.
    pub error_backoff_max: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(60),
            request_interval_min: Duration::from_millis(50),
            error_backoff_initial: Duration::from_millis(100),
            error_backoff_max: Duration::from_secs(5),
        }
    }
}

impl WatchOptions {
    /// Default options with the given wait.
    pub fn with_wait(wait: Duration) -> Self {
        Self { wait, ..Self::default() }
    }
}

/// Index bookkeeping and rate limiting shared by every kind of watch.
#[derive(Debug, Clone)]
pub struct BlockingLoop {
    options: WatchOptions,
    index: ConsulIndex,
    last_request_start: Option<Instant>,
    failures_consecutive: u32,
    /// The next query re-reads the state without blocking (set after a failure).
    resync: bool,
}

impl BlockingLoop {
    /// A loop starting at index 0 (the first query answers at once).
    pub fn new(options: WatchOptions) -> Self {
        Self {
            options,
            index: ConsulIndex::new(0),
            last_request_start: None,
            failures_consecutive: 0,
            resync: false,
        }
    }

    /// The index the next query blocks on.
    pub fn index(&self) -> ConsulIndex {
        self.index
    }

    /// Sleeps until the next query is allowed, then returns its index and wait.
    pub(crate) fn begin(&mut self) -> Blocking {
        let pause = if self.failures_consecutive == 0 {
            self.options.request_interval_min
        } else {
            let doublings = (self.failures_consecutive - 1).min(16);
            (self.options.error_backoff_initial * 2u32.pow(doublings))
                .min(self.options.error_backoff_max)
        };
        if let Some(last) = self.last_request_start {
            let ready_at = last + pause;
            let now = Instant::now();
            if ready_at > now {
                std::thread::sleep(ready_at - now);
            }
        }
        self.last_request_start = Some(Instant::now());
        let index = if self.resync { ConsulIndex::new(0) } else { self.index };
        Blocking { index, wait: self.options.wait.min(BLOCKING_WAIT_MAX) }
    }

    /// Records a successful answer at `returned`; returns whether the index went backwards
    /// (the watch was reset).
    pub fn record_success(&mut self, returned: ConsulIndex) -> bool {
        self.failures_consecutive = 0;
        if std::mem::take(&mut self.resync) {
            let went_backwards = returned < self.index;
            self.index = returned.max(ConsulIndex::new(1));
            return went_backwards;
        }
        if returned < self.index {
            self.index = ConsulIndex::new(0);
            return true;
        }
        self.index = returned.max(ConsulIndex::new(1));
        false
    }

    /// Records a failed query (the next one backs off and re-reads without blocking).
    pub fn record_failure(&mut self) {
        self.failures_consecutive = self.failures_consecutive.saturating_add(1);
        self.resync = true;
    }

    /// Runs one query through the loop's rules.
    pub(crate) fn run<T>(
        &mut self,
        query: impl FnOnce(Blocking) -> Result<Indexed<T>, ConsulError>,
    ) -> Result<Indexed<T>, ConsulError> {
        let blocking = self.begin();
        match query(blocking) {
            Ok(answer) => {
                if self.record_success(answer.index) {
                    tracing::info!(previous = %blocking.index, returned = %answer.index, "Consul index went backwards; watch reset");
                }
                Ok(answer)
            }
            Err(error) => {
                self.record_failure();
                Err(error)
            }
        }
    }
}

/// A change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// Index of the answer that showed the change.
    pub index: ConsulIndex,
    /// The entry before (as last reported; `None` on the first poll or if the key was absent).
    pub previous: Option<KvEntry>,
    /// The entry now, `None` if the key does not exist (deleted).
    pub current: Option<KvEntry>,
}

/// Watches one key.
///
/// ```no_run
/// use std::time::Duration;
/// use sluice_kvstore_consul::{KeyWatch, WatchOptions};
/// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
/// let mut watch = KeyWatch::new(client, "sluice/epoch", WatchOptions::with_wait(Duration::from_secs(30)));
/// loop {
///     match watch.poll() {
///         Ok(Some(change)) => println!("now {:?}", change.current.map(|entry| entry.value)),
///         Ok(None) => {}                             // nothing changed during the wait
///         Err(error) if error.is_retriable() => {}   // agent unreachable: the watch backs off
///         Err(error) => return Err(error),
///     }
/// #   break;
/// }
/// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
/// ```
#[derive(Debug)]
pub struct KeyWatch {
    client: ConsulClient,
    key: String,
    blocking_loop: BlockingLoop,
    /// `None` until the first answer.
    last: Option<Option<KvEntry>>,
}

impl KeyWatch {
    /// A watch on `key`; the first poll reports the current state.
    pub fn new(client: ConsulClient, key: impl Into<String>, options: WatchOptions) -> Self {
        Self { client, key: key.into(), blocking_loop: BlockingLoop::new(options), last: None }
    }

    /// The watched key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The entry as last seen (`None` before the first answer or while the key is absent).
    pub fn current(&self) -> Option<&KvEntry> {
        self.last.as_ref().and_then(Option::as_ref)
    }

    /// A watch that continues from a state read earlier (e.g. by
    /// [`ConsulClient::kv_get_indexed`]): the first poll blocks on the snapshot's index and
    /// reports only changes after it.
    pub fn starting_from(
        client: ConsulClient,
        key: impl Into<String>,
        snapshot: Indexed<Option<KvEntry>>,
        options: WatchOptions,
    ) -> Self {
        let mut watch = Self::new(client, key, options);
        watch.blocking_loop.record_success(snapshot.index);
        watch.last = Some(snapshot.value);
        watch
    }

    /// The index the next query blocks on.
    pub fn index(&self) -> ConsulIndex {
        self.blocking_loop.index()
    }

    /// One blocking query: the change since the last reported state, or `None`.
    ///
    /// # Errors
    /// The query's error; the watch keeps its state and may be polled again.
    pub fn poll(&mut self) -> Result<Option<KeyChange>, ConsulError> {
        let client = &self.client;
        let key = &self.key;
        let answer = self.blocking_loop.run(|blocking| client.kv_get_at(key, Some(blocking)))?;
        let changed = match &self.last {
            None => true,
            Some(previous) => *previous != answer.value,
        };
        if !changed {
            return Ok(None);
        }
        let previous = self.last.replace(answer.value.clone()).flatten();
        Ok(Some(KeyChange { index: answer.index, previous, current: answer.value }))
    }
}

/// What changed under a prefix since the previous result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefixChange {
    /// Index of the answer that showed the change.
    pub index: ConsulIndex,
    /// Keys that appeared (all keys on the first poll).
    pub added: Vec<KvEntry>,
    /// Keys whose entry changed (value, flags, lock), with the new entry.
    pub modified: Vec<KvEntry>,
    /// Keys that disappeared, with their last known entry.
    pub deleted: Vec<KvEntry>,
}

impl PrefixChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }
}

/// Watches every key under a prefix and reports added, modified and deleted keys.
///
/// ```no_run
/// use sluice_kvstore_consul::{PrefixWatch, WatchOptions};
/// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
/// let mut watch = PrefixWatch::new(client, "sluice/topics/", WatchOptions::default());
/// if let Some(change) = watch.poll()? {
///     for entry in &change.added { println!("new topic {}", entry.key); }
///     for entry in &change.deleted { println!("removed topic {}", entry.key); }
/// }
/// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
/// ```
#[derive(Debug)]
pub struct PrefixWatch {
    client: ConsulClient,
    prefix: String,
    blocking_loop: BlockingLoop,
    entries: BTreeMap<String, KvEntry>,
    initialized: bool,
}

impl PrefixWatch {
    /// A watch on every key starting with `prefix`; the first poll reports all of them as
    /// added.
    pub fn new(client: ConsulClient, prefix: impl Into<String>, options: WatchOptions) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            blocking_loop: BlockingLoop::new(options),
            entries: BTreeMap::new(),
            initialized: false,
        }
    }

    /// A watch that continues from a state read earlier (e.g. by
    /// [`ConsulClient::kv_get_recursive`]): the first poll blocks on the snapshot's index and
    /// reports only changes after it.
    pub fn starting_from(
        client: ConsulClient,
        prefix: impl Into<String>,
        snapshot: Indexed<Vec<KvEntry>>,
        options: WatchOptions,
    ) -> Self {
        let mut watch = Self::new(client, prefix, options);
        watch.blocking_loop.record_success(snapshot.index);
        watch.entries =
            snapshot.value.into_iter().map(|entry| (entry.key.clone(), entry)).collect();
        watch.initialized = true;
        watch
    }

    /// The watched prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The entries as last seen, by key.
    pub fn entries(&self) -> &BTreeMap<String, KvEntry> {
        &self.entries
    }

    /// The index the next query blocks on.
    pub fn index(&self) -> ConsulIndex {
        self.blocking_loop.index()
    }

    /// One blocking query: the changes since the last result, or `None`.
    ///
    /// # Errors
    /// The query's error; the watch keeps its state and may be polled again.
    pub fn poll(&mut self) -> Result<Option<PrefixChange>, ConsulError> {
        let client = &self.client;
        let prefix = &self.prefix;
        let answer = self
            .blocking_loop
            .run(|blocking| client.kv_get_recursive_at(prefix, Some(blocking)))?;
        let mut current: BTreeMap<String, KvEntry> =
            answer.value.into_iter().map(|entry| (entry.key.clone(), entry)).collect();
        let mut change = PrefixChange { index: answer.index, ..PrefixChange::default() };
        for (key, entry) in &current {
            match self.entries.get(key) {
                None => change.added.push(entry.clone()),
                Some(previous) if previous != entry => change.modified.push(entry.clone()),
                Some(_) => {}
            }
        }
        let previous = std::mem::take(&mut self.entries);
        change.deleted = previous
            .into_iter()
            .filter(|(key, _)| !current.contains_key(key))
            .map(|(_, entry)| entry)
            .collect();
        std::mem::swap(&mut self.entries, &mut current);
        let first = !self.initialized;
        self.initialized = true;
        Ok((first || !change.is_empty()).then_some(change))
    }
}

/// Something that yields changes through blocking queries; implemented by every watch here.
pub trait Watch: Send + 'static {
    /// What a change looks like.
    type Change: Send + 'static;

    /// One blocking query (see [`KeyWatch::poll`]).
    ///
    /// # Errors
    /// The query's error.
    fn poll(&mut self) -> Result<Option<Self::Change>, ConsulError>;
}

impl Watch for KeyWatch {
    type Change = KeyChange;
    fn poll(&mut self) -> Result<Option<KeyChange>, ConsulError> {
        KeyWatch::poll(self)
    }
}

impl Watch for PrefixWatch {
    type Change = PrefixChange;
    fn poll(&mut self) -> Result<Option<PrefixChange>, ConsulError> {
        PrefixWatch::poll(self)
    }
}

/// A watch running on its own thread (see [`spawn_watch`]).
pub struct WatchThread<C> {
    events: Receiver<Result<C, ConsulError>>,
    stop: Arc<AtomicBool>,
}

impl<C> std::fmt::Debug for WatchThread<C> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("WatchThread").finish_non_exhaustive()
    }
}

impl<C> WatchThread<C> {
    /// Changes and errors, in order. Disconnected once the thread has exited.
    pub fn events(&self) -> &Receiver<Result<C, ConsulError>> {
        &self.events
    }

    /// Asks the thread to exit. It does so when its current query returns (at most the
    /// watch's wait plus timeout); no further events are delivered.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl<C> Drop for WatchThread<C> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `watch` on a new thread, delivering each change (and each error, after which the
/// watch backs off and continues) on a channel of `capacity` entries. A full channel makes the
/// thread wait for the consumer, so memory stays bounded.
///
/// # Errors
/// [`ConsulError::Config`] if the thread cannot be started.
pub fn spawn_watch<W: Watch>(
    mut watch: W,
    capacity: usize,
) -> Result<WatchThread<W::Change>, ConsulError> {
    let (sender, events) = crossbeam_channel::bounded(capacity.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("consul-watch".into())
        .spawn(move || {
            while !thread_stop.load(Ordering::Acquire) {
                let event = match watch.poll() {
                    Ok(None) => continue,
                    Ok(Some(change)) => Ok(change),
                    Err(error) => Err(error),
                };
                if thread_stop.load(Ordering::Acquire) || sender.send(event).is_err() {
                    return;
                }
            }
        })
        .map_err(|error| ConsulError::Config {
            reason: format!("cannot start a watch thread: {error}"),
        })?;
    Ok(WatchThread { events, stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        let mut blocking_loop = BlockingLoop::new(WatchOptions::default());
        assert!(!blocking_loop.record_success(ConsulIndex::new(0)));
        assert_eq!(blocking_loop.index(), ConsulIndex::new(1), "below 1 is treated as 1");
        assert!(!blocking_loop.record_success(ConsulIndex::new(40)));
        assert_eq!(blocking_loop.index(), ConsulIndex::new(40));
        assert!(blocking_loop.record_success(ConsulIndex::new(7)), "backwards resets");
        assert_eq!(blocking_loop.index(), ConsulIndex::new(0));
        assert!(!blocking_loop.record_success(ConsulIndex::new(7)));
        assert_eq!(blocking_loop.index(), ConsulIndex::new(7));
    }

    #[test]
    fn a_failure_makes_the_next_query_non_blocking() {
        let mut blocking_loop = BlockingLoop::new(WatchOptions {
            request_interval_min: Duration::ZERO,
            error_backoff_initial: Duration::ZERO,
            ..WatchOptions::default()
        });
        blocking_loop.record_success(ConsulIndex::new(50));
        assert_eq!(blocking_loop.begin().index, ConsulIndex::new(50));
        blocking_loop.record_failure();
        assert_eq!(blocking_loop.begin().index, ConsulIndex::new(0), "re-read after a failure");
        assert!(blocking_loop.record_success(ConsulIndex::new(9)), "a restarted agent");
        assert_eq!(blocking_loop.begin().index, ConsulIndex::new(9), "blocks again at once");
    }

    #[test]
    fn consecutive_requests_are_spaced() {
        let options = WatchOptions {
            request_interval_min: Duration::from_millis(30),
            ..WatchOptions::default()
        };
        let mut blocking_loop = BlockingLoop::new(options);
        let start = Instant::now();
        for _ in 0..4 {
            blocking_loop.begin();
        }
        assert!(start.elapsed() >= Duration::from_millis(90));
    }

    #[test]
    fn failures_back_off_to_the_maximum() {
        let options = WatchOptions {
            request_interval_min: Duration::ZERO,
            error_backoff_initial: Duration::from_millis(10),
            error_backoff_max: Duration::from_millis(25),
            ..WatchOptions::default()
        };
        let mut blocking_loop = BlockingLoop::new(options);
        blocking_loop.begin();
        let start = Instant::now();
        for _ in 0..3 {
            blocking_loop.record_failure();
            blocking_loop.begin();
        }
        // 10 + 20 + 25 (capped)
        assert!(start.elapsed() >= Duration::from_millis(55));
    }
}
