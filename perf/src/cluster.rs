//! A local cluster of real processes for the suite, `failover` and the tests: one `sluice-sc`
//! with the embedded store and one or more `sluice-spu`s (ids 1..=n; all cores each by
//! default), on OS-chosen loopback ports, data under one directory (each SPU keeps its replicas
//! in `<data-dir>/spu-<id>`). The SPUs join through an SPU group (`perf`, first id 1), so each
//! registers the endpoints it actually bound.
//!
//! Faults: an SPU can be killed (`SIGKILL`), stopped (`SIGSTOP`), continued (`SIGCONT`) and
//! restarted on its data, always through the handle of the child this cluster started.
//!
//! Ownership: [`LocalCluster`] owns every child and kills them by handle when dropped (SPUs
//! first). Logs go to `<data-dir>/logs/{sc,spu-<id>}.log` (a restarted SPU appends to its
//! log); a failed start quotes their tail.
//! Binaries: `SLUICE_SC_BIN` / `SLUICE_SPU_BIN`, else the given directory, else next to the
//! running executable (and its parent, for test executables in `target/*/deps`), else `PATH`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_client::{ClientConfig, ClientError, Cluster, ErrorCode, SpuGroupSpec, SpuId};
use sluice_proto::object::StorageConfig;

use crate::error::PerfError;
use crate::limits::ChildGuard;

/// Longest wait for a process's ready file, and for the SPU to be online.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`LocalCluster::delete_topics`] waits for the SPU to remove a topic's files.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(120);
/// Name of the SPU group the cluster's SPU belongs to.
const SPU_GROUP: &str = "perf";
/// Id of the first SPU (the others follow it).
const FIRST_SPU_ID: i32 = 1;

/// Settings of a local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    /// Root of everything the cluster writes.
    pub data_dir: PathBuf,
    /// Cores of each SPU [default: all].
    pub cores: Option<u32>,
    /// Where `sluice-sc` and `sluice-spu` are.
    pub bin_dir: Option<PathBuf>,
    /// Number of SPUs (ids 1..=spus).
    pub spus: u32,
    /// Extra flags of the SC (e.g. `--heartbeat-timeout-ms=2000`).
    pub sc_flags: Vec<String>,
    /// Extra flags of every SPU (e.g. `--frame-read-timeout-ms=1000`).
    pub spu_flags: Vec<String>,
}

impl LocalClusterConfig {
    /// One SPU with `cores` cores (all when `None`), binaries found as [`find_binary`] says.
    pub fn single_spu(data_dir: PathBuf, cores: Option<u32>, bin_dir: Option<PathBuf>) -> Self {
        LocalClusterConfig {
            data_dir,
            cores,
            bin_dir,
            spus: 1,
            sc_flags: Vec::new(),
            spu_flags: Vec::new(),
        }
    }

    /// Turns both free-space floors of every SPU off (`--free-bytes-min=0`,
    /// `--free-space-percent-min=0`): for tests, whose host disk may be nearly full while they
    /// write little, and whose SPUs would otherwise refuse appends with `StorageFull`.
    pub fn without_disk_floors(mut self) -> Self {
        self.spu_flags.extend(SPU_DISK_FLOORS_OFF.iter().map(|(_, flag)| flag.to_string()));
        self
    }
}

/// The SPU's free-space floors turned off, as environment variables (inherited by the SPUs that a
/// `sluice-perf suite` or `failover` run starts) and as the equivalent flags.
pub const SPU_DISK_FLOORS_OFF: [(&str, &str); 2] = [
    ("SLUICE_SPU_FREE_BYTES_MIN", "--free-bytes-min=0"),
    ("SLUICE_SPU_FREE_SPACE_PERCENT_MIN", "--free-space-percent-min=0"),
];

/// [`SPU_DISK_FLOORS_OFF`] as `(variable, value)` pairs for [`std::process::Command::envs`].
pub fn spu_disk_floors_off_env() -> impl Iterator<Item = (&'static str, &'static str)> {
    SPU_DISK_FLOORS_OFF.iter().map(|(variable, _)| (*variable, "0"))
}

/// One SPU child and what it takes to start it again.
#[derive(Debug)]
struct SpuChild {
    id: i32,
    process: ChildGuard,
    arguments: Vec<String>,
    ready_file: PathBuf,
    log: PathBuf,
}

