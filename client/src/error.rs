//! [`ClientError`]: every way a client call can fail, each saying what to do about it.
//!
//! Variants say whether retrying is safe ([`ClientError::is_retriable`]). Server refusals keep
//! the wire [`ErrorCode`] ([`ClientError::Server`]) so callers can match on it. An append whose
//! fate is unknown (a timeout, a connection that dropped with the request in flight) is reported
//! as [`ClientError::Timeout`] or [`ClientError::Connection`], never as a definite failure.
//!
//! The error is `Clone` because one batch outcome resolves the delivery result of every record
//! in it.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::codec::{DecodeError, EncodeError};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::record::BatchError;

/// What the command line suggests when no SC answers.
const START_HINT: &str = "is a cluster running? try `sluice cluster start --local`";

/// Why a client call failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No SC address accepted a connection. Retriable.
    #[error("cannot reach the SC at {addresses}: {reason}; {START_HINT}")]
    ScUnreachable {
        /// The addresses tried, comma separated.
        addresses: String,
        /// The last failure.
        reason: String,
    },
    /// No SC could be found through Consul (`consul://AGENT/CLUSTER`): the agent did not
    /// answer, or it lists no SC of the cluster whose checks pass. Retriable (the agent or an
    /// SC may be starting).
    #[error(
        "cannot find the SC through {url}: {reason}; check the Consul agent and that an SC of \
         that cluster runs on the Consul store"
    )]
    ScDiscovery {
        /// The `consul://` address.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Every SC reachable answered that it is a standby. Retriable (an election may be on).
    #[error(
        "no active SC at {addresses}: every SC reached is a standby; wait for the election to \
         finish, or check that the active SC and its metadata store (Consul) are up"
    )]
    NoActiveController {
        /// The addresses tried, comma separated.
        addresses: String,
    },
    /// Connecting to an SPU failed, or its connection dropped with the request in flight (for
    /// an append: the outcome is unknown). Retriable.
    #[error(
        "connection to {address} failed: {reason}; check that the SPU is running (`sluice spu \
         list` shows whether it is online)"
    )]
    Connection {
        /// The address (`host:port`).
        address: String,
        /// What happened.
        reason: Arc<std::io::Error>,
    },
    /// No answer within the configured time. For an append the outcome is unknown: the records
    /// may have been written. Retriable.
    #[error(
        "{operation} got no answer within {after:?}; the server may be overloaded or \
         unreachable (raise `request_timeout` / `delivery_timeout` if it is just slow)"
    )]
    Timeout {
        /// What was waited for.
        operation: &'static str,
        /// How long.
        after: Duration,
    },
    /// A record was not acknowledged within the producer's `delivery_timeout`, retries
    /// included. `last_error` is the last retriable error its partition got (for example
    /// `StorageFull` while the SPU's volume is under its free-space floor); none when requests
    /// simply went unanswered. The outcome is unknown: the record may have been written.
    #[error("produce delivery gave up after {after:?}: {}", delivery_cause(.last_error))]
    DeliveryTimeout {
        /// The delivery timeout.
        after: Duration,
        /// The last retriable error of the record's partition.
        last_error: Option<Box<ClientError>>,
    },
    /// The server refused the request with an error code. Retriable when the code is.
    #[error("{message} ({code:?}, code {})", code.code())]
    Server {
        /// The wire error code.
        code: ErrorCode,
        /// The server's message, or the code's description.
        message: String,
    },
    /// The topic is not in the cluster's metadata. Not retriable as is.
    #[error("topic {topic:?} does not exist; create it with `sluice topic create {topic}`")]
    UnknownTopic {
        /// The topic name.
        topic: String,
    },
    /// The partition is outside the topic's partition count. Not retriable.
    #[error(
        "topic {topic:?} has {partition_count} partitions; partition {partition} does not exist"
    )]
    UnknownPartition {
        /// The topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// The topic's partition count.
        partition_count: u32,
    },
    /// A name, address or setting is invalid. Not retriable: fix the input.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What is invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A record is larger than the producer may ever buffer. Not retriable.
    #[error(
        "record of {size_bytes} bytes exceeds the producer's buffer_bytes_max of {max_bytes} \
         bytes; raise buffer_bytes_max or send smaller records"
    )]
    RecordTooLarge {
        /// The record's encoded size.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A request could not be encoded (a value over a format limit). Not retriable.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
    /// A response did not decode, or broke the protocol. Not retriable; the connection is
    /// dropped. Usually a client and server of different versions.
    #[error("protocol error from {peer}: {reason}; are client and server the same version?")]
    Protocol {
        /// Who sent it.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// A fetched record batch is corrupt (CRC, length, record layout). Not retriable at the
    /// same offset.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(#[from] BatchError),
    /// The principal may not do this (ACLs; `AuthorizationFailed`), e.g. `User:alice may not
    /// write topic orders`. Not retriable: an operator must grant it (`sluice acl add`).
    #[error("{message} (AuthorizationFailed); an operator grants access with `sluice acl add`")]
    AuthorizationFailed {
        /// The server's message: principal, operation and resource.
        message: String,
    },
    /// The access token is unknown or was revoked (`AuthenticationFailed`). Not retriable:
    /// use another token (`sluice token create`).
    #[error("{message} (AuthenticationFailed)")]
    AuthenticationFailed {
        /// The server's message.
        message: String,
    },
    /// The producer or cluster handle is shutting down. Not retriable.
    #[error("the client is shut down")]
    Closed,
    /// The client's TLS settings cannot be used (a file missing or unreadable, a key that does
    /// not match its certificate, a server name that is not one). Not retriable: fix them.
    #[error("cannot set up TLS: {reason}")]
    TlsSetup {
        /// Which setting or file, and why.
        reason: String,
    },
    /// The TLS handshake failed: a certificate was refused, or the peers share no protocol.
    /// Not retriable: the same certificates fail again.
    #[error("TLS with {address} failed: {reason}; {}", .failure.advice())]
    TlsHandshake {
        /// The server address.
        address: String,
        /// Which side refused what.
        failure: TlsFailure,
        /// rustls' reason.
        reason: String,
    },
    /// The client uses TLS and the server answered in plaintext. Not retriable.
    #[error("the server at {address} does not speak TLS (is it a plaintext port? drop --tls-ca)")]
    NotTls {
        /// The server address.
        address: String,
    },
    /// The client uses plaintext and the server answered with TLS. Not retriable.
    #[error(
        "the server at {address} requires TLS: pass --tls-ca (the CA bundle of its certificate)"
    )]
    TlsRequired {
        /// The server address.
        address: String,
    },
}

