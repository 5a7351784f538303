//! Connecting to the cluster and getting the run's topic ready: created when asked (an existing
//! topic is reused as it is), then waited for until every partition has a reachable leader.

use std::time::Duration;

use sluice_client::{ClientError, Cluster, ErrorCode, TopicSpec};

use crate::args::WorkloadArgs;
use crate::error::PerfError;

/// Longest wait for a topic's partitions to all have leaders.
pub const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the SC(s) of `args.sc`.
pub fn connect(args: &WorkloadArgs) -> Result<Cluster, PerfError> {
    Ok(crate::connection::connect(&args.sc)?)
}

/// Creates the topic when `--create-topic` asks for it, then waits until every partition has
/// a leader; returns the partition count.
pub fn prepare_topic(cluster: &Cluster, args: &WorkloadArgs) -> Result<u32, PerfError> {
    if args.create_topic {
        let spec = TopicSpec {
            min_in_sync_replicas: args.min_in_sync,
            ..TopicSpec::computed(args.partitions, args.replication)
        };
        match cluster.admin().create_topic(&args.topic, spec) {
            Ok(()) => {}
            Err(ClientError::Server { code: ErrorCode::TopicAlreadyExists, .. }) => {
                eprintln!("topic {:?} exists; reusing it as it is", args.topic);
            }
            Err(error) => return Err(error.into()),
        }
    }
    wait_for_leaders(cluster, &args.topic, TOPIC_READY_TIMEOUT)
}

/// Waits until `topic` exists and each of its partitions (as many as its spec says) routes to
/// a leader.
pub fn wait_for_leaders(
    cluster: &Cluster,
    topic: &str,
    timeout: Duration,
) -> Result<u32, PerfError> {
    // The metadata shows a new topic's partitions as they are created; its spec says how many
    // there will be (the SDK asks the SC for it).
    let expected = cluster.partition_count(topic).unwrap_or(0);
    let ready = cluster.wait_for_metadata(timeout, |snapshot| {
        let count = snapshot.partition_count(topic)?.max(expected);
        let routed = (0..count).all(|partition| snapshot.route(topic, partition).is_ok());
        (count > 0 && routed).then_some(count)
    });
    match ready {
        Some(count) => Ok(count),
        None => {
            let snapshot = cluster.metadata();
            let state = match snapshot.partition_count(topic) {
                None => format!("topic {topic:?} does not exist (pass --create-topic?)"),
                Some(count) => format!("topic {topic:?} has {count} partitions, not all led"),
            };
            Err(PerfError::Timeout(format!("{state} after {timeout:?}")))
        }
    }
}
