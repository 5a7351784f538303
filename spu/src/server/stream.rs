//! Streaming fetch: one task per open stream pushes records as they become visible, paced by
//! the consumer's byte credit.
//!
//! Ownership: the streams of a connection live in that connection's [`Streams`] (on the core
//! that accepted it); each stream's task reads through [`super::ops`], so a partition owned by
//! another core is read there and copied back. Credit and cancel frames arrive on the
//! connection's read loop and reach the task through its [`StreamState`] (cells and a signal,
//! same core).
//!
//! Invariants: a stream spends credit for every records push and pushes only while it has
//! credit left (a single batch larger than the remaining credit still goes out whole, as a
//! fetch returns at least one batch); its last push is always `End` (cancel, error, or the
//! connection closing drops it silently). At most [`STREAMS_PER_CONNECTION_MAX`] streams per
//! connection; credit beyond [`STREAM_CREDIT_BYTES_MAX`] ends the stream with
//! `StreamCreditExceeded`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::LocalSender;
use sluice_proto::api::splice::{WirePart, WirePlan};
use sluice_proto::api::stream_fetch::{
    StreamFetchCancel, StreamFetchCredit, StreamFetchPush, StreamFetchRequest,
};
use sluice_proto::api::{ApiKey, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{begin_frame, encode_frame, finish_frame, FrameHeader};
use sluice_proto::ids::{CorrelationId, Offset};
use sluice_proto::object::AclOperation;
use sluice_proto::object::PartitionKey;

use crate::metrics::{CoreProbe, Counter, Gauge};
use crate::server::connection::Outgoing;
use crate::server::core::Core;
use crate::server::handlers::HandlerError;
use crate::server::ops::{self, PartitionRead, ReadMode, ReadRecords};
use crate::server::shard::ReadRequest;
use crate::storage::signal::Signal;

/// Open streams per connection at most.
pub const STREAMS_PER_CONNECTION_MAX: usize = 64;
/// Credit a stream may hold at most (bytes pushed but not re-credited plus unspent).
pub const STREAM_CREDIT_BYTES_MAX: u64 = 1 << 30;
/// How long one wait for new records lasts before the stream re-checks its state (bounds a
/// forwarded wait left behind by a cancel).
const STREAM_WAIT_SLICE: Duration = Duration::from_secs(1);

/// Shared between a stream's task and its connection's read loop.
#[derive(Default)]
pub struct StreamState {
    credit_bytes: Cell<u64>,
    cancelled: Cell<bool>,
    credit_exceeded: Cell<bool>,
    changed: Signal,
}

/// The open streams of one connection.
pub struct Streams {
    open: RefCell<HashMap<CorrelationId, Rc<StreamState>>>,
    writer: Rc<LocalSender<Outgoing>>,
    probe: Rc<CoreProbe>,
}

impl Streams {
    /// No streams yet; pushes go to `writer`.
    pub fn new(writer: Rc<LocalSender<Outgoing>>, probe: Rc<CoreProbe>) -> Streams {
        Streams { open: RefCell::new(HashMap::new()), writer, probe }
    }

    /// The connection's writer queue.
    pub fn writer(&self) -> Rc<LocalSender<Outgoing>> {
        Rc::clone(&self.writer)
    }

    /// Handles a credit frame (one-way: never answered).
    pub fn credit(&self, header: &FrameHeader, body: &[u8]) -> Result<(), HandlerError> {
        let credit = StreamFetchCredit::decode(header.api_version, body).map_err(|source| {
            HandlerError::Undecodable { api_key: ApiKey::StreamFetchCredit, source }
        })?;
        if let Some(state) = self.open.borrow().get(&credit.stream) {
            let total = state.credit_bytes.get() + u64::from(credit.credit_bytes);
            if total > STREAM_CREDIT_BYTES_MAX {
                state.credit_exceeded.set(true);
            } else {
                state.credit_bytes.set(total);
            }
            state.changed.notify();
        }
        Ok(())
    }

    /// Handles a cancel frame (the stream's task pushes `End`).
    pub fn cancel(&self, header: &FrameHeader, body: &[u8]) -> Result<(), HandlerError> {
        let cancel = StreamFetchCancel::decode(header.api_version, body).map_err(|source| {
            HandlerError::Undecodable { api_key: ApiKey::StreamFetchCancel, source }
        })?;
        if let Some(state) = self.open.borrow().get(&cancel.stream) {
            state.cancelled.set(true);
            state.changed.notify();
        }
        Ok(())
    }

    /// Stops every stream (the connection is closing).
    pub fn cancel_all(&self) {
        for state in self.open.borrow().values() {
            state.cancelled.set(true);
            state.changed.notify();
        }
    }

    fn remove(&self, stream: CorrelationId) {
        if self.open.borrow_mut().remove(&stream).is_some() {
            self.probe.adjust(Gauge::StreamsOpen, -1);
        }
    }
}

/// Encodes an `End` push.
fn end_frame(header: &FrameHeader, error_code: ErrorCode, next_offset: Offset) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    let push: StreamFetchPush<&[u8]> = StreamFetchPush::End { error_code, next_offset };
    if encode_frame(&mut out, header, &push).is_err() {
        out.clear();
    }
    out
}

