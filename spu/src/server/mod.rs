//! The SPU's data path: thread-per-core executors, the public and private listeners, request
//! handlers and the cross-core mesh.
//!
//! Map: [`process`] starts the executors and binds the sockets; [`core`] is one core's state
//! (replicas, routing, mesh end); [`connection`] serves one client connection; [`handlers`] and
//! [`stream`] implement the public API; [`ops`] runs partition operations on the owning core,
//! forwarding across cores when needed ([`shard`] messages); [`abuse_log`] logs hostile
//! clients' closes, rate-limited; [`replica`] wraps a storage log for
//! serving; [`zero_copy`] sends fetch responses without copying record bytes.

pub mod abuse_log;
pub mod access;
pub mod connection;
pub mod core;
pub mod deleted;
pub mod handlers;
pub mod ops;
pub mod process;
pub mod replica;
pub mod shard;
pub mod stream;
pub mod transport;
pub mod zero_copy;
