//! The metadata thread: keeps the [`MetadataCache`] fresh from the SC's metadata watch and
//! runs refreshes that other threads ask for.
//!
//! Ownership: one thread per cluster handle; it exits when the handle's shutdown channel is
//! dropped (checked at least every [`WATCH_POLL`]).
//!
//! Failure modes: a dropped connection, a standby's `NotController`, or an undecodable push
//! makes it subscribe again at the next SC address after [`RECONNECT_BACKOFF`]; a delta that
//! does not apply (an epoch gap) makes it subscribe again at once, which starts with a full
//! snapshot. While no SC is reachable the last view stays in use: SPUs keep serving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use sluice_proto::api::metadata::{MetadataRequest, MetadataResponse, MetadataWatchUpdate};
use sluice_proto::api::ApiVersion;
use sluice_proto::error_code::ErrorCode;

use crate::error::ClientError;
use crate::metadata::{MetadataCache, MetadataSnapshot};
use crate::sc::{decode_response, Retry, ScClient, Shape, WatchRead};

/// How often the thread looks at shutdown and refresh requests while the watch is idle.
pub(crate) const WATCH_POLL: Duration = Duration::from_millis(50);
/// Pause before subscribing again after a failure, so a down SC is not hammered.
pub(crate) const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// What the metadata thread shares with the rest of the client.
pub(crate) struct MetadataShared {
    pub sc: Arc<ScClient>,
    pub cache: Arc<MetadataCache>,
    /// Set by anyone who saw a stale route (not leader, unknown partition); cleared by the
    /// thread when it starts the refresh.
    pub refresh_requested: AtomicBool,
}

impl MetadataShared {
    /// Asks the metadata thread for a refresh without waiting for it.
    pub(crate) fn request_refresh(&self) {
        self.refresh_requested.store(true, Ordering::Release);
    }

    /// Fetches the whole metadata from the SC now and stores it (unless older than the view).
    pub(crate) fn refresh_now(&self) -> Result<Arc<MetadataSnapshot>, ClientError> {
        let response: MetadataResponse =
            self.sc.call(&MetadataRequest { topics: None }, Shape::Other, Retry::ReadOnly)?;
        self.cache.store_if_not_older(MetadataSnapshot::from_response(response));
        Ok(self.cache.snapshot())
    }
}

/// The thread body. `shutdown` never receives: its sender is dropped with the cluster handle.
pub(crate) fn run(shared: Arc<MetadataShared>, shutdown: Receiver<()>) {
    let mut address_index = 0;
    loop {
        match shared.sc.open_watch(address_index, WATCH_POLL) {
            Ok(mut watch) => {
                address_index = watch.address_index;
                match follow(&shared, &mut watch, &shutdown) {
                    Followed::Shutdown => return,
                    Followed::Resubscribe => continue,
                    Followed::Failed(error) => {
                        tracing::debug!(address = %watch.address, %error, "metadata watch ended");
                        address_index += 1;
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "cannot open a metadata watch"),
        }
        if shared.refresh_requested.swap(false, Ordering::AcqRel) {
            let _ignored = shared.refresh_now();
        }
        match shutdown.recv_timeout(RECONNECT_BACKOFF) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

enum Followed {
    Shutdown,
    /// An epoch gap: subscribe again at once.
    Resubscribe,
    Failed(ClientError),
}

fn follow(
    shared: &MetadataShared,
    watch: &mut crate::sc::WatchStream,
    shutdown: &Receiver<()>,
) -> Followed {
    loop {
        if matches!(shutdown.try_recv(), Err(crossbeam_channel::TryRecvError::Disconnected)) {
            return Followed::Shutdown;
        }
        if shared.refresh_requested.swap(false, Ordering::AcqRel) {
            if let Err(error) = shared.refresh_now() {
                tracing::debug!(%error, "metadata refresh failed");
            }
        }
        let frame = match watch.read() {
            Ok(WatchRead::Idle) => continue,
            Ok(WatchRead::Update(frame)) => frame,
            Err(error) => return Followed::Failed(error),
        };
        let update: MetadataWatchUpdate = match decode_response(
            &watch.address,
            ApiVersion(frame.api_version),
            &frame.body,
            Shape::Other,
        ) {
            Ok(update) => update,
            Err(error @ ClientError::Server { code: ErrorCode::NotController, .. }) => {
                return Followed::Failed(error)
            }
            Err(error) => return Followed::Failed(error),
        };
        if let Err(gap) = shared.cache.apply(update) {
            tracing::debug!(?gap, "metadata epoch gap; subscribing again");
            return Followed::Resubscribe;
        }
    }
}
