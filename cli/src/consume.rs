//! `sluice consume`: reads one partition or all of a topic and prints each record with a
//! template (default `{value}`), one per line.
//!
//! One partition is read on the calling thread. Several are read by one thread each (the SDK's
//! consumer is per partition); each thread renders its records and hands whole poll results to
//! the printing thread over a bounded channel, so order within a partition is kept and memory
//! stays bounded. `-n` counts records across partitions; `-d` ends once every partition reached
//! the end it saw at start. A closed standard output (`| head`) ends the command quietly.

use std::io::{ErrorKind, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use sluice_client::{Cluster, ConsumerConfig, PartitionConsumer, Poll, StartFrom};
use sluice_proto::api::fetch::Isolation;

use crate::args::{ConsumeArgs, IsolationArg};
use crate::sc_api::ScApi;

/// Longest single wait for new records before checking again.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// Poll results in flight between partition threads and the printer: with fetches of up to
/// 8 MiB this bounds buffered output near 64 MiB while the terminal or pipe is slower.
const CHANNEL_CHUNKS_MAX: usize = 8;

/// One piece of a `--format` template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Key,
    Value,
    Offset,
    Partition,
    Timestamp,
}

/// A parsed `--format` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// One record's fields, as the template sees them.
pub struct RecordFields<'a> {
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Its key, if any.
    pub key: Option<&'a [u8]>,
    /// Its value, if any.
    pub value: Option<&'a [u8]>,
}

impl Template {
    /// Parses `{key} {value} {offset} {partition} {timestamp}`, `\t`, `\n` and `\\`.
    pub fn parse(template: &str) -> anyhow::Result<Template> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut rest = template;
        while let Some(character) = rest.chars().next() {
            match character {
                '{' => {
                    let end = rest
                        .find('}')
                        .with_context(|| format!("unclosed `{{` in --format {template:?}"))?;
                    let piece = match &rest[1..end] {
                        "key" => Piece::Key,
                        "value" => Piece::Value,
                        "offset" => Piece::Offset,
                        "partition" => Piece::Partition,
                        "timestamp" => Piece::Timestamp,
                        other => bail!(
                            "unknown placeholder {{{other}}} in --format; use {{key}}, \
                             {{value}}, {{offset}}, {{partition}} or {{timestamp}}"
                        ),
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                    rest = &rest[end + 1..];
                }
                '\\' => {
                    let escaped = match rest[1..].chars().next() {
                        Some('t') => '\t',
                        Some('n') => '\n',
                        Some('\\') => '\\',
                        _ => bail!("unknown escape in --format {template:?}; use \\t, \\n or \\\\"),
                    };
                    let mut buffer = [0; 4];
                    text.extend_from_slice(escaped.encode_utf8(&mut buffer).as_bytes());
                    rest = &rest[2..];
                }
                other => {
                    let mut buffer = [0; 4];
                    text.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
                    rest = &rest[other.len_utf8()..];
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template { pieces })
    }

    /// Appends the record rendered with the template, and a new line, to `out`.
    pub fn render(&self, record: &RecordFields<'_>, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text),
                Piece::Key => out.extend_from_slice(record.key.unwrap_or_default()),
                Piece::Value => out.extend_from_slice(record.value.unwrap_or_default()),
                Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
                Piece::Partition => out.extend_from_slice(record.partition.to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
            }
        }
        out.push(b'\n');
    }
}

/// Records rendered from one poll: the bytes and where each record ends in them.
struct Chunk {
    bytes: Vec<u8>,
    record_ends: Vec<usize>,
}

/// Polls once; `None` at the end (`-d`), else the rendered records (maybe none).
fn poll_chunk(
    consumer: &mut PartitionConsumer,
    partition: u32,
    template: &Template,
) -> anyhow::Result<Option<Chunk>> {
    let mut chunk = Chunk { bytes: Vec::new(), record_ends: Vec::new() };
    let poll = consumer
        .poll(POLL_TIMEOUT)
        .with_context(|| format!("cannot read partition {partition}"))?;
    match poll {
        Poll::End => return Ok(None),
        Poll::Idle => {}
        Poll::Records(records) => {
            for record in records {
                let fields = RecordFields {
                    partition,
                    offset: record.offset.get(),
                    timestamp: record.timestamp,
                    key: record.key,
                    value: record.value,
                };
                template.render(&fields, &mut chunk.bytes);
                chunk.record_ends.push(chunk.bytes.len());
            }
        }
    }
    Ok(Some(chunk))
}

/// Prints records to stdout, stopping after `count_max` records in all.
struct Printer {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    printed: u64,
    count_max: Option<u64>,
}

/// Whether printing should go on.
#[derive(PartialEq, Eq)]
enum Flow {
    More,
    Done,
}

impl Printer {
    fn new(count_max: Option<u64>) -> Printer {
        Printer { out: std::io::BufWriter::new(std::io::stdout().lock()), printed: 0, count_max }
    }

    fn is_done(&self) -> bool {
        self.count_max.is_some_and(|max| self.printed >= max)
    }

