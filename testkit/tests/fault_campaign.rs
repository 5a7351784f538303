//! The short fault campaign of the default suite: `deploy/faults/run --rounds 1` brings up the
//! namespace cluster (3 Consul servers, 2 SCs, 3 SPUs with volumes of their own), runs
//! `sluice-perf check` at RF 3 / min in-sync 2 / acks all and injects one fault of every kind
//! (kills, pauses, partitions, one-way loss, netem, a full disk), heals, reads everything back.
//! It passes when the checker finds nothing lost, duplicated, reordered or inconsistent and
//! every kind was injected. Seeded: `SLUICE_TEST_SEED` replays a failing run.
//!
//! Needs root (namespaces, nftables, tc, loop mounts), a Consul agent (deploy/dev/install-consul)
//! and the workspace's binaries in this test's target directory (`cargo nextest run
//! --workspace`, or `cargo build` first). Not root: it says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_testkit::process;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit/ has a parent").to_path_buf()
}

#[test]
fn one_round_of_every_fault_loses_nothing() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED: the fault campaign needs root (network namespaces, nftables, loop mounts)"
        );
        return;
    }
    let bin_dir = process::bin_dir();
    process::require_binaries(&[
        "sluice",
        "sluice-sc",
        "sluice-spu",
        "sluice-perf",
        "sluice-faults",
    ]);
    let seed: u64 = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| std::process::id().into());
    eprintln!("SLUICE_TEST_SEED={seed}");
    let state = tempfile_dir();
    let report = state.join("report.json");
    let output = Command::new(repo().join("deploy/faults/run"))
        .env("SLUICE_BIN_DIR", &bin_dir)
        .env("SLUICE_NETNS_DIR", &state)
        .env("SLUICE_NETNS_SPU_DISK_MB", "1024")
        .args(["--seed", &seed.to_string(), "--rounds", "1", "--duration", "300s"])
        .args(["--quiet", "5s", "--rate", "400"])
        .arg("--json")
        .arg(&report)
        .output()
        .expect("deploy/faults/run runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "{}",
        stderr.lines().filter(|line| line.starts_with("faults:")).collect::<Vec<_>>().join("\n")
    );
    assert!(
        output.status.success(),
        "campaign failed ({}) with seed {seed}; last lines:\n{}",
        output.status,
        stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the report")).expect("JSON");
    assert_eq!(report["valid"], true);
    let kinds = report["injected_per_kind"].as_object().expect("kinds");
    assert_eq!(kinds.len(), 13, "every kind of fault injected once: {kinds:?}");
    let total = &report["counts"];
    assert!(total["acknowledged"].as_u64().unwrap() > 1_000, "{total}");
    for violation in ["lost", "duplicated", "inconsistent_offsets", "reordered", "aborted_reads"] {
        assert_eq!(total[violation], 0, "{violation}: {total}");
    }
    let _ = std::fs::remove_dir_all(&state);
}

/// A fresh state directory for the cluster (kept when the test fails, for its logs).
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-faults-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a state directory");
    dir
}
