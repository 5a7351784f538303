//! The public API on the public address: framed postcard admin and metadata requests over TCP.
//!
//! ## Threads and bounds
//!
//! One accept thread ([`run_accept`]) and one thread per connection, at most
//! [`CONNECTIONS_MAX`] at a time; a connection beyond that is closed at once (logged). Each
//! connection thread owns its socket and its [`FrameDecoder`] (which grows only with bytes
//! received); it reads with a timeout so it notices shutdown ([`IDLE_POLL`]) and, for a
//! metadata watch, pushes updates between reads ([`SHUTDOWN_POLL`]). A frame started and not
//! finished within `--frame-read-timeout-ms` closes the connection. The accept thread waits in
//! `poll` on a [`LISTEN_BACKLOG`] deep queue, so a burst of thousands of connects is accepted
//! at once.
//!
//! ## Failure modes (never a panic on input)
//!
//! - A frame above [`FRAME_BYTES_MAX`] (or with a length below the header): an error response
//!   (`FrameTooLarge` / `InvalidRequest`, correlation id 0) then the connection is closed, since
//!   the stream cannot be resynchronized.
//! - An unknown API key or unsupported version: an error response with the request's
//!   correlation id, echoing the raw key and version; the connection stays usable.
//! - A body that does not decode: the request's own response type with `InvalidRequest` (or
//!   `InvalidTopicName` / `InvalidSpuGroupName` when only the name is wrong).
//!
//! ## TLS
//!
//! With `--tls-cert` the public address speaks only TLS: each connection thread peeks the
//! client's first byte and runs the handshake itself within [`HANDSHAKE_TIMEOUT`]
//! ([`transport`]), so a slow or silent client never holds up the accept loop. The client's
//! verified certificate becomes the connection's [`Peer`] identity. Plaintext and TLS clients
//! on the wrong port are told so and closed (logged, rate-limited).
//!
//! Frame-level error responses carry an [`AdminResponse`] body, because the protocol has no
//! generic error envelope; the same is used for `Metadata`, whose response has no error code.

pub mod access;
mod cluster;
mod connection;
pub mod handlers;
pub mod metadata;
pub mod reassign;
mod standby;
mod transport;

pub use standby::STANDBY_MESSAGE;
pub use transport::{Peer, HANDSHAKE_TIMEOUT};

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::frame::FrameDecoder;
use sluice_tls::ServerTls;

use crate::cache::Cache;
use crate::config::TopicDefaults;
use crate::ha::Gate;
use crate::store::MetadataStore;

pub use sluice_proto::api::admin::AdminResponse;

/// Most simultaneous connections on the public address; bounds threads and buffers. Every
/// client (SDK, CLI, load generator) holds at least one for its metadata watch, so this is
/// sized for thousands of clients: at 256 (the limit before), 256 idle connections locked
/// every new client out. An idle connection costs a parked thread (a small stack, of which a
/// few KiB are touched) and a wake-up every [`IDLE_POLL`]; measured in perf/README.md.
pub const CONNECTIONS_MAX: usize = 16_384;
/// Stack of a connection thread: handlers are shallow (decode, cache or store call, encode);
/// the default 2 MiB would reserve 32 GiB of address space at [`CONNECTIONS_MAX`].
pub const CONNECTION_STACK_BYTES: usize = 512 * 1024;
/// How often a connection without a metadata watch wakes up to check for shutdown (one with a
/// watch wakes every [`SHUTDOWN_POLL`] to push updates).
/// 10,000 idle connections at 1 s cost 10,000 wake-ups a second (probe p99 +19 ms on 2 cores).
pub const IDLE_POLL: Duration = Duration::from_secs(5);
/// Listen backlog of the public address (std's default is 128): connections arriving in a burst
/// beyond the backlog have their SYN dropped and retried by the client a second later (10,000
/// connects took 72 s with 128).
pub const LISTEN_BACKLOG: i32 = 4096;
/// Longest wait for a connection before the accept loop checks the shutdown flag.
const ACCEPT_POLL_MS: i32 = 100;
/// Default of `--frame-read-timeout-ms`: a client that started a frame must send the rest
/// within this time, else its connection is closed (logged): a half-sent frame must not hold
/// a thread and its buffer forever. A connection between requests is not timed out.
pub const FRAME_READ_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Refused connections are logged at most this often (with the count since the last line).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Largest admin frame accepted: 1 MiB holds an explicit assignment of thousands of partitions.
pub const FRAME_BYTES_MAX: u32 = 1024 * 1024;
/// How often blocked threads check the shutdown flag.
pub const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// What every connection thread shares.
pub struct ServerContext {
    /// The metadata store (admin writes).
    pub store: Arc<dyn MetadataStore>,
    /// The cache (every read).
    pub cache: Arc<Cache>,
    /// Defaults for unset topic settings.
    pub topic_defaults: TopicDefaults,
    /// Set to stop.
    pub shutdown: Arc<AtomicBool>,
    /// SPUs that preferred-leader restores leave alone (shared with the controller thread).
    pub holds: Arc<crate::controllers::holds::LeadershipHolds>,
    /// Longest time to receive the rest of a started frame.
    pub frame_read_timeout: Duration,
    /// ACL enforcement and the current authorizer.
    pub security: Arc<crate::security::Security>,
}

/// Accepts connections until shutdown; spawns one thread per connection (bounded). A
/// connection is served normally once `gate` is open (this SC is active), as a standby before.
/// With `tls`, each connection thread first completes a TLS handshake.
pub fn run_accept(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    gate: Arc<Gate<ServerContext>>,
    shutdown: Arc<AtomicBool>,
) {
    if let Err(error) = listener.set_nonblocking(true) {
        tracing::error!(%error, "cannot make the public listener non-blocking");
        return;
    }
    // Listening again on a listening socket only changes its backlog (capped by somaxconn).
    // SAFETY: the descriptor is the listener's, open for the whole call.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot raise the public listener's backlog");
    }
    let active = Arc::new(AtomicUsize::new(0));
    let mut refused: u64 = 0;
    let mut last_refusal_logged: Option<std::time::Instant> = None;
    while !shutdown.load(Ordering::Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                // Wakes as soon as a connection arrives (a fixed sleep here let the backlog
                // overflow during bursts).
                let mut ready =
                    libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd for the listener's open descriptor.
                unsafe { libc::poll(&mut ready, 1, ACCEPT_POLL_MS) };
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
            refused += 1;
            if last_refusal_logged.is_none_or(|logged| logged.elapsed() >= REFUSAL_LOG_INTERVAL) {
                last_refusal_logged = Some(std::time::Instant::now());
                tracing::warn!(
                    %peer, limit = CONNECTIONS_MAX, refused,
                    "too many connections; closing (refused: since the last such line)"
                );
                refused = 0;
            }
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (gate, shutdown, tls) = (Arc::clone(&gate), Arc::clone(&shutdown), tls.clone());
        let guard = ActiveGuard(Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name(format!("sc-admin-{peer}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let _guard = guard;
                let Some((stream, peer)) = transport::open(stream, peer, tls.as_deref()) else {
                    return;
                };
                match gate.get() {
                    Some(context) => connection::serve(stream, peer, context),
                    None => standby::serve(stream, &peer, &gate, &shutdown),
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot spawn a connection thread");
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fresh decoder with the public API's frame limit.
pub fn decoder() -> FrameDecoder {
    FrameDecoder::new(FRAME_BYTES_MAX)
}

/// Formats the bound addresses for logs and the ready file.
pub fn describe(public: SocketAddr, private: SocketAddr) -> String {
    format!("public={public}\nprivate={private}\n")
}
