//! Hostile lengths never allocate what they claim: a counting allocator records the largest
//! single allocation while decoding frames and bodies that declare gigabytes.
//!
//! One test function only, so no other test in this binary allocates concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_proto::api::admin::ListTopicsResponse;
use sluice_proto::api::fetch::FetchResponse;
use sluice_proto::api::produce::ProduceRequest;
use sluice_proto::api::{ApiVersion, Decode};
use sluice_proto::frame::{FrameDecoder, FRAME_BYTES_MAX_DEFAULT};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Any allocation above this during a hostile decode is a defect.
const ALLOCATION_BYTES_LIMIT: usize = 2 * 1024 * 1024;

fn largest_during(label: &str, run: impl FnOnce()) {
    LARGEST.store(0, Ordering::Relaxed);
    run();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < ALLOCATION_BYTES_LIMIT, "{label}: allocated {largest} bytes at once");
}

#[test]
fn hostile_lengths_do_not_allocate_their_claim() {
    largest_during("frame declaring 4 GiB", || {
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
        decoder.feed(&u32::MAX.to_be_bytes());
        assert!(decoder.next_frame().is_err());
    });
    largest_during("frame declaring the maximum, mostly unsent", || {
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
        decoder.feed(&FRAME_BYTES_MAX_DEFAULT.to_be_bytes());
        decoder.feed(&[0, 1, 0, 0, 0, 0, 0, 1]);
        assert!(decoder.next_frame().unwrap().is_none());
    });
    largest_during("produce with 2^31 topics", || {
        let mut body = vec![2, 0, 0, 0, 0];
        body.extend_from_slice(&(1u32 << 31).to_be_bytes());
        body.extend_from_slice(&[0; 32]);
        assert!(ProduceRequest::decode(ApiVersion(0), &body).is_err());
    });
    largest_during("fetch response with 2^31 partitions and 2^31 record bytes", || {
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&[0, 1, b't']);
        body.extend_from_slice(&(1u32 << 31).to_be_bytes());
        assert!(FetchResponse::decode(ApiVersion(0), &body).is_err());
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&[0, 1, b't']);
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&[0; 38]);
        body.extend_from_slice(&(1u32 << 31).to_be_bytes());
        assert!(FetchResponse::decode(ApiVersion(0), &body).is_err());
    });
    largest_during("postcard vector of 2^31 topics", || {
        // error code 0 (zigzag varint), then a varint length of 2^31.
        let body = [0x00, 0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
        assert!(ListTopicsResponse::decode(ApiVersion(0), &body).is_err());
    });
}
