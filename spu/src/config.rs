//! Configuration of the `sluice-spu` process: command-line flags, environment variables
//! (`SLUICE_SPU_*`) and an optional TOML file (`--config`).
//!
//! Precedence, highest first: flag, environment variable, TOML file, built-in default. Every
//! flag is optional in [`SpuArgs`] so that a value from the file is only used where neither a
//! flag nor a variable gave one; [`SpuArgs::resolve`] merges the three into a [`SpuConfig`] and
//! validates it. The core count is capped at the CPUs this process may run on: an executor is
//! pinned per core, and two executors on one CPU would only fight over it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use sluice_kvstore_consul::ScDiscoveryUrl;
use sluice_proto::frame::FRAME_BYTES_MAX_DEFAULT;
use sluice_proto::ids::SpuId;
use sluice_tls::{ClientAuth, ClientTlsFiles, ServerTlsFiles};

/// Default SC private (control) address.
pub const SC_ADDRESS_DEFAULT: &str = "127.0.0.1:9004";
/// Default shared public (client) address.
pub const PUBLIC_ADDRESS_DEFAULT: &str = "0.0.0.0:9005";
/// Default private (replication) address.
pub const PRIVATE_ADDRESS_DEFAULT: &str = "0.0.0.0:9006";
/// Default Prometheus address.
pub const METRICS_ADDRESS_DEFAULT: &str = "0.0.0.0:9007";
/// Default heartbeat interval towards the SC (well under the SC's 2 s offline timeout).
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 500;
/// Default interval between retention passes over every replica.
pub const RETENTION_INTERVAL_MS_DEFAULT: u64 = 30_000;
/// Default delay before a dropped replica's files are removed.
pub const DELETED_RETENTION_MS_DEFAULT: u64 = 60_000;
/// Default pace of removing dropped replicas' files (512 MiB/s).
pub const DELETE_BYTES_PER_SECOND_DEFAULT: u64 = 512 << 20;
/// Default free-space floor of the data volume: appends are refused below it.
pub const FREE_BYTES_MIN_DEFAULT: u64 = 2 << 30;
/// Default free-space floor, percent of the data volume's size.
pub const FREE_SPACE_PERCENT_MIN_DEFAULT: f64 = 5.0;
/// Default of `--tail-cache-bytes`: memory per core for the partitions' newest writes.
pub const TAIL_CACHE_BYTES_DEFAULT: u64 = 8 << 20;
/// Default time a follower may lag before it leaves the in-sync set (Kafka's default too):
/// long enough for a follower to ride out a slow disk moment, short enough that acks `all`
/// does not stall long on a follower that is alive but cannot keep up.
pub const REPLICA_LAG_MAX_MS_DEFAULT: u64 = 10_000;
/// Default of `--frame-read-timeout-ms`: a client that started a frame must finish it within
/// this time (a produce of 64 MiB at 10 MB/s takes 7 s); one that stops half-way is closed
/// instead of holding its buffer forever. Idle connections (no partial frame) are not timed.
pub const FRAME_READ_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Command-line flags of `sluice-spu`. Each also reads `SLUICE_SPU_<NAME>` and the TOML file
/// key of the same name with `_` instead of `-`.
#[derive(Clone, Debug, Default, Parser)]
#[command(name = "sluice-spu", version, about = "Sluice Streaming Processing Unit")]
pub struct SpuArgs {
    /// TOML file with any of the settings below (keys use `_`, e.g. `public_address`).
    #[arg(long, env = "SLUICE_SPU_CONFIG")]
    pub config: Option<PathBuf>,
    /// SPU id (registered at the SC, or belonging to an SPU group). Required.
    #[arg(long, env = "SLUICE_SPU_ID")]
    pub id: Option<i32>,
    /// SC private (control) addresses, comma separated, tried in order
    /// [default: 127.0.0.1:9004]. `consul://AGENT/CLUSTER` finds them through Consul instead:
    /// every passing instance of the service `sluice-sc-CLUSTER`, the active SC first
    /// (token: `--consul-token`, else `CONSUL_HTTP_TOKEN`).
    #[arg(long, env = "SLUICE_SPU_SC", value_delimiter = ',')]
    pub sc: Option<Vec<String>>,
    /// Shared client address, bound by every core with SO_REUSEPORT [default: 0.0.0.0:9005].
    /// Port 0 picks a free port once; every core binds that port.
    #[arg(long, env = "SLUICE_SPU_PUBLIC_ADDRESS")]
    pub public_address: Option<SocketAddr>,
    /// Replication address, SO_REUSEPORT too [default: 0.0.0.0:9006].
    #[arg(long, env = "SLUICE_SPU_PRIVATE_ADDRESS")]
    pub private_address: Option<SocketAddr>,
    /// Host put in the endpoints sent to the SC [default: the public address' IP, or
    /// 127.0.0.1 when it is unspecified].
    #[arg(long, env = "SLUICE_SPU_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,
    /// Per-core client ports are N + core; 0 (default) lets each core bind an OS-chosen port.
    #[arg(long, env = "SLUICE_SPU_CORE_PORT_BASE")]
    pub core_port_base: Option<u16>,
    /// Per-core replication ports are N + core; 0 (default) lets each core bind an OS-chosen
    /// port. Followers connect to the port of the core that owns the leader replica, so
    /// replication bytes never cross cores.
    #[arg(long, env = "SLUICE_SPU_CORE_PRIVATE_PORT_BASE")]
    pub core_private_port_base: Option<u16>,
    /// A follower that has not caught up with its leader's log end for this long leaves the
    /// in-sync set (the leader proposes it to the SC), milliseconds [default: 10000].
    #[arg(long, env = "SLUICE_SPU_REPLICA_LAG_MAX_MS")]
    pub replica_lag_max_ms: Option<u64>,
    /// Replicas live in DIR/spu-<id>/<topic>-<partition>/ [default: ./sluice-spu-data].
    #[arg(long, env = "SLUICE_SPU_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Executors, executor i pinned to the i-th CPU this process may use [default and maximum:
    /// the CPUs available].
    #[arg(long, env = "SLUICE_SPU_CORES")]
    pub cores: Option<u16>,
    /// Prometheus text at GET /metrics [default: 0.0.0.0:9007; port 0 allowed].
    #[arg(long, env = "SLUICE_SPU_METRICS_ADDRESS")]
    pub metrics_address: Option<SocketAddr>,
    /// Send fetched records with splice/sendfile [default: true]; false forces copying.
    #[arg(long, env = "SLUICE_SPU_ZERO_COPY")]
    pub zero_copy: Option<bool>,
    /// Drop the page-cache pages of records once they are sent [default: true]. Segments are
    /// written with O_DIRECT, so a consumer's read is what fills the page cache; keeping what
    /// was sent makes a catch-up consumer stream through fresh memory (and the kernel reclaim
    /// it later). false keeps the pages for other consumers of the same data.
    #[arg(long, env = "SLUICE_SPU_DROP_SENT_PAGES")]
    pub drop_sent_pages: Option<bool>,
    /// With zero-copy on, read fetched records with O_DIRECT into reused buffers (a few
    /// reads ahead of the socket) and send from there [default: true], instead of sendfile
    /// from the page cache. One copy into the socket, but no page cache: segments are written
    /// with O_DIRECT, so sendfile reads them into fresh page-cache memory first.
    #[arg(long, env = "SLUICE_SPU_DIRECT_READS")]
    pub direct_reads: Option<bool>,
    /// Largest frame accepted from a client, bytes [default: 64 MiB].
    #[arg(long, env = "SLUICE_SPU_FRAME_BYTES_MAX")]
    pub frame_bytes_max: Option<u32>,
    /// Milliseconds a client may take to send the rest of a frame it has started; past it the
    /// connection is closed (logged). A connection between requests is never timed out
    /// [default: 30000].
    #[arg(long, env = "SLUICE_SPU_FRAME_READ_TIMEOUT_MS")]
    pub frame_read_timeout_ms: Option<u64>,
    /// Refuse appends while the data volume has less free space than this; the floor in
    /// force is the larger of this and --free-space-percent-min [default: 2 GiB].
    #[arg(long, env = "SLUICE_SPU_FREE_BYTES_MIN")]
    pub free_bytes_min: Option<u64>,
    /// Refuse appends while the data volume has less than this percentage of its size free;
    /// the floor in force is the larger of this and --free-bytes-min (0 to 99.9)
    /// [default: 5].
    #[arg(long, env = "SLUICE_SPU_FREE_SPACE_PERCENT_MIN")]
    pub free_space_percent_min: Option<f64>,
    /// Write zeros this many bytes ahead of each active segment's end, in the background, so
    /// that appends overwrite written blocks instead of converting fallocated (unwritten)
    /// extents, which makes each fdatasync commit the journal [default: 0, off]. Helps small
    /// durable appends on an otherwise idle disk; costs a second write of every byte of the
    /// log and delays rounds that catch up with the zeros (a loaded SPU measured 12% less
    /// produce throughput and several times the p99 produce latency with 8 MiB).
    #[arg(long, env = "SLUICE_SPU_ZERO_FILL_BYTES")]
    pub zero_fill_bytes: Option<u64>,
    /// Memory per core for the partitions' newest writes, kept after writing them so that
    /// consumers keeping up get their records without a read from the disk. Each partition
    /// of the core gets an equal share and keeps at most its last few write rounds [default:
    /// 8 MiB; 0 turns it off].
    #[arg(long, env = "SLUICE_SPU_TAIL_CACHE_BYTES")]
    pub tail_cache_bytes: Option<u64>,
    /// Heartbeat interval towards the SC, milliseconds [default: 500].
    #[arg(long, env = "SLUICE_SPU_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// How often each core applies retention (time and size limits of the topics) to its
    /// replicas, milliseconds [default: 30000].
    #[arg(long, env = "SLUICE_SPU_RETENTION_INTERVAL_MS")]
    pub retention_interval_ms: Option<u64>,
    /// A replica this SPU no longer hosts (topic deleted, replica moved) is renamed to
    /// `<key>.deleted-<ms>` and removed this many milliseconds later [default: 60000].
    #[arg(long, env = "SLUICE_SPU_DELETED_RETENTION_MS")]
    pub deleted_retention_ms: Option<u64>,
    /// Such files are removed at most this fast, bytes per second, cut from their end in
    /// 64 MiB steps (freeing gigabytes at once holds every fdatasync behind one journal
    /// commit, longer on volumes mounted with `discard`); 0 removes at once
    /// [default: 536870912 (512 MiB/s)].
    #[arg(long, env = "SLUICE_SPU_DELETE_BYTES_PER_SECOND")]
    pub delete_bytes_per_second: Option<u64>,
    /// Once registered with an SC and listening: write `public=`, `private=`, `metrics=` and
    /// `core.<i>=` lines to this file (temporary file, then rename).
    #[arg(long, env = "SLUICE_SPU_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Consul agent (`host:port` or `http(s)://host:port`) to register this SPU with, as the
    /// service `sluice-spu` with an HTTP check on its `/health/ready`; deregistered on a clean
    /// stop [default: none, no registration].
    #[arg(long, env = "SLUICE_SPU_CONSUL_ADDRESS")]
    pub consul_address: Option<String>,
    /// Consul ACL token (registration and `--sc consul://` look-ups).
    #[arg(long, env = "SLUICE_SPU_CONSUL_TOKEN", hide_env_values = true)]
    pub consul_token: Option<String>,
    /// Cluster name: put in the Consul registration's tags, and, with TLS, the suffix of the
    /// in-cluster certificate names (`spu-<id>.<cluster>`, `sc.<cluster>`) [default: default].
    #[arg(long, env = "SLUICE_SPU_CLUSTER")]
    pub cluster: Option<String>,
    /// PEM certificate chain of this SPU: turns TLS on for every listener (public: clients;
    /// private: replication, client certificates required) and is presented on this SPU's
    /// own links (to the SC, to leaders). In-cluster it must name `spu-<id>.<cluster>`
    /// [default: none, plaintext].
    #[arg(long, env = "SLUICE_SPU_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "SLUICE_SPU_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: client certificates, the SC's and other SPUs' certificates must chain to
    /// it (required with `--tls-cert`).
    #[arg(long, env = "SLUICE_SPU_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificates on the public listeners: none, optional or required (the private
    /// listeners always require one) [default: none].
    #[arg(long, env = "SLUICE_SPU_TLS_CLIENT_AUTH")]
    pub tls_client_auth: Option<ClientAuth>,
    /// PEM certificate chain for the public listeners only (shared and per core), e.g. one
    /// your clients' CA issued; with `--public-tls-key`. The private listeners and this SPU's
    /// links keep `--tls-cert` [default: --tls-cert].
    #[arg(long, env = "SLUICE_SPU_PUBLIC_TLS_CERT", requires = "public_tls_key")]
    pub public_tls_cert: Option<PathBuf>,
    /// PEM private key of `--public-tls-cert`.
    #[arg(long, env = "SLUICE_SPU_PUBLIC_TLS_KEY", requires = "public_tls_cert")]
    pub public_tls_key: Option<PathBuf>,
    /// PEM CA bundle that client certificates on the public listeners must chain to
    /// [default: --tls-ca].
    #[arg(long, env = "SLUICE_SPU_PUBLIC_TLS_CA")]
    pub public_tls_ca: Option<PathBuf>,
    /// Rack of this SPU, put in the Consul registration's tags (placement uses the rack given
    /// to `sluice spu register`) [default: none].
    #[arg(long, env = "SLUICE_SPU_RACK")]
    pub rack: Option<String>,
}