/// A running SC and its SPUs; killed on drop.
#[derive(Debug)]
pub struct LocalCluster {
    spus: Vec<SpuChild>,
    sc: ChildGuard,
    spu_program: PathBuf,
    /// The SC's public address (for clients).
    pub sc_public_address: String,
    /// The first SPU's public address.
    pub spu_public_address: String,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl LocalCluster {
    /// Starts the SC, creates the SPU group, starts the SPUs and waits until all are online.
    pub fn start(config: &LocalClusterConfig) -> Result<LocalCluster, PerfError> {
        let sc_program = find_binary("sluice-sc", "SLUICE_SC_BIN", config.bin_dir.as_deref())?;
        let spu_program = find_binary("sluice-spu", "SLUICE_SPU_BIN", config.bin_dir.as_deref())?;
        let logs = config.data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|error| PerfError::io(format!("create {}", logs.display()), error))?;
        let sc_ready = config.data_dir.join("sc.ready");
        let mut sc_arguments = vec![
            "--public-address=127.0.0.1:0".into(),
            "--private-address=127.0.0.1:0".into(),
            "--metrics-address=127.0.0.1:0".into(),
            format!("--data-dir={}", config.data_dir.join("sc").display()),
            format!("--ready-file={}", sc_ready.display()),
        ];
        sc_arguments.extend(config.sc_flags.iter().cloned());
        let mut sc = spawn(&sc_program, &sc_arguments, &logs.join("sc.log"))?;
        let sc_lines = wait_ready_file(&mut sc, &sc_ready, &logs.join("sc.log"))?;
        let sc_public_address = ready_value(&sc_lines, "public", &sc_ready)?;
        let sc_private_address = ready_value(&sc_lines, "private", &sc_ready)?;
        let cluster = Cluster::connect(ClientConfig::new(&sc_public_address))?;
        let spu_count = i32::try_from(config.spus.max(1)).unwrap_or(i32::MAX);
        create_spu_group(&cluster, &config.data_dir, spu_count)?;
        let mut local = LocalCluster {
            spus: Vec::new(),
            sc,
            spu_program,
            sc_public_address,
            spu_public_address: String::new(),
            data_dir: config.data_dir.clone(),
        };
        for id in FIRST_SPU_ID..FIRST_SPU_ID + spu_count {
            let ready_file = config.data_dir.join(format!("spu-{id}.ready"));
            let mut arguments = vec![
                format!("--id={id}"),
                format!("--sc={sc_private_address}"),
                "--public-address=127.0.0.1:0".into(),
                "--private-address=127.0.0.1:0".into(),
                "--metrics-address=127.0.0.1:0".into(),
                format!("--data-dir={}", config.data_dir.display()),
                format!("--ready-file={}", ready_file.display()),
                // A deleted topic's files go at once (the suite deletes each topic it is done
                // with).
                "--deleted-retention-ms=0".into(),
                // Unpaced: the suite waits for the removal between runs anyway.
                "--delete-bytes-per-second=0".into(),
            ];
            arguments.extend(config.cores.map(|cores| format!("--cores={cores}")));
            arguments.extend(config.spu_flags.iter().cloned());
            let log = logs.join(format!("spu-{id}.log"));
            let process = ChildGuard(None);
            local.spus.push(SpuChild { id, process, arguments, ready_file, log });
        }
        // Started one after another, each waited for: the SC registers them in order.
        for index in 0..local.spus.len() {
            let public = local.launch_spu(index)?;
            if index == 0 {
                local.spu_public_address = public;
            }
        }
        for index in 0..local.spus.len() {
            let spu = &mut local.spus[index];
            wait_online(&cluster, spu.id, &mut spu.process, &spu.log)?;
        }
        Ok(local)
    }

    /// Starts SPU `index` of `spus` (again) and waits for its ready file; returns its public
    /// address.
    fn launch_spu(&mut self, index: usize) -> Result<String, PerfError> {
        let spu = &mut self.spus[index];
        // A file left by the previous life would be read as this one's.
        let _ = std::fs::remove_file(&spu.ready_file);
        spu.process = spawn(&self.spu_program, &spu.arguments, &spu.log)?;
        let lines = wait_ready_file(&mut spu.process, &spu.ready_file, &spu.log)?;
        ready_value(&lines, "public", &spu.ready_file)
    }

    fn spu_index(&self, id: i32) -> Result<usize, PerfError> {
        self.spus.iter().position(|spu| spu.id == id).ok_or_else(|| {
            PerfError::InvalidParameters(format!("no SPU {id} in this local cluster"))
        })
    }

    /// Ids of the SPUs.
    pub fn spu_ids(&self) -> Vec<i32> {
        self.spus.iter().map(|spu| spu.id).collect()
    }

