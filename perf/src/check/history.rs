//! The history of a check run and its analysis, pure: what every send was (its producer, its
//! place in that producer's send order, its partition and value) and how it ended, and what
//! every read saw; [`analyze`] finds the violations, per partition.
//!
//! Every value is unique to one send ([`ValueId`]: producer and sequence number), so a value
//! read back names the send it came from. The kinds of violation, after Jepsen's Kafka checker:
//!
//! - **lost**: acknowledged, not in the final read;
//! - **duplicated**: one value at two offsets (in any read);
//! - **inconsistent offset**: a value read at another offset than the one acknowledged, or two
//!   values at one offset across reads;
//! - **reordered**: per producer and partition, a value read (final read, in offset order)
//!   before a value the producer sent earlier;
//! - **aborted read**: a definitely failed send that was read;
//! - **unexpected**: a value no send produced (or one read in another partition than it was
//!   sent to).
//!
//! Sends with an unknown outcome (a timeout, a lost connection) may or may not be read; both are
//! counted, neither is a violation.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// How many examples of each violation kind a report keeps.
pub const EXAMPLES_MAX: usize = 10;

/// The identity of one sent value: its producer and its sequence number in that producer's send
/// order (0, 1, 2, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId {
    /// The producer (0-based).
    pub producer: u32,
    /// Its place in the producer's send order.
    pub sequence: u64,
}

impl ValueId {
    /// The record value carrying this id: `check-<producer>-<sequence>` padded with `-` to at
    /// least `size` bytes.
    pub fn encode(&self, size: usize, out: &mut Vec<u8>) {
        use std::io::Write;
        out.clear();
        let _ = write!(out, "check-{}-{}", self.producer, self.sequence);
        if out.len() < size {
            out.resize(size, b'-');
        }
    }

    /// The id a record value carries, if it is one [`ValueId::encode`] wrote.
    pub fn decode(value: &[u8]) -> Option<ValueId> {
        let text = std::str::from_utf8(value).ok()?.trim_end_matches('-');
        let rest = text.strip_prefix("check-")?;
        let (producer, sequence) = rest.split_once('-')?;
        Some(ValueId { producer: producer.parse().ok()?, sequence: sequence.parse().ok()? })
    }
}

/// How a send ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Acknowledged at this offset (-1: acknowledged without an offset, as a retry the server
    /// recognized but whose first offset it no longer knew).
    Acknowledged {
        /// The acknowledged offset, or -1.
        offset: i64,
    },
    /// Refused for certain: it was never appended.
    Failed,
    /// Not known: it may have been appended (a timeout, a lost connection, a delivery timeout).
    Unknown,
}

/// One send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    /// The value's identity.
    pub id: ValueId,
    /// The partition it was sent to.
    pub partition: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// One record seen by a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The partition read.
    pub partition: u32,
    /// The record's offset.
    pub offset: i64,
    /// The record's value.
    pub value: Vec<u8>,
}

/// Everything a run did: its sends, the reads made while it ran (tailing consumers) and the
/// final read of every partition from its start.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every send, in any order.
    pub sends: Vec<Send>,
    /// Records seen by reads during the run (any order).
    pub tail_reads: Vec<Seen>,
    /// The final read: every record of every partition.
    pub final_read: Vec<Seen>,
}

/// The counts per partition (and in total) of a check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Sends made.
    pub sent: u64,
    /// Sends acknowledged.
    pub acknowledged: u64,
    /// Of those, acknowledged without an offset (their offset is not checked).
    pub acknowledged_without_offset: u64,
    /// Sends that failed for certain.
    pub failed: u64,
    /// Sends with an unknown outcome.
    pub unknown: u64,
    /// Records in the final read.
    pub read: u64,
    /// Unknown sends whose value was read.
    pub unknown_read: u64,
    /// Unknown sends whose value was not read.
    pub unknown_not_read: u64,
    /// Acknowledged, never read.
    pub lost: u64,
    /// One value at two offsets.
    pub duplicated: u64,
    /// A value at another offset than acknowledged, or two values at one offset.
    pub inconsistent_offsets: u64,
    /// Read before a value its producer sent earlier to the same partition.
    pub reordered: u64,
    /// A definitely failed send that was read.
    pub aborted_reads: u64,
    /// A value no send to this partition produced.
    pub unexpected: u64,
}

