//! Behaviour specific to the embedded store: persistence across reopen, the on-disk format,
//! the directory lock, recovery of leftovers, value limits and the bounded watch history.
//! (Generic behaviour is in `store_conformance.rs`; `kill -9` durability in `store_process.rs`.)

use std::time::Duration;

use sluice_sc::store::embedded::{EmbeddedOptions, EmbeddedStore};
use sluice_sc::store::VALUE_BYTES_MAX;
use sluice_sc::store::{
    ExpectedVersion, MetadataStore, ObjectKey, ObjectKind, StoreError, Version, WatchEvent,
};

const EVENT_WAIT: Duration = Duration::from_secs(10);

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid key")
}

fn create(store: &EmbeddedStore, kind: ObjectKind, name: &str, value: &str) -> Version {
    store.put(kind, &key(name), value.as_bytes(), ExpectedVersion::Absent, None).expect("create")
}

#[test]
fn reopen_keeps_objects_versions_and_revision() {
    let directory = tempfile::tempdir().unwrap();
    let (version, revision) = {
        let store = EmbeddedStore::open(directory.path()).unwrap();
        let version = create(&store, ObjectKind::Topic, "orders", r#"{"partitions":3}"#);
        create(&store, ObjectKind::Spu, "5001", "{}");
        (version, store.revision())
    };
    let store = EmbeddedStore::open(directory.path()).unwrap();
    assert_eq!(store.revision(), revision);
    let object = store.get(ObjectKind::Topic, &key("orders")).unwrap().unwrap();
    assert_eq!((object.version, object.value), (version, br#"{"partitions":3}"#.to_vec()));
    assert_eq!(store.list(ObjectKind::Spu).unwrap().objects.len(), 1);
    assert!(create(&store, ObjectKind::Topic, "next", "0") > revision);
}

#[test]
fn versions_are_never_reused_after_a_delete_and_restart() {
    let directory = tempfile::tempdir().unwrap();
    let deleted = {
        let store = EmbeddedStore::open(directory.path()).unwrap();
        create(&store, ObjectKind::Topic, "older", "0");
        let version = create(&store, ObjectKind::Topic, "newest", "1");
        store.delete(ObjectKind::Topic, &key("newest"), version, None).unwrap()
    };
    let store = EmbeddedStore::open(directory.path()).unwrap();
    assert_eq!(store.revision(), deleted, "the delete's revision survives the restart");
    assert!(create(&store, ObjectKind::Topic, "newest", "2") > deleted);
}

#[test]
fn objects_are_readable_json_files() {
    let directory = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(directory.path()).unwrap();
    let version = create(&store, ObjectKind::SpuGroup, "main", r#"{"replicas":3}"#);
    let path = directory.path().join("spu-groups").join("main.json");
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(document["kind"], "spu-groups");
    assert_eq!(document["key"], "main");
    assert_eq!(document["version"], version.get());
    assert_eq!(document["value"]["replicas"], 3);
    let lock = std::fs::read_to_string(directory.path().join("LOCK")).unwrap();
    assert_eq!(lock.trim(), std::process::id().to_string());
}

#[test]
fn second_open_is_refused_while_the_first_is_open() {
    let directory = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(directory.path()).unwrap();
    match EmbeddedStore::open(directory.path()) {
        Err(error @ StoreError::Locked { holder_pid, .. }) => {
            assert_eq!(holder_pid, Some(std::process::id()));
            assert!(error.to_string().contains(&format!("process {}", std::process::id())));
            assert!(error.is_retry_safe());
        }
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    drop(store);
    EmbeddedStore::open(directory.path()).expect("the lock is released on drop");
}

#[test]
fn leftover_temporary_file_is_removed_on_open() {
    let directory = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(directory.path()).unwrap());
    let leftover = directory.path().join("topics").join(".pending.tmp");
    std::fs::write(&leftover, b"{\"kind\": \"top").unwrap();
    let store = EmbeddedStore::open(directory.path()).unwrap();
    assert!(!leftover.exists());
    assert!(store.list(ObjectKind::Topic).unwrap().objects.is_empty());
}

#[test]
fn damaged_object_files_fail_open_naming_the_file() {
    let cases: [(&str, &[u8]); 4] = [
        ("torn.json", b"{\"kind\": \"topics\", \"key\": \"torn\", \"vers"),
        ("moved.json", br#"{"kind":"topics","key":"other","version":1,"value":0}"#),
        ("zero.json", br#"{"kind":"topics","key":"zero","version":0,"value":0}"#),
        ("bad key!.json", br#"{"kind":"topics","key":"bad key!","version":1,"value":0}"#),
    ];
    for (file, content) in cases {
        let directory = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(directory.path()).unwrap());
        std::fs::write(directory.path().join("topics").join(file), content).unwrap();
        match EmbeddedStore::open(directory.path()) {
            Err(error @ StoreError::Corrupt { .. }) => {
                assert!(error.to_string().contains(file), "{error}");
            }
            other => panic!("{file}: expected Corrupt, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn invalid_values_are_rejected_without_writing() {
    let directory = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(directory.path()).unwrap();
    let oversized = format!("\"{}\"", "x".repeat(VALUE_BYTES_MAX));
    let values: [&[u8]; 4] =
        [b"not json", b"{\"a\":1} trailing", b"\xff\xfe", oversized.as_bytes()];
    for value in values {
        let result = store.put(ObjectKind::Topic, &key("t"), value, ExpectedVersion::Absent, None);
        assert!(matches!(result, Err(StoreError::InvalidValue { .. })), "{result:?}");
    }
    assert_eq!(store.revision(), Version::ZERO);
    assert!(store.list(ObjectKind::Topic).unwrap().objects.is_empty());
}

#[test]
fn invalid_keys_are_rejected() {
    let long = "k".repeat(sluice_sc::store::KEY_BYTES_MAX + 1);
    for bad in ["", ".", "..", "a/b", "a b", "caf\u{e9}", "a\0b", "a:b", long.as_str()] {
        assert!(matches!(ObjectKey::new(bad), Err(StoreError::InvalidKey { .. })), "{bad:?}");
    }
}

#[test]
fn watch_replays_history_and_resyncs_before_it() {
    let directory = tempfile::tempdir().unwrap();
    let versions: Vec<Version> = {
        let store = EmbeddedStore::open(directory.path()).unwrap();
        let versions: Vec<_> = (0..5)
            .map(|index| create(&store, ObjectKind::Topic, &format!("t{index}"), "0"))
            .collect();
        let events = store.watch(&[ObjectKind::Topic], versions[1]).unwrap();
        for expected in &versions[2..] {
            let event = events.recv_timeout(EVENT_WAIT).unwrap();
            assert_eq!(event.version(), Some(*expected));
        }
        versions
    };
    let store = EmbeddedStore::open(directory.path()).unwrap();
    let events = store.watch(&[ObjectKind::Topic], versions[1]).unwrap();
    assert_eq!(
        events.recv_timeout(EVENT_WAIT).unwrap(),
        WatchEvent::Resync { oldest_version: versions[4] },
        "history does not survive a restart"
    );
    assert!(events.recv_timeout(EVENT_WAIT).is_err(), "a resync ends the watch");
}

#[test]
fn slow_watcher_gets_every_buffered_event_then_resync() {
    let directory = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions { history_events_max: 8, watch_channel_events_max: 16 };
    let store = EmbeddedStore::open_with_options(directory.path(), options).unwrap();
    let events = store.watch(&[ObjectKind::Topic], Version::ZERO).unwrap();
    let writes = 16 + 64;
    let mut version = create(&store, ObjectKind::Topic, "busy", "0");
    for value in 1..writes {
        let bytes = value.to_string();
        version = store
            .put(
                ObjectKind::Topic,
                &key("busy"),
                bytes.as_bytes(),
                ExpectedVersion::Exactly(version),
                None,
            )
            .unwrap();
    }
    let mut previous = Version::ZERO;
    loop {
        match events.recv_timeout(EVENT_WAIT).expect("events, then a resync") {
            WatchEvent::Put { version, .. } => {
                assert_eq!(version.get(), previous.get() + 1, "no gap before the resync");
                previous = version;
            }
            WatchEvent::Resync { oldest_version } => {
                assert!(oldest_version > previous);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(previous.get() >= 16, "the full channel was delivered");
    assert!(previous < version, "the watcher did fall behind");
}

#[test]
fn closing_the_store_disconnects_watchers_without_resync() {
    let directory = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(directory.path()).unwrap();
    let events = store.watch(&ObjectKind::ALL, Version::ZERO).unwrap();
    create(&store, ObjectKind::Spu, "1", "{}");
    assert!(matches!(events.recv_timeout(EVENT_WAIT).unwrap(), WatchEvent::Put { .. }));
    drop(store);
    assert_eq!(
        events.recv_timeout(EVENT_WAIT),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    );
}
