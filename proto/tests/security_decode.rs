//! The Authenticate, ACL and token decoders never panic on random bytes, and whatever decodes
//! re-encodes to a value that decodes the same (the quick, in-suite twin of the
//! `security_decoders` fuzz target in `proto/fuzz`).

use proptest::prelude::*;
use sluice_proto::api::security::*;
use sluice_proto::api::{ApiVersion, Decode, Encode};

fn round_trip<T: for<'a> Decode<'a> + Encode + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(value) = T::decode(ApiVersion(0), body) {
        let mut out = Vec::new();
        value.encode(ApiVersion(0), &mut out).expect("a decoded value re-encodes");
        assert_eq!(T::decode(ApiVersion(0), &out).expect("re-encoded decodes"), value);
    }
}

fn every_decoder(body: &[u8]) {
    round_trip::<AuthenticateRequest>(body);
    round_trip::<AuthenticateResponse>(body);
    round_trip::<CreateAclsRequest>(body);
    round_trip::<DeleteAclsRequest>(body);
    round_trip::<ListAclsRequest>(body);
    round_trip::<ListAclsResponse>(body);
    round_trip::<CreateTokenRequest>(body);
    round_trip::<CreateTokenResponse>(body);
    round_trip::<RevokeTokenRequest>(body);
    round_trip::<ListTokensResponse>(body);
    round_trip::<SecurityUpdate>(body);
    round_trip::<SecurityApplied>(body);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn security_decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        every_decoder(&body);
    }
}

#[test]
fn a_valid_acl_request_survives_truncation_at_every_byte() {
    use sluice_proto::object::{AclBinding, AclOperation, AclPermission, AclResource, Principal};
    let request = CreateAclsRequest {
        bindings: vec![AclBinding {
            principal: Principal::user("alice").unwrap(),
            resource: AclResource::Topic("orders".parse().unwrap()),
            operation: AclOperation::Write,
            permission: AclPermission::Deny,
        }],
    };
    let mut body = Vec::new();
    request.encode(ApiVersion(0), &mut body).unwrap();
    assert_eq!(CreateAclsRequest::decode(ApiVersion(0), &body).unwrap(), request);
    for cut in 0..body.len() {
        assert!(CreateAclsRequest::decode(ApiVersion(0), &body[..cut]).is_err(), "cut at {cut}");
    }
}
