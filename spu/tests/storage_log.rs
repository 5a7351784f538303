//! Behaviour of the replica log through its public API, on real files.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

use sluice_proto::ids::{LeaderEpoch, Offset, TimestampMs};
use sluice_proto::record::{validate_batch, BatchHeader};
use sluice_spu::storage::test_support::{make_batch, run, ManualClock};
use sluice_spu::storage::{LogConfig, ReplicaLog, SegmentFileCache, StorageError};

const EPOCH: LeaderEpoch = LeaderEpoch(1);

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 8 * 1024,
        index_interval_bytes: 1024,
        free_bytes_min: 0,
        free_space_ratio_min: 0.0,
        write_buffer_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

async fn open(dir: &Path, config: LogConfig) -> ReplicaLog {
    ReplicaLog::open(dir, config, SegmentFileCache::default()).await.expect("open log")
}

/// Appends `count` batches of `records` records (timestamps from `first_timestamp`), waits durable.
async fn append_many(
    log: &ReplicaLog,
    count: usize,
    records: usize,
    first_timestamp: i64,
) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut last = None;
    for index in 0..count {
        let mut batch =
            make_batch(records, 100, TimestampMs(first_timestamp + index as i64), index as u8);
        last = Some(log.append(&mut batch, EPOCH).await.expect("append"));
        batches.push(batch);
    }
    if let Some(appended) = last {
        log.wait_durable(&appended).await.expect("durable");
    }
    batches
}

fn read_all(log: &ReplicaLog, start: Offset) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cursor = start;
    loop {
        let copied = log.read_into(cursor, 1 << 20, log.log_end_offset(), &mut out).expect("read");
        if copied.batches == 0 {
            return out;
        }
        cursor = copied.next_offset;
    }
}

fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = validate_batch(&bytes[at..], usize::MAX).expect("valid batch");
        at += header.total_len();
        out.push(header);
    }
    out
}

#[test]
fn append_assigns_offsets_reads_back_and_reattaches() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let batches = append_many(&log, 50, 3, 1000).await;
        assert_eq!(log.log_end_offset(), Offset(150));
        assert!(log.segment_count() > 1, "8 KiB segments must have rolled");
        let expected: Vec<u8> = batches.concat();
        assert_eq!(read_all(&log, Offset(0)), expected);
        // A read from the middle of a batch starts at that batch.
        let mut out = Vec::new();
        log.read_into(Offset(4), 1, Offset(150), &mut out).unwrap();
        assert_eq!(headers(&out)[0].base_offset, Offset(3));
        assert_eq!(out, batches[1]);
        log.set_high_watermark(Offset(90));
        log.close().await.unwrap();
        assert!(matches!(
            log.append(&mut make_batch(1, 1, TimestampMs(0), 0), EPOCH).await,
            Err(StorageError::Closed)
        ));

        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(150));
        assert_eq!(log.high_watermark(), Offset(90));
        assert_eq!(read_all(&log, Offset(0)), expected);
        let mut batch = make_batch(2, 10, TimestampMs(5000), 9);
        let appended = log.append(&mut batch, LeaderEpoch(2)).await.unwrap();
        assert_eq!(appended.base_offset, Offset(150));
        assert_eq!(log.end_offset_for_epoch(EPOCH), Some((EPOCH, Offset(150))));
        assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);
        log.close().await.unwrap();
    });
}

