//! Record batch throughput: build, validate (CRC-32C) and iterate, for 1 KiB records in
//! 64 KiB batches. Throughput is in batch bytes. Run with `cargo bench -p sluice-proto`.
//!
//! Two groups run the same benchmarks: `record_batch_wall` measures wall-clock time, as usual;
//! `record_batch_cpu` measures the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so
//! its figures stay meaningful on a machine loaded by other work (time spent descheduled is
//! not counted; cache interference still is).

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice_proto::ids::TimestampMs;
use sluice_proto::record::{validate_batch, BatchBuilder, Header, RecordBatch};

const RECORD_VALUE_BYTES: usize = 1024;
const BATCH_BYTES_TARGET: usize = 64 * 1024;
const BATCH_BYTES_MAX: usize = 1 << 20;

fn record_value() -> Vec<u8> {
    // Not all one byte, so nothing downstream can special-case it.
    (0..RECORD_VALUE_BYTES).map(|i| (i * 31 % 251) as u8).collect()
}

/// Fills `builder` with 1 KiB records up to the batch size target; returns the record count.
fn fill(builder: &mut BatchBuilder, value: &[u8], headers: &[Header<'_>]) -> usize {
    builder.clear();
    let mut timestamp = 1_700_000_000_000;
    loop {
        let size = builder.record_encoded_len(TimestampMs(timestamp), None, Some(value), headers);
        if builder.encoded_len() + size > BATCH_BYTES_TARGET {
            return builder.record_count() as usize;
        }
        builder.push_record(TimestampMs(timestamp), None, Some(value), headers).unwrap();
        timestamp += 1;
    }
}

fn benches<M: Measurement>(criterion: &mut Criterion<M>, group_name: &str) {
    let value = record_value();
    let headers = [Header { key: "source", value: Some(b"bench") }];
    let mut builder = BatchBuilder::with_capacity(BATCH_BYTES_TARGET);
    let records = fill(&mut builder, &value, &headers);
    let batch = builder.finish().to_vec();
    eprintln!("batch: {} bytes, {records} records of {RECORD_VALUE_BYTES} B", batch.len());

    let mut group = criterion.benchmark_group(group_name);
    group.throughput(Throughput::Bytes(batch.len() as u64));

    group.bench_function("build", |bench| {
        bench.iter(|| {
            fill(&mut builder, black_box(&value), &headers);
            black_box(builder.finish().len())
        })
    });

    group.bench_function("validate_crc", |bench| {
        bench.iter(|| validate_batch(black_box(&batch), BATCH_BYTES_MAX).unwrap())
    });

    let parsed = RecordBatch::parse(&batch, BATCH_BYTES_MAX).unwrap();
    group.bench_function("iterate", |bench| {
        bench.iter(|| {
            let mut bytes = 0usize;
            for record in black_box(&parsed).records().unwrap() {
                let record = record.unwrap();
                bytes += record.value().map_or(0, <[u8]>::len);
                bytes += record.headers().map(|header| header.key.len()).sum::<usize>();
            }
            black_box(bytes)
        })
    });
    group.finish();
}

fn wall_clock(criterion: &mut Criterion) {
    benches(criterion, "record_batch_wall");
}

fn thread_cpu(criterion: &mut Criterion<ThreadCpuTime>) {
    benches(criterion, "record_batch_cpu");
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant Linux supports.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, left: &u64, right: &u64) -> u64 {
        left + right
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuTimeFormatter
    }
}

/// Formats CPU nanoseconds as µs and byte throughput as GiB/s.
struct CpuTimeFormatter;

impl ValueFormatter for CpuTimeFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|value| *value /= 1e3);
        "µs (cpu)"
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (amount, unit) = match *throughput {
            Throughput::Bytes(bytes) | Throughput::BytesDecimal(bytes) => {
                (bytes as f64 / (1u64 << 30) as f64, "GiB/s (cpu)")
            }
            Throughput::Elements(elements) => (elements as f64, "elem/s (cpu)"),
        };
        values.iter_mut().for_each(|nanoseconds| *nanoseconds = amount * 1e9 / *nanoseconds);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(record_batch_wall, wall_clock);
criterion_group! {
    name = record_batch_cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = thread_cpu
}
criterion_main!(record_batch_wall, record_batch_cpu);
