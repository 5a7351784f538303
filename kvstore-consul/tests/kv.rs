//! KV against a real agent: missing keys, flags, listing, recursive get and delete, CAS races,
//! oversized values, timeouts.

mod harness;

use std::net::TcpListener;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use sluice_kvstore_consul::{
    ConsulClient, ConsulConfig, ConsulError, ConsulIndex, PutOptions, VALUE_BYTES_MAX,
};

#[test]
fn missing_key_is_none_and_values_round_trip() {
    let agent = harness::agent();
    let client = agent.client();
    assert_eq!(client.kv_get("absent/key").unwrap(), None);
    assert!(client.kv_get_recursive("absent/").unwrap().value.is_empty());
    assert!(client.kv_keys("absent/", Some("/")).unwrap().is_empty());

    let key = "odd keys/with spaces?and%percent";
    let value: Vec<u8> = (0..=255u8).collect();
    let written = client.kv_put_with(key, &value, &PutOptions { flags: 42, cas: None }).unwrap();
    assert!(written);
    let indexed = client.kv_get_indexed(key).unwrap();
    let entry = indexed.value.expect("written");
    assert_eq!(entry.key, key);
    assert_eq!(entry.value, value);
    assert_eq!(entry.flags, 42);
    assert_eq!(entry.create_index, entry.modify_index);
    assert!(indexed.index >= entry.modify_index);
    assert_eq!(entry.session, None);

    client.kv_put("empty", b"").unwrap();
    assert_eq!(client.kv_get("empty").unwrap().expect("written").value, b"");
}

#[test]
fn recursive_get_listing_and_recursive_delete() {
    let agent = harness::agent();
    let client = agent.client();
    for key in ["app/a", "app/b/1", "app/b/2", "app/c/deep/x", "apple", "other/z"] {
        client.kv_put(key, key.as_bytes()).unwrap();
    }
    let under_app = client.kv_get_recursive("app/").unwrap().value;
    let keys: Vec<&str> = under_app.iter().map(|entry| entry.key.as_str()).collect();
    assert_eq!(keys, ["app/a", "app/b/1", "app/b/2", "app/c/deep/x"]);
    assert!(under_app.iter().all(|entry| entry.value == entry.key.as_bytes()));

    assert_eq!(client.kv_keys("app/", Some("/")).unwrap(), ["app/a", "app/b/", "app/c/"]);
    assert_eq!(client.kv_keys("app", Some("/")).unwrap(), ["app/", "apple"]);
    assert_eq!(client.kv_keys("app/b/", None).unwrap(), ["app/b/1", "app/b/2"]);

    client.kv_delete_recursive("app/b/").unwrap();
    let keys = client.kv_keys("", None).unwrap();
    assert_eq!(keys, ["app/a", "app/c/deep/x", "apple", "other/z"]);
    client.kv_delete_recursive("app/").unwrap();
    assert_eq!(client.kv_keys("", None).unwrap(), ["apple", "other/z"]);
    client.kv_delete("apple").unwrap();
    client.kv_delete("apple").unwrap();
    assert_eq!(client.kv_get("apple").unwrap(), None);
    assert!(matches!(client.kv_delete_recursive(""), Err(ConsulError::Config { .. })));
}

#[test]
fn cas_put_and_delete() {
    let agent = harness::agent();
    let client = agent.client();
    let create_only = PutOptions { flags: 0, cas: Some(ConsulIndex::new(0)) };
    assert!(client.kv_put_with("k", b"one", &create_only).unwrap());
    assert!(!client.kv_put_with("k", b"two", &create_only).unwrap(), "exists already");
    let entry = client.kv_get("k").unwrap().expect("created");
    let stale =
        PutOptions { flags: 0, cas: Some(ConsulIndex::new(entry.modify_index.get() + 1000)) };
    assert!(!client.kv_put_with("k", b"two", &stale).unwrap());
    let current = PutOptions { flags: 0, cas: Some(entry.modify_index) };
    assert!(client.kv_put_with("k", b"two", &current).unwrap());
    assert!(!client.kv_put_with("k", b"three", &current).unwrap(), "index moved on");
    assert!(!client.kv_delete_cas("k", entry.modify_index).unwrap());
    let entry = client.kv_get("k").unwrap().expect("still there");
    assert_eq!(entry.value, b"two");
    assert!(client.kv_delete_cas("k", entry.modify_index).unwrap());
    assert_eq!(client.kv_get("k").unwrap(), None);
}

