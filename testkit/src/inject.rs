//! Applies and heals one fault on the namespace cluster, and waits for it to be healthy.
//!
//! Targets come from the cluster's state when the fault comes (the SC's partition list, the SCs'
//! `/health/ready`, Consul's `/v1/status/leader`), chosen by the fault's seeded `pick`. Network
//! faults live in one nftables table per namespace (`inet sluice_faults`) and one netem root
//! qdisc, so healing is removing them; a full disk is one filler file on the SPU's own volume.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sluice_client::{ClientConfig, Cluster, PartitionEntry};
use sluice_proto::object::PartitionResolution;

use crate::error::TestkitError;
use crate::netns::{self, Netns, Role, CONSUL_HTTP_PORT, SC_METRICS_PORT};
use crate::schedule::{FaultKind, PlannedFault};

/// The nftables table faults add to a namespace.
const TABLE: &str = "sluice_faults";

/// A partition of the checked topic as the SC sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionView {
    /// Its id.
    pub partition: u32,
    /// Its leader's SPU id.
    pub leader: u32,
    /// Its replicas' SPU ids, preferred first.
    pub replicas: Vec<u32>,
    /// The in-sync replicas.
    pub in_sync: Vec<u32>,
    /// Whether the leader serves.
    pub online: bool,
}

impl PartitionView {
    fn from_entry(entry: &PartitionEntry) -> PartitionView {
        let spu = |id: sluice_proto::ids::SpuId| id.get().max(0) as u32;
        PartitionView {
            partition: entry.key.partition.get(),
            leader: spu(entry.spec.leader),
            replicas: entry.spec.replicas.iter().map(|replica| spu(replica.spu)).collect(),
            in_sync: entry.status.in_sync_replicas.iter().map(|&id| spu(id)).collect(),
            online: entry.status.resolution == PartitionResolution::Online,
        }
    }

    /// Online with every replica in sync.
    pub fn healthy(&self) -> bool {
        let replicas: BTreeSet<_> = self.replicas.iter().collect();
        let in_sync: BTreeSet<_> = self.in_sync.iter().collect();
        self.online && replicas == in_sync
    }
}

/// One fault as injected: what was hit, when, and how it ended.
#[derive(Clone, Debug, Serialize)]
pub struct Injected {
    /// The schedule's fault.
    pub fault: PlannedFault,
    /// The host(s) hit, e.g. `spu-2`, `sc-1`, `spu-1->spu-3`.
    pub target: String,
    /// Partitions it could keep from acknowledging.
    pub partitions: BTreeSet<u32>,
    /// When it was applied (ms since the Unix epoch).
    pub injected_unix_ms: i64,
    /// Milliseconds from the heal until the cluster was healthy again (every process up, an
    /// active SC, every partition online and fully in sync); `None`: not within the deadline.
    pub healthy_after_heal_ms: Option<u64>,
    /// Milliseconds until every affected partition acknowledged a record sent after the fault
    /// (filled in from the check's timeline at the end).
    pub recovery_ms: Option<u64>,
}

/// Applies, holds and heals faults; restarts processes; tracks its children.
pub struct Injector {
    netns: Netns,
    sc: String,
    topic: String,
    children: Vec<Child>,
    supervised: u64,
}

impl Injector {
    /// An injector for `topic` on the cluster of `netns`.
    pub fn new(netns: Netns, topic: &str) -> Injector {
        let sc = netns.sc_addresses();
        Injector { netns, sc, topic: topic.to_string(), children: Vec::new(), supervised: 0 }
    }

    /// The cluster layout.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The topic's partitions as the SC sees them.
    pub fn partitions(&self) -> Result<Vec<PartitionView>, TestkitError> {
        let mut config = ClientConfig::new(&self.sc);
        config.request_timeout = Duration::from_secs(3);
        let cluster = Cluster::connect(config)?;
        let entries = cluster.admin().list_partitions(Some(&self.topic))?;
        Ok(entries.iter().map(PartitionView::from_entry).collect())
    }

