use super::*;

const LEADER: SpuId = SpuId(1);
const LAG_MAX: Duration = Duration::from_secs(10);

fn set(members: &[i32], epoch: u64) -> InSyncSet {
    InSyncSet {
        replicas: members.iter().map(|id| SpuId(*id)).collect(),
        partition_epoch: PartitionEpoch(epoch),
    }
}

fn settings(min_in_sync: u16) -> LeaderSettings {
    LeaderSettings { min_in_sync, lag_max: LAG_MAX }
}

/// Leader 1 of replicas 1, 2, 3, all in sync, epoch starting at `start` with HW `hw`.
fn leader(start: i64, hw: i64, now: Instant) -> LeaderState {
    LeaderState::new(
        Takeover {
            me: LEADER,
            epoch: LeaderEpoch(5),
            epoch_start: Offset(start),
            replicas: [SpuId(1), SpuId(2), SpuId(3)].to_vec(),
            in_sync: set(&[1, 2, 3], 7),
            high_watermark: Offset(hw),
        },
        settings(2),
        now,
    )
}

fn fetch(
    state: &mut LeaderState,
    follower: i32,
    offset: i64,
    durable: i64,
    end: i64,
    now: Instant,
) {
    state.on_fetch(SpuId(follower), Offset(offset), Offset(durable), Offset(end), now).unwrap();
}

#[test]
fn a_single_replica_commits_what_it_made_durable() {
    let now = Instant::now();
    let mut state = LeaderState::new(
        Takeover {
            me: LEADER,
            epoch: LeaderEpoch(0),
            epoch_start: Offset(0),
            replicas: [LEADER].to_vec(),
            in_sync: set(&[1], 1),
            high_watermark: Offset(0),
        },
        settings(1),
        now,
    );
    assert!(state.update_high_watermark(Offset(10)));
    assert_eq!(state.high_watermark(), Offset(10));
    assert_eq!(state.ack_state(Offset(10)), AckState::Acknowledged);
    assert_eq!(state.ack_state(Offset(11)), AckState::Waiting);
    assert!(state.committed_reads_allowed());
}

#[test]
fn the_high_watermark_is_the_lowest_acknowledged_end_of_the_in_sync_set() {
    let now = Instant::now();
    let mut state = leader(100, 90, now);
    assert!(!state.committed_reads_allowed(), "the HW must reach the epoch start first");
    // Follower 3 has not fetched in this epoch: nothing moves.
    fetch(&mut state, 2, 120, 110, 130, now);
    assert!(!state.update_high_watermark(Offset(130)));
    assert_eq!(state.high_watermark(), Offset(90));
    fetch(&mut state, 3, 105, 100, 130, now);
    assert!(state.update_high_watermark(Offset(130)));
    assert_eq!(state.high_watermark(), Offset(100));
    assert!(state.committed_reads_allowed());
    // The leader's own durable end counts too.
    fetch(&mut state, 3, 130, 130, 130, now);
    assert!(state.update_high_watermark(Offset(115)));
    assert_eq!(state.high_watermark(), Offset(110));
    // The acknowledged end is never counted past what the follower fetched.
    fetch(&mut state, 2, 120, 125, 130, now);
    assert!(state.update_high_watermark(Offset(130)));
    assert_eq!(state.high_watermark(), Offset(120));
}

#[test]
fn the_high_watermark_never_goes_back() {
    let now = Instant::now();
    let mut state = leader(0, 0, now);
    fetch(&mut state, 2, 50, 50, 50, now);
    fetch(&mut state, 3, 50, 50, 50, now);
    assert!(state.update_high_watermark(Offset(50)));
    // A lower report (it cannot happen, but it must not pull the HW back).
    fetch(&mut state, 2, 40, 40, 50, now);
    assert!(!state.update_high_watermark(Offset(50)));
    assert_eq!(state.high_watermark(), Offset(50));
}

#[test]
fn acks_all_needs_min_in_sync_members() {
    let now = Instant::now();
    let mut state = leader(0, 0, now);
    assert!(state.enough_in_sync());
    state.on_assignment(set(&[1], 8));
    assert!(!state.enough_in_sync());
    assert!(state.update_high_watermark(Offset(10)), "alone in the set, the leader commits");
    assert_eq!(state.ack_state(Offset(10)), AckState::TooFewInSync);
    state.on_assignment(set(&[1, 3], 9));
    assert!(state.enough_in_sync());
}

