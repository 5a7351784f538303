//! Identities and ACLs against real processes: one `sluice-sc` with `--authorization` and one
//! `sluice-spu`. The SPU is registered before authorization is turned on (the SC restarts with
//! `--authorization` on the same ports), then a bootstrap superuser creates tokens and ACLs and
//! the test checks what each principal may do, at the SC (admin, listings) and at the SPU
//! (produce, fetch), revocation without a restart, that tokens never reach the SC's log, and
//! that ACLs survive an SC restart.

use std::time::Duration;

use sluice_client::{
    ClientConfig, ClientError, Cluster, ConsumerConfig, Poll, ProducerConfig, ProducerRecord,
    StartFrom, TopicSpec,
};
use sluice_proto::object::{AclBinding, AclOperation, AclPermission, AclResource, Principal};
use sluice_proto::object::{TopicName, TopicPrefix};
use sluice_testkit::process::{wait_for, Output, ScProcess, ServerProcess, SpuProcess};

const BOOTSTRAP_TOKEN: &str = "bootstrap-secret-0123456789abcdef";

fn connect(sc: &ScProcess, token: Option<&str>) -> Cluster {
    let mut config: ClientConfig = sc.client_config();
    config.token = token.map(str::to_owned);
    Cluster::connect(config).expect("connect")
}

fn allow(principal: &str, resource: AclResource, operation: AclOperation) -> AclBinding {
    AclBinding {
        principal: Principal::parse(principal).unwrap(),
        resource,
        operation,
        permission: AclPermission::Allow,
    }
}

fn topic(name: &str) -> AclResource {
    AclResource::Topic(TopicName::new(name).unwrap())
}

fn refused_with(result: Result<impl std::fmt::Debug, ClientError>, text: &str) {
    match result {
        Err(ClientError::AuthorizationFailed { message }) => {
            assert_eq!(message, text);
        }
        other => panic!("expected AuthorizationFailed {text:?}, got {other:?}"),
    }
}

fn produce(cluster: &Cluster, topic: &str, value: &[u8]) -> Result<(), ClientError> {
    let producer = cluster.producer(ProducerConfig::default())?;
    let record = ProducerRecord {
        topic,
        partition: Some(0),
        key: None,
        value: Some(value),
        headers: &[],
        timestamp: None,
    };
    producer.send(&record)?.wait().map(|_| ())
}

fn consume_one(cluster: &Cluster, topic: &str) -> Result<Vec<u8>, ClientError> {
    let config = ConsumerConfig { start: StartFrom::Beginning, ..ConsumerConfig::default() };
    let mut consumer = cluster.consumer(topic, 0, config)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Poll::Records(records) = consumer.poll(Duration::from_millis(500))? {
            if let Some(record) = records.into_iter().next() {
                return Ok(record.value.map(|value| value.to_vec()).unwrap_or_default());
            }
        }
    }
    panic!("no record within 30 s");
}

