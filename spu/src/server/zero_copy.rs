//! Sending a fetch-format response ([`WirePlan`]) to a client socket, with the record bytes
//! read with O_DIRECT and written from those buffers (the default), moved from segment files
//! to the socket by the kernel (`sendfile(2)`, `--direct-reads false`), or copied through a
//! reused user-space buffer (`--zero-copy false`, and TLS later).
//!
//! # How the bytes move
//!
//! [`FetchResponseWriter`](sluice_proto::api::splice::FetchResponseWriter) leaves a gap after
//! each partition header and returns a [`WirePlan`]: buffer ranges and
//! [`WirePart::Splice`] parts in wire order. [`send_plan`] walks the plan: buffer parts go out
//! through the stream's own `AsyncWrite`; each splice part is the list of
//! [`FileSlice`]s that [`ReplicaLog::read`](crate::storage::ReplicaLog::read) returned.
//!
//! * [`SendMode::ZeroCopy`]: `sendfile(socket, segment, &offset, count)`. The kernel takes
//!   page-cache pages of the segment and hands references to TCP; no byte of a record is
//!   copied into this process. `sendfile` with an explicit offset never moves the shared
//!   descriptor's file position, so several connections may send from one `Rc<File>` at once.
//! * [`SendMode::Direct`]: the slice's segment is opened again with O_DIRECT (through
//!   `/proc/self/fd`, so a segment deleted meanwhile is still the one read) and up to
//!   [`DIRECT_READ_AHEAD`] reads of at most [`DIRECT_READ_BYTES`], covering exactly the
//!   slice's pages, are in flight on the executor's ring while each finished buffer is
//!   written to the socket. One copy (into the socket) instead of none, but no page cache: segments are written with
//!   O_DIRECT, so sendfile first reads them into fresh page-cache pages, which on a VM backed
//!   lazily costs the first-touch rate, and its synchronous reads stall the executor. Reads
//!   see the same bytes sendfile would: a slice ends at or below the written end, and written
//!   bytes are on disk (an O_DIRECT write completed). A tail page being rewritten by a write
//!   round holds the same bytes in the slice's range before and after.
//! * Whatever the mode, a slice whose bytes the log still holds in memory (the newest writes
//!   of the active segment, [`FileSlice::memory`]) is written from there: a tailing
//!   consumer's records go out without a read.
//! * [`SendMode::Copy`]: `pread` into a per-core reused buffer ([`COPY_CHUNK_BYTES`]), then
//!   `write_all` through the stream. The buffer is not page-aligned: the slices' descriptors
//!   are buffered (`File::open`, no `O_DIRECT`), so alignment would buy nothing.
//!
//! # Why sendfile, and how it waits without busy polling
//!
//! glommio 0.9 exposes neither splice nor socket write readiness. Options weighed:
//! `IORING_OP_SPLICE` on a ring of our own (the kernel runs splice to a socket in an io-wq
//! worker, and glommio has no public way to await another ring's completions or an eventfd);
//! glommio's `spawn_blocking` pool (one slow reader would stall every send of the core behind
//! it); a std thread with epoll waking glommio wakers (works, but one more thread and a shared
//! map). Chosen: `sendfile(2)` on the socket descriptor made non-blocking for the duration of
//! the send, and, when it reports `EAGAIN` (socket buffer full), the wait for writability is
//! glommio's own: the next single byte of the slice is read (`pread`, 1 byte) and written with
//! the stream's `poll_write`, which arms glommio's `POLLOUT` on its io_uring and sleeps until
//! the kernel frees send-buffer space. So waiting costs no thread, no spinning, and honours the
//! stream's write timeout (`TcpStream::set_write_timeout`, which bounds each wait: a reader
//! that stops reading for that long gets the connection failed with `TimedOut`). The price is
//! one byte copied per time the socket buffer fills (counted in
//! [`SendStats::writable_waits`]). `sendfile` over
//! manual splice: no per-core pipe whose leftover bytes would have to be tracked across an
//! await when two connections of one core interleave, and one syscall instead of two.
//!
//! The socket gets `O_NONBLOCK` only while a zero-copy send runs (restored at the end, also on
//! error); glommio's stream reads and writes use `MSG_DONTWAIT` and do not depend on the flag.
//! No `TCP_CORK`: with a receive window below one MSS a corked sender holds each partial
//! segment up to the 200 ms cork timeout. The cost is that the partition header may leave in
//! its own small segment when `TCP_NODELAY` is set.
//!
//! # Invariants
//!
//! * The plan is checked before the first byte is sent ([`SendError::InvalidPlan`]): buffer
//!   ranges inside `buffer`, splice indexes inside `spliced`, each splice part's length equal
//!   to the sum of its slices, and the parts adding up to `frame_len`. Such an error leaves
//!   the connection intact (nothing was written).
//! * The slices are valid while the caller holds them: a [`FileSlice`] owns an `Rc<File>`, so
//!   a segment deleted by retention meanwhile is still readable.
//! * Partial writes are continued until every byte is out; `EINTR` is retried.
//! * A file that already ends before the slice does when the send reaches it (cut by a
//!   follower truncation, or a bad slice) is [`SendError::File`] (kind `UnexpectedEof`), never
//!   a hang.
//! * Once any byte was written, an error means the frame on the wire is cut: the caller must
//!   close the connection (both error variants carry `sent`).
//! * The page cache is the source: `sendfile` queues references to page-cache pages, so a range
//!   cut by a concurrent `truncate_to` (a follower dropping a suffix the new leader lacks)
//!   while its pages still sit in the socket queue can reach the peer zeroed. Only bytes above
//!   the high watermark can be truncated, and the client's per-batch CRC-32C rejects them.
//!   Neither mode verifies CRCs here (the storage read checked every batch header);
//!   [`ReplicaLog::read_into`](crate::storage::ReplicaLog::read_into) is the verifying copy.
//! * `SIGPIPE` must be ignored (the Rust runtime does so for every binary): a peer that closed
//!   makes `sendfile` fail with `EPIPE`/`ECONNRESET`, reported as [`SendError::Socket`].
//!
//! # Cost
//!
//! `cargo bench -p sluice-spu --bench fetch_zero_copy` (1 GiB log to a reader process over
//! loopback, 2-core VM shared with builds): 1 MiB responses take 0.275-0.294 server CPU
//! seconds per GB zero-copy against 0.473-0.517 copying (copy / zero-copy 1.72-1.76); 64 KiB
//! responses 0.67-0.83 against 0.72-0.90 (1.08): there per-response costs dominate.
//!
//! # Ownership
//!
//! Everything here runs on the executor that owns the connection; the copy buffers are a
//! per-thread pool (at most [`COPY_BUFFERS_POOLED_MAX`] kept), never shared across cores.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use futures_lite::{AsyncWrite, AsyncWriteExt};
use sluice_proto::api::splice::{WirePart, WirePlan};

