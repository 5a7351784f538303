//! Access control objects: principals, ACL bindings and access-token digests.
//!
//! A [`Principal`] is who a connection acts as: `User:<name>` (from a TLS client certificate's
//! identity or an access token's name) or `Anonymous`. An [`AclBinding`] allows (or denies) one
//! principal one [`AclOperation`] on one [`AclResource`]. A [`TokenDigest`] is what the cluster
//! keeps of an access token: its name, the SHA-256 of the token text and when it was created;
//! the token itself is shown once, when created, and stored nowhere.
//!
//! Everything validates on construction and deserialization (a principal is `Anonymous` or
//! `User:` followed by 1 to [`PRINCIPAL_NAME_BYTES_MAX`] printable characters), so bindings
//! decoded from the network or the store are well formed. The decision over bindings is
//! [`crate::authz::Authorizer`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{SpuId, TimestampMs};
use crate::object::{SpuGroupName, TokenName, TopicName};

/// Longest user name inside a principal, in bytes (a DNS name is at most 253).
pub const PRINCIPAL_NAME_BYTES_MAX: usize = 255;
/// Longest topic prefix of a binding, in bytes (a topic name's limit).
pub const TOPIC_PREFIX_BYTES_MAX: usize = crate::object::NAME_LENGTH_MAX;

/// Why a principal was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// Neither `Anonymous` nor `User:<name>`.
    #[error("a principal is `Anonymous` or `User:<name>`, got {0:?}")]
    Form(String),
    /// The name is empty, too long, or holds a control character.
    #[error(
        "a principal's name is 1 to {PRINCIPAL_NAME_BYTES_MAX} bytes without control characters"
    )]
    Name,
}

/// Who a connection acts as.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Principal {
    /// No certificate and no token.
    Anonymous,
    /// A named user (certificate identity or token name).
    User(String),
}

impl Principal {
    /// `User:<name>`, validated.
    pub fn user(name: impl Into<String>) -> Result<Principal, PrincipalError> {
        let name = name.into();
        if name.is_empty()
            || name.len() > PRINCIPAL_NAME_BYTES_MAX
            || name.chars().any(char::is_control)
        {
            return Err(PrincipalError::Name);
        }
        Ok(Principal::User(name))
    }

    /// Parses `Anonymous` or `User:<name>`.
    pub fn parse(text: &str) -> Result<Principal, PrincipalError> {
        match text {
            "Anonymous" => Ok(Principal::Anonymous),
            _ => match text.strip_prefix("User:") {
                Some(name) => Principal::user(name),
                None => Err(PrincipalError::Form(text.chars().take(64).collect())),
            },
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("Anonymous"),
            Principal::User(name) => write!(f, "User:{name}"),
        }
    }
}

impl std::str::FromStr for Principal {
    type Err = PrincipalError;
    fn from_str(text: &str) -> Result<Self, PrincipalError> {
        Principal::parse(text)
    }
}

impl TryFrom<String> for Principal {
    type Error = PrincipalError;
    fn try_from(text: String) -> Result<Self, PrincipalError> {
        Principal::parse(&text)
    }
}

impl From<Principal> for String {
    fn from(principal: Principal) -> String {
        principal.to_string()
    }
}

/// What an operation applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AclResource {
    /// The cluster itself (SPU and SPU group registration, reassignment, ACLs and tokens).
    Cluster,
    /// One topic.
    Topic(TopicName),
    /// Every topic whose name starts with the prefix (bindings only; requests name a topic).
    TopicPrefix(TopicPrefix),
    /// One SPU.
    Spu(SpuId),
    /// One SPU group.
    SpuGroup(SpuGroupName),
}

impl fmt::Display for AclResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclResource::Cluster => f.write_str("cluster"),
            AclResource::Topic(name) => write!(f, "topic {name}"),
            AclResource::TopicPrefix(prefix) => write!(f, "topics {}*", prefix.as_str()),
            AclResource::Spu(id) => write!(f, "SPU {id}"),
            AclResource::SpuGroup(name) => write!(f, "SPU group {name}"),
        }
    }
}

/// A topic-name prefix: 1 to [`TOPIC_PREFIX_BYTES_MAX`] characters of a topic name's alphabet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPrefix(String);

impl TopicPrefix {
    /// Validates a prefix (`.` alone is allowed: it is a prefix, not a name).
    pub fn new(prefix: impl Into<String>) -> Result<TopicPrefix, crate::object::NameError> {
        let prefix = prefix.into();
        let kind = "topic prefix";
        if prefix.is_empty() || prefix.len() > TOPIC_PREFIX_BYTES_MAX {
            return Err(crate::object::NameError::Length { kind, len: prefix.chars().count() });
        }
        if let Some(found) =
            prefix.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(crate::object::NameError::Character { kind, found });
        }
        Ok(TopicPrefix(prefix))
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicPrefix {
    type Error = crate::object::NameError;
    fn try_from(prefix: String) -> Result<Self, Self::Error> {
        TopicPrefix::new(prefix)
    }
}

impl From<TopicPrefix> for String {
    fn from(prefix: TopicPrefix) -> String {
        prefix.0
    }
}

/// An operation on a resource. Read, write, create, delete and alter each imply describe on
/// the same resource (as in Kafka).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AclOperation {
    /// Fetch records (topic).
    Read,
    /// Produce records (topic).
    Write,
    /// Create (topic).
    Create,
    /// Delete (topic).
    Delete,
    /// Change (topic partitions; cluster: SPUs, groups, reassignment, ACLs, tokens).
    Alter,
    /// See that it exists and how it is configured.
    Describe,
}

