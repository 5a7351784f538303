//! Disk-full behaviour on a real, small filesystem: a 48 MiB ext4 image loop-mounted in a
//! temporary directory (the test needs root, as the project's test machines run it; without the
//! privilege it fails and says so). The volume is actually filled: appends then fail with
//! `StorageFull` (from the kernel's ENOSPC and from the configured free-space floor), nothing
//! already written is damaged, and appends resume once space is freed.

use std::io::Write;
use std::path::Path;

use sluice_proto::ids::{LeaderEpoch, Offset, TimestampMs};
use sluice_spu::storage::test_support::{make_batch, run};
use sluice_spu::storage::{LogConfig, ReplicaLog, SegmentFileCache, StorageError};
use sluice_testkit::volume::LoopVolume;

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
    let volume = LoopVolume::new(48);
    let replica = volume.path().join("spu-1/topic-0");
    let filler = volume.path().join("filler");
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
        volume.free(&filler);
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
    let volume = LoopVolume::new(48);
    let replica = volume.path().join("spu-1/topic-0");
    let filler = volume.path().join("filler");
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
        let free = sluice_spu::storage::disk_guard::volume_space(volume.path()).unwrap().free_bytes;
        assert!(free > 8 << 20, "refused while space was still left ({free} bytes)");
        assert_eq!(read_everything(&log).await, before);
        volume.free(&filler);
        let (after, error) = append_until_error(&log, 5).await;
        assert!(error.is_none(), "appends resume: {error:?}");
        before.extend_from_slice(&after);
        assert_eq!(read_everything(&log).await, before);
        assert!(log.log_end_offset() > Offset(0));
        log.close().await.unwrap();
    });
}
