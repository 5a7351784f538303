//! Blocking requests to the SC's public API, with fail-over over several SC addresses.
//!
//! Ownership: one [`ScClient`] per cluster handle, shared by the admin API and the metadata
//! thread; it holds at most one connection, used for one request at a time (admin traffic is
//! rare and small). Metadata watches open their own connection ([`ScClient::open_watch`]).
//!
//! Fail-over (CONTRACTS §3): the client moves to the next address on connection refused (or any
//! connect failure), on a `NotController` answer from a standby, and when the connection drops.
//! A request that was written and then lost its connection is retried at the next address only
//! when it is read-only; for a mutation the outcome is unknown and the caller gets
//! [`ClientError::Connection`] (list before retrying).
//!
//! Errors: the SC answers a refused request with an `AdminResponse` body under the request's
//! header, whatever the request's own response type; [`decode_response`] recognises it. TLS
//! failures (a refused certificate, TLS against a plaintext port and the reverse) end the call
//! at once with their own error: another address or a retry would fail the same way.

use std::io::{ErrorKind, Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_tls::ClientStream;

use sluice_proto::api::admin::AdminResponse;
use sluice_proto::api::metadata::MetadataWatchRequest;
use sluice_proto::api::security::{AuthenticateRequest, AuthenticateResponse};
use sluice_proto::api::{ApiVersion, Decode, Request};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_request, FRAME_HEADER_LEN, FRAME_LENGTH_MIN};
use sluice_proto::ids::CorrelationId;
use sluice_proto::object::Principal;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::transport::{fatal_error, is_tls_answer, tls_required, Transport};

/// Largest SC response accepted: a full metadata snapshot of a big cluster fits easily; a bad
/// peer cannot make the client allocate more.
pub(crate) const SC_RESPONSE_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// How an expected response type lays out its error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The body starts with an `error_code` (every admin response): an `AdminResponse` error
    /// body is recognised first.
    ErrorCodeFirst,
    /// Anything else (metadata): the expected type is decoded first, an `AdminResponse` error
    /// body second.
    Other,
}

/// Whether a request may be sent again after its connection dropped mid-way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads: safe to repeat.
    ReadOnly,
    /// Mutations: the outcome is unknown once written.
    Mutation,
}

/// A raw response frame.
pub(crate) struct RawFrame {
    pub api_version: u16,
    pub correlation_id: i32,
    pub body: Vec<u8>,
}

/// The declared length of a frame from its 4-byte prefix; a prefix that is a TLS record
/// header means the server wants TLS ([`tls_required`]).
fn declared_length(prefix: [u8; 4]) -> std::io::Result<u32> {
    let declared = u32::from_be_bytes(prefix);
    if (FRAME_LENGTH_MIN..=SC_RESPONSE_BYTES_MAX).contains(&declared) {
        return Ok(declared);
    }
    if is_tls_answer(&prefix) {
        return Err(tls_required());
    }
    Err(std::io::Error::new(ErrorKind::InvalidData, format!("frame declares {declared} bytes")))
}

/// A frame from the bytes after its length prefix.
fn raw_frame(mut rest: Vec<u8>) -> RawFrame {
    let header_rest = FRAME_HEADER_LEN - 4;
    RawFrame {
        api_version: u16::from_be_bytes([rest[2], rest[3]]),
        correlation_id: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
        body: rest.split_off(header_rest),
    }
}

/// Reads one frame (blocking, with the stream's read timeout).
pub(crate) fn read_raw_frame(stream: &mut impl Read) -> std::io::Result<RawFrame> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix)?;
    let declared = declared_length(prefix)?;
    let mut rest = vec![0u8; declared as usize];
    stream.read_exact(&mut rest)?;
    Ok(raw_frame(rest))
}

/// Decodes a response body as `T`, turning an `AdminResponse` error body into
/// [`ClientError::Server`].
pub(crate) fn decode_response<T: for<'a> Decode<'a>>(
    peer: &str,
    version: ApiVersion,
    body: &[u8],
    shape: Shape,
) -> Result<T, ClientError> {
    let admin_error = || match AdminResponse::decode(version, body) {
        Ok(response) if !response.error_code.is_ok() => {
            Some(ClientError::server_message(response.error_code, response.message))
        }
        _ => None,
    };
    if shape == Shape::ErrorCodeFirst {
        if let Ok(response) = AdminResponse::decode(version, body) {
            if !response.error_code.is_ok() && response.message.is_some() {
                return Err(ClientError::server_message(response.error_code, response.message));
            }
        }
    }
    match T::decode(version, body) {
        Ok(value) => Ok(value),
        Err(error) => Err(admin_error().unwrap_or_else(|| ClientError::decode(peer, &error))),
    }
}

