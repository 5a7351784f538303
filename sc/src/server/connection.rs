//! One public-API connection: read frames, dispatch, answer; push metadata watch updates.
//!
//! The stream is plaintext or TLS ([`ServerStream`]); every response is written whole and
//! flushed (TLS buffers records until a flush). On a plaintext listener, a first read that
//! looks like a TLS ClientHello is a TLS client on the wrong port: it is answered with an error
//! frame saying so (its SDK sees a non-TLS answer and reports "does not speak TLS"), logged
//! (rate-limited) and closed, instead of being reported as an oversized frame.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use sluice_proto::api::admin::{
    AdminResponse, AlterTopicPartitionsRequest, CreateSpuGroupRequest, CreateTopicRequest,
    DecommissionSpuRequest, DeleteSpuGroupRequest, DeleteTopicRequest, DescribeTopicRequest,
    DescribeTopicResponse, ListPartitionsRequest, ListPartitionsResponse, ListSpuGroupsRequest,
    ListSpuGroupsResponse, ListSpusRequest, ListSpusResponse, ListTopicsRequest,
    ListTopicsResponse, ReassignPartitionsRequest, ReassignPartitionsResponse,
    RebalanceLeadersRequest, RebalanceLeadersResponse, RegisterSpuRequest, UnregisterSpuRequest,
};
use sluice_proto::api::cluster::{
    HoldLeadershipRequest, HoldLeadershipResponse, PlanRebalanceRequest, PlanRebalanceResponse,
};
use sluice_proto::api::metadata::{
    Change, Changes, MetadataRequest, MetadataWatchRequest, MetadataWatchUpdate,
};
use sluice_proto::api::security::{
    AuthenticateRequest, AuthenticateResponse, CreateAclsRequest, CreateTokenRequest,
    CreateTokenResponse, DeleteAclsRequest, ListAclsRequest, ListAclsResponse, ListTokensRequest,
    ListTokensResponse, RevokeTokenRequest,
};
use sluice_proto::api::{ApiKey, Decode, Encode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_frame, Frame, FrameError, FrameHeader};
use sluice_proto::object::{Principal, SpuGroupName, TopicName};
use sluice_tls::{looks_like_tls, ServerStream};

use super::access::{self, ConnectionAuth, Viewer};
use super::transport::Peer;
use super::{decoder, metadata, ServerContext, IDLE_POLL, SHUTDOWN_POLL};

/// What a TLS client on the plaintext public address is told (in a plaintext error frame).
pub(super) const TLS_ON_PLAINTEXT_MESSAGE: &str =
    "a TLS client connected to a plaintext port: this SC's public address has no TLS; connect \
     without TLS (drop --tls-ca)";

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A metadata subscription held by the connection.
struct Watch {
    header: FrameHeader,
    topics: Option<Vec<TopicName>>,
    changes: Receiver<()>,
    last_sent: Option<MetadataWatchUpdate>,
    /// Whose topics it shows (filtered by describe when ACLs are enforced).
    viewer: Viewer,
}

/// Writes a whole response and flushes it (TLS holds records until a flush).
pub(super) fn send(stream: &mut ServerStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}

/// Whether the first bytes of a plaintext connection are a TLS ClientHello; if so, answers
/// with an error frame that says so and logs it (rate-limited). The caller closes.
pub(super) fn refuse_tls_on_plaintext(
    stream: &mut ServerStream,
    address: SocketAddr,
    first_bytes: &[u8],
) -> bool {
    if stream.is_tls() || !looks_like_tls(first_bytes) {
        return false;
    }
    log_abusive_close(address, "a TLS client connected to a plaintext port");
    let body = AdminResponse::error(ErrorCode::InvalidRequest, TLS_ON_PLAINTEXT_MESSAGE);
    if send(stream, &raw_error_frame(0, 0, 0, &body)).is_ok() {
        super::transport::close_after_refusal(stream.socket());
    }
    true
}