use crate::storage::segment::{align_down, align_up};
use crate::storage::FileSlice;

/// How record bytes go from segment files to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendMode {
    /// `sendfile(2)`: the kernel moves page-cache pages to the socket.
    #[default]
    ZeroCopy,
    /// `pread` into a reused buffer, then write (TLS, or `--zero-copy false`).
    Copy,
    /// O_DIRECT reads into aligned buffers, [`DIRECT_READ_AHEAD`] reads ahead of the
    /// socket, then write: no page cache on either side (`--direct-reads`, the default).
    Direct,
}

impl SendMode {
    /// The mode for `--zero-copy` and `--direct-reads`.
    pub fn from_flags(zero_copy: bool, direct_reads: bool) -> SendMode {
        match (zero_copy, direct_reads) {
            (false, _) => SendMode::Copy,
            (true, false) => SendMode::ZeroCopy,
            (true, true) => SendMode::Direct,
        }
    }
}

/// What one [`send_plan`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendStats {
    /// Bytes written to the socket (the whole frame on success).
    pub bytes_sent: u64,
    /// Record bytes moved by the kernel without a copy into this process.
    pub file_bytes_zero_copy: u64,
    /// Record bytes copied through a user-space buffer (copy mode, and one byte per wait).
    pub file_bytes_copied: u64,
    /// Record bytes read with O_DIRECT and written from those buffers (direct mode).
    pub file_bytes_direct: u64,
    /// Record bytes written from the log's memory of its newest writes (any mode).
    pub file_bytes_memory: u64,
    /// Times the socket buffer was full and the send waited for the peer to read.
    pub writable_waits: u64,
}

