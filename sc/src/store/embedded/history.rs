//! In-process watches of the embedded store: a bounded history of recent changes and one
//! forwarding thread per watch.
//!
//! The history holds every change with a version in `(floor, newest]`, densely (the store's
//! versions have no gaps). A watch from version `v` is served from the history when
//! `v >= floor`; otherwise it gets [`WatchEvent::Resync`] at once. Each watch's thread copies
//! matching events into its bounded channel with a blocking send, so a slow consumer only stalls
//! its own thread; if the history moves past that thread's position meanwhile, the consumer
//! gets a resync as its last event. Closing the hub ends every thread, which disconnects every
//! channel.
//!
//! A dropped receiver is noticed at the next event (the send fails), so a watch thread may
//! outlive its receiver until the next write or the store's close.

use crossbeam_channel::{Receiver, Sender};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::store::{ObjectKind, StoreError, Version, WatchEvent};

/// Most recent changes kept for watchers, by count.
pub const HISTORY_EVENTS_MAX: usize = 4096;
/// Most recent changes kept for watchers, by total value bytes (bounds memory when values are
/// large).
pub const HISTORY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Events copied out of the history per lock acquisition by a watch thread.
const FORWARD_BATCH_EVENTS_MAX: usize = 256;

struct HubState {
    /// Changes with versions `floor + 1 ..= floor + events.len()`.
    events: VecDeque<WatchEvent>,
    floor: Version,
    value_bytes: usize,
    events_max: usize,
    channel_events_max: usize,
    closed: bool,
}

/// The history and the condition variable watch threads wait on.
pub struct WatchHub {
    state: Mutex<HubState>,
    changed: Condvar,
}

enum Next {
    Events(Vec<WatchEvent>),
    Resync(Version),
    Closed,
}

impl WatchHub {
    /// A hub whose history starts after `revision` (changes before it are not replayable).
    /// Keeps at most `events_max` changes; each watch's channel holds `channel_events_max`.
    pub fn new(revision: Version, events_max: usize, channel_events_max: usize) -> WatchHub {
        WatchHub {
            state: Mutex::new(HubState {
                events: VecDeque::new(),
                floor: revision,
                value_bytes: 0,
                events_max,
                channel_events_max,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding this lock cannot leave the history inconsistent (each update is
        // one push or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a change. Versions must be published in order, one after the other.
    pub fn publish(&self, event: WatchEvent) {
        let mut state = self.lock();
        let expected = Version(state.floor.get() + state.events.len() as u64 + 1);
        assert_eq!(event.version(), Some(expected), "store versions are published densely");
        state.value_bytes += event_bytes(&event);
        state.events.push_back(event);
        while state.events.len() > state.events_max
            || (state.value_bytes > HISTORY_BYTES_MAX && state.events.len() > 1)
        {
            if let Some(evicted) = state.events.pop_front() {
                state.value_bytes -= event_bytes(&evicted);
                state.floor = Version(state.floor.get() + 1);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Ends every watch.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Starts a watch thread for `kinds` from `from`.
    pub fn subscribe(
        self: &Arc<Self>,
        kinds: &[ObjectKind],
        from: Version,
    ) -> Result<Receiver<WatchEvent>, StoreError> {
        let (sender, receiver) = crossbeam_channel::bounded(self.lock().channel_events_max);
        let hub = Arc::clone(self);
        let kinds = kinds.to_vec();
        std::thread::Builder::new()
            .name("sluice-store-watch".to_owned())
            .spawn(move || hub.forward(&kinds, from, &sender))
            .map_err(|source| StoreError::Io {
                operation: "spawn watch thread",
                path: Default::default(),
                source,
            })?;
        Ok(receiver)
    }

    fn forward(&self, kinds: &[ObjectKind], from: Version, sender: &Sender<WatchEvent>) {
        let mut position = from;
        loop {
            match self.next_after(position) {
                Next::Closed => return,
                Next::Resync(oldest_version) => {
                    let _ = sender.send(WatchEvent::Resync { oldest_version });
                    return;
                }
                Next::Events(events) => {
                    for event in events {
                        position = event.version().unwrap_or(position);
                        let wanted = event_kind(&event).is_some_and(|kind| kinds.contains(&kind));
                        if wanted && sender.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Blocks until there are changes after `position`, then copies a batch of them.
    fn next_after(&self, position: Version) -> Next {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Next::Closed;
            }
            if position < state.floor {
                return Next::Resync(state.floor);
            }
            let newest = state.floor.get() + state.events.len() as u64;
            if position.get() < newest {
                let start = (position.get() - state.floor.get()) as usize;
                let batch = state.events.iter().skip(start).take(FORWARD_BATCH_EVENTS_MAX);
                return Next::Events(batch.cloned().collect());
            }
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn event_kind(event: &WatchEvent) -> Option<ObjectKind> {
    match event {
        WatchEvent::Put { kind, .. } | WatchEvent::Delete { kind, .. } => Some(*kind),
        WatchEvent::Resync { .. } => None,
    }
}

fn event_bytes(event: &WatchEvent) -> usize {
    match event {
        WatchEvent::Put { value, .. } => value.len(),
        WatchEvent::Delete { .. } | WatchEvent::Resync { .. } => 0,
    }
}
