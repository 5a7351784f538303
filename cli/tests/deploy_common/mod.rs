//! Support of the deployment tests: `sluice-sc` and `sluice-spu` started by
//! `sluice_testkit::process` the way an installation runs them (configuration files, flags,
//! environment, output in `<dir>/<name>.log`), and the `sluice` CLI run to completion.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sluice_testkit::process::{Output, ScProcess, SpuProcess};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
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

/// Starts `sluice-sc` with `config` (if any), its data in `dir/sc-data` and its output in
/// `dir/sc.log`, then `extra` flags and `env`; waits until it is active.
pub fn start_sc(
    dir: &Path,
    config: Option<&Path>,
    extra: &[&str],
    env: &[(&str, &str)],
) -> ScProcess {
    let mut builder = ScProcess::builder(&dir.join("sc-data"))
        .flags(extra)
        .output(Output::File(dir.join("sc.log")));
    if let Some(config) = config {
        builder = builder.config(config);
    }
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    builder.start()
}

/// Starts `sluice-spu` named `name` with `config` (if any), its data in `dir/<name>-data` and
/// its output in `dir/<name>.log`, then `extra` flags; waits until it registered with the SC.
pub fn start_spu(dir: &Path, name: &str, config: Option<&Path>, extra: &[&str]) -> SpuProcess {
    let mut builder = SpuProcess::builder(&dir.join(format!("{name}-data")))
        .name(name)
        .flags(extra)
        .output(Output::File(dir.join(format!("{name}.log"))));
    if let Some(config) = config {
        builder = builder.config(config);
    }
    builder.start()
}

/// Creates an SPU group of one managed SPU with id `id`, so an SPU started with that id on
/// any ports is accepted.
pub fn spu_group(sc: &str, id: i32) {
    let id = id.to_string();
    sluice_ok(&["--sc", sc, "spu-group", "create", "g", "--replicas", "1", "--first-id", &id], &[]);
}
