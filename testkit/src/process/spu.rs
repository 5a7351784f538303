//! `sluice-spu` as a child process: flags that bind 127.0.0.1 on OS-chosen ports, the ready
//! file it writes once registered at the SC read for every address, and restarts on the same
//! data directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_proto::ids::{Offset, SpuId};
use sluice_proto::object::{Endpoint, SpuSpec, SpuType};
use sluice_sc::admin_client::AdminClient;

use super::binary::binary;
use super::child::{Output, OwnedChild};
use super::defaults_not_given;
use super::replica_log::log_batches;
use super::wait::{parse_ready_file, unique_ready_file, READY_TIMEOUT};
use super::ServerProcess;

/// How to start a `sluice-spu`: see [`SpuProcess::builder`].
#[derive(Clone, Debug)]
pub struct SpuBuilder {
    data_dir: PathBuf,
    id: Option<i32>,
    sc: Option<String>,
    cores: u16,
    config: Option<PathBuf>,
    flags: Vec<String>,
    output: Output,
    register_at: Option<SocketAddr>,
    name: Option<String>,
}

impl SpuBuilder {
    /// `--id`.
    pub fn id(mut self, id: i32) -> Self {
        self.id = Some(id);
        self
    }

    /// `--sc`: the SC's private address, or a `consul://` URL.
    pub fn sc(mut self, sc: impl ToString) -> Self {
        self.sc = Some(sc.to_string());
        self
    }

    /// `--cores` (1 by default).
    pub fn cores(mut self, cores: u16) -> Self {
        self.cores = cores;
        self
    }

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

    /// Where its output goes (stderr inherited by default).
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The name failures use (`spu-<id>` by default).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Registers the SPU at the SC whose public address is `sc_public_address` as a custom SPU
    /// with the addresses it bound (known only once it runs, so it is registered between its
    /// start and its ready file), advertised as 127.0.0.1. Without this the test registers it
    /// beforehand (or an SPU group does), on any ports.
    pub fn register_custom(mut self, sc_public_address: SocketAddr) -> Self {
        self.register_at = Some(sc_public_address);
        self.flags.push("--advertised-host=127.0.0.1".into());
        self
    }

    /// Starts the SPU and waits until its ready file says it registered at the SC.
    pub fn start(self) -> SpuProcess {
        let ready_file = unique_ready_file(&self.data_dir, "spu");
        let (child, text) = self.spawn(&ready_file, self.register_at);
        let addresses = ready_addresses(&text);
        SpuProcess {
            child,
            public_address: addresses.public,
            private_address: addresses.private,
            metrics_address: addresses.metrics,
            core_addresses: addresses.cores,
            core_private_addresses: addresses.core_privates,
            ready_file,
            builder: self,
        }
    }

    fn spawn(&self, ready_file: &Path, register_at: Option<SocketAddr>) -> (OwnedChild, String) {
        let _ = std::fs::remove_file(ready_file);
        let mut command = Command::new(binary("sluice-spu"));
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        if let Some(id) = self.id {
            command.arg(format!("--id={id}"));
        }
        if let Some(sc) = &self.sc {
            command.arg(format!("--sc={sc}"));
        }
        let defaults = [
            "--public-address=127.0.0.1:0".to_owned(),
            "--private-address=127.0.0.1:0".into(),
            "--metrics-address=127.0.0.1:0".into(),
            // The host's disk may be nearly full; a test fills its own volume to test floors.
            "--free-bytes-min=0".into(),
            "--free-space-percent-min=0".into(),
            format!("--cores={}", self.cores),
        ];
        command
            .args(defaults_not_given(&defaults, &self.flags))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--ready-file")
            .arg(ready_file)
            .args(&self.flags);
        let name = match (&self.name, self.id) {
            (Some(name), _) => name.clone(),
            (None, Some(id)) => format!("spu-{id}"),
            (None, None) => "sluice-spu".into(),
        };
        let reads_stdout = self.builder_reads_stdout();
        let mut child = OwnedChild::spawn(&name, command, &self.output, reads_stdout);
        if reads_stdout {
            let (public, private) = printed_addresses(&mut child);
            if let Some(sc) = register_at {
                let id = self.id.expect("an SPU registered by the test has an id");
                register(sc, id, public, private);
            }
        }
        let mut text = String::new();
        child.wait_while_running("the SPU to register with the SC", READY_TIMEOUT, || {
            text = std::fs::read_to_string(ready_file).unwrap_or_default();
            !text.is_empty()
        });
        (child, text)
    }

    /// Whether the test reads the addresses the SPU prints (to register it), on every start:
    /// its standard output is piped and must be drained.
    fn builder_reads_stdout(&self) -> bool {
        self.register_at.is_some()
    }
}

fn register(sc_public_address: SocketAddr, id: i32, public: SocketAddr, private: SocketAddr) {
    let endpoint = |address: SocketAddr| Endpoint::new(address.ip().to_string(), address.port());
    let spec = SpuSpec {
        id: SpuId(id),
        spu_type: SpuType::Custom,
        rack: None,
        public_endpoint: endpoint(public),
        private_endpoint: endpoint(private),
        encryption: Default::default(),
    };
    let mut admin = AdminClient::connect(sc_public_address).expect("connect to the SC");
    let registered = admin.register_spu(spec).expect("register the SPU");
    assert!(registered.error_code.is_ok(), "register SPU {id}: {registered:?}");
}

