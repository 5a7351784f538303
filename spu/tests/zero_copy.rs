//! Zero-copy and copying fetch responses over real sockets, from real replica logs.
//!
//! Each case writes batches through `ReplicaLog`, reads them back as `FileSlice`s, builds a
//! fetch response with `FetchResponseWriter`, sends it from a glommio executor with
//! `send_plan`, and has a plain std `TcpStream` on another thread read until EOF. Both modes
//! must put the same bytes on the wire, equal to the buffer parts with the file bytes in
//! between, and the response must decode.

use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::JoinHandle;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpListener;
use sluice_proto::api::fetch::{FetchPartitionHeader, FetchResponse};
use sluice_proto::api::splice::{FetchResponseWriter, WirePart, WirePlan};
use sluice_proto::api::{ApiKey, ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::FrameHeader;
use sluice_proto::ids::{CorrelationId, LeaderEpoch, Offset, PartitionId, TimestampMs};
use sluice_proto::object::TopicName;
use sluice_spu::server::zero_copy::{send_plan, SendError, SendMode, SendStats};
use sluice_spu::storage::test_support::{make_batch, run};
use sluice_spu::storage::{FileSlice, LogConfig, ReplicaLog, SegmentFileCache};
use socket2::{Domain, Protocol, Socket, Type};

/// Bytes of the frame prefix before the body (length, key, version, correlation id).
const FRAME_PREFIX_BYTES: usize = 12;

/// A log configuration whose reads come from the segment files: no tail cache, so that the
/// send modes' file paths are what these tests exercise.
fn config(segment_bytes_max: u64) -> LogConfig {
    LogConfig {
        segment_bytes_max,
        free_bytes_min: 0,
        free_space_ratio_min: 0.0,
        zero_fill_bytes: 0,
        tail_cache_bytes: 0,
        ..LogConfig::default()
    }
}

/// A log in `directory` holding one batch per `(records, value_bytes)`, all written.
async fn make_log(
    directory: &Path,
    batches: &[(usize, usize)],
    segment_bytes_max: u64,
) -> ReplicaLog {
    make_log_with(directory, batches, config(segment_bytes_max)).await
}

async fn make_log_with(
    directory: &Path,
    batches: &[(usize, usize)],
    config: LogConfig,
) -> ReplicaLog {
    let log =
        ReplicaLog::open(directory, config, SegmentFileCache::default()).await.expect("open log");
    for (index, (records, value_bytes)) in batches.iter().enumerate() {
        let mut batch = make_batch(*records, *value_bytes, TimestampMs(1_000), index as u8);
        log.append(&mut batch, LeaderEpoch(0)).await.expect("append");
        if index % 8 == 7 {
            log.flush().await.expect("flush");
        }
    }
    log.flush().await.expect("flush");
    log
}

fn read_all(log: &ReplicaLog) -> Vec<FileSlice> {
    log.read(Offset(0), u64::MAX, log.log_end_offset()).expect("read").slices
}

/// A fetch response over `partitions` (topic, slices): returns the buffer and the plan.
fn build(partitions: &[(&str, &[FileSlice])]) -> (Vec<u8>, WirePlan) {
    let frame = FrameHeader {
        api_key: ApiKey::Fetch,
        api_version: ApiVersion(0),
        correlation_id: CorrelationId(7),
    };
    let mut buffer = Vec::new();
    let mut writer = FetchResponseWriter::begin(&mut buffer, &frame);
    let mut topic_now = None;
    for (index, (topic, slices)) in partitions.iter().enumerate() {
        if topic_now != Some(*topic) {
            writer.topic(&TopicName::new(*topic).expect("topic name")).expect("topic");
            topic_now = Some(*topic);
        }
        let header = FetchPartitionHeader {
            partition: PartitionId(index as u32),
            error_code: ErrorCode::None,
            high_watermark: Offset(10),
            last_stable_offset: Offset(10),
            log_end_offset: Offset(10),
            log_start_offset: Offset(0),
        };
        let bytes: u64 = slices.iter().map(FileSlice::length).sum();
        writer.partition_to_splice(&header, bytes as u32);
    }
    let plan = writer.finish().expect("finish");
    (buffer, plan)
}

/// What the wire must carry: buffer parts with the files' bytes in between.
fn expected_wire(buffer: &[u8], plan: &WirePlan, spliced: &[&[FileSlice]]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut wire = Vec::new();
    for part in &plan.parts {
        match part {
            WirePart::Buffer(range) => wire.extend_from_slice(&buffer[range.clone()]),
            WirePart::Splice { index, .. } => {
                for slice in spliced[*index] {
                    let at = wire.len();
                    wire.resize(at + slice.length() as usize, 0);
                    slice.file().read_exact_at(&mut wire[at..], slice.position()).expect("pread");
                }
            }
        }
    }
    wire
}

/// A std reader on its own thread: connects, optionally shrinks its receive buffer, reads
/// `chunk_bytes` at a time until EOF (or until `stop_after` bytes, then closes).
fn spawn_reader(
    address: std::net::SocketAddr,
    receive_buffer_bytes: Option<usize>,
    chunk_bytes: usize,
    stop_after: Option<usize>,
) -> JoinHandle<std::io::Result<Vec<u8>>> {
    std::thread::spawn(move || {
        // The receive buffer is set before connecting: shrinking it later (below the window
        // already advertised) makes the kernel drop segments and the sender wait for RTOs.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        if let Some(bytes) = receive_buffer_bytes {
            socket.set_recv_buffer_size(bytes)?;
        }
        socket.connect(&address.into())?;
        let mut stream: TcpStream = socket.into();
        let mut received = Vec::new();
        let mut chunk = vec![0u8; chunk_bytes];
        loop {
            let count = stream.read(&mut chunk)?;
            if count == 0 {
                return Ok(received);
            }
            received.extend_from_slice(&chunk[..count]);
            if stop_after.is_some_and(|limit| received.len() >= limit) {
                stream.shutdown(Shutdown::Both)?;
                return Ok(received);
            }
        }
    })
}