/// Why a response could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The plan does not match the buffer or the slices (a server bug). Nothing was written:
    /// the connection is intact; answer with an error instead.
    #[error("invalid wire plan: {0}")]
    InvalidPlan(String),
    /// The socket failed (peer closed or reset, write timeout). Close the connection; a retry
    /// by the client on a new connection is safe (fetch is idempotent).
    #[error("socket write failed after {sent} bytes: {source}")]
    Socket {
        /// Bytes of the frame already written.
        sent: u64,
        /// The OS error.
        source: io::Error,
    },
    /// A segment file could not be read or ended before the slice did. Close the connection
    /// (the frame is cut) and treat the replica's file as suspect.
    #[error("segment file read failed after {sent} bytes of the response: {source}")]
    File {
        /// Bytes of the frame already written.
        sent: u64,
        /// The OS error (`UnexpectedEof` for a file shorter than the slice).
        source: io::Error,
    },
}

impl SendError {
    /// Bytes of the frame written before the error (0 for an invalid plan).
    pub fn bytes_sent(&self) -> u64 {
        match self {
            SendError::InvalidPlan(_) => 0,
            SendError::Socket { sent, .. } | SendError::File { sent, .. } => *sent,
        }
    }
}

impl From<SendError> for io::Error {
    fn from(error: SendError) -> io::Error {
        match error {
            SendError::InvalidPlan(message) => io::Error::new(io::ErrorKind::InvalidInput, message),
            SendError::Socket { source, .. } | SendError::File { source, .. } => source,
        }
    }
}

/// Bytes read and written per step of the copying path: large enough that syscall cost is
/// small against the copy, small enough to stay in L2 cache.
pub const COPY_CHUNK_BYTES: usize = 256 * 1024;

/// Page-cache drops cover whole aligned blocks of this size (the largest folio).
const DROP_ALIGN_BYTES: u64 = 2 << 20;

/// Largest O_DIRECT read of [`SendMode::Direct`] (a shorter slice reads just its pages).
/// Measured, 5 GB cold catch-up, alternating: 1 MiB reads 874 / 939 / 861 MiB/s against
/// 695 / 800 / 710 with 256 KiB reads.
pub const DIRECT_READ_BYTES: usize = 1024 * 1024;

/// O_DIRECT reads in flight ahead of the socket per slice being sent.
pub const DIRECT_READ_AHEAD: usize = 4;

/// Copy buffers kept per thread for reuse; more concurrent copying sends allocate and free.
pub const COPY_BUFFERS_POOLED_MAX: usize = 8;

/// Most bytes asked of one `sendfile` call (the kernel caps a call at 0x7ffff000 anyway).
const SENDFILE_CALL_BYTES_MAX: u64 = 1 << 30;

