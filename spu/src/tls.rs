//! TLS on the SPU's glommio sockets (futures-rustls over `glommio::net::TcpStream`).
//!
//! ## What is encrypted, and who is who
//!
//! With `--tls-cert/--tls-key/--tls-ca` every listener speaks TLS: the public ones (shared and
//! per core) ask clients for certificates as `--tls-client-auth` says; the private ones
//! (replication) always require one. The SPU's own links (to the SC, to leaders) present the
//! same certificate and trust the same CA. The public listeners may have their own certificate
//! and client CA (`--public-tls-cert/key/ca`, e.g. from the CA clients already trust); the
//! private ones and the links keep the in-cluster ones. Without `--tls-*` everything is
//! plaintext (the default).
//!
//! Invariants:
//! - **An SPU's identity on a TLS link is its certificate's, never its claim.** A follower's
//!   fetch names the follower id; the leader serves it only when the certificate of the
//!   connection names `spu-<that id>.<cluster>` ([`PeerIdentity::may_act_as_spu`]). The SC
//!   applies the same rule to registrations.
//! - The SPU verifies whom it dials by name, not by address: the SC as `sc.<cluster>`, a leader
//!   as `spu-<leader id>.<cluster>` (rustls' server-name check against the certificate SANs),
//!   so it works whatever address they have.
//! - No TLS byte is ever sent by `sendfile`: a TLS connection's fetch responses take the
//!   copying (or direct-read) path and go through rustls (one copy into its records).
//! - Each core builds its own [`CoreTls`] (its own reloading configurations): nothing TLS is
//!   shared between cores. Rotation: a new handshake takes the files as they are now (checked
//!   at most every [`sluice_tls::RELOAD_CHECK_INTERVAL`]); established connections keep theirs.
//!
//! ## Failure modes
//!
//! A handshake gets [`HANDSHAKE_TIMEOUT`] (a peer that connects and sends nothing cannot hold a
//! task longer). A plaintext client on a TLS port and a TLS client on a plaintext port are told
//! with a TLS alert record (which a plaintext client recognises with
//! [`sluice_tls::looks_like_tls`]) and closed, with a rate-limited warning on the SPU and a
//! count in `sluice_spu_tls_port_mismatches_total`. Nothing a peer sends can panic a core.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use futures_rustls::{TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use sluice_proto::ids::SpuId;
use sluice_tls::{ClientTls, Identity, ServerName, ServerTls, TlsError};

use crate::config::SpuTlsSettings;

/// Longest time a TLS handshake may take, either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A fatal `handshake_failure` alert (TLS 1.2 record layer, as TLS 1.3 sends alerts too): what a
/// port answers a peer speaking the other protocol. A frame-protocol client reads it as a
/// length prefix whose bytes [`sluice_tls::looks_like_tls`] recognises.
pub const ALERT_HANDSHAKE_FAILURE: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40];

/// A server-side TLS stream over a glommio socket.
pub type ServerTlsStream = futures_rustls::server::TlsStream<TcpStream>;
/// A client-side TLS stream over a glommio socket.
pub type ClientTlsStream = futures_rustls::client::TlsStream<TcpStream>;

/// One core's TLS configurations (see the module docs).
pub struct CoreTls {
    public: ServerTls,
    private: ServerTls,
    client: ClientTls,
    cluster: String,
}

impl CoreTls {
    /// Loads this SPU's files; an error says which file and why.
    pub fn new(settings: &SpuTlsSettings, cluster: &str) -> Result<CoreTls, TlsError> {
        Ok(CoreTls {
            public: ServerTls::new(settings.public_server())?,
            private: ServerTls::new(settings.private_server())?,
            client: ClientTls::new(settings.client())?,
            cluster: cluster.to_owned(),
        })
    }

    /// The cluster whose names certificates carry.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The acceptor of a new public (`private == false`) or private connection.
    pub fn acceptor(&self, private: bool) -> TlsAcceptor {
        let config = if private { self.private.config() } else { self.public.config() };
        TlsAcceptor::from(config)
    }

    /// The connector of a new outgoing link.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.client.config())
    }
}

impl std::fmt::Debug for CoreTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CoreTls").field("cluster", &self.cluster).finish()
    }
}

