//! Configuration of the `sluice-sc` process: command-line flags, environment variables
//! (`SLUICE_SC_*`) and an optional TOML file (`--config`).
//!
//! Precedence, highest first: flag, environment variable, TOML file, built-in default. Every
//! flag is optional in [`ScArgs`] so that a value from the file is only used where neither a flag
//! nor a variable gave one; [`ScArgs::resolve`] merges the three into an [`ScConfig`] and
//! validates it (the defaults for new topics must form a valid [`TopicSpec`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use sluice_kvstore_consul::{LOCK_DELAY_MAX, SESSION_TTL_MAX, SESSION_TTL_MIN};
use sluice_proto::object::topic::SEGMENT_BYTES_DEFAULT;
use sluice_proto::object::TopicSpec;
use sluice_tls::{ClientAuth, ServerTlsFiles};

use crate::ha::LeaderSettings;

/// Default public (admin and metadata) address.
pub const PUBLIC_ADDRESS_DEFAULT: &str = "0.0.0.0:9003";
/// Default private (SPU control) address.
pub const PRIVATE_ADDRESS_DEFAULT: &str = "0.0.0.0:9004";
/// Default address of `/metrics` and `/health/*` (the SPU's default is 9007).
pub const METRICS_ADDRESS_DEFAULT: &str = "0.0.0.0:9008";
/// Default time without a heartbeat after which an SPU is marked offline.
pub const HEARTBEAT_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default interval between automatic moves of leadership back to preferred replicas.
pub const LEADER_REBALANCE_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Default TTL of the leadership session: Consul's minimum, for the fastest takeover.
pub const LEADER_TTL_MS_DEFAULT: u64 = 10_000;
/// Default lock delay: short, because every write is fenced anyway; it only spaces out terms.
pub const LEADER_LOCK_DELAY_MS_DEFAULT: u64 = 1_000;
/// Default TTL of the SC's alive check: three missed passes (one per second) mean dead.
pub const LEADER_CHECK_TTL_MS_DEFAULT: u64 = 3_000;
/// Shortest alive check TTL accepted: passes every third of it must fit between scheduling
/// hiccups of a loaded machine.
pub const LEADER_CHECK_TTL_MS_MIN: u64 = 1_000;

/// Which metadata store backs the SC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// JSON files in `--data-dir` (one machine).
    Embedded,
    /// A Consul agent (`--consul-address`).
    Consul,
}

