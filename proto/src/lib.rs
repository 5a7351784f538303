//! # sluice-proto
//!
//! Every wire format Sluice speaks, and nothing else: no I/O, no async, no runtime.
//!
//! - [`ids`]: newtypes for offsets, epochs, SPU ids, partitions and cores.
//! - [`record`]: Kafka RecordBatch v2, byte for byte (reader, builder, compression).
//! - [`codec`]: big-endian binary encoding and the decode/encode errors of every message.
//! - [`frame`]: length-prefixed frames with API key, version and correlation id.
//! - [`error_code`]: the one client-facing error-code enum, with fixed numbers.
//! - [`api`]: every request and response, data plane and control plane.
//! - [`object`]: specs and statuses of SPUs, SPU groups, topics and partitions; ACL bindings.
//! - [`authz`]: the authorization decision over ACL bindings (pure), shared by SC and SPUs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod authz;
pub mod codec;
pub mod error_code;
pub mod frame;
pub mod ids;
pub mod object;
pub mod record;
