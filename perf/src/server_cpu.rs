//! CPU seconds and memory of the server processes (SC, SPUs) over a run, from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`.
//!
//! A run samples every watched process at its start and end; the difference of `utime + stime`
//! is the CPU the server spent serving it. A process that exits during the run keeps its start
//! sample and reports what it had used when last seen. PIDs come from `--server-pid` or from a
//! local cluster's state file (`cluster.json`: every numeric `pid` field anywhere in it).

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::PerfError;

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set, in bytes.
    pub resident_bytes: u64,
}

/// Fields of `/proc/<pid>/stat` a report uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFields {
    /// The command name (`comm`, without its parentheses).
    pub command: String,
    /// User CPU time, clock ticks.
    pub user_ticks: u64,
    /// System CPU time, clock ticks.
    pub system_ticks: u64,
    /// Resident set, pages.
    pub resident_pages: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain spaces and parentheses,
/// so the fields are counted from the *last* `)`.
pub fn parse_stat(text: &str) -> Result<StatFields, PerfError> {
    let bad = |message: &str| PerfError::parse("/proc/<pid>/stat", message);
    let open = text.find('(').ok_or_else(|| bad("no '('"))?;
    let close = text.rfind(')').ok_or_else(|| bad("no ')'"))?;
    if close < open {
        return Err(bad("')' before '('"));
    }
    let command = text[open + 1..close].to_owned();
    // After ")": field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |number: usize| -> Result<u64, PerfError> {
        fields
            .get(number - 3)
            .ok_or_else(|| bad(&format!("no field {number}")))?
            .parse::<u64>()
            .map_err(|error| bad(&format!("field {number}: {error}")))
    };
    Ok(StatFields {
        command,
        user_ticks: field(14)?,
        system_ticks: field(15)?,
        resident_pages: field(24)?,
    })
}

/// `VmHWM` (peak resident set) of `/proc/<pid>/status`, in bytes.
pub fn parse_peak_resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if bytes > 0 {
        bytes as u64
    } else {
        4096
    }
}

/// Reads process `pid` now; `None` when it is gone.
pub fn sample(pid: u32) -> Option<(String, ProcessSample)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = parse_stat(&text).ok()?;
    Some((
        fields.command,
        ProcessSample {
            cpu_ticks: fields.user_ticks + fields.system_ticks,
            resident_bytes: fields.resident_pages * page_bytes(),
        },
    ))
}

/// What one server process used over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// Process id.
    pub pid: u32,
    /// Command name (`sluice-spu`, `sluice-sc`, ...).
    pub command: String,
    /// CPU seconds (user + system) spent during the run.
    pub cpu_seconds: f64,
    /// CPU seconds per wall-clock second of the run (1.0 = one core busy).
    pub cpu_cores_busy: f64,
    /// Resident set at the end of the run, bytes.
    pub resident_bytes_end: u64,
    /// Peak resident set over the process's life (VmHWM), bytes.
    pub resident_bytes_peak: u64,
}

/// Watches a set of server processes across a run.
#[derive(Debug)]
pub struct ServerWatch {
    started_at: Instant,
    start: Vec<(u32, String, ProcessSample)>,
}

impl ServerWatch {
    /// Samples `pids` now (processes already gone are left out).
    pub fn start(pids: &[u32]) -> ServerWatch {
        let start = pids
            .iter()
            .filter_map(|&pid| sample(pid).map(|(command, sample)| (pid, command, sample)))
            .collect();
        ServerWatch { started_at: Instant::now(), start }
    }

    /// Samples again and returns each process's use since [`ServerWatch::start`].
    pub fn finish(&self) -> Vec<ProcessUsage> {
        let wall_seconds = self.started_at.elapsed().as_secs_f64().max(1e-9);
        let ticks_per_second = clock_ticks_per_second() as f64;
        self.start
            .iter()
            .map(|(pid, command, first)| {
                let last = sample(*pid).map(|(_, sample)| sample).unwrap_or(*first);
                let cpu_seconds =
                    last.cpu_ticks.saturating_sub(first.cpu_ticks) as f64 / ticks_per_second;
                let peak = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|status| parse_peak_resident_bytes(&status))
                    .unwrap_or(last.resident_bytes);
                ProcessUsage {
                    pid: *pid,
                    command: command.clone(),
                    cpu_seconds,
                    cpu_cores_busy: cpu_seconds / wall_seconds,
                    resident_bytes_end: last.resident_bytes,
                    resident_bytes_peak: peak,
                }
            })
            .collect()
    }
}

/// Every numeric `pid` field anywhere in a cluster state file (`<data-dir>/cluster.json`).
pub fn pids_from_state_file(path: &Path) -> Result<Vec<u32>, PerfError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| PerfError::io(format!("read {}", path.display()), error))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| PerfError::parse(path.display().to_string(), error.to_string()))?;
    let mut pids = Vec::new();
    collect_pids(&value, &mut pids);
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn collect_pids(value: &serde_json::Value, pids: &mut Vec<u32>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                match child.as_u64() {
                    Some(pid) if key == "pid" => pids.extend(u32::try_from(pid).ok()),
                    _ => collect_pids(child, pids),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_pids(item, pids)),
        _ => {}
    }
}

/// The default local cluster state file, `~/.sluice/local/cluster.json`, if it exists.
pub fn default_state_file() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".sluice/local/cluster.json");
    path.exists().then_some(path)
}