/// Command-line flags of `sluice-sc`. Each also reads `SLUICE_SC_<NAME>` and the TOML file key
/// of the same name with `_` instead of `-`.
#[derive(Clone, Debug, Default, Parser)]
#[command(name = "sluice-sc", version, about = "Sluice Streaming Controller")]
pub struct ScArgs {
    /// TOML file with any of the settings below (keys use `_`, e.g. `public_address`).
    #[arg(long, env = "SLUICE_SC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the public API (admin and client metadata) [default: 0.0.0.0:9003]. Port 0
    /// picks a free port; the bound address is printed and written to `--ready-file`.
    #[arg(long, env = "SLUICE_SC_PUBLIC_ADDRESS")]
    pub public_address: Option<SocketAddr>,
    /// Address SPUs connect to (control protocol) [default: 0.0.0.0:9004].
    #[arg(long, env = "SLUICE_SC_PRIVATE_ADDRESS")]
    pub private_address: Option<SocketAddr>,
    /// Address of the HTTP endpoint serving Prometheus text at `GET /metrics`, `GET
    /// /health/live` (200 while the process serves) and `GET /health/ready` (200 on the active
    /// SC with its cache synced; 503 with the reason on a standby or while starting) [default:
    /// 0.0.0.0:9008]. Port 0 picks a free port; the bound address is printed and written to
    /// `--ready-file` as `metrics=`.
    #[arg(long, env = "SLUICE_SC_METRICS_ADDRESS")]
    pub metrics_address: Option<SocketAddr>,
    /// Metadata store backend [default: embedded].
    #[arg(long, env = "SLUICE_SC_STORE", value_enum)]
    pub store: Option<StoreBackend>,
    /// Directory of the embedded store [default: ./sluice-sc-data].
    #[arg(long, env = "SLUICE_SC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Consul agent address, `host:port` or `http(s)://host:port` [default: 127.0.0.1:8500].
    #[arg(long, env = "SLUICE_SC_CONSUL_ADDRESS")]
    pub consul_address: Option<String>,
    /// Consul ACL token.
    #[arg(long, env = "SLUICE_SC_CONSUL_TOKEN", hide_env_values = true)]
    pub consul_token: Option<String>,
    /// First segment(s) of every Consul key [default: sluice].
    #[arg(long, env = "SLUICE_SC_CONSUL_KEY_PREFIX")]
    pub consul_key_prefix: Option<String>,
    /// Cluster name: several clusters may share one Consul, and with TLS the suffix of the
    /// in-cluster certificate names (`sc.<cluster>`, `spu-<id>.<cluster>`) [default: default].
    #[arg(long, env = "SLUICE_SC_CLUSTER")]
    pub cluster: Option<String>,
    /// Partitions of a topic created without a count [default: 1].
    #[arg(long, env = "SLUICE_SC_TOPIC_PARTITIONS")]
    pub topic_partitions: Option<u32>,
    /// Replication factor of a topic created without one [default: 1].
    #[arg(long, env = "SLUICE_SC_TOPIC_REPLICATION_FACTOR")]
    pub topic_replication_factor: Option<u16>,
    /// Retention time of new topics in milliseconds [default: unlimited].
    #[arg(long, env = "SLUICE_SC_TOPIC_RETENTION_MS")]
    pub topic_retention_ms: Option<u64>,
    /// Segment size of new topics in bytes [default: 1 GiB].
    #[arg(long, env = "SLUICE_SC_TOPIC_SEGMENT_BYTES")]
    pub topic_segment_bytes: Option<u64>,
    /// Milliseconds without a heartbeat before an SPU is marked offline [default: 2000].
    #[arg(long, env = "SLUICE_SC_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Milliseconds a client of the public address may take to send the rest of a frame it
    /// has started; past it the connection is closed (logged). A connection between requests
    /// is never timed out [default: 30000].
    #[arg(long, env = "SLUICE_SC_FRAME_READ_TIMEOUT_MS")]
    pub frame_read_timeout_ms: Option<u64>,
    /// Milliseconds between automatic moves of partition leadership back to the preferred
    /// replica (the first of a partition's replicas) once it is online and in sync; 0 turns
    /// them off (then only `RebalanceLeaders` moves them) [default: 10000].
    #[arg(long, env = "SLUICE_SC_LEADER_REBALANCE_INTERVAL_MS")]
    pub leader_rebalance_interval_ms: Option<u64>,
    /// Consul store: TTL of the leadership session in milliseconds, 10000 to 86400000. After a
    /// crash of the active SC a standby takes over within one to two TTLs plus the lock delay
    /// [default: 10000].
    #[arg(long, env = "SLUICE_SC_LEADER_TTL_MS")]
    pub leader_ttl_ms: Option<u64>,
    /// Consul store: TTL in milliseconds of the SC's alive check on its Consul agent (passed
    /// every third of it); a crashed active SC is replaced about this long plus the lock delay
    /// after its last pass, at least 1000 [default: 3000].
    #[arg(long, env = "SLUICE_SC_LEADER_CHECK_TTL_MS")]
    pub leader_check_ttl_ms: Option<u64>,
    /// Consul store: milliseconds the lock stays unavailable after the active SC's session is
    /// invalidated, at most 60000 [default: 1000].
    #[arg(long, env = "SLUICE_SC_LEADER_LOCK_DELAY_MS")]
    pub leader_lock_delay_ms: Option<u64>,
    /// Once listening, write `public=<addr>`, `private=<addr>`, `metrics=<addr>` and
    /// `role=active|standby` lines
    /// to this file (written to a temporary name, then renamed: readers never see half a file;
    /// a standby rewrites it with `role=active` when it takes over).
    #[arg(long, env = "SLUICE_SC_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// TLS on the public address: PEM certificate chain of this SC (leaf first), with
    /// `--tls-key`. Without it the public address is plaintext. The files are re-read when they
    /// change (new connections get the new certificate; established ones continue).
    #[arg(long, env = "SLUICE_SC_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "SLUICE_SC_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that client certificates must chain to (needed when
    /// `--tls-client-auth` is `optional` or `required`).
    #[arg(long, env = "SLUICE_SC_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificates on the TLS public address: `none` (not asked for), `optional`
    /// (verified when sent; the certificate's name is the client's principal) or `required`
    /// [default: none].
    #[arg(long, env = "SLUICE_SC_TLS_CLIENT_AUTH", value_name = "none|optional|required")]
    pub tls_client_auth: Option<ClientAuth>,
    /// PEM certificate chain of the private (SPU control) listener: turns TLS on there, with
    /// client certificates required; it should name `sc.<cluster>` (SPUs verify that name)
    /// [default: none, plaintext].
    #[arg(long, env = "SLUICE_SC_PRIVATE_TLS_CERT")]
    pub private_tls_cert: Option<PathBuf>,
    /// PEM private key of `--private-tls-cert`.
    #[arg(long, env = "SLUICE_SC_PRIVATE_TLS_KEY")]
    pub private_tls_key: Option<PathBuf>,
    /// PEM CA bundle SPU certificates must chain to (required with `--private-tls-cert`).
    #[arg(long, env = "SLUICE_SC_PRIVATE_TLS_CA")]
    pub private_tls_ca: Option<PathBuf>,
    /// Enforce ACLs on every admin and metadata request here and on produce and fetch at the
    /// SPUs (default off: plaintext development keeps working without any ACL).
    #[arg(long, env = "SLUICE_SC_AUTHORIZATION", num_args = 0..=1, default_missing_value = "true")]
    pub authorization: Option<bool>,
    /// A principal that bypasses ACLs (`User:admin`), to bootstrap the first ACLs; repeatable,
    /// or comma separated in the environment.
    #[arg(long = "superuser", env = "SLUICE_SC_SUPERUSERS", value_delimiter = ',')]
    pub superusers: Vec<sluice_proto::object::Principal>,
    /// A file holding a token (any secret text, e.g. `openssl rand -base64 32`) that
    /// authenticates as `User:bootstrap`, a superuser: how the first admin token and ACLs are
    /// made. Only its SHA-256 is kept in memory.
    #[arg(long, env = "SLUICE_SC_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
}

