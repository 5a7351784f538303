//! Disk-full behaviour on a real, small filesystem: a 48 MiB ext4 image loop-mounted in a
//! temporary directory (the test needs root, as the project's test machines run it; without the
//! privilege it fails and says so). The volume is actually filled: appends then fail with
//! `StorageFull` (from the kernel's ENOSPC and from the configured free-space floor), nothing
//! already written is damaged, and appends resume once space is freed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_proto::ids::{LeaderEpoch, Offset, TimestampMs};
use sluice_spu::storage::test_support::{make_batch, run};
use sluice_spu::storage::{LogConfig, ReplicaLog, SegmentFileCache, StorageError};

/// A loop device with an ext4 image mounted on it. Drop unmounts (lazily when something still
/// holds the volume) and detaches the loop device, so nothing outlives the test.
struct LoopMount {
    mount_point: PathBuf,
    loop_device: String,
    _image_dir: tempfile::TempDir,
}

impl LoopMount {
    fn new(size_mib: u64) -> LoopMount {
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("volume.img");
        let mount_point = image_dir.path().join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        std::fs::File::create(&image).unwrap().set_len(size_mib << 20).unwrap();
        let mkfs = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image).status();
        assert!(mkfs.is_ok_and(|status| status.success()), "mkfs.ext4 failed: install e2fsprogs");
        // Tests run in parallel: two `losetup --find` at once can pick the same free device.
        static ATTACH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _attaching = ATTACH.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let attach = Command::new("losetup").args(["--find", "--show"]).arg(&image).output();
        let attach = attach.expect("losetup not runnable: install util-linux");
        assert!(
            attach.status.success(),
            "cannot attach a loop device (needs root/CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&attach.stderr)
        );
        let loop_device = String::from_utf8_lossy(&attach.stdout).trim().to_string();
        eprintln!("{} on {loop_device}", image.display());
        let mount = Command::new("mount").arg(&loop_device).arg(&mount_point).output().unwrap();
        if !mount.status.success() {
            let _ = Command::new("losetup").arg("-d").arg(&loop_device).status();
            panic!(
                "cannot mount a test filesystem (needs root/CAP_SYS_ADMIN): {}",
                String::from_utf8_lossy(&mount.stderr)
            );
        }
        LoopMount { mount_point, loop_device, _image_dir: image_dir }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            eprintln!("{} busy; unmounting lazily", self.mount_point.display());
            let _ = Command::new("umount").arg("--lazy").arg(&self.mount_point).status();
        }
        // On a device still in use this only sets autoclear: it detaches on the last close.
        let _ = Command::new("losetup").arg("-d").arg(&self.loop_device).status();
    }
}

/// Deletes the filler file and commits the deletion: ext4 counts the freed blocks as free only
/// once the journal transaction holding the unlink commits (fsync of the directory forces it).
fn free_space(filler: &Path) {
    std::fs::remove_file(filler).unwrap();
    std::fs::File::open(filler.parent().unwrap()).unwrap().sync_all().unwrap();
}

/// Writes a filler file until the kernel says ENOSPC, leaving `spare_bytes` free.
fn fill(path: &Path, spare_bytes: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x11u8; 64 * 1024];
    loop {
        let space = sluice_spu::storage::disk_guard::volume_space(path.parent().unwrap()).unwrap();
        if space.free_bytes <= spare_bytes + chunk.len() as u64 {
            break;
        }
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    file.sync_all().unwrap();
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 20,
        index_interval_bytes: 4096,
        free_bytes_min: 0,
        free_space_ratio_min: 0.0,
        ..LogConfig::default()
    }
}

async fn read_everything(log: &ReplicaLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cursor = log.log_start_offset();
    while cursor < log.log_end_offset() {
        cursor = log
            .read_into(cursor, 1 << 20, log.log_end_offset(), &mut out)
            .expect("read")
            .next_offset;
    }
    out
}

