//! Cross-module tests of the record format: golden bytes, round trips through every codec,
//! truncation at every byte, CRC coverage, in-place rewrites, batch iteration and proptests.

use super::*;
use crate::ids::{LeaderEpoch, Offset, ProducerId, TimestampMs};
use proptest::prelude::*;

const BATCH_BYTES_MAX: usize = 16 << 20;

/// An owned copy of a record, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedRecord {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl OwnedRecord {
    fn from_record(record: &Record<'_>) -> OwnedRecord {
        OwnedRecord {
            timestamp: record.timestamp().0,
            key: record.key().map(<[u8]>::to_vec),
            value: record.value().map(<[u8]>::to_vec),
            headers: record
                .headers()
                .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

fn push_all(builder: &mut BatchBuilder, records: &[OwnedRecord]) {
    for record in records {
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|(key, value)| Header { key, value: value.as_deref() })
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
}

fn read_all(batch: &RecordBatch<'_>) -> Vec<OwnedRecord> {
    let mut scratch = Vec::new();
    let records = batch.decompress_records(&mut scratch, BATCH_BYTES_MAX).unwrap();
    records.map(|record| OwnedRecord::from_record(&record.unwrap())).collect()
}

fn sample_records(count: usize) -> Vec<OwnedRecord> {
    (0..count)
        .map(|i| OwnedRecord {
            // Out of order on purpose: negative deltas, max not last.
            timestamp: 1_700_000_000_000 + (i as i64 * 7919) % 1000 - 500,
            key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
            value: match i % 5 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("value-{i}-").repeat(i % 40 + 1).into_bytes()),
            },
            headers: (0..i % 4)
                .map(|h| (format!("h{h}"), (h % 2 == 0).then(|| vec![h as u8; h])))
                .collect(),
        })
        .collect()
}

/// Hand-checked bytes of a two-record batch (kafka-python 3.0 writes the same bytes except
/// for partition leader epoch 0).
const GOLDEN: [u8; 80] = [
    0, 0, 0, 0, 0, 0, 0, 0, // base offset 0
    0, 0, 0, 0x44, // batch length 68 = 80 - 12
    0xff, 0xff, 0xff, 0xff, // partition leader epoch -1
    2,    // magic
    0x5a, 0x4d, 0xb6, 0xbd, // CRC-32C of bytes 21..80
    0, 0, // attributes: no compression, create time
    0, 0, 0, 1, // last offset delta 1
    0, 0, 0, 0, 0, 0, 0x03, 0xe8, // first timestamp 1000
    0, 0, 0, 0, 0, 0, 0x03, 0xed, // max timestamp 1005
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer id -1
    0xff, 0xff, // producer epoch -1
    0xff, 0xff, 0xff, 0xff, // base sequence -1
    0, 0, 0, 2, // record count 2
    // record 0: length 8, attributes 0, ts delta 0, offset delta 0, key "k", value "v", 0 headers
    0x10, 0, 0, 0, 0x02, b'k', 0x02, b'v', 0,
    // record 1: length 9, attributes 0, ts delta 5, offset delta 1, key null, value empty,
    // 1 header "h" with a null value
    0x12, 0, 0x0a, 0x02, 0x01, 0x00, 0x02, 0x02, b'h', 0x01,
];

fn golden_builder() -> BatchBuilder {
    let mut builder = BatchBuilder::new();
    builder.push_record(TimestampMs(1000), Some(b"k"), Some(b"v"), &[]).unwrap();
    let headers = [Header { key: "h", value: None }];
    builder.push_record(TimestampMs(1005), None, Some(b""), &headers).unwrap();
    builder
}

