//! Pipelined connections to SPU cores, demultiplexed by correlation id, and their pool.
//!
//! Ownership: the [`ConnectionPool`] of a cluster handle holds one [`Connection`] per SPU core
//! address (`host:core_port`). Each connection has one reader thread that owns the read half
//! and the frame decoder; writers share the write half behind a mutex and write whole frames,
//! so requests from producers and consumers interleave frame by frame.
//!
//! Invariants:
//! - Every request registered with a completion gets exactly one call of it: the response,
//!   a timeout (swept by the reader thread at least every [`SWEEP_INTERVAL`]), or the
//!   connection's failure. Completions run on the reader thread and must only hand the result
//!   on (send on a channel); they never block.
//! - The completion is registered before the frame is written, so a fast response cannot miss
//!   it. A response whose correlation id is not pending (timed out already, or `acks none`) is
//!   dropped.
//! - A connection that failed is never reused: the pool opens a new one on the next request.
//!
//! Bounds: frames above [`RESPONSE_FRAME_BYTES_MAX`] close the connection; in-flight requests
//! per connection are bounded by their callers (one produce request per partition, one fetch
//! per consumer).
//!
//! ## TLS
//!
//! A rustls connection is one state machine for both directions, so it cannot be split like a
//! socket. Over TLS ([`TlsLink`]) the session sits behind its own mutex and the socket's write
//! half behind another, with one rule: a writer takes the socket lock first, then the session
//! lock only to encrypt its frame into the writer's buffer, and writes that buffer to the socket
//! after releasing the session. The reader thread reads raw bytes without any lock and takes
//! the session lock only to decrypt them. So no thread ever holds the session lock during
//! socket I/O: a writer blocked on a full socket never stops the reader from draining
//! responses (which would deadlock against a server blocked on writing them), and records
//! leave in the order they were sealed because only the socket lock's holder seals. TLS costs
//! one copy each way (rustls' buffers); the plaintext path is unchanged.

use std::collections::HashMap;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_proto::api::security::{AuthenticateRequest, AuthenticateResponse};
use sluice_proto::api::{ApiVersion, Decode, Request};
use sluice_proto::frame::{encode_request, Frame, FrameDecoder, FRAME_BYTES_MAX_DEFAULT};
use sluice_proto::ids::CorrelationId;
use sluice_tls::rustls::ClientConnection;
use sluice_tls::ClientStream;

use crate::error::ClientError;
use crate::transport::{fatal_error, is_tls_answer, tls_required, Transport};

/// Largest response frame accepted: the SPU's own frame maximum.
pub(crate) const RESPONSE_FRAME_BYTES_MAX: u32 = FRAME_BYTES_MAX_DEFAULT;
/// How often the reader thread looks for timed-out requests and shutdown.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Capacity a TLS writer's buffer keeps between frames; a larger frame's buffer is shrunk back
/// after it is sent, so one big produce request does not pin its size for the connection's life.
const TLS_WRITE_BUFFER_BYTES_KEPT: usize = 1024 * 1024;

/// What the reader thread calls with a request's outcome.
pub(crate) type Completion = Box<dyn FnOnce(Result<Frame, ClientError>) + Send>;

struct Pending {
    deadline: Instant,
    timeout: Duration,
    operation: &'static str,
    completion: Completion,
}

struct Shared {
    address: String,
    pending: Mutex<HashMap<i32, Pending>>,
    closed: AtomicBool,
}

impl Shared {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Pending>> {
        self.pending.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Marks the connection failed and fails every pending request with `error`.
    fn fail_all(&self, error: &ClientError) {
        self.closed.store(true, Ordering::Release);
        let drained: Vec<Pending> =
            self.lock_pending().drain().map(|(_, pending)| pending).collect();
        for pending in drained {
            (pending.completion)(Err(error.clone()));
        }
    }

    fn complete(&self, correlation_id: i32, result: Result<Frame, ClientError>) {
        let pending = self.lock_pending().remove(&correlation_id);
        match pending {
            Some(pending) => (pending.completion)(result),
            None => tracing::trace!(address = %self.address, correlation_id, "unawaited response"),
        }
    }

