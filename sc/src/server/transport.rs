//! Turning an accepted socket into a [`ServerStream`] and a [`Peer`], in the connection's own
//! thread (the accept loop never waits on a client).
//!
//! - Plaintext listener: the socket as is. A TLS client that connects anyway is recognised by
//!   its first bytes in [`connection::serve`](super::connection) and told so.
//! - TLS listener: the first byte is peeked (within [`HANDSHAKE_TIMEOUT`]); anything but a TLS
//!   handshake record is a plaintext client on the TLS port: it gets a TLS alert (its SDK
//!   recognises the record and says "requires TLS"), the SC logs it (rate-limited) and closes.
//!   Otherwise the handshake runs within [`HANDSHAKE_TIMEOUT`]; a refused certificate, a
//!   protocol mismatch or a timeout closes the connection and is logged (rate-limited).
//!
//! Invariant: a [`Peer`]'s identity is only ever taken from a certificate that the handshake
//! verified against `--tls-ca`; without TLS or without a client certificate it is `None`.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sluice_tls::{Identity, ServerStream, ServerTls};

use super::connection::log_abusive_close;

/// Longest time a client may take from connecting to the end of its TLS handshake (its first
/// byte included): a handshake is a few round trips, so this only cuts off clients that connect
/// and stay silent, which would otherwise hold a thread.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A fatal `unexpected_message` alert in a TLS 1.2 record: what a plaintext client on the TLS
/// port gets back, so that it can tell its user to turn TLS on.
const PLAINTEXT_REFUSAL_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a];

/// TLS record type of a handshake message: the first byte of every ClientHello.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// After a refusal, how long the SC reads (and drops) what the client still sends before it
/// closes: closing with unread bytes sends a reset, which can destroy the refusal in flight.
const REFUSAL_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Most bytes read and dropped after a refusal.
const REFUSAL_DRAIN_BYTES_MAX: usize = 64 * 1024;

/// Who is at the other end of a public-API connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The client's socket address.
    pub address: SocketAddr,
    /// The identity in the client's verified certificate (TLS with a client certificate only):
    /// the principal of authorization decisions.
    pub identity: Option<Identity>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.identity {
            Some(identity) => write!(formatter, "{} ({identity})", self.address),
            None => write!(formatter, "{}", self.address),
        }
    }
}

/// The stream to serve and who is on it; `None` when the connection was refused (and closed).
pub(super) fn open(
    socket: TcpStream,
    address: SocketAddr,
    tls: Option<&ServerTls>,
) -> Option<(ServerStream, Peer)> {
    let Some(tls) = tls else {
        return Some((ServerStream::Plain(socket), Peer { address, identity: None }));
    };
    match first_byte(&socket) {
        Ok(Some(TLS_HANDSHAKE_RECORD)) => {}
        Ok(Some(_)) => {
            use std::io::Write;
            log_abusive_close(address, "a plaintext client connected to the TLS port");
            if (&socket).write_all(&PLAINTEXT_REFUSAL_ALERT).is_ok() {
                close_after_refusal(&socket);
            }
            return None;
        }
        Ok(None) => {
            tracing::debug!(peer = %address, "closed before the TLS handshake");
            return None;
        }
        Err(error) => {
            log_abusive_close(address, &format!("no TLS handshake within its time: {error}"));
            return None;
        }
    }
    let mut stream = match ServerStream::accept(socket, tls.config()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(peer = %address, %error, "cannot start a TLS session");
            return None;
        }
    };
    if let Err(error) = stream.handshake(HANDSHAKE_TIMEOUT) {
        log_abusive_close(address, &error.to_string());
        // rustls has sent its alert (a refused certificate says which); let it arrive.
        close_after_refusal(stream.socket());
        return None;
    }
    // The handshake left its timeout on the socket: writes block like plaintext ones again
    // (reads get the serving loop's own timeouts).
    if let Err(error) = stream.socket().set_write_timeout(None) {
        tracing::debug!(peer = %address, %error, "cannot reset the write timeout");
        return None;
    }
    let identity = stream.peer_identity();
    tracing::debug!(peer = %address, identity = ?identity, "TLS session established");
    Some((stream, Peer { address, identity }))
}

