//! [`RecentWrites`]: the newest written bytes of the active segment, kept in the staging
//! buffers they were written from, so that reads of the log's tail (a consumer keeping up)
//! are served from memory instead of reading back from the disk what was just written.
//!
//! Why: segments are written with O_DIRECT, so the page cache never holds the tail. Without
//! this, every fetch of a tailing consumer read its records from the device (a direct read,
//! ~0.5-3 ms under load on the development VM, and as many bytes read from the disk as
//! written) and `pread` the header of its first batch, a synchronous disk read on the core.
//! The staging buffers hold exactly those bytes and are dropped after the write anyway; a
//! round writes them shared ([`SharedBuffer`]) and hands them here instead.
//!
//! Bounds: the chunks of the last [`RECENT_ROUNDS`] write rounds, and at most
//! [`LogConfig::tail_cache_bytes`](crate::storage::LogConfig::tail_cache_bytes) of buffer
//! capacity (whole buffers are what the memory costs); older chunks are dropped first, and a
//! round's chunk larger than the bound is not kept. The SPU gives each log an equal share of
//! its core's budget (`--tail-cache-bytes`), so the memory held is bounded per core whatever
//! the number of partitions; with many partitions each keeps less and their consumers read
//! more from the disk.
//!
//! Invariants: chunks are in file order; each covers `[position, position + valid)` with the
//! bytes the file holds there (they were written from this very buffer, and a round that
//! fails adds nothing). Consecutive chunks touch or overlap by less than a page (a round's
//! next chunk starts with a copy of the partial page before it), and overlapping bytes are
//! equal. Anything that rewrites or cuts the file below the written end (truncation,
//! recovery) clears the cache first. Readers only ask for written bytes, never the padding
//! after a round's last batch.

use std::collections::VecDeque;

use crate::storage::runtime::SharedBuffer;

/// Write rounds whose chunks are kept. A tailing reader needs the round that just became
/// durable; the next one or two may already be written (a round is written while the one
/// before it is synced).
pub const RECENT_ROUNDS: u64 = 4;

/// Bytes of one chunk handed back for reading: `buffer[start..start + len]`.
#[derive(Clone)]
pub struct MemoryPiece {
    buffer: SharedBuffer,
    start: usize,
    len: usize,
}

impl MemoryPiece {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buffer.as_slice()[self.start..self.start + self.len]
    }

    /// Their length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the piece is empty (never, as built by [`RecentWrites::pieces`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

struct RecentChunk {
    buffer: SharedBuffer,
    /// File position of the buffer's first byte.
    position: u64,
    /// Bytes of data from the start of the buffer (the rest is padding or not written).
    valid: usize,
    round: u64,
}

impl RecentChunk {
    fn end(&self) -> u64 {
        self.position + self.valid as u64
    }
}

/// The kept chunks of one active segment.
pub struct RecentWrites {
    chunks: VecDeque<RecentChunk>,
    /// Capacity of the kept buffers.
    bytes: usize,
    bytes_max: usize,
    round: u64,
}

impl RecentWrites {
    /// An empty cache holding at most `bytes_max` of buffer capacity (0: keeps nothing).
    pub fn new(bytes_max: usize) -> RecentWrites {
        RecentWrites { chunks: VecDeque::new(), bytes: 0, bytes_max, round: 0 }
    }

    /// Keeps the chunks of a round that was written: `(buffer, file position, data bytes)`,
    /// in file order, following the chunks already kept.
    pub fn push_round(&mut self, written: impl IntoIterator<Item = (SharedBuffer, u64, usize)>) {
        if self.bytes_max == 0 {
            return;
        }
        self.round += 1;
        for (buffer, position, valid) in written {
            let valid = valid.min(buffer.len());
            if valid == 0 {
                continue;
            }
            if self.chunks.back().is_some_and(|last| position < last.position) {
                // Out of order would break the lookup: start over from this round.
                self.clear();
            }
            self.bytes += buffer.capacity();
            self.chunks.push_back(RecentChunk { buffer, position, valid, round: self.round });
        }
        let oldest_kept = self.round.saturating_sub(RECENT_ROUNDS - 1);
        while let Some(front) = self.chunks.front() {
            if front.round >= oldest_kept && self.bytes <= self.bytes_max {
                break;
            }
            self.bytes -= front.buffer.capacity();
            self.chunks.pop_front();
        }
    }

    /// Drops every chunk (the file below the written end is about to change).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }

    /// Capacity of the buffers kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Changes the byte bound, dropping the oldest chunks now if they are over it.
    pub fn set_bytes_max(&mut self, bytes_max: usize) {
        self.bytes_max = bytes_max;
        while self.bytes > self.bytes_max {
            let Some(front) = self.chunks.pop_front() else { break };
            self.bytes -= front.buffer.capacity();
        }
    }

    /// Index of the chunk holding the byte at `position`, if any (the later one where two
    /// overlap: both hold the same bytes there).
    fn chunk_at(&self, position: u64) -> Option<usize> {
        let after = self.chunks.partition_point(|chunk| chunk.position <= position);
        let index = after.checked_sub(1)?;
        (position < self.chunks[index].end()).then_some(index)
    }

    /// `len` bytes at `position` when one chunk holds them all.
    pub fn bytes_at(&self, position: u64, len: usize) -> Option<&[u8]> {
        let chunk = &self.chunks[self.chunk_at(position)?];
        let start = (position - chunk.position) as usize;
        (start + len <= chunk.valid).then(|| &chunk.buffer.as_slice()[start..start + len])
    }

