//! Unit tests of the pure parts: histogram percentiles, pacing math, key generation, flag
//! parsing, report schema round trips, /proc parsing.

use std::time::{Duration, Instant};

use sluice_perf::args::{parse_duration, KeyDistribution, SuiteArgs, WorkloadArgs};
use sluice_perf::histogram::{LatencyHistogram, LATENCY_US_MAX};
use sluice_perf::machine::parse_cpu_times;
use sluice_perf::pacing::{intended_offset, scheduled_count, Pacer, ProducerSlot};
use sluice_perf::report::{
    suite_file_name, utc_date, Comparison, Limits, Measured, RunReport, RunResults, SuiteReport,
    SuiteRun, WorkloadKind, SCHEMA_VERSION, SUITE_SCHEMA,
};
use sluice_perf::server_cpu::{parse_peak_resident_bytes, parse_stat, pids_from_state_file};
use sluice_perf::workload::keys::KeyGenerator;
use sluice_perf::workload::{stamp_value, value_send_nanos};

#[test]
fn histogram_percentiles_of_a_uniform_distribution() {
    let mut histogram = LatencyHistogram::new();
    for micros in 1..=100_000u64 {
        histogram.record_us(micros);
    }
    let summary = histogram.summary();
    assert_eq!(summary.count, 100_000);
    assert_eq!(summary.min_us, 1);
    let close = |value: u64, expected: u64| {
        let error = (value as f64 - expected as f64).abs() / expected as f64;
        assert!(error <= 0.001, "{value} not within 0.1% of {expected}");
    };
    close(summary.p50_us, 50_000);
    close(summary.p90_us, 90_000);
    close(summary.p99_us, 99_000);
    close(summary.p99_9_us, 99_900);
    close(summary.p99_99_us, 99_990);
    close(summary.max_us, 100_000);
    close(summary.mean_us as u64, 50_000);
    assert!(summary.p50_us <= summary.p90_us && summary.p99_99_us <= summary.max_us);
}

#[test]
fn histogram_tail_is_visible_and_merges() {
    let mut fast = LatencyHistogram::new();
    for _ in 0..9_999 {
        fast.record(Duration::from_micros(100));
    }
    let mut slow = LatencyHistogram::new();
    slow.record(Duration::from_millis(250));
    fast.merge(&slow);
    let summary = fast.summary();
    assert_eq!(summary.count, 10_000);
    assert!(summary.p99_us < 101, "p99 {}", summary.p99_us);
    assert!(summary.max_us >= 249_000, "max {}", summary.max_us);
    // The one slow value is exactly the top 0.01%: p99.99 is still the fast value.
    assert!(summary.p99_99_us < 101);
    fast.record(Duration::from_millis(250));
    assert!(fast.summary().p99_99_us >= 249_000);
}

#[test]
fn histogram_clamps_and_counts_out_of_range_values() {
    let mut histogram = LatencyHistogram::new();
    histogram.record(Duration::ZERO);
    histogram.record_us(LATENCY_US_MAX * 10);
    let summary = histogram.summary();
    assert_eq!(summary.count, 2);
    assert_eq!(summary.clamped_count, 1);
    assert_eq!(summary.min_us, 1);
    assert!(summary.max_us >= LATENCY_US_MAX);
    assert_eq!(LatencyHistogram::new().summary().p99_us, 0);
}

#[test]
fn pacing_offsets_follow_the_rate() {
    let single = ProducerSlot { index: 0, count: 1 };
    assert_eq!(intended_offset(0, single, 1000.0), Duration::ZERO);
    assert_eq!(intended_offset(1000, single, 1000.0), Duration::from_secs(1));
    assert_eq!(intended_offset(5, single, 0.0), Duration::ZERO);
    // Four producers at 400/s: together every 2.5 ms, each every 10 ms, interleaved.
    let mut offsets: Vec<Duration> = (0..4)
        .flat_map(|index| {
            (0..100).map(move |sequence| {
                intended_offset(sequence, ProducerSlot { index, count: 4 }, 400.0)
            })
        })
        .collect();
    offsets.sort();
    for (global, offset) in offsets.iter().enumerate() {
        let expected = Duration::from_secs_f64(global as f64 / 400.0);
        let difference = offset.abs_diff(expected);
        assert!(difference < Duration::from_nanos(10), "record {global}: {offset:?}");
    }
}