#[test]
fn written_before_durable_and_readers_see_only_written() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let mut batch = make_batch(4, 100, TimestampMs(1), 1);
        let appended = log.append(&mut batch, EPOCH).await.unwrap();
        assert_eq!(log.appended_end_offset(), Offset(4));
        assert_eq!(log.log_end_offset(), Offset(0), "appended is not written");
        assert!(log.read(Offset(0), 1 << 20, Offset(100)).unwrap().slices.is_empty());
        log.wait_written(&appended).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(4));
        assert!(log.durable_end_offset() < Offset(4));
        let slices = log.read(Offset(0), 1 << 20, Offset(100)).unwrap();
        assert_eq!(slices.bytes, batch.len() as u64);
        let slice = &slices.slices[0];
        let mut bytes = vec![0u8; slice.length() as usize];
        slice.file().read_exact_at(&mut bytes, slice.position()).unwrap();
        assert_eq!(bytes, batch);
        assert!(slice.raw_fd() >= 0);
        log.wait_durable(&appended).await.unwrap();
        assert_eq!(log.durable_end_offset(), Offset(4));
        // The upper bound (HW) hides batches that end above it.
        assert!(log.read(Offset(0), 1 << 20, Offset(3)).unwrap().slices.is_empty());
    });
}

#[test]
fn group_commit_shares_fdatasyncs() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log =
            open(dir.path(), LogConfig { segment_bytes_max: 1 << 30, ..small_config() }).await;
        let mut tasks = Vec::new();
        for index in 0..200u8 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut batch = make_batch(1, 200, TimestampMs(1), index);
                let appended = log.append(&mut batch, EPOCH).await.unwrap();
                log.wait_durable(&appended).await.unwrap();
            }));
        }
        for task in tasks {
            task.await;
        }
        let stats = log.stats();
        assert_eq!(log.durable_end_offset(), Offset(200));
        assert!(
            stats.syncs < 100,
            "200 concurrent durable appends took {} fdatasyncs",
            stats.syncs
        );
        assert_eq!(headers(&read_all(&log, Offset(0))).len(), 200);
    });
}

#[test]
fn roll_by_age_and_find_offsets_by_timestamp() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(10_000));
        let config =
            LogConfig { segment_bytes_max: 1 << 30, segment_age_ms_max: 1000, ..small_config() };
        let log = ReplicaLog::open_with_clock(
            dir.path(),
            config,
            SegmentFileCache::default(),
            clock.clone(),
        )
        .await
        .unwrap();
        for step in 0..5i64 {
            clock.set(10_000 + step * 2000);
            let mut batch = make_batch(2, 50, TimestampMs(10_000 + step * 2000), 1);
            let appended = log.append(&mut batch, EPOCH).await.unwrap();
            log.wait_durable(&appended).await.unwrap();
        }
        assert_eq!(
            log.segment_count(),
            5,
            "each batch is older than the age limit when the next comes"
        );
        assert_eq!(log.offset_for_timestamp(TimestampMs(0)).unwrap(), Some(Offset(0)));
        assert_eq!(log.offset_for_timestamp(TimestampMs(12_000)).unwrap(), Some(Offset(2)));
        assert_eq!(log.offset_for_timestamp(TimestampMs(12_001)).unwrap(), Some(Offset(4)));
        assert_eq!(log.offset_for_timestamp(TimestampMs(18_001)).unwrap(), None);
    });
}

#[test]
fn truncate_at_the_log_end_drops_an_epoch_begun_there() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        append_many(&log, 3, 2, 0).await;
        // Promoted in epoch 4 at offset 6, demoted before appending anything.
        log.assign_epoch(LeaderEpoch(4)).await.unwrap();
        assert_eq!(log.epochs().last().map(|entry| entry.epoch), Some(LeaderEpoch(4)));
        log.truncate_to(Offset(6)).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(6));
        let epochs: Vec<(LeaderEpoch, Offset)> =
            log.epochs().iter().map(|entry| (entry.epoch, entry.start_offset)).collect();
        assert_eq!(epochs, [(EPOCH, Offset(0))]);
        // Past the end too; and nothing else changes.
        log.assign_epoch(LeaderEpoch(5)).await.unwrap();
        log.truncate_to(Offset(9)).await.unwrap();
        assert_eq!(log.epochs().last().map(|entry| entry.epoch), Some(LeaderEpoch(5)));
        log.truncate_to(Offset(6)).await.unwrap();
        assert_eq!(log.epochs().last().map(|entry| entry.epoch), Some(EPOCH));
        log.close().await.unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.epochs().last().map(|entry| entry.epoch), Some(EPOCH));
        assert_eq!(log.log_end_offset(), Offset(6));
    });
}

