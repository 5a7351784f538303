//! Segments of a replica log. The [`ActiveSegment`] takes appends: it stages batches in aligned
//! buffers, hands them out as write rounds and tracks the appended / written / durable points.
//! A [`SealedSegment`] is immutable: exact-sized log file, final indexes, no write handle; its
//! read handle is opened on demand through the per-core file cache.
//!
//! This module is synchronous state; the log drives the asynchronous I/O (write rounds,
//! fdatasync, truncation) under its I/O gate and reports outcomes back here.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sluice_proto::ids::{Offset, TimestampMs};
use sluice_proto::record::BatchHeader;

use crate::storage::config::{LogConfig, IO_ALIGNMENT_BYTES};
use crate::storage::error::{IoContext, StorageError, StorageResult};
use crate::storage::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::storage::recent::RecentWrites;
use crate::storage::runtime::{DirectFile, SharedBuffer, WriteBuffer, SHARED_ZEROS_BYTES};
use crate::storage::scan::{recovery_scan, BatchMeta, HeaderWalk};

/// Extension of segment log files.
pub const LOG_EXTENSION: &str = "log";
/// Extension of offset index files.
pub const OFFSET_INDEX_EXTENSION: &str = "index";
/// Extension of time index files.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";

pub(crate) fn align_down(value: u64) -> u64 {
    value & !(IO_ALIGNMENT_BYTES - 1)
}

pub(crate) fn align_up(value: u64) -> u64 {
    align_down(value + IO_ALIGNMENT_BYTES - 1)
}

/// The three files of a segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub(crate) log: PathBuf,
    pub(crate) offset_index: PathBuf,
    pub(crate) time_index: PathBuf,
}

impl SegmentPaths {
    pub(crate) fn new(directory: &Path, base_offset: Offset) -> SegmentPaths {
        let stem = format!("{:020}", base_offset.0);
        SegmentPaths {
            log: directory.join(format!("{stem}.{LOG_EXTENSION}")),
            offset_index: directory.join(format!("{stem}.{OFFSET_INDEX_EXTENSION}")),
            time_index: directory.join(format!("{stem}.{TIME_INDEX_EXTENSION}")),
        }
    }

