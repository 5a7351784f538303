use std::collections::BTreeMap;

use super::*;
use crate::cache::Cached;
use crate::controllers::reducer::{placement, reduce, ReduceContext};
use crate::objects::TopicObject;
use crate::store::Version;
use sluice_proto::ids::{PartitionEpoch, PartitionId, TimestampMs};
use sluice_proto::object::{
    PartitionKey, PartitionSpec, ReplicaStatus, TopicName, TopicSpec, TopicStatus,
};

use SpuResolution::{Init, Offline, Online};

/// Replicas 1, 2, 3 (preferred 1); `leader` in epoch 5; `in_sync` at partition epoch 9.
fn partition(leader: i32, in_sync: &[i32]) -> PartitionObject {
    PartitionObject {
        spec: PartitionSpec {
            replicas: vec![placement(1, 0), placement(2, 0), placement(3, 0)],
            leader: SpuId(leader),
            leader_epoch: LeaderEpoch(5),
            ..PartitionSpec::default()
        },
        status: PartitionStatus {
            resolution: PartitionResolution::Online,
            in_sync_replicas: in_sync.iter().copied().map(SpuId).collect(),
            partition_epoch: PartitionEpoch(9),
            ..PartitionStatus::default()
        },
    }
}

/// The SPUs' resolutions; an SPU not listed does not exist.
fn spus(resolutions: &[(i32, SpuResolution)]) -> BTreeMap<SpuId, SpuResolution> {
    resolutions.iter().map(|(id, resolution)| (SpuId(*id), *resolution)).collect()
}

fn next(
    partition: &PartitionObject,
    spus: &BTreeMap<SpuId, SpuResolution>,
    preferred: PreferredLeaders,
) -> (PartitionObject, Vec<PartitionEvent>) {
    next_state(partition, &|spu| spus.get(&spu).copied(), preferred)
}

fn in_sync(object: &PartitionObject) -> Vec<i32> {
    object.status.in_sync_replicas.iter().map(|spu| spu.get()).collect()
}

fn report(spu: i32, durable_end: i64, log_end: i64) -> ReplicaStatus {
    ReplicaStatus {
        spu: SpuId(spu),
        durable_end_offset: Offset(durable_end),
        log_end_offset: Offset(log_end),
        ..ReplicaStatus::default()
    }
}

#[test]
fn nothing_changes_while_everything_is_online() {
    let before = partition(1, &[1, 2, 3]);
    let all = spus(&[(1, Online), (2, Online), (3, Online)]);
    for preferred in [PreferredLeaders::Restore, PreferredLeaders::Leave] {
        assert_eq!(next(&before, &all, preferred), (before.clone(), vec![]));
    }
}

#[test]
fn an_empty_in_sync_set_from_an_older_sc_becomes_the_leader() {
    let mut before = partition(2, &[]);
    before.status.partition_epoch = PartitionEpoch(0);
    let (after, events) =
        next(&before, &spus(&[(1, Online), (2, Online), (3, Online)]), PreferredLeaders::Leave);
    assert_eq!(in_sync(&after), [2], "never read as every replica");
    assert_eq!(after.status.partition_epoch, PartitionEpoch(1));
    assert_eq!(after.spec.leader_epoch, LeaderEpoch(5));
    assert_eq!(events, [PartitionEvent::LeaderAddedToInSync { leader: SpuId(2) }]);
}

#[test]
fn followers_on_spus_not_online_leave_the_set() {
    let before = partition(1, &[1, 2, 3]);
    for gone in [Offline, Init] {
        let (after, events) =
            next(&before, &spus(&[(1, Online), (2, gone), (3, Online)]), PreferredLeaders::Leave);
        assert_eq!(in_sync(&after), [1, 3]);
        assert_eq!(after.status.partition_epoch, PartitionEpoch(10));
        assert_eq!(after.spec, before.spec, "leadership stays");
        assert_eq!(events, [PartitionEvent::FollowersLeft { removed: vec![SpuId(2)] }]);
    }
    // A follower whose SPU was deleted leaves too.
    let (after, _) = next(&before, &spus(&[(1, Online), (2, Online)]), PreferredLeaders::Leave);
    assert_eq!(in_sync(&after), [1, 2]);
}

