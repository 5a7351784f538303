//! `sluice cluster start | status | stop`: a whole cluster on this machine, as background
//! processes.
//!
//! Start: the SC first (embedded store in `<data-dir>/sc`, or Consul), then an SPU group `local`
//! created at the SC (kept when it already exists: a second start on the same data directory
//! reattaches the metadata and the replicas), then one `sluice-spu` per group member with its
//! replicas under `<data-dir>/spu-<id>/`. It returns once every SPU of the group is online at
//! the SC, or fails at a deadline, stopping what it started and showing the failing process'
//! log.
//!
//! Ownership: the processes outlive the command; `<data-dir>/cluster.json` ([`state`]) records
//! them, and `stop` signals exactly those (PID plus start time), SIGTERM first, SIGKILL after
//! its timeout.

pub mod process;
pub mod state;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use sluice_proto::api::admin::SpuEntry;

use crate::args::{ClusterStartArgs, ClusterStatusArgs, ClusterStopArgs, MetadataStore};
use crate::output::{self, Table};
use crate::sc_api::ScApi;
use process::Program;
use state::{ClusterState, ProcessRecord, Role, STATE_VERSION};

/// Name of the SPU group the local SPUs belong to.
pub const SPU_GROUP_NAME: &str = "local";
/// Extra wait for processes after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often the start waits re-check readiness.
const START_POLL_INTERVAL: Duration = Duration::from_millis(100);
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