fn set_buffer(socket: &impl AsRawFd, option: libc::c_int, bytes: libc::c_int) {
    // SAFETY: `bytes` outlives the call and its size is passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "setsockopt");
}

struct Served {
    result: Result<SendStats, SendError>,
    received: std::io::Result<Vec<u8>>,
}

/// Sends the response once to a fresh reader and returns what both sides saw.
async fn serve_once(
    buffer: &[u8],
    plan: &WirePlan,
    spliced: &[&[FileSlice]],
    mode: SendMode,
    reader: impl FnOnce(std::net::SocketAddr) -> JoinHandle<std::io::Result<Vec<u8>>>,
    send_buffer_bytes: Option<i32>,
) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let handle = reader(listener.local_addr().expect("address"));
    let mut stream = listener.accept().await.expect("accept");
    if let Some(bytes) = send_buffer_bytes {
        set_buffer(&stream, libc::SO_SNDBUF, bytes);
    }
    let result = send_plan(&mut stream, buffer, plan, spliced, mode).await;
    let _ = stream.close().await;
    drop(stream);
    let received = handle.join().expect("reader thread");
    Served { result, received }
}

fn fast_reader(address: std::net::SocketAddr) -> JoinHandle<std::io::Result<Vec<u8>>> {
    spawn_reader(address, None, 1 << 20, None)
}

