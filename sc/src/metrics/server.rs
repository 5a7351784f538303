//! The SC's HTTP endpoint: `GET /metrics` (text exposition 0.0.4), `GET /health/live` (200
//! while the process serves) and `GET /health/ready` (200 when [`super::readiness`] says
//! ready, else 503 with the reason as plain text). Served by `tiny_http` on one std thread, so
//! the SC stays tokio-free; `HEAD` is accepted like `GET`, another method gets 405, another
//! path 404. A bind failure is returned by [`MetricsServer::start`]; a scraper that goes away
//! only loses its response. The thread stops when the server is dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{readiness, render, Readiness, ScView, METRICS};

/// The path of the metrics.
pub const METRICS_PATH: &str = "/metrics";
/// The liveness path.
pub const LIVE_PATH: &str = "/health/live";
/// The readiness path.
pub const READY_PATH: &str = "/health/ready";
/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How the endpoint reads the running SC at each request.
pub type ViewSource = Box<dyn Fn() -> ScView + Send + 'static>;

/// A running endpoint.
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
    /// Binds `address` (port 0: the OS picks) and serves from a new thread.
    pub fn start(address: SocketAddr, view: ViewSource) -> io::Result<MetricsServer> {
        let server = tiny_http::Server::http(address).map_err(|error| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, format!("metrics endpoint: {error}"))
        })?;
        let local_addr = server.server_addr().to_ip().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "metrics endpoint is not an IP socket")
        })?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("sc-metrics".into())
            .spawn(move || serve(&serving, &view))?;
        Ok(MetricsServer { server, local_addr, thread: Some(thread) })
    }

    /// The address bound (with the OS-chosen port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Status and body of one request on `path`.
pub(super) fn respond(path: &str, view: &dyn Fn() -> ScView) -> (u16, String) {
    match path {
        METRICS_PATH => {
            let mut body = String::new();
            render(&view(), &METRICS, &mut body);
            (200, body)
        }
        LIVE_PATH => (200, "live\n".to_owned()),
        READY_PATH => match readiness(&view()) {
            Readiness::Ready => (200, "ready\n".to_owned()),
            Readiness::NotReady(reason) => (503, format!("{reason}\n")),
        },
        _ => (404, "not found; try /metrics, /health/live or /health/ready\n".to_owned()),
    }
}

fn serve(server: &tiny_http::Server, view: &ViewSource) {
    let content_type = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
        .expect("a constant, valid header");
    for request in server.incoming_requests() {
        let response =
            if !matches!(request.method(), tiny_http::Method::Get | tiny_http::Method::Head) {
                tiny_http::Response::from_string("method not allowed\n").with_status_code(405)
            } else {
                let path = request.url().split('?').next().unwrap_or("");
                let (status, body) = respond(path, view.as_ref());
                tiny_http::Response::from_string(body)
                    .with_status_code(status)
                    .with_header(content_type.clone())
            };
        if let Err(error) = request.respond(response) {
            tracing::debug!(%error, "metrics scraper went away");
        }
    }
}
