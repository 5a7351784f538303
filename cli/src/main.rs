//! `sluice`, the command-line tool: a local cluster (`cluster start --local | status | stop`),
//! administration (`topic`, `partition`, `spu`, `spu-group`) and data (`produce`, `consume`).
//!
//! Module map: [`args`] is the command line (clap), [`local`] the local-cluster launcher,
//! [`admin`] the administration commands ([`partition`] the partition ones), [`produce`] and
//! [`consume`] the data commands, [`rebalance`] the rebalance plan,
//! [`sc_api`] the one place that calls the SDK's admin API, [`output`] tables/JSON/YAML and
//! [`units`] durations, sizes and times.
//!
//! Errors end the process with status 1 and one message on stderr that says what went wrong
//! and what to do; usage errors end it with status 2 (clap).

mod admin;
mod args;
mod certs;
mod consume;
mod local;
mod output;
mod partition;
mod produce;
mod reassign;
mod rebalance;
mod sc_api;
mod security;
mod units;

use clap::Parser;

use args::{Cli, ClusterCommand, ClusterSpuCommand, Command};

/// The connection settings of the global flags, environment variables and `--config` file.
fn client_config(cli: &Cli) -> anyhow::Result<sluice_client::ClientConfig> {
    let settings = sluice_client::ClientSettings {
        sc: cli.sc.clone(),
        config: cli.config.clone(),
        tls_ca: cli.tls_ca.clone(),
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
        token: cli.token.clone().filter(|token| !token.is_empty()),
    };
    Ok(settings.resolve(args::SC_ADDRESS_DEFAULT)?)
}

fn run(cli: &Cli, sc: &str) -> anyhow::Result<()> {
    match &cli.command {
        Command::Cluster(ClusterCommand::Start(args)) => local::start(args),
        Command::Cluster(ClusterCommand::Status(args)) => local::status(args),
        Command::Cluster(ClusterCommand::Stop(args)) => local::stop(args),
        Command::Cluster(ClusterCommand::Spu(ClusterSpuCommand::Stop(args))) => {
            local::spu::stop(args)
        }
        Command::Cluster(ClusterCommand::Spu(ClusterSpuCommand::Kill(args))) => {
            local::spu::kill(args)
        }
        Command::Cluster(ClusterCommand::Rebalance(args)) => rebalance::run(sc, args),
        Command::Cluster(ClusterCommand::RollingRestart(args)) => local::rolling::run(sc, args),
        Command::Cluster(ClusterCommand::Certs(args)) => certs::run(args),
        Command::Topic(command) => admin::topic(sc, command),
        Command::Partition(command) => partition::run(sc, command),
        Command::Spu(command) => admin::spu(sc, command),
        Command::SpuGroup(command) => admin::spu_group(sc, command),
        Command::Produce(args) => produce::run(sc, args),
        Command::Consume(args) => consume::run(sc, args),
        Command::Acl(command) => security::acl(sc, command),
        Command::Token(command) => security::token(sc, command),
    }
}

/// When no SC answered at `sc`, but the default local cluster runs with its SC elsewhere, a
/// line saying which `--sc` to pass.
fn local_cluster_hint(error: &anyhow::Error, sc: &str) -> Option<String> {
    let unreachable = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sluice_client::ClientError>(),
            Some(sluice_client::ClientError::ScUnreachable { .. })
        )
    });
    if !unreachable {
        return None;
    }
    let data_dir = local::resolve_data_dir(None).ok()?;
    let existing = local::state::load(&data_dir).ok()??;
    let running = existing.processes.iter().any(local::state::ProcessRecord::is_running);
    (running && existing.sc_public_address != sc).then(|| {
        let address = &existing.sc_public_address;
        format!(
            "hint: the local cluster in {} has its SC at {address}: pass `--sc {address}` or set \
             SLUICE_SC",
            data_dir.display()
        )
    })
}

fn main() {
    let cli = Cli::parse();
    let config = match client_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    };
    let sc = config.sc_addresses.join(",");
    sc_api::set_connection_settings(config);
    if let Err(error) = run(&cli, &sc) {
        eprintln!("error: {error:#}");
        if let Some(hint) = local_cluster_hint(&error, &sc) {
            eprintln!("{hint}");
        }
        std::process::exit(1);
    }
}
