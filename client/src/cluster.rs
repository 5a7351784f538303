//! [`Cluster`]: the entry point. Holds the SC client, the metadata cache and its thread, and
//! the pool of SPU connections that producers and consumers share.
//!
//! Ownership: every clone of a [`Cluster`] (and every producer, consumer and admin handle made
//! from it) shares one `ClusterInner`. When the last one is dropped the metadata thread is told
//! to stop and the SPU connections close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;
use sluice_proto::error_code::ErrorCode;

use crate::admin::Admin;
use crate::config::{ClientConfig, ConsumerConfig, ProducerConfig};
use crate::connection::ConnectionPool;
use crate::consumer::PartitionConsumer;
use crate::error::ClientError;
use crate::metadata::{MetadataCache, MetadataSnapshot};
use crate::producer::{DeliveryListener, Producer};
use crate::sc::ScClient;
use crate::watch::{self, MetadataShared};

/// How long a lookup waits for a topic created moments ago to reach the metadata.
const TOPIC_APPEAR_WAIT: Duration = Duration::from_secs(2);

pub(crate) struct ClusterInner {
    pub config: ClientConfig,
    pub sc: Arc<ScClient>,
    pub metadata: Arc<MetadataShared>,
    pub pool: ConnectionPool,
    /// Partition counts from topic specs, by topic (see `partition_count`).
    partition_counts: Mutex<HashMap<String, u32>>,
    shutdown: Mutex<Option<Sender<()>>>,
}

impl ClusterInner {
    /// The partition count of `topic`: from its spec at the SC (asked once per topic and
    /// cached while the topic exists), or the metadata's when that is larger. The metadata
    /// alone is not enough: while a topic is being created it may list only some partitions.
    pub(crate) fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let seen = self.metadata.cache.snapshot().partition_count(topic);
        let mut known = self.partition_counts.lock().unwrap_or_else(|poison| poison.into_inner());
        match (seen, known.get(topic)) {
            (Some(seen), Some(&count)) => return Ok(count.max(seen)),
            (None, Some(_)) => {
                known.remove(topic); // deleted since, or not seen yet: ask again
            }
            _ => {}
        }
        drop(known);
        let from_spec = match crate::admin::Admin::new(Arc::clone(&self.sc)).describe_topic(topic) {
            Ok((entry, _)) => entry.spec.partition_count(),
            Err(ClientError::Server { code: ErrorCode::TopicNotFound, .. }) => {
                return Err(ClientError::UnknownTopic { topic: topic.to_owned() })
            }
            Err(error) => return Err(error),
        };
        let count = from_spec.max(seen.unwrap_or(0));
        if count == 0 {
            // Created without a count: the SC's default applies; wait for the partitions.
            let appeared = self.metadata.cache.wait_for(TOPIC_APPEAR_WAIT, |snapshot| {
                snapshot.partition_count(topic).filter(|&count| count > 0)
            });
            return appeared.ok_or_else(|| ClientError::UnknownTopic { topic: topic.to_owned() });
        }
        if seen.is_some() {
            let mut known =
                self.partition_counts.lock().unwrap_or_else(|poison| poison.into_inner());
            known.insert(topic.to_owned(), count);
        }
        Ok(count)
    }
}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        // Dropping the sender disconnects the channel: the metadata thread exits within its
        // poll interval (or after a request in progress). It is not joined, so that dropping
        // a handle never waits on a slow SC.
        self.shutdown.lock().unwrap_or_else(|poison| poison.into_inner()).take();
    }
}

/// A connection to a Sluice cluster: admin, metadata, producers and consumers.
///
/// Cheap to clone; `Send + Sync`. The metadata (SPUs, topics, partition leaders) is kept fresh
/// by a background thread that follows the SC's metadata watch, moving between SC addresses
/// when one fails or is a standby.
///
/// ```no_run
/// use sluice_client::{ClientConfig, Cluster};
/// let cluster = Cluster::connect(ClientConfig::new("127.0.0.1:9003"))?;
/// for (name, topic) in &cluster.metadata().topics {
///     println!("{name}: {} partitions", topic.partitions.len());
/// }
/// # Ok::<(), sluice_client::ClientError>(())
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Cluster").field("config", &self.inner.config).finish()
    }
}

