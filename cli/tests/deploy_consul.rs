//! Consul integration of a deployment, against real `consul agent -dev` processes: an SPU
//! registers the service `sluice-spu` with a passing HTTP check on its `/health/ready` and
//! leaves the catalog on SIGTERM; SPUs and the CLI find the SC with `--sc consul://AGENT/CLUSTER`;
//! the ACL policies of `deploy/consul/acl` are enough for the SC, the SPU and a client on an
//! agent that denies by default, and keep the SPU out of the metadata.
//!
//! Needs the Consul binary (deploy/dev/setup) and `sluice-sc`, `sluice-spu` next to `sluice`.

mod deploy_common;

use std::process::Command;

use deploy_common::{repo, sluice_ok, start_sc, start_spu};
use sluice_kvstore_consul::{
    ConsulClient, ConsulConfig, ConsulError, HealthFilter, ServiceHealth, ServiceRegistration,
};
use sluice_testkit::process::{
    consul_agent, consul_binary, wait_until, ConsulAgent, ServerProcess, Stopped,
};

const MASTER_TOKEN: &str = "0b0a5c1e-7d1f-4f3a-9e55-2c6b8d4e1f90";

fn host_port(agent: &ConsulAgent) -> String {
    agent.http_address().trim_start_matches("http://").to_owned()
}

fn spu_instances(client: &ConsulClient, filter: HealthFilter) -> Vec<ServiceHealth> {
    client.health_service("sluice-spu", filter).map(|answer| answer.value).unwrap_or_default()
}

fn online_spus(sc: &str, env: &[(&str, &str)]) -> usize {
    let listed = sluice_ok(&["--sc", sc, "spu", "list", "-O", "json"], env);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("spu list JSON");
    listed
        .as_array()
        .expect("a list")
        .iter()
        .filter(|spu| spu["status"]["resolution"] == "online")
        .count()
}

#[test]
fn an_spu_registers_in_consul_and_leaves_on_sigterm_and_clients_find_the_sc() {
    let agent = consul_agent();
    let consul = agent.http_address();
    let dir = tempfile::tempdir().expect("temporary directory");
    let sc = start_sc(
        dir.path(),
        None,
        &["--store", "consul", "--consul-address", &consul, "--cluster", "east"],
        &[],
    );
    // The CLI and the SPU name no SC address: they ask the agent.
    let url = format!("consul://{}/east", host_port(&agent));
    let created = sluice_ok(
        &["--sc", &url, "spu-group", "create", "g", "--replicas", "1", "--first-id", "5001"],
        &[],
    );
    eprintln!("{created}");
    let mut spu = start_spu(
        dir.path(),
        "spu",
        None,
        &[
            "--id",
            "5001",
            "--sc",
            &url,
            "--consul-address",
            &consul,
            "--cluster",
            "east",
            "--rack",
            "r1",
        ],
    );
    let client = agent.client();
    let started = std::time::Instant::now();
    spu.wait_while_running("the SPU to pass its Consul check", || {
        spu_instances(&client, HealthFilter::PassingOnly).len() == 1
    });
    eprintln!("SPU passing in Consul {:?} after its registration at the SC", started.elapsed());
    let instance = spu_instances(&client, HealthFilter::PassingOnly).remove(0);
    let public_port = spu.public_address.port();
    assert_eq!(instance.port, public_port);
    assert_eq!(instance.address, "127.0.0.1");
    for tag in ["cluster=east", "spu=5001", "rack=r1"] {
        assert!(instance.tags.iter().any(|have| have == tag), "{tag} in {:?}", instance.tags);
    }
    assert!(
        instance.checks.iter().any(|check| check.check_id.ends_with("-ready")),
        "the HTTP check on /health/ready: {:?}",
        instance.checks
    );
    assert_eq!(online_spus(&url, &[]), 1);
    // The active SC says so in its registration; clients try it first.
    wait_until("the SC's registration to be tagged active", || {
        client.health_service("sluice-sc-east", HealthFilter::PassingOnly).is_ok_and(|answer| {
            answer.value.iter().any(|sc| sc.tags.iter().any(|tag| tag == "active"))
        })
    });
    let found = sluice_kvstore_consul::discover_sc(
        &client,
        "east",
        sluice_kvstore_consul::ScEndpoint::Private,
    )
    .expect("discover");
    assert_eq!(found, [sc.private_address.to_string()]);

    let Stopped { status, elapsed: took } = spu.terminate();
    assert!(status.success(), "{status}\n{}", spu.log());
    eprintln!("SPU stopped {took:?} after SIGTERM");
    // Deregistered before the process exited.
    assert!(
        spu_instances(&client, HealthFilter::All).is_empty(),
        "{:?}",
        spu_instances(&client, HealthFilter::All)
    );
    assert!(spu.log().contains("deregistered from Consul"), "{}", spu.log());

    // An unknown cluster is a clear, retriable error of the CLI.
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--sc", &format!("consul://{}/west", host_port(&agent)), "topic", "list"])
        .output()
        .expect("run sluice");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no passing instance of sluice-sc-west"), "{stderr}");
}

