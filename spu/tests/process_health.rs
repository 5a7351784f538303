//! `/health/live` and `/health/ready` of a real `sluice-spu` registered with an SC: ready once
//! registered with every assigned replica open.

mod process_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use process_common::{metric_sum, scrape, wait_for, Cluster};

/// Status code and body of `GET path`.
fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics endpoint");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: spu\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    (status, body)
}

#[test]
fn ready_after_registration_and_with_every_assigned_replica_open() {
    let cluster = Cluster::start(1);
    let metrics = cluster.spu.metrics_address;
    assert_eq!(get(metrics, "/health/live"), (200, "live\n".into()));
    assert_eq!(get(metrics, "/health/nowhere").0, 404);
    wait_for("the SPU ready after registering", || {
        (get(metrics, "/health/ready") == (200, "ready\n".into())).then_some(())
    });
    cluster.create_topic("health", 3);
    wait_for("three replicas open and the SPU ready", || {
        let open = metric_sum(&scrape(metrics), "sluice_spu_replicas_leader");
        (open == 3 && get(metrics, "/health/ready").0 == 200).then_some(())
    });
}
