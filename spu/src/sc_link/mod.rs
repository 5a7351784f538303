//! The SPU side of the SC control protocol ([`sluice_proto::api::control`]): one glommio task on
//! core 0 that keeps the SPU registered with the active SC and turns the SC's epoch-stamped
//! updates into complete views for the rest of the SPU.
//!
//! ## What [`run`] does
//!
//! 1. Connects to the next address of [`ScLinkConfig::sc_addresses`] (round robin) and sends the
//!    registration.
//!    - `Accepted`: emits [`ScLinkEvent::Connected`] and serves the connection (below).
//!    - `Refused { NotController }` (a standby SC), connection refused or lost, or no answer in
//!      [`REGISTER_TIMEOUT`]: moves on to the next address.
//!    - `Refused { UnknownSpu }`: logs an error telling the operator to run
//!      `sluice spu register`, and keeps retrying (the SPU may be registered later).
//!
//!    After every address of a round failed, it waits the reconnect backoff, which doubles per
//!    failed round up to [`RECONNECT_BACKOFF_MAX`] and resets after a session that lasted
//!    [`SESSION_STABLE_MIN`] (a shorter one counts as a failed round).
//! 2. While connected:
//!    - SPU and replica updates are applied to their own [`state::EpochView`]; after every
//!      applied update the complete view goes out as [`ScLinkEvent::Spus`] or
//!      [`ScLinkEvent::Replicas`]. A delta whose base is not the current epoch is dropped and a
//!      `RequestSnapshot` is sent once; later deltas are ignored until the full snapshot comes.
//!    - A heartbeat goes to the SC every [`ScLinkConfig::heartbeat_interval`]; the SC's
//!      heartbeats are answered. No frame at all from the SC for
//!      [`HEARTBEAT_MISSES_MAX`] intervals drops the connection (then step 1 again).
//!    - Every [`LiveReplicaStatus`] received on the `status` channel is sent to the SC and
//!      merged into the latest status per partition; after a reconnect, once the new SC's
//!      replica snapshot is applied, the merged status of the replicas this SPU still leads is
//!      sent again, so the new SC does not wait for the next change.
//! 3. Returns `Ok(())` when `shutdown` resolves or the `events` receiver is dropped.
//!
//! ## Ownership and failure modes
//!
//! The task owns the connection, both views and the merged status; nothing is shared with other
//! cores (the owner of the `events` receiver fans out). Nothing from the network can panic it:
//! undecodable frames, unexpected keys and oversized frames ([`FRAME_BYTES_MAX`]) end the
//! connection with a log line and the link reconnects. Replicas keep being served while the SC
//! is unreachable: the link only stops delivering updates. Address names are resolved with the
//! blocking resolver of the standard library (an IP address resolves without any I/O).

mod session;
pub mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use sluice_proto::api::control::{
    AlterInSyncRequest, AlterInSyncResponse, LiveReplica, LiveReplicaStatus, ReplicaAssignment,
    SpuPeer, SpuRegisterRequest,
};
use sluice_proto::ids::SpuId;
use sluice_proto::object::PartitionKey;

use self::state::EpochView;

/// Silent heartbeat intervals after which the SC is taken for dead and the connection dropped.
pub const HEARTBEAT_MISSES_MAX: u32 = 3;
/// Longest wait for a TCP connection to an SC.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the answer to a registration (the SC writes the store before answering).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame accepted from the SC: a full replica snapshot of tens of thousands of replicas.
pub const FRAME_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Longest pause between reconnect rounds (unless the configured backoff is longer).
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A registered session shorter than this counts as a failure for the backoff (an SC that
/// accepts and drops at once is not retried in a tight loop).
pub const SESSION_STABLE_MIN: Duration = Duration::from_secs(2);
/// Longest heartbeat interval or reconnect backoff accepted (keeps every deadline computable).
pub const INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// Decoded frames queued between the connection's reader task and the link task.
pub const FRAMES_QUEUED_MAX: usize = 16;

/// SC addresses found at run time (through Consul, [`crate::consul::start_discovery`]),
/// shared between the threads that find them and the link, which reads them before every
/// round of connection attempts.
#[derive(Clone, Debug, Default)]
pub struct DiscoveredScAddresses(Arc<std::sync::Mutex<Vec<String>>>);

impl DiscoveredScAddresses {
    /// Replaces the list.
    pub fn set(&self, addresses: Vec<String>) {
        *self.0.lock().unwrap_or_else(|poison| poison.into_inner()) = addresses;
    }

    /// The current list.
    pub fn get(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner()).clone()
    }
}

