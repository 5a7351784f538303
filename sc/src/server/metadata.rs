//! Client metadata built from a cache snapshot: partition -> leader SPU, core, endpoints, epoch.

use sluice_proto::api::metadata::{
    Changes, MetadataResponse, MetadataWatchUpdate, PartitionMetadata, SpuMetadata, TopicMetadata,
};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{CoreId, SpuId, UpdateEpoch};
use sluice_proto::object::TopicName;
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
            let error_code = if leader.is_some() && leader_online {
                ErrorCode::None
            } else {
                ErrorCode::LeaderNotAvailable
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
