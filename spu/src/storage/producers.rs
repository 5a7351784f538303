//! Idempotent produce: the sequence state of each producer that appends to one log.
//!
//! A batch with a producer id of 0 or more carries the producer's epoch and the sequence number
//! of its first record; the producer numbers its batches of one partition without gaps. The
//! table decides, when the batch is about to get its offsets, whether it may be appended:
//!
//! * **Next in line** (same epoch, base sequence = the next expected one): appended.
//! * **A retry of an appended batch** (same epoch, the whole batch behind the next expected
//!   sequence): not appended again ([`Admission::Duplicate`]); the caller acknowledges it once
//!   the producer's last appended batch is as durable as the request asks, with the offset the
//!   batch got when it was appended if it is one of the producer's last
//!   [`RECENT_BATCHES_PER_PRODUCER`] batches (a retry after a leader change is usually one:
//!   the new leader replicated it, the producer never got its answer).
//! * **Ahead** (same epoch, a gap before it): refused as out of order, so a request that
//!   arrives after an earlier one failed cannot overtake it. The producer retries the earlier
//!   batches first, or, if they failed for good, starts a new epoch.
//! * **New epoch at sequence 0**, or an unknown producer at sequence 0: starts the producer's
//!   state. Any other unknown producer or epoch is refused as unknown; the producer then starts
//!   a new epoch at sequence 0 with its unacknowledged batches.
//!
//! Batches without a producer id (-1, Kafka's non-idempotent producers) skip all of this.
//!
//! Invariants: the state says what the log's appended batches say, never more. It is updated
//! only after a batch was staged, followers update it from the batches they replicate (so a
//! promoted follower knows the producers), and it is cleared whenever appended batches are
//! dropped (a failed write round, a truncation): a producer then gets "unknown" once and
//! starts a new epoch, which may write a batch again whose first attempt's outcome it never
//! learned (at least once, as without idempotence). When a log is opened it is rebuilt from
//! the newest batches of the active segment ([`super::log::PRODUCER_SCAN_BYTES`]), so retries
//! across a restart are still recognized. It holds at most
//! [`PRODUCERS_PER_LOG_MAX`] producers; the one that appended least recently is forgotten
//! first.

use std::collections::HashMap;

use sluice_proto::ids::{Offset, ProducerId};
use sluice_proto::record::{sequence_after, sequence_distance_behind, BatchHeader};

use super::log::Appended;

/// Producers remembered per log (about 3 KiB each, most of it [`RECENT_BATCHES_PER_PRODUCER`]:
/// 3 MiB per log at most, with that many producers writing to one partition).
pub const PRODUCERS_PER_LOG_MAX: usize = 1024;

/// Batches per producer whose offsets a retry is answered with: as many as an idempotent
/// producer may keep unacknowledged per partition (the SDK holds back further batches).
pub const RECENT_BATCHES_PER_PRODUCER: usize =
    sluice_proto::api::produce::IDEMPOTENT_BATCHES_REMEMBERED;

/// Why a batch of an idempotent producer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// Earlier batches of this producer and epoch are missing.
    #[error(
        "producer {producer} epoch {epoch}: batch at sequence {sequence} is out of order, \
         the next expected sequence is {expected}"
    )]
    OutOfOrder {
        /// The producer.
        producer: i64,
        /// Its epoch.
        epoch: i16,
        /// The batch's base sequence.
        sequence: i32,
        /// What the log expected.
        expected: i32,
    },
    /// The log has no state for this producer and epoch, and the batch does not start one.
    #[error(
        "producer {producer} epoch {epoch} is unknown to this log and its batch starts at \
         sequence {sequence}, not 0"
    )]
    UnknownProducer {
        /// The producer.
        producer: i64,
        /// Its epoch.
        epoch: i16,
        /// The batch's base sequence.
        sequence: i32,
    },
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Append it.
    Append,
    /// Already appended: do not append again; `last` is the producer's last appended batch,
    /// which covers it (the log is written and synced in order).
    Duplicate {
        /// The producer's last appended batch.
        last: Appended,
        /// The offset the batch got when it was appended, if it is one of the producer's
        /// recent batches.
        base_offset: Option<Offset>,
    },
}