/// Both modes deliver exactly the expected bytes; returns the zero-copy stats.
async fn check_both_modes(partitions: &[(&str, &[FileSlice])]) -> SendStats {
    let (buffer, plan) = build(partitions);
    let spliced: Vec<&[FileSlice]> = partitions.iter().map(|(_, slices)| *slices).collect();
    let expected = expected_wire(&buffer, &plan, &spliced);
    assert_eq!(expected.len(), plan.frame_len);
    let mut zero_copy_stats = SendStats::default();
    for mode in [SendMode::ZeroCopy, SendMode::Copy, SendMode::Direct] {
        let served = serve_once(&buffer, &plan, &spliced, mode, fast_reader, None).await;
        let stats = served.result.unwrap_or_else(|error| panic!("{mode:?}: {error}"));
        let received = served.received.expect("reader");
        assert_eq!(received.len(), expected.len(), "{mode:?}: length");
        assert!(received == expected, "{mode:?}: bytes differ");
        assert_eq!(stats.bytes_sent, expected.len() as u64);
        let file_bytes: u64 = spliced.iter().flat_map(|s| s.iter()).map(FileSlice::length).sum();
        let moved = stats.file_bytes_zero_copy + stats.file_bytes_copied + stats.file_bytes_direct;
        assert_eq!(moved, file_bytes);
        match mode {
            SendMode::ZeroCopy => {
                // The only bytes copied are the one byte per wait for writability.
                assert_eq!(stats.file_bytes_copied, stats.writable_waits, "{stats:?}");
                zero_copy_stats = stats;
            }
            SendMode::Copy => assert_eq!(stats.file_bytes_zero_copy, 0),
            SendMode::Direct => {
                assert_eq!(stats.file_bytes_zero_copy, 0);
                assert_eq!(stats.file_bytes_direct, file_bytes);
            }
        }
        let response = FetchResponse::decode(ApiVersion(0), &received[FRAME_PREFIX_BYTES..])
            .expect("response decodes");
        let partition_count: usize = response.topics.iter().map(|t| t.partitions.len()).sum();
        assert_eq!(partition_count, partitions.len());
    }
    zero_copy_stats
}

#[test]
fn sizes_from_empty_to_multi_mebibyte_match_the_copying_path() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        // 0 records, one smallest batch, a partial page, and several MiB.
        let empty = make_log(&dir.path().join("empty-0"), &[], 1 << 30).await;
        let tiny = make_log(&dir.path().join("tiny-0"), &[(1, 1)], 1 << 30).await;
        let partial = make_log(&dir.path().join("partial-0"), &[(3, 900)], 1 << 30).await;
        let large_batches: Vec<(usize, usize)> = (0..24).map(|i| (4, 60_000 + i * 777)).collect();
        let large = make_log(&dir.path().join("large-0"), &large_batches, 1 << 30).await;
        for (name, log) in
            [("empty", &empty), ("tiny", &tiny), ("partial", &partial), ("large", &large)]
        {
            let slices = read_all(log);
            let stats = check_both_modes(&[("t", &slices)]).await;
            let bytes: u64 = slices.iter().map(FileSlice::length).sum();
            assert_eq!(stats.file_bytes_zero_copy + stats.file_bytes_copied, bytes, "{name}");
            if name == "large" {
                assert!(bytes > 5 << 20, "large case is {bytes} bytes");
                assert!(stats.file_bytes_zero_copy > 0);
            }
        }
    });
}

#[test]
fn the_newest_writes_go_out_from_memory_with_the_bytes_of_the_file() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        // Several rounds (a flush every 8 batches), partial pages between them, and a segment
        // small enough to roll once: the first segment's bytes come from the file, the
        // active one's from the rounds kept in memory.
        let batches: Vec<(usize, usize)> = (0..40).map(|i| (3, 9_000 + i * 97)).collect();
        let cached = LogConfig { tail_cache_bytes: 64 << 20, ..config(900 << 10) };
        let log = make_log_with(&dir.path().join("tail-0"), &batches, cached).await;
        let slices = read_all(&log);
        assert!(slices.len() >= 2, "expected a sealed and the active segment");
        let from_memory: u64 =
            slices.iter().filter(|slice| !slice.memory().is_empty()).map(FileSlice::length).sum();
        let active = slices.last().expect("active segment slice");
        assert!(!active.memory().is_empty(), "the active segment's newest rounds are kept");
        assert!(slices[0].memory().is_empty(), "a sealed segment is read from its file");
        let (buffer, plan) = build(&[("t", &slices)]);
        let spliced: Vec<&[FileSlice]> = vec![&slices];
        let expected = expected_wire(&buffer, &plan, &spliced);
        for mode in [SendMode::ZeroCopy, SendMode::Copy, SendMode::Direct] {
            let served = serve_once(&buffer, &plan, &spliced, mode, fast_reader, None).await;
            let stats = served.result.unwrap_or_else(|error| panic!("{mode:?}: {error}"));
            let received = served.received.expect("reader");
            assert!(received == expected, "{mode:?}: bytes differ from the file's");
            assert_eq!(stats.file_bytes_memory, from_memory, "{mode:?}");
        }
        // The copying read (forwarded fetches) takes the same bytes and checks their CRCs.
        let mut copied = Vec::new();
        let read = log.read_into(Offset(0), u64::MAX, log.log_end_offset(), &mut copied);
        assert_eq!(read.expect("copying read").batches, 40);
        let mut from_files = Vec::new();
        for slice in &slices {
            use std::os::unix::fs::FileExt;
            let at = from_files.len();
            from_files.resize(at + slice.length() as usize, 0);
            slice.file().read_exact_at(&mut from_files[at..], slice.position()).expect("pread");
        }
        assert!(copied == from_files, "the copying read differs from the files");
    });
}

