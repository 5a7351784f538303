//! Who a public-API connection acts as, what each request needs, and the ACL and token
//! administration requests.
//!
//! ## Principal of a connection
//!
//! 1. The identity of its TLS client certificate (`User:<identity>`), when there is one
//!    ([`ConnectionAuth::tls_principal`], filled by the TLS layer; `None` on plaintext);
//! 2. else the name of the access token it authenticated with (`Authenticate`), as
//!    `User:<name>`;
//! 3. else `Anonymous`.
//!
//! A token is checked again on every request against the cache's digests: a revoked token
//! makes the connection's next request fail with `AuthenticationFailed` (no restart, no
//! reconnect needed). Established connections are not cut; they simply stop working.
//!
//! ACL and token changes are answered once every SPU connected to this SC enforces them
//! ([`crate::security::Security::wait_enforced`]), so produce and fetch at the SPUs follow the
//! change as soon as the command returns.
//!
//! ## Enforcement (only with `--authorization`)
//!
//! Every request but `Authenticate` is checked before its handler runs ([`check`]); a refusal
//! is an `AdminResponse` with `AuthorizationFailed` and the text `User:alice may not delete
//! topic orders` (clients read that body for any response type). Listings (`ListTopics`,
//! `ListPartitions`, `Metadata`, `MetadataWatch`) are not refused: they are filtered to the
//! topics the principal may describe ([`Viewer`]). The table of what each request needs is
//! [`requirement`].

use sluice_proto::api::admin::{
    AdminResponse, AlterTopicPartitionsRequest, CreateSpuGroupRequest, CreateTopicRequest,
    DecommissionSpuRequest, DeleteSpuGroupRequest, DeleteTopicRequest, DescribeTopicRequest,
    ListPartitionsRequest, RegisterSpuRequest, UnregisterSpuRequest,
};
use sluice_proto::api::security::{
    AuthenticateRequest, AuthenticateResponse, CreateAclsRequest, CreateTokenRequest,
    CreateTokenResponse, DeleteAclsRequest, ListAclsRequest, ListAclsResponse, ListTokensResponse,
    RevokeTokenRequest, TokenInfo, TOKEN_BYTES_MAX,
};
use sluice_proto::api::{ApiKey, Decode};
use sluice_proto::authz::{token_digest, Refusal};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::Frame;
use sluice_proto::object::{
    AclOperation, AclResource, Principal, Sha256Digest, TokenDigest, TokenName, TopicName,
};

use super::handlers::store_error;
use super::ServerContext;
use crate::cache::Snapshot;
use crate::controllers::now_ms;
use crate::security::{acl_key, draw_token, ENFORCE_TIMEOUT};
use crate::store::{ExpectedVersion, ObjectKey, ObjectKind, TypedStore, Version};

/// The identity state of one connection.
#[derive(Debug, Default)]
pub struct ConnectionAuth {
    /// `User:<identity>` of the TLS client certificate; `None` on plaintext. It wins over a
    /// token (the TLS layer sets it when the handshake completes).
    pub tls_principal: Option<Principal>,
    /// The token the connection authenticated with: its name and digest (never its text).
    token: Option<(TokenName, Sha256Digest)>,
}

impl ConnectionAuth {
    /// A connection whose certificate (if any) names `tls_principal`.
    pub fn new(tls_principal: Option<Principal>) -> ConnectionAuth {
        ConnectionAuth { tls_principal, token: None }
    }

    /// The principal for a request now, or why the connection's token no longer works.
    pub fn principal(
        &self,
        snapshot: &Snapshot,
        bootstrap: Option<&TokenDigest>,
    ) -> Result<Principal, String> {
        if let Some(principal) = &self.tls_principal {
            return Ok(principal.clone());
        }
        match &self.token {
            None => Ok(Principal::Anonymous),
            Some((name, digest)) => match snapshot.tokens.get(name) {
                Some(cached) if cached.value.sha256 == *digest => Ok(cached.value.principal()),
                _ if bootstrap.is_some_and(|token| token.sha256 == *digest) => {
                    Ok(Principal::User(name.as_str().to_owned()))
                }
                _ => Err(format!("the access token {name} was revoked; authenticate again")),
            },
        }
    }
}

