//! Sessions and leadership against a real agent: one winner among candidates, resign hands
//! over at once, a partitioned leader steps down before its successor takes over (the takeover
//! time is measured and printed), loss by key deletion or session destruction is observed.

mod harness;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sluice_kvstore_consul::{
    ConsulError, Leadership, LeadershipConfig, LossReason, SessionConfig, SessionLoss,
    SessionRenewer,
};

/// Consul's minimum session TTL.
const TTL: Duration = Duration::from_secs(10);

fn config(value: &str, lock_delay: Duration) -> LeadershipConfig {
    let mut config = LeadershipConfig::new("service/leader", value, TTL);
    config.session.lock_delay = lock_delay;
    config.retry_interval = Duration::from_millis(100);
    config
}

#[test]
fn one_of_two_candidates_wins_and_resigning_hands_over() {
    let agent = harness::agent();
    let barrier = Arc::new(Barrier::new(2));
    let candidates: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|name| {
            let client = agent.client();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut leadership = Leadership::new(client, config(name, Duration::from_secs(1)));
                barrier.wait();
                let won = leadership.campaign(Duration::from_secs(3)).unwrap();
                (leadership, won)
            })
        })
        .collect();
    let mut results: Vec<_> = candidates.into_iter().map(|thread| thread.join().unwrap()).collect();
    let winners = results.iter().filter(|(_, won)| won.is_some()).count();
    assert_eq!(winners, 1, "exactly one candidate wins");
    results.sort_by_key(|(_, won)| won.is_none());
    let (winner, winner_token) = results.remove(0);
    let (mut loser, _) = results.remove(0);
    let winner_token = winner_token.expect("winner");
    assert!(winner.is_leader() && !loser.is_leader());
    assert_eq!(winner.fencing_token(), Some(winner_token.clone()));

    let client = agent.client();
    let entry = client.kv_get("service/leader").unwrap().expect("lock key");
    assert_eq!(entry.session.as_ref(), Some(&winner_token.session));
    assert_eq!(entry.lock_index, winner_token.lock_index);

    // Resign releases (no lock delay) and destroys the session: the loser wins at once.
    let winner_session = winner_token.session.clone();
    winner.resign().unwrap();
    assert_eq!(client.session_info(&winner_session).unwrap(), None, "session destroyed");
    let started = Instant::now();
    let token = loser.campaign(Duration::from_secs(20)).unwrap().expect("the key is free");
    eprintln!("handover after resign took {:?}", started.elapsed());
    assert!(token.lock_index > winner_token.lock_index, "fencing tokens grow");
    assert_ne!(token.session, winner_session);
    loser.resign().unwrap();
    let entry = client.kv_get("service/leader").unwrap().expect("key kept");
    assert_eq!(entry.session, None);
}

/// The leader loses its network to Consul (its proxy is cut): it notices the loss from failed
/// renewals within one TTL, and the other candidate takes over once Consul invalidates the
/// session (up to 2 x TTL after the last renewal) plus the lock delay.
#[test]
fn partitioned_leader_steps_down_before_the_takeover() {
    let lock_delay = Duration::from_secs(1);
    let agent = harness::agent();
    let mut proxy =
        harness::TcpProxy::start(format!("127.0.0.1:{}", agent.ports().http).parse().unwrap());
    let mut leader = Leadership::new(proxy.client(), config("partitioned", lock_delay));
    let losses = leader.losses();
    let leader_token =
        leader.campaign(Duration::from_secs(10)).unwrap().expect("no competitor yet");

    let challenger_client = agent.client();
    let challenger = std::thread::spawn(move || {
        let mut challenger = Leadership::new(challenger_client, config("challenger", lock_delay));
        let token = challenger.campaign(Duration::from_secs(60));
        (challenger, token, Instant::now())
    });
    // The challenger blocks on the held key; cut the leader off.
    let cut_at = Instant::now();
    proxy.cut();

    let loss =
        losses.recv_timeout(Duration::from_secs(40)).expect("the leader notices the partition");
    let noticed_at = Instant::now();
    assert_eq!(loss.token, leader_token);
    assert!(
        matches!(loss.reason, LossReason::Session(SessionLoss::RenewalTimedOut { .. })),
        "{loss:?}"
    );
    assert!(!leader.is_leader());

    let (challenger, token, won_at) = challenger.join().unwrap();
    let token = token.unwrap().expect("the challenger takes over");
    assert!(token.lock_index > leader_token.lock_index);
    assert!(noticed_at <= won_at, "the old leader stepped down before the new one took over");
    let takeover = won_at - cut_at;
    eprintln!(
        "MEASURED leadership takeover: TTL {TTL:?}, lock delay {lock_delay:?}: old leader stepped \
         down after {:?}, new leader acquired after {takeover:?} (bound 2 x TTL + lock delay = {:?})",
        noticed_at - cut_at,
        TTL * 2 + lock_delay
    );
    challenger.resign().unwrap();
    drop(leader);
}

