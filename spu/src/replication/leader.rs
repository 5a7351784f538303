//! The leader role of one replica, as a pure state machine: what each follower has, the high
//! watermark (HW), the in-sync set and its changes, and whether an acks `all` append may be
//! acknowledged. No I/O and no clock: the caller passes `now` and the log's offsets, and carries
//! out what the methods return (send a proposal to the SC, wake waiters).
//!
//! # Model
//!
//! - The SC owns the in-sync set (ISR) and its version, the partition epoch. The leader holds
//!   the set the SC last stored (`committed`) and at most one proposal of its own (`pending`).
//! - **HW** = the smallest *acknowledged end* among the members of `committed` ∪ `pending`:
//!   the leader's own durable end (its written end for a relaxed topic) and, for each follower,
//!   the durable end it reported in its last fetch of this epoch. A member that has not fetched
//!   in this epoch holds the HW where it is. Counting the union is what makes a shrink safe
//!   before the SC stored it (the leaving member still counts) and an expansion safe before it
//!   is stored (the joining member already counts).
//! - A follower *catches up* when a fetch asks for the leader's log end, or for at least the
//!   leader's log end at the time of its previous fetch (then it caught up at that time:
//!   under a steady load a follower is always a little behind). A member that has not caught
//!   up for `lag_max` leaves (a proposal); a replica outside the set whose acknowledged end
//!   reached both the HW and the epoch's start offset joins (a proposal). One proposal at a
//!   time.
//! - **A proposal counts until the SC's set moved past the set it changes.** The SC stores a
//!   proposal only while its set is still the one the proposal is based on, so once the leader
//!   knows a newer set (an answer in its epoch, or an assignment), the proposal can never be
//!   stored and is dropped. Until then its members count for the HW: one unanswered for
//!   [`PROPOSAL_TIMEOUT`] is sent again *unchanged* (the SC may have stored it and the answer
//!   been lost), and one the SC refused at its base set is kept until the timeout too (an
//!   earlier copy of it may still be on its way), then made anew. Answers about an older set,
//!   or from another leader epoch (the SC moved on without this leader: it keeps counting what
//!   the SC may hold), never release a proposal.
//! - acks `all` is acknowledged once the HW passed the append and the committed set has at
//!   least `min_in_sync` members; an append made while fewer are in sync is refused before it
//!   is written ([`LeaderState::enough_in_sync`]).
//! - A new leader cannot prove its HW until every member reported: the HW it learned as a
//!   follower may be below the one its predecessor showed readers. Until the HW reaches the
//!   epoch's start offset (everything the leader had when it took over, which includes every
//!   record any earlier leader counted as committed), committed reads are refused with a
//!   retriable error ([`LeaderState::committed_reads_allowed`]), so a reader never sees the HW
//!   go backwards across a leader change.
//!
//! # Invariants (asserted)
//!
//! - The HW never decreases and never passes the leader's own acknowledged end.
//! - The committed set always contains the leader and only replicas of the partition; its
//!   partition epoch only grows.
//! - A follower's acknowledged end never passes its fetch offset, nor the leader's log end.
//! - A pending proposal is based on the committed set's partition epoch and names the leader.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_proto::ids::{LeaderEpoch, Offset, PartitionEpoch, SpuId};
use sluice_proto::object::{InSyncSet, ReplicaStatus};

/// A proposal the SC has not answered after this long is dropped and made again (the SC link
/// may have lost it with a connection).
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings a leader applies, from the topic and the SPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderSettings {
    /// acks `all` needs at least this many in-sync replicas.
    pub min_in_sync: u16,
    /// A follower that has not caught up for this long leaves the in-sync set.
    pub lag_max: Duration,
}

/// What the leader knows of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset its last fetch asked for (its appended end).
    pub fetch_offset: Offset,
    /// The end it reported as acknowledged (durable) in that fetch.
    pub acknowledged_end: Offset,
    /// The last time it was caught up with the leader's log end.
    pub last_caught_up: Instant,
    /// The time and the leader's log end of its previous fetch.
    previous_fetch: Option<(Instant, Offset)>,
    /// Whether it fetched in this epoch (otherwise its ends are unknown).
    fetched: bool,
}

/// A change of the in-sync set sent to the SC and not answered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The proposed set, leader included, in replica order.
    pub in_sync_replicas: Vec<SpuId>,
    /// The partition epoch of the set it changes.
    pub based_on: PartitionEpoch,
    /// When it was made.
    pub made_at: Instant,
}

