//! Reading batches back from a segment file: a chunked reader, the recovery scan that checks
//! every byte (length, CRC, offsets) and the header walk of the read path.
//!
//! Both stop at the first batch that is wrong; the recovery scan reports where (the caller
//! truncates there), the header walk turns it into [`StorageError::Corruption`]. Nothing read
//! from disk can make them panic or allocate more than `batch_bytes_max` at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sluice_proto::ids::{LeaderEpoch, Offset, TimestampMs};
use sluice_proto::record::{
    batch_total_len, validate_batch, BatchHeader, BATCH_HEADER_LEN, BATCH_LENGTH_PREFIX,
};

use crate::storage::error::{StorageError, StorageResult};
use crate::storage::recent::RecentWrites;

/// Bytes read at a time by scans (one read covers many small batches).
pub const SCAN_CHUNK_BYTES: usize = 256 * 1024;
/// Bytes read at a time by the read path's header walk: it reads the header of a fetch's
/// first batch and of batches the index does not cover, not the records (sendfile moves
/// those), so one page is enough.
pub const HEADER_CHUNK_BYTES: usize = 4096;

/// What the storage keeps about one batch without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// First offset of the batch.
    pub base_offset: Offset,
    /// Offset after its last record.
    pub next_offset: Offset,
    /// Byte position in the segment file.
    pub position: u64,
    /// Whole batch length in bytes.
    pub length: u64,
    /// Largest record timestamp.
    pub max_timestamp: TimestampMs,
    /// Leader epoch stamped on it.
    pub epoch: LeaderEpoch,
}

impl BatchMeta {
    pub(crate) fn from_header(header: &BatchHeader, position: u64) -> BatchMeta {
        BatchMeta {
            base_offset: header.base_offset,
            next_offset: header.next_offset(),
            position,
            length: header.total_len() as u64,
            max_timestamp: header.max_timestamp,
            epoch: header.partition_leader_epoch,
        }
    }

    /// Position after the batch.
    pub fn end_position(&self) -> u64 {
        self.position + self.length
    }
}

/// A read-ahead window over a file.
pub(crate) struct ChunkReader<'a> {
    file: &'a File,
    /// Bytes held in memory, tried before the file.
    memory: Option<&'a RecentWrites>,
    end: u64,
    chunk_bytes: usize,
    buffer: Vec<u8>,
    buffer_start: u64,
}

