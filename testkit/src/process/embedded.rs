//! An SC on this test process's own threads, through the `sluice_sc` library (`Sc::start`, the
//! very code the `sluice-sc` binary runs): for the tests of `sluice-spu`, which get only their
//! own package's binary from Cargo and whose subject is the SPU. It needs no `sluice-sc` binary
//! and starts in milliseconds; a test of the SC itself, or one that kills or pauses the SC,
//! uses [`super::ScProcess`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_sc::admin_client::AdminClient;
use sluice_sc::config::ScArgs;
use sluice_sc::process::{Sc, StartError};
use sluice_sc::store::StoreError;

/// Longest wait for the store of an SC this process stopped to be released (see
/// [`EmbeddedSc::start_with`]).
pub const RESTART_LOCK_WAIT: Duration = Duration::from_secs(10);

/// An SC running on this process's threads; shut down on drop.
pub struct EmbeddedSc {
    sc: Option<Sc>,
    /// The public (admin and metadata) address it bound.
    pub public_address: SocketAddr,
    /// The private address SPUs dial.
    pub private_address: SocketAddr,
}

impl EmbeddedSc {
    /// The arguments of an SC with an embedded store in `data_dir`, on OS-chosen loopback
    /// ports, for a test to change before [`EmbeddedSc::start_with`].
    pub fn args(data_dir: &Path) -> ScArgs {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        ScArgs {
            metrics_address: Some(any),
            public_address: Some(any),
            private_address: Some(any),
            data_dir: Some(data_dir.to_owned()),
            ..ScArgs::default()
        }
    }

    /// [`EmbeddedSc::args`] with a 3 s heartbeat timeout, started.
    pub fn start(data_dir: &Path) -> EmbeddedSc {
        Self::start_with(ScArgs { heartbeat_timeout_ms: Some(3_000), ..Self::args(data_dir) })
    }

    /// An SC with `args`; returns once it listens (active, or standby on a Consul store).
    ///
    /// A restart in the same data directory may find its store still locked by the SC this
    /// process just stopped: an idle admin connection thread of that SC notices the shutdown
    /// only at its next poll ([`sluice_sc::server::IDLE_POLL`]) and holds the store until then.
    /// The start is retried while the lock's holder is this process, for up to
    /// [`RESTART_LOCK_WAIT`].
    pub fn start_with(args: ScArgs) -> EmbeddedSc {
        let config = args.resolve().expect("an SC configuration");
        let deadline = Instant::now() + RESTART_LOCK_WAIT;
        let sc = loop {
            match Sc::start(&config) {
                Ok(sc) => break sc,
                Err(StartError::Store(StoreError::Locked { holder_pid, .. }))
                    if holder_pid == Some(std::process::id()) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => panic!("start the SC: {error}"),
            }
        };
        EmbeddedSc {
            public_address: sc.public_address,
            private_address: sc.private_address,
            sc: Some(sc),
        }
    }

    /// An admin client connected to this SC.
    pub fn admin(&self) -> AdminClient {
        AdminClient::connect(self.public_address).expect("connect to the SC")
    }

    /// Whether it holds the leadership (always, on an embedded store).
    pub fn is_active(&self) -> bool {
        self.sc.as_ref().is_some_and(Sc::is_active)
    }

    /// Shuts it down now (its listeners close, its threads end).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(sc) = self.sc.take() {
            sc.shutdown();
        }
    }
}

impl Drop for EmbeddedSc {
    fn drop(&mut self) {
        self.shutdown();
    }
}