/// The outcome of an acks `all` check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckState {
    /// Durable on every in-sync replica, with enough of them.
    Acknowledged,
    /// Durable on every in-sync replica, but the set is smaller than `min_in_sync`.
    TooFewInSync,
    /// Not yet.
    Waiting,
}

/// Why a follower's fetch does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchRefusal {
    /// The fetching SPU is not a replica of the partition.
    NotAReplica,
}

/// The leader of one partition in one leader epoch.
#[derive(Clone, Debug)]
pub struct LeaderState {
    me: SpuId,
    epoch: LeaderEpoch,
    epoch_start: Offset,
    replicas: Vec<SpuId>,
    committed: InSyncSet,
    pending: Option<Proposal>,
    /// The SC refused a proposal based on the committed set (an answer at the pending
    /// proposal's base): it is made anew once it times out.
    pending_refused: bool,
    followers: BTreeMap<SpuId, FollowerProgress>,
    high_watermark: Offset,
    settings: LeaderSettings,
    became_leader_at: Instant,
}

/// What a replica brings to a leadership it takes over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The new leader.
    pub me: SpuId,
    /// Its leader epoch.
    pub epoch: LeaderEpoch,
    /// The log's end when it took over: where the epoch starts.
    pub epoch_start: Offset,
    /// Every replica, preferred first.
    pub replicas: Vec<SpuId>,
    /// The SC's in-sync set.
    pub in_sync: InSyncSet,
    /// The HW the log holds (learned as a follower, or checkpointed).
    pub high_watermark: Offset,
}

impl LeaderState {
    /// The leadership described by `takeover`, from `now`.
    pub fn new(takeover: Takeover, settings: LeaderSettings, now: Instant) -> LeaderState {
        let Takeover { me, epoch, epoch_start, replicas, in_sync, high_watermark } = takeover;
        assert!(
            high_watermark <= epoch_start,
            "HW {high_watermark} past the log end {epoch_start}"
        );
        let committed = sanitize(me, &replicas, in_sync);
        LeaderState {
            me,
            epoch,
            epoch_start,
            replicas,
            committed,
            pending: None,
            pending_refused: false,
            followers: BTreeMap::new(),
            high_watermark,
            settings,
            became_leader_at: now,
        }
    }

    /// The leader epoch.
    pub fn epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    /// The offset the epoch started at.
    pub fn epoch_start(&self) -> Offset {
        self.epoch_start
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The in-sync set the SC stored.
    pub fn in_sync(&self) -> &InSyncSet {
        &self.committed
    }

    /// The proposal waiting for the SC, if any.
    pub fn pending(&self) -> Option<&Proposal> {
        self.pending.as_ref()
    }

    /// The replicas, preferred first.
    pub fn replicas(&self) -> &[SpuId] {
        &self.replicas
    }

    /// Replaces the settings (a topic setting changed).
    pub fn set_settings(&mut self, settings: LeaderSettings) {
        self.settings = settings;
    }

    /// Whether acks `all` may append now: the committed set has at least `min_in_sync`.
    pub fn enough_in_sync(&self) -> bool {
        self.committed.replicas.len() >= usize::from(self.settings.min_in_sync.max(1))
    }

    /// Whether committed reads may be served: the HW is proven (it reached the epoch start).
    pub fn committed_reads_allowed(&self) -> bool {
        self.high_watermark >= self.epoch_start
    }

    /// Records a follower's fetch of this epoch: `fetch_offset` (its appended end) and
    /// `acknowledged_end` (its durable end), at `now`, when the leader's log ends at
    /// `log_end`. The caller has checked that the follower's log matches the leader's up to
    /// `fetch_offset` (same epoch at its last batch) and that `fetch_offset <= log_end`.
    pub fn on_fetch(
        &mut self,
        follower: SpuId,
        fetch_offset: Offset,
        acknowledged_end: Offset,
        log_end: Offset,
        now: Instant,
    ) -> Result<(), FetchRefusal> {
        if follower == self.me || !self.replicas.contains(&follower) {
            return Err(FetchRefusal::NotAReplica);
        }
        assert!(fetch_offset <= log_end, "follower {follower} fetches past the log end");
        let acknowledged_end = acknowledged_end.min(fetch_offset);
        let start = self.became_leader_at;
        let progress = self.followers.entry(follower).or_insert(FollowerProgress {
            fetch_offset,
            acknowledged_end,
            last_caught_up: start,
            previous_fetch: None,
            fetched: false,
        });
        if fetch_offset >= log_end {
            progress.last_caught_up = now;
        } else if let Some((at, end_then)) = progress.previous_fetch {
            if fetch_offset >= end_then && at > progress.last_caught_up {
                progress.last_caught_up = at;
            }
        }
        progress.previous_fetch = Some((now, log_end));
        progress.fetch_offset = fetch_offset;
        progress.acknowledged_end = acknowledged_end;
        progress.fetched = true;
        Ok(())
    }

    /// What the leader knows of `follower`, once it fetched in this epoch.
    pub fn progress(&self, follower: SpuId) -> Option<&FollowerProgress> {
        self.followers.get(&follower).filter(|progress| progress.fetched)
    }

    /// Recomputes the HW from the leader's own acknowledged end; returns whether it moved.
    pub fn update_high_watermark(&mut self, own_end: Offset) -> bool {
        let mut lowest = own_end;
        for member in self.counted_members() {
            if member == self.me {
                continue;
            }
            match self.progress(member) {
                Some(progress) => lowest = lowest.min(progress.acknowledged_end),
                None => return false,
            }
        }
        if lowest <= self.high_watermark {
            return false;
        }
        assert!(lowest <= own_end, "HW {lowest} past the leader's acknowledged end {own_end}");
        self.high_watermark = lowest;
        true
    }

    /// The members whose ends count for the HW: the committed set and the pending proposal.
    fn counted_members(&self) -> impl Iterator<Item = SpuId> + '_ {
        let proposed = self.pending.iter().flat_map(|pending| pending.in_sync_replicas.iter());
        let extra = proposed.filter(|spu| !self.committed.replicas.contains(spu));
        self.committed.replicas.iter().chain(extra).copied()
    }

