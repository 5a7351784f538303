//! `sluice produce`: one record per input line, sent through the SDK's batching producer.
//!
//! Lines are bytes (not necessarily UTF-8); the line ending (`\n` or `\r\n`) is not part of the
//! record. Memory stays bounded by the producer's buffer (`send` blocks while it is full), so a
//! file of any size streams through. The command succeeds only when every record was
//! acknowledged per `--acks`; otherwise it reports how many failed and the first error.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use sluice_client::{ClientError, ProducerConfig, ProducerRecord};
use sluice_proto::api::produce::Acks;
use sluice_proto::record::Compression;

use crate::args::{AcksArg, CompressionArg, ProduceArgs};
use crate::sc_api::ScApi;

/// Largest line accepted, bytes: far above a useful record, and it bounds the line buffer.
const LINE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Outcome of the deliveries, shared with the producer's callbacks.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<ClientError>>,
}

impl Deliveries {
    fn record_failure(&self, error: ClientError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }
}

/// Splits a line into key and value at the first `separator`; no separator: no key.
fn split_record<'l>(line: &'l [u8], separator: Option<&[u8]>) -> (Option<&'l [u8]>, &'l [u8]) {
    let Some(separator) = separator.filter(|separator| !separator.is_empty()) else {
        return (None, line);
    };
    match line.windows(separator.len()).position(|window| window == separator) {
        Some(at) => (Some(&line[..at]), &line[at + separator.len()..]),
        None => (None, line),
    }
}

/// Removes the line ending (`\n`, `\r\n`) from a line read with `read_until(b'\n')`.
fn trim_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn compression(compression: CompressionArg) -> Compression {
    match compression {
        CompressionArg::None => Compression::None,
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Snappy => Compression::Snappy,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    }
}

fn acks(acks: AcksArg) -> Acks {
    match acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    }
}

/// `sluice produce`.
pub fn run(sc: &str, args: &ProduceArgs) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(BufReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin().lock())),
    };
    let api = ScApi::connect(sc)?;
    let cluster = api.cluster();
    let partition_count = cluster.partition_count(&args.topic)?;
    if let Some(partition) = args.partition {
        anyhow::ensure!(
            partition < partition_count,
            "topic {:?} has {partition_count} partitions (0 to {}); partition {partition} does \
             not exist",
            args.topic,
            partition_count.saturating_sub(1)
        );
    }
    let config = ProducerConfig {
        acks: acks(args.acks),
        compression: compression(args.compression),
        ..ProducerConfig::default()
    };
    let producer = cluster.producer(config)?;
    let deliveries = Arc::new(Deliveries::default());
    let sent = send_lines(input, args, &producer, &deliveries)?;
    producer.flush()?;
    let failed = deliveries.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = deliveries
            .first_error
            .lock()
            .ok()
            .and_then(|mut first| first.take())
            .map_or_else(String::new, |error| format!(": first error: {error}"));
        bail!("{failed} of {sent} records were not acknowledged{first}");
    }
    Ok(())
}

/// Sends every line; returns how many records were handed to the producer.
fn send_lines(
    mut input: Box<dyn BufRead>,
    args: &ProduceArgs,
    producer: &sluice_client::Producer,
    deliveries: &Arc<Deliveries>,
) -> anyhow::Result<u64> {
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut line = Vec::new();
    let mut sent: u64 = 0;
    loop {
        line.clear();
        let read = input
            .by_ref()
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line)
            .context("cannot read the input")?;
        if read == 0 {
            return Ok(sent);
        }
        if line.len() > LINE_BYTES_MAX && !line.ends_with(b"\n") {
            bail!("line {} is longer than {LINE_BYTES_MAX} bytes", sent + 1);
        }
        let (key, value) = split_record(trim_line_ending(&line), separator);
        let record = ProducerRecord {
            topic: &args.topic,
            partition: args.partition,
            key,
            value: Some(value),
            headers: &[],
            timestamp: None,
        };
        let outcome = Arc::clone(deliveries);
        let verbose = args.verbose;
        producer
            .send_with_callback(&record, move |result| match result {
                Ok(metadata) if verbose => {
                    let offset = metadata.offset.map_or(-1, |offset| offset.get());
                    eprintln!("partition {} offset {offset}", metadata.partition)
                }
                Ok(_) => {}
                Err(error) => outcome.record_failure(error),
            })
            .with_context(|| format!("cannot send record {}", sent + 1))?;
        sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_into_key_and_value() {
        assert_eq!(split_record(b"k=v=w", Some(b"=")), (Some(&b"k"[..]), &b"v=w"[..]));
        assert_eq!(split_record(b"no-separator", Some(b"=")), (None, &b"no-separator"[..]));
        assert_eq!(split_record(b"a::b", Some(b"::")), (Some(&b"a"[..]), &b"b"[..]));
        assert_eq!(split_record(b"=v", Some(b"=")), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(split_record(b"k=v", None), (None, &b"k=v"[..]));
        assert_eq!(split_record(b"k=v", Some(b"")), (None, &b"k=v"[..]));
    }

    #[test]
    fn line_endings_are_removed() {
        assert_eq!(trim_line_ending(b"a\r\n"), b"a");
        assert_eq!(trim_line_ending(b"a\n"), b"a");
        assert_eq!(trim_line_ending(b"a"), b"a");
        assert_eq!(trim_line_ending(b"\n"), b"");
    }
}
