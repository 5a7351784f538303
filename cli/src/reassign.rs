//! `sluice topic alter`, `sluice partition reassign` and `sluice spu decommission`: growing a
//! topic and moving replicas. The SC stores each move and carries it out; these commands start
//! moves and follow them through the partitions' specs and statuses.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sluice_client::{ClientError, ErrorCode};
use sluice_proto::api::admin::{
    PartitionEntry, PartitionReassignment, ReassignPartitionsResponse, ReassignmentChange,
    ReplicaTarget,
};
use sluice_proto::ids::{CoreId, Offset, PartitionId, SpuId};
use sluice_proto::object::PartitionKey;

use crate::args::{PartitionReassignArgs, SpuDecommissionArgs, TopicAlterArgs};
use crate::output::{self, Table};
use crate::sc_api::ScApi;

/// How often `--wait` and `decommission` look at the moves.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often a waiting command prints its progress.
const PRINT_INTERVAL: Duration = Duration::from_secs(5);

/// `sluice topic alter NAME --partitions N`.
pub fn topic_alter(sc: &str, args: &TopicAlterArgs) -> anyhow::Result<()> {
    let name = crate::admin::topic_name(&args.name)?;
    let api = ScApi::connect(sc)?;
    match api.cluster().admin().alter_topic_partitions(name.as_str(), args.partitions) {
        Ok(()) => {}
        Err(ClientError::Server { code: ErrorCode::TopicNotFound, .. }) => {
            bail!("topic \"{name}\" does not exist; see `sluice topic list`")
        }
        Err(ClientError::Server { code: ErrorCode::InvalidPartitions, message }) => {
            bail!("cannot change the partitions of \"{name}\": {}", message)
        }
        Err(error) => return Err(anyhow::Error::new(error).context("cannot add partitions")),
    }
    println!("topic \"{name}\" now has {} partitions", args.partitions);
    println!(
        "note: records with a key go to hash(key) modulo the partition count, so a key may now \
         go to a different partition than its earlier records (per-key order holds from here on)"
    );
    Ok(())
}

/// One partition of a plan file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: u32,
    /// The new replicas, preferred leader first.
    pub replicas: Vec<PlanReplica>,
}

/// A replica of a plan: an SPU id (the SC picks the core), or an SPU and its core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlanReplica {
    /// An SPU id.
    Spu(i32),
    /// An SPU and one of its cores.
    Placed {
        /// The SPU id.
        spu: i32,
        /// The core.
        core: u16,
    },
}

/// A plan file: `{"partitions": [{"topic": T, "partition": N, "replicas": [..]}, ..]}`, the
/// input of `partition reassign --plan` and the output of `cluster rebalance --dry-run -O json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The partitions to move.
    pub partitions: Vec<PlanEntry>,
}

fn partition_key(topic: &str, partition: u32) -> anyhow::Result<PartitionKey> {
    Ok(PartitionKey::new(crate::admin::topic_name(topic)?, PartitionId(partition)))
}

fn read_plan(path: &std::path::Path) -> anyhow::Result<Vec<PartitionReassignment>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a reassignment plan", path.display()))?;
    plan_requests(plan)
}

/// The reassignment requests of a plan.
pub fn plan_requests(plan: Plan) -> anyhow::Result<Vec<PartitionReassignment>> {
    plan.partitions
        .into_iter()
        .map(|entry| {
            let target = entry
                .replicas
                .iter()
                .map(|replica| match *replica {
                    PlanReplica::Spu(spu) => ReplicaTarget { spu: SpuId(spu), core: None },
                    PlanReplica::Placed { spu, core } => {
                        ReplicaTarget { spu: SpuId(spu), core: Some(CoreId(core)) }
                    }
                })
                .collect();
            Ok(PartitionReassignment {
                key: partition_key(&entry.topic, entry.partition)?,
                change: ReassignmentChange::Move(target),
            })
        })
        .collect()
}

/// MiB/s on the command line to bytes per second.
pub fn throttle_bytes(throttle: Option<f64>) -> anyhow::Result<Option<u64>> {
    match throttle {
        None => Ok(None),
        Some(mib) if mib.is_finite() && mib > 0.0 => Ok(Some((mib * 1024.0 * 1024.0) as u64)),
        Some(mib) => bail!("--throttle must be a positive number of MiB/s, got {mib}"),
    }
}