/// Which certificate a TLS handshake refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The client does not trust the server's certificate (another CA, expired, or not
    /// naming the host dialled).
    ServerCertificateRejected,
    /// The server refused the client's certificate (another CA, expired, revoked) or asked
    /// for one the client did not send.
    ClientCertificateRejected,
    /// Anything else (no common protocol version or cipher, a timeout).
    Other,
}

impl TlsFailure {
    fn advice(self) -> &'static str {
        match self {
            TlsFailure::ServerCertificateRejected => {
                "the server's certificate is not trusted: check that --tls-ca holds the CA that \
                 signed it, that it has not expired and that it names the host dialled"
            }
            TlsFailure::ClientCertificateRejected => {
                "the server refused this client's certificate: check --tls-cert/--tls-key (a \
                 certificate signed by a CA the server trusts, not expired), or pass them if \
                 none was given"
            }
            TlsFailure::Other => "check that client and server both run TLS 1.2 or 1.3",
        }
    }
}

/// What a client does after a request about a partition failed (a consumer's fetch or list
/// offsets, a producer's batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Refresh the metadata (the leader may have moved, died or paused), then send the same
    /// request after the backoff: to the new leader once the metadata names one.
    RefreshAndRetry,
    /// Send the same request to the same leader after the backoff: it is the leader, but
    /// cannot answer yet (a new leader proving its high watermark, a busy SPU, a full disk).
    Retry,
    /// Hand the error to the caller: it is not retriable, or retries went on for the window.
    Fail,
}

