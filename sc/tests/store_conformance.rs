//! Backend-agnostic conformance suite for [`MetadataStore`].
//!
//! Every behaviour is a function taking `&dyn MetadataStore`; `conformance_suite!` instantiates
//! all of them as tests for one backend. Plugging in another backend is one line at the bottom:
//! `conformance_suite!(consul, consul_backend);` with a factory returning a fresh, empty store.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_sc::store::embedded::EmbeddedStore;
use sluice_sc::store::{
    ExpectedVersion, FencingToken, MetadataStore, ObjectKey, ObjectKind, StoreError, TypedStore,
    Version, WatchEvent,
};

/// How long a test waits for an expected watch event before failing.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// A fresh, empty store plus whatever keeps it alive (a temporary directory, a Consul agent).
pub struct Backend {
    pub store: Arc<dyn MetadataStore>,
    /// A fencing token that is current for this store.
    pub fence: FencingToken,
    pub _guard: Box<dyn std::any::Any>,
}

fn embedded_backend() -> Backend {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let store = EmbeddedStore::open(directory.path()).expect("open the embedded store");
    Backend {
        store: Arc::new(store),
        fence: FencingToken {
            lock_key: "sluice/leader".into(),
            lock_index: 1,
            session: "s".into(),
        },
        _guard: Box::new(directory),
    }
}

/// A fresh Consul agent per test (tests run in parallel; an agent starts in about a second and
/// nothing is shared), the store under `sluice/conformance/`, and a real leadership token.
fn consul_backend() -> Backend {
    use sluice_kvstore_consul::{Leadership, LeadershipConfig};
    use sluice_sc::store::consul::{ConsulStore, ConsulStoreConfig};
    use sluice_testkit::process::consul_agent;

    let agent = consul_agent();
    let config = ConsulStoreConfig::new(agent.config())
        .with_cluster("conformance")
        .with_watch_wait(Duration::from_secs(1));
    let store = ConsulStore::open(config).expect("open the Consul store");
    let lock = LeadershipConfig::new("sluice/sc-leader", "conformance", Duration::from_secs(10));
    let mut leadership = Leadership::new(agent.client(), lock);
    let token = leadership
        .campaign(Duration::from_secs(30))
        .expect("campaign for leadership")
        .expect("the only candidate wins");
    Backend {
        store: Arc::new(store),
        fence: FencingToken {
            lock_key: token.key,
            lock_index: token.lock_index.get(),
            session: token.session.as_str().to_owned(),
        },
        _guard: Box::new((leadership, agent)),
    }
}

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid key")
}

fn create(store: &dyn MetadataStore, kind: ObjectKind, name: &str, value: &str) -> Version {
    store.put(kind, &key(name), value.as_bytes(), ExpectedVersion::Absent, None).expect("create")
}

fn conflict_actual(result: Result<Version, StoreError>) -> Option<Version> {
    match result {
        Err(StoreError::VersionConflict { actual, .. }) => actual,
        other => panic!("expected a version conflict, got {other:?}"),
    }
}

fn next_event(events: &crossbeam_channel::Receiver<WatchEvent>) -> WatchEvent {
    events.recv_timeout(EVENT_WAIT).expect("a watch event within the deadline")
}

mod behaviour {
    use super::*;

    pub fn get_missing_is_none(store: &dyn MetadataStore, _: &Backend) {
        assert_eq!(store.get(ObjectKind::Topic, &key("missing")).unwrap(), None);
        assert!(store.list(ObjectKind::Topic).unwrap().objects.is_empty());
    }