impl Counts {
    /// The number of violations of every kind together.
    pub fn violations(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.inconsistent_offsets
            + self.reordered
            + self.aborted_reads
            + self.unexpected
    }

    fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.acknowledged += other.acknowledged;
        self.acknowledged_without_offset += other.acknowledged_without_offset;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.read += other.read;
        self.unknown_read += other.unknown_read;
        self.unknown_not_read += other.unknown_not_read;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.inconsistent_offsets += other.inconsistent_offsets;
        self.reordered += other.reordered;
        self.aborted_reads += other.aborted_reads;
        self.unexpected += other.unexpected;
    }
}

/// One example of a violation, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The violation kind (`lost`, `duplicated`, ...).
    pub kind: String,
    /// The partition.
    pub partition: u32,
    /// What was seen.
    pub detail: String,
}

/// The analysis of a history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// Counts over every partition.
    pub total: Counts,
    /// Counts per partition.
    pub partitions: BTreeMap<u32, Counts>,
    /// At most [`EXAMPLES_MAX`] examples of each kind.
    pub examples: Vec<Example>,
}

impl Analysis {
    /// Whether the history holds no violation.
    pub fn is_valid(&self) -> bool {
        self.total.violations() == 0
    }

    fn example(&mut self, kind: &str, partition: u32, detail: String) {
        if self.examples.iter().filter(|example| example.kind == kind).count() < EXAMPLES_MAX {
            self.examples.push(Example { kind: kind.into(), partition, detail });
        }
    }
}

