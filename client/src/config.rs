//! Configuration of the cluster handle, producers and consumers, with their defaults.
//!
//! Every limit is a named field or constant with the reason for its default next to it.

use std::path::PathBuf;
use std::time::Duration;

use sluice_proto::api::fetch::Isolation;
use sluice_proto::api::produce::Acks;
use sluice_proto::record::Compression;

use crate::error::ClientError;

/// Default bound on opening a TCP connection: local and datacenter networks connect in
/// milliseconds; a few seconds tolerate a loaded host without hanging a CLI for long.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default bound on waiting for one response; produce with `acks all` waits for fsync on every
/// in-sync replica, so this is generous.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// How to reach the cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// SC public addresses (`host:port`), tried in order; the client moves to the next one on
    /// connection refused, a standby's `NotController`, or a dropped connection. An entry
    /// `consul://AGENT/CLUSTER` stands for every SC of `CLUSTER` whose Consul checks pass, the
    /// active one first, looked up once when the client connects (ACL token:
    /// `CONSUL_HTTP_TOKEN`); the standbys are in that list, so a fail-over among them needs
    /// no new look-up.
    pub sc_addresses: Vec<String>,
    /// Bound on opening one TCP connection.
    pub connect_timeout: Duration,
    /// Bound on waiting for one response (admin calls, produce, list offsets, fetch).
    pub request_timeout: Duration,
    /// TLS for every connection (SC and SPUs); `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// Access token (`slu_...`, from `sluice token create`): sent with `Authenticate` on every
    /// new connection, to the SC and to SPUs, so the client acts as `User:<token name>`.
    /// Never printed (`Debug` hides it).
    pub token: Option<String>,
}

/// TLS settings of a client: whom to trust, and the certificate to present when the servers
/// ask for one (mutual TLS; its name is the client's principal).
///
/// ```
/// let mut config = sluice_client::ClientConfig::new("127.0.0.1:9003");
/// config.tls = Some(sluice_client::TlsConfig::new("/etc/sluice/ca.pem"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM CA bundle that servers' certificates must chain to.
    pub ca: PathBuf,
    /// PEM certificate chain presented to servers (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// The name every server's certificate is checked against, instead of the host part of
    /// the address dialled (for servers dialled by an address their certificates do not name).
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Servers verified against the CA bundle `ca`; no client certificate.
    pub fn new(ca: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig { ca: ca.into(), cert: None, key: None, server_name: None }
    }

    /// The same, presenting the certificate `cert` with its key `key`.
    pub fn with_certificate(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig { cert: Some(cert.into()), key: Some(key.into()), ..self }
    }
}

impl ClientConfig {
    /// A configuration for `sc`: one `host:port` or several separated by commas, with default
    /// timeouts. Empty entries are skipped.
    ///
    /// ```
    /// let config = sluice_client::ClientConfig::new("10.0.0.1:9003, 10.0.0.2:9003");
    /// assert_eq!(config.sc_addresses, ["10.0.0.1:9003", "10.0.0.2:9003"]);
    /// ```
    pub fn new(sc: &str) -> ClientConfig {
        ClientConfig {
            sc_addresses: sc
                .split(',')
                .map(str::trim)
                .filter(|address| !address.is_empty())
                .map(str::to_owned)
                .collect(),
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            tls: None,
            token: None,
        }
    }