    fn print(&mut self, chunk: &Chunk) -> anyhow::Result<Flow> {
        let mut end = chunk.bytes.len();
        if let Some(max) = self.count_max {
            let room = usize::try_from(max.saturating_sub(self.printed)).unwrap_or(usize::MAX);
            if room < chunk.record_ends.len() {
                end = if room == 0 { 0 } else { chunk.record_ends[room - 1] };
            }
        }
        let records = chunk.record_ends.iter().filter(|record_end| **record_end <= end).count();
        let written = self.out.write_all(&chunk.bytes[..end]).and_then(|()| self.out.flush());
        match written {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::BrokenPipe => return Ok(Flow::Done),
            Err(error) => return Err(error).context("cannot write to standard output"),
        }
        self.printed += records as u64;
        Ok(if self.is_done() { Flow::Done } else { Flow::More })
    }
}

fn consumer_config(args: &ConsumeArgs) -> ConsumerConfig {
    let start = if args.from_beginning {
        StartFrom::Beginning
    } else if let Some(offset) = args.offset {
        StartFrom::Offset(sluice_client::Offset(offset))
    } else if let Some(time_ms) = args.from_time {
        StartFrom::Timestamp(time_ms)
    } else {
        StartFrom::End
    };
    let isolation = match args.isolation {
        IsolationArg::Committed => Isolation::ReadCommitted,
        IsolationArg::Uncommitted => Isolation::ReadUncommitted,
    };
    ConsumerConfig { start, isolation, stop_at_end: args.stop_at_end, ..ConsumerConfig::default() }
}

/// `sluice consume`.
pub fn run(sc: &str, args: &ConsumeArgs) -> anyhow::Result<()> {
    let template = Template::parse(args.format.as_deref().unwrap_or("{value}"))?;
    let api = ScApi::connect(sc)?;
    let cluster = api.cluster().clone();
    let partition_count = cluster.partition_count(&args.topic)?;
    let partitions: Vec<u32> = match args.partition {
        Some(partition) => {
            anyhow::ensure!(
                partition < partition_count,
                "topic {:?} has {partition_count} partitions (0 to {}); partition {partition} \
                 does not exist",
                args.topic,
                partition_count.saturating_sub(1)
            );
            vec![partition]
        }
        None => (0..partition_count).collect(),
    };
    if args.offset.is_some() && partitions.len() > 1 {
        bail!(
            "--offset needs one partition, and topic {:?} has {partition_count}: add \
             --partition P",
            args.topic
        );
    }
    let mut printer = Printer::new(args.count);
    if printer.is_done() {
        return Ok(());
    }
    let config = consumer_config(args);
    if let [partition] = partitions[..] {
        let mut consumer = cluster.consumer(&args.topic, partition, config)?;
        while let Some(chunk) = poll_chunk(&mut consumer, partition, &template)? {
            if printer.print(&chunk)? == Flow::Done {
                break;
            }
        }
        return Ok(());
    }
    consume_many(&cluster, &args.topic, &partitions, &config, &template, &mut printer)
}

/// Reads several partitions, one thread each, printing on this thread.
fn consume_many(
    cluster: &Cluster,
    topic: &str,
    partitions: &[u32],
    config: &ConsumerConfig,
    template: &Template,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let (sender, receiver) =
        std::sync::mpsc::sync_channel::<anyhow::Result<Chunk>>(CHANNEL_CHUNKS_MAX);
    for &partition in partitions {
        let mut consumer = cluster.consumer(topic, partition, config.clone())?;
        let (sender, template) = (sender.clone(), template.clone());
        std::thread::Builder::new()
            .name(format!("consume-{partition}"))
            .spawn(move || loop {
                match poll_chunk(&mut consumer, partition, &template) {
                    Ok(Some(chunk)) if chunk.record_ends.is_empty() => {}
                    Ok(Some(chunk)) => {
                        if sender.send(Ok(chunk)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        return;
                    }
                }
            })
            .context("cannot start a consumer thread")?;
    }
    drop(sender);
    // The channel closes when every partition thread has ended (all at their end with -d).
    for chunk in receiver {
        if printer.print(&chunk?)? == Flow::Done {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> String {
        let template = Template::parse(template).unwrap();
        let mut out = Vec::new();
        let record = RecordFields { partition: 2, offset: 41, timestamp: 1_700, key, value };
        template.render(&record, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn templates() {
        assert_eq!(render("{value}", Some(b"k"), Some(b"v")), "v\n");
        assert_eq!(
            render("{partition}:{offset}@{timestamp} {key}={value}", Some(b"k"), Some(b"v")),
            "2:41@1700 k=v\n"
        );
        assert_eq!(render("{key}\\t{value}", None, None), "\t\n");
        assert_eq!(render("é{value}é", None, Some(b"x")), "éxé\n");
    }

    #[test]
    fn bad_templates_say_what_is_allowed() {
        let error = Template::parse("{nope}").unwrap_err().to_string();
        assert!(error.contains("{key}"), "{error}");
        assert!(Template::parse("{value").is_err());
        assert!(Template::parse("\\x").is_err());
    }
}
