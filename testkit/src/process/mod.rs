//! The one harness for tests that run Sluice's servers as real processes: `sluice-sc`,
//! `sluice-spu` and Consul agents started on OS-chosen ports, waited on through the ready
//! files they write (never a fixed sleep), owned by the test and killed by their handle when
//! dropped. Every process test of the workspace starts its servers from here.
//!
//! # Starting a cluster in a test
//!
//! The shortest way, for a test of the client or the CLI: an SC, `n` SPUs and a connected
//! [`sluice_client::Cluster`], everything in one temporary directory.
//!
//! ```no_run
//! use sluice_testkit::process::{wait_for, ServerProcess, Signal, TestCluster};
//!
//! let mut test = TestCluster::builder(3, 1).spu_flags(&["--replica-lag-max-ms=3000"]).start();
//! test.create_topic("events", 4);
//! test.spus[0].signal(Signal::Stop); // a hung SPU
//! test.spus[0].signal(Signal::Continue);
//! test.spus[1].restart(); // kill -9, then the same SPU on its data directory
//! test.sc.restart(); // the same SC on its data directory and its ports
//! wait_for("a leader", || test.cluster.metadata().route("events", 0).ok());
//! ```
//!
//! Piece by piece, when a test needs its own layout: [`ScProcess::builder`] and
//! [`SpuProcess::builder`] take a data directory of their own (the ready file goes beside it)
//! and flags (a flag the test gives replaces the builder's default of the same name, such as
//! `--cores` or `--free-bytes-min`), a configuration file, environment variables and where the
//! output goes ([`Output::File`] keeps a log that failures quote and tests can read).
//!
//! ```no_run
//! use sluice_testkit::process::{consul_agent, Output, ScProcess, ServerProcess, SpuProcess};
//!
//! let directory = tempfile::tempdir().unwrap();
//! let agent = consul_agent();
//! let consul = agent.http_address();
//! let mut sc = ScProcess::builder(&directory.path().join("sc"))
//!     .flags(&["--store", "consul", "--consul-address", &consul])
//!     .output(Output::File(directory.path().join("sc.log")))
//!     .allow_standby()
//!     .start();
//! sc.wait_active();
//! let spu = SpuProcess::builder(&directory.path().join("spu"))
//!     .id(5001)
//!     .sc(sc.private_address)
//!     .start(); // the test registered 5001 (an SPU group) first
//! assert!(sc.terminate().status.success());
//! ```
//!
//! The tests of `sluice-spu` run the SC on their own threads ([`EmbeddedSc`]): Cargo builds
//! only the package's own binaries for its tests, and their subject is the SPU.
//!
//! # Binaries
//!
//! `sluice-sc` and `sluice-spu` are found beside the test executable (or through
//! `SLUICE_SC_BIN`, `SLUICE_SPU_BIN`): see [`binary`]. Build them first when testing one
//! package (`cargo build -p sluice-sc -p sluice-spu`); `cargo nextest run --workspace` builds
//! them all.
//!
//! # Waiting
//!
//! [`wait_for`], [`wait_for_within`] and [`wait_until`] poll a condition until a deadline and
//! panic with what they waited for. [`ServerProcess::wait_while_running`] also fails as soon as
//! the server exits, quoting its log.
//!
//! # Ownership and failure
//!
//! A server dies with the thread that started it (`PR_SET_PDEATHSIG`), so a test killed by a
//! timeout leaves no orphan; start servers from the test's thread, not from a short-lived
//! helper thread. Signals go to the pid of the handle the test still holds, never to a name.
//!
//! # Dependencies
//!
//! This module uses `sluice-sc` (the admin client, [`EmbeddedSc`]), `sluice-client` (the
//! [`TestCluster`]'s client) and `sluice-proto`; those crates, and the others, take this crate
//! as a dev-dependency. Cargo allows that cycle, and an integration test links one copy of
//! each crate, so a `sluice_client::Cluster` from here is the type the client's own tests use.
//! Unit tests inside `sluice-sc` or `sluice-client` must not use this harness: they are a
//! second copy of their crate.
//!
//! The namespace cluster of `deploy/netns/up` (several hosts, faults) is the other half of
//! this crate: [`crate::netns`] and [`crate::inject`].

mod binary;
mod child;
mod cluster;
mod consul;
mod embedded;
mod http;
mod replica_log;
mod sc;
mod spu;
mod wait;

use std::process::ExitStatus;
use std::time::Duration;

pub use binary::{bin_dir, binary, binary_override, require_binaries};
pub use child::{Output, OwnedChild, Signal, Stopped};
pub use cluster::{TestCluster, TestClusterBuilder, HEARTBEAT_TIMEOUT_MS_DEFAULT};
pub use consul::{consul_agent, consul_binary, ConsulAgent, ConsulAgentBuilder, HarnessError};
pub use embedded::EmbeddedSc;
pub use http::{http, metric_sum, scrape_metrics, try_http};
pub use replica_log::log_batches;
pub use sc::{ScBuilder, ScProcess, ScReadiness};
pub use spu::{SpuBuilder, SpuProcess};
pub use wait::{
    read_ready_file, wait_for, wait_for_within, wait_until, CONDITION_TIMEOUT, POLL_INTERVAL,
    READY_TIMEOUT, TAKEOVER_TIMEOUT,
};

/// The builder's default flags (`--name=value`) whose name the test's `flags` do not give
/// (either as `--name=value` or as `--name value`): a test's flag replaces the default.
fn defaults_not_given<'a>(defaults: &'a [String], flags: &[String]) -> Vec<&'a String> {
    let name = |flag: &str| flag.split('=').next().unwrap_or_default().to_owned();
    let given: Vec<String> = flags.iter().map(|flag| name(flag)).collect();
    defaults.iter().filter(|default| !given.contains(&name(default))).collect()
}

/// What a test does to a server process of its own, SC or SPU.
pub trait ServerProcess {
    /// The owned child.
    fn child(&self) -> &OwnedChild;

    /// The owned child, mutably.
    fn child_mut(&mut self) -> &mut OwnedChild;

    /// The process id (for tools that take one, such as `sluice-perf --server-pid`).
    fn pid(&self) -> u32 {
        self.child().pid()
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: Signal) {
        self.child().signal(signal);
    }

    /// Whether the process still runs.
    fn is_running(&mut self) -> bool {
        self.child_mut().is_running()
    }

    /// `kill -9` and reap; it stays down until it is restarted.
    fn kill(&mut self) {
        self.child_mut().kill();
    }

    /// SIGTERM, then its exit (at most [`READY_TIMEOUT`]).
    fn terminate(&mut self) -> Stopped {
        self.child_mut().terminate()
    }

    /// Waits (at most [`READY_TIMEOUT`]) for the process to exit by itself.
    fn wait_exit(&mut self) -> ExitStatus {
        self.child_mut().wait_exit()
    }

    /// Its log so far, when its output goes to a file.
    fn log(&self) -> String {
        self.child().log()
    }

    /// Polls `condition` until it holds; fails early when the process exits and after
    /// [`CONDITION_TIMEOUT`], quoting its log.
    fn wait_while_running(&mut self, what: &str, condition: impl FnMut() -> bool) {
        self.child_mut().wait_while_running(what, CONDITION_TIMEOUT, condition);
    }

    /// [`Self::wait_while_running`] with another deadline.
    fn wait_while_running_within(
        &mut self,
        what: &str,
        timeout: Duration,
        condition: impl FnMut() -> bool,
    ) {
        self.child_mut().wait_while_running(what, timeout, condition);
    }
}