/// Why a TLS connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer did not finish the handshake in time (retry is safe).
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
    /// rustls refused (unknown CA, wrong name, expired, no client certificate) or the
    /// connection failed during the handshake.
    #[error("TLS handshake failed: {0}")]
    Failed(io::Error),
    /// The name to verify the server by is not a valid DNS name.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// The TCP connection could not be made (retry is safe).
    #[error("cannot connect: {0}")]
    Connect(io::Error),
}

async fn with_timeout<T>(
    work: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, HandshakeError> {
    let timed = async {
        glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
        Err(HandshakeError::TimedOut(HANDSHAKE_TIMEOUT))
    };
    future::or(async { work.await.map_err(HandshakeError::Failed) }, timed).await
}

/// Runs the server handshake on an accepted socket, within [`HANDSHAKE_TIMEOUT`].
pub async fn accept(
    acceptor: TlsAcceptor,
    stream: TcpStream,
) -> Result<ServerTlsStream, HandshakeError> {
    with_timeout(acceptor.accept(stream)).await
}

/// How long a refused peer's bytes are drained after the alert (see [`refuse_mismatch`]).
const MISMATCH_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of a refused peer drained at most.
const MISMATCH_DRAIN_BYTES_MAX: usize = 64 << 10;

/// The answer to a peer speaking the other protocol: one alert record, the write side shut,
/// then what the peer sent is read and dropped (bounded in time and bytes) before the socket
/// closes: closing with unread bytes would send a reset, which can discard the alert before
/// the peer reads it.
pub async fn refuse_mismatch(stream: &mut TcpStream) {
    let _ = stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    if stream.write_all(&ALERT_HANDSHAKE_FAILURE).await.is_err() {
        return;
    }
    let _ = stream.close().await;
    let drain = async {
        let mut drained = 0;
        let mut chunk = [0u8; 4096];
        while drained < MISMATCH_DRAIN_BYTES_MAX {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    };
    future::or(drain, glommio::timer::sleep(MISMATCH_DRAIN_TIMEOUT)).await;
}

/// Whether the first bytes of a connection (at least one) are a TLS ClientHello or alert; a
/// short read that starts like one counts (a Sluice frame's length prefix never starts with
/// 0x15 or 0x16: that would be a frame of more than 350 MB).
pub fn starts_like_tls(bytes: &[u8]) -> bool {
    sluice_tls::looks_like_tls(bytes)
        || (bytes.len() < 3 && matches!(bytes.first(), Some(0x15 | 0x16)))
}

/// Who is at the other end of an accepted connection, as far as this SPU can prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A plaintext connection: nothing is proven (the SPU runs without TLS, trusting its
    /// network, as before TLS existed).
    Plaintext,
    /// TLS without a client certificate (public port with `--tls-client-auth` none/optional).
    Anonymous,
    /// TLS with a verified client certificate.
    Certificate {
        /// What the certificate says.
        identity: Identity,
        /// The SPU ids of this cluster it names (computed once per connection).
        spu_ids: Vec<i32>,
    },
}

impl PeerIdentity {
    /// The identity of a finished server handshake.
    pub fn of(stream: &ServerTlsStream, cluster: &str) -> PeerIdentity {
        match Identity::of_peer(stream.get_ref().1) {
            None => PeerIdentity::Anonymous,
            Some(identity) => {
                let spu_ids = identity.spu_ids(cluster);
                PeerIdentity::Certificate { identity, spu_ids }
            }
        }
    }

    /// The authorization principal a verified certificate names (`User:<first DNS name or
    /// common name>`); `None` without a certificate.
    pub fn principal(&self) -> Option<sluice_proto::object::Principal> {
        match self {
            PeerIdentity::Certificate { identity, .. } => identity
                .principal()
                .map(|name| sluice_proto::object::Principal::User(name.to_owned())),
            PeerIdentity::Plaintext | PeerIdentity::Anonymous => None,
        }
    }

    /// Whether the peer may act as SPU `id`: on TLS only with a certificate naming it.
    pub fn may_act_as_spu(&self, id: SpuId) -> bool {
        match self {
            PeerIdentity::Plaintext => true,
            PeerIdentity::Anonymous => false,
            PeerIdentity::Certificate { spu_ids, .. } => spu_ids.contains(&id.get()),
        }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerIdentity::Plaintext => formatter.write_str("<plaintext>"),
            PeerIdentity::Anonymous => formatter.write_str("<no client certificate>"),
            PeerIdentity::Certificate { identity, .. } => write!(formatter, "{identity}"),
        }
    }
}

