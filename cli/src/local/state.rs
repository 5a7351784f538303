//! The local cluster's state file, `<data-dir>/cluster.json`: which processes `sluice cluster
//! start` spawned (PID and start time, so a reused PID is never mistaken for ours), where they
//! listen and where they log.
//!
//! Written atomically (temporary file, then rename) after every process spawned, so a start
//! interrupted half-way still leaves a file that `sluice cluster stop` can act on. Removed by a
//! successful stop. The data itself (SC metadata, SPU replicas) lives beside it and is never
//! removed by the CLI.
//!
//! It also records what a restart of a dead process needs (the SC's store and listen
//! addresses, each SPU's cores), so `cluster start` can start just the missing processes with
//! the settings they had. Those fields are optional: files written before them still load,
//! and a restart then falls back to the start's flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// File name of the state file inside the data directory.
pub const STATE_FILE_NAME: &str = "cluster.json";

/// Version of the file layout; a different version is refused with a message.
pub const STATE_VERSION: u32 = 1;

/// What runs, as recorded by `cluster start`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Layout version ([`STATE_VERSION`]).
    pub version: u32,
    /// The data directory (absolute).
    pub data_dir: PathBuf,
    /// `embedded` or `consul`.
    pub metadata: String,
    /// The SC's public address for clients (`--sc`).
    pub sc_public_address: String,
    /// The SC's private address (SPUs connect there).
    pub sc_private_address: String,
    /// Name of the SPU group the SPUs belong to.
    pub spu_group: String,
    /// Every spawned process.
    pub processes: Vec<ProcessRecord>,
    /// The Consul agent's address with `metadata: consul`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_address: Option<String>,
    /// The SC's public listen address as it reported it (a wildcard host kept), so a restarted
    /// SC listens where clients already connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sc_public_listen: Option<String>,
    /// The SC's private listen address as it reported it, so a restarted SC listens where the
    /// running SPUs reconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sc_private_listen: Option<String>,
    /// With `--tls`: the directory of the cluster's CA and certificates (`DIR/tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<PathBuf>,
    /// With `--tls`: the SC enforces ACLs (`--authorization`), the admin identity a superuser.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authorization: bool,
}

impl ClusterState {
    /// The recorded SPU with this id.
    pub fn spu(&self, id: i32) -> Option<&ProcessRecord> {
        self.processes.iter().find(|record| record.role == Role::Spu && record.spu_id == Some(id))
    }

    /// The recorded SC.
    pub fn sc(&self) -> Option<&ProcessRecord> {
        self.processes.iter().find(|record| record.role == Role::Sc)
    }

    /// The recorded SPU ids, ascending.
    pub fn spu_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .processes
            .iter()
            .filter(|record| record.role == Role::Spu)
            .filter_map(|record| record.spu_id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// Which part of the cluster a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The Streaming Controller.
    Sc,
    /// A Streaming Processing Unit.
    Spu,
}

/// One spawned process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// SC or SPU.
    pub role: Role,
    /// The SPU id (absent for the SC).
    pub spu_id: Option<i32>,
    /// Its PID.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`), identifying it.
    pub start_time_ticks: u64,
    /// Its public address, once known from its ready file.
    pub public_address: Option<String>,
    /// Where its stdout and stderr go.
    pub log_file: PathBuf,
    /// CPU cores of an SPU (`--cores`), for a restart with the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u16>,
}

impl ProcessRecord {
    /// `sc` or `spu-<id>`.
    pub fn label(&self) -> String {
        match (self.role, self.spu_id) {
            (Role::Spu, Some(id)) => format!("spu-{id}"),
            (Role::Spu, None) => "spu".into(),
            (Role::Sc, _) => "sc".into(),
        }
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        super::process::is_running(self.pid, self.start_time_ticks)
    }
}

/// The state file's path in `data_dir`.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE_NAME)
}

/// Reads the state file; `Ok(None)` when there is none.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<ClusterState>> {
    let path = state_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let state: ClusterState = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a cluster state file; if no cluster runs from this directory, remove it",
            path.display()
        )
    })?;
    anyhow::ensure!(
        state.version == STATE_VERSION,
        "{} has layout version {}, this sluice reads version {STATE_VERSION}; stop that cluster \
         with the sluice that started it",
        path.display(),
        state.version
    );
    Ok(Some(state))
}

/// Writes the state file atomically.
pub fn save(state: &ClusterState) -> anyhow::Result<()> {
    let path = state_path(&state.data_dir);
    let temporary = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state)?;
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Removes the state file (absent is fine).
pub fn remove(data_dir: &Path) -> anyhow::Result<()> {
    let path = state_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let state = ClusterState {
            version: STATE_VERSION,
            data_dir: dir.path().to_owned(),
            metadata: "embedded".into(),
            sc_public_address: "127.0.0.1:9003".into(),
            sc_private_address: "127.0.0.1:9004".into(),
            spu_group: "local".into(),
            processes: vec![ProcessRecord {
                role: Role::Spu,
                spu_id: Some(5001),
                pid: 42,
                start_time_ticks: 7,
                public_address: None,
                log_file: dir.path().join("logs/spu-5001.log"),
                cores: Some(2),
            }],
            consul_address: None,
            sc_public_listen: Some("0.0.0.0:9003".into()),
            sc_private_listen: None,
            tls_dir: None,
            authorization: false,
        };
        save(&state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state));
        remove(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        remove(dir.path()).unwrap();
    }

    /// A file written before the restart settings were recorded still loads.
    #[test]
    fn files_without_restart_settings_load() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"version":1,"data_dir":{dir:?},"metadata":"consul",
                "sc_public_address":"127.0.0.1:9003","sc_private_address":"127.0.0.1:9004",
                "spu_group":"local","processes":[{{"role":"spu","spu_id":5001,"pid":42,
                "start_time_ticks":7,"public_address":null,"log_file":"/l"}}]}}"#,
            dir = dir.path()
        );
        std::fs::write(state_path(dir.path()), text).unwrap();
        let state = load(dir.path()).unwrap().unwrap();
        assert_eq!(state.consul_address, None);
        assert_eq!(state.sc_public_listen, None);
        assert_eq!(state.spu(5001).unwrap().cores, None);
        assert_eq!(state.spu_ids(), [5001]);
        assert!(state.sc().is_none());
    }

    #[test]
    fn garbage_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(state_path(dir.path()), "not json").unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("remove it"), "{error}");
    }
}
