//! The write journal: every change made through one [`super::ConsulStore`] handle, with its
//! exact version, kept in memory for that handle's watches.
//!
//! A Consul blocking query reports the state under a prefix, not the changes that led to it:
//! a key written twice between two answers shows only its last value, and a delete shows no
//! index at all. The journal fills that gap for this handle's own writes (in a deployment the
//! active SC is the only writer, by fencing), so its watches deliver every one of them.
//!
//! ## Invariants
//!
//! - **No write is observed before it is journaled.** A write takes a ticket before sending
//!   its request and returns it after recording its outcome. A watch that got an answer at
//!   index `I` waits for every ticket taken before the answer arrived; a write that starts
//!   afterwards is applied after `I`, so once those tickets are back every own write with a
//!   version up to `I` is in the journal.
//! - **Bounded.** At most [`JOURNAL_EVENTS_MAX`] entries and [`JOURNAL_BYTES_MAX`] bytes of
//!   values; the oldest are dropped first and `dropped_version_max` remembers the newest version
//!   dropped, so a watch that needed it knows it cannot tell what it missed (it resyncs).
//! - **One Consul history.** When Consul loses its state (a restarted `-dev` agent) its
//!   indexes start again from small numbers and journaled versions no longer mean anything.
//!   A write that began after another one finished must get a higher version; one that does
//!   not proves the loss, and so does a watch seeing the index go backwards. Either clears the
//!   journal and starts a new *epoch*: a watch from an older epoch gets `None` for every range
//!   and resyncs.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::store::{ObjectKey, ObjectKind, Version};

/// Most journal entries kept: four times a watch channel, so a watcher may lag a little behind
/// a burst of writes without resyncing.
pub const JOURNAL_EVENTS_MAX: usize = 4 * crate::store::WATCH_CHANNEL_EVENTS_MAX;

/// Most value bytes kept in the journal (32 maximal Consul values).
pub const JOURNAL_BYTES_MAX: usize = 16 * 1024 * 1024;

/// One change made through this handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// Key of the object.
    pub key: ObjectKey,
    /// Consul's index of the change.
    pub version: Version,
    /// The new value, `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// A write in flight; hand it back with [`Journal::finish`].
#[derive(Debug)]
#[must_use = "a ticket that is never finished stalls every watch"]
pub struct Ticket {
    id: u64,
    /// The highest version of a write that had finished when this one began.
    floor: Version,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    in_flight: BTreeSet<u64>,
    entries: VecDeque<JournalEntry>,
    value_bytes: usize,
    dropped_version_max: Version,
    finished_version_max: Version,
    epoch: u64,
}

impl State {
    fn reset(&mut self) {
        self.entries.clear();
        self.value_bytes = 0;
        self.dropped_version_max = Version::ZERO;
        self.finished_version_max = Version::ZERO;
        self.epoch += 1;
    }
}

/// The journal shared by a store handle and its watch threads.
#[derive(Default)]
pub struct Journal {
    state: Mutex<State>,
    finished: Condvar,
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a write about to be sent.
    pub fn begin(&self) -> Ticket {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.in_flight.insert(ticket);
        Ticket { id: ticket, floor: state.finished_version_max }
    }

    /// Ends a write, recording its change when it was applied with a known version.
    pub fn finish(&self, ticket: Ticket, applied: Option<JournalEntry>) {
        let mut state = self.lock();
        state.in_flight.remove(&ticket.id);
        if let Some(entry) = applied {
            if entry.version <= ticket.floor {
                tracing::warn!(version = %entry.version, floor = %ticket.floor,
                    "Consul handed out a version below an earlier write's: it lost its state");
                state.reset();
            }
            state.finished_version_max = state.finished_version_max.max(entry.version);
            state.value_bytes += entry.value.as_ref().map_or(0, Vec::len);
            // Concurrent writes may finish out of version order; keep the journal sorted.
            let position = state.entries.partition_point(|held| held.version < entry.version);
            state.entries.insert(position, entry);
            while state.entries.len() > JOURNAL_EVENTS_MAX || state.value_bytes > JOURNAL_BYTES_MAX
            {
                let Some(oldest) = state.entries.pop_front() else { break };
                state.value_bytes -= oldest.value.as_ref().map_or(0, Vec::len);
                state.dropped_version_max = state.dropped_version_max.max(oldest.version);
            }
        }
        drop(state);
        self.finished.notify_all();
    }

    /// Waits until every write that began before this call has finished. Returns `false` if
    /// that takes longer than `timeout`.
    pub fn wait_for_writes_in_flight(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        let barrier = state.next_ticket;
        loop {
            let pending = state.in_flight.first().is_some_and(|&ticket| ticket < barrier);
            if !pending {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .finished
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The current epoch (see the module docs).
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Forgets everything: Consul lost its state.
    pub fn reset(&self) {
        self.lock().reset();
    }

    /// Every journaled change of `epoch` with a version in `(after, up_to]`, in version order,
    /// or `None` when some of them may have been dropped or the epoch is over.
    pub fn changes_between(
        &self,
        epoch: u64,
        after: Version,
        up_to: Version,
    ) -> Option<Vec<JournalEntry>> {
        let state = self.lock();
        if state.epoch != epoch || state.dropped_version_max > after {
            return None;
        }
        Some(
            state
                .entries
                .iter()
                .filter(|entry| entry.version > after && entry.version <= up_to)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, bytes: usize) -> JournalEntry {
        JournalEntry {
            kind: ObjectKind::Topic,
            key: ObjectKey::new("t").unwrap(),
            version: Version(version),
            value: Some(vec![b'0'; bytes]),
        }
    }

    #[test]
    fn entries_are_sorted_and_ranges_are_half_open() {
        let journal = Journal::default();
        let tickets: Vec<Ticket> = (0..4).map(|_| journal.begin()).collect();
        for (ticket, version) in tickets.into_iter().zip([3, 1, 2, 5]) {
            journal.finish(ticket, Some(entry(version, 1)));
        }
        let versions: Vec<u64> = journal
            .changes_between(0, Version(1), Version(5))
            .unwrap()
            .iter()
            .map(|entry| entry.version.get())
            .collect();
        assert_eq!(versions, [2, 3, 5]);
    }

    #[test]
    fn dropping_old_entries_makes_older_ranges_unknown() {
        let journal = Journal::default();
        for version in 1..=(JOURNAL_EVENTS_MAX as u64 + 2) {
            let ticket = journal.begin();
            journal.finish(ticket, Some(entry(version, 0)));
        }
        assert!(journal.changes_between(0, Version(1), Version(10)).is_none());
        assert!(journal.changes_between(0, Version(2), Version(10)).is_some());
    }

    #[test]
    fn waiting_ends_when_earlier_writes_finish() {
        let journal = Journal::default();
        let early = journal.begin();
        assert!(!journal.wait_for_writes_in_flight(Duration::from_millis(10)));
        journal.finish(early, None);
        assert!(journal.wait_for_writes_in_flight(Duration::from_millis(10)));
    }

    #[test]
    fn a_version_below_an_earlier_write_starts_a_new_epoch() {
        let journal = Journal::default();
        let ticket = journal.begin();
        journal.finish(ticket, Some(entry(50, 1)));
        let epoch = journal.epoch();
        let ticket = journal.begin();
        journal.finish(ticket, Some(entry(7, 1)));
        assert_ne!(journal.epoch(), epoch);
        assert!(journal.changes_between(epoch, Version(0), Version(100)).is_none());
        let fresh = journal.changes_between(journal.epoch(), Version(0), Version(100)).unwrap();
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0].version, Version(7));
    }
}