/// The TOML file: the same settings as the flags, all optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    public_address: Option<SocketAddr>,
    private_address: Option<SocketAddr>,
    metrics_address: Option<SocketAddr>,
    store: Option<StoreBackend>,
    data_dir: Option<PathBuf>,
    consul_address: Option<String>,
    consul_token: Option<String>,
    consul_key_prefix: Option<String>,
    cluster: Option<String>,
    topic_partitions: Option<u32>,
    topic_replication_factor: Option<u16>,
    topic_retention_ms: Option<u64>,
    topic_segment_bytes: Option<u64>,
    heartbeat_timeout_ms: Option<u64>,
    frame_read_timeout_ms: Option<u64>,
    leader_rebalance_interval_ms: Option<u64>,
    leader_ttl_ms: Option<u64>,
    leader_lock_delay_ms: Option<u64>,
    leader_check_ttl_ms: Option<u64>,
    ready_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_auth: Option<ClientAuth>,
    private_tls_cert: Option<PathBuf>,
    private_tls_key: Option<PathBuf>,
    private_tls_ca: Option<PathBuf>,
    authorization: Option<bool>,
    superusers: Option<Vec<sluice_proto::object::Principal>>,
    bootstrap_token_file: Option<PathBuf>,
}

/// Consul backend settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulSettings {
    /// Agent address.
    pub address: String,
    /// ACL token.
    pub token: Option<String>,
    /// Key prefix.
    pub key_prefix: String,
    /// Cluster name.
    pub cluster: String,
}

