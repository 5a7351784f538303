//! Sparse, memory-mapped indexes of one segment: the offset index (relative offset -> byte
//! position, one entry per `index_interval_bytes` of log) and the time index (max timestamp so
//! far -> relative offset of the batch that reached it).
//!
//! Files are preallocated to their capacity and mapped with memmap2; entries are fixed-size,
//! little-endian, strictly increasing in every field. An index is a hint, never trusted: on open
//! only the strictly increasing prefix that lies inside the log is kept ([`OffsetIndex::open`]),
//! and the caller checks the last entry against the log and rebuilds when it disagrees.
//! Entries are only added for batches that are durable, so a crash cannot leave an entry
//! pointing at bytes that never reached the disk. Truncation zeroes the dropped slots and
//! msyncs before the log itself is cut.
//!
//! Memory: a mapped page counts in the process's resident set once touched, so an index
//! touches only the pages its entries use. A fresh file is known to be zeros past its entries
//! and truncation writes nothing there; a reopened file may hold stale entries past its valid
//! prefix, so its first truncation zeroes only the pages holding non-zero bytes and then
//! drops every page past the entries from the mapping (`MADV_DONTNEED`: the page cache keeps
//! them, dirty ones are still written back). A sealed index drops all its pages once it is
//! final; lookups fault back in only the pages they read.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;
use sluice_proto::ids::TimestampMs;

use crate::storage::error::{IoContext, StorageError, StorageResult};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// Granularity of the zero check and of dropping pages from the mapping.
const PAGE_BYTES: usize = 4096;

/// Fixed-size slots in a preallocated, mapped file.
struct MappedTable {
    path: PathBuf,
    map: MmapMut,
    entry_bytes: usize,
    capacity: usize,
    len: usize,
    /// Slots from this one on hold zeros in the file; `None` while unknown (a reopened file
    /// may hold stale entries past its valid prefix).
    zeros_from: Option<usize>,
}

impl MappedTable {
    fn open(path: &Path, entry_bytes: usize, capacity: u64) -> StorageResult<MappedTable> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let wanted_bytes = capacity * entry_bytes as u64;
        let current_bytes = file.metadata().at(path)?.len();
        if current_bytes < wanted_bytes {
            file.set_len(wanted_bytes).at(path)?;
            preallocate(&file, wanted_bytes).at(path)?;
        }
        let file_bytes = current_bytes.max(wanted_bytes);
        // SAFETY: the file is owned by this replica's core; no other process maps or truncates
        // it while the log is open (the data directory is exclusive to one SPU).
        let map = unsafe { MmapMut::map_mut(&file) }.at(path)?;
        let capacity = (file_bytes as usize) / entry_bytes;
        let zeros_from = (current_bytes == 0).then_some(0);
        Ok(MappedTable { path: path.to_path_buf(), map, entry_bytes, capacity, len: 0, zeros_from })
    }

    fn slot(&self, index: usize) -> &[u8] {
        &self.map[index * self.entry_bytes..(index + 1) * self.entry_bytes]
    }

    fn push(&mut self, bytes: &[u8]) -> bool {
        if self.len >= self.capacity {
            return false;
        }
        let start = self.len * self.entry_bytes;
        self.map[start..start + self.entry_bytes].copy_from_slice(bytes);
        self.len += 1;
        self.zeros_from = self.zeros_from.map(|from| from.max(self.len));
        true
    }

    /// Keeps `len` entries, zeroing every slot after them (stale slots must not look valid).
    /// Touches only what may be non-zero (see the module's note on memory).
    fn truncate(&mut self, len: usize) {
        let first = len.min(self.capacity);
        let start = first * self.entry_bytes;
        match self.zeros_from {
            Some(from) => {
                let end = from.max(first) * self.entry_bytes;
                self.map[start..end].fill(0);
            }
            None => {
                let end = self.capacity * self.entry_bytes;
                for page in self.map[start..end].chunks_mut(PAGE_BYTES) {
                    if page.iter().any(|byte| *byte != 0) {
                        page.fill(0);
                    }
                }
                self.release_from(start);
            }
        }
        self.zeros_from = Some(first);
        self.len = len.min(self.len);
    }

    /// Drops the mapping's whole pages from byte `start` on out of the resident set. Best
    /// effort: a failure only leaves them resident.
    fn release_from(&self, start: usize) {
        let start = start.div_ceil(PAGE_BYTES) * PAGE_BYTES;
        if start < self.map.len() {
            // SAFETY: MADV_DONTNEED on a shared file mapping only unmaps the pages; their
            // contents stay in the page cache (dirty ones are written back), and no reference
            // into this range is live (the map is borrowed mutably or not at all here).
            let outcome = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    self.map.len() - start,
                )
            };
            if let Err(error) = outcome {
                tracing::debug!(%error, path = ?self.path, "could not release index pages");
            }
        }
    }

    fn flush(&self) -> StorageResult<()> {
        self.map.flush().at(&self.path)
    }
}

