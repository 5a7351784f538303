//! Test harness: real `sluice-sc` and `sluice-spu` processes on OS-chosen ports with temporary
//! data directories, each killed by its `Child` handle when its guard drops.
//!
//! Binaries: `SLUICE_SC_BIN` / `SLUICE_SPU_BIN`, else `sluice-sc` / `sluice-spu` next to the
//! test executable's target directory (`<target>/debug/`). Build them first:
//! `cargo build -p sluice-sc -p sluice-spu`. A missing binary fails the test with that hint.

#![allow(dead_code)]

pub mod fake;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_client::{ClientConfig, Cluster, SpuId, SpuSpec};
use sluice_proto::object::{Endpoint, SpuType};

/// Longest wait for a process to report its addresses.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for an eventually true condition.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of a binary: the env override, else next to the test executable's target dir.
pub fn binary(name: &str, env: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env}={} is not a file", path.display());
        return path;
    }
    // <target>/debug/deps/<test>-<hash> -> <target>/debug/<name>
    let exe = std::env::current_exe().expect("current exe");
    let candidates: Vec<PathBuf> =
        exe.ancestors().skip(1).take(3).map(|directory| directory.join(name)).collect();
    candidates.iter().find(|path| path.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "{name} not found (looked at {candidates:?}); build it with `cargo build -p {name}` \
             using the same target dir as the tests, or set {env}"
        )
    })
}

/// A child process killed (and reaped) when dropped, also while it is still starting.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `condition` until it returns `Some`, or panics with `what` after the deadline.
pub fn wait_for<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `key=value` lines of a ready file written by a process, once it exists.
fn wait_ready_file(child: &mut Child, path: &Path, what: &str) -> String {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("{what} exited before it was ready: {status}");
        }
        assert!(Instant::now() < deadline, "{what} not ready within {READY_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ready_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| line.strip_prefix(&format!("{key}="))).map(str::to_owned)
}

/// A running `sluice-sc`; killed on drop.
pub struct ScProcess {
    child: ChildGuard,
    pub public_address: SocketAddr,
    pub private_address: SocketAddr,
    data_dir: PathBuf,
    heartbeat_timeout_ms: u64,
}

impl ScProcess {
    pub fn start(data_dir: &Path) -> ScProcess {
        Self::start_with(data_dir, 5_000)
    }

