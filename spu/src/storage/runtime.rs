//! The only module that names glommio. Everything else in `storage` sees plain types:
//! [`DirectFile`] (an O_DIRECT file written through io_uring), [`WriteBuffer`] (an aligned
//! buffer such a file accepts) and [`run_local`] (start a single-threaded executor).
//!
//! Ownership: a `DirectFile` belongs to the executor that opened it and must not leave it.
//! Failure modes: every call returns `io::Error`; callers attach the path.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, OwnedDmaFile};
use glommio::{GlommioError, LocalExecutorBuilder, Placement};

use crate::storage::error::{StorageError, StorageResult};

/// Unwraps glommio's error into the OS error it carries, keeping the errno (ENOSPC must stay
/// recognisable).
fn os_error<T>(error: GlommioError<T>) -> io::Error {
    match error {
        GlommioError::IoError(source) | GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// Locked memory glommio insists on before it starts a reactor.
pub const LOCKED_MEMORY_BYTES_MIN: u64 = 512 * 1024;

/// Length of the zero writes that share one buffer per executor
/// ([`DirectFile::write_zeros_at`]).
pub const SHARED_ZEROS_BYTES: usize = 1 << 20;

thread_local! {
    /// The zero buffer of the executor running on this thread, with that executor's id.
    static SHARED_ZEROS: RefCell<Option<(usize, Rc<DmaBuffer>)>> = const { RefCell::new(None) };
}

/// An aligned buffer for one direct write. Its length is fixed at allocation and may only be
/// shortened ([`WriteBuffer::truncate`]), which is how a partly filled buffer is written.
pub struct WriteBuffer {
    buffer: DmaBuffer,
    /// Bytes allocated (the length before any truncation).
    capacity: usize,
}

impl WriteBuffer {
    /// The whole buffer.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buffer.as_bytes_mut()
    }

    /// The whole buffer, read-only.
    pub fn as_slice(&self) -> &[u8] {
        self.buffer.as_bytes()
    }

    /// Current length.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Shortens the buffer to `len` bytes (must be aligned for the write to succeed).
    pub fn truncate(&mut self, len: usize) {
        self.buffer.trim_to_size(len.min(self.buffer.len()));
    }

    /// Bytes allocated for it (what it costs in memory, whatever its current length).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes it shareable: written with [`DirectFile::write_shared_at`] and still readable
    /// afterwards. Read-only from here on.
    pub fn into_shared(self) -> SharedBuffer {
        SharedBuffer { buffer: Rc::new(self.buffer), capacity: self.capacity }
    }
}

/// A [`WriteBuffer`] after [`WriteBuffer::into_shared`]: read-only, cheap to clone (a count).
/// Like every buffer of the executor, it stays on the executor that allocated it.
#[derive(Clone)]
pub struct SharedBuffer {
    buffer: Rc<DmaBuffer>,
    capacity: usize,
}

impl SharedBuffer {
    /// The buffer's bytes (its length after truncation).
    pub fn as_slice(&self) -> &[u8] {
        self.buffer.as_bytes()
    }

    /// Current length.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Bytes allocated for it.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A file opened with O_DIRECT whose writes go through the executor's io_uring.
///
/// Dropping it closes the descriptor synchronously (glommio's own drop only queues an
/// asynchronous close on the reactor, which is lost when the executor stops first: the
/// descriptor then leaks and keeps the volume busy).
pub struct DirectFile {
    file: Option<DmaFile>,
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // OwnedDmaFile closes with close(2) when dropped; in-flight io_uring operations
            // hold their own reference to the file, so this is safe at any time.
            drop(OwnedDmaFile::from(file));
        }
    }
}

