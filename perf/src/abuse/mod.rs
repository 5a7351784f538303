//! `sluice-perf abuse`: hostile and careless clients against a running cluster, beside a
//! well-behaved [`probe::Probe`], with figures measured in the same run:
//!
//! - `idle`: thousands of connections that never send a byte, held open on an SPU and/or the
//!   SC; connections still open after the hold, server RSS and threads, probe latency before
//!   and while they are held.
//! - `garbage`: connections sending random bytes, half a frame and then nothing, or a length
//!   prefix above any limit; how many the servers closed and how fast, server RSS, whether both
//!   servers are alive and the probe still gets its records.
//! - `slow-consumer`: connections that pipeline fetches of a preloaded partition and never read
//!   their socket; SPU RSS before, during (peak) and after, probe latency without and with them.
//! - `flood`: a producer sending as fast as it can to one partition while the probe produces at
//!   a steady rate to another; probe latency without and with the flood, the flood's rate.
//!
//! Why here and not in testkit: these are load generators whose output is figures beside a
//! baseline (practice 12: benchmarks are programs), they reuse perf's SDK setup, histograms and
//! JSON reports, and the integration tests run them as processes against a real cluster.
//!
//! The workloads exit non-zero when a server died, when the probe stopped receiving records, or
//! when a connection that must be closed at once (`oversized`, `random`) was not.

pub mod probe;
pub mod raw;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::args::{parse_duration, SC_ADDRESS_DEFAULT};
pub use probe::ProbeWindow;
pub use raw::Garbage;
pub use workloads::run;

/// Version of the JSON report's layout.
pub const REPORT_VERSION: u32 = 1;

/// `sluice-perf abuse <workload>`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct AbuseArgs {
    /// The abusive client to run.
    #[command(subcommand)]
    pub workload: AbuseWorkload,
}

/// The abusive clients.
#[derive(Subcommand, Clone, Debug, Serialize)]
#[serde(tag = "workload", rename_all = "kebab-case")]
pub enum AbuseWorkload {
    /// Hold many idle connections (never a byte sent) on the SPU and/or the SC.
    ///
    /// Measures the probe's latency before and while they are held, how many are still open
    /// at the end of the hold, and the servers' RSS and threads. Each connection is a file
    /// descriptor here too: the soft open-files limit is raised to the hard one (`ulimit -Hn`);
    /// 10,000 on each server need two runs (`--target spu`, `--target sc`) when the hard
    /// limit is 20,000.
    Idle(IdleArgs),
    /// Send random bytes, half a frame, or an oversized length prefix, and see them closed.
    ///
    /// Per kind: connections to the SPU and the SC, the payload, then silence. Reports how
    /// many each server closed within --close-wait (random and oversized must be closed at
    /// once; half frames after the servers' frame read timeout, 30 s by default), server RSS
    /// before and after, and the probe's records and latency after.
    Garbage(GarbageArgs),
    /// Fetch a preloaded partition on connections that never read their socket.
    ///
    /// Reports the SPU's RSS before, at its peak while the slow consumers are connected, and
    /// after they are gone, and the probe's end-to-end latency without and with them.
    SlowConsumer(SlowConsumerArgs),
    /// Produce as fast as possible to one partition while the probe produces to another.
    ///
    /// Reports the flood's rate and the probe's end-to-end latency without and with it.
    Flood(FloodArgs),
}

/// What every abuse workload takes.
#[derive(Args, Clone, Debug, Serialize)]
pub struct CommonArgs {
    /// SC public address (`host:port`; the first of a list is the one abused).
    #[arg(long, env = "SLUICE_SC", default_value = SC_ADDRESS_DEFAULT)]
    pub sc: String,
    /// Topic of the probe (partition 0) and of the abusers that need one (partition 1).
    #[arg(long, default_value = "sluice-abuse")]
    pub topic: String,
    /// Create the topic (2 partitions, RF 1) first; an existing one is reused.
    #[arg(long)]
    pub create_topic: bool,
    /// Length of each measured window (baseline, during).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    #[serde(with = "crate::args::duration_seconds")]
    pub window: Duration,
    /// Probe records per second (256-byte values, acks all, partition 0).
    #[arg(long, default_value_t = 200.0)]
    pub probe_rate: f64,
    /// PID of the SPU, for RSS and liveness [default: from --cluster-state].
    #[arg(long)]
    pub spu_pid: Option<u32>,
    /// PID of the SC, for RSS and liveness [default: from --cluster-state].
    #[arg(long)]
    pub sc_pid: Option<u32>,
    /// Local cluster state file [default: ~/.sluice/local/cluster.json when it exists].
    #[arg(long)]
    pub cluster_state: Option<PathBuf>,
    /// Write the JSON report to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Which server an abuser connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The SPU leading the probe's partition (its shared public port).
    Spu,
    /// The SC's public address.
    Sc,
}

