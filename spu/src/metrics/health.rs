//! What `GET /health/ready` of the SPU decides from: whether the SC link is registered with
//! the active SC, which replicas the SC assigned here (by partition), and which replicas the
//! cores have open. The link (core 0) writes the first two, each core its open replicas after
//! every reconciliation, and the exporter thread reads them per request. The assigned and open
//! sets sit behind mutexes: they change only when replicas are assigned, opened or closed, never
//! on a request's path.
//!
//! [`readiness`] is the pure decision: ready when registered and every assigned replica is
//! open, compared by partition (an SPU closing a replica it lost while another it was given
//! is not open yet is not ready). A replica the SC just assigned makes the SPU not ready until
//! its core opened it; an SPU that lost its SC serves on (its replicas stay open) but is not
//! ready, so a load balancer sends new clients elsewhere while the link reconnects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sluice_proto::object::PartitionKey;

/// Partitions named in a not-ready answer at most.
const MISSING_NAMED_MAX: usize = 5;

/// The link's and the cores' view of this SPU's health.
#[derive(Debug, Default)]
pub struct SpuHealth {
    registered: AtomicBool,
    /// The SC's latest complete replica set for this SPU (`None`: none since registering).
    assigned: Mutex<Option<Arc<BTreeSet<PartitionKey>>>>,
    /// The replicas each core has open, by core.
    open: Mutex<BTreeMap<usize, BTreeSet<PartitionKey>>>,
}

impl SpuHealth {
    /// The link registered (`true`: the assignment is unknown until the SC's first replica set
    /// arrives) or lost its connection (`false`).
    pub fn set_registered(&self, registered: bool) {
        if registered {
            *self.assigned.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        self.registered.store(registered, Ordering::Relaxed);
    }

    /// The SC's latest complete replica set for this SPU names these partitions.
    pub fn set_replicas_assigned(&self, partitions: BTreeSet<PartitionKey>) {
        *self.assigned.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(partitions));
    }

    /// Core `core` has these replicas open now.
    pub fn set_replicas_open(&self, core: usize, partitions: BTreeSet<PartitionKey>) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).insert(core, partitions);
    }

    /// Whether the link is registered now.
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// The partitions the SC assigned here (`None` until its replica set since registering).
    pub fn replicas_assigned(&self) -> Option<Arc<BTreeSet<PartitionKey>>> {
        self.assigned.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The replicas open on every core.
    pub fn replicas_open(&self) -> BTreeSet<PartitionKey> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.values().flatten().cloned().collect()
    }

    /// [`readiness`] now.
    pub fn readiness(&self) -> Readiness {
        let assigned = self.replicas_assigned();
        readiness(self.registered(), assigned.as_deref(), &self.replicas_open())
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

/// Ready when registered with the SC and every partition it assigned here is open (replicas
/// still open after an unassignment do not matter).
pub fn readiness(
    registered: bool,
    assigned: Option<&BTreeSet<PartitionKey>>,
    open: &BTreeSet<PartitionKey>,
) -> Readiness {
    if !registered {
        return Readiness::NotReady("not registered with an active SC".into());
    }
    let Some(assigned) = assigned else {
        return Readiness::NotReady("registered, waiting for the SC's replica set".into());
    };
    let missing: Vec<&PartitionKey> = assigned.difference(open).collect();
    if missing.is_empty() {
        return Readiness::Ready;
    }
    let named: Vec<String> =
        missing.iter().take(MISSING_NAMED_MAX).map(|key| key.to_string()).collect();
    let more = missing.len().saturating_sub(MISSING_NAMED_MAX);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    Readiness::NotReady(format!(
        "{} of {} assigned replicas open; not open yet: {}{more}",
        assigned.len() - missing.len(),
        assigned.len(),
        named.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[(&str, u32)]) -> BTreeSet<PartitionKey> {
        names
            .iter()
            .map(|(topic, partition)| {
                PartitionKey::new(
                    sluice_proto::object::TopicName::new(*topic).unwrap(),
                    sluice_proto::ids::PartitionId(*partition),
                )
            })
            .collect()
    }

    #[test]
    fn ready_only_when_registered_with_every_assigned_replica_open() {
        let none = keys(&[]);
        let three = keys(&[("a", 0), ("a", 1), ("b", 0)]);
        assert_eq!(readiness(true, Some(&none), &none), Readiness::Ready);
        assert_eq!(readiness(true, Some(&three), &three), Readiness::Ready);
        assert_eq!(
            readiness(false, Some(&none), &none),
            Readiness::NotReady("not registered with an active SC".into())
        );
        assert_eq!(
            readiness(true, Some(&three), &keys(&[("a", 0), ("b", 0)])),
            Readiness::NotReady("2 of 3 assigned replicas open; not open yet: a-1".into())
        );
        assert!(
            matches!(readiness(true, None, &none), Readiness::NotReady(reason) if reason.contains("waiting"))
        );
        // Replicas being closed after an unassignment do not make the SPU unready...
        assert_eq!(readiness(true, Some(&keys(&[("a", 0)])), &three), Readiness::Ready);
        // ... but as many replicas open as assigned is not enough: they must be the same.
        assert!(matches!(
            readiness(true, Some(&keys(&[("a", 0), ("c", 0)])), &keys(&[("a", 0), ("a", 1)])),
            Readiness::NotReady(reason) if reason.contains("c-0")
        ));
    }

    #[test]
    fn the_view_follows_registration_assignment_and_every_core() {
        let health = SpuHealth::default();
        health.set_replicas_assigned(keys(&[("a", 0)]));
        health.set_registered(true);
        assert_eq!(health.replicas_assigned(), None, "registering forgets the old set");
        health.set_replicas_assigned(keys(&[("a", 0), ("a", 1)]));
        health.set_replicas_open(0, keys(&[("a", 0)]));
        assert!(matches!(health.readiness(), Readiness::NotReady(_)));
        health.set_replicas_open(1, keys(&[("a", 1)]));
        assert_eq!(health.readiness(), Readiness::Ready);
        health.set_registered(false);
        assert!(matches!(health.readiness(), Readiness::NotReady(_)));
    }
}