impl DirectFile {
    /// Opens (creating when absent) `path` for direct reads and writes.
    pub async fn open_or_create(path: &Path) -> io::Result<DirectFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(os_error)?;
        Ok(DirectFile { file: Some(file) })
    }

    fn dma(&self) -> &DmaFile {
        self.file.as_ref().expect("a DirectFile holds its file until dropped or closed")
    }

    /// Allocates an aligned buffer of `len` bytes (from the executor's registered pool when it
    /// has room, so buffers are reused instead of touched fresh).
    pub fn alloc_buffer(&self, len: usize) -> WriteBuffer {
        WriteBuffer { buffer: self.dma().alloc_dma_buffer(len), capacity: len }
    }

    /// Writes the whole buffer at `position` (both aligned). Returns the bytes written.
    pub async fn write_at(&self, buffer: WriteBuffer, position: u64) -> io::Result<usize> {
        self.dma().write_at(buffer.buffer, position).await.map_err(os_error)
    }

    /// Writes the whole shared buffer at `position` (both aligned); the buffer stays readable
    /// through its other clones while and after it is written. Returns the bytes written.
    pub async fn write_shared_at(&self, buffer: &SharedBuffer, position: u64) -> io::Result<usize> {
        self.dma().write_rc_at(Rc::clone(&buffer.buffer), position).await.map_err(os_error)
    }

    /// Writes `len` zero bytes at `position` (both aligned). Returns the bytes written.
    ///
    /// Writes of [`SHARED_ZEROS_BYTES`] all use one buffer per executor, kept for the thread's
    /// life, instead of a fresh buffer each: every replica of a core zero-fills ahead, and a
    /// buffer each would make the core's memory grow with its replicas. Other lengths get a
    /// buffer of their own.
    pub async fn write_zeros_at(&self, position: u64, len: usize) -> io::Result<usize> {
        if len != SHARED_ZEROS_BYTES {
            let mut buffer = self.alloc_buffer(len);
            buffer.as_mut_slice().fill(0);
            return self.write_at(buffer, position).await;
        }
        let executor = glommio::executor().id();
        let shared = SHARED_ZEROS.with(|cell| {
            let mut cached = cell.borrow_mut();
            match cached.as_ref() {
                // A buffer of another (finished) executor may name that executor's registered
                // memory: never reused.
                Some((owner, buffer)) if *owner == executor => Rc::clone(buffer),
                _ => {
                    let mut buffer = self.dma().alloc_dma_buffer(len);
                    buffer.as_bytes_mut().fill(0);
                    let buffer = Rc::new(buffer);
                    *cached = Some((executor, Rc::clone(&buffer)));
                    buffer
                }
            }
        });
        self.dma().write_rc_at(shared, position).await.map_err(os_error)
    }

    /// fdatasync(2).
    pub async fn sync_data(&self) -> io::Result<()> {
        self.dma().fdatasync().await.map_err(os_error)
    }

    /// fallocate(2) to `len` bytes, setting the file size to at least `len`: later writes find
    /// their blocks allocated and never extend the file (on ext4 a size-extending direct write
    /// takes the slow, journalled path and makes every fdatasync commit the inode).
    pub async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.dma().pre_allocate(len, false).await.map_err(os_error)
    }

    /// ftruncate(2).
    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        self.dma().truncate(len).await.map_err(os_error)
    }

    /// Closes the file, reporting a close error.
    pub async fn close(mut self) -> io::Result<()> {
        match self.file.take() {
            Some(file) => file.close().await.map_err(os_error),
            None => Ok(()),
        }
    }
}

impl AsRawFd for DirectFile {
    fn as_raw_fd(&self) -> RawFd {
        self.dma().as_raw_fd()
    }
}

/// The soft locked-memory limit of this process, in bytes.
pub fn locked_memory_limit_bytes() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        return 0;
    }
    limit.rlim_cur
}

/// Runs `future_factory()` to completion on a new single-threaded executor on the calling
/// thread, with `io_memory_bytes` of registered I/O buffer memory, and returns its output (a
/// panic inside propagates). Fails with [`StorageError::Runtime`] when locked memory is too low
/// for glommio or the executor cannot start.
pub fn run_local<G, F, T>(name: &str, io_memory_bytes: usize, future_factory: G) -> StorageResult<T>
where
    G: FnOnce() -> F,
    F: Future<Output = T>,
{
    let limit = locked_memory_limit_bytes();
    if limit < LOCKED_MEMORY_BYTES_MIN {
        return Err(StorageError::Runtime(format!(
            "locked-memory limit is {limit} bytes, glommio needs at least {LOCKED_MEMORY_BYTES_MIN}"
        )));
    }
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(io_memory_bytes)
        .make()
        .map_err(|error| StorageError::Runtime(error.to_string()))?;
    Ok(executor.run(async move {
        if let Err(error) = probe_direct_io(&std::env::temp_dir()).await {
            tracing::warn!(%error, "direct I/O probe failed; O_DIRECT reads may fail");
        }
        future_factory().await
    }))
}

/// Makes glommio decide from a read of real data whether the device holding `directory`
/// completes polled I/O, before any segment file is opened on this thread.
///
/// glommio 0.9 probes a device the first time a DMA file on it is opened, with a polled read
/// at offset 0 of that file, and caches the answer per thread. On an empty file (a segment
/// just created) that read ends at once, so the probe concludes the device polls (on this
/// virtio disk it does not): writes still complete (the block layer falls back to
/// interrupts), but every O_DIRECT read then fails with `EOPNOTSUPP`. A page of data gives
/// the probe a real read. Call it at the start of every executor that opens segments.
pub async fn probe_direct_io(directory: &Path) -> io::Result<()> {
    thread_local! {
        // glommio's answer is cached per thread, across executors run on it.
        static PROBED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if PROBED.get() {
        return Ok(());
    }
    std::fs::create_dir_all(directory)?;
    // One name per probe: executors probing the same directory at once must not remove each
    // other's file (glommio's open panics if the path vanishes while it opens).
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let probe = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = directory.join(format!(".direct-io-probe-{}-{probe}", std::process::id()));
    std::fs::write(&path, [0u8; 4096])?;
    let opened = DmaFile::open(&path).await;
    let removed = std::fs::remove_file(&path);
    opened.map_err(os_error)?.close().await.map_err(os_error)?;
    removed?;
    PROBED.set(true);
    Ok(())
}

/// Runs a blocking function (file system calls that fsync: checkpoints) on the executor's
/// blocking thread and waits for it, so the core's tasks keep running meanwhile.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(work).await
}

/// Yields to other tasks of the executor once.
pub async fn yield_now() {
    glommio::executor().yield_now().await
}

/// Runs `future` as a task of its own on the current executor, in the current task queue,
/// without waiting for it (it ends on its own, or with the executor).
pub fn spawn_detached(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Runs `future` as a task of this executor; awaiting the handle gives its output, dropping
/// it cancels the task.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> glommio::Task<T> {
    glommio::spawn_local(future)
}