/// Drops the page-cache pages of `slices` (`POSIX_FADV_DONTNEED`), best effort: pages still
/// referenced elsewhere (a socket queue) are left to the kernel.
///
/// Why: segments are written with O_DIRECT, so a consumer's read is what brings records into
/// the page cache, and a catch-up consumer would otherwise stream the whole log through fresh
/// page-cache memory (on a VM whose memory is backed lazily that runs at the first-touch rate).
/// Pages dropped after sending are reused by the kernel for the next reads. Measured
/// (`sluice-perf consume`, 2 GB catch-up on a cold cache, 2026-12-01): 245-277 MiB/s keeping
/// the pages, 693-1064 MiB/s dropping them.
pub fn drop_cached_pages<'a>(slices: impl Iterator<Item = &'a FileSlice>) {
    for slice in slices {
        // Whole large folios: the kernel only drops a folio that lies inside the range, and
        // readahead caches folios of up to 2 MiB that straddle a slice's ends (measured: the
        // last half MiB of a 2 MB log stayed cached without the rounding).
        let start = slice.position() / DROP_ALIGN_BYTES * DROP_ALIGN_BYTES;
        let end = (slice.position() + slice.length()).div_ceil(DROP_ALIGN_BYTES) * DROP_ALIGN_BYTES;
        let (Ok(position), Ok(length)) =
            (libc::off_t::try_from(start), libc::off_t::try_from(end - start))
        else {
            continue;
        };
        // SAFETY: the descriptor is open while the slice (its `Rc<File>`) lives; no memory is
        // passed to the kernel.
        let result = unsafe {
            libc::posix_fadvise(slice.raw_fd(), position, length, libc::POSIX_FADV_DONTNEED)
        };
        if result != 0 {
            tracing::trace!(error = result, "posix_fadvise(DONTNEED) failed");
        }
    }
}

/// Sends `plan` to `stream`: buffer parts from `buffer`, splice part `i` from `spliced[i]`.
///
/// `stream` is the connection (a `glommio::net::TcpStream`, or anything that writes straight
/// to the descriptor it exposes: a write-buffering wrapper would reorder bytes). `buffer` is
/// the vector the [`FetchResponseWriter`](sluice_proto::api::splice::FetchResponseWriter)
/// wrote. On success every byte of the frame was handed to the kernel.
pub async fn send_plan<W>(
    stream: &mut W,
    buffer: &[u8],
    plan: &WirePlan,
    spliced: &[&[FileSlice]],
    mode: SendMode,
) -> Result<SendStats, SendError>
where
    W: AsyncWrite + AsRawFd + Unpin,
{
    check_plan(buffer, plan, spliced)?;
    let socket = stream.as_raw_fd();
    let has_splice = plan.parts.iter().any(|part| matches!(part, WirePart::Splice { .. }));
    let _nonblocking = match (mode, has_splice) {
        (SendMode::ZeroCopy, true) => Some(
            NonBlockingGuard::set(socket)
                .map_err(|source| SendError::Socket { sent: 0, source })?,
        ),
        _ => None,
    };
    let mut stats = SendStats::default();
    for part in &plan.parts {
        match part {
            WirePart::Buffer(range) => {
                write_all(stream, &buffer[range.clone()], &mut stats).await?;
            }
            WirePart::Splice { index, .. } => {
                for slice in spliced[*index] {
                    if !slice.memory().is_empty() {
                        for piece in slice.memory() {
                            write_all(stream, piece.as_slice(), &mut stats).await?;
                            stats.file_bytes_memory += piece.len() as u64;
                        }
                        continue;
                    }
                    match mode {
                        SendMode::ZeroCopy => sendfile_slice(stream, slice, &mut stats).await?,
                        SendMode::Copy => copy_slice(stream, slice, &mut stats).await?,
                        SendMode::Direct => direct_slice(stream, slice, &mut stats).await?,
                    }
                }
            }
        }
    }
    Ok(stats)
}

fn check_plan(buffer: &[u8], plan: &WirePlan, spliced: &[&[FileSlice]]) -> Result<(), SendError> {
    let mut total: u64 = 0;
    for part in &plan.parts {
        match part {
            WirePart::Buffer(range) => {
                if range.start > range.end || range.end > buffer.len() {
                    return Err(SendError::InvalidPlan(format!(
                        "buffer range {range:?} outside a buffer of {} bytes",
                        buffer.len()
                    )));
                }
                total += (range.end - range.start) as u64;
            }
            WirePart::Splice { index, len } => {
                let Some(slices) = spliced.get(*index) else {
                    return Err(SendError::InvalidPlan(format!(
                        "splice index {index} but {} slice lists",
                        spliced.len()
                    )));
                };
                let slices_bytes: u64 = slices.iter().map(FileSlice::length).sum();
                if slices_bytes != u64::from(*len) {
                    return Err(SendError::InvalidPlan(format!(
                        "splice {index} is {len} bytes but its slices hold {slices_bytes}"
                    )));
                }
                total += slices_bytes;
            }
        }
    }
    if total != plan.frame_len as u64 {
        return Err(SendError::InvalidPlan(format!(
            "parts add up to {total} bytes, frame is {}",
            plan.frame_len
        )));
    }
    Ok(())
}

