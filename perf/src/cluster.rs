//! A local cluster of real processes for the suite and the tests: one `sluice-sc` with the
//! embedded store and one `sluice-spu` (all cores by default), on OS-chosen loopback ports,
//! data under one directory. The SPU joins through an SPU group (`perf`, id 1), so it registers
//! the endpoints it actually bound.
//!
//! Ownership: [`LocalCluster`] owns both children and kills them by handle when dropped (SPU
//! first). Logs go to `<data-dir>/logs/{sc,spu-1}.log`; a failed start quotes their tail.
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
/// Id of the SPU.
const SPU_ID: i32 = 1;

/// Settings of a local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    /// Root of everything the cluster writes.
    pub data_dir: PathBuf,
    /// SPU cores [default: all].
    pub cores: Option<u32>,
    /// Where `sluice-sc` and `sluice-spu` are.
    pub bin_dir: Option<PathBuf>,
}

/// A running SC and SPU; killed on drop.
#[derive(Debug)]
pub struct LocalCluster {
    spu: ChildGuard,
    sc: ChildGuard,
    /// The SC's public address (for clients).
    pub sc_public_address: String,
    /// The SPU's public address.
    pub spu_public_address: String,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl LocalCluster {
    /// Starts the SC, creates the SPU group, starts the SPU and waits until it is online.
    pub fn start(config: &LocalClusterConfig) -> Result<LocalCluster, PerfError> {
        let sc_program = find_binary("sluice-sc", "SLUICE_SC_BIN", config.bin_dir.as_deref())?;
        let spu_program = find_binary("sluice-spu", "SLUICE_SPU_BIN", config.bin_dir.as_deref())?;
        let logs = config.data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|error| PerfError::io(format!("create {}", logs.display()), error))?;
        let sc_ready = config.data_dir.join("sc.ready");
        let mut sc = spawn(
            &sc_program,
            &[
                "--public-address=127.0.0.1:0".into(),
                "--private-address=127.0.0.1:0".into(),
                format!("--data-dir={}", config.data_dir.join("sc").display()),
                format!("--ready-file={}", sc_ready.display()),
            ],
            &logs.join("sc.log"),
        )?;
        let sc_lines = wait_ready_file(&mut sc, &sc_ready, &logs.join("sc.log"))?;
        let sc_public_address = ready_value(&sc_lines, "public", &sc_ready)?;
        let sc_private_address = ready_value(&sc_lines, "private", &sc_ready)?;
        let cluster = Cluster::connect(ClientConfig::new(&sc_public_address))?;
        create_spu_group(&cluster, &config.data_dir)?;
        let spu_ready = config.data_dir.join("spu-1.ready");
        let mut arguments = vec![
            format!("--id={SPU_ID}"),
            format!("--sc={sc_private_address}"),
            "--public-address=127.0.0.1:0".into(),
            "--private-address=127.0.0.1:0".into(),
            "--metrics-address=127.0.0.1:0".into(),
            format!("--data-dir={}", config.data_dir.display()),
            format!("--ready-file={}", spu_ready.display()),
            // A deleted topic's files go at once (the suite deletes each topic it is done with).
            "--deleted-retention-ms=0".into(),
            // Unpaced: the suite waits for the removal between runs anyway.
            "--delete-bytes-per-second=0".into(),
        ];
        arguments.extend(config.cores.map(|cores| format!("--cores={cores}")));
        let spu_log = logs.join("spu-1.log");
        let mut spu = spawn(&spu_program, &arguments, &spu_log)?;
        let spu_lines = wait_ready_file(&mut spu, &spu_ready, &spu_log)?;
        let spu_public_address = ready_value(&spu_lines, "public", &spu_ready)?;
        wait_online(&cluster, &mut spu, &spu_log)?;
        Ok(LocalCluster {
            spu,
            sc,
            sc_public_address,
            spu_public_address,
            data_dir: config.data_dir.clone(),
        })
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
        let replicas = self.data_dir.join(format!("spu-{SPU_ID}"));
        let prefixes: Vec<String> = topics.iter().map(|topic| format!("{topic}-")).collect();
        let deadline = Instant::now() + DELETE_TIMEOUT;
        loop {
            let entries = std::fs::read_dir(&replicas)
                .map_err(|error| PerfError::io(format!("list {}", replicas.display()), error))?;
            let left = entries.flatten().any(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                prefixes.iter().any(|prefix| name.starts_with(prefix.as_str()))
            });
            if !left {
                break;
            }
            if Instant::now() >= deadline {
                return Err(PerfError::Timeout(format!(
                    "the SPU did not remove the files of {topics:?} from {} within {}s",
                    replicas.display(),
                    DELETE_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let directory = File::open(&replicas)
            .map_err(|error| PerfError::io(format!("open {}", replicas.display()), error))?;
        // SAFETY: syncfs on a descriptor this function owns.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&directory)) } != 0 {
            let error = std::io::Error::last_os_error();
            return Err(PerfError::io(format!("syncfs {}", replicas.display()), error));
        }
        Ok(())
    }

    /// PIDs of the SC and the SPU (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        [&self.sc, &self.spu].iter().filter_map(|guard| guard.0.as_ref().map(|c| c.id())).collect()
    }

    /// PID of the SPU.
    pub fn spu_pid(&self) -> Option<u32> {
        self.spu.0.as_ref().map(|child| child.id())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // The SPU first: it would otherwise spend its last moments reconnecting to the SC.
        drop(self.spu.0.take().map(ChildGuard::new));
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
    let log_file = File::create(log)
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

fn create_spu_group(cluster: &Cluster, data_dir: &Path) -> Result<(), PerfError> {
    let spec = SpuGroupSpec {
        replicas: 1,
        first_id: SpuId(SPU_ID),
        rack: None,
        storage: StorageConfig { log_dir: Some(data_dir.display().to_string()), size_bytes: None },
    };
    match cluster.admin().create_spu_group(SPU_GROUP, spec) {
        Ok(()) | Err(ClientError::Server { code: ErrorCode::SpuGroupAlreadyExists, .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn wait_online(cluster: &Cluster, spu: &mut ChildGuard, log: &Path) -> Result<(), PerfError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let spus = cluster.admin().list_spus()?;
        if spus.iter().any(|entry| entry.spec.id == SpuId(SPU_ID) && entry.status.is_online()) {
            return Ok(());
        }
        check_alive(spu, log)?;
        if Instant::now() >= deadline {
            return Err(PerfError::Timeout(format!(
                "SPU {SPU_ID} not online within {START_TIMEOUT:?}; the end of {}:\n{}",
                log.display(),
                log_tail(log, 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
