//! The one error type of `sluice-perf`'s library. Every variant says what failed and whether
//! running the same step again can help ([`PerfError::is_retriable`]).

use std::io;

/// What went wrong in a measurement, a tool run or a report.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// A file, process or socket operation failed (retrying may help if the cause was load).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An external tool (fio, iperf3, sluice-sc, ...) is missing or failed; not retriable.
    #[error("{tool}: {message}")]
    Tool {
        /// The program.
        tool: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// Output that does not have the expected shape (a tool's JSON, a /proc file); not retriable.
    #[error("cannot parse {what}: {message}")]
    Parse {
        /// What was being parsed.
        what: String,
        /// Why it does not parse.
        message: String,
    },
    /// A combination of parameters that cannot run; not retriable.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// Something did not happen within its deadline (a server not ready, records not consumed);
    /// retriable.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The client SDK refused or failed an operation; retriable when the client says so.
    #[error("sluice client: {0}")]
    Client(#[from] sluice_client::ClientError),
}

impl PerfError {
    /// An [`PerfError::Io`] with its context.
    pub fn io(context: impl Into<String>, source: io::Error) -> PerfError {
        PerfError::Io { context: context.into(), source }
    }

    /// A [`PerfError::Parse`].
    pub fn parse(what: impl Into<String>, message: impl Into<String>) -> PerfError {
        PerfError::Parse { what: what.into(), message: message.into() }
    }

    /// A [`PerfError::Tool`].
    pub fn tool(tool: impl Into<String>, message: impl Into<String>) -> PerfError {
        PerfError::Tool { tool: tool.into(), message: message.into() }
    }

    /// Whether running the same step again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            PerfError::Io { .. } | PerfError::Timeout(_) => true,
            PerfError::Tool { .. } | PerfError::Parse { .. } | PerfError::InvalidParameters(_) => {
                false
            }
            PerfError::Client(error) => error.is_retriable(),
        }
    }
}