#[test]
fn golden_byte_layout() {
    let mut builder = golden_builder();
    assert_eq!(builder.encoded_len(), GOLDEN.len());
    assert_eq!(builder.finish(), &GOLDEN[..]);

    let batch = RecordBatch::parse(&GOLDEN, BATCH_BYTES_MAX).unwrap();
    let header = batch.header();
    assert_eq!(header.crc, 0x5a4d_b6bd);
    assert_eq!(header.record_count, 2);
    assert_eq!(header.last_offset(), Offset(1));
    assert_eq!(header.max_timestamp, TimestampMs(1005));
    let records: Vec<_> = batch.records().unwrap().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    assert_eq!((records[0].offset(), records[0].timestamp()), (Offset(0), TimestampMs(1000)));
    assert_eq!((records[0].key(), records[0].value()), (Some(&b"k"[..]), Some(&b"v"[..])));
    assert_eq!(records[0].headers().count(), 0);
    assert_eq!((records[1].offset(), records[1].timestamp()), (Offset(1), TimestampMs(1005)));
    assert_eq!((records[1].key(), records[1].value()), (None, Some(&b""[..])));
    let headers: Vec<_> = records[1].headers().collect();
    assert_eq!(headers, [Header { key: "h", value: None }]);
}

#[test]
fn header_write_to_matches_parse() {
    let header = BatchHeader::parse(&GOLDEN).unwrap();
    let mut out = [0u8; BATCH_HEADER_LEN];
    header.write_to(&mut out);
    assert_eq!(out[..], GOLDEN[..BATCH_HEADER_LEN]);
}

#[test]
fn round_trip_every_codec() {
    let records = sample_records(300);
    let mut builder = BatchBuilder::with_capacity(64 * 1024);
    builder.set_base_offset(Offset(1_000_000)).set_partition_leader_epoch(LeaderEpoch(9));
    let producer =
        ProducerState { producer_id: ProducerId(77), producer_epoch: 3, base_sequence: 4000 };
    builder.set_producer(producer);
    push_all(&mut builder, &records);
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap();
    let mut scratch = Vec::new();
    for codec in Compression::ALL {
        let bytes = if codec == Compression::None {
            builder.finish().to_vec()
        } else {
            builder.finish_compressed(codec, &mut scratch).unwrap().to_vec()
        };
        let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
        assert_eq!(batch.compression().unwrap(), codec);
        let header = batch.header();
        assert_eq!(header.base_offset, Offset(1_000_000));
        assert_eq!(header.partition_leader_epoch, LeaderEpoch(9));
        assert_eq!(header.producer_id, ProducerId(77));
        assert_eq!((header.producer_epoch, header.base_sequence), (3, 4000));
        assert_eq!(header.record_count, 300);
        assert_eq!(header.last_offset_delta, 299);
        assert_eq!(header.first_timestamp, TimestampMs(records[0].timestamp));
        assert_eq!(header.max_timestamp, TimestampMs(max_timestamp));
        assert_eq!(read_all(&batch), records, "{codec:?}");
        let offsets: Vec<i64> = {
            let mut scratch = Vec::new();
            let iter = batch.decompress_records(&mut scratch, BATCH_BYTES_MAX).unwrap();
            iter.map(|r| r.unwrap().offset().0).collect()
        };
        assert_eq!(offsets, (1_000_000..1_000_300).collect::<Vec<_>>());
        if codec != Compression::None {
            assert!(bytes.len() < builder.encoded_len(), "{codec:?} did not compress");
            assert!(matches!(batch.records(), Err(BatchError::Compressed(_))));
        }
    }
}

#[test]
fn empty_batch_and_cleared_builder() {
    let mut builder = BatchBuilder::with_capacity(4096);
    let bytes = builder.finish().to_vec();
    let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
    assert_eq!(batch.header().record_count, 0);
    assert_eq!(batch.header().first_timestamp, TimestampMs(NO_TIMESTAMP));
    assert_eq!(batch.records().unwrap().count(), 0);

    push_all(&mut builder, &sample_records(20));
    let capacity = builder.capacity();
    builder.clear();
    assert!(builder.is_empty());
    assert_eq!(builder.encoded_len(), BATCH_HEADER_LEN);
    assert_eq!(builder.capacity(), capacity);
    let records = sample_records(5);
    push_all(&mut builder, &records);
    let batch = RecordBatch::parse(builder.finish(), BATCH_BYTES_MAX).unwrap();
    assert_eq!(read_all(&batch), records);
}

