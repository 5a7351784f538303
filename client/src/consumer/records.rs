//! Borrowed views over fetched records: [`Records`] iterates [`RecordView`]s in place, with no
//! allocation per record.

use std::cell::Cell;

use sluice_proto::ids::Offset;
use sluice_proto::record::{Batches, Headers, Record};

use crate::error::ClientError;

/// One record, borrowed from the fetched batch (or its decompression buffer).
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    /// The record's offset in its partition.
    pub offset: Offset,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Its key (`None`: null key).
    pub key: Option<&'a [u8]>,
    /// Its value (`None`: null value, a tombstone).
    pub value: Option<&'a [u8]>,
    /// Its headers, iterated in place as `(key, value)`; a null header value reads as empty.
    pub headers: RecordHeaders<'a>,
}

impl<'a> RecordView<'a> {
    fn from_record(record: &Record<'a>) -> RecordView<'a> {
        RecordView {
            offset: record.offset(),
            timestamp: record.timestamp().get(),
            key: record.key(),
            value: record.value(),
            headers: RecordHeaders { inner: record.headers() },
        }
    }

    /// An owned copy (allocates).
    pub fn to_owned_record(&self) -> ConsumerRecord {
        ConsumerRecord {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self.headers.map(|(key, value)| (key.to_owned(), value.to_vec())).collect(),
        }
    }
}

/// Iterator over a record's headers as `(key, value)`.
#[derive(Clone, Copy, Debug)]
pub struct RecordHeaders<'a> {
    inner: Headers<'a>,
}

impl<'a> RecordHeaders<'a> {
    /// The headers as stored, keeping the distinction between a null and an empty value.
    pub fn raw(&self) -> Headers<'a> {
        self.inner
    }
}

impl<'a> Iterator for RecordHeaders<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|header| (header.key, header.value.unwrap_or_default()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for RecordHeaders<'_> {}

/// An owned record, for code that keeps records beyond the next `poll`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerRecord {
    /// The record's offset in its partition.
    pub offset: Offset,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The records of one `poll`: views into the received bytes, valid until the next `poll`.
///
/// Records before the consumer's position (a fetch returns whole batches) and at or after the
/// stop-at-end offset are skipped; so are, for a consumer started at a timestamp, records
/// before the first one at or after that timestamp (a lookup by time finds the batch, not the
/// record). A corrupt record ends the iteration; the next `poll` returns the error.
pub struct Records<'a> {
    batches: Batches<'a>,
    current: Option<sluice_proto::record::Records<'a>>,
    offset_min: i64,
    offset_end: Option<i64>,
    /// Shared with the consumer: cleared at the first record at or after it.
    timestamp_min: &'a Cell<Option<i64>>,
    error: &'a Cell<Option<ClientError>>,
    done: bool,
}

/// What a [`Records`] filters on and reports to, owned by the consumer.
#[derive(Clone, Copy)]
pub(crate) struct Filter<'a> {
    pub offset_min: i64,
    pub offset_end: Option<i64>,
    pub timestamp_min: &'a Cell<Option<i64>>,
    pub error: &'a Cell<Option<ClientError>>,
}

