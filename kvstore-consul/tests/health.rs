//! Services and TTL checks against a real agent, seen by health queries and a health watch.

mod harness;

use std::time::Duration;

use sluice_kvstore_consul::{
    spawn_watch, CheckStatus, ConsulError, HealthFilter, HealthWatch, ServiceHealth,
    ServiceRegistration, TtlCheck, WatchOptions,
};

const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

fn registration(id: &str, port: u16) -> ServiceRegistration {
    ServiceRegistration {
        id: id.into(),
        name: "sluice-spu".into(),
        tags: vec!["spu".into()],
        address: Some("127.0.0.1".into()),
        port: Some(port),
        meta: [("cores".to_string(), "2".to_string())].into_iter().collect(),
        check: Some(TtlCheck {
            check_id: format!("{id}-alive"),
            ttl: Duration::from_secs(30),
            initial_status: CheckStatus::Passing,
            deregister_critical_after: None,
        }),
        http_check: None,
    }
}

fn ids(services: &[ServiceHealth]) -> Vec<&str> {
    services.iter().map(|service| service.service_id.as_str()).collect()
}

#[test]
fn ttl_check_going_critical_and_back_is_seen_by_a_health_watch() {
    let agent = harness::agent();
    let client = agent.client();
    client.agent_service_register(&registration("spu-1", 9005)).unwrap();
    client.agent_service_register(&registration("spu-2", 9006)).unwrap();

    let all = client.health_service("sluice-spu", HealthFilter::All).unwrap().value;
    assert_eq!(ids(&all), ["spu-1", "spu-2"]);
    let first = &all[0];
    assert_eq!(
        (first.port, first.address.as_str(), first.node.as_str()),
        (9005, "127.0.0.1", agent.node_name())
    );
    assert_eq!(first.meta.get("cores").map(String::as_str), Some("2"));
    let check =
        first.checks.iter().find(|check| check.check_id == "spu-1-alive").expect("TTL check");
    assert_eq!(check.status, CheckStatus::Passing);

    let mut watch = HealthWatch::new(
        client.clone(),
        "sluice-spu",
        HealthFilter::PassingOnly,
        WatchOptions::with_wait(Duration::from_secs(30)),
    );
    assert_eq!(ids(&watch.poll().unwrap().expect("initial")), ["spu-1", "spu-2"]);
    let watcher = spawn_watch(watch, 4).unwrap();
    let next = || watcher.events().recv_timeout(EVENT_TIMEOUT).unwrap().unwrap();

    client.agent_check_fail("spu-1-alive", "disk full").unwrap();
    assert_eq!(ids(&next()), ["spu-2"], "a critical instance is not passing");
    let all = client.health_service("sluice-spu", HealthFilter::All).unwrap().value;
    let check = all[0].checks.iter().find(|check| check.check_id == "spu-1-alive").expect("check");
    assert_eq!((check.status, check.output.as_str()), (CheckStatus::Critical, "disk full"));

    client.agent_check_pass("spu-1-alive", "recovered").unwrap();
    assert_eq!(ids(&next()), ["spu-1", "spu-2"], "back to passing");

    client.agent_check_warn("spu-2-alive", "slow disk").unwrap();
    assert_eq!(ids(&next()), ["spu-1"], "?passing leaves out warnings");
    let all = client.health_service("sluice-spu", HealthFilter::All).unwrap().value;
    let check = all[1].checks.iter().find(|check| check.check_id == "spu-2-alive").expect("check");
    assert_eq!(check.status, CheckStatus::Warning);

    client.agent_service_deregister("spu-2").unwrap();
    client.agent_service_deregister("spu-1").unwrap();
    harness::wait_until("both instances to disappear", EVENT_TIMEOUT, || {
        client.health_service("sluice-spu", HealthFilter::All).unwrap().value.is_empty()
    });
    watcher.stop();

    let error = client.agent_check_pass("spu-1-alive", "gone").unwrap_err();
    assert!(
        matches!(&error, ConsulError::Rejected { message, .. } if message.contains("spu-1-alive")),
        "{error:?}"
    );
    assert!(!error.is_retriable());
}
