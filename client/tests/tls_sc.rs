//! The SDK against a real `sluice-sc` whose public address speaks TLS (certificates from the
//! dev CA): admin calls over TLS with and without a client certificate, the identity the SC
//! sees, refused certificates (another CA, expired) with their own errors, and plaintext/TLS
//! mismatches in both directions, each named, with both sides alive afterwards.

use std::path::{Path, PathBuf};

use sluice_client::{ClientConfig, ClientError, Cluster, SpuId, SpuSpec, TlsConfig, TlsFailure};
use sluice_proto::object::{Endpoint, SpuType};
use sluice_testkit::process::{Output, ScProcess, ServerProcess};
use sluice_tls::dev_ca::{DevCa, IssuedFiles, VALIDITY_DEFAULT};

/// The CA, the SC's certificate and client certificates, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Pki {
    fn new() -> Pki {
        Pki::named("test CA")
    }

    fn named(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new(name).unwrap();
        ca.write_cert(&dir.path().join("ca.pem")).unwrap();
        Pki { dir, ca }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn issue(&self, stem: &str, names: &[&str]) -> IssuedFiles {
        self.ca.issue(names, VALIDITY_DEFAULT).unwrap().write(self.dir.path(), stem).unwrap()
    }

    fn sc_flags(&self) -> Vec<String> {
        let sc = self.issue("sc", &["sc.default", "127.0.0.1", "localhost"]);
        vec![
            format!("--tls-cert={}", sc.cert.display()),
            format!("--tls-key={}", sc.key.display()),
            format!("--tls-ca={}", self.ca_path().display()),
            "--tls-client-auth=optional".into(),
        ]
    }
}

fn start_sc(data: &Path, log: &Path, flags: &[String]) -> ScProcess {
    ScProcess::builder(data)
        .flags(flags)
        .env("RUST_LOG", "info,sluice_sc::server=debug")
        .output(Output::File(log.to_owned()))
        .start()
}

fn config(sc: &ScProcess, tls: Option<TlsConfig>) -> ClientConfig {
    ClientConfig { tls, ..sc.client_config() }
}

fn custom_spu(id: i32) -> SpuSpec {
    SpuSpec {
        id: SpuId(id),
        spu_type: SpuType::Custom,
        rack: None,
        public_endpoint: Endpoint::new("127.0.0.1", 19_005),
        private_endpoint: Endpoint::new("127.0.0.1", 19_006),
        encryption: Default::default(),
    }
}

/// An admin call that must work: the SC is alive and serving.
fn assert_serves(config: ClientConfig) {
    let cluster = Cluster::connect(config).expect("connect");
    cluster.admin().list_spus().expect("list SPUs");
}

#[test]
fn admin_calls_work_over_tls_and_the_sc_knows_the_client_identity() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sc.log");
    let mut sc = start_sc(&dir.path().join("data"), &log, &pki.sc_flags());
    let admin = pki.issue("admin", &["admin"]);

    let with_certificate = TlsConfig::new(pki.ca_path()).with_certificate(&admin.cert, &admin.key);
    let cluster = Cluster::connect(config(&sc, Some(with_certificate))).unwrap();
    cluster.admin().register_spu(custom_spu(7)).unwrap();
    let spus = cluster.admin().list_spus().unwrap();
    assert_eq!(spus.iter().map(|spu| spu.spec.id).collect::<Vec<_>>(), [SpuId(7)]);
    sc.wait_while_running("the SC to log the client's identity", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("(admin)")
    });

    // Client certificates are optional on this SC: the CA alone is enough.
    assert_serves(config(&sc, Some(TlsConfig::new(pki.ca_path()))));
    // A server name override that the certificate carries verifies too.
    let by_name =
        TlsConfig { server_name: Some("sc.default".into()), ..TlsConfig::new(pki.ca_path()) };
    assert_serves(config(&sc, Some(by_name)));
}

fn handshake_failure(result: Result<Cluster, ClientError>) -> TlsFailure {
    match result {
        Err(ClientError::TlsHandshake { failure, .. }) => failure,
        Err(other) => panic!("expected a TLS handshake error, got {other:?}: {other}"),
        Ok(_) => panic!("expected a TLS handshake error, got a connection"),
    }
}