/// The TOML file: the same settings as the flags, all optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    id: Option<i32>,
    sc: Option<ScAddresses>,
    public_address: Option<SocketAddr>,
    private_address: Option<SocketAddr>,
    advertised_host: Option<String>,
    core_port_base: Option<u16>,
    core_private_port_base: Option<u16>,
    replica_lag_max_ms: Option<u64>,
    data_dir: Option<PathBuf>,
    cores: Option<u16>,
    metrics_address: Option<SocketAddr>,
    zero_copy: Option<bool>,
    drop_sent_pages: Option<bool>,
    direct_reads: Option<bool>,
    frame_bytes_max: Option<u32>,
    frame_read_timeout_ms: Option<u64>,
    free_bytes_min: Option<u64>,
    free_space_percent_min: Option<f64>,
    zero_fill_bytes: Option<u64>,
    tail_cache_bytes: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    retention_interval_ms: Option<u64>,
    deleted_retention_ms: Option<u64>,
    delete_bytes_per_second: Option<u64>,
    ready_file: Option<PathBuf>,
    consul_address: Option<String>,
    consul_token: Option<String>,
    cluster: Option<String>,
    rack: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_auth: Option<ClientAuth>,
    public_tls_cert: Option<PathBuf>,
    public_tls_key: Option<PathBuf>,
    public_tls_ca: Option<PathBuf>,
}

