//! Where the binaries under test are: an environment override (`SLUICE_SC_BIN` for
//! `sluice-sc`, `SLUICE_SPU_BIN` for `sluice-spu`, ...: e.g. a release build for
//! measurements), else the target directory of the running test executable
//! (`<target>/<profile>/deps/<test>-<hash>` -> `<target>/<profile>/<name>`), where `cargo
//! nextest run --workspace` and `cargo build` put them.
//!
//! A package's tests get only their own package's binaries built by Cargo; the others must be
//! built first (`cargo build -p sluice-sc -p sluice-spu` with the same target directory and
//! profile). A missing binary fails the test with that hint rather than running a stale one
//! from elsewhere.

use std::path::PathBuf;

/// The environment variable that overrides the path of binary `name`: `sluice-sc` ->
/// `SLUICE_SC_BIN`.
pub fn binary_override(name: &str) -> String {
    format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"))
}

/// The directory of the running test's build (`<target>/<profile>`): the first ancestor of
/// the test executable that holds a `sluice-*` binary, else its grandparent.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut directories = exe.ancestors().skip(1).take(3);
    let found = directories.find(|directory| {
        ["sluice-sc", "sluice-spu", "sluice"].iter().any(|name| directory.join(name).is_file())
    });
    found
        .or_else(|| exe.ancestors().nth(2))
        .expect("the test executable has a target directory")
        .to_path_buf()
}

/// The path of binary `name` (see the module docs); panics with how to build it.
pub fn binary(name: &str) -> PathBuf {
    let variable = binary_override(name);
    if let Some(path) = std::env::var_os(&variable) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{variable}={} is not a file", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let candidates: Vec<PathBuf> =
        exe.ancestors().skip(1).take(3).map(|directory| directory.join(name)).collect();
    candidates.iter().find(|path| path.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "{name} not found (looked at {candidates:?}); build it with `cargo build -p {name}` \
             using the same target directory and profile as the tests (`cargo nextest run \
             --workspace` builds every binary), or set {variable}"
        )
    })
}

/// Fails the test, saying how to build them, unless every binary of `names` is found.
pub fn require_binaries(names: &[&str]) {
    for name in names {
        binary(name);
    }
}
