//! One SPU's control connection: registration, full snapshots, epoch-stamped deltas,
//! heartbeats both ways, live replica status, in-sync set proposals; the SPU is offline as soon
//! as the connection ends (see the module docs of [`super`]).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_proto::api::control::{
    AlterInSyncRequest, HeartbeatRequest, HeartbeatResponse, LiveReplicaStatus, ReplicaAssignment,
    ReplicaUpdate, RequestSnapshot, SnapshotKind, SpuPeer, SpuRegisterRequest, SpuRegisterResponse,
    SpuUpdate,
};
use sluice_proto::api::metadata::{Change, Changes};
use sluice_proto::api::security::{SecurityApplied, SecurityUpdate};
use sluice_proto::api::{ApiKey, ApiVersion, Decode, Encode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_frame, Frame, FrameDecoder, FrameHeader};
use sluice_proto::ids::{CorrelationId, SpuId, UpdateEpoch};
use sluice_proto::object::{InSyncSet, PartitionKey, PartitionSpec};

use sluice_tls::ServerStream;

use super::in_sync::alter_in_sync;
use super::status::{
    record_heartbeat, record_leader_restarts, record_live_replica, record_registration,
    record_session_end, restarted_since_last_registration,
};
use super::{LinkPeer, SessionGeneration, SpuLinkContext, FRAME_BYTES_MAX, REGISTER_TIMEOUT};
use crate::cache::Snapshot;
use crate::controllers::now_ms;

/// Longest wait for the cache to show an accepted in-sync set before answering anyway.
const WRITE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("closed by the SPU")]
    Closed,
    #[error("i/o: {0}")]
    Io(std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

impl From<std::io::Error> for End {
    fn from(error: std::io::Error) -> Self {
        End::Io(error)
    }
}

/// What the SPU was last sent, to compute deltas.
#[derive(Default)]
struct Sent {
    spus_epoch: UpdateEpoch,
    spus: BTreeMap<SpuId, SpuPeer>,
    replicas_epoch: UpdateEpoch,
    replicas: BTreeMap<PartitionKey, (PartitionSpec, InSyncSet)>,
    /// The last security snapshot sent (its version aside, to tell whether anything changed).
    security: Option<SecurityUpdate>,
}

struct Session<'a> {
    stream: ServerStream,
    decoder: FrameDecoder,
    context: &'a SpuLinkContext,
    id: SpuId,
    /// This session's number among the SPU's sessions in this term.
    generation: SessionGeneration,
    /// The registration's frame header, for the answer.
    registration: FrameHeader,
    sent: Sent,
    next_correlation_id: i32,
    /// When the SPU's liveness was last written to the store.
    last_recorded: Instant,
    last_heartbeat_sent: Instant,
}

/// Serves one SPU connection until it closes or the SC shuts down.
pub(super) fn serve(
    stream: ServerStream,
    peer: SocketAddr,
    context: &SpuLinkContext,
    identity: LinkPeer,
) {
    let decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let result = stream
        .socket()
        .set_read_timeout(Some(crate::server::SHUTDOWN_POLL))
        .map_err(End::from)
        .and_then(|()| register(stream, decoder, context, &identity, peer));
    match result {
        Ok(mut session) => {
            // ACL and token changes wait for this SPU to enforce them while the session lasts.
            context.security.spu_connected(session.id);
            // From here on the SPU is recorded online: any end marks it offline.
            let outcome = session.accept().and_then(|()| session.run());
            context.security.spu_disconnected(session.id);
            match outcome {
                Ok(()) => {
                    tracing::info!(spu = %session.id, %peer, "SPU connection closed at shutdown")
                }
                Err(end) => {
                    tracing::info!(spu = %session.id, %peer, %end, "SPU connection ended");
                    session.mark_offline();
                }
            }
        }
        Err(end) => tracing::info!(%peer, %end, "SPU connection refused or lost at registration"),
    }
}

