//! The read path. A read returns whole batches in `[start, upper)` as byte ranges of segment
//! files ([`FileSlice`]): the server splices them to a plaintext socket, or copies them with
//! [`crate::storage::ReplicaLog::read_into`] for TLS. Reads see only *written* bytes, never an
//! appended-but-unwritten or half-written batch.
//!
//! Boundaries without reads: a read walks the header of its first batch (the one holding
//! `start`) and then takes batch boundaries from what the log already knows: the offset
//! index (one entry per `index_interval_bytes` of durable batches, each the start of a
//! batch), the active segment's durable and written ends, and each segment's end. Only
//! batches no index entry covers (the durable tail's last batch, runs of small batches
//! between entries) have their headers read, one page at a time. So a fetch of megabytes
//! costs one small `pread`, not a read of the records that `sendfile` then sends again (the
//! 256 KiB header chunks this replaced were a third of the SPU's CPU in a catch-up).
//! Bytes: at least one batch, then whole batches while they fit in `bytes_max`; a read may
//! stop short of `bytes_max` by less than one index interval plus one batch, where the index
//! cannot tell whether the next batch fits without a read.
//!
//! Verification: the splice path checks the headers it walks (magic, a length that stays
//! inside the segment, offsets continuing from the previous batch) and trusts the index for
//! the rest (entries are checked against the log when a segment is opened); it cannot check
//! the CRC without reading the payload, which is what splice avoids, so a spliced batch is
//! checked by the client's CRC-32C. The copying path checks the CRC of every batch: a failed
//! check there is [`StorageError::Corruption`], never data.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use sluice_proto::ids::{Offset, TimestampMs};

use crate::storage::error::{StorageError, StorageResult};
use crate::storage::file_cache::SegmentFileCache;
use crate::storage::log::LogState;
use crate::storage::recent::{MemoryPiece, RecentWrites};
use crate::storage::scan::{BatchMeta, HeaderWalk, HEADER_CHUNK_BYTES};
use crate::storage::segment::{LogPoint, SegmentIndexes};

/// A range of whole batches in one segment file.
#[derive(Clone)]
pub struct FileSlice {
    file: Rc<File>,
    position: u64,
    length: u64,
    segment_base: Offset,
    memory: Vec<MemoryPiece>,
}

impl FileSlice {
    /// The shared read handle; keeps the file readable even if the segment is deleted.
    pub fn file(&self) -> &Rc<File> {
        &self.file
    }
    /// Raw descriptor for splice(2)/sendfile(2); valid while this slice (or the file) lives.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
    /// Byte position of the first batch in the file.
    pub fn position(&self) -> u64 {
        self.position
    }
    /// Bytes of whole batches from `position`.
    pub fn length(&self) -> u64 {
        self.length
    }
    /// Base offset of the segment the slice belongs to.
    pub fn segment_base(&self) -> Offset {
        self.segment_base
    }
    /// The slice's bytes in memory, in order (the newest written bytes of the active segment,
    /// see [`crate::storage::recent`]); empty when they must be read from the file.
    pub fn memory(&self) -> &[MemoryPiece] {
        &self.memory
    }
}

/// What a read returned.
#[derive(Clone, Default)]
pub struct ReadSlices {
    /// Ranges in log order; empty when nothing is readable below the upper bound.
    pub slices: Vec<FileSlice>,
    /// Base offset of the first returned batch (may be below the requested start).
    pub first_offset: Option<Offset>,
    /// Offset after the last returned batch: where the next read continues.
    pub next_offset: Offset,
    /// Total bytes in `slices`.
    pub bytes: u64,
}

/// What a copying read appended to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedRead {
    /// Offset after the last copied batch.
    pub next_offset: Offset,
    /// Bytes appended.
    pub bytes: u64,
    /// Batches appended.
    pub batches: u32,
}