#[test]
fn log_append_time_gives_every_record_the_max_timestamp() {
    let mut builder = BatchBuilder::new();
    builder.set_timestamp_type(TimestampType::LogAppendTime);
    push_all(&mut builder, &sample_records(4));
    let batch = RecordBatch::parse(builder.finish(), BATCH_BYTES_MAX).unwrap();
    let max = batch.header().max_timestamp;
    assert_eq!(batch.header().timestamp_type(), TimestampType::LogAppendTime);
    assert!(batch.records().unwrap().all(|r| r.unwrap().timestamp() == max));
}

#[test]
fn record_encoded_len_predicts_growth() {
    let mut builder = BatchBuilder::new();
    for record in sample_records(50) {
        let headers: Vec<Header<'_>> =
            record.headers.iter().map(|(k, v)| Header { key: k, value: v.as_deref() }).collect();
        let (key, value) = (record.key.as_deref(), record.value.as_deref());
        let timestamp = TimestampMs(record.timestamp);
        let predicted = builder.record_encoded_len(timestamp, key, value, &headers);
        let before = builder.encoded_len();
        builder.push_record(timestamp, key, value, &headers).unwrap();
        assert_eq!(builder.encoded_len() - before, predicted);
    }
}

#[test]
fn timestamp_delta_overflow_is_rejected_without_change() {
    let mut builder = BatchBuilder::new();
    builder.push_record(TimestampMs(i64::MIN), None, None, &[]).unwrap();
    let before = builder.encoded_len();
    assert!(matches!(
        builder.push_record(TimestampMs(i64::MAX), None, None, &[]),
        Err(BatchError::RecordDoesNotFit(_))
    ));
    assert_eq!((builder.encoded_len(), builder.record_count()), (before, 1));
}

/// Every strict prefix of a batch is an error for validation, and a partial tail for
/// `Batches`; nothing panics.
#[test]
fn truncation_at_every_byte() {
    let mut builder = golden_builder();
    push_all(&mut builder, &sample_records(10));
    let mut scratch = Vec::new();
    for codec in Compression::ALL {
        let bytes = builder.finish_compressed(codec, &mut scratch).unwrap().to_vec();
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            assert!(validate_batch(prefix, BATCH_BYTES_MAX).is_err(), "{codec:?} cut {cut}");
            assert!(RecordBatch::parse(prefix, BATCH_BYTES_MAX).is_err());
            let mut batches = Batches::new(prefix, BATCH_BYTES_MAX);
            assert!(batches.next().is_none(), "{codec:?} cut {cut}");
            assert_eq!(batches.partial_tail().map(<[u8]>::len), (cut > 0).then_some(cut));
        }
    }
}

/// Cuts the records region short and re-seals the CRC and length so that only the record
/// decoder can notice: it must report an error, never panic, for every cut.
#[test]
fn truncated_records_with_valid_crc_are_errors() {
    let mut builder = BatchBuilder::new();
    push_all(&mut builder, &sample_records(12));
    let full = builder.finish().to_vec();
    for cut in BATCH_HEADER_LEN..full.len() {
        let mut bytes = full[..cut].to_vec();
        let length = (cut - BATCH_LENGTH_PREFIX) as i32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        write_crc(&mut bytes);
        let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
        let outcome: Result<Vec<_>, _> = batch.records().unwrap().collect();
        assert!(outcome.is_err(), "cut {cut}");
    }
}

#[test]
fn trailing_bytes_after_the_last_record_are_an_error() {
    let mut bytes = GOLDEN.to_vec();
    bytes.push(0);
    let length = (bytes.len() - BATCH_LENGTH_PREFIX) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    write_crc(&mut bytes);
    let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
    let results: Vec<_> = batch.records().unwrap().collect();
    assert_eq!(results.len(), 3);
    assert!(matches!(results[2], Err(BatchError::CorruptRecord { index: 2, .. })));
}