/// Who sees which topics in listings: everyone everything when ACLs are not enforced.
#[derive(Clone, Debug, Default)]
pub struct Viewer(Option<Principal>);

impl Viewer {
    /// Whether the viewer may see `topic` (describe), under the current bindings.
    pub fn filter<'a>(
        &'a self,
        context: &ServerContext,
        snapshot: &Snapshot,
    ) -> impl Fn(&TopicName) -> bool + 'a {
        let authorizer = self.0.as_ref().map(|_| context.security.authorizer(snapshot));
        move |topic: &TopicName| match (&self.0, &authorizer) {
            (Some(principal), Some(authorizer)) => authorizer.allows(
                principal,
                AclOperation::Describe,
                &AclResource::Topic(topic.clone()),
            ),
            _ => true,
        }
    }
}

/// One way of being allowed a request: any alternative suffices; the refusal names the first.
type Requirement = Vec<(AclOperation, AclResource)>;

fn decoded<'a, T: Decode<'a>>(frame: &'a Frame) -> Option<T> {
    T::decode(frame.header.api_version, &frame.body).ok()
}

/// What a request needs. `None`: nothing up front (`Authenticate`; listings, which are
/// filtered; a body that does not decode, which its handler refuses anyway).
fn requirement(frame: &Frame) -> Option<Requirement> {
    use AclOperation::{Alter, Create, Delete, Describe};
    let cluster = |operation| vec![(operation, AclResource::Cluster)];
    let topic = |operation, name: TopicName| vec![(operation, AclResource::Topic(name))];
    let or_cluster_alter = |mut requirement: Requirement| {
        requirement.push((Alter, AclResource::Cluster));
        requirement
    };
    match frame.header.api_key {
        ApiKey::CreateTopic => decoded::<CreateTopicRequest>(frame).map(|r| topic(Create, r.name)),
        ApiKey::DeleteTopic => decoded::<DeleteTopicRequest>(frame).map(|r| topic(Delete, r.name)),
        ApiKey::DescribeTopic => {
            decoded::<DescribeTopicRequest>(frame).map(|r| topic(Describe, r.name))
        }
        ApiKey::AlterTopicPartitions => {
            decoded::<AlterTopicPartitionsRequest>(frame).map(|r| topic(Alter, r.name))
        }
        ApiKey::ListPartitions => decoded::<ListPartitionsRequest>(frame)
            .and_then(|r| r.topic)
            .map(|name| topic(Describe, name)),
        ApiKey::RegisterSpu => decoded::<RegisterSpuRequest>(frame)
            .map(|r| or_cluster_alter(vec![(Alter, AclResource::Spu(r.spec.id))])),
        ApiKey::UnregisterSpu => decoded::<UnregisterSpuRequest>(frame)
            .map(|r| or_cluster_alter(vec![(Alter, AclResource::Spu(r.id))])),
        ApiKey::DecommissionSpu => decoded::<DecommissionSpuRequest>(frame)
            .map(|r| or_cluster_alter(vec![(Alter, AclResource::Spu(r.id))])),
        ApiKey::CreateSpuGroup => decoded::<CreateSpuGroupRequest>(frame)
            .map(|r| or_cluster_alter(vec![(Create, AclResource::SpuGroup(r.name))])),
        ApiKey::DeleteSpuGroup => decoded::<DeleteSpuGroupRequest>(frame)
            .map(|r| or_cluster_alter(vec![(Delete, AclResource::SpuGroup(r.name))])),
        ApiKey::ListSpus | ApiKey::ListSpuGroups | ApiKey::PlanRebalance => Some(cluster(Describe)),
        ApiKey::RebalanceLeaders
        | ApiKey::ReassignPartitions
        | ApiKey::HoldLeadership
        | ApiKey::CreateAcls
        | ApiKey::DeleteAcls
        | ApiKey::ListAcls
        | ApiKey::CreateToken
        | ApiKey::RevokeToken
        | ApiKey::ListTokens => Some(cluster(Alter)),
        _ => None,
    }
}

