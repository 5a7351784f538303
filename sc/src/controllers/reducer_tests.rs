use super::*;
use crate::cache::Cached;
use sluice_proto::object::PartitionResolution;
use sluice_proto::object::{SpuGroupSpec, TopicSpec};

fn context() -> ReduceContext {
    ReduceContext {
        now: TimestampMs(10_000),
        started: TimestampMs(0),
        heartbeat_timeout_ms: 2_000,
        preferred_leaders: PreferredLeaders::Leave,
    }
}

fn cached<T>(version: u64, value: T) -> Cached<T> {
    Cached { version: Version(version), value }
}

fn custom_spu(id: i32) -> SpuObject {
    let mut object = managed_spu(SpuId(id), None);
    object.spec.spu_type = SpuType::Custom;
    object.status.cores = 2;
    object
}

fn topic(name: &str, partitions: u32, replication_factor: u16) -> (TopicName, TopicObject) {
    let spec = TopicSpec::computed(partitions, replication_factor);
    (TopicName::new(name).unwrap(), TopicObject { spec, status: TopicStatus::default() })
}

/// Applies every action to the snapshot as the store and the watch would (new versions).
fn apply(snapshot: &mut Snapshot, actions: Vec<Action>) {
    let mut version = snapshot.revision.get();
    let mut next = || {
        version += 1;
        Version(version)
    };
    for action in actions {
        match action {
            Action::UpdateTopic { name, object, .. } => {
                snapshot.topics.insert(name, cached(next().get(), object));
            }
            Action::CreatePartition { key, object }
            | Action::UpdatePartition { key, object, .. } => {
                snapshot.partitions.insert(key, cached(next().get(), object));
            }
            Action::DeletePartition { key, .. } => {
                snapshot.partitions.remove(&key);
            }
            Action::CreateSpu { object } | Action::UpdateSpu { object, .. } => {
                snapshot.spus.insert(object.spec.id, cached(next().get(), object));
            }
            Action::DeleteSpu { id, .. } => {
                snapshot.spus.remove(&id);
            }
            Action::UpdateSpuGroup { name, object, .. } => {
                snapshot.spu_groups.insert(name, cached(next().get(), object));
            }
        }
    }
    snapshot.revision = Version(version);
}

/// Reduces and applies until nothing is left to do; returns the number of passes.
fn converge(snapshot: &mut Snapshot) -> usize {
    for pass in 0..10 {
        let actions = reduce(snapshot, context());
        if actions.is_empty() {
            return pass;
        }
        apply(snapshot, actions);
    }
    panic!("reducers did not converge");
}

#[test]
fn topic_gets_partitions_then_provisioned() {
    let mut snapshot = Snapshot::default();
    for id in 1..=3 {
        snapshot.spus.insert(SpuId(id), cached(1, custom_spu(id)));
    }
    let (name, object) = topic("orders", 4, 2);
    snapshot.topics.insert(name.clone(), cached(2, object));
    converge(&mut snapshot);
    let topic = &snapshot.topics[&name].value;
    assert_eq!(topic.status.resolution, TopicResolution::Provisioned);
    assert_eq!(topic.status.replica_map.len(), 4);
    assert_eq!(snapshot.topic_partitions(&name).count(), 4);
    for entry in &topic.status.replica_map {
        let key = PartitionKey::new(name.clone(), entry.partition);
        assert_eq!(snapshot.partitions[&key].value.spec.replicas, entry.replicas);
        assert_eq!(entry.replicas.len(), 2);
    }
}

#[test]
fn replication_factor_above_spu_count_waits_for_spus() {
    let mut snapshot = Snapshot::default();
    snapshot.spus.insert(SpuId(1), cached(1, custom_spu(1)));
    let (name, object) = topic("wide", 1, 2);
    snapshot.topics.insert(name.clone(), cached(2, object));
    converge(&mut snapshot);
    let status = &snapshot.topics[&name].value.status;
    assert_eq!(status.resolution, TopicResolution::InsufficientResources);
    assert!(status.reason.as_deref().unwrap().contains("replication factor 2"), "{status:?}");
    snapshot.spus.insert(SpuId(2), cached(10, custom_spu(2)));
    snapshot.revision = Version(10);
    converge(&mut snapshot);
    assert_eq!(snapshot.topics[&name].value.status.resolution, TopicResolution::Provisioned);
}