#[test]
fn the_in_sync_replica_with_the_highest_durable_end_replaces_an_offline_leader() {
    let mut before = partition(1, &[1, 2, 3]);
    // SPU 2's log end is further, but SPU 3 has more on disk: durable ends count.
    before.status.leader = report(1, 50, 50);
    before.status.replicas = vec![report(2, 30, 45), report(3, 40, 40)];
    let alive = spus(&[(1, Offline), (2, Online), (3, Online)]);
    let (after, events) = next(&before, &alive, PreferredLeaders::Leave);
    assert_eq!(after.spec.leader, SpuId(3));
    assert_eq!(after.spec.leader_epoch, LeaderEpoch(6));
    assert_eq!(after.status.partition_epoch, PartitionEpoch(10));
    assert_eq!(in_sync(&after), [2, 3], "the old leader leaves the set");
    assert_eq!(after.status.resolution, PartitionResolution::Online);
    let change = LeaderChange { from: SpuId(1), to: SpuId(3), leader_epoch: LeaderEpoch(6) };
    assert_eq!(events, [PartitionEvent::Elected(change)]);
    // A missing leader SPU counts as offline.
    let (after, _) = next(&before, &spus(&[(2, Online), (3, Online)]), PreferredLeaders::Leave);
    assert_eq!(after.spec.leader, SpuId(3));
}

#[test]
fn log_ends_count_where_no_durable_end_was_reported_and_ties_go_to_replica_order() {
    let mut before = partition(1, &[1, 2, 3]);
    before.status.replicas = vec![report(2, 0, 20), report(3, 0, 21)];
    let alive = spus(&[(1, Offline), (2, Online), (3, Online)]);
    assert_eq!(next(&before, &alive, PreferredLeaders::Leave).0.spec.leader, SpuId(3));
    before.status.replicas = vec![report(2, 7, 7), report(3, 7, 9)];
    assert_eq!(next(&before, &alive, PreferredLeaders::Leave).0.spec.leader, SpuId(2));
    before.status.replicas = vec![];
    assert_eq!(next(&before, &alive, PreferredLeaders::Leave).0.spec.leader, SpuId(2));
}

#[test]
fn an_election_also_drops_offline_followers() {
    let before = partition(1, &[1, 2, 3]);
    let (after, events) =
        next(&before, &spus(&[(1, Offline), (2, Offline), (3, Online)]), PreferredLeaders::Leave);
    assert_eq!(after.spec.leader, SpuId(3));
    assert_eq!(in_sync(&after), [3]);
    assert_eq!(after.status.partition_epoch, PartitionEpoch(10), "one bump per stored change");
    assert_eq!(events.len(), 2, "{events:?}");
}

#[test]
fn a_replica_outside_the_set_is_never_elected_and_the_partition_waits_offline() {
    let mut before = partition(1, &[1, 2]);
    before.status.replicas = vec![report(3, 100, 100)];
    let alive = spus(&[(1, Offline), (2, Offline), (3, Online)]);
    let (offline, events) = next(&before, &alive, PreferredLeaders::Restore);
    assert_eq!(offline.spec, before.spec, "leader and epoch unchanged");
    assert_eq!(in_sync(&offline), [1, 2], "the set is kept for whoever returns");
    assert_eq!(offline.status.partition_epoch, PartitionEpoch(9));
    assert_eq!(offline.status.resolution, PartitionResolution::Offline);
    assert_eq!(events, [PartitionEvent::Offline { leader: SpuId(1) }]);
    // Another pass changes nothing.
    assert_eq!(next(&offline, &alive, PreferredLeaders::Restore), (offline.clone(), vec![]));
    // The old leader returns: it leads again, same epoch.
    let (back, _) =
        next(&offline, &spus(&[(1, Online), (2, Offline), (3, Online)]), PreferredLeaders::Leave);
    assert_eq!((back.spec.leader, back.spec.leader_epoch), (SpuId(1), LeaderEpoch(5)));
    assert_eq!(back.status.resolution, PartitionResolution::Online);
    assert_eq!(in_sync(&back), [1], "the follower still offline leaves the set");
    // Or an in-sync follower returns first: it is elected.
    let (elected, _) =
        next(&offline, &spus(&[(1, Offline), (2, Online), (3, Online)]), PreferredLeaders::Leave);
    assert_eq!((elected.spec.leader, elected.spec.leader_epoch), (SpuId(2), LeaderEpoch(6)));
    assert_eq!(in_sync(&elected), [2]);
}