/// Checks a request before it runs. `Ok(viewer)`: go on, filtering listings for `viewer`;
/// `Err(response)`: the refusal to send instead.
pub fn check(
    context: &ServerContext,
    auth: &ConnectionAuth,
    frame: &Frame,
) -> Result<Viewer, AdminResponse> {
    if !context.security.enforced() || frame.header.api_key == ApiKey::Authenticate {
        return Ok(Viewer::default());
    }
    let snapshot = context.cache.snapshot();
    let bootstrap = context.security.bootstrap_token();
    let principal = auth
        .principal(&snapshot, bootstrap.as_ref())
        .map_err(|message| AdminResponse::error(ErrorCode::AuthenticationFailed, message))?;
    if context.security.is_superuser(&principal) {
        return Ok(Viewer::default());
    }
    let Some(requirement) = requirement(frame) else { return Ok(Viewer(Some(principal))) };
    let authorizer = context.security.authorizer(&snapshot);
    if requirement
        .iter()
        .any(|(operation, resource)| authorizer.allows(&principal, *operation, resource))
    {
        return Ok(Viewer(Some(principal)));
    }
    let (operation, resource) =
        requirement.into_iter().next().unwrap_or((AclOperation::Alter, AclResource::Cluster));
    let refusal = Refusal { principal, operation, resource };
    tracing::debug!(api_key = %frame.header.api_key, %refusal, "request refused");
    Err(AdminResponse::error(ErrorCode::AuthorizationFailed, refusal.to_string()))
}

impl ServerContext {
    /// Authenticates the connection with a token (never logged, never echoed).
    pub fn authenticate(
        &self,
        auth: &mut ConnectionAuth,
        request: &AuthenticateRequest,
    ) -> AuthenticateResponse {
        let failed = |message: &str| AuthenticateResponse {
            error_code: ErrorCode::AuthenticationFailed,
            message: Some(message.to_owned()),
            principal: None,
        };
        if request.token.len() > TOKEN_BYTES_MAX {
            return failed("the access token is longer than any Sluice token");
        }
        let digest = token_digest(&request.token);
        let snapshot = self.cache.snapshot();
        let found = snapshot
            .tokens
            .values()
            .map(|cached| cached.value.clone())
            .chain(self.security.bootstrap_token())
            .find(|token| token.sha256 == digest);
        let Some(found) = found else {
            tracing::info!("authentication with an unknown or revoked token refused");
            return failed("unknown or revoked access token");
        };
        auth.token = Some((found.name.clone(), digest));
        let principal = auth.tls_principal.clone().unwrap_or_else(|| found.principal());
        tracing::debug!(%principal, "connection authenticated by token");
        AuthenticateResponse {
            error_code: ErrorCode::None,
            message: None,
            principal: Some(principal),
        }
    }

    /// Adds ACL bindings (existing ones stay as they are).
    pub fn create_acls(&self, request: &CreateAclsRequest) -> AdminResponse {
        let mut newest: Option<Version> = None;
        for binding in &request.bindings {
            let key = match acl_key(binding) {
                Ok(key) => key,
                Err(error) => return store_error(&error),
            };
            match self.store.put_typed(
                ObjectKind::Acl,
                &key,
                binding,
                ExpectedVersion::Absent,
                None,
            ) {
                Ok(version) => {
                    tracing::info!(%binding, "ACL added");
                    newest = newest.max(Some(version));
                }
                Err(error) if error.is_conflict() => {}
                Err(error) => return store_error(&error),
            }
        }
        match newest {
            Some(version) => self.enforced_everywhere(self.written(version)),
            None => AdminResponse::ok(),
        }
    }

