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
    #[error("{message} ({code})")]
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
    /// The producer or cluster handle is shutting down. Not retriable.
    #[error("the client is shut down")]
    Closed,
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
            | ClientError::Closed => false,
        }
    }

    /// The wire error code, for [`ClientError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A server refusal with the code's own description as message.
    pub(crate) fn server(code: ErrorCode) -> ClientError {
        ClientError::Server { code, message: code.description().to_owned() }
    }

    /// A server refusal with the server's message (or the code's description).
    pub(crate) fn server_message(code: ErrorCode, message: Option<String>) -> ClientError {
        let message = message.unwrap_or_else(|| code.description().to_owned());
        ClientError::Server { code, message }
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
    fn unknown_topic_says_how_to_create_it() {
        let text = ClientError::UnknownTopic { topic: "orders".into() }.to_string();
        assert!(text.contains("sluice topic create orders"), "{text}");
    }
}