#[test]
fn flipped_byte_in_crc_range_is_detected() {
    let mut builder = golden_builder();
    push_all(&mut builder, &sample_records(8));
    let bytes = builder.finish().to_vec();
    for at in 21..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= mask;
            assert!(
                matches!(
                    validate_batch(&corrupt, BATCH_BYTES_MAX),
                    Err(BatchError::CrcMismatch { .. })
                ),
                "byte {at} mask {mask:#x}"
            );
        }
    }
    // The stored CRC itself.
    for at in 17..21 {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x10;
        assert!(matches!(
            validate_batch(&corrupt, BATCH_BYTES_MAX),
            Err(BatchError::CrcMismatch { .. })
        ));
    }
}

#[test]
fn rewriting_base_offset_and_epoch_keeps_the_crc_valid() {
    let mut bytes = golden_builder().finish().to_vec();
    let crc_before = validate_batch(&bytes, BATCH_BYTES_MAX).unwrap().crc;
    set_base_offset(&mut bytes, Offset(123_456_789_000));
    set_partition_leader_epoch(&mut bytes, LeaderEpoch(42));
    let header = validate_batch(&bytes, BATCH_BYTES_MAX).unwrap();
    assert_eq!(header.crc, crc_before);
    assert_eq!(header.base_offset, Offset(123_456_789_000));
    assert_eq!(header.partition_leader_epoch, LeaderEpoch(42));
    let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
    let offsets: Vec<_> = batch.records().unwrap().map(|r| r.unwrap().offset()).collect();
    assert_eq!(offsets, [Offset(123_456_789_000), Offset(123_456_789_001)]);
}

#[test]
fn batches_iterates_consecutive_batches_and_stops_at_corruption() {
    let mut builder = BatchBuilder::new();
    let mut stream = Vec::new();
    for base in 0..5i64 {
        builder.clear();
        builder.set_base_offset(Offset(base * 10));
        push_all(&mut builder, &sample_records(base as usize + 1));
        stream.extend_from_slice(builder.finish());
    }
    let mut batches = Batches::new(&stream, BATCH_BYTES_MAX);
    let bases: Vec<_> = batches.by_ref().map(|b| b.unwrap().header().base_offset.0).collect();
    assert_eq!(bases, [0, 10, 20, 30, 40]);
    assert_eq!(batches.partial_tail(), None);
    assert!(batches.remaining_bytes().is_empty());

    // Corrupt a byte inside the third batch: two good batches, then one error, then the end.
    let third_start = {
        let mut batches = Batches::new(&stream, BATCH_BYTES_MAX);
        batches.nth(2).unwrap().unwrap().as_bytes().as_ptr() as usize - stream.as_ptr() as usize
    };
    let mut corrupt = stream.clone();
    corrupt[third_start + 30] ^= 1;
    let results: Vec<_> = Batches::new(&corrupt, BATCH_BYTES_MAX).collect();
    assert_eq!(results.len(), 3);
    assert!(matches!(results[2], Err(BatchError::CrcMismatch { .. })));

    // A wrong magic is corruption even in a partial tail.
    let mut bad_magic = stream[..third_start + 20].to_vec();
    bad_magic[third_start + 16] = 1;
    let results: Vec<_> = Batches::new(&bad_magic, BATCH_BYTES_MAX).collect();
    assert!(matches!(results[2], Err(BatchError::UnsupportedMagic(1))));

    // A length field over the bound is an error, not a partial batch.
    let results: Vec<_> = Batches::new(&stream, BATCH_HEADER_LEN + 2).collect();
    assert!(matches!(results[0], Err(BatchError::InvalidLength { .. })));
}

