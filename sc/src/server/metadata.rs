//! Client metadata built from a cache snapshot: partition -> leader SPU, core, endpoints, epoch,
//! in-sync set. A partition whose leader cannot serve carries a retriable error: `PartitionOffline`
//! when no replica may lead (no in-sync replica online), `LeaderNotAvailable` while its leader's
//! SPU is not online otherwise.

use sluice_proto::api::metadata::{
    Changes, MetadataResponse, MetadataWatchUpdate, PartitionMetadata, SpuMetadata, TopicMetadata,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{CoreId, SpuId, UpdateEpoch};
use sluice_proto::object::{PartitionResolution, TopicName};
use std::collections::BTreeSet;

use crate::cache::Snapshot;

/// The metadata of `topics` (all when `None`), as of the snapshot's revision.
pub fn metadata(snapshot: &Snapshot, topics: Option<&[TopicName]>) -> MetadataResponse {
    let all_topics = topics.is_none();
    let names: Vec<TopicName> = match topics {
        Some(names) => names.to_vec(),
        None => snapshot.topics.keys().cloned().collect(),
    };
    let mut hosting = BTreeSet::new();
    let topics: Vec<TopicMetadata> = names
        .into_iter()
        .map(|name| {
            let metadata = topic_metadata(snapshot, name);
            for partition in &metadata.partitions {
                hosting.extend(partition.replicas.iter().map(|replica| replica.spu));
            }
            metadata
        })
        .collect();
    let spus = snapshot
        .spus
        .values()
        .filter(|spu| all_topics || hosting.contains(&spu.value.spec.id))
        .map(|spu| spu_metadata(&spu.value))
        .collect();
    MetadataResponse { epoch: UpdateEpoch(snapshot.revision.get()), spus, topics }
}

/// A full watch update (every update is a full snapshot: always applicable).
pub fn watch_update(snapshot: &Snapshot, topics: Option<&[TopicName]>) -> MetadataWatchUpdate {
    let response = metadata(snapshot, topics);
    MetadataWatchUpdate {
        epoch: response.epoch,
        spus: Changes::Full(response.spus),
        topics: Changes::Full(response.topics),
    }
}

fn spu_metadata(spu: &crate::objects::SpuObject) -> SpuMetadata {
    SpuMetadata {
        id: spu.spec.id,
        public_endpoint: spu.spec.public_endpoint.clone(),
        core_public_ports: spu.status.core_public_ports.clone(),
        rack: spu.spec.rack.clone(),
        encryption: spu.spec.encryption,
        online: spu.status.is_online(),
    }
}

fn topic_metadata(snapshot: &Snapshot, name: TopicName) -> TopicMetadata {
    if !snapshot.topics.contains_key(&name) {
        return TopicMetadata {
            name,
            error_code: ErrorCode::UnknownTopicOrPartition,
            partitions: Vec::new(),
        };
    }
    let partitions = snapshot
        .topic_partitions(&name)
        .map(|(key, partition)| {
            let spec = &partition.value.spec;
            let leader = spec.leader_placement();
            let leader_online =
                snapshot.spus.get(&spec.leader).is_some_and(|spu| spu.value.status.is_online());
            let error_code = match partition.value.status.resolution {
                PartitionResolution::Offline => ErrorCode::PartitionOffline,
                PartitionResolution::LeaderOffline => ErrorCode::LeaderNotAvailable,
                _ if leader.is_some() && leader_online => ErrorCode::None,
                _ => ErrorCode::LeaderNotAvailable,
            };
            PartitionMetadata {
                partition: key.partition,
                error_code,
                leader: leader.map_or(SpuId(-1), |placement| placement.spu),
                leader_core: leader.map_or(CoreId(0), |placement| placement.core),
                leader_epoch: spec.leader_epoch,
                replicas: spec.replicas.clone(),
                in_sync_replicas: partition.value.status.in_sync_replicas.clone(),
            }
        })
        .collect();
    TopicMetadata { name, error_code: ErrorCode::None, partitions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cached;
    use crate::controllers::reducer::{managed_spu, placement};
    use crate::objects::{PartitionObject, TopicObject};
    use crate::store::Version;
    use sluice_proto::ids::{LeaderEpoch, PartitionId};
    use sluice_proto::object::{
        PartitionKey, PartitionSpec, PartitionStatus, SpuResolution, TopicSpec, TopicStatus,
    };

    fn snapshot_with(resolution: PartitionResolution, leader_online: bool) -> Snapshot {
        let name = TopicName::new("t").unwrap();
        let mut snapshot = Snapshot::default();
        let topic = TopicObject { spec: TopicSpec::computed(1, 2), status: TopicStatus::default() };
        snapshot.topics.insert(name.clone(), Cached { version: Version(1), value: topic });
        for id in [1, 2] {
            let mut spu = managed_spu(SpuId(id), None);
            if id == 2 || leader_online {
                spu.status.resolution = SpuResolution::Online;
            }
            snapshot.spus.insert(SpuId(id), Cached { version: Version(1), value: spu });
        }
        let partition = PartitionObject {
            spec: PartitionSpec {
                replicas: vec![placement(1, 0), placement(2, 1)],
                leader: SpuId(1),
                leader_epoch: LeaderEpoch(3),
                ..PartitionSpec::default()
            },
            status: PartitionStatus {
                resolution,
                in_sync_replicas: vec![SpuId(1), SpuId(2)],
                ..PartitionStatus::default()
            },
        };
        let key = PartitionKey::new(name, PartitionId(0));
        snapshot.partitions.insert(key, Cached { version: Version(2), value: partition });
        snapshot
    }

    fn first_partition(snapshot: &Snapshot) -> PartitionMetadata {
        metadata(snapshot, None).topics[0].partitions[0].clone()
    }

    #[test]
    fn partition_errors_follow_the_resolution() {
        let online = first_partition(&snapshot_with(PartitionResolution::Online, true));
        assert_eq!(online.error_code, ErrorCode::None);
        assert_eq!(online.in_sync_replicas, vec![SpuId(1), SpuId(2)]);
        assert_eq!((online.leader, online.leader_epoch), (SpuId(1), LeaderEpoch(3)));
        let offline = first_partition(&snapshot_with(PartitionResolution::Offline, false));
        assert_eq!(offline.error_code, ErrorCode::PartitionOffline);
        assert!(offline.error_code.is_retriable());
        let electing = first_partition(&snapshot_with(PartitionResolution::LeaderOffline, false));
        assert_eq!(electing.error_code, ErrorCode::LeaderNotAvailable);
        let unseen = first_partition(&snapshot_with(PartitionResolution::Online, false));
        assert_eq!(unseen.error_code, ErrorCode::LeaderNotAvailable);
    }
}
