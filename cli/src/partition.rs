//! `sluice partition list | rebalance-leaders`, and the partition table `topic describe` shows.
//!
//! The table has one row per replica so that a partition of three replicas stays readable:
//! the partition's own fields (status, leader, leader epoch, high watermark) on its first row,
//! then each replica's SPU and core, its state (leader, in sync, out of sync, offline) and its
//! log end offset and lag as the leader last reported them (`-` where no report came yet; a
//! report of a previous leader is not shown as the new leader's).
//! JSON and YAML print the partitions as the SC stores them (spec and status, every field:
//! partition epoch, in-sync set, each replica's HW, LEO, durable end and lag).

use std::collections::BTreeSet;

use anyhow::bail;
use sluice_client::{ClientError, ErrorCode, RebalanceLeadersResponse};
use sluice_proto::api::admin::PartitionEntry;
use sluice_proto::ids::SpuId;
use sluice_proto::object::{PartitionKey, PartitionResolution, ReplicaStatus, TopicName};

use crate::args::{PartitionCommand, PartitionListArgs, PartitionRebalanceArgs};
use crate::output::{self, Table};
use crate::sc_api::ScApi;

/// Runs a `partition` command.
pub fn run(sc: &str, command: &PartitionCommand) -> anyhow::Result<()> {
    match command {
        PartitionCommand::List(args) => list(sc, args),
        PartitionCommand::RebalanceLeaders(args) => rebalance_leaders(sc, args),
        PartitionCommand::Reassign(args) => crate::reassign::partition_reassign(sc, args),
    }
}

fn list(sc: &str, args: &PartitionListArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_deref().map(crate::admin::topic_name).transpose()?;
    let api = ScApi::connect(sc)?;
    let partitions = api.list_partitions(topic.as_ref())?;
    output::print(args.output.format, &partitions, || {
        table(&partitions, &offline_spus(&api)).render()
    })
}

/// The SPUs the SC sees offline, for the table's replica states; empty when the SC does not
/// answer (the table then shows no replica as offline).
pub fn offline_spus(api: &ScApi) -> BTreeSet<SpuId> {
    api.list_spus()
        .map(|spus| {
            spus.iter().filter(|spu| !spu.status.is_online()).map(|spu| spu.spec.id).collect()
        })
        .unwrap_or_default()
}

/// A partition's resolution as the table says it.
fn resolution_text(resolution: PartitionResolution) -> &'static str {
    match resolution {
        PartitionResolution::Init => "init",
        PartitionResolution::Online => "online",
        PartitionResolution::LeaderOffline => "leader offline",
        PartitionResolution::Offline => "offline",
    }
}

/// What one replica is, for the table.
fn replica_state(
    partition: &PartitionEntry,
    spu: SpuId,
    offline: &BTreeSet<SpuId>,
) -> &'static str {
    let in_sync = &partition.status.in_sync_replicas;
    if offline.contains(&spu) {
        "offline"
    } else if spu == partition.spec.leader {
        "leader"
    } else if in_sync.is_empty() {
        "-" // no in-sync set reported (yet)
    } else if in_sync.contains(&spu) {
        "in sync"
    } else {
        "out of sync"
    }
}

/// The leader's report of `spu`'s replica: the leader's own (`status.leader`) or a
/// follower's (`status.replicas`).
fn report(partition: &PartitionEntry, spu: SpuId) -> Option<&ReplicaStatus> {
    let status = &partition.status;
    if spu == partition.spec.leader && status.leader.spu == spu {
        return Some(&status.leader);
    }
    status.replicas.iter().find(|replica| replica.spu == spu)
}

