//! # sluice-perf
//!
//! Sluice's load generator as a library behind the `sluice-perf` binary: workloads
//! ([`workload`]: produce, consume, end-to-end), open-loop pacing ([`pacing`]), HDR latency
//! histograms ([`histogram`]), the versioned JSON reports ([`report`]), the machine's limits
//! measured by fio and iperf3 ([`limits`]), server CPU accounting from /proc ([`server_cpu`]),
//! a local cluster of real processes ([`cluster`]), the one-run comparison ([`suite`]) and
//! the failover figures ([`failover`]) and hostile clients beside a well-behaved one
//! ([`abuse`]).
//!
//! Ownership: every workload thread owns its producer or consumer; the only shared state is
//! [`progress::LiveStats`] (atomics and one histogram mutex). Child processes (servers, fio,
//! iperf3) are owned by guards and killed by their handle. Nothing here panics on what a server
//! or a tool sends; malformed output is a [`error::PerfError::Parse`].

pub mod abuse;
pub mod args;
pub mod check;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod failover;
pub mod histogram;
pub mod limits;
pub mod machine;
pub mod pacing;
pub mod progress;
pub mod report;
pub mod server_cpu;
pub mod suite;
pub mod table;
pub mod workload;

pub use error::PerfError;
