//! `sluice cluster start | status | stop | spu stop | spu kill | rolling-restart`: a whole
//! cluster on this machine, as background processes ([`rolling`] restarts its SPUs one by one).
//!
//! Start: the SC first (embedded store in `<data-dir>/sc`, or Consul), then an SPU group `local`
//! created at the SC (kept when it already exists: a second start on the same data directory
//! reattaches the metadata and the replicas), then one `sluice-spu` per group member with its
//! replicas under `<data-dir>/spu-<id>/`. It returns once every SPU of the group is online at
//! the SC, or fails at a deadline, stopping what it started and showing the failing process'
//! log.
//!
//! A start on a directory whose cluster runs in part ([`Previous::Partial`]: an SPU or the SC
//! was stopped, killed or crashed) starts only the missing processes, with the settings
//! recorded in the state file (the SC on the same listen addresses and store, each SPU with its
//! id and cores), and waits as a fresh start does. On Consul a new SC is a standby until
//! Consul releases the lock of an SC that died; the start waits for that election
//! ([`Launch::connect_active_sc`]), with progress, until its deadline.
//!
//! Ownership: the processes outlive the command; `<data-dir>/cluster.json` ([`state`]) records
//! them, and `stop` signals exactly those (PID plus start time), SIGTERM first, SIGKILL after
//! its timeout. A failed start kills only what it spawned itself.

pub mod process;
pub mod rolling;
pub mod spu;
pub mod state;
mod status;
mod stop;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_client::ClientError;

use crate::args::{ClusterStartArgs, MetadataStore};
use crate::sc_api::ScApi;
use process::Program;
use state::{ClusterState, ProcessRecord, Role, STATE_VERSION};

pub use status::status;
pub use stop::stop;

/// Name of the SPU group the local SPUs belong to.
pub const SPU_GROUP_NAME: &str = "local";
/// Extra wait for processes after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often the start waits re-check readiness.
const START_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often a wait for the SC election says it is still waiting.
const ELECTION_PROGRESS_INTERVAL: Duration = Duration::from_secs(3);
/// Below this locked-memory limit a failed SPU start mentions the limit as a likely cause.
const MEMLOCK_BYTES_COMFORTABLE: u64 = 64 << 20;

/// The data directory: the flag, else `~/.sluice/local`; made absolute.
pub fn resolve_data_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match flag {
        Some(dir) => dir.to_owned(),
        None => {
            let home = std::env::var_os("HOME")
                .context("HOME is not set: pass --data-dir to choose the cluster's directory")?;
            PathBuf::from(home).join(".sluice").join("local")
        }
    };
    if dir.is_absolute() {
        return Ok(dir);
    }
    Ok(std::env::current_dir().context("cannot read the current directory")?.join(dir))
}

/// What a previous state file means for a start.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Previous {
    /// No state file, or nothing of its cluster runs: start everything.
    Nothing,
    /// Every recorded process runs: there is nothing to start.
    AllRunning,
    /// Some recorded processes run: start the others (their labels).
    Partial { missing: Vec<String> },
}

/// Classifies a previous state file by which of its processes `is_running`.
fn classify(existing: &ClusterState, is_running: impl Fn(&ProcessRecord) -> bool) -> Previous {
    let missing: Vec<String> = existing
        .processes
        .iter()
        .filter(|record| !is_running(record))
        .map(ProcessRecord::label)
        .collect();
    if missing.is_empty() {
        Previous::AllRunning
    } else if missing.len() == existing.processes.len() {
        Previous::Nothing
    } else {
        Previous::Partial { missing }
    }
}

