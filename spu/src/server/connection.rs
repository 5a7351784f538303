//! One client connection on one core: a read loop that frames requests in a reused buffer
//! and runs them in order, and a writer task that sends responses and stream pushes in the
//! order they are queued.
//!
//! Buffers: requests are framed with [`sluice_proto::frame::decode_header`] over one receive
//! buffer per connection (grown to the largest frame seen, bounded by `--frame-bytes-max`);
//! produce bodies are patched in place there and appended from there, never copied per record.
//! A connection that has gone idle gives a grown buffer back to its core, which keeps one
//! (the largest) for the next connection that needs to grow: a producer sending large requests
//! one at a time reuses the same memory instead of freeing and allocating (and zeroing)
//! megabytes per request, which also kept the allocator's freed memory resident.
//! The socket is duplicated (`dup`) so that the writer task owns a write handle while the read
//! loop reads; both are plain glommio streams of this core.
//!
//! Order and bounds: requests are read and run one at a time per connection, in order, so
//! responses come in request order. A produce is run up to its appends (offsets assigned, in
//! request order); its acknowledgement (written, durable) then completes on a task of its own
//! and its answer waits in the writer queue as [`Outgoing::Deferred`], so the next requests of
//! the connection are appended meanwhile and share the write round and the fdatasync (a
//! producer with several requests in flight gets group commit on one connection). Stream
//! fetch pushes interleave with responses through the same writer queue
//! ([`OUTGOING_QUEUE_CAPACITY`] frames, which also bounds the produce answers pending per
//! connection; back-pressure on the read loop when the client reads slowly).
//!
//! Failure modes: a frame over the maximum or below the header size gets an error frame
//! (API versions layout, `FrameTooLarge` / `InvalidRequest`) and the connection closes; an
//! unknown API key or version gets the API versions layout with `UnknownApiKey` /
//! `UnsupportedVersion` and the connection goes on; a body that does not decode closes the
//! connection after a log line (its format has no room for an error without the names it
//! failed to decode). A client that disconnects mid-request only ends its own connection: an
//! append already staged completes (its outcome is unknown to the client, as for any drop).
//! A started frame must be finished within `--frame-read-timeout-ms` or the connection
//! closes; a connection between requests is never timed out. Closes caused by what a client
//! sent are logged by [`super::abuse_log`] (warnings, rate-limited per core).
//!
//! Memory per connection: nothing is set up before the connection's first byte (a peek waits
//! for it), then the receive buffer starts at 64 KiB and grows, by doubling, only as
//! a frame's bytes arrive (never to a frame's declared length up front: a 4-byte prefix
//! announcing 64 MiB once made the core allocate and zero 64 MiB per connection); the writer
//! queue holds at most [`OUTGOING_QUEUE_CAPACITY`] responses, and while it is full the read
//! loop reads nothing more, so a client that stops reading its socket holds a bounded amount.
//!
//! Cross-core: a request for a partition of another core is forwarded by [`super::ops`] (one
//! copy each way; the owner's copying read also checks every CRC). Rough measure on this 2-core
//! machine (release `sluice-spu`, the debug test client on the same 2 CPUs, 100 x 1 KiB records
//! per batch, relaxed durability, one connection, 51 MB each way; three runs of
//! `measure_forward_cost_against_the_owner_port` in `tests/process_data_path.rs`): through the
//! owner's per-core port produce 35-109 MB/s and fetch 107-258 MB/s; through the other core's
//! port (forwarded) produce 36-62 MB/s and fetch 73-97 MB/s. So forwarding roughly halves
//! produce and costs about 60% of fetch throughput: fine for stray requests on the shared port,
//! and the reason shard-aware clients use the per-core ports.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::{AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use sluice_proto::api::splice::WirePlan;
use sluice_proto::api::{ApiKey, ApiVersion};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{decode_header, FrameError, FrameHeader, FRAME_HEADER_LEN};
use sluice_proto::ids::CorrelationId;

use crate::metrics::{CoreProbe, Counter, Gauge, Timing};
use crate::server::access::ConnectionAccess;
use crate::server::core::Core;
use crate::server::handlers::{self, HandlerError};
use crate::server::stream::{self, Streams};
use crate::server::transport::{self, Reader, Transport};
use crate::server::zero_copy::{self, SendMode};
use crate::storage::FileSlice;
use crate::tls::PeerIdentity;

