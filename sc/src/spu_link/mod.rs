//! The SPU connection manager on the private address: SPUs dial the SC (the SC never dials
//! out).
//!
//! ## Protocol, per connection ([`sluice_proto::api::control`])
//!
//! 1. The SPU sends `SpuRegister` (id, cores, endpoints, version) within [`REGISTER_TIMEOUT`].
//!    An id that is not registered (no custom SPU, not in an SPU group) is refused with
//!    `UnknownSpu` and a message saying how to register it; the connection is closed.
//! 2. Accepted: the SC records the SPU online with its cores, ports and version (a managed SPU
//!    also gets the endpoints it reports), answers `Accepted`, then sends a full `SpuUpdate`
//!    (every SPU spec) and a full `ReplicaUpdate` (every partition with a replica on this SPU),
//!    each stamped with epoch 1 of its own stream.
//! 3. On every cache change the session diffs what it last sent against the cache and sends
//!    deltas (`base_epoch` = the last epoch sent, `epoch` = base + 1). `RequestSnapshot`
//!    answers with full updates (next epoch).
//! 4. Heartbeats both ways: the SC sends one every quarter of the heartbeat timeout and answers
//!    the SPU's. Any frame from the SPU counts as a sign of life: the session writes
//!    `online` and refreshes the stored `last_heartbeat` at most every quarter timeout; the SPU
//!    controller marks an SPU offline once its stored heartbeat is older than the timeout (so
//!    an SPU that stops talking goes offline within timeout + one controller pass, and one
//!    whose SC crashed is marked offline by the next SC too).
//! 5. `LiveReplicaStatus` from a partition's current leader (matching leader epoch) is written
//!    into the partition's status (offsets only; the in-sync set is the SC's).
//! 6. `AlterInSync` from a leader: each proposal is checked and stored, or refused, and
//!    answered with the partition's current leader epoch and in-sync set ([`in_sync`]).
//! 7. A session that ends other than by this SC's shutdown (the SPU closed it, an I/O or
//!    protocol error) marks its SPU offline at once, unless a newer session of the same SPU
//!    has registered since ([`SpuSessions`]): a crashed SPU's partitions get new leaders within
//!    a controller pass, not after the heartbeat timeout, which remains for SPUs that go silent
//!    with their connection open.
//!
//! ## TLS
//!
//! With `--private-tls-cert/--private-tls-key/--private-tls-ca` the listener speaks TLS and
//! requires a client certificate from the CA. An SPU's identity on a TLS link is its
//! certificate's, never its claim: a registration as SPU `N` is refused (`AuthorizationFailed`, an
//! error naming the certificate's identity and the id claimed, logged at warn) unless the
//! certificate names `spu-N.<cluster>`. The handshake runs on the connection's thread within
//! [`HANDSHAKE_TIMEOUT`]; a plaintext SPU on a TLS listener is logged and closed.
//!
//! ## Threads and bounds
//!
//! One accept thread and one thread per SPU connection, at most [`SPU_CONNECTIONS_MAX`].
//! Frames above [`FRAME_BYTES_MAX`], malformed bodies and unexpected keys close the connection
//! (the SPU reconnects and registers again).

pub mod in_sync;
mod session;
mod sessions;
pub mod status;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use sessions::{SessionGeneration, SpuSessions};
use sluice_proto::ids::SpuId;
use sluice_tls::{looks_like_tls, Identity, ServerStream, ServerTls};

use crate::cache::Cache;
use crate::ha::Gate;
use crate::store::MetadataStore;

/// Most simultaneous SPU connections.
pub const SPU_CONNECTIONS_MAX: usize = 4096;
/// Largest control frame accepted from an SPU: a live replica status of thousands of replicas.
pub const FRAME_BYTES_MAX: u32 = 8 * 1024 * 1024;
/// How long a new connection may take to send its registration.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time an SPU may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS of the private listener: client certificates required, and an SPU registers only as
/// the id its certificate names (`spu-<id>.<cluster>`).
#[derive(Clone)]
pub struct LinkTls {
    /// The listener's configuration (reloaded when its files change).
    pub tls: Arc<ServerTls>,
    /// The cluster whose names certificates carry.
    pub cluster: String,
}

/// Who an SPU connection proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkPeer {
    /// Plaintext: nothing proven (no TLS configured on the private listener).
    Plaintext,
    /// TLS with a verified certificate.
    Certificate {
        /// What the certificate names.
        identity: Identity,
        /// The cluster it must name its SPU in.
        cluster: String,
    },
}

impl LinkPeer {
    /// `Err(reason)` when the peer may not register as SPU `id`: an SPU's identity on a TLS
    /// link is its certificate's, never its claim.
    pub fn check_spu(&self, id: SpuId) -> Result<(), String> {
        match self {
            LinkPeer::Plaintext => Ok(()),
            LinkPeer::Certificate { identity, cluster } if identity.is_spu(id.get(), cluster) => {
                Ok(())
            }
            LinkPeer::Certificate { identity, cluster } => Err(format!(
                "the certificate names {identity} (SPU ids of cluster {cluster}: {:?}) but the \
                 registration claims SPU {id} (expected {})",
                identity.spu_ids(cluster),
                sluice_tls::spu_name(id.get(), cluster)
            )),
        }
    }
}

