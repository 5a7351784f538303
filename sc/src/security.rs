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
//! - An SPU says which update every one of its cores enforces (`SecurityApplied`); an ACL or
//!   token change is answered once every SPU connected to this SC enforces it (or after
//!   [`ENFORCE_TIMEOUT`], with a warning), so a revoked token or a removed ACL no longer works
//!   anywhere when `sluice token revoke` / `sluice acl remove` returns.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sluice_proto::api::security::SecurityUpdate;
use sluice_proto::authz::{sha256, Authorizer};
use sluice_proto::ids::{SpuId, TimestampMs};
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

/// Longest wait of an ACL or token change for the SPUs to enforce it before it is answered
/// anyway (an SPU that does not confirm enforces the change when the update reaches it).
pub const ENFORCE_TIMEOUT: Duration = Duration::from_secs(3);

/// Enforcement settings and the current authorizer.
#[derive(Debug, Default)]
pub struct Security {
    settings: SecuritySettings,
    current: Mutex<Option<(Version, Arc<Authorizer>)>>,
    /// Per SPU with a session to this SC: (sessions open, newest update version it enforces).
    enforced: Mutex<HashMap<SpuId, (u32, u64)>>,
    enforced_changed: Condvar,
}

impl Security {
    /// Security with these settings.
    pub fn new(mut settings: SecuritySettings) -> Security {
        if settings.bootstrap_token.is_some() {
            settings.superusers.push(Principal::User(BOOTSTRAP_TOKEN_NAME.into()));
        }
        Security { settings, ..Security::default() }
    }

    /// An SPU link session opened.
    pub fn spu_connected(&self, spu: SpuId) {
        let mut enforced = self.enforced.lock().unwrap_or_else(PoisonError::into_inner);
        enforced.entry(spu).or_insert((0, 0)).0 += 1;
    }

    /// An SPU link session ended: the SPU is no longer waited for once it has none.
    pub fn spu_disconnected(&self, spu: SpuId) {
        let mut enforced = self.enforced.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = enforced.get_mut(&spu) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                enforced.remove(&spu);
            }
        }
        drop(enforced);
        self.enforced_changed.notify_all();
    }

    /// `spu` enforces the update of `version` (or one with the same contents) on every core.
    pub fn spu_enforces(&self, spu: SpuId, version: u64) {
        let mut enforced = self.enforced.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = enforced.get_mut(&spu) {
            entry.1 = entry.1.max(version);
        }
        drop(enforced);
        self.enforced_changed.notify_all();
    }

    /// The newest update version `spu` said it enforces (0: none, or no session).
    pub fn spu_enforced_version(&self, spu: SpuId) -> u64 {
        let enforced = self.enforced.lock().unwrap_or_else(PoisonError::into_inner);
        enforced.get(&spu).map_or(0, |entry| entry.1)
    }

    /// Waits until every SPU with a session enforces `version` or newer, at most `timeout`;
    /// returns the SPUs that did not (sorted).
    pub fn wait_enforced(&self, version: Version, timeout: Duration) -> Vec<SpuId> {
        let deadline = Instant::now() + timeout;
        let mut enforced = self.enforced.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let mut behind: Vec<SpuId> = enforced
                .iter()
                .filter(|(_, (_, applied))| *applied < version.get())
                .map(|(spu, _)| *spu)
                .collect();
            let now = Instant::now();
            if behind.is_empty() || now >= deadline {
                behind.sort();
                return behind;
            }
            enforced = self
                .enforced_changed
                .wait_timeout(enforced, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
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
    fn changes_wait_for_every_connected_spu_to_enforce_them() {
        let security = Arc::new(Security::default());
        let version = Version(7);
        assert!(security.wait_enforced(version, Duration::ZERO).is_empty(), "no SPU: no wait");
        security.spu_connected(SpuId(1));
        security.spu_connected(SpuId(2));
        security.spu_enforces(SpuId(1), 9);
        let short = Duration::from_millis(20);
        assert_eq!(security.wait_enforced(version, short), [SpuId(2)], "SPU 2 is behind");
        // A report from another thread ends the wait.
        let reporter = {
            let security = Arc::clone(&security);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                security.spu_enforces(SpuId(2), 7);
            })
        };
        let started = Instant::now();
        assert!(security.wait_enforced(version, Duration::from_secs(30)).is_empty());
        assert!(started.elapsed() < Duration::from_secs(30));
        reporter.join().unwrap();
        // An SPU whose sessions all ended is not waited for; one still connected is.
        security.spu_connected(SpuId(3));
        security.spu_connected(SpuId(3));
        security.spu_disconnected(SpuId(3));
        assert_eq!(security.wait_enforced(version, short), [SpuId(3)]);
        security.spu_disconnected(SpuId(3));
        assert!(security.wait_enforced(version, short).is_empty());
        // Reports of SPUs without a session are ignored; versions never go back.
        security.spu_enforces(SpuId(4), 100);
        assert_eq!(security.spu_enforced_version(SpuId(4)), 0);
        security.spu_enforces(SpuId(1), 3);
        assert_eq!(security.spu_enforced_version(SpuId(1)), 9);
    }

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
