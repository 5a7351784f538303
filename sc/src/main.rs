//! `sluice-sc`: the Streaming Controller process. See the library docs for the thread map.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use sluice_sc::config::ScArgs;
use sluice_sc::process::Sc;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let args = ScArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_open_files_limit();
    let config = args.resolve()?;
    tracing::info!(?config.store, "starting the streaming controller");
    let sc = Sc::start(&config)?;
    let shutdown = sc.shutdown_flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    let role = if sc.is_active() { "active" } else { "standby" };
    let public_tls = match &config.public_tls {
        Some(tls) => format!("TLS, client certificates {}", tls.client_auth),
        None => "plaintext".to_owned(),
    };
    tracing::info!(
        public = %sc.public_address, private = %sc.private_address,
        metrics = %sc.metrics_address, role, %public_tls, "listening"
    );
    println!("public address: {}", sc.public_address);
    println!("private address: {}", sc.private_address);
    println!("metrics address: {}", sc.metrics_address);
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("shutting down");
    let lost = sc.lost_leadership();
    sc.shutdown();
    if lost {
        anyhow::bail!("stopped after losing the SC leadership to another SC");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit of open files to the hard limit, logged: every client connection is
/// a descriptor, and the common soft default (1,024) would refuse connections long before
/// memory or CPU run out. The systemd units set `LimitNOFILE`; this covers every other start
/// (`sluice cluster start --local`, a shell, the tests).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read RLIMIT_NOFILE");
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        tracing::info!(open_files_max = limit.rlim_cur, "open files limit");
        return;
    }
    let before = limit.rlim_cur;
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: `raised` is a valid rlimit not above the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::info!(before, open_files_max = raised.rlim_cur, "raised the open files limit");
    } else {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, open_files_max = before, "cannot raise the open files limit");
    }
}
