//! The Prometheus endpoint: `GET /metrics` in text exposition format 0.0.4, served by
//! `tiny_http` on one std thread (plus tiny_http's small worker pool), without tokio and
//! outside every glommio executor, so a slow scraper never delays a core.
//!
//! Labels: `core="i"` on every per-core series, `api="produce"` (see
//! [`api_label`]) on request series. Process gauges use the conventional
//! names (`process_resident_memory_bytes`, ...).
//!
//! Routes (query string ignored, `HEAD` like `GET`): `GET /metrics` -> 200; `GET /health/live`
//! -> 200 while the process serves; `GET /health/ready` -> 200 once registered with the active SC
//! with every assigned replica open, else 503 with the reason (see [`super::health`]); any other
//! path -> 404; another method -> 405. Failure modes: a bind failure is returned by
//! [`MetricsServer::start`]; a scraper that disconnects mid-response only loses its response.
//! The thread stops when the [`MetricsServer`] is stopped or dropped.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;

use sluice_proto::api::ApiKey;

use super::health;
use super::process::{self, ProcessSample};
use super::{api_label, Counter, Gauge, MetricsRegistry, Timing, TIMING_BUCKETS_MICROS};

/// The path that serves the metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The liveness path.
pub const LIVE_PATH: &str = "/health/live";
/// The readiness path.
pub const READY_PATH: &str = "/health/ready";

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running metrics endpoint.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    local_addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("MetricsServer").field("local_addr", &self.local_addr).finish()
    }
}

impl MetricsServer {
    /// Binds `address` (port 0: the OS picks) and serves `registry` from a new thread.
    pub fn start(
        address: impl ToSocketAddrs,
        registry: Arc<MetricsRegistry>,
    ) -> io::Result<MetricsServer> {
        let server = tiny_http::Server::http(address).map_err(|error| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, format!("metrics endpoint: {error}"))
        })?;
        let local_addr = server.server_addr().to_ip().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "metrics endpoint is not an IP socket")
        })?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("sluice-metrics".into())
            .spawn(move || serve(&serving, &registry))?;
        Ok(MetricsServer { server, local_addr, thread: Some(thread) })
    }

    /// The address bound (with the OS-chosen port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(server: &tiny_http::Server, registry: &MetricsRegistry) {
    let content_type = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
        .expect("a constant, valid header");
    let mut body = String::new();
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response =
            if !matches!(request.method(), tiny_http::Method::Get | tiny_http::Method::Head) {
                tiny_http::Response::from_string("method not allowed\n").with_status_code(405)
            } else if path == METRICS_PATH {
                body.clear();
                render(registry, &process::sample(), &mut body);
                tiny_http::Response::from_string(body.as_str()).with_header(content_type.clone())
            } else if path == LIVE_PATH {
                tiny_http::Response::from_string("live\n")
            } else if path == READY_PATH {
                match registry.health().readiness() {
                    health::Readiness::Ready => tiny_http::Response::from_string("ready\n"),
                    health::Readiness::NotReady(reason) => {
                        tiny_http::Response::from_string(format!("{reason}\n"))
                            .with_status_code(503)
                    }
                }
            } else {
                tiny_http::Response::from_string(
                    "not found; try /metrics, /health/live or /health/ready\n",
                )
                .with_status_code(404)
            };
        if let Err(error) = request.respond(response) {
            tracing::debug!(%error, "metrics scraper went away");
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// API keys always exported (the data plane an SPU serves); others appear once counted.
fn api_exported(registry: &MetricsRegistry, api: ApiKey) -> bool {
    let number = api.number();
    !(100..300).contains(&number)
        || (0..registry.core_count())
            .filter_map(|core| registry.core(core))
            .any(|core| core.requests(api) > 0 || core.request_errors(api) > 0)
}

/// Writes the whole exposition of `registry` and `process` to `out`.
pub fn render(registry: &MetricsRegistry, process: &ProcessSample, out: &mut String) {
    let cores: Vec<_> = (0..registry.core_count()).filter_map(|core| registry.core(core)).collect();
    for counter in Counter::ALL {
        let (name, help) = counter.describe();
        family(out, name, "counter", help);
        for (index, core) in cores.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{index}\"}} {}", core.counter(counter));
        }
    }
    for gauge in Gauge::ALL {
        let (name, help) = gauge.describe();
        family(out, name, "gauge", help);
        for (index, core) in cores.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{index}\"}} {}", core.gauge(gauge));
        }
    }
    let apis: Vec<ApiKey> =
        ApiKey::ALL.iter().copied().filter(|api| api_exported(registry, *api)).collect();
    let per_api = [
        ("sluice_spu_requests_total", "Requests received, by API key.", false),
        ("sluice_spu_request_errors_total", "Requests that failed, by API key.", true),
    ];
    for (name, help, errors) in per_api {
        family(out, name, "counter", help);
        for (index, core) in cores.iter().enumerate() {
            for api in &apis {
                let value = if errors { core.request_errors(*api) } else { core.requests(*api) };
                let label = api_label(*api);
                let _ = writeln!(out, "{name}{{core=\"{index}\",api=\"{label}\"}} {value}");
            }
        }
    }
    for timing in Timing::ALL {
        let (name, help) = timing.describe();
        family(out, name, "histogram", help);
        for (index, core) in cores.iter().enumerate() {
            let snapshot = core.timing(timing);
            let mut cumulative = 0;
            for (bucket, count) in snapshot.buckets.iter().enumerate() {
                cumulative += count;
                let bound = TIMING_BUCKETS_MICROS.get(bucket).map_or_else(
                    || "+Inf".to_owned(),
                    |micros| format!("{}", *micros as f64 / 1e6),
                );
                let _ =
                    writeln!(out, "{name}_bucket{{core=\"{index}\",le=\"{bound}\"}} {cumulative}");
            }
            let seconds = snapshot.sum_nanos as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{core=\"{index}\"}} {seconds}");
            let _ = writeln!(out, "{name}_count{{core=\"{index}\"}} {cumulative}");
        }
    }
    family(out, "sluice_spu_cores", "gauge", "Cores (executors) of this SPU.");
    let _ = writeln!(out, "sluice_spu_cores {}", cores.len());
    render_data_volume(registry, out);
    render_process(process, out);
}