#[test]
fn truncate_to_offset_within_and_across_segments() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let batches = append_many(&log, 60, 2, 0).await;
        let segments_before = log.segment_count();
        log.set_high_watermark(Offset(120));
        // Within the active segment, mid-batch: the whole batch holding offset 117 goes.
        log.truncate_to(Offset(117)).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(116));
        assert_eq!(log.high_watermark(), Offset(116));
        // Across segments.
        log.truncate_to(Offset(20)).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(20));
        assert!(log.segment_count() < segments_before);
        assert_eq!(read_all(&log, Offset(0)), batches[..10].concat());
        let mut batch = make_batch(2, 100, TimestampMs(7), 0xAB);
        let appended = log.append(&mut batch, LeaderEpoch(3)).await.unwrap();
        assert_eq!(appended.base_offset, Offset(20));
        log.wait_durable(&appended).await.unwrap();
        log.close().await.unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(22));
        let mut expected = batches[..10].concat();
        expected.extend_from_slice(&batch);
        assert_eq!(read_all(&log, Offset(0)), expected);
        assert_eq!(log.end_offset_for_epoch(EPOCH), Some((EPOCH, Offset(20))));
        // Below the log start: the log restarts at the offset.
        log.delete_before(Offset(10)).unwrap();
        log.truncate_to(Offset(4)).await.unwrap();
        assert_eq!(log.log_start_offset(), Offset(4));
        assert_eq!(log.log_end_offset(), Offset(4));
    });
}

#[test]
fn retention_and_delete_before_keep_open_readers_working() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(1_000_000));
        let config = LogConfig { retention_ms: Some(10_000), ..small_config() };
        let log = ReplicaLog::open_with_clock(
            dir.path(),
            config.clone(),
            SegmentFileCache::default(),
            clock.clone(),
        )
        .await
        .unwrap();
        append_many(&log, 40, 8, 0).await; // old timestamps
        append_many(&log, 40, 8, 995_000).await; // recent
        let before = log.segment_count();
        let held = log.read(Offset(0), 1 << 20, log.log_end_offset()).unwrap();
        let report = log.apply_retention().unwrap();
        assert!(report.segments_deleted > 0);
        assert_eq!(log.segment_count(), before - report.segments_deleted as usize);
        let start = log.log_start_offset();
        assert!(start > Offset(0) && start <= Offset(320));
        assert!(matches!(
            log.read(Offset(0), 100, log.log_end_offset()),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // The slice taken before deletion still reads the (unlinked) file.
        let slice = &held.slices[0];
        let mut bytes = vec![0u8; slice.length() as usize];
        slice.file().read_exact_at(&mut bytes, slice.position()).unwrap();
        assert!(validate_batch(&bytes, usize::MAX).is_ok());
        // Size retention keeps at most ~3 segments' worth.
        log.update_config(LogConfig {
            retention_ms: None,
            retention_bytes: Some(3 * 8 * 1024),
            ..config
        })
        .unwrap();
        log.apply_retention().unwrap();
        assert!(log.size_bytes() <= 4 * 8 * 1024);
        let start = log.delete_before(Offset(600)).unwrap().log_start;
        assert_eq!(start, Offset(600));
        assert!(!read_all(&log, Offset(600)).is_empty());
        log.close().await.unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.log_start_offset(), Offset(600));
    });
}

