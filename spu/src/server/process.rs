//! The SPU process: bind every socket, start one pinned executor per core, register with the
//! SC (core 0), report readiness, stop on request.
//!
//! Start ([`Spu::start`], on the main thread): every listening socket is bound here with
//! SO_REUSEPORT before any executor runs, so the addresses are known up front and a bind error
//! fails the start with a clear message: the shared public port (the first bind picks the port
//! when it is 0; every other core binds that port), one per-core public port per core, the
//! shared private port, and the metrics endpoint. Executor `i` is pinned to the `i`-th CPU of
//! the process' affinity mask (`Placement::Fixed`) and gets its sockets' descriptors; executors
//! are spawned in core order, so their mesh peer ids equal their core indexes (checked).
//!
//! Per core (see [`run_core`]): three task queues (client traffic 1000 shares, replication
//! 500, background 100), the mesh receivers, the reconcile task, accept loops, the status
//! reporter and the retention timer. Core 0 also runs the SC link
//! ([`crate::sc_link::run`]) and fans its replica sets out to every core.
//!
//! Stop ([`Spu::shutdown`]): the shared flag is seen by every core within
//! [`SHUTDOWN_POLL`]; each core stops accepting, closes its replicas (a final write round and
//! fdatasync: appends already staged become durable) and ends; the main thread joins them.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, Latency, LocalExecutorBuilder, Placement, Shares};
use sluice_proto::api::control::{LiveReplica, LiveReplicaStatus, SpuRegisterRequest};
use sluice_proto::object::{Endpoint, ReplicaStatus};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::SpuConfig;
use crate::consul::{Endpoints, Registration};
use crate::metrics::{CoreProbe, MetricsRegistry, MetricsServer};
use crate::sc_link::{self, DiscoveredScAddresses, ScLinkConfig, ScLinkEvent};
use crate::server::connection::{self, Port};
use crate::server::core::{Core, Queues};
use crate::server::ops::{self, StatusSink};
use crate::server::shard::{ShardMessage, MESH_QUEUE_CAPACITY};
use crate::storage::runtime::{locked_memory_limit_bytes, LOCKED_MEMORY_BYTES_MIN};
use crate::storage::signal::Signal;
use crate::tls::CoreTls;

/// How often each core looks at the shutdown flag.
pub const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// Longest wait for every executor to start.
const CORES_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a core reports the status of the replicas it leads (when it changed).
pub const STATUS_INTERVAL: Duration = Duration::from_millis(200);
/// How often a core reports changes of its replicas' offsets (HW, LEO, lag) when nothing
/// else changed. The SC writes every partition whose status changed to its store (with the
/// embedded store two fsyncs apiece, on the disk the SPU writes to), so offsets are sampled,
/// not streamed: under load with 100 partitions, reporting them every 200 ms cost the SC
/// 500 store writes a second. A new or removed leader, epoch or in-sync set is reported
/// within [`STATUS_INTERVAL`].
pub const OFFSETS_REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// How often the background timer looks at relaxed topics' flush intervals.
pub const BACKGROUND_TICK: Duration = Duration::from_millis(100);
/// Pending connections per listening socket.
const LISTEN_BACKLOG: i32 = 1024;
/// Replica status reports queued for the SC link at most (a full queue drops the report; the
/// next change sends a complete one).
const STATUS_QUEUE_CAPACITY: usize = 16;
/// SC link events queued at most for core 0's fan-out.
const EVENT_QUEUE_CAPACITY: usize = 64;
/// In-sync proposal batches queued for the SC link at most (a full queue drops a batch; its
/// leaders propose again after their proposal timeout).
const IN_SYNC_QUEUE_CAPACITY: usize = 64;

/// Why the SPU could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory, the ready file or a thread failed.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS files do not load (which file and why).
    #[error("TLS: {0}")]
    Tls(#[from] sluice_tls::TlsError),
    /// The locked-memory limit is too low for glommio.
    #[error(
        "locked-memory limit is {limit_bytes} bytes; glommio needs at least {needed_bytes} per \
         core: raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity in systemd)"
    )]
    LockedMemory {
        /// The soft limit.
        limit_bytes: u64,
        /// What is needed.
        needed_bytes: u64,
    },
}