    pub fn create_then_get(store: &dyn MetadataStore, _: &Backend) {
        let version = create(store, ObjectKind::Topic, "orders", r#"{"partitions":3}"#);
        assert!(version > Version::ZERO);
        let object = store.get(ObjectKind::Topic, &key("orders")).unwrap().expect("created");
        assert_eq!(object.key, key("orders"));
        assert_eq!(object.version, version);
        assert_eq!(object.value, br#"{"partitions":3}"#);
    }

    pub fn create_existing_conflicts(store: &dyn MetadataStore, _: &Backend) {
        let version = create(store, ObjectKind::Topic, "orders", "1");
        let again =
            store.put(ObjectKind::Topic, &key("orders"), b"2", ExpectedVersion::Absent, None);
        assert_eq!(conflict_actual(again), Some(version));
        let object = store.get(ObjectKind::Topic, &key("orders")).unwrap().unwrap();
        assert_eq!((object.version, object.value), (version, b"1".to_vec()));
    }

    pub fn update_if_version(store: &dyn MetadataStore, _: &Backend) {
        let first = create(store, ObjectKind::Spu, "5001", r#"{"rack":"a"}"#);
        let put = |value: &str, expected| {
            store.put(ObjectKind::Spu, &key("5001"), value.as_bytes(), expected, None)
        };
        let second = put(r#"{"rack":"b"}"#, ExpectedVersion::Exactly(first)).unwrap();
        assert!(second > first);
        let stale = put(r#"{"rack":"c"}"#, ExpectedVersion::Exactly(first));
        assert_eq!(conflict_actual(stale), Some(second));
        let object = store.get(ObjectKind::Spu, &key("5001")).unwrap().unwrap();
        assert_eq!((object.version, object.value), (second, br#"{"rack":"b"}"#.to_vec()));
        let missing =
            store.put(ObjectKind::Spu, &key("5002"), b"{}", ExpectedVersion::Exactly(second), None);
        assert_eq!(conflict_actual(missing), None);
        assert_eq!(store.get(ObjectKind::Spu, &key("5002")).unwrap(), None);
    }

    pub fn delete_if_version(store: &dyn MetadataStore, _: &Backend) {
        let first = create(store, ObjectKind::Partition, "orders-0", "{}");
        let second = store
            .put(ObjectKind::Partition, &key("orders-0"), b"[]", first.into_expected(), None)
            .unwrap();
        let stale = store.delete(ObjectKind::Partition, &key("orders-0"), first, None);
        assert_eq!(conflict_actual(stale), Some(second));
        assert!(store.get(ObjectKind::Partition, &key("orders-0")).unwrap().is_some());
        let deleted = store.delete(ObjectKind::Partition, &key("orders-0"), second, None).unwrap();
        assert!(deleted > second);
        assert_eq!(store.get(ObjectKind::Partition, &key("orders-0")).unwrap(), None);
        let again = store.delete(ObjectKind::Partition, &key("orders-0"), second, None);
        assert_eq!(conflict_actual(again), None);
        let recreated = create(store, ObjectKind::Partition, "orders-0", "{}");
        assert!(recreated > deleted, "a re-created object gets a version above its delete");
    }

    pub fn versions_increase_across_keys_and_kinds(store: &dyn MetadataStore, _: &Backend) {
        let mut previous = Version::ZERO;
        for index in 0..20 {
            let kind = ObjectKind::ALL[index % ObjectKind::ALL.len()];
            let version = create(store, kind, &format!("object-{index}"), "null");
            assert!(version > previous, "{version} after {previous}");
            previous = version;
        }
        let listing = store.list(ObjectKind::Topic).unwrap();
        assert!(listing.revision >= previous);
    }

    pub fn list_by_kind(store: &dyn MetadataStore, _: &Backend) {
        let mut expected = Vec::new();
        for name in ["b-topic", "a-topic", "c-topic"] {
            let version = create(store, ObjectKind::Topic, name, &format!(r#""{name}""#));
            expected.push((key(name), version, format!(r#""{name}""#).into_bytes()));
        }
        create(store, ObjectKind::Partition, "a-topic-0", "0");
        create(store, ObjectKind::SpuGroup, "a-topic", r#""same key, other kind""#);
        expected.sort();
        let listing = store.list(ObjectKind::Topic).unwrap();
        let listed: Vec<_> = listing
            .objects
            .into_iter()
            .map(|object| (object.key, object.version, object.value))
            .collect();
        assert_eq!(listed, expected);
        let groups = store.list(ObjectKind::SpuGroup).unwrap().objects;
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].value, br#""same key, other kind""#);
        assert!(store.list(ObjectKind::Spu).unwrap().objects.is_empty());
    }

    pub fn watch_sees_changes_in_order_for_its_kinds(store: &dyn MetadataStore, _: &Backend) {
        create(store, ObjectKind::Topic, "before-watch", "0");
        let listing = store.list(ObjectKind::Topic).unwrap();
        let events = store.watch(&[ObjectKind::Topic, ObjectKind::Spu], listing.revision).unwrap();
        let mut expected = Vec::new();
        let first = create(store, ObjectKind::Topic, "t1", "1");
        expected.push(WatchEvent::Put {
            kind: ObjectKind::Topic,
            key: key("t1"),
            version: first,
            value: b"1".to_vec(),
        });
        create(store, ObjectKind::Partition, "t1-0", r#""ignored""#);
        let spu = create(store, ObjectKind::Spu, "1", "2");
        expected.push(WatchEvent::Put {
            kind: ObjectKind::Spu,
            key: key("1"),
            version: spu,
            value: b"2".to_vec(),
        });
        let updated =
            store.put(ObjectKind::Topic, &key("t1"), b"3", first.into_expected(), None).unwrap();
        expected.push(WatchEvent::Put {
            kind: ObjectKind::Topic,
            key: key("t1"),
            version: updated,
            value: b"3".to_vec(),
        });
        create(store, ObjectKind::SpuGroup, "g", r#""ignored""#);
        let deleted = store.delete(ObjectKind::Topic, &key("t1"), updated, None).unwrap();
        expected.push(WatchEvent::Delete {
            kind: ObjectKind::Topic,
            key: key("t1"),
            version: deleted,
        });
        let received: Vec<_> = expected.iter().map(|_| next_event(&events)).collect();
        assert_eq!(received, expected);
        assert!(events.try_recv().is_err(), "no events for other kinds");
    }

    pub fn watch_from_old_version_replays_or_resyncs(store: &dyn MetadataStore, _: &Backend) {
        let versions: Vec<_> = (0..5)
            .map(|index| create(store, ObjectKind::Topic, &format!("t{index}"), "0"))
            .collect();
        let events = store.watch(&[ObjectKind::Topic], versions[2]).unwrap();
        match next_event(&events) {
            WatchEvent::Resync { .. } => {}
            first => {
                assert_eq!(first.version(), Some(versions[3]));
                assert_eq!(next_event(&events).version(), Some(versions[4]));
            }
        }
    }

    pub fn watch_delivers_every_change_of_a_busy_key(store: &dyn MetadataStore, _: &Backend) {
        let revision = store.list(ObjectKind::Topic).unwrap().revision;
        let events = store.watch(&[ObjectKind::Topic], revision).unwrap();
        let mut version = create(store, ObjectKind::Topic, "counter", "0");
        for value in 1..200 {
            let bytes = value.to_string().into_bytes();
            version = store
                .put(ObjectKind::Topic, &key("counter"), &bytes, version.into_expected(), None)
                .unwrap();
        }
        let mut previous = revision;
        for value in 0..200 {
            match next_event(&events) {
                WatchEvent::Put { version, value: bytes, .. } => {
                    assert!(version > previous);
                    assert_eq!(bytes, value.to_string().into_bytes());
                    previous = version;
                }
                other => panic!("expected put {value}, got {other:?}"),
            }
        }
        assert_eq!(previous, version);
    }

    pub fn concurrent_updates_exactly_one_wins(store: &dyn MetadataStore, _: &Backend) {
        const WRITERS: usize = 8;
        let mut version = create(store, ObjectKind::Topic, "contended", "0");
        for round in 0..10 {
            let barrier = Barrier::new(WRITERS);
            let results: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..WRITERS)
                    .map(|writer| {
                        let barrier = &barrier;
                        scope.spawn(move || {
                            barrier.wait();
                            let value = format!("[{round},{writer}]");
                            store.put(
                                ObjectKind::Topic,
                                &key("contended"),
                                value.as_bytes(),
                                version.into_expected(),
                                None,
                            )
                        })
                    })
                    .collect();
                handles.into_iter().map(|handle| handle.join().expect("writer thread")).collect()
            });
            let winners: Vec<_> =
                results.iter().filter_map(|result| result.as_ref().ok()).collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            assert!(results
                .iter()
                .all(|result| result.is_ok() || result.as_ref().unwrap_err().is_conflict()));
            version = *winners[0];
        }
    }

    pub fn concurrent_creates_exactly_one_wins(store: &dyn MetadataStore, _: &Backend) {
        const WRITERS: usize = 8;
        let barrier = Barrier::new(WRITERS);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        let value = writer.to_string();
                        store.put(
                            ObjectKind::SpuGroup,
                            &key("new"),
                            value.as_bytes(),
                            ExpectedVersion::Absent,
                            None,
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().expect("writer thread")).collect()
        });
        let winners: Vec<_> = (0..WRITERS).filter(|&writer| results[writer].is_ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let stored = store.get(ObjectKind::SpuGroup, &key("new")).unwrap().unwrap();
        assert_eq!(stored.value, winners[0].to_string().into_bytes());
    }

    pub fn keys_with_every_allowed_character(store: &dyn MetadataStore, _: &Backend) {
        let alphabet: String =
            ('a'..='z').chain('A'..='Z').chain('0'..='9').chain(['.', '_', '-']).collect();
        let longest = "x".repeat(sluice_sc::store::KEY_BYTES_MAX);
        let names =
            [alphabet.as_str(), longest.as_str(), "-", "_", "...", ".hidden", "a.json", "b.tmp"];
        let mut created = BTreeSet::new();
        for (index, name) in names.iter().enumerate() {
            let version = create(store, ObjectKind::Topic, name, &index.to_string());
            created.insert((key(name), version));
        }
        for (index, name) in names.iter().enumerate() {
            let object = store.get(ObjectKind::Topic, &key(name)).unwrap().expect(name);
            assert_eq!(object.value, index.to_string().into_bytes(), "{name}");
        }
        let listed: BTreeSet<_> = store
            .list(ObjectKind::Topic)
            .unwrap()
            .objects
            .into_iter()
            .map(|object| (object.key, object.version))
            .collect();
        assert_eq!(listed, created);
    }

    pub fn values_round_trip(store: &dyn MetadataStore, _: &Backend) {
        let value = "{\n  \"name\": \"caf\u{e9} \u{1f30a}\",\n  \"nested\": {\"list\": [1, 2.5, null, true]},\n  \"escaped\": \"\\\"\\n\"\n}";
        create(store, ObjectKind::Topic, "unicode", value);
        let object = store.get(ObjectKind::Topic, &key("unicode")).unwrap().unwrap();
        assert_eq!(String::from_utf8(object.value).unwrap(), value);
    }

    pub fn typed_layer_round_trips_pretty_json(store: &dyn MetadataStore, _: &Backend) {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Spec {
            partitions: u32,
            replication_factor: u16,
            racks: Vec<String>,
        }
        let spec =
            Spec { partitions: 12, replication_factor: 3, racks: vec!["a".into(), "b".into()] };
        let version = store
            .put_typed(ObjectKind::Topic, &key("typed"), &spec, ExpectedVersion::Absent, None)
            .unwrap();
        let read = store.get_typed::<Spec>(ObjectKind::Topic, &key("typed")).unwrap().unwrap();
        assert_eq!((read.version, &read.value), (version, &spec));
        let raw = store.get(ObjectKind::Topic, &key("typed")).unwrap().unwrap().value;
        assert!(raw.contains(&b'\n'), "stored as pretty JSON for operators");
        let listing = store.list_typed::<Spec>(ObjectKind::Topic).unwrap();
        assert_eq!(listing.objects.len(), 1);
        assert_eq!(listing.objects[0].value, spec);
        store.put(ObjectKind::Topic, &key("other"), b"[1]", ExpectedVersion::Absent, None).unwrap();
        let error = store.list_typed::<Spec>(ObjectKind::Topic).unwrap_err();
        assert!(matches!(error, StoreError::Decode { ref key, .. } if key == "other"), "{error}");
    }

    pub fn fenced_writes_with_current_token_succeed(store: &dyn MetadataStore, backend: &Backend) {
        let fence = Some(&backend.fence);
        let version = store
            .put(ObjectKind::Topic, &key("fenced"), b"1", ExpectedVersion::Absent, fence)
            .unwrap();
        let version = store
            .put(ObjectKind::Topic, &key("fenced"), b"2", version.into_expected(), fence)
            .unwrap();
        store.delete(ObjectKind::Topic, &key("fenced"), version, fence).unwrap();
        assert_eq!(store.get(ObjectKind::Topic, &key("fenced")).unwrap(), None);
    }
}

/// `Version::into_expected`, the update precondition for a version just read.
trait IntoExpected {
    fn into_expected(self) -> ExpectedVersion;
}

impl IntoExpected for Version {
    fn into_expected(self) -> ExpectedVersion {
        ExpectedVersion::Exactly(self)
    }
}

macro_rules! conformance_suite {
    ($backend:ident, $factory:expr, [$($behaviour:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[test]
                fn $behaviour() {
                    let backend: Backend = ($factory)();
                    let store = Arc::clone(&backend.store);
                    behaviour::$behaviour(&*store, &backend);
                }
            )*
        }
    };
    ($backend:ident, $factory:expr) => {
        conformance_suite!($backend, $factory, [
            get_missing_is_none,
            create_then_get,
            create_existing_conflicts,
            update_if_version,
            delete_if_version,
            versions_increase_across_keys_and_kinds,
            list_by_kind,
            watch_sees_changes_in_order_for_its_kinds,
            watch_from_old_version_replays_or_resyncs,
            watch_delivers_every_change_of_a_busy_key,
            concurrent_updates_exactly_one_wins,
            concurrent_creates_exactly_one_wins,
            keys_with_every_allowed_character,
            values_round_trip,
            typed_layer_round_trips_pretty_json,
            fenced_writes_with_current_token_succeed,
        ]);
    };
}

conformance_suite!(embedded, embedded_backend);
conformance_suite!(consul, consul_backend);
