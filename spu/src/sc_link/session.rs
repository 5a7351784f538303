//! One connection to one SC: registration, then updates, heartbeats and live replica status until
//! the connection ends. See the parent module for the protocol.
//!
//! The socket is split: a reader task owns the read half and a [`FrameDecoder`] and forwards
//! whole frames on a bounded local channel (so no read is ever cancelled half-way); the session
//! owns the write half and waits on that channel, the status channel and the heartbeat timer.
//! Dropping the session drops the reader task, which cancels it and closes the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use sluice_proto::api::control::{
    AlterInSyncRequest, AlterInSyncResponse, HeartbeatRequest, HeartbeatResponse,
    LiveReplicaStatus, ReplicaUpdate, RequestSnapshot, SnapshotKind, SpuRegisterResponse,
    SpuUpdate,
};
use sluice_proto::api::security::SecurityApplied;
use sluice_proto::api::{ApiKey, ApiVersion, Decode, Encode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_frame, Frame, FrameDecoder, FrameHeader};
use sluice_proto::ids::{CorrelationId, TimestampMs};
use sluice_tls::sc_name;

use super::state::Applied;
use super::{
    End, EnforcedSecurity, Link, ScLinkEvent, CONNECT_TIMEOUT, FRAMES_QUEUED_MAX, FRAME_BYTES_MAX,
    HEARTBEAT_MISSES_MAX, REGISTER_TIMEOUT,
};
use crate::tls::{HandshakeError, LinkStream};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the reader task forwards: a frame, or why the connection is unusable.
type Incoming = Result<Frame, String>;

/// The write side of a registered connection.
struct Session {
    writer: WriteHalf<LinkStream>,
    next_correlation_id: i32,
    /// A status resend is due once the first replica snapshot of this connection is applied.
    resend_pending: bool,
    /// The newest security update handed on and not yet reported enforced to the SC.
    security_pending: Option<u64>,
}

/// How often the session looks whether every core enforces a pending security update (the
/// cores apply it within microseconds of receiving it).
const SECURITY_POLL: Duration = Duration::from_millis(1);

