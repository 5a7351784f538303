//! API versions: which keys and versions a server supports. Every server answers it, so a
//! client can pick versions before sending anything else.
//!
//! Request body, version 0: empty.
//!
//! Response body, version 0 (big-endian):
//!
//! ```text
//! i16 error code
//! u32 entry count, per entry: u16 api key, u16 min version, u16 max version
//! ```
//!
//! Keys are raw numbers so that a client can read a newer server's list containing keys it
//! does not know.

use crate::api::{
    check_binary_v0, check_binary_v0_encode, ApiKey, Decode, Encode, Request, VersionRange,
};
use crate::codec::{put_count, DecodeError, EncodeError, Reader};
use crate::error_code::ErrorCode;
use crate::ids::ApiVersion;

/// Asks which APIs are supported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiVersionsRequest;

impl Encode for ApiVersionsRequest {
    fn encode(&self, version: ApiVersion, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)
    }
}

impl Decode<'_> for ApiVersionsRequest {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        Reader::new(body).finish()?;
        Ok(ApiVersionsRequest)
    }
}

impl Request for ApiVersionsRequest {
    const API_KEY: ApiKey = ApiKey::ApiVersions;
    type Response<'a> = ApiVersionsResponse;
}

/// One supported API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiVersionEntry {
    /// Raw key number.
    pub api_key: u16,
    /// Supported versions.
    pub versions: VersionRange,
}

/// The supported APIs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    /// `None` on success.
    pub error_code: ErrorCode,
    /// Supported keys and versions.
    pub apis: Vec<ApiVersionEntry>,
}

impl ApiVersionsResponse {
    /// Every API this build supports, for the given keys (a server lists what it serves).
    ///
    /// ```
    /// use sluice_proto::api::{api_versions::ApiVersionsResponse, ApiKey};
    /// let response = ApiVersionsResponse::for_keys(&[ApiKey::Produce, ApiKey::Fetch]);
    /// assert_eq!(response.versions(ApiKey::Fetch).unwrap(), ApiKey::Fetch.versions());
    /// ```
    pub fn for_keys(keys: &[ApiKey]) -> Self {
        let apis = keys
            .iter()
            .map(|key| ApiVersionEntry { api_key: key.number(), versions: key.versions() })
            .collect();
        Self { error_code: ErrorCode::None, apis }
    }

    /// The versions the peer supports for `key`, if it lists it.
    pub fn versions(&self, key: ApiKey) -> Option<VersionRange> {
        self.apis.iter().find(|entry| entry.api_key == key.number()).map(|entry| entry.versions)
    }
}

const ENTRY_BYTES: usize = 2 + 2 + 2;

impl Encode for ApiVersionsResponse {
    fn encode(&self, version: ApiVersion, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_binary_v0_encode(version)?;
        out.extend_from_slice(&self.error_code.code().to_be_bytes());
        put_count(out, self.apis.len(), "api versions")?;
        for entry in &self.apis {
            out.extend_from_slice(&entry.api_key.to_be_bytes());
            out.extend_from_slice(&entry.versions.min.get().to_be_bytes());
            out.extend_from_slice(&entry.versions.max.get().to_be_bytes());
        }
        Ok(())
    }
}

impl Decode<'_> for ApiVersionsResponse {
    fn decode(version: ApiVersion, body: &[u8]) -> Result<Self, DecodeError> {
        check_binary_v0(version)?;
        let mut reader = Reader::new(body);
        let error_code = ErrorCode::from_code(reader.i16("error code")?);
        let count = reader.count(ENTRY_BYTES, "api versions")?;
        let mut apis = Vec::with_capacity(count);
        for _ in 0..count {
            let api_key = reader.u16("api key")?;
            let min = ApiVersion(reader.u16("min version")?);
            let max = ApiVersion(reader.u16("max version")?);
            apis.push(ApiVersionEntry { api_key, versions: VersionRange { min, max } });
        }
        reader.finish()?;
        Ok(Self { error_code, apis })
    }
}