#[test]
fn unclean_election_takes_the_online_replica_with_the_highest_end() {
    let mut before = partition(1, &[1]);
    before.spec.config.unclean_election = true;
    before.status.replicas = vec![report(2, 10, 10), report(3, 12, 12)];
    let alive = spus(&[(1, Offline), (2, Online), (3, Online)]);
    let (after, events) = next(&before, &alive, PreferredLeaders::Leave);
    assert_eq!(after.spec.leader, SpuId(3));
    assert_eq!(after.spec.leader_epoch, LeaderEpoch(6));
    assert_eq!(in_sync(&after), [3]);
    assert_eq!(after.status.partition_epoch, PartitionEpoch(10));
    let change = LeaderChange { from: SpuId(1), to: SpuId(3), leader_epoch: LeaderEpoch(6) };
    assert_eq!(events, [PartitionEvent::UncleanlyElected(change)]);
    // An in-sync candidate still wins over a better out-of-sync one.
    before.status.in_sync_replicas = vec![SpuId(1), SpuId(2)];
    assert_eq!(next(&before, &alive, PreferredLeaders::Leave).0.spec.leader, SpuId(2));
}

#[test]
fn a_leader_that_never_connected_is_waited_for() {
    let before = partition(1, &[1, 2, 3]);
    let waiting = spus(&[(1, Init), (2, Online), (3, Offline)]);
    assert_eq!(next(&before, &waiting, PreferredLeaders::Restore), (before.clone(), vec![]));
}

#[test]
fn leadership_returns_to_the_preferred_replica_when_allowed() {
    let before = partition(2, &[2, 1, 3]);
    let all = spus(&[(1, Online), (2, Online), (3, Online)]);
    assert_eq!(next(&before, &all, PreferredLeaders::Leave), (before.clone(), vec![]));
    let (after, events) = next(&before, &all, PreferredLeaders::Restore);
    assert_eq!((after.spec.leader, after.spec.leader_epoch), (SpuId(1), LeaderEpoch(6)));
    assert_eq!(in_sync(&after), [2, 1, 3], "the set is unchanged");
    assert_eq!(after.status.partition_epoch, PartitionEpoch(10));
    let change = LeaderChange { from: SpuId(2), to: SpuId(1), leader_epoch: LeaderEpoch(6) };
    assert_eq!(events, [PartitionEvent::PreferredRestored(change)]);
    assert_eq!(preferred_leader(&after, &|_| true), Preferred::Leads);
}

#[test]
fn a_preferred_replica_out_of_sync_or_offline_does_not_take_over() {
    let online = |ids: &[i32]| {
        let ids = ids.to_vec();
        move |spu: SpuId| ids.contains(&spu.get())
    };
    assert_eq!(
        preferred_leader(&partition(2, &[2, 3]), &online(&[1, 2, 3])),
        Preferred::NotEligible
    );
    assert_eq!(preferred_leader(&partition(2, &[2, 1]), &online(&[2, 3])), Preferred::NotEligible);
    assert_eq!(preferred_leader(&partition(2, &[2, 1]), &online(&[1, 3])), Preferred::NotEligible);
    assert_eq!(preferred_leader(&partition(2, &[2, 1]), &online(&[1, 2])), Preferred::Eligible);
    let (moved, change) = restore_preferred(&partition(2, &[2, 1]));
    assert_eq!((moved.spec.leader, change.leader_epoch), (SpuId(1), LeaderEpoch(6)));
    assert_eq!(moved.status.partition_epoch, PartitionEpoch(10));
}

fn snapshot_with_topic(partitions: u32) -> (Snapshot, TopicName) {
    let mut snapshot = Snapshot::default();
    for id in 1..=3 {
        let mut spu = crate::controllers::reducer::managed_spu(SpuId(id), None);
        spu.spec.spu_type = sluice_proto::object::SpuType::Custom;
        spu.status.resolution = Online;
        spu.status.cores = 1;
        spu.status.last_heartbeat = Some(TimestampMs(10_000));
        snapshot.spus.insert(SpuId(id), Cached { version: Version(1), value: spu });
    }
    let name = TopicName::new("replicated").unwrap();
    let topic =
        TopicObject { spec: TopicSpec::computed(partitions, 3), status: TopicStatus::default() };
    snapshot.topics.insert(name.clone(), Cached { version: Version(2), value: topic });
    snapshot.revision = Version(2);
    (snapshot, name)
}

fn context() -> ReduceContext {
    ReduceContext {
        now: TimestampMs(10_000),
        started: TimestampMs(0),
        heartbeat_timeout_ms: 2_000,
        preferred_leaders: PreferredLeaders::Leave,
    }
}

