//! The faults of a campaign, drawn from a seed (pure).
//!
//! A campaign injects faults one at a time: each is applied, held, healed, and the cluster is
//! given time to become healthy again before the next, so that every fault's effect (how long
//! partitions refused acks `all`) is its own. The schedule comes in *rounds*: each round holds
//! every kind of the mix as many times as its weight, in an order shuffled by the seed, so a
//! short campaign still covers every kind. What is drawn from the seed: the kinds' order, how
//! long each fault is held, the pick that chooses its target among the candidates the cluster
//! offers at that moment (e.g. "the leader of partition `pick % partitions`") and the netem
//! parameters. The same seed gives the same schedule ([`Schedule`] is deterministic); targets
//! follow the cluster's state when the fault comes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `kill -9` of a partition's leader SPU, restarted after the hold.
    LeaderKill,
    /// `kill -9` of an in-sync follower SPU, restarted after the hold.
    FollowerKill,
    /// `SIGSTOP` of an SPU past the SC's heartbeat timeout, then `SIGCONT`.
    SpuPause,
    /// `kill -9` of the active SC, restarted after the hold.
    ScKill,
    /// `SIGSTOP` of the active SC, then `SIGCONT`.
    ScPause,
    /// `kill -9` of a Consul server (the raft leader for even picks), restarted after the hold.
    ConsulKill,
    /// `SIGSTOP` of a Consul server (the raft leader for even picks), then `SIGCONT`.
    ConsulPause,
    /// A partition's leader SPU cut off from every other host (nftables, both ways).
    LeaderIsolated,
    /// The active SC cut off from every SPU (it still reaches Consul).
    ScIsolated,
    /// One Consul server (the leader for even picks) cut off from the other two.
    ConsulMinority,
    /// One-way loss: a leader's packets to one follower are dropped (the follower still sends).
    OneWay,
    /// Added latency, jitter and packet loss on an SPU's link (`tc netem`).
    Netem,
    /// An SPU's data volume filled to the last byte, then freed.
    DiskFull,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::LeaderKill,
        FaultKind::FollowerKill,
        FaultKind::SpuPause,
        FaultKind::ScKill,
        FaultKind::ScPause,
        FaultKind::ConsulKill,
        FaultKind::ConsulPause,
        FaultKind::LeaderIsolated,
        FaultKind::ScIsolated,
        FaultKind::ConsulMinority,
        FaultKind::OneWay,
        FaultKind::Netem,
        FaultKind::DiskFull,
    ];

    /// The kind's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::LeaderKill => "leader-kill",
            FaultKind::FollowerKill => "follower-kill",
            FaultKind::SpuPause => "spu-pause",
            FaultKind::ScKill => "sc-kill",
            FaultKind::ScPause => "sc-pause",
            FaultKind::ConsulKill => "consul-kill",
            FaultKind::ConsulPause => "consul-pause",
            FaultKind::LeaderIsolated => "leader-isolated",
            FaultKind::ScIsolated => "sc-isolated",
            FaultKind::ConsulMinority => "consul-minority",
            FaultKind::OneWay => "one-way",
            FaultKind::Netem => "netem",
            FaultKind::DiskFull => "disk-full",
        }
    }

    /// How long the fault is held (a killed process stays down, a paused one stopped, a cut
    /// stays cut), as a range of milliseconds. Pauses and cuts outlast the SC's default 2 s
    /// heartbeat timeout so that they are noticed, not ridden out.
    pub fn hold_range_ms(self) -> (u64, u64) {
        match self {
            FaultKind::LeaderKill | FaultKind::FollowerKill | FaultKind::ScKill => (500, 4_000),
            FaultKind::ConsulKill => (1_000, 6_000),
            FaultKind::SpuPause | FaultKind::ConsulPause => (3_000, 6_000),
            FaultKind::ScPause => (3_000, 10_000),
            FaultKind::LeaderIsolated
            | FaultKind::ScIsolated
            | FaultKind::ConsulMinority
            | FaultKind::OneWay => (4_000, 10_000),
            FaultKind::Netem => (5_000, 10_000),
            FaultKind::DiskFull => (4_000, 8_000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<FaultKind, String> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == text).ok_or_else(|| {
            let names: Vec<_> = FaultKind::ALL.iter().map(|kind| kind.name()).collect();
            format!("unknown fault {text:?}: one of {}", names.join(", "))
        })
    }
}

/// How often each kind comes per round: `leader-kill:5,sc-kill,netem:2`, or `all`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultMix(pub Vec<(FaultKind, u32)>);

impl FaultMix {
    /// Every kind once per round.
    pub fn all() -> FaultMix {
        FaultMix(FaultKind::ALL.iter().map(|&kind| (kind, 1)).collect())
    }

    /// The kinds of one round, each as often as its weight, in declaration order.
    fn round(&self) -> Vec<FaultKind> {
        self.0
            .iter()
            .flat_map(|&(kind, weight)| std::iter::repeat_n(kind, weight as usize))
            .collect()
    }
}

impl FromStr for FaultMix {
    type Err = String;

    fn from_str(text: &str) -> Result<FaultMix, String> {
        let mut mix: Vec<(FaultKind, u32)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            if item == "all" {
                for kind in FaultKind::ALL {
                    add(&mut mix, kind, 1);
                }
                continue;
            }
            let (name, weight) = match item.split_once(':') {
                Some((name, weight)) => {
                    (name, weight.parse::<u32>().map_err(|_| format!("bad weight in {item:?}"))?)
                }
                None => (item, 1),
            };
            add(&mut mix, name.parse()?, weight);
        }
        if mix.iter().all(|&(_, weight)| weight == 0) {
            return Err(format!("no fault in {text:?}"));
        }
        Ok(FaultMix(mix))
    }
}