/// Settings of the link.
#[derive(Clone, Debug)]
pub struct ScLinkConfig {
    /// SC private (control) addresses, `host:port`, tried in order, round robin (entries
    /// `consul://...` are skipped here: [`Self::discovered`] holds what they resolve to).
    pub sc_addresses: Vec<String>,
    /// Addresses found at run time, tried after `sc_addresses` in every round.
    pub discovered: Option<DiscoveredScAddresses>,
    /// What this SPU registers as.
    pub register: SpuRegisterRequest,
    /// Pause between heartbeats to the SC; the SC counts as gone after
    /// [`HEARTBEAT_MISSES_MAX`] of them without any frame from it.
    pub heartbeat_interval: Duration,
    /// First pause after a failed round over every address (doubles per failed round).
    pub reconnect_backoff: Duration,
    /// TLS: the SC is verified as `sc.<cluster>` and this SPU presents its certificate
    /// (`None`: plaintext).
    pub tls: crate::tls::CoreTlsHandle,
    /// The security update version every core enforces, told to the SC (`SecurityApplied`)
    /// once it reaches an update's; `None`: an update counts as enforced once handed on as
    /// [`ScLinkEvent::Security`].
    pub enforced_security: Option<EnforcedSecurity>,
}

/// Reads the newest security update version every core of the SPU enforces.
#[derive(Clone)]
pub struct EnforcedSecurity(Arc<dyn Fn() -> u64 + Send + Sync>);

impl EnforcedSecurity {
    /// Reads through `version`.
    pub fn new(version: impl Fn() -> u64 + Send + Sync + 'static) -> EnforcedSecurity {
        EnforcedSecurity(Arc::new(version))
    }

    /// The version every core enforces now.
    pub fn version(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for EnforcedSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EnforcedSecurity").field(&self.version()).finish()
    }
}

/// What the link tells the rest of the SPU.
#[derive(Clone, Debug)]
pub enum ScLinkEvent {
    /// Registered with the SC at `sc`.
    Connected {
        /// The SC's private address.
        sc: SocketAddr,
    },
    /// The connection to the SC ended; the link is reconnecting. Replicas keep being served.
    Disconnected {
        /// Why, for logs.
        reason: String,
    },
    /// After every applied full or delta update: the COMPLETE desired replica set (each
    /// hosted partition's spec and in-sync set).
    Replicas(Arc<BTreeMap<PartitionKey, ReplicaAssignment>>),
    /// After every applied update: every SPU known (peers' replication ports).
    Spus(Arc<BTreeMap<SpuId, SpuPeer>>),
    /// The SC's answers to in-sync proposals sent on the `in_sync` channel.
    InSyncAnswers(AlterInSyncResponse),
    /// ACL bindings, token digests and enforcement (always whole), before any replica set.
    Security(Arc<sluice_proto::api::security::SecurityUpdate>),
}

/// Why [`run`] could not run. The link itself never fails on network trouble (it reconnects),
/// so only configuration errors remain; retrying with the same configuration fails again.
#[derive(Debug, thiserror::Error)]
pub enum ScLinkError {
    /// The configuration cannot work. Not retryable: fix the configuration.
    #[error("invalid SC link configuration: {0}")]
    InvalidConfig(String),
}