#[test]
fn unbounded_batch_size_is_accepted() {
    // usize::MAX must not wrap into a negative i64 bound (found by fuzzing).
    assert!(validate_batch(&GOLDEN, usize::MAX).is_ok());
    assert_eq!(batch_total_len(&GOLDEN, usize::MAX), Ok(GOLDEN.len()));
}

#[test]
fn base_offset_out_of_range_is_rejected() {
    // Found by fuzzing: offset arithmetic on such a header used to overflow.
    for base_offset in [-1, i64::MIN, i64::MAX - 1, i64::MAX] {
        let mut bytes = GOLDEN.to_vec();
        set_base_offset(&mut bytes, Offset(base_offset));
        assert_eq!(
            validate_batch(&bytes, BATCH_BYTES_MAX),
            Err(BatchError::Corrupt("base offset out of range")),
            "{base_offset}"
        );
        let header = BatchHeader::parse(&bytes).unwrap();
        let _ = (header.last_offset(), header.next_offset()); // saturates, no panic
    }
    let mut bytes = GOLDEN.to_vec();
    set_base_offset(&mut bytes, Offset(i64::MAX - 2)); // last offset delta 1: next is MAX
    assert_eq!(validate_batch(&bytes, BATCH_BYTES_MAX).unwrap().next_offset(), Offset(i64::MAX));
}

#[test]
fn unknown_codec_is_reported() {
    let mut bytes = GOLDEN.to_vec();
    bytes[22] |= 0x05;
    write_crc(&mut bytes);
    let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
    assert_eq!(batch.compression(), Err(BatchError::UnknownCompression(5)));
    assert!(batch.records().is_err());
    assert!(batch.decompress_records(&mut Vec::new(), 1024).is_err());
}

#[test]
fn decompression_is_bounded() {
    let mut builder = BatchBuilder::new();
    let value = vec![0u8; 100_000];
    builder.push_record(TimestampMs(0), None, Some(&value), &[]).unwrap();
    let mut scratch = Vec::new();
    let bytes = builder.finish_compressed(Compression::Gzip, &mut scratch).unwrap().to_vec();
    let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
    let error = batch.decompress_records(&mut scratch, 50_000).err();
    assert_eq!(error, Some(BatchError::DecompressedTooLarge { limit: 50_000 }));
}

#[test]
fn invalid_utf8_header_key_is_a_corrupt_record() {
    let mut bytes = golden_builder().finish().to_vec();
    let at = bytes.iter().rposition(|&b| b == b'h').unwrap();
    bytes[at] = 0xff;
    write_crc(&mut bytes);
    let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
    let results: Vec<_> = batch.records().unwrap().collect();
    assert!(matches!(results[1], Err(BatchError::CorruptRecord { index: 1, .. })));
}

fn arb_bytes(size_max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..size_max))
}

