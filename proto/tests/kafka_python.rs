//! Interoperability with kafka-python's independent RecordBatch v2 implementation, for every
//! codec: batches kafka-python builds are decoded by our reader, and batches our builder makes
//! are decoded by kafka-python (CRC validated) and compared field by field.
//!
//! Needs Python with kafka-python and its codec libraries (python-snappy, lz4, zstandard):
//! `$SLUICE_PYTHON`, else `<workspace root>/.venv/bin/python`, as installed by
//! `deploy/dev/setup`. The test fails (never skips) when they are missing.

use serde_json::{json, Value};
use sluice_proto::ids::{LeaderEpoch, Offset, ProducerId, TimestampMs};
use sluice_proto::record::{
    BatchBuilder, Batches, Compression, Header, ProducerState, Record, TimestampType,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BATCH_BYTES_MAX: usize = 16 << 20;
const SCRIPT: &str = "tests/kafka_python_interop.py";

fn python() -> PathBuf {
    let path = std::env::var_os("SLUICE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.exists(),
        "Python with kafka-python not found at {} (set SLUICE_PYTHON); run deploy/dev/setup",
        path.display()
    );
    path
}

/// Runs the interop script; panics with its stderr on failure.
fn run_script(arguments: &[&str], stdin: Option<&str>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
    let mut child = Command::new(python())
        .arg(&script)
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.unwrap_or("").as_bytes()).expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait for python");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kafka-python script failed ({}): {stderr}\nIf modules are missing, run deploy/dev/setup",
        output.status
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// One test record, owned.
#[derive(Debug, Clone, PartialEq)]
struct TestRecord {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl TestRecord {
    fn to_json(&self) -> Value {
        let hex = |bytes: &Option<Vec<u8>>| bytes.as_deref().map(to_hex);
        json!({
            "timestamp": self.timestamp,
            "key": hex(&self.key),
            "value": hex(&self.value),
            "headers": self.headers.iter().map(|(k, v)| json!([k, hex(v)])).collect::<Vec<_>>(),
        })
    }

    fn from_record(record: &Record<'_>) -> TestRecord {
        TestRecord {
            timestamp: record.timestamp().0,
            key: record.key().map(<[u8]>::to_vec),
            value: record.value().map(<[u8]>::to_vec),
            headers: record
                .headers()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Records with every shape: null and empty keys and values, headers with null and empty
/// values, non-ASCII header keys, out-of-order timestamps, and values that compress well (so
/// kafka-python keeps the codec instead of falling back to none).
fn test_records(seed: u64) -> Vec<TestRecord> {
    (0..25u64)
        .map(|i| TestRecord {
            timestamp: 1_700_000_000_000 + ((i * 7 + seed) % 11) as i64 * 1000 - 3000,
            key: match i % 4 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("key-{seed}-{i}").into_bytes()),
            },
            value: match i % 6 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("value {i} of batch {seed}; ").repeat(1 + i as usize * 3).into()),
            },
            headers: (0..i % 4)
                .map(|h| {
                    let key = if h == 2 { "clé-ü".to_owned() } else { format!("h{h}") };
                    let value = match h {
                        0 => Some(format!("v{i}").into_bytes()),
                        1 => None,
                        _ => Some(Vec::new()),
                    };
                    (key, value)
                })
                .collect(),
        })
        .collect()
}

/// Codecs kafka-python can handle here; all five when deploy/dev/setup installed the libraries.
const CODECS: [Compression; 5] = Compression::ALL;

#[test]
fn we_read_what_kafka_python_writes() {
    let producer =
        ProducerState { producer_id: ProducerId(4242), producer_epoch: 7, base_sequence: 100 };
    let batches: Vec<Value> = CODECS
        .iter()
        .enumerate()
        .map(|(index, codec)| {
            let records: Vec<Value> =
                test_records(index as u64).iter().map(TestRecord::to_json).collect();
            let mut batch = json!({"codec": codec.name(), "records": records});
            if index % 2 == 1 {
                batch["producer"] = json!({
                    "producer_id": producer.producer_id.0,
                    "producer_epoch": producer.producer_epoch,
                    "base_sequence": producer.base_sequence,
                });
            }
            batch
        })
        .collect();
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("from_python.bin");
    run_script(
        &["build", path.to_str().expect("utf-8 path")],
        Some(&json!({ "batches": batches }).to_string()),
    );
    let bytes = std::fs::read(&path).expect("read batches");

    let mut scratch = Vec::new();
    let mut iterator = Batches::new(&bytes, BATCH_BYTES_MAX);
    let mut seen = 0;
    for (index, batch) in iterator.by_ref().enumerate() {
        let batch = batch.unwrap_or_else(|error| panic!("batch {index}: {error}"));
        let codec = CODECS[index];
        let expected = test_records(index as u64);
        let header = batch.header();
        assert_eq!(batch.compression().unwrap(), codec, "batch {index} codec");
        assert_eq!(header.base_offset, Offset(0));
        assert_eq!(header.record_count as usize, expected.len());
        assert_eq!(header.last_offset_delta as usize, expected.len() - 1);
        assert_eq!(header.first_timestamp, TimestampMs(expected[0].timestamp));
        let max = expected.iter().map(|r| r.timestamp).max().unwrap();
        assert_eq!(header.max_timestamp, TimestampMs(max));
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        if index % 2 == 1 {
            assert_eq!(header.producer_id, producer.producer_id);
            assert_eq!((header.producer_epoch, header.base_sequence), (7, 100));
        } else {
            assert_eq!(header.producer_id, ProducerId(-1));
            assert_eq!((header.producer_epoch, header.base_sequence), (-1, -1));
        }
        let records = batch.decompress_records(&mut scratch, BATCH_BYTES_MAX).unwrap();
        let decoded: Vec<TestRecord> = records
            .enumerate()
            .map(|(position, record)| {
                let record = record.unwrap_or_else(|e| panic!("batch {index} record: {e}"));
                assert_eq!(record.offset(), Offset(position as i64));
                TestRecord::from_record(&record)
            })
            .collect();
        assert_eq!(decoded, expected, "batch {index} ({codec:?}) records");
        seen += 1;
    }
    assert_eq!(seen, CODECS.len());
    assert_eq!(iterator.partial_tail(), None);
}

#[test]
fn kafka_python_reads_what_we_write() {
    let mut stream = Vec::new();
    let mut builder = BatchBuilder::new();
    let mut scratch = Vec::new();
    let mut expected = Vec::new();
    let mut next_offset = 1_000i64;
    for (index, codec) in CODECS.iter().enumerate() {
        let records = test_records(10 + index as u64);
        builder.clear();
        builder
            .set_base_offset(Offset(next_offset))
            .set_partition_leader_epoch(LeaderEpoch(index as i32 + 3))
            .set_producer(ProducerState {
                producer_id: ProducerId(9_000 + index as i64),
                producer_epoch: index as i16,
                base_sequence: 50 * index as i32,
            })
            .set_timestamp_type(if index == 2 {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            });
        for record in &records {
            let headers: Vec<Header<'_>> = record
                .headers
                .iter()
                .map(|(k, v)| Header { key: k, value: v.as_deref() })
                .collect();
            builder
                .push_record(
                    TimestampMs(record.timestamp),
                    record.key.as_deref(),
                    record.value.as_deref(),
                    &headers,
                )
                .unwrap();
        }
        stream.extend_from_slice(builder.finish_compressed(*codec, &mut scratch).unwrap());
        expected.push((next_offset, records));
        next_offset += 100;
    }
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("from_sluice.bin");
    std::fs::write(&path, &stream).expect("write batches");
    let output = run_script(&["read", path.to_str().expect("utf-8 path")], None);
    let decoded: Value = serde_json::from_str(&output).expect("script JSON");
    let batches = decoded["batches"].as_array().expect("batches array");
    assert_eq!(batches.len(), CODECS.len(), "{output}");

    for (index, ((base_offset, records), batch)) in expected.iter().zip(batches).enumerate() {
        let codec = CODECS[index];
        let context = format!("batch {index} ({codec:?})");
        assert_eq!(batch["crc_valid"], json!(true), "{context}");
        assert_eq!(batch["magic"], json!(2), "{context}");
        assert_eq!(batch["compression_type"], json!(codec.code()), "{context}");
        assert_eq!(batch["base_offset"], json!(base_offset), "{context}");
        assert_eq!(batch["leader_epoch"], json!(index + 3), "{context}");
        assert_eq!(batch["producer_id"], json!(9_000 + index), "{context}");
        assert_eq!(batch["producer_epoch"], json!(index), "{context}");
        assert_eq!(batch["base_sequence"], json!(50 * index), "{context}");
        assert_eq!(batch["records_count"], json!(records.len()), "{context}");
        assert_eq!(batch["last_offset_delta"], json!(records.len() - 1), "{context}");
        let max = records.iter().map(|r| r.timestamp).max().unwrap();
        assert_eq!(batch["first_timestamp"], json!(records[0].timestamp), "{context}");
        assert_eq!(batch["max_timestamp"], json!(max), "{context}");
        let log_append_time = index == 2;
        assert_eq!(batch["timestamp_type"], json!(u8::from(log_append_time)), "{context}");
        let decoded_records = batch["records"].as_array().expect("records array");
        assert_eq!(decoded_records.len(), records.len(), "{context}");
        for (position, (record, decoded)) in records.iter().zip(decoded_records).enumerate() {
            let mut want = record.to_json();
            want["offset"] = json!(base_offset + position as i64);
            if log_append_time {
                want["timestamp"] = json!(max);
            }
            assert_eq!(decoded, &want, "{context} record {position}");
        }
    }
}