/// A connection this SPU opened (to the SC, to a leader): plaintext or TLS.
pub enum LinkStream {
    /// No TLS.
    Plain(TcpStream),
    /// rustls over the socket (boxed: the connection state is large).
    Tls(Box<ClientTlsStream>),
}

impl LinkStream {
    /// Connects to `address` within `timeout`; with `tls`, runs the handshake verifying the
    /// server as `server_name` within [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(
        address: SocketAddr,
        timeout: Duration,
        tls: Option<(&CoreTls, String)>,
    ) -> Result<LinkStream, HandshakeError> {
        let stream = TcpStream::connect_timeout(address, timeout)
            .await
            .map_err(|error| HandshakeError::Connect(error.into()))?;
        let _ = stream.set_nodelay(true);
        let Some((tls, server_name)) = tls else { return Ok(LinkStream::Plain(stream)) };
        let name = ServerName::try_from(server_name.clone())
            .map_err(|_| HandshakeError::ServerName(server_name))?;
        let stream = with_timeout(tls.connector().connect(name, stream)).await?;
        Ok(LinkStream::Tls(Box::new(stream)))
    }

    /// The socket (timeouts).
    pub fn socket(&self) -> &TcpStream {
        match self {
            LinkStream::Plain(stream) => stream,
            LinkStream::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            LinkStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            LinkStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buffer),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(stream) => Pin::new(stream).poll_flush(context),
            LinkStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(stream) => Pin::new(stream).poll_close(context),
            LinkStream::Tls(stream) => Pin::new(stream.as_mut()).poll_close(context),
        }
    }
}

/// The write half of a server TLS connection, with its socket's descriptor (for the send
/// path's bookkeeping; never written to directly: see the module docs).
pub struct TlsWriter {
    half: futures_lite::io::WriteHalf<ServerTlsStream>,
    fd: RawFd,
}

/// The read half of a server TLS connection.
pub type TlsReader = futures_lite::io::ReadHalf<ServerTlsStream>;

/// Splits a server TLS stream into its halves (the read loop and the writer task of one
/// connection, on one core: the halves' lock is never contended across threads).
pub fn split(stream: ServerTlsStream) -> (TlsReader, TlsWriter) {
    let fd = stream.get_ref().0.as_raw_fd();
    let (reader, half) = futures_lite::io::split(stream);
    (reader, TlsWriter { half, fd })
}

impl AsRawFd for TlsWriter {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsyncWrite for TlsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().half).poll_write(context, buffer)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().half).poll_flush(context)
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().half).poll_close(context)
    }
}

/// A core's TLS (`None`: plaintext). An `Arc` only so that a link configuration can be made
/// before its executor starts; each core loads its own, and none is shared between cores.
pub type CoreTlsHandle = Option<std::sync::Arc<CoreTls>>;

/// Validates the files once on the main thread (each core then loads its own copy).
pub fn validate(settings: &SpuTlsSettings, cluster: &str) -> Result<(), TlsError> {
    CoreTls::new(settings, cluster).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_told_from_a_frame() {
        assert!(starts_like_tls(&[0x16, 0x03, 0x01]));
        assert!(starts_like_tls(&[0x16]));
        assert!(starts_like_tls(&ALERT_HANDSHAKE_FAILURE));
        // A frame's length prefix of a frame under 350 MB.
        assert!(!starts_like_tls(&[0x00, 0x00, 0x01]));
        assert!(!starts_like_tls(&[0x00]));
        assert!(sluice_tls::looks_like_tls(&ALERT_HANDSHAKE_FAILURE));
    }

    #[test]
    fn only_a_certificate_naming_the_spu_may_act_as_it() {
        let identity = Identity { dns_names: vec!["spu-5.east".into()], common_name: None };
        let spu_ids = identity.spu_ids("east");
        let peer = PeerIdentity::Certificate { identity, spu_ids };
        assert!(peer.may_act_as_spu(SpuId(5)));
        assert!(!peer.may_act_as_spu(SpuId(6)));
        assert!(!PeerIdentity::Anonymous.may_act_as_spu(SpuId(5)));
        assert!(PeerIdentity::Plaintext.may_act_as_spu(SpuId(5)));
        // Another cluster's SPU 5 is not this cluster's.
        let identity = Identity { dns_names: vec!["spu-5.west".into()], common_name: None };
        let spu_ids = identity.spu_ids("east");
        assert!(!PeerIdentity::Certificate { identity, spu_ids }.may_act_as_spu(SpuId(5)));
    }
}