/// Where the metadata lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSettings {
    /// Embedded store in this directory.
    Embedded {
        /// The directory.
        data_dir: PathBuf,
    },
    /// Consul.
    Consul(ConsulSettings),
}

/// The resolved, validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScConfig {
    /// Public API address.
    pub public_address: SocketAddr,
    /// SPU control address.
    pub private_address: SocketAddr,
    /// Metrics and health endpoint address.
    pub metrics_address: SocketAddr,
    /// Metadata store.
    pub store: StoreSettings,
    /// Settings applied to topics created without explicit values.
    pub topic_defaults: TopicDefaults,
    /// Time without a heartbeat before an SPU is offline.
    pub heartbeat_timeout: Duration,
    /// Longest time to receive the rest of a started frame on the public address.
    pub frame_read_timeout: Duration,
    /// Interval between automatic moves of leadership back to preferred replicas; `None`: off.
    pub leader_rebalance_interval: Option<Duration>,
    /// Leadership session settings (Consul store).
    pub leader: LeaderSettings,
    /// Readiness file.
    pub ready_file: Option<PathBuf>,
    /// TLS on the public address; `None`: plaintext.
    pub public_tls: Option<ServerTlsFiles>,
    /// Cluster name (Consul, in-cluster certificate names).
    pub cluster: String,
    /// TLS of the private listener, client certificates required; `None`: plaintext.
    pub private_tls: Option<ServerTlsFiles>,
    /// Authorization settings.
    pub security: SecuritySettings,
}

/// Whether ACLs are enforced, and who bypasses them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecuritySettings {
    /// Enforce ACLs (`--authorization`).
    pub authorization: bool,
    /// Principals that bypass ACLs (`--superuser`).
    pub superusers: Vec<sluice_proto::object::Principal>,
    /// SHA-256 of the bootstrap token (`--bootstrap-token-file`), which authenticates as the
    /// superuser `User:bootstrap`.
    pub bootstrap_token: Option<sluice_proto::object::Sha256Digest>,
}

/// Defaults for new topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicDefaults {
    /// Partitions.
    pub partitions: u32,
    /// Replication factor.
    pub replication_factor: u16,
    /// Retention time, `None` for unlimited.
    pub retention_ms: Option<u64>,
    /// Segment size.
    pub segment_bytes: u64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            partitions: 1,
            replication_factor: 1,
            retention_ms: None,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
        }
    }
}

