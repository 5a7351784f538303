//! Replicas this SPU no longer hosts (their topic was deleted, or the SC placed them
//! elsewhere) give their disk space back, after a grace period.
//!
//! When a core drops a replica it closes the log (everything appended becomes durable) and
//! renames the replica directory to `<key>.deleted-<unix ms>` in the same parent: from then
//! on nothing opens it (replicas are opened by their exact key), and a topic created again
//! with the same name starts from an empty directory. Core 0 removes such directories (on
//! glommio's blocking thread, so that the core keeps serving) once they are older than
//! `--deleted-retention-ms` (default 60 s, as Kafka's
//! `file.delete.delay.ms`): the delay leaves an operator a window to recover the files of a
//! replica dropped by mistake (for example an SC pointed at the wrong metadata store).
//!
//! Removal is paced (`--delete-bytes-per-second`, default 512 MiB/s; 0 for no limit): each
//! file is cut from its end in [`DELETE_CHUNK_BYTES`] steps with a pause after each, then
//! unlinked. Freeing gigabytes at once makes the file system release (and, on a volume
//! mounted with `discard`, trim) all of it in one journal commit, which every fdatasync of
//! every replica then waits behind; paced, each commit carries a bounded share.
//!
//! Failure modes: a rename or removal that fails is logged and tried again (removal on the
//! next pass); nothing else depends on it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The suffix marking a dropped replica's directory.
const DELETED_MARK: &str = ".deleted-";

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// Renames a dropped replica's `directory` out of the way; returns the new path.
pub fn mark_deleted(directory: &Path) -> std::io::Result<PathBuf> {
    let name = directory.file_name().map(|name| name.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let mut stamp = unix_ms(SystemTime::now());
    loop {
        let target = directory.with_file_name(format!("{name}{DELETED_MARK}{stamp}"));
        if !target.exists() {
            std::fs::rename(directory, &target)?;
            return Ok(target);
        }
        stamp += 1;
    }
}

/// Bytes cut from a file's end per step of a paced removal.
pub const DELETE_CHUNK_BYTES: u64 = 64 << 20;

/// Removes `path` at most `bytes_per_second` fast (0: at once): cuts it from the end in
/// [`DELETE_CHUNK_BYTES`] steps, pausing after each, then unlinks it.
fn remove_file_paced(path: &Path, bytes_per_second: u64) -> std::io::Result<()> {
    if bytes_per_second > 0 {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut length = file.metadata()?.len();
        let pause = Duration::from_secs_f64(DELETE_CHUNK_BYTES as f64 / bytes_per_second as f64);
        while length > DELETE_CHUNK_BYTES {
            length -= DELETE_CHUNK_BYTES;
            file.set_len(length)?;
            std::thread::sleep(pause);
        }
    }
    std::fs::remove_file(path)
}

/// Removes `directory` and what it holds, files paced by [`remove_file_paced`].
fn remove_directory_paced(directory: &Path, bytes_per_second: u64) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_directory_paced(&entry.path(), bytes_per_second)?;
        } else {
            remove_file_paced(&entry.path(), bytes_per_second)?;
        }
    }
    std::fs::remove_dir(directory)
}

/// Removes the dropped replicas' directories under `replicas_dir` marked more than
/// `retention` ago, at most `bytes_per_second` fast (0: no limit); returns how many were
/// removed. Blocks for as long as the pacing takes: run it off the executors.
pub fn purge(
    replicas_dir: &Path,
    retention: Duration,
    now: SystemTime,
    bytes_per_second: u64,
) -> usize {
    let Ok(entries) = std::fs::read_dir(replicas_dir) else { return 0 };
    let now_ms = unix_ms(now);
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, stamp)) = name.rsplit_once(DELETED_MARK) else { continue };
        let Ok(stamp) = stamp.parse::<u64>() else { continue };
        if now_ms.saturating_sub(stamp) < retention.as_millis() as u64 {
            continue;
        }
        match remove_directory_paced(&entry.path(), bytes_per_second) {
            Ok(()) => {
                tracing::info!(directory = %entry.path().display(), "dropped replica's files removed");
                removed += 1;
            }
            Err(error) => {
                tracing::warn!(directory = %entry.path().display(), %error, "cannot remove a dropped replica's files; will retry");
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_directories_are_purged_after_the_retention_only() {
        let root = tempfile::tempdir().unwrap();
        let replica = root.path().join("events-0");
        std::fs::create_dir_all(&replica).unwrap();
        std::fs::write(replica.join("00000000000000000000.log"), b"x").unwrap();
        let kept = root.path().join("events-1");
        std::fs::create_dir_all(&kept).unwrap();
        let marked = mark_deleted(&replica).unwrap();
        assert!(!replica.exists() && marked.exists());
        assert!(marked.file_name().unwrap().to_string_lossy().starts_with("events-0.deleted-"));
        // A replica of the same name can be marked again while the first is still there.
        std::fs::create_dir_all(&replica).unwrap();
        let again = mark_deleted(&replica).unwrap();
        assert_ne!(again, marked);
        let now = SystemTime::now();
        assert_eq!(purge(root.path(), Duration::from_secs(60), now, 0), 0);
        let later = now + Duration::from_secs(61);
        assert_eq!(purge(root.path(), Duration::from_secs(60), later, 0), 2);
        assert!(!marked.exists() && !again.exists() && kept.exists());
    }

    #[test]
    fn paced_removal_cuts_large_files_in_steps_and_removes_everything() {
        let root = tempfile::tempdir().unwrap();
        let replica = root.path().join("big-0");
        std::fs::create_dir_all(replica.join("nested")).unwrap();
        // Sparse files: sizes of several steps without writing gigabytes.
        let large = replica.join("00000000000000000000.log");
        std::fs::File::create(&large).unwrap().set_len(3 * DELETE_CHUNK_BYTES + 5).unwrap();
        std::fs::write(replica.join("00000000000000000000.index"), b"index").unwrap();
        std::fs::write(replica.join("nested").join("leftover"), b"x").unwrap();
        let marked = mark_deleted(&replica).unwrap();
        // A high rate keeps the pauses short; the steps still happen (3 cuts, then unlink).
        let removed =
            purge(root.path(), Duration::ZERO, SystemTime::now(), DELETE_CHUNK_BYTES * 1000);
        assert_eq!(removed, 1);
        assert!(!marked.exists(), "the marked directory and everything in it is gone");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
