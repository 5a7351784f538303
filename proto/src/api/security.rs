//! Identities and access control (postcard): authentication by token, ACL and token
//! administration (client <-> SC), and the security snapshot the SC pushes to SPUs.
//!
//! - [`AuthenticateRequest`] is served by the SC and by every SPU core: a connection that sends
//!   a valid token acts as `User:<token name>` from then on; a bad or revoked token gets
//!   `AuthenticationFailed` and the connection keeps its earlier principal. Tokens are checked
//!   again on every request, so a revoked token stops working on open connections too.
//! - ACL and token administration answer with [`AdminResponse`] or their own response; a
//!   created token's text appears in [`CreateTokenResponse`] once and nowhere else.
//! - [`SecurityUpdate`] (SC -> SPU, one-way) is always a full snapshot: bindings and token
//!   digests are few (thousands at most) and a full snapshot needs no epoch bookkeeping.

use serde::{Deserialize, Serialize};

use crate::api::admin::AdminResponse;
use crate::api::{postcard_v0, requests, NoResponse};
use crate::error_code::ErrorCode;
use crate::ids::TimestampMs;
use crate::object::{AclBinding, Principal, TokenDigest, TokenName};

/// Longest token text accepted (ours are 47 characters): bounds hashing on hostile input.
pub const TOKEN_BYTES_MAX: usize = 256;

/// Authenticates the connection with an access token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    /// The token text (`slu_...`).
    pub token: String,
}

impl std::fmt::Debug for AuthenticateRequest {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticateRequest").field("token", &"<redacted>").finish()
    }
}

/// The outcome of an authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateResponse {
    /// `None`, or `AuthenticationFailed`.
    pub error_code: ErrorCode,
    /// Why not, for the user.
    pub message: Option<String>,
    /// The principal the connection acts as from now on (on success).
    pub principal: Option<Principal>,
}

/// Adds ACL bindings (an existing one is left as it is).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAclsRequest {
    /// The bindings.
    pub bindings: Vec<AclBinding>,
}

/// Removes ACL bindings (one that does not exist is ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAclsRequest {
    /// The bindings.
    pub bindings: Vec<AclBinding>,
}

/// Lists ACL bindings (of one principal, or all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAclsRequest {
    /// Only this principal's, when present.
    pub principal: Option<Principal>,
}

/// ACL bindings found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAclsResponse {
    /// `None`, or why listing failed.
    pub error_code: ErrorCode,
    /// Details on failure.
    pub message: Option<String>,
    /// The bindings, sorted.
    pub bindings: Vec<AclBinding>,
}

/// Creates an access token; the SC draws it and answers it once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    /// Its name (its principal is `User:<name>`).
    pub name: TokenName,
}

/// A created token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    /// `None`, or why not (`InvalidRequest` when the name is taken).
    pub error_code: ErrorCode,
    /// Details on failure.
    pub message: Option<String>,
    /// The token text: shown once, stored nowhere.
    pub token: Option<String>,
}

impl std::fmt::Debug for CreateTokenResponse {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateTokenResponse")
            .field("error_code", &self.error_code)
            .field("message", &self.message)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Revokes (deletes) an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeTokenRequest {
    /// Its name.
    pub name: TokenName,
}

/// Lists access tokens (names and creation times, never secrets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTokensRequest;

/// One token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: TokenName,
    /// When it was created.
    pub created_ms: TimestampMs,
}

/// Tokens found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTokensResponse {
    /// `None`, or why listing failed.
    pub error_code: ErrorCode,
    /// Details on failure.
    pub message: Option<String>,
    /// The tokens in name order.
    pub tokens: Vec<TokenInfo>,
}

/// SC -> SPU: everything an SPU needs to authenticate and authorize produce and fetch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityUpdate {
    /// Grows with every change of the bindings or tokens (the store revision of the newest).
    pub version: u64,
    /// Whether ACLs are enforced (`--authorization` on the SC); when not, everything is allowed.
    pub enforced: bool,
    /// Principals that bypass ACLs.
    pub superusers: Vec<Principal>,
    /// Every ACL binding.
    pub bindings: Vec<AclBinding>,
    /// Every token digest.
    pub tokens: Vec<TokenDigest>,
}

/// SPU -> SC: every core of the SPU enforces the [`SecurityUpdate`] of `version` (or a newer
/// one). The SC answers an ACL or token change once every online SPU has said so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityApplied {
    /// The newest [`SecurityUpdate::version`] every core applied.
    pub version: u64,
}

postcard_v0!(
    AuthenticateRequest,
    AuthenticateResponse,
    CreateAclsRequest,
    DeleteAclsRequest,
    ListAclsRequest,
    ListAclsResponse,
    CreateTokenRequest,
    CreateTokenResponse,
    RevokeTokenRequest,
    ListTokensRequest,
    ListTokensResponse,
    SecurityUpdate,
    SecurityApplied,
);

requests! {
    AuthenticateRequest => AuthenticateResponse, Authenticate;
    CreateAclsRequest => AdminResponse, CreateAcls;
    DeleteAclsRequest => AdminResponse, DeleteAcls;
    ListAclsRequest => ListAclsResponse, ListAcls;
    CreateTokenRequest => CreateTokenResponse, CreateToken;
    RevokeTokenRequest => AdminResponse, RevokeToken;
    ListTokensRequest => ListTokensResponse, ListTokens;
    SecurityUpdate => NoResponse, SecurityUpdate;
    SecurityApplied => NoResponse, SecurityApplied;
}
