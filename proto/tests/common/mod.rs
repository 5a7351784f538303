//! Shared helpers for the message tests: one macro gives every message its three tests
//! (round trip, truncation at every byte, golden bytes) plus trailing-byte and version checks.

#![allow(dead_code)]

use sluice_proto::api::{ApiVersion, Encode};

/// Version 0, the only version today.
pub const V0: ApiVersion = ApiVersion(0);

/// Encodes at version 0.
pub fn encode_v0<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(V0, &mut out).expect("encode");
    out
}

/// Lower-case hex, no separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Compares with a golden hex string (whitespace ignored).
pub fn assert_golden(name: &str, body: &[u8], golden: &str) {
    let expected: String = golden.chars().filter(|c| !c.is_whitespace()).collect();
    assert_eq!(hex(body), expected, "golden bytes of {name} changed: the wire format is published");
}

/// The decoded value as is.
pub fn identity<T>(value: T, _body: &[u8]) -> T {
    value
}

/// The three tests for one message. `$decoded` is the type decoding yields; `$view` turns the
/// decoded value and the body into something comparable with the encoded value.
#[macro_export]
macro_rules! message_tests {
    ($name:ident: $decoded:ty = $value:expr, view $view:expr, golden $golden:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use sluice_proto::api::{ApiVersion, Decode, Encode};
            use $crate::common::{assert_golden, encode_v0, V0};

            #[test]
            fn round_trip_and_golden() {
                let value = $value;
                let body = encode_v0(&value);
                assert_golden(stringify!($name), &body, $golden);
                let decoded = <$decoded as Decode>::decode(V0, &body).expect("decode");
                assert_eq!($view(decoded, &body), value);
            }

            #[test]
            fn truncation_at_every_byte_is_an_error() {
                let body = encode_v0(&$value);
                for len in 0..body.len() {
                    assert!(
                        <$decoded as Decode>::decode(V0, &body[..len]).is_err(),
                        "a {len}-byte prefix of {} bytes decoded",
                        body.len()
                    );
                }
            }

            #[test]
            fn trailing_bytes_and_unknown_versions_are_errors() {
                let mut body = encode_v0(&$value);
                assert!(<$decoded as Decode>::decode(ApiVersion(1), &body).is_err());
                assert!($value.encode(ApiVersion(1), &mut Vec::new()).is_err());
                body.push(0);
                assert!(<$decoded as Decode>::decode(V0, &body).is_err());
            }
        }
    };
    ($name:ident: $ty:ty = $value:expr, golden $golden:expr) => {
        $crate::message_tests!($name: $ty = $value, view $crate::common::identity, golden $golden);
    };
}

/// Proptest settings for this crate's randomized tests: a fixed seed (override with
/// `SLUICE_TEST_SEED`), a case count (override with `SLUICE_TEST_ITERATIONS`), no regression
/// files. The seed is printed so a failure's output says how to replay it.
pub fn proptest_config(cases_default: u32) -> proptest::test_runner::Config {
    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_f4a3_u64);
    let cases = std::env::var("SLUICE_TEST_ITERATIONS")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(cases_default);
    eprintln!("proptest seed {seed} (SLUICE_TEST_SEED), {cases} cases (SLUICE_TEST_ITERATIONS)");
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