/// Serves one connection until the peer closes, a fatal frame error, or shutdown.
pub(super) fn serve(mut stream: ServerStream, peer: Peer, context: &ServerContext) {
    let _ignored = stream.socket().set_nodelay(true);
    tracing::debug!(%peer, tls = stream.is_tls(), "admin connection opened");
    let address = peer.address;
    let mut first_read = true;
    let mut decoder = decoder();
    let mut watch: Option<Watch> = None;
    // A verified client certificate names the connection's principal (`User:<name>`);
    // without one, `Authenticate` with a token may name it, else it is anonymous.
    let tls_principal = peer
        .identity
        .as_ref()
        .and_then(|identity| identity.principal())
        .map(|name| Principal::User(name.to_owned()));
    let mut auth = ConnectionAuth::new(tls_principal);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut poll = None;
    // When the buffered part of a frame started (None: nothing buffered).
    let mut partial_since: Option<Instant> = None;
    while !context.shutdown.load(Ordering::Relaxed) {
        if let Some(watch) = &mut watch {
            if watch.changes.try_recv().is_ok() && push_watch(&mut stream, context, watch).is_err()
            {
                return;
            }
        }
        let wanted =
            if watch.is_some() || partial_since.is_some() { SHUTDOWN_POLL } else { IDLE_POLL };
        if poll != Some(wanted) {
            if let Err(error) = stream.socket().set_read_timeout(Some(wanted)) {
                tracing::warn!(%peer, %error, "cannot set a read timeout; closing");
                return;
            }
            poll = Some(wanted);
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                if decoder.buffered_len() > 0 {
                    log_abusive_close(address, "the client closed in the middle of a frame");
                }
                break;
            }
            Ok(read) => {
                if std::mem::take(&mut first_read)
                    && refuse_tls_on_plaintext(&mut stream, address, &chunk[..read])
                {
                    return;
                }
                decoder.feed(&chunk[..read]);
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if partial_since.is_some_and(|since| since.elapsed() >= context.frame_read_timeout)
                {
                    let reason = format!(
                        "{} bytes of a frame and nothing more for {} ms",
                        decoder.buffered_len(),
                        context.frame_read_timeout.as_millis()
                    );
                    log_abusive_close(address, &reason);
                    return;
                }
                continue;
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::debug!(%peer, %error, "admin connection read failed");
                break;
            }
        }
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%peer, %error, "bad frame");
                    let answered = send(&mut stream, &frame_error_response(&error));
                    if error.is_fatal() {
                        log_abusive_close(address, &error.to_string());
                    }
                    if error.is_fatal() || answered.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let response = dispatch(&frame, &peer, context, &mut watch, &mut auth);
            if !response.is_empty() && send(&mut stream, &response).is_err() {
                return;
            }
            if let Some(watch) = &mut watch {
                if watch.last_sent.is_none() && push_watch(&mut stream, context, watch).is_err() {
                    return;
                }
            }
        }
        // The clock of a partial frame starts with its first bytes and runs until it is whole
        // (bytes trickling in do not reset it).
        partial_since = match decoder.buffered_len() {
            0 => None,
            _ => partial_since.or_else(|| Some(Instant::now())),
        };
    }
    tracing::debug!(%peer, "admin connection closed");
}