/// The listening sockets of one core, as descriptors to move into its executor.
struct CoreSockets {
    public_shared: OwnedFd,
    public_core: OwnedFd,
    private_shared: OwnedFd,
    private_core: OwnedFd,
}

/// A running SPU.
pub struct Spu {
    /// The shared client address.
    pub public_address: SocketAddr,
    /// The replication address.
    pub private_address: SocketAddr,
    /// The Prometheus address.
    pub metrics_address: SocketAddr,
    /// Per-core client addresses, index = core.
    pub core_addresses: Vec<SocketAddr>,
    /// Per-core replication addresses, index = core.
    pub core_private_addresses: Vec<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    cores_running: Arc<AtomicUsize>,
    cores: usize,
    registered: mpsc::Receiver<SocketAddr>,
    executors: Vec<ExecutorJoinHandle<()>>,
    metrics: Option<MetricsServer>,
    consul: Option<Registration>,
}

fn bind(address: SocketAddr) -> Result<StdListener, StartError> {
    let failed = |source| StartError::Bind { address, source };
    let domain = if address.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(failed)?;
    socket.set_reuse_address(true).map_err(failed)?;
    socket.set_reuse_port(true).map_err(failed)?;
    socket.bind(&address.into()).map_err(failed)?;
    socket.listen(LISTEN_BACKLOG).map_err(failed)?;
    Ok(socket.into())
}

fn local_address(listener: &StdListener, address: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind { address, source })
}

/// Binds `address` `count` times with SO_REUSEPORT (port 0: the first bind picks it).
fn bind_shared(
    address: SocketAddr,
    count: usize,
) -> Result<(SocketAddr, Vec<OwnedFd>), StartError> {
    let first = bind(address)?;
    let bound = local_address(&first, address)?;
    let mut fds = vec![OwnedFd::from(first)];
    for _ in 1..count {
        fds.push(OwnedFd::from(bind(bound)?));
    }
    Ok((bound, fds))
}

/// Every client and replication socket of the SPU, bound.
struct Bound {
    public_address: SocketAddr,
    private_address: SocketAddr,
    core_addresses: Vec<SocketAddr>,
    core_private_addresses: Vec<SocketAddr>,
    sockets: Vec<CoreSockets>,
}

fn bind_all(config: &SpuConfig) -> Result<Bound, StartError> {
    let cores = usize::from(config.cores);
    let (public_address, public_fds) = bind_shared(config.public_address, cores)?;
    let (private_address, private_fds) = bind_shared(config.private_address, cores)?;
    let mut core_addresses = Vec::with_capacity(cores);
    let mut core_private_addresses = Vec::with_capacity(cores);
    let mut sockets = Vec::with_capacity(cores);
    for (core, (public_shared, private_shared)) in
        public_fds.into_iter().zip(private_fds).enumerate()
    {
        let port = config.core_port_base.map_or(0, |base| base + core as u16);
        let address = SocketAddr::new(public_address.ip(), port);
        let listener = bind(address)?;
        core_addresses.push(local_address(&listener, address)?);
        let private_port = config.core_private_port_base.map_or(0, |base| base + core as u16);
        let private_address_core = SocketAddr::new(private_address.ip(), private_port);
        let private_listener = bind(private_address_core)?;
        core_private_addresses.push(local_address(&private_listener, private_address_core)?);
        sockets.push(CoreSockets {
            public_shared,
            public_core: OwnedFd::from(listener),
            private_shared,
            private_core: OwnedFd::from(private_listener),
        });
    }
    Ok(Bound { public_address, private_address, core_addresses, core_private_addresses, sockets })
}

