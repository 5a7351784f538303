//! A whole cluster of processes for a client-side test: one `sluice-sc`, `n` custom SPUs (ids
//! `1..=n`, each registered with the ports it bound) and a `sluice_client::Cluster` connected
//! to the SC, all in one temporary directory removed on drop.

use std::time::Duration;

use sluice_client::{Cluster, TopicSpec};

use super::sc::ScProcess;
use super::spu::SpuProcess;
use super::wait::wait_for;

/// The SC's default heartbeat timeout in a [`TestCluster`].
pub const HEARTBEAT_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// How to start a [`TestCluster`]: see [`TestCluster::builder`].
#[derive(Clone, Debug)]
pub struct TestClusterBuilder {
    spu_count: i32,
    cores: u16,
    spu_flags: Vec<String>,
    heartbeat_timeout_ms: u64,
}

impl TestClusterBuilder {
    /// Extra `sluice-spu` flags for every SPU.
    pub fn spu_flags<S: AsRef<str>>(mut self, flags: &[S]) -> Self {
        self.spu_flags.extend(flags.iter().map(|flag| flag.as_ref().to_owned()));
        self
    }

    /// How long the SC waits for an SPU's heartbeat before it marks the SPU offline.
    pub fn heartbeat_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.heartbeat_timeout_ms = timeout_ms;
        self
    }

    /// Starts the SC, then every SPU, and waits until the client sees them all online.
    pub fn start(self) -> TestCluster {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let sc = ScProcess::builder(&directory.path().join("sc"))
            .heartbeat_timeout_ms(self.heartbeat_timeout_ms)
            .start();
        let cluster = Cluster::connect(sc.client_config()).expect("connect to the SC");
        let spu_count = self.spu_count;
        let mut test = TestCluster { spus: Vec::new(), cluster, sc, directory, spu_template: self };
        for id in 1..=spu_count {
            test.add_spu(id);
        }
        test.wait_spus_online(spu_count as usize);
        test
    }
}

/// An SC and SPUs as processes, with a connected client. Fields drop in order: SPUs first,
/// then the client, the SC and the directory.
pub struct TestCluster {
    /// The SPUs, `spus[i]` with id `i + 1`.
    pub spus: Vec<SpuProcess>,
    /// A client of the SC.
    pub cluster: Cluster,
    /// The SC.
    pub sc: ScProcess,
    /// Every process's data (`sc/`, `spu/spu-<id>/`).
    pub directory: tempfile::TempDir,
    spu_template: TestClusterBuilder,
}

impl TestCluster {
    /// `spu_count` SPUs of `cores` cores each and an SC with a 5 s heartbeat timeout.
    pub fn builder(spu_count: i32, cores: u16) -> TestClusterBuilder {
        TestClusterBuilder {
            spu_count,
            cores,
            spu_flags: Vec::new(),
            heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_MS_DEFAULT,
        }
    }

    /// `TestCluster::builder(spu_count, cores).start()`.
    pub fn start(spu_count: i32, cores: u16) -> TestCluster {
        Self::builder(spu_count, cores).start()
    }

    /// Starts one more SPU, `id`, like the others (cores, flags), registers it and waits
    /// until it is ready; [`Self::wait_spus_online`] waits for the client to see it.
    pub fn add_spu(&mut self, id: i32) {
        let spu = SpuProcess::builder(&self.directory.path().join("spu"))
            .id(id)
            .sc(self.sc.private_address)
            .cores(self.spu_template.cores)
            .flags(&self.spu_template.spu_flags)
            .register_custom(self.sc.public_address)
            .start();
        self.spus.push(spu);
    }

    /// Waits until the client's metadata shows at least `count` SPUs online.
    pub fn wait_spus_online(&self, count: usize) {
        wait_for("SPUs online in the metadata", || {
            self.cluster.wait_for_metadata(Duration::from_millis(200), |snapshot| {
                let online = snapshot.spus.values().filter(|spu| spu.online).count();
                (online >= count).then_some(())
            })
        });
    }

    /// Creates a topic (replication 1) and waits until every partition has a leader in the
    /// client's view.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with(name, TopicSpec::computed(partitions, 1));
    }

    /// Creates a topic with `spec` and waits until every partition has a leader.
    pub fn create_topic_with(&self, name: &str, spec: TopicSpec) {
        let partitions = spec.partition_count();
        self.cluster.admin().create_topic(name, spec).expect("create topic");
        wait_for("topic leaders", || {
            let _ = self.cluster.refresh_metadata();
            let snapshot = self.cluster.metadata();
            let ready = (0..partitions).all(|partition| snapshot.route(name, partition).is_ok());
            ready.then_some(())
        });
    }
}
