//! `sluice cluster stop`: every recorded process, SPUs first, SIGTERM then SIGKILL after the
//! timeout; the state file goes, the data stays.

use anyhow::bail;

use super::state::{self, ProcessRecord, Role};
use super::{data_dir_flag, process, resolve_data_dir, KILL_WAIT};
use crate::args::ClusterStopArgs;

/// `sluice cluster stop`: SIGTERM to every recorded process, SIGKILL after the timeout.
pub fn stop(args: &ClusterStopArgs) -> anyhow::Result<()> {
    let data_dir = resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    let Some(existing) = state::load(&data_dir)? else {
        eprintln!("no local cluster in {}: nothing to stop", data_dir.display());
        return Ok(());
    };
    // SPUs first, so they sync and leave while the SC still answers them.
    let mut ordered: Vec<&ProcessRecord> = existing.processes.iter().collect();
    ordered.sort_by_key(|record| record.role == Role::Sc);
    let mut signalled = Vec::new();
    for record in &ordered {
        if process::signal(record.pid, record.start_time_ticks, libc::SIGTERM) {
            signalled.push((record.pid, record.start_time_ticks));
        }
    }
    let stubborn = process::wait_all_gone(&signalled, args.timeout);
    for (pid, start_time) in &stubborn {
        eprintln!("pid {pid} did not exit within {:?} of SIGTERM; sending SIGKILL", args.timeout);
        process::signal(*pid, *start_time, libc::SIGKILL);
    }
    let left = process::wait_all_gone(&stubborn, KILL_WAIT);
    if !left.is_empty() {
        let pids: Vec<String> = left.iter().map(|(pid, _)| pid.to_string()).collect();
        bail!("processes {} are still running after SIGKILL", pids.join(", "));
    }
    state::remove(&data_dir)?;
    println!(
        "Stopped {} process{} of the local cluster in {}. Data is kept; `sluice cluster start \
         --local{}` reattaches it.",
        signalled.len(),
        if signalled.len() == 1 { "" } else { "es" },
        data_dir.display(),
        data_dir_flag(&data_dir)
    );
    Ok(())
}
