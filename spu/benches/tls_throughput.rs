//! TLS against plaintext on one machine, in one run: produce and consume MiB/s through one
//! connection to the partition's owning core, and end-to-end latency percentiles at the same
//! fixed rate, against a real `sluice-spu` (one core) and an SC on this process's threads.
//!
//! ```sh
//! cargo build --release -p sluice-spu
//! SLUICE_SPU_BIN=$PWD/target/release/sluice-spu cargo bench -p sluice-spu --bench tls_throughput
//! ```
//!
//! Settings (environment): `TLS_BENCH_MIB` (produced per mode, default 256),
//! `TLS_BENCH_E2E_SECONDS` (default 10), `TLS_BENCH_E2E_RATE` (records/s, default 10000).
//! Each record is 1 KiB, 100 to a batch for throughput, 10 to a batch for e2e; acks `leader`
//! (durable on the leader) for throughput, `none` for e2e with an open-loop schedule (latency
//! from each batch's intended send time to its arrival at a committed reader).

#[path = "../tests/process_common/mod.rs"]
mod process_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use process_common::tls::{Pki, CLUSTER};
use process_common::{batch, record_values, start_spu, EmbeddedSc, SpuClient};
use sluice_proto::api::fetch::Isolation;
use sluice_proto::api::produce::{Acks, ProduceResponse};
use sluice_proto::api::{ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{Offset, SpuId};
use sluice_proto::object::{Endpoint, SpuSpec, SpuType, TopicName, TopicSpec};
use sluice_testkit::process::{ServerProcess, SpuProcess};

const RECORD_BYTES: usize = 1024;
const BATCH_RECORDS: usize = 100;
const IN_FLIGHT: usize = 8;

/// CPU seconds (user + system) the process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the SPU's stat");
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / per_second
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

struct Setup {
    spu: SpuProcess,
    _sc: EmbeddedSc,
    pki: Option<Pki>,
    _dir: tempfile::TempDir,
    topic: TopicName,
}

impl Setup {
    fn start(tls: bool) -> Setup {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pki = tls.then(|| Pki::new("bench CA"));
        let args = EmbeddedSc::args(&dir.path().join("sc"));
        let args = match &pki {
            Some(pki) => pki.sc_args(args),
            None => args,
        };
        let sc = EmbeddedSc::start_with(args);
        let spec = SpuSpec {
            id: SpuId(1),
            spu_type: SpuType::Custom,
            public_endpoint: Endpoint::new("127.0.0.1", 0),
            private_endpoint: Endpoint::new("127.0.0.1", 0),
            ..SpuSpec::default()
        };
        assert!(sc.admin().register_spu(spec).expect("register").error_code.is_ok());
        let flags: Vec<String> = match &pki {
            Some(pki) => pki.spu_flags(&pki.spu_files(1), "none"),
            None => Vec::new(),
        };
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let spu = start_spu(1, sc.private_address, &dir.path().join("spu"), 1, &flags);
        let topic = TopicName::new("bench").unwrap();
        let created =
            sc.admin().create_topic(topic.clone(), TopicSpec::computed(1, 1)).expect("topic");
        assert!(created.error_code.is_ok());
        let setup = Setup { spu, _sc: sc, pki, _dir: dir, topic };
        let mut client = setup.client();
        process_common::wait_for("the partition to be served", || {
            let (header, _) =
                client.fetch(&setup.topic, 0, Offset(0), (0, 0), Isolation::ReadUncommitted);
            (header.error_code == ErrorCode::None).then_some(())
        });
        setup
    }

    fn address(&self) -> SocketAddr {
        self.spu.core_addresses[0]
    }

    fn client(&self) -> SpuClient {
        match &self.pki {
            None => SpuClient::connect(self.address()),
            Some(pki) => SpuClient::connect_tls(
                self.address(),
                &pki.client(None),
                &sluice_tls::spu_name(1, CLUSTER),
            )
            .expect("TLS"),
        }
    }
}

/// Produces `bytes_total` with [`IN_FLIGHT`] requests in flight; MiB/s and the SPU's CPU
/// seconds per GiB.
fn produce(setup: &Setup, bytes_total: u64) -> (f64, f64) {
    let mut client = setup.client();
    let value = vec![b'p'; RECORD_BYTES];
    let values: Vec<&[u8]> = (0..BATCH_RECORDS).map(|_| value.as_slice()).collect();
    let records = batch(&values, 1);
    let batches = bytes_total / (RECORD_BYTES * BATCH_RECORDS) as u64;
    let request = |client: &mut SpuClient| {
        let request = sluice_proto::api::produce::ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 30_000,
            topics: vec![sluice_proto::api::produce::ProduceTopic {
                name: setup.topic.clone(),
                partitions: vec![sluice_proto::api::produce::ProducePartition {
                    partition: sluice_proto::ids::PartitionId(0),
                    records: records.as_slice(),
                }],
            }],
        };
        client.send(&request);
    };
    let started = Instant::now();
    let cpu_before = cpu_seconds(setup.spu.pid());
    let mut sent = 0;
    let mut answered = 0;
    while answered < batches {
        while sent < batches && sent - answered < IN_FLIGHT as u64 {
            request(&mut client);
            sent += 1;
        }
        let frame = client.next_frame();
        let response = ProduceResponse::decode(ApiVersion(0), &frame.body).expect("response");
        assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::None);
        answered += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mib = (batches * (RECORD_BYTES * BATCH_RECORDS) as u64) as f64 / (1 << 20) as f64;
    let cpu = cpu_seconds(setup.spu.pid()) - cpu_before;
    (mib / seconds, cpu / (mib / 1024.0))
}

