//! Test support (cargo feature `test-harness`): real Consul agents on free ports.
//!
//! **For tests only.** [`ConsulAgent`] starts `consul agent -dev` bound to 127.0.0.1 with every
//! port chosen free (HTTP, optional HTTPS, serf LAN and WAN, server RPC; DNS and gRPC disabled)
//! and its own temporary data directory, waits until a leader is elected and the node is
//! registered, and kills the process by its `Child` handle on drop, so a failing test leaks
//! nothing. Agents are independent: tests may start many in parallel.
//!
//! The binary is `$SLUICE_CONSUL_BIN`, else `<workspace root>/.consul/bin/consul`; when it is
//! missing every start fails with a message asking to run `deploy/dev/setup`.
//!
//! Use it from another crate's tests with
//! `sluice-kvstore-consul = { workspace = true, features = ["test-harness"] }` in
//! `[dev-dependencies]`:
//!
//! ```no_run
//! use sluice_kvstore_consul::testing::ConsulAgent;
//!
//! let agent = ConsulAgent::start().expect("consul agent");
//! let client = agent.client();
//! client.kv_put("hello", b"world").unwrap();
//! // The agent is killed when `agent` is dropped.
//! ```

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{encode_path, Call};
use crate::config::{ConsulConfig, TlsConfig};
use crate::ConsulClient;

/// How long an agent may take to elect itself and register its node.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between readiness polls.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Start attempts (a port taken between choosing and binding makes an attempt fail).
const START_ATTEMPTS_MAX: usize = 4;

/// A failure of the test harness (the message says what to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

fn harness_error(message: impl Into<String>) -> HarnessError {
    HarnessError(message.into())
}

/// The Consul binary tests use: `$SLUICE_CONSUL_BIN`, else `<workspace>/.consul/bin/consul`.
///
/// # Errors
/// When the binary does not exist, with a hint to run `deploy/dev/setup`.
pub fn consul_binary() -> Result<PathBuf, HarnessError> {
    let path = match std::env::var_os("SLUICE_CONSUL_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(".consul/bin/consul"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(harness_error(format!(
            "Consul binary not found at {}: run deploy/dev/setup (or set SLUICE_CONSUL_BIN)",
            path.display()
        )))
    }
}

/// The ports an agent listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentPorts {
    /// HTTP API.
    pub http: u16,
    /// HTTPS API (only with TLS).
    pub https: Option<u16>,
    /// Serf LAN gossip (TCP and UDP).
    pub serf_lan: u16,
    /// Serf WAN gossip (TCP and UDP).
    pub serf_wan: u16,
    /// Server RPC.
    pub server: u16,
}

/// Options of a test agent.
#[derive(Debug, Clone, Default)]
pub struct ConsulAgentBuilder {
    acl_master_token: Option<String>,
    tls: bool,
    tls_verify_clients: bool,
    extra_hcl: Vec<String>,
}

impl ConsulAgentBuilder {
    /// Enables ACLs with `default_policy = "deny"` and this master (management) token.
    pub fn acl_master_token(mut self, token: impl Into<String>) -> Self {
        self.acl_master_token = Some(token.into());
        self
    }

    /// Also serves HTTPS, with a CA and server certificate made by `consul tls`.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Serves HTTPS (as [`Self::tls`]) and requires client certificates signed by the agent's
    /// CA (`verify_incoming_https`); see [`ConsulAgent::client_tls_config`].
    pub fn tls_verify_clients(mut self) -> Self {
        self.tls = true;
        self.tls_verify_clients = true;
        self
    }

    /// Extra agent configuration in HCL.
    pub fn hcl(mut self, hcl: impl Into<String>) -> Self {
        self.extra_hcl.push(hcl.into());
        self
    }