/// Frames queued for the writer at most per connection.
pub const OUTGOING_QUEUE_CAPACITY: usize = 16;
/// Initial receive buffer; grows to the largest frame (bounded by the frame maximum).
const RECEIVE_BUFFER_BYTES: usize = 64 << 10;
/// A receive buffer grown past this by a large frame is given back once empty, so idle
/// connections hold little memory.
const RECEIVE_BUFFER_IDLE_BYTES_MAX: usize = 4 << 20;

/// Something the writer task sends.
pub enum Outgoing {
    /// A whole frame.
    Bytes(Vec<u8>),
    /// A fetch-format frame: `buffer` parts with file slices in between, in `plan` order.
    Plan {
        /// Headers and copied parts.
        buffer: Vec<u8>,
        /// Wire order.
        plan: WirePlan,
        /// The slices of each splice part (index = the plan's splice index).
        slices: Vec<Vec<FileSlice>>,
    },
    /// A produce response still waiting for its acknowledgements: the frame and whether a
    /// partition failed arrive on this channel (nothing: the response could not be encoded,
    /// the connection closes).
    Deferred(LocalReceiver<(Vec<u8>, bool)>),
}

/// Which listener accepted the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// Client API (shared or per-core port).
    Public,
    /// Replication (followers of this core's leader replicas).
    Private,
}