/// Runs until `shutdown` resolves; reconnects over the address list forever (backoff).
///
/// # Errors
/// [`ScLinkError::InvalidConfig`] for an empty address list, a zero heartbeat interval, or an
/// interval above [`INTERVAL_MAX`] (checked before any I/O).
pub async fn run(
    config: ScLinkConfig,
    events: LocalSender<ScLinkEvent>,
    status: LocalReceiver<LiveReplicaStatus>,
    in_sync: LocalReceiver<AlterInSyncRequest>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ScLinkError> {
    if config.sc_addresses.is_empty() && config.discovered.is_none() {
        return Err(ScLinkError::InvalidConfig("no SC address given".into()));
    }
    if config.heartbeat_interval.is_zero() || config.heartbeat_interval > INTERVAL_MAX {
        return Err(ScLinkError::InvalidConfig(format!(
            "the heartbeat interval must be above zero and at most {INTERVAL_MAX:?}"
        )));
    }
    if config.reconnect_backoff > INTERVAL_MAX {
        return Err(ScLinkError::InvalidConfig(format!(
            "the reconnect backoff must be at most {INTERVAL_MAX:?}"
        )));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut link = Link::new(config, events, status, in_sync);
    let stopped = async {
        shutdown.as_mut().await;
    };
    future::or(stopped, link.reconnect_forever()).await;
    Ok(())
}

/// How one connection attempt ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The events receiver is gone: the SPU is stopping.
    EventsClosed,
    /// Registered, then the connection ended.
    Served {
        /// Why it ended.
        reason: String,
    },
    /// Not registered: try the next address (after the backoff, at the end of a round).
    Failed {
        /// Why.
        reason: String,
    },
}

/// What woke an idle link.
enum Idle {
    Status(Option<LiveReplicaStatus>),
    InSync(Option<AlterInSyncRequest>),
}

/// State that lives across connections.
pub(crate) struct Link {
    pub(crate) config: ScLinkConfig,
    pub(crate) events: LocalSender<ScLinkEvent>,
    pub(crate) status: LocalReceiver<LiveReplicaStatus>,
    /// Whether `status` can still yield (false once every sender is gone).
    pub(crate) status_open: bool,
    /// In-sync proposals to send; dropped while no SC is connected (leaders propose again).
    pub(crate) in_sync: LocalReceiver<AlterInSyncRequest>,
    /// Whether `in_sync` can still yield.
    pub(crate) in_sync_open: bool,
    pub(crate) spus: EpochView<SpuId, SpuPeer>,
    pub(crate) replicas: EpochView<PartitionKey, ReplicaAssignment>,
    /// The latest reported status per partition, resent after a reconnect.
    pub(crate) latest_status: BTreeMap<PartitionKey, LiveReplica>,
}

impl Link {
    fn new(
        config: ScLinkConfig,
        events: LocalSender<ScLinkEvent>,
        status: LocalReceiver<LiveReplicaStatus>,
        in_sync: LocalReceiver<AlterInSyncRequest>,
    ) -> Link {
        Link {
            config,
            events,
            status,
            status_open: true,
            in_sync,
            in_sync_open: true,
            spus: EpochView::default(),
            replicas: EpochView::default(),
            latest_status: BTreeMap::new(),
        }
    }

    /// The addresses of the next round: the configured ones, then the discovered ones.
    fn round_addresses(&self) -> Vec<String> {
        let mut addresses: Vec<String> = self
            .config
            .sc_addresses
            .iter()
            .filter(|address| !address.starts_with("consul://"))
            .cloned()
            .collect();
        if let Some(discovered) = &self.config.discovered {
            addresses.extend(discovered.get());
        }
        addresses
    }

    async fn reconnect_forever(&mut self) {
        let base_backoff = self.config.reconnect_backoff;
        let mut backoff = base_backoff;
        let backoff_max = RECONNECT_BACKOFF_MAX.max(base_backoff);
        loop {
            let addresses = self.round_addresses();
            let mut last_failure = None;
            for address in &addresses {
                let started = std::time::Instant::now();
                match self.attempt(address).await {
                    End::EventsClosed => return,
                    End::Served { reason } => {
                        tracing::warn!(sc = %address, %reason, "connection to the SC ended; reconnecting");
                        if self.events.send(ScLinkEvent::Disconnected { reason }).await.is_err() {
                            return;
                        }
                        last_failure = None;
                        if started.elapsed() < SESSION_STABLE_MIN {
                            // Accepted, then dropped at once: do not hammer a flapping SC.
                            self.idle(backoff).await;
                            backoff = backoff.saturating_mul(2).min(backoff_max);
                        } else {
                            backoff = base_backoff;
                        }
                        break;
                    }
                    End::Failed { reason } => {
                        tracing::debug!(sc = %address, %reason, "the SC did not take the registration");
                        last_failure = Some(reason);
                    }
                }
            }
            let failed_round = match (&last_failure, addresses.is_empty()) {
                (_, true) => {
                    Some("no SC address known yet (Consul lists no passing SC)".to_owned())
                }
                (Some(reason), false) => Some(reason.clone()),
                (None, false) => None,
            };
            if let Some(last) = failed_round {
                tracing::warn!(%last, retry_in = ?backoff, "no SC address took the registration; retrying");
                self.idle(backoff).await;
                backoff = backoff.saturating_mul(2).min(backoff_max);
            }
        }
    }

    /// One connection attempt to `address`.
    async fn attempt(&mut self, address: &str) -> End {
        let resolved = match address.to_socket_addrs() {
            Ok(mut addresses) => addresses.next(),
            Err(error) => {
                tracing::warn!(sc = %address, %error, "cannot resolve the SC address");
                None
            }
        };
        let Some(resolved) = resolved else {
            return End::Failed { reason: format!("{address} resolves to no address") };
        };
        self.spus.reset_epoch();
        self.replicas.reset_epoch();
        session::serve(self, resolved).await
    }

    /// Waits `duration`, still taking in live replica status (kept for the next connection).
    async fn idle(&mut self, duration: Duration) {
        let deadline = std::time::Instant::now() + duration;
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            if remaining.is_zero() {
                return;
            }
            let timer = async {
                glommio::timer::sleep(remaining).await;
                None
            };
            let status = async {
                if self.status_open {
                    Some(Idle::Status(self.status.recv().await))
                } else {
                    future::pending().await
                }
            };
            let in_sync = async {
                if self.in_sync_open {
                    Some(Idle::InSync(self.in_sync.recv().await))
                } else {
                    future::pending().await
                }
            };
            match future::or(timer, future::or(status, in_sync)).await {
                None => return,
                Some(Idle::Status(Some(report))) => self.merge_status(&report),
                Some(Idle::Status(None)) => self.status_open = false,
                // No SC to send it to: the leader proposes again after its proposal timeout.
                Some(Idle::InSync(Some(_))) => {}
                Some(Idle::InSync(None)) => self.in_sync_open = false,
            }
        }
    }

    /// Keeps `report` as the latest status of its partitions.
    pub(crate) fn merge_status(&mut self, report: &LiveReplicaStatus) {
        for replica in &report.replicas {
            self.latest_status.insert(replica.key.clone(), replica.clone());
        }
    }

    /// The merged status of the replicas this SPU leads in the current replica view, dropping
    /// entries for replicas it no longer leads.
    pub(crate) fn status_to_resend(&mut self) -> Option<LiveReplicaStatus> {
        let id = self.config.register.id;
        let replicas = self.replicas.objects();
        self.latest_status.retain(|key, _| {
            replicas.get(key).is_some_and(|assignment| assignment.spec.leader == id)
        });
        if self.latest_status.is_empty() {
            return None;
        }
        Some(LiveReplicaStatus {
            spu: id,
            replicas: self.latest_status.values().cloned().collect(),
        })
    }
}
