//! Test harness: the real `sluice-sc` binary on OS-chosen ports with a temporary data dir,
//! killed by its `Child` handle when the guard drops.

#![allow(dead_code)]

pub mod test_spu;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_sc::admin_client::AdminClient;

/// Longest wait for the SC to report its addresses.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for an eventually true condition.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for an SC to become active: a crashed predecessor's Consul session expires one
/// to two TTLs (10 s) after its last renewal, then the lock delay (1 s) passes.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `sluice-sc`; killed on drop.
pub struct ScProcess {
    child: Child,
    pub public_address: SocketAddr,
    pub private_address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub data_dir: PathBuf,
    ready_file: PathBuf,
}

/// The `role=` line of a ready file.
fn role_of(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("role="))
}

impl ScProcess {
    /// Starts an SC on `data_dir` with extra flags and waits until it is listening and active.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ScProcess {
        let sc = Self::start_any(data_dir, extra);
        sc.wait_active();
        sc
    }

    /// Starts an SC and waits until it is listening, active or standby (see [`Self::is_active`]).
    pub fn start_any(data_dir: &Path, extra: &[&str]) -> ScProcess {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let sequence = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ready_file =
            data_dir.with_extension(format!("ready-{}-{sequence}", std::process::id()));
        let _ = std::fs::remove_file(&ready_file);
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-sc"));
        command
            .arg("--public-address=127.0.0.1:0")
            .arg("--private-address=127.0.0.1:0")
            .arg("--metrics-address=127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--ready-file")
            .arg(&ready_file)
            .args(extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = die_with_parent(&mut command).spawn().expect("spawn sluice-sc");
        let deadline = Instant::now() + READY_TIMEOUT;
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                break text;
            }
            if let Some(status) = child.try_wait().expect("poll sluice-sc") {
                panic!("sluice-sc exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "sluice-sc not ready within {READY_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let address = |name: &str| -> SocketAddr {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} address in {text:?}"))
                .parse()
                .expect("address")
        };
        ScProcess {
            public_address: address("public"),
            private_address: address("private"),
            metrics_address: address("metrics"),
            child,
            data_dir: data_dir.to_owned(),
            ready_file,
        }
    }

    /// Whether the ready file says `role=active` now.
    pub fn is_active(&self) -> bool {
        let text = std::fs::read_to_string(&self.ready_file).unwrap_or_default();
        role_of(&text) == Some("active")
    }

    /// Waits until the ready file says `role=active` (a standby rewrites it on takeover).
    pub fn wait_active(&self) {
        wait_for_within("the SC to be active", TAKEOVER_TIMEOUT, || self.is_active().then_some(()));
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([&format!("-{name}"), &pid]).status().expect("kill");
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit by itself; returns whether it exited successfully.
    pub fn wait_exit(&mut self) -> bool {
        let status = wait_for("the SC to exit", || self.child.try_wait().expect("poll sluice-sc"));
        status.success()
    }

    /// An admin client connected to this SC.
    pub fn client(&self) -> AdminClient {
        AdminClient::connect(self.public_address).expect("connect to the SC")
    }

    /// `kill -9`, then wait for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().expect("kill sluice-sc");
        self.child.wait().expect("reap sluice-sc");
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll sluice-sc") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "sluice-sc did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ScProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` until it returns `Some`, or panics with `what` after the deadline.
pub fn wait_for<T>(what: &str, condition: impl FnMut() -> Option<T>) -> T {
    wait_for_within(what, CONDITION_TIMEOUT, condition)
}

/// [`wait_for`] with another deadline.
pub fn wait_for_within<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes `command`'s process die with the thread that starts it: a test process that is
/// itself killed (a timeout, ^C) never runs the drop that kills its children, and orphaned
/// servers would keep running (found burning the CPUs under a later benchmark).
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

/// Status code and body of `method path`.
pub fn http(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(CONDITION_TIMEOUT)).unwrap();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    (status, body)
}