/// The partition table: one row per replica, the partition's fields on its first row.
pub fn table(partitions: &[PartitionEntry], offline: &BTreeSet<SpuId>) -> Table {
    let mut table = Table::new(&[
        "TOPIC",
        "PARTITION",
        "STATUS",
        "LEADER",
        "EPOCH",
        "HW",
        "REPLICA",
        "CORE",
        "STATE",
        "LEO",
        "LAG",
    ]);
    for partition in partitions {
        let status = &partition.status;
        let mut first = true;
        for placement in &partition.spec.replicas {
            let partition_cells = if first {
                vec![
                    partition.key.topic.to_string(),
                    partition.key.partition.to_string(),
                    resolution_text(status.resolution).to_owned(),
                    partition.spec.leader.to_string(),
                    partition.spec.leader_epoch.to_string(),
                    report(partition, partition.spec.leader)
                        .map_or_else(|| "-".to_owned(), |leader| leader.high_watermark.to_string()),
                ]
            } else {
                vec![String::new(); 6]
            };
            first = false;
            let reported = report(partition, placement.spu);
            let lag = match reported {
                Some(_) if placement.spu == partition.spec.leader => "0".to_owned(),
                Some(replica) => replica.lag_records.to_string(),
                None => "-".to_owned(),
            };
            let mut row = partition_cells;
            row.extend([
                placement.spu.to_string(),
                placement.core.to_string(),
                replica_state(partition, placement.spu, offline).to_owned(),
                reported
                    .map_or_else(|| "-".to_owned(), |replica| replica.log_end_offset.to_string()),
                lag,
            ]);
            table.row(row);
        }
    }
    table
}

fn rebalance_leaders(sc: &str, args: &PartitionRebalanceArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_deref().map(crate::admin::topic_name).transpose()?;
    let api = ScApi::connect(sc)?;
    let response =
        match api.cluster().admin().rebalance_leaders(topic.as_ref().map(TopicName::as_str)) {
            Ok(response) => response,
            Err(error) if is_not_served(&error) => bail!(
                "the SC at {sc} does not serve leader rebalancing: it is older than this sluice; \
             upgrade sluice-sc ({error})"
            ),
            Err(ClientError::Server { code: ErrorCode::TopicNotFound, .. }) => {
                let name = topic.map(|topic| topic.to_string()).unwrap_or_default();
                bail!("topic \"{name}\" does not exist; see `sluice topic list`")
            }
            Err(error) => return Err(anyhow::Error::new(error).context("cannot rebalance leaders")),
        };
    output::print(args.output.format, &response, || rebalance_report(&response))
}

/// Whether an SC refused the request because it does not know it (an SC of an older version
/// answers an API it does not serve with `InvalidRequest` naming it).
fn is_not_served(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Server { code: ErrorCode::InvalidRequest, message }
            if message.contains("RebalanceLeaders")
    )
}

fn key_list(keys: &[PartitionKey]) -> String {
    keys.iter().map(|key| format!("  {key}\n")).collect()
}

fn partitions_word(count: usize) -> &'static str {
    if count == 1 {
        "partition"
    } else {
        "partitions"
    }
}