    /// Whether an acks `all` append ending at `end` (exclusive) may be acknowledged.
    pub fn ack_state(&self, end: Offset) -> AckState {
        if self.high_watermark < end {
            AckState::Waiting
        } else if self.enough_in_sync() {
            AckState::Acknowledged
        } else {
            AckState::TooFewInSync
        }
    }

    /// The in-sync set the leader wants now, when it differs from the committed one and no
    /// proposal is waiting: members that lagged for `lag_max` leave, caught-up replicas join.
    /// The returned proposal is now pending; send it to the SC.
    pub fn propose(&mut self, now: Instant) -> Option<Proposal> {
        if let Some(pending) = &mut self.pending {
            assert_eq!(pending.based_on, self.committed.partition_epoch, "a superseded proposal");
            assert!(pending.in_sync_replicas.contains(&self.me), "a proposal without the leader");
            if now.saturating_duration_since(pending.made_at) < PROPOSAL_TIMEOUT {
                return None;
            }
            if !self.pending_refused {
                // Its fate is unknown: the SC may hold it. Its members keep counting.
                pending.made_at = now;
                return Some(pending.clone());
            }
            self.release_pending();
        }
        let wanted: Vec<SpuId> = self
            .replicas
            .iter()
            .copied()
            .filter(|replica| {
                let member = self.committed.replicas.contains(replica);
                *replica == self.me
                    || (member && !self.lagging(*replica, now))
                    || (!member && self.may_join(*replica, now))
            })
            .collect();
        if same_members(&wanted, &self.committed.replicas) {
            return None;
        }
        let proposal = Proposal {
            in_sync_replicas: wanted,
            based_on: self.committed.partition_epoch,
            made_at: now,
        };
        self.pending = Some(proposal.clone());
        self.pending_refused = false;
        Some(proposal)
    }

    fn release_pending(&mut self) {
        self.pending = None;
        self.pending_refused = false;
    }

    fn last_caught_up(&self, replica: SpuId) -> Instant {
        self.followers.get(&replica).map_or(self.became_leader_at, |progress| {
            progress.last_caught_up.max(self.became_leader_at)
        })
    }

    fn lagging(&self, replica: SpuId, now: Instant) -> bool {
        now.saturating_duration_since(self.last_caught_up(replica)) > self.settings.lag_max
    }

    fn may_join(&self, replica: SpuId, now: Instant) -> bool {
        let Some(progress) = self.progress(replica) else { return false };
        progress.acknowledged_end >= self.high_watermark
            && progress.acknowledged_end >= self.epoch_start
            && !self.lagging(replica, now)
    }