/// Two clients read the same index and race a CAS write, many times: exactly one wins each
/// round, and the counter ends at the number of rounds.
#[test]
fn cas_race_between_two_clients_has_one_winner_per_round() {
    let rounds: u64 = std::env::var("SLUICE_TEST_CAS_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(60);
    let agent = harness::agent();
    agent.client().kv_put("counter", b"0").unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = (0..2)
        .map(|racer| {
            let client = ConsulClient::new(agent.config()).unwrap();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                for round in 0..rounds {
                    barrier.wait();
                    let entry = client.kv_get("counter").unwrap().expect("counter exists");
                    let value: u64 = String::from_utf8(entry.value).unwrap().parse().unwrap();
                    // Both racers must have read the same state before either writes.
                    barrier.wait();
                    let next = (value + 1).to_string();
                    let options = PutOptions { flags: racer, cas: Some(entry.modify_index) };
                    if client.kv_put_with("counter", next.as_bytes(), &options).unwrap() {
                        wins.push(round);
                    }
                }
                wins
            })
        })
        .collect();
    let wins: Vec<Vec<u64>> = racers.into_iter().map(|racer| racer.join().unwrap()).collect();
    for round in 0..rounds {
        let winners = wins.iter().filter(|racer_wins| racer_wins.contains(&round)).count();
        assert_eq!(winners, 1, "round {round}: {winners} winners");
    }
    let counter = agent.client().kv_get("counter").unwrap().expect("counter");
    assert_eq!(counter.value, rounds.to_string().as_bytes());
}

#[test]
fn oversized_value_is_refused_before_sending() {
    // No agent listens here: a value that were sent would fail with a transport error instead.
    let client = ConsulClient::new(ConsulConfig::new("127.0.0.1:1")).unwrap();
    let value = vec![7u8; VALUE_BYTES_MAX + 1];
    let error = client.kv_put("big", &value).unwrap_err();
    assert!(
        matches!(error, ConsulError::ValueTooLarge { size_bytes, .. } if size_bytes == VALUE_BYTES_MAX + 1)
    );
    assert!(error.to_string().contains("over Consul's limit"), "{error}");
    assert!(!error.is_retriable());

    let agent = harness::agent();
    let client = agent.client();
    assert!(matches!(client.kv_put("big", &value), Err(ConsulError::ValueTooLarge { .. })));
    assert_eq!(client.kv_get("big").unwrap(), None);
    client.kv_put("big", &value[..VALUE_BYTES_MAX]).unwrap();
    assert_eq!(client.kv_get("big").unwrap().expect("at the limit").value.len(), VALUE_BYTES_MAX);
}

#[test]
fn unreachable_and_silent_agents_fail_with_retriable_errors() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let client = ConsulClient::new(ConsulConfig::new(format!("127.0.0.1:{closed_port}"))).unwrap();
    let error = client.kv_get("k").unwrap_err();
    assert!(matches!(error, ConsulError::Unreachable { .. }), "{error:?}");
    assert!(error.is_retriable() && !error.is_outcome_unknown());

    // Accepts connections and never answers: every call must end at its timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = ConsulConfig::new(format!("127.0.0.1:{}", silent.local_addr().unwrap().port()))
        .with_request_timeout(Duration::from_millis(300));
    let client = ConsulClient::new(config).unwrap();
    let error = client.kv_put("k", b"v").unwrap_err();
    assert!(matches!(error, ConsulError::Timeout { timeout_ms: 300, .. }), "{error:?}");
    assert!(error.is_retriable() && error.is_outcome_unknown());
    drop(silent);
}
