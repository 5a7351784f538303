//! The SPU's copy of what the SC last told it, one epoch-stamped stream per object kind (pure:
//! no I/O, unit-tested here).
//!
//! Invariants:
//! - a full snapshot always applies and replaces the view;
//! - a delta applies only on top of the epoch it names (`base_epoch == current`);
//! - after a gap the view stays as it was (never half-applied) and the stream waits for a full
//!   snapshot, ignoring later deltas, so one gap asks for one snapshot, not one per delta.

use std::collections::BTreeMap;

use sluice_proto::api::metadata::{Change, Changes};
use sluice_proto::ids::UpdateEpoch;

/// What applying one update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The view changed to the update's epoch.
    Applied,
    /// A delta on top of another epoch: ask the SC for a full snapshot.
    Gap {
        /// The epoch the view is at.
        last_applied: Option<UpdateEpoch>,
    },
    /// A delta while a snapshot is already asked for: dropped.
    Ignored,
}

/// One stream of updates (SPU specs or replica assignments) and the view it builds.
#[derive(Clone, Debug)]
pub struct EpochView<K, V> {
    epoch: Option<UpdateEpoch>,
    objects: BTreeMap<K, V>,
    awaiting_snapshot: bool,
}

impl<K, V> Default for EpochView<K, V> {
    fn default() -> Self {
        Self { epoch: None, objects: BTreeMap::new(), awaiting_snapshot: false }
    }
}

impl<K: Ord, V> EpochView<K, V> {
    /// The epoch of the last applied update (`None` before the first full snapshot).
    pub fn epoch(&self) -> Option<UpdateEpoch> {
        self.epoch
    }

    /// The objects as of [`Self::epoch`].
    pub fn objects(&self) -> &BTreeMap<K, V> {
        &self.objects
    }

    /// Forgets the epoch (a new connection starts a new epoch sequence); keeps the objects,
    /// which stay the best knowledge until the new SC's full snapshot replaces them.
    pub fn reset_epoch(&mut self) {
        self.epoch = None;
        self.awaiting_snapshot = false;
    }

    /// Applies one update; `split` turns a wire object into its key and value.
    pub fn apply<T>(
        &mut self,
        epoch: UpdateEpoch,
        changes: Changes<T, K>,
        split: impl Fn(T) -> (K, V),
    ) -> Applied {
        match changes {
            Changes::Full(all) => {
                self.objects = all.into_iter().map(split).collect();
                self.epoch = Some(epoch);
                self.awaiting_snapshot = false;
                Applied::Applied
            }
            Changes::Delta { base_epoch, changes } => {
                if self.awaiting_snapshot {
                    return Applied::Ignored;
                }
                if self.epoch != Some(base_epoch) {
                    self.awaiting_snapshot = true;
                    return Applied::Gap { last_applied: self.epoch };
                }
                for change in changes {
                    match change {
                        Change::Upsert(object) => {
                            let (key, value) = split(object);
                            self.objects.insert(key, value);
                        }
                        Change::Remove(key) => {
                            self.objects.remove(&key);
                        }
                    }
                }
                self.epoch = Some(epoch);
                Applied::Applied
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(value: (u32, &'static str)) -> (u32, &'static str) {
        value
    }

    fn delta(
        base: u64,
        changes: Vec<Change<(u32, &'static str), u32>>,
    ) -> Changes<(u32, &'static str), u32> {
        Changes::Delta { base_epoch: UpdateEpoch(base), changes }
    }

    #[test]
    fn full_then_deltas_chain() {
        let mut view = EpochView::default();
        assert_eq!(
            view.apply(UpdateEpoch(1), Changes::Full(vec![(1, "a"), (2, "b")]), pair),
            Applied::Applied
        );
        let changes = vec![Change::Remove(1), Change::Upsert((3, "c")), Change::Upsert((2, "B"))];
        assert_eq!(view.apply(UpdateEpoch(2), delta(1, changes), pair), Applied::Applied);
        assert_eq!(view.epoch(), Some(UpdateEpoch(2)));
        let objects: Vec<_> = view.objects().iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(objects, [(2, "B"), (3, "c")]);
    }

    #[test]
    fn gap_asks_once_and_waits_for_a_snapshot() {
        let mut view = EpochView::default();
        view.apply(UpdateEpoch(1), Changes::Full(vec![(1, "a")]), pair);
        let skipped = delta(2, vec![Change::Upsert((9, "z"))]);
        assert_eq!(
            view.apply(UpdateEpoch(3), skipped, pair),
            Applied::Gap { last_applied: Some(UpdateEpoch(1)) }
        );
        let next = delta(3, vec![Change::Upsert((8, "y"))]);
        assert_eq!(view.apply(UpdateEpoch(4), next, pair), Applied::Ignored);
        assert_eq!(view.objects().len(), 1, "nothing half-applied");
        assert_eq!(
            view.apply(UpdateEpoch(5), Changes::Full(vec![(7, "x")]), pair),
            Applied::Applied
        );
        let after = delta(5, vec![Change::Upsert((6, "w"))]);
        assert_eq!(view.apply(UpdateEpoch(6), after, pair), Applied::Applied);
        assert_eq!(view.objects().keys().copied().collect::<Vec<_>>(), [6, 7]);
    }

    #[test]
    fn delta_before_any_snapshot_is_a_gap() {
        let mut view: EpochView<u32, &str> = EpochView::default();
        let early = delta(1, vec![Change::Upsert((1, "a"))]);
        assert_eq!(view.apply(UpdateEpoch(2), early, pair), Applied::Gap { last_applied: None });
    }

    #[test]
    fn reset_keeps_objects_but_needs_a_new_snapshot() {
        let mut view = EpochView::default();
        view.apply(UpdateEpoch(4), Changes::Full(vec![(1, "a")]), pair);
        view.reset_epoch();
        assert_eq!(view.epoch(), None);
        assert_eq!(view.objects().len(), 1);
        let stale = delta(4, vec![Change::Remove(1)]);
        assert!(matches!(view.apply(UpdateEpoch(5), stale, pair), Applied::Gap { .. }));
    }
}