/// `sc` in TOML: a list or one comma-separated string.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum ScAddresses {
    List(Vec<String>),
    One(String),
}

impl ScAddresses {
    fn into_list(self) -> Vec<String> {
        match self {
            ScAddresses::List(list) => list,
            ScAddresses::One(text) => text.split(',').map(str::to_owned).collect(),
        }
    }
}

/// The resolved, validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SpuConfig {
    /// This SPU's id.
    pub id: SpuId,
    /// SC control addresses, in the order to try.
    pub sc_addresses: Vec<String>,
    /// Shared client address.
    pub public_address: SocketAddr,
    /// Replication address.
    pub private_address: SocketAddr,
    /// Host advertised to the SC.
    pub advertised_host: String,
    /// Base of per-core client ports; `None`: OS-chosen.
    pub core_port_base: Option<u16>,
    /// Base of per-core replication ports; `None`: OS-chosen.
    pub core_private_port_base: Option<u16>,
    /// How long a follower may fail to catch up before it leaves the in-sync set.
    pub replica_lag_max: Duration,
    /// Data directory (replicas under `spu-<id>/`).
    pub data_dir: PathBuf,
    /// Executors.
    pub cores: u16,
    /// Prometheus address.
    pub metrics_address: SocketAddr,
    /// Splice fetched records instead of copying them.
    pub zero_copy: bool,
    /// Drop sent records' pages from the page cache.
    pub drop_sent_pages: bool,
    /// Read fetched records with O_DIRECT and send them from user-space buffers.
    pub direct_reads: bool,
    /// Largest frame accepted.
    pub frame_bytes_max: u32,
    /// Longest time to receive the rest of a started frame.
    pub frame_read_timeout: Duration,
    /// Free-space floor of the data volume, bytes.
    pub free_bytes_min: u64,
    /// Free-space floor of the data volume, fraction of its size (the larger floor applies).
    pub free_space_ratio_min: f64,
    /// Zeros written ahead of each active segment's end (0: none).
    pub zero_fill_bytes: u64,
    /// Memory per core for the partitions' newest writes (0: none).
    pub tail_cache_bytes: u64,
    /// Heartbeat interval towards the SC.
    pub heartbeat_interval: Duration,
    /// Interval between retention passes.
    pub retention_interval: Duration,
    /// Delay before a dropped replica's files are removed.
    pub deleted_retention: Duration,
    /// Pace of that removal, bytes per second (0: unpaced).
    pub delete_bytes_per_second: u64,
    /// Readiness file.
    pub ready_file: Option<PathBuf>,
    /// Consul registration, when an agent is configured.
    pub consul: Option<ConsulRegistrationSettings>,
    /// Consul token for `consul://` SC addresses (`None`: `CONSUL_HTTP_TOKEN`).
    pub consul_token: Option<String>,
    /// Cluster name (Consul tags, in-cluster certificate names).
    pub cluster: String,
    /// TLS on every listener and link; `None`: plaintext.
    pub tls: Option<SpuTlsSettings>,
}

