//! `/metrics` and `/health/*` of a real `sluice-sc` on an OS-chosen port (its `metrics=` line
//! in the ready file), scraped with a plain HTTP/1.0 request over TCP.

mod process_common;

use process_common::test_spu::TestSpu;
use sluice_proto::api::control::SpuRegisterResponse;
use sluice_proto::ids::SpuId;
use sluice_proto::object::{SpuSpec, SpuType, TopicName, TopicSpec};
use sluice_testkit::process::{http, wait_for, ScProcess};

/// The value of the sample `series` (name with labels) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(sc: &ScProcess) -> String {
    let (status, body) = http(sc.metrics_address, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn health_and_metrics_follow_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let sc = ScProcess::builder(&dir.path().join("data")).heartbeat_timeout_ms(1_000).start();
    assert_ne!(sc.metrics_address.port(), 0);

    assert_eq!(http(sc.metrics_address, "GET", "/health/live"), (200, "live\n".into()));
    assert_eq!(http(sc.metrics_address, "GET", "/health/ready"), (200, "ready\n".into()));
    assert_eq!(http(sc.metrics_address, "GET", "/nowhere").0, 404);
    assert_eq!(http(sc.metrics_address, "POST", "/metrics").0, 405);
    let text = scrape(&sc);
    assert_eq!(sample(&text, "sluice_sc_active"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "sluice_sc_spus{state=\"online\"}"), Some(0.0), "{text}");

    let mut admin = sc.admin();
    let spec = SpuSpec { id: SpuId(1), spu_type: SpuType::Custom, ..SpuSpec::default() };
    assert!(admin.register_spu(spec).unwrap().error_code.is_ok());
    let topic = TopicName::new("scraped").unwrap();
    assert!(admin.create_topic(topic, TopicSpec::computed(2, 1)).unwrap().error_code.is_ok());
    let mut spu = TestSpu::connect(sc.private_address);
    assert_eq!(spu.register(1), SpuRegisterResponse::Accepted);
    wait_for("the SPU online and two partitions in the metrics", || {
        let text = scrape(&sc);
        let partitions: f64 = ["init", "online", "leader_offline", "offline"]
            .iter()
            .filter_map(|state| {
                sample(&text, &format!("sluice_sc_partitions{{state=\"{state}\"}}"))
            })
            .sum();
        (sample(&text, "sluice_sc_spus{state=\"online\"}") == Some(1.0) && partitions == 2.0)
            .then_some(())
    });
    let text = scrape(&sc);
    assert!(sample(&text, "sluice_sc_store_write_seconds_count").unwrap() >= 3.0, "{text}");
    assert_eq!(sample(&text, "sluice_sc_topics"), Some(1.0), "{text}");

    // The SPU goes away: it turns offline, and so do its partitions (one replica each).
    drop(spu);
    wait_for("the SPU and its partitions offline in the metrics", || {
        let text = scrape(&sc);
        (sample(&text, "sluice_sc_spus{state=\"offline\"}") == Some(1.0)
            && sample(&text, "sluice_sc_partitions{state=\"offline\"}") == Some(2.0))
        .then_some(())
    });
    assert_eq!(http(sc.metrics_address, "GET", "/health/ready").0, 200);
}