#[test]
fn written_replica_map_is_never_recomputed() {
    let mut snapshot = Snapshot::default();
    snapshot.spus.insert(SpuId(1), cached(1, custom_spu(1)));
    let (name, mut object) = topic("fixed", 2, 1);
    // A map written before a crash, naming an SPU that is gone: it is kept as is.
    object.status.replica_map = vec![
        TopicPartitionReplicas { partition: PartitionId(0), replicas: vec![placement(7, 1)] },
        TopicPartitionReplicas { partition: PartitionId(1), replicas: vec![placement(1, 0)] },
    ];
    snapshot.topics.insert(name.clone(), cached(2, object.clone()));
    converge(&mut snapshot);
    assert_eq!(snapshot.topics[&name].value.status.replica_map, object.status.replica_map);
    let key = PartitionKey::new(name, PartitionId(0));
    assert_eq!(snapshot.partitions[&key].value.spec.replicas, vec![placement(7, 1)]);
}

#[test]
fn deleted_topic_loses_its_partitions() {
    let mut snapshot = Snapshot::default();
    snapshot.spus.insert(SpuId(1), cached(1, custom_spu(1)));
    let (name, object) = topic("gone", 3, 1);
    snapshot.topics.insert(name.clone(), cached(2, object));
    converge(&mut snapshot);
    assert_eq!(snapshot.partitions.len(), 3);
    snapshot.topics.remove(&name);
    converge(&mut snapshot);
    assert!(snapshot.partitions.is_empty());
}

#[test]
fn spu_group_generates_and_removes_managed_spus() {
    let mut snapshot = Snapshot::default();
    let name = SpuGroupName::new("main").unwrap();
    let spec = SpuGroupSpec { replicas: 3, first_id: SpuId(100), ..SpuGroupSpec::default() };
    let group = SpuGroupObject { spec, status: SpuGroupStatus::default() };
    snapshot.spu_groups.insert(name.clone(), cached(1, group));
    converge(&mut snapshot);
    let ids: Vec<SpuId> = snapshot.spus.keys().copied().collect();
    assert_eq!(ids, vec![SpuId(100), SpuId(101), SpuId(102)]);
    assert!(snapshot.spus.values().all(|spu| spu.value.spec.spu_type == SpuType::Managed));
    let status = &snapshot.spu_groups[&name].value.status;
    assert_eq!(status.resolution, SpuGroupResolution::Reserved);
    assert_eq!(status.resolved_spus, ids);
    snapshot.spu_groups.remove(&name);
    converge(&mut snapshot);
    assert!(snapshot.spus.is_empty());
}

#[test]
fn spu_group_overlapping_a_custom_spu_is_invalid() {
    let mut snapshot = Snapshot::default();
    snapshot.spus.insert(SpuId(5), cached(1, custom_spu(5)));
    let name = SpuGroupName::new("clash").unwrap();
    let spec = SpuGroupSpec { replicas: 2, first_id: SpuId(5), ..SpuGroupSpec::default() };
    snapshot
        .spu_groups
        .insert(name.clone(), cached(2, SpuGroupObject { spec, status: Default::default() }));
    converge(&mut snapshot);
    let status = &snapshot.spu_groups[&name].value.status;
    assert_eq!(status.resolution, SpuGroupResolution::Invalid);
    assert!(status.reason.as_deref().unwrap().contains('5'));
    assert_eq!(snapshot.spus[&SpuId(5)].value.spec.spu_type, SpuType::Custom);
}

#[test]
fn silent_spu_goes_offline_and_its_partitions_follow() {
    let mut snapshot = Snapshot::default();
    let mut spu = custom_spu(1);
    spu.status.resolution = SpuResolution::Online;
    spu.status.last_heartbeat = Some(TimestampMs(9_000));
    snapshot.spus.insert(SpuId(1), cached(1, spu.clone()));
    let (name, object) = topic("live", 1, 1);
    snapshot.topics.insert(name.clone(), cached(2, object));
    converge(&mut snapshot);
    let key = PartitionKey::new(name, PartitionId(0));
    assert_eq!(snapshot.partitions[&key].value.status.resolution, PartitionResolution::Online);
    spu.status.last_heartbeat = Some(TimestampMs(7_000));
    snapshot.spus.insert(SpuId(1), cached(50, spu));
    snapshot.revision = Version(50);
    converge(&mut snapshot);
    assert_eq!(snapshot.spus[&SpuId(1)].value.status.resolution, SpuResolution::Offline);
    assert_eq!(snapshot.partitions[&key].value.status.resolution, PartitionResolution::Offline);
}

