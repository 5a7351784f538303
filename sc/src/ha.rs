//! High availability: which SC is active, and how a standby takes over.
//!
//! ## Roles
//!
//! With the Consul store several `sluice-sc` processes (same Consul, same `--cluster`) may run;
//! exactly one is **active**: it holds the leadership lock `<prefix>/<cluster>/sc-leader` through
//! a Consul session. Every other one is a **standby**: it binds its listeners, prints its
//! addresses like the active one, and answers every public request with `NotController`
//! (`AdminResponse::error`) and every SPU registration with `Refused { NotController }`, so
//! clients and SPUs move on to the next address. The embedded store is single-writer by
//! construction (a lock on its directory), so an SC on it is active from the start.
//!
//! ## Takeover
//!
//! The `sc-leadership` thread campaigns for the lock (a blocking query wakes it as soon as the
//! lock is released). On winning it builds a fresh term: a [`FencedStore`] carrying the term's
//! fencing token, a new cache listed from the store (so the new active works from the stored
//! state, never from anything it saw as a standby), the controller thread, and then opens the
//! gates of the public and private listeners. Only then does the ready file say `role=active`.
//!
//! ## Loss: fail-stop
//!
//! A term ends when Consul says the session is gone, when no renewal succeeded for a whole TTL,
//! or when the lock is taken or deleted ([`sluice_kvstore_consul::Leadership`]). The SC then
//! stops at once and exits with an error (a supervisor, e.g. systemd `Restart=on-failure`,
//! starts it again as a standby). It never keeps acting as leader: every store write of a term
//! carries its fencing token, and Consul rejects it atomically once another session holds the
//! lock, so even writes in flight at the moment of loss cannot land.
//!
//! ## Timing
//!
//! Each SC registers a service `sluice-sc-<cluster>` on its Consul agent with a TTL check that
//! its `sc-alive` thread passes every third of `--leader-check-ttl-ms` (default 3 s), and its
//! leadership sessions depend on that check and on the node's `serfHealth`. After a `kill -9`
//! of the active SC the check turns critical one check TTL after the last pass, Consul
//! invalidates the session at once and releases the lock, the lock delay
//! (`--leader-lock-delay-ms`, default 1 s) passes, and the standby, woken by its blocking query
//! on the lock, acquires it, lists the store and opens its gates. The session TTL
//! (`--leader-ttl-ms`, Consul's minimum 10 s by default) is only the backstop for an SC that
//! cannot reach its agent (invalidated one to two TTLs after the last renewal). A clean stop
//! (SIGTERM) releases the lock at once, without the lock delay.
//!
//! A short check TTL is safe: a live SC whose passes are late only loses the lock (fail-stop,
//! fenced writes); it never leaves two SCs writing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use sluice_kvstore_consul::{
    sc_service_name, CheckStatus, ConsulClient, ConsulError, Leadership, LeadershipConfig,
    ServiceRegistration, TtlCheck, SC_ACTIVE_TAG, SC_PRIVATE_PORT_META,
};

use crate::store::{FencedStore, FencingToken, MetadataStore};

/// Name of the lock key under `<prefix>/<cluster>/` (not an object kind, so the store's
/// listings and watches skip it).
pub const LOCK_KEY_NAME: &str = "sc-leader";
/// How long one campaign round waits before checking for shutdown again.
pub const CAMPAIGN_ROUND: Duration = Duration::from_secs(1);
/// Pause after a Consul error while campaigning.
pub const CAMPAIGN_ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// How often the leading thread checks for shutdown while waiting for a loss.
const LOSS_POLL: Duration = Duration::from_millis(100);

/// A context that exists only once this SC is active. Listener threads hold the gate from the
/// start and serve a connection with the context when it is open, as a standby otherwise.
pub struct Gate<T> {
    context: OnceLock<Arc<T>>,
}

impl<T> Default for Gate<T> {
    fn default() -> Self {
        Self { context: OnceLock::new() }
    }
}

impl<T> Gate<T> {
    /// The context, once active.
    pub fn get(&self) -> Option<&Arc<T>> {
        self.context.get()
    }

    /// Opens the gate (once; a second call is ignored, a process leads at most one term).
    pub fn open(&self, context: Arc<T>) {
        let _already = self.context.set(context);
    }
}

/// Where the ready file goes and what it says.
#[derive(Clone, Debug)]
pub struct ReadyFile {
    /// The file, if configured.
    pub path: Option<PathBuf>,
    /// Bound public address.
    pub public_address: SocketAddr,
    /// Bound private address.
    pub private_address: SocketAddr,
    /// Bound metrics and health address.
    pub metrics_address: SocketAddr,
}

impl ReadyFile {
    /// `public=`, `private=`, `metrics=` and `role=active|standby` lines.
    pub fn text(&self, active: bool) -> String {
        let role = if active { "active" } else { "standby" };
        format!(
            "{}metrics={}\nrole={role}\n",
            crate::server::describe(self.public_address, self.private_address),
            self.metrics_address
        )
    }