    /// Pieces holding `[position, position + length)` in order, or `None` unless the kept
    /// chunks hold every byte of it.
    pub fn pieces(&self, position: u64, length: u64) -> Option<Vec<MemoryPiece>> {
        let end = position.checked_add(length)?;
        let mut pieces = Vec::new();
        let mut at = position;
        while at < end {
            let chunk = &self.chunks[self.chunk_at(at)?];
            let start = (at - chunk.position) as usize;
            let stop = chunk.end().min(end);
            let len = (stop - at) as usize;
            pieces.push(MemoryPiece { buffer: chunk.buffer.clone(), start, len });
            at = stop;
        }
        Some(pieces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::runtime::{run_local, DirectFile};

    /// A shared buffer of `len` bytes, byte `i` = `(position + i) % 251` (the file's content).
    fn chunk(file: &DirectFile, position: u64, len: usize) -> SharedBuffer {
        let mut buffer = file.alloc_buffer(len);
        for (index, byte) in buffer.as_mut_slice().iter_mut().enumerate() {
            *byte = ((position + index as u64) % 251) as u8;
        }
        buffer.into_shared()
    }

    fn expected(position: u64, length: u64) -> Vec<u8> {
        (position..position + length).map(|at| (at % 251) as u8).collect()
    }

    fn joined(pieces: &[MemoryPiece]) -> Vec<u8> {
        pieces.iter().flat_map(|piece| piece.as_slice().to_vec()).collect()
    }

    /// Runs `test` on an executor with a direct file to allocate buffers from.
    fn with_file<F, T>(test: F)
    where
        F: FnOnce(DirectFile) -> T,
        T: std::future::Future<Output = ()>,
    {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("recent");
        run_local("recent-test", 8 << 20, move || async move {
            test(DirectFile::open_or_create(&path).await.expect("open")).await
        })
        .expect("executor");
    }

    #[test]
    fn pieces_cover_ranges_across_overlapping_chunks_and_rounds() {
        with_file(|file| async move {
            let mut recent = RecentWrites::new(1 << 20);
            // Round 1: two chunks, the first ends at a page, the second holds 5000 bytes.
            recent.push_round([
                (chunk(&file, 0, 8192), 0, 8192),
                (chunk(&file, 8192, 12288), 8192, 5000),
            ]);
            // Round 2 starts with a copy of the partial page (position 12288).
            recent.push_round([(chunk(&file, 12288, 8192), 12288, 3000)]);
            for (position, length) in [(0, 15288), (100, 8000), (8000, 5000), (13000, 2288)] {
                let pieces = recent.pieces(position, length).expect("cached");
                assert_eq!(joined(&pieces), expected(position, length), "{position}+{length}");
            }
            assert!(recent.pieces(15000, 289).is_none(), "past the written end");
            assert!(recent.bytes_at(8190, 4).is_none(), "straddles two chunks");
            assert_eq!(recent.bytes_at(8200, 61).map(<[u8]>::to_vec), Some(expected(8200, 61)));
            assert!(recent.bytes_at(15280, 61).is_none(), "runs past the data");
        });
    }

    #[test]
    fn keeps_the_last_rounds_within_the_byte_bound() {
        with_file(|file| async move {
            let mut recent = RecentWrites::new(5 * 4096);
            for round in 0..RECENT_ROUNDS + 2 {
                let position = round * 4096;
                recent.push_round([(chunk(&file, position, 4096), position, 4096)]);
            }
            // Only RECENT_ROUNDS rounds are kept: the first two are gone.
            assert!(recent.pieces(0, 4096).is_none());
            assert!(recent.pieces(4096, 4096).is_none());
            let kept = 2 * 4096;
            let total = (RECENT_ROUNDS + 2) * 4096;
            assert_eq!(recent.bytes(), (total - kept) as usize);
            assert!(recent.pieces(kept, total - kept).is_some());
            // A large round drops the oldest chunks until the bound holds again (and itself,
            // once it alone is over the bound).
            recent.push_round([(chunk(&file, total, 4 * 4096), total, 4 * 4096)]);
            assert!(recent.pieces(total - 8192, 4096).is_none());
            assert!(recent.pieces(total - 4096, 5 * 4096).is_some());
            assert_eq!(recent.bytes(), 5 * 4096);
            recent.push_round([(chunk(&file, total + 16384, 8 * 4096), total + 16384, 8 * 4096)]);
            assert_eq!(recent.bytes(), 0, "a chunk over the bound is not kept");
            // Lowering the bound drops the oldest chunks at once.
            recent.set_bytes_max(1 << 20);
            for round in 0..3u64 {
                let position = (64 + round) * 4096;
                recent.push_round([(chunk(&file, position, 4096), position, 4096)]);
            }
            assert_eq!(recent.bytes(), 3 * 4096);
            recent.set_bytes_max(4096);
            assert_eq!(recent.bytes(), 4096);
            assert!(recent.pieces(66 * 4096, 4096).is_some(), "the newest chunk stays");
            recent.set_bytes_max(0);
            assert_eq!(recent.bytes(), 0);
            recent.push_round([(chunk(&file, 0, 4096), 0, 4096)]);
            assert_eq!(recent.bytes(), 0);
        });
    }
}
