//! Services and health: register a service with a TTL check on the local agent, report the
//! check's status, and query (or watch) `health/service/<name>`.
//!
//! A TTL check goes critical on its own when it is not updated within its TTL; the owner of
//! the service calls [`ConsulClient::agent_check_update`] (or `pass`/`warn`/`fail`) more often
//! than that.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{encode_path, Blocking, Call, ConsulClient};
use crate::error::ConsulError;
use crate::types::{duration_text, ConsulIndex, Indexed};
use crate::watch::{BlockingLoop, Watch, WatchOptions};

/// Status of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckStatus {
    /// Healthy.
    Passing,
    /// Degraded but serving.
    Warning,
    /// Failing (also used for statuses this client does not know).
    Critical,
    /// Under maintenance (set by the agent's maintenance mode).
    Maintenance,
}

impl CheckStatus {
    /// Consul's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Maintenance => "maintenance",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "passing" => Self::Passing,
            "warning" => Self::Warning,
            "maintenance" => Self::Maintenance,
            _ => Self::Critical,
        }
    }
}

/// Which instances a health query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthFilter {
    /// Every registered instance, whatever its checks say.
    #[default]
    All,
    /// Only instances whose every check is passing (`?passing`; warnings are left out).
    PassingOnly,
}

/// A TTL check attached to a service registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlCheck {
    /// Check id, used by [`ConsulClient::agent_check_update`].
    pub check_id: String,
    /// The check turns critical when not updated within this.
    pub ttl: Duration,
    /// Status right after registration.
    pub initial_status: CheckStatus,
    /// Consul removes the service after it has been critical this long.
    pub deregister_critical_after: Option<Duration>,
}

/// An HTTP check attached to a service registration: the agent itself sends `GET url` every
/// `interval`; a 2xx answer is passing, 429 warning, anything else (or no answer within
/// `timeout`) critical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Check id.
    pub check_id: String,
    /// The URL the agent requests, e.g. `http://10.0.0.5:9007/health/ready`.
    pub url: String,
    /// Time between two requests.
    pub interval: Duration,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Consul removes the service after it has been critical this long.
    pub deregister_critical_after: Option<Duration>,
}

/// A service to register on the local agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRegistration {
    /// Unique id on the agent.
    pub id: String,
    /// Service name (what health queries ask for).
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address, when not the node's.
    pub address: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// The TTL check, if any.
    pub check: Option<TtlCheck>,
    /// An HTTP check the agent runs, if any (besides or instead of the TTL check).
    pub http_check: Option<HttpCheck>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireCheck<'a> {
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    name: String,
    #[serde(rename = "TTL")]
    ttl: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_critical_service_after: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireRegistration<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    meta: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<WireCheck<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<WireHttpCheck<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireHttpCheck<'a> {
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    name: String,
    #[serde(rename = "HTTP")]
    http: &'a str,
    method: &'static str,
    interval: String,
    timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_critical_service_after: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireCheckUpdate<'a> {
    status: &'static str,
    output: &'a str,
}

/// One health check as seen by a health query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Check id.
    pub check_id: String,
    /// Check name.
    pub name: String,
    /// Status.
    pub status: CheckStatus,
    /// Last output (the note given with the last update).
    pub output: String,
    /// Service the check belongs to (empty for node checks).
    pub service_id: String,
}

