//! Refuses appends while the data volume is nearly full, so that a replica fails cleanly with
//! [`StorageError::StorageFull`] instead of half-way through a write. Free space comes from
//! statvfs(2), re-read at most every [`RECHECK_INTERVAL`] or [`RECHECK_BYTES`] of appends while
//! space is plentiful, and on every append while it is short (so appends resume at once).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::storage::config::LogConfig;
use crate::storage::error::{StorageError, StorageResult};

/// Longest time a free-space reading is trusted.
pub const RECHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Most bytes appended on one free-space reading.
pub const RECHECK_BYTES: u64 = 4 << 20;

/// Free and total bytes of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSpace {
    /// Bytes available to unprivileged writers.
    pub free_bytes: u64,
    /// Size of the volume.
    pub total_bytes: u64,
}

/// statvfs(2) of the volume holding `path`.
pub fn volume_space(path: &Path) -> StorageResult<VolumeSpace> {
    let stats = rustix::fs::statvfs(path).map_err(|errno| StorageError::io(path, errno.into()))?;
    Ok(VolumeSpace {
        free_bytes: stats.f_bavail.saturating_mul(stats.f_frsize),
        total_bytes: stats.f_blocks.saturating_mul(stats.f_frsize),
    })
}

/// The floor of free bytes under which appends are refused.
pub fn required_free_bytes(config: &LogConfig, total_bytes: u64) -> u64 {
    let by_ratio = (total_bytes as f64 * config.free_space_ratio_min) as u64;
    by_ratio.max(config.free_bytes_min)
}

pub(crate) struct DiskGuard {
    directory: PathBuf,
    last: Option<(Instant, VolumeSpace)>,
    bytes_since_check: u64,
}

impl DiskGuard {
    pub(crate) fn new(directory: &Path) -> DiskGuard {
        DiskGuard { directory: directory.to_path_buf(), last: None, bytes_since_check: 0 }
    }

    /// Ok when `incoming_bytes` may be appended.
    pub(crate) fn check(&mut self, config: &LogConfig, incoming_bytes: u64) -> StorageResult<()> {
        let stale = match self.last {
            None => true,
            Some((at, space)) => {
                at.elapsed() >= RECHECK_INTERVAL
                    || self.bytes_since_check >= RECHECK_BYTES
                    || space.free_bytes
                        < required_free_bytes(config, space.total_bytes) + incoming_bytes
            }
        };
        if stale {
            self.refresh()?;
        }
        let Err(error) = self.admit(config, incoming_bytes) else { return Ok(()) };
        if stale {
            return Err(error);
        }
        // Never refuse on a cached figure: space may have been freed since it was read.
        self.refresh()?;
        self.admit(config, incoming_bytes)
    }

    fn refresh(&mut self) -> StorageResult<()> {
        self.last = Some((Instant::now(), volume_space(&self.directory)?));
        self.bytes_since_check = 0;
        Ok(())
    }

    fn admit(&mut self, config: &LogConfig, incoming_bytes: u64) -> StorageResult<()> {
        let Some((_, space)) = self.last else { return Ok(()) };
        let required_bytes = required_free_bytes(config, space.total_bytes);
        let free_after = space.free_bytes.saturating_sub(self.bytes_since_check + incoming_bytes);
        if free_after < required_bytes {
            return Err(StorageError::StorageFull { free_bytes: space.free_bytes, required_bytes });
        }
        self.bytes_since_check += incoming_bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_free_space_and_resumes_when_lowered() {
        let dir = tempfile::tempdir().unwrap();
        let space = volume_space(dir.path()).unwrap();
        assert!(space.total_bytes > 0);
        let mut config = LogConfig { free_space_ratio_min: 0.0, ..LogConfig::default() };
        config.free_bytes_min = space.free_bytes + (1 << 30);
        let mut guard = DiskGuard::new(dir.path());
        let error = guard.check(&config, 100).unwrap_err();
        assert!(matches!(error, StorageError::StorageFull { .. }));
        assert!(error.is_retry_safe());
        config.free_bytes_min = 0;
        guard.check(&config, 100).unwrap();
    }
}