/// Answers the registration of an SPU that reached a standby SC with `NotController`.
pub(super) fn refuse_as_standby(mut stream: ServerStream, peer: SocketAddr) {
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let frame = stream
        .socket()
        .set_read_timeout(Some(crate::server::SHUTDOWN_POLL))
        .map_err(End::from)
        .and_then(|()| read_frame(&mut stream, &mut decoder, Some(deadline)));
    let Ok(Some(frame)) = frame else { return };
    let response = SpuRegisterResponse::Refused {
        error_code: ErrorCode::NotController,
        reason: crate::server::STANDBY_MESSAGE.into(),
    };
    let _ignored = write_message(&mut stream, frame.header, &response);
    tracing::debug!(%peer, "SPU registration refused: this SC is a standby");
}

fn write_message<M: Encode>(
    stream: &mut ServerStream,
    header: FrameHeader,
    message: &M,
) -> Result<(), End> {
    let mut out = Vec::new();
    encode_frame(&mut out, &header, message).map_err(|error| End::Protocol(error.to_string()))?;
    stream.write_all(&out)?;
    stream.flush()?;
    Ok(())
}

/// Reads until one frame is complete, or `deadline` passes.
fn read_frame(
    stream: &mut ServerStream,
    decoder: &mut FrameDecoder,
    deadline: Option<Instant>,
) -> Result<Option<Frame>, End> {
    let mut chunk = [0u8; 8192];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(error) => return Err(End::Protocol(error.to_string())),
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(End::Closed),
            Ok(read) => decoder.feed(&chunk[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if deadline.is_none_or(|deadline| Instant::now() >= deadline) {
                    return Ok(None);
                }
            }
            Err(error) => return Err(End::Io(error)),
        }
    }
}

fn register<'a>(
    mut stream: ServerStream,
    mut decoder: FrameDecoder,
    context: &'a SpuLinkContext,
    identity: &LinkPeer,
    peer: SocketAddr,
) -> Result<Session<'a>, End> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let frame = read_frame(&mut stream, &mut decoder, Some(deadline))?
        .ok_or_else(|| End::Protocol("no registration in time".into()))?;
    if frame.header.api_key != ApiKey::SpuRegister {
        return Err(End::Protocol(format!("first message was {}", frame.header.api_key)));
    }
    let refuse = |stream: &mut ServerStream, error_code: ErrorCode, reason: String| {
        let response = SpuRegisterResponse::Refused { error_code, reason: reason.clone() };
        let _ignored = write_message(stream, frame.header, &response);
        End::Protocol(reason)
    };
    let request = match SpuRegisterRequest::decode(frame.header.api_version, &frame.body) {
        Ok(request) => request,
        Err(error) => {
            return Err(refuse(&mut stream, ErrorCode::InvalidRequest, error.to_string()))
        }
    };
    if let Err(reason) = identity.check_spu(request.id) {
        tracing::warn!(%peer, spu = %request.id, %reason, "SPU registration refused");
        return Err(refuse(&mut stream, ErrorCode::AuthorizationFailed, reason));
    }
    if !context.cache.snapshot().spus.contains_key(&request.id) {
        let reason = format!(
            "SPU {} is not registered: register it as a custom SPU or add it to an SPU group",
            request.id
        );
        return Err(refuse(&mut stream, ErrorCode::UnknownSpu, reason));
    }
    if request.cores == 0 {
        return Err(refuse(
            &mut stream,
            ErrorCode::InvalidRequest,
            "an SPU needs at least one core".into(),
        ));
    }
    // A newer session from here on: the end of an older one no longer marks the SPU offline.
    let generation = context.sessions.begin(request.id);
    // Before the SPU sees its assignments, and before its new incarnation is stored (so a
    // crash in between bumps again): a leader whose process restarted must not go on in the
    // epoch whose unsynced tail it may have lost. A reconnection keeps its epochs.
    let restarted = match restarted_since_last_registration(context.store.as_ref(), &request) {
        Ok(restarted) => restarted,
        Err(error) => return Err(refuse(&mut stream, ErrorCode::ScUnavailable, error.to_string())),
    };
    if restarted {
        match record_leader_restarts(context.store.as_ref(), request.id) {
            Ok(Some(version)) => {
                context.cache.wait_for_revision(version, Duration::from_secs(5));
            }
            Ok(None) => {}
            Err(error) => {
                return Err(refuse(&mut stream, ErrorCode::ScUnavailable, error.to_string()))
            }
        }
    }
    match record_registration(context.store.as_ref(), &request, now_ms()) {
        Ok(Some(version)) => {
            context.cache.wait_for_revision(version, Duration::from_secs(5));
        }
        Ok(None) => {
            return Err(refuse(
                &mut stream,
                ErrorCode::UnknownSpu,
                format!("SPU {} was just removed", request.id),
            ))
        }
        Err(error) => return Err(refuse(&mut stream, ErrorCode::ScUnavailable, error.to_string())),
    }
    tracing::info!(spu = %request.id, cores = request.cores, version = %request.version, "SPU registered");
    let now = Instant::now();
    Ok(Session {
        stream,
        decoder,
        context,
        id: request.id,
        generation,
        sent: Sent::default(),
        next_correlation_id: 1,
        last_recorded: now,
        last_heartbeat_sent: now,
        registration: frame.header,
    })
}

