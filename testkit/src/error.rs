//! The errors of the test kit.

use std::path::PathBuf;

/// Why a cluster or fault operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A file of the cluster's state directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A command (ip, nft, tc, a cluster process) could not be run or failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and error output, or why it could not start.
        message: String,
    },
    /// The state directory does not describe a running cluster.
    #[error("no namespace cluster in {dir}: {reason} (start one with deploy/netns/up)")]
    NoCluster {
        /// The state directory.
        dir: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The cluster did not reach a state in time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// A fault cannot be injected into this cluster (no target, no small volume).
    #[error("cannot inject {fault}: {reason}")]
    NotInjectable {
        /// The fault's kind.
        fault: String,
        /// Why.
        reason: String,
    },
    /// An invalid option.
    #[error("{0}")]
    InvalidArgument(String),
    /// The SC's admin API failed.
    #[error("SC: {0}")]
    Client(#[from] sluice_client::ClientError),
}

impl TestkitError {
    /// An [`TestkitError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TestkitError {
        TestkitError::Io { path: path.into(), source }
    }
}