    /// Starts the agent and waits until it is ready.
    ///
    /// # Errors
    /// Missing binary, a failed start (with the agent's log tail), or no leader in time.
    pub fn start(self) -> Result<ConsulAgent, HarnessError> {
        let binary = consul_binary()?;
        let data_dir = tempfile::Builder::new()
            .prefix("sluice-consul-")
            .tempdir()
            .map_err(|error| harness_error(format!("cannot create a data dir: {error}")))?;
        let tls_dir =
            if self.tls { Some(make_certificates(&binary, data_dir.path())?) } else { None };
        let mut last_error = harness_error("no start attempt made");
        for _ in 0..START_ATTEMPTS_MAX {
            let ports = choose_ports(self.tls)?;
            let mut agent = ConsulAgent {
                binary: binary.clone(),
                options: self.clone(),
                ports,
                node_name: format!("sluice-test-{}", ports.http),
                tls_dir: tls_dir.clone(),
                child: None,
                data_dir_path: data_dir.path().to_path_buf(),
                _data_dir: None,
            };
            match agent.launch() {
                Ok(()) => {
                    agent._data_dir = Some(data_dir);
                    return Ok(agent);
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

/// A running `consul agent -dev`, killed on drop.
#[derive(Debug)]
pub struct ConsulAgent {
    binary: PathBuf,
    options: ConsulAgentBuilder,
    ports: AgentPorts,
    node_name: String,
    tls_dir: Option<PathBuf>,
    child: Option<Child>,
    data_dir_path: PathBuf,
    _data_dir: Option<tempfile::TempDir>,
}

impl ConsulAgent {
    /// Starts a plain agent (no ACLs, no TLS).
    ///
    /// # Errors
    /// As [`ConsulAgentBuilder::start`].
    pub fn start() -> Result<Self, HarnessError> {
        Self::builder().start()
    }

    /// Options for an agent with ACLs, TLS or extra configuration.
    pub fn builder() -> ConsulAgentBuilder {
        ConsulAgentBuilder::default()
    }

    /// The agent's ports.
    pub fn ports(&self) -> AgentPorts {
        self.ports
    }

    /// The agent's node name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_address(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http)
    }

    /// `https://127.0.0.1:<port>` when started with TLS.
    pub fn https_address(&self) -> Option<String> {
        self.ports.https.map(|port| format!("https://127.0.0.1:{port}"))
    }

    /// The CA certificate (PEM) that signed the agent's HTTPS certificate.
    pub fn ca_certificate_pem(&self) -> Option<Vec<u8>> {
        let dir = self.tls_dir.as_ref()?;
        std::fs::read(dir.join("consul-agent-ca.pem")).ok()
    }

    /// TLS settings with the agent's CA and a client certificate it accepts (made by
    /// `consul tls cert create -client`), for agents started with
    /// [`ConsulAgentBuilder::tls_verify_clients`].
    pub fn client_tls_config(&self) -> Option<TlsConfig> {
        let dir = self.tls_dir.as_ref()?;
        Some(TlsConfig {
            ca_certificates_pem: self.ca_certificate_pem(),
            client_certificate_pem: std::fs::read(dir.join("dc1-client-consul-0.pem")).ok(),
            client_key_pem: std::fs::read(dir.join("dc1-client-consul-0-key.pem")).ok(),
        })
    }

    /// The master token, when ACLs are enabled.
    pub fn acl_master_token(&self) -> Option<&str> {
        self.options.acl_master_token.as_deref()
    }

    /// A configuration for the HTTP address with the master token (if any) and short timeouts.
    pub fn config(&self) -> ConsulConfig {
        let mut config =
            ConsulConfig::new(self.http_address()).with_request_timeout(Duration::from_secs(5));
        config.token = self.options.acl_master_token.clone();
        config
    }

    /// A configuration for the HTTPS address trusting the agent's CA.
    pub fn https_config(&self) -> Option<ConsulConfig> {
        let tls =
            TlsConfig { ca_certificates_pem: self.ca_certificate_pem(), ..TlsConfig::default() };
        let mut config = ConsulConfig::new(self.https_address()?).with_tls(tls);
        config.token = self.options.acl_master_token.clone();
        Some(config)
    }

    /// A client for [`Self::config`].
    ///
    /// # Panics
    /// Never for a started agent (its configuration is always valid).
    pub fn client(&self) -> ConsulClient {
        ConsulClient::new(self.config()).expect("a test agent's configuration is valid")
    }

    /// Whether the agent process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the agent (by its handle) and waits for it. A `-dev` agent loses all its state.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the agent and starts it again on the same ports and data directory.
    ///
    /// # Errors
    /// As [`ConsulAgentBuilder::start`].
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.launch()
    }

    /// The last lines of the agent's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir_path.join("agent.log")
    }

    fn arguments(&self) -> Vec<String> {
        let ports = self.ports;
        let mut arguments: Vec<String> = [
            "agent",
            "-dev",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-log-level",
            "info",
        ]
        .iter()
        .map(|text| (*text).to_string())
        .collect();
        let numbered = [
            ("-http-port", ports.http),
            ("-serf-lan-port", ports.serf_lan),
            ("-serf-wan-port", ports.serf_wan),
            ("-server-port", ports.server),
        ];
        for (flag, port) in numbered {
            arguments.push(flag.into());
            arguments.push(port.to_string());
        }
        arguments.push("-node".into());
        arguments.push(self.node_name.clone());
        arguments.push("-data-dir".into());
        arguments.push(self.data_dir_path.join("consul").display().to_string());
        for hcl in self.hcl() {
            arguments.push("-hcl".into());
            arguments.push(hcl);
        }
        arguments
    }

    fn hcl(&self) -> Vec<String> {
        let mut hcl = self.options.extra_hcl.clone();
        if let Some(token) = &self.options.acl_master_token {
            hcl.push(format!(
                "acl {{ enabled = true default_policy = \"deny\" down_policy = \"extend-cache\" \
                 tokens {{ master = \"{token}\" agent = \"{token}\" }} }}"
            ));
        }
        if let (Some(dir), Some(port)) = (&self.tls_dir, self.ports.https) {
            hcl.push(format!(
                "ports {{ https = {port} }} ca_file = \"{}\" cert_file = \"{}\" key_file = \"{}\"",
                dir.join("consul-agent-ca.pem").display(),
                dir.join("dc1-server-consul-0.pem").display(),
                dir.join("dc1-server-consul-0-key.pem").display(),
            ));
            if self.options.tls_verify_clients {
                hcl.push("verify_incoming_https = true".into());
            }
        }
        hcl
    }

    fn launch(&mut self) -> Result<(), HarnessError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|error| harness_error(format!("cannot open the agent log: {error}")))?;
        let log_copy = log
            .try_clone()
            .map_err(|error| harness_error(format!("cannot share the log: {error}")))?;
        let child = Command::new(&self.binary)
            .args(self.arguments())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_copy)
            .spawn()
            .map_err(|error| {
                harness_error(format!("cannot run {}: {error}", self.binary.display()))
            })?;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(error) => {
                self.stop();
                Err(harness_error(format!("{error}\nagent log tail:\n{}", self.log_tail())))
            }
        }
    }

    /// Polls until a leader is elected and the node is in the catalog with a passing
    /// `serfHealth` check (session creation needs both).
    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let client = self.client();
        let deadline = Instant::now() + READY_TIMEOUT;
        let health_path = format!("/v1/health/node/{}", encode_path(&self.node_name));
        loop {
            if !self.is_running() {
                return Err(harness_error("the Consul agent exited during start"));
            }
            let leader = client.status_leader().ok().flatten();
            if leader.is_some() && node_is_healthy(&client, &health_path) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(harness_error(format!(
                    "the Consul agent was not ready within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(READY_POLL_INTERVAL);
        }
    }
}

fn node_is_healthy(client: &ConsulClient, health_path: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct NodeCheck {
        #[serde(rename = "CheckID")]
        check_id: String,
        #[serde(rename = "Status")]
        status: String,
    }
    let Ok(reply) = client.execute(Call::new("GET", health_path.to_string())) else {
        return false;
    };
    let checks: Vec<NodeCheck> = match reply.success().and_then(|reply| reply.json()) {
        Ok(checks) => checks,
        Err(_) => return false,
    };
    checks.iter().any(|check| check.check_id == "serfHealth" && check.status == "passing")
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Picks free ports; serf ports must be free for TCP and UDP. All are held until every one is
/// chosen so that they differ.
fn choose_ports(tls: bool) -> Result<AgentPorts, HarnessError> {
    let mut held_tcp = Vec::new();
    let mut held_udp = Vec::new();
    let mut take = |with_udp: bool| -> Result<u16, HarnessError> {
        for _ in 0..64 {
            let listener = TcpListener::bind("127.0.0.1:0")
                .map_err(|error| harness_error(format!("cannot bind a free port: {error}")))?;
            let port = listener
                .local_addr()
                .map_err(|error| harness_error(format!("cannot read a bound port: {error}")))?
                .port();
            if with_udp {
                match UdpSocket::bind(("127.0.0.1", port)) {
                    Ok(socket) => held_udp.push(socket),
                    Err(_) => continue,
                }
            }
            held_tcp.push(listener);
            return Ok(port);
        }
        Err(harness_error("no port free for both TCP and UDP"))
    };
    let ports = AgentPorts {
        http: take(false)?,
        https: if tls { Some(take(false)?) } else { None },
        serf_lan: take(true)?,
        serf_wan: take(true)?,
        server: take(false)?,
    };
    Ok(ports)
}

/// Makes a CA, a server certificate (for 127.0.0.1 and localhost) and a client certificate
/// with `consul tls`.
fn make_certificates(binary: &Path, data_dir: &Path) -> Result<PathBuf, HarnessError> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir)
        .map_err(|error| harness_error(format!("cannot create {}: {error}", dir.display())))?;
    let commands = [
        &["tls", "ca", "create"][..],
        &["tls", "cert", "create", "-server"][..],
        &["tls", "cert", "create", "-client"][..],
    ];
    for arguments in commands {
        let output =
            Command::new(binary).args(arguments).current_dir(&dir).output().map_err(|error| {
                harness_error(format!("cannot run consul {arguments:?}: {error}"))
            })?;
        if !output.status.success() {
            return Err(harness_error(format!(
                "consul {arguments:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
    }
    Ok(dir)
}
