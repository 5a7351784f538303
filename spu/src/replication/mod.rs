//! Replication: each replica is a leader or a follower for a leader epoch.
//!
//! # Roles and where they live
//!
//! - [`leader`]: the leader's decisions (followers' progress, the high watermark, in-sync set
//!   changes, acks `all`), a pure state machine. [`serve`] answers followers on the private
//!   port of the core that owns the leader replica: follower fetches (long-poll, records sent
//!   by the same zero-copy / tail-cache path as consumer fetches) and epoch questions.
//! - [`follower`]: the follower's decisions (divergence search, refusals, the HW it takes), a
//!   pure state machine, with [`divergence`] holding the epoch arithmetic. [`fetcher`] does
//!   the I/O: one task and one connection per (follower core, leader SPU core), carrying every
//!   replica pair between them, so replication bytes never cross cores.
//! - [`throttle`]: the leader's fetch limit for replicas a move is adding (`--throttle`).
//! - [`role`]: a replica's role and the transitions between roles (promotion records the new
//!   epoch's start in the log; demotion ends the leader's waiters).
//!
//! # The contract
//!
//! - **Acknowledged means durable on every in-sync replica.** A follower reports its durable
//!   end (its written end for a relaxed topic) in every fetch; the leader counts it towards
//!   the high watermark (HW) only while the follower's log matches its own up to the fetch
//!   offset (checked per fetch from the follower's last epoch, [`divergence::follower_matches`]).
//!   HW = the smallest acknowledged end among the in-sync replicas (leader included), where a
//!   proposed change of the set counts both the old and the new members until the SC stored it.
//! - **The SC owns the in-sync set.** The leader proposes each change (AlterInSync) and relies
//!   on a smaller set only after the SC stored it, under the leader's epoch and the set's
//!   partition epoch, so a leader cut off from the SC can never commit alone. The SC itself
//!   removes followers whose SPU went offline and elects new leaders from the set.
//! - **Logs never diverge past the HW.** A follower of a new epoch finds where its log parts
//!   from the leader's and cuts there before appending; the leader records its epoch's start
//!   offset when it takes over; every batch carries the epoch it was appended in.
//! - **The HW a reader sees never goes back.** A new leader refuses committed reads
//!   (`OffsetNotAvailable`, retriable) until its HW reaches the offset its epoch started at.
//!
//! # Invariants (asserted where they can break)
//!
//! durable <= written <= appended (storage); HW <= the leader's acknowledged end <= LEO; the HW
//! never decreases; leader epochs only grow in a log; a follower appends only at its log end;
//! a follower's cut never goes below the HW it learned (unless the topic allows unclean
//! election).

pub mod divergence;
pub mod fetcher;
pub mod follower;
pub mod leader;
pub mod role;
pub mod serve;
pub mod throttle;