/// `sluice cluster start`.
pub fn start(args: &ClusterStartArgs) -> anyhow::Result<()> {
    if !args.local {
        bail!(
            "`sluice cluster start` needs --local (the only mode so far: an SC and SPUs on this \
             machine); multi-host clusters are started with the units in deploy/"
        );
    }
    let data_dir = resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    let existing = state::load(&data_dir)?;
    let previous = existing
        .as_ref()
        .map_or(Previous::Nothing, |existing| classify(existing, ProcessRecord::is_running));
    if let (Previous::AllRunning, Some(existing)) = (&previous, &existing) {
        println!(
            "A local cluster already runs from {}: SC at {} ({} SPUs). Stop it with `sluice \
             cluster stop{}`.",
            existing.data_dir.display(),
            existing.sc_public_address,
            existing.spu_ids().len(),
            data_dir_flag(&existing.data_dir),
        );
        return Ok(());
    }
    let sc_program = process::find_program(Program::Sc)?;
    let spu_program = process::find_program(Program::Spu)?;
    for dir in [data_dir.join("logs"), data_dir.join("run"), data_dir.join("sc")] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let memlock_hint = match process::raise_memlock_limit() {
        Ok(limit) if limit < MEMLOCK_BYTES_COMFORTABLE => format!(
            "\nnote: locked memory is limited to {} KiB (the hard limit); SPUs lock their I/O \
             buffers: raise it (`ulimit -l unlimited` as root, or memlock in limits.conf)",
            limit / 1024
        ),
        Ok(_) => String::new(),
        Err(error) => format!("\nnote: cannot raise the locked-memory limit: {error}"),
    };
    let mut launch = match (previous, existing) {
        (Previous::Partial { missing }, Some(existing)) => {
            eprintln!(
                "part of the local cluster in {} runs; starting what does not ({}) with the \
                 recorded settings",
                existing.data_dir.display(),
                missing.join(", ")
            );
            Launch::resume(args, existing, memlock_hint)
        }
        _ => Launch::fresh(args, data_dir, memlock_hint),
    };
    let result = launch.run(&sc_program, &spu_program);
    if result.is_err() {
        launch.abort();
    }
    result
}

/// ` --data-dir DIR` unless DIR is the default.
fn data_dir_flag(data_dir: &Path) -> String {
    match resolve_data_dir(None) {
        Ok(default) if default == data_dir => String::new(),
        _ => format!(" --data-dir {}", data_dir.display()),
    }
}

/// A start in progress: the children spawned so far and the state recorded for them.
struct Launch<'a> {
    args: &'a ClusterStartArgs,
    deadline: Instant,
    state: ClusterState,
    /// Children spawned by this start, with the index of their record in `state.processes`.
    children: Vec<(usize, Child)>,
    /// Appended to an SPU's start failure when the locked-memory limit is low.
    memlock_hint: String,
    /// Whether part of the cluster ran already: only missing processes are started, with the
    /// recorded settings.
    resuming: bool,
    /// Labels of the processes this start spawned.
    started: Vec<String>,
}

impl<'a> Launch<'a> {
    /// A start of a whole new cluster (or of one of which nothing runs) from the flags.
    fn fresh(args: &'a ClusterStartArgs, data_dir: PathBuf, memlock_hint: String) -> Launch<'a> {
        let (metadata, consul_address) = match args.metadata {
            MetadataStore::Embedded => ("embedded", None),
            MetadataStore::Consul => ("consul", Some(args.consul_addr.clone())),
        };
        let state = ClusterState {
            version: STATE_VERSION,
            metadata: metadata.into(),
            sc_public_address: String::new(),
            sc_private_address: String::new(),
            spu_group: SPU_GROUP_NAME.into(),
            processes: Vec::new(),
            consul_address,
            sc_public_listen: None,
            sc_private_listen: None,
            tls_dir: args.tls.then(|| data_dir.join(tls::TLS_DIR_NAME)),
            authorization: args.tls,
            data_dir,
        };
        Launch::new(args, state, memlock_hint, false)
    }

    /// A start of the missing processes of a cluster that runs in part.
    fn resume(
        args: &'a ClusterStartArgs,
        existing: ClusterState,
        memlock_hint: String,
    ) -> Launch<'a> {
        Launch::new(args, existing, memlock_hint, true)
    }

