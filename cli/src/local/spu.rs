//! `sluice cluster spu stop | kill ID`: ends one SPU of the local cluster, so a user can watch
//! a failover on one machine.
//!
//! The SPU is found in `<data-dir>/cluster.json` and signalled by its recorded PID and start
//! time only (never a reused PID). Its record stays: the cluster is then partly running, and
//! `cluster start --local` starts that SPU again with its recorded settings.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;

use super::state::{self, ClusterState, ProcessRecord};
use super::{process, KILL_WAIT};
use crate::args::{ClusterSpuKillArgs, ClusterSpuStopArgs, SC_ADDRESS_DEFAULT};

/// The recorded SPU `id`, or an error that lists the SPUs there are.
pub fn find_spu(existing: &ClusterState, id: i32) -> anyhow::Result<&ProcessRecord> {
    if let Some(record) = existing.spu(id) {
        return Ok(record);
    }
    let known: Vec<String> = existing.spu_ids().iter().map(i32::to_string).collect();
    let known = match known.len() {
        0 => "it has no SPUs recorded".to_owned(),
        1 => format!("its SPU is {}", known[0]),
        _ => format!("its SPUs are {}", known.join(", ")),
    };
    bail!("no SPU {id} in the local cluster in {}: {known}", existing.data_dir.display())
}

/// The state file of the cluster in `data_dir`, or an error saying how to start one.
fn load_cluster(data_dir: &Path) -> anyhow::Result<ClusterState> {
    match state::load(data_dir)? {
        Some(existing) => Ok(existing),
        None => bail!(
            "no local cluster in {} (no {}); start one with `sluice cluster start --local{}`",
            data_dir.display(),
            state::STATE_FILE_NAME,
            super::data_dir_flag(data_dir)
        ),
    }
}

/// What to run next, for the messages after a stop or kill.
fn next_steps(existing: &ClusterState) -> String {
    let sc_flag = if existing.sc_public_address == SC_ADDRESS_DEFAULT {
        String::new()
    } else {
        format!(" --sc {}", existing.sc_public_address)
    };
    format!(
        "The SC moves the leadership of its partitions to in-sync replicas on other SPUs: `sluice \
         partition list{sc_flag}` shows the new leaders. `sluice cluster start --local{}` starts \
         it again.",
        super::data_dir_flag(&existing.data_dir)
    )
}

/// Says that the SPU is not running; `Ok` (there is nothing to do).
fn already_gone(record: &ProcessRecord, existing: &ClusterState) -> anyhow::Result<()> {
    println!(
        "SPU {} is not running (pid {} has exited); nothing to do. `sluice cluster start \
         --local{}` starts it again.",
        record.spu_id.unwrap_or_default(),
        record.pid,
        super::data_dir_flag(&existing.data_dir)
    );
    Ok(())
}

/// `sluice cluster spu stop ID`: SIGTERM, wait, SIGKILL after the timeout.
pub fn stop(args: &ClusterSpuStopArgs) -> anyhow::Result<()> {
    let data_dir = super::resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    let existing = load_cluster(&data_dir)?;
    let record = find_spu(&existing, args.id)?;
    let (pid, start_time) = (record.pid, record.start_time_ticks);
    if !process::signal(pid, start_time, libc::SIGTERM) {
        return already_gone(record, &existing);
    }
    eprintln!(
        "sent SIGTERM to SPU {} (pid {pid}); waiting up to {:?} for it to exit",
        args.id, args.timeout
    );
    let started = Instant::now();
    if process::wait_all_gone(&[(pid, start_time)], args.timeout).is_empty() {
        println!(
            "SPU {} (pid {pid}) stopped after SIGTERM in {:.1} s. {}",
            args.id,
            started.elapsed().as_secs_f64(),
            next_steps(&existing)
        );
        return Ok(());
    }
    eprintln!(
        "SPU {} (pid {pid}) did not exit within {:?} of SIGTERM; sending SIGKILL",
        args.id, args.timeout
    );
    kill_and_wait(args.id, pid, start_time)?;
    println!(
        "SPU {} (pid {pid}) killed with SIGKILL after SIGTERM timed out. {}",
        args.id,
        next_steps(&existing)
    );
    Ok(())
}

/// `sluice cluster spu kill ID`: SIGKILL at once, like `kill -9`.
pub fn kill(args: &ClusterSpuKillArgs) -> anyhow::Result<()> {
    let data_dir = super::resolve_data_dir(args.data_dir.data_dir.as_deref())?;
    let existing = load_cluster(&data_dir)?;
    let record = find_spu(&existing, args.id)?;
    let (pid, start_time) = (record.pid, record.start_time_ticks);
    if !process::is_running(pid, start_time) {
        return already_gone(record, &existing);
    }
    kill_and_wait(args.id, pid, start_time)?;
    println!(
        "SPU {} (pid {pid}) killed with SIGKILL, as in a crash (nothing synced, connections \
         dropped). {}",
        args.id,
        next_steps(&existing)
    );
    Ok(())
}

fn kill_and_wait(id: i32, pid: u32, start_time: u64) -> anyhow::Result<()> {
    process::signal(pid, start_time, libc::SIGKILL);
    if !process::wait_all_gone(&[(pid, start_time)], KILL_WAIT).is_empty() {
        bail!("SPU {id} (pid {pid}) still runs {KILL_WAIT:?} after SIGKILL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::state::{Role, STATE_VERSION};
    use std::path::PathBuf;

    fn cluster(spus: &[i32]) -> ClusterState {
        let record = |role, spu_id| ProcessRecord {
            role,
            spu_id,
            pid: 1,
            start_time_ticks: 1,
            public_address: None,
            log_file: PathBuf::from("/l"),
            cores: None,
        };
        let mut processes = vec![record(Role::Sc, None)];
        processes.extend(spus.iter().map(|id| record(Role::Spu, Some(*id))));
        ClusterState {
            version: STATE_VERSION,
            data_dir: PathBuf::from("/data"),
            metadata: "embedded".into(),
            sc_public_address: SC_ADDRESS_DEFAULT.into(),
            sc_private_address: "127.0.0.1:9004".into(),
            spu_group: "local".into(),
            processes,
            consul_address: None,
            sc_public_listen: None,
            sc_private_listen: None,
            tls_dir: None,
            authorization: false,
        }
    }

    #[test]
    fn an_unknown_id_lists_the_known_ones() {
        let existing = cluster(&[5003, 5001, 5002]);
        assert_eq!(find_spu(&existing, 5002).unwrap().spu_id, Some(5002));
        let error = find_spu(&existing, 9).unwrap_err().to_string();
        assert_eq!(error, "no SPU 9 in the local cluster in /data: its SPUs are 5001, 5002, 5003");
        let error = find_spu(&cluster(&[5001]), 9).unwrap_err().to_string();
        assert!(error.ends_with("its SPU is 5001"), "{error}");
        let error = find_spu(&cluster(&[]), 9).unwrap_err().to_string();
        assert!(error.ends_with("it has no SPUs recorded"), "{error}");
    }

    #[test]
    fn next_steps_name_the_sc_when_it_is_not_the_default() {
        let mut existing = cluster(&[5001]);
        assert!(next_steps(&existing).contains("`sluice partition list`"));
        existing.sc_public_address = "127.0.0.1:4242".into();
        assert!(next_steps(&existing).contains("`sluice partition list --sc 127.0.0.1:4242`"));
    }
}
