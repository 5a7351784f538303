//! The SC's side of replication in a real `sluice-sc`, driven by test SPUs speaking the control
//! protocol over TCP: in-sync set proposals, failover when an SPU's connection closes (well
//! before the heartbeat timeout, which these tests set to a minute), and preferred leaders.

mod process_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use process_common::test_spu::TestSpu;
use sluice_proto::api::admin::PartitionEntry;
use sluice_proto::api::control::{
    AlterInSyncPartition, AlterInSyncRequest, AlterInSyncResult, SpuRegisterResponse,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, PartitionEpoch, PartitionId, SpuId};
use sluice_proto::object::{
    InSyncSet, PartitionKey, PartitionResolution, SpuResolution, SpuSpec, SpuType, TopicName,
    TopicSpec,
};
use sluice_testkit::process::{wait_for, wait_for_within, ScProcess};

/// Far above every wait of these tests: only a closed connection can make an SPU offline.
const HEARTBEAT_TIMEOUT_FLAG: &str = "--heartbeat-timeout-ms=60000";
/// How soon after its connection closes an SPU's partitions must have new leaders.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(5);

/// An SC with three registered, connected test SPUs (ids 1, 2, 3) and one RF 3 topic.
struct Cluster {
    sc: ScProcess,
    spus: BTreeMap<i32, TestSpu>,
    topic: TopicName,
}

impl Cluster {
    fn start(data_dir: &Path, flags: &[&str], partitions: u32) -> Cluster {
        let mut all_flags = vec![HEARTBEAT_TIMEOUT_FLAG];
        all_flags.extend_from_slice(flags);
        let sc = ScProcess::builder(data_dir).flags(&all_flags).start();
        let mut admin = sc.admin();
        let mut spus = BTreeMap::new();
        for id in 1..=3 {
            let spec = SpuSpec { id: SpuId(id), spu_type: SpuType::Custom, ..SpuSpec::default() };
            assert!(admin.register_spu(spec).unwrap().error_code.is_ok());
            spus.insert(id, TestSpu::connect_registered(sc.private_address, id));
        }
        let topic = TopicName::new("replicated").unwrap();
        let created = admin.create_topic(topic.clone(), TopicSpec::computed(partitions, 3));
        assert!(created.unwrap().error_code.is_ok());
        let cluster = Cluster { sc, spus, topic };
        let expected = usize::try_from(partitions).unwrap();
        wait_for("partitions created with every replica in sync", || {
            let listed = cluster.partitions();
            let ready = listed.len() == expected
                && listed.iter().all(|entry| {
                    entry.status.in_sync_replicas.len() == 3
                        && entry.status.resolution == PartitionResolution::Online
                });
            ready.then_some(())
        });
        cluster
    }

    fn partitions(&self) -> Vec<PartitionEntry> {
        let mut admin = self.sc.admin();
        admin.list_partitions(Some(self.topic.clone())).unwrap().partitions
    }

    fn partition(&self, partition: u32) -> PartitionEntry {
        let key = self.key(partition);
        self.partitions().into_iter().find(|entry| entry.key == key).expect("partition listed")
    }

    fn key(&self, partition: u32) -> PartitionKey {
        PartitionKey::new(self.topic.clone(), PartitionId(partition))
    }

    fn spu_resolution(&self, id: i32) -> SpuResolution {
        let spus = self.sc.admin().list_spus().unwrap().spus;
        let spu = spus.into_iter().find(|spu| spu.spec.id == SpuId(id)).expect("SPU listed");
        spu.status.resolution
    }

    /// `proposer` proposes one in-sync set and returns the SC's answer.
    fn propose(
        &mut self,
        proposer: i32,
        key: &PartitionKey,
        epochs: (LeaderEpoch, PartitionEpoch),
        in_sync: &[i32],
    ) -> AlterInSyncResult {
        let request = AlterInSyncRequest {
            spu: SpuId(proposer),
            partitions: vec![AlterInSyncPartition {
                key: key.clone(),
                leader_epoch: epochs.0,
                partition_epoch: epochs.1,
                in_sync_replicas: spus(in_sync),
            }],
        };
        let spu = self.spus.get_mut(&proposer).expect("proposer connected");
        let mut response = spu.alter_in_sync(&request);
        assert_eq!(response.partitions.len(), 1);
        response.partitions.remove(0)
    }
}