impl<'a> Records<'a> {
    /// Records of the uncompressed batches in `bytes`.
    pub(crate) fn uncompressed(bytes: &'a [u8], filter: Filter<'a>) -> Records<'a> {
        Records::new(Batches::new(bytes, usize::MAX), None, filter)
    }

    /// Records already iterable (a decompressed batch).
    pub(crate) fn decompressed(
        records: sluice_proto::record::Records<'a>,
        filter: Filter<'a>,
    ) -> Records<'a> {
        Records::new(Batches::new(&[], usize::MAX), Some(records), filter)
    }

    fn new(
        batches: Batches<'a>,
        current: Option<sluice_proto::record::Records<'a>>,
        filter: Filter<'a>,
    ) -> Records<'a> {
        Records {
            batches,
            current,
            offset_min: filter.offset_min,
            offset_end: filter.offset_end,
            timestamp_min: filter.timestamp_min,
            error: filter.error,
            done: false,
        }
    }

    /// Whether `record` is before the start timestamp (and so skipped).
    fn before_start_time(&self, record: &Record<'a>) -> bool {
        match self.timestamp_min.get() {
            Some(minimum) if record.timestamp().get() < minimum => true,
            Some(_) => {
                self.timestamp_min.set(None);
                false
            }
            None => false,
        }
    }

    fn fail(&mut self, error: ClientError) -> Option<RecordView<'a>> {
        self.error.set(Some(error));
        self.done = true;
        None
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        while !self.done {
            if let Some(records) = &mut self.current {
                match records.next() {
                    Some(Ok(record)) => {
                        let offset = record.offset().get();
                        if self.offset_end.is_some_and(|end| offset >= end) {
                            self.done = true;
                            return None;
                        }
                        if offset >= self.offset_min && !self.before_start_time(&record) {
                            return Some(RecordView::from_record(&record));
                        }
                        continue;
                    }
                    Some(Err(error)) => return self.fail(ClientError::CorruptBatch(error)),
                    None => self.current = None,
                }
            }
            match self.batches.next() {
                Some(Ok(batch)) => match batch.records() {
                    Ok(records) => self.current = Some(records),
                    Err(error) => return self.fail(ClientError::CorruptBatch(error)),
                },
                Some(Err(error)) => return self.fail(ClientError::CorruptBatch(error)),
                None => self.done = true,
            }
        }
        None
    }
}

impl std::fmt::Debug for Records<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Records")
            .field("offset_min", &self.offset_min)
            .field("offset_end", &self.offset_end)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::ids::{Offset, TimestampMs};
    use sluice_proto::record::{set_base_offset, BatchBuilder, Header};

    fn batch(base: i64, values: &[&[u8]]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for (index, value) in values.iter().enumerate() {
            let headers =
                [Header { key: "i", value: Some(&value[..]) }, Header { key: "null", value: None }];
            builder
                .push_record(TimestampMs(100 + index as i64), Some(b"k"), Some(value), &headers)
                .unwrap();
        }
        let mut bytes = builder.finish().to_vec();
        set_base_offset(&mut bytes, Offset(base));
        bytes
    }

    #[test]
    fn skips_before_the_position_and_stops_at_the_end() {
        let mut bytes = batch(10, &[b"a", b"b", b"c"]);
        bytes.extend(batch(13, &[b"d", b"e"]));
        let error = Cell::new(None);
        let no_time = Cell::new(None);
        let filter = |offset_min, offset_end| Filter {
            offset_min,
            offset_end,
            timestamp_min: &no_time,
            error: &error,
        };
        let views: Vec<(i64, Vec<u8>)> = Records::uncompressed(&bytes, filter(11, Some(14)))
            .map(|view| (view.offset.get(), view.value.unwrap().to_vec()))
            .collect();
        assert_eq!(views, [(11, b"b".to_vec()), (12, b"c".to_vec()), (13, b"d".to_vec())]);
        assert!(error.take().is_none());

        // From a timestamp: records before it are skipped, later ones are not (even if older).
        let start_time = Cell::new(Some(101));
        let timed = Filter { timestamp_min: &start_time, ..filter(0, None) };
        let offsets: Vec<i64> =
            Records::uncompressed(&bytes, timed).map(|view| view.offset.get()).collect();
        assert_eq!(offsets, [11, 12, 13, 14]);
        assert_eq!(start_time.get(), None);

        let first = Records::uncompressed(&bytes, filter(0, None)).next().unwrap();
        assert_eq!(first.timestamp, 100);
        assert_eq!(first.key, Some(&b"k"[..]));
        let headers: Vec<_> = first.headers.collect();
        assert_eq!(headers, [("i", &b"a"[..]), ("null", &b""[..])]);
        assert_eq!(first.headers.raw().nth(1).unwrap().value, None);
        let owned = first.to_owned_record();
        assert_eq!(owned.headers[0], ("i".to_owned(), b"a".to_vec()));
    }

    #[test]
    fn corruption_ends_iteration_and_is_reported() {
        let mut bytes = batch(0, &[b"a"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // breaks the CRC
        let error = Cell::new(None);
        let no_time = Cell::new(None);
        let filter =
            Filter { offset_min: 0, offset_end: None, timestamp_min: &no_time, error: &error };
        assert_eq!(Records::uncompressed(&bytes, filter).count(), 0);
        assert!(matches!(error.take(), Some(ClientError::CorruptBatch(_))));
    }
}