fn preallocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an fd we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    match rc {
        0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(code)),
    }
}

/// One offset-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Offset of the batch minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment's log file.
    pub position: u32,
}

/// Relative offset -> position, sparse.
pub struct OffsetIndex {
    table: MappedTable,
}

impl OffsetIndex {
    /// Opens or creates the index, keeping the strictly increasing prefix whose positions lie
    /// before `log_bytes`.
    pub fn open(path: &Path, capacity: u64, log_bytes: u64) -> StorageResult<OffsetIndex> {
        let mut index =
            OffsetIndex { table: MappedTable::open(path, OFFSET_ENTRY_BYTES, capacity)? };
        let mut len = 0;
        let mut previous: Option<OffsetEntry> = None;
        while len < index.table.capacity {
            let entry = index.decode(len);
            let valid = match previous {
                None => log_bytes > 0 && entry == OffsetEntry { relative_offset: 0, position: 0 },
                Some(before) => {
                    entry.relative_offset > before.relative_offset
                        && entry.position > before.position
                        && u64::from(entry.position) < log_bytes
                }
            };
            if !valid {
                break;
            }
            previous = Some(entry);
            len += 1;
        }
        index.table.len = len;
        Ok(index)
    }

    fn decode(&self, index: usize) -> OffsetEntry {
        let slot = self.table.slot(index);
        OffsetEntry {
            relative_offset: u32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]),
            position: u32::from_le_bytes([slot[4], slot[5], slot[6], slot[7]]),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// The last entry.
    pub fn last(&self) -> Option<OffsetEntry> {
        self.table.len.checked_sub(1).map(|index| self.decode(index))
    }

    /// Appends an entry; entries must increase. Fails when the preallocated file is full
    /// (the config bounds a segment so that this cannot happen).
    pub fn push(&mut self, entry: OffsetEntry) -> StorageResult<()> {
        if let Some(last) = self.last() {
            if entry.relative_offset <= last.relative_offset || entry.position <= last.position {
                return Ok(());
            }
        }
        let mut bytes = [0u8; OFFSET_ENTRY_BYTES];
        bytes[..4].copy_from_slice(&entry.relative_offset.to_le_bytes());
        bytes[4..].copy_from_slice(&entry.position.to_le_bytes());
        if self.table.push(&bytes) {
            Ok(())
        } else {
            Err(StorageError::InvalidRequest(format!("offset index {:?} full", self.table.path)))
        }
    }

    /// The entry with the greatest relative offset `<= relative_offset` (binary search).
    pub fn floor(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let count = self.partition_point(|entry| entry.relative_offset <= relative_offset);
        count.checked_sub(1).map(|index| self.decode(index))
    }

    /// The entry with the greatest position `<= position`.
    pub fn floor_position(&self, position: u32) -> Option<OffsetEntry> {
        let count = self.partition_point(|entry| entry.position <= position);
        count.checked_sub(1).map(|index| self.decode(index))
    }

