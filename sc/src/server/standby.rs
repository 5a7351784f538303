//! A public-API connection accepted while this SC stands by: every request is answered with
//! `AdminResponse::error(NotController, ...)` under the request's header (clients accept that
//! body for any request type and move on to the next SC address). Once this SC becomes active
//! the connection is closed, so the client reconnects and is served normally.

use std::io::{ErrorKind, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_proto::api::admin::AdminResponse;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::encode_frame;
use sluice_tls::ServerStream;

use super::connection::{refuse_tls_on_plaintext, send};
use super::transport::Peer;
use super::{decoder, ServerContext, SHUTDOWN_POLL};
use crate::ha::Gate;

/// What a standby says.
pub const STANDBY_MESSAGE: &str = "this SC is a standby; try the next SC address";

/// Serves one connection as a standby until it closes, this SC becomes active, or shutdown.
pub(super) fn serve(
    mut stream: ServerStream,
    peer: &Peer,
    gate: &Gate<ServerContext>,
    shutdown: &AtomicBool,
) {
    if stream.socket().set_read_timeout(Some(SHUTDOWN_POLL)).is_err() {
        return;
    }
    let mut decoder = decoder();
    let mut chunk = [0u8; 4096];
    let mut first_read = true;
    while !shutdown.load(Ordering::Relaxed) && gate.get().is_none() {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => {
                if std::mem::take(&mut first_read)
                    && refuse_tls_on_plaintext(&mut stream, peer.address, &chunk[..read])
                {
                    return;
                }
                decoder.feed(&chunk[..read]);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%peer, %error, "bad frame at a standby SC");
                    return;
                }
            };
            let mut out = Vec::new();
            let refusal = AdminResponse::error(ErrorCode::NotController, STANDBY_MESSAGE);
            if encode_frame(&mut out, &frame.header, &refusal).is_err()
                || send(&mut stream, &out).is_err()
            {
                return;
            }
        }
    }
}