#[test]
fn spus_get_a_heartbeat_timeout_to_reconnect_to_a_new_controller() {
    let mut snapshot = Snapshot::default();
    let mut spu = custom_spu(1);
    spu.status.resolution = SpuResolution::Online;
    spu.status.last_heartbeat = Some(TimestampMs(1_000));
    snapshot.spus.insert(SpuId(1), cached(1, spu));
    // Heard from 9 s ago, but this controller started 1.5 s ago: not yet offline.
    let fresh = ReduceContext { started: TimestampMs(8_500), ..context() };
    assert!(reduce_spus(&snapshot, fresh).is_empty());
    let later = ReduceContext { now: TimestampMs(10_501), ..fresh };
    let [Action::UpdateSpu { object, .. }] = &reduce_spus(&snapshot, later)[..] else {
        panic!("offline expected")
    };
    assert_eq!(object.status.resolution, SpuResolution::Offline);
}

#[test]
fn offline_leader_is_replaced_by_the_best_in_sync_replica() {
    let mut snapshot = Snapshot::default();
    for id in 1..=3 {
        let mut spu = custom_spu(id);
        spu.status.resolution = SpuResolution::Online;
        spu.status.last_heartbeat = Some(TimestampMs(9_500));
        snapshot.spus.insert(SpuId(id), cached(1, spu));
    }
    let (name, object) = topic("elect", 1, 3);
    snapshot.topics.insert(name.clone(), cached(2, object));
    converge(&mut snapshot);
    let key = PartitionKey::new(name, PartitionId(0));
    let before = snapshot.partitions[&key].value.clone();
    let old_leader = before.spec.leader;
    let others: Vec<SpuId> = before
        .spec
        .replicas
        .iter()
        .map(|replica| replica.spu)
        .filter(|spu| *spu != old_leader)
        .collect();
    // The second follower in replica order is further ahead: it must win.
    let mut status = before.status.clone();
    status.in_sync_replicas = vec![old_leader, others[0], others[1]];
    status.replicas = vec![
        sluice_proto::object::ReplicaStatus {
            spu: others[0],
            log_end_offset: sluice_proto::ids::Offset(10),
            ..Default::default()
        },
        sluice_proto::object::ReplicaStatus {
            spu: others[1],
            log_end_offset: sluice_proto::ids::Offset(12),
            ..Default::default()
        },
    ];
    let partition = PartitionObject { spec: before.spec.clone(), status };
    snapshot.partitions.insert(key.clone(), cached(20, partition));
    let mut offline = snapshot.spus[&old_leader].value.clone();
    offline.status.resolution = SpuResolution::Offline;
    snapshot.spus.insert(old_leader, cached(21, offline));
    snapshot.revision = Version(21);
    converge(&mut snapshot);
    let after = &snapshot.partitions[&key].value;
    assert_eq!(after.spec.leader, others[1]);
    assert_eq!(after.spec.leader_epoch, LeaderEpoch(1));
    assert_eq!(after.spec.replicas, before.spec.replicas, "replicas never move");
    assert!(!after.status.in_sync_replicas.contains(&old_leader));
    assert_eq!(after.status.resolution, PartitionResolution::Online);
}

#[test]
fn no_election_without_an_online_in_sync_replica() {
    let mut snapshot = Snapshot::default();
    for id in 1..=2 {
        snapshot.spus.insert(SpuId(id), cached(1, custom_spu(id)));
    }
    let (name, object) = topic("stuck", 1, 2);
    snapshot.topics.insert(name.clone(), cached(2, object));
    converge(&mut snapshot);
    let key = PartitionKey::new(name, PartitionId(0));
    let leader = snapshot.partitions[&key].value.spec.leader;
    let mut offline = snapshot.spus[&leader].value.clone();
    offline.status.resolution = SpuResolution::Offline;
    snapshot.spus.insert(leader, cached(30, offline));
    snapshot.revision = Version(30);
    converge(&mut snapshot);
    let after = &snapshot.partitions[&key].value;
    assert_eq!(after.spec.leader, leader, "the other replica's SPU never came online");
    assert_eq!(after.status.resolution, PartitionResolution::Offline);
    assert_eq!(after.status.in_sync_replicas.len(), 2, "the in-sync set is kept");
}
