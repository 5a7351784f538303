use super::*;
use crate::controllers::reducer::placement;
use sluice_proto::ids::{LeaderEpoch, PartitionEpoch};
use sluice_proto::object::{PartitionStatus, ReplicaConfig};

/// Replicas 1, 2, 3 led by 1, all in sync, min-in-sync 2.
fn partition() -> PartitionObject {
    PartitionObject {
        spec: PartitionSpec {
            replicas: vec![placement(1, 0), placement(2, 0), placement(3, 0)],
            leader: SpuId(1),
            leader_epoch: LeaderEpoch(5),
            config: ReplicaConfig { min_in_sync_replicas: 2, ..ReplicaConfig::default() },
            reassignment: None,
        },
        status: PartitionStatus {
            resolution: PartitionResolution::Online,
            in_sync_replicas: vec![SpuId(1), SpuId(2), SpuId(3)],
            partition_epoch: PartitionEpoch(9),
            ..PartitionStatus::default()
        },
    }
}

fn all_online(_: SpuId) -> Option<SpuResolution> {
    Some(SpuResolution::Online)
}

fn ids(replicas: &[ReplicaPlacement]) -> Vec<i32> {
    replicas.iter().map(|replica| replica.spu.get()).collect()
}

#[test]
fn a_move_widens_waits_moves_the_leader_then_shrinks() {
    let target = vec![placement(4, 1), placement(2, 0), placement(5, 0)];
    let started = begin(&partition(), target.clone(), Some(1 << 20)).unwrap().unwrap();
    assert_eq!(ids(&started.spec.replicas), vec![4, 2, 5, 1, 3]);
    assert_eq!(started.status.in_sync_replicas.len(), 3, "added replicas start out of sync");
    assert_eq!(step(&started, &all_online), None, "waits for 4 and 5");
    let mut caught_up = started.clone();
    caught_up.status.in_sync_replicas.push(SpuId(4));
    assert_eq!(step(&caught_up, &all_online), None, "5 still out of sync");
    caught_up.status.in_sync_replicas.push(SpuId(5));
    let (moved, event) = step(&caught_up, &all_online).unwrap();
    assert!(matches!(event, ReassignEvent::LeaderMoved(change) if change.to == SpuId(4)));
    assert_eq!(moved.spec.leader_epoch, LeaderEpoch(6));
    assert_eq!(moved.status.partition_epoch, PartitionEpoch(10));
    let (done, event) = step(&moved, &all_online).unwrap();
    assert_eq!(
        event,
        ReassignEvent::Completed {
            replicas: vec![SpuId(4), SpuId(2), SpuId(5)],
            dropped: vec![SpuId(1), SpuId(3)]
        }
    );
    assert_eq!(done.spec.replicas, target);
    assert_eq!(done.spec.reassignment, None);
    assert_eq!(done.status.in_sync_replicas, vec![SpuId(2), SpuId(4), SpuId(5)]);
    assert_eq!(step(&done, &all_online), None);
}

#[test]
fn the_leader_moves_to_the_first_online_target_replica() {
    let target = vec![placement(4, 0), placement(5, 0)];
    let mut object = begin(&partition(), target, None).unwrap().unwrap();
    object.status.in_sync_replicas.extend([SpuId(4), SpuId(5)]);
    let four_offline = |spu: SpuId| {
        Some(if spu == SpuId(4) { SpuResolution::Offline } else { SpuResolution::Online })
    };
    let (moved, _) = step(&object, &four_offline).unwrap();
    assert_eq!(moved.spec.leader, SpuId(5));
}

#[test]
fn nothing_moves_while_the_partition_is_offline() {
    let mut object =
        begin(&partition(), vec![placement(2, 0), placement(3, 0)], None).unwrap().unwrap();
    object.status.resolution = PartitionResolution::Offline;
    assert_eq!(step(&object, &all_online), None);
}

#[test]
fn refusals() {
    let current = partition();
    assert_eq!(begin(&current, vec![], None), Err(ReassignError::EmptyTarget));
    assert_eq!(
        begin(&current, vec![placement(4, 0), placement(4, 1)], None),
        Err(ReassignError::DuplicateSpu { spu: SpuId(4) })
    );
    assert_eq!(
        begin(&current, vec![placement(4, 0)], None),
        Err(ReassignError::BelowMinInSync { replicas: 1, min_in_sync: 2 })
    );
    assert_eq!(
        begin(&current, vec![placement(1, 1), placement(4, 0)], None),
        Err(ReassignError::CoreChange { spu: SpuId(1), current: 0 })
    );
    assert_eq!(begin(&current, current.spec.replicas.clone(), None), Ok(None));
    let moving = begin(&current, vec![placement(4, 0), placement(5, 0)], None).unwrap().unwrap();
    assert!(matches!(
        begin(&moving, vec![placement(1, 0), placement(2, 0)], None),
        Err(ReassignError::InProgress { .. })
    ));
    assert_eq!(cancel(&current), Err(ReassignError::NotInProgress));
}

#[test]
fn a_cancel_goes_back_and_drops_the_added_replicas() {
    let moving =
        begin(&partition(), vec![placement(4, 0), placement(5, 0)], None).unwrap().unwrap();
    let cancelled = cancel(&moving).unwrap();
    assert_eq!(ids(&cancelled.spec.replicas), vec![1, 2, 3, 4, 5], "none dropped, original first");
    let (done, event) = step(&cancelled, &all_online).unwrap();
    assert!(matches!(event, ReassignEvent::Completed { .. }));
    assert_eq!(ids(&done.spec.replicas), vec![1, 2, 3]);
    assert_eq!(done.spec.leader, SpuId(1));
}