/// One instance of a service with its node and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    /// Node name.
    pub node: String,
    /// Node address.
    pub node_address: String,
    /// Service id.
    pub service_id: String,
    /// Service name.
    pub service_name: String,
    /// Service tags.
    pub tags: Vec<String>,
    /// Service address (empty: the node's).
    pub address: String,
    /// Service port.
    pub port: u16,
    /// Service metadata.
    pub meta: BTreeMap<String, String>,
    /// Node and service checks.
    pub checks: Vec<HealthCheck>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireNode {
    #[serde(default)]
    node: String,
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireService {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireHealthCheck {
    #[serde(rename = "CheckID", default)]
    check_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    output: String,
    #[serde(rename = "ServiceID", default)]
    service_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireServiceEntry {
    node: WireNode,
    service: WireService,
    #[serde(default)]
    checks: Vec<WireHealthCheck>,
}

impl WireServiceEntry {
    fn into_health(self) -> ServiceHealth {
        let checks = self
            .checks
            .into_iter()
            .map(|check| HealthCheck {
                check_id: check.check_id,
                name: check.name,
                status: CheckStatus::parse(&check.status),
                output: check.output,
                service_id: check.service_id,
            })
            .collect();
        ServiceHealth {
            node: self.node.node,
            node_address: self.node.address,
            service_id: self.service.id,
            service_name: self.service.service,
            tags: self.service.tags.unwrap_or_default(),
            address: self.service.address,
            port: self.service.port,
            meta: self.service.meta.unwrap_or_default(),
            checks,
        }
    }
}

impl ConsulClient {
    /// Registers (or replaces) a service on the local agent.
    ///
    /// # Errors
    /// Transport errors and error statuses.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use sluice_kvstore_consul::{CheckStatus, ServiceRegistration, TtlCheck};
    /// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
    /// client.agent_service_register(&ServiceRegistration {
    ///     id: "sluice-spu-1".into(),
    ///     name: "sluice-spu".into(),
    ///     port: Some(9005),
    ///     check: Some(TtlCheck {
    ///         check_id: "sluice-spu-1-alive".into(),
    ///         ttl: Duration::from_secs(15),
    ///         initial_status: CheckStatus::Passing,
    ///         deregister_critical_after: None,
    ///     }),
    ///     ..ServiceRegistration::default()
    /// })?;
    /// client.agent_check_pass("sluice-spu-1-alive", "serving")?;
    /// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
    /// ```
    pub fn agent_service_register(
        &self,
        registration: &ServiceRegistration,
    ) -> Result<(), ConsulError> {
        let check = registration.check.as_ref().map(|check| WireCheck {
            check_id: &check.check_id,
            name: format!("{} TTL", registration.name),
            ttl: duration_text(check.ttl),
            status: check.initial_status.as_str(),
            deregister_critical_service_after: check.deregister_critical_after.map(duration_text),
        });
        let checks = registration
            .http_check
            .iter()
            .map(|check| WireHttpCheck {
                check_id: &check.check_id,
                name: format!("{} HTTP", registration.name),
                http: &check.url,
                method: "GET",
                interval: duration_text(check.interval),
                timeout: duration_text(check.timeout),
                deregister_critical_service_after: check
                    .deregister_critical_after
                    .map(duration_text),
            })
            .collect();
        let wire = WireRegistration {
            id: &registration.id,
            name: &registration.name,
            tags: &registration.tags,
            address: registration.address.as_deref(),
            port: registration.port,
            meta: &registration.meta,
            check,
            checks,
        };
        let body = serde_json::to_vec(&wire).map_err(|error| ConsulError::Config {
            reason: format!("cannot encode the service registration: {error}"),
        })?;
        self.execute(Call::new("PUT", "/v1/agent/service/register".into()).body(&body))?
            .success()?;
        Ok(())
    }

    /// Removes a service (and its checks) from the local agent.
    ///
    /// # Errors
    /// Transport errors and error statuses (an unknown id is an error).
    pub fn agent_service_deregister(&self, service_id: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/service/deregister/{}", encode_path(service_id));
        self.execute(Call::new("PUT", path))?.success()?;
        Ok(())
    }

    /// Sets a TTL check's status and output, resetting its TTL.
    ///
    /// # Errors
    /// Transport errors and error statuses ("Unknown check" for an unknown id).
    pub fn agent_check_update(
        &self,
        check_id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<(), ConsulError> {
        let wire = WireCheckUpdate { status: status.as_str(), output };
        let body = serde_json::to_vec(&wire).map_err(|error| ConsulError::Config {
            reason: format!("cannot encode the check update: {error}"),
        })?;
        let path = format!("/v1/agent/check/update/{}", encode_path(check_id));
        self.execute(Call::new("PUT", path).body(&body))?.success()?;
        Ok(())
    }

    /// Marks a TTL check passing.
    ///
    /// # Errors
    /// As [`Self::agent_check_update`].
    pub fn agent_check_pass(&self, check_id: &str, output: &str) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Passing, output)
    }

    /// Marks a TTL check warning.
    ///
    /// # Errors
    /// As [`Self::agent_check_update`].
    pub fn agent_check_warn(&self, check_id: &str, output: &str) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Warning, output)
    }

    /// Marks a TTL check critical.
    ///
    /// # Errors
    /// As [`Self::agent_check_update`].
    pub fn agent_check_fail(&self, check_id: &str, output: &str) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Critical, output)
    }

    /// Instances of service `name` with their checks, filtered by `filter`, sorted by service
    /// id.
    ///
    /// # Errors
    /// Transport errors and error statuses.
    pub fn health_service(
        &self,
        name: &str,
        filter: HealthFilter,
    ) -> Result<Indexed<Vec<ServiceHealth>>, ConsulError> {
        self.health_service_at(name, filter, None)
    }

    pub(crate) fn health_service_at(
        &self,
        name: &str,
        filter: HealthFilter,
        blocking: Option<Blocking>,
    ) -> Result<Indexed<Vec<ServiceHealth>>, ConsulError> {
        let mut call = Call::new("GET", format!("/v1/health/service/{}", encode_path(name)))
            .blocking(blocking);
        if filter == HealthFilter::PassingOnly {
            call = call.flag("passing");
        }
        let reply = self.execute(call)?.success()?;
        let entries: Option<Vec<WireServiceEntry>> = reply.json()?;
        let mut services: Vec<ServiceHealth> =
            entries.unwrap_or_default().into_iter().map(WireServiceEntry::into_health).collect();
        services.sort_by(|left, right| {
            (&left.service_id, &left.node).cmp(&(&right.service_id, &right.node))
        });
        Ok(Indexed { index: reply.required_index()?, value: services })
    }
}