/// Opens a stream: decodes the request and spawns its task. An undecodable request or one
/// over the per-connection limit is answered with an `End` push at once.
pub fn open(
    core: &Rc<Core>,
    streams: &Rc<Streams>,
    header: &FrameHeader,
    body: &[u8],
    writer: &Rc<LocalSender<Outgoing>>,
    access: &mut crate::server::access::ConnectionAccess,
) -> Result<(), HandlerError> {
    let request = match StreamFetchRequest::decode(header.api_version, body) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(%error, "undecodable stream fetch request");
            let _ = writer.try_send(Outgoing::Bytes(end_frame(
                header,
                ErrorCode::InvalidRequest,
                Offset(-1),
            )));
            return Ok(());
        }
    };
    // Checked once, when the stream opens: a stream is one request.
    let security = core.security.get();
    if let Some(code) = access.check(&security, AclOperation::Read, &request.topic) {
        let _ = writer.try_send(Outgoing::Bytes(end_frame(header, code, request.start_offset)));
        return Ok(());
    }
    let too_many = streams.open.borrow().len() >= STREAMS_PER_CONNECTION_MAX;
    let duplicate = streams.open.borrow().contains_key(&header.correlation_id);
    if too_many || duplicate {
        let code = if too_many { ErrorCode::SpuBusy } else { ErrorCode::InvalidRequest };
        let _ = writer.try_send(Outgoing::Bytes(end_frame(header, code, request.start_offset)));
        return Ok(());
    }
    let state = Rc::new(StreamState::default());
    state.credit_bytes.set(u64::from(request.credit_bytes).min(STREAM_CREDIT_BYTES_MAX));
    streams.open.borrow_mut().insert(header.correlation_id, Rc::clone(&state));
    streams.probe.adjust(Gauge::StreamsOpen, 1);
    let queue = core_queue(core);
    let (core, streams, writer, header) =
        (Rc::clone(core), Rc::clone(streams), Rc::clone(writer), *header);
    let spawned = glommio::spawn_local_into(
        async move {
            let (code, next_offset) = run(&core, &state, &request, &header, &writer).await;
            streams.remove(header.correlation_id);
            let _ = writer.send(Outgoing::Bytes(end_frame(&header, code, next_offset))).await;
        },
        queue,
    );
    if let Ok(task) = spawned {
        task.detach();
    }
    Ok(())
}

fn core_queue(core: &Core) -> glommio::TaskQueueHandle {
    core.queues.client
}

/// A records push of `read`: a plan splicing file slices, or the copied bytes.
fn records_push(header: &FrameHeader, read: &PartitionRead) -> Option<Outgoing> {
    let length = u32::try_from(read.records.len()).ok()?;
    let mut buffer = Vec::with_capacity(64);
    let start = begin_frame(&mut buffer, header);
    StreamFetchPush::encode_records_header(&read.header, length, &mut buffer);
    match &read.records {
        ReadRecords::Copied(bytes) => {
            buffer.extend_from_slice(bytes);
            finish_frame(&mut buffer, start, 0).ok()?;
            Some(Outgoing::Bytes(buffer))
        }
        ReadRecords::Slices(slices) => {
            let frame_len = finish_frame(&mut buffer, start, length as usize).ok()?;
            let parts =
                vec![WirePart::Buffer(0..buffer.len()), WirePart::Splice { index: 0, len: length }];
            let plan = WirePlan { parts, frame_len };
            Some(Outgoing::Plan { buffer, plan, slices: vec![slices.slices.clone()] })
        }
    }
}

/// The stream loop; returns the `End` push's error code and next offset.
async fn run(
    core: &Rc<Core>,
    state: &StreamState,
    request: &StreamFetchRequest,
    header: &FrameHeader,
    writer: &LocalSender<Outgoing>,
) -> (ErrorCode, Offset) {
    let key = PartitionKey::new(request.topic.clone(), request.partition);
    let mut offset = request.start_offset;
    loop {
        if state.cancelled.get() {
            return (ErrorCode::None, offset);
        }
        if state.credit_exceeded.get() {
            return (ErrorCode::StreamCreditExceeded, offset);
        }
        let credit = state.credit_bytes.get();
        if credit == 0 {
            let generation = state.changed.generation();
            if state.credit_bytes.get() == 0 && !state.cancelled.get() {
                state.changed.changed(generation).await;
            }
            continue;
        }
        let bytes_max = (credit.min(u64::from(request.max_bytes_per_push)) as u32).max(1);
        let read =
            ReadRequest { offset, bytes_max, isolation: request.isolation, leader_epoch: None };
        let result = ops::read(core, key.clone(), read, ReadMode::Slices).await;
        if !result.header.error_code.is_ok() {
            return (result.header.error_code, offset);
        }
        if result.records.is_empty() {
            let generation = state.changed.generation();
            let deadline = Instant::now() + STREAM_WAIT_SLICE;
            let woken = async {
                state.changed.changed(generation).await;
            };
            let data = ops::wait(core, key.clone(), offset, request.isolation, deadline);
            futures_lite::future::or(woken, data).await;
            continue;
        }
        let length = result.records.len();
        let Some(push) = records_push(header, &result) else {
            return (ErrorCode::UnknownServerError, offset);
        };
        core.probe.add(Counter::RecordsFetched, result.record_count());
        if writer.send(push).await.is_err() {
            return (ErrorCode::None, offset);
        }
        state.credit_bytes.set(credit.saturating_sub(length as u64));
        offset = result.next_offset;
    }
}
