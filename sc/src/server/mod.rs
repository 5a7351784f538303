//! The public API on the public address: framed postcard admin and metadata requests over TCP.
//!
//! ## Threads and bounds
//!
//! One accept thread ([`run_accept`]) and one thread per connection, at most
//! [`CONNECTIONS_MAX`] at a time; a connection beyond that is closed at once (logged). Each
//! connection thread owns its socket and its [`FrameDecoder`]; it reads with a short timeout so it
//! notices shutdown and, for a metadata watch, pushes updates between reads.
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
//! Frame-level error responses carry an [`AdminResponse`] body, because the protocol has no
//! generic error envelope; the same is used for `Metadata`, whose response has no error code.

mod cluster;
mod connection;
pub mod handlers;
pub mod metadata;
pub mod reassign;
mod standby;

pub use standby::STANDBY_MESSAGE;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::frame::FrameDecoder;

use crate::cache::Cache;
use crate::config::TopicDefaults;
use crate::ha::Gate;
use crate::store::MetadataStore;

pub use sluice_proto::api::admin::AdminResponse;

/// Most simultaneous connections on the public address; bounds threads and buffers.
pub const CONNECTIONS_MAX: usize = 256;
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
}

/// Accepts connections until shutdown; spawns one thread per connection (bounded). A
/// connection is served normally once `gate` is open (this SC is active), as a standby before.
pub fn run_accept(
    listener: TcpListener,
    gate: Arc<Gate<ServerContext>>,
    shutdown: Arc<AtomicBool>,
) {
    if let Err(error) = listener.set_nonblocking(true) {
        tracing::error!(%error, "cannot make the public listener non-blocking");
        return;
    }
    let active = Arc::new(AtomicUsize::new(0));
    while !shutdown.load(Ordering::Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
            tracing::warn!(%peer, limit = CONNECTIONS_MAX, "too many connections; closing");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (gate, shutdown) = (Arc::clone(&gate), Arc::clone(&shutdown));
        let guard = ActiveGuard(Arc::clone(&active));
        let spawned =
            std::thread::Builder::new().name(format!("sc-admin-{peer}")).spawn(move || {
                let _guard = guard;
                match gate.get() {
                    Some(context) => connection::serve(stream, peer, context),
                    None => standby::serve(stream, peer, &gate, &shutdown),
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