#[test]
fn torn_tail_is_cut_on_reopen() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log =
            open(dir.path(), LogConfig { segment_bytes_max: 1 << 30, ..small_config() }).await;
        let batches = append_many(&log, 10, 2, 0).await;
        log.close().await.unwrap();
        drop(log);
        // Simulate a torn write: half of a further batch, then garbage.
        let path = dir.path().join(format!("{:020}.log", 0));
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let end = file.metadata().unwrap().len();
        let mut torn = make_batch(5, 100, TimestampMs(1), 7);
        sluice_proto::record::set_base_offset(&mut torn, Offset(20));
        file.write_all_at(&torn[..torn.len() / 2], end).unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(20));
        assert_eq!(read_all(&log, Offset(0)), batches.concat());
        // Corrupt the last batch's payload: recovery drops it (CRC).
        log.close().await.unwrap();
        let last_start: u64 = batches[..9].iter().map(|batch| batch.len() as u64).sum();
        file.write_all_at(&[0xEE], last_start + 100).unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(18));
        assert_eq!(read_all(&log, Offset(0)), batches[..9].concat());
    });
}

#[test]
fn corrupt_sealed_segment_is_reported_not_served() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let batches = append_many(&log, 40, 2, 0).await;
        log.close().await.unwrap();
        let first = dir.path().join(format!("{:020}.log", 0));
        let file = std::fs::OpenOptions::new().write(true).open(&first).unwrap();
        file.write_all_at(&[0x55], 500).unwrap(); // payload of the first batch
        let log = open(dir.path(), small_config()).await;
        let mut out = Vec::new();
        let error = log.read_into(Offset(0), 1 << 20, log.log_end_offset(), &mut out).unwrap_err();
        assert!(matches!(error, StorageError::Corruption { .. }), "{error}");
        assert!(out.is_empty());
        // A broken length field in a read's first batch is caught by the splice path's header
        // walk too.
        file.write_all_at(&[0x7f, 0, 0, 0], 8).unwrap();
        let error = log.read(Offset(0), 1 << 20, log.log_end_offset()).err().expect("corruption");
        assert!(matches!(error, StorageError::Corruption { .. }), "{error}");
        // Past a read's first batch the splice path takes boundaries from the index and reads
        // no header (the client checks each batch's CRC): a broken magic byte in the sixth
        // batch goes unseen by a read from the fifth (which has an index entry of its own);
        // the copying read still refuses it.
        let sixth: u64 = batches[..5].iter().map(|batch| batch.len() as u64).sum();
        file.write_all_at(&[0x09], sixth + 16).unwrap();
        let spliced = log.read(Offset(8), 1 << 20, log.log_end_offset()).unwrap();
        assert_eq!(spliced.first_offset, Some(Offset(8)));
        assert!(spliced.next_offset > Offset(12), "read past the sixth batch");
        let mut out = Vec::new();
        let error = log.read_into(Offset(8), 1 << 20, log.log_end_offset(), &mut out).unwrap_err();
        assert!(matches!(error, StorageError::Corruption { .. }), "{error}");
        let error = log.read_into(Offset(0), 1 << 20, log.log_end_offset(), &mut out).unwrap_err();
        assert!(matches!(error, StorageError::Corruption { .. }), "{error}");
    });
}

#[test]
fn missing_or_garbage_indexes_are_rebuilt() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let batches = append_many(&log, 40, 2, 100).await;
        log.close().await.unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("index") => std::fs::remove_file(&path).unwrap(),
                Some("timeindex") => std::fs::write(&path, vec![0xA5u8; 4096]).unwrap(),
                _ => {}
            }
        }
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(80));
        assert_eq!(read_all(&log, Offset(0)), batches.concat());
        assert_eq!(log.offset_for_timestamp(TimestampMs(120)).unwrap(), Some(Offset(40)));
        let mut out = Vec::new();
        log.read_into(Offset(61), 1, Offset(80), &mut out).unwrap();
        assert_eq!(out, batches[30]);
    });
}

