//! Shared test support: real Consul agents (from the crate's `test-harness` feature), a TCP
//! proxy whose link can be cut to simulate a partition, and condition polling with deadlines.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use sluice_kvstore_consul::testing::ConsulAgent;
use sluice_kvstore_consul::{ConsulClient, ConsulConfig};

/// Starts a plain agent or fails the test with the harness's message.
pub fn agent() -> ConsulAgent {
    ConsulAgent::start().unwrap_or_else(|error| panic!("{error}"))
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP forwarder from a local port to a target; [`TcpProxy::cut`] closes the listener and
/// every forwarded connection, like a network partition between a client and its agent.
pub struct TcpProxy {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    bytes_to_target: Arc<AtomicU64>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Forwards a fresh local port to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking proxy listener");
        let address = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let bytes_to_target = Arc::new(AtomicU64::new(0));
        let (thread_cut, thread_connections) = (Arc::clone(&cut), Arc::clone(&connections));
        let thread_bytes = Arc::clone(&bytes_to_target);
        let acceptor = std::thread::spawn(move || {
            while !thread_cut.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, target, &thread_connections, &thread_bytes),
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
        });
        Self { address, cut, connections, bytes_to_target, acceptor: Some(acceptor) }
    }

    /// Bytes forwarded from clients to the target so far (a request has reached the target
    /// once this grows).
    pub fn bytes_to_target(&self) -> u64 {
        self.bytes_to_target.load(Ordering::Acquire)
    }

    /// A client configuration pointing at the proxy.
    pub fn config(&self) -> ConsulConfig {
        ConsulConfig::new(format!("http://{}", self.address))
            .with_request_timeout(Duration::from_secs(3))
            .with_connect_timeout(Duration::from_secs(1))
    }

    /// A client through the proxy.
    pub fn client(&self) -> ConsulClient {
        ConsulClient::new(self.config()).expect("proxy client")
    }

    /// Stops accepting (new connections are refused) and closes every forwarded connection.
    pub fn cut(&mut self) {
        self.cut.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().expect("proxy acceptor");
        }
        for stream in self.connections.lock().expect("proxy connections").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn forward(
    client: TcpStream,
    target: SocketAddr,
    connections: &Mutex<Vec<TcpStream>>,
    bytes_to_target: &Arc<AtomicU64>,
) {
    let Ok(server) = TcpStream::connect(target) else { return };
    let _ = client.set_nonblocking(false);
    let mut registry = connections.lock().expect("proxy connections");
    let clones = (client.try_clone(), server.try_clone(), server.try_clone(), client.try_clone());
    let (Ok(client_reader), Ok(server_writer), Ok(server_reader), Ok(client_writer)) = clones
    else {
        return;
    };
    registry.push(client);
    registry.push(server);
    drop(registry);
    let counter = Arc::clone(bytes_to_target);
    std::thread::spawn(move || pump(client_reader, server_writer, Some(&counter)));
    std::thread::spawn(move || pump(server_reader, client_writer, None));
}

fn pump(mut from: TcpStream, mut to: TcpStream, counter: Option<&AtomicU64>) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if to.write_all(&buffer[..read]).is_err() {
                    break;
                }
                if let Some(counter) = counter {
                    counter.fetch_add(read as u64, Ordering::AcqRel);
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
