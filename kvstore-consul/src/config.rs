//! Client configuration: agent address, ACL token, datacenter, timeouts and TLS.
//!
//! Values come from the caller's configuration, with [`ConsulConfig::from_env`] reading the
//! variables the `consul` CLI itself honours (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`,
//! `CONSUL_HTTP_SSL`, `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`). Nothing here
//! does I/O except reading certificate files named by the environment.

use std::time::Duration;

use crate::error::ConsulError;

/// Address used when neither the configuration nor `CONSUL_HTTP_ADDR` names one.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8500";

/// Default bound on one non-blocking call (connect, send, answer).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on opening a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS settings for an `https://` agent address.
///
/// Without a CA the public web roots are trusted; Consul deployments normally use their own CA,
/// so set [`TlsConfig::ca_certificates_pem`].
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// PEM bundle of the certificate authorities to trust (e.g. `consul-agent-ca.pem`).
    pub ca_certificates_pem: Option<Vec<u8>>,
    /// PEM certificate chain presented to an agent that verifies clients (`verify_incoming`).
    pub client_certificate_pem: Option<Vec<u8>>,
    /// PEM private key of the client certificate.
    pub client_key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsConfig")
            .field("ca_certificates_pem", &self.ca_certificates_pem.as_ref().map(Vec::len))
            .field("client_certificate_pem", &self.client_certificate_pem.as_ref().map(Vec::len))
            .field("client_key_pem", &self.client_key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How to reach a Consul agent.
///
/// ```
/// use std::time::Duration;
/// use sluice_kvstore_consul::ConsulConfig;
///
/// let config = ConsulConfig::new("127.0.0.1:8500")
///     .with_token("secret")
///     .with_request_timeout(Duration::from_secs(3));
/// assert_eq!(config.address, "127.0.0.1:8500");
/// ```
#[derive(Clone)]
pub struct ConsulConfig {
    /// Agent address: `host:port`, `http://host:port` or `https://host:port`.
    pub address: String,
    /// ACL token, sent as the `X-Consul-Token` header.
    pub token: Option<String>,
    /// Datacenter to query (`?dc=`); the agent's own when `None`.
    pub datacenter: Option<String>,
    /// Bound on each non-blocking call. Blocking queries wait longer: their wait time plus
    /// Consul's jitter plus this.
    pub request_timeout: Duration,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// TLS settings; used when the address is `https://` (and forces https when set on a
    /// scheme-less address).
    pub tls: Option<TlsConfig>,
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConsulConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("datacenter", &self.datacenter)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self::new(DEFAULT_ADDRESS)
    }
}

impl ConsulConfig {
    /// A configuration for `address` with default timeouts, no token, no TLS settings.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            token: None,
            datacenter: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
        }
    }

    /// Reads `CONSUL_HTTP_ADDR` (default [`DEFAULT_ADDRESS`]), `CONSUL_HTTP_TOKEN`,
    /// `CONSUL_HTTP_SSL` (`true` makes a scheme-less address https), `CONSUL_CACERT`,
    /// `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY` (PEM file paths).
    ///
    /// # Errors
    /// [`ConsulError::Config`] when a named certificate file cannot be read.
    pub fn from_env() -> Result<Self, ConsulError> {
        let mut config = Self::new(env_value("CONSUL_HTTP_ADDR").unwrap_or(DEFAULT_ADDRESS.into()));
        config.token = env_value("CONSUL_HTTP_TOKEN");
        let ssl = env_value("CONSUL_HTTP_SSL").is_some_and(|value| parse_bool(&value));
        let tls = TlsConfig {
            ca_certificates_pem: read_env_file("CONSUL_CACERT")?,
            client_certificate_pem: read_env_file("CONSUL_CLIENT_CERT")?,
            client_key_pem: read_env_file("CONSUL_CLIENT_KEY")?,
        };
        let has_tls_files = tls.ca_certificates_pem.is_some()
            || tls.client_certificate_pem.is_some()
            || tls.client_key_pem.is_some();
        if ssl || has_tls_files {
            config.tls = Some(tls);
        }
        Ok(config)
    }

    /// Uses `address` unless it is `None`, in which case the environment decides
    /// ([`Self::from_env`]). Token and TLS settings are always read from the environment.
    ///
    /// # Errors
    /// As [`Self::from_env`].
    pub fn from_address_or_env(address: Option<&str>) -> Result<Self, ConsulError> {
        let mut config = Self::from_env()?;
        if let Some(address) = address {
            config.address = address.to_string();
        }
        Ok(config)
    }

    /// Sets the ACL token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the datacenter.
    pub fn with_datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.datacenter = Some(datacenter.into());
        self
    }

    /// Sets the bound on each non-blocking call.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the bound on opening a connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets TLS settings.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The base URL (`scheme://host:port`, no trailing slash) this configuration talks to.
    ///
    /// # Errors
    /// [`ConsulError::Config`] for an empty address or a scheme other than http and https.
    pub fn base_url(&self) -> Result<String, ConsulError> {
        let address = self.address.trim().trim_end_matches('/');
        if address.is_empty() {
            return Err(ConsulError::Config { reason: "the Consul address is empty".into() });
        }
        if let Some((scheme, _)) = address.split_once("://") {
            if scheme != "http" && scheme != "https" {
                return Err(ConsulError::Config {
                    reason: format!("unsupported scheme {scheme:?} in Consul address {address:?}"),
                });
            }
            return Ok(address.to_string());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{address}"))
    }
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|value| value.trim().to_string()).filter(|value| !value.is_empty())
}

fn parse_bool(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "1" | "t" | "true" | "yes")
}

fn read_env_file(name: &str) -> Result<Option<Vec<u8>>, ConsulError> {
    let Some(path) = env_value(name) else { return Ok(None) };
    std::fs::read(&path).map(Some).map_err(|error| ConsulError::Config {
        reason: format!("cannot read {name}={path}: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_adds_a_scheme() {
        assert_eq!(ConsulConfig::new("127.0.0.1:8500").base_url().unwrap(), DEFAULT_ADDRESS);
        let tls = ConsulConfig::new("consul:8501").with_tls(TlsConfig::default());
        assert_eq!(tls.base_url().unwrap(), "https://consul:8501");
        let explicit = ConsulConfig::new("https://consul:8501/");
        assert_eq!(explicit.base_url().unwrap(), "https://consul:8501");
        assert!(ConsulConfig::new("unix:///tmp/consul.sock").base_url().is_err());
        assert!(ConsulConfig::new(" ").base_url().is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let config = ConsulConfig::new("a:1").with_token("very-secret");
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
