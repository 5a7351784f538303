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
    let config = args.resolve()?;
    tracing::info!(?config.store, "starting the streaming controller");
    let sc = Sc::start(&config)?;
    let shutdown = sc.shutdown_flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    let role = if sc.is_active() { "active" } else { "standby" };
    tracing::info!(
        public = %sc.public_address, private = %sc.private_address,
        metrics = %sc.metrics_address, role, "listening"
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
