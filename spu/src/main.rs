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