/// This SPU's TLS material (`--tls-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpuTlsSettings {
    /// Certificate chain, presented on every listener and link.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA bundle every peer certificate must chain to.
    pub ca: PathBuf,
    /// Client certificates on the public listeners.
    pub client_auth: ClientAuth,
    /// The public listeners' own certificate and key (`--public-tls-cert/key`); `None`: `cert`.
    pub public_identity: Option<(PathBuf, PathBuf)>,
    /// The CA bundle of client certificates on the public listeners; `None`: `ca`.
    pub public_ca: Option<PathBuf>,
}

impl SpuTlsSettings {
    /// The public listeners' files.
    pub fn public_server(&self) -> ServerTlsFiles {
        let (cert, key) =
            self.public_identity.clone().unwrap_or_else(|| (self.cert.clone(), self.key.clone()));
        ServerTlsFiles {
            cert,
            key,
            ca: Some(self.public_ca.clone().unwrap_or_else(|| self.ca.clone())),
            client_auth: self.client_auth,
        }
    }

    /// The private (replication) listeners' files: the in-cluster certificate, client
    /// certificates required.
    pub fn private_server(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: Some(self.ca.clone()),
            client_auth: ClientAuth::Required,
        }
    }

    /// The files of this SPU's own links (to the SC, to leaders).
    pub fn client(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.ca.clone(),
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
        }
    }
}