#[test]
fn refused_certificates_get_their_own_errors_and_the_sc_stays_up() {
    let pki = Pki::new();
    let other = Pki::named("other CA");
    // Two throwaway CAs of the same name: the issuer is found by name, its signature fails.
    let namesake = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sc.log");
    let sc = start_sc(&dir.path().join("data"), &log, &pki.sc_flags());

    // A client certificate of another CA.
    for ca in [&other, &namesake] {
        let stranger = ca.issue("stranger", &["stranger"]);
        let tls = TlsConfig::new(pki.ca_path()).with_certificate(&stranger.cert, &stranger.key);
        let error = Cluster::connect(config(&sc, Some(tls))).unwrap_err();
        assert!(!error.is_retriable());
        assert!(error.to_string().contains("refused this client's certificate"), "{error}");
        let tls = TlsConfig::new(pki.ca_path()).with_certificate(&stranger.cert, &stranger.key);
        assert_eq!(
            handshake_failure(Cluster::connect(config(&sc, Some(tls)))),
            TlsFailure::ClientCertificateRejected
        );
    }

    // An expired client certificate of the right CA.
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .ca
        .issue_between(&["late"], now - time::Duration::days(10), now - time::Duration::days(1))
        .unwrap()
        .write(pki.dir.path(), "expired")
        .unwrap();
    let tls = TlsConfig::new(pki.ca_path()).with_certificate(&expired.cert, &expired.key);
    assert_eq!(
        handshake_failure(Cluster::connect(config(&sc, Some(tls)))),
        TlsFailure::ClientCertificateRejected
    );

    // The client trusting another CA refuses the SC's certificate.
    let error = Cluster::connect(config(&sc, Some(TlsConfig::new(other.ca_path())))).unwrap_err();
    assert!(error.to_string().contains("not trusted"), "{error}");
    assert_eq!(
        handshake_failure(Cluster::connect(config(&sc, Some(TlsConfig::new(other.ca_path()))))),
        TlsFailure::ServerCertificateRejected
    );

    assert_serves(config(&sc, Some(TlsConfig::new(pki.ca_path()))));
}

#[test]
fn plaintext_and_tls_on_the_wrong_port_are_named_and_both_sides_go_on() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let tls_log = dir.path().join("tls-sc.log");
    let tls_sc = start_sc(&dir.path().join("tls-data"), &tls_log, &pki.sc_flags());
    let plain_log = dir.path().join("plain-sc.log");
    let plain_sc = start_sc(&dir.path().join("plain-data"), &plain_log, &[]);

    // A plaintext client on the TLS port.
    let error = Cluster::connect(config(&tls_sc, None)).unwrap_err();
    assert!(matches!(error, ClientError::TlsRequired { .. }), "{error:?}");
    assert!(error.to_string().contains("requires TLS: pass --tls-ca"), "{error}");
    assert!(std::fs::read_to_string(&tls_log)
        .unwrap()
        .contains("a plaintext client connected to the TLS port"));

    // A TLS client on the plaintext port.
    let error =
        Cluster::connect(config(&plain_sc, Some(TlsConfig::new(pki.ca_path())))).unwrap_err();
    assert!(matches!(error, ClientError::NotTls { .. }), "{error:?}");
    assert!(error.to_string().contains("does not speak TLS"), "{error}");
    let plain_sc_log = std::fs::read_to_string(&plain_log).unwrap();
    assert!(plain_sc_log.contains("a TLS client connected to a plaintext port"), "{plain_sc_log}");

    // Both SCs serve the right clients afterwards.
    assert_serves(config(&tls_sc, Some(TlsConfig::new(pki.ca_path()))));
    assert_serves(config(&plain_sc, None));
}

#[test]
fn a_rotated_certificate_serves_new_connections_and_established_ones_go_on() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sc.log");
    let sc = start_sc(&dir.path().join("data"), &log, &pki.sc_flags());
    let before = Cluster::connect(config(&sc, Some(TlsConfig::new(pki.ca_path())))).unwrap();
    before.admin().list_spus().unwrap();

    // The SC's certificate is replaced by one of another CA, written over the same files.
    let next = Pki::named("next CA");
    next.ca
        .issue(&["sc.default", "127.0.0.1"], VALIDITY_DEFAULT)
        .unwrap()
        .write(pki.dir.path(), "sc")
        .unwrap();
    sluice_testkit::process::wait_for("new connections to get the new certificate", || {
        Cluster::connect(config(&sc, Some(TlsConfig::new(next.ca_path())))).ok()
    });
    let error = Cluster::connect(config(&sc, Some(TlsConfig::new(pki.ca_path())))).unwrap_err();
    assert!(matches!(error, ClientError::TlsHandshake { .. }), "{error:?}");
    // The connection made before the rotation keeps its session.
    before.admin().list_spus().unwrap();
}
