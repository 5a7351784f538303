//! Log lines for connections closed because of what the client sent (bad frames, frames left
//! half-way, the wrong protocol: TLS on a plaintext port or the reverse, a failed TLS
//! handshake), requests refused for the certificate they came with, or connections closed
//! because the process ran out of a resource for them: a warning with the peer and the reason, at most [`WARNINGS_PER_WINDOW`] per
//! [`WINDOW`] per core, so a flood of hostile connections cannot flood the log; the lines left
//! out are counted and reported with the next one, and logged at debug level meanwhile.
//!
//! Per thread (hence per core): nothing is shared between cores.

use std::cell::Cell;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;

/// Length of one rate-limiting window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Warnings per window and core; the rest are debug lines and a count.
pub const WARNINGS_PER_WINDOW: u32 = 10;

thread_local! {
    static WINDOW_START: Cell<Option<Instant>> = const { Cell::new(None) };
    static WARNED: Cell<u32> = const { Cell::new(0) };
    static SUPPRESSED: Cell<u64> = const { Cell::new(0) };
}

/// Logs that the connection `stream` is being closed for `reason`.
pub fn closed(stream: &TcpStream, reason: &str) {
    let peer = stream.peer_addr().map_or_else(|_| "unknown".to_string(), |peer| peer.to_string());
    closed_peer(&peer, reason);
}

/// Logs that the connection from `peer` is being closed for `reason`.
pub fn closed_peer(peer: &str, reason: &str) {
    if let Some(suppressed) = take_warning() {
        tracing::warn!(
            %peer, reason, suppressed,
            "closing a client connection (suppressed: such lines left out since the last one)"
        );
    } else {
        tracing::debug!(%peer, reason, "closing a client connection");
    }
}

/// Logs a request refused because of who sent it (a certificate naming someone else).
pub fn refused(reason: &str) {
    if let Some(suppressed) = take_warning() {
        tracing::warn!(
            reason,
            suppressed,
            "request refused (suppressed: such lines left out since the last one)"
        );
    } else {
        tracing::debug!(reason, "request refused");
    }
}

/// `Some(lines suppressed since the last warning)` when a warning may be logged now.
fn take_warning() -> Option<u64> {
    let now = Instant::now();
    let window_over = WINDOW_START.get().is_none_or(|start| now.duration_since(start) >= WINDOW);
    if window_over {
        WINDOW_START.set(Some(now));
        WARNED.set(0);
    }
    if WARNED.get() < WARNINGS_PER_WINDOW {
        WARNED.set(WARNED.get() + 1);
        Some(SUPPRESSED.replace(0))
    } else {
        SUPPRESSED.set(SUPPRESSED.get() + 1);
        None
    }
}