    /// Writes the file atomically (temporary file, then rename), if one is configured.
    pub fn write(&self, active: bool) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, self.text(active))?;
        std::fs::rename(&temporary, path)
    }
}

/// Converts the Consul crate's token into the store's.
pub fn store_token(token: &sluice_kvstore_consul::FencingToken) -> FencingToken {
    FencingToken {
        lock_key: token.key.clone(),
        lock_index: token.lock_index.get(),
        session: token.session.as_str().to_owned(),
    }
}

/// Leadership settings of an SC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderSettings {
    /// Session TTL (Consul: 10 s to 24 h): the backstop when the agent itself is unreachable.
    pub ttl: Duration,
    /// TTL of the SC's alive check, which the session depends on: how fast a dead SC is noticed.
    pub check_ttl: Duration,
    /// Lock delay after the holder's session is invalidated.
    pub lock_delay: Duration,
}

/// Consul's node health check, which every session depends on by default.
const NODE_CHECK: &str = "serfHealth";
/// How long Consul keeps the registration of an SC whose alive check is critical (Consul's
/// minimum), so crashed SCs do not accumulate on the agent.
const DEREGISTER_CRITICAL_AFTER: Duration = Duration::from_secs(60);

/// The lock configuration for a candidate whose addresses are in `ready`; its sessions depend
/// on the node's health and on `alive`.
pub fn lock_config(
    lock_key: String,
    settings: &LeaderSettings,
    ready: &ReadyFile,
    alive: &AliveCheck,
) -> LeadershipConfig {
    let value = ready.text(true).into_bytes();
    let mut config = LeadershipConfig::new(lock_key, value, settings.ttl);
    config.session.name = format!("sluice-sc {}", ready.public_address);
    config.session.lock_delay = settings.lock_delay;
    config.session.checks = vec![NODE_CHECK.to_owned(), alive.check_id.clone()];
    config
}

/// This SC's registration on the local Consul agent: a service with a TTL check that the
/// `sc-alive` thread keeps passing. A `kill -9` stops the passes, the check turns critical one
/// check TTL later, and Consul invalidates the leadership session at once (instead of after one
/// to two session TTLs).
#[derive(Clone, Debug)]
pub struct AliveCheck {
    client: ConsulClient,
    registration: ServiceRegistration,
    service_id: String,
    check_id: String,
    ttl: Duration,
}

impl AliveCheck {
    /// Registers the service `sluice-sc-<cluster>` for this process, its check passing: port
    /// the public listener, meta `private_port` the SPU control listener, address the public
    /// listener's IP when it is a specific one (else Consul uses the agent's node address).
    /// SPUs and clients find the SC from it (`consul://AGENT/CLUSTER`, see
    /// [`sluice_kvstore_consul::discover_sc`]).
    ///
    /// # Errors
    /// The agent's refusal or unreachability.
    pub fn register(
        client: ConsulClient,
        cluster: &str,
        ready: &ReadyFile,
        ttl: Duration,
    ) -> Result<AliveCheck, ConsulError> {
        let name = sc_service_name(cluster);
        let instance = format!("{name}-{}-{}", ready.public_address, std::process::id());
        let service_id: String = instance
            .chars()
            .map(|character| if character.is_ascii_alphanumeric() { character } else { '-' })
            .collect();
        let check_id = format!("{service_id}-alive");
        let registration = ServiceRegistration {
            id: service_id.clone(),
            name,
            address: (!ready.public_address.ip().is_unspecified())
                .then(|| ready.public_address.ip().to_string()),
            port: Some(ready.public_address.port()),
            meta: [(SC_PRIVATE_PORT_META.to_owned(), ready.private_address.port().to_string())]
                .into_iter()
                .collect(),
            check: Some(TtlCheck {
                check_id: check_id.clone(),
                ttl,
                initial_status: CheckStatus::Passing,
                deregister_critical_after: Some(DEREGISTER_CRITICAL_AFTER),
            }),
            ..ServiceRegistration::default()
        };
        client.agent_service_register(&registration)?;
        Ok(AliveCheck { client, registration, service_id, check_id, ttl })
    }