#[test]
fn partitions_are_created_with_every_replica_in_sync() {
    let (mut snapshot, name) = snapshot_with_topic(2);
    // First pass: the replica map; second: the partitions.
    for _ in 0..2 {
        let actions = reduce(&snapshot, context());
        for action in actions {
            match action {
                Action::UpdateTopic { name, object, .. } => {
                    snapshot.topics.insert(name, Cached { version: Version(3), value: object });
                }
                Action::CreatePartition { key, object } => {
                    snapshot.partitions.insert(key, Cached { version: Version(4), value: object });
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(snapshot.partitions.len(), 2);
    for partition in 0..2 {
        let key = PartitionKey::new(name.clone(), PartitionId(partition));
        let created = &snapshot.partitions[&key].value;
        let replicas: Vec<SpuId> =
            created.spec.replicas.iter().map(|replica| replica.spu).collect();
        assert_eq!(created.status.in_sync_replicas, replicas, "in replica order");
        assert_eq!(created.status.partition_epoch, PartitionEpoch(1));
        assert_eq!(created.spec.leader, replicas[0]);
    }
}

#[test]
fn a_pass_over_an_older_partition_initializes_its_set_in_one_action() {
    let (mut snapshot, name) = snapshot_with_topic(1);
    let key = PartitionKey::new(name, PartitionId(0));
    let mut older = partition(2, &[]);
    older.status.partition_epoch = PartitionEpoch(0);
    snapshot.partitions.insert(key.clone(), Cached { version: Version(7), value: older });
    let actions: Vec<Action> = reduce_partitions(&snapshot, PreferredLeaders::Leave);
    let [Action::UpdatePartition { key: updated, version, object, events }] = &actions[..] else {
        panic!("one partition action expected: {actions:?}")
    };
    assert_eq!((updated, *version), (&key, Version(7)));
    assert_eq!(in_sync(object), [2]);
    assert_eq!(object.status.partition_epoch, PartitionEpoch(1));
    assert_eq!(events, &[PartitionEvent::LeaderAddedToInSync { leader: SpuId(2) }]);
}

#[test]
fn a_restarted_leader_leads_in_the_next_epoch() {
    let before = partition(1, &[1, 2, 3]);
    let after = leader_restarted(&before, SpuId(1)).expect("SPU 1 leads");
    assert_eq!(after.spec.leader, SpuId(1));
    assert_eq!(after.spec.leader_epoch, LeaderEpoch(6));
    assert_eq!(after.status.partition_epoch, PartitionEpoch(10));
    assert_eq!(in_sync(&after), [1, 2, 3]);
    assert_eq!(leader_restarted(&before, SpuId(2)), None, "a follower's restart changes nothing");
    let offline = PartitionObject {
        status: PartitionStatus {
            resolution: PartitionResolution::Offline,
            ..before.status.clone()
        },
        ..before.clone()
    };
    let after = leader_restarted(&offline, SpuId(1)).expect("SPU 1 still leads");
    assert_eq!(after.spec.leader_epoch, LeaderEpoch(6));
}

#[test]
fn a_held_preferred_replica_does_not_get_leadership_back() {
    let everyone = spus(&[(1, Online), (2, Online), (3, Online)]);
    let led_by_2 = partition(2, &[1, 2, 3]);
    let held = std::collections::BTreeSet::from([SpuId(1)]);
    let (unchanged, events) = next_state_holding(
        &led_by_2,
        &|spu| everyone.get(&spu).copied(),
        PreferredLeaders::Restore,
        &held,
    );
    assert_eq!(unchanged, led_by_2);
    assert!(events.is_empty());
    let (restored, _) = next(&led_by_2, &everyone, PreferredLeaders::Restore);
    assert_eq!(restored.spec.leader, SpuId(1));
}

#[test]
fn leadership_moves_off_an_spu_to_the_in_sync_replica_furthest_ahead() {
    let online = |spu: SpuId| spu != SpuId(3);
    let mut object = partition(1, &[1, 2, 3]);
    object.status.replicas = vec![report(2, 10, 10), report(3, 20, 20)];
    // SPU 3 is ahead but offline: SPU 2 leads, in the next epochs; the set is unchanged.
    let (moved, change) = move_leader_off(&object, SpuId(1), &online).expect("moved");
    assert_eq!((change.from, change.to), (SpuId(1), SpuId(2)));
    assert_eq!(moved.spec.leader, SpuId(2));
    assert_eq!(moved.spec.leader_epoch, LeaderEpoch(6));
    assert_eq!(moved.status.partition_epoch, PartitionEpoch(10));
    assert_eq!(in_sync(&moved), vec![1, 2, 3]);
    // Not the leader, or nobody else in sync and online: nothing to do.
    assert!(move_leader_off(&object, SpuId(2), &online).is_none());
    let alone = partition(1, &[1, 3]);
    assert!(move_leader_off(&alone, SpuId(1), &online).is_none());
}
