//! The multi-host cluster of `deploy/netns/up` (every host a network namespace on one bridge:
//! three Consul servers in quorum, an active and a standby SC, three SPUs on racks r1..r3): a
//! topic with replication 3, `sluice-perf check` against it from the client namespace for 10 s,
//! a valid verdict, and nothing left behind by `deploy/netns/down`.
//!
//! Ignored by default, because it needs root, a Consul agent (`deploy/dev/install-consul`) and
//! half a minute: `cargo test -p sluice-cli --test netns_cluster -- --ignored --nocapture`
//! after building sluice-sc, sluice-spu and sluice-perf into the same target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The layout's defaults, set explicitly so that a caller's environment cannot move them.
const NETWORK: &str = "10.77.0";
/// The active SC (`sc-1`) of the layout.
const SC: &str = "10.77.0.21:9003";
const CLIENT_NAMESPACE: &str = "sluice-client";
const HOSTS: [&str; 9] =
    ["consul-1", "consul-2", "consul-3", "sc-1", "sc-2", "spu-1", "spu-2", "spu-3", "client"];
const TOPIC: &str = "netns-check";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

/// The directory of the binaries under test: `sluice`'s, where cargo also put the others.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_sluice")).parent().expect("a bin dir").to_path_buf()
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    eprintln!(
        "== {what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn script(name: &str, state_dir: &Path) -> Command {
    let mut command = Command::new(repo().join("deploy/netns").join(name));
    command
        .env("SLUICE_NETNS_DIR", state_dir)
        .env("SLUICE_NETNS_NETWORK", NETWORK)
        .env("SLUICE_BIN_DIR", bin_dir());
    command
}

fn in_client(program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", CLIENT_NAMESPACE]).arg(bin_dir().join(program));
    command
}

/// Runs `down` when dropped, so that a failed assertion does not leave the cluster running.
struct Cluster {
    state_dir: PathBuf,
    down: bool,
}

impl Cluster {
    fn down(&mut self) -> Output {
        self.down = true;
        run(&mut script("down", &self.state_dir), "deploy/netns/down")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.down {
            self.down();
        }
    }
}

/// The pids `up` recorded (first field of `<host>/pid`).
fn recorded_pids(state_dir: &Path) -> Vec<(String, u32)> {
    HOSTS
        .iter()
        .filter_map(|host| {
            let text = std::fs::read_to_string(state_dir.join(host).join("pid")).ok()?;
            let pid = text.split_whitespace().next()?.parse().ok()?;
            Some(((*host).to_owned(), pid))
        })
        .collect()
}

#[test]
#[ignore = "needs root and about a minute: cargo test -p sluice-cli --test netns_cluster -- --ignored"]
fn netns_cluster_passes_a_check_at_replication_3_and_leaves_nothing() {
    let perf = bin_dir().join("sluice-perf");
    assert!(perf.exists(), "build sluice-perf into {} first", bin_dir().display());
    let state = tempfile::tempdir().expect("a state directory");
    let state_dir = state.path().join("netns");
    let mut cluster = Cluster { state_dir: state_dir.clone(), down: false };

    let up = run(&mut script("up", &state_dir), "deploy/netns/up");
    assert!(up.status.success(), "up failed");
    let hosts_with_pids = recorded_pids(&state_dir);
    assert_eq!(hosts_with_pids.len(), HOSTS.len() - 1, "a pid per host but the client");

    let create = run(
        in_client("sluice").args(["--sc", SC, "topic", "create", TOPIC]).args([
            "--partitions",
            "3",
            "--replication",
            "3",
            "--min-in-sync",
            "2",
        ]),
        "topic create",
    );
    assert!(create.status.success(), "topic create failed");
    let describe = run(
        in_client("sluice").args(["--sc", SC, "partition", "list", "--topic", TOPIC, "-O", "json"]),
        "partition list",
    );
    assert!(describe.status.success(), "partition list failed");
    // One SPU per rack, so replication 3 must use all three for every partition.
    let partitions: serde_json::Value =
        serde_json::from_slice(&describe.stdout).expect("partition list is JSON");
    let partitions = partitions.as_array().expect("a list of partitions");
    assert_eq!(partitions.len(), 3);
    for partition in partitions {
        let mut spus: Vec<u64> = partition["spec"]["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|replica| replica["spu"].as_u64().expect("an SPU id"))
            .collect();
        spus.sort_unstable();
        assert_eq!(spus, [5001, 5002, 5003], "{partition}");
    }

    let report = state.path().join("check.json");
    let check = run(
        in_client("sluice-perf")
            .args(["check", "--sc", SC, "--topic", TOPIC, "--producers", "2"])
            .args(["--duration", "10s", "--rate", "2000", "--tail", "--json"])
            .arg(&report),
        "sluice-perf check",
    );
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check failed");
    assert!(stdout.contains("verdict: valid"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report"))
            .expect("the report is JSON");
    assert_eq!(json["valid"], true);
    let total = &json["analysis"]["total"];
    let count = |name: &str| total[name].as_u64().unwrap_or_else(|| panic!("{name} in {total}"));
    assert!(count("acknowledged") > 1_000, "{total}");
    for kind in ["lost", "duplicated", "inconsistent_offsets", "reordered", "unexpected"] {
        assert_eq!(count(kind), 0, "{kind}: {total}");
    }

    let down = cluster.down();
    assert!(down.status.success(), "down failed");
    for (host, pid) in hosts_with_pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{host} (pid {pid}) still runs");
    }
    let namespaces = run(Command::new("ip").args(["netns", "list"]), "ip netns list");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    for host in HOSTS {
        let name = format!("sluice-{host}");
        assert!(
            !namespaces.split_whitespace().any(|word| word == name),
            "namespace {name} is left: {namespaces}"
        );
    }
    let bridge = Command::new("ip").args(["link", "show", "sluice-br0"]).output().expect("ip");
    assert!(!bridge.status.success(), "the bridge sluice-br0 is left");
}