/// Where one of a producer's recent batches went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecentBatch {
    base_sequence: i32,
    record_count: i32,
    base_offset: Offset,
}

#[derive(Debug, Clone, Copy)]
struct ProducerEntry {
    epoch: i16,
    next_sequence: i32,
    last: Appended,
    /// The producer's last batches in this epoch, a ring; `recent_next` is the next slot.
    recent: [Option<RecentBatch>; RECENT_BATCHES_PER_PRODUCER],
    recent_next: usize,
    /// When it last appended, in table ticks (for eviction).
    used: u64,
}

/// The producers of one log; see the module docs.
#[derive(Debug, Default)]
pub struct ProducerTable {
    entries: HashMap<i64, ProducerEntry>,
    tick: u64,
}

impl ProducerTable {
    /// Decides about a batch as leader (nothing changes until [`ProducerTable::record`]).
    pub fn admit(&self, header: &BatchHeader) -> Result<Admission, SequenceError> {
        let producer = header.producer_id.0;
        if producer < 0 {
            return Ok(Admission::Append);
        }
        let (epoch, sequence) = (header.producer_epoch, header.base_sequence);
        let entry = match self.entries.get(&producer) {
            Some(entry) if entry.epoch == epoch => entry,
            // A new epoch, or a producer this log does not know, starts at sequence 0.
            _ if sequence == 0 => return Ok(Admission::Append),
            _ => return Err(SequenceError::UnknownProducer { producer, epoch, sequence }),
        };
        if sequence == entry.next_sequence {
            return Ok(Admission::Append);
        }
        let count = i64::from(header.record_count.max(1));
        let behind = sequence_distance_behind(sequence, entry.next_sequence);
        // Behind by at least the batch's own records, and by less than half the sequence
        // circle (more would be a batch from far ahead that wrapped).
        if behind >= count && behind <= i64::from(i32::MAX / 2) {
            let base_offset = entry
                .recent
                .iter()
                .flatten()
                .find(|batch| {
                    batch.base_sequence == sequence && batch.record_count == header.record_count
                })
                .map(|batch| batch.base_offset);
            return Ok(Admission::Duplicate { last: entry.last, base_offset });
        }
        Err(SequenceError::OutOfOrder { producer, epoch, sequence, expected: entry.next_sequence })
    }

