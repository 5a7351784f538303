//! The multi-host cluster of `deploy/netns/up`, seen from Rust: the same layout as
//! `deploy/netns/lib.sh` (hosts, namespaces, addresses, ports, state directory), the processes
//! `up` recorded (`HOST/pid`: pid and start time; `HOST/cmdline`: the NUL-separated command
//! line) and the controls faults need: signals, a restart with the recorded command line in the
//! host's namespace, nftables rules and `tc` in a namespace, and the SPU's own small volume.
//!
//! Only processes whose pid *and* start time match the record are ever signalled, so a reused
//! pid is never hit.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::TestkitError;

/// What a host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A Consul server.
    Consul,
    /// A `sluice-sc`.
    Sc,
    /// A `sluice-spu`.
    Spu,
    /// Nothing: the client namespace.
    Client,
}

/// A host of the layout: `(name, last octet, role)`; `lib.sh`'s `host_octet`.
pub const HOSTS: [(&str, u8, Role); 9] = [
    ("consul-1", 11, Role::Consul),
    ("consul-2", 12, Role::Consul),
    ("consul-3", 13, Role::Consul),
    ("sc-1", 21, Role::Sc),
    ("sc-2", 22, Role::Sc),
    ("spu-1", 31, Role::Spu),
    ("spu-2", 32, Role::Spu),
    ("spu-3", 33, Role::Spu),
    ("client", 100, Role::Client),
];

/// Ports of the layout (`lib.sh`).
pub const CONSUL_HTTP_PORT: u16 = 8500;
/// Consul's server RPC port (what `/v1/status/leader` names).
pub const CONSUL_SERVER_PORT: u16 = 8300;
/// The SCs' public port.
pub const SC_PUBLIC_PORT: u16 = 9003;
/// The SCs' metrics and health port (the SC's default).
pub const SC_METRICS_PORT: u16 = 9008;
/// The id of `spu-1`; `spu-N` is `SPU_FIRST_ID + N - 1`.
pub const SPU_FIRST_ID: u32 = 5001;

/// A recorded process: pid and start time (clock ticks since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Its pid.
    pub pid: i32,
    /// Its start time, so that a reused pid is not taken for it.
    pub start_ticks: u64,
}

/// The cluster's layout and state directory.
#[derive(Clone, Debug)]
pub struct Netns {
    /// The state directory (`SLUICE_NETNS_DIR`, default `/tmp/sluice-netns`).
    pub dir: PathBuf,
    /// The first three octets (`SLUICE_NETNS_NETWORK`, default `10.77.0`).
    pub network: String,
}

impl Netns {
    /// The layout `up` used, from the same environment variables.
    pub fn from_env() -> Netns {
        Netns {
            dir: std::env::var_os("SLUICE_NETNS_DIR")
                .map_or_else(|| PathBuf::from("/tmp/sluice-netns"), PathBuf::from),
            network: std::env::var("SLUICE_NETNS_NETWORK").unwrap_or_else(|_| "10.77.0".into()),
        }
    }

