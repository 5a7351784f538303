//! # sluice-proto
//!
//! Every wire format Sluice speaks, and nothing else: no I/O, no async, no runtime.
//!
//! - [`ids`]: newtypes for offsets, epochs, SPU ids, partitions and cores.
//! - [`record`]: Kafka RecordBatch v2, byte for byte (reader, builder, compression).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ids;
pub mod record;
