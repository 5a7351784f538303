//! The follower role of one replica, as a pure state machine: which leader and epoch it
//! follows, whether it must find its divergence point before fetching, when to retry after a
//! refusal, and how it takes the leader's high watermark (HW). The fetcher
//! ([`super::fetcher`]) does the I/O and feeds the outcomes back.
//!
//! # Phases
//!
//! A follower of a new epoch (a new leader, or its own restart) starts in
//! [`Phase::FindDivergence`]: it asks the leader where its newest epoch ended there and cuts its
//! log at the point the logs part ([`super::divergence`]), then [`Phase::Fetching`]: it pulls
//! from its log end, reporting its acknowledged (durable) end. A `LogDiverged` answer sends it
//! back to finding the divergence point; refusals of an epoch the leader does not know yet (or
//! has left behind) wait [`RETRY_BACKOFF`] and ask again.
//!
//! # Invariants
//!
//! - The follower appends only at its log end, the leader's bytes, in the epoch it follows.
//! - After a cut at offset `o`, no batch and no leader-epoch entry starts at or after `o`:
//!   the history the next fetch reports (its newest epoch) is one the leader can judge.
//! - A cut never goes below the HW it learned (committed records are on every in-sync
//!   replica, and a new leader is always one of those), unless the topic allows unclean
//!   election. Asserted by the fetcher where the cut is made ([`check_cut`]).
//! - The HW it holds only grows, and never passes its own log end.

use std::time::{Duration, Instant};

use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{LeaderEpoch, Offset, SpuId};

use super::divergence::{truncation_step, EpochAnswer, LocalLog, TruncationStep};

/// Pause before asking a leader again after it refused (it has not learned the epoch yet, or
/// the follower's spec is behind the leader's).
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Where a follower is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Must find where its log parts from the leader's before fetching; `asking` is the epoch
    /// of the next question (`None`: its newest epoch).
    FindDivergence {
        /// The epoch to ask about.
        asking: Option<LeaderEpoch>,
    },
    /// Pulling records from its log end.
    Fetching,
}

/// What the fetcher does next for this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask the leader where this epoch ended.
    AskEpoch(LeaderEpoch),
    /// Fetch from the log end.
    Fetch,
    /// Nothing until then.
    WaitUntil(Instant),
}

/// What the fetcher must do to the log after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogAction {
    /// Nothing.
    None,
    /// Cut the log at this offset (a batch holding it goes whole).
    Truncate(Offset),
    /// Empty the log and restart it at this offset (the leader's log starts after ours ends).
    RestartAt(Offset),
}

/// The follower of one partition in one leader epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerState {
    leader: SpuId,
    epoch: LeaderEpoch,
    phase: Phase,
    retry_at: Option<Instant>,
    /// Bumped at every change of phase caused by an answer, so an answer to a request made
    /// before it is recognized as stale.
    generation: u64,
}

impl FollowerState {
    /// A follower of `leader` in `epoch`: it finds its divergence point first.
    pub fn new(leader: SpuId, epoch: LeaderEpoch) -> FollowerState {
        FollowerState {
            leader,
            epoch,
            phase: Phase::FindDivergence { asking: None },
            retry_at: None,
            generation: 0,
        }
    }

    /// The leader followed.
    pub fn leader(&self) -> SpuId {
        self.leader
    }