#[test]
fn several_slices_topics_and_partitions_match_the_copying_path() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        // Small segments: one read returns slices of several segment files.
        let batches: Vec<(usize, usize)> = (0..40).map(|i| (2, 5_000 + i * 131)).collect();
        let rolled = make_log(&dir.path().join("rolled-0"), &batches, 64 << 10).await;
        let other = make_log(&dir.path().join("other-0"), &[(5, 2_000), (1, 10)], 1 << 30).await;
        let rolled_slices = read_all(&rolled);
        assert!(rolled_slices.len() >= 3, "expected slices of several segments");
        let other_slices = read_all(&other);
        let none: Vec<FileSlice> = Vec::new();
        check_both_modes(&[
            ("alpha", &rolled_slices),
            ("alpha", &none),
            ("alpha", &other_slices),
            ("beta", &other_slices[1..]),
            ("gamma", &rolled_slices[1..2]),
        ])
        .await;
    });
}

#[test]
fn slow_reader_with_small_buffers_gets_every_byte() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let batches: Vec<(usize, usize)> = (0..16).map(|i| (8, 50_000 + i)).collect();
        let log = make_log(&dir.path().join("slow-0"), &batches, 1 << 30).await;
        let slices = read_all(&log);
        let (buffer, plan) = build(&[("t", &slices)]);
        let spliced: Vec<&[FileSlice]> = vec![&slices];
        let expected = expected_wire(&buffer, &plan, &spliced);
        for mode in [SendMode::ZeroCopy, SendMode::Copy, SendMode::Direct] {
            let slow = |address| spawn_reader(address, Some(4096), 1024, None);
            let served = serve_once(&buffer, &plan, &spliced, mode, slow, Some(4096)).await;
            let stats = served.result.unwrap_or_else(|error| panic!("{mode:?}: {error}"));
            let received = served.received.expect("reader");
            assert!(received == expected, "{mode:?}: bytes differ");
            if mode == SendMode::ZeroCopy {
                // ~6 MiB through ~8 KiB of socket buffers read 1 KiB at a time: sendfile
                // meets a full buffer and the send must have waited for writability.
                assert!(stats.writable_waits > 0, "the wait path was not exercised: {stats:?}");
            }
        }
    });
}

#[test]
fn peer_closing_mid_response_is_an_error_not_a_hang() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let batches: Vec<(usize, usize)> = (0..16).map(|i| (8, 60_000 + i)).collect();
        let log = make_log(&dir.path().join("closing-0"), &batches, 1 << 30).await;
        let slices = read_all(&log);
        let (buffer, plan) = build(&[("t", &slices)]);
        let spliced: Vec<&[FileSlice]> = vec![&slices];
        for mode in [SendMode::ZeroCopy, SendMode::Copy, SendMode::Direct] {
            let quitter = |address| spawn_reader(address, Some(4096), 4096, Some(64 << 10));
            let served = serve_once(&buffer, &plan, &spliced, mode, quitter, Some(4096)).await;
            match served.result {
                Err(SendError::Socket { sent, source }) => {
                    assert!(sent < plan.frame_len as u64, "{mode:?}: {sent} {source}");
                }
                other => panic!("{mode:?}: expected a socket error, got {other:?}"),
            }
            assert!(served.received.expect("reader").len() >= 64 << 10);
        }
    });
}