/// The SPU peers and the replica set (with in-sync sets) this SPU should see in `snapshot`.
fn desired(snapshot: &Snapshot, id: SpuId) -> (BTreeMap<SpuId, SpuPeer>, Replicas) {
    let spus = snapshot
        .spus
        .iter()
        .map(|(id, spu)| {
            let peer = SpuPeer {
                spec: spu.value.spec.clone(),
                core_private_ports: spu.value.status.core_private_ports.clone(),
                online: spu.value.status.is_online(),
            };
            (*id, peer)
        })
        .collect();
    let replicas = snapshot
        .partitions
        .iter()
        .filter(|(_, partition)| {
            partition.value.spec.replicas.iter().any(|replica| replica.spu == id)
        })
        .map(|(key, partition)| {
            (key.clone(), (partition.value.spec.clone(), partition.value.status.in_sync()))
        })
        .collect();
    (spus, replicas)
}

/// Each hosted partition's spec and in-sync set.
type Replicas = BTreeMap<PartitionKey, (PartitionSpec, InSyncSet)>;

fn diff<K: Ord + Clone, V: PartialEq + Clone, T>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    upsert: impl Fn(&K, &V) -> T,
) -> Vec<Change<T, K>> {
    let mut changes: Vec<Change<T, K>> = old
        .keys()
        .filter(|key| !new.contains_key(key))
        .map(|key| Change::Remove(key.clone()))
        .collect();
    for (key, value) in new {
        if old.get(key) != Some(value) {
            changes.push(Change::Upsert(upsert(key, value)));
        }
    }
    changes
}

fn assignment(key: &PartitionKey, state: &(PartitionSpec, InSyncSet)) -> ReplicaAssignment {
    let (spec, in_sync) = state;
    ReplicaAssignment { key: key.clone(), spec: spec.clone(), in_sync: in_sync.clone() }
}