    /// The epoch followed.
    pub fn epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Changes whenever an answer moved the phase (requests carry it to detect staleness).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What to do now for a log whose newest epoch is `latest_epoch`.
    pub fn next_step(&mut self, latest_epoch: Option<LeaderEpoch>, now: Instant) -> Step {
        if let Some(at) = self.retry_at {
            if now < at {
                return Step::WaitUntil(at);
            }
            self.retry_at = None;
        }
        match self.phase {
            Phase::Fetching => Step::Fetch,
            Phase::FindDivergence { asking } => match asking.or(latest_epoch) {
                Some(epoch) => Step::AskEpoch(epoch),
                // An empty log holds nothing that could diverge.
                None => {
                    self.enter(Phase::Fetching);
                    Step::Fetch
                }
            },
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }

    fn back_off(&mut self, now: Instant) {
        self.retry_at = Some(now + RETRY_BACKOFF);
    }

    /// The leader's answer to the question about `asked` (or its error code).
    pub fn on_epoch_answer(
        &mut self,
        local: LocalLog<'_>,
        asked: LeaderEpoch,
        answer: Result<EpochAnswer, ErrorCode>,
        now: Instant,
    ) -> LogAction {
        let answer = match answer {
            Ok(answer) => answer,
            Err(code) => {
                tracing::debug!(leader = %self.leader, %code, "epoch question refused; retrying");
                self.back_off(now);
                return LogAction::None;
            }
        };
        match truncation_step(local, asked, answer) {
            TruncationStep::AskAgain(older) => {
                self.enter(Phase::FindDivergence { asking: Some(older) });
                LogAction::None
            }
            TruncationStep::Truncate(offset) => {
                self.enter(Phase::Fetching);
                // An epoch entry starting at the cut (an epoch this replica began as leader
                // and appended nothing in) must go too, or the next fetch names an epoch the
                // leader never had and the search starts over, forever.
                let epoch_past_cut = local.epochs.iter().any(|entry| entry.start_offset >= offset);
                if offset < local.log_end || epoch_past_cut {
                    LogAction::Truncate(offset)
                } else {
                    LogAction::None
                }
            }
        }
    }

    /// A fetch answered `code` for this replica. `leader_log_start` is the leader's log start
    /// from the same answer.
    pub fn on_fetch_error(
        &mut self,
        code: ErrorCode,
        leader_log_start: Offset,
        now: Instant,
    ) -> LogAction {
        match code {
            ErrorCode::LogDiverged => {
                self.enter(Phase::FindDivergence { asking: None });
                LogAction::None
            }
            // Below the leader's log start (retention removed what the follower lacks): start
            // over where the leader's log starts.
            ErrorCode::OffsetOutOfRange => LogAction::RestartAt(leader_log_start),
            _ => {
                self.back_off(now);
                LogAction::None
            }
        }
    }
}

/// The HW a follower holds after the leader reported `leader_high_watermark`: the leader's,
/// bounded by its own log end, never lower than before.
pub fn adopt_high_watermark(
    current: Offset,
    leader_high_watermark: Offset,
    log_end: Offset,
) -> Offset {
    current.max(leader_high_watermark.min(log_end))
}

/// Checks a cut the follower is about to make against the HW it holds: below it, committed
/// records would be removed, which a clean election can never require.
///
/// # Panics
/// When `cut < high_watermark` and the topic does not allow unclean election: the leader's
/// log lacks records this replica learned were committed, so replication is broken and going
/// on would lose acknowledged records silently.
pub fn check_cut(cut: Offset, high_watermark: Offset, unclean_election: bool) {
    if cut >= high_watermark {
        return;
    }
    if unclean_election {
        tracing::warn!(%cut, %high_watermark, "cutting committed records after an unclean election");
        return;
    }
    panic!(
        "a follower cut at {cut} would remove committed records below its high watermark \
         {high_watermark}: the leader lacks records this replica learned were committed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::checkpoint::EpochEntry;

    fn entries(list: &[(i32, i64)]) -> Vec<EpochEntry> {
        list.iter()
            .map(|(epoch, start)| EpochEntry {
                epoch: LeaderEpoch(*epoch),
                start_offset: Offset(*start),
            })
            .collect()
    }

    #[test]
    fn an_empty_log_fetches_at_once() {
        let now = Instant::now();
        let mut state = FollowerState::new(SpuId(1), LeaderEpoch(3));
        assert_eq!(state.next_step(None, now), Step::Fetch);
        assert_eq!(state.phase(), Phase::Fetching);
    }

    #[test]
    fn a_log_with_batches_asks_first_then_cuts_then_fetches() {
        let now = Instant::now();
        let mut state = FollowerState::new(SpuId(1), LeaderEpoch(3));
        let history = entries(&[(1, 0), (2, 10)]);
        let local = LocalLog { epochs: &history, log_end: Offset(30) };
        assert_eq!(state.next_step(local.latest_epoch(), now), Step::AskEpoch(LeaderEpoch(2)));
        let generation = state.generation();
        let answer = EpochAnswer::Ended { epoch: LeaderEpoch(2), end_offset: Offset(25) };
        assert_eq!(
            state.on_epoch_answer(local, LeaderEpoch(2), Ok(answer), now),
            LogAction::Truncate(Offset(25))
        );
        assert!(state.generation() > generation);
        assert_eq!(state.next_step(local.latest_epoch(), now), Step::Fetch);
    }

    #[test]
    fn an_epoch_entry_at_the_cut_is_cut_even_at_the_log_end() {
        // This replica led epoch 6 from 30 and appended nothing in it; the new leader had
        // epoch 4 up to 40.
        let now = Instant::now();
        let mut state = FollowerState::new(SpuId(1), LeaderEpoch(7));
        let history = entries(&[(1, 0), (4, 12), (6, 30)]);
        let local = LocalLog { epochs: &history, log_end: Offset(30) };
        assert_eq!(state.next_step(local.latest_epoch(), now), Step::AskEpoch(LeaderEpoch(6)));
        let answer = EpochAnswer::Ended { epoch: LeaderEpoch(4), end_offset: Offset(40) };
        assert_eq!(
            state.on_epoch_answer(local, LeaderEpoch(6), Ok(answer), now),
            LogAction::Truncate(Offset(30))
        );
        // Without such an entry, a cut at the log end is nothing to do.
        let mut state = FollowerState::new(SpuId(1), LeaderEpoch(7));
        let history = entries(&[(1, 0), (4, 12)]);
        let local = LocalLog { epochs: &history, log_end: Offset(30) };
        assert_eq!(state.on_epoch_answer(local, LeaderEpoch(4), Ok(answer), now), LogAction::None);
    }

    #[test]
    fn an_older_epoch_is_asked_about_when_the_leader_lacks_the_newest() {
        let now = Instant::now();
        let mut state = FollowerState::new(SpuId(1), LeaderEpoch(5));
        let history = entries(&[(1, 0), (4, 12)]);
        let local = LocalLog { epochs: &history, log_end: Offset(20) };
        let answer = EpochAnswer::Ended { epoch: LeaderEpoch(3), end_offset: Offset(15) };
        assert_eq!(state.on_epoch_answer(local, LeaderEpoch(4), Ok(answer), now), LogAction::None);
        assert_eq!(state.next_step(local.latest_epoch(), now), Step::AskEpoch(LeaderEpoch(1)));
    }

    #[test]
    fn refusals_wait_and_ask_again() {
        let now = Instant::now();
        let mut state = FollowerState::new(SpuId(1), LeaderEpoch(3));
        let history = entries(&[(1, 0)]);
        let local = LocalLog { epochs: &history, log_end: Offset(5) };
        let action =
            state.on_epoch_answer(local, LeaderEpoch(1), Err(ErrorCode::UnknownLeaderEpoch), now);
        assert_eq!(action, LogAction::None);
        assert_eq!(
            state.next_step(Some(LeaderEpoch(1)), now),
            Step::WaitUntil(now + RETRY_BACKOFF)
        );
        let later = now + RETRY_BACKOFF;
        assert_eq!(state.next_step(Some(LeaderEpoch(1)), later), Step::AskEpoch(LeaderEpoch(1)));
    }

    #[test]
    fn fetch_errors() {
        let now = Instant::now();
        let mut state = FollowerState::new(SpuId(1), LeaderEpoch(3));
        assert_eq!(state.next_step(None, now), Step::Fetch);
        assert_eq!(state.on_fetch_error(ErrorCode::LogDiverged, Offset(0), now), LogAction::None);
        assert_eq!(state.phase(), Phase::FindDivergence { asking: None });
        assert_eq!(
            state.on_fetch_error(ErrorCode::OffsetOutOfRange, Offset(70), now),
            LogAction::RestartAt(Offset(70))
        );
        assert_eq!(state.on_fetch_error(ErrorCode::NotLeader, Offset(0), now), LogAction::None);
        assert!(matches!(state.next_step(Some(LeaderEpoch(1)), now), Step::WaitUntil(_)));
    }

    #[test]
    fn the_high_watermark_follows_the_leader_within_the_log_and_never_drops() {
        assert_eq!(adopt_high_watermark(Offset(10), Offset(20), Offset(15)), Offset(15));
        assert_eq!(adopt_high_watermark(Offset(10), Offset(12), Offset(15)), Offset(12));
        assert_eq!(adopt_high_watermark(Offset(10), Offset(5), Offset(15)), Offset(10));
    }

    #[test]
    fn cuts_below_the_high_watermark_are_refused_unless_unclean() {
        check_cut(Offset(10), Offset(10), false);
        check_cut(Offset(5), Offset(10), true);
        let refused = std::panic::catch_unwind(|| check_cut(Offset(5), Offset(10), false));
        assert!(refused.is_err());
    }
}