impl Spu {
    /// Binds every socket and starts the executors. Returns once they run; registration with
    /// the SC happens in the background ([`Spu::wait_registered`]).
    pub fn start(config: SpuConfig) -> Result<Spu, StartError> {
        let limit_bytes = locked_memory_limit_bytes();
        if limit_bytes < LOCKED_MEMORY_BYTES_MIN {
            return Err(StartError::LockedMemory {
                limit_bytes,
                needed_bytes: LOCKED_MEMORY_BYTES_MIN,
            });
        }
        if let Some(tls) = &config.tls {
            crate::tls::validate(tls, &config.cluster)?;
        }
        let replicas_dir = config.replicas_dir();
        std::fs::create_dir_all(&replicas_dir).map_err(|source| StartError::Io {
            what: format!("create {}", replicas_dir.display()),
            source,
        })?;
        let cores = usize::from(config.cores);
        let Bound {
            public_address,
            private_address,
            core_addresses,
            core_private_addresses,
            sockets,
        } = bind_all(&config)?;
        let (registry, probes) = MetricsRegistry::new(cores);
        registry.set_data_volume(crate::metrics::DataVolume {
            directory: replicas_dir.clone(),
            free_bytes_min: config.free_bytes_min,
            free_space_ratio_min: config.free_space_ratio_min,
        });
        let metrics = MetricsServer::start(config.metrics_address, registry)
            .map_err(|source| StartError::Bind { address: config.metrics_address, source })?;
        let metrics_address = metrics.local_addr();
        let register = SpuRegisterRequest {
            id: config.id,
            cores: config.cores,
            core_public_ports: core_addresses.iter().map(SocketAddr::port).collect(),
            core_private_ports: core_private_addresses.iter().map(SocketAddr::port).collect(),
            public_endpoint: Endpoint::new(config.advertised_host.clone(), public_address.port()),
            private_endpoint: Endpoint::new(config.advertised_host.clone(), private_address.port()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            incarnation: draw_incarnation(),
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let discovered = crate::consul::start_discovery(
            &config.sc_addresses,
            config.consul_token.as_deref(),
            &shutdown,
        )
        .map_err(|source| StartError::Io { what: "start the SC discovery".into(), source })?;
        let cores_running = Arc::new(AtomicUsize::new(0));
        let (registered_sender, registered) = mpsc::channel();
        let config = Arc::new(config);
        let mesh = MeshBuilder::full(cores, MESH_QUEUE_CAPACITY);
        let cpus = crate::config::allowed_cpus();
        let mut executors = Vec::with_capacity(cores);
        for (index, (sockets, probe)) in sockets.into_iter().zip(probes).enumerate() {
            let setup = CoreSetup {
                index,
                config: Arc::clone(&config),
                sockets,
                probe,
                mesh: mesh.clone(),
                shutdown: Arc::clone(&shutdown),
                cores_running: Arc::clone(&cores_running),
                link: (index == 0).then(|| LinkSetup {
                    register: register.clone(),
                    registered: registered_sender.clone(),
                    discovered: discovered.clone(),
                }),
            };
            let cpu = cpus.get(index).copied().unwrap_or(index);
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("spu-core-{index}"))
                .io_memory(IO_MEMORY_BYTES)
                .spawn(move || run_core(setup));
            match spawned {
                Ok(handle) => executors.push(handle),
                Err(error) => {
                    shutdown.store(true, Ordering::Relaxed);
                    return Err(StartError::Io {
                        what: format!("start the executor of core {index}"),
                        source: std::io::Error::other(error.to_string()),
                    });
                }
            }
        }
        wait_cores_started(&cores_running, cores, &shutdown)?;
        let consul = match &config.consul {
            None => None,
            Some(settings) => {
                let endpoints = Endpoints {
                    spu_id: config.id.get(),
                    advertised_host: config.advertised_host.clone(),
                    public_port: public_address.port(),
                    private_port: private_address.port(),
                    metrics_address,
                };
                let started = Registration::start(settings, &endpoints, Arc::clone(&shutdown));
                Some(started.map_err(|source| {
                    shutdown.store(true, Ordering::Relaxed);
                    StartError::Io { what: "start the Consul registration".into(), source }
                })?)
            }
        };
        Ok(Spu {
            consul,
            cores_running,
            cores,
            public_address,
            private_address,
            metrics_address,
            core_addresses,
            core_private_addresses,
            shutdown,
            registered,
            executors,
            metrics: Some(metrics),
        })
    }

    /// Waits until the SC accepted the registration (`Some(sc address)`), or `None` once
    /// `timeout` passed or the SPU stopped.
    pub fn wait_registered(&self, timeout: Duration) -> Option<SocketAddr> {
        self.registered.recv_timeout(timeout).ok()
    }

    /// The text of the ready file.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "public={}\nprivate={}\nmetrics={}\n",
            self.public_address, self.private_address, self.metrics_address
        );
        for (core, address) in self.core_addresses.iter().enumerate() {
            text.push_str(&format!("core.{core}={address}\n"));
        }
        for (core, address) in self.core_private_addresses.iter().enumerate() {
            text.push_str(&format!("core_private.{core}={address}\n"));
        }
        text
    }

    /// Writes [`Spu::describe`] to `path` atomically (temporary file, then rename).
    pub fn write_ready_file(&self, path: &Path) -> Result<(), StartError> {
        let temporary = path.with_extension("tmp");
        let io = |source| StartError::Io { what: format!("write {}", path.display()), source };
        std::fs::write(&temporary, self.describe()).map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }

    /// The flag that stops every core when set (e.g. from a signal handler).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutdown)
    }

    /// Whether every executor is still running (false once one ended, e.g. by a panic).
    pub fn all_cores_running(&self) -> bool {
        self.cores_running.load(Ordering::SeqCst) == self.cores
    }

    /// Stops every core (replicas closed: staged appends become durable) and waits for them.
    pub fn shutdown(mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        // Out of Consul first, so nothing is sent here while the cores stop.
        if let Some(consul) = self.consul.take() {
            consul.join();
        }
        for executor in self.executors.drain(..) {
            if let Err(error) = executor.join() {
                tracing::error!(%error, "an executor ended abnormally");
            }
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.stop();
        }
    }
}