    /// `kill -9` of SPU `id` (by its handle), and reaps it.
    pub fn kill_spu(&mut self, id: i32) -> Result<(), PerfError> {
        let index = self.spu_index(id)?;
        if let Some(mut child) = self.spus[index].process.0.take() {
            child.kill().map_err(|error| PerfError::io(format!("kill SPU {id}"), error))?;
            let _ = child.wait();
        }
        Ok(())
    }

    /// Sends `signal` to SPU `id` if it runs (`SIGSTOP`, `SIGCONT`).
    pub fn signal_spu(&mut self, id: i32, signal: libc::c_int) -> Result<(), PerfError> {
        let pid = self.spu_pid_of(id)?;
        let pid = libc::pid_t::try_from(pid).map_err(|_| {
            PerfError::InvalidParameters(format!("SPU {id}'s pid {pid} is out of range"))
        })?;
        // SAFETY: kill(2) on the pid of a child this cluster owns and has not reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let error = std::io::Error::last_os_error();
            return Err(PerfError::io(format!("signal {signal} to SPU {id}"), error));
        }
        Ok(())
    }

    /// Starts SPU `id` again on its data (killing it first if it still runs) and waits for its
    /// ready file. Whether it is online and caught up is for the caller to wait for.
    pub fn restart_spu(&mut self, id: i32) -> Result<(), PerfError> {
        self.kill_spu(id)?;
        let index = self.spu_index(id)?;
        self.launch_spu(index).map(drop)
    }

    /// PID of SPU `id`, if it runs.
    pub fn spu_pid_of(&self, id: i32) -> Result<u32, PerfError> {
        let index = self.spu_index(id)?;
        let child = self.spus[index].process.0.as_ref();
        child
            .map(std::process::Child::id)
            .ok_or_else(|| PerfError::InvalidParameters(format!("SPU {id} is not running")))
    }

    /// Deletes `topics` and waits until the SPU has removed their files (it does so at once
    /// in a suite cluster) and the file system has committed the removal, so that the next
    /// run neither lacks the space nor pays for freeing it: on a volume mounted with
    /// `discard` the blocks are trimmed at the journal commit, which delays every fdatasync
    /// behind it. A topic that is already gone is fine.
    pub fn delete_topics(&self, topics: &[&str]) -> Result<(), PerfError> {
        let cluster = Cluster::connect(ClientConfig::new(&self.sc_public_address))?;
        for topic in topics {
            match cluster.admin().delete_topic(topic) {
                Ok(()) | Err(ClientError::Server { code: ErrorCode::TopicNotFound, .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let directories: Vec<PathBuf> =
            self.spus.iter().map(|spu| self.data_dir.join(format!("spu-{}", spu.id))).collect();
        let prefixes: Vec<String> = topics.iter().map(|topic| format!("{topic}-")).collect();
        let deadline = Instant::now() + DELETE_TIMEOUT;
        loop {
            let mut left = false;
            for replicas in &directories {
                let entries = match std::fs::read_dir(replicas) {
                    Ok(entries) => entries,
                    // An SPU that hosts no replica yet may not have made its directory.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => {
                        return Err(PerfError::io(format!("list {}", replicas.display()), error))
                    }
                };
                left |= entries.flatten().any(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    prefixes.iter().any(|prefix| name.starts_with(prefix.as_str()))
                });
            }
            if !left {
                break;
            }
            if Instant::now() >= deadline {
                return Err(PerfError::Timeout(format!(
                    "the SPUs did not remove the files of {topics:?} from {} within {}s",
                    self.data_dir.display(),
                    DELETE_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // All SPUs share the data directory's file system: one syncfs covers them.
        let directory = File::open(&self.data_dir)
            .map_err(|error| PerfError::io(format!("open {}", self.data_dir.display()), error))?;
        // SAFETY: syncfs on a descriptor this function owns.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&directory)) } != 0 {
            let error = std::io::Error::last_os_error();
            return Err(PerfError::io(format!("syncfs {}", self.data_dir.display()), error));
        }
        Ok(())
    }

    /// PIDs of the SC and the running SPUs (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(&self.sc)
            .chain(self.spus.iter().map(|spu| &spu.process))
            .filter_map(|guard| guard.0.as_ref().map(std::process::Child::id))
            .collect()
    }

    /// PID of the SC.
    pub fn sc_pid(&self) -> Option<u32> {
        self.sc.0.as_ref().map(std::process::Child::id)
    }

    /// PID of the first SPU.
    pub fn spu_pid(&self) -> Option<u32> {
        self.spus.first().and_then(|spu| spu.process.0.as_ref()).map(std::process::Child::id)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // SPUs first: they would otherwise spend their last moments reconnecting to the SC. A
        // stopped SPU is killed as well (SIGKILL needs no SIGCONT).
        for spu in &mut self.spus {
            drop(spu.process.0.take().map(ChildGuard::new));
        }
        drop(self.sc.0.take().map(ChildGuard::new));
    }
}

/// Finds `name`: `$environment`, `directory/name`, next to this executable or one level up,
/// then `PATH`. The error says how to build it.
pub fn find_binary(
    name: &str,
    environment: &str,
    directory: Option<&Path>,
) -> Result<PathBuf, PerfError> {
    if let Some(path) = std::env::var_os(environment) {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> =
        directory.map(|directory| directory.join(name)).into_iter().collect();
    if let Ok(executable) = std::env::current_exe() {
        let parent = executable.parent().map(Path::to_path_buf);
        candidates.extend(parent.iter().map(|parent| parent.join(name)));
        candidates.extend(parent.as_deref().and_then(Path::parent).map(|up| up.join(name)));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|directory| directory.join(name)));
    }
    candidates.into_iter().find(|candidate| candidate.is_file()).ok_or_else(|| {
        PerfError::tool(
            name,
            format!(
                "not found (set {environment}, or build it next to sluice-perf: `cargo build \
                 --release -p sluice-sc -p sluice-spu -p sluice-perf`)"
            ),
        )
    })
}

fn spawn(program: &Path, arguments: &[String], log: &Path) -> Result<ChildGuard, PerfError> {
    // Appended to: a restarted SPU's log keeps its previous life.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|error| PerfError::io(format!("create {}", log.display()), error))?;
    let log_clone = log_file
        .try_clone()
        .map_err(|error| PerfError::io(format!("reopen {}", log.display()), error))?;
    let child = Command::new(program)
        .args(arguments)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(log_clone)
        .stderr(log_file)
        .spawn()
        .map_err(|error| PerfError::io(format!("start {}", program.display()), error))?;
    Ok(ChildGuard::new(child))
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn check_alive(child: &mut ChildGuard, log: &Path) -> Result<(), PerfError> {
    if let Some(process) = child.child() {
        if let Ok(Some(status)) = process.try_wait() {
            return Err(PerfError::tool(
                log.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default(),
                format!("exited ({status}); the end of {}:\n{}", log.display(), log_tail(log, 20)),
            ));
        }
    }
    Ok(())
}

fn wait_ready_file(
    child: &mut ChildGuard,
    ready_file: &Path,
    log: &Path,
) -> Result<Vec<(String, String)>, PerfError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready_file) {
            return Ok(text
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .collect());
        }
        check_alive(child, log)?;
        if Instant::now() >= deadline {
            return Err(PerfError::Timeout(format!(
                "no {} within {START_TIMEOUT:?}; the end of {}:\n{}",
                ready_file.display(),
                log.display(),
                log_tail(log, 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `key=` of a ready file, with an unspecified IP (0.0.0.0) made connectable.
fn ready_value(lines: &[(String, String)], key: &str, file: &Path) -> Result<String, PerfError> {
    let value =
        lines.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone()).ok_or_else(
            || PerfError::parse(file.display().to_string(), format!("no `{key}=` line")),
        )?;
    Ok(value.replace("0.0.0.0", "127.0.0.1"))
}

fn create_spu_group(cluster: &Cluster, data_dir: &Path, spus: i32) -> Result<(), PerfError> {
    let spec = SpuGroupSpec {
        replicas: u16::try_from(spus).unwrap_or(u16::MAX),
        first_id: SpuId(FIRST_SPU_ID),
        rack: None,
        storage: StorageConfig { log_dir: Some(data_dir.display().to_string()), size_bytes: None },
    };
    match cluster.admin().create_spu_group(SPU_GROUP, spec) {
        Ok(()) | Err(ClientError::Server { code: ErrorCode::SpuGroupAlreadyExists, .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn wait_online(
    cluster: &Cluster,
    id: i32,
    spu: &mut ChildGuard,
    log: &Path,
) -> Result<(), PerfError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let spus = cluster.admin().list_spus()?;
        if spus.iter().any(|entry| entry.spec.id == SpuId(id) && entry.status.is_online()) {
            return Ok(());
        }
        check_alive(spu, log)?;
        if Instant::now() >= deadline {
            return Err(PerfError::Timeout(format!(
                "SPU {id} not online within {START_TIMEOUT:?}; the end of {}:\n{}",
                log.display(),
                log_tail(log, 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