    /// The SC answered a proposal (this one or an earlier one: answers carry no proposal)
    /// with its leader epoch and the set it holds after judging it. In this leader's epoch a
    /// newer set is adopted and releases the pending proposal (it can no longer be stored); a
    /// set at the pending proposal's base means the SC refused it (see the module docs).
    /// Anything else is stale, or comes from an SC that moved on without this leader, and
    /// changes nothing.
    pub fn on_proposal_answer(&mut self, leader_epoch: LeaderEpoch, in_sync: InSyncSet) {
        if leader_epoch != self.epoch {
            return;
        }
        let answered_at = in_sync.partition_epoch;
        let names_me = in_sync.replicas.contains(&self.me);
        self.adopt(in_sync);
        if let Some(pending) = &self.pending {
            if answered_at > pending.based_on {
                self.release_pending();
            } else if answered_at == pending.based_on && names_me {
                self.pending_refused = true;
            }
        }
    }

    /// The partition's replicas changed within this epoch (a move adds replicas, then drops
    /// the old ones together with a new in-sync set, which [`Self::on_assignment`] adopts
    /// next). Progress of replicas no longer named is forgotten. The committed set and a
    /// pending proposal are kept until the SC's new set replaces them: counting a removed
    /// member can only hold the HW back, never advance it.
    pub fn set_replicas(&mut self, replicas: Vec<SpuId>) {
        assert!(replicas.contains(&self.me), "a leader that is not a replica");
        if replicas == self.replicas {
            return;
        }
        self.followers.retain(|follower, _| replicas.contains(follower));
        self.replicas = replicas;
    }

    /// The SC's current set arrived with the replica assignment.
    pub fn on_assignment(&mut self, in_sync: InSyncSet) {
        if self.pending.as_ref().is_some_and(|pending| pending.based_on < in_sync.partition_epoch) {
            // The SC moved on from the set the proposal changed: decide again from the new one.
            self.release_pending();
        }
        self.adopt(in_sync);
    }

    /// Takes a newer set from the SC. One without the leader, or naming unknown replicas, is
    /// not a set this leader can use (a newer assignment follows it); it is ignored.
    fn adopt(&mut self, in_sync: InSyncSet) {
        if in_sync.partition_epoch <= self.committed.partition_epoch {
            return;
        }
        let usable = in_sync.replicas.contains(&self.me)
            && in_sync.replicas.iter().all(|spu| self.replicas.contains(spu));
        if !usable {
            tracing::warn!(leader = %self.me, ?in_sync, "in-sync set from the SC not applicable");
            return;
        }
        let before = self.committed.partition_epoch;
        self.committed = in_sync;
        assert!(self.committed.partition_epoch > before);
        if self.pending.as_ref().is_some_and(|pending| {
            pending.based_on < self.committed.partition_epoch
                || same_members(&pending.in_sync_replicas, &self.committed.replicas)
        }) {
            self.release_pending();
        }
    }

    /// The followers' status for the live replica status report.
    pub fn follower_statuses(&self, log_end: Offset) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .filter(|replica| **replica != self.me)
            .map(|replica| {
                let (fetch_offset, acknowledged) = self
                    .progress(*replica)
                    .map_or((Offset(0), Offset(0)), |p| (p.fetch_offset, p.acknowledged_end));
                ReplicaStatus {
                    spu: *replica,
                    high_watermark: self.high_watermark.min(fetch_offset),
                    log_end_offset: fetch_offset,
                    durable_end_offset: acknowledged,
                    lag_records: (log_end.get() - fetch_offset.get()).max(0) as u64,
                }
            })
            .collect()
    }
}

/// The SC's set as a leader can hold it: it must name the leader and only replicas. The SC
/// guarantees both; a set violating them (an older SC, a bug) becomes every replica at version
/// 0: the most a leader may wait for, never less than the SC stored, so nothing is committed
/// on fewer copies than promised; the next assignment or proposal answer replaces it.
fn sanitize(me: SpuId, replicas: &[SpuId], in_sync: InSyncSet) -> InSyncSet {
    let usable =
        in_sync.replicas.contains(&me) && in_sync.replicas.iter().all(|spu| replicas.contains(spu));
    if usable {
        return in_sync;
    }
    tracing::warn!(leader = %me, ?in_sync, "in-sync set without the leader; counting every replica");
    InSyncSet { replicas: replicas.to_vec(), partition_epoch: PartitionEpoch(0) }
}

fn same_members(left: &[SpuId], right: &[SpuId]) -> bool {
    left.len() == right.len() && left.iter().all(|spu| right.contains(spu))
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