#[test]
fn a_file_shorter_than_its_slice_is_an_error_not_a_hang() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let directory = dir.path().join("cut-0");
        let batches: Vec<(usize, usize)> = (0..8).map(|i| (4, 30_000 + i)).collect();
        let log = make_log(&directory, &batches, 1 << 30).await;
        let slices = read_all(&log);
        let (buffer, plan) = build(&[("t", &slices)]);
        let spliced: Vec<&[FileSlice]> = vec![&slices];
        let slice_end = slices[0].position() + slices[0].length();
        // Cut the segment file under the held slice (as a crash or a bug might).
        let segment = directory.join(format!("{:020}.log", 0));
        let file = std::fs::OpenOptions::new().write(true).open(&segment).expect("segment");
        file.set_len(slice_end / 2).expect("truncate");
        for mode in [SendMode::ZeroCopy, SendMode::Copy, SendMode::Direct] {
            let served = serve_once(&buffer, &plan, &spliced, mode, fast_reader, None).await;
            match served.result {
                Err(SendError::File { source, .. }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof, "{mode:?}")
                }
                other => panic!("{mode:?}: expected a file error, got {other:?}"),
            }
            let received = served.received.expect("reader");
            assert!(received.len() < plan.frame_len, "{mode:?}: a cut frame");
        }
    });
}

#[test]
fn a_plan_that_does_not_match_its_slices_sends_nothing() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = make_log(&dir.path().join("plan-0"), &[(2, 100), (2, 100)], 1 << 30).await;
        let slices = read_all(&log);
        let (buffer, plan) = build(&[("t", &slices)]);
        let wrong: Vec<&[FileSlice]> = vec![&[]];
        let served =
            serve_once(&buffer, &plan, &wrong, SendMode::ZeroCopy, fast_reader, None).await;
        match served.result {
            Err(error @ SendError::InvalidPlan(_)) => assert_eq!(error.bytes_sent(), 0),
            other => panic!("expected an invalid plan, got {other:?}"),
        }
        assert!(served.received.expect("reader").is_empty());
        let missing: Vec<&[FileSlice]> = Vec::new();
        let served = serve_once(&buffer, &plan, &missing, SendMode::Copy, fast_reader, None).await;
        assert!(matches!(served.result, Err(SendError::InvalidPlan(_))));
    });
}

#[test]
fn a_reader_that_stops_reading_is_bounded_by_the_write_timeout() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let batches: Vec<(usize, usize)> = (0..16).map(|i| (8, 50_000 + i)).collect();
        let log = make_log(&dir.path().join("stuck-0"), &batches, 1 << 30).await;
        let slices = read_all(&log);
        let (buffer, plan) = build(&[("t", &slices)]);
        let spliced: Vec<&[FileSlice]> = vec![&slices];
        for mode in [SendMode::ZeroCopy, SendMode::Copy, SendMode::Direct] {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let address = listener.local_addr().expect("address");
            let (release, released) = std::sync::mpsc::channel::<()>();
            // Connects, reads nothing, and keeps the connection open until released.
            let stuck = std::thread::spawn(move || {
                let stream = TcpStream::connect(address).expect("connect");
                let _ = released.recv();
                drop(stream);
            });
            let mut stream = listener.accept().await.expect("accept");
            set_buffer(&stream, libc::SO_SNDBUF, 4096);
            stream.set_write_timeout(Some(std::time::Duration::from_millis(200))).expect("timeout");
            let result = send_plan(&mut stream, &buffer, &plan, &spliced, mode).await;
            release.send(()).expect("release the reader");
            stuck.join().expect("reader thread");
            match result {
                Err(SendError::Socket { source, sent }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{mode:?}: {source}");
                    assert!(sent < plan.frame_len as u64);
                }
                other => panic!("{mode:?}: expected a timeout, got {other:?}"),
            }
        }
    });
}
