//! How `sluice-perf` connects to a cluster it did not start: the SC address of the workload
//! and the process-wide TLS settings (`--tls-ca`, `--tls-cert`, `--tls-key`, `--config`), set
//! once by `main` ([`set_settings`]). Clusters that `sluice-perf` starts itself (suite,
//! failover) are plaintext and connected to directly.

use std::sync::OnceLock;

use sluice_client::{ClientConfig, ClientError, ClientSettings, Cluster};

use crate::args::SC_ADDRESS_DEFAULT;

static SETTINGS: OnceLock<ClientSettings> = OnceLock::new();

/// Records the global connection flags (the first call wins).
pub fn set_settings(settings: ClientSettings) {
    let _first = SETTINGS.set(settings);
}

/// The client configuration for the SC(s) at `sc`. The `--config` file's `sc` applies only
/// while `sc` is the default address (neither `--sc` nor `SLUICE_SC` given).
pub fn client_config(sc: &str) -> Result<ClientConfig, ClientError> {
    let settings = SETTINGS.get().cloned().unwrap_or_default();
    let given = (sc != SC_ADDRESS_DEFAULT).then(|| sc.to_owned());
    ClientSettings { sc: given, ..settings }.resolve(SC_ADDRESS_DEFAULT)
}

/// Connects to the SC(s) at `sc` with the global connection settings.
pub fn connect(sc: &str) -> Result<Cluster, ClientError> {
    Cluster::connect(client_config(sc)?)
}