async fn write_all<W>(stream: &mut W, bytes: &[u8], stats: &mut SendStats) -> Result<(), SendError>
where
    W: AsyncWrite + Unpin,
{
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]).await {
            Ok(0) => {
                let source = io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes");
                return Err(SendError::Socket { sent: stats.bytes_sent, source });
            }
            Ok(count) => {
                written += count;
                stats.bytes_sent += count as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(SendError::Socket { sent: stats.bytes_sent, source }),
        }
    }
    Ok(())
}

fn truncated(slice: &FileSlice, position: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "segment {} ended at byte {position}, before the slice end {}",
            slice.segment_base(),
            slice.position() + slice.length()
        ),
    )
}

/// Errors of `sendfile` that come from the socket side; anything else is the file's.
fn is_socket_error(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::EPIPE
                | libc::ECONNRESET
                | libc::ENOTCONN
                | libc::ECONNABORTED
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENETDOWN
                | libc::ENOTSOCK
        )
    )
}

/// One `sendfile` call: bytes sent, `None` when the socket buffer is full.
fn sendfile_once(socket: RawFd, file: RawFd, position: u64, count: u64) -> io::Result<Option<u64>> {
    let mut offset = libc::off_t::try_from(position)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file position over off_t"))?;
    loop {
        // SAFETY: both descriptors are open for the duration of the call (the caller holds the
        // stream and the slice's `Rc<File>`); `offset` is a valid, exclusively borrowed off_t.
        let result = unsafe { libc::sendfile(socket, file, &mut offset, count as usize) };
        if result >= 0 {
            return Ok(Some(result as u64));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(error),
        }
    }
}

async fn sendfile_slice<W>(
    stream: &mut W,
    slice: &FileSlice,
    stats: &mut SendStats,
) -> Result<(), SendError>
where
    W: AsyncWrite + AsRawFd + Unpin,
{
    let socket = stream.as_raw_fd();
    let file = slice.raw_fd();
    let end = slice.position() + slice.length();
    let mut position = slice.position();
    while position < end {
        let count = (end - position).min(SENDFILE_CALL_BYTES_MAX);
        match sendfile_once(socket, file, position, count) {
            Ok(Some(0)) => {
                return Err(SendError::File {
                    sent: stats.bytes_sent,
                    source: truncated(slice, position),
                })
            }
            Ok(Some(sent)) => {
                position += sent;
                stats.bytes_sent += sent;
                stats.file_bytes_zero_copy += sent;
            }
            Ok(None) => {
                // Socket buffer full: let glommio wait for POLLOUT while sending the next byte.
                let mut byte = [0u8; 1];
                read_exact_at(slice, &mut byte, position)
                    .map_err(|source| SendError::File { sent: stats.bytes_sent, source })?;
                stats.writable_waits += 1;
                write_all(stream, &byte, stats).await?;
                stats.file_bytes_copied += 1;
                position += 1;
            }
            Err(source) if is_socket_error(&source) => {
                return Err(SendError::Socket { sent: stats.bytes_sent, source })
            }
            Err(source) => return Err(SendError::File { sent: stats.bytes_sent, source }),
        }
    }
    Ok(())
}