    /// The partitions, retried through an SC failover for up to `deadline`.
    fn partitions_within(&self, deadline: Duration) -> Result<Vec<PartitionView>, TestkitError> {
        let start = Instant::now();
        loop {
            match self.partitions() {
                Ok(partitions) if !partitions.is_empty() => return Ok(partitions),
                Ok(_) | Err(_) if start.elapsed() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(_) => {
                    return Err(TestkitError::Timeout {
                        what: format!("partitions of {}", self.topic),
                        seconds: deadline.as_secs(),
                    })
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The SC host whose `/health/ready` says ready (the active one).
    pub fn active_sc(&self) -> Option<&'static str> {
        Netns::hosts(Role::Sc).into_iter().find(|host| {
            let url = format!("http://{}:{SC_METRICS_PORT}/health/ready", self.netns.address(host));
            curl(&url).is_ok()
        })
    }

    /// The Consul server that leads raft, as every reachable server reports it.
    pub fn consul_leader(&self) -> Option<&'static str> {
        Netns::hosts(Role::Consul).into_iter().find_map(|host| {
            let url =
                format!("http://{}:{CONSUL_HTTP_PORT}/v1/status/leader", self.netns.address(host));
            let leader = curl(&url).ok()?;
            let address = leader.trim().trim_matches('"').split(':').next()?.to_string();
            Netns::hosts(Role::Consul)
                .into_iter()
                .find(|candidate| self.netns.address(candidate).to_string() == address)
        })
    }

    /// Injects `fault`: apply, hold, heal, then wait (`settle` at most) until healthy.
    pub fn inject(
        &mut self,
        fault: &PlannedFault,
        settle: Duration,
    ) -> Result<Injected, TestkitError> {
        let partitions = self.partitions_within(Duration::from_secs(30))?;
        let pick = fault.pick as usize;
        let chosen = &partitions[pick % partitions.len()];
        let spus = Netns::hosts(Role::Spu);
        let all: BTreeSet<u32> = partitions.iter().map(|view| view.partition).collect();
        let replica_of = |spu: u32| -> BTreeSet<u32> {
            partitions
                .iter()
                .filter(|view| view.replicas.contains(&spu))
                .map(|view| view.partition)
                .collect()
        };
        let spu_host = |id: u32| {
            Netns::spu_host(id).ok_or_else(|| TestkitError::NotInjectable {
                fault: fault.kind.to_string(),
                reason: format!("SPU {id} is not a host of the layout"),
            })
        };
        let not_injectable = |reason: &str| TestkitError::NotInjectable {
            fault: fault.kind.to_string(),
            reason: reason.to_string(),
        };
        let kind = fault.kind;
        let (target, affected, heal) = match kind {
            FaultKind::LeaderKill | FaultKind::LeaderIsolated => {
                let host = spu_host(chosen.leader)?;
                (host.to_string(), replica_of(chosen.leader), Heal::for_kind(kind, host))
            }
            FaultKind::FollowerKill => {
                let followers: Vec<u32> =
                    chosen.in_sync.iter().copied().filter(|&spu| spu != chosen.leader).collect();
                let follower = *followers
                    .get((pick / partitions.len()) % followers.len().max(1))
                    .ok_or_else(|| not_injectable("no in-sync follower"))?;
                let host = spu_host(follower)?;
                (host.to_string(), replica_of(follower), Heal::for_kind(kind, host))
            }
            FaultKind::SpuPause | FaultKind::Netem | FaultKind::DiskFull => {
                let host = spus[pick % spus.len()];
                let id = Netns::spu_id(host).expect("an SPU host");
                (host.to_string(), replica_of(id), Heal::for_kind(kind, host))
            }
            FaultKind::ScKill | FaultKind::ScPause | FaultKind::ScIsolated => {
                let host = self.active_sc().ok_or_else(|| not_injectable("no active SC"))?;
                (host.to_string(), all.clone(), Heal::for_kind(kind, host))
            }
            FaultKind::ConsulKill | FaultKind::ConsulPause | FaultKind::ConsulMinority => {
                let consuls = Netns::hosts(Role::Consul);
                let host = match (pick % 2 == 0).then(|| self.consul_leader()).flatten() {
                    Some(leader) => leader,
                    None => consuls[pick % consuls.len()],
                };
                (host.to_string(), all.clone(), Heal::for_kind(kind, host))
            }
            FaultKind::OneWay => {
                let follower = chosen
                    .in_sync
                    .iter()
                    .copied()
                    .find(|&spu| spu != chosen.leader)
                    .ok_or_else(|| not_injectable("no in-sync follower"))?;
                let leader = spu_host(chosen.leader)?;
                let host = spu_host(follower)?;
                let affected: BTreeSet<u32> = partitions
                    .iter()
                    .filter(|view| {
                        view.leader == chosen.leader && view.replicas.contains(&follower)
                    })
                    .map(|view| view.partition)
                    .collect();
                (format!("{leader}->{host}"), affected, Heal::Network(vec![host.to_string()]))
            }
        };
        let injected_unix_ms = unix_ms_now();
        eprintln!(
            "faults: #{} {kind} on {target} for {:.1} s{}",
            fault.index,
            fault.hold.as_secs_f64(),
            fault.netem.map_or_else(String::new, |netem| format!(
                " (delay {} ms ± {} ms, loss {} %)",
                netem.delay_ms, netem.jitter_ms, netem.loss_percent
            ))
        );
        self.apply(fault, &target)?;
        std::thread::sleep(fault.hold);
        self.heal(&heal)?;
        let healed = Instant::now();
        let healthy_after_heal_ms = match self.wait_healthy(settle) {
            Ok(()) => Some(healed.elapsed().as_millis() as u64),
            Err(error) => {
                eprintln!("faults: #{} {kind}: not healthy again: {error}", fault.index);
                None
            }
        };
        Ok(Injected {
            fault: *fault,
            target,
            partitions: affected,
            injected_unix_ms,
            healthy_after_heal_ms,
            recovery_ms: None,
        })
    }

    fn apply(&mut self, fault: &PlannedFault, target: &str) -> Result<(), TestkitError> {
        let netns = &self.netns;
        match fault.kind {
            FaultKind::LeaderKill
            | FaultKind::FollowerKill
            | FaultKind::ScKill
            | FaultKind::ConsulKill => netns.kill(target),
            FaultKind::SpuPause | FaultKind::ScPause | FaultKind::ConsulPause => {
                netns.signal(target, libc::SIGSTOP);
                Ok(())
            }
            FaultKind::LeaderIsolated => netns.nft(
                target,
                &rules(&[
                    ("input", vec!["iifname \"eth0\" drop".into()]),
                    ("output", vec!["oifname \"eth0\" drop".into()]),
                ]),
            ),
            FaultKind::ScIsolated => {
                let spus = self.address_set(&Netns::hosts(Role::Spu));
                netns.nft(target, &cut_from(&spus))
            }
            FaultKind::ConsulMinority => {
                let others: Vec<&str> =
                    Netns::hosts(Role::Consul).into_iter().filter(|host| *host != target).collect();
                netns.nft(target, &cut_from(&self.address_set(&others)))
            }
            FaultKind::OneWay => {
                let (leader, follower) = target.split_once("->").expect("leader->follower");
                let rule = format!("ip saddr {} drop", netns.address(leader));
                netns.nft(follower, &rules(&[("input", vec![rule])]))
            }
            FaultKind::Netem => {
                let netem = fault.netem.expect("netem parameters");
                let delay = format!("{}ms", netem.delay_ms);
                let jitter = format!("{}ms", netem.jitter_ms);
                let loss = format!("{}%", netem.loss_percent);
                let args = [
                    "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &delay, &jitter,
                    "loss", &loss,
                ];
                match netns.exec(target, "tc", &args) {
                    Ok(_) => Ok(()),
                    // Kernels without sch_netem: loss from nftables, and a token bucket of
                    // 1 Mbit/s (about the replication traffic of the check at its default
                    // rate) that queues what exceeds it for up to `delay`, then drops it.
                    Err(TestkitError::Command { message, .. })
                        if message.contains("qdisc kind is unknown") =>
                    {
                        let args = [
                            "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "1mbit",
                            "burst", "16kbit", "latency", &delay,
                        ];
                        netns.exec(target, "tc", &args)?;
                        let loss = format!("numgen random mod 100 < {} drop", netem.loss_percent);
                        netns.nft(
                            target,
                            &rules(&[
                                ("input", vec![format!("iifname \"eth0\" {loss}")]),
                                ("output", vec![format!("oifname \"eth0\" {loss}")]),
                            ]),
                        )
                    }
                    Err(error) => Err(error),
                }
            }
            FaultKind::DiskFull => {
                let volume =
                    netns.own_volume(target).ok_or_else(|| TestkitError::NotInjectable {
                        fault: fault.kind.to_string(),
                        reason: format!(
                        "{target}'s data directory is not a volume of its own: start the cluster \
                         with SLUICE_NETNS_SPU_DISK_MB (deploy/faults/run does)"
                    ),
                    })?;
                fill(&netns::filler_path(&volume))
            }
        }
    }

    fn address_set(&self, hosts: &[&str]) -> String {
        let addresses: Vec<String> =
            hosts.iter().map(|host| self.netns.address(host).to_string()).collect();
        format!("{{ {} }}", addresses.join(", "))
    }

    fn heal(&mut self, heal: &Heal) -> Result<(), TestkitError> {
        match heal {
            Heal::Restart(host) => {
                if !self.netns.alive(host) {
                    let child = self.netns.restart(host)?;
                    self.children.push(child);
                }
                Ok(())
            }
            Heal::Continue(host) => {
                self.netns.signal(host, libc::SIGCONT);
                Ok(())
            }
            Heal::Network(hosts) => {
                for host in hosts {
                    self.netns
                        .nft(host, &format!("table inet {TABLE}\ndelete table inet {TABLE}\n"))?;
                }
                Ok(())
            }
            Heal::Netem(host) => {
                let _ = self.netns.exec(host, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
                self.heal(&Heal::Network(vec![host.clone()]))
            }
            Heal::Filler(host) => {
                if let Some(volume) = self.netns.own_volume(host) {
                    let path = netns::filler_path(&volume);
                    if path.exists() {
                        std::fs::remove_file(&path)
                            .map_err(|error| TestkitError::io(&path, error))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Heals whatever any fault may have left, on every host: the end of a campaign (and its
    /// start, after an interrupted one).
    pub fn heal_everything(&mut self) -> Result<(), TestkitError> {
        for (host, _, role) in netns::HOSTS {
            if role == Role::Client {
                continue;
            }
            self.heal(&Heal::Network(vec![host.to_string()]))?;
            self.heal(&Heal::Netem(host.to_string()))?;
            self.heal(&Heal::Continue(host.to_string()))?;
            if role == Role::Spu {
                self.heal(&Heal::Filler(host.to_string()))?;
            }
            self.heal(&Heal::Restart(host.to_string()))?;
        }
        Ok(())
    }

    /// Waits until every process runs, an SC is active and every partition of the topic is
    /// online with all its replicas in sync.
    pub fn wait_healthy(&mut self, deadline: Duration) -> Result<(), TestkitError> {
        let mut problem = String::new();
        let mut failure = None;
        let result = netns::wait_until("the cluster to be healthy", deadline, || {
            self.reap();
            // A second after the heal, like a unit's RestartSec.
            if let Err(error) = self.supervise() {
                failure = Some(error);
                return true;
            }
            match self.health_problem() {
                None => true,
                Some(now) => {
                    problem = now;
                    false
                }
            }
        });
        if let Some(error) = failure {
            return Err(error);
        }
        result.map_err(|_| TestkitError::Timeout {
            what: format!("the cluster to be healthy (last seen: {problem})"),
            seconds: deadline.as_secs(),
        })
    }

    /// What keeps the cluster from being healthy, or `None`.
    pub fn health_problem(&self) -> Option<String> {
        if let Some((host, _, _)) = netns::HOSTS
            .iter()
            .find(|(host, _, role)| *role != Role::Client && !self.netns.alive(host))
        {
            return Some(format!("{host} does not run"));
        }
        if self.active_sc().is_none() {
            return Some("no SC is ready (active)".into());
        }
        match self.partitions() {
            Err(error) => Some(format!("cannot list partitions: {error}")),
            Ok(views) if views.is_empty() => Some(format!("{} has no partitions", self.topic)),
            Ok(views) => views.iter().find(|view| !view.healthy()).map(|view| {
                format!(
                    "partition {}: leader {}, replicas {:?}, in sync {:?}, online {}",
                    view.partition, view.leader, view.replicas, view.in_sync, view.online
                )
            }),
        }
    }

    /// Starts again every process that exited on its own, as the systemd units' `Restart=`
    /// would (an SC stops when it loses its leadership, to come back as a standby); how many.
    pub fn supervise(&mut self) -> Result<usize, TestkitError> {
        let mut restarted = 0;
        for (host, _, role) in netns::HOSTS {
            if role != Role::Client && !self.netns.alive(host) {
                eprintln!("faults: supervisor: {host} exited; starting it again");
                let child = self.netns.restart(host)?;
                self.children.push(child);
                self.supervised += 1;
                restarted += 1;
            }
        }
        Ok(restarted)
    }

    /// Processes the supervisor started again so far.
    pub fn supervised(&self) -> u64 {
        self.supervised
    }

    /// Reaps restarted processes that exited (killed by a later fault).
    pub fn reap(&mut self) {
        self.children.retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));
    }
}

/// How a fault is undone.
enum Heal {
    /// Start the host's process again (it was killed).
    Restart(String),
    /// `SIGCONT` (it was stopped).
    Continue(String),
    /// Remove the faults' nftables table from these hosts.
    Network(Vec<String>),
    /// Remove the netem qdisc.
    Netem(String),
    /// Remove the filler file.
    Filler(String),
}

impl Heal {
    fn for_kind(kind: FaultKind, host: &str) -> Heal {
        let host = host.to_string();
        match kind {
            FaultKind::LeaderKill
            | FaultKind::FollowerKill
            | FaultKind::ScKill
            | FaultKind::ConsulKill => Heal::Restart(host),
            FaultKind::SpuPause | FaultKind::ScPause | FaultKind::ConsulPause => {
                Heal::Continue(host)
            }
            FaultKind::LeaderIsolated
            | FaultKind::ScIsolated
            | FaultKind::ConsulMinority
            | FaultKind::OneWay => Heal::Network(vec![host]),
            FaultKind::Netem => Heal::Netem(host),
            FaultKind::DiskFull => Heal::Filler(host),
        }
    }
}

/// An nftables script that (re)creates the faults' table with chains of rules: `(hook,
/// rules)`, hook `input` or `output`.
fn rules(chains: &[(&str, Vec<String>)]) -> String {
    let mut script =
        format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    for (hook, rules) in chains {
        script.push_str(&format!("  chain {hook} {{\n    type filter hook {hook} priority 0;\n"));
        for rule in rules {
            script.push_str(&format!("    {rule}\n"));
        }
        script.push_str("  }\n");
    }
    script.push_str("}\n");
    script
}

/// Rules dropping every packet from and to an address set, both ways.
fn cut_from(addresses: &str) -> String {
    rules(&[
        ("input", vec![format!("ip saddr {addresses} drop")]),
        ("output", vec![format!("ip daddr {addresses} drop")]),
    ])
}

/// Fills the volume holding `path` to its last block with one fallocated file.
fn fill(path: &PathBuf) -> Result<(), TestkitError> {
    use std::os::unix::ffi::OsStrExt;
    let directory = path.parent().unwrap_or(path.as_path());
    let c_path = std::ffi::CString::new(directory.as_os_str().as_bytes())
        .map_err(|_| TestkitError::InvalidArgument(format!("{} has a NUL", path.display())))?;
    // SAFETY: statvfs(3) on a NUL-terminated path into a zeroed struct it fills.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(TestkitError::io(directory, std::io::Error::last_os_error()));
    }
    let mut size = (stats.f_bfree as u64).saturating_mul(stats.f_frsize as u64);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|error| TestkitError::io(path, error))?;
    use std::os::fd::AsRawFd;
    // The filesystem needs some blocks for the file's own extent tree: step down until it fits,
    // then take what is left in smaller steps.
    let mut offset = 0u64;
    let mut step = size;
    while step >= 4096 {
        // SAFETY: fallocate(2) on an open file descriptor.
        let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset as i64, step as i64) };
        if result == 0 {
            offset += step;
            size = size.saturating_sub(step);
            step = step.min(size);
        } else {
            step /= 2;
        }
    }
    Ok(())
}

/// GET `url` with curl (2 s at most); its body.
fn curl(url: &str) -> Result<String, TestkitError> {
    netns::run(Command::new("curl").args(["-sf", "--max-time", "2", url]))
}

/// Now, in ms since the Unix epoch.
pub fn unix_ms_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_replace_the_table_and_cut_both_ways() {
        let script = cut_from("{ 10.77.0.31, 10.77.0.32 }");
        assert!(script.starts_with("table inet sluice_faults\ndelete table inet sluice_faults\n"));
        assert!(script.contains("chain input {\n    type filter hook input priority 0;\n"));
        assert!(script.contains("ip saddr { 10.77.0.31, 10.77.0.32 } drop"));
        assert!(script.contains("ip daddr { 10.77.0.31, 10.77.0.32 } drop"));
    }

    #[test]
    fn a_partition_is_healthy_only_online_with_every_replica_in_sync() {
        let view = PartitionView {
            partition: 0,
            leader: 5001,
            replicas: vec![5001, 5002, 5003],
            in_sync: vec![5002, 5001, 5003],
            online: true,
        };
        assert!(view.healthy());
        assert!(!PartitionView { in_sync: vec![5001, 5002], ..view.clone() }.healthy());
        assert!(!PartitionView { online: false, ..view }.healthy());
    }
}
