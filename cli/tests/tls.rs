//! `sluice` over TLS against a real `sluice-sc`: certificates from `sluice cluster certs`, the
//! connection settings from a `--config` file, flags over the file, and the errors of a
//! plaintext client and of a refused certificate.

mod common;

use std::path::Path;

use common::sluice;
use sluice_testkit::process::ScProcess;

fn path(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn config_file_flags_and_refusals_against_a_tls_sc() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let other = dir.path().join("other");
    for (out, cluster) in [(&tls, "test"), (&other, "elsewhere")] {
        let run = sluice(&[
            "cluster",
            "certs",
            "--out",
            &path(out),
            "--cluster",
            cluster,
            "--spus",
            "5001",
            "--sc-host",
            "127.0.0.1",
        ])
        .success("cluster certs");
        assert!(run.stdout.contains("ca.key private"), "{}", run.stdout);
    }
    for file in ["ca.pem", "ca.key", "sc.pem", "sc.key", "spu-5001.pem", "admin.pem", "admin.key"] {
        assert!(tls.join(file).exists(), "{file} missing");
    }
    let sc = ScProcess::builder(&dir.path().join("data"))
        .flags(&[
            format!("--tls-cert={}", path(&tls.join("sc.pem"))),
            format!("--tls-key={}", path(&tls.join("sc.key"))),
            format!("--tls-ca={}", path(&tls.join("ca.pem"))),
            "--tls-client-auth=required".to_owned(),
        ])
        .start();
    let address = sc.public_address.to_string();
    let client_file = dir.path().join("client.toml");
    std::fs::write(
        &client_file,
        format!(
            "sc = \"{address}\"\ntls_ca = \"tls/ca.pem\"\ntls_cert = \"tls/admin.pem\"\n\
             tls_key = \"tls/admin.key\"\n"
        ),
    )
    .unwrap();
    let config = path(&client_file);

    let listed = sluice(&["--config", &config, "spu", "list", "-O", "json"]).success("spu list");
    assert!(listed.json().is_array(), "{}", listed.stdout);

    let plaintext = sluice(&["--sc", &address, "spu", "list"]);
    assert!(!plaintext.status.success());
    assert!(plaintext.stderr.contains("requires TLS: pass --tls-ca"), "{}", plaintext.stderr);

    // Flags win over the file: a certificate of another CA is refused by the SC.
    let stranger = sluice(&[
        "--config",
        &config,
        "--tls-cert",
        &path(&other.join("admin.pem")),
        "--tls-key",
        &path(&other.join("admin.key")),
        "spu",
        "list",
    ]);
    assert!(!stranger.status.success());
    assert!(stranger.stderr.contains("refused this client's certificate"), "{}", stranger.stderr);

    // Without a client certificate a `required` SC refuses too; the file alone serves again.
    let anonymous =
        sluice(&["--sc", &address, "--tls-ca", &path(&tls.join("ca.pem")), "spu", "list"]);
    assert!(!anonymous.status.success());
    assert!(anonymous.stderr.contains("refused this client's certificate"), "{}", anonymous.stderr);
    sluice(&["--config", &config, "topic", "list"]).success("topic list after the refusals");
}