#[test]
fn a_lagging_member_is_proposed_out_and_still_counted_until_the_sc_stores_it() {
    let start = Instant::now();
    let mut state = leader(0, 0, start);
    fetch(&mut state, 2, 10, 10, 10, start);
    fetch(&mut state, 3, 10, 10, 10, start);
    assert!(state.update_high_watermark(Offset(10)));
    assert_eq!(state.propose(start), None, "everyone is caught up");
    // Follower 3 stops fetching; follower 2 keeps up.
    let later = start + LAG_MAX + Duration::from_millis(1);
    fetch(&mut state, 2, 20, 20, 20, later);
    let proposal = state.propose(later).expect("a shrink");
    assert_eq!(proposal.in_sync_replicas, [SpuId(1), SpuId(2)]);
    assert_eq!(proposal.based_on, PartitionEpoch(7));
    assert_eq!(state.propose(later), None, "one proposal at a time");
    // Not stored yet: follower 3 still holds the HW.
    assert!(!state.update_high_watermark(Offset(20)));
    assert_eq!(state.high_watermark(), Offset(10));
    state.on_proposal_answer(LeaderEpoch(5), set(&[1, 2], 8));
    assert_eq!(state.in_sync(), &set(&[1, 2], 8));
    assert!(state.update_high_watermark(Offset(20)));
    assert_eq!(state.high_watermark(), Offset(20));
}

#[test]
fn a_refused_proposal_keeps_the_stored_set() {
    let start = Instant::now();
    let mut state = leader(0, 0, start);
    let later = start + LAG_MAX * 2;
    fetch(&mut state, 2, 0, 0, 0, later);
    assert!(state.propose(later).is_some());
    // Refused: a stale leader epoch. The set stays, and so does the proposal: the SC moved on
    // without this leader, which keeps counting every member the SC may hold.
    state.on_proposal_answer(LeaderEpoch(6), set(&[2, 3], 9));
    assert_eq!(state.in_sync(), &set(&[1, 2, 3], 7));
    assert!(state.pending().is_some());
}

#[test]
fn a_proposal_refused_at_its_base_counts_until_it_times_out_then_is_made_anew() {
    let start = Instant::now();
    let mut state = leader(0, 0, start);
    let later = start + LAG_MAX * 2;
    fetch(&mut state, 2, 0, 0, 0, later);
    let first = state.propose(later).expect("3 leaves");
    state.on_proposal_answer(LeaderEpoch(5), set(&[1, 2, 3], 7));
    assert_eq!(state.pending(), Some(&first), "kept until an earlier copy had time to land");
    assert_eq!(state.propose(later + PROPOSAL_TIMEOUT / 2), None);
    // Follower 3 came back meanwhile: the new decision keeps it.
    let much_later = later + PROPOSAL_TIMEOUT;
    fetch(&mut state, 3, 0, 0, 0, much_later);
    fetch(&mut state, 2, 0, 0, 0, much_later);
    assert_eq!(state.propose(much_later), None, "nothing to change any more");
    assert_eq!(state.pending(), None);
}

#[test]
fn a_stale_answer_never_releases_the_pending_proposal() {
    let start = Instant::now();
    let mut state = leader(0, 0, start);
    let later = start + LAG_MAX * 2;
    fetch(&mut state, 2, 0, 0, 0, later);
    state.on_assignment(set(&[1, 2, 3], 8));
    let proposal = state.propose(later).expect("3 leaves");
    assert_eq!(proposal.based_on, PartitionEpoch(8));
    // The answer to a proposal based on 7 arrives late.
    state.on_proposal_answer(LeaderEpoch(5), set(&[1, 2, 3], 7));
    assert_eq!(state.pending(), Some(&proposal));
    // The answer to this one: stored.
    state.on_proposal_answer(LeaderEpoch(5), set(&[1, 2], 9));
    assert_eq!(state.pending(), None);
    assert_eq!(state.in_sync(), &set(&[1, 2], 9));
}