/// Runs the TLS handshake when the listener has TLS; `None`: it failed (logged).
fn secure(
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<&LinkTls>,
) -> Option<(ServerStream, LinkPeer)> {
    let Some(tls) = tls else { return Some((ServerStream::Plain(socket), LinkPeer::Plaintext)) };
    let mut first = [0u8; 3];
    let _ = socket.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    if let Ok(read) = socket.peek(&mut first) {
        if read > 0 && !looks_like_tls(&first[..read]) {
            tracing::warn!(%peer, "plaintext on the SC's TLS private listener (start the SPU with --tls-cert, --tls-key and --tls-ca); closing");
            // A fatal handshake_failure alert: a plaintext peer recognises TLS in it.
            let _ = (&socket).write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40]);
            // Unread bytes at close would send a reset that can discard the alert: read them.
            let _ = socket.shutdown(std::net::Shutdown::Write);
            let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = std::io::copy(&mut (&socket).take(64 << 10), &mut std::io::sink());
            return None;
        }
    }
    let mut stream = match ServerStream::accept(socket, tls.tls.config()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%peer, %error, "cannot start TLS on an SPU connection");
            return None;
        }
    };
    if let Err(error) = stream.handshake(HANDSHAKE_TIMEOUT) {
        tracing::warn!(%peer, %error, "TLS handshake with an SPU failed; closing");
        return None;
    }
    match stream.peer_identity() {
        Some(identity) => {
            Some((stream, LinkPeer::Certificate { identity, cluster: tls.cluster.clone() }))
        }
        None => {
            tracing::warn!(%peer, "an SPU connection without a client certificate; closing");
            None
        }
    }
}

/// What every SPU connection thread shares.
pub struct SpuLinkContext {
    /// The metadata store (SPU and partition status writes).
    pub store: Arc<dyn MetadataStore>,
    /// The cache (specs sent to SPUs).
    pub cache: Arc<Cache>,
    /// Time without a heartbeat before an SPU is offline.
    pub heartbeat_timeout: Duration,
    /// The newest session of each SPU in this term.
    pub sessions: SpuSessions,
    /// Set to stop.
    pub shutdown: Arc<AtomicBool>,
    /// ACL enforcement, bindings and token digests pushed to SPUs.
    pub security: Arc<crate::security::Security>,
}

/// Accepts SPU connections until shutdown; one thread per connection (bounded). Until `gate`
/// opens (this SC is a standby) every registration is refused with `NotController`.
pub fn run_accept(
    listener: TcpListener,
    tls: Option<LinkTls>,
    gate: Arc<Gate<SpuLinkContext>>,
    shutdown: Arc<AtomicBool>,
) {
    if let Err(error) = listener.set_nonblocking(true) {
        tracing::error!(%error, "cannot make the private listener non-blocking");
        return;
    }
    let active = Arc::new(AtomicUsize::new(0));
    while !shutdown.load(Ordering::Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) => {
                if error.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::warn!(%error, "accept failed on the private address");
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= SPU_CONNECTIONS_MAX {
            tracing::warn!(%peer, limit = SPU_CONNECTIONS_MAX, "too many SPU connections; closing");
            continue;
        }
        if let Err(error) = stream.set_nonblocking(false) {
            tracing::warn!(%peer, %error, "cannot configure an SPU connection");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let gate = Arc::clone(&gate);
        let active_count = Arc::clone(&active);
        let tls = tls.clone();
        let spawned = std::thread::Builder::new().name(format!("sc-spu-{peer}")).spawn(move || {
            // The handshake runs here, on the connection's thread: a slow peer holds only it.
            if let Some((stream, identity)) = secure(stream, peer, tls.as_ref()) {
                match gate.get() {
                    Some(context) => session::serve(stream, peer, context, identity),
                    None => session::refuse_as_standby(stream, peer),
                }
            }
            active_count.fetch_sub(1, Ordering::Relaxed);
        });
        if let Err(error) = spawned {
            active.fetch_sub(1, Ordering::Relaxed);
            tracing::error!(%error, "cannot spawn an SPU connection thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_checked_against_the_certificate() {
        let identity = Identity { dns_names: vec!["spu-5001.default".into()], common_name: None };
        let peer = LinkPeer::Certificate { identity, cluster: "default".into() };
        assert_eq!(peer.check_spu(SpuId(5001)), Ok(()));
        let refused = peer.check_spu(SpuId(5002)).unwrap_err();
        assert!(refused.contains("spu-5001.default"), "{refused}");
        assert!(refused.contains("claims SPU 5002"), "{refused}");
        assert_eq!(LinkPeer::Plaintext.check_spu(SpuId(5002)), Ok(()));
    }
}
