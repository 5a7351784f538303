//! How the SC's public listener takes a burst of connections (a regression test): while its
//! process is stopped, the kernel completes the handshakes of as many connections as the
//! listen backlog holds. With std's backlog of 128, the 129th connect of a burst lost its SYN
//! and waited a second for the retry (10,000 connects took 72 s); the SC now listens with
//! 4,096 (capped by `net.core.somaxconn`).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sluice_testkit::process::{ScProcess, ServerProcess, Signal};

/// Connections of the burst: above std's 128, within the SC's 4,096.
const BURST: usize = 1_000;

/// Raises the soft open-files limit to the hard one (the burst holds a socket per connection).
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: a valid rlimit not above the hard limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    limit.rlim_cur
}

fn somaxconn() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(4096)
}

#[test]
fn a_burst_of_connections_waits_in_the_backlog_of_a_stopped_sc() {
    let limit = raise_open_files_limit();
    let burst = BURST.min(somaxconn());
    assert!(limit as usize > burst + 64, "open-files limit {limit} too low for {burst} sockets");
    let dir = tempfile::tempdir().unwrap();
    let sc = ScProcess::start(&dir.path().join("data"));
    let address: SocketAddr = sc.public_address;
    sc.signal(Signal::Stop);
    // The SC accepts nothing while stopped: each connect completes only if the kernel has room
    // for it in the backlog. A dropped SYN is retried after 1 s, past the timeout.
    let mut held = Vec::with_capacity(burst);
    let mut refused = None;
    for index in 0..burst {
        match TcpStream::connect_timeout(&address, Duration::from_millis(900)) {
            Ok(stream) => held.push(stream),
            Err(error) => {
                refused = Some((index, error));
                break;
            }
        }
    }
    sc.signal(Signal::Continue);
    if let Some((index, error)) = refused {
        panic!("connect {index} of a burst of {burst} to a stopped SC failed: {error}");
    }
    // Resumed, the SC serves a new client beside the burst.
    drop(held);
    let mut admin = sc.admin();
    admin.list_topics().expect("the SC answers after the burst");
}
