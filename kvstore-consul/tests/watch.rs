//! Watches against a real agent: woken by related writes only, prefix diffs, agent restart
//! (index going backwards), clean errors while the agent is down.

mod harness;

use std::time::{Duration, Instant};

use sluice_kvstore_consul::{
    spawn_watch, ConsulError, KeyChange, KeyWatch, PrefixChange, PrefixWatch, WatchOptions,
};

const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

fn options() -> WatchOptions {
    WatchOptions {
        wait: Duration::from_secs(30),
        request_interval_min: Duration::from_millis(10),
        error_backoff_initial: Duration::from_millis(50),
        error_backoff_max: Duration::from_millis(500),
    }
}

fn keys(entries: &[sluice_kvstore_consul::KvEntry]) -> Vec<&str> {
    entries.iter().map(|entry| entry.key.as_str()).collect()
}

#[test]
fn key_watch_is_woken_by_its_key_and_not_by_unrelated_writes() {
    let agent = harness::agent();
    let client = agent.client();
    client.kv_put("watched", b"v1").unwrap();
    let mut watch = KeyWatch::new(client.clone(), "watched", options());
    let initial = watch.poll().unwrap().expect("the first poll reports the state");
    assert_eq!(initial.current.expect("exists").value, b"v1");
    let index_before = watch.index();

    let watcher = spawn_watch(watch, 4).unwrap();
    // Unrelated writes first: neighbours, a longer key with the same prefix, a delete.
    client.kv_put("watched-not", b"x").unwrap();
    client.kv_put("watched/child", b"x").unwrap();
    client.kv_put("other", b"x").unwrap();
    client.kv_delete("other").unwrap();
    client.kv_put("watched", b"v2").unwrap();
    let change: KeyChange = watcher.events().recv_timeout(EVENT_TIMEOUT).unwrap().unwrap();
    assert_eq!(change.previous.expect("had a value").value, b"v1");
    let current = change.current.expect("written");
    assert_eq!(current.value, b"v2");
    assert!(change.index > index_before);

    client.kv_delete("watched").unwrap();
    let change = watcher.events().recv_timeout(EVENT_TIMEOUT).unwrap().unwrap();
    assert_eq!(change.current, None, "deleted");
    assert_eq!(change.previous, Some(current));
    watcher.stop();
}

#[test]
fn prefix_watch_reports_added_modified_and_deleted_keys() {
    let agent = harness::agent();
    let client = agent.client();
    client.kv_put("p/a", b"1").unwrap();
    client.kv_put("p/b", b"1").unwrap();
    let mut watch = PrefixWatch::new(client.clone(), "p/", options());
    let initial = watch.poll().unwrap().expect("first poll");
    assert_eq!(keys(&initial.added), ["p/a", "p/b"]);
    let watcher = spawn_watch(watch, 4).unwrap();
    let next =
        || -> PrefixChange { watcher.events().recv_timeout(EVENT_TIMEOUT).unwrap().unwrap() };

    client.kv_put("q/outside", b"x").unwrap();
    client.kv_put("p", b"not under p/").unwrap();
    client.kv_put("p/c", b"1").unwrap();
    let change = next();
    assert_eq!(keys(&change.added), ["p/c"], "{change:?}");
    assert!(change.modified.is_empty() && change.deleted.is_empty(), "{change:?}");

    // A watch resuming from a snapshot reports only what follows it.
    let snapshot = client.kv_get_recursive("p/").unwrap();
    let mut resumed = PrefixWatch::starting_from(client.clone(), "p/", snapshot, options());
    assert_eq!(resumed.entries().len(), 3);

    client.kv_put("p/a", b"2").unwrap();
    let resumed_change = resumed.poll().unwrap().expect("blocked on the snapshot index");
    assert_eq!(keys(&resumed_change.modified), ["p/a"]);
    assert!(resumed_change.added.is_empty() && resumed_change.deleted.is_empty());
    let change = next();
    assert_eq!(keys(&change.modified), ["p/a"]);
    assert_eq!(change.modified[0].value, b"2");
    assert!(change.added.is_empty() && change.deleted.is_empty());

    client.kv_delete("p/b").unwrap();
    let change = next();
    assert_eq!(keys(&change.deleted), ["p/b"]);
    assert_eq!(change.deleted[0].value, b"1", "the last known entry");
    assert!(change.added.is_empty() && change.modified.is_empty());

    // One transaction: an add, a modification and a delete in one result.
    client
        .txn(&[
            sluice_kvstore_consul::TxnOp::Set { key: "p/d".into(), value: b"1".to_vec(), flags: 0 },
            sluice_kvstore_consul::TxnOp::Set { key: "p/c".into(), value: b"2".to_vec(), flags: 0 },
            sluice_kvstore_consul::TxnOp::Delete { key: "p/a".into() },
        ])
        .unwrap();
    let change = next();
    assert_eq!(
        (keys(&change.added), keys(&change.modified), keys(&change.deleted)),
        (vec!["p/d"], vec!["p/c"], vec!["p/a"])
    );
    watcher.stop();
}

/// A blocked watch whose agent dies returns an error at once (no hang until the wait ends),
/// keeps failing cleanly while the agent is down, and after a restart (a `-dev` agent comes
/// back empty, so the index goes backwards) reports the lost key and then new writes.
#[test]
fn watch_survives_an_agent_restart() {
    let mut agent = harness::agent();
    let client = agent.client();
    for round in 0..20 {
        client.kv_put("filler", round.to_string().as_bytes()).unwrap();
    }
    client.kv_put("k", b"before").unwrap();
    // The watch talks through a proxy so the test can see its blocking request arrive.
    let proxy =
        harness::TcpProxy::start(format!("127.0.0.1:{}", agent.ports().http).parse().unwrap());
    let mut watch = KeyWatch::new(proxy.client(), "k", options());
    assert_eq!(watch.poll().unwrap().expect("initial").current.expect("exists").value, b"before");
    let index_before_restart = watch.index();
    let bytes_before = proxy.bytes_to_target();

    // Block in a poll (30 s wait), then kill the agent under it.
    let blocked = std::thread::spawn(move || {
        let started = Instant::now();
        let result = watch.poll();
        (watch, result, started.elapsed())
    });
    harness::wait_until("the blocking request to reach the agent", Duration::from_secs(10), || {
        proxy.bytes_to_target() > bytes_before
    });
    agent.stop();
    let (mut watch, result, blocked_for) = blocked.join().unwrap();
    let error = result.expect_err("the agent died under the query");
    assert!(
        matches!(error, ConsulError::Connection { .. } | ConsulError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_retriable());
    eprintln!("blocked poll returned {error} after {blocked_for:?} (wait was 30 s)");

    // While down: clean, retriable errors.
    for _ in 0..3 {
        let error = watch.poll().expect_err("agent is down");
        assert!(
            matches!(error, ConsulError::Unreachable { .. } | ConsulError::Connection { .. }),
            "{error:?}"
        );
    }

    agent.restart().unwrap_or_else(|error| panic!("{error}"));
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let change = loop {
        assert!(Instant::now() < deadline, "no change seen after the restart");
        if let Ok(Some(change)) = watch.poll() {
            break change;
        }
    };
    assert_eq!(change.current, None, "a -dev agent forgets its keys: {change:?}");
    assert!(change.index < index_before_restart, "the index went backwards");

    client.kv_put("k", b"after").unwrap();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let change = loop {
        assert!(Instant::now() < deadline, "the write after the restart was not seen");
        if let Some(change) = watch.poll().unwrap() {
            break change;
        }
    };
    assert_eq!(change.current.expect("written").value, b"after");
}