impl Cluster {
    /// Connects to the first SC that answers, loads the metadata and starts following it.
    ///
    /// Fails with [`ClientError::ScUnreachable`] (or [`ClientError::NoActiveController`]) when
    /// no SC address answers as the active controller.
    pub fn connect(config: ClientConfig) -> Result<Cluster, ClientError> {
        let sc = Arc::new(ScClient::new(config.clone())?);
        let metadata = Arc::new(MetadataShared {
            sc: Arc::clone(&sc),
            cache: Arc::new(MetadataCache::new()),
            refresh_requested: std::sync::atomic::AtomicBool::new(false),
        });
        metadata.refresh_now()?;
        let (shutdown, shutdown_receiver) = crossbeam_channel::bounded::<()>(0);
        let thread_metadata = Arc::clone(&metadata);
        std::thread::Builder::new()
            .name("sluice-metadata".into())
            .spawn(move || watch::run(thread_metadata, shutdown_receiver))
            .map_err(|error| ClientError::InvalidInput {
                what: "metadata thread",
                reason: error.to_string(),
            })?;
        let inner = ClusterInner {
            pool: ConnectionPool::new(config.connect_timeout, sc.transport().clone())
                .with_token(config.token.clone(), config.request_timeout),
            config,
            sc,
            metadata,
            partition_counts: Mutex::new(HashMap::new()),
            shutdown: Mutex::new(Some(shutdown)),
        };
        Ok(Cluster { inner: Arc::new(inner) })
    }

    /// The administration API (topics, partitions, SPUs, SPU groups).
    pub fn admin(&self) -> Admin {
        Admin::new(Arc::clone(&self.inner.sc))
    }

    /// A new producer with its own batches and sender thread.
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer, ClientError> {
        Producer::start(Arc::clone(&self.inner), config, None)
    }

    /// A producer whose [`Producer::send_tagged`] reports every outcome to `listener` (with
    /// the record's tag) instead of a future or a boxed callback per record.
    pub fn producer_with_listener(
        &self,
        config: ProducerConfig,
        listener: Arc<dyn DeliveryListener>,
    ) -> Result<Producer, ClientError> {
        Producer::start(Arc::clone(&self.inner), config, Some(listener))
    }

    /// A consumer of one partition, positioned as `config.start` says.
    pub fn consumer(
        &self,
        topic: &str,
        partition: u32,
        config: ConsumerConfig,
    ) -> Result<PartitionConsumer, ClientError> {
        PartitionConsumer::open(Arc::clone(&self.inner), topic, partition, config)
    }

    /// The number of partitions of `topic` ([`ClientError::UnknownTopic`] if it does not
    /// exist).
    pub fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        self.inner.partition_count(topic)
    }

    /// SPUs and topics as last seen.
    pub fn metadata(&self) -> Arc<MetadataSnapshot> {
        self.inner.metadata.cache.snapshot()
    }

    /// Fetches the metadata from the SC now (instead of waiting for the watch) and returns it.
    pub fn refresh_metadata(&self) -> Result<Arc<MetadataSnapshot>, ClientError> {
        self.inner.metadata.refresh_now()
    }

    /// Waits until `accept` returns `Some` for the metadata, or `timeout` passes (`None`).
    /// For example, until a new topic's partitions all have leaders.
    pub fn wait_for_metadata<T>(
        &self,
        timeout: Duration,
        accept: impl FnMut(&MetadataSnapshot) -> Option<T>,
    ) -> Option<T> {
        self.inner.metadata.cache.wait_for(timeout, accept)
    }
}