/// Finds every violation in `history`. See the module docs for the kinds.
pub fn analyze(history: &History) -> Analysis {
    let mut analysis = Analysis::default();
    let mut counts: BTreeMap<u32, Counts> = BTreeMap::new();
    let sends: HashMap<ValueId, &Send> = history.sends.iter().map(|send| (send.id, send)).collect();
    for send in &history.sends {
        let partition = counts.entry(send.partition).or_default();
        partition.sent += 1;
        match send.outcome {
            Outcome::Acknowledged { offset } => {
                partition.acknowledged += 1;
                if offset < 0 {
                    partition.acknowledged_without_offset += 1;
                }
            }
            Outcome::Failed => partition.failed += 1,
            Outcome::Unknown => partition.unknown += 1,
        }
    }

    // Every (partition, offset) -> value and value -> offsets, over every read.
    let mut at_offset: HashMap<(u32, i64), &[u8]> = HashMap::new();
    let mut offsets_of: HashMap<(u32, &[u8]), Vec<i64>> = HashMap::new();
    let mut inconsistent_slots: Vec<(u32, i64)> = Vec::new();
    for seen in history.tail_reads.iter().chain(&history.final_read) {
        match at_offset.get(&(seen.partition, seen.offset)) {
            Some(value) if *value != seen.value.as_slice() => {
                inconsistent_slots.push((seen.partition, seen.offset));
                let detail = format!(
                    "offset {} read as {:?} and as {:?}",
                    seen.offset,
                    String::from_utf8_lossy(value),
                    String::from_utf8_lossy(&seen.value)
                );
                analysis.example("inconsistent_offsets", seen.partition, detail);
            }
            Some(_) => continue,
            None => {
                at_offset.insert((seen.partition, seen.offset), &seen.value);
            }
        }
        offsets_of.entry((seen.partition, &seen.value)).or_default().push(seen.offset);
    }
    inconsistent_slots.sort_unstable();
    inconsistent_slots.dedup();
    for (partition, _) in &inconsistent_slots {
        counts.entry(*partition).or_default().inconsistent_offsets += 1;
    }

    // Per value read: duplicates, offsets against the acknowledgement, aborted reads, strays.
    let mut read_ids: HashMap<ValueId, u32> = HashMap::new();
    let mut entries: Vec<_> = offsets_of.iter().collect();
    entries.sort_unstable();
    for ((partition, value), offsets) in entries {
        let partition = *partition;
        let mut distinct = offsets.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let shown = String::from_utf8_lossy(value).trim_end_matches('-').to_string();
        if distinct.len() > 1 {
            counts.entry(partition).or_default().duplicated += 1;
            analysis.example("duplicated", partition, format!("{shown} at offsets {distinct:?}"));
        }
        let send = ValueId::decode(value).and_then(|id| sends.get(&id).copied());
        let Some(send) = send.filter(|send| send.partition == partition) else {
            counts.entry(partition).or_default().unexpected += 1;
            analysis.example("unexpected", partition, format!("{shown} at {distinct:?}"));
            continue;
        };
        read_ids.insert(send.id, partition);
        match send.outcome {
            Outcome::Acknowledged { offset } => {
                if offset >= 0 && distinct.iter().any(|read| *read != offset) {
                    counts.entry(partition).or_default().inconsistent_offsets += 1;
                    let detail = format!("{shown} acknowledged at {offset}, read at {distinct:?}");
                    analysis.example("inconsistent_offsets", partition, detail);
                }
            }
            Outcome::Failed => {
                counts.entry(partition).or_default().aborted_reads += 1;
                let detail = format!("{shown} failed for certain, read at {distinct:?}");
                analysis.example("aborted_reads", partition, detail);
            }
            Outcome::Unknown => {}
        }
    }

    // Per send: lost (against the final read), unknown read or not.
    let final_ids: HashMap<(u32, ValueId), ()> = history
        .final_read
        .iter()
        .filter_map(|seen| Some(((seen.partition, ValueId::decode(&seen.value)?), ())))
        .collect();
    let mut sorted_sends: Vec<&Send> = history.sends.iter().collect();
    sorted_sends.sort_unstable_by_key(|send| (send.partition, send.id));
    for send in sorted_sends {
        let in_final = final_ids.contains_key(&(send.partition, send.id));
        let partition = counts.entry(send.partition).or_default();
        match send.outcome {
            Outcome::Acknowledged { offset } if !in_final => {
                partition.lost += 1;
                let detail = format!(
                    "producer {} sequence {} acknowledged at {offset}, not read",
                    send.id.producer, send.id.sequence
                );
                analysis.example("lost", send.partition, detail);
            }
            Outcome::Unknown if read_ids.contains_key(&send.id) => partition.unknown_read += 1,
            Outcome::Unknown => partition.unknown_not_read += 1,
            _ => {}
        }
    }

    // Order: per partition and producer, sequences must grow with the offset in the final read.
    let mut final_sorted: Vec<&Seen> = history.final_read.iter().collect();
    final_sorted.sort_by_key(|seen| (seen.partition, seen.offset));
    let mut highest: HashMap<(u32, u32), u64> = HashMap::new();
    let mut last_offset: Option<(u32, i64)> = None;
    for seen in final_sorted {
        if last_offset == Some((seen.partition, seen.offset)) {
            continue;
        }
        last_offset = Some((seen.partition, seen.offset));
        counts.entry(seen.partition).or_default().read += 1;
        let Some(id) = ValueId::decode(&seen.value) else { continue };
        match highest.get(&(seen.partition, id.producer)) {
            Some(&before) if id.sequence < before => {
                counts.entry(seen.partition).or_default().reordered += 1;
                let detail = format!(
                    "producer {} sequence {} at offset {} after sequence {before}",
                    id.producer, id.sequence, seen.offset
                );
                analysis.example("reordered", seen.partition, detail);
            }
            _ => {
                highest.insert((seen.partition, id.producer), id.sequence);
            }
        }
    }

    for partition in counts.values() {
        analysis.total.add(partition);
    }
    analysis.partitions = counts;
    analysis
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(producer: u32, sequence: u64) -> ValueId {
        ValueId { producer, sequence }
    }

    fn value(id: ValueId) -> Vec<u8> {
        let mut out = Vec::new();
        id.encode(24, &mut out);
        out
    }

    fn acked(producer: u32, sequence: u64, partition: u32, offset: i64) -> Send {
        Send { id: id(producer, sequence), partition, outcome: Outcome::Acknowledged { offset } }
    }

    fn seen(partition: u32, offset: i64, id: ValueId) -> Seen {
        Seen { partition, offset, value: value(id) }
    }

    /// A clean history: two producers, two partitions, one unknown send read and one not.
    fn clean() -> History {
        let mut history = History::default();
        for sequence in 0..5 {
            history.sends.push(acked(0, sequence, 0, sequence as i64));
            history.sends.push(acked(1, sequence, 1, sequence as i64));
            history.final_read.push(seen(0, sequence as i64, id(0, sequence)));
            history.final_read.push(seen(1, sequence as i64, id(1, sequence)));
        }
        history.sends.push(Send { id: id(0, 5), partition: 0, outcome: Outcome::Unknown });
        history.final_read.push(seen(0, 5, id(0, 5)));
        history.sends.push(Send { id: id(0, 6), partition: 0, outcome: Outcome::Unknown });
        history.sends.push(Send { id: id(1, 5), partition: 1, outcome: Outcome::Failed });
        history.tail_reads.push(seen(0, 2, id(0, 2)));
        history
    }

    #[test]
    fn values_round_trip_and_strangers_do_not_decode() {
        let original = id(3, 1_234_567);
        assert_eq!(ValueId::decode(&value(original)), Some(original));
        let mut short = Vec::new();
        original.encode(0, &mut short);
        assert_eq!(short, b"check-3-1234567");
        for stranger in [&b"hello"[..], b"check-", b"check-1", b"check-x-1", b"\xff\xfe"] {
            assert_eq!(ValueId::decode(stranger), None, "{stranger:?}");
        }
    }

    #[test]
    fn a_clean_history_is_valid_and_counted() {
        let analysis = analyze(&clean());
        assert!(analysis.is_valid(), "{analysis:#?}");
        let total = &analysis.total;
        assert_eq!((total.sent, total.acknowledged, total.failed, total.unknown), (13, 10, 1, 2));
        assert_eq!((total.read, total.unknown_read, total.unknown_not_read), (11, 1, 1));
        assert_eq!(analysis.partitions[&0].read, 6);
        assert!(analysis.examples.is_empty());
    }

    #[test]
    fn a_lost_acknowledgement_is_found() {
        let mut history = clean();
        history.final_read.retain(|seen| !(seen.partition == 1 && seen.offset == 3));
        let analysis = analyze(&history);
        assert_eq!(analysis.total.lost, 1);
        assert_eq!(analysis.partitions[&1].lost, 1);
        assert_eq!(analysis.total.violations(), 1);
        assert_eq!(analysis.examples[0].kind, "lost");
    }

    #[test]
    fn a_lost_record_seen_only_by_a_tailing_reader_is_still_lost() {
        let mut history = clean();
        history.final_read.retain(|seen| !(seen.partition == 0 && seen.offset == 4));
        history.tail_reads.push(seen(0, 4, id(0, 4)));
        let analysis = analyze(&history);
        assert_eq!(analysis.total.lost, 1);
    }

    #[test]
    fn a_duplicate_is_found() {
        let mut history = clean();
        // The unknown send 0/6 appended twice (a retry not recognized).
        history.final_read.push(seen(0, 6, id(0, 6)));
        history.final_read.push(seen(0, 7, id(0, 6)));
        let analysis = analyze(&history);
        assert_eq!(analysis.total.duplicated, 1);
        assert_eq!(analysis.total.violations(), 1, "{analysis:#?}");
    }

    #[test]
    fn an_acknowledged_value_at_another_offset_is_inconsistent() {
        let mut history = clean();
        for seen in &mut history.final_read {
            if seen.partition == 1 && seen.offset >= 2 {
                seen.offset += 1;
            }
        }
        let analysis = analyze(&history);
        assert_eq!(analysis.total.inconsistent_offsets, 3);
        assert_eq!(analysis.total.lost, 0);
        assert_eq!(analysis.total.violations(), 3);
    }

    #[test]
    fn two_values_at_one_offset_across_reads_are_inconsistent() {
        let mut history = clean();
        // A tailing reader saw another value at offset 2 of partition 0 (a read of a log that
        // was later cut past what it served).
        history.tail_reads.push(seen(0, 2, id(0, 6)));
        let analysis = analyze(&history);
        assert!(analysis.total.inconsistent_offsets >= 1, "{analysis:#?}");
        assert!(analysis.examples.iter().any(|example| example.kind == "inconsistent_offsets"));
    }

    #[test]
    fn an_acknowledgement_without_an_offset_is_not_checked_against_one() {
        let mut history = clean();
        history.sends[0].outcome = Outcome::Acknowledged { offset: -1 };
        let analysis = analyze(&history);
        assert!(analysis.is_valid(), "{analysis:#?}");
        assert_eq!(analysis.total.acknowledged_without_offset, 1);
        // Still lost when it is not read.
        history.final_read.retain(|seen| !(seen.partition == 0 && seen.offset == 0));
        assert_eq!(analyze(&history).total.lost, 1);
    }

    #[test]
    fn a_reordering_is_found() {
        let mut history = History::default();
        // Producer 0 sent 0 then 1; the log holds 1 then 0 (acknowledged where they are).
        history.sends.push(acked(0, 0, 0, 1));
        history.sends.push(acked(0, 1, 0, 0));
        history.final_read.push(seen(0, 0, id(0, 1)));
        history.final_read.push(seen(0, 1, id(0, 0)));
        let analysis = analyze(&history);
        assert_eq!(analysis.total.reordered, 1);
        assert_eq!(analysis.total.violations(), 1);
    }

    #[test]
    fn different_producers_interleave_freely() {
        let mut history = History::default();
        history.sends.push(acked(0, 0, 0, 1));
        history.sends.push(acked(1, 0, 0, 0));
        history.final_read.push(seen(0, 0, id(1, 0)));
        history.final_read.push(seen(0, 1, id(0, 0)));
        assert!(analyze(&history).is_valid());
    }

    #[test]
    fn an_aborted_read_is_found() {
        let mut history = clean();
        history.final_read.push(seen(1, 5, id(1, 5)));
        let analysis = analyze(&history);
        assert_eq!(analysis.total.aborted_reads, 1);
        assert_eq!(analysis.total.violations(), 1);
    }

    #[test]
    fn a_stranger_or_a_value_in_the_wrong_partition_is_unexpected() {
        let mut history = clean();
        history.final_read.push(Seen { partition: 0, offset: 6, value: b"garbage".to_vec() });
        history.final_read.push(seen(1, 5, id(0, 6)));
        let analysis = analyze(&history);
        assert_eq!(analysis.total.unexpected, 2, "{analysis:#?}");
    }

    #[test]
    fn examples_are_bounded() {
        let mut history = History::default();
        for sequence in 0..100 {
            history.sends.push(acked(0, sequence, 0, sequence as i64));
        }
        let analysis = analyze(&history);
        assert_eq!(analysis.total.lost, 100);
        assert_eq!(analysis.examples.len(), EXAMPLES_MAX);
    }
}
