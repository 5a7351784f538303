//! `sluice cluster status`: the local cluster's recorded processes, whether each runs, and how
//! the SC sees the SPUs.

use std::path::PathBuf;

use anyhow::bail;
use serde::Serialize;
use sluice_proto::api::admin::SpuEntry;

use super::{data_dir_flag, resolve_data_dir, state};
use crate::args::ClusterStatusArgs;
use crate::output::{self, Table};
use crate::sc_api::ScApi;

/// What `cluster status -O json` prints.
#[derive(Debug, Serialize)]
struct StatusReport {
    data_dir: PathBuf,
    metadata: String,
    sc_public_address: String,
    running: bool,
    processes: Vec<ProcessStatus>,
    /// The SPUs as the SC sees them; absent when the SC does not answer.
    spus: Option<Vec<SpuEntry>>,
    sc_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ProcessStatus {
    name: String,
    pid: u32,
    running: bool,
    public_address: Option<String>,
    log_file: PathBuf,
}

/// `sluice cluster status`: exits with an error when no local cluster runs.
pub fn status(args: &ClusterStatusArgs) -> anyhow::Result<()> {
    let data_dir = resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    let Some(existing) = state::load(&data_dir)? else {
        bail!(
            "no local cluster in {} (no {}); start one with `sluice cluster start --local{}`",
            data_dir.display(),
            state::STATE_FILE_NAME,
            data_dir_flag(&data_dir)
        );
    };
    let processes: Vec<ProcessStatus> = existing
        .processes
        .iter()
        .map(|record| ProcessStatus {
            name: record.label(),
            pid: record.pid,
            running: record.is_running(),
            public_address: record.public_address.clone(),
            log_file: record.log_file.clone(),
        })
        .collect();
    let running = processes.iter().all(|process| process.running);
    let (spus, sc_error) = match ScApi::connect_with(super::tls::client_config(&existing))
        .and_then(|api| api.list_spus())
    {
        Ok(spus) => (Some(spus), None),
        Err(error) => (None, Some(format!("{error:#}"))),
    };
    let report = StatusReport {
        data_dir: existing.data_dir.clone(),
        metadata: existing.metadata.clone(),
        sc_public_address: existing.sc_public_address.clone(),
        running,
        processes,
        spus,
        sc_error,
    };
    output::print(args.output.format, &report, || {
        format!(
            "Local cluster in {} (metadata: {}), SC at {}\n\n{}{}",
            report.data_dir.display(),
            report.metadata,
            report.sc_public_address,
            status_table(&report).render(),
            report.sc_error.as_ref().map_or(String::new(), |error| format!("\n{error}\n"))
        )
    })?;
    if !running {
        bail!(
            "the local cluster is not (fully) running; `sluice cluster start --local{0}` starts \
             what is not running",
            data_dir_flag(&data_dir)
        );
    }
    Ok(())
}

fn status_table(report: &StatusReport) -> Table {
    let mut table = Table::new(&["PROCESS", "PID", "STATE", "ADDRESS", "SC VIEW"]);
    for process in &report.processes {
        let spu = report.spus.as_ref().and_then(|spus| {
            let id: i32 = process.name.strip_prefix("spu-")?.parse().ok()?;
            spus.iter().find(|spu| spu.spec.id.get() == id)
        });
        let sc_view = match (&report.spus, spu) {
            (_, Some(spu)) => format!("{:?}", spu.status.resolution).to_lowercase(),
            (Some(_), None) if process.name == "sc" => "reachable".into(),
            (Some(_), None) => "unknown to the SC".into(),
            (None, _) => "SC unreachable".into(),
        };
        table.row(vec![
            process.name.clone(),
            process.pid.to_string(),
            if process.running { "running" } else { "stopped" }.into(),
            process.public_address.clone().unwrap_or_default(),
            sc_view,
        ]);
    }
    table
}
