//! Consul-only behaviour of the Consul metadata store, against real `consul agent -dev`
//! processes (one per test, killed on drop): fencing with real leadership tokens, the key
//! layout an operator reads, foreign writes, resync after the agent lost its state, and clean
//! errors while the agent is down. The backend-agnostic behaviour is in `store_conformance.rs`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_kvstore_consul::{Leadership, LeadershipConfig};
use sluice_sc::store::consul::{ConsulStore, ConsulStoreConfig};
use sluice_sc::store::{
    ExpectedVersion, FencingToken, MetadataStore, ObjectKey, ObjectKind, StoreError, TypedStore,
    Version, WatchEvent,
};
use sluice_testkit::process::{consul_agent, ConsulAgent};

/// How long a test waits for an expected watch event (a restarted agent needs a few seconds,
/// and the watch backs off while it is down).
const EVENT_WAIT: Duration = Duration::from_secs(60);

const LOCK_KEY: &str = "sluice/sc-leader";

fn open_store(agent: &ConsulAgent, cluster: &str) -> ConsulStore {
    let config = ConsulStoreConfig::new(agent.config())
        .with_cluster(cluster)
        .with_watch_wait(Duration::from_secs(1));
    ConsulStore::open(config).expect("open the Consul store")
}

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid key")
}

fn campaign(agent: &ConsulAgent, name: &str) -> (Leadership, FencingToken) {
    let config = LeadershipConfig::new(LOCK_KEY, name, Duration::from_secs(10));
    let mut leadership = Leadership::new(agent.client(), config);
    let token = leadership
        .campaign(Duration::from_secs(60))
        .expect("campaign for leadership")
        .expect("the lock is free: this candidate wins");
    let token = FencingToken {
        lock_key: token.key,
        lock_index: token.lock_index.get(),
        session: token.session.as_str().to_owned(),
    };
    (leadership, token)
}

fn assert_fenced(result: Result<Version, StoreError>) {
    match result {
        Err(StoreError::Fenced { reason }) => assert!(reason.contains(LOCK_KEY), "{reason}"),
        other => panic!("expected a fenced write, got {other:?}"),
    }
}

fn next_event(events: &crossbeam_channel::Receiver<WatchEvent>) -> WatchEvent {
    events.recv_timeout(EVENT_WAIT).expect("a watch event within the deadline")
}

#[test]
fn fencing_refuses_stale_tokens_and_accepts_the_current_one() {
    let agent = consul_agent();
    let store = open_store(&agent, "fencing");
    let (first_leadership, first) = campaign(&agent, "sc-1");
    let version = store
        .put(ObjectKind::Topic, &key("orders"), b"1", ExpectedVersion::Absent, Some(&first))
        .expect("a current token writes");

    let wrong_index = FencingToken { lock_index: first.lock_index + 1, ..first.clone() };
    assert_fenced(store.put(
        ObjectKind::Topic,
        &key("orders"),
        b"2",
        ExpectedVersion::Exactly(version),
        Some(&wrong_index),
    ));

    // The first SC's session dies (as when it is partitioned away and its TTL expires).
    let session = sluice_kvstore_consul::SessionId::new(first.session.clone());
    agent.client().session_destroy(&session).expect("destroy the session");
    assert_fenced(store.put(
        ObjectKind::Topic,
        &key("orders"),
        b"2",
        ExpectedVersion::Exactly(version),
        Some(&first),
    ));
    assert_fenced(store.delete(ObjectKind::Topic, &key("orders"), version, Some(&first)));
    drop(first_leadership);

    // A new SC takes the lock; the deposed one stays fenced, the new one writes.
    let (_second_leadership, second) = campaign(&agent, "sc-2");
    assert_ne!(second.session, first.session);
    assert_fenced(store.put(
        ObjectKind::Topic,
        &key("other"),
        b"3",
        ExpectedVersion::Absent,
        Some(&first),
    ));
    let object = store.get(ObjectKind::Topic, &key("orders")).unwrap().expect("still there");
    assert_eq!((object.version, object.value), (version, b"1".to_vec()), "nothing written");
    assert_eq!(store.get(ObjectKind::Topic, &key("other")).unwrap(), None, "nothing written");

    let updated = store
        .put(
            ObjectKind::Topic,
            &key("orders"),
            b"4",
            ExpectedVersion::Exactly(version),
            Some(&second),
        )
        .expect("the new leader writes");
    store.delete(ObjectKind::Topic, &key("orders"), updated, Some(&second)).unwrap();
    // Unfenced writes are plain CAS writes.
    store.put(ObjectKind::Topic, &key("free"), b"5", ExpectedVersion::Absent, None).unwrap();
}