/// One segment as the read path sees it.
struct SegmentView<'a> {
    base_offset: Offset,
    /// Where the segment's (written) batches end: a batch boundary like the index entries.
    end: LogPoint,
    /// The active segment's durable end, another boundary (the index covers only the
    /// durable batches, and not the start of the first one past this point).
    durable: Option<LogPoint>,
    file: Rc<File>,
    path: &'a std::path::Path,
    indexes: &'a SegmentIndexes,
    max_timestamp: Option<TimestampMs>,
    /// The active segment's newest written bytes.
    recent: Option<&'a RecentWrites>,
}

fn segment_views<'a>(
    state: &'a LogState,
    files: &'a SegmentFileCache,
    from: Offset,
) -> impl Iterator<Item = StorageResult<SegmentView<'a>>> + 'a {
    let first_base = state.sealed.range(..=from).next_back().map_or(from, |(base, _)| *base);
    let sealed = state.sealed.range(first_base..).map(move |(_, segment)| {
        Ok(SegmentView {
            base_offset: segment.base_offset,
            end: LogPoint { position: segment.size_bytes, next_offset: segment.next_offset },
            durable: None,
            file: files.get_or_open(&segment.paths.log)?,
            path: &segment.paths.log,
            indexes: &segment.indexes,
            max_timestamp: segment.max_timestamp(),
            recent: None,
        })
    });
    let active = &state.active;
    let active_view = SegmentView {
        base_offset: active.base_offset,
        end: active.written,
        durable: Some(active.durable).filter(|point| point.position > 0),
        file: Rc::clone(&active.read_file),
        path: &active.paths.log,
        indexes: &active.indexes,
        max_timestamp: None,
        recent: Some(&active.recent),
    };
    sealed.chain(std::iter::once(Ok(active_view)))
}

impl SegmentView<'_> {
    /// The furthest batch boundary past `here` at or below `position_max` and `offset_max`,
    /// and whether batches that fit may follow it unseen. Boundaries: the segment's end, the
    /// active segment's durable end, and the offset index's entries (one per
    /// `index_interval_bytes` of durable batches). Past an index entry chosen by the byte
    /// limit with a later entry beyond that limit, whatever could still fit starts within one
    /// index interval: the read stops there rather than read headers to find out. Past the
    /// last entry or the durable end the batches are not indexed, so the walk goes on.
    fn boundary(
        &self,
        here: u64,
        position_max: u64,
        offset_max: Offset,
    ) -> Option<(LogPoint, bool)> {
        let fits =
            |point: &LogPoint| point.position <= position_max && point.next_offset <= offset_max;
        if fits(&self.end) {
            return (self.end.position > here).then_some((self.end, false));
        }
        let walk_on = |point: LogPoint| {
            (point.position > here).then_some((point, point.next_offset < offset_max))
        };
        if let Some(durable) = self.durable.filter(fits) {
            return walk_on(durable);
        }
        let by_bytes = self.indexes.entry_at_or_below_position(position_max)?;
        let by_offset = self.indexes.entry_at_or_below_offset(offset_max)?;
        if by_offset.position < by_bytes.position {
            return walk_on(by_offset);
        }
        if Some(by_bytes) == self.indexes.last_entry() {
            return walk_on(by_bytes);
        }
        (by_bytes.position > here).then_some((by_bytes, false))
    }
}

