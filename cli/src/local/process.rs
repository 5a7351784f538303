//! Operating-system side of the local cluster: finding the `sluice-sc` / `sluice-spu` binaries,
//! raising the locked-memory limit, spawning detached children with their logs in files, and
//! recognizing, signalling and waiting for processes by recorded PID.
//!
//! A recorded PID is trusted only together with the process start time read from
//! `/proc/<pid>/stat` when it was spawned: after a reboot or PID reuse the same number names
//! another process, and that one is never signalled. A zombie counts as gone (its parent, often
//! init, reaps it when it gets to it).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How often a wait re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes of a log file's tail shown when a process fails to start.
const LOG_TAIL_BYTES: u64 = 4096;

/// A program the launcher starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// `sluice-sc`.
    Sc,
    /// `sluice-spu`.
    Spu,
}

impl Program {
    /// The binary's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Program::Sc => "sluice-sc",
            Program::Spu => "sluice-spu",
        }
    }

    fn override_variable(self) -> &'static str {
        match self {
            Program::Sc => "SLUICE_SC_BIN",
            Program::Spu => "SLUICE_SPU_BIN",
        }
    }
}

/// Finds a binary: the override variable, then next to this executable, then PATH.
pub fn find_program(program: Program) -> anyhow::Result<PathBuf> {
    let variable = program.override_variable();
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{variable}={} does not name a file; fix or unset it", path.display());
        }
        return Ok(path);
    }
    let name = program.file_name();
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file());
    if let Some(path) = beside {
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|path| path.is_file())
    });
    on_path.with_context(|| {
        format!(
            "cannot find `{name}`: it is neither next to `sluice` nor on PATH. Build it with \
             `cargo build --release -p {name}`, or point {variable} at it"
        )
    })
}

/// Raises this process' soft RLIMIT_MEMLOCK to its hard limit, so that the children (glommio
/// SPUs lock their I/O buffers) inherit it. Returns the limit in effect, in bytes
/// (`u64::MAX` for unlimited).
pub fn raise_memlock_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur != limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(if limit.rlim_cur == libc::RLIM_INFINITY { u64::MAX } else { limit.rlim_cur })
}

/// Spawns `program` detached from the terminal (own process group, so Ctrl-C in the shell
/// that ran `sluice` does not reach it), stdin closed, stdout and stderr appended to `log`.
pub fn spawn_detached(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log file {}", log.display()))
    };
    let stdout = open_log()?;
    let stderr = open_log()?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))
}

/// The start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22),
/// or `None` when there is no such process or it is a zombie.
pub fn start_time_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Fields 4..=22 follow the state; the start time is the 19th of them.
    fields.nth(18)?.parse().ok()
}

/// Whether the process recorded as (`pid`, `start_time`) still runs.
pub fn is_running(pid: u32, start_time: u64) -> bool {
    start_time_ticks(pid) == Some(start_time)
}

/// Sends `signal` to the recorded process if it still runs; returns whether it was sent.
pub fn signal(pid: u32, start_time: u64, signal: libc::c_int) -> bool {
    if !is_running(pid, start_time) {
        return false;
    }
    let Ok(raw_pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(raw_pid, signal) == 0 }
}

/// Waits until none of `processes` (pid, start time) runs, or the deadline passes; returns
/// those still running.
pub fn wait_all_gone(processes: &[(u32, u64)], timeout: Duration) -> Vec<(u32, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let running: Vec<(u32, u64)> =
            processes.iter().copied().filter(|(pid, start)| is_running(*pid, *start)).collect();
        if running.is_empty() || Instant::now() >= deadline {
            return running;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The last few KiB of a log file, for an error message.
pub fn log_tail(log: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(log)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => "(the log is empty)".into(),
        Ok(text) => text.trim_end().to_owned(),
        Err(error) => format!("(cannot read {}: {error})", log.display()),
    }
}

/// Reads `key=value` lines of a ready file once it exists.
pub fn read_ready_file(path: &Path) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_running() {
        let pid = std::process::id();
        let start = start_time_ticks(pid).expect("own start time");
        assert!(is_running(pid, start));
        assert!(!is_running(pid, start + 1), "a different start time is another process");
    }

    #[test]
    fn finished_child_is_gone() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert_eq!(start_time_ticks(pid), None);
    }

    #[test]
    fn memlock_limit_reaches_the_hard_limit() {
        let limit = raise_memlock_limit().expect("raise");
        let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid, writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) }, 0);
        assert_eq!(current.rlim_cur, current.rlim_max);
        assert!(limit > 0);
    }
}
