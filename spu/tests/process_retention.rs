//! Segment rolls and retention in a real `sluice-spu` under load: a producer writes
//! continuously to topics with small segments while a consumer tails them; the SPU's retention
//! pass (every 200 ms here) deletes the oldest sealed segments. Checked: segments roll at the
//! topic's size, the partition's size stays bounded by its retention, the earliest offset moves
//! forward, an offset before it is "out of range", the tailing consumer read every record in
//! order and byte-identical, and what is left is contiguous and intact.

mod process_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process_common::{batch, record_values, value_for, wait_for, Cluster, SpuClient, SPU_ID};
use sluice_proto::api::fetch::Isolation;
use sluice_proto::api::list_offsets::OffsetSpec;
use sluice_proto::api::produce::Acks;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::Offset;
use sluice_proto::object::{TopicName, TopicSpec};

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("clock after 1970").as_millis() as i64
}

const SEGMENT_BYTES: u64 = 256 << 10;
const RETENTION_BYTES: u64 = 1 << 20;
const RECORD_BYTES: usize = 1000;
const RECORDS_PER_BATCH: usize = 16;
/// Records written per partition: ~12 MiB, about 48 segments, 12 times the retention.
const RECORDS: usize = 12_288;
/// Records the producer may be ahead of the tails: a quarter of the retention.
const TAIL_LAG_MAX: usize = RETENTION_BYTES as usize / RECORD_BYTES / 4;

/// The replica directory of `topic`/`partition` under the SPU's data directory.
fn replica_dir(cluster: &Cluster, topic: &TopicName, partition: u32) -> PathBuf {
    let root = Cluster::spu_dir(&cluster.dir).join(format!("spu-{SPU_ID}"));
    root.join(format!("{topic}-{partition}"))
}

/// Base offsets of the segment files in `dir`, and their total size.
fn segments(dir: &Path) -> (BTreeSet<i64>, u64) {
    let mut bases = BTreeSet::new();
    let mut bytes = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return (bases, 0) };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|extension| extension == "log") {
            if let Some(base) = path.file_stem().and_then(|stem| stem.to_str()?.parse().ok()) {
                bases.insert(base);
                bytes += entry.metadata().map_or(0, |metadata| metadata.len());
            }
        }
    }
    (bases, bytes)
}

/// Follows `partition` from offset 0 while the producer writes, checking each record.
fn tail(
    address: std::net::SocketAddr,
    topic: TopicName,
    partition: u32,
    records: usize,
    progress: &AtomicUsize,
) -> Result<usize, String> {
    let mut client = SpuClient::connect(address);
    let mut next = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while next < records {
        if Instant::now() > deadline {
            return Err(format!("tail of partition {partition} stalled at {next}"));
        }
        let (header, bytes) = client.fetch(
            &topic,
            partition,
            Offset(next as i64),
            (200, 1),
            Isolation::ReadCommitted,
        );
        if header.error_code != ErrorCode::None {
            return Err(format!("tail fetch at {next}: {:?}", header.error_code));
        }
        for (offset, value) in record_values(&bytes) {
            if offset.0 < next as i64 {
                continue;
            }
            if offset.0 != next as i64 {
                return Err(format!("tail expected offset {next}, got {offset:?}"));
            }
            if value != value_for(partition, next, RECORD_BYTES) {
                return Err(format!("partition {partition} record {next} differs"));
            }
            next += 1;
        }
        progress.store(next, Ordering::Relaxed);
    }
    Ok(next)
}