    /// A copy with every `consul://` entry replaced by the addresses it stands for.
    pub(crate) fn resolved(&self) -> Result<ClientConfig, ClientError> {
        use sluice_kvstore_consul::{discover_sc, ScDiscoveryUrl, ScEndpoint};
        if !self.sc_addresses.iter().any(|address| ScDiscoveryUrl::is_consul(address)) {
            return Ok(self.clone());
        }
        let mut addresses = Vec::new();
        for entry in &self.sc_addresses {
            if !ScDiscoveryUrl::is_consul(entry) {
                addresses.push(entry.clone());
                continue;
            }
            let url = ScDiscoveryUrl::parse(entry).map_err(|error| ClientError::InvalidInput {
                what: "SC address",
                reason: error.to_string(),
            })?;
            let discovery =
                |reason: String| ClientError::ScDiscovery { url: entry.clone(), reason };
            let client = url.client(None).map_err(|error| discovery(error.to_string()))?;
            let found = discover_sc(&client, &url.cluster, ScEndpoint::Public)
                .map_err(|error| discovery(error.to_string()))?;
            if found.is_empty() {
                return Err(discovery(format!(
                    "Consul lists no passing instance of {}",
                    sluice_kvstore_consul::sc_service_name(&url.cluster)
                )));
            }
            tracing::debug!(%entry, ?found, "SCs found in Consul");
            addresses.extend(found);
        }
        Ok(ClientConfig { sc_addresses: addresses, ..self.clone() })
    }

    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        if self.sc_addresses.is_empty() {
            return Err(ClientError::InvalidInput {
                what: "SC address",
                reason: "no address given; pass host:port[,host:port...]".into(),
            });
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(ClientError::InvalidInput {
                    what: "TLS settings",
                    reason: "a client certificate needs both its file and its key \
                             (--tls-cert and --tls-key)"
                        .into(),
                });
            }
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(ClientError::InvalidInput {
                what: "timeout",
                reason: "connect_timeout and request_timeout must be above zero".into(),
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for ClientConfig {
    /// Everything but the token's value.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientConfig")
            .field("sc_addresses", &self.sc_addresses)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Default for ClientConfig {
    /// The local development cluster: `127.0.0.1:9003`.
    fn default() -> Self {
        ClientConfig::new("127.0.0.1:9003")
    }
}

/// How a producer picks the partition of a record that names none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Partitioner {
    /// Every record goes to the current "sticky" partition, which moves round robin to the next
    /// partition each time a batch fills up; keys are ignored.
    Sticky,
    /// Records with a key go to `toPositive(murmur2(key)) % partitions`, exactly as Kafka's
    /// Java client places them; records without a key are sticky as above. Kafka's default.
    #[default]
    Murmur2Key,
}

/// Producer settings. Defaults: acks all, 64 KiB batches, 5 ms linger, no compression, 32 MiB
/// buffer, 120 s delivery timeout, 100 ms retry backoff, key partitioner, 8 requests in flight
/// per partition, idempotence on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Durability required before a record counts as delivered.
    pub acks: Acks,
    /// A batch is sent once it holds this many bytes (a single larger record makes a batch of
    /// its own).
    pub batch_bytes: usize,
    /// A batch that is not full is sent this long after its first record.
    pub linger: Duration,
    /// Codec for batches (the server stores them as sent).
    pub compression: Compression,
    /// Partition choice for records that name none.
    pub partitioner: Partitioner,
    /// Bytes of records buffered and in flight at most; `send` blocks while it is used up.
    pub buffer_bytes_max: usize,
    /// A record not acknowledged this long after `send` fails with a timeout; retries of
    /// retriable errors happen within it. `send` also blocks at most this long for buffer
    /// space.
    pub delivery_timeout: Duration,
    /// Pause before retrying a partition after a retriable error.
    pub retry_backoff: Duration,
    /// Produce requests per partition sent before the first is answered (1 to 16). The SPU
    /// appends a connection's requests in order and acknowledges them together, so more in
    /// flight means more records per write round and fdatasync. With idempotence, order
    /// within a partition holds across retries at any setting; without it, a request
    /// failing alone and retried may land after later ones (set 1 where that must never
    /// happen).
    pub max_in_flight: usize,
    /// Idempotent produce (with acks `leader` or `all`; acks `none` gets no answers to check,
    /// so it is off there). Each batch carries the producer's id, an epoch and the sequence
    /// of its first record per partition; the SPU appends a partition's batches only in
    /// sequence, so a retried batch never lands after later ones, and a retry of a batch
    /// that was appended (its answer was lost) is not written again, also across an SPU
    /// restart (the SPU rebuilds the state from the newest batches). Where the SPU lost the
    /// state (a truncation, a failed write, a new leader without it) the producer starts a
    /// new epoch, and a batch whose outcome it never learned may then be written twice (at
    /// least once).
    pub idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_bytes: 64 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            partitioner: Partitioner::Murmur2Key,
            buffer_bytes_max: 32 * 1024 * 1024,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            max_in_flight: 8,
            idempotence: true,
        }
    }
}