/// Reads the partition from offset 0 to its end; MiB/s of record bytes and the SPU's CPU
/// seconds per GiB.
fn consume(setup: &Setup) -> (f64, f64) {
    let mut client = setup.client();
    let mut next = Offset(0);
    let mut bytes: u64 = 0;
    let started = Instant::now();
    let cpu_before = cpu_seconds(setup.spu.pid());
    loop {
        let (header, records) =
            client.fetch(&setup.topic, 0, next, (0, 0), Isolation::ReadCommitted);
        assert_eq!(header.error_code, ErrorCode::None);
        if records.is_empty() {
            break;
        }
        bytes += records.len() as u64;
        let values = record_values(&records);
        next = values.last().expect("records").0.next();
    }
    let mib = bytes as f64 / (1 << 20) as f64;
    let cpu = cpu_seconds(setup.spu.pid()) - cpu_before;
    (mib / started.elapsed().as_secs_f64(), cpu / (mib / 1024.0))
}

/// Open-loop produce at `rate` records/s for `duration` (acks none) while a committed reader
/// long-polls; latency percentiles (ms) from each batch's intended send time to its arrival.
fn end_to_end(setup: &Setup, rate: u64, duration: Duration) -> (f64, f64, f64, u64) {
    let per_batch = 10u64;
    let interval = Duration::from_nanos(1_000_000_000 * per_batch / rate);
    let batches = (duration.as_nanos() / interval.as_nanos()) as u64;
    let epoch = Instant::now() + Duration::from_millis(200);
    let mut producer = setup.client();
    let mut reader = setup.client();
    let topic = setup.topic.clone();
    let start_offset = {
        let mut client = setup.client();
        let (header, _) = client.fetch(&topic, 0, Offset(0), (0, 0), Isolation::ReadCommitted);
        header.high_watermark
    };
    let producing = std::thread::spawn(move || {
        let filler = vec![b'e'; RECORD_BYTES - 8];
        for index in 0..batches {
            let intended = epoch + interval * index as u32;
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            let nanos = (intended - epoch).as_nanos() as u64;
            let mut value = nanos.to_be_bytes().to_vec();
            value.extend_from_slice(&filler);
            let values: Vec<&[u8]> = (0..per_batch).map(|_| value.as_slice()).collect();
            let records = batch(&values, 1);
            let request = sluice_proto::api::produce::ProduceRequest {
                acks: Acks::None,
                timeout_ms: 30_000,
                topics: vec![sluice_proto::api::produce::ProduceTopic {
                    name: topic.clone(),
                    partitions: vec![sluice_proto::api::produce::ProducePartition {
                        partition: sluice_proto::ids::PartitionId(0),
                        records: records.as_slice(),
                    }],
                }],
            };
            producer.send(&request);
        }
    });
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    let mut next = start_offset;
    let expected = batches * per_batch;
    let mut seen = 0;
    let deadline = Instant::now() + duration + Duration::from_secs(30);
    while seen < expected && Instant::now() < deadline {
        let (header, records) =
            reader.fetch(&setup.topic, 0, next, (500, 1), Isolation::ReadCommitted);
        let arrived = (Instant::now() - epoch).as_nanos() as u64;
        assert_eq!(header.error_code, ErrorCode::None);
        for (offset, value) in record_values(&records) {
            if offset < next {
                continue;
            }
            next = offset.next();
            seen += 1;
            let sent = u64::from_be_bytes(value[..8].try_into().unwrap());
            histogram.record(arrived.saturating_sub(sent).max(1)).unwrap();
        }
    }
    producing.join().unwrap();
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1e6;
    (ms(0.5), ms(0.99), histogram.max() as f64 / 1e6, seen)
}

fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    let mib = env_number("TLS_BENCH_MIB", 256);
    let seconds = env_number("TLS_BENCH_E2E_SECONDS", 10);
    let rate = env_number("TLS_BENCH_E2E_RATE", 10_000);
    println!(
        "mode       produce MiB/s  CPU s/GiB  consume MiB/s  CPU s/GiB  e2e p50 ms  e2e p99 ms  \
         e2e max ms  records ({mib} MiB; e2e {rate} records/s x 1 KiB for {seconds} s; SPU CPU)"
    );
    // Plaintext, TLS, TLS, plaintext: an effect of running first or second shows as a
    // difference between the two runs of one mode.
    for tls in [false, true, true, false] {
        let setup = Setup::start(tls);
        let (produced, produce_cpu) = produce(&setup, mib << 20);
        let (consumed, consume_cpu) = consume(&setup);
        let (p50, p99, max, seen) = end_to_end(&setup, rate, Duration::from_secs(seconds));
        println!(
            "{:<10} {produced:>13.1}  {produce_cpu:>9.2}  {consumed:>13.1}  {consume_cpu:>9.2}  \
             {p50:>10.2}  {p99:>10.2}  {max:>10.2}  {seen}",
            if tls { "tls" } else { "plaintext" }
        );
    }
}
