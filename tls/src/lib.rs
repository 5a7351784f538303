//! TLS for every Sluice link, on rustls (no OpenSSL).
//!
//! - [`ServerTls`] / [`ClientTls`]: rustls configurations built from PEM files (certificate
//!   chain, private key, CA bundle) and rebuilt when the files change, checked at most every
//!   [`RELOAD_CHECK_INTERVAL`] when a connection asks for the configuration. New handshakes get
//!   the new certificates; established connections keep their session (rotation drops nothing).
//!   A file that fails to load (half-written, wrong key) keeps the previous configuration and is
//!   logged; it is tried again on the next change.
//! - [`Identity`]: who the peer is, from its end-entity certificate (DNS SANs and subject CN).
//!   In-cluster names: SPU `N` of cluster `C` is [`spu_name`] `spu-N.C`, the SC [`sc_name`]
//!   `sc.C`.
//! - [`ServerStream`] / [`ClientStream`]: blocking streams, plaintext or TLS, for the thread-based
//!   SC and SDK. The glommio SPU wraps its own async streams with the same configurations.
//! - `dev_ca` (feature `dev-ca`): a throwaway CA issuing certificates, for
//!   `sluice cluster start --local --tls` and tests.

mod config;
#[cfg(feature = "dev-ca")]
pub mod dev_ca;
mod error;
mod identity;
mod load;
mod reload;
mod stream;

pub use config::{ClientAuth, ClientTlsFiles, ServerTlsFiles};
pub use error::TlsError;
pub use identity::{sc_name, spu_name, Identity};
pub use reload::{ClientTls, ServerTls, RELOAD_CHECK_INTERVAL};
pub use stream::{looks_like_tls, ClientStream, ServerStream};

pub use rustls;
pub use rustls_pki_types::ServerName;
