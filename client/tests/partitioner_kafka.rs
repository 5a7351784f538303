//! The key partitioner against Kafka's own implementation, as shipped in kafka-python
//! (`kafka.partitioner.default.murmur2`, a port of the Java client's `Utils.murmur2`), on
//! seeded random keys. Python: `SLUICE_PYTHON`, else `<workspace>/.venv/bin/python`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use sluice_client::{key_partition, murmur2};

fn python() -> PathBuf {
    let path = std::env::var("SLUICE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.is_file(),
        "Python with kafka-python not found at {}: run `deploy/dev/setup` (or set SLUICE_PYTHON)",
        path.display()
    );
    path
}

fn mix(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    state = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    state = (state ^ (state >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    state ^ (state >> 31)
}

#[test]
fn murmur2_and_partition_match_kafka_python_on_random_keys() {
    let seed: u64 =
        std::env::var("SLUICE_TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(2026);
    let keys: Vec<Vec<u8>> = (0..2_000u64)
        .map(|index| {
            let length = (mix(seed ^ index) % 64) as usize;
            (0..length)
                .map(|byte| mix(seed.wrapping_add(index * 131 + byte as u64)) as u8)
                .collect()
        })
        .collect();
    let script = "import sys\n\
        from kafka.partitioner.default import murmur2\n\
        for line in sys.stdin:\n\
        \x20   key = bytes.fromhex(line.strip())\n\
        \x20   h = murmur2(key)\n\
        \x20   print(h, (h & 0x7fffffff) % 12)\n";
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python");
    let input: String = keys
        .iter()
        .map(|key| key.iter().map(|byte| format!("{byte:02x}")).collect::<String>() + "\n")
        .collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python failed: is kafka-python installed? run `deploy/dev/setup`"
    );
    let lines: Vec<String> =
        String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), keys.len());
    for (key, line) in keys.iter().zip(&lines) {
        let (hash, partition) = line.split_once(' ').unwrap();
        let hash: u32 = hash.parse().unwrap();
        assert_eq!(murmur2(key) as u32, hash, "key {key:02x?} (seed {seed})");
        assert_eq!(key_partition(key, 12), partition.parse::<u32>().unwrap(), "key {key:02x?}");
    }
}
