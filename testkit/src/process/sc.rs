//! `sluice-sc` as a child process: flags that bind 127.0.0.1 on OS-chosen ports, a ready file
//! read for the bound addresses and the role, a restart on the same data directory and ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_sc::admin_client::AdminClient;

use super::binary::binary;
use super::child::{Output, OwnedChild};
use super::wait::{
    parse_ready_file, read_ready_file, unique_ready_file, wait_for_within, READY_TIMEOUT,
    TAKEOVER_TIMEOUT,
};
use super::{defaults_not_given, ServerProcess};

/// What [`ScBuilder::start`] waits for once the ready file exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScReadiness {
    /// `role=active`: the SC serves its APIs (a standby waits until it takes over).
    #[default]
    Active,
    /// Listening, active or standby (see [`ScProcess::is_active`]).
    Listening,
}

/// How to start a `sluice-sc`: see [`ScProcess::builder`].
#[derive(Clone, Debug)]
pub struct ScBuilder {
    data_dir: PathBuf,
    public_address: SocketAddr,
    private_address: SocketAddr,
    config: Option<PathBuf>,
    flags: Vec<String>,
    environment: Vec<(String, String)>,
    output: Output,
    readiness: ScReadiness,
}

impl ScBuilder {
    /// A TOML configuration file (`--config`); the builder's flags win over it.
    pub fn config(mut self, path: &Path) -> Self {
        self.config = Some(path.to_owned());
        self
    }

    /// Extra command-line flags, after the builder's own.
    pub fn flags<S: AsRef<str>>(mut self, flags: &[S]) -> Self {
        self.flags.extend(flags.iter().map(|flag| flag.as_ref().to_owned()));
        self
    }

    /// `--heartbeat-timeout-ms`: how long an SPU may stay silent before it is offline.
    pub fn heartbeat_timeout_ms(self, timeout_ms: u64) -> Self {
        self.flags(&[format!("--heartbeat-timeout-ms={timeout_ms}")])
    }

    /// An environment variable of the process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.environment.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Where its output goes (stderr inherited by default).
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// Returns from [`Self::start`] once it listens, active or standby.
    pub fn allow_standby(mut self) -> Self {
        self.readiness = ScReadiness::Listening;
        self
    }

    /// Starts the SC and waits until its ready file says it is ready.
    pub fn start(self) -> ScProcess {
        std::fs::create_dir_all(&self.data_dir).expect("create the SC's data directory");
        let ready_file = unique_ready_file(&self.data_dir, "sc");
        let (child, addresses) = self.spawn(&ready_file);
        let sc = ScProcess {
            child,
            public_address: addresses.public,
            private_address: addresses.private,
            metrics_address: addresses.metrics,
            data_dir: self.data_dir.clone(),
            ready_file,
            builder: self,
        };
        if sc.builder.readiness == ScReadiness::Active {
            sc.wait_active();
        }
        sc
    }

    fn spawn(&self, ready_file: &Path) -> (OwnedChild, ScAddresses) {
        let _ = std::fs::remove_file(ready_file);
        let mut command = Command::new(binary("sluice-sc"));
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        let defaults = [
            format!("--public-address={}", self.public_address),
            format!("--private-address={}", self.private_address),
            "--metrics-address=127.0.0.1:0".into(),
        ];
        command
            .args(defaults_not_given(&defaults, &self.flags))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--ready-file")
            .arg(ready_file)
            .args(&self.flags)
            .envs(self.environment.iter().map(|(name, value)| (name, value)));
        let mut child = OwnedChild::spawn("sluice-sc", command, &self.output, false);
        let mut text = String::new();
        child.wait_while_running("sluice-sc's ready file", READY_TIMEOUT, || {
            text = std::fs::read_to_string(ready_file).unwrap_or_default();
            text.contains("role=")
        });
        let lines = parse_ready_file(&text);
        let address = |key: &str| -> SocketAddr {
            lines
                .get(key)
                .unwrap_or_else(|| panic!("no {key} address in {text:?}"))
                .parse()
                .expect("an address")
        };
        let addresses = ScAddresses {
            public: address("public"),
            private: address("private"),
            metrics: address("metrics"),
        };
        (child, addresses)
    }
}

struct ScAddresses {
    public: SocketAddr,
    private: SocketAddr,
    metrics: SocketAddr,
}

/// A running `sluice-sc`; killed on drop.
///
/// ```no_run
/// use sluice_testkit::process::{ScProcess, ServerProcess};
///
/// let directory = tempfile::tempdir().unwrap();
/// let mut sc = ScProcess::builder(&directory.path().join("sc")).heartbeat_timeout_ms(3_000).start();
/// let admin = sc.admin();
/// sc.restart(); // same data directory, same ports
/// ```
#[derive(Debug)]
pub struct ScProcess {
    child: OwnedChild,
    /// The public (admin and metadata) address it bound.
    pub public_address: SocketAddr,
    /// The private address SPUs dial.
    pub private_address: SocketAddr,
    /// Its metrics and health endpoint.
    pub metrics_address: SocketAddr,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    ready_file: PathBuf,
    builder: ScBuilder,
}

impl ScProcess {
    /// An SC on `data_dir` (created if missing) on OS-chosen loopback ports, embedded store.
    pub fn builder(data_dir: &Path) -> ScBuilder {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        ScBuilder {
            data_dir: data_dir.to_owned(),
            public_address: any,
            private_address: any,
            config: None,
            flags: Vec::new(),
            environment: Vec::new(),
            output: Output::default(),
            readiness: ScReadiness::default(),
        }
    }

    /// `ScProcess::builder(data_dir).start()`: started and active.
    pub fn start(data_dir: &Path) -> ScProcess {
        Self::builder(data_dir).start()
    }

    /// An admin client connected to this SC.
    pub fn admin(&self) -> AdminClient {
        AdminClient::connect(self.public_address).expect("connect to the SC")
    }

    /// The configuration of a `sluice_client::Cluster` of this SC.
    pub fn client_config(&self) -> sluice_client::ClientConfig {
        sluice_client::ClientConfig::new(&self.public_address.to_string())
    }

    /// Whether the ready file says `role=active` now (a standby rewrites it on takeover).
    pub fn is_active(&self) -> bool {
        read_ready_file(&self.ready_file).get("role").is_some_and(|role| role == "active")
    }

    /// Waits (at most [`TAKEOVER_TIMEOUT`]) until the SC is active.
    pub fn wait_active(&self) {
        wait_for_within("the SC to be active", TAKEOVER_TIMEOUT, || self.is_active().then_some(()));
    }

    /// [`Self::restart`] with `flags` added to the ones it started with (e.g. turning
    /// `--authorization` on once SPUs are registered).
    pub fn restart_with_flags<S: AsRef<str>>(&mut self, flags: &[S]) {
        self.builder.flags.extend(flags.iter().map(|flag| flag.as_ref().to_owned()));
        self.restart();
    }

    /// Starts the SC again on its data directory and on the ports it bound first (SPUs and
    /// clients know them), after killing it if it still runs; waits as the first start did.
    pub fn restart(&mut self) {
        self.child.kill();
        self.builder.public_address = self.public_address;
        self.builder.private_address = self.private_address;
        let (child, addresses) = self.builder.spawn(&self.ready_file);
        self.child = child;
        self.metrics_address = addresses.metrics;
        if self.builder.readiness == ScReadiness::Active {
            self.wait_active();
        }
    }
}

impl ServerProcess for ScProcess {
    fn child(&self) -> &OwnedChild {
        &self.child
    }

    fn child_mut(&mut self) -> &mut OwnedChild {
        &mut self.child
    }
}