/// `pread` of exactly `out.len()` bytes at `position` of the slice's file.
fn read_exact_at(slice: &FileSlice, out: &mut [u8], position: u64) -> io::Result<()> {
    let mut filled = 0;
    while filled < out.len() {
        match slice.file().read_at(&mut out[filled..], position + filled as u64) {
            Ok(0) => return Err(truncated(slice, position + filled as u64)),
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn copy_slice<W>(
    stream: &mut W,
    slice: &FileSlice,
    stats: &mut SendStats,
) -> Result<(), SendError>
where
    W: AsyncWrite + Unpin,
{
    let mut chunk = CopyBuffer::take();
    let end = slice.position() + slice.length();
    let mut position = slice.position();
    while position < end {
        let count = (end - position).min(COPY_CHUNK_BYTES as u64) as usize;
        let bytes = &mut chunk.bytes[..count];
        read_exact_at(slice, bytes, position)
            .map_err(|source| SendError::File { sent: stats.bytes_sent, source })?;
        write_all(stream, bytes, stats).await?;
        stats.file_bytes_copied += count as u64;
        position += count as u64;
    }
    Ok(())
}

/// Sends `slice` from O_DIRECT reads: the segment is opened again with O_DIRECT through
/// `/proc/self/fd` (the same file even if it was deleted meanwhile), and up to
/// [`DIRECT_READ_AHEAD`] reads of at most [`DIRECT_READ_BYTES`] are in flight while the socket
/// takes the previous one. The reads cover exactly the slice's pages: the first starts at the
/// page holding the slice's first byte, each later one where the previous ended, the last
/// ends at the page holding its last byte (glommio's stream reader aligns its buffers to
/// their size, which read up to twice a tailing consumer's bytes from the disk).
async fn direct_slice<W>(
    stream: &mut W,
    slice: &FileSlice,
    stats: &mut SendStats,
) -> Result<(), SendError>
where
    W: AsyncWrite + Unpin,
{
    let file_error = |sent: u64| {
        move |source: glommio::GlommioError<()>| SendError::File { sent, source: source.into() }
    };
    let file = glommio::io::DmaFile::open(format!("/proc/self/fd/{}", slice.raw_fd()))
        .await
        .map_err(file_error(stats.bytes_sent))?;
    let file = Rc::new(file);
    let end = slice.position() + slice.length();
    let mut chunks = DirectChunks::new(slice.position(), end);
    let mut pending = VecDeque::with_capacity(DIRECT_READ_AHEAD);
    let outcome = async {
        loop {
            while pending.len() < DIRECT_READ_AHEAD {
                let Some(chunk) = chunks.next() else { break };
                let file = Rc::clone(&file);
                let read =
                    async move { file.read_at_aligned(chunk.read_from, chunk.read_len).await };
                pending.push_back((chunk, glommio::spawn_local(read)));
            }
            let Some((chunk, read)) = pending.pop_front() else { return Ok(()) };
            let buffer = read.await.map_err(file_error(stats.bytes_sent))?;
            let wanted = chunk.skip + chunk.send_len;
            if buffer.len() < wanted {
                let short_at = chunk.read_from + buffer.len() as u64;
                let source = truncated(slice, short_at.max(slice.position()));
                return Err(SendError::File { sent: stats.bytes_sent, source });
            }
            write_all(stream, &buffer[chunk.skip..wanted], stats).await?;
            stats.file_bytes_direct += chunk.send_len as u64;
        }
    }
    .await;
    // Reads still in flight (after a failure) finish before their file closes.
    for (_, read) in pending {
        let _ignored = read.await;
    }
    if let Ok(file) = Rc::try_unwrap(file) {
        if let Err(error) = file.close().await {
            tracing::debug!(%error, "closing a direct reader failed");
        }
    }
    outcome
}

/// One O_DIRECT read of [`direct_slice`]: the aligned range read and the part of it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirectChunk {
    /// Aligned file position of the read.
    read_from: u64,
    /// Aligned length of the read.
    read_len: usize,
    /// Bytes at the start of the read that precede the slice.
    skip: usize,
    /// Bytes of the slice in this read.
    send_len: usize,
}

/// The reads covering `[start, end)`: page-aligned, at most [`DIRECT_READ_BYTES`] each, in
/// order, every byte of the range sent exactly once.
#[derive(Clone, Debug)]
struct DirectChunks {
    position: u64,
    end: u64,
}

impl DirectChunks {
    fn new(start: u64, end: u64) -> DirectChunks {
        DirectChunks { position: start, end }
    }
}

impl Iterator for DirectChunks {
    type Item = DirectChunk;

    fn next(&mut self) -> Option<DirectChunk> {
        if self.position >= self.end {
            return None;
        }
        let read_from = align_down(self.position);
        let skip = (self.position - read_from) as usize;
        let read_len = (align_up(self.end) - read_from).min(DIRECT_READ_BYTES as u64) as usize;
        let send_len = ((read_from + read_len as u64).min(self.end) - self.position) as usize;
        self.position += send_len as u64;
        Some(DirectChunk { read_from, read_len, skip, send_len })
    }
}

thread_local! {
    static COPY_BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A copy buffer taken from this thread's pool, given back on drop.
struct CopyBuffer {
    bytes: Box<[u8]>,
}

impl CopyBuffer {
    fn take() -> CopyBuffer {
        let pooled = COPY_BUFFERS.with(|pool| pool.borrow_mut().pop());
        CopyBuffer { bytes: pooled.unwrap_or_else(|| vec![0u8; COPY_CHUNK_BYTES].into()) }
    }
}

impl Drop for CopyBuffer {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        COPY_BUFFERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < COPY_BUFFERS_POOLED_MAX {
                pool.push(bytes);
            }
        });
    }
}

