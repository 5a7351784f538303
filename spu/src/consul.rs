//! Consul integration of the SPU, on plain threads (the executors never block on HTTP):
//!
//! - **Registration** ([`Registration`]): with `--consul-address`, the SPU registers the service
//!   `sluice-spu` (id `sluice-spu-<cluster>-<spu id>`, address the advertised host, port the
//!   public listener, tags `cluster=`, `spu=`, `rack=`) with an HTTP check that the agent runs
//!   on the SPU's own `/health/ready`, so the instance passes only while the SPU is registered
//!   with the active SC and every hosted replica is open. The `spu-consul` thread retries the
//!   registration until the agent takes it (the agent may start after the SPU) and removes it
//!   on a clean stop, before the cores stop. A crashed SPU stays registered, critical, until it
//!   starts again (same id: the registration is replaced) or an operator deregisters it.
//! - **SC discovery** ([`start_discovery`]): each `--sc consul://AGENT/CLUSTER` gets an
//!   `spu-sc-discovery` thread that follows the passing instances of `sluice-sc-<cluster>`
//!   with blocking queries and keeps their private addresses, the active SC first, in the list
//!   the SC link reads before every round of connection attempts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_kvstore_consul::{
    discover_sc, ConsulClient, ConsulConfig, ConsulError, HealthFilter, HealthWatch, HttpCheck,
    ScDiscoveryUrl, ScEndpoint, ServiceRegistration, WatchOptions,
};

use crate::config::ConsulRegistrationSettings;
use crate::sc_link::DiscoveredScAddresses;

/// Name of the service every SPU registers.
pub const SERVICE_NAME: &str = "sluice-spu";
/// Interval of the agent's HTTP check on `/health/ready`.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait of the agent for one `/health/ready` answer.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between registration attempts while the agent refuses or is unreachable.
const REGISTER_RETRY: Duration = Duration::from_secs(1);
/// How often the registration thread looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// Longest blocking query of the discovery thread (it notices a shutdown after at most this).
const DISCOVERY_WAIT: Duration = Duration::from_secs(10);

/// What the SPU registers (its bound addresses).
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// SPU id.
    pub spu_id: i32,
    /// Host other machines reach the SPU at.
    pub advertised_host: String,
    /// Public (client) port.
    pub public_port: u16,
    /// Private (replication) port.
    pub private_port: u16,
    /// Metrics and health address.
    pub metrics_address: std::net::SocketAddr,
}

/// The service registration of this SPU.
pub fn service_registration(
    settings: &ConsulRegistrationSettings,
    endpoints: &Endpoints,
) -> ServiceRegistration {
    let id = format!("{SERVICE_NAME}-{}-{}", settings.cluster, endpoints.spu_id);
    let health_host = if endpoints.metrics_address.ip().is_unspecified() {
        endpoints.advertised_host.clone()
    } else {
        endpoints.metrics_address.ip().to_string()
    };
    let health_host =
        if health_host.contains(':') { format!("[{health_host}]") } else { health_host };
    let mut tags =
        vec![format!("cluster={}", settings.cluster), format!("spu={}", endpoints.spu_id)];
    let mut meta = std::collections::BTreeMap::from([
        ("cluster".to_owned(), settings.cluster.clone()),
        ("spu_id".to_owned(), endpoints.spu_id.to_string()),
        ("private_port".to_owned(), endpoints.private_port.to_string()),
        ("metrics_port".to_owned(), endpoints.metrics_address.port().to_string()),
    ]);
    if let Some(rack) = &settings.rack {
        tags.push(format!("rack={rack}"));
        meta.insert("rack".to_owned(), rack.clone());
    }
    ServiceRegistration {
        http_check: Some(HttpCheck {
            check_id: format!("{id}-ready"),
            url: format!("http://{health_host}:{}/health/ready", endpoints.metrics_address.port()),
            interval: HEALTH_CHECK_INTERVAL,
            timeout: HEALTH_CHECK_TIMEOUT,
            deregister_critical_after: None,
        }),
        id,
        name: SERVICE_NAME.to_owned(),
        tags,
        address: Some(endpoints.advertised_host.clone()),
        port: Some(endpoints.public_port),
        meta,
        check: None,
    }
}

fn client(address: &str, token: Option<&str>) -> Result<ConsulClient, ConsulError> {
    let mut config = ConsulConfig::from_address_or_env(Some(address))?;
    if let Some(token) = token {
        config = config.with_token(token);
    }
    ConsulClient::new(config)
}

