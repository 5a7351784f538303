//! Per-core metrics of the SPU and their Prometheus text exporter.
//!
//! # Ownership
//!
//! [`MetricsRegistry::new`] makes one [`CoreMetrics`] block per core and hands back one
//! [`CoreProbe`] per core: the only writer of that block. A probe is `Send` (it moves to its
//! core once) but neither `Sync` nor `Clone`, so at any moment one thread writes a block; on
//! its core it is shared with `Rc<CoreProbe>`. Writes are a Relaxed load and a Relaxed store
//! of an `AtomicU64` (no read-modify-write, no lock, no cache line shared with another
//! writer: each block is cache-line aligned). The exporter thread only loads.
//!
//! ```
//! use sluice_spu::metrics::{exporter, process, Counter, Gauge, MetricsRegistry};
//!
//! let (registry, mut probes) = MetricsRegistry::new(2);
//! let probe = probes.remove(0); // moved to core 0, shared there with Rc
//! probe.add(Counter::BytesReceived, 512);
//! probe.adjust(Gauge::ConnectionsOpen, 1);
//! let mut text = String::new();
//! exporter::render(&registry, &process::ProcessSample::default(), &mut text);
//! assert!(text.contains("sluice_spu_bytes_received_total{core=\"0\"} 512\n"));
//! assert!(text.contains("sluice_spu_connections_open{core=\"1\"} 0\n"));
//! ```
//!
//! # Consistency
//!
//! A scrape reads each value atomically but not all values at one instant: a request counted
//! in `requests_total` may not yet show in `bytes_sent_total`. Counters never go down.
//!
//! # Failure modes
//!
//! None at runtime on the data path (stores cannot fail). The exporter's failures (bind, a
//! client that disconnects) are in [`exporter`].

pub mod exporter;
pub mod health;
pub mod process;

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_proto::api::ApiKey;

pub use exporter::{MetricsServer, METRICS_PATH};

/// A monotonically increasing count, per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Bytes read from client and replication sockets.
    BytesReceived,
    /// Bytes written to client and replication sockets.
    BytesSent,
    /// Records appended by produce requests (leader side).
    RecordsProduced,
    /// Records sent in fetch and stream-fetch responses.
    RecordsFetched,
    /// Record bytes sent with sendfile (no copy through the process).
    FetchBytesZeroCopy,
    /// Record bytes copied through a user-space buffer on their way to a socket.
    FetchBytesCopied,
    /// Record bytes read with O_DIRECT and sent from those buffers.
    FetchBytesDirect,
    /// Record bytes sent from the log's memory of its newest writes (no read).
    FetchBytesMemory,
    /// Times a response waited for the peer to drain a full socket buffer.
    SocketWritableWaits,
    /// Connections accepted.
    ConnectionsAccepted,
    /// Requests whose frame carried an API key this build does not know.
    RequestsUnknownApi,
    /// Requests handed to another core (partition owned elsewhere).
    RequestsForwarded,
    /// Partitions of produce requests that held only retries of batches already appended
    /// (idempotent producers; answered without writing again).
    ProduceDuplicates,
    /// Partitions of produce requests refused for their producer sequence (out of order, or
    /// an unknown producer or epoch).
    ProduceSequenceRefusals,
    /// Record bytes sent to followers (leader side).
    ReplicationBytesServed,
    /// Record bytes received from leaders (follower side).
    ReplicationBytesFetched,
    /// In-sync set changes proposed to the SC by this core's leaders.
    InSyncProposals,
    /// TLS handshakes on this core's listeners that failed (refused certificate, timeout).
    TlsHandshakeFailures,
    /// Connections that spoke the other protocol (plaintext on a TLS port, TLS on a plaintext
    /// port), answered with an alert and closed.
    TlsPortMismatches,
    /// Requests refused because the peer's certificate does not name the SPU they claim.
    IdentityRefusals,
}