#[test]
fn a_follower_under_steady_load_counts_as_caught_up() {
    let start = Instant::now();
    let mut state = leader(0, 0, start);
    let mut leader_end = 100;
    let mut now = start;
    // Every fetch asks for where the leader ended at the previous fetch, never its current end.
    let mut previous_end = 0;
    for _ in 0..50 {
        now += Duration::from_secs(1);
        fetch(&mut state, 2, previous_end, previous_end, leader_end, now);
        fetch(&mut state, 3, leader_end, leader_end, leader_end, now);
        previous_end = leader_end;
        leader_end += 100;
    }
    assert_eq!(state.propose(now), None, "follower 2 stays in sync");
}

#[test]
fn a_caught_up_replica_joins_once_it_reached_the_high_watermark_and_the_epoch_start() {
    let start = Instant::now();
    let mut state = LeaderState::new(
        Takeover {
            me: LEADER,
            epoch: LeaderEpoch(5),
            epoch_start: Offset(50),
            replicas: [SpuId(1), SpuId(2), SpuId(3)].to_vec(),
            in_sync: set(&[1, 2], 7),
            high_watermark: Offset(50),
        },
        settings(2),
        start,
    );
    fetch(&mut state, 2, 60, 60, 60, start);
    assert!(state.update_high_watermark(Offset(60)));
    // Follower 3 below the HW: not yet.
    fetch(&mut state, 3, 55, 55, 60, start);
    assert_eq!(state.propose(start), None);
    fetch(&mut state, 3, 60, 60, 60, start);
    let proposal = state.propose(start).expect("an expansion");
    assert_eq!(proposal.in_sync_replicas, [SpuId(1), SpuId(2), SpuId(3)]);
    // While pending, the joining member already counts.
    fetch(&mut state, 2, 80, 80, 80, start);
    assert!(state.update_high_watermark(Offset(80)) || state.high_watermark() == Offset(60));
    assert_eq!(state.high_watermark(), Offset(60), "member 3 (joining) holds the HW at 60");
}

#[test]
fn an_unanswered_proposal_is_made_again() {
    let start = Instant::now();
    let mut state = leader(0, 0, start);
    let later = start + LAG_MAX * 2;
    let first = state.propose(later).expect("2 and 3 leave");
    assert!(state.propose(later + PROPOSAL_TIMEOUT / 2).is_none());
    // Follower 2 is back: a new decision would keep it, but the SC may hold the first
    // proposal, so it goes again unchanged (the members it counts still count).
    let again_at = later + PROPOSAL_TIMEOUT;
    fetch(&mut state, 2, 0, 0, 0, again_at);
    let again = state.propose(again_at).expect("sent again");
    assert_eq!(again.in_sync_replicas, first.in_sync_replicas);
    assert_eq!(again.based_on, first.based_on);
    assert_eq!(again.made_at, again_at);
}

#[test]
fn a_newer_assignment_replaces_a_pending_proposal() {
    let start = Instant::now();
    let mut state = leader(0, 0, start);
    let later = start + LAG_MAX * 2;
    fetch(&mut state, 2, 0, 0, 0, later);
    assert!(state.propose(later).is_some());
    state.on_assignment(set(&[1, 2], 8));
    assert_eq!(state.pending(), None);
    assert_eq!(state.in_sync(), &set(&[1, 2], 8));
    // An older or equal version is ignored.
    state.on_assignment(set(&[1, 2, 3], 8));
    assert_eq!(state.in_sync(), &set(&[1, 2], 8));
}

#[test]
fn sets_without_the_leader_are_never_used() {
    let now = Instant::now();
    let state = LeaderState::new(
        Takeover {
            me: LEADER,
            epoch: LeaderEpoch(1),
            epoch_start: Offset(0),
            replicas: [SpuId(1), SpuId(2)].to_vec(),
            in_sync: set(&[2], 3),
            high_watermark: Offset(0),
        },
        settings(1),
        now,
    );
    // Counting every replica: the leader cannot commit alone.
    assert_eq!(state.in_sync().replicas, [SpuId(1), SpuId(2)]);
    let mut state = state;
    assert!(!state.update_high_watermark(Offset(10)));
    state.on_assignment(set(&[2, 3], 9));
    assert_eq!(state.in_sync().replicas, [SpuId(1), SpuId(2)]);
}

#[test]
fn fetches_from_non_replicas_are_refused() {
    let now = Instant::now();
    let mut state = leader(0, 0, now);
    let outcome = state.on_fetch(SpuId(9), Offset(0), Offset(0), Offset(0), now);
    assert_eq!(outcome, Err(FetchRefusal::NotAReplica));
    let outcome = state.on_fetch(LEADER, Offset(0), Offset(0), Offset(0), now);
    assert_eq!(outcome, Err(FetchRefusal::NotAReplica));
}

