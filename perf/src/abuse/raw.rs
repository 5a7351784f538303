//! Raw TCP connections that do what no Sluice client does: stay silent, send garbage, stop
//! half-way through a frame, or fetch and never read. Plus the server figures read from /proc.
//!
//! Nothing here uses the SDK: the point is to send what the SDK never would.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use sluice_proto::api::fetch::{FetchPartition, FetchRequest, FetchTopic, Isolation};
use sluice_proto::api::{ApiKey, ApiVersion};
use sluice_proto::frame::{encode_request, FRAME_HEADER_LEN};
use sluice_proto::ids::{CorrelationId, Offset, PartitionId};
use sluice_proto::object::TopicName;

use crate::error::PerfError;

/// Longest wait for one TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two sweeps over connections waiting to be closed by the server.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// Resolves `host:port` to one socket address.
pub fn resolve(address: &str) -> Result<SocketAddr, PerfError> {
    address
        .to_socket_addrs()
        .map_err(|error| PerfError::io(format!("resolve {address}"), error))?
        .next()
        .ok_or_else(|| PerfError::InvalidParameters(format!("{address} resolves to nothing")))
}

/// Opens `count` connections to `address`; returns those that connected and the first error
/// (the count of the others is `count - opened`).
pub fn open(address: SocketAddr, count: usize) -> (Vec<TcpStream>, Option<String>) {
    let mut streams = Vec::with_capacity(count);
    let mut first_error = None;
    for _ in 0..count {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(stream) => streams.push(stream),
            Err(error) => {
                first_error.get_or_insert_with(|| error.to_string());
                // EMFILE here is our own limit: more attempts cannot succeed.
                if error.raw_os_error() == Some(libc::EMFILE) {
                    break;
                }
            }
        }
    }
    (streams, first_error)
}

/// Whether the server closed `stream` (what it sent is read and dropped).
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return false,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Connections the server has not closed.
pub fn count_open(streams: &mut [TcpStream]) -> usize {
    streams.iter_mut().map(closed_by_server).filter(|&closed| !closed).count()
}

/// Waits until the server has closed every connection or `timeout`; returns how many it closed
/// and when the last of them was seen closed (from `started`, when their payload was sent).
/// `on_sweep` runs after every sweep (to sample the servers meanwhile).
pub fn wait_closed(
    streams: &mut [TcpStream],
    started: Instant,
    timeout: Duration,
    mut on_sweep: impl FnMut(),
) -> (usize, Option<Duration>) {
    let mut closed = vec![false; streams.len()];
    let mut last = None;
    loop {
        for (stream, closed) in streams.iter_mut().zip(closed.iter_mut()) {
            if !*closed && closed_by_server(stream) {
                *closed = true;
                last = Some(started.elapsed());
            }
        }
        on_sweep();
        let count = closed.iter().filter(|&&closed| closed).count();
        if count == streams.len() || started.elapsed() >= timeout {
            return (count, last);
        }
        std::thread::sleep(SWEEP_INTERVAL);
    }
}

/// What a garbage connection sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Garbage {
    /// Random bytes (seeded), then silence.
    Random,
    /// A frame header announcing a large body, part of the body, then silence.
    HalfFrame,
    /// A length prefix far above any frame limit, with a header.
    Oversized,
}

impl std::fmt::Display for Garbage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Garbage::Random => "random",
            Garbage::HalfFrame => "half-frame",
            Garbage::Oversized => "oversized",
        })
    }
}

/// Bytes of body sent after a half frame's header.
const HALF_FRAME_BODY_BYTES: usize = 100;