/// Appends durable batches until one fails; returns the bytes appended and the error.
async fn append_until_error(log: &ReplicaLog, limit: usize) -> (Vec<u8>, Option<StorageError>) {
    let mut written = Vec::new();
    for index in 0..limit {
        let mut batch = make_batch(16, 1000, TimestampMs(index as i64), index as u8);
        match log.append(&mut batch, LeaderEpoch(1)).await {
            Ok(appended) => match log.wait_durable(&appended).await {
                Ok(()) => written.extend_from_slice(&batch),
                Err(error) => return (written, Some(error)),
            },
            Err(error) => return (written, Some(error)),
        }
    }
    (written, None)
}

#[test]
fn kernel_enospc_is_storage_full_and_nothing_is_damaged() {
    let volume = LoopMount::new(48);
    let replica = volume.mount_point.join("spu-1/topic-0");
    let filler = volume.mount_point.join("filler");
    run(move || async move {
        let log = ReplicaLog::open(&replica, config(), SegmentFileCache::default()).await.unwrap();
        let (mut before, error) = append_until_error(&log, 20).await;
        assert!(error.is_none());
        fill(&filler, 0);
        // Appends go on inside the preallocated segment, then the next roll needs space.
        let (more, error) = append_until_error(&log, 200).await;
        before.extend_from_slice(&more);
        let error = error.expect("a full volume must stop appends");
        assert!(matches!(error, StorageError::StorageFull { .. }), "got {error}");
        assert!(error.is_retry_safe());
        assert_eq!(read_everything(&log).await, before, "durable data intact after ENOSPC");
        // Reopening on the full volume works and gives the same log.
        log.close().await.unwrap();
        let log = ReplicaLog::open(&replica, config(), SegmentFileCache::default()).await.unwrap();
        assert_eq!(read_everything(&log).await, before);
        let error = append_until_error(&log, 5).await.1.expect("still full");
        assert!(matches!(error, StorageError::StorageFull { .. }), "got {error}");
        // Space comes back: appends resume where the log ended.
        free_space(&filler);
        let end = log.log_end_offset();
        let (after, error) = append_until_error(&log, 10).await;
        assert!(error.is_none(), "appends resume: {error:?}");
        assert!(log.log_end_offset() > end);
        before.extend_from_slice(&after);
        assert_eq!(read_everything(&log).await, before);
        log.close().await.unwrap();
    });
}

#[test]
fn free_space_floor_refuses_before_the_volume_is_full() {
    let volume = LoopMount::new(48);
    let replica = volume.mount_point.join("spu-1/topic-0");
    let filler = volume.mount_point.join("filler");
    run(move || async move {
        let floor = LogConfig { free_bytes_min: 12 << 20, ..config() };
        let log =
            ReplicaLog::open(&replica, floor.clone(), SegmentFileCache::default()).await.unwrap();
        let (mut before, error) = append_until_error(&log, 10).await;
        assert!(error.is_none());
        fill(&filler, 14 << 20);
        let (more, error) = append_until_error(&log, 2000).await;
        before.extend_from_slice(&more);
        let error = error.expect("the floor must stop appends");
        assert!(
            matches!(error, StorageError::StorageFull { required_bytes, .. } if required_bytes == 12 << 20),
            "got {error}"
        );
        let free =
            sluice_spu::storage::disk_guard::volume_space(&volume.mount_point).unwrap().free_bytes;
        assert!(free > 8 << 20, "refused while space was still left ({free} bytes)");
        assert_eq!(read_everything(&log).await, before);
        free_space(&filler);
        let (after, error) = append_until_error(&log, 5).await;
        assert!(error.is_none(), "appends resume: {error:?}");
        before.extend_from_slice(&after);
        assert_eq!(read_everything(&log).await, before);
        assert!(log.log_end_offset() > Offset(0));
        log.close().await.unwrap();
    });
}
