//! `sluice cluster rolling-restart`: restarts the local cluster's SPUs one at a time, or, with
//! `--stop-command` and `--start-command`, the SPUs of any cluster (e.g. `ssh {host} sudo
//! systemctl stop sluice-spu`): the same steps, the operator's commands doing the stop and start.
//!
//! Per SPU, in id order, each step with progress on stdout:
//! 1. **Wait until every partition is fully in sync** (all replicas in the in-sync set), so no
//!    partition loses more than the one replica being restarted.
//! 2. **Move leadership off** with the SC's `HoldLeadership`: each partition the SPU leads is led
//!    by another in-sync replica, and the preferred-leader restore leaves the SPU alone while
//!    the hold lasts (it covers the whole step and expires on its own if this command dies).
//! 3. **Stop** with SIGTERM (the SPU syncs and closes its replicas), SIGKILL after
//!    `--stop-timeout`; the process is found by its recorded PID and start time (or the stop
//!    command runs).
//!    Then wait until the SC has dropped it from the in-sync sets (its connection closed).
//! 4. **Start** it again with its recorded settings (`cluster start --local` on a partly
//!    running cluster, or the start command).
//! 5. **Wait until every partition is fully in sync again**, release the hold and ask the SC to
//!    move leadership back to preferred replicas.
//!
//! The decisions on what the partition listing means are pure ([`sync_progress`],
//! [`led_by`], [`in_sync_follower_of`]) and unit-tested; the waits poll with deadlines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_client::SpuId;
use sluice_proto::api::admin::PartitionEntry;
use sluice_proto::object::{PartitionKey, PartitionResolution, SpuResolution};

use super::state::{self, ClusterState};
use super::{process, KILL_WAIT};
use crate::args::{ClusterRollingRestartArgs, ClusterStartArgs, DataDirArgs, MetadataStore};
use crate::sc_api::ScApi;

/// How often the waits list partitions again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often a wait prints that it is still waiting.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Added to a step's timeouts for the SC's hold, so the hold outlasts the step.
const HOLD_MARGIN: Duration = Duration::from_secs(30);
/// Most partition keys named in a progress line.
const KEYS_SHOWN_MAX: usize = 5;

/// How far the partitions are from being fully in sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// Partitions in the listing.
    pub total: usize,
    /// Partitions whose every replica is in the in-sync set, and online.
    pub in_sync: usize,
    /// The others.
    pub lagging: Vec<PartitionKey>,
}

impl SyncProgress {
    /// Whether every partition is fully in sync.
    pub fn complete(&self) -> bool {
        self.lagging.is_empty()
    }
}

/// Which partitions have all their replicas in sync (and are online).
pub fn sync_progress(partitions: &[PartitionEntry]) -> SyncProgress {
    let mut progress = SyncProgress { total: partitions.len(), ..SyncProgress::default() };
    for partition in partitions {
        let in_sync = &partition.status.in_sync_replicas;
        let full = partition.status.resolution == PartitionResolution::Online
            && partition.spec.replicas.iter().all(|replica| in_sync.contains(&replica.spu));
        if full {
            progress.in_sync += 1;
        } else {
            progress.lagging.push(partition.key.clone());
        }
    }
    progress
}

/// The partitions where `spu` is an in-sync follower (not the leader).
pub fn in_sync_follower_of(partitions: &[PartitionEntry], spu: SpuId) -> Vec<PartitionKey> {
    partitions
        .iter()
        .filter(|partition| {
            partition.spec.leader != spu && partition.status.in_sync_replicas.contains(&spu)
        })
        .map(|partition| partition.key.clone())
        .collect()
}

/// The partitions `spu` leads.
pub fn led_by(partitions: &[PartitionEntry], spu: SpuId) -> Vec<PartitionKey> {
    partitions
        .iter()
        .filter(|partition| partition.spec.leader == spu)
        .map(|partition| partition.key.clone())
        .collect()
}

fn keys_text(keys: &[PartitionKey]) -> String {
    let mut shown: Vec<String> =
        keys.iter().take(KEYS_SHOWN_MAX).map(ToString::to_string).collect();
    if keys.len() > KEYS_SHOWN_MAX {
        shown.push(format!("and {} more", keys.len() - KEYS_SHOWN_MAX));
    }
    shown.join(", ")
}