#[test]
fn scheduled_count_matches_the_offsets() {
    for (count, rate) in [(1u64, 1000.0), (3, 777.0), (8, 50_000.0)] {
        for index in 0..count {
            let slot = ProducerSlot { index, count };
            for elapsed_ms in [0u64, 1, 7, 100, 1234] {
                let elapsed = Duration::from_millis(elapsed_ms);
                let expected = (0..1_000_000u64)
                    .take_while(|&sequence| intended_offset(sequence, slot, rate) <= elapsed)
                    .count() as u64;
                let got = scheduled_count(elapsed, slot, rate);
                // Float rounding at an exact boundary may move one record either way.
                assert!(got.abs_diff(expected) <= 1, "{slot:?} {rate} {elapsed:?}: {got}");
            }
        }
    }
}

#[test]
fn machine_cpu_is_split_from_proc_stat_and_flags_steal() {
    let before = parse_cpu_times(
        "cpu  1000 10 500 8000 100 0 40 50 0 0\ncpu0 500 5 250 4000 50 0 20 25 0 0\n",
    )
    .expect("cpu line");
    let after = parse_cpu_times("cpu  1290 20 700 8160 200 0 80 250 0 0\n").expect("cpu line");
    let cpu = before.usage_until(&after).expect("time passed");
    // 300 user (nice included) + 200 system + 160 idle + 100 iowait + 40 irq + 200 steal.
    let close = |value: f64, expected: f64| (value - expected).abs() < 1e-9;
    assert!(close(cpu.user_percent, 30.0), "{cpu:?}");
    assert!(close(cpu.system_percent, 20.0), "{cpu:?}");
    assert!(close(cpu.idle_percent, 16.0), "{cpu:?}");
    assert!(close(cpu.iowait_percent, 10.0), "{cpu:?}");
    assert!(close(cpu.interrupts_percent, 4.0), "{cpu:?}");
    assert!(close(cpu.steal_percent, 20.0), "{cpu:?}");
    assert!(parse_cpu_times("intr 1 2 3\n").is_none());
    assert!(parse_cpu_times("cpu  1 2 x\n").is_none());
    assert!(before.usage_until(&before).is_none(), "no time passed");
    // In a report and its table: the split, and a warning when the host took the CPU.
    let mut report = RunReport::new(
        WorkloadKind::Produce,
        parse_workload_args(&["--records=10"]),
        sample_results(),
        Vec::new(),
        Some(cpu),
    );
    let text = sluice_perf::table::run_table(&report);
    assert!(text.contains("steal 20.0%"), "{text}");
    assert!(text.contains("warning: the hypervisor took CPU time"), "{text}");
    let parsed = RunReport::from_json(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(parsed.machine_cpu, Some(cpu));
    report.machine_cpu = None;
    let older = serde_json::to_string(&report).unwrap().replace(",\"machine_cpu\":null", "");
    assert!(!older.contains("machine_cpu"), "{older}");
    assert_eq!(RunReport::from_json(&older).unwrap().machine_cpu, None, "older reports parse");
}

#[test]
fn pacer_waits_for_the_intended_time_and_never_hides_lateness() {
    let start = Instant::now();
    let pacer = Pacer::new(start, ProducerSlot { index: 0, count: 1 }, 1000.0);
    let intended = pacer.wait_for(20);
    assert_eq!(intended, start + Duration::from_millis(20));
    assert!(Instant::now() >= intended);
    // A record already late is not waited for, and keeps its intended time.
    let late = pacer.wait_for(0);
    assert_eq!(late, start);
    // A fast schedule (20,000/s): no record returns before its intended time, although the
    // pacer reads the clock only for records due after its last reading.
    let fast = Pacer::new(Instant::now(), ProducerSlot { index: 0, count: 1 }, 20_000.0);
    for sequence in 0..2_000 {
        let intended = fast.wait_for(sequence);
        assert!(Instant::now() >= intended, "record {sequence} released early");
    }
}

#[test]
fn keys_are_reproducible_and_in_range() {
    let mut none = KeyGenerator::new(KeyDistribution::None, 1);
    assert_eq!(none.key(5), None);
    let mut sequential = KeyGenerator::new(KeyDistribution::Sequential, 1);
    assert_eq!(sequential.key(0), Some(&b"0"[..]));
    assert_eq!(sequential.key(1234567), Some(&b"1234567"[..]));
    assert_eq!(sequential.key(u64::MAX).map(<[u8]>::to_vec), Some(u64::MAX.to_string().into()));
    let uniform = KeyDistribution::Uniform { keys: 10 };
    let draw = |seed| {
        let mut generator = KeyGenerator::new(uniform, seed);
        (0..1000).map(|sequence| generator.key(sequence).unwrap().to_vec()).collect::<Vec<_>>()
    };
    let first = draw(7);
    assert_eq!(first, draw(7));
    assert_ne!(first, draw(8));
    let mut distinct: Vec<_> = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10, "all 10 keys drawn in 1000 tries: {distinct:?}");
}

