//! The read path. A read returns whole batches in `[start, upper)` as byte ranges of segment
//! files ([`FileSlice`]): the server splices them to a plaintext socket, or copies them with
//! [`crate::storage::ReplicaLog::read_into`] for TLS. Reads see only *written* bytes, never an
//! appended-but-unwritten or half-written batch.
//!
//! Verification: the splice path checks every batch header it returns (magic, a length that
//! stays inside the segment, offsets continuing from the previous batch); it cannot check the
//! CRC without reading the payload, which is what splice avoids. The copying path checks the
//! CRC of every batch. Either way a failed check is [`StorageError::Corruption`], never data.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use sluice_proto::ids::{Offset, TimestampMs};

use crate::storage::error::{StorageError, StorageResult};
use crate::storage::file_cache::SegmentFileCache;
use crate::storage::log::LogState;
use crate::storage::scan::{BatchMeta, HeaderWalk};
use crate::storage::segment::SegmentIndexes;

/// A range of whole batches in one segment file.
#[derive(Clone)]
pub struct FileSlice {
    file: Rc<File>,
    position: u64,
    length: u64,
    segment_base: Offset,
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
    end_position: u64,
    file: Rc<File>,
    path: &'a std::path::Path,
    indexes: &'a SegmentIndexes,
    max_timestamp: Option<TimestampMs>,
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
            end_position: segment.size_bytes,
            file: files.get_or_open(&segment.paths.log)?,
            path: &segment.paths.log,
            indexes: &segment.indexes,
            max_timestamp: segment.max_timestamp(),
        })
    });
    let active = &state.active;
    let active_view = SegmentView {
        base_offset: active.base_offset,
        end_position: active.written.position,
        file: Rc::clone(&active.read_file),
        path: &active.paths.log,
        indexes: &active.indexes,
        max_timestamp: None,
    };
    sealed.chain(std::iter::once(Ok(active_view)))
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
        let mut walk =
            HeaderWalk::new(&view.file, view.path, position, view.end_position, batch_bytes_max);
        let mut slice: Option<(u64, u64)> = None;
        let mut done = false;
        while let Some(meta) = walk.next_batch()? {
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
            result.slices.push(FileSlice {
                file: Rc::clone(&view.file),
                position,
                length,
                segment_base: view.base_offset,
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
            HeaderWalk::new(&view.file, view.path, position, view.end_position, batch_bytes_max);
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
            HeaderWalk::new(&view.file, view.path, 0, view.end_position, batch_bytes_max);
        while let Some(meta) = walk.next_batch()? {
            on_batch(&meta);
        }
    }
    Ok(())
}