    /// Names of the hosts of a role, in layout order.
    pub fn hosts(role: Role) -> Vec<&'static str> {
        HOSTS.iter().filter(|(_, _, r)| *r == role).map(|(name, _, _)| *name).collect()
    }

    /// A host's address.
    pub fn address(&self, host: &str) -> Ipv4Addr {
        let octet = HOSTS.iter().find(|(name, _, _)| *name == host).map_or(0, |(_, o, _)| *o);
        format!("{}.{octet}", self.network).parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// A host's namespace.
    pub fn namespace(host: &str) -> String {
        format!("sluice-{host}")
    }

    /// A host's state directory (log, pid, cmdline, data).
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join(host)
    }

    /// Both SCs' public addresses, `a:p,b:p` (clients skip a standby).
    pub fn sc_addresses(&self) -> String {
        Netns::hosts(Role::Sc)
            .iter()
            .map(|host| format!("{}:{SC_PUBLIC_PORT}", self.address(host)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The SPU host of an SPU id.
    pub fn spu_host(id: u32) -> Option<&'static str> {
        let index = id.checked_sub(SPU_FIRST_ID)? as usize;
        Netns::hosts(Role::Spu).get(index).copied()
    }

    /// The SPU id of an SPU host.
    pub fn spu_id(host: &str) -> Option<u32> {
        let index = Netns::hosts(Role::Spu).iter().position(|name| *name == host)?;
        Some(SPU_FIRST_ID + index as u32)
    }

    /// The process recorded for `host`, if the record is there.
    pub fn recorded(&self, host: &str) -> Option<Recorded> {
        let text = std::fs::read_to_string(self.host_dir(host).join("pid")).ok()?;
        let mut fields = text.split_ascii_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let start_ticks = fields.next()?.parse().ok()?;
        Some(Recorded { pid, start_ticks })
    }

    /// Whether the process recorded for `host` runs (a stopped one runs too).
    pub fn alive(&self, host: &str) -> bool {
        self.recorded(host).is_some_and(|recorded| {
            start_ticks(recorded.pid) == Some(recorded.start_ticks) && !is_zombie(recorded.pid)
        })
    }

    /// Sends `signal` to `host`'s recorded process; false when it does not run.
    pub fn signal(&self, host: &str, signal: i32) -> bool {
        match self.recorded(host) {
            Some(recorded) if self.alive(host) => {
                // SAFETY: kill(2) with a pid checked against its start time just now.
                unsafe { libc::kill(recorded.pid, signal) == 0 }
            }
            _ => false,
        }
    }

    /// `kill -9` of `host`'s process, waiting (10 s at most) until it is gone.
    pub fn kill(&self, host: &str) -> Result<(), TestkitError> {
        if !self.signal(host, libc::SIGKILL) {
            return Ok(());
        }
        wait_until(&format!("{host} to exit after SIGKILL"), Duration::from_secs(10), || {
            !self.alive(host)
        })
    }

    /// Starts `host`'s process again with its recorded command line (`HOST/cmdline`), in its
    /// namespace, in its own session, locked-memory limit raised, output appended to
    /// `HOST/log`; records the new pid. The returned child is the server itself (reap it).
    pub fn restart(&self, host: &str) -> Result<Child, TestkitError> {
        if self.alive(host) {
            return Err(TestkitError::InvalidArgument(format!("{host} still runs")));
        }
        let dir = self.host_dir(host);
        let cmdline_path = dir.join("cmdline");
        let cmdline =
            std::fs::read(&cmdline_path).map_err(|error| TestkitError::io(&cmdline_path, error))?;
        let argv: Vec<String> = cmdline
            .split(|&byte| byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if argv.is_empty() {
            return Err(TestkitError::NoCluster {
                dir: self.dir.clone(),
                reason: format!("{} is empty", cmdline_path.display()),
            });
        }
        let log_path = dir.join("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| TestkitError::io(&log_path, error))?;
        let _ = writeln!(&log, "---- restarted by sluice-faults ----");
        let pending = dir.join("pid.pending");
        let _ = std::fs::remove_file(&pending);
        let log_err = log.try_clone().map_err(|error| TestkitError::io(&log_path, error))?;
        let mut command = Command::new("setsid");
        command
            .args(["ip", "netns", "exec", &Netns::namespace(host), "sh", "-c"])
            .arg(concat!(
                "ulimit -l unlimited 2>/dev/null || ulimit -l \"$(ulimit -H -l)\"; ",
                "echo \"$$\" >\"$0.tmp\" && mv \"$0.tmp\" \"$0\" && exec \"$@\""
            ))
            .arg(&pending)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command.spawn().map_err(|error| TestkitError::Command {
            command: format!("restart {host}: {}", argv.join(" ")),
            message: error.to_string(),
        })?;
        let mut pid = None;
        wait_until(&format!("{host} to start"), Duration::from_secs(10), || {
            pid = std::fs::read_to_string(&pending).ok().and_then(|text| text.trim().parse().ok());
            pid.is_some()
        })?;
        let pid: i32 = pid.expect("set by the wait");
        let ticks = start_ticks(pid).ok_or_else(|| TestkitError::Command {
            command: format!("restart {host}"),
            message: format!("exited at once; see {}", log_path.display()),
        })?;
        let pid_path = dir.join("pid");
        std::fs::write(&pid_path, format!("{pid} {ticks}\n"))
            .map_err(|error| TestkitError::io(&pid_path, error))?;
        let _ = std::fs::remove_file(&pending);
        Ok(child)
    }

    /// Runs an nftables script in `host`'s namespace.
    pub fn nft(&self, host: &str, script: &str) -> Result<(), TestkitError> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &Netns::namespace(host), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| TestkitError::Command {
                command: format!("nft in {host}"),
                message: error.to_string(),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let output = child.wait_with_output().map_err(|error| TestkitError::Command {
            command: format!("nft in {host}"),
            message: error.to_string(),
        })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Command {
                command: format!("nft -f - in {host} <<{script:?}"),
                message: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr)),
            })
        }
    }

    /// Runs a command in `host`'s namespace (`ip netns exec`).
    pub fn exec(&self, host: &str, program: &str, args: &[&str]) -> Result<String, TestkitError> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &Netns::namespace(host), program]).args(args);
        run(&mut command)
    }

    /// The mount point of `host`'s own data volume (`up` with `SLUICE_NETNS_SPU_DISK_MB`), if
    /// it has one.
    pub fn own_volume(&self, host: &str) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let data = self.host_dir(host).join("data");
        let inner = std::fs::metadata(&data).ok()?.dev();
        let outer = std::fs::metadata(self.host_dir(host)).ok()?.dev();
        (inner != outer).then_some(data)
    }
}

