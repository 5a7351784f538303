//! Client configuration files (`sluice --config FILE`, `sluice-perf --config FILE`): where the
//! cluster is and how to reach it, in TOML.
//!
//! ```toml
//! sc = "127.0.0.1:9003"          # one or more host:port, comma separated
//! tls_ca = "tls/ca.pem"          # relative paths are relative to the file's directory
//! tls_cert = "tls/admin.pem"
//! tls_key = "tls/admin.key"
//! # tls_server_name = "sc.local" # verify servers by this name instead of the host dialled
//! # token = "slu_..."            # access token (`sluice token create`), for authorization
//! ```
//!
//! Precedence, highest first: command-line flag, environment variable, file, default
//! ([`ClientSettings::resolve`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{ClientConfig, TlsConfig};
use crate::error::ClientError;

/// What a client configuration file holds; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// SC address(es), as `--sc`.
    pub sc: Option<String>,
    /// PEM CA bundle that servers' certificates must chain to; turns TLS on.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate chain (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Name to verify every server's certificate against.
    pub tls_server_name: Option<String>,
    /// Access token (`slu_...`, from `sluice token create`).
    pub token: Option<String>,
}

impl ClientFile {
    /// Reads `path`; relative file names in it are taken relative to its directory.
    pub fn read(path: &Path) -> Result<ClientFile, ClientError> {
        let invalid = |reason: String| ClientError::InvalidInput {
            what: "client configuration file",
            reason: format!("{}: {reason}", path.display()),
        };
        let text = std::fs::read_to_string(path).map_err(|error| invalid(error.to_string()))?;
        let mut file: ClientFile =
            toml::from_str(&text).map_err(|error| invalid(error.to_string()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for name in [&mut file.tls_ca, &mut file.tls_cert, &mut file.tls_key].into_iter().flatten()
        {
            if name.is_relative() {
                *name = base.join(&*name);
            }
        }
        Ok(file)
    }
}

/// Connection settings from the command line and the environment (each `None` when not
/// given), merged with a file by [`ClientSettings::resolve`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// `--sc` / `SLUICE_SC`.
    pub sc: Option<String>,
    /// `--config` / `SLUICE_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--tls-ca` / `SLUICE_TLS_CA`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-cert` / `SLUICE_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `SLUICE_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
    /// `--token` / `SLUICE_TOKEN`.
    pub token: Option<String>,
}

impl ClientSettings {
    /// The client configuration: these settings over the file's (if `config` names one) over
    /// `default_sc` and plaintext.
    pub fn resolve(&self, default_sc: &str) -> Result<ClientConfig, ClientError> {
        let file = match &self.config {
            Some(path) => ClientFile::read(path)?,
            None => ClientFile::default(),
        };
        let sc = self.sc.clone().or(file.sc).unwrap_or_else(|| default_sc.to_owned());
        let mut config = ClientConfig::new(&sc);
        let ca = self.tls_ca.clone().or(file.tls_ca);
        let cert = self.tls_cert.clone().or(file.tls_cert);
        let key = self.tls_key.clone().or(file.tls_key);
        config.tls = match ca {
            Some(ca) => Some(TlsConfig { ca, cert, key, server_name: file.tls_server_name }),
            None if cert.is_some() || key.is_some() => {
                return Err(ClientError::InvalidInput {
                    what: "TLS settings",
                    reason: "a client certificate needs --tls-ca (the CA bundle that the \
                             servers' certificates chain to)"
                        .into(),
                })
            }
            None => None,
        };
        config.token = self.token.clone().or(file.token);
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "sc = \"10.0.0.1:9003\"\ntls_ca = \"tls/ca.pem\"\ntls_cert = \"/abs/admin.pem\"\n\
             tls_key = \"tls/admin.key\"\ntoken = \"secret\"\n",
        )
        .unwrap();
        let settings = ClientSettings { config: Some(path), ..ClientSettings::default() };
        let config = settings.resolve("127.0.0.1:9003").unwrap();
        assert_eq!(config.sc_addresses, ["10.0.0.1:9003"]);
        let tls = config.tls.clone().unwrap();
        assert_eq!(tls.ca, dir.path().join("tls/ca.pem"));
        assert_eq!(tls.cert, Some(PathBuf::from("/abs/admin.pem")));
        assert_eq!(config.token.as_deref(), Some("secret"));
        assert!(!format!("{config:?}").contains("secret"), "the token stays out of logs");
        let flagged = ClientSettings { token: Some("flag".into()), ..settings.clone() };
        assert_eq!(flagged.resolve("127.0.0.1:9003").unwrap().token.as_deref(), Some("flag"));

        let flags =
            ClientSettings { sc: Some("h:1".into()), tls_ca: Some("other.pem".into()), ..settings };
        let config = flags.resolve("127.0.0.1:9003").unwrap();
        assert_eq!(config.sc_addresses, ["h:1"]);
        assert_eq!(config.tls.unwrap().ca, PathBuf::from("other.pem"));
    }

    #[test]
    fn defaults_and_refusals() {
        let config = ClientSettings::default().resolve("127.0.0.1:9003").unwrap();
        assert_eq!(config.sc_addresses, ["127.0.0.1:9003"]);
        assert_eq!(config.tls, None);
        let cert_alone =
            ClientSettings { tls_cert: Some("a.pem".into()), ..ClientSettings::default() };
        assert!(cert_alone.resolve("x:1").unwrap_err().to_string().contains("--tls-ca"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let bad = ClientSettings { config: Some(path), ..ClientSettings::default() };
        assert!(matches!(bad.resolve("x:1"), Err(ClientError::InvalidInput { .. })));
        let missing =
            ClientSettings { config: Some("/no/such/file".into()), ..ClientSettings::default() };
        assert!(missing.resolve("x:1").unwrap_err().to_string().contains("/no/such/file"));
    }
}
