//! Fuzzes the record batch reader: batch framing ([`Batches`]), validation, record and header
//! decoding, and the decompressing path with a bounded output.
//!
//! The first input byte picks a mode. Bit 0 set: the rest is made into one batch whose length,
//! magic and CRC are correct, so the fuzzer reaches record decoding and decompression instead
//! of stopping at the CRC. Whatever the input, nothing may panic, and every batch whose records
//! all decode must survive a rebuild through [`BatchBuilder`] with the same records.

#![no_main]

use sluice_proto::ids::TimestampMs;
use sluice_proto::record::{
    write_crc, BatchBuilder, Batches, Header, RecordBatch, BATCH_HEADER_LEN, BATCH_LENGTH_PREFIX,
};

/// Largest batch accepted, as a broker would configure it.
const BATCH_BYTES_MAX: usize = 1 << 20;
/// Bound on decompressed records; keeps decompression bombs cheap.
const DECOMPRESSED_BYTES_MAX: usize = 1 << 20;

type OwnedRecord = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>);

fn read_records(batch: &RecordBatch<'_>, scratch: &mut Vec<u8>) -> Option<Vec<OwnedRecord>> {
    let records = batch.decompress_records(scratch, DECOMPRESSED_BYTES_MAX).ok()?;
    let mut owned = Vec::new();
    for record in records {
        let record = record.ok()?;
        let headers =
            record.headers().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect();
        owned.push((record.key().map(<[u8]>::to_vec), record.value().map(<[u8]>::to_vec), headers));
    }
    Some(owned)
}

fn check_rebuild(records: &[OwnedRecord]) {
    let mut builder = BatchBuilder::new();
    for (key, value, headers) in records {
        let headers: Vec<Header<'_>> =
            headers.iter().map(|(k, v)| Header { key: k, value: v.as_deref() }).collect();
        builder.push_record(TimestampMs(0), key.as_deref(), value.as_deref(), &headers).unwrap();
    }
    let bytes = builder.finish();
    let batch = RecordBatch::parse(bytes, usize::MAX).expect("rebuilt batch must validate");
    let mut scratch = Vec::new();
    let reread = read_records(&batch, &mut scratch).expect("rebuilt records must decode");
    assert_eq!(reread, records);
}

fn exercise(bytes: &[u8]) {
    let mut scratch = Vec::new();
    let mut batches = Batches::new(bytes, BATCH_BYTES_MAX);
    for batch in batches.by_ref() {
        let Ok(batch) = batch else { break };
        let header = batch.header();
        let _ = (header.last_offset(), header.next_offset(), header.timestamp_type());
        if let Some(records) = read_records(&batch, &mut scratch) {
            assert_eq!(records.len(), header.record_count as usize);
            check_rebuild(&records);
        }
    }
    let _ = batches.partial_tail();
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 || rest.len() < BATCH_HEADER_LEN {
        exercise(rest);
        return;
    }
    let mut batch = rest.to_vec();
    let length = (batch.len() - BATCH_LENGTH_PREFIX) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[16] = 2;
    write_crc(&mut batch);
    exercise(&batch);
});
