//! The SPU connection manager of a real `sluice-sc`, driven by a small test SPU speaking the
//! control protocol over TCP.

mod process_common;

use process_common::test_spu::TestSpu;
use sluice_proto::api::control::{
    HeartbeatRequest, LiveReplica, LiveReplicaStatus, ReplicaUpdate, RequestSnapshot, SnapshotKind,
    SpuRegisterResponse, SpuUpdate,
};
use sluice_proto::api::metadata::{Change, Changes};
use sluice_proto::api::ApiKey;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, Offset, PartitionId, SpuId, TimestampMs};
use sluice_proto::object::{
    PartitionKey, ReplicaStatus, SpuResolution, SpuSpec, SpuType, TopicName, TopicSpec,
};
use sluice_testkit::process::{wait_for, ScProcess};

fn custom_spu(id: i32) -> SpuSpec {
    SpuSpec { id: SpuId(id), spu_type: SpuType::Custom, ..SpuSpec::default() }
}

fn spu_resolution(sc: &ScProcess, id: i32) -> Option<SpuResolution> {
    let spus = sc.admin().list_spus().unwrap().spus;
    spus.into_iter().find(|spu| spu.spec.id == SpuId(id)).map(|spu| spu.status.resolution)
}

#[test]
fn spu_registers_gets_replicas_goes_offline_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let sc = ScProcess::builder(&dir.path().join("data")).heartbeat_timeout_ms(1_000).start();
    let mut admin = sc.admin();
    assert!(admin.register_spu(custom_spu(1)).unwrap().error_code.is_ok());
    let first = TopicName::new("first").unwrap();
    assert!(admin
        .create_topic(first.clone(), TopicSpec::computed(2, 1))
        .unwrap()
        .error_code
        .is_ok());
    wait_for("partitions of the first topic", || {
        (admin.list_partitions(Some(first.clone())).unwrap().partitions.len() == 2).then_some(())
    });

    // An unknown SPU is refused with a clear error.
    let mut stranger = TestSpu::connect(sc.private_address);
    match stranger.register(77) {
        SpuRegisterResponse::Refused { error_code, reason } => {
            assert_eq!(error_code, ErrorCode::UnknownSpu);
            assert!(reason.contains("77"), "{reason}");
        }
        other => panic!("unknown SPU accepted: {other:?}"),
    }

    let mut spu = TestSpu::connect(sc.private_address);
    assert_eq!(spu.register(1), SpuRegisterResponse::Accepted);
    let spus: SpuUpdate = spu.next_as(ApiKey::SpuUpdate);
    let Changes::Full(specs) = &spus.changes else { panic!("first SPU update must be full") };
    assert_eq!(specs.iter().map(|peer| peer.spec.id).collect::<Vec<_>>(), [SpuId(1)]);
    let replicas: ReplicaUpdate = spu.next_as(ApiKey::ReplicaUpdate);
    let Changes::Full(assignments) = &replicas.changes else { panic!("first update must be full") };
    assert_eq!(assignments.len(), 2);
    wait_for("SPU online with its cores", || {
        let spus = admin.list_spus().unwrap().spus;
        let status = &spus[0].status;
        (status.resolution == SpuResolution::Online && status.cores == 4).then_some(())
    });

    // A new topic arrives as a delta on top of the full update, using the SPU's cores.
    let second = TopicName::new("second").unwrap();
    assert!(admin
        .create_topic(second.clone(), TopicSpec::computed(4, 1))
        .unwrap()
        .error_code
        .is_ok());
    let mut epoch = replicas.epoch;
    let mut added = Vec::new();
    while added.len() < 4 {
        let update = spu.next_replica_update();
        let Changes::Delta { base_epoch, changes } = update.changes else {
            panic!("delta expected")
        };
        assert_eq!(base_epoch, epoch, "deltas chain by epoch");
        epoch = update.epoch;
        for change in changes {
            if let Change::Upsert(assignment) = change {
                assert_eq!(assignment.key.topic, second);
                added.push(assignment.spec.replicas[0].core.get());
            }
        }
    }
    // The first topic's partitions sit on core 0 (placed before the SPU reported 4 cores).
    added.sort_unstable();
    assert_eq!(added, [1, 1, 2, 3], "the reported cores are used, least loaded first");

    // Live replica status from the leader lands in the partition status.
    let key = PartitionKey::new(first.clone(), PartitionId(0));
    let leader = ReplicaStatus {
        spu: SpuId(1),
        high_watermark: Offset(42),
        log_end_offset: Offset(43),
        durable_end_offset: Offset(42),
        lag_records: 0,
    };
    spu.send(&LiveReplicaStatus {
        spu: SpuId(1),
        replicas: vec![LiveReplica {
            key: key.clone(),
            leader_epoch: LeaderEpoch(0),
            leader,
            followers: vec![],
        }],
    });
    wait_for("live replica status recorded", || {
        let partitions = admin.list_partitions(Some(first.clone())).unwrap().partitions;
        let entry = partitions.into_iter().find(|entry| entry.key == key)?;
        (entry.status.leader.high_watermark == Offset(42)).then_some(())
    });

    // Silence: offline within the timeout (plus a controller pass).
    wait_for("silent SPU marked offline", || {
        (spu_resolution(&sc, 1) == Some(SpuResolution::Offline)).then_some(())
    });
    // Speaking again: back online.
    spu.send(&HeartbeatRequest { sent_at: TimestampMs(1) });
    wait_for("SPU back online", || {
        (spu_resolution(&sc, 1) == Some(SpuResolution::Online)).then_some(())
    });

    // Deleting a topic removes its replicas from the SPU with a delta (the SPU updates saying
    // it went offline and came back are skipped).
    assert!(admin.delete_topic(second.clone()).unwrap().error_code.is_ok());
    let mut removed = 0;
    while removed < 4 {
        let update = spu.next_replica_update();
        let Changes::Delta { base_epoch, changes } = update.changes else {
            panic!("delta expected")
        };
        assert_eq!(base_epoch, epoch);
        epoch = update.epoch;
        for change in changes {
            let Change::Remove(key) = change else { panic!("only removals expected") };
            assert_eq!(key.topic, second);
            removed += 1;
        }
    }
    // After an epoch gap the SPU asks for, and gets, full snapshots.
    spu.send(&RequestSnapshot { kind: SnapshotKind::All, last_applied: None });
    let spus: SpuUpdate = spu.next_as(ApiKey::SpuUpdate);
    assert!(matches!(spus.changes, Changes::Full(_)));
    let replicas: ReplicaUpdate = spu.next_as(ApiKey::ReplicaUpdate);
    assert!(replicas.epoch > epoch);
    let Changes::Full(assignments) = replicas.changes else { panic!("full update expected") };
    assert_eq!(assignments.len(), 2, "only the first topic's partitions remain");
}