/// One connection (plaintext or TLS) to one SC address.
struct ScConnection {
    stream: ClientStream,
    address: String,
    /// Whether the configured token was accepted on this connection (or none is configured).
    authenticated: bool,
}

impl ScConnection {
    /// Whether the peer closed the connection while it sat idle (checked before reuse, so that
    /// a request is not written into a connection that is already gone).
    fn is_closed(&mut self) -> bool {
        if self.stream.socket().set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let seen = match &mut self.stream {
            ClientStream::Plain(socket) => socket.peek(&mut byte),
            // Through rustls: TLS records that carry no data (session tickets) are consumed
            // here; data would be a byte out of step, and the connection is dropped anyway.
            tls @ ClientStream::Tls(_) => tls.read(&mut byte),
        };
        let closed = match seen {
            Ok(0) => true,
            Ok(_) => true, // unsolicited bytes: the stream is out of step
            Err(error) => error.kind() != ErrorKind::WouldBlock,
        };
        closed || self.stream.socket().set_nonblocking(false).is_err()
    }
}

/// Why no connection could be opened to one SC address.
enum OpenFailure {
    /// Unreachable: the next address may do better.
    Unreachable(String),
    /// A TLS failure: every address would give the same.
    Fatal(ClientError),
}

struct ScState {
    connection: Option<ScConnection>,
    /// Index into the address list of the next address to try.
    address_index: usize,
    next_correlation_id: i32,
}

/// Failures seen while going over the address list, for the final error.
#[derive(Default)]
struct Attempts {
    not_controller: usize,
    unreachable: usize,
    last_reason: Option<String>,
}

/// The blocking SC client with fail-over.
pub(crate) struct ScClient {
    config: ClientConfig,
    transport: Transport,
    state: Mutex<ScState>,
    /// The principal the SC said this client acts as (its last successful `Authenticate`).
    authenticated_as: Mutex<Option<Principal>>,
    /// The principal the client certificate names, if one is configured.
    certificate_principal: Option<Principal>,
}

impl ScClient {
    pub(crate) fn new(config: ClientConfig) -> Result<ScClient, ClientError> {
        config.validate()?;
        let config = config.resolved()?;
        let transport = Transport::new(&config)?;
        let certificate_principal =
            config.tls.as_ref().and_then(|tls| tls.cert.as_deref()).and_then(certificate_principal);
        Ok(ScClient {
            config,
            transport,
            state: Mutex::new(ScState {
                connection: None,
                address_index: 0,
                next_correlation_id: 1,
            }),
            authenticated_as: Mutex::new(None),
            certificate_principal,
        })
    }