    fn sweep_timeouts(&self, now: Instant) {
        let expired: Vec<Pending> = {
            let mut pending = self.lock_pending();
            let ids: Vec<i32> = pending
                .iter()
                .filter(|(_, entry)| entry.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| pending.remove(&id)).collect()
        };
        for entry in expired {
            let error = ClientError::Timeout { operation: entry.operation, after: entry.timeout };
            (entry.completion)(Err(error));
        }
    }
}

/// The write side of a connection.
enum Writer {
    /// The socket's write half.
    Plain(Mutex<TcpStream>),
    /// A TLS session shared with the reader thread (see the module docs for the lock order).
    Tls(Arc<TlsLink>),
}

/// A TLS connection's state, shared by the writers and the reader thread.
struct TlsLink {
    /// The rustls session: taken briefly to seal or open records, never across socket I/O.
    session: Mutex<ClientConnection>,
    /// The socket's write half and the sealed bytes of the frame being written; whoever
    /// holds it is the only one sealing records.
    socket: Mutex<(TcpStream, Vec<u8>)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl TlsLink {
    /// Seals `pieces` and writes them (see the module docs for why in two steps).
    fn write_frame(&self, pieces: &mut [IoSlice<'_>]) -> std::io::Result<()> {
        let mut socket = lock(&self.socket);
        let (stream, sealed) = &mut *socket;
        {
            let mut session = lock(&self.session);
            write_all_vectored(&mut session.writer(), pieces)?;
            while session.wants_write() {
                session.write_tls(sealed)?;
            }
        }
        let written = stream.write_all(sealed);
        sealed.clear();
        sealed.shrink_to(TLS_WRITE_BUFFER_BYTES_KEPT);
        written
    }

    /// Sends what the session wants to send on its own (an alert, a key update answer) when no
    /// writer is busy; otherwise the busy writer's next frame takes it along.
    fn flush_pending(&self) -> std::io::Result<()> {
        let Ok(mut socket) = self.socket.try_lock() else { return Ok(()) };
        let (stream, sealed) = &mut *socket;
        {
            let mut session = lock(&self.session);
            while session.wants_write() {
                session.write_tls(sealed)?;
            }
        }
        let written = stream.write_all(sealed);
        sealed.clear();
        written
    }
}

/// One connection (plaintext or TLS) to one SPU core.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    writer: Writer,
    /// A handle on the socket for shutting it down whatever the writers do.
    socket: TcpStream,
    next_correlation_id: AtomicI32,
}

impl Connection {
    /// Connects (with TLS when `transport` says so) and starts the reader thread (no
    /// authentication).
    #[cfg(test)]
    pub(crate) fn open(
        address: &str,
        connect_timeout: Duration,
        transport: &Transport,
    ) -> Result<Connection, ClientError> {
        Connection::open_as(address, connect_timeout, transport, None)
    }

    /// Connects as [`Self::open`] does, then `Authenticate`s with `token` (when given) within
    /// its timeout; a refused token is [`ClientError::AuthenticationFailed`].
    pub(crate) fn open_as(
        address: &str,
        connect_timeout: Duration,
        transport: &Transport,
        token: Option<(&str, Duration)>,
    ) -> Result<Connection, ClientError> {
        let connection = Connection::open_unauthenticated(address, connect_timeout, transport)?;
        if let Some((token, timeout)) = token {
            let request = AuthenticateRequest { token: token.to_owned() };
            let frame = connection.call(&request, "authenticate", timeout)?;
            let response = AuthenticateResponse::decode(frame.header.api_version, &frame.body)
                .map_err(|error| ClientError::decode(address, &error))?;
            if !response.error_code.is_ok() {
                return Err(ClientError::server_message(response.error_code, response.message));
            }
        }
        Ok(connection)
    }