impl<'a> ChunkReader<'a> {
    pub(crate) fn new(file: &'a File, end: u64) -> ChunkReader<'a> {
        ChunkReader::with_chunk(file, end, SCAN_CHUNK_BYTES)
    }

    /// A reader that reads `chunk_bytes` at a time (more only for a longer request).
    pub(crate) fn with_chunk(file: &'a File, end: u64, chunk_bytes: usize) -> ChunkReader<'a> {
        ChunkReader { file, memory: None, end, chunk_bytes, buffer: Vec::new(), buffer_start: 0 }
    }

    /// Up to `len` bytes at `position` (fewer only at `end`).
    pub(crate) fn bytes(&mut self, position: u64, len: usize) -> io::Result<&[u8]> {
        let available = self.end.saturating_sub(position).min(len as u64) as usize;
        if let Some(bytes) = self.memory.and_then(|memory| memory.bytes_at(position, available)) {
            return Ok(bytes);
        }
        let buffer_end = self.buffer_start + self.buffer.len() as u64;
        if position < self.buffer_start || position + available as u64 > buffer_end {
            let read_len =
                self.end.saturating_sub(position).min(available.max(self.chunk_bytes) as u64);
            self.buffer.resize(read_len as usize, 0);
            let mut filled = 0;
            while filled < self.buffer.len() {
                let count =
                    self.file.read_at(&mut self.buffer[filled..], position + filled as u64)?;
                if count == 0 {
                    break;
                }
                filled += count;
            }
            self.buffer.truncate(filled);
            self.buffer_start = position;
        }
        let start = (position - self.buffer_start) as usize;
        let stop = (start + available).min(self.buffer.len());
        Ok(&self.buffer[start..stop])
    }
}

/// Where a recovery scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Position after the last valid batch.
    pub position: u64,
    /// Offset after the last valid batch.
    pub next_offset: Offset,
    /// Whether bytes followed that did not form a valid batch (a torn or corrupt tail).
    pub stopped_early: bool,
}

/// Validates batches from `position` (expected to hold `next_offset`) up to `end`, calling
/// `on_batch` for each valid one. Stops at the first batch whose length, CRC or offset is wrong.
pub(crate) fn recovery_scan(
    file: &File,
    path: &Path,
    start: (u64, Offset),
    end: u64,
    batch_bytes_max: usize,
    mut on_batch: impl FnMut(&BatchMeta) -> StorageResult<()>,
) -> StorageResult<ScanEnd> {
    let (mut position, mut next_offset) = start;
    let mut reader = ChunkReader::new(file, end);
    loop {
        let stop = ScanEnd { position, next_offset, stopped_early: true };
        let prefix =
            reader.bytes(position, BATCH_LENGTH_PREFIX).map_err(|e| StorageError::io(path, e))?;
        if prefix.is_empty() || prefix.iter().all(|byte| *byte == 0) {
            // End of file, or the zeroed preallocated space after the last batch.
            return Ok(ScanEnd { stopped_early: false, ..stop });
        }
        let Ok(total) = batch_total_len(prefix, batch_bytes_max) else { return Ok(stop) };
        let bytes = reader.bytes(position, total).map_err(|e| StorageError::io(path, e))?;
        let Ok(header) = validate_batch(bytes, batch_bytes_max) else { return Ok(stop) };
        if header.base_offset != next_offset || header.next_offset() <= next_offset {
            return Ok(stop);
        }
        let meta = BatchMeta::from_header(&header, position);
        on_batch(&meta)?;
        position = meta.end_position();
        next_offset = meta.next_offset;
    }
}

/// Walks batch headers from `position` (which must start a batch) and checks their framing:
/// magic, a length that stays inside `end`, offsets that continue from the previous batch.
/// The CRC is not checked here (see the storage contract).
pub(crate) struct HeaderWalk<'a> {
    reader: ChunkReader<'a>,
    path: &'a Path,
    position: u64,
    expected_offset: Option<Offset>,
    batch_bytes_max: usize,
}