/// `sluice partition reassign ...`.
pub fn partition_reassign(sc: &str, args: &PartitionReassignArgs) -> anyhow::Result<()> {
    let api = ScApi::connect(sc)?;
    if args.status {
        let partitions = api.list_partitions(None)?;
        let rows = progress_rows(&partitions);
        return output::print(args.output.format, &rows, || progress_table(&rows).render());
    }
    let requests = if let Some(plan) = &args.plan {
        read_plan(plan)?
    } else {
        let (Some(topic), Some(partition)) = (&args.topic, args.partition) else {
            bail!("name the topic and partition to move (or give --plan FILE)");
        };
        let change = if args.cancel {
            ReassignmentChange::Cancel
        } else {
            let target =
                args.to_spus.iter().map(|spu| ReplicaTarget { spu: SpuId(*spu), core: None });
            ReassignmentChange::Move(target.collect())
        };
        vec![PartitionReassignment { key: partition_key(topic, partition)?, change }]
    };
    start_moves(&api, requests, throttle_bytes(args.throttle)?, args.wait)
}

/// Starts the moves, prints each partition's result and, with `wait`, follows them (progress
/// every few seconds) until none is in progress.
pub fn start_moves(
    api: &ScApi,
    requests: Vec<PartitionReassignment>,
    throttle: Option<u64>,
    wait: bool,
) -> anyhow::Result<()> {
    let response = api
        .cluster()
        .admin()
        .reassign_partitions(requests, throttle)
        .context("cannot start the reassignment")?;
    let started = print_results(&response);
    if started.is_empty() {
        bail!("no move was started");
    }
    if wait {
        wait_moves(api, |partitions| {
            partitions
                .iter()
                .any(|entry| started.contains(&entry.key) && entry.spec.reassignment.is_some())
        })?;
        println!("every move completed");
    }
    Ok(())
}

/// Prints each partition's result; returns the partitions whose move was stored.
fn print_results(response: &ReassignPartitionsResponse) -> Vec<PartitionKey> {
    let mut started = Vec::new();
    for result in &response.results {
        if result.error_code.is_ok() {
            let spus: Vec<String> =
                result.target.iter().map(|replica| replica.spu.to_string()).collect();
            match &result.message {
                Some(message) => println!("{}: {message}", result.key),
                None => {
                    println!("{}: moving to SPUs {}", result.key, spus.join(","));
                    started.push(result.key.clone());
                }
            }
        } else {
            let message = result.message.clone().unwrap_or_else(|| result.error_code.to_string());
            eprintln!("{}: not moved: {message}", result.key);
        }
    }
    started
}