/// How an SPU is stopped and started again.
enum Restarter<'a> {
    /// The local cluster's recorded processes: SIGTERM, then `cluster start --local`.
    Local { existing: &'a ClusterState, data_dir: &'a Path },
    /// The operator's commands, `{id}` and `{host}` replaced.
    Commands { stop: &'a str, start: &'a str, hosts: BTreeMap<i32, String> },
}

impl Restarter<'_> {
    fn stop(&self, id: i32, step: &str, timeout: Duration) -> anyhow::Result<()> {
        match self {
            Restarter::Local { existing, .. } => stop_spu(existing, id, step, timeout),
            Restarter::Commands { stop, hosts, .. } => run_command(stop, id, hosts, step),
        }
    }

    fn start(&self, id: i32, step: &str, deadline: Instant) -> anyhow::Result<()> {
        println!("{step} starting again");
        match self {
            Restarter::Local { existing, data_dir } => {
                super::start(&restart_args(existing, data_dir, deadline))
                    .with_context(|| format!("cannot start SPU {id} again"))
            }
            Restarter::Commands { start, hosts, .. } => run_command(start, id, hosts, step),
        }
    }
}

/// `template` with `{id}` and `{host}` replaced.
pub fn command_for(template: &str, id: i32, host: &str) -> String {
    template.replace("{id}", &id.to_string()).replace("{host}", host)
}

fn run_command(
    template: &str,
    id: i32,
    hosts: &BTreeMap<i32, String>,
    step: &str,
) -> anyhow::Result<()> {
    let host = hosts.get(&id).map(String::as_str).unwrap_or_default();
    let command = command_for(template, id, host);
    println!("{step} running: {command}");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .status()
        .with_context(|| format!("cannot run `{command}`"))?;
    if !status.success() {
        bail!("{step} `{command}` failed ({status}); fix it and run the rolling restart again");
    }
    Ok(())
}

/// `sluice cluster rolling-restart`.
pub fn run(sc: &str, args: &ClusterRollingRestartArgs) -> anyhow::Result<()> {
    if let (Some(stop), Some(start)) = (&args.stop_command, &args.start_command) {
        return run_commands(sc, stop, start, args);
    }
    let data_dir = super::resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    let Some(existing) = state::load(&data_dir)? else {
        bail!(
            "no local cluster in {}; start one with `sluice cluster start --local{}` (or give \
             --stop-command and --start-command for another cluster)",
            data_dir.display(),
            super::data_dir_flag(&data_dir)
        );
    };
    let stopped: Vec<String> = existing
        .processes
        .iter()
        .filter(|record| !record.is_running())
        .map(|record| record.label())
        .collect();
    if !stopped.is_empty() {
        bail!(
            "part of the local cluster in {} is not running ({}); start it first with `sluice \
             cluster start --local{}`",
            data_dir.display(),
            stopped.join(", "),
            super::data_dir_flag(&data_dir)
        );
    }
    let api = ScApi::connect_with(super::tls::client_config(&existing))?;
    let restarter = Restarter::Local { existing: &existing, data_dir: &data_dir };
    restart_all(&api, &restarter, &existing.spu_ids(), args)
}

/// The rolling restart of the SPUs registered with `sc`, by the operator's commands.
fn run_commands(
    sc: &str,
    stop: &str,
    start: &str,
    args: &ClusterRollingRestartArgs,
) -> anyhow::Result<()> {
    let api = ScApi::connect(sc)?;
    let registered = api.list_spus()?;
    let hosts: BTreeMap<i32, String> = registered
        .iter()
        .map(|spu| (spu.spec.id.get(), spu.spec.public_endpoint.host.clone()))
        .collect();
    let ids: Vec<i32> =
        if args.spus.is_empty() { hosts.keys().copied().collect() } else { args.spus.clone() };
    for id in &ids {
        let Some(spu) = registered.iter().find(|spu| spu.spec.id.get() == *id) else {
            bail!("SPU {id} is not registered; see `sluice spu list`");
        };
        if spu.status.resolution != SpuResolution::Online {
            bail!("SPU {id} is not online; bring it back before a rolling restart");
        }
    }
    let restarter = Restarter::Commands { stop, start, hosts };
    restart_all(&api, &restarter, &ids, args)
}