impl Counter {
    /// Every counter, in exposition order.
    pub const ALL: [Counter; 20] = [
        Counter::BytesReceived,
        Counter::BytesSent,
        Counter::RecordsProduced,
        Counter::RecordsFetched,
        Counter::FetchBytesZeroCopy,
        Counter::FetchBytesCopied,
        Counter::FetchBytesDirect,
        Counter::FetchBytesMemory,
        Counter::SocketWritableWaits,
        Counter::ConnectionsAccepted,
        Counter::RequestsUnknownApi,
        Counter::RequestsForwarded,
        Counter::ProduceDuplicates,
        Counter::ProduceSequenceRefusals,
        Counter::ReplicationBytesServed,
        Counter::ReplicationBytesFetched,
        Counter::InSyncProposals,
        Counter::TlsHandshakeFailures,
        Counter::TlsPortMismatches,
        Counter::IdentityRefusals,
    ];

    /// Metric name and help text.
    pub const fn describe(self) -> (&'static str, &'static str) {
        match self {
            Counter::BytesReceived => {
                ("sluice_spu_bytes_received_total", "Bytes read from sockets.")
            }
            Counter::BytesSent => ("sluice_spu_bytes_sent_total", "Bytes written to sockets."),
            Counter::RecordsProduced => {
                ("sluice_spu_records_produced_total", "Records appended by produce requests.")
            }
            Counter::RecordsFetched => {
                ("sluice_spu_records_fetched_total", "Records sent in fetch responses.")
            }
            Counter::FetchBytesZeroCopy => (
                "sluice_spu_fetch_zero_copy_bytes_total",
                "Record bytes sent with sendfile, never copied into the process.",
            ),
            Counter::FetchBytesCopied => (
                "sluice_spu_fetch_copied_bytes_total",
                "Record bytes copied through a user-space buffer to a socket.",
            ),
            Counter::FetchBytesDirect => (
                "sluice_spu_fetch_direct_bytes_total",
                "Record bytes read with O_DIRECT (no page cache) and sent from those buffers.",
            ),
            Counter::FetchBytesMemory => (
                "sluice_spu_fetch_memory_bytes_total",
                "Record bytes sent from memory: the newest writes, kept after writing them.",
            ),
            Counter::SocketWritableWaits => (
                "sluice_spu_socket_writable_waits_total",
                "Times a response waited for a full socket buffer to drain.",
            ),
            Counter::ConnectionsAccepted => {
                ("sluice_spu_connections_accepted_total", "Connections accepted.")
            }
            Counter::RequestsUnknownApi => (
                "sluice_spu_requests_unknown_api_total",
                "Frames with an API key this build does not know.",
            ),
            Counter::RequestsForwarded => (
                "sluice_spu_requests_forwarded_total",
                "Requests handed to the core that owns their partition.",
            ),
            Counter::ProduceDuplicates => (
                "sluice_spu_produce_duplicates_total",
                "Produce partitions holding only retries of appended batches (not written again).",
            ),
            Counter::ProduceSequenceRefusals => (
                "sluice_spu_produce_sequence_refusals_total",
                "Produce partitions refused for their producer sequence (out of order, unknown producer).",
            ),
            Counter::ReplicationBytesServed => (
                "sluice_spu_replication_served_bytes_total",
                "Record bytes sent to followers by this core's leader replicas.",
            ),
            Counter::ReplicationBytesFetched => (
                "sluice_spu_replication_fetched_bytes_total",
                "Record bytes received from leaders by this core's follower replicas.",
            ),
            Counter::InSyncProposals => (
                "sluice_spu_in_sync_proposals_total",
                "In-sync set changes this core's leaders proposed to the SC.",
            ),
            Counter::TlsHandshakeFailures => (
                "sluice_spu_tls_handshake_failures_total",
                "TLS handshakes on this SPU's listeners that failed or timed out.",
            ),
            Counter::TlsPortMismatches => (
                "sluice_spu_tls_port_mismatches_total",
                "Connections speaking plaintext to a TLS port or TLS to a plaintext port.",
            ),
            Counter::IdentityRefusals => (
                "sluice_spu_identity_refusals_total",
                "Requests refused: the peer certificate does not name the SPU they claim.",
            ),
        }
    }
}