#[test]
fn segments_roll_and_retention_bounds_partitions_under_load() {
    let cluster = Cluster::start_with(2, &["--retention-interval-ms=200"]);
    let spec = TopicSpec {
        segment_bytes: SEGMENT_BYTES,
        retention_bytes: Some(RETENTION_BYTES),
        batch_bytes_max: 64 << 10,
        ..TopicSpec::computed(2, 1)
    };
    let topic = cluster.create_topic_with("rolling", spec);
    let address = cluster.spu.public_address;

    // The tails must read every record, so the producer stays at most TAIL_LAG_MAX records
    // ahead of them: further behind than the retention, a tail's next records are deleted
    // (OffsetOutOfRange, correctly), which happened on a loaded machine.
    let progress: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let tails: Vec<_> = (0..2)
        .map(|partition| {
            let topic = topic.clone();
            let progress = Arc::clone(&progress[partition as usize]);
            std::thread::spawn(move || tail(address, topic, partition, RECORDS, &progress))
        })
        .collect();

    // Watch the directories while the producer runs: the largest partition size seen and every
    // segment seen.
    let producing = Arc::new(AtomicBool::new(true));
    let watcher = {
        let dirs: Vec<PathBuf> = (0..2).map(|p| replica_dir(&cluster, &topic, p)).collect();
        let producing = Arc::clone(&producing);
        std::thread::spawn(move || {
            let mut largest = 0u64;
            let mut seen = BTreeSet::new();
            while producing.load(Ordering::Relaxed) {
                for dir in &dirs {
                    let (bases, bytes) = segments(dir);
                    largest = largest.max(bytes);
                    seen.extend(bases);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (largest, seen.len())
        })
    };

    let mut producer = SpuClient::connect(address);
    for first in (0..RECORDS).step_by(RECORDS_PER_BATCH) {
        let caught_up =
            || progress.iter().all(|read| read.load(Ordering::Relaxed) + TAIL_LAG_MAX >= first);
        if !caught_up() {
            wait_for("the tails to catch up", || caught_up().then_some(()));
        }
        for partition in 0..2 {
            let values: Vec<Vec<u8>> = (first..first + RECORDS_PER_BATCH)
                .map(|index| value_for(partition, index, RECORD_BYTES))
                .collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let now = now_ms();
            let outcome = producer.produce(&topic, partition, &batch(&refs, now), Acks::Leader);
            assert_eq!(outcome.error_code, ErrorCode::None, "produce at {first}");
            assert_eq!(outcome.base_offset, Some(Offset(first as i64)));
        }
    }
    for (partition, tail) in tails.into_iter().enumerate() {
        let read = tail.join().expect("tail thread").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(read, RECORDS, "partition {partition}");
    }

    // Retention catches up within a few passes: the partition is at most its retention plus
    // the active segment and one sealed segment of slack.
    let bound = RETENTION_BYTES + 2 * SEGMENT_BYTES + (64 << 10);
    for partition in 0..2 {
        let dir = replica_dir(&cluster, &topic, partition);
        wait_for("retention to bound the partition", || {
            let (_, bytes) = segments(&dir);
            (bytes <= bound).then_some(())
        });
    }
    producing.store(false, Ordering::Relaxed);
    let (largest, segments_seen) = watcher.join().expect("watcher thread");
    let written = (RECORDS * RECORD_BYTES) as u64;
    assert!(
        segments_seen as u64 >= 2 * written / SEGMENT_BYTES / 2,
        "segments rolled at the topic's size: {segments_seen} seen for {written} bytes"
    );
    assert!(
        largest < written / 2,
        "retention ran during the load: largest partition {largest} of {written} written"
    );

    let mut client = SpuClient::connect(address);
    for partition in 0..2 {
        let earliest =
            client.list_offset(&topic, partition, OffsetSpec::Earliest, Isolation::ReadCommitted);
        let latest =
            client.list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted);
        assert_eq!(earliest.error_code, ErrorCode::None);
        assert_eq!(latest.offset, Some(Offset(RECORDS as i64)));
        let earliest = earliest.offset.expect("earliest offset").0;
        assert!(earliest > 0 && (earliest as usize) < RECORDS, "earliest {earliest}");
        let (bases, _) = segments(&replica_dir(&cluster, &topic, partition));
        assert_eq!(bases.first().copied(), Some(earliest), "earliest is the first segment's base");

        let (header, _) =
            client.fetch(&topic, partition, Offset(0), (0, 0), Isolation::ReadCommitted);
        assert_eq!(header.error_code, ErrorCode::OffsetOutOfRange, "offset 0 was deleted");

        // What is left reads back contiguous and intact.
        let left = RECORDS - earliest as usize;
        let values = client.fetch_values(&topic, partition, Offset(earliest), left);
        for (index, (offset, value)) in values.iter().enumerate() {
            let expected = earliest as usize + index;
            assert_eq!(offset.0, expected as i64);
            assert_eq!(value, &value_for(partition, expected, RECORD_BYTES));
        }
    }
}

#[test]
fn time_retention_deletes_old_sealed_segments_and_keeps_the_active_one() {
    let cluster = Cluster::start_with(1, &["--retention-interval-ms=200"]);
    let spec = TopicSpec {
        segment_bytes: 64 << 10,
        retention_time_ms: Some(60_000),
        batch_bytes_max: 32 << 10,
        ..TopicSpec::computed(1, 1)
    };
    let topic = cluster.create_topic_with("aging", spec);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    let old = now_ms() - 3_600_000;
    let value = vec![7u8; RECORD_BYTES];
    // 32 batches of 16 KiB with hour-old timestamps roll 8 segments, then one fresh batch.
    for round in 0..32 {
        let refs: Vec<&[u8]> = vec![value.as_slice(); RECORDS_PER_BATCH];
        let outcome = client.produce(&topic, 0, &batch(&refs, old + round), Acks::Leader);
        assert_eq!(outcome.error_code, ErrorCode::None);
    }
    let fresh = batch(&[b"fresh".as_slice()], now_ms());
    let outcome = client.produce(&topic, 0, &fresh, Acks::Leader);
    let fresh_offset = outcome.base_offset.expect("fresh offset");
    assert_eq!(fresh_offset, Offset(32 * RECORDS_PER_BATCH as i64));

    let dir = replica_dir(&cluster, &topic, 0);
    // Every sealed segment is an hour old: retention leaves only the active one, which holds
    // the fresh record.
    wait_for("time retention to delete the old segments", || {
        let (bases, _) = segments(&dir);
        (bases.len() == 1).then_some(())
    });
    let earliest = client.list_offset(&topic, 0, OffsetSpec::Earliest, Isolation::ReadCommitted);
    let earliest = earliest.offset.expect("earliest offset");
    assert!(earliest > Offset(0) && earliest <= fresh_offset, "earliest {earliest:?}");
    let values = client.fetch_values(&topic, 0, fresh_offset, 1);
    assert_eq!(values[0].1, b"fresh");
    let (header, _) = client.fetch(&topic, 0, Offset(0), (0, 0), Isolation::ReadCommitted);
    assert_eq!(header.error_code, ErrorCode::OffsetOutOfRange);
}

#[test]
fn a_deleted_topic_gives_its_disk_space_back() {
    let cluster = Cluster::start_with(1, &["--deleted-retention-ms=300"]);
    let doomed = cluster.create_topic("doomed", 1);
    let kept = cluster.create_topic("kept", 1);
    let mut client = SpuClient::connect(cluster.spu.public_address);
    let value = vec![3u8; RECORD_BYTES];
    for topic in [&doomed, &kept] {
        let refs: Vec<&[u8]> = vec![value.as_slice(); RECORDS_PER_BATCH];
        let outcome = client.produce(topic, 0, &batch(&refs, now_ms()), Acks::All);
        assert_eq!(outcome.error_code, ErrorCode::None);
    }
    let doomed_dir = replica_dir(&cluster, &doomed, 0);
    let kept_dir = replica_dir(&cluster, &kept, 0);
    assert!(doomed_dir.is_dir() && kept_dir.is_dir());

    let deleted = cluster.sc.admin().delete_topic(doomed.clone()).expect("delete the topic");
    assert!(deleted.error_code.is_ok(), "{deleted:?}");
    let parent = doomed_dir.parent().expect("replicas directory").to_path_buf();
    wait_for("the deleted topic's files to be removed", || {
        let leftovers = std::fs::read_dir(&parent)
            .expect("replicas directory")
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("doomed-0"))
            .count();
        (leftovers == 0).then_some(())
    });
    assert!(kept_dir.is_dir(), "another topic's files stay");
    let values = client.fetch_values(&kept, 0, Offset(0), RECORDS_PER_BATCH);
    assert_eq!(values.len(), RECORDS_PER_BATCH);

    // The same name again starts from an empty log.
    let again = cluster.create_topic("doomed", 1);
    let latest = client.list_offset(&again, 0, OffsetSpec::Latest, Isolation::ReadCommitted);
    assert_eq!(latest.offset, Some(Offset(0)));
}