    /// An SC that marks an SPU offline after `heartbeat_timeout_ms` without a heartbeat.
    pub fn start_with(data_dir: &Path, heartbeat_timeout_ms: u64) -> ScProcess {
        std::fs::create_dir_all(data_dir).expect("create the SC's directory");
        let any = "127.0.0.1:0".parse().unwrap();
        let (child, public_address, private_address) =
            spawn_sc(data_dir, heartbeat_timeout_ms, any, any);
        ScProcess {
            child,
            public_address,
            private_address,
            data_dir: data_dir.to_owned(),
            heartbeat_timeout_ms,
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(&self.public_address.to_string())
    }

    pub fn kill(self) {
        drop(self);
    }

    /// `kill -9`, reaping the process; it stays down until [`ScProcess::restart`].
    pub fn crash(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Starts the SC again on its data directory and its ports (the OS chose them at the first
    /// start; SPUs and clients know them), once the old process is gone.
    pub fn restart(&mut self) {
        self.crash();
        let (child, _, _) = spawn_sc(
            &self.data_dir,
            self.heartbeat_timeout_ms,
            self.public_address,
            self.private_address,
        );
        self.child = child;
    }
}

fn spawn_sc(
    data_dir: &Path,
    heartbeat_timeout_ms: u64,
    public: SocketAddr,
    private: SocketAddr,
) -> (ChildGuard, SocketAddr, SocketAddr) {
    let ready_file = data_dir.join("sc.ready");
    let _ = std::fs::remove_file(&ready_file);
    let child = Command::new(binary("sluice-sc", "SLUICE_SC_BIN"))
        .arg(format!("--public-address={public}"))
        .arg(format!("--private-address={private}"))
        .arg("--metrics-address=127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir.join("sc"))
        .arg("--ready-file")
        .arg(&ready_file)
        .arg(format!("--heartbeat-timeout-ms={heartbeat_timeout_ms}"))
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice-sc");
    let mut child = ChildGuard(child);
    let text = wait_ready_file(&mut child.0, &ready_file, "sluice-sc");
    let address = |key: &str| -> SocketAddr {
        ready_value(&text, key)
            .unwrap_or_else(|| panic!("no {key} in {text:?}"))
            .parse()
            .expect("address")
    };
    let (public, private) = (address("public"), address("private"));
    (child, public, private)
}

/// A running `sluice-spu`; killed on drop.
pub struct SpuProcess {
    child: ChildGuard,
    pub id: i32,
    pub public_address: SocketAddr,
    pub core_addresses: Vec<SocketAddr>,
    cores: u16,
    sc_private_address: SocketAddr,
    data_dir: PathBuf,
    extra: Vec<String>,
}

impl SpuProcess {
    /// Starts SPU `id` with `cores` cores, registers it at the SC as a custom SPU with the
    /// public address it printed, and waits until it reports ready (registered, listening).
    pub fn start_custom(
        id: i32,
        cores: u16,
        sc: &ScProcess,
        cluster: &Cluster,
        data_dir: &Path,
        extra: &[&str],
    ) -> SpuProcess {
        let mut child = spawn_spu(id, cores, sc.private_address, data_dir, extra);
        let (public_address, private_address) = read_addresses(&mut child.0, id);
        let endpoint =
            |address: SocketAddr| Endpoint::new(address.ip().to_string(), address.port());
        let spec = SpuSpec {
            id: SpuId(id),
            spu_type: SpuType::Custom,
            rack: None,
            public_endpoint: endpoint(public_address),
            private_endpoint: endpoint(private_address),
            encryption: Default::default(),
        };
        cluster.admin().register_spu(spec).expect("register the SPU");
        let core_addresses = wait_spu_ready(&mut child, id, data_dir);
        SpuProcess {
            child,
            id,
            public_address,
            core_addresses,
            cores,
            sc_private_address: sc.private_address,
            data_dir: data_dir.to_owned(),
            extra: extra.iter().map(|arg| arg.to_string()).collect(),
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) with kill(1) to the SPU process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.0.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The process id (for signals sent while the test holds no handle to the child).
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Where this SPU keeps its replicas (`spu-<id>/<topic>-<partition>/` below it).
    pub fn data_root(&self) -> PathBuf {
        self.data_dir.join("spu")
    }

    /// The record batches of this SPU's replica of `topic`-`partition`, from its files.
    pub fn log_batches(&self, topic: &str, partition: u32) -> Vec<(i64, Vec<u8>)> {
        let directory =
            self.data_root().join(format!("spu-{}", self.id)).join(format!("{topic}-{partition}"));
        log_batches(&directory)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.0.try_wait().expect("poll sluice-spu").is_none()
    }

    /// SIGTERM, waits until it exited, then the same SPU again (a rolling restart's step).
    pub fn stop_and_restart(&mut self) {
        self.signal("TERM");
        wait_for("the SPU to exit after SIGTERM", || {
            self.child.0.try_wait().expect("poll sluice-spu").map(|_| ())
        });
        self.start_again();
    }

    /// `kill -9`, reaping the process; it stays down.
    pub fn crash(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// `kill -9`, then the same SPU (id, data directory) again, on new ports; waits until it
    /// is registered again.
    pub fn crash_and_restart(&mut self) {
        self.crash();
        self.start_again();
    }

    /// Starts the SPU again (its process is gone) and waits until it is registered.
    fn start_again(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut child =
            spawn_spu(self.id, self.cores, self.sc_private_address, &self.data_dir, &extra);
        let (public_address, _) = read_addresses(&mut child.0, self.id);
        self.core_addresses = wait_spu_ready(&mut child, self.id, &self.data_dir);
        self.public_address = public_address;
        self.child = child;
    }
}

fn ready_file_path(data_dir: &Path, id: i32) -> PathBuf {
    data_dir.join(format!("spu-{id}.ready"))
}

fn spawn_spu(id: i32, cores: u16, sc: SocketAddr, data_dir: &Path, extra: &[&str]) -> ChildGuard {
    let ready_file = ready_file_path(data_dir, id);
    let _ = std::fs::remove_file(&ready_file);
    let child = Command::new(binary("sluice-spu", "SLUICE_SPU_BIN"))
        .arg(format!("--id={id}"))
        .arg(format!("--sc={sc}"))
        .args(["--public-address=127.0.0.1:0", "--private-address=127.0.0.1:0"])
        .args(["--metrics-address=127.0.0.1:0", "--advertised-host=127.0.0.1"])
        .arg(format!("--cores={cores}"))
        .arg("--data-dir")
        .arg(data_dir.join("spu"))
        .arg("--ready-file")
        .arg(&ready_file)
        .args(extra)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice-spu");
    ChildGuard(child)
}

/// Waits for the SPU's ready file; returns its per-core addresses.
fn wait_spu_ready(child: &mut ChildGuard, id: i32, data_dir: &Path) -> Vec<SocketAddr> {
    let text = wait_ready_file(&mut child.0, &ready_file_path(data_dir, id), "sluice-spu");
    let mut core_addresses = Vec::new();
    while let Some(address) = ready_value(&text, &format!("core.{}", core_addresses.len())) {
        core_addresses.push(address.parse().expect("core address"));
    }
    core_addresses
}

/// Reads the SPU's stdout until it printed its public and private addresses; drains the rest
/// in the background.
fn read_addresses(child: &mut Child, id: i32) -> (SocketAddr, SocketAddr) {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut public, mut private) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(address) = line.strip_prefix("public address: ") {
                public = Some(address.trim().to_owned());
            }
            if let Some(address) = line.strip_prefix("private address: ") {
                private = Some(address.trim().to_owned());
            }
            if public.is_some() && private.is_some() {
                let _ = sender.send((public.take(), private.take()));
            }
        }
    });
    let addresses = receiver.recv_timeout(READY_TIMEOUT).ok();
    let Some((Some(public), Some(private))) = addresses else {
        panic!("sluice-spu {id} did not print its public and private addresses")
    };
    (public.parse().expect("public address"), private.parse().expect("private address"))
}

/// An SC and SPUs, with a connected client.
pub struct TestCluster {
    pub spus: Vec<SpuProcess>,
    pub cluster: Cluster,
    pub sc: ScProcess,
    pub directory: tempfile::TempDir,
}

impl TestCluster {
    /// An SC and `spu_count` custom SPUs of `cores` cores each, all online.
    pub fn start(spu_count: i32, cores: u16) -> TestCluster {
        Self::start_with(spu_count, cores, &[])
    }

    /// As [`TestCluster::start`], with extra `sluice-spu` flags for every SPU.
    pub fn start_with(spu_count: i32, cores: u16, extra: &[&str]) -> TestCluster {
        Self::start_configured(spu_count, cores, extra, 5_000)
    }

    /// As [`TestCluster::start_with`], with the SC's heartbeat timeout.
    pub fn start_configured(
        spu_count: i32,
        cores: u16,
        extra: &[&str],
        heartbeat_timeout_ms: u64,
    ) -> TestCluster {
        let directory = tempfile::tempdir().expect("temp dir");
        let sc = ScProcess::start_with(directory.path(), heartbeat_timeout_ms);
        let cluster = Cluster::connect(sc.client_config()).expect("connect to the SC");
        let spus = (1..=spu_count)
            .map(|id| SpuProcess::start_custom(id, cores, &sc, &cluster, directory.path(), extra))
            .collect();
        let test = TestCluster { spus, cluster, sc, directory };
        test.wait_spus_online(spu_count as usize);
        test
    }

    pub fn wait_spus_online(&self, count: usize) {
        wait_for("SPUs online in the metadata", || {
            self.cluster.wait_for_metadata(Duration::from_millis(200), |snapshot| {
                let online = snapshot.spus.values().filter(|spu| spu.online).count();
                (online >= count).then_some(())
            })
        });
    }

    /// Creates a topic and waits until every partition has a leader in the client's view.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with(name, sluice_client::TopicSpec::computed(partitions, 1));
    }

    /// Creates a topic with `spec` and waits until every partition has a leader.
    pub fn create_topic_with(&self, name: &str, spec: sluice_client::TopicSpec) {
        let partitions = spec.partition_count();
        self.cluster.admin().create_topic(name, spec).expect("create topic");
        wait_for("topic leaders", || {
            let _ = self.cluster.refresh_metadata();
            let snapshot = self.cluster.metadata();
            let ready = (0..partitions).all(|partition| snapshot.route(name, partition).is_ok());
            ready.then_some(())
        });
    }
}

/// The record batches of a replica directory's segment files, as (base offset, bytes), sorted
/// by base offset, each segment read until the first position that does not hold a whole
/// valid batch (the preallocated zeros past the log end).
pub fn log_batches(directory: &Path) -> Vec<(i64, Vec<u8>)> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(directory)
        .map(|entries| entries.filter_map(|entry| Some(entry.ok()?.path())).collect())
        .unwrap_or_default();
    segments.retain(|path| path.extension().is_some_and(|extension| extension == "log"));
    segments.sort();
    let mut batches = Vec::new();
    for segment in segments {
        let Ok(bytes) = std::fs::read(&segment) else { continue };
        let mut position = 0;
        while let Some(header) = bytes.get(position..position + 12) {
            let base = i64::from_be_bytes(header[..8].try_into().unwrap());
            let length = i32::from_be_bytes(header[8..12].try_into().unwrap());
            if length <= 0 {
                break;
            }
            let end = position + 12 + length as usize;
            let Some(batch) = bytes.get(position..end) else { break };
            if sluice_proto::record::validate_batch(batch, 64 << 20).is_err() {
                break;
            }
            batches.push((base, batch.to_vec()));
            position = end;
        }
    }
    batches
}