/// A value that goes up and down, per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Connections open now.
    ConnectionsOpen,
    /// Requests being processed (decoded, response not yet written).
    RequestsInFlight,
    /// Requests waiting in this core's inbox from other cores.
    InboxDepth,
    /// Produce requests waiting for durability (acks).
    ProduceWaiting,
    /// Replicas this core leads.
    ReplicasLeader,
    /// Replicas this core follows.
    ReplicasFollower,
    /// Open stream-fetch subscriptions.
    StreamsOpen,
    /// Replicas this core leads whose in-sync set lacks some replica.
    ReplicasUnderReplicated,
    /// Version of the ACL and token snapshot this core enforces (0: none yet).
    SecurityVersion,
}

impl Gauge {
    /// Every gauge, in exposition order.
    pub const ALL: [Gauge; 9] = [
        Gauge::ConnectionsOpen,
        Gauge::RequestsInFlight,
        Gauge::InboxDepth,
        Gauge::ProduceWaiting,
        Gauge::ReplicasLeader,
        Gauge::ReplicasFollower,
        Gauge::StreamsOpen,
        Gauge::ReplicasUnderReplicated,
        Gauge::SecurityVersion,
    ];

    /// Metric name and help text.
    pub const fn describe(self) -> (&'static str, &'static str) {
        match self {
            Gauge::ConnectionsOpen => ("sluice_spu_connections_open", "Connections open now."),
            Gauge::RequestsInFlight => {
                ("sluice_spu_requests_in_flight", "Requests decoded and not yet answered.")
            }
            Gauge::InboxDepth => {
                ("sluice_spu_inbox_depth", "Requests queued for this core by other cores.")
            }
            Gauge::ProduceWaiting => {
                ("sluice_spu_produce_waiting", "Produce requests waiting for their acks.")
            }
            Gauge::ReplicasLeader => ("sluice_spu_replicas_leader", "Replicas this core leads."),
            Gauge::ReplicasFollower => {
                ("sluice_spu_replicas_follower", "Replicas this core follows.")
            }
            Gauge::StreamsOpen => ("sluice_spu_streams_open", "Open stream-fetch subscriptions."),
            Gauge::ReplicasUnderReplicated => (
                "sluice_spu_replicas_under_replicated",
                "Replicas this core leads with fewer in-sync replicas than replicas.",
            ),
            Gauge::SecurityVersion => (
                "sluice_spu_security_version",
                "Version of the ACL and token snapshot from the SC this core enforces.",
            ),
        }
    }
}

/// A latency distribution, per core (a Prometheus histogram in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Produce requests with acks: from the request read to its acknowledgement ready.
    ProduceAck,
    /// Fetch responses and stream pushes: the send itself (reading the records, direct or
    /// spliced, and writing them to the socket).
    FetchSend,
    /// Replica log write rounds (staged bytes to the segment file).
    LogWriteRound,
    /// Replica log fdatasyncs.
    LogSync,
}

impl Timing {
    /// Every timing, in exposition order.
    pub const ALL: [Timing; 4] =
        [Timing::ProduceAck, Timing::FetchSend, Timing::LogWriteRound, Timing::LogSync];

    /// Metric name and help text.
    pub const fn describe(self) -> (&'static str, &'static str) {
        match self {
            Timing::ProduceAck => (
                "sluice_spu_produce_ack_seconds",
                "Produce requests with acks: from the request read to its acknowledgement.",
            ),
            Timing::FetchSend => (
                "sluice_spu_fetch_send_seconds",
                "Fetch responses and stream pushes: reading the records and writing them out.",
            ),
            Timing::LogWriteRound => {
                ("sluice_spu_log_write_round_seconds", "Replica log write rounds.")
            }
            Timing::LogSync => ("sluice_spu_log_sync_seconds", "Replica log fdatasyncs."),
        }
    }
}

/// Upper bounds of the histogram buckets in microseconds (`+Inf` follows the last).
pub const TIMING_BUCKETS_MICROS: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Buckets of one timing: one count per bound plus `+Inf`, then the sum in nanoseconds.
const TIMING_CELLS: usize = TIMING_BUCKETS_MICROS.len() + 2;

/// One timing's values as read by the exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimingSnapshot {
    /// Observations per bucket (not cumulative), `+Inf` last.
    pub buckets: [u64; TIMING_BUCKETS_MICROS.len() + 1],
    /// Sum of the observations in nanoseconds.
    pub sum_nanos: u64,
}

impl TimingSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