/// Refusals and bad-input closes logged at warning level per [`ABUSE_LOG_WINDOW`], process-wide;
/// the rest at debug level, counted into the next warning.
const ABUSE_WARNINGS_PER_WINDOW: u64 = 10;
/// Length of one rate-limiting window of [`log_abusive_close`].
const ABUSE_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Logs that the connection from `peer` is closed because of what it sent (or failed to send:
/// a TLS handshake), rate-limited so that a flood of hostile connections cannot flood the log.
pub(super) fn log_abusive_close(peer: SocketAddr, reason: &str) {
    static WINDOW: Mutex<(Option<Instant>, u64, u64)> = Mutex::new((None, 0, 0));
    let mut window = WINDOW.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (start, warned, suppressed) = &mut *window;
    if start.is_none_or(|start| start.elapsed() >= ABUSE_LOG_WINDOW) {
        *start = Some(Instant::now());
        *warned = 0;
    }
    if *warned < ABUSE_WARNINGS_PER_WINDOW {
        *warned += 1;
        let left_out = std::mem::take(suppressed);
        tracing::warn!(
            %peer, reason, suppressed = left_out,
            "closing a client connection: it broke the protocol or failed its TLS handshake \
             (suppressed: such lines left out since the last one)"
        );
    } else {
        *suppressed += 1;
        tracing::debug!(%peer, reason, "closing a client connection");
    }
}

/// Sends the current metadata to a watcher if it changed since the last push.
fn push_watch(
    stream: &mut ServerStream,
    context: &ServerContext,
    watch: &mut Watch,
) -> std::io::Result<()> {
    let snapshot = context.cache.snapshot();
    let mut update = metadata::watch_update(&snapshot, watch.topics.as_deref());
    let visible = watch.viewer.filter(context, &snapshot);
    match &mut update.topics {
        Changes::Full(topics) => topics.retain(|topic| visible(&topic.name)),
        Changes::Delta { changes, .. } => changes.retain(|change| match change {
            Change::Upsert(topic) => visible(&topic.name),
            Change::Remove(name) => visible(name),
        }),
    }
    if let Some(last) = &watch.last_sent {
        if last.spus == update.spus && last.topics == update.topics {
            return Ok(());
        }
    }
    let bytes = encode(&watch.header, &update);
    watch.last_sent = Some(update);
    send(stream, &bytes)
}

/// Encodes a response frame; an encoding failure (a bug) becomes an `UnknownServerError` body.
fn encode<M: Encode>(header: &FrameHeader, message: &M) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(error) = encode_frame(&mut out, header, message) {
        tracing::error!(%error, api_key = %header.api_key, "cannot encode a response");
        out.clear();
        let fallback = AdminResponse::error(ErrorCode::UnknownServerError, error.to_string());
        let _ignored = encode_frame(&mut out, header, &fallback);
    }
    out
}

