//! Authentication and authorization of client connections on one core.
//!
//! The SC pushes a [`SecurityUpdate`] (ACL bindings, token digests, superusers, whether ACLs
//! are enforced) over the SC link whenever it changes; core 0 hands it to every core, and each
//! core keeps it as an immutable [`CoreSecurity`] (`Rc`, replaced whole, never shared across
//! cores). No request ever asks the SC.
//!
//! A connection's principal: its TLS client certificate's identity when it has one
//! ([`ConnectionAccess::tls_principal`], filled by the TLS layer), else the access token it
//! sent with `Authenticate`, else `Anonymous`. A token is re-checked against the current
//! digests whenever the core's security version changes, so a revoked token's next request is
//! refused with `AuthenticationFailed` on connections already open.
//!
//! Hot path: produce checks `write` and fetch `read` per topic of a request. Decisions are
//! cached per connection ([`ConnectionAccess::check`]), keyed by operation and topic and valid
//! for one security version: a hit is a version compare and a short scan, without allocation;
//! only a miss (first request for a topic, or after an ACL change) runs the [`Authorizer`] and
//! clones the topic name. The cache holds at most [`DECISIONS_MAX`] entries.
//!
//! Until the first update arrives nothing is enforced; the SC sends the update before the first
//! replica assignment, and replicas are only served once assigned, so no data is served
//! under the default.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use sluice_proto::api::security::{
    AuthenticateRequest, AuthenticateResponse, SecurityUpdate, TOKEN_BYTES_MAX,
};
use sluice_proto::authz::{token_digest, Authorizer, Refusal};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::object::{
    AclOperation, AclResource, Principal, Sha256Digest, TokenName, TopicName,
};

/// Decisions cached per connection at most (a client touching more topics re-decides).
pub const DECISIONS_MAX: usize = 64;

/// One core's security state, built from one [`SecurityUpdate`].
#[derive(Debug, Default)]
pub struct CoreSecurity {
    /// The update's version (0 before the first).
    pub version: u64,
    /// Whether ACLs are enforced.
    pub enforced: bool,
    authorizer: Authorizer,
    /// Token digest -> token name.
    tokens: HashMap<Sha256Digest, TokenName>,
}

impl CoreSecurity {
    /// The state an update describes.
    pub fn new(update: &SecurityUpdate) -> CoreSecurity {
        CoreSecurity {
            version: update.version,
            enforced: update.enforced,
            authorizer: Authorizer::new(
                update.version,
                update.superusers.iter().cloned(),
                update.bindings.iter().cloned(),
            ),
            tokens: update.tokens.iter().map(|token| (token.sha256, token.name.clone())).collect(),
        }
    }
}

/// A core's current security state (replaced whole by each update).
#[derive(Debug, Default)]
pub struct SecurityCell(RefCell<Rc<CoreSecurity>>);

impl SecurityCell {
    /// The current state.
    pub fn get(&self) -> Rc<CoreSecurity> {
        Rc::clone(&self.0.borrow())
    }

    /// Replaces the state with the update's, unless the update is older.
    pub fn apply(&self, update: &SecurityUpdate) {
        let current = self.get();
        if current.version > update.version {
            return;
        }
        *self.0.borrow_mut() = Rc::new(CoreSecurity::new(update));
    }
}

/// The identity and cached decisions of one connection.
#[derive(Debug, Default)]
pub struct ConnectionAccess {
    /// `User:<identity>` of the TLS client certificate; `None` on plaintext. Wins over a token.
    pub tls_principal: Option<Principal>,
    /// The authenticated token's name and digest (never its text).
    token: Option<(TokenName, Sha256Digest)>,
    /// The security version the cached decisions hold for.
    version: u64,
    /// The principal as of `version` (`Err`: the token was revoked).
    principal: Option<Result<Principal, ()>>,
    decisions: Vec<(AclOperation, TopicName, ErrorCode)>,
}

impl ConnectionAccess {
    /// A connection whose certificate (if any) names `tls_principal`.
    pub fn new(tls_principal: Option<Principal>) -> ConnectionAccess {
        ConnectionAccess { tls_principal, ..ConnectionAccess::default() }
    }

    /// Handles `Authenticate`: a known token makes the connection act as its name.
    pub fn authenticate(
        &mut self,
        security: &CoreSecurity,
        request: &AuthenticateRequest,
    ) -> AuthenticateResponse {
        let found = (request.token.len() <= TOKEN_BYTES_MAX)
            .then(|| token_digest(&request.token))
            .and_then(|digest| security.tokens.get(&digest).map(|name| (name.clone(), digest)));
        let Some((name, digest)) = found else {
            tracing::debug!("authentication with an unknown or revoked token refused");
            return AuthenticateResponse {
                error_code: ErrorCode::AuthenticationFailed,
                message: Some("unknown or revoked access token".into()),
                principal: None,
            };
        };
        let principal =
            self.tls_principal.clone().unwrap_or_else(|| Principal::User(name.as_str().to_owned()));
        self.token = Some((name, digest));
        self.version = u64::MAX; // forget decisions made as the earlier principal
        AuthenticateResponse {
            error_code: ErrorCode::None,
            message: None,
            principal: Some(principal),
        }
    }

