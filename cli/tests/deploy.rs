//! `deploy/`: the systemd units (checked by `systemd-analyze verify`), the install and
//! uninstall scripts (into a staged root), the example configuration files (run by the real
//! binaries, which stop cleanly on SIGTERM), the shell scripts (shellcheck) and the monitoring
//! files (every metric they name is exported by a live SC or SPU).
//!
//! Needs `sluice-sc` and `sluice-spu` built next to `sluice`; the install test needs root (it
//! chowns the staged directories), as the netns test does.

mod deploy_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use deploy_common::{repo, sluice_ok, spu_group, start_sc, start_spu};
use sluice_testkit::process::{bin_dir, try_http, wait_until, ServerProcess, Stopped};

const UNITS: [&str; 3] = ["sluice-sc.service", "sluice-spu.service", "sluice-spu@.service"];

fn tool_available(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok_and(|output| output.status.success())
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed ({}):\n{text}", output.status);
    text
}

/// A staged root with an (empty) account database, so the install script creates the user.
fn staged_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    for file in ["passwd", "group", "shadow", "gshadow"] {
        std::fs::write(root.path().join("etc").join(file), "").expect("account file");
    }
    root
}

fn install(root: &Path, extra: &[&str]) -> String {
    let binaries = bin_dir().display().to_string();
    run_ok(
        Command::new(repo().join("deploy/install"))
            .args(["--binaries", &binaries, "--root"])
            .arg(root)
            .args(extra),
    )
}

fn uninstall(root: &Path, extra: &[&str]) -> String {
    run_ok(Command::new(repo().join("deploy/uninstall")).arg("--root").arg(root).args(extra))
}

fn owner(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())).uid()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !tool_available("systemd-analyze") {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (Debian package `systemd`; deploy/dev/setup \
             installs it)"
        );
        return;
    }
    // The units as installed, their ExecStart pointed at the staged binaries (verify checks
    // that the command exists); a template is verified through an instance.
    let root = staged_root();
    install(root.path(), &[]);
    let units = tempfile::tempdir().expect("temporary directory");
    let staged_bin = format!("{}/usr/local/bin/", root.path().display());
    for (unit, name) in [
        ("sluice-sc.service", "sluice-sc.service"),
        ("sluice-spu.service", "sluice-spu.service"),
        ("sluice-spu@.service", "sluice-spu@5001.service"),
    ] {
        let text = std::fs::read_to_string(root.path().join("etc/systemd/system").join(unit))
            .expect("installed unit");
        std::fs::write(units.path().join(name), text.replace("/usr/local/bin/", &staged_bin))
            .expect("unit copy");
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(units.path().join(name))
            .output()
            .expect("run systemd-analyze");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Warnings (unknown keys, missing commands) do not fail the command: any line about our
        // unit or binaries does. Complaints about other units of this machine are not ours.
        let ours: Vec<&str> = text.lines().filter(|line| line.contains("sluice")).collect();
        assert!(output.status.success() && ours.is_empty(), "{unit}: {}\n{text}", output.status);
    }
}

#[test]
fn install_lays_out_the_system_and_uninstall_keeps_data_unless_purged() {
    let root = staged_root();
    let root = root.path();
    let said = install(root, &[]);
    for binary in ["sluice", "sluice-sc", "sluice-spu"] {
        assert!(root.join("usr/local/bin").join(binary).is_file(), "{binary}\n{said}");
    }
    for unit in UNITS {
        let text = std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).expect(unit);
        assert!(text.contains("ExecStart=/usr/local/bin/sluice-"), "{unit}");
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    let user = passwd.lines().find(|line| line.starts_with("sluice:")).expect("the sluice user");
    let uid: u32 = user.split(':').nth(2).expect("uid").parse().expect("numeric uid");
    assert!(uid > 0 && uid < 1000, "a system user: {user}");
    assert_eq!(owner(&root.join("var/lib/sluice")), uid, "the data directory belongs to sluice");
    for name in ["sc.toml", "spu.toml", "sc.toml.example", "spu.toml.example"] {
        assert!(root.join("etc/sluice").join(name).is_file(), "{name}");
    }
    assert!(root.join("usr/local/share/doc/sluice/OPERATIONS.md").is_file());
    assert!(root.join("usr/local/share/sluice/consul/acl/sluice-sc.hcl").is_file());
    assert!(root.join("usr/local/share/sluice/monitoring/alerts.yml").is_file());

    // A second install keeps an edited configuration and the data.
    std::fs::write(root.join("etc/sluice/sc.toml"), "cluster = \"edited\"\n").expect("edit");
    std::fs::write(root.join("var/lib/sluice/replica"), "data").expect("data");
    let said = install(root, &[]);
    assert!(said.contains("kept the existing"), "{said}");
    let kept = std::fs::read_to_string(root.join("etc/sluice/sc.toml")).expect("sc.toml");
    assert_eq!(kept, "cluster = \"edited\"\n");

    uninstall(root, &[]);
    assert!(!root.join("usr/local/bin/sluice-sc").exists());
    assert!(!root.join("etc/systemd/system/sluice-spu@.service").exists());
    assert!(!root.join("usr/local/share/sluice").exists());
    assert!(root.join("etc/sluice/sc.toml").is_file(), "configuration kept");
    assert!(root.join("var/lib/sluice/replica").is_file(), "data kept");
    assert!(std::fs::read_to_string(root.join("etc/passwd")).expect("passwd").contains("sluice:"));

    uninstall(root, &["--purge"]);
    assert!(!root.join("etc/sluice").exists());
    assert!(!root.join("var/lib/sluice").exists());
    assert!(!std::fs::read_to_string(root.join("etc/passwd")).expect("passwd").contains("sluice:"));

    // Another prefix: the units follow it.
    install(root, &["--prefix", "/opt/sluice"]);
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/sluice-sc.service")).expect("unit");
    assert!(unit.contains("ExecStart=/opt/sluice/bin/sluice-sc --config /etc/sluice/sc.toml"));
    assert!(root.join("opt/sluice/bin/sluice-spu").is_file());
}

