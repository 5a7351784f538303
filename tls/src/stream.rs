//! Blocking streams, plaintext or TLS, for thread-per-connection code (the SC, the SDK).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::ServerName;

use crate::error::TlsError;
use crate::identity::Identity;

/// Whether `bytes` (the first bytes a peer sent) look like a TLS record (handshake or alert of
/// TLS 1.0 to 1.3): a plaintext server tells a TLS client it connected to the wrong port, a
/// plaintext client tells its user that the server wants TLS.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}

/// A server side connection, plaintext or TLS.
pub enum ServerStream {
    /// No TLS.
    Plain(TcpStream),
    /// rustls over the socket (boxed: the connection state is large).
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl ServerStream {
    /// Starts TLS on an accepted socket (the handshake runs on the first read or write, or in
    /// [`ServerStream::handshake`]).
    pub fn accept(socket: TcpStream, config: Arc<ServerConfig>) -> Result<ServerStream, TlsError> {
        let connection = ServerConnection::new(config)
            .map_err(|source| TlsError::Config { context: "server connection", source })?;
        Ok(ServerStream::Tls(Box::new(StreamOwned::new(connection, socket))))
    }

    /// The socket (timeouts, shutdown, addresses).
    pub fn socket(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(socket) => socket,
            ServerStream::Tls(stream) => &stream.sock,
        }
    }

    /// Completes the handshake within `timeout` (a no-op on plaintext); the socket's read and
    /// write timeouts are left as `timeout` too.
    pub fn handshake(&mut self, timeout: Duration) -> Result<(), TlsError> {
        let ServerStream::Tls(stream) = self else { return Ok(()) };
        handshake(&mut stream.conn, &mut stream.sock, timeout)
    }

    /// The client's certificate identity (after the handshake; `None` without TLS or without a
    /// client certificate).
    pub fn peer_identity(&self) -> Option<Identity> {
        match self {
            ServerStream::Plain(_) => None,
            ServerStream::Tls(stream) => Identity::of_peer(&stream.conn),
        }
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }
}

fn handshake<C, D>(
    connection: &mut C,
    socket: &mut TcpStream,
    timeout: Duration,
) -> Result<(), TlsError>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    let peer = socket.peer_addr().map(|address| address.to_string()).unwrap_or_default();
    let failed = |source| TlsError::Handshake { peer: peer.clone(), source };
    socket.set_read_timeout(Some(timeout)).map_err(failed)?;
    socket.set_write_timeout(Some(timeout)).map_err(failed)?;
    while connection.is_handshaking() {
        connection.complete_io(socket).map_err(failed)?;
    }
    // The last flight (the client's Finished) may still be buffered.
    while connection.wants_write() {
        connection.write_tls(socket).map_err(failed)?;
    }
    Ok(())
}

impl Read for ServerStream {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ServerStream::Plain(socket) => socket.read(buffer),
            ServerStream::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for ServerStream {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        match self {
            ServerStream::Plain(socket) => socket.write(buffer),
            ServerStream::Tls(stream) => stream.write(buffer),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ServerStream::Plain(socket) => socket.flush(),
            ServerStream::Tls(stream) => stream.flush(),
        }
    }
}

/// A client side connection, plaintext or TLS.
pub enum ClientStream {
    /// No TLS.
    Plain(TcpStream),
    /// rustls over the socket (boxed: the connection state is large).
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// Starts TLS on a connected socket, verifying the server as `server_name` (a DNS name or
    /// an IP address); the handshake runs on the first read or write, or in
    /// [`ClientStream::handshake`].
    pub fn connect(
        socket: TcpStream,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> Result<ClientStream, TlsError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
        let connection = ClientConnection::new(config, name)
            .map_err(|source| TlsError::Config { context: "client connection", source })?;
        Ok(ClientStream::Tls(Box::new(StreamOwned::new(connection, socket))))
    }

    /// The socket (timeouts, shutdown, addresses).
    pub fn socket(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(socket) => socket,
            ClientStream::Tls(stream) => &stream.sock,
        }
    }

    /// Completes the handshake within `timeout` (a no-op on plaintext); the socket's read and
    /// write timeouts are left as `timeout` too.
    pub fn handshake(&mut self, timeout: Duration) -> Result<(), TlsError> {
        let ClientStream::Tls(stream) = self else { return Ok(()) };
        handshake(&mut stream.conn, &mut stream.sock, timeout)
    }

    /// The server's certificate identity (after the handshake; `None` without TLS).
    pub fn peer_identity(&self) -> Option<Identity> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(stream) => Identity::of_peer(&stream.conn),
        }
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

impl Read for ClientStream {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(socket) => socket.read(buffer),
            ClientStream::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(socket) => socket.write(buffer),
            ClientStream::Tls(stream) => stream.write(buffer),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(socket) => socket.flush(),
            ClientStream::Tls(stream) => stream.flush(),
        }
    }
}