#[test]
fn objects_are_readable_json_under_the_documented_keys() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Spec {
        partitions: u32,
        rack: String,
    }
    let agent = consul_agent();
    let config =
        ConsulStoreConfig::new(agent.config()).with_key_prefix("org/sluice").with_cluster("blue");
    let store = ConsulStore::open(config).expect("open");
    let spec = Spec { partitions: 3, rack: "a".into() };
    let version = store
        .put_typed(ObjectKind::SpuGroup, &key("main"), &spec, ExpectedVersion::Absent, None)
        .unwrap();

    let client = agent.client();
    let entry = client.kv_get("org/sluice/blue/spu-groups/main").unwrap().expect("documented key");
    assert_eq!(entry.modify_index.get(), version.get(), "versions are ModifyIndex");
    let text = String::from_utf8(entry.value).expect("UTF-8 JSON");
    assert!(text.contains("\n  \"partitions\": 3"), "pretty JSON for operators: {text}");
    assert_eq!(serde_json::from_str::<Spec>(&text).unwrap(), spec);
    assert_eq!(store.object_path(ObjectKind::SpuGroup, &key("main")), entry.key);

    for kind in ObjectKind::ALL {
        store.put(kind, &key("x"), b"{}", ExpectedVersion::Absent, None).unwrap();
        let path = format!("org/sluice/blue/{}/x", kind.as_str());
        assert_eq!(client.kv_get(&path).unwrap().expect(&path).value, b"{}");
    }
    let deleted = store.delete(ObjectKind::SpuGroup, &key("main"), version, None).unwrap();
    assert_eq!(client.kv_get("org/sluice/blue/spu-groups/main").unwrap(), None);
    let marker = client.kv_get("org/sluice/blue/last-delete").unwrap().expect("marker");
    assert_eq!(marker.modify_index.get(), deleted.get(), "a delete's version is exact");
    let marker: serde_json::Value = serde_json::from_slice(&marker.value).unwrap();
    assert_eq!(marker, serde_json::json!({"kind": "spu-groups", "key": "main"}));

    let refused =
        store.put(ObjectKind::Topic, &key("bad"), b"not json", ExpectedVersion::Absent, None);
    assert!(matches!(refused, Err(StoreError::InvalidValue { .. })), "{refused:?}");
    let bad = ConsulStoreConfig::new(agent.config()).with_cluster("a/b");
    assert!(matches!(ConsulStore::open(bad), Err(StoreError::Backend { .. })));
}

