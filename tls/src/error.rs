//! Why TLS cannot be set up.

use std::path::PathBuf;

/// Why a TLS configuration cannot be built or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file should hold ("certificate chain", "private key", "CA bundle").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS or PEM error.
        source: std::io::Error,
    },
    /// A PEM file holds none of what it should.
    #[error("{path} holds no {what} (PEM expected)")]
    Empty {
        /// What it should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the configuration (a key that does not match its certificate, a CA bundle
    /// it cannot use).
    #[error("invalid TLS configuration ({context}): {source}")]
    Config {
        /// Which part.
        context: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client verifier could not be built from the CA bundle.
    #[error("invalid CA bundle {path} for client certificates: {reason}")]
    Verifier {
        /// The CA bundle.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A setting needs another that is missing.
    #[error("incomplete TLS settings: {0}")]
    Incomplete(&'static str),
    /// A name to verify the server by is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// The handshake failed (certificate refused, protocol mismatch, timeout).
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer address.
        peer: String,
        /// The I/O error wrapping rustls' reason.
        source: std::io::Error,
    },
    /// Certificate generation failed (`dev-ca`).
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}