/// Sends what the connection's tasks queue, in order. With `drop_sent_pages`, the page-cache
/// pages of a fetch response's records are dropped when the next response goes out (by then
/// the peer has, in all likelihood, acknowledged them: pages still referenced by the socket
/// are skipped by the kernel and stay cached), and after the connection is closed (before
/// the close the socket may still hold the last response's pages: measured, a quarter of them
/// stayed cached).
async fn write_loop<W: AsyncWrite + AsRawFd + Unpin>(
    mut stream: W,
    queue: LocalReceiver<Outgoing>,
    mode: SendMode,
    drop_sent_pages: bool,
    probe: Rc<CoreProbe>,
) {
    let mut sent: Vec<Vec<FileSlice>> = Vec::new();
    while let Some(mut item) = queue.recv().await {
        if let Outgoing::Deferred(answer) = &item {
            match answer.recv().await {
                Some((bytes, failed)) => {
                    if failed {
                        probe.request_error(ApiKey::Produce);
                    }
                    item = Outgoing::Bytes(bytes);
                }
                None => {
                    tracing::warn!("a produce response could not be encoded; closing");
                    break;
                }
            }
        }
        let result = match &mut item {
            Outgoing::Bytes(bytes) => match stream.write_all(bytes).await {
                Ok(()) => {
                    probe.add(Counter::BytesSent, bytes.len() as u64);
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            },
            Outgoing::Deferred(_) => Ok(()),
            Outgoing::Plan { buffer, plan, slices } => {
                if drop_sent_pages {
                    zero_copy::drop_cached_pages(sent.iter().flatten());
                    sent.clear();
                }
                let spliced: Vec<&[FileSlice]> = slices.iter().map(Vec::as_slice).collect();
                let started = Instant::now();
                match zero_copy::send_plan(&mut stream, buffer, plan, &spliced, mode).await {
                    Ok(stats) => {
                        probe.observe(Timing::FetchSend, started.elapsed());
                        if drop_sent_pages {
                            // The item is done with: keep its slices, no copy.
                            sent = std::mem::take(slices);
                        }
                        probe.response_sent(&stats);
                        Ok(())
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
        };
        // TLS keeps written bytes in its records until flushed (a no-op on plaintext).
        let result = match result {
            Ok(()) => stream.flush().await.map_err(|error| error.to_string()),
            failed => failed,
        };
        if let Err(error) = result {
            // A cut frame (or a plan that does not add up) leaves the stream unusable.
            tracing::debug!(%error, "connection write failed; closing");
            break;
        }
    }
    // After the close: pages are dropped only once the socket no longer references them.
    let _ = stream.close().await;
    zero_copy::drop_cached_pages(sent.iter().flatten());
}

/// Counts the connection open while it lives.
struct OpenConnection(Rc<CoreProbe>);

impl OpenConnection {
    fn new(probe: &Rc<CoreProbe>) -> OpenConnection {
        probe.adjust(Gauge::ConnectionsOpen, 1);
        OpenConnection(Rc::clone(probe))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.adjust(Gauge::ConnectionsOpen, -1);
    }
}

thread_local! {
    /// The grown receive buffer this core keeps for reuse (at most one, the largest given
    /// back; bounded by the frame maximum). Per thread, hence per core: never shared.
    static SPARE_RECEIVE_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The receive buffer with its unconsumed range.
struct ReceiveBuffer {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReceiveBuffer {
    /// Gives memory back after a large frame once nothing is buffered.
    /// The grown buffer goes to the core's spare slot (kept if larger than the spare there).
    fn shrink_when_idle(&mut self) {
        if self.start == self.end && self.bytes.len() > RECEIVE_BUFFER_IDLE_BYTES_MAX {
            let grown = std::mem::replace(&mut self.bytes, vec![0; RECEIVE_BUFFER_BYTES]);
            SPARE_RECEIVE_BUFFER.with(|spare| {
                let mut spare = spare.borrow_mut();
                if grown.len() > spare.len() {
                    *spare = grown;
                }
            });
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for at least `wanted` unconsumed bytes plus some free space to read into.
    fn reserve(&mut self, wanted: usize) {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // A frame's declared length is only a claim: grow by doubling towards it as its
        // bytes arrive, so memory follows what was received (a 4-byte prefix announcing
        // 64 MiB costs nothing), while a large frame still costs O(size) copies in all.
        let grown = self.bytes.len().saturating_mul(2).max(self.end + 4096);
        let target = wanted.min(grown).max(self.end + 4096).max(RECEIVE_BUFFER_BYTES);
        if self.bytes.len() < target {
            let spare = SPARE_RECEIVE_BUFFER.with(|spare| spare.take());
            if spare.len() > self.bytes.len() {
                let mut spare = spare;
                spare[..self.end].copy_from_slice(&self.bytes[..self.end]);
                self.bytes = spare;
            } else if !spare.is_empty() {
                SPARE_RECEIVE_BUFFER.with(|slot| *slot.borrow_mut() = spare);
            }
            if self.bytes.len() < target {
                self.bytes.resize(target, 0);
            }
        }
    }
}

/// Serves one connection until the client closes it, a fatal framing error, or shutdown:
/// plaintext, or TLS when the core has it (see [`super::transport`]).
pub async fn serve(core: Rc<Core>, stream: TcpStream, port: Port) {
    let _ = stream.set_nodelay(true);
    let _open = OpenConnection::new(&core.probe);
    // Until its first byte a connection holds one descriptor and no buffer or task: 10,000
    // connections that never sent anything took 2 descriptors each (so a 20,000 open-files
    // limit held fewer than 10,000) and a receive buffer each.
    let mut first = [0u8; 3];
    let peeked = match stream.peek(&mut first).await {
        Ok(0) | Err(_) => return,
        Ok(peeked) => peeked,
    };
    let Some(transport) = transport::open(&core, stream, port, &first[..peeked]).await else {
        return;
    };
    let mode = SendMode::from_flags(core.config.zero_copy, core.config.direct_reads);
    match transport {
        Transport::Plain { reader, writer } => {
            run(core, port, Connection { reader, peer: PeerIdentity::Plaintext }, writer, mode)
                .await
        }
        Transport::Tls { reader, writer, peer } => {
            // No sendfile through TLS: the records must go through rustls.
            let mode = if mode == SendMode::ZeroCopy { SendMode::Copy } else { mode };
            run(core, port, Connection { reader, peer }, writer, mode).await
        }
    }
}

/// The read side of a connection and who is at the other end.
struct Connection {
    reader: Reader,
    peer: PeerIdentity,
}

/// Reads and runs requests; `write` (the connection's write side) goes to the writer task.
async fn run<W>(core: Rc<Core>, port: Port, connection: Connection, write: W, mode: SendMode)
where
    W: AsyncWrite + AsRawFd + Unpin + 'static,
{
    let Connection { reader: mut stream, peer } = connection;
    let write_stream = write;
    let (writer, queue) = local_channel::new_bounded(OUTGOING_QUEUE_CAPACITY);
    let writer = Rc::new(writer);
    let writer_task = glommio::spawn_local(write_loop(
        write_stream,
        queue,
        mode,
        core.config.drop_sent_pages,
        Rc::clone(&core.probe),
    ));
    let streams = Rc::new(Streams::new(Rc::clone(&writer), Rc::clone(&core.probe)));
    let frame_bytes_max = core.config.frame_bytes_max;
    let frame_read_timeout = core.config.frame_read_timeout;
    let mut timed = false;
    let mut buffer = ReceiveBuffer { bytes: vec![0; RECEIVE_BUFFER_BYTES], start: 0, end: 0 };
    // A verified client certificate names the connection's principal (`User:<name>`);
    // without one, `Authenticate` with a token may name it, else it is anonymous.
    let mut access = ConnectionAccess::new(peer.principal());
    loop {
        match decode_header(&buffer.bytes[buffer.start..buffer.end], frame_bytes_max) {
            Ok(Some(frame)) => {
                let frame_start = buffer.start;
                let body = frame_start + frame.body.start..frame_start + frame.body.end;
                buffer.start += frame.frame_len();
                let header = frame.header;
                let bytes = &mut buffer.bytes[body];
                let request = Request { port, peer: &peer, header: &header };
                if !dispatch(&core, &streams, &writer, request, bytes, &mut access).await {
                    break;
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                if let FrameError::UnknownApiKey { .. } = error {
                    core.probe.add(Counter::RequestsUnknownApi, 1);
                }
                let keep_going = answer_frame_error(&buffer, &error, &writer).await;
                if !keep_going {
                    stream.log_closed(&error.to_string());
                    break;
                }
                if let FrameError::UnknownApiKey { frame_len, .. }
                | FrameError::UnsupportedVersion { frame_len, .. } = error
                {
                    buffer.start += frame_len;
                }
                continue;
            }
        }
        buffer.shrink_when_idle();
        let unconsumed = &buffer.bytes[buffer.start..buffer.end];
        let wanted = unconsumed.get(..4).map_or(0, |prefix| {
            4 + u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize
        });
        buffer.reserve(wanted);
        // Only a started frame is timed: a connection between requests may stay idle.
        let partial = buffer.start < buffer.end;
        if partial != timed
            && stream.set_read_timeout(partial.then_some(frame_read_timeout)).is_ok()
        {
            timed = partial;
        }
        match stream.read(&mut buffer.bytes[buffer.end..]).await {
            Ok(0) => {
                if partial {
                    stream.log_closed("the client closed in the middle of a frame");
                }
                break;
            }
            Ok(read) => {
                core.probe.add(Counter::BytesReceived, read as u64);
                buffer.end += read;
            }
            Err(error) if timed && error.kind() == std::io::ErrorKind::TimedOut => {
                let reason = format!(
                    "{} bytes of a frame and nothing more for {} ms",
                    buffer.end - buffer.start,
                    frame_read_timeout.as_millis()
                );
                stream.log_closed(&reason);
                break;
            }
            Err(error) => {
                tracing::debug!(%error, "connection read failed");
                break;
            }
        }
    }
    streams.cancel_all();
    drop(streams);
    drop(writer);
    writer_task.await;
}

/// One request's frame header with where it came from.
#[derive(Clone, Copy)]
struct Request<'a> {
    port: Port,
    peer: &'a PeerIdentity,
    header: &'a FrameHeader,
}

/// Answers a framing error; returns whether the connection goes on.
async fn answer_frame_error(
    buffer: &ReceiveBuffer,
    error: &FrameError,
    writer: &LocalSender<Outgoing>,
) -> bool {
    let unconsumed = &buffer.bytes[buffer.start..buffer.end];
    let correlation_id = error.correlation_id().unwrap_or_else(|| {
        unconsumed.get(8..FRAME_HEADER_LEN).map_or(CorrelationId(0), |bytes| {
            CorrelationId(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        })
    });
    tracing::debug!(%error, "framing error");
    let header =
        FrameHeader { api_key: ApiKey::ApiVersions, api_version: ApiVersion(0), correlation_id };
    let mut out = Vec::new();
    if handlers::api_versions(&header, error.error_code(), &mut out).is_ok() {
        let _ = writer.send(Outgoing::Bytes(out)).await;
    }
    !error.is_fatal()
}

/// Runs one request with its metrics; returns whether the connection goes on.
async fn dispatch(
    core: &Rc<Core>,
    streams: &Rc<Streams>,
    writer: &Rc<LocalSender<Outgoing>>,
    request: Request<'_>,
    body: &mut [u8],
    access: &mut ConnectionAccess,
) -> bool {
    let header = request.header;
    let probe = Rc::clone(&core.probe);
    probe.request(header.api_key);
    probe.adjust(Gauge::RequestsInFlight, 1);
    let outcome = run_request(core, streams, request, body, access).await;
    probe.adjust(Gauge::RequestsInFlight, -1);
    match outcome {
        Ok((response, failed)) => {
            if failed {
                probe.request_error(header.api_key);
            }
            match response {
                Some(response) => writer.send(response).await.is_ok(),
                None => true,
            }
        }
        Err(HandlerError::Undecodable { api_key, source }) => {
            probe.request_error(header.api_key);
            tracing::info!(%api_key, %source, "undecodable request; closing the connection");
            false
        }
        Err(error) => {
            probe.request_error(header.api_key);
            tracing::warn!(%error, "request failed; closing the connection");
            false
        }
    }
}

/// The response to one request (none for one-way messages and acks-none produce) and whether
/// it carries an error.
async fn run_request(
    core: &Rc<Core>,
    streams: &Rc<Streams>,
    request: Request<'_>,
    body: &mut [u8],
    access: &mut ConnectionAccess,
) -> Result<(Option<Outgoing>, bool), HandlerError> {
    let Request { port, peer, header } = request;
    let mut out = Vec::new();
    let failed = match (port, header.api_key) {
        (_, ApiKey::ApiVersions) => {
            handlers::api_versions(header, ErrorCode::None, &mut out)?;
            false
        }
        (Port::Private, ApiKey::FollowerFetch) => {
            let (response, summary) =
                crate::replication::serve::follower_fetch(core, header, body, peer).await?;
            return Ok((Some(response), summary.errors));
        }
        (Port::Private, ApiKey::LeaderEpochEndOffset) => {
            crate::replication::serve::epoch_end_offsets(core, header, body, &mut out, peer)?
        }
        (Port::Private, other) => {
            tracing::debug!(api_key = %other, "API not served on the SPU's private port");
            handlers::api_versions(header, ErrorCode::UnknownApiKey, &mut out)?;
            true
        }
        (Port::Public, ApiKey::Authenticate) => {
            handlers::authenticate(core, access, header, body, &mut out)?
        }
        (Port::Public, ApiKey::Produce) => {
            let started = Instant::now();
            let staged = handlers::produce_stage(core, header, body, access).await?;
            if !staged.answers() {
                return Ok((None, staged.finish(core, &mut out).await?));
            }
            // The appends are done, in request order; the acknowledgement runs on its own
            // task so that the next request is read (and appended) meanwhile and shares the
            // write round and fdatasync. The writer sends answers in request order.
            let (sender, receiver) = local_channel::new_bounded(1);
            let core = Rc::clone(core);
            glommio::spawn_local(async move {
                let mut frame = Vec::new();
                match staged.finish(&core, &mut frame).await {
                    Ok(failed) => {
                        core.probe.observe(Timing::ProduceAck, started.elapsed());
                        let _ = sender.send((frame, failed)).await;
                    }
                    Err(error) => tracing::warn!(%error, "produce response does not encode"),
                }
            })
            .detach();
            return Ok((Some(Outgoing::Deferred(receiver)), false));
        }
        (Port::Public, ApiKey::Fetch) => {
            let (response, summary) = handlers::fetch(core, header, body, access).await?;
            core.probe.add(Counter::RecordsFetched, summary.records);
            return Ok((Some(response), summary.errors));
        }
        (Port::Public, ApiKey::ListOffsets) => {
            handlers::list_offsets(core, header, body, &mut out, access).await?
        }
        (Port::Public, ApiKey::StreamFetch) => {
            let writer = streams.writer();
            stream::open(core, streams, header, body, &writer, access)?;
            false
        }
        (Port::Public, ApiKey::StreamFetchCredit) => {
            streams.credit(header, body)?;
            false
        }
        (Port::Public, ApiKey::StreamFetchCancel) => {
            streams.cancel(header, body)?;
            false
        }
        (Port::Public, other) => {
            tracing::debug!(api_key = %other, "API not served on the SPU's public port");
            handlers::api_versions(header, ErrorCode::UnknownApiKey, &mut out)?;
            true
        }
    };
    Ok(((!out.is_empty()).then_some(Outgoing::Bytes(out)), failed))
}
