//! The one client-facing error-code enum, with fixed wire numbers.
//!
//! Every response that can fail carries an [`ErrorCode`] as a big-endian `i16`. Servers map
//! their internal errors to a code once, at the edge; clients decide whether to retry from
//! [`ErrorCode::is_retriable`].
//!
//! Numbering policy:
//! - Codes that have a Kafka equivalent reuse Kafka's number (so logs and the Kafka-compatible
//!   paths read the same); Sluice-only codes live at 1000 and above.
//! - A number, once published, is **never reused**, even if its variant is removed. Retired
//!   numbers are listed here: *(none yet)*.
//! - A number this build does not know decodes to [`ErrorCode::Unknown`], never a panic, and is
//!   treated as not retriable.
//!
//! Unknown outcomes: when a server cannot tell whether an append happened (a replica timed out
//! after the leader wrote, a connection dropped mid-request), it reports
//! [`ErrorCode::RequestTimedOut`], never a definite failure. A producer retries such an append
//! with the same producer id and sequence, and idempotence turns the retry into exactly-once.

use std::fmt;

macro_rules! error_codes {
    ($($(#[$meta:meta])* $name:ident = $code:literal, retriable: $retriable:literal,
        $description:literal;)*) => {
        /// A client-facing error code; see the module docs for the numbering policy.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$meta])* #[doc = concat!("`", $code, "`: ", $description)] $name,)*
            /// A number this build does not know (sent by a newer peer).
            Unknown(i16),
        }

        impl ErrorCode {
            /// Every known code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The wire number.
            pub const fn code(self) -> i16 {
                match self {
                    $(ErrorCode::$name => $code,)*
                    ErrorCode::Unknown(code) => code,
                }
            }

            /// The code for a wire number; unknown numbers become [`ErrorCode::Unknown`].
            pub const fn from_code(code: i16) -> ErrorCode {
                match code {
                    $($code => ErrorCode::$name,)*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// Whether sending the same request again (after refreshing metadata where the
            /// code says so) may succeed.
            pub const fn is_retriable(self) -> bool {
                match self {
                    $(ErrorCode::$name => $retriable,)*
                    ErrorCode::Unknown(_) => false,
                }
            }

            /// A one-line human description.
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $description,)*
                    ErrorCode::Unknown(_) => "error code unknown to this version of Sluice",
                }
            }
        }
    };
}

error_codes! {
    /// Success.
    #[default]
    None = 0, retriable: false, "no error";
    UnknownServerError = -1, retriable: false, "unexpected server error";
    OffsetOutOfRange = 1, retriable: false,
        "the requested offset is outside the partition's log (before its start or after its end)";
    CorruptMessage = 2, retriable: true,
        "a record batch failed its length or CRC check";
    UnknownTopicOrPartition = 3, retriable: true,
        "this server does not host that topic or partition";
    InvalidFetchSize = 4, retriable: false, "the requested fetch size is invalid";
    LeaderNotAvailable = 5, retriable: true,
        "the partition has no leader right now (an election is in progress)";
    NotLeader = 6, retriable: true,
        "this SPU is not the partition's leader; refresh metadata and retry at the leader";
    RequestTimedOut = 7, retriable: true,
        "the request timed out; for an append its outcome is unknown and it may have been written";
    ReplicaNotAvailable = 9, retriable: true, "the replica is not available on this SPU";
    MessageTooLarge = 10, retriable: false,
        "the batch is larger than the topic or server accepts";
    ScUnavailable = 15, retriable: true,
        "the streaming controller (SC) is not reachable or not active";
    InvalidTopicName = 17, retriable: false,
        "topic names are 1 to 249 characters of [a-zA-Z0-9._-] and not '.' or '..'";
    NotEnoughReplicas = 19, retriable: true,
        "fewer in-sync replicas than the topic's minimum; the append was not written";
    NotEnoughReplicasAfterAppend = 20, retriable: true,
        "the append was written on the leader but in-sync replicas fell below the minimum";
    InvalidRequiredAcks = 21, retriable: false, "acks must be none, leader or all";
    AuthorizationFailed = 29, retriable: false,
        "the caller's principal may not do this operation on this resource (ACLs); an \
         operator grants it with `sluice acl add`";
    InvalidTimestamp = 32, retriable: false, "a record timestamp is out of the accepted range";
    UnsupportedVersion = 35, retriable: false,
        "this server does not support the API version of the request";
    TopicAlreadyExists = 36, retriable: false, "a topic with that name already exists";
    InvalidPartitions = 37, retriable: false,
        "the partition count or assignment is invalid";
    InvalidReplicationFactor = 38, retriable: false,
        "the replication factor is invalid (at least 1, at most the number of SPUs)";
    InvalidReplicaAssignment = 39, retriable: false,
        "the explicit replica assignment is invalid (duplicate or unknown SPUs, uneven sizes)";
    InvalidConfig = 40, retriable: false, "a setting is out of its allowed range";
    NotController = 41, retriable: true,
        "this SC is not the active controller; retry at the active one";
    InvalidRequest = 42, retriable: false, "the request is malformed";
    OutOfOrderSequence = 45, retriable: true,
        "the batch's sequence is ahead of the partition's next one for its producer: earlier \
         batches must be appended first (they are retried, or the producer starts a new epoch)";
    DuplicateSequence = 46, retriable: false,
        "the batch was already appended (an idempotent retry); nothing was written again";
    InvalidProducerEpoch = 47, retriable: false,
        "the producer epoch is older than the current one for this producer id";
    UnknownProducerId = 59, retriable: true,
        "the partition has no sequence state for this producer and epoch (a new leader, a \
         restart, a truncation): the producer starts a new epoch at sequence 0 and retries";
    FencedLeaderEpoch = 74, retriable: true,
        "the request's leader epoch is older than the partition's current one";
    UnknownLeaderEpoch = 75, retriable: true,
        "the request's leader epoch is newer than this replica knows";
    OffsetNotAvailable = 78, retriable: true,
        "the partition's new leader cannot prove its high watermark yet (its followers have \
         not reported since it took over); committed reads are answered once it can";
    AuthenticationFailed = 58, retriable: false,
        "the access token is unknown or revoked; create a new one with `sluice token create`";
    InvalidRecord = 87, retriable: false, "a record inside the batch is invalid";
    InvalidUpdateVersion = 95, retriable: true,
        "the in-sync set proposal was based on an older partition epoch than the SC's; the \
         leader proposes again from the current one";
    IneligibleReplica = 107, retriable: true,
        "a proposed in-sync replica is not a replica of the partition or its SPU is offline";
    SpuNotFound = 1000, retriable: false, "no SPU with that id is registered";
    SpuAlreadyExists = 1001, retriable: false, "an SPU with that id already exists";
    SpuGroupNotFound = 1002, retriable: false, "no SPU group with that name exists";
    SpuGroupAlreadyExists = 1003, retriable: false, "an SPU group with that name already exists";
    ReplicationFactorAboveSpuCount = 1004, retriable: true,
        "the replication factor is above the number of online SPUs";
    UnknownSpu = 1005, retriable: false,
        "the SPU that connected is not registered with the SC";
    StorageFull = 1006, retriable: true,
        "the SPU's free disk space is below its threshold; the append was refused";
    UnknownApiKey = 1007, retriable: false, "the server does not know this API key";
    FrameTooLarge = 1008, retriable: false,
        "the frame is larger than the server's configured maximum";
    InvalidSpuGroupName = 1009, retriable: false,
        "SPU group names are 1 to 249 characters of [a-zA-Z0-9._-] and not '.' or '..'";
    StreamCreditExceeded = 1010, retriable: false,
        "a stream's flow-control credit window would exceed its maximum";
    TopicNotFound = 1011, retriable: false, "no topic with that name exists";
    StaleUpdateEpoch = 1012, retriable: false,
        "the update epoch is older than one already applied";
    SpuBusy = 1013, retriable: true,
        "the SPU's bounded queues are full; back off and retry";
    LogDiverged = 1014, retriable: true,
        "the follower's log diverges from the leader's after the offset it asked for; it \
         truncates at the end offset of its last leader epoch on the leader and fetches again";
    PartitionOffline = 1015, retriable: true,
        "no in-sync replica of the partition is online; it serves again when one returns (or, \
         for a topic that allows unclean election, when any replica does, losing data)";
    ReassignmentInProgress = 1020, retriable: false,
        "the partition's replicas are being moved already; wait for the move to finish or \
         cancel it";
    NoReassignmentInProgress = 1021, retriable: false,
        "the partition's replicas are not being moved; there is nothing to cancel";
}

