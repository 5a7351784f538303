//! Where two replica logs part: pure functions over leader-epoch histories (Kafka's KIP-101
//! with KIP-279's iteration, and KIP-320's check of a follower's position).
//!
//! Why it works: every batch carries the epoch of the leader that appended it, a leader appends
//! only at its own end, and a follower appends only the leader's bytes at its own end. So two
//! logs holding batches of the same epoch at the same offset hold the same bytes there, and
//! the same bytes before them. For the follower's epoch `e` the leader answers the largest
//! epoch `e' <= e` it has and where `e'` ended on it. If the follower has `e'` too, the logs
//! agree up to the lower of the two ends of `e'` and part right after it: the follower cuts
//! there. If the follower's newest epoch at or below `e'` is older, it asks again with that
//! one (each question names a smaller epoch, so this ends).

use sluice_proto::ids::{LeaderEpoch, Offset};

use crate::storage::checkpoint::{end_offset_for_epoch, EpochEntry};

/// A follower's log as the divergence search sees it.
#[derive(Clone, Copy, Debug)]
pub struct LocalLog<'a> {
    /// The leader-epoch history.
    pub epochs: &'a [EpochEntry],
    /// The offset after the last appended batch.
    pub log_end: Offset,
}

impl LocalLog<'_> {
    /// The newest epoch of the log, `None` when it holds no batch.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.last().map(|entry| entry.epoch)
    }
}

/// The leader's answer to "where did epoch `e` end?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochAnswer {
    /// The largest epoch at or below the one asked, and where it ended on the leader.
    Ended {
        /// That epoch.
        epoch: LeaderEpoch,
        /// The offset after its last batch on the leader.
        end_offset: Offset,
    },
    /// The leader has no epoch at or below the one asked; its history starts at
    /// `first_offset` (its first epoch's start, or its log start).
    NoneAtOrBelow {
        /// Where the leader's history starts.
        first_offset: Offset,
    },
}

/// What the follower does with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationStep {
    /// Cut the log at this offset (removing it and everything after), then fetch from there.
    Truncate(Offset),
    /// Ask the leader again about this (older) epoch.
    AskAgain(LeaderEpoch),
}

/// The next step after the leader's `answer` to a question about epoch `asked`.
pub fn truncation_step(
    local: LocalLog<'_>,
    asked: LeaderEpoch,
    answer: EpochAnswer,
) -> TruncationStep {
    let first_local = local.epochs.first().map_or(local.log_end, |entry| entry.start_offset);
    match answer {
        EpochAnswer::NoneAtOrBelow { first_offset } => {
            // Nothing of the follower's epochs up to `asked` is on the leader past its first
            // offset: keep only what lies before it.
            TruncationStep::Truncate(first_offset.min(local.log_end))
        }
        EpochAnswer::Ended { epoch, end_offset } => {
            debug_assert!(epoch <= asked, "the leader answered a newer epoch than asked");
            match end_offset_for_epoch(local.epochs, local.log_end, epoch) {
                Some((local_epoch, local_end)) if local_epoch == epoch => {
                    TruncationStep::Truncate(end_offset.min(local_end))
                }
                Some((older, _)) if older < epoch => TruncationStep::AskAgain(older),
                // Every local epoch is newer than anything the leader has up to `asked`:
                // all of the follower's batches diverge.
                _ => TruncationStep::Truncate(end_offset.min(first_local)),
            }
        }
    }
}

/// The leader's answer for a follower's question about `epoch`, from its own history.
pub fn answer(
    leader_epochs: &[EpochEntry],
    leader_log_end: Offset,
    leader_log_start: Offset,
    epoch: LeaderEpoch,
) -> EpochAnswer {
    match end_offset_for_epoch(leader_epochs, leader_log_end, epoch) {
        Some((epoch, end_offset)) => EpochAnswer::Ended { epoch, end_offset },
        None => EpochAnswer::NoneAtOrBelow {
            first_offset: leader_epochs
                .first()
                .map_or(leader_log_start, |entry| entry.start_offset),
        },
    }
}