    /// Who the servers take this client for, as best it knows: the certificate's name (which
    /// servers prefer), else what the SC answered to the token, else `Anonymous` without a
    /// token; for messages.
    pub(crate) fn principal_text(&self) -> String {
        if let Some(principal) = &self.certificate_principal {
            return principal.to_string();
        }
        let authenticated =
            self.authenticated_as.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
        match (authenticated, &self.config.token) {
            (Some(principal), _) => principal.to_string(),
            (None, Some(_)) => "this client's token".to_owned(),
            (None, None) => Principal::Anonymous.to_string(),
        }
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// How connections are made (shared with the SPU connection pool).
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    fn addresses_text(&self) -> String {
        self.config.sc_addresses.join(",")
    }

    /// Sends `request` and decodes its response, failing over between SC addresses.
    pub(crate) fn call<R: Request, T: for<'a> Decode<'a>>(
        &self,
        request: &R,
        shape: Shape,
        retry: Retry,
    ) -> Result<T, ClientError> {
        let mut state = self.state.lock().unwrap_or_else(|poison| poison.into_inner());
        let mut attempts = Attempts::default();
        // Each address twice: a stale connection to a healthy SC costs one attempt.
        let attempt_count = self.config.sc_addresses.len() * 2;
        for _ in 0..attempt_count {
            let connection = match self.ensure_connected(&mut state) {
                Ok(connection) => connection,
                Err(OpenFailure::Unreachable(reason)) => {
                    attempts.unreachable += 1;
                    attempts.last_reason = Some(reason);
                    continue;
                }
                Err(OpenFailure::Fatal(error)) => return Err(error),
            };
            let address = connection.address.clone();
            if !connection.authenticated {
                match self.authenticate(&mut state, &address) {
                    Ok(()) => {}
                    Err(Some(error)) => return Err(error),
                    Err(None) => {
                        attempts.unreachable += 1;
                        attempts.last_reason = Some(format!("{address}: authentication lost"));
                        continue;
                    }
                }
            }
            let exchanged = self.exchange(&mut state, request);
            if let Err(Exchange::NotSent(error) | Exchange::Lost(error)) = &exchanged {
                if let Some(fatal) = fatal_error(&address, error) {
                    self.drop_connection(&mut state);
                    return Err(fatal);
                }
            }
            match exchanged {
                Err(Exchange::NotSent(error)) => {
                    self.drop_connection(&mut state);
                    attempts.unreachable += 1;
                    attempts.last_reason = Some(format!("{address}: {error}"));
                }
                Err(Exchange::Lost(error)) => {
                    self.drop_connection(&mut state);
                    if retry == Retry::Mutation {
                        return Err(lost_error(&address, error, self.config.request_timeout));
                    }
                    attempts.unreachable += 1;
                    attempts.last_reason = Some(format!("{address}: {error}"));
                }
                Ok(frame) => {
                    let version = ApiVersion(frame.api_version);
                    match decode_response::<T>(&address, version, &frame.body, shape) {
                        Err(ClientError::Server { code: ErrorCode::NotController, .. }) => {
                            tracing::debug!(%address, "SC is a standby; trying the next one");
                            self.drop_connection(&mut state);
                            attempts.not_controller += 1;
                        }
                        Err(error @ ClientError::Protocol { .. }) => {
                            self.drop_connection(&mut state);
                            return Err(error);
                        }
                        other => return other,
                    }
                }
            }
        }
        Err(self.exhausted(attempts))
    }

    /// Sends the configured token on the current connection. `Err(Some)`: refused (or a
    /// standby, as `NoActiveController` is decided by the caller's next attempt); `Err(None)`:
    /// the connection failed, try again.
    fn authenticate(&self, state: &mut ScState, address: &str) -> Result<(), Option<ClientError>> {
        let Some(token) = self.config.token.clone() else { return Ok(()) };
        let request = AuthenticateRequest { token };
        let frame = match self.exchange(state, &request) {
            Ok(frame) => frame,
            Err(Exchange::NotSent(error) | Exchange::Lost(error)) => {
                self.drop_connection(state);
                return Err(fatal_error(address, &error));
            }
        };
        let version = ApiVersion(frame.api_version);
        match decode_response::<AuthenticateResponse>(
            address,
            version,
            &frame.body,
            Shape::ErrorCodeFirst,
        ) {
            Ok(response) if response.error_code.is_ok() => {
                if let Some(connection) = state.connection.as_mut() {
                    connection.authenticated = true;
                }
                if let Some(principal) = response.principal {
                    *self.authenticated_as.lock().unwrap_or_else(|poison| poison.into_inner()) =
                        Some(principal);
                }
                Ok(())
            }
            Ok(response) => {
                Err(Some(ClientError::server_message(response.error_code, response.message)))
            }
            Err(ClientError::Server { code: ErrorCode::NotController, .. }) => {
                self.drop_connection(state);
                Err(None)
            }
            Err(error) => Err(Some(error)),
        }
    }

    fn exhausted(&self, attempts: Attempts) -> ClientError {
        if attempts.not_controller > 0 {
            ClientError::NoActiveController { addresses: self.addresses_text() }
        } else {
            ClientError::ScUnreachable {
                addresses: self.addresses_text(),
                reason: attempts.last_reason.unwrap_or_else(|| "no address tried".into()),
            }
        }
    }

    fn drop_connection(&self, state: &mut ScState) {
        state.connection = None;
        state.address_index = (state.address_index + 1) % self.config.sc_addresses.len();
    }

    /// The current connection, opening one to the current address when needed. On failure the
    /// next call tries the next address.
    fn ensure_connected<'s>(
        &self,
        state: &'s mut ScState,
    ) -> Result<&'s ScConnection, OpenFailure> {
        if state.connection.as_mut().is_some_and(ScConnection::is_closed) {
            state.connection = None;
        }
        if state.connection.is_none() {
            let address = self.config.sc_addresses[state.address_index].clone();
            match self.open(&address) {
                Ok(stream) => {
                    let authenticated = self.config.token.is_none();
                    state.connection = Some(ScConnection { stream, address, authenticated });
                }
                Err(failure) => {
                    state.address_index =
                        (state.address_index + 1) % self.config.sc_addresses.len();
                    return Err(failure);
                }
            }
        }
        state
            .connection
            .as_ref()
            .ok_or_else(|| OpenFailure::Unreachable("no connection".to_owned()))
    }

    fn open(&self, address: &str) -> Result<ClientStream, OpenFailure> {
        let stream = match self.transport.connect(address, self.config.connect_timeout) {
            Ok(stream) => stream,
            Err(ClientError::Connection { reason, .. }) => {
                return Err(OpenFailure::Unreachable(format!("{address}: {reason}")))
            }
            Err(error) => return Err(OpenFailure::Fatal(error)),
        };
        let socket = stream.socket();
        let timeouts = socket
            .set_read_timeout(Some(self.config.request_timeout))
            .and_then(|()| socket.set_write_timeout(Some(self.config.request_timeout)));
        match timeouts {
            Ok(()) => Ok(stream),
            Err(error) => Err(OpenFailure::Unreachable(format!("{address}: {error}"))),
        }
    }

    fn exchange<R: Request>(&self, state: &mut ScState, request: &R) -> Result<RawFrame, Exchange> {
        let correlation_id = CorrelationId(state.next_correlation_id);
        state.next_correlation_id = state.next_correlation_id.wrapping_add(1).max(1);
        let mut out = Vec::new();
        encode_request(&mut out, ApiVersion(0), correlation_id, request).map_err(|error| {
            Exchange::NotSent(std::io::Error::new(ErrorKind::InvalidInput, error.to_string()))
        })?;
        let Some(connection) = state.connection.as_mut() else {
            return Err(Exchange::NotSent(std::io::Error::from(ErrorKind::NotConnected)));
        };
        connection.stream.write_all(&out).map_err(Exchange::NotSent)?;
        connection.stream.flush().map_err(Exchange::NotSent)?;
        let frame = read_raw_frame(&mut connection.stream).map_err(Exchange::Lost)?;
        if frame.correlation_id != correlation_id.get() {
            return Err(Exchange::Lost(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("correlation id {} instead of {correlation_id}", frame.correlation_id),
            )));
        }
        Ok(frame)
    }

    /// Opens a metadata watch on a fresh connection to the first SC that accepts it (failing
    /// over like [`ScClient::call`]). The returned stream has `read_timeout` set.
    pub(crate) fn open_watch(
        &self,
        start_index: usize,
        read_timeout: Duration,
    ) -> Result<WatchStream, ClientError> {
        let addresses = &self.config.sc_addresses;
        let mut attempts = Attempts::default();
        for step in 0..addresses.len() {
            let index = (start_index + step) % addresses.len();
            let address = &addresses[index];
            let stream = match self.open(address) {
                Ok(stream) => stream,
                Err(OpenFailure::Unreachable(reason)) => {
                    attempts.unreachable += 1;
                    attempts.last_reason = Some(reason);
                    continue;
                }
                Err(OpenFailure::Fatal(error)) => return Err(error),
            };
            let mut watch = WatchStream {
                stream,
                address: address.clone(),
                address_index: index,
                correlation_id: CorrelationId(1),
                read_timeout,
                received: Vec::new(),
                partial_since: None,
            };
            let subscribed = match &self.config.token {
                Some(token) => watch.authenticate(token).and_then(|()| watch.subscribe()),
                None => watch.subscribe(),
            };
            match subscribed {
                Ok(()) => return Ok(watch),
                Err(ClientError::Server { code: ErrorCode::NotController, .. }) => {
                    attempts.not_controller += 1;
                }
                Err(
                    error @ (ClientError::TlsHandshake { .. }
                    | ClientError::TlsRequired { .. }
                    | ClientError::NotTls { .. }),
                ) => return Err(error),
                Err(error) => {
                    attempts.unreachable += 1;
                    attempts.last_reason = Some(format!("{address}: {error}"));
                }
            }
        }
        Err(self.exhausted(attempts))
    }
}

