//! Validated names for topics and SPU groups.
//!
//! Rule (as Kafka's): 1 to [`NAME_LENGTH_MAX`] characters, each ASCII letter, digit, `.`, `_`
//! or `-`, and neither `.` nor `..` (they would be directory names with a meaning). A name is
//! therefore always safe as a file-system path component and as a metadata-store key.
//! Construction ([`TopicName::new`], `FromStr`, serde) validates; an invalid name cannot exist.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest allowed name, in bytes (every allowed character is one byte).
pub const NAME_LENGTH_MAX: usize = 249;

/// Why a name was rejected; the message states the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than [`NAME_LENGTH_MAX`].
    #[error("{kind} name must be 1 to {NAME_LENGTH_MAX} characters, got {len}")]
    Length {
        /// "topic" or "SPU group".
        kind: &'static str,
        /// The length found.
        len: usize,
    },
    /// A character outside `[a-zA-Z0-9._-]`.
    #[error("{kind} name may only contain [a-zA-Z0-9._-], found {found:?}")]
    Character {
        /// "topic" or "SPU group".
        kind: &'static str,
        /// The first offending character.
        found: char,
    },
    /// `.` or `..`.
    #[error("{kind} name may not be '.' or '..'")]
    Reserved {
        /// "topic" or "SPU group".
        kind: &'static str,
    },
}

fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > NAME_LENGTH_MAX {
        return Err(NameError::Length { kind, len: name.chars().count() });
    }
    if let Some(found) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::Character { kind, found });
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved { kind });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate($kind, &name)?;
                Ok(Self(name))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(name: &str) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A topic's name.
    ///
    /// ```
    /// use sluice_proto::object::TopicName;
    /// assert!(TopicName::new("orders.v2_eu-1").is_ok());
    /// assert!(TopicName::new("..").is_err());
    /// assert!(TopicName::new("a/b").is_err());
    /// ```
    TopicName,
    "topic"
);
name_type!(
    /// An SPU group's name.
    SpuGroupName,
    "SPU group"
);
name_type!(
    /// An access token's name (its principal is `User:<name>`).
    TokenName,
    "token"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(TopicName::new("a".repeat(249)).is_ok());
        assert_eq!(
            TopicName::new("a".repeat(250)),
            Err(NameError::Length { kind: "topic", len: 250 })
        );
        assert_eq!(TopicName::new(""), Err(NameError::Length { kind: "topic", len: 0 }));
        assert_eq!(TopicName::new("."), Err(NameError::Reserved { kind: "topic" }));
        assert_eq!(TopicName::new("é"), Err(NameError::Character { kind: "topic", found: 'é' }));
        assert!(SpuGroupName::new("main").is_ok());
        let error = TopicName::new("a b").unwrap_err().to_string();
        assert!(error.contains("[a-zA-Z0-9._-]"), "{error}");
    }

    #[test]
    fn serde_validates() {
        assert_eq!(serde_json::to_string(&TopicName::new("t").unwrap()).unwrap(), "\"t\"");
        assert!(serde_json::from_str::<TopicName>("\"..\"").is_err());
        assert!(serde_json::from_str::<TopicName>("\"ok\"").is_ok());
    }
}
