//! A minimal HTTP/1.0 client for the servers' metrics and health endpoints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::wait::CONDITION_TIMEOUT;

/// `method path` on `address`: the status code and the body; `None` when the connection
/// fails or the response is not HTTP.
pub fn try_http(address: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(CONDITION_TIMEOUT)).ok()?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// As [`try_http`], panicking when there is no HTTP response.
pub fn http(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
    try_http(address, method, path)
        .unwrap_or_else(|| panic!("no HTTP response to {method} {path} from {address}"))
}

/// The Prometheus text of a server's `GET /metrics`, which must answer 200.
pub fn scrape_metrics(address: SocketAddr) -> String {
    let (status, body) = http(address, "GET", "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body
}

/// The sum over every label set (cores, partitions) of the series named `name`.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