enum Exchange {
    /// Failed before the whole request was written.
    NotSent(std::io::Error),
    /// Written, then the response was lost.
    Lost(std::io::Error),
}

fn lost_error(address: &str, error: std::io::Error, after: Duration) -> ClientError {
    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        ClientError::Timeout { operation: "SC request", after }
    } else {
        ClientError::connection(address, error)
    }
}

/// Longest time the rest of a started watch frame may take to arrive.
const WATCH_FRAME_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from a watch connection at a time.
const WATCH_READ_CHUNK_BYTES: usize = 16 * 1024;

/// A subscribed metadata watch connection.
pub(crate) struct WatchStream {
    stream: ClientStream,
    pub address: String,
    pub address_index: usize,
    correlation_id: CorrelationId,
    read_timeout: Duration,
    /// Bytes of frames received and not yet returned (a partial frame stays here between
    /// reads: a read timeout never loses half a frame, on TLS as on plaintext).
    received: Vec<u8>,
    /// When the partial frame in `received` started.
    partial_since: Option<Instant>,
}

/// What reading a watch connection gave.
pub(crate) enum WatchRead {
    /// A pushed frame body for the subscription.
    Update(RawFrame),
    /// Nothing within the read timeout.
    Idle,
}

impl WatchStream {
    /// Sends the watch request. The SC answers with a full snapshot push, or (a standby, a
    /// refusal) with an error body that [`WatchStream::read`]'s caller decodes.
    /// Sends the token and waits for its answer (before subscribing, with correlation id 0).
    fn authenticate(&mut self, token: &str) -> Result<(), ClientError> {
        let mut out = Vec::new();
        let request = AuthenticateRequest { token: token.to_owned() };
        encode_request(&mut out, ApiVersion(0), CorrelationId(0), &request)?;
        self.stream
            .write_all(&out)
            .map_err(|error| ClientError::connection(&self.address, error))?;
        let frame = read_raw_frame(&mut self.stream)
            .map_err(|error| ClientError::connection(&self.address, error))?;
        let version = ApiVersion(frame.api_version);
        let response = decode_response::<AuthenticateResponse>(
            &self.address,
            version,
            &frame.body,
            Shape::ErrorCodeFirst,
        )?;
        if response.error_code.is_ok() {
            Ok(())
        } else {
            Err(ClientError::server_message(response.error_code, response.message))
        }
    }

