//! fio and iperf3 really run (briefly) and their JSON parses; server CPU is read from /proc.
//! fio and iperf3 are installed by `deploy/dev/setup`; without them these tests fail saying so.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use sluice_perf::limits::fio::{self, FioConfig};
use sluice_perf::limits::iperf;
use sluice_perf::server_cpu::ServerWatch;

fn or_setup<T>(result: Result<T, sluice_perf::PerfError>, tool: &str) -> T {
    result.unwrap_or_else(|error| {
        panic!("{tool} did not run ({error}); install the test tools with deploy/dev/setup")
    })
}

#[test]
fn fio_runs_and_its_json_parses() {
    let directory = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    for fdatasync in [false, true] {
        let config = FioConfig {
            file_bytes: 16 << 20,
            ..FioConfig::sequential_64k(directory.path(), Duration::from_millis(300), fdatasync)
        };
        let result = or_setup(fio::run(&config), "fio");
        assert!(result.bytes >= 64 * 1024 && result.bytes % (64 * 1024) == 0, "{result:?}");
        assert!(result.runtime_ms > 0 && result.bytes_per_second > 0.0, "{result:?}");
        assert!(result.fio_version.starts_with("fio-"), "{result:?}");
        assert!(result.write_latency_p99_us > 0.0, "{result:?}");
        assert_eq!(result.sync_latency_p99_us > 0.0, fdatasync, "{result:?}");
    }
    let grouped = FioConfig {
        file_bytes: 64 << 20,
        ..FioConfig::grouped_durable_writes(directory.path(), Duration::from_millis(300))
    };
    let result = or_setup(fio::run(&grouped), "fio");
    assert!(result.bytes >= 1 << 20 && result.bytes % (1 << 20) == 0, "{result:?}");
    assert!(result.sync_latency_p99_us > 0.0 && result.write_latency_p99_us > 0.0, "{result:?}");
    let reads = FioConfig {
        file_bytes: 16 << 20,
        ..FioConfig::sequential_64k_reads(directory.path(), Duration::from_millis(300))
    };
    let result = or_setup(fio::run(&reads), "fio");
    assert!(result.bytes >= 64 * 1024 && result.bytes % (64 * 1024) == 0, "{result:?}");
    assert!(result.bytes_per_second > 0.0 && result.write_latency_p99_us > 0.0, "{result:?}");
    assert_eq!(result.sync_latency_p99_us, 0.0, "{result:?}");
    // The scratch file is gone.
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
    assert!(fio::parse("").is_err());
    assert!(fio::parse("{\"jobs\": []}").is_err());
    assert!(fio::parse("note: something\n{\"jobs\": [{\"error\": 5}]}").is_err());
}

#[test]
fn fio_reports_a_directory_it_cannot_write() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let config = FioConfig::sequential_64k(&file.join("below"), Duration::from_millis(100), false);
    assert!(fio::run(&config).is_err());
    assert!(!file.join("below").exists());
}

#[test]
fn iperf3_runs_on_loopback_and_its_json_parses() {
    let result = or_setup(iperf::run_loopback(Duration::from_secs(1)), "iperf3");
    assert!(result.bits_per_second > 0.0 && result.bytes_received > 0, "{result:?}");
    assert_eq!(result.bytes_per_second, result.bits_per_second / 8.0);
    assert!(result.iperf_version.starts_with("iperf"), "{result:?}");
    assert!(iperf::parse("{\"error\": \"unable to connect\"}").is_err());
    assert!(iperf::parse("{\"end\": {}}").is_err());
}

#[test]
fn listening_ports_are_found_in_proc_net_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    assert!(iperf::port_listening(&table, port));
    drop(listener);
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    assert!(!iperf::port_listening(&table, port));
}

#[test]
fn server_cpu_seconds_are_measured() {
    let mut child = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spawn a busy shell");
    let watch = ServerWatch::start(&[child.id(), u32::MAX]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let usage = loop {
        let usage = watch.finish();
        if usage[0].cpu_seconds >= 0.05 || Instant::now() > deadline {
            break usage;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(usage.len(), 1, "the missing pid is left out: {usage:?}");
    assert_eq!(usage[0].command, "sh");
    assert!(usage[0].cpu_seconds >= 0.05, "{usage:?}");
    assert!(usage[0].resident_bytes_end > 0 && usage[0].resident_bytes_peak > 0, "{usage:?}");
}