impl ProducerConfig {
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        let invalid = |reason: &str| ClientError::InvalidInput {
            what: "producer config",
            reason: reason.to_owned(),
        };
        if self.batch_bytes == 0 || self.batch_bytes > BATCH_BYTES_LIMIT {
            return Err(invalid("batch_bytes must be between 1 and 256 MiB"));
        }
        if self.buffer_bytes_max < self.batch_bytes {
            return Err(invalid("buffer_bytes_max must be at least batch_bytes"));
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&self.max_in_flight) {
            return Err(invalid("max_in_flight must be between 1 and 16"));
        }
        if self.delivery_timeout.is_zero() {
            return Err(invalid("delivery_timeout must be above zero"));
        }
        Ok(())
    }
}

/// Largest `max_in_flight` accepted: the SPU queues at most 16 answers per connection.
const MAX_IN_FLIGHT_LIMIT: usize = 16;

/// Largest `batch_bytes` accepted: far above any useful batch, below the frame limit.
const BATCH_BYTES_LIMIT: usize = 256 * 1024 * 1024;

/// Where a consumer starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StartFrom {
    /// The partition's first offset still stored.
    Beginning,
    /// The offset the next record will get (only new records are read).
    #[default]
    End,
    /// This offset.
    Offset(sluice_proto::ids::Offset),
    /// The first record whose timestamp (ms since the Unix epoch) is at or after this one; the
    /// end when there is none.
    Timestamp(i64),
}

/// Consumer settings. Defaults: from the end, committed reads, continuous, 8 MiB per fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Where to start.
    pub start: StartFrom,
    /// Committed (up to the high watermark) or uncommitted (up to the leader's log end).
    pub isolation: Isolation,
    /// Stop with [`crate::Poll::End`] once caught up with the end offset seen at start, instead
    /// of waiting for new records.
    pub stop_at_end: bool,
    /// Record bytes per fetch response at most (a batch larger than this still arrives whole).
    pub max_bytes: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            start: StartFrom::End,
            isolation: Isolation::ReadCommitted,
            stop_at_end: false,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_split_and_trimmed() {
        let config = ClientConfig::new(" a:1,,b:2 ");
        assert_eq!(config.sc_addresses, ["a:1", "b:2"]);
        assert!(config.validate().is_ok());
        assert!(ClientConfig::new(" , ").validate().is_err());
    }

    #[test]
    fn producer_defaults_match_the_contract() {
        let config = ProducerConfig::default();
        assert_eq!(config.acks, Acks::All);
        assert_eq!(config.batch_bytes, 65_536);
        assert_eq!(config.linger, Duration::from_millis(5));
        assert_eq!(config.compression, Compression::None);
        assert_eq!(config.buffer_bytes_max, 32 << 20);
        assert_eq!(config.delivery_timeout, Duration::from_secs(120));
        assert_eq!(config.retry_backoff, Duration::from_millis(100));
        assert!(config.validate().is_ok());
        let tiny_buffer = ProducerConfig { buffer_bytes_max: 10, ..ProducerConfig::default() };
        assert!(tiny_buffer.validate().is_err());
        assert_eq!(config.max_in_flight, 8);
        for max_in_flight in [0, 17] {
            let config = ProducerConfig { max_in_flight, ..ProducerConfig::default() };
            assert!(config.validate().is_err(), "max_in_flight {max_in_flight}");
        }
    }
}