impl<'a> HeaderWalk<'a> {
    pub(crate) fn new(
        file: &'a File,
        path: &'a Path,
        position: u64,
        end: u64,
        batch_bytes_max: usize,
    ) -> HeaderWalk<'a> {
        HeaderWalk::with_chunk(file, path, position, end, batch_bytes_max, SCAN_CHUNK_BYTES)
    }

    /// A walk reading `chunk_bytes` at a time: [`HEADER_CHUNK_BYTES`] when it reads only a
    /// few headers, [`SCAN_CHUNK_BYTES`] when it walks many small batches.
    pub(crate) fn with_chunk(
        file: &'a File,
        path: &'a Path,
        position: u64,
        end: u64,
        batch_bytes_max: usize,
        chunk_bytes: usize,
    ) -> HeaderWalk<'a> {
        HeaderWalk {
            reader: ChunkReader::with_chunk(file, end, chunk_bytes),
            path,
            position,
            expected_offset: None,
            batch_bytes_max,
        }
    }

    /// Reads what `memory` holds from there instead of the file (the active segment's
    /// newest written bytes: the same bytes, without a read).
    pub(crate) fn with_memory(mut self, memory: Option<&'a RecentWrites>) -> HeaderWalk<'a> {
        self.reader.memory = memory;
        self
    }

    /// Where the next batch starts.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Continues at `position`, which starts the batch with base offset `offset` (a batch
    /// boundary known from the offset index).
    pub(crate) fn seek(&mut self, position: u64, offset: Offset) {
        self.position = position;
        self.expected_offset = Some(offset);
    }

    /// The next batch, `None` at `end`.
    pub(crate) fn next_batch(&mut self) -> StorageResult<Option<BatchMeta>> {
        Ok(self.next_header()?.map(|(_, meta)| meta))
    }

    /// The next batch with its whole header (producer fields included), `None` at `end`.
    pub(crate) fn next_header(&mut self) -> StorageResult<Option<(BatchHeader, BatchMeta)>> {
        let position = self.position;
        let header_bytes = self
            .reader
            .bytes(position, BATCH_HEADER_LEN)
            .map_err(|e| StorageError::io(self.path, e))?;
        if header_bytes.is_empty() {
            return Ok(None);
        }
        let corrupt = |reason: String| StorageError::corruption(self.path, position, reason);
        let total = batch_total_len(header_bytes, self.batch_bytes_max)
            .map_err(|error| corrupt(error.to_string()))?;
        let header =
            BatchHeader::parse(header_bytes).map_err(|error| corrupt(error.to_string()))?;
        if position + total as u64 > self.reader.end {
            return Err(corrupt(format!("batch of {total} bytes runs past the segment end")));
        }
        if header.last_offset_delta < 0 || header.record_count < 0 {
            return Err(corrupt("negative record count or offset delta".into()));
        }
        if let Some(expected) = self.expected_offset {
            if header.base_offset != expected {
                return Err(corrupt(format!(
                    "batch base offset {} where {} was expected",
                    header.base_offset, expected
                )));
            }
        }
        let meta = BatchMeta::from_header(&header, position);
        self.expected_offset = Some(meta.next_offset);
        self.position = meta.end_position();
        Ok(Some((header, meta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::make_batch;
    use sluice_proto::record::set_base_offset;

    fn log_file(batches: &[Vec<u8>], extra: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut bytes: Vec<u8> = batches.concat();
        bytes.extend_from_slice(extra);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        (file, bytes.len() as u64)
    }

    fn numbered(count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|index| {
                let mut batch =
                    make_batch(2, 30 + index * 7, TimestampMs(index as i64), index as u8);
                set_base_offset(&mut batch, Offset(2 * index as i64));
                batch
            })
            .collect()
    }

    #[test]
    fn recovery_scan_stops_at_torn_and_misnumbered_batches() {
        let batches = numbered(5);
        let valid_end: u64 = batches.iter().map(|b| b.len() as u64).sum();
        for cut in [1usize, 11, 12, 60, 61, 70] {
            let (file, end) = log_file(&batches, &batches[0][..cut.min(batches[0].len())]);
            let opened = File::open(file.path()).unwrap();
            let mut seen = 0;
            let scan = recovery_scan(&opened, file.path(), (0, Offset(0)), end, 1 << 20, |_| {
                seen += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!((scan.position, scan.next_offset, seen), (valid_end, Offset(10), 5));
            assert_eq!(scan.stopped_early, cut >= 12, "a zero-length prefix is the clean end");
        }
        // A batch whose base offset does not continue the log ends the scan.
        let mut misnumbered = numbered(3);
        set_base_offset(&mut misnumbered[2], Offset(99));
        let (file, end) = log_file(&misnumbered, &[]);
        let opened = File::open(file.path()).unwrap();
        let scan =
            recovery_scan(&opened, file.path(), (0, Offset(0)), end, 1 << 20, |_| Ok(())).unwrap();
        assert_eq!(scan.next_offset, Offset(4));
    }

    #[test]
    fn header_walk_reports_gaps_and_overruns_as_corruption() {
        let mut batches = numbered(3);
        set_base_offset(&mut batches[2], Offset(50));
        let (file, end) = log_file(&batches, &[]);
        let opened = File::open(file.path()).unwrap();
        let mut walk = HeaderWalk::new(&opened, file.path(), 0, end, 1 << 20);
        assert!(walk.next_batch().unwrap().is_some());
        assert!(walk.next_batch().unwrap().is_some());
        assert!(matches!(walk.next_batch(), Err(StorageError::Corruption { .. })));
        let mut walk = HeaderWalk::new(&opened, file.path(), 0, end - 1, 1 << 20);
        walk.next_batch().unwrap();
        walk.next_batch().unwrap();
        assert!(matches!(walk.next_batch(), Err(StorageError::Corruption { .. })));
    }
}