fn now_ms() -> TimestampMs {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    TimestampMs(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

fn io_reason(what: &str, error: impl std::fmt::Display) -> String {
    format!("{what}: {error}")
}

/// Connects, registers and serves one connection to `address`.
pub(super) async fn serve(link: &mut Link, address: SocketAddr) -> End {
    let (stream, decoder) = match register(link, address).await {
        Ok(registered) => registered,
        Err(end) => return end,
    };
    tracing::info!(sc = %address, spu = %link.config.register.id, "registered with the SC");
    if link.events.send(ScLinkEvent::Connected { sc: address }).await.is_err() {
        return End::EventsClosed;
    }
    let liveness = link.config.heartbeat_interval.saturating_mul(HEARTBEAT_MISSES_MAX);
    if let Err(error) = stream.socket().set_read_timeout(Some(liveness)) {
        return End::Served { reason: io_reason("cannot set the read timeout", error) };
    }
    let (reader, writer) = futures_lite::io::split(stream);
    let (frames_sender, frames) = local_channel::new_bounded(FRAMES_QUEUED_MAX);
    let _reader_task = glommio::spawn_local(read_frames(reader, decoder, frames_sender));
    let mut session =
        Session { writer, next_correlation_id: 1, resend_pending: true, security_pending: None };
    let mut next_heartbeat = Instant::now();
    loop {
        if let Some(pending) = session.security_pending {
            let enforced =
                link.config.enforced_security.as_ref().map_or(pending, EnforcedSecurity::version);
            if enforced >= pending {
                session.security_pending = None;
                let applied = SecurityApplied { version: enforced };
                if let Err(reason) = session.send(ApiKey::SecurityApplied, &applied).await {
                    return End::Served { reason };
                }
                continue;
            }
        }
        let now = Instant::now();
        if now >= next_heartbeat {
            let request = HeartbeatRequest { sent_at: now_ms() };
            if let Err(reason) = session.send(ApiKey::Heartbeat, &request).await {
                return End::Served { reason };
            }
            next_heartbeat = now + link.config.heartbeat_interval;
            continue;
        }
        let mut until = next_heartbeat - now;
        if session.security_pending.is_some() {
            until = until.min(SECURITY_POLL);
        }
        let wake = wait(link, &frames, until).await;
        let outcome = match wake {
            Wake::Tick => Ok(()),
            Wake::Frame(None) => Err(End::Served { reason: "the reader stopped".into() }),
            Wake::Frame(Some(Err(reason))) => Err(End::Served { reason }),
            Wake::Frame(Some(Ok(frame))) => session.handle(link, frame).await,
            Wake::Status(None) => {
                link.status_open = false;
                Ok(())
            }
            Wake::Status(Some(report)) => {
                link.merge_status(&report);
                session
                    .send(ApiKey::LiveReplicaStatus, &report)
                    .await
                    .map_err(|reason| End::Served { reason })
            }
            Wake::InSync(None) => {
                link.in_sync_open = false;
                Ok(())
            }
            Wake::InSync(Some(request)) => session
                .send(ApiKey::AlterInSync, &request)
                .await
                .map_err(|reason| End::Served { reason }),
        };
        if let Err(end) = outcome {
            return end;
        }
    }
}

/// Why the session loop woke.
enum Wake {
    Tick,
    Frame(Option<Incoming>),
    Status(Option<LiveReplicaStatus>),
    InSync(Option<AlterInSyncRequest>),
}

/// Waits for the next frame, status report or the heartbeat timer (each arm is cancel-safe).
async fn wait(
    link: &Link,
    frames: &local_channel::LocalReceiver<Incoming>,
    until_heartbeat: Duration,
) -> Wake {
    let tick = async {
        glommio::timer::sleep(until_heartbeat).await;
        Wake::Tick
    };
    let frame = async { Wake::Frame(frames.recv().await) };
    let status = async {
        if link.status_open {
            Wake::Status(link.status.recv().await)
        } else {
            future::pending().await
        }
    };
    let in_sync = async {
        if link.in_sync_open {
            Wake::InSync(link.in_sync.recv().await)
        } else {
            future::pending().await
        }
    };
    // `race` picks the first arm at random, so a busy SC cannot starve status reports.
    future::or(future::race(frame, future::race(status, in_sync)), tick).await
}

/// Connects and registers; returns the stream and the decoder (which may already hold the
/// first updates).
async fn register(link: &Link, address: SocketAddr) -> Result<(LinkStream, FrameDecoder), End> {
    let failed = |what: &str, error: &dyn std::fmt::Display| End::Failed {
        reason: format!("{what} {address}: {error}"),
    };
    let tls = link.config.tls.as_deref().map(|tls| (tls, sc_name(tls.cluster())));
    let verified_as = tls.as_ref().map(|(_, name)| name.clone());
    let mut stream = match LinkStream::connect(address, CONNECT_TIMEOUT, tls).await {
        Ok(stream) => stream,
        Err(HandshakeError::Connect(error)) => return Err(failed("cannot connect to", &error)),
        Err(error) => {
            let name = verified_as.unwrap_or_default();
            tracing::warn!(sc = %address, verified_as = %name, %error, "TLS with the SC failed");
            return Err(failed(&format!("TLS with the SC (verified as {name}) at"), &error));
        }
    };
    let socket = stream.socket();
    let setup = socket
        .set_write_timeout(Some(REGISTER_TIMEOUT))
        .and_then(|()| socket.set_read_timeout(Some(REGISTER_TIMEOUT)));
    setup.map_err(|error| failed("cannot configure the connection to", &error))?;
    let header = FrameHeader {
        api_key: ApiKey::SpuRegister,
        api_version: ApiVersion(0),
        correlation_id: CorrelationId(0),
    };
    let mut out = Vec::new();
    encode_frame(&mut out, &header, &link.config.register)
        .map_err(|error| failed("cannot encode the registration for", &error))?;
    stream
        .write_all(&out)
        .await
        .and(stream.flush().await)
        .map_err(|error| failed("cannot send the registration to", &error))?;
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let frame = read_one(&mut stream, &mut decoder)
        .await
        .map_err(|error| failed("no registration answer from", &error))?;
    if frame.header.api_key != ApiKey::SpuRegister {
        let key = frame.header.api_key;
        return Err(failed("unexpected first answer from", &key));
    }
    let response = SpuRegisterResponse::decode(frame.header.api_version, &frame.body)
        .map_err(|error| failed("undecodable registration answer from", &error))?;
    match response {
        SpuRegisterResponse::Accepted => Ok((stream, decoder)),
        SpuRegisterResponse::Refused { error_code: ErrorCode::UnknownSpu, reason } => {
            let id = link.config.register.id;
            tracing::error!(
                sc = %address, spu = %id, %reason,
                "the SC does not know this SPU: register it with `sluice spu register --id {id} \
                 ...` (or add it to an SPU group); retrying"
            );
            Err(End::Failed { reason: format!("unknown SPU: {reason}") })
        }
        SpuRegisterResponse::Refused { error_code: ErrorCode::NotController, reason } => {
            tracing::info!(sc = %address, %reason, "SC is a standby; trying the next address");
            Err(End::Failed { reason: format!("standby SC: {reason}") })
        }
        SpuRegisterResponse::Refused { error_code, reason } => {
            tracing::warn!(sc = %address, %error_code, %reason, "the SC refused the registration");
            Err(End::Failed { reason: format!("refused ({error_code}): {reason}") })
        }
    }
}

/// Reads until `decoder` yields one frame.
async fn read_one(stream: &mut LinkStream, decoder: &mut FrameDecoder) -> Result<Frame, String> {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(error) => return Err(error.to_string()),
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return Err("connection closed".into()),
            Ok(read) => decoder.feed(&chunk[..read]),
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// The reader task: forwards every frame until the connection fails, then one error.
async fn read_frames(
    mut reader: ReadHalf<LinkStream>,
    mut decoder: FrameDecoder,
    frames: LocalSender<Incoming>,
) {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if frames.send(Ok(frame)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) if !error.is_fatal() => {
                    tracing::warn!(%error, "skipping a frame the SC sent that this SPU cannot read");
                }
                Err(error) => {
                    let _closed = frames.send(Err(error.to_string())).await;
                    return;
                }
            }
        }
        let reason = match reader.read(&mut chunk).await {
            Ok(0) => "closed by the SC".to_owned(),
            Ok(read) => {
                decoder.feed(&chunk[..read]);
                continue;
            }
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                "no heartbeat from the SC in time".to_owned()
            }
            Err(error) => io_reason("read", error),
        };
        let _closed = frames.send(Err(reason)).await;
        return;
    }
}

