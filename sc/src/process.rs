//! The SC process: open the store, start the threads, bind the listeners, report readiness,
//! stop on a signal.
//!
//! [`Sc::start`] returns once both listeners are bound and the cache has its first listing, so
//! the addresses it reports are ready to use. [`Sc::shutdown`] sets the shared flag; every thread
//! polls it at least every [`crate::server::SHUTDOWN_POLL`] and exits; `shutdown` joins them.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_kvstore_consul::ConsulConfig;

use crate::cache::Cache;
use crate::config::{ScConfig, StoreSettings};
use crate::server::{self, ServerContext};
use crate::spu_link::{self, SpuLinkContext};
use crate::store::consul::{ConsulStore, ConsulStoreConfig};
use crate::store::embedded::EmbeddedStore;
use crate::store::{MetadataStore, StoreError};

/// Longest wait for the first cache listing at start.
const FIRST_LISTING_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The cache did not get its first listing in time.
    #[error("the metadata store did not answer the first listing in time")]
    NotReady,
}

/// A running SC.
pub struct Sc {
    /// Where the public API listens.
    pub public_address: SocketAddr,
    /// Where SPUs connect.
    pub private_address: SocketAddr,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn open_store(settings: &StoreSettings) -> Result<Arc<dyn MetadataStore>, StoreError> {
    match settings {
        StoreSettings::Embedded { data_dir } => Ok(Arc::new(EmbeddedStore::open(data_dir)?)),
        StoreSettings::Consul(consul) => {
            let mut client = ConsulConfig::new(consul.address.clone());
            if let Some(token) = &consul.token {
                client = client.with_token(token.clone());
            }
            let config = ConsulStoreConfig::new(client)
                .with_key_prefix(consul.key_prefix.clone())
                .with_cluster(consul.cluster.clone());
            Ok(Arc::new(ConsulStore::open(config)?))
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

impl Sc {
    /// Starts every thread; see the crate docs for the thread map.
    pub fn start(config: &ScConfig) -> Result<Sc, StartError> {
        let store = open_store(&config.store)?;
        let public = bind(config.public_address)?;
        let private = bind(config.private_address)?;
        let local = |listener: &TcpListener, address: SocketAddr| {
            listener.local_addr().map_err(|source| StartError::Bind { address, source })
        };
        let public_address = local(&public, config.public_address)?;
        let private_address = local(&private, config.private_address)?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let cache = Cache::new();
        let mut threads = Vec::new();
        {
            let (store, cache, shutdown) = (store.clone(), cache.clone(), shutdown.clone());
            threads.push(spawn("sc-cache-sync", move || {
                crate::cache::run_sync(store, cache, shutdown);
            })?);
        }
        if !cache.wait_listed(FIRST_LISTING_TIMEOUT) {
            shutdown.store(true, Ordering::Relaxed);
            return Err(StartError::NotReady);
        }
        {
            let (store, cache, shutdown) = (store.clone(), cache.clone(), shutdown.clone());
            let timeout = config.heartbeat_timeout;
            threads.push(spawn("sc-controllers", move || {
                crate::controllers::run(store, cache, timeout, shutdown);
            })?);
        }
        let context = Arc::new(ServerContext {
            store: store.clone(),
            cache: cache.clone(),
            topic_defaults: config.topic_defaults,
            shutdown: shutdown.clone(),
        });
        threads.push(spawn("sc-public-accept", move || server::run_accept(public, context))?);
        let link = Arc::new(SpuLinkContext {
            store,
            cache,
            heartbeat_timeout: config.heartbeat_timeout,
            shutdown: shutdown.clone(),
        });
        threads.push(spawn("sc-private-accept", move || spu_link::run_accept(private, link))?);
        Ok(Sc { public_address, private_address, shutdown, threads })
    }

    /// Writes the bound addresses to `path` atomically (temporary file, then rename).
    pub fn write_ready_file(&self, path: &Path) -> Result<(), StartError> {
        let text = server::describe(self.public_address, self.private_address);
        let temporary = path.with_extension("tmp");
        let io = |source| StartError::Io { what: format!("write {}", path.display()), source };
        std::fs::write(&temporary, text).map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }

    /// The flag that stops every thread when set (e.g. from a signal handler).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutdown)
    }

    /// Stops every thread and waits for them.
    pub fn shutdown(self) {
        self.shutdown.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ignored = thread.join();
        }
    }
}