    fn partition_point(&self, below: impl Fn(OffsetEntry) -> bool) -> usize {
        let (mut low, mut high) = (0, self.table.len);
        while low < high {
            let middle = low + (high - low) / 2;
            if below(self.decode(middle)) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    /// Drops every entry whose position is `>= position`.
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.partition_point(|entry| entry.position < position);
        self.table.truncate(keep);
    }

    /// Drops the entries from `len` on.
    pub fn truncate_len(&mut self, len: usize) {
        self.table.truncate(len);
    }

    /// msync.
    pub fn flush(&self) -> StorageResult<()> {
        self.table.flush()
    }

    /// Drops every mapped page out of the resident set (a sealed index: lookups fault back in
    /// the pages they read).
    pub fn release_pages(&self) {
        self.table.release_from(0);
    }
}

/// One time-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest batch max-timestamp in the segment up to and including this batch.
    pub timestamp: TimestampMs,
    /// Relative offset of the batch that reached it.
    pub relative_offset: u32,
}

/// Max timestamp so far -> relative offset, sparse.
pub struct TimeIndex {
    table: MappedTable,
}

impl TimeIndex {
    /// Opens or creates the index, keeping the strictly increasing prefix whose offsets are
    /// below `relative_end` (the segment's next offset minus its base).
    pub fn open(path: &Path, capacity: u64, relative_end: u64) -> StorageResult<TimeIndex> {
        let mut index = TimeIndex { table: MappedTable::open(path, TIME_ENTRY_BYTES, capacity)? };
        let mut len = 0;
        let mut previous: Option<TimeEntry> = None;
        while len < index.table.capacity {
            let entry = index.decode(len);
            let increasing = match previous {
                None => entry.timestamp.0 != 0 || entry.relative_offset != 0,
                Some(before) => {
                    entry.timestamp > before.timestamp
                        && entry.relative_offset > before.relative_offset
                }
            };
            if !increasing || u64::from(entry.relative_offset) >= relative_end {
                break;
            }
            previous = Some(entry);
            len += 1;
        }
        index.table.len = len;
        Ok(index)
    }

    fn decode(&self, index: usize) -> TimeEntry {
        let slot = self.table.slot(index);
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&slot[..8]);
        TimeEntry {
            timestamp: TimestampMs(i64::from_le_bytes(timestamp)),
            relative_offset: u32::from_le_bytes([slot[8], slot[9], slot[10], slot[11]]),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// The last entry: its timestamp is the segment's max once the segment is sealed.
    pub fn last(&self) -> Option<TimeEntry> {
        self.table.len.checked_sub(1).map(|index| self.decode(index))
    }

    /// Appends an entry if it increases both fields; otherwise ignores it.
    pub fn push(&mut self, entry: TimeEntry) -> StorageResult<()> {
        if let Some(last) = self.last() {
            if entry.timestamp <= last.timestamp || entry.relative_offset <= last.relative_offset {
                return Ok(());
            }
        }
        let mut bytes = [0u8; TIME_ENTRY_BYTES];
        bytes[..8].copy_from_slice(&entry.timestamp.0.to_le_bytes());
        bytes[8..].copy_from_slice(&entry.relative_offset.to_le_bytes());
        if self.table.push(&bytes) {
            Ok(())
        } else {
            Err(StorageError::InvalidRequest(format!("time index {:?} full", self.table.path)))
        }
    }

    /// The last entry whose timestamp is `< timestamp`: every batch up to it is older than
    /// `timestamp`, so a search may start there.
    pub fn last_before(&self, timestamp: TimestampMs) -> Option<TimeEntry> {
        let (mut low, mut high) = (0, self.table.len);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.decode(middle).timestamp < timestamp {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1).map(|index| self.decode(index))
    }

    /// Drops entries whose relative offset is `>= relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let mut keep = self.table.len;
        while keep > 0 && self.decode(keep - 1).relative_offset >= relative_offset {
            keep -= 1;
        }
        self.table.truncate(keep);
    }