/// The `spu-consul` thread: registered while the SPU runs, deregistered when `shutdown` is
/// set.
pub struct Registration {
    thread: JoinHandle<()>,
}

impl Registration {
    /// Starts the thread.
    ///
    /// # Errors
    /// An unusable agent address or TLS setting (not retried), or no thread.
    pub fn start(
        settings: &ConsulRegistrationSettings,
        endpoints: &Endpoints,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Registration, std::io::Error> {
        let client = client(&settings.address, settings.token.as_deref())
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let registration = service_registration(settings, endpoints);
        let thread = std::thread::Builder::new()
            .name("spu-consul".into())
            .spawn(move || keep_registered(&client, &registration, &shutdown))?;
        Ok(Registration { thread })
    }

    /// Waits for the thread (after `shutdown` was set: it has deregistered).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the Consul registration thread panicked");
        }
    }
}

fn keep_registered(
    client: &ConsulClient,
    registration: &ServiceRegistration,
    shutdown: &AtomicBool,
) {
    let mut registered = false;
    let mut next_attempt = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        if !registered && Instant::now() >= next_attempt {
            match client.agent_service_register(registration) {
                Ok(()) => {
                    tracing::info!(service = %registration.id, "registered in Consul");
                    registered = true;
                }
                Err(error) => {
                    tracing::warn!(%error, service = %registration.id, "cannot register in Consul; retrying");
                    next_attempt = Instant::now() + REGISTER_RETRY;
                }
            }
        }
        std::thread::sleep(SHUTDOWN_POLL);
    }
    if registered {
        match client.agent_service_deregister(&registration.id) {
            Ok(()) => tracing::info!(service = %registration.id, "deregistered from Consul"),
            Err(error) => {
                tracing::warn!(%error, service = %registration.id, "cannot deregister from Consul")
            }
        }
    }
}

/// Starts an `spu-sc-discovery` thread per `consul://` entry of `sc_addresses`, all writing
/// into one shared list (the concatenation of what each found); `None` when there is no such
/// entry. The threads end when `shutdown` is set (after at most one blocking query).
///
/// # Errors
/// An entry that does not parse, or no thread.
pub fn start_discovery(
    sc_addresses: &[String],
    token: Option<&str>,
    shutdown: &Arc<AtomicBool>,
) -> Result<Option<DiscoveredScAddresses>, std::io::Error> {
    let urls: Vec<ScDiscoveryUrl> = sc_addresses
        .iter()
        .filter(|address| ScDiscoveryUrl::is_consul(address))
        .map(|address| ScDiscoveryUrl::parse(address))
        .collect::<Result<_, _>>()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    if urls.is_empty() {
        return Ok(None);
    }
    let found: Arc<Mutex<Vec<Vec<String>>>> = Arc::new(Mutex::new(vec![Vec::new(); urls.len()]));
    let shared = DiscoveredScAddresses::default();
    for (slot, url) in urls.into_iter().enumerate() {
        let client = url
            .client(token)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let (found, shared, shutdown) = (found.clone(), shared.clone(), shutdown.clone());
        std::thread::Builder::new().name("spu-sc-discovery".into()).spawn(move || {
            follow(&client, &url, &shutdown, |addresses| {
                let mut found = found.lock().unwrap_or_else(|poison| poison.into_inner());
                found[slot] = addresses;
                shared.set(found.concat());
            });
        })?;
    }
    Ok(Some(shared))
}

fn follow(
    client: &ConsulClient,
    url: &ScDiscoveryUrl,
    shutdown: &AtomicBool,
    mut publish: impl FnMut(Vec<String>),
) {
    // One plain query first, so the first addresses do not wait for a blocking query's index.
    match discover_sc(client, &url.cluster, ScEndpoint::Private) {
        Ok(addresses) => publish(addresses),
        Err(error) => tracing::warn!(%error, agent = %url.agent, "cannot look up the SC in Consul"),
    }
    let mut watch = HealthWatch::new(
        client.clone(),
        sluice_kvstore_consul::sc_service_name(&url.cluster),
        HealthFilter::PassingOnly,
        WatchOptions::with_wait(DISCOVERY_WAIT),
    );
    while !shutdown.load(Ordering::Relaxed) {
        match watch.poll() {
            Ok(Some(instances)) => {
                let addresses =
                    sluice_kvstore_consul::sc_addresses(&instances, ScEndpoint::Private);
                tracing::info!(?addresses, cluster = %url.cluster, "SCs found in Consul");
                publish(addresses);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, agent = %url.agent, "cannot look up the SC in Consul");
                std::thread::sleep(REGISTER_RETRY);
            }
        }
    }
}
