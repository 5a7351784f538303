//! Leadership holds: SPUs that preferred-leader restores leave alone for a while.
//!
//! An operator moving leadership off an SPU before restarting it (`HoldLeadership`, used by
//! `sluice cluster rolling-restart`) does not want the periodic preferred-leader restore to
//! hand leadership back before the SPU is stopped. A hold names the SPU and an expiry; the
//! controller passes the SPUs held now to its pure reducer, and the `RebalanceLeaders` handler
//! skips them. Holds live in the active SC's memory only (an SC takeover drops them, and then
//! restores may move leadership back early: a degradation, never a safety issue), and each
//! expires on its own, so a crashed operator tool cannot pin leadership away forever.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_proto::ids::SpuId;

/// Most SPUs held at once; a hold beyond it is refused (bounds the map).
pub const HOLDS_MAX: usize = 1024;
/// Longest hold; longer requests are cut to it.
pub const HOLD_DURATION_MAX: Duration = Duration::from_secs(3600);

/// Why a hold was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// [`HOLDS_MAX`] SPUs are held already.
    #[error("{HOLDS_MAX} SPUs are held already; release one first")]
    TooManyHolds,
}

/// The SPUs held now, shared by the admin handlers and the controller thread.
#[derive(Debug, Default)]
pub struct LeadershipHolds {
    until: Mutex<BTreeMap<SpuId, Instant>>,
}

impl LeadershipHolds {
    /// Holds `spu` for `duration` (at most [`HOLD_DURATION_MAX`]) from now, replacing an
    /// earlier hold of it.
    pub fn hold(&self, spu: SpuId, duration: Duration) -> Result<(), HoldError> {
        let now = Instant::now();
        let mut until = self.lock();
        until.retain(|_, expiry| *expiry > now);
        if until.len() >= HOLDS_MAX && !until.contains_key(&spu) {
            return Err(HoldError::TooManyHolds);
        }
        until.insert(spu, now + duration.min(HOLD_DURATION_MAX));
        Ok(())
    }

    /// Ends the hold of `spu` (nothing if none).
    pub fn release(&self, spu: SpuId) {
        self.lock().remove(&spu);
    }

    /// The SPUs held now.
    pub fn held(&self) -> BTreeSet<SpuId> {
        let now = Instant::now();
        self.lock().iter().filter(|(_, expiry)| **expiry > now).map(|(spu, _)| *spu).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SpuId, Instant>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is used as is.
        self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_expire_and_release() {
        let holds = LeadershipHolds::default();
        holds.hold(SpuId(1), Duration::from_secs(60)).unwrap();
        holds.hold(SpuId(2), Duration::ZERO).unwrap();
        assert_eq!(holds.held(), BTreeSet::from([SpuId(1)]));
        holds.release(SpuId(1));
        assert!(holds.held().is_empty());
    }
}