#[test]
fn shell_scripts_pass_shellcheck() {
    if !tool_available("shellcheck") {
        eprintln!("SKIPPED: shellcheck is not installed");
        return;
    }
    let scripts: Vec<PathBuf> = [
        "deploy/install",
        "deploy/uninstall",
        "deploy/lib/units.sh",
        "deploy/netns/up",
        "deploy/netns/down",
        "deploy/netns/lib.sh",
        "deploy/tls/make-certs",
        "deploy/faults/run",
        "deploy/dev/setup",
        "deploy/dev/test",
        "deploy/dev/run",
        "deploy/dev/kill-campaign",
        "deploy/dev/install-consul",
        "perf/scripts/throttled-move",
        "proto/fuzz/run.sh",
        ".ci/run",
    ]
    .iter()
    .map(|name| repo().join(name))
    .collect();
    run_ok(Command::new("shellcheck").arg("-x").current_dir(repo()).args(&scripts));
}

/// The example files, as shipped, parse in the real binaries (flags win over the file, so only
/// addresses and directories are moved to the test's); SIGTERM stops both cleanly.
#[test]
fn example_configs_run_and_sigterm_stops_both_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let examples = repo().join("deploy/systemd");
    let mut sc = start_sc(
        dir.path(),
        Some(&examples.join("sc.toml.example")),
        &["--store", "embedded"],
        &[],
    );
    spu_group(&sc.public_address.to_string(), 5001);
    // The example's consul:// SC address and Consul agent are replaced by the test's SC (an
    // unreachable agent would only delay the registration, retried in the background).
    let mut spu = start_spu(
        dir.path(),
        "spu",
        Some(&examples.join("spu.toml.example")),
        &["--sc", &sc.private_address.to_string(), "--advertised-host", "127.0.0.1"],
    );
    wait_until("the SPU to be ready", || {
        try_http(spu.metrics_address, "GET", "/health/ready")
            .is_some_and(|(status, _)| status == 200)
    });
    let listed =
        sluice_ok(&["--sc", &sc.public_address.to_string(), "spu", "list", "-O", "json"], &[]);
    assert!(listed.contains("online"), "{listed}");

    let Stopped { status, elapsed: took } = spu.terminate();
    assert!(status.success(), "the SPU exited with {status} on SIGTERM:\n{}", spu.log());
    eprintln!("SPU stopped {took:?} after SIGTERM");
    assert!(spu.log().contains("stopped"), "{}", spu.log());
    let Stopped { status, elapsed: took } = sc.terminate();
    assert!(status.success(), "the SC exited with {status} on SIGTERM:\n{}", sc.log());
    eprintln!("SC stopped {took:?} after SIGTERM");
}

/// Metric names in a PromQL expression or dashboard query: `sluice_*` and `process_*`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let starts = text[index..].starts_with("sluice_") || text[index..].starts_with("process_");
        let boundary =
            index == 0 || !(bytes[index - 1].is_ascii_alphanumeric() || bytes[index - 1] == b'_');
        if starts && boundary {
            let end = text[index..]
                .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
                .map_or(text.len(), |offset| index + offset);
            names.push(text[index..end].to_owned());
            index = end;
        } else {
            index += 1;
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The sample names of a Prometheus text exposition.
fn exposed(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    let monitoring = repo().join("deploy/monitoring");
    let dashboard =
        std::fs::read_to_string(monitoring.join("grafana-dashboard.json")).expect("dashboard");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default() {
            expressions.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    let alerts = std::fs::read_to_string(monitoring.join("alerts.yml")).expect("alerts");
    let alert_expressions: Vec<String> = alerts
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect();
    let alert_count = alerts.lines().filter(|line| line.trim().starts_with("- alert: ")).count();
    assert_eq!(alert_expressions.len(), alert_count, "one expr per alert, on one line");
    expressions.extend(alert_expressions);
    let referenced = metric_names(&expressions.join("\n"));
    assert!(referenced.len() > 20, "{referenced:?}");

    let dir = tempfile::tempdir().expect("temporary directory");
    let sc = start_sc(dir.path(), None, &[], &[]);
    spu_group(&sc.public_address.to_string(), 5001);
    let spu = start_spu(
        dir.path(),
        "spu",
        None,
        &["--id", "5001", "--sc", &sc.private_address.to_string()],
    );
    // Traffic, so that every histogram has samples.
    sluice_ok(&["--sc", &sc.public_address.to_string(), "topic", "create", "watched"], &[]);
    let produce = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--sc", &sc.public_address.to_string(), "produce", "watched"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(b"one\ntwo\n")?;
            child.wait()
        })
        .expect("produce");
    assert!(produce.success());
    sluice_ok(&["--sc", &sc.public_address.to_string(), "consume", "watched", "-B", "-d"], &[]);

    let mut samples = Vec::new();
    for address in [sc.metrics_address, spu.metrics_address] {
        let (status, body) = try_http(address, "GET", "/metrics").expect("scrape");
        assert_eq!(status, 200);
        samples.extend(exposed(&body));
    }
    let missing: Vec<&String> =
        referenced.iter().filter(|name| !samples.iter().any(|sample| sample == *name)).collect();
    assert!(missing.is_empty(), "referenced but not exported: {missing:?}");
    eprintln!("{} metric names referenced, all exported", referenced.len());
}