    /// msync.
    pub fn flush(&self) -> StorageResult<()> {
        self.table.flush()
    }

    /// Drops every mapped page out of the resident set (a sealed index: lookups fault back in
    /// the pages they read).
    pub fn release_pages(&self) {
        self.table.release_from(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::open(&path, 16, 0).unwrap();
        for step in 0..10u32 {
            index.push(OffsetEntry { relative_offset: step * 10, position: step * 4096 }).unwrap();
        }
        assert_eq!(index.floor(0).unwrap().position, 0);
        assert_eq!(index.floor(15).unwrap().position, 4096);
        assert_eq!(index.floor(1000).unwrap().relative_offset, 90);
        assert_eq!(index.floor_position(8191).unwrap().relative_offset, 10);
        index.flush().unwrap();
        drop(index);
        // Log shorter than the indexed range: entries past it are dropped.
        let index = OffsetIndex::open(&path, 16, 5 * 4096).unwrap();
        assert_eq!(index.len(), 5);
        let mut index = OffsetIndex::open(&path, 16, 100 * 4096).unwrap();
        assert_eq!(index.len(), 10);
        index.truncate_to_position(3 * 4096);
        assert_eq!(index.len(), 3);
        drop(index);
        assert_eq!(OffsetIndex::open(&path, 16, 100 * 4096).unwrap().len(), 3);
    }

    #[test]
    fn offset_index_rejects_garbage_and_fills_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        std::fs::write(&path, [0xffu8; 64]).unwrap();
        assert_eq!(OffsetIndex::open(&path, 4, 1 << 20).unwrap().len(), 0);
        let mut index = OffsetIndex::open(&path, 2, 1 << 20).unwrap();
        // Capacity follows the larger existing file (8 slots).
        for step in 0..8u32 {
            index.push(OffsetEntry { relative_offset: step, position: step }).unwrap();
        }
        assert!(index.push(OffsetEntry { relative_offset: 9, position: 9 }).is_err());
    }

    #[test]
    fn truncation_zeroes_stale_slots_of_a_reopened_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::open(&path, 4096, 0).unwrap();
        for step in 0..1000u32 {
            index.push(OffsetEntry { relative_offset: step, position: step * 4096 }).unwrap();
        }
        index.truncate_len(800);
        index.flush().unwrap();
        drop(index);
        // The log lost its tail: only 5 entries are valid, 795 stale ones follow on file.
        let mut index = OffsetIndex::open(&path, 4096, 5 * 4096).unwrap();
        assert_eq!(index.len(), 5);
        index.truncate_len(5);
        index.flush().unwrap();
        drop(index);
        assert_eq!(OffsetIndex::open(&path, 4096, u64::from(u32::MAX)).unwrap().len(), 5);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[5 * OFFSET_ENTRY_BYTES..].iter().all(|byte| *byte == 0));
    }

    #[test]
    fn time_index_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut index = TimeIndex::open(&path, 8, 0).unwrap();
        index.push(TimeEntry { timestamp: TimestampMs(100), relative_offset: 0 }).unwrap();
        index.push(TimeEntry { timestamp: TimestampMs(200), relative_offset: 5 }).unwrap();
        index.push(TimeEntry { timestamp: TimestampMs(150), relative_offset: 7 }).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index.last_before(TimestampMs(100)), None);
        assert_eq!(index.last_before(TimestampMs(101)).unwrap().relative_offset, 0);
        assert_eq!(index.last_before(TimestampMs(999)).unwrap().relative_offset, 5);
        drop(index);
        assert_eq!(TimeIndex::open(&path, 8, 5).unwrap().len(), 1);
        let mut index = TimeIndex::open(&path, 8, 6).unwrap();
        assert_eq!(index.len(), 2);
        index.truncate_to_offset(3);
        assert_eq!(index.len(), 1);
    }
}
