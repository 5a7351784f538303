//! The Prometheus endpoint over real HTTP: counters bumped from two glommio executors (one
//! probe each) are read back by a plain `GET /metrics`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::api::ApiKey;
use sluice_spu::metrics::{
    api_label, CoreProbe, Counter, Gauge, MetricsRegistry, MetricsServer, Timing,
};
use sluice_spu::server::zero_copy::SendStats;
use sluice_spu::storage::runtime::run_local;

/// Sends one HTTP/1.1 request and returns (status code, body).
fn http(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("header end");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status");
    (status, body.to_string())
}

/// `name{labels}` -> value, from the text exposition (comments skipped).
fn parse(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (series.to_string(), value.parse().expect("numeric value"))
        })
        .collect()
}

/// Runs `work` with `probe` on its own glommio executor thread.
fn on_core(
    probe: CoreProbe,
    work: impl FnOnce(&CoreProbe) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        run_local("metrics-test", 1 << 20, || async move {
            let probe = std::rc::Rc::new(probe);
            // Writes from two tasks of the core through the shared Rc.
            let other = std::rc::Rc::clone(&probe);
            let task = glommio::spawn_local(async move { other.add(Counter::BytesReceived, 5) });
            work(&probe);
            task.await;
        })
        .expect("executor");
    })
}

#[test]
fn counters_of_two_executors_are_served_over_http() {
    let (registry, mut probes) = MetricsRegistry::new(2);
    let server = MetricsServer::start("127.0.0.1:0", Arc::clone(&registry)).expect("start");
    let second = probes.pop().expect("probe 1");
    let first = probes.pop().expect("probe 0");
    let core_zero = on_core(first, |probe| {
        for _ in 0..1000 {
            probe.add(Counter::BytesReceived, 3);
            probe.request(ApiKey::Produce);
        }
        probe.add(Counter::RecordsProduced, 42);
        probe.add(Counter::ProduceDuplicates, 2);
        probe.add(Counter::ProduceSequenceRefusals, 5);
        probe.request_error(ApiKey::Produce);
        probe.adjust(Gauge::ConnectionsOpen, 3);
        probe.adjust(Gauge::ConnectionsOpen, -1);
        probe.set(Gauge::ReplicasLeader, 7);
    });
    let core_one = on_core(second, |probe| {
        probe.request(ApiKey::StreamFetch);
        probe.request(ApiKey::Fetch);
        probe.response_sent(&SendStats {
            bytes_sent: 1_000,
            file_bytes_zero_copy: 900,
            file_bytes_copied: 2,
            file_bytes_direct: 300,
            file_bytes_memory: 77,
            writable_waits: 2,
        });
        probe.observe(Timing::FetchSend, std::time::Duration::from_micros(700));
        probe.set(Gauge::InboxDepth, -0);
    });
    core_zero.join().expect("core 0");
    core_one.join().expect("core 1");

    let (status, body) = http(server.local_addr(), "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    let values = parse(&body);
    let value =
        |series: &str| *values.get(series).unwrap_or_else(|| panic!("missing {series} in\n{body}"));
    assert_eq!(value("sluice_spu_bytes_received_total{core=\"0\"}"), 3005.0);
    assert_eq!(value("sluice_spu_bytes_received_total{core=\"1\"}"), 5.0);
    assert_eq!(value("sluice_spu_requests_total{core=\"0\",api=\"produce\"}"), 1000.0);
    assert_eq!(value("sluice_spu_request_errors_total{core=\"0\",api=\"produce\"}"), 1.0);
    assert_eq!(value("sluice_spu_requests_total{core=\"1\",api=\"stream_fetch\"}"), 1.0);
    assert_eq!(value("sluice_spu_requests_total{core=\"1\",api=\"fetch\"}"), 1.0);
    assert_eq!(value("sluice_spu_requests_total{core=\"1\",api=\"produce\"}"), 0.0);
    assert_eq!(value("sluice_spu_records_produced_total{core=\"0\"}"), 42.0);
    assert_eq!(value("sluice_spu_produce_duplicates_total{core=\"0\"}"), 2.0);
    assert_eq!(value("sluice_spu_produce_sequence_refusals_total{core=\"0\"}"), 5.0);
    assert_eq!(value("sluice_spu_connections_open{core=\"0\"}"), 2.0);
    assert_eq!(value("sluice_spu_replicas_leader{core=\"0\"}"), 7.0);
    assert_eq!(value("sluice_spu_bytes_sent_total{core=\"1\"}"), 1000.0);
    assert_eq!(value("sluice_spu_fetch_zero_copy_bytes_total{core=\"1\"}"), 900.0);
    assert_eq!(value("sluice_spu_fetch_direct_bytes_total{core=\"1\"}"), 300.0);
    assert_eq!(value("sluice_spu_socket_writable_waits_total{core=\"1\"}"), 2.0);
    assert_eq!(value("sluice_spu_fetch_memory_bytes_total{core=\"1\"}"), 77.0);
    assert_eq!(value("sluice_spu_fetch_send_seconds_bucket{core=\"1\",le=\"0.0005\"}"), 0.0);
    assert_eq!(value("sluice_spu_fetch_send_seconds_bucket{core=\"1\",le=\"0.001\"}"), 1.0);
    assert_eq!(value("sluice_spu_fetch_send_seconds_count{core=\"1\"}"), 1.0);
    assert_eq!(value("sluice_spu_fetch_send_seconds_count{core=\"0\"}"), 0.0);
    assert_eq!(value("sluice_spu_cores"), 2.0);
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_open_fds") > 0.0);
    assert!(body.contains("# TYPE sluice_spu_bytes_sent_total counter"));
    assert!(body.contains("# TYPE sluice_spu_connections_open gauge"));
    assert_eq!(registry.counter_total(Counter::BytesReceived), 3010);

    let (status, _) = http(server.local_addr(), "GET", "/metrics?format=text");
    assert_eq!(status, 200);
    let (status, _) = http(server.local_addr(), "GET", "/");
    assert_eq!(status, 404);
    let (status, _) = http(server.local_addr(), "GET", "/metricsx");
    assert_eq!(status, 404);
    let (status, _) = http(server.local_addr(), "POST", "/metrics");
    assert_eq!(status, 405);
    let address = server.local_addr();
    server.stop();
    // tiny_http's accept thread lets go of the listener shortly after the stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(address).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the endpoint still accepts after stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn api_labels_are_snake_case() {
    assert_eq!(api_label(ApiKey::Produce), "produce");
    assert_eq!(api_label(ApiKey::StreamFetchCredit), "stream_fetch_credit");
    assert_eq!(api_label(ApiKey::ApiVersions), "api_versions");
}