fn spus(ids: &[i32]) -> Vec<SpuId> {
    ids.iter().copied().map(SpuId).collect()
}

fn ids(spus: &[SpuId]) -> Vec<i32> {
    spus.iter().map(|spu| spu.get()).collect()
}

fn replicas(entry: &PartitionEntry) -> Vec<i32> {
    entry.spec.replicas.iter().map(|replica| replica.spu.get()).collect()
}

#[test]
fn in_sync_proposals_are_checked_versioned_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("data"), &[], 1);
    let key = cluster.key(0);
    let created = cluster.partition(0);
    let order = replicas(&created);
    let (leader, follower, other) = (order[0], order[1], order[2]);
    assert_eq!(created.spec.leader, SpuId(leader), "the preferred replica leads");
    assert_eq!(ids(&created.status.in_sync_replicas), order, "created with every replica");
    assert_eq!(created.status.partition_epoch, PartitionEpoch(1));
    let current = (LeaderEpoch(0), PartitionEpoch(1));

    // The leader shrinks the set: stored, with the next partition epoch.
    let shrunk = cluster.propose(leader, &key, current, &[leader, follower]);
    assert_eq!(shrunk.error_code, ErrorCode::None);
    assert_eq!(shrunk.leader_epoch, LeaderEpoch(0));
    let expected =
        InSyncSet { replicas: spus(&[leader, follower]), partition_epoch: PartitionEpoch(2) };
    assert_eq!(shrunk.in_sync, expected);
    wait_for("the stored set listed", || {
        (cluster.partition(0).status.in_sync() == expected).then_some(())
    });

    // A proposal based on the old partition epoch is refused with the stored set.
    let stale = cluster.propose(leader, &key, current, &[leader]);
    assert_eq!(stale.error_code, ErrorCode::InvalidUpdateVersion);
    assert_eq!(stale.in_sync, expected);
    let current = (LeaderEpoch(0), PartitionEpoch(2));
    // Only the leader proposes; a set without the leader or with a stranger is invalid.
    let foreign = cluster.propose(follower, &key, current, &[follower]);
    assert_eq!(foreign.error_code, ErrorCode::NotLeader);
    let leaderless = cluster.propose(leader, &key, current, &[follower]);
    assert_eq!(leaderless.error_code, ErrorCode::InvalidRequest);
    let stranger = cluster.propose(leader, &key, current, &[leader, 9]);
    assert_eq!(stranger.error_code, ErrorCode::InvalidRequest);
    let unknown = PartitionKey::new(TopicName::new("nothing").unwrap(), PartitionId(0));
    let missing = cluster.propose(leader, &unknown, current, &[leader]);
    assert_eq!(missing.error_code, ErrorCode::UnknownTopicOrPartition);

    // An offline SPU cannot be added; once back online it can.
    drop(cluster.spus.remove(&other));
    wait_for("the closed SPU offline", || {
        (cluster.spu_resolution(other) == SpuResolution::Offline).then_some(())
    });
    let offline = cluster.propose(leader, &key, current, &[leader, follower, other]);
    assert_eq!(offline.error_code, ErrorCode::IneligibleReplica);
    assert_eq!(offline.in_sync, expected, "nothing stored");
    cluster.spus.insert(other, TestSpu::connect_registered(cluster.sc.private_address, other));
    let grown = cluster.propose(leader, &key, current, &[leader, follower, other]);
    assert_eq!(grown.error_code, ErrorCode::None);
    assert_eq!(grown.in_sync.partition_epoch, PartitionEpoch(3));
    assert_eq!(ids(&grown.in_sync.replicas), [leader, follower, other]);
}

