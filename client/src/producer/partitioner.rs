//! Partition choice: Kafka's murmur2 key hash, byte for byte, and the sticky partitioner.
//!
//! Keyed records land where Kafka's Java client (and kafka-python's `DefaultPartitioner`) put
//! them: `toPositive(murmur2(keyBytes)) % numPartitions`, with `toPositive(n) = n & 0x7fffffff`.
//! Keyless records go to a per-topic sticky partition that moves on, round robin, each time the
//! producer seals a batch for it, so batches fill up instead of spreading one record per
//! partition.

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's `Utils.murmur2`: MurmurHash2, seed `0x9747b28c`, 32-bit, little-endian words.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's `int length` and the arithmetic below wrap exactly like u32 operations.
    let length = data.len() as u32;
    let mut hash = SEED ^ length;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = words.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on MIN).
pub fn to_positive(number: i32) -> u32 {
    (number & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner gives a record with `key`.
///
/// ```
/// use sluice_client::key_partition;
/// // kafka-python: murmur2(b"kafka") == 3496464228 (unsigned), toPositive 1348980580.
/// assert_eq!(key_partition(b"kafka", 10), 1348980580 % 10);
/// ```
pub fn key_partition(key: &[u8], partition_count: u32) -> u32 {
    if partition_count == 0 {
        return 0;
    }
    to_positive(murmur2(key)) % partition_count
}

/// A topic's sticky partition for keyless records.
#[derive(Debug, Default)]
pub(crate) struct StickyPartition {
    current: AtomicU32,
}

impl StickyPartition {
    pub(crate) fn new(start: u32) -> StickyPartition {
        StickyPartition { current: AtomicU32::new(start) }
    }

    /// The partition keyless records go to now.
    pub(crate) fn current(&self, partition_count: u32) -> u32 {
        if partition_count == 0 {
            return 0;
        }
        self.current.load(Ordering::Relaxed) % partition_count
    }

    /// Moves on after a batch for `sealed` was sealed; a no-op if another thread moved first.
    pub(crate) fn advance_from(&self, sealed: u32, partition_count: u32) {
        if partition_count <= 1 {
            return;
        }
        let current = self.current.load(Ordering::Relaxed);
        if current % partition_count == sealed {
            let next = (sealed + 1) % partition_count;
            let _ignored =
                self.current.compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kafka.partitioner.default.murmur2` values from kafka-python 3.0.12, which returns the
    /// Java `int` as an unsigned 32-bit number (both follow
    /// `org.apache.kafka.common.utils.Utils.murmur2`). Regenerate with
    /// `python -c 'from kafka.partitioner.default import murmur2; print(murmur2(b"a"))'`;
    /// `tests/partitioner_kafka.rs` also checks random keys against the live Python function.
    const KAFKA_VALUES: &[(&[u8], u32)] = &[
        (b"", 275_646_681),
        (b"a", 2_731_586_172),
        (b"ab", 316_155_434),
        (b"abc", 479_470_107),
        (b"abcd", 2_971_317_748),
        (b"foo", 597_841_616),
        (b"hello world", 1_221_641_059),
        (b"kafka", 3_496_464_228),
        (b"\x00", 375_494_588),
        (b"\xff\xfe\xfd", 998_637_092),
        (b"key-12345", 3_342_263_381),
        (b"21", 3_321_034_988),
        (b"\x80\x81\x82\x83\x84", 2_629_344_857),
    ];

    #[test]
    fn matches_known_kafka_values() {
        for (key, expected) in KAFKA_VALUES {
            assert_eq!(murmur2(key) as u32, *expected, "key {key:?}");
        }
        let all_bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(murmur2(&all_bytes) as u32, 2_346_620_022);
        // toPositive, then modulo: where Kafka puts the key.
        assert_eq!(key_partition(b"a", 1_000_000_007), 584_102_524);
        assert_eq!(key_partition(b"key-12345", 7), 1_194_779_733 % 7);
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
    }

    #[test]
    fn sticky_moves_round_robin_once_per_sealed_batch() {
        let sticky = StickyPartition::new(2);
        assert_eq!(sticky.current(3), 2);
        sticky.advance_from(2, 3);
        assert_eq!(sticky.current(3), 0);
        // A stale seal (another thread already moved on) does not skip a partition.
        sticky.advance_from(2, 3);
        assert_eq!(sticky.current(3), 0);
        sticky.advance_from(0, 3);
        assert_eq!(sticky.current(3), 1);
        assert_eq!(sticky.current(0), 0);
        assert_eq!(key_partition(b"k", 0), 0);
    }
}