#[test]
fn principals_acls_tokens_and_revocation_end_to_end() {
    let directory = tempfile::tempdir().unwrap();
    let token_file = directory.path().join("bootstrap-token");
    std::fs::write(&token_file, BOOTSTRAP_TOKEN).unwrap();
    let log = directory.path().join("sc.log");
    let mut sc = ScProcess::builder(&directory.path().join("sc"))
        .flags(&["--bootstrap-token-file".to_owned(), token_file.display().to_string()])
        .output(Output::File(log))
        .start();
    let _spu = SpuProcess::builder(&directory.path().join("spu"))
        .id(1)
        .sc(sc.private_address)
        .cores(1)
        .register_custom(sc.public_address)
        .start();
    sc.restart_with_flags(&["--authorization"]);

    let admin = connect(&sc, Some(BOOTSTRAP_TOKEN));
    wait_for("the SPU online", || {
        admin.wait_for_metadata(Duration::from_millis(200), |snapshot| {
            snapshot.spus.values().any(|spu| spu.online).then_some(())
        })
    });
    for name in ["orders", "orders-eu", "payments"] {
        admin.admin().create_topic(name, TopicSpec::computed(1, 1)).expect("superuser creates");
    }
    let alice_token = admin.admin().create_token("alice").expect("create token");
    assert!(alice_token.starts_with("slu_"));
    admin
        .admin()
        .create_acls(vec![
            allow("User:alice", topic("orders"), AclOperation::Write),
            allow("User:alice", topic("orders"), AclOperation::Read),
            allow(
                "User:alice",
                AclResource::TopicPrefix(TopicPrefix::new("orders-").unwrap()),
                AclOperation::Read,
            ),
        ])
        .expect("add ACLs");
    wait_for("topic leaders", || {
        let _ = admin.refresh_metadata();
        ["orders", "orders-eu"]
            .iter()
            .all(|name| admin.metadata().route(name, 0).is_ok())
            .then_some(())
    });
    produce(&admin, "orders-eu", b"from admin").expect("superuser writes");

    let alice = connect(&sc, Some(&alice_token));
    // Listing: only describable topics (describe implied by read/write, also by prefix).
    let mut listed: Vec<String> =
        alice.admin().list_topics().unwrap().into_iter().map(|t| t.name.to_string()).collect();
    listed.sort();
    assert_eq!(listed, ["orders", "orders-eu"]);
    alice.admin().describe_topic("orders-eu").expect("describe implied by a prefix read");
    refused_with(
        alice.admin().describe_topic("payments"),
        "User:alice may not describe topic payments",
    );
    // Produce and fetch at the SPU.
    produce(&alice, "orders", b"hello").expect("alice may write orders");
    assert_eq!(consume_one(&alice, "orders").unwrap(), b"hello");
    assert_eq!(consume_one(&alice, "orders-eu").unwrap(), b"from admin", "prefix read");
    match produce(&alice, "orders-eu", b"nope") {
        Err(ClientError::AuthorizationFailed { message }) => assert!(
            message.starts_with("User:alice may not write topic orders-eu"),
            "the SPU's refusal names principal, operation and resource: {message}"
        ),
        other => panic!("expected a refused write, got {other:?}"),
    }
    // Create and delete at the SC.
    refused_with(
        alice.admin().create_topic("mine", TopicSpec::computed(1, 1)),
        "User:alice may not create topic mine",
    );
    refused_with(alice.admin().delete_topic("orders"), "User:alice may not delete topic orders");
    refused_with(alice.admin().list_acls(None), "User:alice may not alter cluster");
    admin
        .admin()
        .create_acls(vec![
            allow("User:alice", topic("mine"), AclOperation::Create),
            allow("User:alice", topic("mine"), AclOperation::Delete),
        ])
        .unwrap();
    alice.admin().create_topic("mine", TopicSpec::computed(1, 1)).expect("create allowed");
    alice.admin().delete_topic("mine").expect("delete allowed");

    // Anonymous: sees nothing, may do nothing.
    let anonymous = connect(&sc, None);
    assert!(anonymous.admin().list_topics().unwrap().is_empty());
    refused_with(
        anonymous.admin().create_topic("t", TopicSpec::computed(1, 1)),
        "Anonymous may not create topic t",
    );
    // A wrong token is refused outright.
    let mut wrong = sc.client_config();
    wrong.token = Some("slu_not-a-token".into());
    let wrong = Cluster::connect(wrong).and_then(|cluster| cluster.admin().list_topics());
    assert!(matches!(wrong, Err(ClientError::AuthenticationFailed { .. })), "{wrong:?}");

    // Revocation: the open connection's next request is refused, no restart.
    admin.admin().revoke_token("alice").expect("revoke");
    let after = alice.admin().list_topics();
    assert!(matches!(after, Err(ClientError::AuthenticationFailed { .. })), "{after:?}");
    // The SPU too, as soon as the revocation returned (it waits for the SPUs to enforce it).
    let after = produce(&alice, "orders", b"after revocation");
    assert!(matches!(after, Err(ClientError::AuthenticationFailed { .. })), "{after:?}");
    assert!(!admin.admin().list_tokens().unwrap().iter().any(|t| t.name.as_str() == "alice"));

    // ACLs are stored: they survive a restart of the SC.
    let before = admin.admin().list_acls(None).unwrap();
    assert_eq!(before.len(), 5);
    sc.restart();
    let admin = connect(&sc, Some(BOOTSTRAP_TOKEN));
    assert_eq!(admin.admin().list_acls(None).unwrap(), before);

    // Tokens never reach the log.
    let text = sc.log();
    assert!(text.contains("access token created"), "the log is the SC's");
    assert!(!text.contains(&alice_token), "the SC logged a token");
    assert!(!text.contains(BOOTSTRAP_TOKEN), "the SC logged the bootstrap token");
}