fn restart_all(
    api: &ScApi,
    restarter: &Restarter<'_>,
    spus: &[i32],
    args: &ClusterRollingRestartArgs,
) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("rolling restart of {} SPUs ({}), one at a time", spus.len(), ids_text(spus));
    for (index, id) in spus.iter().copied().enumerate() {
        let step = format!("[{}/{}] SPU {id}:", index + 1, spus.len());
        restart_one(api, restarter, id, &step, args)?;
    }
    println!(
        "rolling restart done in {:.1} s: every SPU restarted, every partition fully in sync",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ids_text(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
}

fn restart_one(
    api: &ScApi,
    restarter: &Restarter<'_>,
    id: i32,
    step: &str,
    args: &ClusterRollingRestartArgs,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.step_timeout;
    let spu = SpuId(id);
    wait_in_sync(api, step, "before the restart", deadline)?;
    let hold = args.step_timeout + args.stop_timeout + HOLD_MARGIN;
    let held = api
        .cluster()
        .admin()
        .hold_leadership(spu, hold)
        .with_context(|| format!("cannot move leadership off SPU {id}"))?;
    println!("{step} leadership moved off for {} partitions", held.moved.len());
    if !held.not_moved.is_empty() {
        println!(
            "{step} warning: no other in-sync replica can lead {} (they are unavailable while \
             the SPU restarts)",
            keys_text(&held.not_moved)
        );
    }
    let still_led = led_by(&api.list_partitions(None)?, spu);
    let unexpected: Vec<PartitionKey> =
        still_led.into_iter().filter(|key| !held.not_moved.contains(key)).collect();
    if !unexpected.is_empty() {
        println!("{step} note: it leads {} again (moved back meanwhile)", keys_text(&unexpected));
    }
    restarter.stop(id, step, args.stop_timeout)?;
    // The SC drops a stopped SPU from the in-sync sets when its connection closes; waiting
    // for that makes the in-sync wait after the start mean "caught up again".
    wait_out_of_sync(api, spu, step, deadline)?;
    restarter.start(id, step, deadline)?;
    wait_in_sync(api, step, "after the restart", deadline)?;
    api.cluster()
        .admin()
        .hold_leadership(spu, Duration::ZERO)
        .with_context(|| format!("cannot release the leadership hold of SPU {id}"))?;
    let restored = api
        .cluster()
        .admin()
        .rebalance_leaders(None)
        .context("cannot move leadership back to preferred replicas")?;
    println!(
        "{step} done: hold released, leadership back to the preferred replica for {} partitions",
        restored.moved.len()
    );
    Ok(())
}

/// The `cluster start --local` that brings back the stopped SPU with the recorded settings.
fn restart_args(existing: &ClusterState, data_dir: &Path, deadline: Instant) -> ClusterStartArgs {
    let consul = existing.consul_address.clone();
    ClusterStartArgs {
        local: true,
        spus: None,
        cores: None,
        data_dir: DataDirArgs { data_dir: Some(PathBuf::from(data_dir)) },
        metadata: if consul.is_some() { MetadataStore::Consul } else { MetadataStore::Embedded },
        consul_addr: consul.unwrap_or_else(|| "http://127.0.0.1:8500".into()),
        sc_public_address: existing.sc_public_address.clone(),
        sc_private_address: existing.sc_private_address.clone(),
        first_spu_id: existing.spu_ids().first().copied().unwrap_or(5001),
        timeout: deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)),
        tls: existing.tls_dir.is_some(),
    }
}