fn timing_bucket(elapsed: std::time::Duration) -> usize {
    let micros = elapsed.as_micros();
    TIMING_BUCKETS_MICROS
        .iter()
        .position(|bound| micros <= u128::from(*bound))
        .unwrap_or(TIMING_BUCKETS_MICROS.len())
}

/// The `api` label of an API key: its name in snake case (`produce`, `stream_fetch`).
pub fn api_label(api: ApiKey) -> String {
    let name = format!("{api:?}");
    let mut label = String::with_capacity(name.len() + 4);
    for (index, character) in name.chars().enumerate() {
        if character.is_ascii_uppercase() {
            if index > 0 {
                label.push('_');
            }
            label.push(character.to_ascii_lowercase());
        } else {
            label.push(character);
        }
    }
    label
}

fn api_index(api: ApiKey) -> usize {
    // ApiKey::ALL lists every key, so the position always exists.
    ApiKey::ALL.iter().position(|known| *known == api).unwrap_or(0)
}

/// One core's values. Read by anyone, written only through that core's [`CoreProbe`]. One
/// contiguous block per core, aligned to 128 bytes (two cache lines, the prefetcher's pair),
/// so no two cores' writes share a line.
#[derive(Debug)]
#[repr(align(128))]
pub struct CoreMetrics {
    counters: [AtomicU64; Counter::ALL.len()],
    gauges: [AtomicU64; Gauge::ALL.len()],
    requests: [AtomicU64; API_KEY_COUNT],
    request_errors: [AtomicU64; API_KEY_COUNT],
    timings: [[AtomicU64; TIMING_CELLS]; Timing::ALL.len()],
}

/// API keys this build knows (one request and one error counter each, per core).
const API_KEY_COUNT: usize = ApiKey::ALL.len();

impl CoreMetrics {
    fn new() -> CoreMetrics {
        CoreMetrics {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            gauges: std::array::from_fn(|_| AtomicU64::new(0)),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            request_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            timings: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// Current values of a timing.
    pub fn timing(&self, timing: Timing) -> TimingSnapshot {
        let cells = &self.timings[timing as usize];
        TimingSnapshot {
            buckets: std::array::from_fn(|index| cells[index].load(Ordering::Relaxed)),
            sum_nanos: cells[TIMING_CELLS - 1].load(Ordering::Relaxed),
        }
    }

    /// Current value of a counter.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters[counter as usize].load(Ordering::Relaxed)
    }

    /// Current value of a gauge.
    pub fn gauge(&self, gauge: Gauge) -> i64 {
        self.gauges[gauge as usize].load(Ordering::Relaxed) as i64
    }

    /// Requests received with this API key.
    pub fn requests(&self, api: ApiKey) -> u64 {
        self.requests[api_index(api)].load(Ordering::Relaxed)
    }

    /// Requests with this API key that failed (error response or connection error).
    pub fn request_errors(&self, api: ApiKey) -> u64 {
        self.request_errors[api_index(api)].load(Ordering::Relaxed)
    }
}

/// Single-writer add: a load and a store, both Relaxed (only the owner writes the cell).
fn bump(cell: &AtomicU64, amount: u64) {
    cell.store(cell.load(Ordering::Relaxed).wrapping_add(amount), Ordering::Relaxed);
}

/// Every core's metrics; shared (`Arc`) by the probes and the exporter.
#[derive(Debug)]
pub struct MetricsRegistry {
    cores: Box<[CoreMetrics]>,
    health: health::SpuHealth,
    data_volume: std::sync::OnceLock<DataVolume>,
}

/// The data directory whose volume the exporter reports (free bytes against the floor under
/// which appends are refused).
#[derive(Debug, Clone)]
pub struct DataVolume {
    /// A directory on the volume.
    pub directory: std::path::PathBuf,
    /// The configured floor in bytes (`--free-bytes-min`).
    pub free_bytes_min: u64,
    /// The configured floor as a fraction of the volume (`--free-space-percent-min` / 100);
    /// the floor in force is the larger of the two.
    pub free_space_ratio_min: f64,
}

impl MetricsRegistry {
    /// A registry for `core_count` cores and the one probe of each core (index = core).
    pub fn new(core_count: usize) -> (Arc<MetricsRegistry>, Vec<CoreProbe>) {
        let registry = Arc::new(MetricsRegistry {
            cores: (0..core_count).map(|_| CoreMetrics::new()).collect(),
            health: health::SpuHealth::default(),
            data_volume: std::sync::OnceLock::new(),
        });
        let probes = (0..core_count)
            .map(|core| CoreProbe { registry: Arc::clone(&registry), core, not_sync: PhantomData })
            .collect();
        (registry, probes)
    }

