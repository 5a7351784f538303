//! The SC's Prometheus metrics and health decisions.
//!
//! # Ownership
//!
//! Cluster gauges (SPUs, partitions by state, under-replicated partitions) are not kept
//! anywhere: [`render`] computes them from the cache's current [`Snapshot`] at scrape time, so
//! nothing on the SC's threads writes them. The two things a snapshot cannot show are counted in
//! [`ScMetrics`], one process-wide block ([`METRICS`]) of relaxed atomics: leader elections
//! (written by the controllers after a stored election) and store write latency (written by
//! [`MeasuredStore`] around every put and delete). A scrape reads each atomic on its own, so a
//! histogram's buckets and sum may be one write apart.
//!
//! # Readiness
//!
//! [`readiness`] is the pure decision behind `GET /health/ready`: ready only when this SC is
//! the active one and its cache has its first listing. See [`server`] for the routes.

pub mod server;
mod store;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_proto::object::{PartitionResolution, SpuResolution};

use crate::cache::Snapshot;

pub use server::MetricsServer;
pub use store::MeasuredStore;

/// Upper bounds of the store write latency buckets in microseconds (then `+Inf`): an embedded
/// write is a file rename (sub-millisecond to a few ms with fsync), a Consul write a round trip.
pub const WRITE_BUCKETS_MICROS: [u64; 10] =
    [250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];

/// Counters the SC's threads write (everything else is read from the cache at scrape time).
#[derive(Debug)]
pub struct ScMetrics {
    leader_elections: AtomicU64,
    unclean_elections: AtomicU64,
    write_buckets: [AtomicU64; WRITE_BUCKETS_MICROS.len() + 1],
    write_sum_nanos: AtomicU64,
    write_errors: AtomicU64,
}

/// The process-wide metrics of this SC.
pub static METRICS: ScMetrics = ScMetrics::new();

impl ScMetrics {
    /// All zero.
    pub const fn new() -> ScMetrics {
        ScMetrics {
            leader_elections: AtomicU64::new(0),
            unclean_elections: AtomicU64::new(0),
            write_buckets: [const { AtomicU64::new(0) }; WRITE_BUCKETS_MICROS.len() + 1],
            write_sum_nanos: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        }
    }

