//! # sluice-client
//!
//! The native Sluice SDK: administration, a batching producer and partition consumers.
//!
//! - **Shard-aware**: metadata from the SC (kept fresh by a watch) says which SPU *and which
//!   core* owns each partition; the client keeps one connection per (SPU, core) and sends each
//!   request straight to the owning core, so record bytes never cross cores on the SPU.
//! - **Runtime-free**: a blocking API on plain threads (crossbeam inside). Delivery results
//!   are [`std::future::Future`]s woken from the client's own threads, so they can be awaited
//!   in any async runtime; nothing here starts or requires one.
//! - **Bounded**: the producer's memory (`buffer_bytes_max`, with back-pressure on `send`),
//!   in-flight requests (`max_in_flight` per partition), frame sizes and fetch sizes all have limits.
//!
//! # Quick start (plain threads)
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_client::{
//!     ClientConfig, Cluster, ConsumerConfig, Poll, ProducerConfig, ProducerRecord, StartFrom,
//!     TopicSpec,
//! };
//!
//! // `sluice cluster start --local` prints the SC address.
//! let cluster = Cluster::connect(ClientConfig::new("127.0.0.1:9003"))?;
//! cluster.admin().create_topic("greetings", TopicSpec::computed(1, 1))?;
//!
//! let producer = cluster.producer(ProducerConfig::default())?;
//! let delivery = producer.send(&ProducerRecord::new("greetings", b"hello").with_key(b"k"))?;
//! println!("written at offset {:?}", delivery.wait()?.offset); // None with acks none
//!
//! let config = ConsumerConfig { start: StartFrom::Beginning, stop_at_end: true, ..Default::default() };
//! let mut consumer = cluster.consumer("greetings", 0, config)?;
//! loop {
//!     match consumer.poll(Duration::from_secs(1))? {
//!         // Views into the received bytes: no allocation per record.
//!         Poll::Records(records) => {
//!             for record in records {
//!                 println!("{} {:?} {:?}", record.offset, record.key, record.value);
//!             }
//!         }
//!         Poll::Idle => {}
//!         Poll::End => break,
//!     }
//! }
//! # Ok::<(), sluice_client::ClientError>(())
//! ```
//!
//! # From an async fn (any runtime)
//!
//! `send` only copies the record into a batch (it blocks only while the producer's buffer is
//! full); the acknowledgement is awaited:
//!
//! ```no_run
//! use sluice_client::{ClientError, Producer, ProducerRecord, RecordMetadata};
//!
//! async fn publish(producer: &Producer, values: &[&[u8]]) -> Result<Vec<RecordMetadata>, ClientError> {
//!     let mut deliveries = Vec::new();
//!     for value in values {
//!         deliveries.push(producer.send(&ProducerRecord::new("events", value))?);
//!     }
//!     let mut written = Vec::new();
//!     for delivery in deliveries {
//!         written.push(delivery.await?);
//!     }
//!     Ok(written)
//! }
//! ```
//!
//! Consumers and admin calls block; from async code run them where blocking is allowed (a
//! dedicated thread, or the runtime's blocking pool).
//!
//! # TLS
//!
//! With [`ClientConfig::tls`] every connection (the SC and each SPU core) uses TLS; servers
//! are verified by the host of the address dialled, and a client certificate, when given, is
//! this client's identity. [`ClientSettings`] reads the same from a client file
//! (`sluice --config`), under flags and environment variables.
//!
//! ```no_run
//! use sluice_client::{ClientConfig, ClientError, Cluster, TlsConfig, TlsFailure};
//!
//! let mut config = ClientConfig::new("10.0.0.1:9003");
//! config.tls = Some(TlsConfig::new("ca.pem").with_certificate("app.pem", "app.key"));
//! match Cluster::connect(config) {
//!     Ok(_cluster) => {}
//!     Err(ClientError::TlsHandshake { failure: TlsFailure::ClientCertificateRejected, .. }) => {
//!         eprintln!("the cluster does not accept app.pem");
//!     }
//!     Err(ClientError::NotTls { address }) => eprintln!("{address} is a plaintext port"),
//!     Err(other) => eprintln!("{other}"),
//! }
//! ```
//!
//! # Errors
//!
//! Every failure is a [`ClientError`] whose message says what to do, and whose
//! [`ClientError::is_retriable`] says whether trying again may help. Server refusals keep the
//! wire [`ErrorCode`].
//!
//! # Crate layout
//!
//! [`cluster`](Cluster) (entry point), [`admin`](Admin), producer ([`Producer`]), consumer
//! ([`PartitionConsumer`]), metadata ([`MetadataSnapshot`]); internally `sc` (SC requests
//! with fail-over), `watch` (the metadata thread), `connection` (pipelined SPU connections).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod cluster;
mod config;
mod config_file;
mod connection;
mod consumer;
mod error;
mod metadata;
mod producer;
mod sc;
mod transport;
mod watch;

pub use admin::Admin;
pub use cluster::Cluster;
pub use config::{
    ClientConfig, ConsumerConfig, Partitioner, ProducerConfig, StartFrom, TlsConfig,
    CONNECT_TIMEOUT_DEFAULT, REQUEST_TIMEOUT_DEFAULT,
};
pub use config_file::{ClientFile, ClientSettings};
pub use consumer::{
    ConsumerRecord, OwnedRecords, PartitionConsumer, Poll, RecordHeaders, RecordView, Records,
};
pub use error::{ClientError, TlsFailure};
pub use metadata::{core_address, Gap, MetadataSnapshot, Route, RouteError};
pub use producer::partitioner::{key_partition, murmur2, to_positive};
pub use producer::{DeliveryFuture, DeliveryListener, Producer, ProducerRecord, RecordMetadata};

pub use sluice_proto::api::admin::{
    PartitionEntry, RebalanceLeadersResponse, SpuEntry, SpuGroupEntry, TopicEntry,
};
pub use sluice_proto::api::cluster::{
    BalanceFigures, CoreBalanceChange, CountRange, HoldLeadershipResponse, PlanRebalanceResponse,
    RebalanceMove,
};
pub use sluice_proto::api::fetch::Isolation;
pub use sluice_proto::api::metadata::{PartitionMetadata, SpuMetadata, TopicMetadata};
pub use sluice_proto::api::produce::Acks;
pub use sluice_proto::error_code::ErrorCode;
pub use sluice_proto::ids::{CoreId, Offset, SpuId};
pub use sluice_proto::object::{SpuGroupSpec, SpuSpec, TopicSpec};
pub use sluice_proto::record::Compression;

#[cfg(test)]
mod tests {
    /// The handles the contract promises to share between threads are `Send + Sync`; a
    /// consumer and a delivery future can move to another thread.
    #[test]
    fn handles_are_thread_safe() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<super::Cluster>();
        send_sync::<super::Producer>();
        send_sync::<super::Admin>();
        send_sync::<super::DeliveryFuture>();
        send_sync::<super::ClientError>();
        send::<super::PartitionConsumer>();
    }
}