/// Whole batches from `start` (the batch holding it), up to `bytes_max` (at least one batch),
/// stopping before any batch that does not end at or below `upper`.
pub(crate) fn read_slices(
    state: &LogState,
    files: &SegmentFileCache,
    batch_bytes_max: usize,
    start: Offset,
    bytes_max: u64,
    upper: Offset,
) -> StorageResult<ReadSlices> {
    let log_end = state.active.written.next_offset;
    if start < state.log_start || start > log_end {
        return Err(StorageError::OffsetOutOfRange {
            requested: start,
            log_start: state.log_start,
            log_end,
        });
    }
    let upper = upper.min(log_end);
    let mut result = ReadSlices { next_offset: start, ..ReadSlices::default() };
    if start >= upper {
        return Ok(result);
    }
    for view in segment_views(state, files, start) {
        let view = view?;
        let cursor = result.next_offset;
        let position =
            if result.first_offset.is_none() { view.indexes.position_floor(cursor) } else { 0 };
        let mut walk = HeaderWalk::with_chunk(
            &view.file,
            view.path,
            position,
            view.end.position,
            batch_bytes_max,
            HEADER_CHUNK_BYTES,
        )
        .with_memory(view.recent);
        let mut slice: Option<(u64, u64)> = None;
        let mut done = false;
        loop {
            if let Some((at, len)) = slice {
                // Past the first batch, skip the batches the index (or the segment's end)
                // vouches for instead of reading their headers.
                let here = walk.position();
                let position_max = here + (bytes_max - result.bytes);
                if let Some((point, more)) = view.boundary(here, position_max, upper) {
                    let skipped = point.position - here;
                    slice = Some((at, len + skipped));
                    result.bytes += skipped;
                    result.next_offset = point.next_offset;
                    walk.seek(point.position, point.next_offset);
                    let full = result.bytes >= bytes_max || result.next_offset >= upper;
                    if full || !more {
                        // Short of the segment's end, the next batch would not fit (or
                        // might not: it is not worth a read to find out).
                        done = full || point != view.end;
                        break;
                    }
                }
            }
            let Some(meta) = walk.next_batch()? else { break };
            if meta.next_offset <= result.next_offset {
                continue;
            }
            if meta.base_offset > result.next_offset {
                return Err(StorageError::corruption(
                    view.path,
                    meta.position,
                    format!(
                        "gap: batch starts at {} where {} was expected",
                        meta.base_offset, result.next_offset
                    ),
                ));
            }
            if meta.next_offset > upper
                || (result.bytes > 0 && result.bytes + meta.length > bytes_max)
            {
                done = true;
                break;
            }
            slice = Some(
                slice.map_or((meta.position, meta.length), |(at, len)| (at, len + meta.length)),
            );
            result.first_offset.get_or_insert(meta.base_offset);
            result.bytes += meta.length;
            result.next_offset = meta.next_offset;
            if result.bytes >= bytes_max || result.next_offset >= upper {
                done = true;
                break;
            }
        }
        if let Some((position, length)) = slice {
            let memory =
                view.recent.and_then(|recent| recent.pieces(position, length)).unwrap_or_default();
            result.slices.push(FileSlice {
                file: Rc::clone(&view.file),
                position,
                length,
                segment_base: view.base_offset,
                memory,
            });
        }
        if done {
            break;
        }
    }
    Ok(result)
}

/// Base offset of the first batch whose max timestamp is `>= timestamp`, if any.
pub(crate) fn offset_for_timestamp(
    state: &LogState,
    files: &SegmentFileCache,
    batch_bytes_max: usize,
    timestamp: TimestampMs,
) -> StorageResult<Option<Offset>> {
    for view in segment_views(state, files, state.log_start) {
        let view = view?;
        if view.max_timestamp.is_some_and(|max| max < timestamp) {
            continue;
        }
        let position = view.indexes.position_for_timestamp(timestamp);
        let mut walk =
            HeaderWalk::new(&view.file, view.path, position, view.end.position, batch_bytes_max);
        while let Some(meta) = walk.next_batch()? {
            if meta.max_timestamp >= timestamp && meta.next_offset > state.log_start {
                return Ok(Some(meta.base_offset.max(state.log_start)));
            }
        }
    }
    Ok(None)
}

/// Walks every batch header of the log (used to rebuild the leader-epoch history).
pub(crate) fn for_each_batch(
    state: &LogState,
    files: &SegmentFileCache,
    batch_bytes_max: usize,
    mut on_batch: impl FnMut(&BatchMeta),
) -> StorageResult<()> {
    let first = state.sealed.keys().next().copied().unwrap_or(state.active.base_offset);
    for view in segment_views(state, files, first) {
        let view = view?;
        let mut walk =
            HeaderWalk::new(&view.file, view.path, 0, view.end.position, batch_bytes_max);
        while let Some(meta) = walk.next_batch()? {
            on_batch(&meta);
        }
    }
    Ok(())
}