/// Whether a follower at `fetch_offset` whose last batch has `last_fetched_epoch` holds a
/// prefix of the leader's log (so its reported ends may count). A follower ahead of the leader,
/// or whose last epoch ended earlier (or not at all) on the leader, has diverged.
pub fn follower_matches(
    leader_epochs: &[EpochEntry],
    leader_log_end: Offset,
    last_fetched_epoch: Option<LeaderEpoch>,
    fetch_offset: Offset,
) -> bool {
    if fetch_offset > leader_log_end {
        return false;
    }
    match last_fetched_epoch {
        // An empty follower log holds nothing that could differ.
        None => true,
        Some(epoch) => matches!(
            end_offset_for_epoch(leader_epochs, leader_log_end, epoch),
            Some((leader_epoch, end)) if leader_epoch == epoch && end >= fetch_offset
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(i32, i64)]) -> Vec<EpochEntry> {
        entries
            .iter()
            .map(|(epoch, start)| EpochEntry {
                epoch: LeaderEpoch(*epoch),
                start_offset: Offset(*start),
            })
            .collect()
    }

    /// Runs the question-and-answer loop between a follower and a leader history.
    fn cut(
        follower: &[(i32, i64)],
        follower_end: i64,
        leader: &[(i32, i64)],
        leader_end: i64,
    ) -> i64 {
        let follower = history(follower);
        let leader = history(leader);
        let local = LocalLog { epochs: &follower, log_end: Offset(follower_end) };
        let mut asked = local.latest_epoch().expect("a non-empty follower");
        for _ in 0..100 {
            let reply = answer(&leader, Offset(leader_end), Offset(0), asked);
            match truncation_step(local, asked, reply) {
                TruncationStep::Truncate(offset) => return offset.get(),
                TruncationStep::AskAgain(older) => {
                    assert!(older < asked, "each question names an older epoch");
                    asked = older;
                }
            }
        }
        panic!("no answer after 100 questions");
    }

    #[test]
    fn same_history_keeps_everything_the_leader_has() {
        assert_eq!(cut(&[(0, 0), (1, 10)], 20, &[(0, 0), (1, 10)], 25), 20);
        assert_eq!(cut(&[(0, 0), (1, 10)], 20, &[(0, 0), (1, 10), (2, 15)], 25), 15);
    }

    #[test]
    fn an_uncommitted_tail_of_an_old_leader_is_cut() {
        // The follower led epoch 1 and appended to 30; the new leader (epoch 2) had 25 of it.
        assert_eq!(cut(&[(0, 0), (1, 10)], 30, &[(0, 0), (1, 10), (2, 25)], 40), 25);
    }

    #[test]
    fn an_epoch_the_leader_never_had_is_cut_whole() {
        // The follower has epoch 2 from 20 (a leader that lost its election race); the leader
        // went from epoch 1 to 3 at 22.
        assert_eq!(cut(&[(0, 0), (1, 10), (2, 20)], 26, &[(0, 0), (1, 10), (3, 22)], 30), 20);
    }

    #[test]
    fn older_epochs_are_asked_until_both_have_one() {
        // Follower epochs 1 and 4; the leader has 1 and 3 (no 4). Asked 4, the leader answers
        // (3, end); the follower has no 3, so it asks 1 and cuts where 1 ends on either side.
        assert_eq!(cut(&[(1, 0), (4, 12)], 20, &[(1, 0), (3, 15)], 30), 12);
        assert_eq!(cut(&[(1, 0), (4, 12)], 20, &[(1, 0), (3, 8)], 30), 8);
    }

    #[test]
    fn a_follower_with_only_newer_epochs_keeps_nothing_past_the_leader_epoch_end() {
        assert_eq!(cut(&[(5, 40)], 60, &[(1, 0), (3, 30)], 70), 40);
        assert_eq!(cut(&[(5, 40)], 60, &[(1, 0), (2, 35)], 70), 40);
    }

    #[test]
    fn a_leader_without_older_epochs_cuts_at_its_first_offset() {
        let leader = history(&[(7, 100)]);
        let reply = answer(&leader, Offset(150), Offset(90), LeaderEpoch(3));
        assert_eq!(reply, EpochAnswer::NoneAtOrBelow { first_offset: Offset(100) });
        let follower = history(&[(3, 80)]);
        let local = LocalLog { epochs: &follower, log_end: Offset(120) };
        assert_eq!(
            truncation_step(local, LeaderEpoch(3), reply),
            TruncationStep::Truncate(Offset(100))
        );
        let reply = answer(&[], Offset(0), Offset(0), LeaderEpoch(3));
        assert_eq!(reply, EpochAnswer::NoneAtOrBelow { first_offset: Offset(0) });
    }

    #[test]
    fn a_follower_position_matches_only_inside_its_last_epoch_on_the_leader() {
        let leader = history(&[(0, 0), (2, 10)]);
        let end = Offset(20);
        assert!(follower_matches(&leader, end, None, Offset(0)));
        assert!(follower_matches(&leader, end, Some(LeaderEpoch(0)), Offset(10)));
        assert!(follower_matches(&leader, end, Some(LeaderEpoch(2)), Offset(20)));
        assert!(follower_matches(&leader, end, Some(LeaderEpoch(0)), Offset(5)));
        assert!(!follower_matches(&leader, end, Some(LeaderEpoch(0)), Offset(11)), "0 ended at 10");
        assert!(!follower_matches(&leader, end, Some(LeaderEpoch(1)), Offset(5)), "no epoch 1");
        assert!(!follower_matches(&leader, end, Some(LeaderEpoch(2)), Offset(21)), "ahead");
        assert!(!follower_matches(&leader, end, Some(LeaderEpoch(3)), Offset(15)), "newer epoch");
    }

    /// Random pairs of histories built the way leaders build them (a shared prefix, then each
    /// side's own later epochs): the cut is exactly where they part.
    #[test]
    fn random_histories_cut_where_they_part() {
        use rand::{Rng, SeedableRng};
        for seed in 0..2_000u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // One "true" log of (epoch per offset), shared up to `common`.
            let mut epoch = 0;
            let mut shared = Vec::new();
            for _ in 0..rng.gen_range(0..40) {
                if rng.gen_bool(0.2) {
                    epoch += 1;
                }
                shared.push(epoch);
            }
            let grow = |rng: &mut rand::rngs::StdRng, from: &[i32], next_epoch: &mut i32| {
                let mut log = from.to_vec();
                if rng.gen_bool(0.7) {
                    *next_epoch += rng.gen_range(1..3);
                    for _ in 0..rng.gen_range(1..20) {
                        log.push(*next_epoch);
                    }
                }
                log
            };
            let mut next = epoch;
            let leader_log = grow(&mut rng, &shared, &mut next);
            let follower_log = grow(&mut rng, &shared, &mut next);
            if follower_log.is_empty() {
                continue;
            }
            let to_history = |log: &[i32]| {
                let mut entries: Vec<(i32, i64)> = Vec::new();
                for (offset, epoch) in log.iter().enumerate() {
                    if entries.last().is_none_or(|(last, _)| last != epoch) {
                        entries.push((*epoch, offset as i64));
                    }
                }
                entries
            };
            let common = leader_log.iter().zip(&follower_log).take_while(|(a, b)| a == b).count();
            let got = cut(
                &to_history(&follower_log),
                follower_log.len() as i64,
                &to_history(&leader_log),
                leader_log.len() as i64,
            );
            assert_eq!(
                got, common as i64,
                "seed {seed}: leader {leader_log:?} follower {follower_log:?}"
            );
        }
    }
}