#[test]
fn flags_parse() {
    assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("-1").is_err());
    assert!(parse_duration("soon").is_err());
    assert_eq!("none".parse(), Ok(KeyDistribution::None));
    assert_eq!("uniform:100".parse(), Ok(KeyDistribution::Uniform { keys: 100 }));
    assert!("uniform:0".parse::<KeyDistribution>().is_err());
    assert!("zipf".parse::<KeyDistribution>().is_err());
}

#[test]
fn timestamps_round_trip_through_values() {
    let mut value = vec![0xAA; 16];
    stamp_value(&mut value, 0x0102_0304_0506_0708);
    assert_eq!(value_send_nanos(&value), Some(0x0102_0304_0506_0708));
    assert_eq!(&value[8..], &[0xAA; 8]);
    assert_eq!(value_send_nanos(&value[..7]), None);
}

fn parse_workload_args(extra: &[&str]) -> WorkloadArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        workload: WorkloadArgs,
    }
    let mut argv = vec!["test"];
    argv.extend_from_slice(extra);
    Wrapper::try_parse_from(argv).expect("flags parse").workload
}

fn sample_results() -> RunResults {
    let mut histogram = LatencyHistogram::new();
    (1..=1000).for_each(|micros| histogram.record_us(micros));
    let mut results = RunResults {
        records: 1000,
        bytes: 1000 * 1024,
        elapsed_seconds: 2.0,
        produce_latency: Some(histogram.summary()),
        ..RunResults::default()
    };
    results.compute_rates();
    results
}

#[test]
fn run_report_round_trips_and_checks_its_schema() {
    let parameters = parse_workload_args(&[
        "--topic=t",
        "--records=1000",
        "--rate=500",
        "--acks=leader",
        "--key-distribution=uniform:4",
        "--warmup=1s",
    ]);
    assert_eq!(parameters.rate, Some(500.0));
    assert!(!parameters.no_idempotence);
    assert!(sluice_perf::workload::run::producer_config(&parameters).idempotence);
    let plain = parse_workload_args(&["--no-idempotence"]);
    assert!(!sluice_perf::workload::run::producer_config(&plain).idempotence);
    let results = sample_results();
    assert_eq!(results.records_per_second, 500.0);
    assert_eq!(results.bytes_per_second, 512_000.0);
    assert_eq!(results.mebibytes_per_second, 512_000.0 / 1_048_576.0);
    let report = RunReport::new(WorkloadKind::Produce, parameters, results, Vec::new(), None);
    let text = serde_json::to_string_pretty(&report).unwrap();
    let parsed = RunReport::from_json(&text).expect("parses");
    assert_eq!(parsed, report);
    assert_eq!(parsed.schema_version, SCHEMA_VERSION);
    assert!(parsed.machine.cores >= 1 && parsed.machine.memory_bytes > 0);
    assert!(!parsed.machine.kernel.is_empty());
    // The documented field names, as a consumer of the JSON sees them.
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    for path in [
        "/schema",
        "/git/commit",
        "/machine/cores",
        "/machine/memory_bytes",
        "/machine/kernel",
        "/parameters/record_size",
        "/parameters/acks",
        "/results/records_per_second",
        "/results/mebibytes_per_second",
        "/results/produce_latency/p50_us",
        "/results/produce_latency/p99_99_us",
        "/results/produce_latency/max_us",
        "/server_processes",
    ] {
        assert!(value.pointer(path).is_some(), "no {path} in {text}");
    }
    assert_eq!(value["parameters"]["acks"], "leader");
    assert_eq!(value["parameters"]["warmup"], 1.0);
    let wrong = text.replace("\"schema_version\": 1", "\"schema_version\": 99");
    assert!(RunReport::from_json(&wrong).is_err());
    assert!(RunReport::from_json("{}").is_err());
}