#[test]
fn watch_reports_other_writers_changes() {
    let agent = consul_agent();
    let store = open_store(&agent, "foreign");
    let revision = store.list(ObjectKind::Topic).unwrap().revision;
    let events = store.watch(&[ObjectKind::Topic], revision).unwrap();
    let client = agent.client();
    client.kv_put("sluice/foreign/topics/by-hand", br#"{"partitions":1}"#).unwrap();
    client.kv_put("sluice/foreign/unrelated", b"x").unwrap();
    let put_version = match next_event(&events) {
        WatchEvent::Put { kind: ObjectKind::Topic, key: put_key, version, value } => {
            assert_eq!((put_key, value), (key("by-hand"), br#"{"partitions":1}"#.to_vec()));
            version
        }
        other => panic!("expected the operator's put, got {other:?}"),
    };
    client.kv_delete("sluice/foreign/topics/by-hand").unwrap();
    match next_event(&events) {
        WatchEvent::Delete { kind: ObjectKind::Topic, key: deleted_key, version } => {
            assert_eq!(deleted_key, key("by-hand"));
            assert!(version > put_version);
        }
        other => panic!("expected the operator's delete, got {other:?}"),
    }

    // Before the watch starts: another writer's put is replayed from the snapshot; another
    // writer's delete leaves no trace but Consul's index, so the watch cannot tell what it
    // missed and resyncs.
    let mine =
        store.put(ObjectKind::Topic, &key("mine"), b"1", ExpectedVersion::Absent, None).unwrap();
    let revision = store.list(ObjectKind::Topic).unwrap().revision;
    client.kv_put("sluice/foreign/topics/late", b"2").unwrap();
    let events = store.watch(&[ObjectKind::Topic], revision).unwrap();
    match next_event(&events) {
        WatchEvent::Put { key: put_key, value, .. } => {
            assert_eq!((put_key, value), (key("late"), b"2".to_vec()));
        }
        other => panic!("expected the put made before the watch, got {other:?}"),
    }
    client.kv_delete("sluice/foreign/topics/mine").unwrap();
    let events = store.watch(&[ObjectKind::Topic], mine).unwrap();
    assert!(matches!(next_event(&events), WatchEvent::Resync { .. }));
}

#[test]
fn watch_resyncs_after_the_agent_restarts_and_the_store_recovers() {
    let mut agent = consul_agent();
    let store = open_store(&agent, "restart");
    // Enough writes that the restarted agent's index starts well below the watch's position.
    for index in 0..20 {
        let name = format!("t{index}");
        store.put(ObjectKind::Topic, &key(&name), b"0", ExpectedVersion::Absent, None).unwrap();
    }
    let listing = store.list(ObjectKind::Topic).unwrap();
    let events = store.watch(&[ObjectKind::Topic], listing.revision).unwrap();
    agent.restart().unwrap_or_else(|error| panic!("{error}"));
    match next_event(&events) {
        WatchEvent::Resync { .. } => {}
        other => panic!("expected a resync after the agent lost its state, got {other:?}"),
    }
    assert!(events.recv_timeout(EVENT_WAIT).is_err(), "a resync is the last event");

    // The consumer lists again and watches from the new revision.
    let listing = store.list(ObjectKind::Topic).unwrap();
    assert!(listing.objects.is_empty(), "a -dev agent restarts empty");
    let events = store.watch(&[ObjectKind::Topic], listing.revision).unwrap();
    let version =
        store.put(ObjectKind::Topic, &key("after"), b"1", ExpectedVersion::Absent, None).unwrap();
    assert_eq!(next_event(&events).version(), Some(version));

    // A watch from a version the restarted agent never handed out resyncs at once.
    let stale = store.watch(&[ObjectKind::Topic], Version(u64::MAX / 2)).unwrap();
    assert!(matches!(next_event(&stale), WatchEvent::Resync { .. }));
}

#[test]
fn an_agent_outage_is_a_clean_error_and_watches_end_with_the_store() {
    let mut agent = consul_agent();
    let store = open_store(&agent, "outage");
    let version =
        store.put(ObjectKind::Spu, &key("1"), b"{}", ExpectedVersion::Absent, None).unwrap();
    let events = store.watch(&[ObjectKind::Spu], version).unwrap();
    agent.stop();

    let started = Instant::now();
    let unavailable = |result: Result<(), StoreError>| match result {
        Err(error @ StoreError::Unavailable { .. }) => {
            assert!(error.to_string().contains("127.0.0.1"), "{error}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    };
    unavailable(store.get(ObjectKind::Spu, &key("1")).map(drop));
    unavailable(store.list(ObjectKind::Spu).map(drop));
    unavailable(
        store.put(ObjectKind::Spu, &key("2"), b"{}", ExpectedVersion::Absent, None).map(drop),
    );
    unavailable(store.delete(ObjectKind::Spu, &key("1"), version, None).map(drop));
    unavailable(store.watch(&[ObjectKind::Spu], version).map(drop));
    unavailable(ConsulStore::open(ConsulStoreConfig::new(agent.config())).map(drop));
    println!("six calls against a stopped agent failed in {:?}", started.elapsed());

    // The watch emitted nothing while the agent was down, and ends when the store is dropped.
    assert!(events.try_recv().is_err(), "nothing spurious during the outage");
    drop(store);
    match events.recv_timeout(EVENT_WAIT) {
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {}
        other => panic!("expected the watch to end with the store, got {other:?}"),
    }
}