    fn open_unauthenticated(
        address: &str,
        connect_timeout: Duration,
        transport: &Transport,
    ) -> Result<Connection, ClientError> {
        let failed = |error| ClientError::connection(address, error);
        let stream = transport.connect(address, connect_timeout)?;
        let shared = Arc::new(Shared {
            address: address.to_owned(),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let (writer, reader, socket) = match stream {
            ClientStream::Plain(socket) => {
                let reader = socket.try_clone().map_err(failed)?;
                let handle = socket.try_clone().map_err(failed)?;
                (Writer::Plain(Mutex::new(socket)), Reader::Plain(reader), handle)
            }
            ClientStream::Tls(tls) => {
                let sluice_tls::rustls::StreamOwned { mut conn, sock } = *tls;
                // Whole frames are sealed at once; the socket lock bounds what waits.
                conn.set_buffer_limit(None);
                let reader = sock.try_clone().map_err(failed)?;
                let handle = sock.try_clone().map_err(failed)?;
                let link = Arc::new(TlsLink {
                    session: Mutex::new(conn),
                    socket: Mutex::new((sock, Vec::new())),
                });
                (Writer::Tls(Arc::clone(&link)), Reader::Tls { socket: reader, link }, handle)
            }
        };
        reader.socket().set_read_timeout(Some(SWEEP_INTERVAL)).map_err(failed)?;
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("sluice-conn-{address}"))
            .spawn(move || read_loop(&thread_shared, reader))
            .map_err(failed)?;
        Ok(Connection { shared, writer, socket, next_correlation_id: AtomicI32::new(1) })
    }

    pub(crate) fn address(&self) -> &str {
        &self.shared.address
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// A fresh correlation id for a request on this connection (positive, wrapping).
    pub(crate) fn next_correlation_id(&self) -> CorrelationId {
        let id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        CorrelationId(id)
    }

    /// Writes an encoded request frame. With a completion, it is called exactly once with the
    /// response, a timeout after `timeout`, or the connection's failure; without one (a one-way
    /// message, `acks none`) a write failure is returned.
    pub(crate) fn send(
        &self,
        correlation_id: CorrelationId,
        frame: &[u8],
        awaited: Option<(Completion, &'static str, Duration)>,
    ) -> Result<(), ClientError> {
        self.send_vectored(correlation_id, &mut [IoSlice::new(frame)], awaited)
    }

    /// [`Self::send`] of a frame in pieces, written with `writev` (the pieces are consumed).
    pub(crate) fn send_vectored(
        &self,
        correlation_id: CorrelationId,
        frame: &mut [IoSlice<'_>],
        awaited: Option<(Completion, &'static str, Duration)>,
    ) -> Result<(), ClientError> {
        let awaited_response = awaited.is_some();
        if let Some((completion, operation, timeout)) = awaited {
            let pending =
                Pending { deadline: Instant::now() + timeout, timeout, operation, completion };
            if self.is_closed() {
                (pending.completion)(Err(self.closed_error()));
                return Ok(());
            }
            self.shared.lock_pending().insert(correlation_id.get(), pending);
        }
        let written = match &self.writer {
            Writer::Plain(socket) => write_all_vectored(&mut *lock(socket), frame),
            Writer::Tls(link) => link.write_frame(frame),
        };
        if let Err(error) = written {
            let failure = ClientError::connection(self.address(), error);
            let _ignored = self.writer_shutdown();
            self.shared.fail_all(&failure);
            if !awaited_response {
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Sends `request` and waits for its response frame.
    pub(crate) fn call<R: Request>(
        &self,
        request: &R,
        operation: &'static str,
        timeout: Duration,
    ) -> Result<Frame, ClientError> {
        let correlation_id = self.next_correlation_id();
        let mut frame = Vec::new();
        encode_request(&mut frame, ApiVersion(0), correlation_id, request)?;
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let completion: Completion = Box::new(move |result| {
            let _ignored = sender.send(result);
        });
        self.send(correlation_id, &frame, Some((completion, operation, timeout)))?;
        // The reader thread sweeps the timeout; the margin covers its sweep interval.
        match receiver.recv_timeout(timeout + SWEEP_INTERVAL * 3) {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { operation, after: timeout }),
        }
    }

    fn writer_shutdown(&self) -> std::io::Result<()> {
        self.socket.shutdown(Shutdown::Both)
    }

    fn closed_error(&self) -> ClientError {
        let error = std::io::Error::new(ErrorKind::NotConnected, "connection already closed");
        ClientError::connection(self.address(), error)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // Wakes the reader thread, which fails what is pending and exits.
        let _ignored = self.writer_shutdown();
    }
}

/// The read side of a connection, owned by its reader thread.
enum Reader {
    /// The socket's read half.
    Plain(TcpStream),
    /// The socket's read half and the session that opens its records.
    Tls {
        /// Raw TLS bytes come from here, read without any lock.
        socket: TcpStream,
        /// The session shared with the writers.
        link: Arc<TlsLink>,
    },
}

impl Reader {
    fn socket(&self) -> &TcpStream {
        match self {
            Reader::Plain(socket) | Reader::Tls { socket, .. } => socket,
        }
    }
}

/// Opens the TLS records in `input` and feeds their plaintext to `decoder`; `Ok(false)` once
/// the SPU closed the session.
fn open_records(
    link: &TlsLink,
    mut input: &[u8],
    plaintext: &mut [u8],
    decoder: &mut FrameDecoder,
) -> std::io::Result<bool> {
    let mut session = lock(&link.session);
    while !input.is_empty() {
        session.read_tls(&mut input)?;
        session
            .process_new_packets()
            .map_err(|error| std::io::Error::new(ErrorKind::InvalidData, error))?;
        loop {
            match session.reader().read(plaintext) {
                Ok(0) => return Ok(false),
                Ok(read) => decoder.feed(&plaintext[..read]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
    }
    Ok(true)
}

fn read_loop(shared: &Shared, reader: Reader) {
    let mut decoder = FrameDecoder::new(RESPONSE_FRAME_BYTES_MAX);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // Opened TLS records land here before the decoder (plaintext needs no such buffer).
    let mut plaintext = match &reader {
        Reader::Plain(_) => Vec::new(),
        Reader::Tls { .. } => vec![0u8; READ_CHUNK_BYTES],
    };
    let mut first_read = true;
    let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
    let mut stream = reader.socket();
    let failure = loop {
        if shared.closed.load(Ordering::Acquire) {
            break std::io::Error::new(ErrorKind::NotConnected, "connection closed by the client");
        }
        match stream.read(&mut chunk) {
            Ok(0) => break std::io::Error::new(ErrorKind::UnexpectedEof, "closed by the SPU"),
            Ok(read) => match &reader {
                Reader::Plain(_) => {
                    if std::mem::take(&mut first_read) && is_tls_answer(&chunk[..read]) {
                        break tls_required();
                    }
                    decoder.feed(&chunk[..read]);
                }
                Reader::Tls { link, .. } => {
                    match open_records(link, &chunk[..read], &mut plaintext, &mut decoder) {
                        Ok(true) => {}
                        Ok(false) => {
                            break std::io::Error::new(
                                ErrorKind::UnexpectedEof,
                                "closed by the SPU (TLS close_notify)",
                            )
                        }
                        Err(error) => break error,
                    }
                    if let Err(error) = link.flush_pending() {
                        break error;
                    }
                }
            },
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => break error,
        }
        if let Err(error) = dispatch_frames(shared, &mut decoder) {
            break error;
        }
        let now = Instant::now();
        if now >= next_sweep {
            shared.sweep_timeouts(now);
            next_sweep = now + SWEEP_INTERVAL;
        }
    };
    tracing::debug!(address = %shared.address, error = %failure, "SPU connection ended");
    let _ignored = stream.shutdown(Shutdown::Both);
    let error = fatal_error(&shared.address, &failure)
        .unwrap_or_else(|| ClientError::connection(&shared.address, failure));
    shared.fail_all(&error);
}

/// Hands every whole frame to its completion; a fatal framing error ends the connection.
fn dispatch_frames(shared: &Shared, decoder: &mut FrameDecoder) -> Result<(), std::io::Error> {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => shared.complete(frame.header.correlation_id.get(), Ok(frame)),
            Ok(None) => return Ok(()),
            Err(error) if error.is_fatal() => {
                return Err(std::io::Error::new(ErrorKind::InvalidData, error.to_string()))
            }
            Err(error) => {
                if let Some(correlation_id) = error.correlation_id() {
                    let failure = ClientError::Protocol {
                        peer: shared.address.clone(),
                        reason: error.to_string(),
                    };
                    shared.complete(correlation_id.get(), Err(failure));
                }
            }
        }
    }
}

/// One connection per SPU core address, opened on first use and replaced once failed.
pub(crate) struct ConnectionPool {
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    connect_timeout: Duration,
    transport: Transport,
    /// Token sent on every new connection, with the bound on its answer.
    token: Option<(String, Duration)>,
}

impl ConnectionPool {
    pub(crate) fn new(connect_timeout: Duration, transport: Transport) -> ConnectionPool {
        ConnectionPool {
            connections: Mutex::new(HashMap::new()),
            connect_timeout,
            transport,
            token: None,
        }
    }

    /// A pool whose connections authenticate with `token` (answer within `timeout`).
    pub(crate) fn with_token(mut self, token: Option<String>, timeout: Duration) -> ConnectionPool {
        self.token = token.map(|token| (token, timeout));
        self
    }

    /// The live connection to `address`, connecting when there is none. Connecting happens
    /// outside the pool's lock so that one slow SPU does not hold up the others.
    pub(crate) fn get(&self, address: &str) -> Result<Arc<Connection>, ClientError> {
        {
            let connections = self.connections.lock().unwrap_or_else(|poison| poison.into_inner());
            if let Some(connection) = connections.get(address) {
                if !connection.is_closed() {
                    return Ok(Arc::clone(connection));
                }
            }
        }
        let token = self.token.as_ref().map(|(token, timeout)| (token.as_str(), *timeout));
        let fresh =
            Arc::new(Connection::open_as(address, self.connect_timeout, &self.transport, token)?);
        let mut connections = self.connections.lock().unwrap_or_else(|poison| poison.into_inner());
        match connections.get(address) {
            Some(existing) if !existing.is_closed() => Ok(Arc::clone(existing)),
            _ => {
                connections.insert(address.to_owned(), Arc::clone(&fresh));
                Ok(fresh)
            }
        }
    }
}

/// Writes every byte of `pieces`, in order (`Write::write_all_vectored` is not stable yet).
fn write_all_vectored(
    writer: &mut impl Write,
    mut pieces: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut pieces, 0);
    while !pieces.is_empty() {
        match writer.write_vectored(pieces) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut pieces, written),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::api::api_versions::ApiVersionsRequest;
    use sluice_proto::frame::encode_frame;
    use std::net::TcpListener;

    /// Takes at most `step` bytes per call, from the first non-empty piece only.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let taken = bytes.len().min(self.step);
            self.written.extend_from_slice(&bytes[..taken]);
            Ok(taken)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn vectored_writes_send_every_piece_in_order_across_short_writes() {
        let pieces: [&[u8]; 5] = [b"", b"head", b"", b"batch one", b"tail!"];
        for step in [1, 2, 3, 7, 100] {
            let mut writer = Trickle { written: Vec::new(), step };
            let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
            write_all_vectored(&mut writer, &mut slices).unwrap();
            assert_eq!(writer.written, b"headbatch onetail!", "step {step}");
        }
        let mut stuck = Trickle { written: Vec::new(), step: 0 };
        let error = write_all_vectored(&mut stuck, &mut [IoSlice::new(b"x")]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WriteZero);
    }

    /// A server that answers every request frame with `reply(frame)`, or nothing.
    fn serve(reply: fn(&Frame) -> Option<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            answer_frames(&mut stream, reply);
        });
        address
    }

    /// Reads frames from `stream` and writes what `reply` makes of each, until either side
    /// fails or the peer closes.
    fn answer_frames(stream: &mut (impl Read + Write), reply: fn(&Frame) -> Option<Vec<u8>>) {
        let mut decoder = FrameDecoder::new(64 << 20);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let read = match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            decoder.feed(&chunk[..read]);
            while let Ok(Some(frame)) = decoder.next_frame() {
                if let Some(bytes) = reply(&frame) {
                    if stream.write_all(&bytes).and_then(|()| stream.flush()).is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn echo(frame: &Frame) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        encode_frame(&mut out, &frame.header, &sluice_proto::api::NoResponse).unwrap();
        Some(out)
    }

    #[test]
    fn pipelined_requests_complete_by_correlation_id() {
        let connection =
            Connection::open(&serve(echo), Duration::from_secs(5), &Transport::plaintext())
                .unwrap();
        let (sender, receiver) = crossbeam_channel::unbounded();
        let mut ids = Vec::new();
        for _ in 0..50 {
            let id = connection.next_correlation_id();
            ids.push(id.get());
            let mut frame = Vec::new();
            encode_request(&mut frame, ApiVersion(0), id, &ApiVersionsRequest).unwrap();
            let sender = sender.clone();
            let completion: Completion = Box::new(move |result: Result<Frame, ClientError>| {
                let _ignored = sender.send(result.map(|frame| frame.header.correlation_id.get()));
            });
            connection
                .send(id, &frame, Some((completion, "test", Duration::from_secs(5))))
                .unwrap();
        }
        let mut seen: Vec<i32> = (0..50)
            .map(|_| receiver.recv_timeout(Duration::from_secs(10)).unwrap().unwrap())
            .collect();
        seen.sort_unstable();
        ids.sort_unstable();
        assert_eq!(seen, ids);
    }

    #[test]
    fn unanswered_request_times_out_and_dead_connection_fails_fast() {
        let connection =
            Connection::open(&serve(|_| None), Duration::from_secs(5), &Transport::plaintext())
                .unwrap();
        let error = connection
            .call(&ApiVersionsRequest, "api versions", Duration::from_millis(150))
            .unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let closer = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let connection =
            Connection::open(&address, Duration::from_secs(5), &Transport::plaintext()).unwrap();
        closer.join().unwrap();
        let error = connection
            .call(&ApiVersionsRequest, "api versions", Duration::from_secs(30))
            .unwrap_err();
        assert!(matches!(error, ClientError::Connection { .. }), "{error:?}");
        assert!(connection.is_closed());
    }

    /// A TLS server (dev CA) answering every request frame with `reply(frame)`, over the
    /// blocking `ServerStream` of sluice-tls: the SPU side of a TLS connection, in process.
    struct TlsServer {
        address: String,
        dir: tempfile::TempDir,
    }

    impl TlsServer {
        fn start(reply: fn(&Frame) -> Option<Vec<u8>>) -> TlsServer {
            use sluice_tls::dev_ca::{DevCa, VALIDITY_DEFAULT};
            let dir = tempfile::tempdir().unwrap();
            let ca = DevCa::new("test CA").unwrap();
            ca.write_cert(&dir.path().join("ca.pem")).unwrap();
            let server = ca
                .issue(&["spu-1.test", "127.0.0.1"], VALIDITY_DEFAULT)
                .unwrap()
                .write(dir.path(), "spu")
                .unwrap();
            let files = server.server(&dir.path().join("ca.pem"), sluice_tls::ClientAuth::Optional);
            let tls = sluice_tls::ServerTls::new(files).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap().to_string();
            std::thread::spawn(move || {
                for socket in listener.incoming() {
                    let Ok(socket) = socket else { return };
                    let config = tls.config();
                    std::thread::spawn(move || serve_tls(socket, config, reply));
                }
            });
            TlsServer { address, dir }
        }

        fn transport(&self) -> Transport {
            let mut config = crate::ClientConfig::new(&self.address);
            config.tls = Some(crate::TlsConfig::new(self.dir.path().join("ca.pem")));
            Transport::new(&config).unwrap()
        }
    }

    fn serve_tls(
        socket: TcpStream,
        config: Arc<sluice_tls::rustls::ServerConfig>,
        reply: fn(&Frame) -> Option<Vec<u8>>,
    ) {
        let mut stream = sluice_tls::ServerStream::accept(socket, config).unwrap();
        if stream.handshake(Duration::from_secs(10)).is_err() {
            return;
        }
        stream.socket().set_read_timeout(None).unwrap();
        answer_frames(&mut stream, reply);
    }

    /// Answers with the request's own body (so that big requests make big responses).
    fn mirror(frame: &Frame) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let header = frame.header.to_bytes(frame.body.len()).unwrap();
        out.extend_from_slice(&header);
        out.extend_from_slice(&frame.body);
        Some(out)
    }

    #[test]
    fn pipelined_requests_over_tls_from_many_threads_complete_with_their_bodies() {
        let server = TlsServer::start(mirror);
        let connection = Arc::new(
            Connection::open(&server.address, Duration::from_secs(5), &server.transport()).unwrap(),
        );
        let (sender, receiver) = crossbeam_channel::unbounded();
        let mut writers = Vec::new();
        for thread in 0..4u8 {
            let (connection, sender) = (Arc::clone(&connection), sender.clone());
            writers.push(std::thread::spawn(move || {
                for round in 0..25usize {
                    let id = connection.next_correlation_id();
                    // Bodies from a few bytes to 2 MiB: records span many TLS records, and
                    // writers queue behind each other's sealing.
                    let body = vec![thread; (round * 87_383) % (2 << 20) + 1];
                    let header = sluice_proto::frame::FrameHeader {
                        api_key: sluice_proto::api::ApiKey::ApiVersions,
                        api_version: ApiVersion(0),
                        correlation_id: id,
                    };
                    let mut frame = header.to_bytes(body.len()).unwrap().to_vec();
                    frame.extend_from_slice(&body);
                    let sender = sender.clone();
                    let expected = body.len();
                    let completion: Completion = Box::new(move |result: Result<Frame, _>| {
                        let checked = result.map(|frame| {
                            frame.body.len() == expected && frame.body.iter().all(|b| *b == thread)
                        });
                        let _ignored = sender.send(checked);
                    });
                    connection
                        .send(id, &frame, Some((completion, "test", Duration::from_secs(30))))
                        .unwrap();
                }
            }));
        }
        for writer in writers {
            writer.join().unwrap();
        }
        for _ in 0..100 {
            let checked = receiver.recv_timeout(Duration::from_secs(30)).unwrap();
            assert!(checked.unwrap(), "a response came back with another body");
        }
        assert!(!connection.is_closed());
    }

    #[test]
    fn tls_against_plaintext_and_plaintext_against_tls_are_named() {
        // A TLS client on a plaintext server that answers what it cannot decode with an error
        // frame, as the SC and the SPUs do.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let plain = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut hello = [0u8; 512];
            let _ignored = stream.read(&mut hello);
            let mut out = Vec::new();
            let header = sluice_proto::frame::FrameHeader {
                api_key: sluice_proto::api::ApiKey::ApiVersions,
                api_version: ApiVersion(0),
                correlation_id: CorrelationId(0),
            };
            encode_frame(&mut out, &header, &sluice_proto::api::NoResponse).unwrap();
            let _ignored = stream.write_all(&out);
        });
        let tls_server = TlsServer::start(echo);
        let refused = Connection::open(&plain, Duration::from_secs(5), &tls_server.transport());
        let error = refused.err().expect("TLS to a plaintext server must fail");
        assert!(matches!(error, ClientError::NotTls { .. }), "{error:?}");
        // A plaintext client on a TLS server: the server's alert names the problem.
        let connection =
            Connection::open(&tls_server.address, Duration::from_secs(5), &Transport::plaintext())
                .unwrap();
        let error = connection
            .call(&ApiVersionsRequest, "api versions", Duration::from_secs(10))
            .unwrap_err();
        assert!(matches!(error, ClientError::TlsRequired { .. }), "{error:?}");
        // The TLS server goes on serving TLS clients.
        let connection =
            Connection::open(&tls_server.address, Duration::from_secs(5), &tls_server.transport())
                .unwrap();
        connection.call(&ApiVersionsRequest, "api versions", Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn pool_replaces_a_closed_connection() {
        let address = serve(echo);
        let pool = ConnectionPool::new(Duration::from_secs(5), Transport::plaintext());
        let first = pool.get(&address).unwrap();
        assert!(Arc::ptr_eq(&first, &pool.get(&address).unwrap()));
        first.shared.closed.store(true, Ordering::Release);
        // The echo server accepts one connection only: the replacement cannot connect, or
        // connects and is refused later; either way it is a different connection or an error.
        match pool.get(&address) {
            Ok(second) => assert!(!Arc::ptr_eq(&first, &second)),
            Err(error) => assert!(error.is_retriable(), "{error:?}"),
        }
    }
}