#[test]
fn open_files_are_bounded_by_the_cache() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cache = SegmentFileCache::new(2);
        let log = ReplicaLog::open(dir.path(), small_config(), cache.clone()).await.unwrap();
        append_many(&log, 80, 8, 0).await;
        assert!(log.segment_count() > 5);
        read_all(&log, Offset(0));
        assert!(cache.len() <= 2);
        let opens = cache.opens_total();
        read_all(&log, Offset(0));
        assert!(cache.opens_total() > opens, "sealed files are reopened on demand");
    });
}

#[test]
fn follower_appends_keep_leader_offsets() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let mut batch = make_batch(3, 10, TimestampMs(1), 1);
        sluice_proto::record::set_base_offset(&mut batch, Offset(0));
        sluice_proto::record::set_partition_leader_epoch(&mut batch, LeaderEpoch(4));
        let appended = log.append_replicated(&batch).await.unwrap();
        assert_eq!(appended.next_offset, Offset(3));
        let error = log.append_replicated(&batch).await.unwrap_err();
        assert!(matches!(
            error,
            StorageError::NotAtLogEnd { base_offset: Offset(0), log_end: Offset(3) }
        ));
        let mut bad = batch.clone();
        bad[40] ^= 1;
        assert!(matches!(log.append(&mut bad, EPOCH).await, Err(StorageError::InvalidBatch(_))));
        assert!(matches!(
            log.append(&mut batch.clone(), LeaderEpoch(3)).await,
            Err(StorageError::EpochRegression { epoch: LeaderEpoch(3), latest: LeaderEpoch(4) })
        ));
        log.wait_durable(&appended).await.unwrap();
        assert_eq!(log.epochs()[0].epoch, LeaderEpoch(4));
    });
}

#[test]
fn disk_guard_threshold_refuses_and_resumes() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let written = append_many(&log, 5, 2, 0).await;
        let free = sluice_spu::storage::disk_guard::volume_space(dir.path()).unwrap().free_bytes;
        log.update_config(LogConfig { free_bytes_min: free + (1 << 30), ..small_config() })
            .unwrap();
        let error = log.append(&mut make_batch(1, 10, TimestampMs(0), 0), EPOCH).await.unwrap_err();
        assert!(matches!(error, StorageError::StorageFull { .. }), "{error}");
        assert!(error.is_retry_safe());
        assert_eq!(read_all(&log, Offset(0)), written.concat());
        log.update_config(small_config()).unwrap();
        let appended = log.append(&mut make_batch(1, 10, TimestampMs(0), 0), EPOCH).await.unwrap();
        assert_eq!(appended.base_offset, Offset(10));
    });
}

/// Durable appends zero-fill the preallocated space ahead of the log end: the zeros never
/// extend the file past the segment size, never overwrite data, and a log dropped without
/// closing (a crash after the last fdatasync) reopens with exactly the durable batches.
#[test]
fn zero_fill_ahead_keeps_the_file_size_and_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    run(move || async move {
        let config = LogConfig {
            segment_bytes_max: 12 << 20, // more than one zero-fill chunk, not a multiple of it
            ..small_config()
        };
        let log = open(&path, config.clone()).await;
        let mut expected = Vec::new();
        for round in 0..24 {
            // 50 records of 100 bytes, ~6 KiB a batch: rounds end inside pages.
            for batch in append_many(&log, 64, 50, round * 64).await {
                expected.extend_from_slice(&batch);
            }
        }
        assert_eq!(log.segment_count(), 1, "the test needs one segment");
        let segment = path.join(format!("{:020}.log", 0));
        let file_bytes = std::fs::metadata(&segment).unwrap().len();
        assert_eq!(file_bytes, config.segment_bytes_max, "zero-filling extended the file");
        assert_eq!(read_all(&log, Offset(0)), expected);
        drop(log);
        let log = open(&path, config).await;
        assert_eq!(read_all(&log, Offset(0)), expected, "reopened log differs");
        let mut batch = make_batch(3, 100, TimestampMs(1), 7);
        let appended = log.append(&mut batch, EPOCH).await.unwrap();
        log.wait_durable(&appended).await.unwrap();
        expected.extend_from_slice(&batch);
        assert_eq!(read_all(&log, Offset(0)), expected);
        log.close().await.unwrap();
    });
}

