//! Harness of the deployment tests: the real `sluice-sc` and `sluice-spu` binaries (next to
//! `sluice`), started with configuration files and flags, owned by a guard that kills them on
//! drop, stopped with SIGTERM by their handle; files and HTTP endpoints waited on with
//! deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a process to be ready or to stop, and for a condition.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two looks at a condition.
const POLL: Duration = Duration::from_millis(50);

/// The directory of the binaries under test.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_sluice")).parent().expect("a binary directory").to_path_buf()
}

/// A binary next to `sluice` (fails clearly when it was not built).
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p sluice-sc -p sluice-spu` with the same \
         CARGO_TARGET_DIR and profile)",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A server process, killed (SIGKILL) on drop unless it already exited.
pub struct Server {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `program` with `args`, its output in `dir/<name>.log`.
    pub fn start(name: &str, program: &Path, args: &[String], dir: &Path) -> Server {
        Self::start_with_env(name, program, args, dir, &[])
    }

    /// As [`Self::start`], with extra environment variables.
    pub fn start_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        let log = dir.join(format!("{name}.log"));
        let output = std::fs::File::create(&log).expect("create the log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone the log file"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        Server { name: name.to_owned(), child, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the process exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{} exited ({status}); log:\n{}", self.name, self.log());
        }
    }

    /// Waits until `condition` holds, failing early (with the log) if the process exits.
    pub fn wait_until(&mut self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !condition() {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({}); log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM {pid}");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{} did not stop within {DEADLINE:?} of SIGTERM; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `key=value` lines of a ready file (empty while it does not exist).
pub fn ready_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// `GET path` on `address` (HTTP/1.0): the status code and the body; `None` when the
/// connection fails.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Runs `sluice` with `args` and extra environment; panics with its output unless it succeeds.
pub fn sluice_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SLUICE_SC")
        .stdin(Stdio::null())
        .output()
        .expect("run sluice");
    assert!(
        output.status.success(),
        "sluice {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A running SC (embedded or Consul store) and the addresses of its ready file.
pub struct Sc {
    pub server: Server,
    pub public: String,
    pub private: String,
    pub metrics: String,
}

/// Starts `sluice-sc` with `config` (if any) and flags binding 127.0.0.1 on OS-chosen ports,
/// then `extra` flags; waits until its ready file says it is active.
pub fn start_sc(dir: &Path, config: Option<&Path>, extra: &[&str], env: &[(&str, &str)]) -> Sc {
    let ready = dir.join("sc.ready");
    let mut args: Vec<String> = Vec::new();
    if let Some(config) = config {
        args.extend(["--config".into(), config.display().to_string()]);
    }
    for (flag, value) in [
        ("--public-address", "127.0.0.1:0".to_owned()),
        ("--private-address", "127.0.0.1:0".to_owned()),
        ("--metrics-address", "127.0.0.1:0".to_owned()),
        ("--data-dir", dir.join("sc-data").display().to_string()),
        ("--ready-file", ready.display().to_string()),
    ] {
        args.extend([flag.to_owned(), value]);
    }
    args.extend(extra.iter().map(|flag| (*flag).to_owned()));
    let mut server = Server::start_with_env("sc", &binary("sluice-sc"), &args, dir, env);
    server.wait_until("the SC to be active", || {
        ready_file(&ready).get("role").is_some_and(|role| role == "active")
    });
    let lines = ready_file(&ready);
    Sc {
        server,
        public: lines["public"].clone(),
        private: lines["private"].clone(),
        metrics: lines["metrics"].clone(),
    }
}

/// A running SPU and the addresses of its ready file.
pub struct Spu {
    pub server: Server,
    pub public: String,
    pub metrics: String,
}

/// Starts `sluice-spu --cores 1` with `config` (if any), OS-chosen ports on 127.0.0.1, its
/// data in `dir`, then `extra` flags; waits until its ready file exists (registered with the
/// SC).
pub fn start_spu(dir: &Path, name: &str, config: Option<&Path>, extra: &[&str]) -> Spu {
    let ready = dir.join(format!("{name}.ready"));
    let mut args: Vec<String> = Vec::new();
    if let Some(config) = config {
        args.extend(["--config".into(), config.display().to_string()]);
    }
    for (flag, value) in [
        ("--cores", "1".to_owned()),
        ("--public-address", "127.0.0.1:0".to_owned()),
        ("--private-address", "127.0.0.1:0".to_owned()),
        ("--metrics-address", "127.0.0.1:0".to_owned()),
        ("--free-bytes-min", "0".to_owned()),
        ("--data-dir", dir.join(format!("{name}-data")).display().to_string()),
        ("--ready-file", ready.display().to_string()),
    ] {
        args.extend([flag.to_owned(), value]);
    }
    args.extend(extra.iter().map(|flag| (*flag).to_owned()));
    let mut server = Server::start(name, &binary("sluice-spu"), &args, dir);
    server.wait_until("the SPU to register with the SC", || ready.is_file());
    let lines = ready_file(&ready);
    Spu { server, public: lines["public"].clone(), metrics: lines["metrics"].clone() }
}

/// Creates an SPU group of one managed SPU with id `id`, so an SPU started with that id on
/// any ports is accepted.
pub fn spu_group(sc: &str, id: i32) {
    let id = id.to_string();
    sluice_ok(&["--sc", sc, "spu-group", "create", "g", "--replicas", "1", "--first-id", &id], &[]);
}
