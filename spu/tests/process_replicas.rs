//! How a real `sluice-spu` follows the SC: live replica status reaches the SC, a deleted
//! topic's replicas stop and their directories are set aside for the deleted-replica
//! retention (60 s by default), and a topic re-created under the same name starts empty.

mod process_common;

use process_common::{batch, value_for, wait_for, Cluster, SpuClient};
use sluice_proto::api::fetch::Isolation;
use sluice_proto::api::list_offsets::OffsetSpec;
use sluice_proto::api::produce::Acks;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{Offset, SpuId};
use sluice_proto::object::PartitionResolution;

const CORES: u16 = 2;

#[test]
fn live_status_reaches_the_sc_and_removed_replicas_are_set_aside() {
    let cluster = Cluster::start(CORES);
    let topic = cluster.create_topic("followed", 2);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    for partition in 0..2u32 {
        for index in 0..(3 + partition as usize) {
            let value = value_for(partition, index, 100);
            let outcome = client.produce(&topic, partition, &batch(&[&value], 1), Acks::Leader);
            assert_eq!(outcome.error_code, ErrorCode::None);
        }
    }
    // The SC records each leader's HW and LEO from the SPU's live replica status.
    let mut admin = cluster.sc.admin();
    wait_for("the SC to record the leaders' offsets", || {
        let partitions = admin.list_partitions(Some(topic.clone())).ok()?.partitions;
        let reported = partitions.iter().all(|entry| {
            let expected = Offset(3 + i64::from(entry.key.partition.get()));
            entry.status.leader.spu == SpuId(process_common::SPU_ID)
                && entry.status.leader.log_end_offset == expected
                && entry.status.leader.high_watermark == expected
                && entry.status.resolution == PartitionResolution::Online
        });
        (partitions.len() == 2 && reported).then_some(())
    });

    // Deleting the topic stops its replicas; their directories are renamed, not yet removed.
    let deleted = admin.delete_topic(topic.clone()).expect("delete the topic");
    assert!(deleted.error_code.is_ok(), "{deleted:?}");
    wait_for("the SPU to stop serving the deleted topic", || {
        let listed = client.list_offset(&topic, 0, OffsetSpec::Latest, Isolation::ReadCommitted);
        (listed.error_code == ErrorCode::UnknownTopicOrPartition).then_some(())
    });
    let replicas_dir =
        Cluster::spu_dir(&cluster.dir).join(format!("spu-{}", process_common::SPU_ID));
    for partition in 0..2 {
        let directory = replicas_dir.join(format!("followed-{partition}"));
        let prefix = format!("followed-{partition}.deleted-");
        wait_for("the replica directory to be set aside", || {
            let marked = std::fs::read_dir(&replicas_dir)
                .expect("replicas directory")
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
                .filter(|entry| entry.path().join("00000000000000000000.log").is_file())
                .count();
            (marked == 1 && !directory.exists()).then_some(())
        });
    }

    // Re-creating it starts from empty logs (the old files are not reattached).
    let topic = cluster.create_topic("followed", 2);
    for partition in 0..2u32 {
        let latest =
            client.list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted);
        assert_eq!(latest.offset, Some(Offset(0)));
    }
}

#[test]
fn partitions_hosted_elsewhere_are_refused_and_core_ports_are_published() {
    let cluster = Cluster::start(CORES);
    let second_id = process_common::SPU_ID + 1;
    let spec = sluice_proto::object::SpuSpec {
        id: SpuId(second_id),
        spu_type: sluice_proto::object::SpuType::Custom,
        ..Default::default()
    };
    assert!(cluster.sc.admin().register_spu(spec).unwrap().error_code.is_ok());
    let second = process_common::start_spu(
        second_id,
        cluster.sc.private_address,
        &cluster.dir.path().join("second"),
        1,
        &[],
    );
    let mut admin = cluster.sc.admin();
    wait_for("both SPUs online", || {
        let spus = admin.list_spus().ok()?.spus;
        let online = spus
            .iter()
            .filter(|spu| spu.status.resolution == sluice_proto::object::SpuResolution::Online)
            .count();
        (online == 2).then_some(())
    });
    let topic = sluice_proto::object::TopicName::new("split").unwrap();
    let created =
        admin.create_topic(topic.clone(), sluice_proto::object::TopicSpec::computed(4, 1)).unwrap();
    assert!(created.error_code.is_ok(), "{created:?}");
    let metadata = wait_for("partitions on both SPUs", || {
        let metadata = admin.metadata(Some(vec![topic.clone()])).ok()?;
        let partitions = &metadata.topics.first()?.partitions;
        let leaders: std::collections::BTreeSet<SpuId> =
            partitions.iter().map(|partition| partition.leader).collect();
        (partitions.len() == 4 && leaders.len() == 2).then_some(metadata)
    });
    // Every SPU publishes the per-core ports it registered (index = core).
    for spu in &metadata.spus {
        let expected: Vec<u16> = if spu.id == SpuId(process_common::SPU_ID) {
            cluster.spu.core_addresses.iter().map(|address| address.port()).collect()
        } else {
            second.core_addresses.iter().map(|address| address.port()).collect()
        };
        assert_eq!(spu.core_public_ports, expected, "SPU {}", spu.id);
    }
    let mut first = SpuClient::connect(cluster.spu.public_address);
    let elsewhere = metadata.topics[0]
        .partitions
        .iter()
        .find(|partition| partition.leader == SpuId(second_id))
        .expect("a partition led by the second SPU")
        .partition
        .get();
    wait_for("the second SPU to serve its partition", || {
        let mut client = SpuClient::connect(second.public_address);
        let listed =
            client.list_offset(&topic, elsewhere, OffsetSpec::Latest, Isolation::ReadCommitted);
        listed.error_code.is_ok().then_some(())
    });
    // The SC sends an SPU only the replicas it hosts: a partition hosted elsewhere is unknown
    // here (retriable after a metadata refresh, like NotLeader).
    let outcome = first.produce(&topic, elsewhere, &batch(&[b"misrouted"], 1), Acks::Leader);
    assert_eq!(outcome.error_code, ErrorCode::UnknownTopicOrPartition);
    assert!(outcome.error_code.needs_metadata_refresh() && outcome.error_code.is_retriable());
    let (header, _) = first.fetch(&topic, elsewhere, Offset(0), (0, 0), Isolation::ReadCommitted);
    assert_eq!(header.error_code, ErrorCode::UnknownTopicOrPartition);
    let mut right = SpuClient::connect(second.public_address);
    let outcome = right.produce(&topic, elsewhere, &batch(&[b"routed"], 1), Acks::Leader);
    assert_eq!((outcome.error_code, outcome.base_offset), (ErrorCode::None, Some(Offset(0))));

    // A partition this SPU hosts as a follower (replication 2) is NotLeader here.
    let pair = sluice_proto::object::TopicName::new("pair").unwrap();
    let created =
        admin.create_topic(pair.clone(), sluice_proto::object::TopicSpec::computed(2, 2)).unwrap();
    assert!(created.error_code.is_ok(), "{created:?}");
    let followed = wait_for("a pair partition led by the second SPU", || {
        let metadata = admin.metadata(Some(vec![pair.clone()])).ok()?;
        let partitions = &metadata.topics.first()?.partitions;
        partitions
            .iter()
            .find(|partition| partition.leader == SpuId(second_id))
            .map(|partition| partition.partition.get())
    });
    wait_for("NotLeader from the follower SPU", || {
        let outcome = first.produce(&pair, followed, &batch(&[b"to follower"], 1), Acks::Leader);
        (outcome.error_code == ErrorCode::NotLeader).then_some(())
    });
}