    fn subscribe(&mut self) -> Result<(), ClientError> {
        let mut out = Vec::new();
        let request = MetadataWatchRequest { topics: None };
        encode_request(&mut out, ApiVersion(0), self.correlation_id, &request)?;
        let written = self.stream.write_all(&out).and_then(|()| self.stream.flush());
        written.map_err(|error| self.failure(error))
    }

    fn failure(&self, error: std::io::Error) -> ClientError {
        fatal_error(&self.address, &error)
            .unwrap_or_else(|| ClientError::connection(&self.address, error))
    }

    /// The next whole frame in `received`, if there is one.
    fn take_frame(&mut self) -> std::io::Result<Option<RawFrame>> {
        let Some(prefix) = self.received.first_chunk::<4>() else { return Ok(None) };
        let declared = declared_length(*prefix)? as usize;
        if self.received.len() < 4 + declared {
            return Ok(None);
        }
        let rest = self.received[4..4 + declared].to_vec();
        self.received.drain(..4 + declared);
        Ok(Some(raw_frame(rest)))
    }

    /// Reads the next frame of the subscription, or `Idle` after the read timeout. An error
    /// body (a standby, a refusal) is returned as an error.
    pub(crate) fn read(&mut self) -> Result<WatchRead, ClientError> {
        let frame = match self.read_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(WatchRead::Idle),
            Err(error) => return Err(self.failure(error)),
        };
        if frame.correlation_id != self.correlation_id.get() {
            return Err(ClientError::Protocol {
                peer: self.address.clone(),
                reason: format!("watch push with correlation id {}", frame.correlation_id),
            });
        }
        Ok(WatchRead::Update(frame))
    }

    fn read_frame(&mut self) -> std::io::Result<Option<RawFrame>> {
        self.stream.socket().set_read_timeout(Some(self.read_timeout))?;
        let mut chunk = [0u8; WATCH_READ_CHUNK_BYTES];
        loop {
            if let Some(frame) = self.take_frame()? {
                self.partial_since = (!self.received.is_empty()).then(Instant::now);
                return Ok(Some(frame));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "the SC closed it"))
                }
                Ok(read) => {
                    self.received.extend_from_slice(&chunk[..read]);
                    self.partial_since.get_or_insert_with(Instant::now);
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    let stalled = self.partial_since.is_some_and(|since| {
                        since.elapsed() >= self.read_timeout.max(WATCH_FRAME_READ_TIMEOUT)
                    });
                    if stalled {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            "the rest of a metadata push did not arrive",
                        ));
                    }
                    if self.received.is_empty() {
                        return Ok(None);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The principal a PEM certificate file names (`User:<first DNS name or common name>`), as the
/// servers derive it; `None` when the file cannot be read (the TLS setup reports that).
fn certificate_principal(path: &std::path::Path) -> Option<Principal> {
    use sluice_tls::rustls::pki_types::pem::PemObject;
    use sluice_tls::rustls::pki_types::CertificateDer;
    let first = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    let identity = sluice_tls::Identity::from_certificate(&first)?;
    Some(Principal::User(identity.principal()?.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::api::admin::ListTopicsResponse;
    use sluice_proto::api::metadata::MetadataResponse;
    use sluice_proto::api::Encode;

    fn encoded<M: Encode>(message: &M) -> Vec<u8> {
        let mut out = Vec::new();
        message.encode(ApiVersion(0), &mut out).unwrap();
        out
    }

    #[test]
    fn admin_error_body_is_recognised_for_any_response_type() {
        let body = encoded(&AdminResponse::error(ErrorCode::NotController, "standby"));
        let listed = decode_response::<ListTopicsResponse>(
            "sc",
            ApiVersion(0),
            &body,
            Shape::ErrorCodeFirst,
        );
        assert!(matches!(listed, Err(ClientError::Server { code: ErrorCode::NotController, .. })));
        let metadata =
            decode_response::<MetadataResponse>("sc", ApiVersion(0), &body, Shape::Other);
        match metadata {
            Err(ClientError::Server { code, message }) => {
                assert_eq!(code, ErrorCode::NotController);
                assert_eq!(message, "standby");
            }
            other => panic!("expected a server error, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_bodies_decode() {
        let body = encoded(&ListTopicsResponse::default());
        let listed = decode_response::<ListTopicsResponse>(
            "sc",
            ApiVersion(0),
            &body,
            Shape::ErrorCodeFirst,
        )
        .unwrap();
        assert_eq!(listed, ListTopicsResponse::default());
        let body = encoded(&MetadataResponse::default());
        let metadata =
            decode_response::<MetadataResponse>("sc", ApiVersion(0), &body, Shape::Other).unwrap();
        assert_eq!(metadata, MetadataResponse::default());
        let garbage =
            decode_response::<MetadataResponse>("sc", ApiVersion(0), &[0xff; 3], Shape::Other);
        assert!(matches!(garbage, Err(ClientError::Protocol { .. })));
    }

    #[test]
    fn unreachable_addresses_give_a_helpful_error() {
        // Bind then drop a listener: its port now refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = ClientConfig::new(&format!("127.0.0.1:{port}"));
        let client = ScClient::new(config).unwrap();
        let error = client
            .call::<_, ListTopicsResponse>(
                &sluice_proto::api::admin::ListTopicsRequest::default(),
                Shape::ErrorCodeFirst,
                Retry::ReadOnly,
            )
            .unwrap_err();
        assert!(matches!(error, ClientError::ScUnreachable { .. }), "{error:?}");
        assert!(error.to_string().contains("sluice cluster start --local"));
    }
}