/// Where the first hole (or unwritten extent) of `path` starts at or after `from`.
fn first_hole(path: &Path, from: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on a descriptor this function owns; no memory is passed.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, libc::SEEK_HOLE) };
    assert!(at >= 0, "lseek(SEEK_HOLE): {}", std::io::Error::last_os_error());
    at as u64
}

#[test]
fn zero_fill_runs_ahead_of_the_log_end_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    run(move || async move {
        let fill = 256 * 1024;
        let config = LogConfig {
            segment_bytes_max: 64 << 20,
            zero_fill_bytes: fill,
            preallocate_bytes: 8 << 20,
            ..small_config()
        };
        let log = open(&path, config.clone()).await;
        let segment = path.join(format!("{:020}.log", 0));
        // A fresh segment: preallocated, nothing written yet.
        assert_eq!(first_hole(&segment, 0), 0, "a fresh segment's blocks are unwritten");
        // Rounds of ~110 KiB: several fills are due while rounds keep coming.
        let mut batches = Vec::new();
        for round in 0..10 {
            batches.extend(append_many(&log, 20, 50, round * 20).await);
        }
        let data_end: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
        assert!(data_end > 2 * fill, "the test must cross several fills ({data_end} bytes)");
        // The zero-fill task runs on its own: wait (with a deadline) until it is past the data.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while first_hole(&segment, 0) <= data_end {
            assert!(std::time::Instant::now() < deadline, "no zeros ahead of the data");
            sluice_spu::storage::runtime::yield_now().await;
        }
        log.close().await.unwrap();
        let hole = first_hole(&segment, 0);
        assert!(hole > data_end, "close lost the zeros: first hole at {hole}, data to {data_end}");
        // One fill ahead, not the whole allocation step (ext4 may itself zero a few KiB next
        // to a converted extent: extent_max_zeroout_kb).
        assert!(hole < data_end + 2 * fill, "zeroed past one fill: {hole}, data to {data_end}");
        drop(log);
        let log = open(&path, config).await;
        assert_eq!(read_all(&log, Offset(0)), batches.concat(), "the zeros are not data");
        log.close().await.unwrap();
    });
}

#[test]
fn segment_files_grow_in_allocation_steps_not_to_the_segment_size() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let step = 64 * 1024;
        let config = LogConfig {
            segment_bytes_max: 1 << 30,
            preallocate_bytes: step,
            zero_fill_bytes: 16 * 1024,
            ..small_config()
        };
        let log = open(dir.path(), config.clone()).await;
        let path = dir.path().join(format!("{:020}.log", 0));
        let allocated = || std::fs::metadata(&path).unwrap().len();
        assert_eq!(allocated(), step, "an empty segment holds one step, not 1 GiB");
        // Each batch is a few KiB: the file must stay a step ahead of the data as it grows.
        let batches = append_many(&log, 200, 20, 0).await;
        let written: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
        assert!(written > 3 * step, "the test must cross several steps ({written} bytes)");
        assert!(allocated() >= written, "data lies inside the file");
        assert!(allocated() <= written + 2 * step, "at most a step or so ahead: {}", allocated());
        assert_eq!(read_all(&log, Offset(0)), batches.concat());
        log.close().await.unwrap();
        drop(log);
        // Reopening keeps every byte and allocates from the end of the data.
        let log = open(dir.path(), config).await;
        assert_eq!(read_all(&log, Offset(0)), batches.concat());
        assert!(allocated() <= written + 2 * step);
        log.close().await.unwrap();
    })
}

/// `make_batch` with producer id, epoch and base sequence written in (CRC recomputed).
fn idempotent(records: usize, epoch: i16, sequence: i32, fill: u8) -> Vec<u8> {
    let mut batch = make_batch(records, 50, TimestampMs(1), fill);
    sluice_proto::record::set_producer_state(
        &mut batch,
        sluice_proto::record::ProducerState {
            producer_id: sluice_proto::ids::ProducerId(5),
            producer_epoch: epoch,
            base_sequence: sequence,
        },
    );
    batch
}