impl Session {
    async fn send<M: Encode>(&mut self, api_key: ApiKey, message: &M) -> Result<(), String> {
        let correlation_id = CorrelationId(self.next_correlation_id);
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = FrameHeader { api_key, api_version: ApiVersion(0), correlation_id };
        self.send_with(header, message).await
    }

    async fn send_with<M: Encode>(
        &mut self,
        header: FrameHeader,
        message: &M,
    ) -> Result<(), String> {
        let mut out = Vec::new();
        encode_frame(&mut out, &header, message).map_err(|error| io_reason("encode", error))?;
        self.writer.write_all(&out).await.map_err(|error| io_reason("write", error))?;
        // TLS keeps written bytes in its records until flushed (a no-op on plaintext).
        self.writer.flush().await.map_err(|error| io_reason("write", error))
    }

    async fn handle(&mut self, link: &mut Link, frame: Frame) -> Result<(), End> {
        let header = frame.header;
        let protocol = |error: &dyn std::fmt::Display| End::Served {
            reason: format!("undecodable {} from the SC: {error}", header.api_key),
        };
        let written = match header.api_key {
            ApiKey::Heartbeat => {
                // The SC's request or its answer to ours: same key, told apart by the body.
                if let Ok(request) = HeartbeatRequest::decode(header.api_version, &frame.body) {
                    let response = HeartbeatResponse {
                        request_sent_at: request.sent_at,
                        responder_time: now_ms(),
                    };
                    self.send_with(header, &response).await
                } else {
                    HeartbeatResponse::decode(header.api_version, &frame.body)
                        .map_err(|error| protocol(&error))?;
                    Ok(())
                }
            }
            ApiKey::SpuUpdate => {
                let update = SpuUpdate::decode(header.api_version, &frame.body)
                    .map_err(|error| protocol(&error))?;
                let applied =
                    link.spus.apply(update.epoch, update.changes, |peer| (peer.spec.id, peer));
                if applied == Applied::Applied {
                    let view = Arc::new(link.spus.objects().clone());
                    if link.events.send(ScLinkEvent::Spus(view)).await.is_err() {
                        return Err(End::EventsClosed);
                    }
                }
                self.ask_snapshot(applied, SnapshotKind::Spus).await
            }
            ApiKey::ReplicaUpdate => {
                let update = ReplicaUpdate::decode(header.api_version, &frame.body)
                    .map_err(|error| protocol(&error))?;
                let applied = link.replicas.apply(update.epoch, update.changes, |assignment| {
                    (assignment.key.clone(), assignment)
                });
                if applied == Applied::Applied {
                    let view = Arc::new(link.replicas.objects().clone());
                    if link.events.send(ScLinkEvent::Replicas(view)).await.is_err() {
                        return Err(End::EventsClosed);
                    }
                    self.resend_status(link).await.map_err(|reason| End::Served { reason })?;
                }
                self.ask_snapshot(applied, SnapshotKind::Replicas).await
            }
            ApiKey::SecurityUpdate => {
                let update = sluice_proto::api::security::SecurityUpdate::decode(
                    header.api_version,
                    &frame.body,
                )
                .map_err(|error| protocol(&error))?;
                tracing::info!(
                    version = update.version,
                    enforced = update.enforced,
                    bindings = update.bindings.len(),
                    tokens = update.tokens.len(),
                    "security update from the SC"
                );
                let version = update.version;
                if link.events.send(ScLinkEvent::Security(Arc::new(update))).await.is_err() {
                    return Err(End::EventsClosed);
                }
                self.security_pending = Some(self.security_pending.unwrap_or(0).max(version));
                Ok(())
            }
            ApiKey::AlterInSync => {
                let answers = AlterInSyncResponse::decode(header.api_version, &frame.body)
                    .map_err(|error| protocol(&error))?;
                if link.events.send(ScLinkEvent::InSyncAnswers(answers)).await.is_err() {
                    return Err(End::EventsClosed);
                }
                Ok(())
            }
            other => {
                return Err(End::Served { reason: format!("unexpected {other} from the SC") });
            }
        };
        written.map_err(|reason| End::Served { reason })
    }

    async fn ask_snapshot(&mut self, applied: Applied, kind: SnapshotKind) -> Result<(), String> {
        let Applied::Gap { last_applied } = applied else { return Ok(()) };
        tracing::info!(?kind, ?last_applied, "update epoch gap; asking the SC for a snapshot");
        self.send(ApiKey::RequestSnapshot, &RequestSnapshot { kind, last_applied }).await
    }

    /// Once per connection, after the first applied replica update: the merged status.
    async fn resend_status(&mut self, link: &mut Link) -> Result<(), String> {
        if !self.resend_pending {
            return Ok(());
        }
        self.resend_pending = false;
        match link.status_to_resend() {
            Some(report) => self.send(ApiKey::LiveReplicaStatus, &report).await,
            None => Ok(()),
        }
    }
}
