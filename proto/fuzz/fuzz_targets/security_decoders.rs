//! Decodes arbitrary bytes as every identity and access-control message (Authenticate, ACL and
//! token administration, the SC's security update); whatever decodes must re-encode and decode
//! back to the same value. Any panic is a bug.

#![no_main]

use sluice_proto::api::security::*;
use sluice_proto::api::{ApiVersion, Decode, Encode};

macro_rules! check {
    ($ty:ty, $body:expr) => {
        if let Ok(value) = <$ty as Decode>::decode(ApiVersion(0), $body) {
            let mut out = Vec::new();
            value.encode(ApiVersion(0), &mut out).expect("a decoded value re-encodes");
            let again = <$ty as Decode>::decode(ApiVersion(0), &out).expect("decodes again");
            assert_eq!(again, value);
        }
    };
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check!(AuthenticateRequest, data);
    check!(AuthenticateResponse, data);
    check!(CreateAclsRequest, data);
    check!(DeleteAclsRequest, data);
    check!(ListAclsRequest, data);
    check!(ListAclsResponse, data);
    check!(CreateTokenRequest, data);
    check!(CreateTokenResponse, data);
    check!(RevokeTokenRequest, data);
    check!(ListTokensRequest, data);
    check!(ListTokensResponse, data);
    check!(SecurityUpdate, data);
    check!(SecurityApplied, data);
});
