//! `sluice cluster rebalance [--dry-run] [--drain SPU] [-O json]`: the SC's rebalance plan and
//! balance report.
//!
//! The SC computes the plan from its metadata (`PlanRebalance`); this module prints it. With
//! `--dry-run -O json` the output is exactly a **plan file**, the input of
//! `sluice partition reassign --plan FILE`: a JSON list with one object per partition to move,
//!
//! ```json
//! [
//!   { "topic": "orders", "partition": 0, "replicas": [5004, 5002, 5003] }
//! ]
//! ```
//!
//! `replicas` are SPU ids, preferred leader first (the reassignment picks each new replica's
//! core; the table shows the cores the planner counted on). Executing the plan here (without
//! `--dry-run`) waits for partition reassignment and is refused with
//! [`RebalanceCommandError::ExecutionNotAvailable`].

use serde::{Deserialize, Serialize};
use sluice_client::{ClientError, ErrorCode, PlanRebalanceResponse, SpuId};
use sluice_proto::object::ReplicaPlacement;

use crate::args::{ClusterRebalanceArgs, OutputFormat};
use crate::output::{self, Table};
use crate::sc_api::ScApi;

/// Why `cluster rebalance` stopped, where a caller must tell the cases apart.
#[derive(Debug, thiserror::Error)]
pub enum RebalanceCommandError {
    /// Executing a plan needs partition reassignment, which this build does not have yet.
    #[error(
        "not yet available: run with --dry-run, then `sluice partition reassign --plan` \
         (save the plan with `sluice cluster rebalance --dry-run -O json > plan.json`)"
    )]
    ExecutionNotAvailable,
    /// An SPU to drain is not registered.
    #[error("SPU {0} is not registered; see `sluice spu list`")]
    UnknownSpu(i32),
}

/// One entry of a plan file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: u32,
    /// SPU ids of the new replicas, preferred leader first.
    pub replicas: Vec<i32>,
}

/// The plan file of a response (see the module docs).
pub fn plan_file(response: &PlanRebalanceResponse) -> Vec<PlanEntry> {
    response
        .moves
        .iter()
        .map(|change| PlanEntry {
            topic: change.key.topic.to_string(),
            partition: change.key.partition.get(),
            replicas: change.to.iter().map(|replica| replica.spu.get()).collect(),
        })
        .collect()
}

/// `sluice cluster rebalance`.
pub fn run(sc: &str, args: &ClusterRebalanceArgs) -> anyhow::Result<()> {
    if !args.dry_run {
        return Err(RebalanceCommandError::ExecutionNotAvailable.into());
    }
    let api = ScApi::connect(sc)?;
    let drain: Vec<SpuId> = args.drain.iter().copied().map(SpuId).collect();
    let response = match api.cluster().admin().plan_rebalance(&drain) {
        Ok(response) => response,
        Err(ClientError::Server { code: ErrorCode::SpuNotFound, .. }) => {
            let unknown = args.drain.first().copied().unwrap_or_default();
            return Err(RebalanceCommandError::UnknownSpu(unknown).into());
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context("cannot plan a rebalance"));
        }
    };
    match args.output.format {
        OutputFormat::Json => output::print(OutputFormat::Json, &plan_file(&response), String::new),
        format => output::print(format, &response, || report(&response)),
    }
}

fn replicas_text(replicas: &[ReplicaPlacement]) -> String {
    let cells: Vec<String> =
        replicas.iter().map(|replica| format!("{}/{}", replica.spu, replica.core)).collect();
    cells.join(",")
}