    /// Waits, after a successful change of the ACLs or tokens, until every SPU with a session
    /// enforces the cache's current snapshot (at most [`ENFORCE_TIMEOUT`]); answers `response`.
    fn enforced_everywhere(&self, response: AdminResponse) -> AdminResponse {
        if !response.error_code.is_ok() {
            return response;
        }
        let version = self.cache.snapshot().revision;
        let started = std::time::Instant::now();
        let behind = self.security.wait_enforced(version, ENFORCE_TIMEOUT);
        if behind.is_empty() {
            tracing::debug!(elapsed = ?started.elapsed(), "every connected SPU enforces the change");
        } else {
            tracing::warn!(
                ?behind,
                timeout = ?ENFORCE_TIMEOUT,
                "SPUs did not confirm they enforce an ACL or token change in time; each will once \
                 the update reaches it"
            );
        }
        response
    }

    /// Removes ACL bindings (missing ones are ignored).
    pub fn delete_acls(&self, request: &DeleteAclsRequest) -> AdminResponse {
        for binding in &request.bindings {
            let key = match acl_key(binding) {
                Ok(key) => key,
                Err(error) => return store_error(&error),
            };
            let response = self.delete_object(ObjectKind::Acl, &key, AdminResponse::ok);
            if !response.error_code.is_ok() {
                return response;
            }
            tracing::info!(%binding, "ACL removed");
        }
        self.enforced_everywhere(AdminResponse::ok())
    }

    /// Lists ACL bindings, sorted.
    pub fn list_acls(&self, request: &ListAclsRequest) -> ListAclsResponse {
        let snapshot = self.cache.snapshot();
        let mut bindings: Vec<_> = snapshot
            .acls
            .values()
            .map(|cached| cached.value.clone())
            .filter(|binding| request.principal.as_ref().is_none_or(|p| &binding.principal == p))
            .collect();
        bindings.sort();
        ListAclsResponse { bindings, ..ListAclsResponse::default() }
    }

    /// Creates a token: draws it, stores its digest, answers its text once.
    pub fn create_token(&self, request: &CreateTokenRequest) -> CreateTokenResponse {
        let failed = |error_code, message: String| CreateTokenResponse {
            error_code,
            message: Some(message),
            token: None,
        };
        let key = match ObjectKey::new(request.name.as_str()) {
            Ok(key) => key,
            Err(error) => return failed(ErrorCode::InvalidRequest, error.to_string()),
        };
        let token = draw_token();
        let digest = TokenDigest {
            name: request.name.clone(),
            sha256: token_digest(&token),
            created_ms: now_ms(),
        };
        match self.store.put_typed(ObjectKind::Token, &key, &digest, ExpectedVersion::Absent, None)
        {
            Ok(version) => {
                tracing::info!(name = %request.name, "access token created");
                self.enforced_everywhere(self.written(version));
                CreateTokenResponse { token: Some(token), ..CreateTokenResponse::default() }
            }
            Err(error) if error.is_conflict() => failed(
                ErrorCode::InvalidRequest,
                format!("a token named {} exists; revoke it first", request.name),
            ),
            Err(error) => {
                let response = store_error(&error);
                failed(response.error_code, response.message.unwrap_or_default())
            }
        }
    }

    /// Revokes a token: new requests authenticated by it are refused from now on.
    pub fn revoke_token(&self, request: &RevokeTokenRequest) -> AdminResponse {
        let not_found = || {
            AdminResponse::error(
                ErrorCode::InvalidRequest,
                format!("no access token named {}", request.name),
            )
        };
        let Ok(key) = ObjectKey::new(request.name.as_str()) else { return not_found() };
        let response = self.delete_object(ObjectKind::Token, &key, not_found);
        if response.error_code.is_ok() {
            tracing::info!(name = %request.name, "access token revoked");
        }
        self.enforced_everywhere(response)
    }

    /// Lists tokens (names and creation times).
    pub fn list_tokens(&self) -> ListTokensResponse {
        let snapshot = self.cache.snapshot();
        let tokens = snapshot
            .tokens
            .values()
            .map(|cached| TokenInfo {
                name: cached.value.name.clone(),
                created_ms: cached.value.created_ms,
            })
            .collect();
        ListTokensResponse { tokens, ..ListTokensResponse::default() }
    }
}
