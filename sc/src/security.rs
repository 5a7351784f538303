//! The SC's view of security: whether ACLs are enforced, the superusers, and an
//! [`Authorizer`] over the cache's current bindings; token drawing and ACL store keys.
//!
//! Invariants:
//! - Bindings and token digests live only in the metadata store (kinds `acls` and `tokens`),
//!   so they survive restarts and, on Consul, are shared by every SC. The cache is their only
//!   reader here; an [`Authorizer`] is rebuilt when the cache's revision moved past the one it
//!   was built at (cheap: bindings are few), never per request otherwise.
//! - A token's text exists only in the answer to its creation: the store keeps its SHA-256;
//!   nothing here logs a token or formats one with `Debug`.
//! - The SPUs get the same bindings, digests and superusers as a [`SecurityUpdate`] whenever
//!   they change (see `spu_link::session`), and decide produce and fetch with the same code.

use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use rand::RngCore;
use sluice_proto::api::security::SecurityUpdate;
use sluice_proto::authz::{sha256, Authorizer};
use sluice_proto::ids::TimestampMs;
use sluice_proto::object::{AclBinding, Principal, TokenDigest, TokenName};

use crate::cache::Snapshot;
use crate::config::SecuritySettings;
use crate::store::{ObjectKey, StoreError, Version};

/// Prefix of every access token, so that a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "slu_";
/// Random bytes in a token: 256 bits.
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// Draws a new token: [`TOKEN_PREFIX`] and 256 random bits in base64url without padding.
pub fn draw_token() -> String {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The store key of a binding: the hex SHA-256 of its JSON form (equal bindings, one key).
pub fn acl_key(binding: &AclBinding) -> Result<ObjectKey, StoreError> {
    let json = serde_json::to_vec(binding).map_err(|error| StoreError::InvalidValue {
        kind: crate::store::ObjectKind::Acl,
        key: String::new(),
        reason: error.to_string(),
    })?;
    ObjectKey::new(sha256(&json).to_string())
}

/// The name (principal `User:bootstrap`) of the bootstrap token, a superuser.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// Enforcement settings and the current authorizer.
#[derive(Debug, Default)]
pub struct Security {
    settings: SecuritySettings,
    current: Mutex<Option<(Version, Arc<Authorizer>)>>,
}

impl Security {
    /// Security with these settings.
    pub fn new(mut settings: SecuritySettings) -> Security {
        if settings.bootstrap_token.is_some() {
            settings.superusers.push(Principal::User(BOOTSTRAP_TOKEN_NAME.into()));
        }
        Security { settings, current: Mutex::new(None) }
    }

    /// The bootstrap token's digest entry, when one is configured.
    pub fn bootstrap_token(&self) -> Option<TokenDigest> {
        let sha256 = self.settings.bootstrap_token?;
        let name = TokenName::new(BOOTSTRAP_TOKEN_NAME).ok()?;
        Some(TokenDigest { name, sha256, created_ms: TimestampMs(0) })
    }

    /// Whether ACLs are enforced.
    pub fn enforced(&self) -> bool {
        self.settings.authorization
    }

    /// The authorizer over `snapshot`'s bindings (rebuilt only when the snapshot is newer).
    pub fn authorizer(&self, snapshot: &Snapshot) -> Arc<Authorizer> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((revision, authorizer)) = current.as_ref() {
            if *revision == snapshot.revision {
                return Arc::clone(authorizer);
            }
        }
        let authorizer = Arc::new(Authorizer::new(
            snapshot.revision.get(),
            self.settings.superusers.iter().cloned(),
            snapshot.acls.values().map(|cached| cached.value.clone()),
        ));
        *current = Some((snapshot.revision, Arc::clone(&authorizer)));
        authorizer
    }

    /// What the SPUs need, from `snapshot` (its `version` is the snapshot's revision; compare
    /// contents, not versions, to decide whether to send).
    pub fn spu_update(&self, snapshot: &Snapshot) -> SecurityUpdate {
        SecurityUpdate {
            version: snapshot.revision.get(),
            enforced: self.settings.authorization,
            superusers: self.settings.superusers.clone(),
            bindings: snapshot.acls.values().map(|cached| cached.value.clone()).collect(),
            tokens: snapshot
                .tokens
                .values()
                .map(|cached| cached.value.clone())
                .chain(self.bootstrap_token())
                .collect(),
        }
    }

    /// Whether `principal` bypasses ACLs.
    pub fn is_superuser(&self, principal: &Principal) -> bool {
        self.settings.superusers.contains(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_base64url() {
        let (one, two) = (draw_token(), draw_token());
        assert_ne!(one, two);
        assert!(one.starts_with(TOKEN_PREFIX));
        assert_eq!(one.len(), TOKEN_PREFIX.len() + 43);
        let body = &one[TOKEN_PREFIX.len()..];
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
