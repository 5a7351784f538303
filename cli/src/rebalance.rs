//! `sluice cluster rebalance [--dry-run] [--drain SPU] [--throttle MIB/S] [--no-wait] [-O json]`:
//! the SC's rebalance plan and balance report, and its execution.
//!
//! The SC computes the plan from its metadata (`PlanRebalance`); this module prints it and,
//! without `--dry-run`, carries it out with partition reassignment (each partition's new
//! replicas join as followers, catch up, take leadership where the plan moves it, then the old
//! replicas leave), waiting until every move has ended. With `--dry-run -O json` the output is
//! exactly a **plan file**, the input of `sluice partition reassign --plan FILE`:
//!
//! ```json
//! { "partitions": [
//!   { "topic": "orders", "partition": 0,
//!     "replicas": [{"spu": 5004, "core": 1}, {"spu": 5002, "core": 0}, {"spu": 5003, "core": 0}] }
//! ] }
//! ```
//!
//! `replicas` are preferred leader first, each on the core the planner counted on, so applying
//! the file reaches the balance the report shows.

use serde::Serialize;
use sluice_client::{ClientError, ErrorCode, PlanRebalanceResponse, SpuId};
use sluice_proto::object::ReplicaPlacement;

use crate::args::{ClusterRebalanceArgs, OutputFormat};
use crate::output::{self, Table};
use crate::reassign::{self, Plan, PlanEntry, PlanReplica};
use crate::sc_api::ScApi;

/// Why `cluster rebalance` stopped, where a caller must tell the cases apart.
#[derive(Debug, thiserror::Error)]
pub enum RebalanceCommandError {
    /// An SPU to drain is not registered.
    #[error("SPU {0} is not registered; see `sluice spu list`")]
    UnknownSpu(i32),
}

/// The plan file of a response (see the module docs).
pub fn plan_file(response: &PlanRebalanceResponse) -> Plan {
    let partitions = response
        .moves
        .iter()
        .map(|change| PlanEntry {
            topic: change.key.topic.to_string(),
            partition: change.key.partition.get(),
            replicas: change
                .to
                .iter()
                .map(|replica| PlanReplica::Placed {
                    spu: replica.spu.get(),
                    core: replica.core.get(),
                })
                .collect(),
        })
        .collect();
    Plan { partitions }
}

/// What the command prints with `-O yaml` (and after executing with `-O json`).
#[derive(Serialize)]
struct Executed<'a> {
    plan: &'a PlanRebalanceResponse,
    executed: bool,
}

/// `sluice cluster rebalance`.
pub fn run(sc: &str, args: &ClusterRebalanceArgs) -> anyhow::Result<()> {
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
    if args.dry_run {
        return match args.output.format {
            OutputFormat::Json => {
                output::print(OutputFormat::Json, &plan_file(&response), String::new)
            }
            format => output::print(format, &response, || report(&response, true)),
        };
    }
    let executed = Executed { plan: &response, executed: !response.moves.is_empty() };
    output::print(args.output.format, &executed, || report(&response, false))?;
    if response.moves.is_empty() {
        return Ok(());
    }
    let throttle = reassign::throttle_bytes(args.throttle)?;
    let requests = reassign::plan_requests(plan_file(&response))?;
    reassign::start_moves(&api, requests, throttle, !args.no_wait)?;
    if args.no_wait {
        println!("follow the moves with `sluice partition reassign --status`");
    } else {
        println!("rebalance complete: {} partitions moved", response.moves.len());
    }
    Ok(())
}

fn replicas_text(replicas: &[ReplicaPlacement]) -> String {
    let cells: Vec<String> =
        replicas.iter().map(|replica| format!("{}/{}", replica.spu, replica.core)).collect();
    cells.join(",")
}

/// What `cluster rebalance --dry-run` prints for people: the plan, then the balance report.
pub fn report(response: &PlanRebalanceResponse, dry_run: bool) -> String {
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
    if dry_run && !response.moves.is_empty() {
        text.push_str(
            "Dry run: nothing changed. Run without --dry-run to carry it out, or save the plan \
             with `-O json > plan.json` and apply it with `sluice partition reassign --plan \
             plan.json`.\n",
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
    fn the_plan_file_is_what_partition_reassign_reads() {
        let json = serde_json::to_value(plan_file(&response())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "partitions": [{ "topic": "orders", "partition": 3,
                "replicas": [{ "spu": 5004, "core": 1 }, { "spu": 5002, "core": 0 }] }] })
        );
        let requests = reassign::plan_requests(plan_file(&response())).unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].key.to_string(), "orders-3");
    }

    #[test]
    fn the_report_shows_the_plan_and_the_figures() {
        let text = report(&response(), true);
        assert!(text.contains("orders-3"), "{text}");
        assert!(text.contains("5001/0,5002/0"), "{text}");
        assert!(text.contains("-> 5004"), "{text}");
        assert!(text.contains("1 replica moves"), "{text}");
        assert!(text.contains("Dry run: nothing changed"), "{text}");
        assert!(!report(&response(), false).contains("Dry run"));
        let balanced = report(&PlanRebalanceResponse::default(), true);
        assert!(balanced.starts_with("The cluster is balanced"), "{balanced}");
    }
}