#[test]
fn a_closed_spu_connection_moves_its_leaderships_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("data"), &[], 3);
    let before: Vec<PartitionEntry> = cluster.partitions();
    let victim = before[0].spec.leader;
    let led: Vec<PartitionKey> = before
        .iter()
        .filter(|entry| entry.spec.leader == victim)
        .map(|entry| entry.key.clone())
        .collect();

    let closed = Instant::now();
    drop(cluster.spus.remove(&victim.get()));
    let after =
        wait_for_within("new leaders for the closed SPU's partitions", FAILOVER_DEADLINE, || {
            let partitions = cluster.partitions();
            let done = partitions.iter().all(|entry| {
                entry.spec.leader != victim && !entry.status.in_sync_replicas.contains(&victim)
            });
            done.then_some(partitions)
        });
    eprintln!("failover after the connection closed: {:?}", closed.elapsed());
    assert_eq!(cluster.spu_resolution(victim.get()), SpuResolution::Offline);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.key, new.key);
        assert_eq!(new.status.resolution, PartitionResolution::Online, "{}", new.key);
        assert!(new.status.partition_epoch > old.status.partition_epoch, "{}", new.key);
        if led.contains(&new.key) {
            assert_eq!(new.spec.leader_epoch, LeaderEpoch(1), "{}: epoch bumped", new.key);
            assert!(old.status.in_sync_replicas.contains(&new.spec.leader));
        } else {
            assert_eq!(new.spec.leader, old.spec.leader, "{}: its leader stays", new.key);
            assert_eq!(new.spec.leader_epoch, LeaderEpoch(0));
        }
    }
    // The new leader hears of its leadership and of the set.
    let moved = after.iter().find(|entry| entry.key == led[0]).expect("listed");
    let new_leader = moved.spec.leader;
    let spu = cluster.spus.get_mut(&new_leader.get()).expect("connected");
    let assignment = spu.wait_for_assignment(&moved.key, |found| found.spec.leader == new_leader);
    assert_eq!(assignment.spec.leader_epoch, LeaderEpoch(1));
    assert_eq!(assignment.in_sync, moved.status.in_sync());
    // Clients see the new leaders, no error.
    let metadata = cluster.sc.admin().metadata(Some(vec![cluster.topic.clone()])).unwrap();
    for partition in &metadata.topics[0].partitions {
        assert_eq!(partition.error_code, ErrorCode::None);
        assert_ne!(partition.leader, victim);
        assert!(!partition.in_sync_replicas.contains(&victim));
    }
}

/// Closes the preferred leader's connection, waits for another leader, reconnects it; returns
/// (preferred, the interim leader).
fn fail_over_and_return(cluster: &mut Cluster) -> (i32, i32) {
    let preferred = cluster.partition(0).spec.leader.get();
    drop(cluster.spus.remove(&preferred));
    let interim = wait_for("another leader", || {
        let entry = cluster.partition(0);
        (entry.spec.leader.get() != preferred).then_some(entry.spec.leader.get())
    });
    cluster
        .spus
        .insert(preferred, TestSpu::connect_registered(cluster.sc.private_address, preferred));
    wait_for("the preferred SPU back online", || {
        (cluster.spu_resolution(preferred) == SpuResolution::Online).then_some(())
    });
    (preferred, interim)
}

/// The interim leader adds the returned preferred replica back to the set.
fn rejoin(cluster: &mut Cluster, preferred: i32, interim: i32) {
    let key = cluster.key(0);
    let entry = cluster.partition(0);
    let mut in_sync = ids(&entry.status.in_sync_replicas);
    in_sync.push(preferred);
    let epochs = (entry.spec.leader_epoch, entry.status.partition_epoch);
    let rejoined = cluster.propose(interim, &key, epochs, &in_sync);
    assert_eq!(rejoined.error_code, ErrorCode::None, "{rejoined:?}");
}

