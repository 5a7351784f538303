//! Prints how evenly the replica assignment spreads replicas and leaders.
//!
//! `cargo run -p sluice-sc --example assignment_balance`
//!
//! Cluster: 6 SPUs x 4 cores in 3 racks (2 SPUs per rack). Scenarios: one topic of 1,000
//! partitions at replication factor 3, and ten topics of 100 partitions created one after
//! another (each sees the load of the previous ones).

use sluice_proto::ids::SpuId;
use sluice_sc::assignment::{
    assign_replicas, AssignmentRequest, BalanceSummary, MinMax, ReplicaLoad, SpuResources,
};

fn cluster() -> Vec<SpuResources> {
    (0..6)
        .map(|index| SpuResources {
            id: SpuId(5001 + index),
            rack: Some(format!("rack-{}", index % 3)),
            cores: 4,
        })
        .collect()
}

fn create_topics(spus: &[SpuResources], topics: u32, partitions: u32) -> ReplicaLoad {
    let mut load = ReplicaLoad::new();
    let request = AssignmentRequest::Computed { partitions, replication_factor: 3 };
    for _ in 0..topics {
        let assigned = assign_replicas(spus, &load, &request).expect("the cluster is valid");
        for partition in &assigned {
            load.add_partition(partition);
        }
    }
    load
}

fn row(name: &str, counts: MinMax, ideal: f64) {
    println!(
        "| {name:<18} | {:>5} | {:>5} | {:>6} | {ideal:>8.2} |",
        counts.min,
        counts.max,
        counts.spread()
    );
}

fn print_table(title: &str, summary: &BalanceSummary, partitions: u32) {
    let replicas = f64::from(partitions * 3);
    println!("\n{title}");
    println!(
        "| {:<18} | {:>5} | {:>5} | {:>6} | {:>8} |",
        "count", "min", "max", "spread", "ideal"
    );
    println!("|{}|", "-".repeat(58));
    row("replicas per core", summary.replicas_per_core, replicas / 24.0);
    row("replicas per SPU", summary.replicas_per_spu, replicas / 6.0);
    row("leaders per SPU", summary.leaders_per_spu, f64::from(partitions) / 6.0);
    row("leaders per core", summary.leaders_per_core, f64::from(partitions) / 24.0);
}

fn main() {
    let spus = cluster();
    println!("cluster: 6 SPUs x 4 cores, racks rack-0/rack-1/rack-2 (2 SPUs each), RF 3");
    let one_topic = create_topics(&spus, 1, 1000);
    print_table("1 topic x 1,000 partitions", &one_topic.balance(&spus), 1000);
    let ten_topics = create_topics(&spus, 10, 100);
    print_table(
        "10 topics x 100 partitions, created one after another",
        &ten_topics.balance(&spus),
        1000,
    );
}
