//! A blocking Consul client for Sluice: KV, watches (blocking queries), transactions, sessions,
//! leader election, services and health checks.
//!
//! The Streaming Controller is tokio-free, so this crate is too: every call is a plain blocking
//! HTTP request (through `ureq`; HTTPS through rustls) bounded by a timeout, and background work
//! (session renewal, leadership monitoring, watch threads) runs on plain threads that report
//! over crossbeam channels.
//!
//! # Tour
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_kvstore_consul::{
//!     ConsulClient, ConsulConfig, Leadership, LeadershipConfig, PrefixWatch, TxnOp, WatchOptions,
//! };
//!
//! // Address from configuration or CONSUL_HTTP_ADDR; token from CONSUL_HTTP_TOKEN.
//! let client = ConsulClient::new(ConsulConfig::from_address_or_env(None)?)?;
//!
//! // KV: a missing key is None.
//! client.kv_put("sluice/topics/orders", br#"{"partitions":3}"#)?;
//! let entry = client.kv_get("sluice/topics/orders")?.expect("written above");
//!
//! // Atomic multi-key writes guarded by a check.
//! client.txn(&[
//!     TxnOp::CheckIndex { key: entry.key.clone(), index: entry.modify_index },
//!     TxnOp::Set { key: "sluice/partitions/orders-0".into(), value: b"{}".to_vec(), flags: 0 },
//! ])?;
//!
//! // Watch a prefix: added / modified / deleted keys since the last result.
//! let mut watch = PrefixWatch::new(client.clone(), "sluice/topics/", WatchOptions::default());
//! let initial = watch.poll()?;
//!
//! // Leader election with a fencing token; loss is observable on a channel.
//! let mut leadership = Leadership::new(
//!     client.clone(),
//!     LeadershipConfig::new("sluice/sc/leader", "sc-1", Duration::from_secs(10)),
//! );
//! if let Some(token) = leadership.campaign(Duration::from_secs(5))? {
//!     println!("leader, lock index {}", token.lock_index);
//!     let losses = leadership.losses();
//!     # let _ = losses;
//!     leadership.resign()?;
//! }
//! # let _ = initial;
//! # Ok::<(), sluice_kvstore_consul::ConsulError>(())
//! ```
//!
//! # Errors
//!
//! Every call returns [`ConsulError`]; [`ConsulError::is_retriable`] says whether trying again
//! may help, [`ConsulError::is_outcome_unknown`] whether a failed write may have been applied.
//!
//! # Testing
//!
//! With the `test-harness` feature, `testing::ConsulAgent` starts real `consul agent -dev`
//! processes on free ports for tests (this crate's and others'). This crate's integration tests
//! (`cargo test -p sluice-kvstore-consul`) need the Consul binary at `$SLUICE_CONSUL_BIN` or
//! `<workspace>/.consul/bin/consul` (installed by `deploy/dev/setup`) and fail, saying so, when
//! it is missing.

#![warn(missing_docs)]

mod client;
mod config;
mod discovery;
mod error;
mod health;
mod kv;
mod leadership;
mod session;
mod txn;
mod types;
mod watch;

#[cfg(feature = "test-harness")]
pub mod testing;

pub use client::{ConsulClient, BLOCKING_WAIT_MAX, RESPONSE_BYTES_MAX};
pub use config::{
    ConsulConfig, TlsConfig, DEFAULT_ADDRESS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
pub use discovery::{
    discover_sc, sc_addresses, sc_service_name, ScDiscoveryUrl, ScEndpoint, SC_ACTIVE_TAG,
    SC_PRIVATE_PORT_META,
};
pub use error::{ConsulError, TxnOpError};
pub use health::{
    CheckStatus, HealthCheck, HealthFilter, HealthWatch, HttpCheck, ServiceHealth,
    ServiceRegistration, TtlCheck,
};
pub use kv::{PutOptions, VALUE_BYTES_MAX};
pub use leadership::{FencingToken, Leadership, LeadershipConfig, LeadershipLoss, LossReason};
pub use session::{
    SessionBehavior, SessionConfig, SessionInfo, SessionLoss, SessionRenewer, LOCK_DELAY_MAX,
    RENEW_RETRY_INTERVAL, SESSION_TTL_MAX, SESSION_TTL_MIN,
};
pub use txn::{TxnOp, TXN_OPERATIONS_MAX};
pub use types::{ConsulIndex, Indexed, KvEntry, LockIndex, SessionId};
pub use watch::{
    spawn_watch, BlockingLoop, KeyChange, KeyWatch, PrefixChange, PrefixWatch, Watch, WatchOptions,
    WatchThread,
};

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn handles_cross_threads() {
        assert_send_sync::<crate::ConsulClient>();
        assert_send_sync::<crate::Leadership>();
        assert_send_sync::<crate::ConsulError>();
        assert_send::<crate::KeyWatch>();
        assert_send::<crate::PrefixWatch>();
        assert_send::<crate::HealthWatch>();
        assert_send::<crate::SessionRenewer>();
    }
}
