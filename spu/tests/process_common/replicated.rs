//! A replicated cluster for process tests: an SC on this process's threads and several real
//! `sluice-spu` children (each with its own data directory, started by `sluice_testkit`), plus
//! helpers to find leaders, wait for in-sync sets, and read a replica's log from its files.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice_proto::api::admin::PartitionEntry;
use sluice_proto::api::fetch::Isolation;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{Offset, PartitionId, SpuId};
use sluice_proto::object::{Endpoint, PartitionKey, SpuSpec, SpuType, TopicName, TopicSpec};

use sluice_sc::config::ScArgs;

use super::tls::{Pki, CLUSTER};
use super::{record_values, start_spu, wait_for, EmbeddedSc, ServerProcess, SpuClient, SpuProcess};

/// Extra flags of every SPU: a short lag limit so tests see in-sync changes quickly.
pub const SPU_FLAGS: &[&str] = &["--replica-lag-max-ms=3000", "--heartbeat-interval-ms=200"];

/// An SC and `n` SPUs with ids 1..=n, one core each; with TLS everywhere when `tls` is set
/// (SC private listener, SPU listeners and links, the test's clients).
pub struct Replicated {
    pub spus: Vec<Option<SpuProcess>>,
    pub sc: EmbeddedSc,
    pub dir: tempfile::TempDir,
    pub tls: Option<Pki>,
}

impl Replicated {
    pub fn start(count: usize) -> Replicated {
        Self::start_with(count, None)
    }

    /// [`Replicated::start`] with mutual TLS between the SC and the SPUs and between SPUs.
    pub fn start_tls(count: usize) -> Replicated {
        Self::start_with(count, Some(Pki::new("replicated test CA")))
    }

    fn start_with(count: usize, tls: Option<Pki>) -> Replicated {
        let dir = tempfile::tempdir().expect("temporary directory");
        let args = ScArgs {
            heartbeat_timeout_ms: Some(3_000),
            ..EmbeddedSc::args(&dir.path().join("sc"))
        };
        let args = match &tls {
            Some(pki) => pki.sc_args(args),
            None => args,
        };
        let sc = EmbeddedSc::start_with(args);
        for id in 1..=count as i32 {
            register_custom(&sc, id);
        }
        let mut cluster = Replicated { spus: Vec::new(), sc, dir, tls };
        for id in 1..=count as i32 {
            let spu = cluster.spawn(id);
            cluster.spus.push(Some(spu));
        }
        cluster
    }

    pub fn data_dir(&self, id: i32) -> PathBuf {
        self.dir.path().join(format!("spu-data-{id}"))
    }

    fn spawn(&self, id: i32) -> SpuProcess {
        let mut flags: Vec<String> = SPU_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
        if let Some(pki) = &self.tls {
            flags.extend(pki.spu_flags(&pki.spu_files(id), "none"));
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        start_spu(id, self.sc.private_address, &self.data_dir(id), 1, &flags)
    }

    /// A client of SPU `id` at `address` (TLS verifying it as `spu-<id>.default` when the
    /// cluster has TLS).
    pub fn client(&self, id: i32, address: std::net::SocketAddr) -> SpuClient {
        match &self.tls {
            None => SpuClient::connect(address),
            Some(pki) => {
                let client = pki.client(None);
                SpuClient::connect_tls(address, &client, &sluice_tls::spu_name(id, CLUSTER))
                    .expect("a TLS connection to the SPU")
            }
        }
    }

    pub fn spu(&mut self, id: i32) -> &mut SpuProcess {
        self.spus[id as usize - 1].as_mut().expect("the SPU runs")
    }

    /// `kill -9` of SPU `id`.
    pub fn kill(&mut self, id: i32) {
        if let Some(mut spu) = self.spus[id as usize - 1].take() {
            spu.kill();
        }
    }

    /// Starts SPU `id` again on its data directory.
    pub fn restart(&mut self, id: i32) {
        self.kill(id);
        let spu = self.spawn(id);
        self.spus[id as usize - 1] = Some(spu);
    }

    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication: u16,
        min_in_sync: u16,
    ) -> TopicName {
        let topic = TopicName::new(name).expect("topic name");
        let spec = TopicSpec {
            min_in_sync_replicas: min_in_sync,
            ..TopicSpec::computed(partitions, replication)
        };
        let created = self.sc.admin().create_topic(topic.clone(), spec).expect("create topic");
        assert!(created.error_code.is_ok(), "{created:?}");
        for partition in 0..partitions {
            self.wait_in_sync(&topic, partition, usize::from(replication));
        }
        topic
    }