/// Where and how this SPU registers in Consul.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulRegistrationSettings {
    /// Agent address.
    pub address: String,
    /// ACL token.
    pub token: Option<String>,
    /// Cluster name (a tag).
    pub cluster: String,
    /// Rack (a tag), if any.
    pub rack: Option<String>,
}

impl SpuConfig {
    /// The directory holding this SPU's replicas.
    pub fn replicas_dir(&self) -> PathBuf {
        self.data_dir.join(format!("spu-{}", self.id))
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML file does not parse.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        source: Box<toml::de::Error>,
    },
    /// A setting is missing or out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// CPUs this process may run on (at least 1).
pub fn available_cores() -> u16 {
    allowed_cpus().len().clamp(1, usize::from(u16::MAX)) as u16
}

/// The CPU ids this process may run on (its affinity mask), in order; executor `i` is pinned
/// to the `i`-th of them. Falls back to `0..available_parallelism` when the mask is unreadable.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is ours and `size` is its size; pid 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } == 0 {
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: CPU_ISSET only reads `set`, for ids below CPU_SETSIZE.
            .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
            .collect();
        if !cpus.is_empty() {
            return cpus;
        }
    }
    let count = std::thread::available_parallelism().map_or(1, |count| count.get());
    (0..count).collect()
}

fn parse_default(text: &str) -> SocketAddr {
    text.parse().expect("valid default address")
}

