//! Small checkpoint files of a replica: high watermark, log start offset and the leader-epoch
//! history. Written atomically: temp file, fsync, rename over the old one, fsync the directory,
//! so a crash leaves either the old or the new content. Read back defensively: a file that does
//! not parse is reported as `None` and the caller rebuilds the value.
//!
//! These writes are rare and tiny, so they use blocking std calls on the owning core.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use sluice_proto::ids::{LeaderEpoch, Offset};

use crate::storage::error::{IoContext, StorageResult};

/// File name of the high-watermark checkpoint.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark.checkpoint";
/// File name of the log-start-offset checkpoint.
pub const LOG_START_FILE: &str = "log-start-offset.checkpoint";
/// File name of the leader-epoch checkpoint.
pub const LEADER_EPOCH_FILE: &str = "leader-epoch.checkpoint";
const FORMAT_VERSION: &str = "1";
/// Leader-epoch entries kept; older ones are dropped (the SC bumps epochs rarely).
pub const LEADER_EPOCH_ENTRIES_MAX: usize = 4096;

/// Writes `contents` to `directory/name` atomically.
pub fn write_atomic(directory: &Path, name: &str, contents: &[u8]) -> StorageResult<()> {
    let final_path = directory.join(name);
    let temp_path = directory.join(format!("{name}.tmp"));
    {
        let mut file = File::create(&temp_path).at(&temp_path)?;
        file.write_all(contents).at(&temp_path)?;
        file.sync_all().at(&temp_path)?;
    }
    fs::rename(&temp_path, &final_path).at(&final_path)?;
    sync_directory(directory)
}

/// fsync(2) on a directory, making renames and unlinks in it durable.
pub fn sync_directory(directory: &Path) -> StorageResult<()> {
    File::open(directory).and_then(|dir| dir.sync_all()).at(directory)
}

/// Writes a single-offset checkpoint.
pub fn write_offset(directory: &Path, name: &str, offset: Offset) -> StorageResult<()> {
    write_atomic(directory, name, format!("{FORMAT_VERSION}\n{}\n", offset.0).as_bytes())
}

/// Reads a single-offset checkpoint; `None` when absent or malformed.
pub fn read_offset(directory: &Path, name: &str) -> Option<Offset> {
    let text = fs::read_to_string(directory.join(name)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != FORMAT_VERSION {
        return None;
    }
    let value: i64 = lines.next()?.trim().parse().ok()?;
    (value >= 0).then_some(Offset(value))
}

/// One leader epoch and the first offset written under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: LeaderEpoch,
    /// First offset appended with that epoch.
    pub start_offset: Offset,
}

/// For a follower's `epoch`: the largest epoch `<=` it in `entries` (a leader-epoch history,
/// strictly increasing) and the offset where it ended: the next entry's start, or `log_end`
/// for the last one. `None` when every entry is newer (or there is none).
pub fn end_offset_for_epoch(
    entries: &[EpochEntry],
    log_end: Offset,
    epoch: LeaderEpoch,
) -> Option<(LeaderEpoch, Offset)> {
    let index = entries.partition_point(|entry| entry.epoch <= epoch).checked_sub(1)?;
    let end = entries.get(index + 1).map_or(log_end, |next| next.start_offset);
    Some((entries[index].epoch, end))
}

/// Writes the leader-epoch history.
pub fn write_epochs(directory: &Path, entries: &[EpochEntry]) -> StorageResult<()> {
    let mut text = format!("{FORMAT_VERSION}\n{}\n", entries.len());
    for entry in entries {
        text.push_str(&format!("{} {}\n", entry.epoch.0, entry.start_offset.0));
    }
    write_atomic(directory, LEADER_EPOCH_FILE, text.as_bytes())
}

/// Reads the leader-epoch history; `None` when absent, malformed or not strictly increasing.
pub fn read_epochs(directory: &Path) -> Option<Vec<EpochEntry>> {
    let text = fs::read_to_string(directory.join(LEADER_EPOCH_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != FORMAT_VERSION {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    if count > LEADER_EPOCH_ENTRIES_MAX {
        return None;
    }
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count);
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let epoch = LeaderEpoch(fields.next()?.parse().ok()?);
        let start_offset = Offset(fields.next()?.parse().ok()?);
        if let Some(last) = entries.last() {
            if epoch <= last.epoch || start_offset < last.start_offset {
                return None;
            }
        }
        entries.push(EpochEntry { epoch, start_offset });
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_offset(dir.path(), HIGH_WATERMARK_FILE), None);
        write_offset(dir.path(), HIGH_WATERMARK_FILE, Offset(42)).unwrap();
        assert_eq!(read_offset(dir.path(), HIGH_WATERMARK_FILE), Some(Offset(42)));
        fs::write(dir.path().join(HIGH_WATERMARK_FILE), b"1\nnot a number\n").unwrap();
        assert_eq!(read_offset(dir.path(), HIGH_WATERMARK_FILE), None);
        assert!(!dir.path().join(format!("{HIGH_WATERMARK_FILE}.tmp")).exists());
    }

    #[test]
    fn epochs_round_trip_and_reject_disorder() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            EpochEntry { epoch: LeaderEpoch(1), start_offset: Offset(0) },
            EpochEntry { epoch: LeaderEpoch(3), start_offset: Offset(10) },
        ];
        write_epochs(dir.path(), &entries).unwrap();
        assert_eq!(read_epochs(dir.path()), Some(entries));
        fs::write(dir.path().join(LEADER_EPOCH_FILE), b"1\n2\n3 10\n1 0\n").unwrap();
        assert_eq!(read_epochs(dir.path()), None);
        fs::write(dir.path().join(LEADER_EPOCH_FILE), b"1\n99999999\n").unwrap();
        assert_eq!(read_epochs(dir.path()), None);
    }
}