/// Watches `health/service/<name>` and reports the instance list whenever it changes.
///
/// ```no_run
/// use sluice_kvstore_consul::{HealthFilter, HealthWatch, WatchOptions};
/// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
/// let mut watch =
///     HealthWatch::new(client, "sluice-spu", HealthFilter::PassingOnly, WatchOptions::default());
/// if let Some(healthy) = watch.poll()? {
///     println!("{} healthy SPUs", healthy.len());
/// }
/// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
/// ```
#[derive(Debug)]
pub struct HealthWatch {
    client: ConsulClient,
    name: String,
    filter: HealthFilter,
    blocking_loop: BlockingLoop,
    last: Option<Vec<ServiceHealth>>,
}

impl HealthWatch {
    /// A watch on service `name` (`filter`: as [`ConsulClient::health_service`]).
    pub fn new(
        client: ConsulClient,
        name: impl Into<String>,
        filter: HealthFilter,
        options: WatchOptions,
    ) -> Self {
        Self {
            client,
            name: name.into(),
            filter,
            blocking_loop: BlockingLoop::new(options),
            last: None,
        }
    }

    /// The index the next query blocks on.
    pub fn index(&self) -> ConsulIndex {
        self.blocking_loop.index()
    }

    /// One blocking query: the new instance list if it differs from the last one (always on
    /// the first poll), else `None`.
    ///
    /// # Errors
    /// The query's error; the watch keeps its state and may be polled again.
    pub fn poll(&mut self) -> Result<Option<Vec<ServiceHealth>>, ConsulError> {
        let (client, name, filter) = (&self.client, &self.name, self.filter);
        let answer = self
            .blocking_loop
            .run(|blocking| client.health_service_at(name, filter, Some(blocking)))?;
        if self.last.as_ref() == Some(&answer.value) {
            return Ok(None);
        }
        self.last = Some(answer.value.clone());
        Ok(Some(answer.value))
    }
}

impl Watch for HealthWatch {
    type Change = Vec<ServiceHealth>;
    fn poll(&mut self) -> Result<Option<Vec<ServiceHealth>>, ConsulError> {
        HealthWatch::poll(self)
    }
}
