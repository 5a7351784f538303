//! Configurations that follow their files: [`ServerTls`] and [`ClientTls`].
//!
//! Each holds the last good configuration and the files' fingerprints (modification time,
//! length, inode). [`ServerTls::config`] re-reads the fingerprints at most every
//! [`RELOAD_CHECK_INTERVAL`]; when one changed, it rebuilds, and swaps in the new configuration
//! only if it builds (a key written before its certificate fails until both are there).
//! Connections already established keep the configuration they were made with.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::{ClientConfig, ServerConfig};

use crate::config::{ClientTlsFiles, ServerTlsFiles};
use crate::error::TlsError;
use crate::load::{client_config, server_config};

/// Longest time a change of the files goes unnoticed (by the next connection after it).
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|path| {
            std::fs::metadata(path).ok().map(|meta| {
                (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), meta.ino())
            })
        })
        .collect()
}

struct State<C> {
    config: Arc<C>,
    fingerprint: Fingerprint,
    checked: Instant,
}

/// A configuration rebuilt from its files when they change.
struct Reloading<F, C> {
    files: F,
    paths: Vec<PathBuf>,
    build: fn(&F) -> Result<C, TlsError>,
    state: Mutex<State<C>>,
}

impl<F, C> Reloading<F, C> {
    fn new(
        files: F,
        paths: Vec<PathBuf>,
        build: fn(&F) -> Result<C, TlsError>,
    ) -> Result<Self, TlsError> {
        let fingerprint = fingerprint(&paths);
        let config = Arc::new(build(&files)?);
        let state = Mutex::new(State { config, fingerprint, checked: Instant::now() });
        Ok(Reloading { files, paths, build, state })
    }

    fn current(&self) -> Arc<C> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            state.checked = Instant::now();
            let now = fingerprint(&self.paths);
            if now != state.fingerprint {
                match (self.build)(&self.files) {
                    Ok(config) => {
                        tracing::info!(files = ?self.paths, "TLS files changed; new connections use them");
                        state.config = Arc::new(config);
                        state.fingerprint = now;
                    }
                    // Tried again on the next check: the fingerprint stays the old one.
                    Err(error) => {
                        tracing::warn!(%error, "TLS files changed but do not load; keeping the previous ones")
                    }
                }
            }
        }
        Arc::clone(&state.config)
    }

    fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

/// A listener's TLS configuration, reloaded when its files change (see the module docs).
pub struct ServerTls {
    inner: Reloading<ServerTlsFiles, ServerConfig>,
}

impl ServerTls {
    /// Loads `files`; an error says which file and why.
    pub fn new(files: ServerTlsFiles) -> Result<ServerTls, TlsError> {
        let mut paths = vec![files.cert.clone(), files.key.clone()];
        paths.extend(files.ca.clone());
        Ok(ServerTls { inner: Reloading::new(files, paths, server_config)? })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner.current()
    }

    /// The files it follows.
    pub fn paths(&self) -> &[PathBuf] {
        self.inner.paths()
    }

    /// The files it was made from.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.inner.files
    }
}

/// A client's TLS configuration, reloaded when its files change (see the module docs).
pub struct ClientTls {
    inner: Reloading<ClientTlsFiles, ClientConfig>,
}

impl ClientTls {
    /// Loads `files`; an error says which file and why.
    pub fn new(files: ClientTlsFiles) -> Result<ClientTls, TlsError> {
        let mut paths = vec![files.ca.clone()];
        paths.extend(files.cert.clone());
        paths.extend(files.key.clone());
        Ok(ClientTls { inner: Reloading::new(files, paths, client_config)? })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.inner.current()
    }

    /// The files it was made from.
    pub fn files(&self) -> &ClientTlsFiles {
        &self.inner.files
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ServerTls").field("files", &self.inner.files).finish()
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ClientTls").field("files", &self.inner.files).finish()
    }
}
