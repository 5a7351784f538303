//! What a report says about the machine and the code it ran: CPU count and model, memory,
//! kernel, hostname, and the git commit of the workspace. Every probe degrades to "unknown"
//! instead of failing the run; these are labels, not measurements.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Jiffies of the `cpu` line of `/proc/stat` (all CPUs together), in its order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

/// Parses the `cpu` line of `/proc/stat` (`None` when it is missing or short).
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> =
        line.split_whitespace().skip(1).map(|value| value.parse().ok()).collect::<Option<_>>()?;
    let value = |index: usize| values.get(index).copied();
    Some(CpuTimes {
        user: value(0)?,
        nice: value(1)?,
        system: value(2)?,
        idle: value(3)?,
        iowait: value(4)?,
        irq: value(5)?,
        softirq: value(6)?,
        steal: value(7).unwrap_or(0),
    })
}

impl CpuTimes {
    /// This machine's counters now (`None` without a readable /proc/stat).
    pub fn sample() -> Option<CpuTimes> {
        parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Where the time between `self` and `later` went, in percent of all CPUs' time.
    pub fn usage_until(&self, later: &CpuTimes) -> Option<MachineCpu> {
        let delta = |from: u64, to: u64| to.saturating_sub(from) as f64;
        let user = delta(self.user + self.nice, later.user + later.nice);
        let system = delta(self.system, later.system);
        let idle = delta(self.idle, later.idle);
        let iowait = delta(self.iowait, later.iowait);
        let interrupts = delta(self.irq + self.softirq, later.irq + later.softirq);
        let steal = delta(self.steal, later.steal);
        let total = user + system + idle + iowait + interrupts + steal;
        let percent = |part: f64| 100.0 * part / total;
        (total > 0.0).then(|| MachineCpu {
            user_percent: percent(user),
            system_percent: percent(system),
            interrupts_percent: percent(interrupts),
            iowait_percent: percent(iowait),
            idle_percent: percent(idle),
            steal_percent: percent(steal),
        })
    }
}

/// Where the machine's CPU time went during a run, in percent of all CPUs' time (from
/// `/proc/stat`). `steal` is time the hypervisor gave to others while this machine wanted to
/// run: a run with much of it measured a busy host, not Sluice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineCpu {
    /// User time (nice included).
    pub user_percent: f64,
    /// System time.
    pub system_percent: f64,
    /// Hard and soft interrupts.
    pub interrupts_percent: f64,
    /// Idle waiting for I/O.
    pub iowait_percent: f64,
    /// Idle.
    pub idle_percent: f64,
    /// Taken by the hypervisor.
    pub steal_percent: f64,
}

/// A `steal_percent` above this marks a run as disturbed by the host.
pub const STEAL_PERCENT_DISTURBED: f64 = 5.0;

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
