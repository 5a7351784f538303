//! How the client reaches servers: plaintext TCP, or TLS on rustls when the configuration has
//! [`TlsConfig`](crate::TlsConfig) settings. One [`Transport`] per cluster handle serves the SC
//! connections and the SPU core connections alike.
//!
//! - A server is verified by the host of the address dialled (an IP address SAN or a DNS
//!   name), unless `server_name` overrides it. The TLS files are re-read when they change
//!   (new connections use them).
//! - Mismatches are told apart from other failures, each with its own [`ClientError`]
//!   variant: a TLS client whose server answers the ClientHello with anything but a TLS record
//!   gets [`ClientError::NotTls`] (one that closes without a word is an ordinary connection
//!   failure: a server at its connection limit does that too); a plaintext client whose server
//!   answers with a TLS record gets [`ClientError::TlsRequired`] ([`tls_required`] marks that
//!   error where frames are read). A refused certificate, in either direction, is
//!   [`ClientError::TlsHandshake`] with the side that refused; in TLS 1.3 a server refuses a
//!   client certificate after the client's handshake has finished, so that refusal surfaces on
//!   the first read and is recognised there too ([`fatal_error`]).

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use sluice_tls::rustls::{self, AlertDescription};
use sluice_tls::{looks_like_tls, ClientStream, ClientTls, ClientTlsFiles, TlsError};

use crate::config::{ClientConfig, TlsConfig};
use crate::error::{ClientError, TlsFailure};

/// TLS record type of a handshake message (ServerHello) and of an alert: a TLS server answers a
/// ClientHello with one of them.
const TLS_RECORD_TYPES: [u8; 2] = [0x16, 0x15];

/// Plaintext or TLS, and how to verify servers.
#[derive(Clone)]
pub(crate) struct Transport {
    tls: Option<Arc<TlsClient>>,
}

struct TlsClient {
    config: ClientTls,
    server_name: Option<String>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(if self.tls.is_some() { "Transport::Tls" } else { "Transport::Plain" })
    }
}

impl Transport {
    /// The transport `config` asks for; loading the TLS files fails with
    /// [`ClientError::TlsSetup`] naming the file.
    pub(crate) fn new(config: &ClientConfig) -> Result<Transport, ClientError> {
        let Some(TlsConfig { ca, cert, key, server_name }) = &config.tls else {
            return Ok(Transport::plaintext());
        };
        let files = ClientTlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
        let tls = ClientTls::new(files)
            .map_err(|error| ClientError::TlsSetup { reason: error.to_string() })?;
        Ok(Transport {
            tls: Some(Arc::new(TlsClient { config: tls, server_name: server_name.clone() })),
        })
    }

    /// No TLS.
    pub(crate) fn plaintext() -> Transport {
        Transport { tls: None }
    }

    /// Connects to `address` (`host:port`) and, with TLS, completes the handshake; both within
    /// `timeout` each. The stream is left with its read and write timeouts unset.
    pub(crate) fn connect(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<ClientStream, ClientError> {
        let socket = connect_tcp(address, timeout)
            .map_err(|error| ClientError::connection(address, error))?;
        let Some(tls) = &self.tls else {
            return Ok(ClientStream::Plain(socket));
        };
        let name = match &tls.server_name {
            Some(name) => name.clone(),
            None => host_of(address).to_owned(),
        };
        let mut stream = ClientStream::connect(socket, tls.config.config(), &name)
            .map_err(|error| ClientError::TlsSetup { reason: error.to_string() })?;
        handshake(&mut stream, address, timeout)?;
        let socket = stream.socket();
        let unset = socket.set_read_timeout(None).and_then(|()| socket.set_write_timeout(None));
        unset.map_err(|error| ClientError::connection(address, error))?;
        Ok(stream)
    }
}

/// Opens a TCP connection to `address` (`host:port`), trying each resolved IP.
pub(crate) fn connect_tcp(address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last_error = None;
    for socket_address in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&socket_address, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(ErrorKind::NotFound, format!("{address} resolves to no address"))
    }))
}

/// The host part of `host:port` (`[v6]:port` gives `v6`).
pub(crate) fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host)
}