    fn new(
        args: &'a ClusterStartArgs,
        state: ClusterState,
        memlock_hint: String,
        resuming: bool,
    ) -> Launch<'a> {
        Launch {
            args,
            deadline: Instant::now() + args.timeout,
            state,
            children: Vec::new(),
            memlock_hint,
            resuming,
            started: Vec::new(),
        }
    }

    fn run(&mut self, sc_program: &Path, spu_program: &Path) -> anyhow::Result<()> {
        let data_dir = self.state.data_dir.clone();
        if !self.state.sc().is_some_and(ProcessRecord::is_running) {
            self.start_sc(sc_program)?;
        }
        let api = self.connect_active_sc()?;
        let spu_ids = self.ensure_spu_group(&api)?;
        let missing: Vec<i32> = spu_ids
            .iter()
            .copied()
            .filter(|id| !self.state.spu(*id).is_some_and(ProcessRecord::is_running))
            .collect();
        if !missing.is_empty() {
            self.start_spus(spu_program, &missing, spu_ids.len())?;
        }
        self.wait_spus_online(&api, &spu_ids)?;
        let ids = spu_ids.iter().map(i32::to_string).collect::<Vec<_>>().join(", ");
        if self.resuming {
            println!(
                "Local cluster running again: started {}; SC at {}, {} SPU{} online ({ids}), \
                 data in {}.",
                self.started.join(", "),
                self.state.sc_public_address,
                spu_ids.len(),
                plural(spu_ids.len()),
                data_dir.display(),
            );
        } else {
            println!(
                "Local cluster ready: SC at {}, {} SPU{} online ({ids}), data in {}.\nStop it \
                 with `sluice cluster stop{}`.",
                self.state.sc_public_address,
                spu_ids.len(),
                plural(spu_ids.len()),
                data_dir.display(),
                data_dir_flag(&data_dir),
            );
        }
        if self.state.tls_dir.is_some() {
            let client_file = tls::write_client_file(&self.state)?;
            println!(
                "TLS is on (CA and certificates in {}). Connect as the admin identity with \
                 `sluice --config {} topic list`.",
                data_dir.join(tls::TLS_DIR_NAME).display(),
                client_file.display()
            );
            if self.state.authorization {
                println!(
                    "Authorization is on: User:{} (that file's identity) is a superuser; others \
                     need `sluice acl add` and a certificate or a token (`sluice token create`).",
                    tls::ADMIN_IDENTITY
                );
            }
        } else if self.state.sc_public_address != crate::args::SC_ADDRESS_DEFAULT {
            println!(
                "The SC is not at the default address: pass `--sc {}` (or set SLUICE_SC) to \
                 other commands.",
                self.state.sc_public_address
            );
        }
        Ok(())
    }

    fn run_dir(&self) -> PathBuf {
        self.state.data_dir.join("run")
    }

    fn log_path(&self, label: &str) -> PathBuf {
        self.state.data_dir.join("logs").join(format!("{label}.log"))
    }

    /// Where the SC listens: the flags on a fresh start; on a restart the addresses the
    /// previous SC reported (the same ports, where clients and running SPUs connect).
    fn sc_listen_addresses(&self) -> (String, String) {
        if !self.resuming {
            return (self.args.sc_public_address.clone(), self.args.sc_private_address.clone());
        }
        let state = &self.state;
        (
            state.sc_public_listen.clone().unwrap_or_else(|| state.sc_public_address.clone()),
            state.sc_private_listen.clone().unwrap_or_else(|| state.sc_private_address.clone()),
        )
    }

    /// Starts the SC and waits for its ready file; records where it listens.
    fn start_sc(&mut self, program: &Path) -> anyhow::Result<()> {
        if let Some(previous) = self.state.sc() {
            eprintln!(
                "restarting the SC ({} store, at {}): its process {} is gone",
                self.state.metadata, self.state.sc_public_address, previous.pid
            );
        } else {
            eprintln!("starting the SC ({})", program.display());
        }
        let ready = self.spawn_sc(program)?;
        let public = ready_value(&ready, "public")?.to_owned();
        let private = ready_value(&ready, "private")?.to_owned();
        self.state.sc_public_address = connectable(&public);
        self.state.sc_private_address = connectable(&private);
        self.state.sc_public_listen = Some(public);
        self.state.sc_private_listen = Some(private);
        state::save(&self.state)
    }

    fn spawn_sc(&mut self, program: &Path) -> anyhow::Result<Vec<(String, String)>> {
        let ready_file = self.run_dir().join("sc.ready");
        remove_if_present(&ready_file)?;
        let data_dir = &self.state.data_dir;
        let (public, private) = self.sc_listen_addresses();
        let mut args = vec![
            format!("--public-address={public}"),
            format!("--private-address={private}"),
            "--metrics-address=127.0.0.1:0".into(),
            format!("--data-dir={}", data_dir.join("sc").display()),
            format!("--ready-file={}", ready_file.display()),
        ];
        if let Some(tls_dir) = &self.state.tls_dir {
            args.extend(tls::sc_flags(tls_dir)?);
        }
        if self.state.authorization {
            args.push("--authorization".into());
            args.push(format!("--superuser=User:{}", tls::ADMIN_IDENTITY));
        }
        match self.state.metadata.as_str() {
            "embedded" => args.push("--store=embedded".into()),
            "consul" => {
                let consul = self
                    .state
                    .consul_address
                    .clone()
                    .unwrap_or_else(|| self.args.consul_addr.clone());
                args.push("--store=consul".into());
                args.push(format!("--consul-address={consul}"));
                self.state.consul_address = Some(consul);
            }
            other => bail!(
                "{} names the metadata store {other:?}, which this sluice does not know; stop \
                 that cluster with the sluice that started it",
                state::state_path(data_dir).display()
            ),
        }
        let index = self.spawn(program, &args, Role::Sc, None, None)?;
        self.wait_ready_file(&ready_file, index)
    }

    /// The admin API of the active SC, waiting while the SC is a standby: on Consul a new SC
    /// waits until Consul releases the lock of an SC that died (its session is invalidated a
    /// few seconds after its health check stops passing).
    fn connect_active_sc(&mut self) -> anyhow::Result<ScApi> {
        let address = self.state.sc_public_address.clone();
        let sc_index = self.state.processes.iter().position(|record| record.role == Role::Sc);
        let mut waiting_since: Option<Instant> = None;
        let mut progress_at = Instant::now();
        loop {
            match ScApi::connect_with(tls::client_config(&self.state)) {
                Ok(api) => {
                    if let Some(since) = waiting_since {
                        eprintln!(
                            "the SC election is over: the SC at {address} is active (after \
                             {:.1} s)",
                            since.elapsed().as_secs_f64()
                        );
                    }
                    return Ok(api);
                }
                Err(error) if is_standby(&error) => {}
                Err(error) => return Err(error),
            }
            let now = Instant::now();
            match waiting_since {
                None => {
                    waiting_since = Some(now);
                    progress_at = now + ELECTION_PROGRESS_INTERVAL;
                    eprintln!(
                        "waiting for the SC election: the SC at {address} is a standby until \
                         Consul releases the lock of the active SC, which takes a few seconds \
                         after that SC died"
                    );
                }
                Some(since) if now >= progress_at => {
                    progress_at = now + ELECTION_PROGRESS_INTERVAL;
                    eprintln!(
                        "still waiting for the SC election ({:.0} s so far, up to {:?})",
                        now.duration_since(since).as_secs_f64(),
                        self.args.timeout
                    );
                }
                Some(_) => {}
            }
            if let Some(index) = sc_index {
                self.check_alive(index)?;
            }
            if now >= self.deadline {
                let log = sc_index.map_or_else(String::new, |index| {
                    format!("; its log: {}", self.state.processes[index].log_file.display())
                });
                bail!(
                    "the SC at {address} was still a standby after {:?}: no SC of this cluster \
                     became active. Another SC of this cluster may hold the lock in Consul (at \
                     {}){log}",
                    self.args.timeout,
                    self.state.consul_address.as_deref().unwrap_or("the configured agent")
                );
            }
            std::thread::sleep(START_POLL_INTERVAL);
        }
    }

    /// The cores of SPU `id`: as recorded for it, else as recorded for the other SPUs, else
    /// the flag, else the machine's CPUs shared out.
    fn spu_cores(&self, id: i32, group_size: usize) -> u16 {
        let recorded = self
            .state
            .spu(id)
            .and_then(|record| record.cores)
            .or_else(|| self.state.processes.iter().find_map(|record| record.cores));
        recorded.or(self.args.cores).unwrap_or_else(|| default_cores(group_size))
    }

    /// Starts SPUs `ids` of a group of `group_size` and waits for their ready files.
    fn start_spus(&mut self, program: &Path, ids: &[i32], group_size: usize) -> anyhow::Result<()> {
        if self.resuming {
            for id in ids {
                let cores = self.spu_cores(*id, group_size);
                match self.state.spu(*id) {
                    Some(previous) => eprintln!(
                        "restarting SPU {id} ({cores} core{}): its process {} is gone",
                        plural(usize::from(cores)),
                        previous.pid
                    ),
                    None => {
                        eprintln!("starting SPU {id} ({cores} core{})", plural(usize::from(cores)))
                    }
                }
            }
        } else {
            let cores = self.spu_cores(ids[0], group_size);
            eprintln!(
                "starting {} SPU{} ({} core{} each)",
                ids.len(),
                plural(ids.len()),
                cores,
                plural(usize::from(cores))
            );
        }
        for id in ids {
            let cores = self.spu_cores(*id, group_size);
            self.spawn_spu(program, *id, cores)?;
        }
        self.wait_spus_ready(ids)
    }

    fn spawn_spu(&mut self, program: &Path, id: i32, cores: u16) -> anyhow::Result<()> {
        let ready_file = self.run_dir().join(format!("spu-{id}.ready"));
        remove_if_present(&ready_file)?;
        let mut args = vec![
            format!("--id={id}"),
            format!("--sc={}", self.state.sc_private_address),
            "--public-address=127.0.0.1:0".into(),
            "--private-address=127.0.0.1:0".into(),
            "--metrics-address=127.0.0.1:0".into(),
            format!("--data-dir={}", self.state.data_dir.display()),
            format!("--cores={cores}"),
            format!("--ready-file={}", ready_file.display()),
        ];
        if let Some(tls_dir) = &self.state.tls_dir {
            args.extend(tls::spu_flags(tls_dir, program, id)?);
        }
        self.spawn(program, &args, Role::Spu, Some(id), Some(cores)).map(drop)
    }

    /// Spawns a process and records it, replacing the record of the process it replaces;
    /// returns the record's index.
    fn spawn(
        &mut self,
        program: &Path,
        args: &[String],
        role: Role,
        spu_id: Option<i32>,
        cores: Option<u16>,
    ) -> anyhow::Result<usize> {
        let label = match spu_id {
            Some(id) => format!("spu-{id}"),
            None => "sc".into(),
        };
        let log_file = self.log_path(&label);
        let child = process::spawn_detached(program, args, &log_file)?;
        let pid = child.id();
        let start_time_ticks = process::start_time_ticks(pid).unwrap_or(0);
        let record = ProcessRecord {
            role,
            spu_id,
            pid,
            start_time_ticks,
            public_address: None,
            log_file,
            cores,
        };
        let replaced = self
            .state
            .processes
            .iter()
            .position(|previous| previous.role == role && previous.spu_id == spu_id);
        let index = match replaced {
            Some(index) => {
                self.state.processes[index] = record;
                index
            }
            None => {
                self.state.processes.push(record);
                self.state.processes.len() - 1
            }
        };
        self.children.push((index, child));
        self.started.push(label);
        state::save(&self.state)?;
        Ok(index)
    }

    /// Waits for the ready file of process `index`, failing early if the process exits.
    fn wait_ready_file(
        &mut self,
        ready_file: &Path,
        index: usize,
    ) -> anyhow::Result<Vec<(String, String)>> {
        loop {
            if let Some(lines) = process::read_ready_file(ready_file) {
                if let Some((_, public)) = lines.iter().find(|(key, _)| key == "public") {
                    self.state.processes[index].public_address = Some(connectable(public));
                }
                return Ok(lines);
            }
            self.check_alive(index)?;
            if Instant::now() >= self.deadline {
                let record = &self.state.processes[index];
                bail!(
                    "{} did not become ready within {:?}; its log ({}):\n{}",
                    record.label(),
                    self.args.timeout,
                    record.log_file.display(),
                    process::log_tail(&record.log_file)
                );
            }
            std::thread::sleep(START_POLL_INTERVAL);
        }
    }

    /// Fails when the process of record `index` has exited: a child of this start by its
    /// handle, a process that ran before by its recorded PID.
    fn check_alive(&mut self, index: usize) -> anyhow::Result<()> {
        let record = &self.state.processes[index];
        let exit = match self.children.iter_mut().find(|(child_index, _)| *child_index == index) {
            Some((_, child)) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                _ => None,
            },
            None => (!record.is_running()).then(|| "it had been running".to_owned()),
        };
        if let Some(status) = exit {
            let hint = if record.role == Role::Spu { self.memlock_hint.as_str() } else { "" };
            bail!(
                "{} exited during start ({status}); its log ({}):\n{}{hint}",
                record.label(),
                record.log_file.display(),
                process::log_tail(&record.log_file)
            );
        }
        Ok(())
    }

    /// The group's SPU ids, creating the group when this data directory has none yet.
    fn ensure_spu_group(&self, api: &ScApi) -> anyhow::Result<Vec<i32>> {
        let wanted = self.args.spus.unwrap_or(1);
        let groups = api.list_spu_groups()?;
        if let Some(group) = groups.iter().find(|group| group.name.as_str() == SPU_GROUP_NAME) {
            if self.args.spus.is_some_and(|spus| spus != group.spec.replicas) {
                bail!(
                    "the cluster in {} was created with {} SPUs (group `{SPU_GROUP_NAME}`), not \
                     {wanted}; start it with --spus {} or use another --data-dir",
                    self.state.data_dir.display(),
                    group.spec.replicas,
                    group.spec.replicas
                );
            }
            if !self.resuming {
                eprintln!(
                    "reattaching the existing cluster: SPU group `{SPU_GROUP_NAME}` with {} SPUs",
                    group.spec.replicas
                );
            }
            return Ok(group.spec.spu_ids().map(|id| id.get()).collect());
        }
        let spec = sluice_proto::object::SpuGroupSpec {
            replicas: wanted,
            first_id: sluice_proto::ids::SpuId(self.args.first_spu_id),
            rack: None,
            storage: sluice_proto::object::StorageConfig {
                log_dir: Some(self.state.data_dir.display().to_string()),
                size_bytes: None,
            },
        };
        spec.validate().context("invalid --spus / --first-spu-id")?;
        api.create_spu_group(SPU_GROUP_NAME, spec.clone())?;
        Ok(spec.spu_ids().map(|id| id.get()).collect())
    }

    /// Waits until SPUs `ids` wrote their ready files (listeners up, registered).
    fn wait_spus_ready(&mut self, ids: &[i32]) -> anyhow::Result<()> {
        for id in ids {
            let index = self
                .state
                .processes
                .iter()
                .position(|record| record.spu_id == Some(*id))
                .context("an SPU was not recorded")?;
            let ready_file = self.run_dir().join(format!("spu-{id}.ready"));
            self.wait_ready_file(&ready_file, index)?;
        }
        state::save(&self.state)
    }

    /// Polls the SC's SPU list until every id is online, printing progress on changes.
    fn wait_spus_online(&mut self, api: &ScApi, spu_ids: &[i32]) -> anyhow::Result<()> {
        let mut last_online = usize::MAX;
        loop {
            let spus = api.list_spus()?;
            let online = spu_ids
                .iter()
                .filter(|id| {
                    spus.iter().any(|spu| spu.spec.id.get() == **id && spu.status.is_online())
                })
                .count();
            if online != last_online {
                eprintln!("SPUs online: {online} of {}", spu_ids.len());
                last_online = online;
            }
            if online == spu_ids.len() {
                return Ok(());
            }
            let spawned: Vec<usize> = self.children.iter().map(|(index, _)| *index).collect();
            for index in spawned {
                self.check_alive(index)?;
            }
            if Instant::now() >= self.deadline {
                bail!(
                    "only {online} of {} SPUs came online within {:?}; see the logs in {}",
                    spu_ids.len(),
                    self.args.timeout,
                    self.state.data_dir.join("logs").display()
                );
            }
            std::thread::sleep(START_POLL_INTERVAL);
        }
    }

    /// After a failure: stops every child spawned by this start. The state file goes when
    /// nothing of the cluster runs any more; otherwise it stays, saying what runs.
    fn abort(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let result = if self.state.processes.iter().any(ProcessRecord::is_running) {
            state::save(&self.state)
        } else {
            state::remove(&self.state.data_dir)
        };
        if let Err(error) = result {
            eprintln!("warning: {error:#}");
        }
    }
}

