//! Certificates for TLS process tests: a dev CA in a temporary directory issuing the SC's, the
//! SPUs' and clients' certificates (in-cluster names of cluster `default`), and the flags that
//! turn TLS on.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sluice_sc::config::ScArgs;
use sluice_tls::dev_ca::{DevCa, IssuedFiles, VALIDITY_DEFAULT};
use sluice_tls::{sc_name, spu_name, ClientTls, ClientTlsFiles};

/// The cluster name of the tests (the SC's and SPUs' default).
pub const CLUSTER: &str = "default";

/// A CA and the certificates it issued, in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = DevCa::new(name).expect("a CA");
        ca.write_cert(&dir.path().join("ca.pem")).expect("write the CA");
        Pki { dir, ca }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues (or re-issues: new key, same files) a certificate for `names` as `<stem>.pem`
    /// and `<stem>.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> IssuedFiles {
        self.ca
            .issue(names, VALIDITY_DEFAULT)
            .expect("a certificate")
            .write(self.dir.path(), stem)
            .expect("write the certificate")
    }

    /// The certificate of SPU `id`, issued on first use.
    pub fn spu_files(&self, id: i32) -> IssuedFiles {
        let stem = format!("spu-{id}");
        let files = IssuedFiles {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
        };
        if files.cert.exists() {
            return files;
        }
        self.issue(&stem, &[&spu_name(id, CLUSTER), "127.0.0.1"])
    }

    /// `sluice-spu` flags: TLS with SPU `id`'s certificate (or `files`), client certificates
    /// on the public port as `client_auth` says.
    pub fn spu_flags(&self, files: &IssuedFiles, client_auth: &str) -> Vec<String> {
        vec![
            format!("--tls-cert={}", files.cert.display()),
            format!("--tls-key={}", files.key.display()),
            format!("--tls-ca={}", self.ca_path().display()),
            format!("--tls-client-auth={client_auth}"),
        ]
    }

    /// SC arguments with TLS on the private listener (certificate `sc.default`).
    pub fn sc_args(&self, args: ScArgs) -> ScArgs {
        let files = self.issue("sc", &[&sc_name(CLUSTER), "127.0.0.1"]);
        ScArgs {
            private_tls_cert: Some(files.cert),
            private_tls_key: Some(files.key),
            private_tls_ca: Some(self.ca_path()),
            ..args
        }
    }

    /// A client trusting this CA, presenting `files` when given.
    pub fn client(&self, files: Option<&IssuedFiles>) -> ClientTls {
        ClientTls::new(ClientTlsFiles {
            ca: self.ca_path(),
            cert: files.map(|files| files.cert.clone()),
            key: files.map(|files| files.key.clone()),
        })
        .expect("a client configuration")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