/// Sets `O_NONBLOCK` on a descriptor and restores the previous flags on drop.
struct NonBlockingGuard {
    fd: RawFd,
    flags: Option<libc::c_int>,
}

impl NonBlockingGuard {
    fn set(fd: RawFd) -> io::Result<NonBlockingGuard> {
        // SAFETY: fcntl on a descriptor the caller keeps open; no pointers involved.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Ok(NonBlockingGuard { fd, flags: None });
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlockingGuard { fd, flags: Some(flags) })
    }
}

impl Drop for NonBlockingGuard {
    fn drop(&mut self) {
        if let Some(flags) = self.flags {
            // SAFETY: the descriptor is still open (the guard lives inside `send_plan`, which
            // borrows the stream). A failure leaves O_NONBLOCK set, which glommio tolerates.
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DirectChunk, DirectChunks, DIRECT_READ_BYTES};
    use crate::storage::config::IO_ALIGNMENT_BYTES;

    /// Every range: reads aligned, at most the maximum, contiguous, covering exactly the
    /// range's pages, and the sent parts are the range, each byte once, in order.
    #[test]
    fn direct_reads_cover_exactly_the_slice_pages() {
        let page = IO_ALIGNMENT_BYTES;
        let max = DIRECT_READ_BYTES as u64;
        let points = [0, 1, 100, page - 1, page, page + 7, max - 1, max, max + 3, 3 * max + 4095];
        for &start in &points {
            for &length in &[1, 2, 511, page - 1, page, page + 1, max - 5, max, max + 1, 5 * max] {
                let end = start + length;
                let chunks: Vec<DirectChunk> = DirectChunks::new(start, end).collect();
                let mut sent_to = start;
                let mut read_to = start / page * page;
                for chunk in &chunks {
                    assert_eq!(chunk.read_from % page, 0, "{start}+{length}: {chunk:?}");
                    assert_eq!(chunk.read_len as u64 % page, 0, "{start}+{length}: {chunk:?}");
                    assert!(chunk.read_len as u64 <= max, "{start}+{length}: {chunk:?}");
                    assert_eq!(chunk.read_from, read_to, "{start}+{length}: reads contiguous");
                    assert_eq!(chunk.read_from + chunk.skip as u64, sent_to);
                    assert!(chunk.send_len > 0 && chunk.skip + chunk.send_len <= chunk.read_len);
                    read_to = chunk.read_from + chunk.read_len as u64;
                    sent_to += chunk.send_len as u64;
                }
                assert_eq!(sent_to, end, "{start}+{length}: the whole slice is sent");
                assert_eq!(read_to, end.div_ceil(page) * page, "{start}+{length}: no page past it");
            }
        }
        assert_eq!(DirectChunks::new(10, 10).count(), 0);
    }
}
