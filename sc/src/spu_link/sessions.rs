//! Which control session of each SPU is the newest, so that the end of an old session never
//! marks offline an SPU that has registered again.
//!
//! Each SPU has a generation counter and a lock of its own. A registration takes a new
//! generation ([`SpuSessions::begin`]) before it writes the SPU online; a session that ends
//! writes the SPU offline only while holding that SPU's lock and only if its generation is still
//! the newest ([`SpuSessions::end_if_newest`]). So the two writes of one SPU are ordered: an
//! offline write that started before a new registration's `begin` finishes before the
//! registration's online write starts, and one that would start after it does not happen.
//!
//! In memory, per SC term (a new term starts at generation zero with fresh sessions). One entry
//! per SPU that registered in this term: bounded by the registered SPUs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sluice_proto::ids::SpuId;

/// The number of one SPU's session in this SC term; grows with each registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionGeneration(u64);

/// The newest session generation of each SPU, shared by the session threads of one term.
#[derive(Debug, Default)]
pub struct SpuSessions {
    spus: Mutex<HashMap<SpuId, Arc<Mutex<SessionGeneration>>>>,
}

impl SpuSessions {
    fn slot(&self, id: SpuId) -> Arc<Mutex<SessionGeneration>> {
        let mut spus = self.spus.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(spus.entry(id).or_default())
    }

    /// Starts a new session of `id` (call before recording the registration); older sessions
    /// of `id` no longer mark it offline when they end.
    pub fn begin(&self, id: SpuId) -> SessionGeneration {
        let slot = self.slot(id);
        let mut newest = slot.lock().unwrap_or_else(PoisonError::into_inner);
        newest.0 += 1;
        *newest
    }

    /// Runs `end` (the offline write) if `generation` is still the newest session of `id`,
    /// holding `id`'s lock meanwhile; `None` when a newer session has begun.
    pub fn end_if_newest<T>(
        &self,
        id: SpuId,
        generation: SessionGeneration,
        end: impl FnOnce() -> T,
    ) -> Option<T> {
        let slot = self.slot(id);
        let newest = slot.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(*newest >= generation, "a session's generation was handed out by begin");
        (*newest == generation).then(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_session_ends_an_spu() {
        let sessions = SpuSessions::default();
        let first = sessions.begin(SpuId(1));
        let other = sessions.begin(SpuId(2));
        let second = sessions.begin(SpuId(1));
        assert!(second > first);
        assert_eq!(sessions.end_if_newest(SpuId(1), first, || "offline"), None);
        assert_eq!(sessions.end_if_newest(SpuId(1), second, || "offline"), Some("offline"));
        assert_eq!(sessions.end_if_newest(SpuId(2), other, || 2), Some(2));
    }

    #[test]
    fn a_registration_waits_for_an_offline_write_in_progress() {
        let sessions = Arc::new(SpuSessions::default());
        let old = sessions.begin(SpuId(7));
        let (entered_sender, entered) = crossbeam_channel::bounded(1);
        let (release_sender, release) = crossbeam_channel::bounded::<()>(1);
        let ending = {
            let sessions = Arc::clone(&sessions);
            std::thread::spawn(move || {
                sessions.end_if_newest(SpuId(7), old, || {
                    entered_sender.send(()).unwrap();
                    release.recv().unwrap();
                })
            })
        };
        entered.recv().unwrap();
        let registering = {
            let sessions = Arc::clone(&sessions);
            std::thread::spawn(move || sessions.begin(SpuId(7)))
        };
        // The registration cannot take its generation while the offline write runs.
        std::thread::yield_now();
        assert!(!registering.is_finished());
        release_sender.send(()).unwrap();
        assert_eq!(ending.join().unwrap(), Some(()));
        assert!(registering.join().unwrap() > old);
    }
}