/// Reads the SPU's stdout until it printed its public and private addresses; drains the rest
/// on a thread of its own (a full pipe would block the SPU).
fn printed_addresses(child: &mut OwnedChild) -> (SocketAddr, SocketAddr) {
    let name = child.name().to_owned();
    let stdout = child.child_mut().stdout.take().expect("a piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut public, mut private) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(address) = line.strip_prefix("public address: ") {
                public = address.trim().parse().ok();
            }
            if let Some(address) = line.strip_prefix("private address: ") {
                private = address.trim().parse().ok();
            }
            if let (Some(public), Some(private)) = (public, private) {
                let _ = sender.send((public, private));
            }
        }
    });
    receiver
        .recv_timeout(READY_TIMEOUT)
        .unwrap_or_else(|_| panic!("{name} did not print its public and private addresses"))
}

/// The `key=value` lines an SPU wrote to its ready file, as addresses.
fn ready_addresses(text: &str) -> ReadyAddresses {
    let lines = parse_ready_file(text);
    let address = |key: &str| -> Option<SocketAddr> {
        Some(lines.get(key)?.parse().unwrap_or_else(|_| panic!("{key} in {text:?}")))
    };
    let required =
        |key: &str| address(key).unwrap_or_else(|| panic!("no {key} address in {text:?}"));
    let per_core = |prefix: &str| -> Vec<SocketAddr> {
        (0..).map_while(|core| address(&format!("{prefix}.{core}"))).collect()
    };
    ReadyAddresses {
        public: required("public"),
        private: required("private"),
        metrics: required("metrics"),
        cores: per_core("core"),
        core_privates: per_core("core_private"),
    }
}

struct ReadyAddresses {
    public: SocketAddr,
    private: SocketAddr,
    metrics: SocketAddr,
    cores: Vec<SocketAddr>,
    core_privates: Vec<SocketAddr>,
}

/// A running `sluice-spu`; killed on drop.
///
/// ```no_run
/// use sluice_testkit::process::{ScProcess, ServerProcess, SpuProcess};
///
/// let directory = tempfile::tempdir().unwrap();
/// let sc = ScProcess::start(&directory.path().join("sc"));
/// let mut spu = SpuProcess::builder(&directory.path().join("spu"))
///     .id(1)
///     .sc(sc.private_address)
///     .cores(2)
///     .register_custom(sc.public_address)
///     .start();
/// spu.restart(); // kill -9, then the same SPU on its data directory
/// ```
#[derive(Debug)]
pub struct SpuProcess {
    child: OwnedChild,
    /// Its public address (produce, fetch; any core forwards).
    pub public_address: SocketAddr,
    /// Its private (replication) address.
    pub private_address: SocketAddr,
    /// Its metrics and health endpoint.
    pub metrics_address: SocketAddr,
    /// Each core's own public port.
    pub core_addresses: Vec<SocketAddr>,
    /// Each core's own private (replication) port.
    pub core_private_addresses: Vec<SocketAddr>,
    ready_file: PathBuf,
    builder: SpuBuilder,
}

impl SpuProcess {
    /// An SPU on `data_dir` (`--data-dir`: its replicas are in `spu-<id>/` below it) on
    /// OS-chosen loopback ports, one core, no minimum of free disk space.
    pub fn builder(data_dir: &Path) -> SpuBuilder {
        SpuBuilder {
            data_dir: data_dir.to_owned(),
            id: None,
            sc: None,
            cores: 1,
            config: None,
            flags: Vec::new(),
            output: Output::default(),
            register_at: None,
            name: None,
        }
    }

    /// Its id; panics for an SPU whose id came from its configuration file.
    pub fn id(&self) -> i32 {
        self.builder.id.expect("the SPU was started with .id()")
    }

    /// Its `--data-dir` (`spu-<id>/<topic>-<partition>/` below it).
    pub fn data_dir(&self) -> &Path {
        &self.builder.data_dir
    }

    /// The record batches of this SPU's replica of `topic`-`partition`, read from its files.
    pub fn log_batches(&self, topic: &str, partition: u32) -> Vec<(Offset, Vec<u8>)> {
        let directory =
            self.data_dir().join(format!("spu-{}", self.id())).join(format!("{topic}-{partition}"));
        log_batches(&directory)
    }

    /// Starts the same SPU (id, data directory, flags) again on new ports, after killing it
    /// if it still runs, and waits until it registered again (it is not registered anew).
    pub fn restart(&mut self) {
        self.child.kill();
        let (child, text) = self.builder.spawn(&self.ready_file, None);
        self.child = child;
        self.set_addresses(&text);
    }

    fn set_addresses(&mut self, ready_file_text: &str) {
        let addresses = ready_addresses(ready_file_text);
        self.public_address = addresses.public;
        self.private_address = addresses.private;
        self.metrics_address = addresses.metrics;
        self.core_addresses = addresses.cores;
        self.core_private_addresses = addresses.core_privates;
    }
}

impl ServerProcess for SpuProcess {
    fn child(&self) -> &OwnedChild {
        &self.child
    }

    fn child_mut(&mut self) -> &mut OwnedChild {
        &mut self.child
    }
}