impl SpuArgs {
    /// Merges flags/environment with the TOML file (if any) and the defaults.
    pub fn resolve(self) -> Result<SpuConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let id = self.id.or(file.id).ok_or_else(|| {
            ConfigError::Invalid("--id is required (the SPU id registered at the SC)".into())
        })?;
        if id < 0 {
            return Err(ConfigError::Invalid(format!("--id must not be negative, got {id}")));
        }
        let sc_addresses: Vec<String> = self
            .sc
            .or(file.sc.map(ScAddresses::into_list))
            .unwrap_or_else(|| vec![SC_ADDRESS_DEFAULT.into()])
            .into_iter()
            .map(|address| address.trim().to_owned())
            .filter(|address| !address.is_empty())
            .collect();
        if sc_addresses.is_empty() {
            return Err(ConfigError::Invalid("--sc needs at least one address".into()));
        }
        for address in sc_addresses.iter().filter(|address| ScDiscoveryUrl::is_consul(address)) {
            ScDiscoveryUrl::parse(address)
                .map_err(|error| ConfigError::Invalid(format!("--sc: {error}")))?;
        }
        let consul_token = self.consul_token.or(file.consul_token);
        let cluster = self.cluster.or(file.cluster).unwrap_or_else(|| "default".into());
        let mut tls = resolve_tls(
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
            self.tls_ca.or(file.tls_ca),
            self.tls_client_auth.or(file.tls_client_auth),
        )?;
        let public_identity = match (
            self.public_tls_cert.or(file.public_tls_cert),
            self.public_tls_key.or(file.public_tls_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => {
                return Err(ConfigError::Invalid(
                    "--public-tls-cert and --public-tls-key go together".into(),
                ))
            }
        };
        let public_ca = self.public_tls_ca.or(file.public_tls_ca);
        match &mut tls {
            Some(tls) => {
                tls.public_identity = public_identity;
                tls.public_ca = public_ca;
            }
            None if public_identity.is_some() || public_ca.is_some() => {
                return Err(ConfigError::Invalid(
                    "--public-tls-* refine TLS that --tls-cert, --tls-key and --tls-ca turn on"
                        .into(),
                ))
            }
            None => {}
        }
        let consul =
            self.consul_address.or(file.consul_address).map(|address| ConsulRegistrationSettings {
                address,
                token: consul_token.clone(),
                cluster: cluster.clone(),
                rack: self.rack.or(file.rack),
            });
        let public_address = self
            .public_address
            .or(file.public_address)
            .unwrap_or_else(|| parse_default(PUBLIC_ADDRESS_DEFAULT));
        let cores = resolve_cores(self.cores.or(file.cores))?;
        let frame_bytes_max =
            self.frame_bytes_max.or(file.frame_bytes_max).unwrap_or(FRAME_BYTES_MAX_DEFAULT);
        if frame_bytes_max < 1024 {
            return Err(ConfigError::Invalid("--frame-bytes-max must be at least 1024".into()));
        }
        let free_space_percent_min = self
            .free_space_percent_min
            .or(file.free_space_percent_min)
            .unwrap_or(FREE_SPACE_PERCENT_MIN_DEFAULT);
        if !(0.0..100.0).contains(&free_space_percent_min) {
            return Err(ConfigError::Invalid(
                "--free-space-percent-min must be at least 0 and under 100".into(),
            ));
        }
        let frame_read_timeout_ms = self
            .frame_read_timeout_ms
            .or(file.frame_read_timeout_ms)
            .unwrap_or(FRAME_READ_TIMEOUT_MS_DEFAULT);
        if frame_read_timeout_ms == 0 {
            return Err(ConfigError::Invalid("--frame-read-timeout-ms must be at least 1".into()));
        }
        let heartbeat_interval_ms = self
            .heartbeat_interval_ms
            .or(file.heartbeat_interval_ms)
            .unwrap_or(HEARTBEAT_INTERVAL_MS_DEFAULT)
            .max(10);
        let retention_interval_ms = self
            .retention_interval_ms
            .or(file.retention_interval_ms)
            .unwrap_or(RETENTION_INTERVAL_MS_DEFAULT);
        if retention_interval_ms < 10 {
            return Err(ConfigError::Invalid(format!(
                "--retention-interval-ms must be at least 10, got {retention_interval_ms}"
            )));
        }
        let core_port_base = self.core_port_base.or(file.core_port_base).filter(|base| *base > 0);
        let core_private_port_base =
            self.core_private_port_base.or(file.core_private_port_base).filter(|base| *base > 0);
        for (flag, base) in [
            ("--core-port-base", core_port_base),
            ("--core-private-port-base", core_private_port_base),
        ] {
            if let Some(base) = base {
                if u32::from(base) + u32::from(cores) > u32::from(u16::MAX) {
                    return Err(ConfigError::Invalid(format!(
                        "{flag} {base} + {cores} cores passes port 65535"
                    )));
                }
            }
        }
        let replica_lag_max_ms = self
            .replica_lag_max_ms
            .or(file.replica_lag_max_ms)
            .unwrap_or(REPLICA_LAG_MAX_MS_DEFAULT);
        if replica_lag_max_ms < 100 {
            return Err(ConfigError::Invalid(format!(
                "--replica-lag-max-ms must be at least 100, got {replica_lag_max_ms}"
            )));
        }
        Ok(SpuConfig {
            id: SpuId(id),
            sc_addresses,
            public_address,
            private_address: self
                .private_address
                .or(file.private_address)
                .unwrap_or_else(|| parse_default(PRIVATE_ADDRESS_DEFAULT)),
            advertised_host: self
                .advertised_host
                .or(file.advertised_host)
                .unwrap_or_else(|| advertised_default(public_address.ip())),
            core_port_base,
            core_private_port_base,
            replica_lag_max: Duration::from_millis(replica_lag_max_ms),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("sluice-spu-data")),
            cores,
            metrics_address: self
                .metrics_address
                .or(file.metrics_address)
                .unwrap_or_else(|| parse_default(METRICS_ADDRESS_DEFAULT)),
            zero_copy: self.zero_copy.or(file.zero_copy).unwrap_or(true),
            drop_sent_pages: self.drop_sent_pages.or(file.drop_sent_pages).unwrap_or(true),
            direct_reads: self.direct_reads.or(file.direct_reads).unwrap_or(true),
            frame_bytes_max,
            frame_read_timeout: Duration::from_millis(frame_read_timeout_ms),
            free_bytes_min: self
                .free_bytes_min
                .or(file.free_bytes_min)
                .unwrap_or(FREE_BYTES_MIN_DEFAULT),
            free_space_ratio_min: free_space_percent_min / 100.0,
            zero_fill_bytes: self.zero_fill_bytes.or(file.zero_fill_bytes).unwrap_or(0),
            tail_cache_bytes: self
                .tail_cache_bytes
                .or(file.tail_cache_bytes)
                .unwrap_or(TAIL_CACHE_BYTES_DEFAULT),
            heartbeat_interval: Duration::from_millis(heartbeat_interval_ms),
            retention_interval: Duration::from_millis(retention_interval_ms),
            deleted_retention: Duration::from_millis(
                self.deleted_retention_ms
                    .or(file.deleted_retention_ms)
                    .unwrap_or(DELETED_RETENTION_MS_DEFAULT),
            ),
            delete_bytes_per_second: self
                .delete_bytes_per_second
                .or(file.delete_bytes_per_second)
                .unwrap_or(DELETE_BYTES_PER_SECOND_DEFAULT),
            ready_file: self.ready_file.or(file.ready_file),
            consul,
            consul_token,
            cluster,
            tls,
        })
    }
}

