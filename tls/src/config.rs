//! Where a listener's or a client's TLS material is, and how a listener treats client
//! certificates; the serde forms are what TOML configuration files hold.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a TLS listener asks of clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client certificate is asked for and verified when sent; clients without one are let in
    /// (they may authenticate with a token).
    Optional,
    /// Every client must present a certificate signed by the CA bundle.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!("{other:?}: expected none, optional or required")),
        }
    }
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        })
    }
}

/// A TLS listener's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to (needed unless `client_auth` is
    /// `none`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Whether clients must present certificates.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// A TLS client's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// PEM CA bundle that the server's certificate must chain to.
    pub ca: PathBuf,
    /// PEM certificate chain presented to servers that ask (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}
