//! Single replicas: the core a replica takes on a given SPU, and the SPU (and core) that
//! replaces a replica leaving an SPU (decommission). Same rules as a new partition's placement
//! ([`super::placement`]): racks not yet used by the partition first, then the SPU with the
//! fewest replicas per core, then its least-loaded core. Pure and deterministic.

use std::cmp::Ordering;

use sluice_proto::ids::{CoreId, SpuId};

use super::{AssignmentError, ReplicaLoad, ReplicaSlot, SpuResources};

/// The core of `spu` that should take one more replica: the fewest replicas, then (for a
/// preferred leader) the fewest leaders; the lowest core id breaks ties.
pub fn least_loaded_core(spu: &SpuResources, load: &ReplicaLoad, leader: bool) -> CoreId {
    (0..spu.cores.max(1))
        .map(CoreId)
        .min_by_key(|core| {
            let core_load = load.core(ReplicaSlot { spu: spu.id, core: *core });
            (core_load.replicas, if leader { core_load.leaders } else { 0 }, core.get())
        })
        .unwrap_or(CoreId(0))
}

/// A rack as a failure domain: an SPU without a rack is a rack of its own.
fn failure_domain(spu: &SpuResources) -> (Option<&str>, Option<SpuId>) {
    match &spu.rack {
        Some(rack) => (Some(rack.as_str()), None),
        None => (None, Some(spu.id)),
    }
}

/// `left_numerator / left_denominator` against `right_numerator / right_denominator`.
fn compare_ratio(left: (u32, u16), right: (u32, u16)) -> Ordering {
    let left_scaled = u64::from(left.0) * u64::from(right.1.max(1));
    let right_scaled = u64::from(right.0) * u64::from(left.1.max(1));
    left_scaled.cmp(&right_scaled)
}

/// The slot that replaces a replica of a partition whose other replicas stay on `kept`: an SPU
/// of `spus` that is neither in `kept` nor `excluded`, preferring racks `kept` does not use,
/// then the fewest replicas per core (`load`), then the lowest id; on it the least-loaded
/// core. `leader`: the replacement becomes the preferred leader.
///
/// Fails with [`AssignmentError::ReplicationFactorTooLarge`] when no SPU is left.
pub fn replacement(
    spus: &[SpuResources],
    load: &ReplicaLoad,
    kept: &[ReplicaSlot],
    excluded: &[SpuId],
    leader: bool,
) -> Result<ReplicaSlot, AssignmentError> {
    let used_domains: Vec<_> = spus
        .iter()
        .filter(|spu| kept.iter().any(|slot| slot.spu == spu.id))
        .map(failure_domain)
        .collect();
    let candidates = spus
        .iter()
        .filter(|spu| !kept.iter().any(|slot| slot.spu == spu.id) && !excluded.contains(&spu.id));
    let best = candidates.min_by(|left, right| {
        let left_new_rack = !used_domains.contains(&failure_domain(left));
        let right_new_rack = !used_domains.contains(&failure_domain(right));
        right_new_rack
            .cmp(&left_new_rack)
            .then_with(|| {
                compare_ratio(
                    (load.spu_replicas(left.id), left.cores),
                    (load.spu_replicas(right.id), right.cores),
                )
            })
            .then_with(|| left.id.cmp(&right.id))
    });
    let Some(spu) = best else {
        let available = spus.iter().filter(|spu| !excluded.contains(&spu.id)).count();
        return Err(AssignmentError::ReplicationFactorTooLarge {
            replication_factor: kept.len() + 1,
            spus: available,
        });
    };
    Ok(ReplicaSlot { spu: spu.id, core: least_loaded_core(spu, load, leader) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spu(id: i32, rack: Option<&str>, cores: u16) -> SpuResources {
        SpuResources { id: SpuId(id), rack: rack.map(str::to_owned), cores }
    }

    fn slot(spu: i32, core: u16) -> ReplicaSlot {
        ReplicaSlot { spu: SpuId(spu), core: CoreId(core) }
    }

    #[test]
    fn prefers_an_unused_rack_then_the_least_loaded_spu_and_core() {
        let spus = [
            spu(1, Some("a"), 2),
            spu(2, Some("b"), 2),
            spu(3, Some("a"), 2),
            spu(4, Some("c"), 2),
        ];
        let mut load = ReplicaLoad::new();
        load.add_partition(&super::super::PartitionReplicas { replicas: vec![slot(4, 0)] });
        // Kept on rack a (SPU 1); SPU 2 (rack b) and 4 (rack c) are new racks; 4 has load.
        let chosen = replacement(&spus, &load, &[slot(1, 0)], &[SpuId(3)], false).unwrap();
        assert_eq!(chosen, slot(2, 0));
        let chosen = replacement(&spus, &load, &[slot(1, 0), slot(2, 1)], &[], false).unwrap();
        assert_eq!(chosen, slot(4, 1), "rack c is unused; its core 0 is loaded");
    }

    #[test]
    fn no_spu_left_is_an_error() {
        let spus = [spu(1, None, 1), spu(2, None, 1)];
        let error = replacement(&spus, &ReplicaLoad::new(), &[slot(1, 0)], &[SpuId(2)], false);
        assert!(matches!(error, Err(AssignmentError::ReplicationFactorTooLarge { .. })));
    }
}
