//! A throwaway certificate authority (rcgen) for `sluice cluster start --local --tls` and for
//! tests: a self-signed CA that issues leaf certificates valid for both server and client
//! authentication, with DNS and IP subject alternative names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::config::{ClientAuth, ClientTlsFiles, ServerTlsFiles};
use crate::error::TlsError;

/// How long issued certificates are valid by default: a year.
pub const VALIDITY_DEFAULT: Duration = Duration::from_secs(365 * 24 * 3600);

fn generate(error: rcgen::Error) -> TlsError {
    TlsError::Generate(error.to_string())
}

/// A CA held in memory (its key included).
pub struct DevCa {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (the chain is this one certificate: the CA is the trust anchor).
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// Where [`Issued::write`] put a certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key (mode 0600).
    pub key: PathBuf,
}

impl IssuedFiles {
    /// A listener's files: this certificate, `ca` for client certificates.
    pub fn server(&self, ca: &Path, client_auth: ClientAuth) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: Some(ca.to_path_buf()),
            client_auth,
        }
    }

    /// A client's files: this certificate presented, `ca` trusted.
    pub fn client(&self, ca: &Path) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: ca.to_path_buf(),
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
        }
    }
}

impl DevCa {
    /// A new CA named `name` (its subject CN), valid for ten years.
    pub fn new(name: &str) -> Result<DevCa, TlsError> {
        DevCa::with_key(name, KeyPair::generate().map_err(generate)?)
    }

    /// The CA named `name` whose key [`DevCa::key_pem`] gave: what it issues chains to the CA
    /// certificate written when it was made (same subject, same key), so a CA kept on disk can
    /// issue more certificates later.
    pub fn from_key_pem(name: &str, key_pem: &str) -> Result<DevCa, TlsError> {
        DevCa::with_key(name, KeyPair::from_pem(key_pem).map_err(generate)?)
    }

    fn with_key(name: &str, key: KeyPair) -> Result<DevCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let certificate = params.self_signed(&key).map_err(generate)?;
        Ok(DevCa { certificate, key })
    }

    /// The CA's private key, PEM (PKCS#8): whoever holds it can issue certificates that every
    /// peer trusting this CA accepts.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Writes the CA's private key to `path` (mode 0600).
    pub fn write_key(&self, path: &Path) -> Result<(), TlsError> {
        write(path, &self.key_pem(), 0o600)
    }

    /// The CA certificate, PEM: the bundle that clients and servers trust.
    pub fn cert_pem(&self) -> String {
        self.certificate.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<(), TlsError> {
        write(path, &self.cert_pem(), 0o644)
    }

    /// A certificate for `names` (DNS names or IP addresses; the first is also the subject CN),
    /// valid from a day ago for `validity`.
    pub fn issue(&self, names: &[&str], validity: Duration) -> Result<Issued, TlsError> {
        let now = OffsetDateTime::now_utc();
        self.issue_between(names, now - time::Duration::days(1), now + validity)
    }

    /// A certificate for `names` valid between `not_before` and `not_after` (an expired one for
    /// tests: both in the past).
    pub fn issue_between(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, TlsError> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(generate)?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(generate)?;
        let certificate = params.signed_by(&key, &self.certificate, &self.key).map_err(generate)?;
        Ok(Issued { cert_pem: certificate.pem(), key_pem: key.serialize_pem() })
    }
}

impl Issued {
    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key` (mode 0600), replacing them atomically
    /// (a reloading reader sees the old or the new file, never half of one).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<IssuedFiles, TlsError> {
        let files = IssuedFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        write(&files.key, &self.key_pem, 0o600)?;
        write(&files.cert, &self.cert_pem, 0o644)?;
        Ok(files)
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed =
        |source| TlsError::Read { what: "file to write", path: path.to_path_buf(), source };
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}