#[test]
fn deleting_the_key_or_destroying_the_session_is_a_loss() {
    let agent = harness::agent();
    let client = agent.client();
    let mut leadership = Leadership::new(agent.client(), config("solo", Duration::ZERO));
    let losses = leadership.losses();
    let first = leadership.campaign(Duration::from_secs(10)).unwrap().expect("alone");

    client.kv_delete("service/leader").unwrap();
    let loss = losses.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!((loss.token, loss.reason), (first.clone(), LossReason::LockDeleted));
    assert!(!leadership.is_leader());

    // Campaigning again uses a fresh session.
    let second = leadership.campaign(Duration::from_secs(10)).unwrap().expect("alone");
    assert_ne!(second.session, first.session);
    assert_eq!(
        client.session_info(&first.session).unwrap(),
        None,
        "the abandoned session is destroyed"
    );

    client.session_destroy(&second.session).unwrap();
    let loss = losses.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(loss.token, second);
    // Destroying releases the key (monitor) and makes renewal fail (renewer): either is first.
    assert!(
        matches!(
            loss.reason,
            LossReason::LockTaken { holder: None }
                | LossReason::Session(SessionLoss::Invalidated { .. })
        ),
        "{loss:?}"
    );
    assert!(losses.try_recv().is_err(), "one report per term");
    leadership.resign().unwrap();
}

#[test]
fn renewer_reports_an_invalidated_session_and_stops_cleanly() {
    let agent = harness::agent();
    let client = agent.client();
    let mut session_config = SessionConfig::new("renewed", TTL);
    session_config.lock_delay = Duration::ZERO;
    let session = client.session_create(&session_config).unwrap();
    let info = client.session_info(&session).unwrap().expect("created");
    assert_eq!(info.lock_delay, Duration::ZERO);
    assert_eq!(info.ttl, "10s");

    let renewer = SessionRenewer::start(client.clone(), session.clone(), TTL);
    assert!(renewer.is_running());
    renewer.stop();
    assert!(client.session_info(&session).unwrap().is_some(), "stopping does not destroy");

    let renewer = SessionRenewer::start(client.clone(), session.clone(), TTL);
    client.session_destroy(&session).unwrap();
    // The first renewal (after TTL/2) answers 404.
    let loss = renewer.loss().recv_timeout(TTL * 2).expect("loss reported");
    let SessionLoss::Invalidated { message } = loss else { panic!("{loss:?}") };
    assert!(message.contains("not found"), "{message}");
    harness::wait_until("the renewer thread to exit", Duration::from_secs(5), || {
        !renewer.is_running()
    });

    let error = client.session_renew(&session).unwrap_err();
    assert!(matches!(error, ConsulError::InvalidSession { .. }), "{error:?}");
    assert!(!error.is_retriable());
    let error = client.kv_acquire("k", b"v", &session).unwrap_err();
    assert!(matches!(error, ConsulError::InvalidSession { .. }), "{error:?}");
    assert!(error.to_string().contains("invalid session"), "{error}");
    let too_short = SessionConfig::new("short", Duration::from_secs(5));
    assert!(matches!(client.session_create(&too_short), Err(ConsulError::Config { .. })));
}

/// Two sessions created together, one renewed in the background: once Consul has expired the
/// unrenewed one (after up to 2 x TTL), the renewed one must still be alive and hold its lock.
#[test]
fn renewed_session_outlives_an_unrenewed_twin() {
    let agent = harness::agent();
    let client = agent.client();
    let mut session_config = SessionConfig::new("twin", TTL);
    session_config.lock_delay = Duration::ZERO;
    let renewed = client.session_create(&session_config).unwrap();
    let unrenewed = client.session_create(&session_config).unwrap();
    assert!(client.kv_acquire("renewed-lock", b"r", &renewed).unwrap());
    assert!(client.kv_acquire("unrenewed-lock", b"u", &unrenewed).unwrap());
    let renewer = SessionRenewer::start(client.clone(), renewed.clone(), TTL);

    harness::wait_until("Consul to expire the unrenewed session", TTL * 4, || {
        client.session_info(&unrenewed).unwrap().is_none()
    });
    assert_eq!(
        client.kv_get("unrenewed-lock").unwrap().expect("release keeps the key").session,
        None
    );
    assert!(client.session_info(&renewed).unwrap().is_some(), "renewals kept the session alive");
    let entry = client.kv_get("renewed-lock").unwrap().expect("key");
    assert_eq!(entry.session, Some(renewed.clone()));
    assert!(renewer.loss().try_recv().is_err(), "no loss reported");
    renewer.stop();
    client.session_destroy(&renewed).unwrap();
}

#[test]
fn delete_behavior_removes_locked_keys_with_the_session() {
    let agent = harness::agent();
    let client = agent.client();
    let mut session_config = SessionConfig::new("ephemeral", TTL);
    session_config.behavior = sluice_kvstore_consul::SessionBehavior::Delete;
    let session = client.session_create(&session_config).unwrap();
    let info = client.session_info(&session).unwrap().expect("created");
    assert_eq!(info.behavior, sluice_kvstore_consul::SessionBehavior::Delete);
    assert!(client.kv_acquire("ephemeral/spu-1", b"online", &session).unwrap());
    assert!(client.kv_release("ephemeral/spu-1", &session).unwrap());
    assert!(client.kv_acquire("ephemeral/spu-1", b"online", &session).unwrap());
    client.session_destroy(&session).unwrap();
    assert_eq!(client.kv_get("ephemeral/spu-1").unwrap(), None, "deleted with its session");
}
