//! Crash test with a real process: a writer (this test binary re-executed) appends batches and
//! prints every offset reported durable; the test kills it with SIGKILL at a random moment,
//! reopens the log and checks that it is a prefix of what was written (every batch intact,
//! offsets dense) and holds everything reported durable.
//!
//! `SLUICE_CRASH_ITERATIONS` (default 20) and `SLUICE_TEST_SEED` override the defaults.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_proto::ids::{LeaderEpoch, Offset, TimestampMs};
use sluice_proto::record::{validate_batch, RecordBatch};
use sluice_spu::storage::test_support::{make_batch, run};
use sluice_spu::storage::{LogConfig, ReplicaLog, SegmentFileCache};

const WRITER_ENV: &str = "SLUICE_CRASH_WRITER_DIR";
const ITERATIONS_DEFAULT: u64 = 20;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 * 1024,
        index_interval_bytes: 1024,
        free_bytes_min: 0,
        free_space_ratio_min: 0.0,
        ..LogConfig::default()
    }
}

/// The batch with sequence number `sequence`: its size and fill byte derive from it.
fn writer_batch(sequence: u64) -> Vec<u8> {
    let records = 1 + (sequence % 7) as usize;
    let value_bytes = 50 + (sequence * 37 % 900) as usize;
    make_batch(records, value_bytes, TimestampMs(sequence as i64), (sequence % 251) as u8)
}

/// Kills the child on drop so a failing test leaks no process.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "the writer process of crash_recovery_after_sigkill; runs only when re-executed"]
fn crash_writer_process() {
    let directory = std::env::var(WRITER_ENV).expect("run by crash_recovery_after_sigkill");
    run(move || async move {
        let log = ReplicaLog::open(
            std::path::Path::new(&directory),
            config(),
            SegmentFileCache::default(),
        )
        .await
        .expect("writer opens the log");
        let mut sequence = 0u64;
        loop {
            // A few appends share each fdatasync (group commit), like concurrent producers.
            let mut last = None;
            for _ in 0..1 + sequence % 4 {
                let mut batch = writer_batch(sequence);
                last = Some(log.append(&mut batch, LeaderEpoch(1)).await.expect("append"));
                sequence += 1;
            }
            if let Some(appended) = last {
                log.wait_durable(&appended).await.expect("durable");
                println!("durable {}", appended.next_offset.0);
            }
        }
    });
}

fn verify(directory: &std::path::Path, durable: Offset, iteration: u64, seed: u64) -> Offset {
    let directory = directory.to_path_buf();
    run(move || async move {
        let log = ReplicaLog::open(&directory, config(), SegmentFileCache::default())
            .await
            .expect("reopen");
        let end = log.log_end_offset();
        assert!(end >= durable, "seed {seed} iteration {iteration}: log ends at {end} but {durable} was reported durable");
        let mut cursor = Offset(0);
        let mut sequence = 0u64;
        let mut bytes = Vec::new();
        while cursor < end {
            bytes.clear();
            let copied = log.read_into(cursor, 1 << 20, end, &mut bytes).expect("read back");
            let mut at = 0;
            while at < bytes.len() {
                let header = validate_batch(&bytes[at..], usize::MAX).expect("valid batch");
                let batch = &bytes[at..at + header.total_len()];
                let mut expected = writer_batch(sequence);
                sluice_proto::record::set_base_offset(&mut expected, header.base_offset);
                sluice_proto::record::set_partition_leader_epoch(&mut expected, LeaderEpoch(1));
                assert_eq!(
                    batch,
                    &expected[..],
                    "seed {seed} iteration {iteration}: batch {sequence} differs"
                );
                assert_eq!(header.base_offset, cursor, "offsets are dense");
                assert!(RecordBatch::parse(batch, usize::MAX).is_ok());
                cursor = header.next_offset();
                sequence += 1;
                at += header.total_len();
            }
            assert_eq!(cursor, copied.next_offset);
        }
        log.close().await.expect("close");
        end
    })
}

#[test]
fn crash_recovery_after_sigkill() {
    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let iterations = std::env::var("SLUICE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITERATIONS_DEFAULT);
    eprintln!("crash test seed {seed} (SLUICE_TEST_SEED to replay), {iterations} iterations");
    let mut rng = StdRng::seed_from_u64(seed);
    let executable = std::env::current_exe().expect("test binary path");
    for iteration in 0..iterations {
        let dir = tempfile::tempdir().unwrap();
        let mut child = ChildGuard(
            Command::new(&executable)
                .args([
                    "--exact",
                    "crash_writer_process",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WRITER_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn writer"),
        );
        let stdout = child.0.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let kill_after = rng.gen_range(1..300u32);
        let mut durable = Offset(0);
        let mut seen = 0;
        while seen < kill_after {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(value) = line.strip_prefix("durable ") {
                        durable = durable.max(Offset(value.trim().parse().expect("offset")));
                        seen += 1;
                    }
                }
                _ => panic!("seed {seed} iteration {iteration}: writer exited early"),
            }
        }
        child.0.kill().expect("SIGKILL the writer");
        // Reports already in the pipe were made before the kill: they count too.
        for line in lines.map_while(Result::ok) {
            if let Some(value) = line.strip_prefix("durable ") {
                durable = durable.max(Offset(value.trim().parse().expect("offset")));
            }
        }
        let status = child.0.wait().expect("wait for writer");
        assert!(!status.success(), "writer was killed");
        let end = verify(dir.path(), durable, iteration, seed);
        eprintln!("iteration {iteration}: killed after {seen} reports, durable {durable}, recovered end {end}");
    }
}