/// Random fetches, durable ends, proposals and answers: the HW never decreases, never passes
/// the leader's end, and never passes an acknowledged end of a member of the committed set
/// (nothing is committed that a member could lose).
#[test]
fn random_histories_keep_the_invariants() {
    use rand::{Rng, SeedableRng};
    let seeds =
        std::env::var("SLUICE_LEADER_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    for seed in 0..seeds {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let start = Instant::now();
        let mut now = start;
        let mut state = leader(0, 0, start);
        let mut leader_end = 0i64;
        let mut durable = 0i64;
        let mut ends = [0i64; 4];
        let mut sc_epoch = 7u64;
        let mut sc_set = vec![1, 2, 3];
        for step in 0..400 {
            now += Duration::from_millis(rng.gen_range(0..2_000));
            match rng.gen_range(0..5) {
                0 => leader_end += rng.gen_range(0..50),
                1 => durable = rng.gen_range(durable..=leader_end),
                2 => {
                    let follower = rng.gen_range(2..=3);
                    let offset = rng.gen_range(ends[follower]..=leader_end);
                    ends[follower] = offset;
                    let acknowledged = rng.gen_range(0..=offset);
                    let _ = state.on_fetch(
                        SpuId(follower as i32),
                        Offset(offset),
                        Offset(acknowledged),
                        Offset(leader_end),
                        now,
                    );
                }
                3 => {
                    if let Some(proposal) = state.propose(now) {
                        if rng.gen_bool(0.7) && proposal.based_on.get() == sc_epoch {
                            sc_epoch += 1;
                            sc_set = proposal.in_sync_replicas.iter().map(|s| s.get()).collect();
                            let stored = set(&sc_set, sc_epoch);
                            state.on_proposal_answer(LeaderEpoch(5), stored);
                        }
                    }
                }
                _ => {
                    // The SC removes a follower on its own (its SPU went offline).
                    if sc_set.len() > 1 && rng.gen_bool(0.3) {
                        sc_set.pop();
                        sc_epoch += 1;
                        state.on_assignment(set(&sc_set, sc_epoch));
                    }
                }
            }
            let before = state.high_watermark();
            state.update_high_watermark(Offset(durable));
            let hw = state.high_watermark();
            assert!(hw >= before, "seed {seed} step {step}: HW went back");
            assert!(hw <= Offset(durable.max(0)) || hw == before, "seed {seed}: HW past durable");
            for member in &state.in_sync().replicas.clone() {
                if *member == LEADER || hw == before {
                    continue;
                }
                let progress = state.progress(*member).expect("a counted member fetched");
                assert!(
                    progress.acknowledged_end >= hw,
                    "seed {seed} step {step}: HW {hw} past member {member}'s durable end"
                );
            }
        }
    }
}

#[test]
fn an_unanswered_expansion_keeps_counting_the_joining_member() {
    let start = Instant::now();
    let mut state = LeaderState::new(
        Takeover {
            me: LEADER,
            epoch: LeaderEpoch(5),
            epoch_start: Offset(0),
            replicas: [SpuId(1), SpuId(2), SpuId(3)].to_vec(),
            in_sync: set(&[1, 2], 7),
            high_watermark: Offset(0),
        },
        settings(2),
        start,
    );
    fetch(&mut state, 2, 10, 10, 10, start);
    fetch(&mut state, 3, 10, 10, 10, start);
    assert!(state.update_high_watermark(Offset(10)));
    let proposal = state.propose(start).expect("3 joins");
    assert_eq!(proposal.in_sync_replicas, [SpuId(1), SpuId(2), SpuId(3)]);
    // No answer (the SC may have stored it); 3 stops fetching and lags.
    let later = start + LAG_MAX + PROPOSAL_TIMEOUT;
    fetch(&mut state, 2, 20, 20, 20, later);
    let again = state.propose(later).expect("the same proposal again");
    assert_eq!(again.in_sync_replicas, proposal.in_sync_replicas);
    assert!(!state.update_high_watermark(Offset(20)), "3 still counts");
    assert_eq!(state.high_watermark(), Offset(10));
}