/// Polls the partitions until `moving` says none of interest moves, printing progress.
fn wait_moves(api: &ScApi, moving: impl Fn(&[PartitionEntry]) -> bool) -> anyhow::Result<()> {
    let mut last_print = Instant::now();
    loop {
        let partitions = api.list_partitions(None)?;
        if !moving(&partitions) {
            return Ok(());
        }
        if last_print.elapsed() >= PRINT_INTERVAL {
            last_print = Instant::now();
            let rows = progress_rows(&partitions);
            let done: usize = rows.iter().filter(|row| row.in_sync).count();
            println!("{done} of {} moving replicas in sync", rows.len());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One replica being added by a move in progress.
#[derive(Clone, Debug, Serialize)]
pub struct ProgressRow {
    /// The partition.
    pub partition: PartitionKey,
    /// The SPU the replica is added on.
    pub spu: SpuId,
    /// Its log end offset as the leader last reported it (`None`: no report yet).
    pub log_end_offset: Option<Offset>,
    /// The leader's high watermark.
    pub leader_high_watermark: Offset,
    /// Whether it is in the in-sync set.
    pub in_sync: bool,
    /// Target replicas in sync / target replicas, of the partition.
    pub target_in_sync: (usize, usize),
}

/// The replicas being added by every move in progress.
pub fn progress_rows(partitions: &[PartitionEntry]) -> Vec<ProgressRow> {
    let mut rows = Vec::new();
    for entry in partitions {
        let Some(moving) = &entry.spec.reassignment else { continue };
        let in_sync = &entry.status.in_sync_replicas;
        let target_in_sync =
            moving.target.iter().filter(|replica| in_sync.contains(&replica.spu)).count();
        for spu in moving.adding() {
            let report = entry.status.replicas.iter().find(|report| report.spu == spu);
            rows.push(ProgressRow {
                partition: entry.key.clone(),
                spu,
                log_end_offset: report.map(|report| report.log_end_offset),
                leader_high_watermark: entry.status.leader.high_watermark,
                in_sync: in_sync.contains(&spu),
                target_in_sync: (target_in_sync, moving.target.len()),
            });
        }
        if moving.adding().next().is_none() {
            // A move that only drops or reorders replicas (or a cancel): one row for it.
            rows.push(ProgressRow {
                partition: entry.key.clone(),
                spu: entry.spec.leader,
                log_end_offset: Some(entry.status.leader.log_end_offset),
                leader_high_watermark: entry.status.leader.high_watermark,
                in_sync: true,
                target_in_sync: (target_in_sync, moving.target.len()),
            });
        }
    }
    rows
}

/// The progress table.
pub fn progress_table(rows: &[ProgressRow]) -> Table {
    let mut table =
        Table::new(&["PARTITION", "ADDING ON SPU", "LEO", "LEADER HW", "STATE", "TARGET IN SYNC"]);
    for row in rows {
        let leo = row.log_end_offset.map_or_else(|| "-".to_owned(), |offset| offset.to_string());
        let state = if row.in_sync { "in sync" } else { "catching up" };
        let target = format!("{}/{}", row.target_in_sync.0, row.target_in_sync.1);
        table.row(vec![
            row.partition.to_string(),
            row.spu.to_string(),
            leo,
            row.leader_high_watermark.to_string(),
            state.to_owned(),
            target,
        ]);
    }
    if rows.is_empty() {
        table.row(vec!["(no move in progress)".to_owned()]);
    }
    table
}

/// `sluice spu decommission ID`.
pub fn spu_decommission(sc: &str, args: &SpuDecommissionArgs) -> anyhow::Result<()> {
    let api = ScApi::connect(sc)?;
    let id = SpuId(args.id);
    let throttle = throttle_bytes(args.throttle)?;
    let response = match api.cluster().admin().decommission_spu(id, throttle) {
        Ok(response) => response,
        Err(ClientError::Server { code, message }) => {
            bail!("{message} ({code})")
        }
        Err(error) => return Err(anyhow::Error::new(error).context("cannot decommission")),
    };
    print_results(&response);
    let refused = response.results.iter().filter(|result| !result.error_code.is_ok()).count();
    if refused > 0 {
        bail!("{refused} partitions cannot be moved off SPU {id} now; see above");
    }
    if args.no_wait {
        println!("moves started; run the command again to unregister SPU {id} once they end");
        return Ok(());
    }
    let names_spu = |partitions: &[PartitionEntry]| {
        partitions.iter().any(|entry| entry.spec.replicas.iter().any(|replica| replica.spu == id))
    };
    wait_moves(&api, names_spu)?;
    let managed = api.list_spus()?.iter().any(|spu| {
        spu.spec.id == id && spu.spec.spu_type == sluice_proto::object::SpuType::Managed
    });
    if managed {
        println!("no partition has a replica on SPU {id}; it is managed by an SPU group: shrink the group to remove it");
        return Ok(());
    }
    api.unregister_spu(id)?;
    println!("no partition has a replica on SPU {id}; SPU {id} unregistered: stop its process");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_files_name_spus_or_spus_and_cores() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("plan.json");
        let text = r#"{"partitions": [{"topic": "orders", "partition": 2,
            "replicas": [4, {"spu": 5, "core": 1}]}]}"#;
        std::fs::write(&path, text).unwrap();
        let plan = read_plan(&path).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].key.to_string(), "orders-2");
        assert_eq!(
            plan[0].change,
            ReassignmentChange::Move(vec![
                ReplicaTarget { spu: SpuId(4), core: None },
                ReplicaTarget { spu: SpuId(5), core: Some(CoreId(1)) },
            ])
        );
        std::fs::write(&path, "{\"partitions\": [{\"topic\": \"orders\"}]}").unwrap();
        assert!(read_plan(&path).is_err());
    }

    #[test]
    fn throttles_are_mib_per_second() {
        assert_eq!(throttle_bytes(Some(2.0)).unwrap(), Some(2 << 20));
        assert!(throttle_bytes(Some(0.0)).is_err());
        assert_eq!(throttle_bytes(None).unwrap(), None);
    }
}