    /// Records a staged batch (leader or follower): its producer's next sequence follows it.
    pub fn record(&mut self, header: &BatchHeader, appended: Appended) {
        let producer = header.producer_id.0;
        if producer < 0 {
            return;
        }
        self.tick += 1;
        let (mut recent, mut recent_next) = match self.entries.get(&producer) {
            Some(entry) if entry.epoch == header.producer_epoch => {
                (entry.recent, entry.recent_next)
            }
            _ => ([None; RECENT_BATCHES_PER_PRODUCER], 0),
        };
        recent[recent_next] = Some(RecentBatch {
            base_sequence: header.base_sequence,
            record_count: header.record_count,
            base_offset: appended.base_offset,
        });
        recent_next = (recent_next + 1) % RECENT_BATCHES_PER_PRODUCER;
        let entry = ProducerEntry {
            epoch: header.producer_epoch,
            next_sequence: sequence_after(header.base_sequence, header.record_count),
            last: appended,
            recent,
            recent_next,
            used: self.tick,
        };
        if self.entries.len() >= PRODUCERS_PER_LOG_MAX && !self.entries.contains_key(&producer) {
            let oldest = self.entries.iter().min_by_key(|(_, entry)| entry.used).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(producer, entry);
    }

    /// Forgets every producer (appended batches were dropped).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Producers known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next expected sequence and epoch of `producer`, if known.
    pub fn next_sequence(&self, producer: ProducerId) -> Option<(i16, i32)> {
        self.entries.get(&producer.0).map(|entry| (entry.epoch, entry.next_sequence))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::ids::{LeaderEpoch, TimestampMs};
    use sluice_proto::record::{MAGIC_V2, NO_PRODUCER_ID};

    fn header(producer: i64, epoch: i16, sequence: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: Offset(0),
            batch_length: 100,
            partition_leader_epoch: LeaderEpoch(0),
            magic: MAGIC_V2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            first_timestamp: TimestampMs(0),
            max_timestamp: TimestampMs(0),
            producer_id: ProducerId(producer),
            producer_epoch: epoch,
            base_sequence: sequence,
            record_count: count,
        }
    }

    fn appended(next: i64) -> Appended {
        Appended::for_tests(Offset(next - 1), Offset(next))
    }

    /// Admits and, when appended, records: what a leader does.
    fn offer(
        table: &mut ProducerTable,
        header: &BatchHeader,
        at: i64,
    ) -> Result<Admission, SequenceError> {
        let admission = table.admit(header)?;
        if admission == Admission::Append {
            table.record(header, appended(at));
        }
        Ok(admission)
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut table = ProducerTable::default();
        assert_eq!(offer(&mut table, &header(7, 0, 0, 10), 10), Ok(Admission::Append));
        assert_eq!(offer(&mut table, &header(7, 0, 10, 5), 15), Ok(Admission::Append));
        assert_eq!(table.next_sequence(ProducerId(7)), Some((0, 15)));
        // Both earlier batches again: duplicates covered by the last appended batch, each
        // answered with the offset it got.
        for (retried, at) in [(header(7, 0, 0, 10), 10), (header(7, 0, 10, 5), 15)] {
            assert_eq!(
                offer(&mut table, &retried, 99),
                Ok(Admission::Duplicate { last: appended(15), base_offset: Some(Offset(at - 1)) })
            );
        }
        assert_eq!(table.next_sequence(ProducerId(7)), Some((0, 15)));
    }

    #[test]
    fn only_recent_batches_keep_their_offsets_and_a_new_epoch_forgets_them() {
        let mut table = ProducerTable::default();
        let batches = RECENT_BATCHES_PER_PRODUCER as i32 + 4;
        for index in 0..batches {
            let at = i64::from(index) * 10 + 10;
            assert_eq!(offer(&mut table, &header(7, 0, index * 2, 2), at), Ok(Admission::Append));
        }
        let last = appended(i64::from(batches - 1) * 10 + 10);
        // The oldest batches are still duplicates, without an offset.
        assert_eq!(
            offer(&mut table, &header(7, 0, 0, 2), 0),
            Ok(Admission::Duplicate { last, base_offset: None })
        );
        let newest_kept = batches - RECENT_BATCHES_PER_PRODUCER as i32;
        assert_eq!(
            offer(&mut table, &header(7, 0, newest_kept * 2, 2), 0),
            Ok(Admission::Duplicate {
                last,
                base_offset: Some(Offset(i64::from(newest_kept) * 10 + 9)),
            })
        );
        // Same sequence, other record count: not that batch.
        assert_eq!(
            offer(&mut table, &header(7, 0, newest_kept * 2, 1), 0),
            Ok(Admission::Duplicate { last, base_offset: None })
        );
        // A new epoch starts over.
        assert_eq!(offer(&mut table, &header(7, 1, 0, 2), 500), Ok(Admission::Append));
        assert_eq!(offer(&mut table, &header(7, 1, 2, 2), 510), Ok(Admission::Append));
        assert_eq!(
            offer(&mut table, &header(7, 1, 0, 2), 0),
            Ok(Admission::Duplicate { last: appended(510), base_offset: Some(Offset(499)) })
        );
    }

    #[test]
    fn a_gap_is_refused_until_the_missing_batch_arrives() {
        let mut table = ProducerTable::default();
        offer(&mut table, &header(7, 0, 0, 10), 10).unwrap();
        let ahead = header(7, 0, 20, 10);
        assert_eq!(
            offer(&mut table, &ahead, 20),
            Err(SequenceError::OutOfOrder { producer: 7, epoch: 0, sequence: 20, expected: 10 })
        );
        // A batch straddling the next sequence is not a duplicate either.
        assert!(matches!(
            offer(&mut table, &header(7, 0, 5, 10), 20),
            Err(SequenceError::OutOfOrder { .. })
        ));
        offer(&mut table, &header(7, 0, 10, 10), 20).unwrap();
        assert_eq!(offer(&mut table, &ahead, 30), Ok(Admission::Append));
    }

    #[test]
    fn unknown_producers_and_epochs_start_at_sequence_zero() {
        let mut table = ProducerTable::default();
        assert_eq!(
            offer(&mut table, &header(3, 0, 55, 1), 1),
            Err(SequenceError::UnknownProducer { producer: 3, epoch: 0, sequence: 55 })
        );
        offer(&mut table, &header(3, 0, 0, 4), 4).unwrap();
        // A new epoch must start at 0; then the old epoch is unknown.
        assert!(matches!(
            offer(&mut table, &header(3, 1, 4, 1), 5),
            Err(SequenceError::UnknownProducer { .. })
        ));
        assert_eq!(offer(&mut table, &header(3, 1, 0, 2), 6), Ok(Admission::Append));
        assert_eq!(table.next_sequence(ProducerId(3)), Some((1, 2)));
        assert!(matches!(
            offer(&mut table, &header(3, 0, 4, 1), 7),
            Err(SequenceError::UnknownProducer { .. })
        ));
        // Clearing forgets everything.
        table.clear();
        assert!(table.is_empty());
        assert!(matches!(
            offer(&mut table, &header(3, 1, 2, 1), 8),
            Err(SequenceError::UnknownProducer { .. })
        ));
    }

    #[test]
    fn sequences_wrap_and_non_idempotent_batches_pass() {
        let mut table = ProducerTable::default();
        offer(&mut table, &header(9, 0, 0, 1), 1).unwrap();
        // Pretend the producer reached the top of the sequence space.
        table.record(&header(9, 0, i32::MAX - 1, 1), appended(2));
        assert_eq!(table.next_sequence(ProducerId(9)), Some((0, i32::MAX)));
        assert_eq!(offer(&mut table, &header(9, 0, i32::MAX, 3), 5), Ok(Admission::Append));
        assert_eq!(table.next_sequence(ProducerId(9)), Some((0, 2)));
        assert!(matches!(
            offer(&mut table, &header(9, 0, i32::MAX, 3), 9),
            Ok(Admission::Duplicate { .. })
        ));
        for _ in 0..3 {
            assert_eq!(
                offer(&mut table, &header(NO_PRODUCER_ID, -1, -1, 5), 9),
                Ok(Admission::Append)
            );
        }
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent_producer() {
        let mut table = ProducerTable::default();
        for producer in 0..PRODUCERS_PER_LOG_MAX as i64 {
            offer(&mut table, &header(producer, 0, 0, 1), producer + 1).unwrap();
        }
        // Producer 0 appends again: producer 1 is now the least recent.
        offer(&mut table, &header(0, 0, 1, 1), 5000).unwrap();
        offer(&mut table, &header(1 << 40, 0, 0, 1), 5001).unwrap();
        assert_eq!(table.len(), PRODUCERS_PER_LOG_MAX);
        assert!(table.next_sequence(ProducerId(0)).is_some());
        assert!(table.next_sequence(ProducerId(1)).is_none());
        assert!(table.next_sequence(ProducerId(1 << 40)).is_some());
    }
}