impl Session<'_> {
    fn header(&mut self, api_key: ApiKey) -> FrameHeader {
        let correlation_id = CorrelationId(self.next_correlation_id);
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        FrameHeader { api_key, api_version: ApiVersion(0), correlation_id }
    }

    /// Answers the registration and sends the full updates.
    fn accept(&mut self) -> Result<(), End> {
        write_message(&mut self.stream, self.registration, &SpuRegisterResponse::Accepted)?;
        self.send_full(SnapshotKind::All)
    }

    /// Sends the security snapshot when its contents differ from the last one sent (always
    /// before the first replica update, so an SPU never serves a replica without it).
    fn send_security(&mut self, snapshot: &Snapshot) -> Result<(), End> {
        let update = self.context.security.spu_update(snapshot);
        let unchanged = self.sent.security.as_ref().is_some_and(|sent| {
            sent.enforced == update.enforced
                && sent.superusers == update.superusers
                && sent.bindings == update.bindings
                && sent.tokens == update.tokens
        });
        if unchanged {
            // The SPU enforces these very contents if it enforces the update that carried them.
            let sent_version = self.sent.security.as_ref().map_or(0, |sent| sent.version);
            if self.context.security.spu_enforced_version(self.id) >= sent_version {
                self.context.security.spu_enforces(self.id, update.version);
            }
            return Ok(());
        }
        let header = self.header(ApiKey::SecurityUpdate);
        write_message(&mut self.stream, header, &update)?;
        self.sent.security = Some(update);
        Ok(())
    }

    fn send_full(&mut self, kind: SnapshotKind) -> Result<(), End> {
        let snapshot = self.context.cache.snapshot();
        self.send_security(&snapshot)?;
        let (spus, replicas) = desired(&snapshot, self.id);
        if matches!(kind, SnapshotKind::Spus | SnapshotKind::All) {
            let epoch = UpdateEpoch(self.sent.spus_epoch.get() + 1);
            let update =
                SpuUpdate { epoch, changes: Changes::Full(spus.values().cloned().collect()) };
            let header = self.header(ApiKey::SpuUpdate);
            write_message(&mut self.stream, header, &update)?;
            self.sent.spus_epoch = epoch;
            self.sent.spus = spus;
        }
        if matches!(kind, SnapshotKind::Replicas | SnapshotKind::All) {
            let epoch = UpdateEpoch(self.sent.replicas_epoch.get() + 1);
            let full = replicas.iter().map(|(key, state)| assignment(key, state)).collect();
            let update = ReplicaUpdate { epoch, changes: Changes::Full(full) };
            let header = self.header(ApiKey::ReplicaUpdate);
            write_message(&mut self.stream, header, &update)?;
            self.sent.replicas_epoch = epoch;
            self.sent.replicas = replicas;
        }
        Ok(())
    }

    fn send_deltas(&mut self) -> Result<(), End> {
        let snapshot = self.context.cache.snapshot();
        self.send_security(&snapshot)?;
        let (spus, replicas) = desired(&snapshot, self.id);
        let spu_changes = diff(&self.sent.spus, &spus, |_, peer| peer.clone());
        if !spu_changes.is_empty() {
            let base_epoch = self.sent.spus_epoch;
            let epoch = UpdateEpoch(base_epoch.get() + 1);
            let update =
                SpuUpdate { epoch, changes: Changes::Delta { base_epoch, changes: spu_changes } };
            let header = self.header(ApiKey::SpuUpdate);
            write_message(&mut self.stream, header, &update)?;
            self.sent.spus_epoch = epoch;
            self.sent.spus = spus;
        }
        let replica_changes = diff(&self.sent.replicas, &replicas, assignment);
        if !replica_changes.is_empty() {
            let base_epoch = self.sent.replicas_epoch;
            let epoch = UpdateEpoch(base_epoch.get() + 1);
            let changes = Changes::Delta { base_epoch, changes: replica_changes };
            let header = self.header(ApiKey::ReplicaUpdate);
            write_message(&mut self.stream, header, &ReplicaUpdate { epoch, changes })?;
            self.sent.replicas_epoch = epoch;
            self.sent.replicas = replicas;
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), End> {
        let changes = self.context.cache.subscribe();
        let heartbeat_interval = self.context.heartbeat_timeout / 4;
        let refresh_ms = i64::try_from(heartbeat_interval.as_millis()).unwrap_or(i64::MAX);
        while !self.context.shutdown.load(Ordering::Relaxed) {
            if changes.try_recv().is_ok() {
                self.send_deltas()?;
            }
            if self.last_heartbeat_sent.elapsed() >= heartbeat_interval {
                let header = self.header(ApiKey::Heartbeat);
                write_message(&mut self.stream, header, &HeartbeatRequest { sent_at: now_ms() })?;
                self.last_heartbeat_sent = Instant::now();
            }
            let Some(frame) = read_frame(&mut self.stream, &mut self.decoder, None)? else {
                continue;
            };
            self.record_life(heartbeat_interval, refresh_ms);
            self.handle(&frame)?;
        }
        Ok(())
    }

    /// The connection ended other than by this SC's shutdown: the SPU is offline now, unless
    /// it has registered again on a newer connection (or the SC is stopping).
    fn mark_offline(&self) {
        if self.context.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let store = self.context.store.as_ref();
        let written = self
            .context
            .sessions
            .end_if_newest(self.id, self.generation, || record_session_end(store, self.id));
        match written {
            None => tracing::debug!(spu = %self.id, "a newer session of the SPU is registered"),
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::warn!(spu = %self.id, %error, "cannot record the SPU offline; the heartbeat timeout will");
            }
        }
    }

    /// Records that the SPU spoke: a store read-modify-write only when the SPU is not online in
    /// the cache or the last record is a refresh interval old (bounds store traffic per SPU).
    fn record_life(&mut self, refresh_interval: Duration, refresh_ms: i64) {
        let online = self
            .context
            .cache
            .snapshot()
            .spus
            .get(&self.id)
            .is_some_and(|spu| spu.value.status.is_online());
        if online && self.last_recorded.elapsed() < refresh_interval {
            return;
        }
        self.last_recorded = Instant::now();
        if let Err(error) =
            record_heartbeat(self.context.store.as_ref(), self.id, now_ms(), refresh_ms)
        {
            tracing::warn!(spu = %self.id, %error, "cannot record the SPU's heartbeat");
        }
    }

    fn handle(&mut self, frame: &Frame) -> Result<(), End> {
        let header = frame.header;
        let version = header.api_version;
        let malformed = |error: sluice_proto::codec::DecodeError| {
            End::Protocol(format!("{}: {error}", header.api_key))
        };
        match header.api_key {
            ApiKey::Heartbeat => {
                // A request from the SPU, or the SPU's answer to ours (same key, either way).
                if let Ok(request) = HeartbeatRequest::decode(version, &frame.body) {
                    let response = HeartbeatResponse {
                        request_sent_at: request.sent_at,
                        responder_time: now_ms(),
                    };
                    return write_message(&mut self.stream, header, &response);
                }
                HeartbeatResponse::decode(version, &frame.body).map(|_| ()).map_err(malformed)
            }
            ApiKey::RequestSnapshot => {
                let request = RequestSnapshot::decode(version, &frame.body).map_err(malformed)?;
                tracing::info!(spu = %self.id, ?request, "SPU asked for a full snapshot");
                self.send_full(request.kind)
            }
            ApiKey::LiveReplicaStatus => {
                let report = LiveReplicaStatus::decode(version, &frame.body).map_err(malformed)?;
                for replica in &report.replicas {
                    if let Err(error) =
                        record_live_replica(self.context.store.as_ref(), self.id, replica)
                    {
                        tracing::warn!(spu = %self.id, %error, "cannot record live replica status");
                    }
                }
                Ok(())
            }
            ApiKey::AlterInSync => {
                let request =
                    AlterInSyncRequest::decode(version, &frame.body).map_err(malformed)?;
                let snapshot = self.context.cache.snapshot();
                let answer =
                    alter_in_sync(self.context.store.as_ref(), &snapshot, self.id, &request);
                if let Some(version) = answer.newest_write {
                    // Read-your-writes: whatever follows this answer sees the stored sets.
                    if !self.context.cache.wait_for_revision(version, WRITE_VISIBLE_TIMEOUT) {
                        tracing::warn!(spu = %self.id, "in-sync set write not yet in the cache");
                    }
                }
                write_message(&mut self.stream, header, &answer.response)
            }
            ApiKey::SecurityApplied => {
                let applied = SecurityApplied::decode(version, &frame.body).map_err(malformed)?;
                tracing::debug!(spu = %self.id, version = applied.version, "SPU enforces security update");
                self.context.security.spu_enforces(self.id, applied.version);
                Ok(())
            }
            other => Err(End::Protocol(format!("unexpected {other} on the control connection"))),
        }
    }
}
