//! `sluice-spu`: the Streaming Processing Unit process. See [`sluice_spu::server::process`] for
//! what runs where.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use sluice_spu::config::SpuArgs;
use sluice_spu::server::process::Spu;
use tracing_subscriber::EnvFilter;

/// How often the main thread looks for a signal or the registration.
const MAIN_POLL: Duration = Duration::from_millis(50);

fn main() -> anyhow::Result<()> {
    let args = SpuArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_open_files_limit();
    let config = args.resolve()?;
    tracing::info!(
        id = %config.id,
        cores = config.cores,
        data_dir = %config.data_dir.display(),
        sc = ?config.sc_addresses,
        "starting the streaming processing unit"
    );
    let ready_file = config.ready_file.clone();
    let spu = Spu::start(config)?;
    let shutdown = spu.shutdown_flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    println!("public address: {}", spu.public_address);
    println!("private address: {}", spu.private_address);
    println!("metrics address: {}", spu.metrics_address);
    for (core, address) in spu.core_addresses.iter().enumerate() {
        println!("core {core} address: {address}");
    }
    let mut ready = false;
    while !shutdown.load(Ordering::Relaxed) {
        if !spu.all_cores_running() {
            tracing::error!("an executor stopped unexpectedly; shutting down");
            spu.shutdown();
            anyhow::bail!("an executor stopped unexpectedly (see the log above)");
        }
        if ready {
            std::thread::sleep(MAIN_POLL);
            continue;
        }
        if spu.wait_registered(MAIN_POLL).is_some() {
            ready = true;
            if let Some(path) = &ready_file {
                spu.write_ready_file(path)?;
            }
        }
    }
    tracing::info!("shutting down");
    spu.shutdown();
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
