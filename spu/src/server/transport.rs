//! What an accepted connection speaks, decided from its first bytes: plaintext frames or TLS.
//!
//! A core without TLS serves plaintext; a TLS ClientHello there is answered with a TLS alert
//! (the client's TLS library reports it) and closed. A core with TLS runs the handshake
//! ([`crate::tls::accept`], bounded by [`crate::tls::HANDSHAKE_TIMEOUT`]); plaintext there is
//! answered with the same alert record, whose first bytes a plaintext client recognises
//! ([`sluice_tls::looks_like_tls`]), and closed. Both cases are logged (rate-limited,
//! [`super::abuse_log`]) and counted; neither can panic or hold the core.
//!
//! The result is a read side for the connection's read loop and a write side for its writer
//! task: for plaintext the socket and a `dup` of it; for TLS the two halves of the rustls
//! stream (one core, one connection: the halves' lock is never contended across threads).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt};
use glommio::net::TcpStream;

use crate::metrics::Counter;
use crate::server::abuse_log;
use crate::server::connection::Port;
use crate::server::core::Core;
use crate::tls::{self, PeerIdentity, TlsReader, TlsWriter};

/// An accepted connection, ready to serve.
pub enum Transport {
    /// Plaintext: the socket to read and a duplicate of it to write.
    Plain {
        /// The read side.
        reader: Reader,
        /// The write side.
        writer: TcpStream,
    },
    /// TLS after a finished handshake.
    Tls {
        /// The read side.
        reader: Reader,
        /// The write side.
        writer: TlsWriter,
        /// Who the client certificate says the peer is.
        peer: PeerIdentity,
    },
}

/// The read side of a connection, with its peer address for log lines.
pub struct Reader {
    inner: ReaderInner,
    peer_address: Option<SocketAddr>,
}

enum ReaderInner {
    Plain(TcpStream),
    /// The frame read timeout is applied here with a timer (the socket is inside rustls).
    Tls {
        half: TlsReader,
        timeout: Option<Duration>,
    },
}

impl Reader {
    /// Bounds each following read to `timeout` (`None`: unbounded); a read past it fails
    /// with `TimedOut`.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match &mut self.inner {
            ReaderInner::Plain(stream) => stream.set_read_timeout(timeout).map_err(io::Error::from),
            ReaderInner::Tls { timeout: slot, .. } => {
                *slot = timeout;
                Ok(())
            }
        }
    }

    /// Reads what is there (plaintext: from the socket; TLS: decrypted by rustls).
    pub async fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            ReaderInner::Plain(stream) => stream.read(buffer).await,
            ReaderInner::Tls { half, timeout: None } => half.read(buffer).await,
            ReaderInner::Tls { half, timeout: Some(timeout) } => {
                let timeout = *timeout;
                let expired = async move {
                    glommio::timer::sleep(timeout).await;
                    Err(io::Error::from(io::ErrorKind::TimedOut))
                };
                future::or(half.read(buffer), expired).await
            }
        }
    }

    /// Logs (rate-limited) that the connection closes because of what the peer did.
    pub fn log_closed(&self, reason: &str) {
        abuse_log::closed_peer(&peer_text(self.peer_address), reason);
    }
}

fn peer_text(address: Option<SocketAddr>) -> String {
    address.map_or_else(|| "unknown".to_owned(), |address| address.to_string())
}

/// Sets up an accepted connection whose first bytes are `first`; `None`: it was refused (and
/// logged) or failed.
pub async fn open(
    core: &Rc<Core>,
    mut stream: TcpStream,
    port: Port,
    first: &[u8],
) -> Option<Transport> {
    let peer_address = stream.peer_addr().ok();
    let hello = tls::starts_like_tls(first);
    let Some(core_tls) = core.tls.as_deref() else {
        if hello {
            core.probe.add(Counter::TlsPortMismatches, 1);
            abuse_log::closed_peer(
                &peer_text(peer_address),
                "a TLS ClientHello on a plaintext port (this SPU runs without TLS: connect \
                 without TLS, or start the SPU with --tls-cert)",
            );
            tls::refuse_mismatch(&mut stream).await;
            return None;
        }
        return plain(stream, peer_address);
    };
    if !hello {
        core.probe.add(Counter::TlsPortMismatches, 1);
        abuse_log::closed_peer(
            &peer_text(peer_address),
            "plaintext on a TLS port (this SPU requires TLS: connect with TLS)",
        );
        tls::refuse_mismatch(&mut stream).await;
        return None;
    }
    let acceptor = core_tls.acceptor(port == Port::Private);
    match tls::accept(acceptor, stream).await {
        Ok(stream) => {
            let peer = PeerIdentity::of(&stream, core_tls.cluster());
            tracing::debug!(peer = %peer_text(peer_address), identity = %peer, ?port, "TLS connection");
            let (half, writer) = tls::split(stream);
            let reader = Reader { inner: ReaderInner::Tls { half, timeout: None }, peer_address };
            Some(Transport::Tls { reader, writer, peer })
        }
        Err(error) => {
            core.probe.add(Counter::TlsHandshakeFailures, 1);
            abuse_log::closed_peer(&peer_text(peer_address), &error.to_string());
            None
        }
    }
}

fn plain(stream: TcpStream, peer_address: Option<SocketAddr>) -> Option<Transport> {
    // SAFETY: dup returns a new descriptor we own (or -1, checked).
    let write_fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if write_fd < 0 {
        let error = io::Error::last_os_error();
        let reason = format!("cannot duplicate its descriptor: {error}");
        abuse_log::closed_peer(&peer_text(peer_address), &reason);
        return None;
    }
    // SAFETY: write_fd is a fresh, owned descriptor of a connected TCP socket.
    let writer = unsafe { TcpStream::from_raw_fd(write_fd) };
    let reader = Reader { inner: ReaderInner::Plain(stream), peer_address };
    Some(Transport::Plain { reader, writer })
}
