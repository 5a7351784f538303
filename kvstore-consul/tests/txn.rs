//! Transactions against a real agent: atomic success, abort naming the failed operation, the
//! 64-operation limit.

mod harness;

use std::time::Duration;

use sluice_kvstore_consul::{
    ConsulClient, ConsulConfig, ConsulError, ConsulIndex, SessionConfig, TxnOp, TXN_OPERATIONS_MAX,
};

fn set(key: &str, value: &str) -> TxnOp {
    TxnOp::Set { key: key.into(), value: value.as_bytes().to_vec(), flags: 0 }
}

#[test]
fn transaction_applies_every_operation() {
    let agent = harness::agent();
    let client = agent.client();
    client.kv_put("t/existing", b"old").unwrap();
    client.kv_put("t/doomed", b"x").unwrap();
    let existing = client.kv_get("t/existing").unwrap().expect("written");
    let results = client
        .txn(&[
            TxnOp::CheckIndex { key: "t/existing".into(), index: existing.modify_index },
            TxnOp::CheckNotExists { key: "t/new".into() },
            set("t/new", "fresh"),
            TxnOp::Cas {
                key: "t/existing".into(),
                value: b"new".to_vec(),
                flags: 5,
                index: existing.modify_index,
            },
            TxnOp::Delete { key: "t/doomed".into() },
            TxnOp::Get { key: "t/new".into() },
        ])
        .unwrap();
    let got = results.value.last().expect("the get returns the entry");
    assert_eq!((got.key.as_str(), got.value.as_slice()), ("t/new", b"fresh".as_slice()));
    assert!(results.index > existing.modify_index);
    assert_eq!(client.kv_get("t/existing").unwrap().expect("kept").value, b"new");
    assert_eq!(client.kv_get("t/existing").unwrap().expect("kept").flags, 5);
    assert_eq!(client.kv_get("t/doomed").unwrap(), None);

    let tree = client.txn(&[TxnOp::GetTree { prefix: "t/".into() }]).unwrap().value;
    let keys: Vec<&str> = tree.iter().map(|entry| entry.key.as_str()).collect();
    assert_eq!(keys, ["t/existing", "t/new"]);
    client.txn(&[TxnOp::DeleteTree { prefix: "t/".into() }]).unwrap();
    assert!(client.kv_get_recursive("t/").unwrap().value.is_empty());
}

#[test]
fn one_failing_check_aborts_every_operation_and_names_it() {
    let agent = harness::agent();
    let client = agent.client();
    client.kv_put("a", b"1").unwrap();
    let before = client.kv_get("a").unwrap().expect("written");
    let operations = vec![
        set("a", "2"),
        set("b", "2"),
        TxnOp::Delete { key: "a".into() },
        TxnOp::CheckIndex {
            key: "a".into(),
            index: ConsulIndex::new(before.modify_index.get() + 99),
        },
        set("c", "2"),
    ];
    let error = client.txn(&operations).unwrap_err();
    let ConsulError::TxnAborted { errors } = &error else {
        panic!("expected an abort, got {error:?}")
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].op_index, 3);
    assert!(errors[0].what.contains("index"), "{}", errors[0].what);
    assert!(error.to_string().contains("operation 3"), "{error}");
    assert!(!error.is_retriable());
    // Nothing applied: "a" untouched, "b" and "c" never created.
    assert_eq!(client.kv_get("a").unwrap(), Some(before));
    assert_eq!(client.kv_get("b").unwrap(), None);
    assert_eq!(client.kv_get("c").unwrap(), None);

    let error = client.txn(&[TxnOp::Get { key: "missing".into() }, set("d", "1")]).unwrap_err();
    assert!(
        matches!(&error, ConsulError::TxnAborted { errors } if errors[0].op_index == 0),
        "{error:?}"
    );
}

#[test]
fn operation_limit_is_enforced_before_sending() {
    let agent = harness::agent();
    let client = agent.client();
    let full: Vec<TxnOp> =
        (0..TXN_OPERATIONS_MAX).map(|index| set(&format!("n/{index}"), "v")).collect();
    client.txn(&full).unwrap();
    assert_eq!(client.kv_keys("n/", None).unwrap().len(), TXN_OPERATIONS_MAX);

    let mut over = full.clone();
    over.push(set("n/extra", "v"));
    let error = client.txn(&over).unwrap_err();
    assert!(
        matches!(error, ConsulError::TooManyTxnOperations { count: 65, count_max: 64 }),
        "{error:?}"
    );
    assert!(error.to_string().contains("65 operations"), "{error}");
    assert_eq!(client.kv_get("n/extra").unwrap(), None);

    // Refused without any network traffic: an unreachable address gives the same answer.
    let offline = ConsulClient::new(ConsulConfig::new("127.0.0.1:1")).unwrap();
    assert!(matches!(offline.txn(&over), Err(ConsulError::TooManyTxnOperations { .. })));
    let big = vec![TxnOp::Set { key: "x".into(), value: vec![0; 600 * 1024], flags: 0 }];
    assert!(matches!(offline.txn(&big), Err(ConsulError::ValueTooLarge { .. })));
}

#[test]
fn locks_inside_transactions() {
    let agent = harness::agent();
    let client = agent.client();
    let session =
        client.session_create(&SessionConfig::new("txn", Duration::from_secs(10))).unwrap();
    client
        .txn(&[TxnOp::Lock {
            key: "leader".into(),
            value: b"me".to_vec(),
            session: session.clone(),
        }])
        .unwrap();
    let entry = client.kv_get("leader").unwrap().expect("locked");
    assert_eq!(entry.session.as_ref(), Some(&session));
    // A write guarded by the lock holder's session succeeds...
    client
        .txn(&[
            TxnOp::CheckSession { key: "leader".into(), session: session.clone() },
            set("guarded", "1"),
        ])
        .unwrap();
    client.txn(&[TxnOp::Unlock { key: "leader".into(), session: session.clone() }]).unwrap();
    // ...and fails once the lock is released.
    let error = client
        .txn(&[
            TxnOp::CheckSession { key: "leader".into(), session: session.clone() },
            set("guarded", "2"),
        ])
        .unwrap_err();
    assert!(
        matches!(&error, ConsulError::TxnAborted { errors } if errors[0].op_index == 0),
        "{error:?}"
    );
    assert_eq!(client.kv_get("guarded").unwrap().expect("first write").value, b"1");
    client.session_destroy(&session).unwrap();
}
