use super::*;
use crate::cache::Cached;
use crate::controllers::reducer::{managed_spu, placement};
use crate::objects::SpuObject;
use crate::store::embedded::EmbeddedStore;
use crate::store::Version;
use sluice_proto::ids::{PartitionEpoch, PartitionId};
use sluice_proto::object::{
    PartitionKey, PartitionSpec, PartitionStatus, SpuResolution, TopicName,
};

fn key() -> PartitionKey {
    PartitionKey::new(TopicName::new("orders").unwrap(), PartitionId(0))
}

/// Replicas 1, 2, 3; leader 1 in epoch 4; in sync [1, 2] at partition epoch 7.
fn partition() -> PartitionObject {
    PartitionObject {
        spec: PartitionSpec {
            replicas: vec![placement(1, 0), placement(2, 0), placement(3, 0)],
            leader: SpuId(1),
            leader_epoch: LeaderEpoch(4),
            ..PartitionSpec::default()
        },
        status: PartitionStatus {
            in_sync_replicas: vec![SpuId(1), SpuId(2)],
            partition_epoch: PartitionEpoch(7),
            ..PartitionStatus::default()
        },
    }
}

fn proposal(in_sync: &[i32]) -> AlterInSyncPartition {
    AlterInSyncPartition {
        key: key(),
        leader_epoch: LeaderEpoch(4),
        partition_epoch: PartitionEpoch(7),
        in_sync_replicas: in_sync.iter().copied().map(SpuId).collect(),
    }
}

fn all_online(_: SpuId) -> bool {
    true
}

#[test]
fn current_leader_grows_and_shrinks_the_set() {
    let grown = judge(&partition(), SpuId(1), &proposal(&[1, 2, 3]), &all_online);
    assert_eq!(grown, Verdict::Accepted(vec![SpuId(1), SpuId(2), SpuId(3)]));
    // Removing a member needs no liveness: an offline follower may leave.
    let shrunk = judge(&partition(), SpuId(1), &proposal(&[1]), &|_| false);
    assert_eq!(shrunk, Verdict::Accepted(vec![SpuId(1)]));
    let same = judge(&partition(), SpuId(1), &proposal(&[2, 1]), &all_online);
    assert_eq!(same, Verdict::Unchanged);
}

#[test]
fn stale_or_foreign_proposals_are_refused() {
    let refused = |proposer: i32, proposal: &AlterInSyncPartition| match judge(
        &partition(),
        SpuId(proposer),
        proposal,
        &all_online,
    ) {
        Verdict::Refused(code) => code,
        other => panic!("accepted: {other:?}"),
    };
    assert_eq!(refused(2, &proposal(&[1, 2, 3])), ErrorCode::NotLeader);
    let old_epoch = AlterInSyncPartition { leader_epoch: LeaderEpoch(3), ..proposal(&[1]) };
    assert_eq!(refused(1, &old_epoch), ErrorCode::FencedLeaderEpoch);
    let old_version = AlterInSyncPartition { partition_epoch: PartitionEpoch(6), ..proposal(&[1]) };
    assert_eq!(refused(1, &old_version), ErrorCode::InvalidUpdateVersion);
    let newer_version =
        AlterInSyncPartition { partition_epoch: PartitionEpoch(8), ..proposal(&[1]) };
    assert_eq!(refused(1, &newer_version), ErrorCode::InvalidUpdateVersion);
}

#[test]
fn malformed_sets_are_invalid() {
    for set in [&[][..], &[2, 3], &[1, 1, 2], &[1, 9]] {
        let verdict = judge(&partition(), SpuId(1), &proposal(set), &all_online);
        assert_eq!(verdict, Verdict::Refused(ErrorCode::InvalidRequest), "{set:?}");
    }
}

#[test]
fn an_added_member_must_be_online() {
    let online = |spu: SpuId| spu != SpuId(3);
    let verdict = judge(&partition(), SpuId(1), &proposal(&[1, 2, 3]), &online);
    assert_eq!(verdict, Verdict::Refused(ErrorCode::IneligibleReplica));
    // A member already in sync may stay although offline (the controller removes it).
    let online = |spu: SpuId| spu == SpuId(1);
    assert_eq!(judge(&partition(), SpuId(1), &proposal(&[1, 2]), &online), Verdict::Unchanged);
}

fn online_spu(id: i32) -> SpuObject {
    let mut spu = managed_spu(SpuId(id), None);
    spu.status.resolution = SpuResolution::Online;
    spu
}

#[test]
fn accepted_sets_are_stored_with_the_next_partition_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let store_key = partition_key(&key()).unwrap();
    let absent = ExpectedVersion::Absent;
    store.put_typed(ObjectKind::Partition, &store_key, &partition(), absent, None).unwrap();
    let mut snapshot = Snapshot::default();
    for id in [1, 2] {
        snapshot.spus.insert(SpuId(id), Cached { version: Version(1), value: online_spu(id) });
    }
    let request = |spu: i32, proposals: Vec<AlterInSyncPartition>| AlterInSyncRequest {
        spu: SpuId(spu),
        partitions: proposals,
    };
    let unknown = AlterInSyncPartition {
        key: PartitionKey::new(TopicName::new("other").unwrap(), PartitionId(0)),
        ..proposal(&[1])
    };
    let answer =
        alter_in_sync(&store, &snapshot, SpuId(1), &request(1, vec![proposal(&[1]), unknown]));
    assert!(answer.newest_write.is_some());
    let response = answer.response;
    let [shrunk, missing] = &response.partitions[..] else { panic!("{response:?}") };
    assert_eq!(shrunk.error_code, ErrorCode::None);
    assert_eq!(shrunk.leader_epoch, LeaderEpoch(4));
    let expected = InSyncSet { replicas: vec![SpuId(1)], partition_epoch: PartitionEpoch(8) };
    assert_eq!(shrunk.in_sync, expected);
    assert_eq!(missing.error_code, ErrorCode::UnknownTopicOrPartition);
    let stored = store.get_typed::<PartitionObject>(ObjectKind::Partition, &store_key).unwrap();
    assert_eq!(stored.unwrap().value.status.in_sync(), expected);

    // The same proposal again is based on an old version: refused, with the stored set.
    let again =
        alter_in_sync(&store, &snapshot, SpuId(1), &request(1, vec![proposal(&[1])])).response;
    assert_eq!(again.partitions[0].error_code, ErrorCode::InvalidUpdateVersion);
    assert_eq!(again.partitions[0].in_sync, expected);
    // Adding SPU 3, which is not online in the snapshot, is refused.
    let add = AlterInSyncPartition { partition_epoch: PartitionEpoch(8), ..proposal(&[1, 3]) };
    let refused = alter_in_sync(&store, &snapshot, SpuId(1), &request(1, vec![add]));
    assert_eq!(refused.newest_write, None);
    assert_eq!(refused.response.partitions[0].error_code, ErrorCode::IneligibleReplica);
    // A request naming another SPU than the session's is invalid.
    let foreign =
        alter_in_sync(&store, &snapshot, SpuId(1), &request(2, vec![proposal(&[1])])).response;
    assert_eq!(foreign.partitions[0].error_code, ErrorCode::InvalidRequest);
}
