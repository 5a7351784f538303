//! Finding the SC through Consul: `consul://AGENT/CLUSTER`.
//!
//! Every `sluice-sc` on the Consul store registers the service `sluice-sc-<cluster>` on its
//! agent (port: its public listener; meta [`SC_PRIVATE_PORT_META`]: its SPU control listener)
//! and adds the tag [`SC_ACTIVE_TAG`] once it holds the leadership. [`discover_sc`] lists the
//! instances whose checks all pass, the active one first, so SPUs and clients name no SC
//! address: they try the list in order and skip a standby (which answers `NotController`) as
//! with a hand-written list.

use crate::client::ConsulClient;
use crate::config::ConsulConfig;
use crate::error::ConsulError;
use crate::health::{HealthFilter, ServiceHealth};

/// URL scheme of an SC found through Consul.
pub const SCHEME: &str = "consul://";
/// Tag the active SC adds to its service registration.
pub const SC_ACTIVE_TAG: &str = "active";
/// Service meta key holding the SC's private (SPU control) port.
pub const SC_PRIVATE_PORT_META: &str = "private_port";

/// The Consul service name of the SCs of `cluster`.
pub fn sc_service_name(cluster: &str) -> String {
    format!("sluice-sc-{cluster}")
}

/// Which SC listener an address is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScEndpoint {
    /// Admin and client metadata (the service's port).
    Public,
    /// SPU control (the service's `private_port` meta).
    Private,
}

/// A parsed `consul://AGENT/CLUSTER` (AGENT: `host:port` of a Consul agent's HTTP API; the
/// ACL token comes from `CONSUL_HTTP_TOKEN` unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScDiscoveryUrl {
    /// The agent's HTTP address.
    pub agent: String,
    /// The cluster name.
    pub cluster: String,
}

impl ScDiscoveryUrl {
    /// Whether `text` is a Consul URL (rather than `host:port`).
    pub fn is_consul(text: &str) -> bool {
        text.trim().starts_with(SCHEME)
    }

    /// Parses `consul://AGENT/CLUSTER` (`consul://AGENT` and `consul://AGENT/` mean cluster
    /// `default`).
    ///
    /// # Errors
    /// [`ConsulError::Config`] when the text is not such a URL.
    ///
    /// ```
    /// use sluice_kvstore_consul::ScDiscoveryUrl;
    /// let url = ScDiscoveryUrl::parse("consul://10.0.0.1:8500/east").unwrap();
    /// assert_eq!((url.agent.as_str(), url.cluster.as_str()), ("10.0.0.1:8500", "east"));
    /// ```
    pub fn parse(text: &str) -> Result<ScDiscoveryUrl, ConsulError> {
        let invalid = |why: &str| ConsulError::Config {
            reason: format!("{text:?} is not consul://AGENT[:PORT]/CLUSTER: {why}"),
        };
        let rest = text.trim().strip_prefix(SCHEME).ok_or_else(|| invalid("wrong scheme"))?;
        let (agent, cluster) = rest.split_once('/').unwrap_or((rest, ""));
        if agent.is_empty() {
            return Err(invalid("no agent address"));
        }
        let cluster = if cluster.is_empty() { "default" } else { cluster };
        if cluster.contains('/') {
            return Err(invalid("the cluster name has a '/'"));
        }
        Ok(ScDiscoveryUrl { agent: agent.to_owned(), cluster: cluster.to_owned() })
    }

    /// A client for the agent, with `token` or else `CONSUL_HTTP_TOKEN`.
    ///
    /// # Errors
    /// As [`ConsulClient::new`].
    pub fn client(&self, token: Option<&str>) -> Result<ConsulClient, ConsulError> {
        let mut config = ConsulConfig::from_address_or_env(Some(&self.agent))?;
        if let Some(token) = token {
            config = config.with_token(token);
        }
        ConsulClient::new(config)
    }
}

/// `host:port` of every SC of `cluster` whose checks all pass, the active one first (then by
/// service id). Instances registered without the `private_port` meta are left out for
/// [`ScEndpoint::Private`]. An empty list means no SC is up (yet).
///
/// # Errors
/// The health query's error.
pub fn discover_sc(
    client: &ConsulClient,
    cluster: &str,
    endpoint: ScEndpoint,
) -> Result<Vec<String>, ConsulError> {
    let instances = client.health_service(&sc_service_name(cluster), HealthFilter::PassingOnly)?;
    Ok(sc_addresses(&instances.value, endpoint))
}

/// The addresses of `instances` for `endpoint`, the active one first.
pub fn sc_addresses(instances: &[ServiceHealth], endpoint: ScEndpoint) -> Vec<String> {
    let mut ordered: Vec<&ServiceHealth> = instances.iter().collect();
    // Stable: the health query's order (service id) stays among equals.
    ordered.sort_by_key(|instance| !instance.tags.iter().any(|tag| tag == SC_ACTIVE_TAG));
    ordered
        .into_iter()
        .filter_map(|instance| {
            let host = if instance.address.is_empty() {
                &instance.node_address
            } else {
                &instance.address
            };
            let port = match endpoint {
                ScEndpoint::Public => Some(instance.port),
                ScEndpoint::Private => {
                    instance.meta.get(SC_PRIVATE_PORT_META).and_then(|port| port.parse().ok())
                }
            }?;
            (!host.is_empty() && port != 0).then(|| join_host_port(host, port))
        })
        .collect()
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn instance(id: &str, address: &str, tags: &[&str], private: Option<&str>) -> ServiceHealth {
        let mut meta = BTreeMap::new();
        if let Some(port) = private {
            meta.insert(SC_PRIVATE_PORT_META.to_owned(), port.to_owned());
        }
        ServiceHealth {
            node: "node".into(),
            node_address: "10.0.0.9".into(),
            service_id: id.into(),
            service_name: "sluice-sc-default".into(),
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            address: address.into(),
            port: 9003,
            meta,
            checks: Vec::new(),
        }
    }

    #[test]
    fn urls_parse_and_default_the_cluster() {
        let url = ScDiscoveryUrl::parse(" consul://127.0.0.1:8500/east ").unwrap();
        assert_eq!(url, ScDiscoveryUrl { agent: "127.0.0.1:8500".into(), cluster: "east".into() });
        assert_eq!(ScDiscoveryUrl::parse("consul://a:1").unwrap().cluster, "default");
        assert_eq!(ScDiscoveryUrl::parse("consul://a:1/").unwrap().cluster, "default");
        for bad in ["http://a:1/x", "consul:///x", "consul://a:1/x/y", "a:1"] {
            assert!(ScDiscoveryUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(ScDiscoveryUrl::is_consul("consul://a"));
        assert!(!ScDiscoveryUrl::is_consul("a:1"));
    }

    #[test]
    fn the_active_sc_comes_first_and_private_needs_its_port() {
        let instances = [
            instance("a", "10.0.0.1", &[], Some("9004")),
            instance("b", "", &["active"], Some("9104")),
            instance("c", "fd00::3", &[], None),
        ];
        assert_eq!(
            sc_addresses(&instances, ScEndpoint::Public),
            ["10.0.0.9:9003", "10.0.0.1:9003", "[fd00::3]:9003"]
        );
        assert_eq!(
            sc_addresses(&instances, ScEndpoint::Private),
            ["10.0.0.9:9104", "10.0.0.1:9004"]
        );
    }
}
