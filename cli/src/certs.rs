//! `sluice cluster certs` and the certificates of `sluice cluster start --local --tls`: a
//! throwaway CA kept in a directory (`ca.pem`, `ca.key`) and the certificates it issues.
//!
//! Names: the SC's certificate names `sc.<cluster>`, SPU N's `spu-N.<cluster>` (the names
//! servers check in-cluster peers by), each plus the hosts clients dial them by, `localhost`
//! and `127.0.0.1`. A client certificate names its identity (its principal).
//!
//! A directory that holds a CA already keeps it: more certificates can be issued later (an SPU
//! added to a local cluster) and still chain to the `ca.pem` everyone trusts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sluice_tls::dev_ca::{DevCa, IssuedFiles};
use sluice_tls::{sc_name, spu_name};

use crate::args::ClusterCertsArgs;

/// Subject of every CA this command makes; a CA reloaded from its key must have the same one.
const CA_NAME: &str = "Sluice development CA";
/// Names every server certificate carries besides its own, for clients on the same machine.
const LOCAL_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA kept in a directory, issuing into it.
pub struct Pki {
    dir: PathBuf,
    ca: DevCa,
    cluster: String,
    validity: Duration,
}

impl Pki {
    /// The CA in `dir` (made, with the directory, when there is none).
    pub fn open(dir: &Path, cluster: &str, validity: Duration) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        let ca = if cert.exists() && key.exists() {
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read the CA key {}", key.display()))?;
            DevCa::from_key_pem(CA_NAME, &key_pem)
                .with_context(|| format!("cannot use the CA key {}", key.display()))?
        } else {
            let ca = DevCa::new(CA_NAME)?;
            ca.write_key(&key)?;
            ca.write_cert(&cert)?;
            ca
        };
        Ok(Pki { dir: dir.to_owned(), ca, cluster: cluster.to_owned(), validity })
    }

    /// The CA bundle to trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(&self, stem: &str, first: String, hosts: &[String]) -> anyhow::Result<IssuedFiles> {
        let mut names = vec![first];
        for host in hosts.iter().map(String::as_str).chain(LOCAL_NAMES) {
            if !names.iter().any(|name| name == host) {
                names.push(host.to_owned());
            }
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let issued = self
            .ca
            .issue(&names, self.validity)
            .with_context(|| format!("cannot issue a certificate for {}", names.join(", ")))?;
        Ok(issued.write(&self.dir, stem)?)
    }

    /// The SC's certificate (`sc.pem`, `sc.key`).
    pub fn issue_sc(&self, hosts: &[String]) -> anyhow::Result<IssuedFiles> {
        self.issue("sc", sc_name(&self.cluster), hosts)
    }

    /// SPU `id`'s certificate (`spu-ID.pem`, `spu-ID.key`).
    pub fn issue_spu(&self, id: i32, hosts: &[String]) -> anyhow::Result<IssuedFiles> {
        self.issue(&format!("spu-{id}"), spu_name(id, &self.cluster), hosts)
    }

    /// SPU `id`'s certificate files, issued when missing.
    pub fn spu_files(&self, id: i32) -> anyhow::Result<IssuedFiles> {
        let files = IssuedFiles {
            cert: self.dir.join(format!("spu-{id}.pem")),
            key: self.dir.join(format!("spu-{id}.key")),
        };
        if files.cert.exists() && files.key.exists() {
            return Ok(files);
        }
        self.issue_spu(id, &[])
    }

    /// A client identity's certificate (`NAME.pem`, `NAME.key`), naming only `name`.
    pub fn issue_client(&self, name: &str) -> anyhow::Result<IssuedFiles> {
        anyhow::ensure!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "client name {name:?}: use letters, digits, '-', '_' and '.'"
        );
        let names = [name];
        let issued = self.ca.issue(&names, self.validity)?;
        Ok(issued.write(&self.dir, name)?)
    }
}

/// `sluice cluster certs`.
pub fn run(args: &ClusterCertsArgs) -> anyhow::Result<()> {
    let pki = Pki::open(&args.out, &args.cluster, args.validity)?;
    let mut written = vec![pki.ca_path()];
    let sc = pki.issue_sc(&args.sc_host)?;
    written.push(sc.cert.clone());
    for id in &args.spus {
        written.push(pki.issue_spu(*id, &args.spu_host)?.cert);
    }
    let clients =
        if args.client.is_empty() { vec!["admin".to_owned()] } else { args.client.clone() };
    for name in &clients {
        written.push(pki.issue_client(name)?.cert);
    }
    println!("Certificates written (each with its .key beside it, mode 0600):");
    for path in &written {
        println!("  {}", path.display());
    }
    let dir = args.out.display();
    println!(
        "Keep {dir}/ca.key private: it issues certificates every member trusts.\nSC: \
         sluice-sc --tls-cert {dir}/sc.pem --tls-key {dir}/sc.key --tls-ca {dir}/ca.pem \
         --tls-client-auth optional\nClient: sluice --tls-ca {dir}/ca.pem --tls-cert \
         {dir}/{0}.pem --tls-key {dir}/{0}.key topic list",
        clients[0]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_ca_issues_more_certificates_that_chain_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let validity = Duration::from_secs(3600);
        let first = Pki::open(dir.path(), "test", validity).unwrap();
        first.issue_sc(&["sc.example".to_owned()]).unwrap();
        let ca_pem = std::fs::read(first.ca_path()).unwrap();
        let again = Pki::open(dir.path(), "test", validity).unwrap();
        assert_eq!(std::fs::read(again.ca_path()).unwrap(), ca_pem, "the CA is kept");
        let spu = again.spu_files(5001).unwrap();
        assert!(spu.cert.exists() && spu.key.exists());
        // The files load as a listener's (chaining is proven in sluice-tls' handshake tests).
        let server = sluice_tls::ServerTlsFiles {
            cert: spu.cert,
            key: spu.key,
            ca: Some(first.ca_path()),
            client_auth: sluice_tls::ClientAuth::Optional,
        };
        sluice_tls::ServerTls::new(server).unwrap();
        assert!(again.issue_client("../escape").is_err());
    }
}
