//! Proves the record module's allocation guarantees with a counting global allocator: reading
//! (batch framing, validation, records, headers) never allocates, and a warmed-up
//! `BatchBuilder` builds a batch without allocating.

use sluice_proto::ids::{Offset, TimestampMs};
use sluice_proto::record::{BatchBuilder, Batches, Header, RecordBatch};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts allocations made by the current thread (tests run on parallel threads).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(pointer, layout, size) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

const VALUE: [u8; 300] = [7; 300];

fn fill(builder: &mut BatchBuilder, base_offset: i64) {
    builder.clear();
    builder.set_base_offset(Offset(base_offset));
    let headers =
        [Header { key: "trace-id", value: Some(b"abc") }, Header { key: "n", value: None }];
    for i in 0..200i64 {
        let key = i.to_be_bytes();
        let value = if i % 7 == 0 { None } else { Some(&VALUE[..(i as usize % 300)]) };
        builder.push_record(TimestampMs(1_000 + i), Some(&key), value, &headers).unwrap();
    }
}

#[test]
fn warmed_up_builder_does_not_allocate() {
    let mut builder = BatchBuilder::with_capacity(1024);
    fill(&mut builder, 0); // grows the buffer to its working size
    builder.finish();
    let mut length = 0;
    let allocations = allocations_during(|| {
        for round in 0..10 {
            fill(&mut builder, round * 200);
            length += builder.finish().len();
        }
    });
    assert!(length > 10 * 200 * 100, "built {length} bytes");
    assert_eq!(allocations, 0);
}

#[test]
fn reading_does_not_allocate() {
    let mut builder = BatchBuilder::new();
    let mut stream = Vec::new();
    for round in 0..4 {
        fill(&mut builder, round * 200);
        stream.extend_from_slice(builder.finish());
    }
    stream.extend_from_slice(&builder.finish()[..100]); // partial tail

    let mut records_read = 0;
    let mut header_bytes = 0;
    let allocations = allocations_during(|| {
        let mut batches = Batches::new(&stream, 1 << 20);
        for batch in batches.by_ref() {
            let batch = batch.unwrap();
            let batch = RecordBatch::parse(batch.as_bytes(), 1 << 20).unwrap();
            for record in batch.records().unwrap() {
                let record = record.unwrap();
                records_read += 1;
                header_bytes += record.headers().map(|h| h.key.len()).sum::<usize>();
            }
        }
        assert_eq!(batches.partial_tail().map(<[u8]>::len), Some(100));
    });
    assert_eq!(records_read, 800);
    assert_eq!(header_bytes, 800 * 9);
    assert_eq!(allocations, 0);
}

#[test]
fn the_counter_sees_allocations() {
    // Guards against a counter that never counts (which would make the tests above vacuous).
    let allocations = allocations_during(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert!(allocations >= 1);
}