/// What `partition rebalance-leaders` prints for people.
pub fn rebalance_report(response: &RebalanceLeadersResponse) -> String {
    let (moved, not_eligible) = (&response.moved, &response.not_eligible);
    if moved.is_empty() && not_eligible.is_empty() {
        return "Every partition is led by its preferred replica; nothing moved.\n".into();
    }
    let mut text = String::new();
    if moved.is_empty() {
        text.push_str("No leadership moved.\n");
    } else {
        text.push_str(&format!(
            "Leadership moved to the preferred replica for {} {}:\n{}",
            moved.len(),
            partitions_word(moved.len()),
            key_list(moved)
        ));
    }
    if !not_eligible.is_empty() {
        text.push_str(&format!(
            "Not moved, the preferred replica is offline or not in sync, for {} {} (run again \
             once it has caught up):\n{}",
            not_eligible.len(),
            partitions_word(not_eligible.len()),
            key_list(not_eligible)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::ids::{CoreId, LeaderEpoch, Offset, PartitionId};
    use sluice_proto::object::{PartitionSpec, PartitionStatus, ReplicaPlacement};

    fn key(topic: &str, partition: u32) -> PartitionKey {
        PartitionKey::new(TopicName::new(topic).unwrap(), PartitionId(partition))
    }

    fn replica(spu: i32, log_end: i64, lag: u64) -> ReplicaStatus {
        ReplicaStatus {
            spu: SpuId(spu),
            high_watermark: Offset(90),
            log_end_offset: Offset(log_end),
            durable_end_offset: Offset(log_end),
            lag_records: lag,
        }
    }

    /// Partition orders/0 on SPUs 5001 (leader), 5002 (in sync) and 5003 (behind, out of
    /// sync), leader epoch 3, HW 90.
    fn three_replicas() -> PartitionEntry {
        let placement =
            |spu: i32, core: u16| ReplicaPlacement { spu: SpuId(spu), core: CoreId(core) };
        PartitionEntry {
            key: key("orders", 0),
            spec: PartitionSpec {
                replicas: vec![placement(5001, 0), placement(5002, 1), placement(5003, 0)],
                leader: SpuId(5001),
                leader_epoch: LeaderEpoch(3),
                config: Default::default(),
                reassignment: None,
            },
            status: PartitionStatus {
                resolution: PartitionResolution::Online,
                leader: replica(5001, 100, 0),
                in_sync_replicas: vec![SpuId(5001), SpuId(5002)],
                replicas: vec![replica(5002, 100, 0), replica(5003, 40, 60)],
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_replica_per_row_with_the_partition_on_the_first() {
        let text = table(&[three_replicas()], &BTreeSet::new()).render();
        let lines: Vec<Vec<&str>> =
            text.lines().map(|line| line.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            [
                "TOPIC",
                "PARTITION",
                "STATUS",
                "LEADER",
                "EPOCH",
                "HW",
                "REPLICA",
                "CORE",
                "STATE",
                "LEO",
                "LAG"
            ]
        );
        assert_eq!(
            lines[1],
            ["orders", "0", "online", "5001", "3", "90", "5001", "0", "leader", "100", "0"]
        );
        assert_eq!(lines[2], ["5002", "1", "in", "sync", "100", "0"]);
        assert_eq!(lines[3], ["5003", "0", "out", "of", "sync", "40", "60"]);
        // The replica columns line up under their headers.
        let column = text.lines().next().unwrap().find("REPLICA").unwrap();
        assert!(text.lines().skip(1).all(|line| line[column..].starts_with("50")), "{text}");
    }

    #[test]
    fn offline_and_unreported_replicas() {
        let mut partition = three_replicas();
        partition.status.resolution = PartitionResolution::LeaderOffline;
        partition.status.replicas.clear();
        let offline = BTreeSet::from([SpuId(5001)]);
        let stale = {
            let mut moved = partition.clone();
            moved.spec.leader = SpuId(5002);
            table(&[moved], &offline).render()
        };
        let first: Vec<&str> = stale.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(first[5..8], ["3", "-", "5001"], "no HW reported by 5002 yet: {stale}");
        let text = table(&[partition], &offline).render();
        let lines: Vec<String> = text
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(lines[1], "orders 0 leader offline 5001 3 90 5001 0 offline 100 0", "{text}");
        assert_eq!(lines[2], "5002 1 in sync - -", "{text}");
        assert_eq!(lines[3], "5003 0 out of sync - -", "{text}");
    }

    #[test]
    fn rebalance_reports() {
        let nothing = RebalanceLeadersResponse::default();
        assert!(rebalance_report(&nothing).contains("nothing moved"));
        let response = RebalanceLeadersResponse {
            moved: vec![key("orders", 0), key("orders", 2)],
            not_eligible: vec![key("orders", 1)],
            ..Default::default()
        };
        let text = rebalance_report(&response);
        assert!(text.starts_with("Leadership moved to the preferred replica for 2 partitions:\n  orders-0\n  orders-2\n"), "{text}");
        assert!(text.contains("offline or not in sync, for 1 partition (run again"), "{text}");
        assert!(text.ends_with("  orders-1\n"), "{text}");
        let none_moved =
            RebalanceLeadersResponse { not_eligible: vec![key("t", 0)], ..Default::default() };
        assert!(rebalance_report(&none_moved).starts_with("No leadership moved.\n"));
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["moved"][1]["partition"], 2, "{json}");
    }

    #[test]
    fn an_older_sc_is_recognised() {
        let old = ClientError::Server {
            code: ErrorCode::InvalidRequest,
            message: "RebalanceLeaders is not served on the SC's public address".into(),
        };
        assert!(is_not_served(&old));
        let other = ClientError::Server { code: ErrorCode::InvalidRequest, message: "bad".into() };
        assert!(!is_not_served(&other));
    }
}
