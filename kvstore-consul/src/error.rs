//! The one error type of this crate.
//!
//! Every failure of a Consul call becomes a [`ConsulError`]. Each variant says whether trying
//! the same call again may succeed ([`ConsulError::is_retriable`]) and, for writes, whether the
//! outcome is unknown (a timeout or a broken connection after the request was sent: the write
//! may or may not have been applied, so a retry must be idempotent or guarded by a CAS index).
//!
//! Consul answers most errors with a plain-text body ("Permission denied", "invalid session
//! ...", "Unknown check ..."); that text is kept verbatim (trimmed and bounded) in the message.

use std::fmt;

/// Longest piece of a Consul error body kept in an error message.
pub(crate) const ERROR_BODY_CHARS_MAX: usize = 1024;

/// One failed operation of an aborted transaction, as Consul reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOpError {
    /// Position of the failed operation in the submitted list (0-based).
    pub op_index: usize,
    /// Consul's explanation, e.g. `failed index check for key "a", current modify index 13 != 1`.
    pub what: String,
}

impl fmt::Display for TxnOpError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "operation {}: {}", self.op_index, self.what)
    }
}

/// Errors of the Consul client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsulError {
    /// The configuration cannot work (bad address, unreadable certificate, TTL out of range).
    /// Not retriable.
    #[error("invalid Consul configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// No connection could be opened; the request was not delivered. Retriable.
    #[error("cannot connect to Consul at {address}: {detail}")]
    Unreachable {
        /// The agent address that was tried.
        address: String,
        /// The transport error.
        detail: String,
    },
    /// The TLS handshake failed (untrusted or rejected certificate, protocol mismatch); the
    /// request was not delivered. Not retriable: the TLS configuration must change.
    #[error("TLS handshake with Consul at {address} failed: {detail}")]
    TlsHandshake {
        /// The agent address that was tried.
        address: String,
        /// The TLS error.
        detail: String,
    },
    /// The call did not complete in time. For writes the outcome is unknown. Retriable.
    #[error("Consul call {method} {path} timed out after {timeout_ms} ms (outcome unknown)")]
    Timeout {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The connection broke after the request was sent. For writes the outcome is unknown.
    /// Retriable.
    #[error("connection to Consul broke during {method} {path}: {detail} (outcome unknown)")]
    Connection {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The transport error.
        detail: String,
    },
    /// Consul's ACL system refused the call (HTTP 403, "Permission denied" or "ACL not found").
    /// Not retriable with the same token.
    #[error("Consul refused {method} {path}: {message}")]
    PermissionDenied {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// Consul's own text, e.g. "Permission denied".
        message: String,
    },
    /// The session does not exist any more (expired, destroyed or never created). Not
    /// retriable: create a new session.
    #[error("Consul session is not valid for {method} {path}: {message}")]
    InvalidSession {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// Consul's own text, e.g. "Session id '...' not found".
        message: String,
    },
    /// Consul answered with an error status. Retriable for 429 and for 5xx answers that are
    /// not known to be permanent (e.g. "No cluster leader").
    #[error("Consul answered {method} {path} with HTTP {status}: {message}")]
    Rejected {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// Consul's own text (plain-text body).
        message: String,
    },
    /// A value larger than Consul accepts; nothing was sent. Not retriable.
    #[error(
        "value for key {key:?} is {size_bytes} bytes, over Consul's limit of {size_bytes_max} \
         bytes; not sent"
    )]
    ValueTooLarge {
        /// The key.
        key: String,
        /// Size of the refused value.
        size_bytes: usize,
        /// The limit.
        size_bytes_max: usize,
    },
    /// A transaction with more operations than Consul accepts; nothing was sent. Not
    /// retriable.
    #[error("transaction has {count} operations, over Consul's limit of {count_max}; not sent")]
    TooManyTxnOperations {
        /// Operations submitted.
        count: usize,
        /// The limit.
        count_max: usize,
    },
    /// A transaction was rolled back: no operation of it was applied. Not retriable as is
    /// (a check failed; re-read and rebuild the transaction).
    #[error("transaction aborted, no operation applied: {}", join_txn_errors(errors))]
    TxnAborted {
        /// Every failed operation with Consul's reason.
        errors: Vec<TxnOpError>,
    },
    /// Consul's answer could not be understood (or was larger than allowed). Not retriable.
    #[error("unexpected answer from Consul to {method} {path}: {detail}")]
    Decode {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

fn join_txn_errors(errors: &[TxnOpError]) -> String {
    let parts: Vec<String> = errors.iter().map(TxnOpError::to_string).collect();
    parts.join("; ")
}

/// Consul 5xx texts that a retry cannot fix.
const PERMANENT_SERVER_ERRORS: [&str; 6] =
    ["invalid session", "unknown check", "unknown service", "checkid", "missing", "invalid"];

impl ConsulError {
    /// Whether the same call may succeed if tried again (after a backoff).
    ///
    /// A retriable error after a write can mean the write was applied ([`Self::Timeout`],
    /// [`Self::Connection`]): retry only idempotent writes or CAS-guarded ones.
    ///
    /// ```
    /// use sluice_kvstore_consul::ConsulError;
    /// let error = ConsulError::TooManyTxnOperations { count: 65, count_max: 64 };
    /// assert!(!error.is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Connection { .. } => true,
            Self::Rejected { status, message, .. } => {
                let lowered = message.to_ascii_lowercase();
                *status == 429
                    || (*status >= 500
                        && !PERMANENT_SERVER_ERRORS.iter().any(|text| lowered.starts_with(text)))
            }
            Self::Config { .. }
            | Self::TlsHandshake { .. }
            | Self::PermissionDenied { .. }
            | Self::InvalidSession { .. }
            | Self::ValueTooLarge { .. }
            | Self::TooManyTxnOperations { .. }
            | Self::TxnAborted { .. }
            | Self::Decode { .. } => false,
        }
    }

    /// Whether a write that failed this way may nevertheless have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Connection { .. })
    }
}

/// Trims a Consul error body and bounds its length for an error message.
pub(crate) fn body_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.chars().count() <= ERROR_BODY_CHARS_MAX {
        return trimmed.to_string();
    }
    let mut bounded: String = trimmed.chars().take(ERROR_BODY_CHARS_MAX).collect();
    bounded.push_str("...");
    bounded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, message: &str) -> ConsulError {
        ConsulError::Rejected {
            method: "PUT",
            path: "/v1/kv/a".into(),
            status,
            message: message.into(),
        }
    }

    #[test]
    fn retriable_follows_status_and_text() {
        assert!(rejected(500, "No cluster leader").is_retriable());
        assert!(rejected(429, "Too Many Requests").is_retriable());
        assert!(!rejected(500, "invalid session \"x\"").is_retriable());
        assert!(!rejected(500, "Unknown check \"c\"").is_retriable());
        assert!(!rejected(500, "CheckID \"c\" does not have associated TTL").is_retriable());
        assert!(!rejected(400, "Bad request").is_retriable());
        assert!(!rejected(413, "too large").is_retriable());
    }

    #[test]
    fn txn_errors_name_the_operation() {
        let error = ConsulError::TxnAborted {
            errors: vec![TxnOpError { op_index: 3, what: "failed index check".into() }],
        };
        assert!(error.to_string().contains("operation 3: failed index check"));
    }

    #[test]
    fn long_bodies_are_bounded() {
        let body = vec![b'x'; ERROR_BODY_CHARS_MAX * 2];
        assert_eq!(body_message(&body).len(), ERROR_BODY_CHARS_MAX + 3);
        assert_eq!(body_message(b"  Permission denied\n"), "Permission denied");
    }
}