/// The bytes `kind` sends; `claimed_bytes` is the length a half frame announces, `seed` picks
/// the random bytes.
pub fn garbage_bytes(kind: Garbage, claimed_bytes: u32, random_bytes: usize, seed: u64) -> Vec<u8> {
    match kind {
        Garbage::Random => {
            let mut state = seed | 1;
            (0..random_bytes)
                .map(|_| {
                    // xorshift64: reproducible, no dependency.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect()
        }
        Garbage::HalfFrame => {
            let mut out = frame_header(claimed_bytes, ApiKey::Produce);
            out.extend((0..HALF_FRAME_BODY_BYTES).map(|index| index as u8));
            out
        }
        Garbage::Oversized => frame_header(u32::MAX - 16, ApiKey::Produce),
    }
}

/// A frame header (length prefix, API key, version 0, correlation id 1) announcing `length`
/// bytes after the prefix.
fn frame_header(length: u32, api_key: ApiKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&api_key.number().to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out
}

/// Writes `bytes` to every stream; a stream the server already closed counts as written.
pub fn send_all(streams: &mut [TcpStream], bytes: &[u8]) {
    for stream in streams {
        let _ = stream.write_all(bytes);
    }
}

/// `fetches` pipelined fetch requests for `topic`/`partition` from offset 0, of `max_bytes`
/// each, as one byte string.
pub fn fetch_requests(
    topic: &str,
    partition: u32,
    fetches: usize,
    max_bytes: u32,
) -> Result<Vec<u8>, PerfError> {
    let name = TopicName::new(topic.to_string())
        .map_err(|error| PerfError::InvalidParameters(format!("topic {topic:?}: {error}")))?;
    let request = FetchRequest {
        isolation: Isolation::ReadUncommitted,
        max_wait_ms: 100,
        min_bytes: 1,
        max_bytes,
        topics: vec![FetchTopic {
            name,
            partitions: vec![FetchPartition {
                partition: PartitionId(partition),
                fetch_offset: Offset(0),
                partition_max_bytes: max_bytes,
                current_leader_epoch: None,
            }],
        }],
    };
    let mut out = Vec::new();
    for index in 0..fetches {
        let correlation_id = CorrelationId(i32::try_from(index).unwrap_or(i32::MAX));
        encode_request(&mut out, ApiVersion(0), correlation_id, &request)
            .map_err(|error| PerfError::InvalidParameters(format!("fetch encoding: {error}")))?;
    }
    Ok(out)
}

/// Resident memory of `pid` (VmRSS in /proc/PID/status), in bytes; `None` when it is gone.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Threads of `pid` (Threads in /proc/PID/status).
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open descriptors of `pid` (entries of /proc/PID/fd).
pub fn open_descriptors(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Threads of `pid` whose name starts with `prefix`, and the voluntary context switches (sleeps
/// ended by a wake-up) they made so far, summed.
pub fn thread_wakeups(pid: u32, prefix: &str) -> Option<(u64, u64)> {
    let (mut threads, mut switches) = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let count = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|value| value.trim().parse::<u64>().ok());
        if let Some(count) = count {
            threads += 1;
            switches += count;
        }
    }
    Some((threads, switches))
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Raises this process's soft open-files limit to the hard one; returns the limit now.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit not above the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::frame::{decode_header, FrameError, FRAME_BYTES_MAX_DEFAULT};

    #[test]
    fn a_half_frame_announces_more_than_it_sends() {
        let bytes = garbage_bytes(Garbage::HalfFrame, 1 << 20, 0, 1);
        assert_eq!(bytes.len(), FRAME_HEADER_LEN + HALF_FRAME_BODY_BYTES);
        assert!(decode_header(&bytes, FRAME_BYTES_MAX_DEFAULT).unwrap().is_none());
    }

    #[test]
    fn an_oversized_prefix_is_refused_by_the_decoder() {
        let bytes = garbage_bytes(Garbage::Oversized, 0, 0, 1);
        let error = decode_header(&bytes, FRAME_BYTES_MAX_DEFAULT).unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { .. }), "{error:?}");
    }

    #[test]
    fn random_bytes_are_reproducible() {
        let first = garbage_bytes(Garbage::Random, 0, 64, 7);
        assert_eq!(first, garbage_bytes(Garbage::Random, 0, 64, 7));
        assert_ne!(first, garbage_bytes(Garbage::Random, 0, 64, 8));
    }

    #[test]
    fn pipelined_fetches_are_whole_frames() {
        let bytes = fetch_requests("t", 0, 3, 1 << 20).unwrap();
        let first = decode_header(&bytes, FRAME_BYTES_MAX_DEFAULT).unwrap().unwrap();
        assert_eq!(bytes.len(), 3 * first.frame_len());
    }
}