#[test]
fn deploy_make_certs_writes_a_ca_and_certificates_with_sluice() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tls/make-certs");
    let output = std::process::Command::new(script)
        .env("SLUICE_BIN", common::sluice_bin())
        .args(["--out", &path(dir.path()), "--cluster", "prod", "--spus", "5001,5002"])
        .args(["--client", "app"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for file in ["ca.pem", "sc.pem", "spu-5001.pem", "spu-5002.key", "app.pem", "app.key"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
}

#[test]
fn a_local_cluster_with_tls_serves_its_admin_identity_through_client_toml() {
    let cluster = common::LocalCluster::new();
    let started = cluster.start(&["--spus", "1", "--cores", "1", "--tls"]).success("start --tls");
    let client_file = cluster.dir().join("client.toml");
    assert!(started.stdout.contains("sluice --config"), "{}", started.stdout);
    assert!(client_file.exists());
    for file in ["ca.pem", "ca.key", "sc.pem", "admin.pem", "admin.key"] {
        assert!(cluster.dir().join("tls").join(file).exists(), "tls/{file} missing");
    }
    let config = path(&client_file);
    let spus = sluice(&["--config", &config, "spu", "list", "-O", "json"]).success("spu list");
    assert_eq!(spus.json().as_array().map(Vec::len), Some(1), "{}", spus.stdout);
    // `cluster status` reaches the SC with the cluster's own settings.
    assert_eq!(cluster.status()["spus"].as_array().map(Vec::len), Some(1));

    // Records go through the SPU's TLS public listener; the SPU registered with the SC over
    // mutual TLS on its private listener (`--private-tls-*`).
    sluice(&["--config", &config, "topic", "create", "secured", "--partitions", "1"])
        .success("topic create");
    let produced = common::sluice_with_input(
        &["--config", &config, "produce", "secured"],
        Some(b"one\ntwo\n"),
    )
    .success("produce over TLS");
    assert!(
        produced.stderr.is_empty() || !produced.stderr.contains("error"),
        "{}",
        produced.stderr
    );
    let consumed = sluice(&["--config", &config, "consume", "secured", "-B", "-d"])
        .success("consume over TLS");
    assert_eq!(consumed.stdout.lines().collect::<Vec<_>>(), ["one", "two"], "{}", consumed.stderr);

    let address = cluster.sc_address();
    let plaintext = sluice(&["--sc", &address, "topic", "list"]);
    assert!(!plaintext.status.success());
    assert!(plaintext.stderr.contains("requires TLS"), "{}", plaintext.stderr);
}

#[test]
fn a_local_cluster_with_tls_admits_its_admin_certificate_and_acl_holders_only() {
    let cluster = common::LocalCluster::new();
    let started = cluster.start(&["--spus", "1", "--cores", "1", "--tls"]).success("start --tls");
    assert!(started.stdout.contains("Authorization is on"), "{}", started.stdout);
    let config = path(&cluster.dir().join("client.toml"));
    let ca = path(&cluster.dir().join("tls").join("ca.pem"));
    let sc = cluster.sc_address();

    // The admin certificate's name is a superuser, at the SC and at the SPU.
    sluice(&["--config", &config, "topic", "create", "orders", "--partitions", "1"])
        .success("the admin creates a topic");
    common::sluice_with_input(&["--config", &config, "produce", "orders"], Some(b"by-admin\n"))
        .success("the admin produces");

    // Without a certificate or a token a client is anonymous: refused, and told why.
    let anonymous = sluice(&["--sc", &sc, "--tls-ca", &ca, "topic", "describe", "orders"]);
    assert!(!anonymous.status.success(), "{}", anonymous.stdout);
    assert!(
        anonymous.stderr.contains("Anonymous may not describe topic orders"),
        "{}",
        anonymous.stderr
    );

    // A token names User:bob; he may write only once an ACL allows it.
    let token = sluice(&["--config", &config, "token", "create", "bob"]).success("token create");
    let token = token.stdout.trim().to_owned();
    assert!(token.starts_with("slu_"), "{token}");
    let bob = |args: &[&str], input: Option<&[u8]>| {
        let mut all = vec!["--sc", sc.as_str(), "--tls-ca", ca.as_str(), "--token", token.as_str()];
        all.extend_from_slice(args);
        common::sluice_with_input(&all, input)
    };
    // The SC refuses at once: bob may not even see the topic.
    let refused = bob(&["produce", "orders"], Some(b"by-bob\n"));
    assert!(!refused.status.success(), "bob wrote without an ACL");
    assert!(
        refused.stderr.contains("User:bob may not describe topic orders"),
        "{}",
        refused.stderr
    );
    let add = |operation: &str| {
        let args = [
            "--config",
            &config,
            "acl",
            "add",
            "--principal",
            "User:bob",
            "--topic",
            "orders",
            "--operation",
            operation,
        ];
        sluice(&args).success("acl add");
    };
    // Read (which implies describe): `acl add` returns once every SPU enforces the ACL (and
    // `token create` once every SPU knows the token), so the SPU's very first answer refuses
    // the write, and the SDK says who, what and which topic.
    add("read");
    let refused = bob(&["produce", "orders"], Some(b"by-bob\n"));
    assert!(!refused.status.success(), "bob wrote without a write ACL");
    assert!(
        refused.stderr.contains("User:bob may not write topic orders"),
        "the SPU did not enforce the token and the read ACL when the commands returned: {}",
        refused.stderr
    );
    // Write: allowed at once.
    add("write");
    bob(&["produce", "orders"], Some(b"by-bob\n")).success("bob writes once acl add returned");
    let consumed = bob(&["consume", "orders", "-B", "-d"], None);
    let consumed = consumed.success("bob consumes");
    assert_eq!(consumed.stdout.lines().collect::<Vec<_>>(), ["by-admin", "by-bob"]);
}