/// An error response written byte by byte, so that an unknown key or version can be echoed.
fn raw_error_frame(
    api_key: u16,
    api_version: u16,
    correlation_id: i32,
    body: &AdminResponse,
) -> Vec<u8> {
    let mut encoded = Vec::new();
    let _ignored = body.encode(sluice_proto::api::ApiVersion(0), &mut encoded);
    let declared = u32::try_from(8 + encoded.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(12 + encoded.len());
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(&api_key.to_be_bytes());
    out.extend_from_slice(&api_version.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    out.extend_from_slice(&encoded);
    out
}

fn frame_error_response(error: &FrameError) -> Vec<u8> {
    let body = AdminResponse::error(error.error_code(), error.to_string());
    match error {
        FrameError::UnknownApiKey { api_key, correlation_id, .. } => {
            raw_error_frame(*api_key, 0, correlation_id.get(), &body)
        }
        FrameError::UnsupportedVersion { api_key, api_version, correlation_id, .. } => {
            raw_error_frame(api_key.number(), api_version.get(), correlation_id.get(), &body)
        }
        FrameError::TooLarge { .. } | FrameError::TooShort { .. } => {
            raw_error_frame(0, 0, 0, &body)
        }
    }
}

/// The error code for a body that does not decode: a bad name gets its own code.
fn decode_failure_code(api_key: ApiKey, body: &[u8]) -> (ErrorCode, String) {
    let leading_name = postcard::take_from_bytes::<String>(body).ok().map(|(name, _)| name);
    let named = |code: ErrorCode, problem: Option<String>| problem.map(|reason| (code, reason));
    let problem = match api_key {
        ApiKey::CreateTopic | ApiKey::DeleteTopic | ApiKey::DescribeTopic => named(
            ErrorCode::InvalidTopicName,
            leading_name.and_then(|name| TopicName::new(name).err().map(|error| error.to_string())),
        ),
        ApiKey::CreateSpuGroup | ApiKey::DeleteSpuGroup => named(
            ErrorCode::InvalidSpuGroupName,
            leading_name
                .and_then(|name| SpuGroupName::new(name).err().map(|error| error.to_string())),
        ),
        _ => None,
    };
    problem.unwrap_or((ErrorCode::InvalidRequest, format!("{api_key} body does not decode")))
}

/// Decodes a request body and runs `handle`, or answers `failed(code, message)`.
fn with_request<'a, T: Decode<'a>, R: Encode>(
    frame: &'a Frame,
    handle: impl FnOnce(T) -> R,
    failed: impl FnOnce(ErrorCode, String) -> R,
) -> Vec<u8> {
    let response = match T::decode(frame.header.api_version, &frame.body) {
        Ok(request) => handle(request),
        Err(error) => {
            let (code, reason) = decode_failure_code(frame.header.api_key, &frame.body);
            tracing::debug!(%error, %code, "malformed request body");
            failed(code, reason)
        }
    };
    encode(&frame.header, &response)
}

fn admin_failed(code: ErrorCode, message: String) -> AdminResponse {
    AdminResponse::error(code, message)
}

fn reassign_failed(error_code: ErrorCode, message: String) -> ReassignPartitionsResponse {
    ReassignPartitionsResponse { error_code, message: Some(message), results: Vec::new() }
}

/// Answers one request of `peer`: `auth` (the certificate's principal, else the connection's
/// token) is who authorization checks.
fn dispatch(
    frame: &Frame,
    peer: &Peer,
    context: &ServerContext,
    watch: &mut Option<Watch>,
    auth: &mut ConnectionAuth,
) -> Vec<u8> {
    let header = &frame.header;
    tracing::trace!(%peer, api_key = %header.api_key, "request");
    let viewer = match access::check(context, auth, frame) {
        Ok(viewer) => viewer,
        Err(refusal) => return encode(header, &refusal),
    };
    match header.api_key {
        ApiKey::CreateTopic => with_request(
            frame,
            |request: CreateTopicRequest| context.create_topic(request),
            admin_failed,
        ),
        ApiKey::DeleteTopic => with_request(
            frame,
            |request: DeleteTopicRequest| context.delete_topic(&request),
            admin_failed,
        ),
        ApiKey::ListTopics => with_request(
            frame,
            |request: ListTopicsRequest| {
                let mut response = context.list_topics(&request);
                let visible = viewer.filter(context, &context.cache.snapshot());
                response.topics.retain(|topic| visible(&topic.name));
                response
            },
            |error_code, _| ListTopicsResponse { error_code, ..Default::default() },
        ),
        ApiKey::DescribeTopic => with_request(
            frame,
            |request: DescribeTopicRequest| context.describe_topic(&request),
            |error_code, _| DescribeTopicResponse { error_code, ..Default::default() },
        ),
        ApiKey::RegisterSpu => with_request(
            frame,
            |request: RegisterSpuRequest| context.register_spu(request),
            admin_failed,
        ),
        ApiKey::UnregisterSpu => with_request(
            frame,
            |request: UnregisterSpuRequest| context.unregister_spu(request),
            admin_failed,
        ),
        ApiKey::ListSpus => with_request(
            frame,
            |_: ListSpusRequest| context.list_spus(),
            |error_code, _| ListSpusResponse { error_code, ..Default::default() },
        ),
        ApiKey::CreateSpuGroup => with_request(
            frame,
            |request: CreateSpuGroupRequest| context.create_spu_group(request),
            admin_failed,
        ),
        ApiKey::DeleteSpuGroup => with_request(
            frame,
            |request: DeleteSpuGroupRequest| context.delete_spu_group(&request),
            admin_failed,
        ),
        ApiKey::ListSpuGroups => with_request(
            frame,
            |_: ListSpuGroupsRequest| context.list_spu_groups(),
            |error_code, _| ListSpuGroupsResponse { error_code, ..Default::default() },
        ),
        ApiKey::ListPartitions => with_request(
            frame,
            |request: ListPartitionsRequest| {
                let mut response = context.list_partitions(&request);
                let visible = viewer.filter(context, &context.cache.snapshot());
                response.partitions.retain(|partition| visible(&partition.key.topic));
                response
            },
            |error_code, _| ListPartitionsResponse { error_code, ..Default::default() },
        ),
        ApiKey::RebalanceLeaders => with_request(
            frame,
            |request: RebalanceLeadersRequest| context.rebalance_leaders(&request),
            |error_code, message| RebalanceLeadersResponse {
                error_code,
                message: Some(message),
                ..Default::default()
            },
        ),
        ApiKey::AlterTopicPartitions => with_request(
            frame,
            |request: AlterTopicPartitionsRequest| context.alter_topic_partitions(&request),
            admin_failed,
        ),
        ApiKey::ReassignPartitions => with_request(
            frame,
            |request: ReassignPartitionsRequest| context.reassign_partitions(&request),
            reassign_failed,
        ),
        ApiKey::DecommissionSpu => with_request(
            frame,
            |request: DecommissionSpuRequest| context.decommission_spu(&request),
            reassign_failed,
        ),
        ApiKey::PlanRebalance => with_request(
            frame,
            |request: PlanRebalanceRequest| context.plan_rebalance(&request),
            |error_code, message| PlanRebalanceResponse {
                error_code,
                message: Some(message),
                ..Default::default()
            },
        ),
        ApiKey::HoldLeadership => with_request(
            frame,
            |request: HoldLeadershipRequest| context.hold_leadership(&request),
            |error_code, message| HoldLeadershipResponse {
                error_code,
                message: Some(message),
                ..Default::default()
            },
        ),
        ApiKey::Metadata | ApiKey::MetadataWatch => {
            dispatch_metadata(frame, context, watch, viewer)
        }
        ApiKey::Authenticate => with_request(
            frame,
            |request: AuthenticateRequest| context.authenticate(auth, &request),
            |error_code, message| AuthenticateResponse {
                error_code,
                message: Some(message),
                principal: None,
            },
        ),
        ApiKey::CreateAcls => with_request(
            frame,
            |request: CreateAclsRequest| context.create_acls(&request),
            admin_failed,
        ),
        ApiKey::DeleteAcls => with_request(
            frame,
            |request: DeleteAclsRequest| context.delete_acls(&request),
            admin_failed,
        ),
        ApiKey::ListAcls => with_request(
            frame,
            |request: ListAclsRequest| context.list_acls(&request),
            |error_code, message| ListAclsResponse {
                error_code,
                message: Some(message),
                ..Default::default()
            },
        ),
        ApiKey::CreateToken => with_request(
            frame,
            |request: CreateTokenRequest| context.create_token(&request),
            |error_code, message| CreateTokenResponse {
                error_code,
                message: Some(message),
                token: None,
            },
        ),
        ApiKey::RevokeToken => with_request(
            frame,
            |request: RevokeTokenRequest| context.revoke_token(&request),
            admin_failed,
        ),
        ApiKey::ListTokens => with_request(
            frame,
            |_: ListTokensRequest| context.list_tokens(),
            |error_code, message| ListTokensResponse {
                error_code,
                message: Some(message),
                ..Default::default()
            },
        ),
        other => {
            let message = format!("{other} is not served on the SC's public address");
            encode(header, &AdminResponse::error(ErrorCode::InvalidRequest, message))
        }
    }
}

fn dispatch_metadata(
    frame: &Frame,
    context: &ServerContext,
    watch: &mut Option<Watch>,
    viewer: Viewer,
) -> Vec<u8> {
    let header = &frame.header;
    match header.api_key {
        ApiKey::Metadata => match MetadataRequest::decode(header.api_version, &frame.body) {
            Ok(request) => {
                let snapshot = context.cache.snapshot();
                let mut response = metadata::metadata(&snapshot, request.topics.as_deref());
                let visible = viewer.filter(context, &snapshot);
                response.topics.retain(|topic| visible(&topic.name));
                encode(header, &response)
            }
            Err(error) => {
                encode(header, &AdminResponse::error(ErrorCode::InvalidRequest, error.to_string()))
            }
        },
        ApiKey::MetadataWatch => {
            match MetadataWatchRequest::decode(header.api_version, &frame.body) {
                Ok(request) => {
                    *watch = Some(Watch {
                        header: *header,
                        topics: request.topics,
                        changes: context.cache.subscribe(),
                        last_sent: None,
                        viewer,
                    });
                    Vec::new()
                }
                Err(error) => encode(
                    header,
                    &AdminResponse::error(ErrorCode::InvalidRequest, error.to_string()),
                ),
            }
        }
        _ => Vec::new(),
    }
}