    /// The partition as the SC stores it.
    pub fn partition(&self, topic: &TopicName, partition: u32) -> PartitionEntry {
        self.try_partition(topic, partition).expect("the partition")
    }

    /// The partition as the SC stores it; `None` before the SC has created it.
    pub fn try_partition(&self, topic: &TopicName, partition: u32) -> Option<PartitionEntry> {
        let key = PartitionKey::new(topic.clone(), PartitionId(partition));
        let partitions = self.sc.admin().list_partitions(Some(topic.clone())).expect("partitions");
        partitions.partitions.into_iter().find(|entry| entry.key == key)
    }

    /// Waits until the partition's in-sync set has `count` members and its leader answers
    /// committed reads.
    pub fn wait_in_sync(&self, topic: &TopicName, partition: u32, count: usize) -> PartitionEntry {
        wait_for(&format!("{count} in-sync replicas of {topic}-{partition}"), || {
            let entry = self.try_partition(topic, partition)?;
            (entry.status.in_sync_replicas.len() == count).then_some(entry)
        })
    }

    /// A client of the current leader's core of `topic`-`partition`, once it serves.
    pub fn leader_client(&mut self, topic: &TopicName, partition: u32) -> (SpuId, SpuClient) {
        let entry = self.partition(topic, partition);
        let leader = entry.spec.leader;
        let core = entry.spec.leader_placement().expect("leader placement").core;
        let spu = self.spu(leader.get());
        let address = spu.core_addresses[core.index() % spu.core_addresses.len()];
        let mut client = self.client(leader.get(), address);
        wait_for(&format!("SPU {leader} to lead {topic}-{partition}"), || {
            let (header, _) =
                client.fetch(topic, partition, Offset(0), (0, 0), Isolation::ReadUncommitted);
            let serving = !matches!(
                header.error_code,
                ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::NotLeader
                    | ErrorCode::ReplicaNotAvailable
            );
            serving.then_some(())
        });
        (leader, client)
    }
}

/// Registers custom SPU `id` (endpoints learnt when it connects) at `sc`.
pub fn register_custom(sc: &EmbeddedSc, id: i32) {
    let spec = SpuSpec {
        id: SpuId(id),
        spu_type: SpuType::Custom,
        public_endpoint: Endpoint::new("127.0.0.1", 0),
        private_endpoint: Endpoint::new("127.0.0.1", 0),
        ..SpuSpec::default()
    };
    let registered = sc.admin().register_spu(spec).expect("register an SPU");
    assert!(registered.error_code.is_ok(), "{registered:?}");
}

/// Every record partition 0 of `topic`'s current leader serves to a committed reader, by
/// offset.
pub fn read_all(cluster: &mut Replicated, topic: &TopicName) -> BTreeMap<Offset, Vec<u8>> {
    let (_, mut client) = cluster.leader_client(topic, 0);
    let mut records = BTreeMap::new();
    let mut next = Offset(0);
    loop {
        let (header, bytes) = wait_for("a committed read", || {
            let (header, bytes) = client.fetch(topic, 0, next, (0, 0), Isolation::ReadCommitted);
            (header.error_code != ErrorCode::OffsetNotAvailable).then_some((header, bytes))
        });
        assert_eq!(header.error_code, ErrorCode::None);
        let values = record_values(&bytes);
        if values.is_empty() {
            return records;
        }
        for (offset, value) in values {
            next = offset.next();
            records.insert(offset, value);
        }
    }
}

/// The record batches of a replica's log, read from its segment files (sorted by base offset),
/// until the first position that does not hold a whole batch (the preallocated zeros).
pub fn log_batches(spu_data_dir: &Path, spu: i32, key: &PartitionKey) -> Vec<(Offset, Vec<u8>)> {
    sluice_testkit::process::log_batches(
        &spu_data_dir.join(format!("spu-{spu}")).join(key.to_string()),
    )
}