    /// The SC link's health view (see [`health`]).
    pub fn health(&self) -> &health::SpuHealth {
        &self.health
    }

    /// Sets the data volume to report (once; later calls are ignored).
    pub fn set_data_volume(&self, volume: DataVolume) {
        let _already = self.data_volume.set(volume);
    }

    /// The data volume to report, if set.
    pub fn data_volume(&self) -> Option<&DataVolume> {
        self.data_volume.get()
    }

    /// Replicas open on every core (led or followed).
    pub fn replicas_open(&self) -> u64 {
        self.cores
            .iter()
            .map(|core| core.gauge(Gauge::ReplicasLeader) + core.gauge(Gauge::ReplicasFollower))
            .map(|open| u64::try_from(open).unwrap_or(0))
            .sum()
    }

    /// The newest security snapshot version every core enforces (0 before the first).
    pub fn security_version_applied(&self) -> u64 {
        let versions = self.cores.iter().map(|core| core.gauge(Gauge::SecurityVersion));
        versions.min().map_or(0, |version| u64::try_from(version).unwrap_or(0))
    }

    /// Number of cores.
    pub fn core_count(&self) -> usize {
        self.cores.len()
    }

    /// One core's values (`None` past the last core).
    pub fn core(&self, core: usize) -> Option<&CoreMetrics> {
        self.cores.get(core)
    }

    /// Sum of a counter over every core.
    pub fn counter_total(&self, counter: Counter) -> u64 {
        self.cores.iter().map(|core| core.counter(counter)).sum()
    }
}

/// The writer of one core's metrics. `Send`, not `Sync`, not `Clone`: move it to its core and
/// share it there with `Rc`.
#[derive(Debug)]
pub struct CoreProbe {
    registry: Arc<MetricsRegistry>,
    core: usize,
    not_sync: PhantomData<Cell<()>>,
}

impl CoreProbe {
    fn metrics(&self) -> &CoreMetrics {
        &self.registry.cores[self.core]
    }

    /// The SPU's health view (written by core 0's SC link).
    pub fn health(&self) -> &health::SpuHealth {
        self.registry.health()
    }

    /// The core this probe writes.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Adds `amount` to a counter.
    pub fn add(&self, counter: Counter, amount: u64) {
        bump(&self.metrics().counters[counter as usize], amount);
    }

    /// Sets a gauge.
    pub fn set(&self, gauge: Gauge, value: i64) {
        self.metrics().gauges[gauge as usize].store(value as u64, Ordering::Relaxed);
    }

    /// Adds `delta` (may be negative) to a gauge.
    pub fn adjust(&self, gauge: Gauge, delta: i64) {
        bump(&self.metrics().gauges[gauge as usize], delta as u64);
    }

    /// Counts one request with `api`.
    pub fn request(&self, api: ApiKey) {
        bump(&self.metrics().requests[api_index(api)], 1);
    }

    /// Counts one failed request with `api` (error response or connection error).
    pub fn request_error(&self, api: ApiKey) {
        bump(&self.metrics().request_errors[api_index(api)], 1);
    }