/// What `cluster rebalance --dry-run` prints for people: the plan, then the balance report.
pub fn report(response: &PlanRebalanceResponse) -> String {
    let mut text = String::new();
    if response.moves.is_empty() {
        text.push_str("The cluster is balanced: no partition moves.\n");
    } else {
        let mut table =
            Table::new(&["PARTITION", "FROM (SPU/CORE)", "TO (SPU/CORE)", "MOVES", "LEADER"]);
        for change in &response.moves {
            let moves = change.to.iter().filter(|slot| !change.from.contains(slot)).count();
            let leader = |replicas: &[ReplicaPlacement]| replicas.first().map(|r| r.spu);
            let leader = if leader(&change.from) == leader(&change.to) {
                "same".to_string()
            } else {
                format!("-> {}", change.to.first().map(|r| r.spu.to_string()).unwrap_or_default())
            };
            table.row(vec![
                change.key.to_string(),
                replicas_text(&change.from),
                replicas_text(&change.to),
                moves.to_string(),
                leader,
            ]);
        }
        text.push_str(&table.render());
    }
    text.push('\n');
    let mut spus: Vec<(SpuId, [u32; 4])> = Vec::new();
    for core in &response.cores {
        let counts =
            [core.replicas_before, core.replicas_after, core.leaders_before, core.leaders_after];
        match spus.last_mut() {
            Some((spu, totals)) if *spu == core.spu => {
                for (total, count) in totals.iter_mut().zip(counts) {
                    *total += count;
                }
            }
            _ => spus.push((core.spu, counts)),
        }
    }
    let mut per_spu =
        Table::new(&["SPU", "CORES", "REPLICAS BEFORE", "AFTER", "LEADERS BEFORE", "AFTER"]);
    for (spu, [replicas_before, replicas_after, leaders_before, leaders_after]) in &spus {
        let cores = response.cores.iter().filter(|core| core.spu == *spu).count();
        per_spu.row(vec![
            spu.to_string(),
            cores.to_string(),
            replicas_before.to_string(),
            replicas_after.to_string(),
            leaders_before.to_string(),
            leaders_after.to_string(),
        ]);
    }
    text.push_str(&per_spu.render());
    text.push('\n');
    let (before, after) = (&response.before, &response.after);
    let mut balance = Table::new(&["MIN-MAX", "BEFORE", "AFTER"]);
    let range = |range: sluice_client::CountRange| format!("{}-{}", range.min, range.max);
    for (name, old, new) in [
        ("replicas per core", before.replicas_per_core, after.replicas_per_core),
        ("replicas per SPU", before.replicas_per_spu, after.replicas_per_spu),
        ("leaders per core", before.leaders_per_core, after.leaders_per_core),
        ("leaders per SPU", before.leaders_per_spu, after.leaders_per_spu),
    ] {
        balance.row(vec![name.to_string(), range(old), range(new)]);
    }
    text.push_str(&balance.render());
    text.push_str(&format!(
        "\n{} partitions change: {} replica moves (at least {} needed for the ideal balance), \
         {} preferred-leader changes.\n",
        response.moves.len(),
        response.replica_moves,
        response.replica_moves_lower_bound,
        response.leader_changes
    ));
    if !response.moves.is_empty() {
        text.push_str(
            "Dry run: nothing changed. Save the plan with `-O json > plan.json` and apply it \
             with `sluice partition reassign --plan plan.json`.\n",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::RebalanceMove;
    use sluice_proto::ids::{CoreId, PartitionId};
    use sluice_proto::object::{PartitionKey, TopicName};

    fn response() -> PlanRebalanceResponse {
        let placement = |spu, core| ReplicaPlacement { spu: SpuId(spu), core: CoreId(core) };
        PlanRebalanceResponse {
            moves: vec![RebalanceMove {
                key: PartitionKey::new(TopicName::new("orders").unwrap(), PartitionId(3)),
                from: vec![placement(5001, 0), placement(5002, 0)],
                to: vec![placement(5004, 1), placement(5002, 0)],
            }],
            replica_moves: 1,
            leader_changes: 1,
            replica_moves_lower_bound: 1,
            ..PlanRebalanceResponse::default()
        }
    }

    #[test]
    fn the_plan_file_is_a_list_of_topic_partition_and_spu_ids() {
        let json = serde_json::to_value(plan_file(&response())).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{ "topic": "orders", "partition": 3, "replicas": [5004, 5002] }])
        );
    }

    #[test]
    fn the_report_shows_the_plan_and_the_figures() {
        let text = report(&response());
        assert!(text.contains("orders-3"), "{text}");
        assert!(text.contains("5001/0,5002/0"), "{text}");
        assert!(text.contains("-> 5004"), "{text}");
        assert!(text.contains("1 replica moves"), "{text}");
        let balanced = report(&PlanRebalanceResponse::default());
        assert!(balanced.starts_with("The cluster is balanced"), "{balanced}");
    }

    #[test]
    fn executing_is_refused_with_a_typed_error() {
        let error = RebalanceCommandError::ExecutionNotAvailable.to_string();
        assert!(error.starts_with("not yet available: run with --dry-run"), "{error}");
        assert!(error.contains("sluice partition reassign --plan"), "{error}");
    }
}