impl TopicDefaults {
    /// A topic spec with these defaults.
    pub fn spec(&self) -> TopicSpec {
        TopicSpec {
            retention_time_ms: self.retention_ms,
            segment_bytes: self.segment_bytes,
            ..TopicSpec::computed(self.partitions, self.replication_factor)
        }
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
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl ScArgs {
    /// Merges flags/environment with the TOML file (if any) and the defaults.
    pub fn resolve(self) -> Result<ScConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let parse_default = |text: &str| text.parse::<SocketAddr>().expect("valid default address");
        let cluster = self.cluster.or(file.cluster).unwrap_or_else(|| "default".into());
        let private_tls = match (
            self.private_tls_cert.or(file.private_tls_cert),
            self.private_tls_key.or(file.private_tls_key),
            self.private_tls_ca.or(file.private_tls_ca),
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => {
                Some(ServerTlsFiles { cert, key, ca: Some(ca), client_auth: ClientAuth::Required })
            }
            _ => {
                return Err(ConfigError::Invalid(
                    "private TLS needs --private-tls-cert, --private-tls-key and \
                     --private-tls-ca together"
                        .into(),
                ))
            }
        };
        let store = match self.store.or(file.store).unwrap_or(StoreBackend::Embedded) {
            StoreBackend::Embedded => StoreSettings::Embedded {
                data_dir: self
                    .data_dir
                    .or(file.data_dir)
                    .unwrap_or_else(|| PathBuf::from("sluice-sc-data")),
            },
            StoreBackend::Consul => StoreSettings::Consul(ConsulSettings {
                address: self
                    .consul_address
                    .or(file.consul_address)
                    .unwrap_or_else(|| "127.0.0.1:8500".into()),
                token: self.consul_token.or(file.consul_token),
                key_prefix: self
                    .consul_key_prefix
                    .or(file.consul_key_prefix)
                    .unwrap_or_else(|| "sluice".into()),
                cluster: cluster.clone(),
            }),
        };
        let base = TopicDefaults::default();
        let topic_defaults = TopicDefaults {
            partitions: self.topic_partitions.or(file.topic_partitions).unwrap_or(base.partitions),
            replication_factor: self
                .topic_replication_factor
                .or(file.topic_replication_factor)
                .unwrap_or(base.replication_factor),
            retention_ms: self.topic_retention_ms.or(file.topic_retention_ms),
            segment_bytes: self
                .topic_segment_bytes
                .or(file.topic_segment_bytes)
                .unwrap_or(base.segment_bytes),
        };
        topic_defaults
            .spec()
            .validate()
            .map_err(|error| ConfigError::Invalid(format!("topic defaults: {error}")))?;
        let heartbeat_timeout_ms = self
            .heartbeat_timeout_ms
            .or(file.heartbeat_timeout_ms)
            .unwrap_or(HEARTBEAT_TIMEOUT_MS_DEFAULT);
        if heartbeat_timeout_ms == 0 {
            return Err(ConfigError::Invalid("heartbeat_timeout_ms must be at least 1".into()));
        }
        let frame_read_timeout_ms = self
            .frame_read_timeout_ms
            .or(file.frame_read_timeout_ms)
            .unwrap_or(crate::server::FRAME_READ_TIMEOUT_MS_DEFAULT);
        if frame_read_timeout_ms == 0 {
            return Err(ConfigError::Invalid("frame_read_timeout_ms must be at least 1".into()));
        }
        let leader_rebalance_interval_ms = self
            .leader_rebalance_interval_ms
            .or(file.leader_rebalance_interval_ms)
            .unwrap_or(LEADER_REBALANCE_INTERVAL_MS_DEFAULT);
        let leader_rebalance_interval = (leader_rebalance_interval_ms > 0)
            .then(|| Duration::from_millis(leader_rebalance_interval_ms));
        let leader = LeaderSettings {
            ttl: Duration::from_millis(
                self.leader_ttl_ms.or(file.leader_ttl_ms).unwrap_or(LEADER_TTL_MS_DEFAULT),
            ),
            check_ttl: Duration::from_millis(
                self.leader_check_ttl_ms
                    .or(file.leader_check_ttl_ms)
                    .unwrap_or(LEADER_CHECK_TTL_MS_DEFAULT),
            ),
            lock_delay: Duration::from_millis(
                self.leader_lock_delay_ms
                    .or(file.leader_lock_delay_ms)
                    .unwrap_or(LEADER_LOCK_DELAY_MS_DEFAULT),
            ),
        };
        if !(SESSION_TTL_MIN..=SESSION_TTL_MAX).contains(&leader.ttl) {
            return Err(ConfigError::Invalid(format!(
                "leader_ttl_ms must be within Consul's range {SESSION_TTL_MIN:?}..={SESSION_TTL_MAX:?}"
            )));
        }
        if leader.check_ttl < Duration::from_millis(LEADER_CHECK_TTL_MS_MIN) {
            return Err(ConfigError::Invalid(format!(
                "leader_check_ttl_ms must be at least {LEADER_CHECK_TTL_MS_MIN}"
            )));
        }
        if leader.lock_delay > LOCK_DELAY_MAX {
            return Err(ConfigError::Invalid(format!(
                "leader_lock_delay_ms must be at most Consul's {LOCK_DELAY_MAX:?}"
            )));
        }
        let public_tls = tls_files(
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
            self.tls_ca.or(file.tls_ca),
            self.tls_client_auth.or(file.tls_client_auth),
        )?;
        Ok(ScConfig {
            public_address: self
                .public_address
                .or(file.public_address)
                .unwrap_or_else(|| parse_default(PUBLIC_ADDRESS_DEFAULT)),
            private_address: self
                .private_address
                .or(file.private_address)
                .unwrap_or_else(|| parse_default(PRIVATE_ADDRESS_DEFAULT)),
            metrics_address: self
                .metrics_address
                .or(file.metrics_address)
                .unwrap_or_else(|| parse_default(METRICS_ADDRESS_DEFAULT)),
            store,
            topic_defaults,
            heartbeat_timeout: Duration::from_millis(heartbeat_timeout_ms),
            frame_read_timeout: Duration::from_millis(frame_read_timeout_ms),
            leader_rebalance_interval,
            leader,
            ready_file: self.ready_file.or(file.ready_file),
            public_tls,
            cluster,
            private_tls,
            security: SecuritySettings {
                authorization: self.authorization.or(file.authorization).unwrap_or(false),
                superusers: if self.superusers.is_empty() {
                    file.superusers.unwrap_or_default()
                } else {
                    self.superusers
                },
                bootstrap_token: match self.bootstrap_token_file.or(file.bootstrap_token_file) {
                    None => None,
                    Some(path) => {
                        let text = std::fs::read_to_string(&path).map_err(|error| {
                            ConfigError::Invalid(format!(
                                "cannot read the bootstrap token file {}: {error}",
                                path.display()
                            ))
                        })?;
                        let token = text.trim();
                        if token.len() < 16 {
                            return Err(ConfigError::Invalid(
                                "the bootstrap token must be at least 16 characters".into(),
                            ));
                        }
                        Some(sluice_proto::authz::token_digest(token))
                    }
                },
            },
        })
    }
}

/// The public listener's TLS files: none without a certificate; a certificate needs its key,
/// and client certificates need a CA bundle to verify them by.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
) -> Result<Option<ServerTlsFiles>, ConfigError> {
    let invalid = |text: &str| Err(ConfigError::Invalid(text.to_owned()));
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let client_auth = client_auth.unwrap_or_default();
            if client_auth != ClientAuth::None && ca.is_none() {
                return invalid(&format!(
                    "tls_client_auth = {client_auth} needs tls_ca (the CA bundle client \
                     certificates must chain to)"
                ));
            }
            Ok(Some(ServerTlsFiles { cert, key, ca, client_auth }))
        }
        (None, None) if ca.is_none() && client_auth.is_none() => Ok(None),
        (None, None) => invalid("tls_ca and tls_client_auth need tls_cert and tls_key"),
        (Some(_), None) => invalid("tls_cert needs tls_key"),
        (None, Some(_)) => invalid("tls_key needs tls_cert"),
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
    fn defaults() {
        let config = ScArgs::default().resolve().unwrap();
        assert_eq!(config.public_address.port(), 9003);
        assert_eq!(config.private_address.port(), 9004);
        assert_eq!(config.metrics_address.port(), 9008);
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(2));
        assert_eq!(config.leader_rebalance_interval, Some(Duration::from_secs(10)));
        assert!(matches!(config.store, StoreSettings::Embedded { .. }));
    }

    #[test]
    fn the_cluster_is_top_level_and_private_tls_needs_its_three_files() {
        let config = ScArgs::default().resolve().unwrap();
        assert_eq!(config.cluster, "default");
        assert_eq!(config.private_tls, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sc.toml");
        std::fs::write(
            &path,
            "cluster = \"east\"\nprivate_tls_cert = \"c.pem\"\nprivate_tls_key = \"k.pem\"\n\
             private_tls_ca = \"ca.pem\"\n",
        )
        .unwrap();
        let config = ScArgs { config: Some(path), ..ScArgs::default() }.resolve().unwrap();
        assert_eq!(config.cluster, "east", "without Consul too");
        let tls = config.private_tls.expect("private TLS");
        assert_eq!(tls.client_auth, ClientAuth::Required);
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        let incomplete =
            ScArgs { private_tls_cert: Some("c.pem".into()), ..ScArgs::default() }.resolve();
        assert!(incomplete.unwrap_err().to_string().contains("--private-tls-ca"));
    }

    #[test]
    fn leader_rebalance_interval_from_file_and_flag_zero_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sc.toml");
        std::fs::write(&path, "leader_rebalance_interval_ms = 2500\n").unwrap();
        let from_file = ScArgs { config: Some(path.clone()), ..ScArgs::default() };
        let config = from_file.resolve().unwrap();
        assert_eq!(config.leader_rebalance_interval, Some(Duration::from_millis(2500)));
        let off = ScArgs {
            config: Some(path),
            leader_rebalance_interval_ms: Some(0),
            ..ScArgs::default()
        };
        assert_eq!(off.resolve().unwrap().leader_rebalance_interval, None);
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sc.toml");
        std::fs::write(
            &path,
            "public_address = \"127.0.0.1:7000\"\ntopic_partitions = 5\nstore = \"consul\"\n",
        )
        .unwrap();
        let args = ScArgs {
            config: Some(path),
            topic_partitions: Some(3),
            cluster: Some("east".into()),
            ..ScArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.public_address.port(), 7000);
        assert_eq!(config.topic_defaults.partitions, 3);
        let StoreSettings::Consul(consul) = config.store else { panic!("consul expected") };
        assert_eq!(consul.cluster, "east");
    }

    #[test]
    fn leader_settings_default_and_stay_in_consul_ranges() {
        let config = ScArgs::default().resolve().unwrap();
        assert_eq!(config.leader.ttl, Duration::from_secs(10));
        assert_eq!(config.leader.check_ttl, Duration::from_secs(3));
        assert_eq!(config.leader.lock_delay, Duration::from_secs(1));
        let short_ttl = ScArgs { leader_ttl_ms: Some(5_000), ..ScArgs::default() };
        assert!(short_ttl.resolve().unwrap_err().to_string().contains("leader_ttl_ms"));
        let short_check = ScArgs { leader_check_ttl_ms: Some(100), ..ScArgs::default() };
        assert!(short_check.resolve().unwrap_err().to_string().contains("leader_check_ttl_ms"));
        let long_delay = ScArgs { leader_lock_delay_ms: Some(61_000), ..ScArgs::default() };
        assert!(long_delay.resolve().unwrap_err().to_string().contains("leader_lock_delay_ms"));
    }

    #[test]
    fn tls_settings_from_file_and_flags() {
        assert_eq!(ScArgs::default().resolve().unwrap().public_tls, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sc.toml");
        std::fs::write(
            &path,
            "tls_cert = \"sc.pem\"\ntls_key = \"sc.key\"\ntls_ca = \"ca.pem\"\n\
             tls_client_auth = \"optional\"\n",
        )
        .unwrap();
        let args = ScArgs {
            config: Some(path.clone()),
            tls_client_auth: Some(ClientAuth::Required),
            ..ScArgs::default()
        };
        let tls = args.resolve().unwrap().public_tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("sc.pem"));
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.client_auth, ClientAuth::Required, "the flag wins over the file");

        let no_key = ScArgs { tls_cert: Some("sc.pem".into()), ..ScArgs::default() };
        assert!(no_key.resolve().unwrap_err().to_string().contains("tls_key"));
        let no_ca = ScArgs {
            tls_cert: Some("sc.pem".into()),
            tls_key: Some("sc.key".into()),
            tls_client_auth: Some(ClientAuth::Required),
            ..ScArgs::default()
        };
        assert!(no_ca.resolve().unwrap_err().to_string().contains("tls_ca"));
        let ca_alone = ScArgs { tls_ca: Some("ca.pem".into()), ..ScArgs::default() };
        assert!(ca_alone.resolve().is_err());
    }

    #[test]
    fn invalid_settings_are_refused() {
        let args = ScArgs { topic_segment_bytes: Some(10), ..ScArgs::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("segment_bytes"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let args = ScArgs { config: Some(path), ..ScArgs::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
    }
}