fn arb_record() -> impl Strategy<Value = OwnedRecord> {
    let header = ("[a-zé.-]{0,12}", arb_bytes(20));
    (
        any::<i64>().prop_map(|t| t >> 2), // leaves room for deltas between any two
        arb_bytes(64),
        arb_bytes(300),
        proptest::collection::vec(header, 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| OwnedRecord {
            timestamp,
            key,
            value,
            headers,
        })
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

/// Seeded from `SLUICE_TEST_SEED` (default fixed), cases from `PROPTEST_CASES` (default 128);
/// a failure prints the seed and the minimal failing input.
fn proptest_config() -> ProptestConfig {
    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_ba7c_u64);
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 128;
    }
    config.rng_seed = proptest::test_runner::RngSeed::Fixed(seed);
    config.failure_persistence = None;
    // Printed only when a test fails (the harness captures it otherwise).
    println!("proptest seed {seed} (override with SLUICE_TEST_SEED)");
    config
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn proptest_round_trip(
        records in proptest::collection::vec(arb_record(), 0..40),
        codec in arb_codec(),
        base_offset in 0i64..(1 << 50),
        epoch in any::<i32>(),
    ) {
        let mut builder = BatchBuilder::new();
        builder.set_base_offset(Offset(base_offset)).set_partition_leader_epoch(LeaderEpoch(epoch));
        push_all(&mut builder, &records);
        let mut scratch = Vec::new();
        let bytes = builder.finish_compressed(codec, &mut scratch).unwrap();
        let batch = RecordBatch::parse(bytes, BATCH_BYTES_MAX).unwrap();
        prop_assert_eq!(read_all(&batch), records.clone());
        prop_assert_eq!(batch.header().record_count as usize, records.len());
        if let Some(max) = records.iter().map(|r| r.timestamp).max() {
            prop_assert_eq!(batch.header().max_timestamp, TimestampMs(max));
        }
    }

    /// Arbitrary bytes never panic the reader, with or without a valid length and CRC.
    #[test]
    fn proptest_garbage_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&bytes);
        if bytes.len() >= BATCH_HEADER_LEN {
            let length = (bytes.len() - BATCH_LENGTH_PREFIX) as i32;
            bytes[8..12].copy_from_slice(&length.to_be_bytes());
            bytes[16] = 2;
            bytes[21] = 0;
            bytes[22] &= 0x07;
            write_crc(&mut bytes);
            let header = BatchHeader::parse(&bytes).unwrap();
            let consistent = header.record_count >= 0
                && header.last_offset_delta >= 0
                && (header.record_count == 0
                    || header.last_offset_delta >= header.record_count - 1)
                && header.base_offset.0 >= 0
                && header.base_offset.0.checked_add(i64::from(header.last_offset_delta) + 1)
                    .is_some();
            prop_assert_eq!(validate_batch(&bytes, BATCH_BYTES_MAX).is_ok(), consistent);
            exercise(&bytes);
        }
    }
}

fn exercise(bytes: &[u8]) {
    let mut scratch = Vec::new();
    for batch in Batches::new(bytes, BATCH_BYTES_MAX).flatten() {
        if let Ok(records) = batch.decompress_records(&mut scratch, 1 << 16) {
            for record in records.flatten() {
                let _ = record.headers().count();
            }
        }
    }
}

#[test]
fn sequences_wrap_at_i32_max_and_distances_follow() {
    use super::{sequence_after, sequence_distance_behind};
    assert_eq!(sequence_after(0, 10), 10);
    assert_eq!(sequence_after(i32::MAX - 4, 5), 0);
    assert_eq!(sequence_after(i32::MAX, 3), 2);
    assert_eq!(sequence_distance_behind(10, 10), 0);
    assert_eq!(sequence_distance_behind(5, 10), 5);
    assert_eq!(sequence_distance_behind(i32::MAX - 1, 3), 5);
    // Ahead of `next` reads as almost a full circle behind.
    assert_eq!(sequence_distance_behind(11, 10), i64::from(i32::MAX));
}

#[test]
fn producer_state_rewrite_keeps_the_batch_valid_in_every_codec() {
    use super::set_producer_state;
    let records = sample_records(50);
    let mut builder = BatchBuilder::with_capacity(64 * 1024);
    push_all(&mut builder, &records);
    let mut scratch = Vec::new();
    for codec in Compression::ALL {
        let mut bytes = if codec == Compression::None {
            builder.finish().to_vec()
        } else {
            builder.finish_compressed(codec, &mut scratch).unwrap().to_vec()
        };
        let renumbered = ProducerState {
            producer_id: ProducerId(1 << 40),
            producer_epoch: 7,
            base_sequence: 99,
        };
        set_producer_state(&mut bytes, renumbered);
        let header = validate_batch(&bytes, BATCH_BYTES_MAX).expect("the CRC was rewritten");
        assert_eq!(header.producer_id, ProducerId(1 << 40));
        assert_eq!((header.producer_epoch, header.base_sequence), (7, 99));
        let batch = RecordBatch::parse(&bytes, BATCH_BYTES_MAX).unwrap();
        assert_eq!(read_all(&batch), records, "{codec:?}");
    }
}
