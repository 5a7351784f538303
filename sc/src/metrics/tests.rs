use std::sync::Arc;

use sluice_proto::ids::{PartitionId, SpuId};
use sluice_proto::object::{
    PartitionKey, PartitionSpec, PartitionStatus, SpuSpec, SpuStatus, TopicName,
};

use super::*;
use crate::cache::Cached;
use crate::controllers::reducer::placement;
use crate::objects::{PartitionObject, SpuObject};
use crate::store::Version;

fn spu(resolution: SpuResolution) -> Cached<SpuObject> {
    let status = SpuStatus { resolution, ..SpuStatus::default() };
    Cached { version: Version(1), value: SpuObject { spec: SpuSpec::default(), status } }
}

fn partition(resolution: PartitionResolution, in_sync: &[i32]) -> Cached<PartitionObject> {
    let spec = PartitionSpec {
        replicas: vec![placement(1, 0), placement(2, 0), placement(3, 0)],
        ..PartitionSpec::default()
    };
    let status = PartitionStatus {
        resolution,
        in_sync_replicas: in_sync.iter().copied().map(SpuId).collect(),
        ..PartitionStatus::default()
    };
    Cached { version: Version(2), value: PartitionObject { spec, status } }
}

fn snapshot() -> Snapshot {
    let mut snapshot = Snapshot { revision: Version(7), listed: true, ..Snapshot::default() };
    snapshot.spus.insert(SpuId(1), spu(SpuResolution::Online));
    snapshot.spus.insert(SpuId(2), spu(SpuResolution::Online));
    snapshot.spus.insert(SpuId(3), spu(SpuResolution::Offline));
    let resolutions = [
        (PartitionResolution::Online, &[1, 2, 3][..]),
        (PartitionResolution::Online, &[1, 2][..]),
        (PartitionResolution::LeaderOffline, &[3][..]),
        (PartitionResolution::Offline, &[3][..]),
    ];
    for (index, (resolution, in_sync)) in resolutions.into_iter().enumerate() {
        let key = PartitionKey {
            topic: TopicName::new("t").unwrap(),
            partition: PartitionId(u32::try_from(index).unwrap()),
        };
        snapshot.partitions.insert(key, partition(resolution, in_sync));
    }
    snapshot
}

#[test]
fn readiness_needs_the_leadership_and_a_listed_cache() {
    let listed = Arc::new(snapshot());
    let unlisted = Arc::new(Snapshot::default());
    let view =
        |active, snapshot: Option<&Arc<Snapshot>>| ScView { active, snapshot: snapshot.cloned() };
    assert_eq!(readiness(&view(true, Some(&listed))), Readiness::Ready);
    assert!(
        matches!(readiness(&view(false, Some(&listed))), Readiness::NotReady(reason) if reason.starts_with("standby"))
    );
    assert!(matches!(readiness(&view(false, None)), Readiness::NotReady(_)));
    assert!(
        matches!(readiness(&view(true, None)), Readiness::NotReady(reason) if reason.starts_with("starting"))
    );
    assert!(
        matches!(readiness(&view(true, Some(&unlisted))), Readiness::NotReady(reason) if reason.starts_with("starting"))
    );
}

#[test]
fn counts_spus_partitions_by_state_and_under_replicated() {
    let counts = count(&snapshot());
    assert_eq!(
        counts,
        ClusterCounts {
            spus_online: 2,
            spus_offline: 1,
            partitions_init: 0,
            partitions_online: 2,
            partitions_leader_offline: 1,
            partitions_offline: 1,
            partitions_under_replicated: 3,
        }
    );
}

#[test]
fn render_writes_gauges_counters_and_a_cumulative_histogram() {
    let metrics = ScMetrics::new();
    metrics.record_election(false);
    metrics.record_election(true);
    metrics.record_write(Duration::from_micros(300), false);
    metrics.record_write(Duration::from_secs(5), true);
    let view = ScView { active: true, snapshot: Some(Arc::new(snapshot())) };
    let mut text = String::new();
    render(&view, &metrics, &mut text);
    for line in [
        "sluice_sc_active 1\n",
        "sluice_sc_ready 1\n",
        "sluice_sc_spus{state=\"online\"} 2\n",
        "sluice_sc_spus{state=\"offline\"} 1\n",
        "sluice_sc_partitions{state=\"leader_offline\"} 1\n",
        "sluice_sc_partitions_under_replicated 3\n",
        "sluice_sc_leader_elections_total 2\n",
        "sluice_sc_unclean_leader_elections_total 1\n",
        "sluice_sc_store_write_errors_total 1\n",
        "sluice_sc_store_write_seconds_bucket{le=\"0.00025\"} 0\n",
        "sluice_sc_store_write_seconds_bucket{le=\"0.0005\"} 1\n",
        "sluice_sc_store_write_seconds_bucket{le=\"1\"} 1\n",
        "sluice_sc_store_write_seconds_bucket{le=\"+Inf\"} 2\n",
        "sluice_sc_store_write_seconds_count 2\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    // A standby exports no cluster gauges (its view is not current).
    let mut standby = String::new();
    render(&ScView::default(), &metrics, &mut standby);
    assert!(standby.contains("sluice_sc_active 0\n"));
    assert!(!standby.contains("sluice_sc_spus"));
}

#[test]
fn routes_answer_with_their_status() {
    let ready = || ScView { active: true, snapshot: Some(Arc::new(snapshot())) };
    let standby = ScView::default;
    assert_eq!(server::respond("/health/live", &standby).0, 200);
    assert_eq!(server::respond("/health/ready", &ready).0, 200);
    let (status, body) = server::respond("/health/ready", &standby);
    assert_eq!(status, 503);
    assert!(body.starts_with("standby"));
    assert_eq!(server::respond("/metrics", &ready).0, 200);
    assert_eq!(server::respond("/nope", &ready).0, 404);
}