/// SIGTERM, wait up to `timeout`, then SIGKILL.
fn stop_spu(existing: &ClusterState, id: i32, step: &str, timeout: Duration) -> anyhow::Result<()> {
    let record = super::spu::find_spu(existing, id)?;
    let (pid, start_time) = (record.pid, record.start_time_ticks);
    let started = Instant::now();
    println!("{step} stopping (SIGTERM to pid {pid})");
    if !process::signal(pid, start_time, libc::SIGTERM) {
        println!("{step} it had exited already");
        return Ok(());
    }
    if process::wait_all_gone(&[(pid, start_time)], timeout).is_empty() {
        println!("{step} stopped in {:.1} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    println!("{step} still running {timeout:?} after SIGTERM; sending SIGKILL");
    process::signal(pid, start_time, libc::SIGKILL);
    if !process::wait_all_gone(&[(pid, start_time)], KILL_WAIT).is_empty() {
        bail!("SPU {id} (pid {pid}) still runs {KILL_WAIT:?} after SIGKILL");
    }
    Ok(())
}

/// Polls the partitions until `spu` is in no in-sync set as a follower.
fn wait_out_of_sync(api: &ScApi, spu: SpuId, step: &str, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let remaining = in_sync_follower_of(&api.list_partitions(None)?, spu);
        if remaining.is_empty() {
            println!("{step} out of the in-sync sets while stopped");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{step} the SC still counts the stopped SPU in sync for {}",
                keys_text(&remaining)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls the partitions until every one is fully in sync, printing progress; fails at
/// `deadline` naming the partitions still behind.
fn wait_in_sync(api: &ScApi, step: &str, when: &str, deadline: Instant) -> anyhow::Result<()> {
    let mut last_progress: Option<Instant> = None;
    loop {
        let progress = sync_progress(&api.list_partitions(None)?);
        if progress.complete() {
            println!("{step} all {} partitions fully in sync {when}", progress.total);
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{step} partitions not fully in sync {when} within the step timeout: {} (see \
                 `sluice partition list`; raise --step-timeout for large logs)",
                keys_text(&progress.lagging)
            );
        }
        if last_progress.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL) {
            println!(
                "{step} waiting: {} of {} partitions fully in sync {when} (behind: {})",
                progress.in_sync,
                progress.total,
                keys_text(&progress.lagging)
            );
            last_progress = Some(Instant::now());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::ids::{CoreId, PartitionId};
    use sluice_proto::object::{PartitionSpec, PartitionStatus, ReplicaPlacement, TopicName};

    fn entry(partition: u32, leader: i32, in_sync: &[i32], online: bool) -> PartitionEntry {
        let replicas = [1, 2, 3]
            .iter()
            .map(|spu| ReplicaPlacement { spu: SpuId(*spu), core: CoreId(0) })
            .collect();
        PartitionEntry {
            key: PartitionKey::new(TopicName::new("t").unwrap(), PartitionId(partition)),
            spec: PartitionSpec { replicas, leader: SpuId(leader), ..PartitionSpec::default() },
            status: PartitionStatus {
                in_sync_replicas: in_sync.iter().copied().map(SpuId).collect(),
                resolution: if online {
                    PartitionResolution::Online
                } else {
                    PartitionResolution::Offline
                },
                ..PartitionStatus::default()
            },
        }
    }

    #[test]
    fn only_partitions_with_every_replica_in_sync_count() {
        let partitions = [
            entry(0, 1, &[1, 2, 3], true),
            entry(1, 2, &[2, 3], true),
            entry(2, 3, &[3, 1, 2], false),
        ];
        let progress = sync_progress(&partitions);
        assert_eq!((progress.total, progress.in_sync), (3, 1));
        assert_eq!(progress.lagging.len(), 2);
        assert!(!progress.complete());
        assert!(sync_progress(&partitions[..1]).complete());
        assert_eq!(led_by(&partitions, SpuId(2)), vec![partitions[1].key.clone()]);
        let followed = in_sync_follower_of(&partitions, SpuId(1));
        assert_eq!(followed, vec![partitions[2].key.clone()]);
    }

    #[test]
    fn commands_name_the_spu_and_its_host() {
        let command = command_for("ssh {host} systemctl stop sluice-spu@{id}", 5002, "10.0.0.7");
        assert_eq!(command, "ssh 10.0.0.7 systemctl stop sluice-spu@5002");
        assert_eq!(command_for("true", 1, "h"), "true");
    }
}
