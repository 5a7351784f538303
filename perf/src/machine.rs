//! What a report says about the machine and the code it ran: CPU count and model, memory,
//! kernel, hostname, and the git commit of the workspace. Every probe degrades to "unknown"
//! instead of failing the run; these are labels, not measurements.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine a run happened on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// Online CPUs (what `--cores` defaults to for the SPU).
    pub cores: u32,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `MemTotal` from /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    /// `uname -r` (/proc/sys/kernel/osrelease).
    pub kernel: String,
    /// /proc/sys/kernel/hostname.
    pub hostname: String,
}

impl MachineInfo {
    /// Probes this machine.
    pub fn probe() -> MachineInfo {
        let cores =
            std::thread::available_parallelism().map(|cores| cores.get() as u32).unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        MachineInfo {
            cores,
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            memory_bytes: memory_total_bytes(&meminfo).unwrap_or(0),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            hostname: read_trimmed("/proc/sys/kernel/hostname"),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The first `model name` of /proc/cpuinfo's text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// `MemTotal` of /proc/meminfo's text, in bytes.
pub fn memory_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes * 1024)
}

/// The source the binary was built from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GitInfo {
    /// Full commit hash of HEAD, or "unknown".
    pub commit: String,
    /// Whether the working tree had changes beside HEAD.
    pub dirty: bool,
}

impl GitInfo {
    /// Reads HEAD of the workspace the binary was built in (read-only git commands).
    pub fn probe() -> GitInfo {
        GitInfo::probe_at(&workspace_root())
    }

    /// Reads HEAD of the repository at `directory`.
    pub fn probe_at(directory: &Path) -> GitInfo {
        let git = |args: &[&str]| -> Option<String> {
            let output = Command::new("git").arg("-C").arg(directory).args(args).output().ok()?;
            output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        };
        let commit = git(&["rev-parse", "HEAD"]).map(|text| text.trim().to_owned());
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|text| !text.trim().is_empty());
        GitInfo { commit: commit.unwrap_or_else(|| "unknown".into()), dirty }
    }

    /// The first 12 characters of the commit (for file names).
    pub fn short_commit(&self) -> &str {
        &self.commit[..self.commit.len().min(12)]
    }
}

/// The workspace this crate was compiled in (the parent of `perf/`).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