#[test]
fn suite_report_round_trips() {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        suite: SuiteArgs,
    }
    let parameters = Wrapper::try_parse_from(["test", "--duration=5s"]).unwrap().suite;
    let run = RunReport::new(
        WorkloadKind::E2e,
        parse_workload_args(&["--duration=3s"]),
        sample_results(),
        Vec::new(),
        None,
    );
    let report = SuiteReport {
        schema: SUITE_SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        tool_version: "0".into(),
        created_unix_ms: 1_700_000_000_000,
        parameters,
        machine: run.machine.clone(),
        git: run.git.clone(),
        limits: Limits {
            fio_direct_write: Measured::Failed("skipped".into()),
            fio_direct_write_fdatasync: Measured::Failed("skipped".into()),
            fio_direct_read: Measured::Failed("skipped".into()),
            fio_grouped_durable_write: Measured::Failed("skipped".into()),
            iperf3_loopback: Measured::Failed("skipped".into()),
        },
        runs: vec![SuiteRun { name: "e2e".into(), report: Measured::Ok(run) }],
        comparisons: vec![Comparison {
            figure: "x".into(),
            value: 1.0,
            unit: "MiB/s".into(),
            limit: "y".into(),
            limit_value: 2.0,
            ratio: 0.5,
        }],
    };
    let text = serde_json::to_string(&report).unwrap();
    assert_eq!(SuiteReport::from_json(&text).expect("parses"), report);
    // A report written before the fio read limit existed still parses.
    let mut older: serde_json::Value = serde_json::from_str(&text).unwrap();
    for added_later in ["fio_direct_read", "fio_grouped_durable_write"] {
        older["limits"].as_object_mut().unwrap().remove(added_later);
    }
    let older = SuiteReport::from_json(&older.to_string()).expect("an older report parses");
    assert!(older.limits.fio_direct_read.value().is_none());
    assert!(older.limits.fio_grouped_durable_write.value().is_none());
    assert!(
        suite_file_name(report.created_unix_ms, &report.git).starts_with("suite-2023-11-14T2213Z-")
    );
}

#[test]
fn utc_dates() {
    assert_eq!(utc_date(0), "1970-01-01");
    assert_eq!(utc_date(951_782_400_000), "2000-02-29");
    assert_eq!(utc_date(1_700_000_000_000), "2023-11-14");
    assert_eq!(utc_date(4_102_444_800_000), "2100-01-01");
}

#[test]
fn proc_stat_parsing() {
    let text = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 \
                12345 100000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
    let fields = parse_stat(text).expect("parses");
    assert_eq!(fields.command, "my (odd) name");
    assert_eq!((fields.user_ticks, fields.system_ticks, fields.resident_pages), (250, 75, 2560));
    assert!(parse_stat("1234 (short) S 1 2").is_err());
    assert!(parse_stat("garbage").is_err());
    let own = std::fs::read_to_string("/proc/self/stat").unwrap();
    assert!(parse_stat(&own).is_ok(), "{own}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(parse_peak_resident_bytes(&status).unwrap() > 0);
}

#[test]
fn server_pids_come_from_a_state_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("cluster.json");
    std::fs::write(
        &path,
        r#"{"sc": {"pid": 42, "public": "127.0.0.1:1"}, "spus": [{"id": 1, "pid": 43},
            {"id": 2, "pid": 42}], "data_dir": "/x"}"#,
    )
    .unwrap();
    assert_eq!(pids_from_state_file(&path).unwrap(), [42, 43]);
    std::fs::write(&path, "not json").unwrap();
    assert!(pids_from_state_file(&path).is_err());
    assert!(pids_from_state_file(&directory.path().join("missing.json")).is_err());
}
