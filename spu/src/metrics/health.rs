//! What `GET /health/ready` of the SPU decides from: whether the SC link is registered with
//! the active SC, and how many replicas the SC assigned here against how many the cores have
//! open. Written by core 0's SC link task (relaxed stores), read by the exporter thread.
//!
//! [`readiness`] is the pure decision: ready when registered and every assigned replica is
//! open. A replica the SC just assigned makes the SPU not ready until its core opened it; an
//! SPU that lost its SC serves on (its replicas stay open) but is not ready, so a load
//! balancer sends new clients elsewhere while the link reconnects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `replicas_assigned` before the SC's replica set arrived.
const UNKNOWN: u64 = u64::MAX;

/// The link's view of this SPU's health.
#[derive(Debug, Default)]
pub struct SpuHealth {
    registered: AtomicBool,
    replicas_assigned: AtomicU64,
}

impl SpuHealth {
    /// The link registered (`true`: the replica count is unknown until the SC's first
    /// replica set arrives) or lost its connection (`false`).
    pub fn set_registered(&self, registered: bool) {
        if registered {
            self.replicas_assigned.store(UNKNOWN, Ordering::Relaxed);
        }
        self.registered.store(registered, Ordering::Relaxed);
    }

    /// The SC's latest complete replica set for this SPU has `count` replicas.
    pub fn set_replicas_assigned(&self, count: usize) {
        self.replicas_assigned.store(count as u64, Ordering::Relaxed);
    }

    /// Whether the link is registered now.
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// Replicas the SC assigned to this SPU (`None` until its replica set since registering).
    pub fn replicas_assigned(&self) -> Option<u64> {
        Some(self.replicas_assigned.load(Ordering::Relaxed)).filter(|count| *count != UNKNOWN)
    }
}

/// The answer of `GET /health/ready`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Registered, every assigned replica open.
    Ready,
    /// Not ready; the reason is the response body.
    NotReady(String),
}

/// Ready when registered with the SC and at least as many replicas are open as assigned.
pub fn readiness(
    registered: bool,
    replicas_assigned: Option<u64>,
    replicas_open: u64,
) -> Readiness {
    if !registered {
        return Readiness::NotReady("not registered with an active SC".into());
    }
    let Some(replicas_assigned) = replicas_assigned else {
        return Readiness::NotReady("registered, waiting for the SC's replica set".into());
    };
    if replicas_open < replicas_assigned {
        return Readiness::NotReady(format!(
            "{replicas_open} of {replicas_assigned} assigned replicas open"
        ));
    }
    Readiness::Ready
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_registered_with_every_replica_open() {
        assert_eq!(readiness(true, Some(0), 0), Readiness::Ready);
        assert_eq!(readiness(true, Some(3), 3), Readiness::Ready);
        assert_eq!(
            readiness(false, Some(0), 0),
            Readiness::NotReady("not registered with an active SC".into())
        );
        assert_eq!(
            readiness(true, Some(3), 2),
            Readiness::NotReady("2 of 3 assigned replicas open".into())
        );
        assert!(
            matches!(readiness(true, None, 0), Readiness::NotReady(reason) if reason.contains("waiting"))
        );
        let health = SpuHealth::default();
        health.set_replicas_assigned(2);
        health.set_registered(true);
        assert_eq!(health.replicas_assigned(), None);
        health.set_replicas_assigned(2);
        assert_eq!(health.replicas_assigned(), Some(2));
        // Replicas being closed after an unassignment do not make the SPU unready.
        assert_eq!(readiness(true, Some(1), 2), Readiness::Ready);
    }
}