/// The decision after `error`, when requests have been failing for `failing_for` (a
/// consumer: since its first failure; a producer: the batch's age) and the caller allows
/// `retry_window` of retries (`request_timeout`; the producer's `delivery_timeout`).
pub(crate) fn recovery(
    error: &ClientError,
    failing_for: Duration,
    retry_window: Duration,
) -> Recovery {
    if !error.is_retriable() || failing_for >= retry_window {
        Recovery::Fail
    } else if error.needs_metadata_refresh() {
        Recovery::RefreshAndRetry
    } else {
        Recovery::Retry
    }
}

fn delivery_cause(last_error: &Option<Box<ClientError>>) -> String {
    match last_error {
        Some(error) => format!("the last attempt failed with: {error}"),
        None => "no answer; the SPU may be overloaded or unreachable (raise `delivery_timeout` \
                 if it is just slow)"
            .into(),
    }
}

impl ClientError {
    /// Whether sending the same request again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::ScUnreachable { .. }
            | ClientError::ScDiscovery { .. }
            | ClientError::NoActiveController { .. }
            | ClientError::Connection { .. }
            | ClientError::Timeout { .. }
            | ClientError::DeliveryTimeout { .. } => true,
            ClientError::Server { code, .. } => code.is_retriable(),
            ClientError::UnknownTopic { .. }
            | ClientError::UnknownPartition { .. }
            | ClientError::InvalidInput { .. }
            | ClientError::RecordTooLarge { .. }
            | ClientError::Encode(_)
            | ClientError::Protocol { .. }
            | ClientError::CorruptBatch(_)
            | ClientError::Closed
            | ClientError::AuthorizationFailed { .. }
            | ClientError::AuthenticationFailed { .. }
            | ClientError::TlsSetup { .. }
            | ClientError::TlsHandshake { .. }
            | ClientError::NotTls { .. }
            | ClientError::TlsRequired { .. } => false,
        }
    }

    /// Whether the error suggests the client's view of partition leaders is stale, so the
    /// metadata should be refreshed before a retry: leadership moved or is moving (not leader,
    /// no leader, partition offline, a fenced epoch), or the leader's connection failed or went
    /// silent (the SPU may have died or paused, and another replica may lead now).
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => code.needs_metadata_refresh(),
            ClientError::Connection { .. } | ClientError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The wire error code, for [`ClientError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::AuthorizationFailed { .. } => Some(ErrorCode::AuthorizationFailed),
            ClientError::AuthenticationFailed { .. } => Some(ErrorCode::AuthenticationFailed),
            _ => None,
        }
    }

    /// A server refusal with the code's own description as message.
    pub(crate) fn server(code: ErrorCode) -> ClientError {
        ClientError::server_message(code, None)
    }

    /// A server refusal with the server's message (or the code's description).
    pub(crate) fn server_message(code: ErrorCode, message: Option<String>) -> ClientError {
        let message = message.unwrap_or_else(|| code.description().to_owned());
        match code {
            ErrorCode::AuthorizationFailed => ClientError::AuthorizationFailed { message },
            ErrorCode::AuthenticationFailed => ClientError::AuthenticationFailed { message },
            _ => ClientError::Server { code, message },
        }
    }

    /// A data-path refusal of one partition (produce, fetch, list offsets), with a message
    /// that says what is happening to the partition and what the client does about it; the
    /// code stays matchable through [`ClientError::code`].
    pub(crate) fn partition(code: ErrorCode, topic: &str, partition: u32) -> ClientError {
        let situation = match code {
            ErrorCode::PartitionOffline => {
                "is offline: no in-sync replica is online; it serves again when one returns"
            }
            ErrorCode::LeaderNotAvailable => "has no leader right now: an election is in progress",
            ErrorCode::NotLeader | ErrorCode::FencedLeaderEpoch => {
                "has moved: the SPU asked no longer leads it; following the new leader"
            }
            ErrorCode::UnknownLeaderEpoch => {
                "has a newer leader epoch than this SPU knows yet; retrying"
            }
            ErrorCode::OffsetNotAvailable => {
                "has a new leader that cannot prove its high watermark yet (its followers have \
                 not reported since it took over); retrying at the same offset"
            }
            ErrorCode::NotEnoughReplicas => {
                "has fewer in-sync replicas than the topic's min-in-sync: acks all was refused \
                 and nothing was written; retrying until enough replicas are back in sync"
            }
            ErrorCode::NotEnoughReplicasAfterAppend => {
                "lost in-sync replicas after the leader wrote the append (below the topic's \
                 min-in-sync); retrying (the retry is recognised as a duplicate)"
            }
            ErrorCode::UnknownTopicOrPartition | ErrorCode::ReplicaNotAvailable => {
                "is not served by the SPU asked (a replica being created or moved); retrying"
            }
            ErrorCode::AuthorizationFailed | ErrorCode::AuthenticationFailed => {
                let message = format!(
                    "this client's principal may not access topic {topic} (partition \
                     {partition}): {}",
                    code.description()
                );
                return ClientError::server_message(code, Some(message));
            }
            _ => {
                return ClientError::Server {
                    code,
                    message: format!("partition {topic}/{partition}: {}", code.description()),
                }
            }
        };
        ClientError::Server { code, message: format!("partition {topic}/{partition} {situation}") }
    }

    /// [`Self::partition`], with an ACL refusal saying who (`principal`, as the client knows
    /// itself) may not do what (`operation`: read, write, describe) to which topic, as the SC's
    /// refusals do (an SPU's answer carries only the code).
    pub(crate) fn partition_refusal(
        code: ErrorCode,
        principal: impl FnOnce() -> String,
        operation: &str,
        topic: &str,
        partition: u32,
    ) -> ClientError {
        match code {
            ErrorCode::AuthorizationFailed => ClientError::AuthorizationFailed {
                message: format!(
                    "{} may not {operation} topic {topic} (partition {partition}, refused by its \
                     leader)",
                    principal()
                ),
            },
            _ => ClientError::partition(code, topic, partition),
        }
    }

    pub(crate) fn connection(address: &str, error: std::io::Error) -> ClientError {
        ClientError::Connection { address: address.to_owned(), reason: Arc::new(error) }
    }

    pub(crate) fn decode(peer: &str, error: &DecodeError) -> ClientError {
        ClientError::Protocol { peer: peer.to_owned(), reason: error.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_sc_says_how_to_start_a_cluster() {
        let error = ClientError::ScUnreachable {
            addresses: "127.0.0.1:9003".into(),
            reason: "connection refused".into(),
        };
        let text = error.to_string();
        assert!(text.contains("127.0.0.1:9003"), "{text}");
        assert!(text.contains("sluice cluster start --local"), "{text}");
        assert!(error.is_retriable());
    }

    #[test]
    fn server_errors_follow_the_code() {
        assert!(ClientError::server(ErrorCode::NotLeader).is_retriable());
        assert!(!ClientError::server(ErrorCode::TopicAlreadyExists).is_retriable());
        let error = ClientError::server_message(ErrorCode::InvalidConfig, Some("bad".into()));
        assert_eq!(error.code(), Some(ErrorCode::InvalidConfig));
        assert!(error.to_string().starts_with("bad ("), "{error}");
    }

    #[test]
    fn server_errors_show_the_code_once() {
        let text = ClientError::server(ErrorCode::NotLeader).to_string();
        assert!(text.ends_with("(NotLeader, code 6)"), "{text}");
        assert_eq!(text.matches("refresh metadata").count(), 1, "{text}");
    }

    #[test]
    fn partition_errors_say_what_happens_and_keep_the_code() {
        let offline = ClientError::partition(ErrorCode::PartitionOffline, "orders", 2);
        assert_eq!(offline.code(), Some(ErrorCode::PartitionOffline));
        assert!(offline.is_retriable() && offline.needs_metadata_refresh());
        let text = offline.to_string();
        assert!(text.starts_with("partition orders/2 is offline: no in-sync replica"), "{text}");
        let not_available = ClientError::partition(ErrorCode::OffsetNotAvailable, "orders", 0);
        assert!(not_available.is_retriable());
        assert!(!not_available.needs_metadata_refresh(), "the leader is right; only wait");
        assert!(not_available.to_string().contains("high watermark"), "{not_available}");
        for code in [ErrorCode::NotEnoughReplicas, ErrorCode::NotEnoughReplicasAfterAppend] {
            let error = ClientError::partition(code, "orders", 1);
            assert!(error.is_retriable(), "{code:?}");
            assert!(error.to_string().contains("min-in-sync"), "{error}");
        }
        let other = ClientError::partition(ErrorCode::StorageFull, "t", 0);
        assert!(other.to_string().starts_with("partition t/0: "), "{other}");
    }

    #[test]
    fn dead_or_silent_leaders_refresh_the_metadata() {
        let closed = ClientError::connection(
            "127.0.0.1:1",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        );
        assert!(closed.needs_metadata_refresh());
        let silent = ClientError::Timeout { operation: "fetch", after: Duration::from_secs(1) };
        assert!(silent.needs_metadata_refresh());
        assert!(!ClientError::Closed.needs_metadata_refresh());
        assert!(!ClientError::server(ErrorCode::StorageFull).needs_metadata_refresh());
    }

    #[test]
    fn leader_changes_refresh_and_retry_at_the_same_offset() {
        let window = Duration::from_secs(30);
        let early = Duration::from_millis(200);
        let refresh = [
            ErrorCode::NotLeader,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::PartitionOffline,
            ErrorCode::FencedLeaderEpoch,
            ErrorCode::UnknownTopicOrPartition,
        ];
        for code in refresh {
            let error = ClientError::partition(code, "t", 0);
            assert_eq!(recovery(&error, early, window), Recovery::RefreshAndRetry, "{code:?}");
        }
        let closed = ClientError::connection(
            "127.0.0.1:1",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(recovery(&closed, early, window), Recovery::RefreshAndRetry);
        let silent = ClientError::Timeout { operation: "fetch", after: window };
        assert_eq!(recovery(&silent, early, window), Recovery::RefreshAndRetry);
    }

    #[test]
    fn a_new_leader_proving_its_high_watermark_is_waited_for() {
        let window = Duration::from_secs(30);
        let error = ClientError::partition(ErrorCode::OffsetNotAvailable, "t", 0);
        assert_eq!(recovery(&error, Duration::ZERO, window), Recovery::Retry);
        assert_eq!(recovery(&error, window, window), Recovery::Fail, "bounded by the window");
        let busy = ClientError::partition(ErrorCode::SpuBusy, "t", 0);
        assert_eq!(recovery(&busy, Duration::ZERO, window), Recovery::Retry);
    }

    #[test]
    fn definite_errors_fail_at_once() {
        let window = Duration::from_secs(30);
        let out_of_range = ClientError::partition(ErrorCode::OffsetOutOfRange, "t", 0);
        assert_eq!(recovery(&out_of_range, Duration::ZERO, window), Recovery::Fail);
        assert_eq!(recovery(&ClientError::Closed, Duration::ZERO, window), Recovery::Fail);
        let offline = ClientError::partition(ErrorCode::PartitionOffline, "t", 0);
        assert_eq!(recovery(&offline, window, window), Recovery::Fail);
    }

    #[test]
    fn unknown_topic_says_how_to_create_it() {
        let text = ClientError::UnknownTopic { topic: "orders".into() }.to_string();
        assert!(text.contains("sluice topic create orders"), "{text}");
    }
}