    fn refresh(&mut self, security: &CoreSecurity) {
        if self.version == security.version && self.principal.is_some() {
            return;
        }
        self.version = security.version;
        self.decisions.clear();
        self.principal = Some(match (&self.tls_principal, &self.token) {
            (Some(principal), _) => Ok(principal.clone()),
            (None, None) => Ok(Principal::Anonymous),
            (None, Some((name, digest))) => match security.tokens.get(digest) {
                Some(current) if current == name => Ok(Principal::User(name.as_str().to_owned())),
                _ => Err(()),
            },
        });
    }

    /// `None` when `operation` on `topic` is allowed, else the partition error code
    /// (`AuthorizationFailed`, or `AuthenticationFailed` for a revoked token); the refusal's
    /// text is logged at debug level.
    pub fn check(
        &mut self,
        security: &CoreSecurity,
        operation: AclOperation,
        topic: &TopicName,
    ) -> Option<ErrorCode> {
        if !security.enforced {
            return None;
        }
        self.refresh(security);
        if let Some((_, _, code)) =
            self.decisions.iter().find(|(cached_operation, cached_topic, _)| {
                *cached_operation == operation && cached_topic == topic
            })
        {
            return (*code != ErrorCode::None).then_some(*code);
        }
        let code = match &self.principal {
            Some(Ok(principal)) => {
                let resource = AclResource::Topic(topic.clone());
                match security.authorizer.authorize(principal, operation, &resource) {
                    Ok(()) => ErrorCode::None,
                    Err(refusal) => {
                        log_refusal(&refusal);
                        ErrorCode::AuthorizationFailed
                    }
                }
            }
            _ => ErrorCode::AuthenticationFailed,
        };
        if self.decisions.len() >= DECISIONS_MAX {
            self.decisions.clear();
        }
        self.decisions.push((operation, topic.clone(), code));
        (code != ErrorCode::None).then_some(code)
    }
}

fn log_refusal(refusal: &Refusal) {
    tracing::debug!(%refusal, "request refused");
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::authz::token_digest;
    use sluice_proto::ids::TimestampMs;
    use sluice_proto::object::{AclBinding, AclPermission, TokenDigest};

    fn update(version: u64, tokens: &[(&str, &str)], bindings: Vec<AclBinding>) -> SecurityUpdate {
        SecurityUpdate {
            version,
            enforced: true,
            superusers: Vec::new(),
            bindings,
            tokens: tokens
                .iter()
                .map(|(name, text)| TokenDigest {
                    name: TokenName::new(*name).unwrap(),
                    sha256: token_digest(text),
                    created_ms: TimestampMs(0),
                })
                .collect(),
        }
    }

    #[test]
    fn token_principal_decides_and_revocation_is_seen_without_reconnecting() {
        let orders = TopicName::new("orders").unwrap();
        let binding = AclBinding {
            principal: Principal::user("alice").unwrap(),
            resource: AclResource::Topic(orders.clone()),
            operation: AclOperation::Write,
            permission: AclPermission::Allow,
        };
        let first = CoreSecurity::new(&update(1, &[("alice", "slu_a")], vec![binding.clone()]));
        let mut access = ConnectionAccess::new(None);
        assert_eq!(
            access.check(&first, AclOperation::Write, &orders),
            Some(ErrorCode::AuthorizationFailed),
            "anonymous may not write"
        );
        let wrong = access.authenticate(&first, &AuthenticateRequest { token: "slu_b".into() });
        assert_eq!(wrong.error_code, ErrorCode::AuthenticationFailed);
        let right = access.authenticate(&first, &AuthenticateRequest { token: "slu_a".into() });
        assert_eq!(right.principal, Some(Principal::user("alice").unwrap()));
        assert_eq!(access.check(&first, AclOperation::Write, &orders), None);
        assert_eq!(
            access.check(&first, AclOperation::Read, &orders),
            Some(ErrorCode::AuthorizationFailed)
        );
        let revoked = CoreSecurity::new(&update(2, &[], vec![binding]));
        assert_eq!(
            access.check(&revoked, AclOperation::Write, &orders),
            Some(ErrorCode::AuthenticationFailed)
        );
        let mut off = update(3, &[], Vec::new());
        off.enforced = false;
        assert_eq!(access.check(&CoreSecurity::new(&off), AclOperation::Write, &orders), None);
    }
}
