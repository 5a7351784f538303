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
    config_for(SETTINGS.get().cloned().unwrap_or_default(), sc)
}

fn config_for(settings: ClientSettings, sc: &str) -> Result<ClientConfig, ClientError> {
    let given = (sc != SC_ADDRESS_DEFAULT).then(|| sc.to_owned());
    ClientSettings { sc: given, ..settings }.resolve(SC_ADDRESS_DEFAULT)
}

/// Connects to the SC(s) at `sc` with the global connection settings.
pub fn connect(sc: &str) -> Result<Cluster, ClientError> {
    Cluster::connect(client_config(sc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_gives_the_address_unless_sc_is_given_and_flags_give_tls() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.toml");
        std::fs::write(&file, "sc = \"10.0.0.9:9003\"\ntls_ca = \"ca.pem\"\n").unwrap();
        let settings = ClientSettings { config: Some(file), ..ClientSettings::default() };
        let from_file = config_for(settings.clone(), SC_ADDRESS_DEFAULT).unwrap();
        assert_eq!(from_file.sc_addresses, ["10.0.0.9:9003"]);
        assert_eq!(from_file.tls.unwrap().ca, dir.path().join("ca.pem"));
        let given = config_for(settings, "10.0.0.1:9003").unwrap();
        assert_eq!(given.sc_addresses, ["10.0.0.1:9003"]);
        let plain = config_for(ClientSettings::default(), SC_ADDRESS_DEFAULT).unwrap();
        assert_eq!(plain.tls, None);
    }
}
