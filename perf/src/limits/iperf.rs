//! `iperf3` single-stream TCP over loopback: a server (`iperf3 -s -1`, one test then exit) on a
//! free port as a child process, a client (`-J`, JSON) against it, the received bandwidth parsed
//! from the client's report. Readiness of the server is read from `/proc/net/tcp` (a probe
//! connection would be taken as the server's one test).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ChildGuard;
use crate::error::PerfError;

/// Longest wait for the iperf3 server to listen.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when the server cannot bind (another process took the port).
const PORT_ATTEMPTS: usize = 3;

/// What iperf3 measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IperfResult {
    /// iperf3's version string.
    pub iperf_version: String,
    /// Bytes the receiver got.
    pub bytes_received: u64,
    /// Seconds of the test.
    pub seconds: f64,
    /// Receiver-side bandwidth, bits per second.
    pub bits_per_second: f64,
    /// Receiver-side bandwidth, bytes per second.
    pub bytes_per_second: f64,
    /// Host (client) CPU use during the test, percent of one machine (iperf3's own figure).
    pub host_cpu_percent: f64,
}

/// Runs a single-stream loopback test for `duration`.
pub fn run_loopback(duration: Duration) -> Result<IperfResult, PerfError> {
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        match run_once(duration) {
            Ok(result) => return Ok(result),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| PerfError::tool("iperf3", "no attempt ran")))
}

fn run_once(duration: Duration) -> Result<IperfResult, PerfError> {
    let port = free_port()?;
    let server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| {
            PerfError::tool(
                "iperf3",
                format!("cannot run iperf3 ({error}); install it with deploy/dev/setup"),
            )
        })?;
    let mut server = ChildGuard::new(server);
    wait_listening(&mut server, port)?;
    let seconds = duration.as_secs().max(1).to_string();
    let output = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", &seconds, "-J"])
        .output()
        .map_err(|error| PerfError::tool("iperf3", format!("cannot run the client: {error}")))?;
    // The JSON carries an "error" field when the client failed; parse reports it.
    parse(&String::from_utf8_lossy(&output.stdout))
}

fn free_port() -> Result<u16, PerfError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|error| PerfError::io("bind 127.0.0.1:0 to find a free port", error))?;
    let port =
        listener.local_addr().map_err(|error| PerfError::io("read the free port", error))?.port();
    Ok(port)
}

fn wait_listening(server: &mut ChildGuard, port: u16) -> Result<(), PerfError> {
    let deadline = Instant::now() + SERVER_READY_TIMEOUT;
    loop {
        let tables = ["/proc/net/tcp", "/proc/net/tcp6"]
            .map(|path| std::fs::read_to_string(path).unwrap_or_default());
        if tables.iter().any(|table| port_listening(table, port)) {
            return Ok(());
        }
        if let Some(child) = server.child() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(PerfError::tool(
                    "iperf3",
                    format!("the server exited before listening on port {port}: {status}"),
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(PerfError::Timeout(format!(
                "iperf3 server not listening on port {port} within {SERVER_READY_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `/proc/net/tcp`-format text has a socket in state LISTEN (`0A`) on local `port`.
pub fn port_listening(table: &str, port: u16) -> bool {
    let wanted = format!("{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or("");
        let state = fields.nth(1).unwrap_or("");
        state == "0A" && local.rsplit(':').next() == Some(wanted.as_str())
    })
}

/// Parses the client's `-J` report: the receiver's sum.
pub fn parse(text: &str) -> Result<IperfResult, PerfError> {
    let bad = |message: String| PerfError::parse("iperf3 JSON output", message);
    let start = text.find('{').ok_or_else(|| bad("no JSON object".into()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text[start..]).map_err(|error| bad(error.to_string()))?;
    if let Some(error) = report["error"].as_str() {
        return Err(PerfError::tool("iperf3", error.to_owned()));
    }
    let received = &report["end"]["sum_received"];
    let bits_per_second = received["bits_per_second"]
        .as_f64()
        .ok_or_else(|| bad("no end.sum_received.bits_per_second".into()))?;
    Ok(IperfResult {
        iperf_version: report["start"]["version"].as_str().unwrap_or("unknown").to_owned(),
        bytes_received: received["bytes"].as_u64().unwrap_or(0),
        seconds: received["seconds"].as_f64().unwrap_or(0.0),
        bits_per_second,
        bytes_per_second: bits_per_second / 8.0,
        host_cpu_percent: report["end"]["cpu_utilization_percent"]["host_total"]
            .as_f64()
            .unwrap_or(0.0),
    })
}
