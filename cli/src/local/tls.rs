//! TLS of a local cluster (`sluice cluster start --local --tls`): the CA and certificates under
//! `DIR/tls/`, the listener flags of the SC and the SPUs, and `DIR/client.toml` for the `admin`
//! client identity.
//!
//! The SC's public listener and every SPU's listeners take the same four flags (`--tls-cert`,
//! `--tls-key`, `--tls-ca`, `--tls-client-auth optional`): clients may present a certificate
//! (the `admin` one names `admin`) or none. The SC's private listener takes the SC certificate
//! too (`--private-tls-*`), so SPU links to it and between SPUs are mutual TLS. An `sluice-spu`
//! without those flags (older than SPU TLS) is started plaintext, with a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Serialize;
use sluice_client::{ClientConfig, TlsConfig};
use sluice_tls::dev_ca::{IssuedFiles, VALIDITY_DEFAULT};

use crate::certs::Pki;

use super::state::ClusterState;

/// Name of the directory of the CA and certificates inside the data directory.
pub const TLS_DIR_NAME: &str = "tls";
/// The client configuration file written beside `cluster.json`.
pub const CLIENT_FILE_NAME: &str = "client.toml";
/// The client identity `client.toml` uses.
pub const ADMIN_IDENTITY: &str = "admin";
/// The cluster name in the certificates: the SC's `--cluster` default, which a local SC keeps.
pub const LOCAL_CLUSTER_NAME: &str = "default";

/// The CA of the local cluster in `tls_dir` (made when missing).
pub fn pki(tls_dir: &Path) -> anyhow::Result<Pki> {
    Pki::open(tls_dir, LOCAL_CLUSTER_NAME, VALIDITY_DEFAULT)
}

fn files(tls_dir: &Path, stem: &str) -> IssuedFiles {
    IssuedFiles {
        cert: tls_dir.join(format!("{stem}.pem")),
        key: tls_dir.join(format!("{stem}.key")),
    }
}

fn listener_flags(tls_dir: &Path, files: &IssuedFiles) -> Vec<String> {
    vec![
        format!("--tls-cert={}", files.cert.display()),
        format!("--tls-key={}", files.key.display()),
        format!("--tls-ca={}", tls_dir.join("ca.pem").display()),
        "--tls-client-auth=optional".into(),
    ]
}

/// The SC's TLS flags, issuing its certificate (and the admin's) when missing.
pub fn sc_flags(tls_dir: &Path) -> anyhow::Result<Vec<String>> {
    let pki = pki(tls_dir)?;
    let sc = files(tls_dir, "sc");
    if !(sc.cert.exists() && sc.key.exists()) {
        pki.issue_sc(&[])?;
    }
    let admin = files(tls_dir, ADMIN_IDENTITY);
    if !(admin.cert.exists() && admin.key.exists()) {
        pki.issue_client(ADMIN_IDENTITY)?;
    }
    let mut flags = listener_flags(tls_dir, &sc);
    // The private listener (SPU control) too: SPUs with TLS flags present their certificates on
    // their links to it, and verify that it names `sc.<cluster>`.
    flags.extend([
        format!("--private-tls-cert={}", sc.cert.display()),
        format!("--private-tls-key={}", sc.key.display()),
        format!("--private-tls-ca={}", tls_dir.join("ca.pem").display()),
    ]);
    Ok(flags)
}

/// SPU `id`'s TLS flags, issuing its certificate when missing; none (with a warning) when the
/// SPU binary has no TLS flags.
pub fn spu_flags(tls_dir: &Path, program: &Path, id: i32) -> anyhow::Result<Vec<String>> {
    if !spu_supports_tls(program) {
        eprintln!(
            "warning: {} has no --tls-cert flag (it predates SPU TLS): SPU {id} listens in \
             plaintext, so TLS clients can administer the cluster but not produce or consume",
            program.display()
        );
        return Ok(Vec::new());
    }
    let spu = pki(tls_dir)?.spu_files(id)?;
    Ok(listener_flags(tls_dir, &spu))
}

/// Whether `sluice-spu --help` lists `--tls-cert`.
fn spu_supports_tls(program: &Path) -> bool {
    Command::new(program)
        .arg("--help")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("--tls-cert"))
}

/// The connection settings of the local cluster: its SC address, and with TLS its CA and the
/// admin identity.
pub fn client_config(state: &ClusterState) -> ClientConfig {
    let mut config = ClientConfig::new(&state.sc_public_address);
    if let Some(dir) = &state.tls_dir {
        let admin = files(dir, ADMIN_IDENTITY);
        config.tls =
            Some(TlsConfig::new(dir.join("ca.pem")).with_certificate(admin.cert, admin.key));
    }
    config
}

#[derive(Serialize)]
struct ClientFile<'a> {
    sc: &'a str,
    tls_ca: PathBuf,
    tls_cert: PathBuf,
    tls_key: PathBuf,
}

/// Writes `DIR/client.toml` for the admin identity (paths relative to DIR); returns its path.
pub fn write_client_file(state: &ClusterState) -> anyhow::Result<PathBuf> {
    let relative = Path::new(TLS_DIR_NAME);
    let file = ClientFile {
        sc: &state.sc_public_address,
        tls_ca: relative.join("ca.pem"),
        tls_cert: relative.join(format!("{ADMIN_IDENTITY}.pem")),
        tls_key: relative.join(format!("{ADMIN_IDENTITY}.key")),
    };
    let text = format!(
        "# Written by `sluice cluster start --local --tls`: the local cluster as the `{ADMIN_IDENTITY}` \
         client identity.\n# Use: sluice --config {} topic list\n{}",
        state.data_dir.join(CLIENT_FILE_NAME).display(),
        toml::to_string(&file).context("cannot write the client configuration")?
    );
    let path = state.data_dir.join(CLIENT_FILE_NAME);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