/// Free space of the data volume against the floor under which appends are refused (read at
/// scrape time; left out when unreadable).
fn render_data_volume(registry: &MetricsRegistry, out: &mut String) {
    use crate::storage::disk_guard::{required_free_bytes, volume_space};
    let Some(volume) = registry.data_volume() else { return };
    let Ok(space) = volume_space(&volume.directory) else { return };
    let config = crate::storage::LogConfig {
        free_bytes_min: volume.free_bytes_min,
        free_space_ratio_min: volume.free_space_ratio_min,
        ..crate::storage::LogConfig::default()
    };
    let gauges = [
        ("sluice_spu_data_free_bytes", "Bytes free on the data volume.", space.free_bytes),
        ("sluice_spu_data_total_bytes", "Size of the data volume in bytes.", space.total_bytes),
        (
            "sluice_spu_data_free_bytes_floor",
            "Free bytes under which the SPU refuses appends (StorageFull).",
            required_free_bytes(&config, space.total_bytes),
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn render_process(process: &ProcessSample, out: &mut String) {
    let gauges = [
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", {
            process.resident_memory_bytes.map(|value| value as f64)
        }),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", {
            process.virtual_memory_bytes.map(|value| value as f64)
        }),
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time in seconds.",
            process.cpu_seconds,
        ),
        ("process_open_fds", "gauge", "Open file descriptors.", {
            process.open_fds.map(|value| value as f64)
        }),
    ];
    for (name, kind, help, value) in gauges {
        if let Some(value) = value {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }
}