#[test]
fn rebalance_leaders_moves_a_leader_back_to_its_preferred_replica() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--leader-rebalance-interval-ms=0"];
    let mut cluster = Cluster::start(&dir.path().join("data"), &flags, 1);
    let key = cluster.key(0);
    let (preferred, interim) = fail_over_and_return(&mut cluster);
    let mut admin = cluster.sc.admin();

    // Back online but not in sync: not eligible.
    let response = admin.rebalance_leaders(Some(cluster.topic.clone())).unwrap();
    assert_eq!(response.error_code, ErrorCode::None);
    assert_eq!((response.moved, response.not_eligible), (vec![], vec![key.clone()]));

    rejoin(&mut cluster, preferred, interim);
    let response = admin.rebalance_leaders(None).unwrap();
    assert_eq!(response.error_code, ErrorCode::None);
    assert_eq!((response.moved, response.not_eligible), (vec![key.clone()], vec![]));
    let moved = cluster.partition(0);
    assert_eq!(moved.spec.leader, SpuId(preferred));
    assert_eq!(moved.spec.leader_epoch, LeaderEpoch(2));

    // The preferred replica's proposal from its old epoch is fenced.
    let epochs = (LeaderEpoch(0), moved.status.partition_epoch);
    let fenced = cluster.propose(preferred, &key, epochs, &[preferred]);
    assert_eq!(fenced.error_code, ErrorCode::FencedLeaderEpoch);
    assert_eq!(fenced.leader_epoch, LeaderEpoch(2));
    // Nothing left to move; an unknown topic is an error.
    let response = admin.rebalance_leaders(None).unwrap();
    assert!(response.moved.is_empty() && response.not_eligible.is_empty(), "{response:?}");
    let unknown = admin.rebalance_leaders(Some(TopicName::new("nothing").unwrap())).unwrap();
    assert_eq!(unknown.error_code, ErrorCode::TopicNotFound);
}

#[test]
fn leadership_returns_to_the_preferred_replica_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--leader-rebalance-interval-ms=200"];
    let mut cluster = Cluster::start(&dir.path().join("data"), &flags, 1);
    let (preferred, interim) = fail_over_and_return(&mut cluster);
    rejoin(&mut cluster, preferred, interim);
    let entry = wait_for("the preferred replica leads again", || {
        let entry = cluster.partition(0);
        (entry.spec.leader == SpuId(preferred)).then_some(entry)
    });
    assert_eq!(entry.spec.leader_epoch, LeaderEpoch(2));
}

#[test]
fn a_restarted_leader_continues_in_a_new_epoch_and_a_reconnected_one_keeps_its_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("data"), &[], 1);
    let before = cluster.partition(0);
    let leader = before.spec.leader.get();
    let epoch_after = |cluster: &Cluster, epoch: LeaderEpoch| {
        wait_for(&format!("leader epoch {epoch}"), || {
            let entry = cluster.partition(0);
            (entry.spec.leader_epoch >= epoch).then_some(entry)
        })
    };

    // The leader's process restarted (another incarnation) and registers before its old
    // connection's end is noticed: it leads on, in the next epoch.
    let mut restarted = TestSpu::connect(cluster.sc.private_address);
    assert_eq!(restarted.register_incarnation(leader, 1_000_001), SpuRegisterResponse::Accepted);
    drop(cluster.spus.insert(leader, restarted));
    let after_restart = epoch_after(&cluster, LeaderEpoch(before.spec.leader_epoch.0 + 1));
    assert_eq!(after_restart.spec.leader.get(), leader);
    assert_eq!(after_restart.spec.leader_epoch, LeaderEpoch(before.spec.leader_epoch.0 + 1));

    // The same process reconnects (same incarnation): its leadership keeps its epoch.
    let mut reconnected = TestSpu::connect(cluster.sc.private_address);
    assert_eq!(reconnected.register_incarnation(leader, 1_000_001), SpuRegisterResponse::Accepted);
    drop(cluster.spus.insert(leader, reconnected));
    // The SC answers a registration after its epoch bumps are stored and visible.
    let after_reconnect = cluster.partition(0);
    assert_eq!(after_reconnect.spec.leader.get(), leader);
    assert_eq!(after_reconnect.spec.leader_epoch, after_restart.spec.leader_epoch, "no bump");
}