    /// The `sc-alive` thread: passes the check every third of its TTL until shutdown, and
    /// registers the service again with the tag `active` once `active` is set (clients that
    /// find the SC through Consul try it first).
    pub fn keep_passing(&self, shutdown: &AtomicBool, active: &AtomicBool) {
        let interval = self.ttl / 3;
        let mut registration = self.registration.clone();
        let is_tagged = |registration: &ServiceRegistration| {
            registration.tags.iter().any(|tag| tag == SC_ACTIVE_TAG)
        };
        while !shutdown.load(Ordering::Relaxed) {
            let tag_now = active.load(Ordering::Relaxed) && !is_tagged(&registration);
            if tag_now {
                registration.tags.push(SC_ACTIVE_TAG.to_owned());
                if let Err(error) = self.client.agent_service_register(&registration) {
                    // Retried at the next pass; clients only lose their preference meanwhile.
                    tracing::warn!(%error, "cannot tag the SC's registration active");
                    registration.tags.pop();
                }
            }
            if let Err(error) = self.client.agent_check_pass(&self.check_id, "serving") {
                // E.g. an agent restarted without its state: register again, so the next
                // campaign can create a session (a term in progress is lost either way).
                tracing::warn!(%error, check = %self.check_id, "cannot pass the SC's alive check");
                if let Err(error) = self.client.agent_service_register(&registration) {
                    tracing::warn!(%error, "cannot register the SC's alive check again");
                }
            }
            let next = std::time::Instant::now() + interval;
            let tag_pending = |registration: &ServiceRegistration| {
                !tag_now && active.load(Ordering::Relaxed) && !is_tagged(registration)
            };
            while !shutdown.load(Ordering::Relaxed)
                && std::time::Instant::now() < next
                && !tag_pending(&registration)
            {
                std::thread::sleep(LOSS_POLL);
            }
        }
    }

    /// Removes the registration (after the lock is released, so no lock delay applies).
    pub fn deregister(&self) {
        if let Err(error) = self.client.agent_service_deregister(&self.service_id) {
            tracing::warn!(%error, service = %self.service_id, "cannot deregister the SC");
        }
    }
}

/// Starts a term: given the fenced store, starts the term's threads and opens the gates;
/// returns the threads (they stop when the shared shutdown flag is set).
pub type Activate =
    Box<dyn Fn(Arc<dyn MetadataStore>) -> Option<Vec<JoinHandle<()>>> + Send + 'static>;

/// What the leadership thread needs.
pub struct Campaign {
    /// The candidate (already leading when `term` is set).
    pub leadership: Leadership,
    /// The raw store (wrapped in a [`FencedStore`] per term).
    pub store: Arc<dyn MetadataStore>,
    /// The term already started by [`crate::process::Sc::start`], if it won at once.
    pub term: Option<Vec<JoinHandle<()>>>,
    /// Starts a term.
    pub activate: Activate,
    /// The ready file, rewritten with `role=active` on takeover.
    pub ready: ReadyFile,
    /// Set to stop (by a signal, or by this thread on a loss).
    pub shutdown: Arc<AtomicBool>,
    /// Set when leadership was lost (the process then exits with an error).
    pub lost: Arc<AtomicBool>,
    /// Deregistered once the lock is released.
    pub alive: AliveCheck,
}

/// Tries once to win within `timeout`; on a win builds the term with `activate`.
pub fn try_win(
    leadership: &mut Leadership,
    store: &Arc<dyn MetadataStore>,
    timeout: Duration,
    activate: &Activate,
) -> Option<Vec<JoinHandle<()>>> {
    match leadership.campaign(timeout) {
        Ok(Some(token)) => {
            let token = store_token(&token);
            tracing::info!(lock_index = token.lock_index, session = %token.session, "this SC is now active");
            let fenced: Arc<dyn MetadataStore> =
                Arc::new(FencedStore::new(Arc::clone(store), token));
            activate(fenced)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "campaign for the SC leadership failed; retrying");
            std::thread::sleep(CAMPAIGN_ERROR_BACKOFF);
            None
        }
    }
}

/// The `sc-leadership` thread: campaign until active, lead until shutdown or loss.
pub fn run(mut campaign: Campaign) {
    let shutdown = Arc::clone(&campaign.shutdown);
    let mut term = campaign.term.take();
    while term.is_none() && !shutdown.load(Ordering::Relaxed) {
        term =
            try_win(&mut campaign.leadership, &campaign.store, CAMPAIGN_ROUND, &campaign.activate);
        if term.is_some() {
            if let Err(error) = campaign.ready.write(true) {
                tracing::error!(%error, "cannot rewrite the ready file");
            }
        }
    }
    let Some(threads) = term else {
        resign(campaign.leadership);
        campaign.alive.deregister();
        return;
    };
    let losses = campaign.leadership.losses();
    while !shutdown.load(Ordering::Relaxed) {
        match losses.recv_timeout(LOSS_POLL) {
            Ok(loss) => {
                tracing::error!(
                    reason = %loss.reason, lock_index = %loss.token.lock_index,
                    "SC leadership lost: stopping (a supervisor should restart this SC as a standby)"
                );
                campaign.lost.store(true, Ordering::Relaxed);
                shutdown.store(true, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    for thread in threads {
        let _ignored = thread.join();
    }
    resign(campaign.leadership);
    campaign.alive.deregister();
}

fn resign(leadership: Leadership) {
    if let Err(error) = leadership.resign() {
        tracing::warn!(%error, "could not release the SC leadership lock; it expires with the session");
    }
}