    /// One leader election stored by the controllers (`unclean`: outside the in-sync set).
    pub fn record_election(&self, unclean: bool) {
        self.leader_elections.fetch_add(1, Ordering::Relaxed);
        if unclean {
            self.unclean_elections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One store write (put or delete) that took `elapsed`; `failed` when it returned an error.
    pub fn record_write(&self, elapsed: Duration, failed: bool) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = WRITE_BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(WRITE_BUCKETS_MICROS.len());
        self.write_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.write_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if failed {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Default for ScMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What the health and metrics endpoints read of the running SC at one moment.
#[derive(Clone, Debug, Default)]
pub struct ScView {
    /// Whether this SC holds the leadership (always, on the embedded store, once started).
    pub active: bool,
    /// The current term's cache snapshot; `None` before a term started (standby, starting).
    pub snapshot: Option<std::sync::Arc<Snapshot>>,
}

/// The answer of `GET /health/ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Serving as the active SC with a synced cache.
    Ready,
    /// Not (yet) serving; the reason is the response body.
    NotReady(&'static str),
}

/// Ready when active with a listed cache; otherwise the reason.
pub fn readiness(view: &ScView) -> Readiness {
    match (&view.snapshot, view.active) {
        (_, false) => Readiness::NotReady("standby: another SC is active, or this one is starting"),
        (None, true) => Readiness::NotReady("starting: no cache yet"),
        (Some(snapshot), true) if !snapshot.listed => {
            Readiness::NotReady("starting: the cache has not listed the store yet")
        }
        (Some(_), true) => Readiness::Ready,
    }
}

/// Cluster state counted from one snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    /// SPUs online.
    pub spus_online: u64,
    /// SPUs offline or never connected.
    pub spus_offline: u64,
    /// Partitions by resolution: init, online, leader offline, offline.
    pub partitions_init: u64,
    /// Partitions whose leader serves.
    pub partitions_online: u64,
    /// Partitions whose leader's SPU is offline (election pending).
    pub partitions_leader_offline: u64,
    /// Partitions no replica can lead.
    pub partitions_offline: u64,
    /// Partitions whose in-sync set is smaller than their replica set.
    pub partitions_under_replicated: u64,
}

/// Counts SPUs and partitions of `snapshot`.
pub fn count(snapshot: &Snapshot) -> ClusterCounts {
    let mut counts = ClusterCounts::default();
    for spu in snapshot.spus.values() {
        match spu.value.status.resolution {
            SpuResolution::Online => counts.spus_online += 1,
            SpuResolution::Init | SpuResolution::Offline => counts.spus_offline += 1,
        }
    }
    for partition in snapshot.partitions.values() {
        let object = &partition.value;
        match object.status.resolution {
            PartitionResolution::Init => counts.partitions_init += 1,
            PartitionResolution::Online => counts.partitions_online += 1,
            PartitionResolution::LeaderOffline => counts.partitions_leader_offline += 1,
            PartitionResolution::Offline => counts.partitions_offline += 1,
        }
        if object.status.in_sync_replicas.len() < object.spec.replicas.len() {
            counts.partitions_under_replicated += 1;
        }
    }
    counts
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes the whole exposition (text format 0.0.4) for `view` and `metrics` to `out`. Cluster
/// gauges are omitted while there is no snapshot (a standby knows nothing current).
pub fn render(view: &ScView, metrics: &ScMetrics, out: &mut String) {
    family(out, "sluice_sc_active", "gauge", "1 when this SC is the active one, else 0.");
    let _ = writeln!(out, "sluice_sc_active {}", u8::from(view.active));
    let ready = readiness(view) == Readiness::Ready;
    family(out, "sluice_sc_ready", "gauge", "1 when /health/ready answers 200, else 0.");
    let _ = writeln!(out, "sluice_sc_ready {}", u8::from(ready));
    if let Some(snapshot) = view.snapshot.as_deref().filter(|snapshot| snapshot.listed) {
        render_cluster(snapshot, out);
    }
    let elections = [
        (
            "sluice_sc_leader_elections_total",
            "Partition leader elections stored by this SC's controllers.",
            &metrics.leader_elections,
        ),
        (
            "sluice_sc_unclean_leader_elections_total",
            "Leader elections outside the in-sync set (records may be lost).",
            &metrics.unclean_elections,
        ),
        (
            "sluice_sc_store_write_errors_total",
            "Metadata store writes (puts and deletes) that returned an error.",
            &metrics.write_errors,
        ),
    ];
    for (name, help, value) in elections {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    let name = "sluice_sc_store_write_seconds";
    family(out, name, "histogram", "Latency of metadata store writes (puts and deletes).");
    let mut cumulative = 0;
    for (bucket, count) in metrics.write_buckets.iter().enumerate() {
        cumulative += count.load(Ordering::Relaxed);
        let bound = WRITE_BUCKETS_MICROS
            .get(bucket)
            .map_or_else(|| "+Inf".to_owned(), |micros| format!("{}", *micros as f64 / 1e6));
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let seconds = metrics.write_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {seconds}\n{name}_count {cumulative}");
}

fn render_cluster(snapshot: &Snapshot, out: &mut String) {
    let counts = count(snapshot);
    family(out, "sluice_sc_spus", "gauge", "Registered SPUs by state (init counts as offline).");
    let _ = writeln!(out, "sluice_sc_spus{{state=\"online\"}} {}", counts.spus_online);
    let _ = writeln!(out, "sluice_sc_spus{{state=\"offline\"}} {}", counts.spus_offline);
    family(out, "sluice_sc_partitions", "gauge", "Partitions by state.");
    let states = [
        ("init", counts.partitions_init),
        ("online", counts.partitions_online),
        ("leader_offline", counts.partitions_leader_offline),
        ("offline", counts.partitions_offline),
    ];
    for (state, value) in states {
        let _ = writeln!(out, "sluice_sc_partitions{{state=\"{state}\"}} {value}");
    }
    let name = "sluice_sc_partitions_under_replicated";
    family(out, name, "gauge", "Partitions whose in-sync set is smaller than their replica set.");
    let _ = writeln!(out, "{name} {}", counts.partitions_under_replicated);
    family(out, "sluice_sc_topics", "gauge", "Topics.");
    let _ = writeln!(out, "sluice_sc_topics {}", snapshot.topics.len());
    family(out, "sluice_sc_cache_revision", "gauge", "Store revision the SC's cache reflects.");
    let _ = writeln!(out, "sluice_sc_cache_revision {}", snapshot.revision.get());
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