/// `consul acl policy create` + `consul acl token create`, as an operator does it; the token's
/// secret.
fn token_for(agent: &ConsulAgent, policy: &str) -> String {
    let consul = consul_binary().unwrap_or_else(|error| panic!("{error}"));
    let http = format!("-http-addr={}", agent.http_address());
    let token = format!("-token={MASTER_TOKEN}");
    let rules = repo().join("deploy/consul/acl").join(format!("{policy}.hcl"));
    let run = |args: &[&str]| {
        let output = Command::new(&consul).args(args).output().expect("run consul");
        assert!(
            output.status.success(),
            "consul {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let rules_arg = format!("@{}", rules.display());
    run(&["acl", "policy", "create", &http, &token, "-name", policy, "-rules", &rules_arg]);
    let created =
        run(&["acl", "token", "create", &http, &token, "-policy-name", policy, "-format=json"]);
    let created: serde_json::Value = serde_json::from_str(&created).expect("token JSON");
    created["SecretID"].as_str().expect("SecretID").to_owned()
}

fn client_with(agent: &ConsulAgent, token: &str) -> ConsulClient {
    ConsulClient::new(ConsulConfig::new(agent.http_address()).with_token(token)).expect("client")
}

#[test]
fn acl_policies_suffice_and_keep_the_spu_out_of_the_metadata() {
    let agent = ConsulAgent::builder()
        .acl_master_token(MASTER_TOKEN)
        .start()
        .unwrap_or_else(|error| panic!("{error}"));
    let consul = agent.http_address();
    let sc_token = token_for(&agent, "sluice-sc");
    let spu_token = token_for(&agent, "sluice-spu");
    let client_token = token_for(&agent, "sluice-client");
    let dir = tempfile::tempdir().expect("temporary directory");
    // The SC's token through its environment variable, as /etc/sluice/sc.env gives it.
    let mut sc = start_sc(
        dir.path(),
        None,
        &["--store", "consul", "--consul-address", &consul],
        &[("SLUICE_SC_CONSUL_TOKEN", sc_token.as_str())],
    );
    let url = format!("consul://{}/default", host_port(&agent));
    let client_env = [("CONSUL_HTTP_TOKEN", client_token.as_str())];
    sluice_ok(
        &["--sc", &url, "spu-group", "create", "g", "--replicas", "1", "--first-id", "5001"],
        &client_env,
    );
    let mut spu = start_spu(
        dir.path(),
        "spu",
        None,
        &["--id", "5001", "--sc", &url, "--consul-address", &consul, "--consul-token", &spu_token],
    );
    let master = agent.client();
    spu.wait_while_running("the SPU to pass its Consul check", || {
        spu_instances(&master, HealthFilter::PassingOnly).len() == 1
    });
    assert_eq!(online_spus(&url, &client_env), 1);
    sluice_ok(&["--sc", &url, "topic", "create", "guarded"], &client_env);
    let keys = master.kv_keys("sluice/default/", None).expect("keys");
    assert!(keys.iter().any(|key| key.contains("guarded")), "the SC wrote its metadata: {keys:?}");

    // The SPU's token reads no metadata, writes none, and cannot pose as an SC.
    let spu_client = client_with(&agent, &spu_token);
    let denied = |result: Result<(), ConsulError>, what: &str| match result {
        Err(ConsulError::PermissionDenied { .. }) => {}
        other => panic!("{what}: expected a permission error, got {other:?}"),
    };
    denied(spu_client.kv_put("sluice/default/topics/evil", b"{}").map(|_| ()), "kv put");
    denied(spu_client.kv_get("sluice/default/sc-leader").map(|_| ()), "kv get");
    let posing = ServiceRegistration {
        id: "fake-sc".into(),
        name: "sluice-sc-default".into(),
        port: Some(1),
        ..ServiceRegistration::default()
    };
    denied(spu_client.agent_service_register(&posing), "register as an SC");
    // The client's token only reads.
    denied(
        client_with(&agent, &client_token).kv_put("sluice/x", b"1").map(|_| ()),
        "client kv put",
    );

    let Stopped { status, elapsed: _ } = spu.terminate();
    assert!(status.success(), "{status}\n{}", spu.log());
    assert!(
        spu_instances(&master, HealthFilter::All).is_empty(),
        "deregistered with its own token"
    );
    let Stopped { status, elapsed: _ } = sc.terminate();
    assert!(status.success(), "{status}\n{}", sc.log());
    assert!(
        master
            .health_service("sluice-sc-default", HealthFilter::All)
            .expect("query")
            .value
            .is_empty(),
        "the SC deregistered with its own token"
    );
}
