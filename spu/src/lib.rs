//! Sluice Streaming Processing Unit: thread-per-core storage and serving of partition replicas.
//!
//! The library holds the pieces the `sluice-spu` binary is assembled from; [`storage`] is the
//! per-replica log engine.

pub mod config;
pub mod consul;
pub mod metrics;
pub mod replication;
pub mod sc_link;
pub mod server;
pub mod storage;
pub mod tls;
