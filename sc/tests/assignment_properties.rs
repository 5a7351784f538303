//! Property tests of the replica assignment over random clusters, loads and topic sequences.
//!
//! Seeded: every property prints its seed to stderr (shown on failure); `SLUICE_TEST_SEED`
//! replays it and `SLUICE_TEST_ITERATIONS` sets the number of cases (default 256).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use sluice_proto::ids::{CoreId, SpuId};
use sluice_sc::assignment::{
    assign_replicas, validate_explicit, AssignmentError, AssignmentRequest, PartitionReplicas,
    ReplicaLoad, ReplicaSlot, SpuResources,
};

fn config(property: &str) -> Config {
    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let cases = std::env::var("SLUICE_TEST_ITERATIONS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(256);
    eprintln!("{property}: SLUICE_TEST_SEED={seed} SLUICE_TEST_ITERATIONS={cases}");
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

/// Any cluster: 1-12 SPUs, 1-8 cores each, racks absent, present or mixed.
fn any_cluster() -> impl Strategy<Value = Vec<SpuResources>> {
    let spu = (1u16..=8, 0u8..4, any::<bool>());
    (prop::collection::vec(spu, 1..=12), 0u8..3).prop_map(|(specs, rack_mode)| {
        specs
            .into_iter()
            .enumerate()
            .map(|(index, (cores, rack, has_rack))| {
                let named = Some(format!("rack-{rack}"));
                let rack = match rack_mode {
                    0 => None,
                    1 => named,
                    _ => named.filter(|_| has_rack),
                };
                SpuResources { id: SpuId(7 + 3 * index as i32), rack, cores }
            })
            .collect()
    })
}

/// A cluster where perfect balance is feasible: equal cores per SPU, and either no racks or
/// racks with equal numbers of SPUs.
fn balanced_cluster() -> impl Strategy<Value = Vec<SpuResources>> {
    (1u16..=6, 1usize..=4, 1usize..=4, any::<bool>()).prop_map(|(cores, racks, per_rack, named)| {
        (0..racks * per_rack)
            .map(|index| SpuResources {
                id: SpuId(1000 + index as i32),
                rack: named.then(|| format!("rack-{}", index % racks)),
                cores,
            })
            .collect()
    })
}

/// Topic requests: (partitions, replication factor before clamping to the SPU count).
fn topics() -> impl Strategy<Value = Vec<(u32, u16)>> {
    prop::collection::vec((1u32..=80, 1u16..=5), 1..=6)
}

/// Raw material for pre-existing partitions, mapped onto a cluster by `existing_load`.
fn raw_partitions() -> impl Strategy<Value = Vec<Vec<(usize, u16)>>> {
    prop::collection::vec(prop::collection::vec((0usize..64, 0u16..64), 1..=4), 0..40)
}

fn existing_load(spus: &[SpuResources], raw: &[Vec<(usize, u16)>]) -> ReplicaLoad {
    let mut load = ReplicaLoad::new();
    for replicas in raw {
        let mut seen = BTreeSet::new();
        let replicas: Vec<_> = replicas
            .iter()
            .filter_map(|&(spu, core)| {
                let spu = &spus[spu % spus.len()];
                let slot = ReplicaSlot { spu: spu.id, core: CoreId(core % spu.cores) };
                seen.insert(spu.id).then_some(slot)
            })
            .collect();
        load.add_partition(&PartitionReplicas { replicas });
    }
    load
}

fn rack_of(spu: &SpuResources) -> String {
    // An SPU without a rack is its own failure domain.
    spu.rack.clone().unwrap_or_else(|| format!("<spu {}>", spu.id))
}

/// Distinct, known SPUs, cores in range, and replicas on min(RF, racks) racks.
fn check_structure(
    spus: &[SpuResources],
    assigned: &[PartitionReplicas],
    partitions: u32,
    replication_factor: usize,
) -> Result<(), TestCaseError> {
    let by_id: BTreeMap<SpuId, &SpuResources> = spus.iter().map(|spu| (spu.id, spu)).collect();
    let racks: BTreeSet<String> = spus.iter().map(rack_of).collect();
    prop_assert_eq!(assigned.len(), partitions as usize);
    for (index, partition) in assigned.iter().enumerate() {
        prop_assert_eq!(partition.replicas.len(), replication_factor, "partition {}", index);
        let mut used_spus = BTreeSet::new();
        let mut used_racks = BTreeSet::new();
        for slot in &partition.replicas {
            let spu = by_id.get(&slot.spu).copied();
            prop_assert!(spu.is_some(), "unknown SPU {}", slot.spu);
            let spu = spu.unwrap();
            prop_assert!(slot.core.get() < spu.cores, "core {} of {}", slot.core, spu.id);
            prop_assert!(used_spus.insert(slot.spu), "SPU {} twice in {}", slot.spu, index);
            used_racks.insert(rack_of(spu));
        }
        prop_assert_eq!(
            used_racks.len(),
            replication_factor.min(racks.len()),
            "racks of {}",
            index
        );
    }
    Ok(())
}

/// Runs the topic requests one after another, each seeing the previous ones' load.
fn create_topics(
    spus: &[SpuResources],
    mut load: ReplicaLoad,
    requests: &[(u32, u16)],
    mut after_each: impl FnMut(
        &ReplicaLoad,
        &[PartitionReplicas],
        u32,
        usize,
    ) -> Result<(), TestCaseError>,
) -> Result<ReplicaLoad, TestCaseError> {
    for &(partitions, replication_factor) in requests {
        let replication_factor = 1 + (replication_factor - 1) % spus.len() as u16;
        let request = AssignmentRequest::Computed { partitions, replication_factor };
        let assigned = assign_replicas(spus, &load, &request).expect("valid request");
        after_each(&load, &assigned, partitions, usize::from(replication_factor))?;
        for partition in &assigned {
            load.add_partition(partition);
        }
    }
    Ok(load)
}

proptest! {
    #![proptest_config(config("structure"))]
    #[test]
    fn every_partition_is_valid_and_spread_over_racks(
        spus in any_cluster(), raw in raw_partitions(), requests in topics()
    ) {
        let load = existing_load(&spus, &raw);
        create_topics(&spus, load, &requests, |_, assigned, partitions, replication_factor| {
            check_structure(&spus, assigned, partitions, replication_factor)
        })?;
    }
}

proptest! {
    #![proptest_config(config("only_adds"))]
    #[test]
    fn assignment_only_adds_to_the_existing_load(
        spus in any_cluster(), raw in raw_partitions(), requests in topics()
    ) {
        let load = existing_load(&spus, &raw);
        create_topics(&spus, load, &requests, |before, assigned, _, _| {
            let mut after = before.clone();
            for partition in assigned {
                after.add_partition(partition);
            }
            // Every core's count grows by exactly its new replicas and never shrinks.
            for (slot, load) in before.iter() {
                let added = assigned.iter().filter(|p| p.replicas.contains(&slot)).count() as u32;
                prop_assert_eq!(after.core(slot).replicas, load.replicas + added);
            }
            let total = |load: &ReplicaLoad| load.iter().map(|(_, l)| u64::from(l.replicas)).sum::<u64>();
            let new_replicas: usize = assigned.iter().map(|p| p.replicas.len()).sum();
            prop_assert_eq!(total(&after), total(before) + new_replicas as u64);
            Ok(())
        })?;
    }
}

/// Checks the balance after every topic of the sequence.
fn check_balance(
    spus: &[SpuResources],
    requests: &[(u32, u16)],
    leaders_spread_max: u32,
) -> Result<(), TestCaseError> {
    create_topics(spus, ReplicaLoad::new(), requests, |before, assigned, _, _| {
        let mut after = before.clone();
        for partition in assigned {
            after.add_partition(partition);
        }
        let balance = after.balance(spus);
        prop_assert!(balance.replicas_per_core.spread() <= 1, "replicas per core: {:?}", balance);
        prop_assert!(balance.replicas_per_spu.spread() <= 1, "replicas per SPU: {:?}", balance);
        prop_assert!(
            balance.leaders_per_spu.spread() <= leaders_spread_max,
            "leaders per SPU: {:?}",
            balance
        );
        prop_assert!(
            balance.leaders_per_core.spread() <= leaders_spread_max,
            "leaders per core: {:?}",
            balance
        );
        Ok(())
    })?;
    Ok(())
}

proptest! {
    #![proptest_config(config("balance_same_replication_factor"))]
    /// Topics of one replication factor: replicas and leaders per core and per SPU within one.
    #[test]
    fn balanced_within_one_for_one_replication_factor(
        spus in balanced_cluster(),
        partitions in prop::collection::vec(1u32..=80, 1..=6),
        replication_factor in 1u16..=5,
    ) {
        let requests: Vec<_> = partitions.iter().map(|&p| (p, replication_factor)).collect();
        check_balance(&spus, &requests, 1)?;
    }
}

proptest! {
    #![proptest_config(config("balance_mixed_replication_factors"))]
    /// Mixed replication factors: replicas stay within one; leaders within two (a topic of
    /// replication factor 1 must put its leaders wherever replicas are missing).
    #[test]
    fn balanced_for_mixed_replication_factors(spus in balanced_cluster(), requests in topics()) {
        check_balance(&spus, &requests, 2)?;
    }
}

/// A valid explicit assignment on `spus`, from raw random picks.
fn explicit_from(
    spus: &[SpuResources],
    replication_factor: usize,
    raw: &[Vec<(usize, u16)>],
) -> Vec<PartitionReplicas> {
    raw.iter()
        .enumerate()
        .map(|(partition, picks)| {
            let replicas = (0..replication_factor)
                .map(|replica| {
                    let spu = &spus[(partition + replica) % spus.len()];
                    let core = picks.get(replica).map_or(0, |pick| pick.1 % spu.cores);
                    ReplicaSlot { spu: spu.id, core: CoreId(core) }
                })
                .collect();
            PartitionReplicas { replicas }
        })
        .collect()
}

proptest! {
    #![proptest_config(config("explicit"))]
    #[test]
    fn explicit_assignments_are_validated(
        spus in any_cluster(),
        raw in prop::collection::vec(prop::collection::vec((0usize..64, 0u16..64), 4), 1..=30),
        replication_factor in 1usize..=4,
        victim in 0usize..30,
        mutation in 0u8..5,
    ) {
        let replication_factor = 1 + (replication_factor - 1) % spus.len();
        let valid = explicit_from(&spus, replication_factor, &raw);
        let request = AssignmentRequest::Explicit(valid.clone());
        prop_assert_eq!(assign_replicas(&spus, &ReplicaLoad::new(), &request), Ok(valid.clone()));

        let partition = victim % valid.len();
        let mut broken = valid.clone();
        let slot = broken[partition].replicas[0];
        let spu = spus.iter().find(|spu| spu.id == slot.spu).unwrap();
        let expected = match mutation {
            0 => {
                broken[partition].replicas[0].spu = SpuId(-1);
                AssignmentError::UnknownSpu { partition, spu: SpuId(-1) }
            }
            1 => {
                broken[partition].replicas[0].core = CoreId(spu.cores);
                AssignmentError::CoreOutOfRange { partition, spu: spu.id, core: CoreId(spu.cores), cores: spu.cores }
            }
            2 => {
                // Partition 0 sets the expected replication factor, so there the extra
                // replica shows up as a duplicate; elsewhere as an inconsistent count.
                broken[partition].replicas.push(slot);
                if partition == 0 {
                    AssignmentError::DuplicateSpuInPartition { partition, spu: slot.spu }
                } else {
                    AssignmentError::InconsistentReplicationFactor {
                        partition,
                        expected: replication_factor,
                        actual: replication_factor + 1,
                    }
                }
            }
            3 => {
                broken[partition].replicas.clear();
                AssignmentError::EmptyReplicas { partition }
            }
            _ => {
                let last = broken[partition].replicas.len() - 1;
                broken[partition].replicas[last] = slot;
                if last == 0 {
                    // Replication factor 1: nothing to duplicate; the copy is still valid.
                    prop_assert_eq!(validate_explicit(&spus, &broken), Ok(()));
                    return Ok(());
                }
                AssignmentError::DuplicateSpuInPartition { partition, spu: slot.spu }
            }
        };
        prop_assert_eq!(validate_explicit(&spus, &broken), Err(expected.clone()));
        prop_assert_eq!(
            assign_replicas(&spus, &ReplicaLoad::new(), &AssignmentRequest::Explicit(broken)),
            Err(expected)
        );
    }
}

proptest! {
    #![proptest_config(config("too_large"))]
    #[test]
    fn replication_factor_above_spu_count_is_refused(spus in any_cluster(), extra in 1u16..4) {
        let replication_factor = spus.len() as u16 + extra;
        let request = AssignmentRequest::Computed { partitions: 3, replication_factor };
        let error = assign_replicas(&spus, &ReplicaLoad::new(), &request).unwrap_err();
        prop_assert_eq!(
            &error,
            &AssignmentError::ReplicationFactorTooLarge {
                replication_factor: usize::from(replication_factor),
                spus: spus.len(),
            }
        );
        let message = error.to_string();
        prop_assert!(message.contains(&format!("only {} are registered", spus.len())), "{}", message);
    }
}

#[test]
fn invalid_requests_and_clusters_are_refused() {
    let spu = |id: i32, cores: u16| SpuResources { id: SpuId(id), rack: None, cores };
    let computed = |partitions, replication_factor| AssignmentRequest::Computed {
        partitions,
        replication_factor,
    };
    let none = ReplicaLoad::new();
    let cases = [
        (vec![], computed(1, 1), AssignmentError::NoSpus),
        (vec![spu(1, 2)], computed(0, 1), AssignmentError::NoPartitions),
        (vec![spu(1, 2)], computed(1, 0), AssignmentError::ZeroReplicationFactor),
        (vec![spu(1, 0)], computed(1, 1), AssignmentError::SpuWithoutCores { spu: SpuId(1) }),
        (
            vec![spu(1, 1), spu(1, 2)],
            computed(1, 1),
            AssignmentError::DuplicateSpuInCluster { spu: SpuId(1) },
        ),
        (
            vec![spu(1, 1)],
            computed(200_000, 1),
            AssignmentError::TooManyPartitions { requested: 200_000, max: 100_000 },
        ),
        (vec![spu(1, 1)], AssignmentRequest::Explicit(vec![]), AssignmentError::NoPartitions),
    ];
    for (spus, request, expected) in cases {
        assert_eq!(assign_replicas(&spus, &none, &request), Err(expected));
    }
    assert!(AssignmentError::NoSpus.to_string().contains("no SPUs"));
}

#[test]
fn assignment_is_deterministic_and_leader_first() {
    let spus: Vec<_> = (0..6)
        .map(|id| SpuResources { id: SpuId(id), rack: Some(format!("r{}", id % 3)), cores: 4 })
        .collect();
    let request = AssignmentRequest::Computed { partitions: 24, replication_factor: 3 };
    let first = assign_replicas(&spus, &ReplicaLoad::new(), &request).unwrap();
    let second = assign_replicas(&spus, &ReplicaLoad::new(), &request).unwrap();
    assert_eq!(first, second);
    let load = ReplicaLoad::from_partitions(&first);
    let leaders: u32 = load.iter().map(|(_, core)| core.leaders).sum();
    assert_eq!(leaders, 24);
    for partition in &first {
        let leader = partition.preferred_leader().unwrap();
        assert!(load.core(leader).leaders > 0);
    }
}
