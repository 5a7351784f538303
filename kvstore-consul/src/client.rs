//! The blocking HTTP core: one [`ConsulClient`] per agent, shared by cloning.
//!
//! Ownership: the client owns a `ureq` agent (a small connection pool) behind an `Arc`; clones
//! share it and may be used from any thread. No async runtime is started.
//!
//! Invariants: every call carries a timeout (the configured request timeout, or for a blocking
//! query its wait plus Consul's wait/16 jitter plus the request timeout); every answer body is
//! read through a bound ([`RESPONSE_BYTES_MAX`]); the ACL token travels in the
//! `X-Consul-Token` header, never in the URL.
//!
//! Failure modes: transport failures map to [`ConsulError::Unreachable`] (not delivered),
//! [`ConsulError::Timeout`] or [`ConsulError::Connection`] (outcome unknown); error statuses
//! keep Consul's plain-text body in the message.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::config::{ConsulConfig, TlsConfig};
use crate::error::{body_message, ConsulError};
use crate::types::ConsulIndex;

/// Largest answer body read from Consul (a recursive get of a big prefix is the largest).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Longest wait Consul accepts for a blocking query.
pub const BLOCKING_WAIT_MAX: Duration = Duration::from_secs(600);

/// Idle pooled connections kept per agent (watches hold one each while blocked).
const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 16;

/// A blocking Consul HTTP client. Cheap to clone; clones share one connection pool.
///
/// ```no_run
/// use sluice_kvstore_consul::{ConsulClient, ConsulConfig};
///
/// let client = ConsulClient::new(ConsulConfig::from_env()?)?;
/// client.kv_put("sluice/hello", b"world")?;
/// let entry = client.kv_get("sluice/hello")?.expect("just written");
/// assert_eq!(entry.value, b"world");
/// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
/// ```
#[derive(Clone)]
pub struct ConsulClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    agent: ureq::Agent,
    base_url: String,
    token: Option<String>,
    datacenter: Option<String>,
    request_timeout: Duration,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConsulClient")
            .field("base_url", &self.inner.base_url)
            .field("datacenter", &self.inner.datacenter)
            .finish_non_exhaustive()
    }
}

/// Index and wait of a blocking query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking {
    pub(crate) index: ConsulIndex,
    pub(crate) wait: Duration,
}

/// One HTTP call to make.
pub(crate) struct Call<'a> {
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) body: Option<&'a [u8]>,
    pub(crate) blocking: Option<Blocking>,
    pub(crate) timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(method: &'static str, path: String) -> Self {
        Self { method, path, query: Vec::new(), body: None, blocking: None, timeout: None }
    }

    pub(crate) fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    pub(crate) fn flag(self, name: &'static str) -> Self {
        self.query(name, "")
    }

    pub(crate) fn body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn blocking(mut self, blocking: Option<Blocking>) -> Self {
        self.blocking = blocking;
        self
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// An answer of any status.
pub(crate) struct Reply {
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) index: Option<ConsulIndex>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// This answer as an error (for a status the caller does not handle).
    pub(crate) fn into_error(self) -> ConsulError {
        let message = body_message(&self.body);
        let lowered = message.to_ascii_lowercase();
        let (method, path) = (self.method, self.path);
        if self.status == 403
            || lowered.contains("permission denied")
            || lowered.contains("acl not found")
        {
            return ConsulError::PermissionDenied { method, path, message };
        }
        let session_gone = lowered.starts_with("invalid session")
            || (lowered.starts_with("session id") && lowered.ends_with("not found"));
        if session_gone {
            return ConsulError::InvalidSession { method, path, message };
        }
        ConsulError::Rejected { method, path, status: self.status, message }
    }

    /// Fails unless the status is 2xx.
    pub(crate) fn success(self) -> Result<Self, ConsulError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }

    /// The body as JSON of type `T`.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ConsulError> {
        serde_json::from_slice(&self.body).map_err(|error| self.decode_error(error.to_string()))
    }

    /// The `X-Consul-Index` header, which a blocking-capable endpoint must send.
    pub(crate) fn required_index(&self) -> Result<ConsulIndex, ConsulError> {
        self.index.ok_or_else(|| self.decode_error("missing X-Consul-Index header".into()))
    }

    pub(crate) fn decode_error(&self, detail: String) -> ConsulError {
        ConsulError::Decode { method: self.method, path: self.path.clone(), detail }
    }

    /// A `true`/`false` body (KV writes, session destroy).
    pub(crate) fn bool_body(&self) -> Result<bool, ConsulError> {
        match std::str::from_utf8(&self.body).map(str::trim) {
            Ok("true") => Ok(true),
            Ok("false") => Ok(false),
            _ => Err(self.decode_error(format!(
                "expected true or false, got {:?}",
                body_message(&self.body)
            ))),
        }
    }
}