impl std::fmt::Display for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Target::Spu => "spu",
            Target::Sc => "sc",
        })
    }
}

/// `abuse idle`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct IdleArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Idle connections per target.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Servers to hold them on (repeatable) [default: spu and sc].
    #[arg(long = "target", value_enum)]
    pub targets: Vec<Target>,
}

/// `abuse garbage`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct GarbageArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections per kind and target.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Kinds to send (repeatable) [default: all three].
    #[arg(long = "kind", value_enum)]
    pub kinds: Vec<Garbage>,
    /// Servers to send them to (repeatable) [default: spu and sc].
    #[arg(long = "target", value_enum)]
    pub targets: Vec<Target>,
    /// Body length a half frame announces to the SPU (the SC gets at most its 1 MiB limit).
    #[arg(long, default_value_t = 60 << 20)]
    pub claimed_bytes: u32,
    /// Bytes a random-bytes connection sends.
    #[arg(long, default_value_t = 4096)]
    pub random_bytes: usize,
    /// How long to wait for the servers to close the connections of one kind.
    #[arg(long, value_parser = parse_duration, default_value = "40s")]
    #[serde(with = "crate::args::duration_seconds")]
    pub close_wait: Duration,
    /// Seed of the random bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `abuse slow-consumer`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct SlowConsumerArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Slow consumer connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Fetch requests each sends at once (pipelined), from offset 0.
    #[arg(long, default_value_t = 64)]
    pub fetches: usize,
    /// Record bytes each fetch asks for.
    #[arg(long, default_value_t = 8 << 20)]
    pub fetch_bytes: u32,
    /// Bytes produced to partition 1 before, for the slow consumers to fetch (1 KiB records).
    #[arg(long, default_value_t = 256 << 20)]
    pub preload_bytes: u64,
}

/// `abuse flood`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct FloodArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Bytes of each flood record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
}

/// One server's resident memory at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct ServerSample {
    /// `spu` or `sc`.
    pub server: Target,
    /// When (baseline, during, peak, after).
    pub phase: String,
    /// VmRSS, MiB.
    pub rss_mib: f64,
    /// Threads of the process.
    pub threads: u64,
    /// Open file descriptors of the process.
    pub descriptors: u64,
}

/// A named figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

/// What an abuse workload measured.
#[derive(Clone, Debug, Serialize)]
pub struct AbuseReport {
    /// Layout version ([`REPORT_VERSION`]).
    pub version: u32,
    /// The parameters.
    pub parameters: AbuseArgs,
    /// Probe latency per window.
    pub probe: Vec<ProbeWindow>,
    /// Server memory and threads.
    pub servers: Vec<ServerSample>,
    /// Workload-specific figures (connections held, closed, rates).
    pub figures: Vec<Figure>,
    /// What went wrong (a server died, the probe got nothing, a connection not closed).
    pub problems: Vec<String>,
}

impl AbuseReport {
    fn figure(&mut self, name: impl Into<String>, value: f64, unit: &str) {
        self.figures.push(Figure { name: name.into(), value, unit: unit.into() });
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if !self.probe.is_empty() {
            let _ = writeln!(
                out,
                "probe (end-to-end)   sent   received  errors   p50 ms   p99 ms   max ms"
            );
            for window in &self.probe {
                let _ = writeln!(
                    out,
                    "{:<18} {:>7} {:>10} {:>7} {:>8.2} {:>8.2} {:>8.2}",
                    window.phase,
                    window.sent,
                    window.received,
                    window.errors,
                    window.p50_ms,
                    window.p99_ms,
                    window.max_ms
                );
            }
            if let (Some(base), Some(during)) = (self.probe.first(), self.probe.get(1)) {
                let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
                let _ = writeln!(
                    out,
                    "{} / {}: p50 x{:.2}, p99 x{:.2} (p99 {:+.2} ms)",
                    during.phase,
                    base.phase,
                    ratio(during.p50_ms, base.p50_ms),
                    ratio(during.p99_ms, base.p99_ms),
                    during.p99_ms - base.p99_ms
                );
            }
        }
        if !self.servers.is_empty() {
            let _ = writeln!(out, "server  phase                  RSS MiB   threads  descriptors");
            for sample in &self.servers {
                let _ = writeln!(
                    out,
                    "{:<7} {:<20} {:>9.1} {:>9} {:>12}",
                    sample.server, sample.phase, sample.rss_mib, sample.threads, sample.descriptors
                );
            }
        }
        for figure in &self.figures {
            let _ = writeln!(out, "{}: {} {}", figure.name, figure.value, figure.unit);
        }
        for problem in &self.problems {
            let _ = writeln!(out, "PROBLEM: {problem}");
        }
        out
    }
}