    /// Unlinks all three files (missing ones are fine).
    pub(crate) fn remove(&self) -> StorageResult<()> {
        for path in [&self.log, &self.offset_index, &self.time_index] {
            match fs::remove_file(path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::io(path, error))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A position in a segment together with the offset that starts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPoint {
    /// Byte position in the segment file.
    pub position: u64,
    /// Offset of the next batch.
    pub next_offset: Offset,
}

/// Both indexes of a segment plus the in-memory state deciding when to add entries.
pub(crate) struct SegmentIndexes {
    base_offset: Offset,
    offsets: OffsetIndex,
    times: TimeIndex,
    interval_bytes: u64,
    last_offset_entry_position: Option<u64>,
    last_time_entry_position: Option<u64>,
    max_timestamp: Option<(TimestampMs, Offset)>,
}

impl SegmentIndexes {
    fn open(
        paths: &SegmentPaths,
        base: Offset,
        config: &LogConfig,
        end: LogPoint,
    ) -> StorageResult<Self> {
        let capacity = config.index_entries_max();
        let offsets = OffsetIndex::open(&paths.offset_index, capacity, end.position)?;
        let relative_end = (end.next_offset.0 - base.0).max(0) as u64;
        let times = TimeIndex::open(&paths.time_index, capacity, relative_end)?;
        let mut indexes = SegmentIndexes {
            base_offset: base,
            offsets,
            times,
            interval_bytes: config.index_interval_bytes,
            last_offset_entry_position: None,
            last_time_entry_position: None,
            max_timestamp: None,
        };
        indexes.derive_cursor();
        Ok(indexes)
    }

    /// Recomputes the entry-gating cursor and the max timestamp from the entries on file.
    fn derive_cursor(&mut self) {
        self.last_offset_entry_position =
            self.offsets.last().map(|entry| u64::from(entry.position));
        let last_time = self.times.last();
        self.max_timestamp = last_time.map(|entry| {
            (entry.timestamp, Offset(self.base_offset.0 + i64::from(entry.relative_offset)))
        });
        self.last_time_entry_position = last_time.map(|entry| {
            self.offsets.floor(entry.relative_offset).map_or(0, |e| u64::from(e.position))
        });
    }

    /// Where a rescan must start so that every batch after the last entries is seen again:
    /// the lower of the last offset entry and the batch of the last time entry.
    fn rescan_start(&self) -> (u64, Offset) {
        let last = self.offsets.last().unwrap_or(OffsetEntry { relative_offset: 0, position: 0 });
        let time_floor = self
            .times
            .last()
            .and_then(|entry| self.offsets.floor(entry.relative_offset))
            .unwrap_or(last);
        let start = if time_floor.position < last.position { time_floor } else { last };
        (u64::from(start.position), Offset(self.base_offset.0 + i64::from(start.relative_offset)))
    }

    fn relative(&self, offset: Offset) -> u32 {
        (offset.0 - self.base_offset.0).clamp(0, i64::from(u32::MAX)) as u32
    }

    pub(crate) fn index_batch(&mut self, meta: &BatchMeta) -> StorageResult<()> {
        let relative_offset = self.relative(meta.base_offset);
        let position = meta.position as u32;
        let due =
            |last: Option<u64>, interval: u64| last.is_none_or(|at| meta.position >= at + interval);
        if due(self.last_offset_entry_position, self.interval_bytes) {
            self.offsets.push(OffsetEntry { relative_offset, position })?;
            self.last_offset_entry_position = Some(meta.position);
        }
        if self.max_timestamp.is_none_or(|(max, _)| meta.max_timestamp > max) {
            self.max_timestamp = Some((meta.max_timestamp, meta.base_offset));
            if due(self.last_time_entry_position, self.interval_bytes) {
                self.times.push(TimeEntry { timestamp: meta.max_timestamp, relative_offset })?;
                self.last_time_entry_position = Some(meta.position);
            }
        }
        Ok(())
    }

    /// Final entries and msync: the last time entry now carries the segment's max timestamp.
    /// The indexes' pages then leave the resident set (see [`crate::storage::index`]).
    fn seal(&mut self) -> StorageResult<()> {
        if let Some((timestamp, offset)) = self.max_timestamp {
            let relative_offset = self.relative(offset);
            self.times.push(TimeEntry { timestamp, relative_offset })?;
        }
        self.offsets.flush()?;
        self.times.flush()?;
        self.release_pages();
        Ok(())
    }

    /// Drops the indexes' pages out of the resident set (final indexes: lookups fault back in
    /// the few pages they read).
    fn release_pages(&self) {
        self.offsets.release_pages();
        self.times.release_pages();
    }

    /// Drops entries at or after `end`, msyncs, and re-derives the cursor.
    fn truncate(&mut self, end: LogPoint) -> StorageResult<()> {
        self.offsets.truncate_to_position(end.position.min(u64::from(u32::MAX)) as u32);
        let relative_end = self.relative(end.next_offset);
        self.times.truncate_to_offset(relative_end);
        self.offsets.flush()?;
        self.times.flush()?;
        self.derive_cursor();
        Ok(())
    }

    /// Byte position to start looking for `offset`.
    pub(crate) fn position_floor(&self, offset: Offset) -> u64 {
        self.offsets.floor(self.relative(offset)).map_or(0, |entry| u64::from(entry.position))
    }

    /// The last offset index entry at or below `position`, as a batch boundary (an entry is
    /// the start of a batch, which is also where the batch before it ends).
    pub(crate) fn entry_at_or_below_position(&self, position: u64) -> Option<LogPoint> {
        let position = position.min(u64::from(u32::MAX)) as u32;
        self.offsets.floor_position(position).map(|entry| self.point(entry))
    }

    /// The last offset index entry whose offset is at or below `offset`.
    pub(crate) fn entry_at_or_below_offset(&self, offset: Offset) -> Option<LogPoint> {
        if offset < self.base_offset {
            return None;
        }
        self.offsets.floor(self.relative(offset)).map(|entry| self.point(entry))
    }

    /// The last offset index entry.
    pub(crate) fn last_entry(&self) -> Option<LogPoint> {
        self.offsets.last().map(|entry| self.point(entry))
    }

    fn point(&self, entry: OffsetEntry) -> LogPoint {
        LogPoint {
            position: u64::from(entry.position),
            next_offset: Offset(self.base_offset.0 + i64::from(entry.relative_offset)),
        }
    }

    /// Byte position to start looking for the first batch whose max timestamp is `>= timestamp`.
    pub(crate) fn position_for_timestamp(&self, timestamp: TimestampMs) -> u64 {
        match self.times.last_before(timestamp) {
            Some(entry) => {
                self.offsets.floor(entry.relative_offset).map_or(0, |e| u64::from(e.position))
            }
            None => 0,
        }
    }

    pub(crate) fn max_timestamp(&self) -> Option<TimestampMs> {
        self.max_timestamp.map(|(timestamp, _)| timestamp)
    }
}

/// Reads the header at `position` and checks it starts `offset`.
fn header_matches(file: &File, position: u64, offset: Offset) -> bool {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; sluice_proto::record::BATCH_HEADER_LEN];
    if file.read_exact_at(&mut header, position).is_err() {
        return false;
    }
    BatchHeader::parse(&header).is_ok_and(|parsed| parsed.base_offset == offset)
}

/// A staging buffer for one direct write: starts at an aligned file position.
struct Chunk {
    buffer: WriteBuffer,
    file_position: u64,
    used: usize,
}

/// What the log writes in one round and where the segment ends after it. The writes never
/// overlap (see [`ActiveSegment::take_round`]): they may be issued together.
pub(crate) struct WriteRound {
    pub(crate) writes: Vec<RoundWrite>,
    pub(crate) end: LogPoint,
}

/// One write of a round.
pub(crate) struct RoundWrite {
    /// The bytes to write (page-aligned length; the last write of a round is zero-padded).
    pub(crate) buffer: WriteBuffer,
    /// Where they go in the file.
    pub(crate) position: u64,
    /// Bytes of data from the start of the buffer (the rest is padding).
    pub(crate) data_len: usize,
}

/// The segment that takes appends.
pub(crate) struct ActiveSegment {
    pub(crate) base_offset: Offset,
    pub(crate) paths: SegmentPaths,
    pub(crate) direct: Rc<DirectFile>,
    pub(crate) read_file: Rc<File>,
    pub(crate) indexes: SegmentIndexes,
    /// Clock time of the first append into this segment (set by the log; on reopen, the
    /// reopen time), for rolling by age. Record timestamps are the producer's and may be old.
    pub(crate) first_append_ms: Option<TimestampMs>,
    pub(crate) appended: LogPoint,
    pub(crate) written: LogPoint,
    pub(crate) durable: LogPoint,
    chunks: Vec<Chunk>,
    /// Bytes of the partial page at the end of the last round handed out.
    tail_page: Vec<u8>,
    /// The same for the last round that completed (restored when a round fails).
    written_tail_page: Vec<u8>,
    round_tail_page: Vec<u8>,
    /// Appended or written batches not yet durable, hence not yet indexed.
    unindexed: VecDeque<BatchMeta>,
    /// The newest written bytes, for reads of the tail (see [`crate::storage::recent`]).
    pub(crate) recent: RecentWrites,
    /// Size of the next staging buffer: follows the replica's traffic between
    /// [`STAGING_BUFFER_BYTES_MIN`] and [`LogConfig::write_buffer_bytes`] (see
    /// [`ActiveSegment::take_round`]), so idle and slow replicas hold small buffers.
    staging_bytes: usize,
    write_buffer_bytes: usize,
    /// The file holds written blocks (data or zeros) up to here; see
    /// [`LogConfig::zero_fill_bytes`].
    zeroed_end: u64,
    /// The range the running zero-fill task is writing (`None` while none runs). Data rounds
    /// never write into it: a round that would waits for the task (see
    /// [`ActiveSegment::round_must_wait_for_zeros`]).
    zeroing: Option<(u64, u64)>,
    /// A zero-fill task was spawned for this segment and has not finished.
    zero_task_spawned: bool,
    /// [`LogConfig::zero_fill_bytes`] when the segment was opened.
    zero_fill_bytes: u64,
    /// Zero-filling stops here: the file's length (zero-filling must never extend the file).
    zero_fill_limit: u64,
    /// The file is extended this much at a time ([`LogConfig::preallocate_bytes`]) ...
    preallocate_bytes: u64,
    /// ... up to here ([`LogConfig::segment_bytes_max`]).
    segment_bytes_max: u64,
}

/// Size of each zero write (the size whose buffer the executor's zero writes share).
pub(crate) const ZERO_WRITE_BYTES: u64 = SHARED_ZEROS_BYTES as u64;

/// Smallest staging buffer: a replica's first append, and one that has been quiet, stages into
/// a buffer this small (a producer batch of the default 16-64 KiB fits; larger batches get a
/// buffer of their own size).
pub const STAGING_BUFFER_BYTES_MIN: usize = 64 * 1024;

impl ActiveSegment {
    /// Opens (or creates) the segment at `base`, recovering its tail: rescans from the last
    /// index entry, truncates at the first bad batch and fsyncs the result.
    pub(crate) async fn open(
        directory: &Path,
        base: Offset,
        config: &LogConfig,
    ) -> StorageResult<(ActiveSegment, RecoveryReport)> {
        let paths = SegmentPaths::new(directory, base);
        let direct = DirectFile::open_or_create(&paths.log).await.at(&paths.log)?;
        let read_file = File::open(&paths.log).at(&paths.log)?;
        let file_bytes = read_file.metadata().at(&paths.log)?.len();
        let claimed_end = LogPoint { position: file_bytes, next_offset: Offset(i64::MAX) };
        let mut indexes = SegmentIndexes::open(&paths, base, config, claimed_end)?;
        let (mut start_position, mut start_offset) = indexes.rescan_start();
        if !header_matches(&read_file, start_position, start_offset) && file_bytes > 0 {
            // The index disagrees with the log: rebuild it from the first batch.
            indexes.truncate(LogPoint { position: 0, next_offset: base })?;
            (start_position, start_offset) = (0, base);
        }
        // Drop entries past the rescan start; the scan adds them back for valid batches.
        let keep = LogPoint { position: start_position + 1, next_offset: start_offset.next() };
        indexes.truncate(keep)?;
        let scan = recovery_scan(
            &read_file,
            &paths.log,
            (start_position, start_offset),
            file_bytes,
            config.batch_bytes_max,
            |meta| indexes.index_batch(meta),
        )?;
        let end = LogPoint { position: scan.position, next_offset: scan.next_offset };
        let truncated_bytes = file_bytes - end.position;
        if truncated_bytes > 0 {
            direct.truncate(end.position).await.at(&paths.log)?;
        }
        direct.sync_data().await.at(&paths.log)?;
        match direct.preallocate(config.allocation_for(end.position)).await {
            // An existing segment must reopen on a full volume (appends are refused later).
            Err(error) if file_bytes > 0 && error.raw_os_error() == Some(libc::ENOSPC) => {
                tracing::warn!(path = ?paths.log, "no space to preallocate the active segment");
            }
            other => other.at(&paths.log)?,
        }
        let mut tail_page = vec![0u8; (end.position - align_down(end.position)) as usize];
        {
            use std::os::unix::fs::FileExt;
            read_file.read_exact_at(&mut tail_page, align_down(end.position)).at(&paths.log)?;
        }
        let zero_fill_limit = read_file.metadata().at(&paths.log)?.len();
        let segment = ActiveSegment {
            base_offset: base,
            paths,
            direct: Rc::new(direct),
            read_file: Rc::new(read_file),
            indexes,
            first_append_ms: None,
            appended: end,
            written: end,
            durable: end,
            chunks: Vec::new(),
            written_tail_page: tail_page.clone(),
            round_tail_page: Vec::new(),
            tail_page,
            unindexed: VecDeque::new(),
            recent: RecentWrites::new(config.tail_cache_bytes),
            staging_bytes: STAGING_BUFFER_BYTES_MIN.min(config.write_buffer_bytes),
            write_buffer_bytes: config.write_buffer_bytes,
            zeroed_end: align_up(end.position),
            zeroing: None,
            zero_task_spawned: false,
            zero_fill_bytes: config.zero_fill_bytes,
            zero_fill_limit,
            preallocate_bytes: config.preallocate_bytes,
            segment_bytes_max: config.segment_bytes_max,
        };
        Ok((segment, RecoveryReport { end, truncated_bytes, torn_tail: scan.stopped_early }))
    }

    /// Creates an empty segment at `base`, replacing any leftover files of that name.
    pub(crate) async fn create(
        directory: &Path,
        base: Offset,
        config: &LogConfig,
    ) -> StorageResult<ActiveSegment> {
        let paths = SegmentPaths::new(directory, base);
        paths.remove()?;
        match Self::open(directory, base, config).await {
            Ok((segment, _)) => Ok(segment),
            Err(error) => {
                let _ = paths.remove();
                Err(error)
            }
        }
    }

    /// Whether appending `batch_bytes` more requires a roll first.
    pub(crate) fn is_full(
        &self,
        batch_bytes: u64,
        next_offset_delta: i64,
        config: &LogConfig,
        now: TimestampMs,
    ) -> bool {
        if self.appended.position == 0 {
            return false;
        }
        let too_big = self.appended.position + batch_bytes > config.segment_bytes_max;
        let offsets_overflow = self.appended.next_offset.0 + next_offset_delta - self.base_offset.0
            >= i64::from(u32::MAX);
        let too_old = self.first_append_ms.is_some_and(|first| {
            now.0.saturating_sub(first.0) >= config.segment_age_ms_max.min(i64::MAX as u64) as i64
        });
        too_big || offsets_overflow || too_old
    }

    /// Stages a batch (already validated and stamped) for the next write round.
    pub(crate) fn append(&mut self, batch: &[u8], meta: BatchMeta, now: TimestampMs) {
        self.first_append_ms.get_or_insert(now);
        let length = batch.len();
        let fits =
            self.chunks.last().is_some_and(|chunk| chunk.used + length <= chunk.buffer.len());
        if !fits {
            let file_position = align_down(self.appended.position);
            let head_len = (self.appended.position - file_position) as usize;
            let capacity = align_up(self.staging_bytes.max(head_len + length) as u64) as usize;
            let mut buffer = self.direct.alloc_buffer(capacity);
            let head = match self.chunks.last() {
                Some(previous) => {
                    let start = (file_position - previous.file_position) as usize;
                    &previous.buffer.as_slice()[start..previous.used]
                }
                None => &self.tail_page[..],
            };
            buffer.as_mut_slice()[..head_len].copy_from_slice(head);
            self.chunks.push(Chunk { buffer, file_position, used: head_len });
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.buffer.as_mut_slice()[chunk.used..chunk.used + length].copy_from_slice(batch);
            chunk.used += length;
        }
        self.appended = LogPoint { position: meta.end_position(), next_offset: meta.next_offset };
        self.unindexed.push_back(meta);
    }

    /// Hands out every staged chunk as one write round (`None` when nothing is staged).
    ///
    /// Sizes the next staging buffer from this round: up at once to what the round held (so
    /// a busy replica's next round fits one buffer, one write), down by half per round while
    /// its rounds are smaller, within [`STAGING_BUFFER_BYTES_MIN`] and
    /// [`LogConfig::write_buffer_bytes`].
    pub(crate) fn take_round(&mut self) -> Option<WriteRound> {
        let first = self.chunks.first()?;
        let round_bytes = (self.appended.position - first.file_position) as usize;
        let wanted = round_bytes.next_power_of_two().max(self.staging_bytes / 2);
        let floor = STAGING_BUFFER_BYTES_MIN.min(self.write_buffer_bytes);
        self.staging_bytes = wanted.clamp(floor, self.write_buffer_bytes.max(floor));
        let last = self.chunks.last()?;
        let tail_start = (align_down(self.appended.position) - last.file_position) as usize;
        self.round_tail_page = last.buffer.as_slice()[tail_start..last.used].to_vec();
        self.tail_page.clone_from(&self.round_tail_page);
        // The writes are disjoint, so a round may issue them all at once: a chunk that is not
        // the last ends at its last whole page (the next chunk starts with a copy of its
        // partial page); the last chunk's partial page is padded with zeros.
        let count = self.chunks.len();
        let writes = std::mem::take(&mut self.chunks)
            .into_iter()
            .enumerate()
            .filter_map(|(index, mut chunk)| {
                let (length, data_len) = if index + 1 < count {
                    let length = align_down(chunk.used as u64) as usize;
                    (length, length)
                } else {
                    let padded = align_up(chunk.used as u64) as usize;
                    chunk.buffer.as_mut_slice()[chunk.used..padded].fill(0);
                    (padded, chunk.used)
                };
                chunk.buffer.truncate(length);
                (length > 0).then_some(RoundWrite {
                    buffer: chunk.buffer,
                    position: chunk.file_position,
                    data_len,
                })
            })
            .collect();
        Some(WriteRound { writes, end: self.appended })
    }

    /// A round completed: its bytes are on the file. `written` are its buffers (file
    /// position, data bytes), kept for reads of the tail.
    pub(crate) fn finish_round(
        &mut self,
        end: LogPoint,
        written: impl IntoIterator<Item = (SharedBuffer, u64, usize)>,
    ) {
        self.written = end;
        self.written_tail_page = std::mem::take(&mut self.round_tail_page);
        self.recent.push_round(written);
    }

    /// Whether a zero-fill task should be spawned after a round that wrote up to `round_end`
    /// (see [`LogConfig::zero_fill_bytes`]): none is pending, and the log end is within half
    /// a fill of the zeroed end, with room left in the file to zero.
    pub(crate) fn zero_fill_due(&self, round_end: u64) -> bool {
        self.zero_fill_bytes > 0
            && !self.zero_task_spawned
            && round_end + self.zero_fill_bytes / 2 > self.zeroed_end
            && self.zeroed_end.max(align_up(self.appended.position)) < self.zero_fill_limit
    }

    /// Records that a zero-fill task was spawned (one at a time per segment).
    pub(crate) fn mark_zero_task_spawned(&mut self) {
        self.zero_task_spawned = true;
    }

    /// The range the zero-fill task writes, claimed as it starts (`None`: nothing to do): from
    /// past everything appended (so no round, written or to come, overlaps it without waiting)
    /// for [`LogConfig::zero_fill_bytes`], within the file's length.
    pub(crate) fn claim_zero_range(&mut self) -> Option<(u64, u64)> {
        let from = self.zeroed_end.max(align_up(self.appended.position));
        let to = align_down((from + align_up(self.zero_fill_bytes)).min(self.zero_fill_limit));
        let range = (from < to).then_some((from, to))?;
        self.zeroing = Some(range);
        Some(range)
    }

    /// Whether zeros may still be written at `[position, position + length)`: inside the
    /// claimed range and the file.
    pub(crate) fn zero_write_allowed(&self, position: u64, length: u64) -> bool {
        self.zeroing.is_some_and(|(_, to)| position + length <= to)
            && position + length <= self.zero_fill_limit
    }

    /// Zeros were written up to `end` (what lies between the zeroed end and the claim's start
    /// is appended data, written by the rounds).
    pub(crate) fn zero_filled(&mut self, end: u64) {
        self.zeroed_end = self.zeroed_end.max(end);
    }

    /// The zero-fill task ended (done, stopped or failed): the claim is released.
    pub(crate) fn zero_task_ended(&mut self) {
        self.zeroing = None;
        self.zero_task_spawned = false;
    }

    /// Whether a round ending at `round_end` would write into the range being zero-filled.
    pub(crate) fn round_must_wait_for_zeros(&self, round_end: u64) -> bool {
        self.zeroing.is_some_and(|(from, _)| align_up(round_end) > from)
    }

    /// Whether a zero-fill task is writing.
    pub(crate) fn zeroing(&self) -> bool {
        self.zeroing.is_some()
    }

    /// The length to extend the file to before a round writing up to `round_end`, if due: when
    /// the round would end within half an allocation step of the file's end, one more step
    /// (never past the segment's maximum size).
    pub(crate) fn preallocation_due(&self, round_end: u64) -> Option<u64> {
        let allocated = self.zero_fill_limit;
        if self.preallocate_bytes == 0 || allocated >= self.segment_bytes_max {
            return None;
        }
        if round_end + self.preallocate_bytes / 2 <= allocated {
            return None;
        }
        let target = (allocated.max(align_up(round_end)) + self.preallocate_bytes)
            .min(self.segment_bytes_max);
        (target > allocated).then_some(target)
    }

    /// The file was extended to `length` bytes.
    pub(crate) fn preallocated(&mut self, length: u64) {
        self.zero_fill_limit = self.zero_fill_limit.max(length);
    }

    /// Stops zero-filling (after a failure, or once the file was cut to `length` bytes).
    pub(crate) fn limit_zero_fill(&mut self, length: u64) {
        self.zero_fill_limit = self.zero_fill_limit.min(length);
        self.zeroed_end = self.zeroed_end.min(align_up(length));
    }

    /// A round failed: everything not yet written is dropped (its appenders get an error).
    pub(crate) fn abort_round(&mut self) {
        self.chunks.clear();
        self.appended = self.written;
        self.tail_page.clone_from(&self.written_tail_page);
        let written_end = self.written.position;
        self.unindexed.retain(|meta| meta.end_position() <= written_end);
        if self.written.position == 0 {
            self.first_append_ms = None;
        }
    }

    /// `point` (a written point) is durable: index the batches up to it.
    pub(crate) fn mark_durable(&mut self, point: LogPoint) -> StorageResult<()> {
        self.durable = point;
        while let Some(meta) = self.unindexed.front() {
            if meta.end_position() > point.position {
                break;
            }
            let meta = *meta;
            self.unindexed.pop_front();
            self.indexes.index_batch(&meta)?;
        }
        Ok(())
    }

    /// Resets the segment to end at `end` after the file was cut there (no staged data).
    pub(crate) fn reset_after_truncate(&mut self, end: LogPoint) -> StorageResult<()> {
        self.recent.clear();
        self.indexes.truncate(end)?;
        // The cut freed the blocks past it; whatever is there now is unwritten again.
        self.zeroed_end = align_up(end.position);
        self.zero_fill_limit = self.read_file.metadata().at(&self.paths.log)?.len();
        let (start, _) = self.indexes.rescan_start();
        let mut walk =
            HeaderWalk::new(&self.read_file, &self.paths.log, start, end.position, usize::MAX);
        while let Some(meta) = walk.next_batch()? {
            self.indexes.index_batch(&meta)?;
        }
        let mut tail_page = vec![0u8; (end.position - align_down(end.position)) as usize];
        {
            use std::os::unix::fs::FileExt;
            self.read_file
                .read_exact_at(&mut tail_page, align_down(end.position))
                .at(&self.paths.log)?;
        }
        self.tail_page.clone_from(&tail_page);
        self.written_tail_page = tail_page;
        self.chunks.clear();
        self.unindexed.clear();
        self.appended = end;
        self.written = end;
        self.durable = end;
        if end.position == 0 {
            self.first_append_ms = None;
        }
        Ok(())
    }

    /// Turns the segment (fully durable, file cut to its exact size) into a sealed one.
    pub(crate) fn into_sealed(mut self) -> StorageResult<(SealedSegment, Rc<File>)> {
        self.indexes.seal()?;
        let sealed = SealedSegment {
            base_offset: self.base_offset,
            next_offset: self.written.next_offset,
            size_bytes: self.written.position,
            paths: self.paths,
            indexes: self.indexes,
        };
        Ok((sealed, self.read_file))
    }
}

/// What recovery found at the end of the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Where the log ends now.
    pub end: LogPoint,
    /// Bytes cut from the file (torn batch, zero padding, garbage).
    pub truncated_bytes: u64,
    /// Whether the cut removed bytes that did not form a valid batch.
    pub torn_tail: bool,
}

/// An immutable segment.
pub(crate) struct SealedSegment {
    pub(crate) base_offset: Offset,
    pub(crate) next_offset: Offset,
    pub(crate) size_bytes: u64,
    pub(crate) paths: SegmentPaths,
    pub(crate) indexes: SegmentIndexes,
}

impl SealedSegment {
    /// Opens a sealed segment that ends where `next_offset` starts. A missing or inconsistent
    /// index is rebuilt by walking the batch headers; a walk that hits bad bytes indexes what
    /// precedes them and leaves the rest to fail on read.
    pub(crate) fn open(
        directory: &Path,
        base: Offset,
        next_offset: Offset,
        config: &LogConfig,
    ) -> StorageResult<SealedSegment> {
        let paths = SegmentPaths::new(directory, base);
        let file = File::open(&paths.log).at(&paths.log)?;
        let size_bytes = file.metadata().at(&paths.log)?.len();
        let end = LogPoint { position: size_bytes, next_offset };
        let mut indexes = SegmentIndexes::open(&paths, base, config, end)?;
        let last = indexes.offsets.last();
        let consistent = size_bytes == 0
            || (last.is_some_and(|entry| {
                header_matches(
                    &file,
                    u64::from(entry.position),
                    Offset(base.0 + i64::from(entry.relative_offset)),
                )
            }) && !indexes.times.is_empty());
        if !consistent {
            indexes.truncate(LogPoint { position: 0, next_offset: base })?;
            let mut walk =
                HeaderWalk::new(&file, &paths.log, 0, size_bytes, config.batch_bytes_max);
            loop {
                match walk.next_batch() {
                    Ok(Some(meta)) => indexes.index_batch(&meta)?,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%error, "sealed segment has bad bytes; indexed up to them");
                        break;
                    }
                }
            }
            indexes.seal()?;
        }
        // Opening read every entry; a sealed segment keeps none of those pages resident.
        indexes.release_pages();
        Ok(SealedSegment { base_offset: base, next_offset, size_bytes, paths, indexes })
    }

    pub(crate) fn max_timestamp(&self) -> Option<TimestampMs> {
        self.indexes.max_timestamp()
    }
}