    /// Records one observation of `timing`.
    pub fn observe(&self, timing: Timing, elapsed: std::time::Duration) {
        let cells = &self.metrics().timings[timing as usize];
        bump(&cells[timing_bucket(elapsed)], 1);
        bump(&cells[TIMING_CELLS - 1], u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts what one zero-copy or copying response send did.
    pub fn response_sent(&self, stats: &crate::server::zero_copy::SendStats) {
        self.add(Counter::BytesSent, stats.bytes_sent);
        self.add(Counter::FetchBytesZeroCopy, stats.file_bytes_zero_copy);
        self.add(Counter::FetchBytesCopied, stats.file_bytes_copied);
        self.add(Counter::FetchBytesDirect, stats.file_bytes_direct);
        self.add(Counter::FetchBytesMemory, stats.file_bytes_memory);
        self.add(Counter::SocketWritableWaits, stats.writable_waits);
    }

    /// The registry this probe writes into (for reading).
    pub fn registry(&self) -> &Arc<MetricsRegistry> {
        &self.registry
    }
}

impl crate::storage::LogObserver for CoreProbe {
    fn write_round(&self, elapsed: std::time::Duration) {
        self.observe(Timing::LogWriteRound, elapsed);
    }

    fn sync(&self, elapsed: std::time::Duration) {
        self.observe(Timing::LogSync, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_go_below_zero_and_counters_add_up() {
        let (registry, probes) = MetricsRegistry::new(1);
        let probe = &probes[0];
        probe.adjust(Gauge::InboxDepth, -2);
        probe.adjust(Gauge::InboxDepth, 1);
        probe.add(Counter::BytesSent, 10);
        probe.add(Counter::BytesSent, 5);
        let core = registry.core(0).expect("core 0");
        assert_eq!(core.gauge(Gauge::InboxDepth), -1);
        assert_eq!(core.counter(Counter::BytesSent), 15);
        let mut text = String::new();
        exporter::render(&registry, &process::ProcessSample::default(), &mut text);
        assert!(text.contains("sluice_spu_inbox_depth{core=\"0\"} -1\n"), "{text}");
        assert!(registry.core(1).is_none());
    }

    #[test]
    fn every_counter_and_gauge_is_listed_once_with_a_unique_name() {
        let mut names: Vec<&str> =
            Counter::ALL.iter().map(|counter| counter.describe().0).collect();
        names.extend(Gauge::ALL.iter().map(|gauge| gauge.describe().0));
        for (index, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, index);
        }
        for (index, gauge) in Gauge::ALL.iter().enumerate() {
            assert_eq!(*gauge as usize, index);
        }
        names.extend(Timing::ALL.iter().map(|timing| timing.describe().0));
        for (index, timing) in Timing::ALL.iter().enumerate() {
            assert_eq!(*timing as usize, index);
        }
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn timings_land_in_their_buckets_and_export_cumulatively() {
        use std::time::Duration;
        let (registry, probes) = MetricsRegistry::new(2);
        let probe = &probes[1];
        probe.observe(Timing::LogSync, Duration::from_micros(50));
        probe.observe(Timing::LogSync, Duration::from_micros(51));
        probe.observe(Timing::LogSync, Duration::from_millis(3));
        probe.observe(Timing::LogSync, Duration::from_secs(10));
        let snapshot = registry.core(1).expect("core 1").timing(Timing::LogSync);
        assert_eq!(snapshot.count(), 4);
        assert_eq!(snapshot.buckets[0], 1, "50 us is in le=0.00005");
        assert_eq!(snapshot.buckets[1], 1, "51 us is in le=0.0001");
        assert_eq!(snapshot.buckets[6], 1, "3 ms is in le=0.005");
        assert_eq!(snapshot.buckets[TIMING_BUCKETS_MICROS.len()], 1, "10 s is only in +Inf");
        assert_eq!(snapshot.sum_nanos, 10_003_101_000);
        let mut text = String::new();
        exporter::render(&registry, &process::ProcessSample::default(), &mut text);
        for line in [
            "# TYPE sluice_spu_log_sync_seconds histogram\n",
            "sluice_spu_log_sync_seconds_bucket{core=\"1\",le=\"0.00005\"} 1\n",
            "sluice_spu_log_sync_seconds_bucket{core=\"1\",le=\"0.0001\"} 2\n",
            "sluice_spu_log_sync_seconds_bucket{core=\"1\",le=\"0.005\"} 3\n",
            "sluice_spu_log_sync_seconds_bucket{core=\"1\",le=\"2.5\"} 3\n",
            "sluice_spu_log_sync_seconds_bucket{core=\"1\",le=\"+Inf\"} 4\n",
            "sluice_spu_log_sync_seconds_sum{core=\"1\"} 10.003101\n",
            "sluice_spu_log_sync_seconds_count{core=\"1\"} 4\n",
            "sluice_spu_log_sync_seconds_count{core=\"0\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