impl ErrorCode {
    /// Whether this is [`ErrorCode::None`].
    pub const fn is_ok(self) -> bool {
        matches!(self, ErrorCode::None)
    }

    /// Whether a client should refresh its metadata before retrying (leadership moved).
    pub const fn needs_metadata_refresh(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::ReplicaNotAvailable
                | ErrorCode::PartitionOffline
        )
    }
}

impl From<i16> for ErrorCode {
    fn from(code: i16) -> Self {
        ErrorCode::from_code(code)
    }
}

impl From<ErrorCode> for i16 {
    fn from(code: ErrorCode) -> Self {
        code.code()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unknown(code) => write!(f, "unknown error code {code}"),
            known => write!(f, "{known:?} ({}): {}", known.code(), known.description()),
        }
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i16(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i16::deserialize(deserializer).map(ErrorCode::from_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn numbers_are_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate number {}", code.code());
            assert_eq!(ErrorCode::from_code(code.code()), *code);
            assert!(!code.description().is_empty());
        }
    }

    #[test]
    fn pinned_numbers() {
        // These numbers are published; changing one breaks every deployed client.
        assert_eq!(ErrorCode::None.code(), 0);
        assert_eq!(ErrorCode::NotLeader.code(), 6);
        assert_eq!(ErrorCode::RequestTimedOut.code(), 7);
        assert_eq!(ErrorCode::StorageFull.code(), 1006);
        assert_eq!(ErrorCode::FrameTooLarge.code(), 1008);
        assert_eq!(ErrorCode::AuthorizationFailed.code(), 29);
        assert_eq!(ErrorCode::AuthenticationFailed.code(), 58);
        assert!(!ErrorCode::AuthorizationFailed.is_retriable());
        assert!(!ErrorCode::AuthenticationFailed.is_retriable());
    }

    #[test]
    fn unknown_numbers_decode_without_panic() {
        let code = ErrorCode::from_code(4242);
        assert_eq!(code, ErrorCode::Unknown(4242));
        assert_eq!(code.code(), 4242);
        assert!(!code.is_retriable());
        assert_eq!(
            postcard::from_bytes::<ErrorCode>(&postcard::to_allocvec(&code).unwrap()).unwrap(),
            code
        );
    }

    #[test]
    fn unknown_outcome_is_retriable_timeout() {
        assert!(ErrorCode::RequestTimedOut.is_retriable());
        assert!(ErrorCode::NotLeader.needs_metadata_refresh());
        assert!(!ErrorCode::TopicAlreadyExists.is_retriable());
    }
}
