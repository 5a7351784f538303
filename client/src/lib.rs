//! # sluice-client
//!
//! The native Sluice SDK: admin, producer and consumer. Not built yet: it lands with the SPU data
//! path. It will speak the frames and messages of [`sluice_proto`], route each request to the
//! (SPU, core) that owns the partition, and be usable from plain threads and from any async
//! runtime without imposing one.