/// `sluice cluster start`.
pub fn start(args: &ClusterStartArgs) -> anyhow::Result<()> {
    if !args.local {
        bail!(
            "`sluice cluster start` needs --local (the only mode so far: an SC and SPUs on this \
             machine); multi-host clusters are started with the units in deploy/"
        );
    }
    let data_dir = resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    if let Some(existing) = state::load(&data_dir)? {
        if let Some(message) = check_previous(&existing)? {
            println!("{message}");
            return Ok(());
        }
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
    let mut launch = Launch::new(args, data_dir, memlock_hint);
    let result = launch.run(&sc_program, &spu_program);
    if result.is_err() {
        launch.abort();
    }
    result
}

/// Decides what to do about a previous state file: `Some(message)` when that cluster still
/// runs completely, `None` when nothing of it runs, an error when part of it does.
fn check_previous(existing: &ClusterState) -> anyhow::Result<Option<String>> {
    let running: Vec<&ProcessRecord> =
        existing.processes.iter().filter(|record| record.is_running()).collect();
    if running.is_empty() {
        return Ok(None);
    }
    if running.len() == existing.processes.len() {
        return Ok(Some(format!(
            "A local cluster already runs from {}: SC at {} ({} SPUs). Stop it with `sluice \
             cluster stop{}`.",
            existing.data_dir.display(),
            existing.sc_public_address,
            existing.processes.iter().filter(|record| record.role == Role::Spu).count(),
            data_dir_flag(&existing.data_dir),
        )));
    }
    let labels: Vec<String> =
        running.iter().map(|record| format!("{} (pid {})", record.label(), record.pid)).collect();
    bail!(
        "part of the local cluster in {} still runs: {}; run `sluice cluster stop{}` first",
        existing.data_dir.display(),
        labels.join(", "),
        data_dir_flag(&existing.data_dir)
    )
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
    children: Vec<Child>,
    /// Appended to an SPU's start failure when the locked-memory limit is low.
    memlock_hint: String,
}

impl<'a> Launch<'a> {
    fn new(args: &'a ClusterStartArgs, data_dir: PathBuf, memlock_hint: String) -> Launch<'a> {
        let metadata = match args.metadata {
            MetadataStore::Embedded => "embedded",
            MetadataStore::Consul => "consul",
        };
        Launch {
            args,
            deadline: Instant::now() + args.timeout,
            state: ClusterState {
                version: STATE_VERSION,
                data_dir,
                metadata: metadata.into(),
                sc_public_address: String::new(),
                sc_private_address: String::new(),
                spu_group: SPU_GROUP_NAME.into(),
                processes: Vec::new(),
            },
            children: Vec::new(),
            memlock_hint,
        }
    }

    fn run(&mut self, sc_program: &Path, spu_program: &Path) -> anyhow::Result<()> {
        let data_dir = self.state.data_dir.clone();
        eprintln!("starting the SC ({})", sc_program.display());
        let sc_ready = self.spawn_sc(sc_program)?;
        self.state.sc_public_address = connectable(ready_value(&sc_ready, "public")?);
        self.state.sc_private_address = connectable(ready_value(&sc_ready, "private")?);
        state::save(&self.state)?;
        let api = ScApi::connect(&self.state.sc_public_address)?;
        let spu_ids = self.ensure_spu_group(&api)?;
        let cores = self.args.cores.unwrap_or_else(|| default_cores(spu_ids.len()));
        eprintln!(
            "starting {} SPU{} ({} core{} each)",
            spu_ids.len(),
            plural(spu_ids.len()),
            cores,
            plural(usize::from(cores))
        );
        for id in &spu_ids {
            self.spawn_spu(spu_program, *id, cores)?;
        }
        self.wait_spus_ready(&spu_ids)?;
        self.wait_spus_online(&api, &spu_ids)?;
        println!(
            "Local cluster ready: SC at {}, {} SPU{} online ({}), data in {}.\nStop it with \
             `sluice cluster stop{}`.",
            self.state.sc_public_address,
            spu_ids.len(),
            plural(spu_ids.len()),
            spu_ids.iter().map(i32::to_string).collect::<Vec<_>>().join(", "),
            data_dir.display(),
            data_dir_flag(&data_dir),
        );
        if self.state.sc_public_address != crate::args::SC_ADDRESS_DEFAULT {
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

    fn spawn_sc(&mut self, program: &Path) -> anyhow::Result<Vec<(String, String)>> {
        let ready_file = self.run_dir().join("sc.ready");
        remove_if_present(&ready_file)?;
        let data_dir = &self.state.data_dir;
        let mut args = vec![
            format!("--public-address={}", self.args.sc_public_address),
            format!("--private-address={}", self.args.sc_private_address),
            format!("--data-dir={}", data_dir.join("sc").display()),
            format!("--ready-file={}", ready_file.display()),
        ];
        match self.args.metadata {
            MetadataStore::Embedded => args.push("--store=embedded".into()),
            MetadataStore::Consul => {
                args.push("--store=consul".into());
                args.push(format!("--consul-address={}", self.args.consul_addr));
            }
        }
        self.spawn(program, &args, Role::Sc, None)?;
        self.wait_ready_file(&ready_file, self.children.len() - 1)
    }

    fn spawn_spu(&mut self, program: &Path, id: i32, cores: u16) -> anyhow::Result<()> {
        let ready_file = self.run_dir().join(format!("spu-{id}.ready"));
        remove_if_present(&ready_file)?;
        let args = vec![
            format!("--id={id}"),
            format!("--sc={}", self.state.sc_private_address),
            "--public-address=127.0.0.1:0".into(),
            "--private-address=127.0.0.1:0".into(),
            "--metrics-address=127.0.0.1:0".into(),
            format!("--data-dir={}", self.state.data_dir.display()),
            format!("--cores={cores}"),
            format!("--ready-file={}", ready_file.display()),
        ];
        self.spawn(program, &args, Role::Spu, Some(id))
    }

    fn spawn(
        &mut self,
        program: &Path,
        args: &[String],
        role: Role,
        spu_id: Option<i32>,
    ) -> anyhow::Result<()> {
        let label = match spu_id {
            Some(id) => format!("spu-{id}"),
            None => "sc".into(),
        };
        let log_file = self.log_path(&label);
        let child = process::spawn_detached(program, args, &log_file)?;
        let pid = child.id();
        let start_time_ticks = process::start_time_ticks(pid).unwrap_or(0);
        self.children.push(child);
        self.state.processes.push(ProcessRecord {
            role,
            spu_id,
            pid,
            start_time_ticks,
            public_address: None,
            log_file,
        });
        state::save(&self.state)
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

    fn check_alive(&mut self, index: usize) -> anyhow::Result<()> {
        let record = &self.state.processes[index];
        if let Ok(Some(status)) = self.children[index].try_wait() {
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
            eprintln!(
                "reattaching the existing cluster: SPU group `{SPU_GROUP_NAME}` with {} SPUs",
                group.spec.replicas
            );
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

    /// Waits until every SPU wrote its ready file (listeners up, registered).
    fn wait_spus_ready(&mut self, spu_ids: &[i32]) -> anyhow::Result<()> {
        for id in spu_ids {
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
            for index in 0..self.children.len() {
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

    /// Stops every child spawned by this start (after a failure) and removes the state file.
    fn abort(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(error) = state::remove(&self.state.data_dir) {
            eprintln!("warning: {error:#}");
        }
    }
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

/// What `cluster status -O json` prints.
#[derive(Debug, Serialize)]
struct StatusReport {
    data_dir: PathBuf,
    metadata: String,
    sc_public_address: String,
    running: bool,
    processes: Vec<ProcessStatus>,
    /// The SPUs as the SC sees them; absent when the SC does not answer.
    spus: Option<Vec<SpuEntry>>,
    sc_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ProcessStatus {
    name: String,
    pid: u32,
    running: bool,
    public_address: Option<String>,
    log_file: PathBuf,
}

/// `sluice cluster status`: exits with an error when no local cluster runs.
pub fn status(args: &ClusterStatusArgs) -> anyhow::Result<()> {
    let data_dir = resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    let Some(existing) = state::load(&data_dir)? else {
        bail!(
            "no local cluster in {} (no {}); start one with `sluice cluster start --local{}`",
            data_dir.display(),
            state::STATE_FILE_NAME,
            data_dir_flag(&data_dir)
        );
    };
    let processes: Vec<ProcessStatus> = existing
        .processes
        .iter()
        .map(|record| ProcessStatus {
            name: record.label(),
            pid: record.pid,
            running: record.is_running(),
            public_address: record.public_address.clone(),
            log_file: record.log_file.clone(),
        })
        .collect();
    let running = processes.iter().all(|process| process.running);
    let (spus, sc_error) =
        match ScApi::connect(&existing.sc_public_address).and_then(|api| api.list_spus()) {
            Ok(spus) => (Some(spus), None),
            Err(error) => (None, Some(format!("{error:#}"))),
        };
    let report = StatusReport {
        data_dir: existing.data_dir.clone(),
        metadata: existing.metadata.clone(),
        sc_public_address: existing.sc_public_address.clone(),
        running,
        processes,
        spus,
        sc_error,
    };
    output::print(args.output.format, &report, || {
        format!(
            "Local cluster in {} (metadata: {}), SC at {}\n\n{}{}",
            report.data_dir.display(),
            report.metadata,
            report.sc_public_address,
            status_table(&report).render(),
            report.sc_error.as_ref().map_or(String::new(), |error| format!("\n{error}\n"))
        )
    })?;
    if !running {
        bail!(
            "the local cluster is not (fully) running; `sluice cluster stop{0}` then `sluice \
             cluster start --local{0}` restarts it",
            data_dir_flag(&data_dir)
        );
    }
    Ok(())
}

fn status_table(report: &StatusReport) -> Table {
    let mut table = Table::new(&["PROCESS", "PID", "STATE", "ADDRESS", "SC VIEW"]);
    for process in &report.processes {
        let spu = report.spus.as_ref().and_then(|spus| {
            let id: i32 = process.name.strip_prefix("spu-")?.parse().ok()?;
            spus.iter().find(|spu| spu.spec.id.get() == id)
        });
        let sc_view = match (&report.spus, spu) {
            (_, Some(spu)) => format!("{:?}", spu.status.resolution).to_lowercase(),
            (Some(_), None) if process.name == "sc" => "reachable".into(),
            (Some(_), None) => "unknown to the SC".into(),
            (None, _) => "SC unreachable".into(),
        };
        table.row(vec![
            process.name.clone(),
            process.pid.to_string(),
            if process.running { "running" } else { "stopped" }.into(),
            process.public_address.clone().unwrap_or_default(),
            sc_view,
        ]);
    }
    table
}

/// `sluice cluster stop`: SIGTERM to every recorded process, SIGKILL after the timeout.
pub fn stop(args: &ClusterStopArgs) -> anyhow::Result<()> {
    let data_dir = resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    let Some(existing) = state::load(&data_dir)? else {
        eprintln!("no local cluster in {}: nothing to stop", data_dir.display());
        return Ok(());
    };
    // SPUs first, so they sync and leave while the SC still answers them.
    let mut ordered: Vec<&ProcessRecord> = existing.processes.iter().collect();
    ordered.sort_by_key(|record| record.role == Role::Sc);
    let mut signalled = Vec::new();
    for record in &ordered {
        if process::signal(record.pid, record.start_time_ticks, libc::SIGTERM) {
            signalled.push((record.pid, record.start_time_ticks));
        }
    }
    let stubborn = process::wait_all_gone(&signalled, args.timeout);
    for (pid, start_time) in &stubborn {
        eprintln!("pid {pid} did not exit within {:?} of SIGTERM; sending SIGKILL", args.timeout);
        process::signal(*pid, *start_time, libc::SIGKILL);
    }
    let left = process::wait_all_gone(&stubborn, KILL_WAIT);
    if !left.is_empty() {
        let pids: Vec<String> = left.iter().map(|(pid, _)| pid.to_string()).collect();
        bail!("processes {} are still running after SIGKILL", pids.join(", "));
    }
    state::remove(&data_dir)?;
    println!(
        "Stopped {} process{} of the local cluster in {}. Data is kept; `sluice cluster start \
         --local{}` reattaches it.",
        signalled.len(),
        if signalled.len() == 1 { "" } else { "es" },
        data_dir.display(),
        data_dir_flag(&data_dir)
    );
    Ok(())
}