/// TLS is on when a certificate is given; it then needs its key and a CA bundle (the private
/// listeners require client certificates, and the links verify the SC and the leaders).
fn resolve_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
) -> Result<Option<SpuTlsSettings>, ConfigError> {
    match (cert, key, ca) {
        (None, None, None) if client_auth.is_none() => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(SpuTlsSettings {
            cert,
            key,
            ca,
            client_auth: client_auth.unwrap_or_default(),
            public_identity: None,
            public_ca: None,
        })),
        _ => Err(ConfigError::Invalid(
            "TLS needs --tls-cert, --tls-key and --tls-ca together (--tls-client-auth only with \
             them)"
                .into(),
        )),
    }
}

/// The core count: as asked, capped at the CPUs available; all of them by default.
fn resolve_cores(asked: Option<u16>) -> Result<u16, ConfigError> {
    let available = available_cores();
    match asked {
        Some(0) => Err(ConfigError::Invalid("--cores must be at least 1".into())),
        Some(asked) if asked > available => {
            tracing::warn!(asked, available, "more cores asked than CPUs available; capped");
            Ok(available)
        }
        Some(asked) => Ok(asked),
        None => Ok(available),
    }
}

fn advertised_default(ip: IpAddr) -> String {
    if ip.is_unspecified() {
        "127.0.0.1".into()
    } else {
        ip.to_string()
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text)
        .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_an_id() {
        assert!(SpuArgs::default().resolve().unwrap_err().to_string().contains("--id"));
        let config = SpuArgs { id: Some(3), ..SpuArgs::default() }.resolve().unwrap();
        assert_eq!(config.public_address.port(), 9005);
        assert_eq!(config.private_address.port(), 9006);
        assert_eq!(config.metrics_address.port(), 9007);
        assert_eq!(config.sc_addresses, vec!["127.0.0.1:9004".to_string()]);
        assert_eq!(config.advertised_host, "127.0.0.1");
        assert_eq!(config.cores, available_cores());
        assert!(config.zero_copy);
        assert!(config.drop_sent_pages);
        assert!(config.direct_reads);
        assert_eq!(config.zero_fill_bytes, 0);
        assert_eq!(config.tail_cache_bytes, 8 << 20);
        assert_eq!(config.retention_interval, Duration::from_secs(30));
        assert_eq!(config.free_bytes_min, 2 << 30);
        assert_eq!(config.free_space_ratio_min, 0.05);
        assert_eq!(config.replicas_dir(), PathBuf::from("sluice-spu-data/spu-3"));
    }

    #[test]
    fn tls_comes_from_the_file_or_flags_and_needs_all_three_files() {
        let plaintext = SpuArgs { id: Some(1), ..SpuArgs::default() }.resolve().unwrap();
        assert_eq!(plaintext.tls, None);
        assert_eq!(plaintext.cluster, "default");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spu.toml");
        std::fs::write(
            &path,
            "id = 1\ncluster = \"east\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
             tls_ca = \"ca.pem\"\ntls_client_auth = \"required\"\n",
        )
        .unwrap();
        let config =
            SpuArgs { config: Some(path.clone()), ..SpuArgs::default() }.resolve().unwrap();
        let tls = config.tls.expect("TLS from the file");
        assert_eq!(config.cluster, "east");
        assert_eq!(tls.client_auth, ClientAuth::Required);
        assert_eq!(tls.private_server().client_auth, ClientAuth::Required);
        assert_eq!(tls.client().cert, Some(PathBuf::from("c.pem")));
        let flag = SpuArgs {
            config: Some(path),
            tls_client_auth: Some(ClientAuth::None),
            ..SpuArgs::default()
        };
        let tls = flag.resolve().unwrap().tls.unwrap();
        assert_eq!(tls.client_auth, ClientAuth::None);
        assert_eq!(tls.private_server().client_auth, ClientAuth::Required, "always on private");
        let incomplete = SpuArgs {
            id: Some(1),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..SpuArgs::default()
        };
        assert!(incomplete.resolve().unwrap_err().to_string().contains("--tls-ca"));
    }

    #[test]
    fn the_public_listeners_may_have_their_own_certificate_and_ca() {
        let base = SpuArgs {
            id: Some(1),
            tls_cert: Some("spu.pem".into()),
            tls_key: Some("spu.key".into()),
            tls_ca: Some("cluster-ca.pem".into()),
            ..SpuArgs::default()
        };
        let same = base.clone().resolve().unwrap().tls.unwrap();
        assert_eq!(same.public_server().cert, PathBuf::from("spu.pem"));
        let own = SpuArgs {
            public_tls_cert: Some("public.pem".into()),
            public_tls_key: Some("public.key".into()),
            public_tls_ca: Some("clients-ca.pem".into()),
            ..base.clone()
        };
        let tls = own.resolve().unwrap().tls.unwrap();
        let public = tls.public_server();
        assert_eq!((public.cert, public.key), ("public.pem".into(), "public.key".into()));
        assert_eq!(public.ca, Some(PathBuf::from("clients-ca.pem")));
        let private = tls.private_server();
        assert_eq!((private.cert, private.ca), ("spu.pem".into(), Some("cluster-ca.pem".into())));
        assert_eq!(tls.client().cert, Some(PathBuf::from("spu.pem")), "links keep theirs");
        let without_tls = SpuArgs {
            id: Some(1),
            public_tls_cert: Some("public.pem".into()),
            public_tls_key: Some("public.key".into()),
            ..SpuArgs::default()
        };
        assert!(without_tls.resolve().unwrap_err().to_string().contains("--tls-cert"));
    }

    #[test]
    fn flags_override_file_and_cores_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spu.toml");
        std::fs::write(
            &path,
            "id = 4\nsc = \"a:1,b:2\"\npublic_address = \"127.0.0.2:7000\"\ncores = 60000\n\
             zero_copy = false\ndrop_sent_pages = false\ndirect_reads = false\n\
             zero_fill_bytes = 8388608\ntail_cache_bytes = 0\nfree_space_percent_min = 10.0\n",
        )
        .unwrap();
        let args = SpuArgs { config: Some(path), id: Some(5), ..SpuArgs::default() };
        let config = args.resolve().unwrap();
        assert_eq!(config.id, SpuId(5));
        assert_eq!(config.sc_addresses, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(config.advertised_host, "127.0.0.2");
        assert_eq!(config.cores, available_cores());
        assert!(!config.zero_copy);
        assert!(!config.drop_sent_pages);
        assert!(!config.direct_reads);
        assert_eq!(config.zero_fill_bytes, 8 << 20);
        assert_eq!(config.tail_cache_bytes, 0);
        assert_eq!(config.free_space_ratio_min, 0.1);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let args = SpuArgs { id: Some(1), cores: Some(0), ..SpuArgs::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("cores"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let args = SpuArgs { config: Some(path), ..SpuArgs::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
        let args = SpuArgs { id: Some(1), retention_interval_ms: Some(0), ..SpuArgs::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("--retention-interval-ms"));
        for percent in [-1.0, 100.0, f64::NAN] {
            let args = SpuArgs {
                id: Some(1),
                free_space_percent_min: Some(percent),
                ..SpuArgs::default()
            };
            let error = args.resolve().unwrap_err().to_string();
            assert!(error.contains("--free-space-percent-min"), "{percent}: {error}");
        }
    }
}