/// Whether connecting failed because every SC reached is a standby (an election is on).
fn is_standby(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(cause.downcast_ref::<ClientError>(), Some(ClientError::NoActiveController { .. }))
    })
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn ready_value<'l>(lines: &'l [(String, String)], key: &str) -> anyhow::Result<&'l str> {
    lines
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
        .with_context(|| format!("the SC's ready file has no `{key}=` line"))
}

/// An address to connect to: a wildcard host (`0.0.0.0`, `[::]`) becomes loopback.
fn connectable(address: &str) -> String {
    if let Some(port) = address.strip_prefix("0.0.0.0:") {
        return format!("127.0.0.1:{port}");
    }
    if let Some(port) = address.strip_prefix("[::]:") {
        return format!("[::1]:{port}");
    }
    address.to_owned()
}

fn default_cores(spus: usize) -> u16 {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    u16::try_from((cpus / spus.max(1)).max(1)).unwrap_or(u16::MAX)
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(role: Role, spu_id: Option<i32>, pid: u32) -> ProcessRecord {
        ProcessRecord {
            role,
            spu_id,
            pid,
            start_time_ticks: 1,
            public_address: None,
            log_file: PathBuf::from("/l"),
            cores: None,
        }
    }

    fn cluster() -> ClusterState {
        ClusterState {
            version: STATE_VERSION,
            data_dir: PathBuf::from("/data"),
            metadata: "consul".into(),
            sc_public_address: "127.0.0.1:9003".into(),
            sc_private_address: "127.0.0.1:9004".into(),
            spu_group: SPU_GROUP_NAME.into(),
            processes: vec![
                record(Role::Sc, None, 10),
                record(Role::Spu, Some(5001), 11),
                record(Role::Spu, Some(5002), 12),
            ],
            consul_address: None,
            sc_public_listen: None,
            sc_private_listen: None,
            tls_dir: None,
            authorization: false,
        }
    }

    #[test]
    fn previous_clusters_are_classified_by_what_runs() {
        let existing = cluster();
        assert_eq!(classify(&existing, |_| true), Previous::AllRunning);
        assert_eq!(classify(&existing, |_| false), Previous::Nothing);
        assert_eq!(
            classify(&existing, |record| record.pid != 12),
            Previous::Partial { missing: vec!["spu-5002".into()] }
        );
        assert_eq!(
            classify(&existing, |record| record.role == Role::Spu),
            Previous::Partial { missing: vec!["sc".into()] }
        );
    }

    fn start_args(extra: &[&str]) -> ClusterStartArgs {
        use clap::Parser;
        let mut line = vec!["sluice", "cluster", "start", "--local"];
        line.extend_from_slice(extra);
        let cli = crate::args::Cli::try_parse_from(line).unwrap();
        let crate::args::Command::Cluster(crate::args::ClusterCommand::Start(args)) = cli.command
        else {
            panic!("not cluster start")
        };
        args
    }

    #[test]
    fn a_restart_keeps_the_recorded_settings() {
        let args = start_args(&["--cores", "4", "--sc-public-address", "127.0.0.1:0"]);
        let mut existing = cluster();
        existing.processes[1].cores = Some(2);
        existing.sc_public_listen = Some("0.0.0.0:9003".into());
        let launch = Launch::resume(&args, existing.clone(), String::new());
        assert_eq!(launch.spu_cores(5001, 2), 2, "as recorded for it");
        assert_eq!(launch.spu_cores(5002, 2), 2, "as recorded for the others");
        assert_eq!(
            launch.sc_listen_addresses(),
            ("0.0.0.0:9003".to_owned(), "127.0.0.1:9004".to_owned()),
            "the reported listen address, else the recorded one; never the flag's port 0"
        );
        // A file of an older sluice without cores: the flag.
        let launch = Launch::resume(&args, cluster(), String::new());
        assert_eq!(launch.spu_cores(5001, 2), 4);
        let fresh = Launch::fresh(&args, PathBuf::from("/data"), String::new());
        assert_eq!(fresh.sc_listen_addresses().0, "127.0.0.1:0");
        assert_eq!(fresh.spu_cores(5001, 2), 4);
    }

    #[test]
    fn standby_errors_are_recognised_through_context() {
        let standby = anyhow::Error::new(ClientError::NoActiveController { addresses: "a".into() })
            .context("cannot connect");
        assert!(is_standby(&standby));
        let unreachable = anyhow::Error::new(ClientError::ScUnreachable {
            addresses: "a".into(),
            reason: "refused".into(),
        });
        assert!(!is_standby(&unreachable));
    }
}
