//! The CLI's one door to the SDK's cluster handle and admin API.
//!
//! Every command connects through [`ScApi::connect`], so the connection settings and the error
//! context ("what went wrong, what to do") are the same everywhere. The SDK's errors already
//! say what to do (e.g. an unreachable SC suggests `sluice cluster start --local`); this module
//! adds which operation failed.

use anyhow::Context;
use sluice_client::{ClientConfig, Cluster};
use sluice_proto::api::admin::{PartitionEntry, SpuEntry, SpuGroupEntry, TopicEntry};
use sluice_proto::ids::SpuId;
use sluice_proto::object::{SpuGroupSpec, SpuSpec, TopicName, TopicSpec};

/// The access token of every connection (`--token` / `SLUICE_TOKEN`), set once by `main`.
static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Sets the access token used by every [`ScApi::connect`] (the first call wins).
pub fn set_token(token: Option<String>) {
    let _ignored = TOKEN.set(token.filter(|token| !token.is_empty()));
}

/// A connected cluster handle.
pub struct ScApi {
    cluster: Cluster,
}

impl ScApi {
    /// Connects to the SC(s) at `sc` (`host:port[,host:port...]`).
    pub fn connect(sc: &str) -> anyhow::Result<ScApi> {
        let mut config = ClientConfig::new(sc);
        config.token = TOKEN.get().cloned().flatten();
        let cluster = Cluster::connect(config)?;
        Ok(ScApi { cluster })
    }

    /// The SDK handle, for producers and consumers.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Every topic.
    pub fn list_topics(&self) -> anyhow::Result<Vec<TopicEntry>> {
        self.cluster.admin().list_topics().context("cannot list topics")
    }

    /// One topic and its partitions.
    pub fn describe_topic(
        &self,
        name: &TopicName,
    ) -> anyhow::Result<(TopicEntry, Vec<PartitionEntry>)> {
        self.cluster
            .admin()
            .describe_topic(name.as_str())
            .with_context(|| format!("cannot describe topic \"{name}\""))
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &TopicName, spec: TopicSpec) -> anyhow::Result<()> {
        self.cluster
            .admin()
            .create_topic(name.as_str(), spec)
            .with_context(|| format!("cannot create topic \"{name}\""))
    }

    /// Checks a topic creation at the SC without creating anything.
    pub fn validate_topic(&self, name: &TopicName, spec: TopicSpec) -> anyhow::Result<()> {
        self.cluster
            .admin()
            .validate_topic(name.as_str(), spec)
            .with_context(|| format!("topic \"{name}\" would be refused"))
    }

    /// Deletes a topic.
    pub fn delete_topic(&self, name: &TopicName) -> anyhow::Result<()> {
        self.cluster
            .admin()
            .delete_topic(name.as_str())
            .with_context(|| format!("cannot delete topic \"{name}\""))
    }

    /// Partitions of one topic, or all.
    pub fn list_partitions(
        &self,
        topic: Option<&TopicName>,
    ) -> anyhow::Result<Vec<PartitionEntry>> {
        self.cluster
            .admin()
            .list_partitions(topic.map(TopicName::as_str))
            .context("cannot list partitions")
    }

    /// Every SPU.
    pub fn list_spus(&self) -> anyhow::Result<Vec<SpuEntry>> {
        self.cluster.admin().list_spus().context("cannot list SPUs")
    }

    /// Registers a custom SPU.
    pub fn register_spu(&self, spec: SpuSpec) -> anyhow::Result<()> {
        let id = spec.id;
        self.cluster.admin().register_spu(spec).with_context(|| format!("cannot register SPU {id}"))
    }

    /// Unregisters a custom SPU.
    pub fn unregister_spu(&self, id: SpuId) -> anyhow::Result<()> {
        self.cluster
            .admin()
            .unregister_spu(id)
            .with_context(|| format!("cannot unregister SPU {id}"))
    }

    /// Creates an SPU group.
    pub fn create_spu_group(&self, name: &str, spec: SpuGroupSpec) -> anyhow::Result<()> {
        self.cluster
            .admin()
            .create_spu_group(name, spec)
            .with_context(|| format!("cannot create SPU group \"{name}\""))
    }

    /// Every SPU group.
    pub fn list_spu_groups(&self) -> anyhow::Result<Vec<SpuGroupEntry>> {
        self.cluster.admin().list_spu_groups().context("cannot list SPU groups")
    }

    /// Deletes an SPU group.
    pub fn delete_spu_group(&self, name: &str) -> anyhow::Result<()> {
        self.cluster
            .admin()
            .delete_spu_group(name)
            .with_context(|| format!("cannot delete SPU group \"{name}\""))
    }
}