/// What core 0 needs for the SC link.
struct LinkSetup {
    register: SpuRegisterRequest,
    registered: mpsc::Sender<SocketAddr>,
    discovered: Option<DiscoveredScAddresses>,
}

/// What one core's executor starts from.
struct CoreSetup {
    index: usize,
    config: Arc<SpuConfig>,
    sockets: CoreSockets,
    probe: CoreProbe,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    shutdown: Arc<AtomicBool>,
    /// Counts this core while its executor runs (decremented on exit, panics included).
    cores_running: Arc<AtomicUsize>,
    /// Core 0 only: the registration to send and where to report it accepted.
    link: Option<LinkSetup>,
}

fn create_queues() -> Queues {
    let executor = glommio::executor();
    Queues {
        client: executor.create_task_queue(
            Shares::Static(1000),
            Latency::Matters(Duration::from_millis(5)),
            "client",
        ),
        replication: executor.create_task_queue(
            Shares::Static(500),
            Latency::Matters(Duration::from_millis(10)),
            "replication",
        ),
        background: executor.create_task_queue(
            Shares::Static(100),
            Latency::NotImportant,
            "background",
        ),
    }
}

fn spawn_into(
    queue: glommio::TaskQueueHandle,
    task: impl std::future::Future<Output = ()> + 'static,
) {
    match glommio::spawn_local_into(task, queue) {
        Ok(task) => {
            task.detach();
        }
        Err(error) => tracing::error!(%error, "cannot spawn a task"),
    }
}