/// The first byte the client sent, waiting at most [`HANDSHAKE_TIMEOUT`]; `None` when it closed.
fn first_byte(socket: &TcpStream) -> std::io::Result<Option<u8>> {
    socket.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut byte = [0u8; 1];
    loop {
        match socket.peek(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// Ends a refused connection so that the refusal reaches the client: no more writes (FIN after
/// the refusal), then what the client still sends is read and dropped, for a bounded time and
/// size.
pub(super) fn close_after_refusal(socket: &TcpStream) {
    use std::io::Read;
    let _ignored = socket.shutdown(std::net::Shutdown::Write);
    if socket.set_read_timeout(Some(REFUSAL_DRAIN_TIMEOUT)).is_err() {
        return;
    }
    let started = std::time::Instant::now();
    let mut dropped = 0;
    let mut buffer = [0u8; 4096];
    while dropped < REFUSAL_DRAIN_BYTES_MAX && started.elapsed() < REFUSAL_DRAIN_TIMEOUT {
        match (&*socket).read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(read) => dropped += read,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The accept loop of a standby SC (its gate never opens) with and without TLS: requests
    //! over TLS get the standby's answer, and each kind of client on the wrong port is told.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_proto::api::admin::AdminResponse;
    use sluice_proto::api::metadata::MetadataRequest;
    use sluice_proto::api::{ApiVersion, Decode};
    use sluice_proto::error_code::ErrorCode;
    use sluice_proto::frame::{encode_request, FrameDecoder};
    use sluice_proto::ids::CorrelationId;
    use sluice_tls::dev_ca::{DevCa, VALIDITY_DEFAULT};
    use sluice_tls::{
        looks_like_tls, ClientAuth, ClientStream, ClientTls, ClientTlsFiles, ServerTls,
    };

    use crate::ha::Gate;
    use crate::server::{run_accept, ServerContext};

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A standby accept loop on an OS-chosen port; stops when the guard drops.
    struct Standby {
        address: String,
        shutdown: Arc<AtomicBool>,
    }

    impl Standby {
        fn start(tls: Option<Arc<ServerTls>>) -> Standby {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap().to_string();
            let shutdown = Arc::new(AtomicBool::new(false));
            let gate = Arc::new(Gate::<ServerContext>::default());
            let flag = Arc::clone(&shutdown);
            std::thread::spawn(move || run_accept(listener, tls, gate, flag));
            Standby { address, shutdown }
        }
    }

    impl Drop for Standby {
        fn drop(&mut self) {
            self.shutdown.store(true, Ordering::Relaxed);
        }
    }

    fn request() -> Vec<u8> {
        let mut out = Vec::new();
        let request = MetadataRequest { topics: None };
        encode_request(&mut out, ApiVersion(0), CorrelationId(3), &request).unwrap();
        out
    }

    fn answer(stream: &mut impl Read) -> AdminResponse {
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = decoder.next_frame().unwrap() {
                return AdminResponse::decode(frame.header.api_version, &frame.body).unwrap();
            }
            let read = stream.read(&mut chunk).unwrap();
            assert!(read > 0, "closed without an answer");
            decoder.feed(&chunk[..read]);
        }
    }

    #[test]
    fn a_standby_answers_over_tls_and_names_clients_on_the_wrong_port() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        let ca_path = dir.path().join("ca.pem");
        ca.write_cert(&ca_path).unwrap();
        let sc =
            ca.issue(&["127.0.0.1"], VALIDITY_DEFAULT).unwrap().write(dir.path(), "sc").unwrap();
        let server = ServerTls::new(sc.server(&ca_path, ClientAuth::Optional)).unwrap();
        let tls_standby = Standby::start(Some(Arc::new(server)));
        let plain_standby = Standby::start(None);
        let client =
            ClientTls::new(ClientTlsFiles { ca: ca_path.clone(), cert: None, key: None }).unwrap();
        let tls_connect = |address: &str| {
            let socket = TcpStream::connect(address).unwrap();
            let mut stream = ClientStream::connect(socket, client.config(), "127.0.0.1").unwrap();
            stream.handshake(TIMEOUT).unwrap();
            stream
        };

        // Over TLS the standby answers with NotController, twice on one connection.
        let mut stream = tls_connect(&tls_standby.address);
        for _ in 0..2 {
            stream.write_all(&request()).unwrap();
            stream.flush().unwrap();
            assert_eq!(answer(&mut stream).error_code, ErrorCode::NotController);
        }

        // A plaintext client on the TLS port gets a TLS alert.
        let mut plain = TcpStream::connect(&tls_standby.address).unwrap();
        plain.set_read_timeout(Some(TIMEOUT)).unwrap();
        plain.write_all(&request()).unwrap();
        let mut first = [0u8; 7];
        plain.read_exact(&mut first).unwrap();
        assert!(looks_like_tls(&first), "{first:?}");

        // A TLS client on the plaintext port gets an error frame saying so.
        let socket = TcpStream::connect(&plain_standby.address).unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut hello = ClientStream::connect(socket, client.config(), "127.0.0.1").unwrap();
        let ClientStream::Tls(hello) = &mut hello else { unreachable!() };
        while hello.conn.wants_write() {
            hello.conn.write_tls(&mut hello.sock).unwrap();
        }
        let refusal = answer(&mut hello.sock);
        assert_eq!(refusal.error_code, ErrorCode::InvalidRequest);
        assert!(refusal.message.unwrap().contains("a TLS client connected to a plaintext port"));

        // Both still serve the right clients.
        let mut stream = tls_connect(&tls_standby.address);
        stream.write_all(&request()).unwrap();
        stream.flush().unwrap();
        assert_eq!(answer(&mut stream).error_code, ErrorCode::NotController);
        let mut plain = TcpStream::connect(&plain_standby.address).unwrap();
        plain.set_read_timeout(Some(TIMEOUT)).unwrap();
        plain.write_all(&request()).unwrap();
        assert_eq!(answer(&mut plain).error_code, ErrorCode::NotController);
    }
}