impl ConsulClient {
    /// A client for `config`. Opens no connection yet.
    ///
    /// # Errors
    /// [`ConsulError::Config`] for a bad address or unusable TLS material.
    pub fn new(config: ConsulConfig) -> Result<Self, ConsulError> {
        let base_url = config.base_url()?;
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(config.connect_timeout)
            .max_idle_connections_per_host(IDLE_CONNECTIONS_PER_HOST_MAX)
            .redirects(0);
        if let Some(tls) = &config.tls {
            let has_material =
                tls.ca_certificates_pem.is_some() || tls.client_certificate_pem.is_some();
            if has_material {
                builder = builder.tls_config(rustls_config(tls)?);
            }
        }
        let inner = ClientInner {
            agent: builder.build(),
            base_url,
            token: config.token.filter(|token| !token.is_empty()),
            datacenter: config.datacenter,
            request_timeout: config.request_timeout,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// A client configured from the environment ([`ConsulConfig::from_env`]).
    ///
    /// # Errors
    /// As [`ConsulConfig::from_env`] and [`ConsulClient::new`].
    pub fn from_env() -> Result<Self, ConsulError> {
        Self::new(ConsulConfig::from_env()?)
    }

    /// The base URL this client talks to, e.g. `http://127.0.0.1:8500`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The configured bound on non-blocking calls.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The address of the cluster's Raft leader (`/v1/status/leader`), `None` while there is
    /// none (e.g. an agent still electing).
    ///
    /// # Errors
    /// Transport errors and error statuses.
    pub fn status_leader(&self) -> Result<Option<String>, ConsulError> {
        let reply = self.execute(Call::new("GET", "/v1/status/leader".into()))?.success()?;
        let leader: String = reply.json()?;
        Ok(Some(leader).filter(|leader| !leader.is_empty()))
    }

    /// Runs one call and returns the answer whatever its status.
    pub(crate) fn execute(&self, call: Call<'_>) -> Result<Reply, ConsulError> {
        let url = format!("{}{}", self.inner.base_url, call.path);
        let timeout = call_timeout(&call, self.inner.request_timeout);
        let mut request = self.inner.agent.request(call.method, &url).timeout(timeout);
        if let Some(token) = &self.inner.token {
            request = request.set("X-Consul-Token", token);
        }
        if let Some(datacenter) = &self.inner.datacenter {
            request = request.query("dc", datacenter);
        }
        for (name, value) in &call.query {
            request = request.query(name, value);
        }
        if let Some(blocking) = call.blocking {
            request = request
                .query("index", &blocking.index.get().to_string())
                .query("wait", &crate::types::duration_text(blocking.wait));
        }
        let result = match call.body {
            Some(body) => request.send_bytes(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(transport)) => {
                return Err(self.transport_error(&call, timeout, &transport));
            }
        };
        self.read_reply(call, timeout, response)
    }

    fn read_reply(
        &self,
        call: Call<'_>,
        timeout: Duration,
        response: ureq::Response,
    ) -> Result<Reply, ConsulError> {
        let status = response.status();
        let index = response.header("X-Consul-Index").and_then(|value| value.trim().parse().ok());
        let mut body = Vec::new();
        let limit = u64::try_from(RESPONSE_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(1);
        if let Err(error) = response.into_reader().take(limit).read_to_end(&mut body) {
            return Err(io_error(call.method, call.path, timeout, &error));
        }
        if body.len() > RESPONSE_BYTES_MAX {
            return Err(ConsulError::Decode {
                method: call.method,
                path: call.path,
                detail: format!("answer larger than {RESPONSE_BYTES_MAX} bytes"),
            });
        }
        Ok(Reply {
            method: call.method,
            path: call.path,
            status,
            index: index.map(ConsulIndex::new),
            body,
        })
    }

    fn transport_error(
        &self,
        call: &Call<'_>,
        timeout: Duration,
        transport: &ureq::Transport,
    ) -> ConsulError {
        use std::error::Error as _;
        let detail = transport.to_string();
        if is_tls_failure(transport) {
            return ConsulError::TlsHandshake { address: self.inner.base_url.clone(), detail };
        }
        match transport.kind() {
            ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
                ConsulError::Unreachable { address: self.inner.base_url.clone(), detail }
            }
            ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                ConsulError::Config { reason: detail }
            }
            _ => {
                match transport.source().and_then(|source| source.downcast_ref::<std::io::Error>())
                {
                    Some(error) => io_error(call.method, call.path.clone(), timeout, error),
                    None => ConsulError::Connection {
                        method: call.method,
                        path: call.path.clone(),
                        detail,
                    },
                }
            }
        }
    }
}

/// Whether a transport error comes from rustls (certificate or handshake), found by walking
/// the error's sources.
fn is_tls_failure(transport: &ureq::Transport) -> bool {
    use std::error::Error as _;
    let mut source = transport.source();
    while let Some(error) = source {
        if error.is::<rustls::Error>() {
            return true;
        }
        // An io::Error's source() skips the error it wraps; look at that one too.
        let wrapped = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        if wrapped.is_some_and(|inner| inner.is::<rustls::Error>()) {
            return true;
        }
        source = error.source();
    }
    false
}

fn call_timeout(call: &Call<'_>, request_timeout: Duration) -> Duration {
    let base = call.timeout.unwrap_or(request_timeout);
    match call.blocking {
        // Consul adds up to wait/16 of random jitter to a blocking query's wait.
        Some(blocking) => blocking.wait + blocking.wait / 16 + base,
        None => base,
    }
}

fn io_error(
    method: &'static str,
    path: String,
    timeout: Duration,
    error: &std::io::Error,
) -> ConsulError {
    match error.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ConsulError::Timeout {
            method,
            path,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        },
        _ => ConsulError::Connection { method, path, detail: error.to_string() },
    }
}