/// Sends the ClientHello, checks that the answer is TLS at all, then completes the handshake.
fn handshake(
    stream: &mut ClientStream,
    address: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let ClientStream::Tls(tls) = stream else { return Ok(()) };
    let failed = |error: std::io::Error| ClientError::connection(address, error);
    let socket = &mut tls.sock;
    socket.set_read_timeout(Some(timeout)).map_err(failed)?;
    socket.set_write_timeout(Some(timeout)).map_err(failed)?;
    while tls.conn.wants_write() {
        tls.conn.write_tls(socket).map_err(failed)?;
    }
    let mut first = [0u8; 1];
    let answered = loop {
        match socket.peek(&mut first) {
            Ok(read) => break read,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ClientError::TlsHandshake {
                    address: address.to_owned(),
                    failure: TlsFailure::Other,
                    reason: format!(
                        "no answer to the TLS ClientHello within {timeout:?} (a plaintext server \
                         waiting for the rest of what it takes for a frame does this too: is it \
                         a plaintext port?)"
                    ),
                })
            }
            Err(error) => return Err(failed(error)),
        }
    };
    if answered == 0 {
        // No answer at all: a plaintext server that drops what it cannot read, or a server
        // refusing connections (at its limit); retrying is the caller's call.
        return Err(failed(std::io::Error::new(
            ErrorKind::ConnectionAborted,
            "closed at the TLS ClientHello without an answer (a plaintext port, or a server \
             refusing connections)",
        )));
    }
    if !TLS_RECORD_TYPES.contains(&first[0]) {
        return Err(ClientError::NotTls { address: address.to_owned() });
    }
    stream.handshake(timeout).map_err(|error| match error {
        TlsError::Handshake { source, .. } => fatal_error(address, &source)
            .unwrap_or_else(|| ClientError::connection(address, source)),
        other => ClientError::TlsSetup { reason: other.to_string() },
    })
}

/// The error a plaintext reader reports when a response starts with a TLS record: the server
/// wants TLS. [`fatal_error`] turns it into [`ClientError::TlsRequired`].
pub(crate) fn tls_required() -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, TlsRequiredMarker)
}

/// Whether the first bytes of a plaintext response are a TLS record.
pub(crate) fn is_tls_answer(first_bytes: &[u8]) -> bool {
    looks_like_tls(first_bytes)
}

#[derive(Debug)]
struct TlsRequiredMarker;

impl std::fmt::Display for TlsRequiredMarker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("the server answered with a TLS record")
    }
}

impl std::error::Error for TlsRequiredMarker {}

/// The TLS error that `error` carries, as the client error to report instead of a generic
/// connection failure (such errors are not cured by a retry or another address); `None` for
/// ordinary I/O errors.
pub(crate) fn fatal_error(address: &str, error: &std::io::Error) -> Option<ClientError> {
    let inner = error.get_ref()?;
    if inner.is::<TlsRequiredMarker>() {
        return Some(ClientError::TlsRequired { address: address.to_owned() });
    }
    let tls = inner.downcast_ref::<rustls::Error>()?;
    let failure = match tls {
        rustls::Error::InvalidCertificate(_) => TlsFailure::ServerCertificateRejected,
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            // A certificate whose issuer has the name of a trusted CA but another key (two
            // throwaway CAs of the same name) fails its signature check.
            | AlertDescription::DecryptError,
        ) => TlsFailure::ClientCertificateRejected,
        _ => TlsFailure::Other,
    };
    Some(ClientError::TlsHandshake {
        address: address.to_owned(),
        failure,
        reason: tls.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:9003"), "127.0.0.1");
        assert_eq!(host_of("sc.example:9003"), "sc.example");
        assert_eq!(host_of("[::1]:9003"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn tls_errors_are_told_apart() {
        let plain = std::io::Error::from(ErrorKind::ConnectionReset);
        assert!(fatal_error("a:1", &plain).is_none());
        let required = fatal_error("a:1", &tls_required()).unwrap();
        assert!(matches!(required, ClientError::TlsRequired { .. }), "{required:?}");
        assert!(required.to_string().contains("--tls-ca"), "{required}");
        let refused = std::io::Error::new(
            ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let error = fatal_error("a:1", &refused).unwrap();
        assert!(
            matches!(
                error,
                ClientError::TlsHandshake { failure: TlsFailure::ClientCertificateRejected, .. }
            ),
            "{error:?}"
        );
        assert!(!error.is_retriable());
    }
}