fn add(mix: &mut Vec<(FaultKind, u32)>, kind: FaultKind, weight: u32) {
    match mix.iter_mut().find(|(existing, _)| *existing == kind) {
        Some((_, total)) => *total += weight,
        None => mix.push((kind, weight)),
    }
}

/// Delay, jitter and loss of a [`FaultKind::Netem`] fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetemParameters {
    /// Added one-way delay, milliseconds.
    pub delay_ms: u32,
    /// Jitter around it, milliseconds.
    pub jitter_ms: u32,
    /// Packets dropped, percent.
    pub loss_percent: u32,
}

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFault {
    /// Its place in the schedule, from 0.
    pub index: u64,
    /// What it does.
    pub kind: FaultKind,
    /// How long it is held.
    #[serde(with = "millis")]
    pub hold: Duration,
    /// Chooses the target among the candidates the cluster offers when the fault comes.
    pub pick: u64,
    /// For [`FaultKind::Netem`].
    pub netem: Option<NetemParameters>,
    /// The quiet time after the cluster is healthy again, before the next fault.
    #[serde(with = "millis")]
    pub gap: Duration,
}

/// The endless, deterministic sequence of faults of a seed and a mix.
pub struct Schedule {
    rng: StdRng,
    mix: FaultMix,
    round: Vec<FaultKind>,
    next: u64,
}

impl Schedule {
    /// The schedule of `seed` over `mix`.
    pub fn new(seed: u64, mix: FaultMix) -> Schedule {
        Schedule { rng: StdRng::seed_from_u64(seed), mix, round: Vec::new(), next: 0 }
    }
}

impl Iterator for Schedule {
    type Item = PlannedFault;

    fn next(&mut self) -> Option<PlannedFault> {
        if self.round.is_empty() {
            self.round = self.mix.round();
            self.round.shuffle(&mut self.rng);
            // Popped from the end.
            self.round.reverse();
        }
        let kind = self.round.pop()?;
        let (low, high) = kind.hold_range_ms();
        let hold = Duration::from_millis(self.rng.gen_range(low..=high));
        let pick = self.rng.gen();
        let netem = (kind == FaultKind::Netem).then(|| NetemParameters {
            delay_ms: self.rng.gen_range(10..=100),
            jitter_ms: self.rng.gen_range(0..=20),
            loss_percent: self.rng.gen_range(0..=10),
        });
        let gap = Duration::from_millis(self.rng.gen_range(500..=2_000));
        let index = self.next;
        self.next += 1;
        Some(PlannedFault { index, kind, hold, pick, netem, gap })
    }
}

/// Durations as whole milliseconds in reports.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn seed() -> u64 {
        let seed = std::env::var("SLUICE_TEST_SEED")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("SLUICE_TEST_SEED={seed}");
        seed
    }

    #[test]
    fn a_seed_replays_its_schedule() {
        let seed = seed();
        let first: Vec<_> = Schedule::new(seed, FaultMix::all()).take(100).collect();
        let again: Vec<_> = Schedule::new(seed, FaultMix::all()).take(100).collect();
        assert_eq!(first, again);
        let other: Vec<_> = Schedule::new(seed ^ 1, FaultMix::all()).take(100).collect();
        assert_ne!(first, other, "another seed draws another schedule");
    }

    #[test]
    fn every_round_holds_each_kind_as_often_as_its_weight() {
        let seed = seed();
        let mix: FaultMix = "leader-kill:3,sc-kill,disk-full:2".parse().unwrap();
        let faults: Vec<_> = Schedule::new(seed, mix).take(60).collect();
        for (round, faults) in faults.chunks(6).enumerate() {
            let mut counts = BTreeMap::new();
            for fault in faults {
                *counts.entry(fault.kind).or_insert(0) += 1;
            }
            let expected = BTreeMap::from([
                (FaultKind::LeaderKill, 3),
                (FaultKind::ScKill, 1),
                (FaultKind::DiskFull, 2),
            ]);
            assert_eq!(counts, expected, "round {round}");
        }
        assert!(faults.iter().enumerate().all(|(index, fault)| fault.index == index as u64));
    }

    #[test]
    fn holds_stay_in_their_kinds_range_and_pauses_outlast_the_heartbeat_timeout() {
        let seed = seed();
        for fault in Schedule::new(seed, FaultMix::all()).take(2_000) {
            let (low, high) = fault.kind.hold_range_ms();
            let hold = fault.hold.as_millis() as u64;
            assert!((low..=high).contains(&hold), "{fault:?}");
            if matches!(fault.kind, FaultKind::SpuPause | FaultKind::ScPause) {
                assert!(hold > 2_000, "{fault:?}");
            }
            assert_eq!(fault.netem.is_some(), fault.kind == FaultKind::Netem, "{fault:?}");
            if let Some(netem) = fault.netem {
                assert!(netem.loss_percent <= 10 && netem.delay_ms <= 100, "{fault:?}");
            }
        }
    }

    #[test]
    fn mixes_parse_and_name_every_kind() {
        assert_eq!("all".parse::<FaultMix>().unwrap(), FaultMix::all());
        let mix: FaultMix = "leader-kill:2, leader-kill ,netem".parse().unwrap();
        assert_eq!(mix.0, vec![(FaultKind::LeaderKill, 3), (FaultKind::Netem, 1)]);
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        let error = "leader-kil".parse::<FaultMix>().unwrap_err();
        assert!(error.contains("unknown fault \"leader-kil\"") && error.contains("disk-full"));
        assert!("leader-kill:x".parse::<FaultMix>().is_err());
        assert!("leader-kill:0".parse::<FaultMix>().is_err());
        assert!("".parse::<FaultMix>().is_err());
    }
}