/// Runs a command, returning its stdout; an error with its stderr when it fails.
pub fn run(command: &mut Command) -> Result<String, TestkitError> {
    let line = format!("{command:?}");
    let output = command.stdin(Stdio::null()).output().map_err(|error| TestkitError::Command {
        command: line.clone(),
        message: error.to_string(),
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TestkitError::Command {
            command: line,
            message: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Polls `condition` every 50 ms until it holds or `deadline` passes.
pub fn wait_until(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), TestkitError> {
    let start = Instant::now();
    loop {
        if condition() {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            return Err(TestkitError::Timeout { what: what.into(), seconds: deadline.as_secs() });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Field 22 of /proc/PID/stat: the start time in clock ticks since boot.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Whether the process has exited but was not reaped yet.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').map(|end| stat[end + 2..].starts_with('Z')))
        .unwrap_or(true)
}

/// `HOST/data` of an SPU host, for a filler file.
pub fn filler_path(volume: &Path) -> PathBuf {
    volume.join("sluice-faults-filler")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_matches_lib_sh() {
        let netns = Netns { dir: "/tmp/x".into(), network: "10.77.0".into() };
        assert_eq!(netns.address("spu-2").to_string(), "10.77.0.32");
        assert_eq!(netns.sc_addresses(), "10.77.0.21:9003,10.77.0.22:9003");
        assert_eq!(Netns::spu_host(5003), Some("spu-3"));
        assert_eq!(Netns::spu_host(5004), None);
        assert_eq!(Netns::spu_id("spu-1"), Some(5001));
        assert_eq!(Netns::hosts(Role::Consul), ["consul-1", "consul-2", "consul-3"]);
        // lib.sh is the other half of the layout: the same hosts and octets.
        let lib = include_str!("../../deploy/netns/lib.sh");
        for (name, octet, _) in HOSTS {
            assert!(lib.contains(&format!("[{name}]={octet}")), "{name} in lib.sh");
        }
    }

    #[test]
    fn start_ticks_reads_this_process() {
        let me = std::process::id() as i32;
        assert!(start_ticks(me).is_some());
        assert!(!is_zombie(me));
    }
}
