//! Test support of the CLI: runs the real `sluice` binary, and owns a local cluster started
//! with it (`sluice cluster start --local`, the command under test) in a temporary data
//! directory (stopped, and its recorded processes killed, when the guard drops). Servers a test
//! starts itself come from `sluice_testkit::process`.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `sluice` binary under test.
pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// The result of one `sluice` run.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Run {
        Run {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with both outputs unless the run succeeded.
    pub fn success(self, what: &str) -> Run {
        assert!(
            self.status.success(),
            "`{what}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", self.stdout))
    }
}

/// Runs `sluice` with `args` (no standard input), environment without SLUICE_SC.
pub fn sluice(args: &[&str]) -> Run {
    sluice_with_input(args, None)
}

/// Runs `sluice` with `args` and `input` on standard input.
pub fn sluice_with_input(args: &[&str], input: Option<&[u8]>) -> Run {
    sluice_full(args, input, &[])
}

/// Environment for the SPUs a local cluster starts: no free-space floor, since the host's
/// disk may be fuller than the default 5% floor allows (the floors have tests of their own on
/// volumes the tests fill).
pub const SPU_FLOORS_OFF: [(&str, &str); 2] =
    [("SLUICE_SPU_FREE_BYTES_MIN", "0"), ("SLUICE_SPU_FREE_SPACE_PERCENT_MIN", "0")];

/// Runs `sluice` with `args`, `input` on standard input and extra environment variables.
pub fn sluice_full(args: &[&str], input: Option<&[u8]>, envs: &[(&str, &Path)]) -> Run {
    let mut child = Command::new(sluice_bin())
        .envs(SPU_FLOORS_OFF)
        .envs(envs.iter().copied())
        .args(args)
        .env_remove("SLUICE_SC")
        .env_remove("SLUICE_DATA_DIR")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_owned();
        // Write from a thread so a child that fills its stdout cannot deadlock us.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().expect("wait for sluice");
        match writer.join().expect("writer thread") {
            // A child that fails early (e.g. no SC) exits without reading its input.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.expect("write stdin"),
        }
        return Run::from_output(output);
    }
    Run::from_output(child.wait_with_output().expect("wait for sluice"))
}

/// A process recorded in `cluster.json`.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub name: String,
    pub pid: u32,
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// A local cluster in a temporary directory; stopped on drop.
pub struct LocalCluster {
    pub data_dir: tempfile::TempDir,
}

impl LocalCluster {
    /// A cluster guard on a fresh temporary directory (nothing started yet).
    pub fn new() -> LocalCluster {
        sluice_testkit::process::require_binaries(&["sluice-sc", "sluice-spu"]);
        LocalCluster { data_dir: tempfile::tempdir().expect("temporary directory") }
    }

    pub fn dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn dir_text(&self) -> String {
        self.dir().display().to_string()
    }

    /// `sluice cluster start --local` on OS-chosen SC ports with `extra` flags.
    pub fn start(&self, extra: &[&str]) -> Run {
        let dir = self.dir_text();
        let mut args = vec![
            "cluster",
            "start",
            "--local",
            "--data-dir",
            &dir,
            "--sc-public-address",
            "127.0.0.1:0",
            "--sc-private-address",
            "127.0.0.1:0",
            "--timeout",
            "90s",
        ];
        args.extend_from_slice(extra);
        sluice(&args)
    }

    /// `cluster status -O json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let dir = self.dir_text();
        sluice(&["cluster", "status", "--data-dir", &dir, "-O", "json"])
            .success("cluster status")
            .json()
    }

    /// The SC address from `cluster status`.
    pub fn sc_address(&self) -> String {
        self.status()["sc_public_address"].as_str().expect("sc_public_address").to_owned()
    }

    /// The processes recorded in the state file (empty when there is none).
    pub fn recorded(&self) -> Vec<Recorded> {
        let Ok(text) = std::fs::read_to_string(self.dir().join("cluster.json")) else {
            return Vec::new();
        };
        let state: serde_json::Value = serde_json::from_str(&text).expect("cluster.json");
        state["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .map(|process| Recorded {
                name: match process["spu_id"].as_i64() {
                    Some(id) => format!("spu-{id}"),
                    None => "sc".into(),
                },
                pid: process["pid"].as_u64().expect("pid") as u32,
            })
            .collect()
    }

    /// `sluice cluster stop`.
    pub fn stop(&self) -> Run {
        let dir = self.dir_text();
        sluice(&["cluster", "stop", "--data-dir", &dir])
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.stop();
        // A successful stop removes the state file; whatever a failed stop left was spawned
        // for this test's directory.
        for process in self.recorded() {
            if pid_alive(process.pid) {
                let _ = Command::new("kill").args(["-KILL", &process.pid.to_string()]).status();
            }
        }
    }
}
pub mod workload;

/// The replicas (SPU ids) of every partition, from `partition list -O json`.
pub fn replicas(sc: &str) -> std::collections::BTreeMap<(String, u64), Vec<i64>> {
    let listed = sluice(&["--sc", sc, "partition", "list", "-O", "json"]).success("list").json();
    listed
        .as_array()
        .expect("array")
        .iter()
        .map(|entry| {
            let key = (
                entry["key"]["topic"].as_str().expect("topic").to_owned(),
                entry["key"]["partition"].as_u64().expect("partition"),
            );
            let spus = entry["spec"]["replicas"]
                .as_array()
                .expect("replicas")
                .iter()
                .map(|replica| replica["spu"].as_i64().expect("spu"))
                .collect();
            (key, spus)
        })
        .collect()
}