#[test]
fn followers_learn_producers_and_truncation_rebuilds_them() {
    use sluice_spu::storage::producers::SequenceError;
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let leader = open(&dir.path().join("leader"), small_config()).await;
        let follower = open(&dir.path().join("follower"), small_config()).await;
        // The leader appends two batches of producer 5; the follower copies them verbatim.
        for (sequence, fill) in [(0, 1u8), (3, 2)] {
            let mut batch = idempotent(3, 0, sequence, fill);
            leader.append(&mut batch, EPOCH).await.expect("leader append");
            follower.append_replicated(&batch).await.expect("replicated append");
        }
        // Promoted, the follower knows the producer: a retry is a duplicate, a gap is refused,
        // the next batch is appended.
        let mut retry = idempotent(3, 0, 3, 2);
        let duplicate = follower.append(&mut retry, EPOCH).await.unwrap_err();
        let StorageError::DuplicateSequence { last, base_offset } = duplicate else {
            panic!("expected a duplicate: {duplicate:?}");
        };
        assert_eq!(last.next_offset, Offset(6));
        assert_eq!(base_offset, Some(Offset(3)), "the offset the leader gave the batch");
        let mut ahead = idempotent(1, 0, 9, 3);
        let refused = follower.append(&mut ahead, EPOCH).await.unwrap_err();
        assert!(
            matches!(
                refused,
                StorageError::Sequence(SequenceError::OutOfOrder { expected: 6, .. })
            ),
            "{refused:?}"
        );
        let appended = follower.append(&mut idempotent(1, 0, 6, 4), EPOCH).await.unwrap();
        assert_eq!(appended.base_offset, Offset(6));
        follower.wait_durable(&appended).await.unwrap();
        // A truncation removes the producer's later batches: its state is rebuilt from what
        // the log still holds, so a retry of a removed batch is appended again, in sequence,
        // and a retry of a kept one is still a duplicate.
        follower.truncate_to(Offset(3)).await.unwrap();
        let kept = follower.append(&mut idempotent(3, 0, 0, 1), EPOCH).await.unwrap_err();
        assert!(matches!(kept, StorageError::DuplicateSequence { .. }), "{kept:?}");
        let again = follower.append(&mut idempotent(3, 0, 3, 2), EPOCH).await.unwrap();
        assert_eq!(again.base_offset, Offset(3));
        leader.close().await.unwrap();
        follower.close().await.unwrap();
    });
}

#[test]
fn a_reopened_log_rebuilds_its_producers_from_the_newest_batches() {
    use sluice_spu::storage::producers::SequenceError;
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let mut last = None;
        // Enough batches for several segments and index entries.
        for index in 0..40 {
            let mut batch = idempotent(2, 0, index * 2, index as u8);
            last = Some(log.append(&mut batch, EPOCH).await.unwrap());
        }
        log.wait_durable(&last.unwrap()).await.unwrap();
        log.close().await.unwrap();
        let log = open(dir.path(), small_config()).await;
        let duplicate = log.append(&mut idempotent(2, 0, 78, 39), EPOCH).await.unwrap_err();
        assert!(matches!(duplicate, StorageError::DuplicateSequence { .. }), "{duplicate:?}");
        let gap = log.append(&mut idempotent(2, 0, 82, 41), EPOCH).await.unwrap_err();
        assert!(
            matches!(gap, StorageError::Sequence(SequenceError::OutOfOrder { expected: 80, .. })),
            "{gap:?}"
        );
        let next = log.append(&mut idempotent(2, 0, 80, 40), EPOCH).await.unwrap();
        assert_eq!(next.base_offset, Offset(80));
        log.close().await.unwrap();
    });
}