fn rustls_config(tls: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, ConsulError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let config_error = |reason: String| ConsulError::Config { reason };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = &tls.ca_certificates_pem {
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate
                .map_err(|error| config_error(format!("bad CA certificate PEM: {error}")))?;
            roots
                .add(certificate)
                .map_err(|error| config_error(format!("unusable CA certificate: {error}")))?;
        }
    }
    if roots.is_empty() {
        return Err(config_error("the TLS configuration names no CA certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| config_error(format!("TLS protocol versions: {error}")))?
        .with_root_certificates(roots);
    let config = match (&tls.client_certificate_pem, &tls.client_key_pem) {
        (Some(certificate_pem), Some(key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(certificate_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| config_error(format!("bad client certificate PEM: {error}")))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|error| config_error(format!("bad client key PEM: {error}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| config_error(format!("unusable client certificate: {error}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(config_error(
                "a client certificate and its key must be configured together".into(),
            ))
        }
    };
    Ok(Arc::new(config))
}

/// Percent-encodes a KV key (or any path tail) for a URL path, keeping `/` as separator.
pub(crate) fn encode_path(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/');
        if keep {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(encode_path("a/b c?d%"), "a/b%20c%3Fd%25");
        assert_eq!(encode_path("topic-1/p_0.x~"), "topic-1/p_0.x~");
    }

    #[test]
    fn blocking_timeout_exceeds_wait_and_jitter() {
        let call = Call::new("GET", "/v1/kv/a".into())
            .blocking(Some(Blocking { index: ConsulIndex::new(5), wait: Duration::from_secs(16) }));
        let timeout = call_timeout(&call, Duration::from_secs(2));
        assert_eq!(timeout, Duration::from_secs(16 + 1 + 2));
    }

    #[test]
    fn tls_without_ca_is_refused() {
        let config = ConsulConfig::new("https://127.0.0.1:1").with_tls(TlsConfig {
            client_certificate_pem: Some(b"x".to_vec()),
            ..TlsConfig::default()
        });
        assert!(matches!(ConsulClient::new(config), Err(ConsulError::Config { .. })));
    }
}