/// Accepts connections until `stop` fires.
async fn accept_loop(core: Rc<Core>, fd: RawFd, port: Port, stop: Rc<Signal>) {
    // SAFETY: `fd` is a bound, listening TCP socket this core alone owns from here on.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let queue = match port {
        Port::Public => core.queues.client,
        Port::Private => core.queues.replication,
    };
    let generation = stop.generation();
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stop.changed(generation).await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                core.probe.add(crate::metrics::Counter::ConnectionsAccepted, 1);
                spawn_into(queue, connection::serve(Rc::clone(&core), stream, port));
            }
            Some(Err(error)) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(%error, core = core.index, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The live status of every replica this core leads.
fn leader_statuses(core: &Core) -> Vec<LiveReplica> {
    let mut statuses: Vec<LiveReplica> = core
        .replicas()
        .into_iter()
        .filter_map(|replica| {
            Some(LiveReplica {
                key: replica.key().clone(),
                leader_epoch: replica.leader_epoch()?,
                leader: replica.status(),
                followers: replica.follower_statuses(),
            })
        })
        .collect();
    statuses.sort_by(|left, right| left.key.cmp(&right.key));
    statuses
}

/// Whether two status lists differ at most in offsets (HW, LEO, lag).
fn same_but_offsets(before: &[LiveReplica], after: &[LiveReplica]) -> bool {
    let same_replica = |a: &ReplicaStatus, b: &ReplicaStatus| a.spu == b.spu;
    before.len() == after.len()
        && before.iter().zip(after).all(|(a, b)| {
            a.key == b.key
                && a.leader_epoch == b.leader_epoch
                && same_replica(&a.leader, &b.leader)
                && a.followers.len() == b.followers.len()
                && a.followers.iter().zip(&b.followers).all(|(x, y)| same_replica(x, y))
        })
}

/// Sends this core's leader statuses to core 0 when they change: at once (within
/// [`STATUS_INTERVAL`]) for anything but offsets, every [`OFFSETS_REPORT_INTERVAL`] at most
/// for offsets alone.
async fn report_status(core: Rc<Core>, local: Option<Rc<StatusMerge>>, stop: Rc<Signal>) {
    let mut last: Option<Vec<LiveReplica>> = None;
    let mut last_sent = std::time::Instant::now();
    let generation = stop.generation();
    loop {
        let stopped = future::or(
            async {
                stop.changed(generation).await;
                true
            },
            async {
                glommio::timer::sleep(STATUS_INTERVAL).await;
                false
            },
        )
        .await;
        if stopped {
            return;
        }
        let statuses = leader_statuses(&core);
        if last.as_ref() == Some(&statuses) {
            continue;
        }
        let offsets_only = last.as_ref().is_some_and(|last| same_but_offsets(last, &statuses));
        if offsets_only && last_sent.elapsed() < OFFSETS_REPORT_INTERVAL {
            continue;
        }
        last_sent = std::time::Instant::now();
        last = Some(statuses.clone());
        match &local {
            Some(merge) => merge.update(core.index, statuses),
            None => {
                core.send_to(0, ShardMessage::Status { core: core.index, replicas: statuses })
                    .await;
            }
        }
    }
}

/// How often core 0 looks for dropped replicas' directories to remove.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);
/// How often each replica's high watermark is checkpointed (when it moved): after a crash a
/// replica restarts from at most this far behind, which only delays committed reads on a new
/// leader until its followers report (the HW is then proven again).
const HIGH_WATERMARK_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// Each leader's in-sync proposal, if it wants one, sent to the SC through core 0; and the
/// under-replicated count.
async fn propose_in_sync(core: &Core) {
    let now = std::time::Instant::now();
    let replicas = core.replicas();
    let proposals: Vec<_> =
        replicas.iter().filter_map(|replica| replica.propose_in_sync(now)).collect();
    core.send_proposals(proposals).await;
    let under = replicas.iter().filter(|replica| replica.is_under_replicated()).count();
    core.probe.set(crate::metrics::Gauge::ReplicasUnderReplicated, under as i64);
}

/// Syncs relaxed topics when due, applies retention every `retention_interval` of the
/// configuration and (core 0) removes dropped replicas' files (see [`super::deleted`]).
async fn background_timer(core: Rc<Core>, stop: Rc<Signal>) {
    let generation = stop.generation();
    let interval = core.config.retention_interval;
    let mut retention_due = std::time::Instant::now() + interval;
    let mut purge_due = std::time::Instant::now();
    let mut checkpoint_due = std::time::Instant::now() + HIGH_WATERMARK_CHECKPOINT_INTERVAL;
    let purging = Rc::new(std::cell::Cell::new(false));
    loop {
        let stopped = future::or(
            async {
                stop.changed(generation).await;
                true
            },
            async {
                glommio::timer::sleep(BACKGROUND_TICK).await;
                false
            },
        )
        .await;
        if stopped {
            return;
        }
        // Core 0 removes dropped replicas' directories once their retention passed, on
        // glommio's blocking thread: removing gigabytes of segments can take seconds (more on
        // a volume mounted with `discard`), which the core's clients must not wait for.
        // A paced removal can take many seconds: it runs detached (one at a time) so that
        // this loop keeps syncing and applying retention meanwhile.
        if core.index == 0 && !purging.get() && std::time::Instant::now() >= purge_due {
            let replicas_dir = core.config.replicas_dir();
            let retention = core.config.deleted_retention;
            let rate = core.config.delete_bytes_per_second;
            purging.set(true);
            let done = Rc::clone(&purging);
            glommio::spawn_local(async move {
                glommio::executor()
                    .spawn_blocking(move || {
                        crate::server::deleted::purge(
                            &replicas_dir,
                            retention,
                            std::time::SystemTime::now(),
                            rate,
                        )
                    })
                    .await;
                done.set(false);
            })
            .detach();
            purge_due = std::time::Instant::now() + PURGE_INTERVAL;
        }
        propose_in_sync(&core).await;
        let retention = std::time::Instant::now() >= retention_due;
        if retention {
            retention_due = std::time::Instant::now() + interval;
        }
        let checkpoint = std::time::Instant::now() >= checkpoint_due;
        if checkpoint {
            checkpoint_due = std::time::Instant::now() + HIGH_WATERMARK_CHECKPOINT_INTERVAL;
        }
        for replica in core.replicas() {
            if retention {
                if let Err(error) = replica.log().apply_retention() {
                    tracing::warn!(key = %replica.key(), %error, "retention failed");
                }
            }
            replica.background_sync().await;
            replica.retry_promotion(&core.config).await;
            if checkpoint && !replica.is_closed() {
                if let Err(error) = replica.log().checkpoint_high_watermark().await {
                    tracing::warn!(key = %replica.key(), %error, "high-watermark checkpoint failed");
                }
            }
        }
    }
}

/// Core 0's merge of every core's leader statuses, forwarded to the SC link.
struct StatusMerge {
    spu: sluice_proto::ids::SpuId,
    per_core: RefCell<Vec<Vec<LiveReplica>>>,
    link: LocalSender<LiveReplicaStatus>,
}

impl StatusMerge {
    fn update(&self, core: usize, statuses: Vec<LiveReplica>) {
        let replicas: Vec<LiveReplica> = {
            let mut per_core = self.per_core.borrow_mut();
            if core >= per_core.len() {
                return;
            }
            per_core[core] = statuses;
            per_core.iter().flatten().cloned().collect()
        };
        let report = LiveReplicaStatus { spu: self.spu, replicas };
        if self.link.try_send(report).is_err() {
            tracing::debug!("status queue to the SC link full; the next change resends");
        }
    }
}

/// Core 0: runs the SC link and fans its replica sets out to every core.
async fn run_link(
    core: Rc<Core>,
    LinkSetup { register, registered, discovered }: LinkSetup,
    status: glommio::channels::local_channel::LocalReceiver<LiveReplicaStatus>,
    stop: Rc<Signal>,
) {
    let (events, incoming) = local_channel::new_bounded(EVENT_QUEUE_CAPACITY);
    let (in_sync_sender, in_sync) = local_channel::new_bounded(IN_SYNC_QUEUE_CAPACITY);
    core.set_link_requests(in_sync_sender);
    let config = ScLinkConfig {
        sc_addresses: core.config.sc_addresses.clone(),
        discovered,
        register,
        heartbeat_interval: core.config.heartbeat_interval,
        reconnect_backoff: Duration::from_millis(200),
        tls: core.tls.clone(),
        enforced_security: Some(sc_link::EnforcedSecurity::new({
            let registry = Arc::clone(core.probe.registry());
            move || registry.security_version_applied()
        })),
    };
    let generation = stop.generation();
    let stop_link = Rc::clone(&stop);
    let link = glommio::spawn_local(async move {
        let shutdown = async move { stop_link.changed(generation).await };
        if let Err(error) = sc_link::run(config, events, status, in_sync, shutdown).await {
            tracing::error!(%error, "the SC link stopped");
        }
    });
    while let Some(event) = incoming.recv().await {
        match event {
            ScLinkEvent::Connected { sc } => {
                tracing::info!(%sc, "registered with the SC");
                core.probe.health().set_registered(true);
                let _ = registered.send(sc);
            }
            ScLinkEvent::Disconnected { reason } => {
                tracing::warn!(%reason, "SC connection lost; serving on with the last replica set");
                core.probe.health().set_registered(false);
            }
            ScLinkEvent::Replicas(set) => {
                core.probe.health().set_replicas_assigned(set.keys().cloned().collect());
                core.set_desired(Arc::clone(&set));
                for peer in (0..core.cores).filter(|peer| *peer != core.index) {
                    core.send_to(peer, ShardMessage::Replicas(Arc::clone(&set))).await;
                }
            }
            ScLinkEvent::Spus(peers) => {
                core.fetchers.set_peers(&core, Arc::clone(&peers));
                for peer in (0..core.cores).filter(|peer| *peer != core.index) {
                    core.send_to(peer, ShardMessage::Peers(Arc::clone(&peers))).await;
                }
            }
            ScLinkEvent::Security(update) => {
                core.apply_security(&update);
                for peer in (0..core.cores).filter(|peer| *peer != core.index) {
                    core.send_to(peer, ShardMessage::Security(Arc::clone(&update))).await;
                }
            }
            ScLinkEvent::InSyncAnswers(answers) => {
                core.deliver_in_sync_answers(answers.partitions).await;
            }
        }
    }
    link.await;
}

/// One core's life: join the mesh, serve, stop.
/// Counts a core as running while it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn new(counter: &Arc<AtomicUsize>) -> Running {
        counter.fetch_add(1, Ordering::SeqCst);
        Running(Arc::clone(counter))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until every executor runs (or fails the start after [`CORES_START_TIMEOUT`]).
fn wait_cores_started(
    running: &AtomicUsize,
    cores: usize,
    shutdown: &AtomicBool,
) -> Result<(), StartError> {
    let deadline = std::time::Instant::now() + CORES_START_TIMEOUT;
    while running.load(Ordering::SeqCst) < cores {
        if std::time::Instant::now() >= deadline {
            shutdown.store(true, Ordering::Relaxed);
            return Err(StartError::Io {
                what: format!("start {cores} executors (see the log for the failing core)"),
                source: std::io::Error::other("executors did not start in time"),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Registered I/O buffer memory per executor, where write rounds (up to 1 MiB per busy
/// replica) and direct reads (4 x 1 MiB per fetch being sent) take their aligned buffers. Past
/// the pool glommio allocates them from the heap, where freed buffers of many sizes leave
/// the allocator's arenas fragmented and resident. Measured with 100 partitions
/// (`sluice-perf produce --partitions 100 --duration 15s`, peak RSS of the SPU): glommio's
/// default 10 MiB 100.0 / 98.1 / 103.6 / 96.0 MiB, 4 MiB 121.3 / 116.1, 16 MiB 99.8 / 83.3,
/// 24 MiB 75.9 / 79.8 / 78.8 (and produce, catch-up and e2e no slower).
const IO_MEMORY_BYTES: usize = 24 << 20;

async fn run_core(setup: CoreSetup) {
    let _running = Running::new(&setup.cores_running);
    if let Err(error) = crate::storage::runtime::probe_direct_io(&setup.config.data_dir).await {
        tracing::warn!(core = setup.index, %error, "direct I/O probe failed; direct reads may fail");
    }
    let queues = create_queues();
    let Ok((senders, mut receivers)) = setup.mesh.join().await else {
        tracing::error!(core = setup.index, "cannot join the core mesh");
        return;
    };
    assert_eq!(senders.peer_id(), setup.index, "executors must join the mesh in core order");
    let probe = Rc::new(setup.probe);
    // Each core loads its own copy: no TLS state is shared between cores.
    let tls = match &setup.config.tls {
        None => None,
        Some(settings) => match CoreTls::new(settings, &setup.config.cluster) {
            Ok(tls) => Some(Arc::new(tls)),
            Err(error) => {
                tracing::error!(core = setup.index, %error, "cannot load the TLS files; this core stops");
                return;
            }
        },
    };
    let (core, sets) =
        Core::new(setup.index, Arc::clone(&setup.config), queues, senders, probe, tls);
    let stop = Rc::new(Signal::default());
    let merge = setup.link.as_ref().map(|_| {
        let (link, status) = local_channel::new_bounded(STATUS_QUEUE_CAPACITY);
        let merge = Rc::new(StatusMerge {
            spu: core.spu(),
            per_core: RefCell::new(vec![Vec::new(); core.cores]),
            link,
        });
        (merge, status)
    });
    let (merge, status_receiver) = match merge {
        Some((merge, status)) => (Some(merge), Some(status)),
        None => (None, None),
    };
    let reconcile =
        glommio::spawn_local_into(Rc::clone(&core).run_reconcile(sets), queues.background);
    for (peer, receiver) in receivers.streams() {
        let on_status: Option<StatusSink> = merge
            .clone()
            .map(|merge| Rc::new(move |from, statuses| merge.update(from, statuses)) as StatusSink);
        spawn_into(queues.client, ops::serve_peer(Rc::clone(&core), receiver, peer, on_status));
    }
    let sockets = setup.sockets;
    for (fd, port) in [
        (sockets.public_shared, Port::Public),
        (sockets.public_core, Port::Public),
        (sockets.private_shared, Port::Private),
        (sockets.private_core, Port::Private),
    ] {
        let fd = fd.into_raw_fd();
        spawn_into(queues.client, accept_loop(Rc::clone(&core), fd, port, Rc::clone(&stop)));
    }
    spawn_into(queues.background, report_status(Rc::clone(&core), merge.clone(), Rc::clone(&stop)));
    spawn_into(queues.background, background_timer(Rc::clone(&core), Rc::clone(&stop)));
    let link = match (setup.link, status_receiver) {
        (Some(link), Some(status)) => {
            Some(glommio::spawn_local(run_link(Rc::clone(&core), link, status, Rc::clone(&stop))))
        }
        _ => None,
    };
    while !setup.shutdown.load(Ordering::Relaxed) {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    tracing::info!(core = core.index, "stopping");
    stop.notify();
    if let Some(link) = link {
        link.await;
    }
    core.stop_reconcile();
    if let Ok(reconcile) = reconcile {
        reconcile.await;
    }
    core.close_mesh();
}

/// This process's incarnation for the SC: the start time in nanoseconds mixed with the process
/// id, so two starts of the SPU (even within one clock tick) differ.
fn draw_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::ids::{LeaderEpoch, Offset, PartitionId, SpuId};
    use sluice_proto::object::{PartitionKey, TopicName};

    fn status(partition: u32, epoch: i32, end: i64) -> LiveReplica {
        LiveReplica {
            key: PartitionKey::new(TopicName::new("t").unwrap(), PartitionId(partition)),
            leader_epoch: LeaderEpoch(epoch),
            leader: ReplicaStatus {
                spu: SpuId(1),
                high_watermark: Offset(end),
                log_end_offset: Offset(end),
                durable_end_offset: Offset(end),
                lag_records: 0,
            },
            followers: Vec::new(),
        }
    }

    #[test]
    fn only_offset_changes_are_sampled() {
        let before = [status(0, 1, 10), status(1, 1, 20)];
        assert!(same_but_offsets(&before, &[status(0, 1, 11), status(1, 1, 25)]));
        // A new epoch, another partition, or one more replica is reported at once.
        assert!(!same_but_offsets(&before, &[status(0, 2, 10), status(1, 1, 20)]));
        assert!(!same_but_offsets(&before, &[status(0, 1, 10), status(2, 1, 20)]));
        assert!(!same_but_offsets(&before, &[status(0, 1, 10)]));
        let mut grown = status(1, 1, 20);
        grown.followers.push(grown.leader);
        assert!(!same_but_offsets(&before, &[status(0, 1, 10), grown]));
    }
}
