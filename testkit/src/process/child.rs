//! One owned child process: started so that it dies with the test, killed (and reaped) by its
//! handle when dropped, stopped with SIGTERM by its pid; never found or killed by its name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::wait::{POLL_INTERVAL, READY_TIMEOUT};

/// A signal a test sends to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGSTOP: the process freezes (a long GC pause, a hung host).
    Stop,
    /// SIGCONT: a stopped process goes on.
    Continue,
    /// SIGTERM: a clean shutdown.
    Terminate,
    /// SIGKILL: a crash.
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Stop => libc::SIGSTOP,
            Signal::Continue => libc::SIGCONT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// How a process ended after [`OwnedChild::terminate`].
#[derive(Clone, Copy, Debug)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// From SIGTERM to its exit.
    pub elapsed: Duration,
}

/// Where a server's standard output and error go.
#[derive(Clone, Debug, Default)]
pub enum Output {
    /// Standard error to the test's (nextest shows it for a failing test), standard output
    /// dropped.
    #[default]
    Inherit,
    /// Both into this file, which [`OwnedChild::log`] reads and failures quote.
    File(PathBuf),
}

/// A child process owned by the test.
#[derive(Debug)]
pub struct OwnedChild {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl OwnedChild {
    /// Spawns `command` as `name` with its output sent to `output`: on an inherited stderr at
    /// the test's `RUST_LOG`, else `warn`; into a file at `info`, the lines tests read (a
    /// `RUST_LOG` already set on `command`, e.g. by a builder's `env`, wins in both cases).
    /// Its standard output is piped instead when `pipe_stdout` (a reader of what it prints
    /// must then drain it).
    pub fn spawn(name: &str, mut command: Command, output: &Output, pipe_stdout: bool) -> Self {
        let level = match output {
            Output::Inherit => std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            Output::File(_) => "info".into(),
        };
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", level);
        }
        command.stdin(Stdio::null());
        let log = match output {
            Output::Inherit => {
                command.stdout(Stdio::null()).stderr(Stdio::inherit());
                None
            }
            Output::File(path) => {
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap_or_else(|error| panic!("create {}: {error}", path.display()));
                command.stdout(file.try_clone().expect("clone the log file")).stderr(file);
                Some(path.clone())
            }
        };
        if pipe_stdout {
            command.stdout(Stdio::piped());
        }
        let child = die_with_parent(&mut command)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name} ({command:?}): {error}"));
        OwnedChild { name: name.to_owned(), child, log }
    }

    /// The name failures use (`sluice-sc`, `spu-2`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The underlying handle (to take a piped stdout).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to this process by its pid (the handle is not reaped yet, so the pid is
    /// still ours).
    pub fn signal(&self, signal: Signal) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        let sent = unsafe { libc::kill(pid, signal.number()) };
        assert_eq!(sent, 0, "{signal:?} to {} ({pid})", self.name);
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll a child").is_none()
    }

    /// `kill -9` and reap; the process stays down. Does nothing to an exited process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (at most [`READY_TIMEOUT`]) for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll a child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {READY_TIMEOUT:?}{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGTERM, then the exit (at most [`READY_TIMEOUT`] later).
    pub fn terminate(&mut self) -> Stopped {
        let started = Instant::now();
        self.signal(Signal::Terminate);
        let status = self.wait_exit();
        Stopped { status, elapsed: started.elapsed() }
    }

    /// Panics, quoting the log, when the process exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll a child") {
            panic!("{} exited ({status}){}", self.name, self.log_tail());
        }
    }

    /// Polls `condition` until it holds; fails early when the process exits and after
    /// `timeout`, quoting the log either way.
    pub fn wait_while_running(
        &mut self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} ({}){}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The output so far, when it goes to a file; empty otherwise.
    pub fn log(&self) -> String {
        self.log.as_deref().map(read_lossy).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        match &self.log {
            Some(path) => format!("; log {}:\n{}", path.display(), read_lossy(path)),
            None => String::new(),
        }
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Makes `command`'s process die with the thread that starts it: a test process that is
/// itself killed (a timeout, ^C) never runs the drop that kills its children, and orphaned
/// servers would keep running (found burning the CPUs under a later benchmark). So start
/// servers from the test's own thread, not from a helper thread that ends before them.
fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only prctl(2), async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}
