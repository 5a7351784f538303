//! The SC process: open the store, start the threads, bind the listeners, report readiness,
//! stop on a signal.
//!
//! [`Sc::start`] returns once its listeners (public, private, metrics) are bound and either this SC is active (the cache
//! has its first listing, so the addresses it reports are ready to use) or, on Consul, another
//! SC holds the leadership and this one stands by (see [`crate::ha`]). [`Sc::shutdown`] sets the shared flag; every thread
//! polls it at least every [`crate::server::SHUTDOWN_POLL`] and exits; `shutdown` joins them.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_kvstore_consul::{ConsulClient, ConsulConfig, Leadership};

use crate::cache::Cache;
use crate::config::{ScConfig, StoreSettings};
use crate::ha::{self, AliveCheck, Gate, ReadyFile};
use crate::metrics::{MeasuredStore, MetricsServer, ScView};
use crate::server::{self, ServerContext, SHUTDOWN_POLL};
use crate::spu_link::{self, SpuLinkContext};
use crate::store::consul::{map_error as map_consul_error, ConsulStore, ConsulStoreConfig};
use crate::store::embedded::EmbeddedStore;
use crate::store::{MetadataStore, StoreError};

/// Longest wait for the first cache listing of a term.
const FIRST_LISTING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Sc::start` campaigns before standing by: enough to take a free lock.
const FIRST_CAMPAIGN_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the SC could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metadata store cannot be opened.
    #[error("cannot open the metadata store: {0}")]
    Store(#[from] StoreError),
    /// A listener cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread cannot be spawned, or the ready file cannot be written.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The public listener's TLS files do not load.
    #[error("cannot set up TLS on the public address: {0}")]
    Tls(#[from] sluice_tls::TlsError),
    /// The cache did not get its first listing in time.
    #[error("the metadata store did not answer the first listing in time")]
    NotReady,
    /// The private listener's TLS files do not load (which file and why).
    #[error("private listener TLS: {0}")]
    PrivateTls(sluice_tls::TlsError),
}

/// A running SC.
pub struct Sc {
    /// Where the public API listens.
    pub public_address: SocketAddr,
    /// Where SPUs connect.
    pub private_address: SocketAddr,
    /// Where `/metrics` and `/health/*` are served.
    pub metrics_address: SocketAddr,
    ready: ReadyFile,
    shutdown: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    active: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    metrics: MetricsServer,
}

/// What leadership needs from a Consul store.
struct ConsulLeadership {
    client: ConsulClient,
    lock_key: String,
    cluster: String,
}

/// The opened store, and what leadership needs when it is Consul.
struct OpenedStore {
    store: Arc<dyn MetadataStore>,
    consul: Option<ConsulLeadership>,
}

fn open_store(settings: &StoreSettings) -> Result<OpenedStore, StoreError> {
    match settings {
        StoreSettings::Embedded { data_dir } => {
            Ok(OpenedStore { store: Arc::new(EmbeddedStore::open(data_dir)?), consul: None })
        }
        StoreSettings::Consul(consul) => {
            let mut client = ConsulConfig::new(consul.address.clone());
            if let Some(token) = &consul.token {
                client = client.with_token(token.clone());
            }
            let config = ConsulStoreConfig::new(client)
                .with_key_prefix(consul.key_prefix.clone())
                .with_cluster(consul.cluster.clone());
            let store = ConsulStore::open(config)?;
            let lock_key = format!("{}{}", store.cluster_prefix(), ha::LOCK_KEY_NAME);
            let leadership = ConsulLeadership {
                client: store.client().clone(),
                lock_key,
                cluster: consul.cluster.clone(),
            };
            Ok(OpenedStore { store: Arc::new(store), consul: Some(leadership) })
        }
    }
}

fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address).map_err(|source| StartError::Bind { address, source })
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|source| StartError::Io { what: format!("spawn thread {name}"), source })
}

/// What a term needs to start: everything but the (fenced) store.
#[derive(Clone)]
struct TermPlan {
    config: ScConfig,
    shutdown: Arc<AtomicBool>,
    active: Arc<AtomicBool>,
    server_gate: Arc<Gate<ServerContext>>,
    link_gate: Arc<Gate<SpuLinkContext>>,
}

impl TermPlan {
    /// Cache sync (a fresh listing of the store), controllers, then the gates open. `None` when
    /// shutdown came first or a thread cannot be spawned.
    fn start(&self, store: Arc<dyn MetadataStore>) -> Result<Vec<JoinHandle<()>>, StartError> {
        let cache = Cache::new();
        let holds = Arc::new(crate::controllers::holds::LeadershipHolds::default());
        let mut threads = Vec::new();
        {
            let (store, cache, shutdown) = (store.clone(), cache.clone(), self.shutdown.clone());
            threads.push(spawn("sc-cache-sync", move || {
                crate::cache::run_sync(store, cache, shutdown);
            })?);
        }
        let deadline = Instant::now() + FIRST_LISTING_TIMEOUT;
        while !cache.wait_listed(SHUTDOWN_POLL) {
            if self.shutdown.load(Ordering::Relaxed) || Instant::now() >= deadline {
                self.shutdown.store(true, Ordering::Relaxed);
                return Err(StartError::NotReady);
            }
        }
        {
            let (store, cache, shutdown) = (store.clone(), cache.clone(), self.shutdown.clone());
            let settings = crate::controllers::ControllerSettings {
                heartbeat_timeout: self.config.heartbeat_timeout,
                leader_rebalance_interval: self.config.leader_rebalance_interval,
            };
            let holds = holds.clone();
            threads.push(spawn("sc-controllers", move || {
                crate::controllers::run(store, cache, settings, holds, shutdown);
            })?);
        }
        let security = Arc::new(crate::security::Security::new(self.config.security.clone()));
        self.server_gate.open(Arc::new(ServerContext {
            security: Arc::clone(&security),
            store: store.clone(),
            cache: cache.clone(),
            topic_defaults: self.config.topic_defaults,
            shutdown: self.shutdown.clone(),
            holds,
            frame_read_timeout: self.config.frame_read_timeout,
        }));
        self.link_gate.open(Arc::new(SpuLinkContext {
            store,
            cache,
            heartbeat_timeout: self.config.heartbeat_timeout,
            sessions: crate::spu_link::SpuSessions::default(),
            shutdown: self.shutdown.clone(),
            security,
        }));
        self.active.store(true, Ordering::Relaxed);
        Ok(threads)
    }
    /// Consul: registers the alive check, campaigns briefly (a free lock is taken at once and
    /// the term started here), then leaves the campaign to the `sc-leadership` thread.
    fn start_leadership(
        &self,
        consul: ConsulLeadership,
        store: Arc<dyn MetadataStore>,
        ready: &ReadyFile,
        lost: &Arc<AtomicBool>,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        let settings = &self.config.leader;
        let alive =
            AliveCheck::register(consul.client.clone(), &consul.cluster, ready, settings.check_ttl)
                .map_err(|error| StartError::Store(map_consul_error(error, None)))?;
        let mut threads = Vec::new();
        {
            let (alive, shutdown, active) =
                (alive.clone(), self.shutdown.clone(), self.active.clone());
            threads.push(spawn("sc-alive", move || alive.keep_passing(&shutdown, &active))?);
        }
        let lock = ha::lock_config(consul.lock_key, settings, ready, &alive);
        let mut leadership = Leadership::new(consul.client, lock);
        let plan = self.clone();
        let activate: ha::Activate = Box::new(move |store| match plan.start(store) {
            Ok(threads) => Some(threads),
            Err(error) => {
                tracing::error!(%error, "cannot start the active SC's threads; stopping");
                plan.shutdown.store(true, Ordering::Relaxed);
                None
            }
        });
        let term = ha::try_win(&mut leadership, &store, FIRST_CAMPAIGN_TIMEOUT, &activate);
        if term.is_none() {
            tracing::info!("another SC is active; standing by");
        }
        let campaign = ha::Campaign {
            leadership,
            store,
            term,
            activate,
            ready: ready.clone(),
            shutdown: self.shutdown.clone(),
            lost: Arc::clone(lost),
            alive,
        };
        threads.push(spawn("sc-leadership", move || ha::run(campaign))?);
        Ok(threads)
    }
}

impl Sc {
    /// Binds both listeners and starts every thread; see the crate docs for the thread map.
    /// Returns once this SC is active (its first listing done) or, on Consul with another SC
    /// holding the lock, once it stands by; the ready file (if configured) says which.
    pub fn start(config: &ScConfig) -> Result<Sc, StartError> {
        let public_tls = match &config.public_tls {
            Some(files) => Some(Arc::new(sluice_tls::ServerTls::new(files.clone())?)),
            None => None,
        };
        let mut opened = open_store(&config.store)?;
        opened.store = Arc::new(MeasuredStore::new(opened.store));
        let public = bind(config.public_address)?;
        let private = bind(config.private_address)?;
        let private_tls = match &config.private_tls {
            None => None,
            Some(files) => Some(Arc::new(
                sluice_tls::ServerTls::new(files.clone()).map_err(StartError::PrivateTls)?,
            )),
        };
        let local = |listener: &TcpListener, address: SocketAddr| {
            listener.local_addr().map_err(|source| StartError::Bind { address, source })
        };
        let ready = ReadyFile {
            path: config.ready_file.clone(),
            public_address: local(&public, config.public_address)?,
            private_address: local(&private, config.private_address)?,
            metrics_address: config.metrics_address,
        };
        let plan = TermPlan {
            config: config.clone(),
            shutdown: Arc::new(AtomicBool::new(false)),
            active: Arc::new(AtomicBool::new(false)),
            server_gate: Arc::new(Gate::default()),
            link_gate: Arc::new(Gate::default()),
        };
        let metrics = {
            let (active, gate) = (plan.active.clone(), plan.server_gate.clone());
            let view = move || ScView {
                active: active.load(Ordering::Relaxed),
                snapshot: gate.get().map(|context| context.cache.snapshot()),
            };
            MetricsServer::start(config.metrics_address, Box::new(view))
                .map_err(|source| StartError::Bind { address: config.metrics_address, source })?
        };
        let ready = ReadyFile { metrics_address: metrics.local_addr(), ..ready };
        let mut threads = Vec::new();
        {
            let (gate, shutdown) = (plan.server_gate.clone(), plan.shutdown.clone());
            threads.push(spawn("sc-public-accept", move || {
                server::run_accept(public, public_tls, gate, shutdown);
            })?);
            let (gate, shutdown) = (plan.link_gate.clone(), plan.shutdown.clone());
            let cluster = config.cluster.clone();
            threads.push(spawn("sc-private-accept", move || {
                let tls = private_tls.map(|tls| spu_link::LinkTls { tls, cluster });
                spu_link::run_accept(private, tls, gate, shutdown);
            })?);
        }
        let stop = |error: StartError| {
            plan.shutdown.store(true, Ordering::Relaxed);
            error
        };
        let lost = Arc::new(AtomicBool::new(false));
        match opened.consul {
            None => threads.extend(plan.start(opened.store).map_err(stop)?),
            Some(consul) => threads
                .extend(plan.start_leadership(consul, opened.store, &ready, &lost).map_err(stop)?),
        }
        let sc = Sc {
            public_address: ready.public_address,
            private_address: ready.private_address,
            metrics_address: ready.metrics_address,
            ready,
            shutdown: plan.shutdown.clone(),
            lost,
            active: plan.active.clone(),
            threads,
            metrics,
        };
        sc.write_ready_file().map_err(stop)?;
        Ok(sc)
    }

    /// Writes the bound addresses and the role to the configured ready file atomically
    /// (temporary file, then rename); the leadership thread rewrites it on takeover.
    pub fn write_ready_file(&self) -> Result<(), StartError> {
        self.ready.write(self.is_active()).map_err(|source| StartError::Io {
            what: format!("write the ready file {:?}", self.ready.path),
            source,
        })
    }

    /// Whether this SC is the active one (always, on the embedded store).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether this SC stopped because it lost the leadership (the process should exit with an
    /// error so that a supervisor restarts it as a standby).
    pub fn lost_leadership(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// The flag that stops every thread when set (e.g. from a signal handler).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutdown)
    }

    /// Stops every thread and waits for them (on Consul the active one then releases the
    /// leadership lock, so a standby takes over without waiting for the session to expire).
    pub fn shutdown(self) {
        self.shutdown.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ignored = thread.join();
        }
        drop(self.metrics);
    }
}