impl AclOperation {
    /// Every operation.
    pub const ALL: [AclOperation; 6] = [
        AclOperation::Read,
        AclOperation::Write,
        AclOperation::Create,
        AclOperation::Delete,
        AclOperation::Alter,
        AclOperation::Describe,
    ];

    /// The lower-case name (`read`, `write`, ...), as the CLI takes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            AclOperation::Read => "read",
            AclOperation::Write => "write",
            AclOperation::Create => "create",
            AclOperation::Delete => "delete",
            AclOperation::Alter => "alter",
            AclOperation::Describe => "describe",
        }
    }

    /// Whether allowing `self` also allows describe on the same resource.
    pub const fn implies_describe(self) -> bool {
        !matches!(self, AclOperation::Describe)
    }
}

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AclOperation {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        AclOperation::ALL
            .into_iter()
            .find(|operation| operation.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!("unknown operation {text:?}: read, write, create, delete, alter, describe")
            })
    }
}

/// Whether a binding allows or denies. A matching deny wins over any allow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum AclPermission {
    /// Grants the operation.
    #[default]
    Allow,
    /// Refuses the operation, whatever else allows it.
    Deny,
}

/// One access control entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// Who.
    pub principal: Principal,
    /// On what.
    pub resource: AclResource,
    /// Doing what.
    pub operation: AclOperation,
    /// Allowed or denied.
    pub permission: AclPermission,
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.permission {
            AclPermission::Allow => "may",
            AclPermission::Deny => "may not",
        };
        write!(f, "{} {verb} {} {}", self.principal, self.operation, self.resource)
    }
}

/// A SHA-256 digest, written as 64 lower-case hex digits in JSON and postcard.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(pub [u8; 32]);

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(format!("a SHA-256 digest is 64 hex digits, got {}", bytes.len()));
        }
        let digit = |byte: u8| match byte {
            b'0'..=b'9' => Ok(byte - b'0'),
            b'a'..=b'f' => Ok(byte - b'a' + 10),
            _ => Err("a SHA-256 digest is lower-case hex".to_owned()),
        };
        let mut out = [0u8; 32];
        for (index, pair) in bytes.chunks_exact(2).enumerate() {
            out[index] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(Sha256Digest(out))
    }
}

impl From<Sha256Digest> for String {
    fn from(digest: Sha256Digest) -> String {
        digest.to_string()
    }
}

/// What the cluster keeps of an access token (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDigest {
    /// The token's name; its principal is `User:<name>`.
    pub name: TokenName,
    /// SHA-256 of the token text.
    pub sha256: Sha256Digest,
    /// When it was created.
    pub created_ms: TimestampMs,
}

impl TokenDigest {
    /// The principal the token authenticates as.
    pub fn principal(&self) -> Principal {
        Principal::User(self.name.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print() {
        assert_eq!(Principal::parse("Anonymous"), Ok(Principal::Anonymous));
        let alice = Principal::parse("User:alice").unwrap();
        assert_eq!(alice.to_string(), "User:alice");
        assert!(Principal::parse("alice").is_err());
        assert!(Principal::parse("User:").is_err());
        assert!(Principal::parse("User:a\nb").is_err());
        assert!(Principal::parse(&format!("User:{}", "a".repeat(256))).is_err());
        let json = serde_json::to_string(&alice).unwrap();
        assert_eq!(json, "\"User:alice\"");
        assert!(serde_json::from_str::<Principal>("\"Bob\"").is_err());
    }

    #[test]
    fn digests_round_trip_as_hex() {
        let digest = Sha256Digest([0xab; 32]);
        let text = String::from(digest);
        assert_eq!(text, "ab".repeat(32));
        assert_eq!(Sha256Digest::try_from(text), Ok(digest));
        assert!(Sha256Digest::try_from("AB".repeat(32)).is_err());
        assert!(Sha256Digest::try_from("ab".to_owned()).is_err());
    }

    #[test]
    fn bindings_read_as_sentences() {
        let binding = AclBinding {
            principal: Principal::user("alice").unwrap(),
            resource: AclResource::Topic(TopicName::new("orders").unwrap()),
            operation: AclOperation::Write,
            permission: AclPermission::Allow,
        };
        assert_eq!(binding.to_string(), "User:alice may write topic orders");
        assert_eq!("WRITE".parse::<AclOperation>(), Ok(AclOperation::Write));
        assert!(TopicPrefix::new("a/b").is_err());
        assert!(TopicPrefix::new(".").is_ok());
    }
}
