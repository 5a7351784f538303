//! Waiting on conditions with deadlines: the only way a process test waits. Nothing here
//! sleeps for a fixed time and then hopes; each wait polls its condition every
//! [`POLL_INTERVAL`] and panics with what it waited for once its deadline passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest wait for a process to report its addresses (its ready file) or to stop.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for an eventually true condition.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for an SC to become active: a crashed predecessor's Consul session expires one
/// to two TTLs (10 s) after its last renewal, then the lock delay (1 s) passes.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two looks at a condition: short against the seconds a cluster takes to
/// change, long enough not to compete with the processes under test for the CPU.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` until it returns `Some`, or panics with `what` after
/// [`CONDITION_TIMEOUT`].
pub fn wait_for<T>(what: &str, condition: impl FnMut() -> Option<T>) -> T {
    wait_for_within(what, CONDITION_TIMEOUT, condition)
}

/// [`wait_for`] with another deadline.
pub fn wait_for_within<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `condition` until it holds, or panics with `what` after [`CONDITION_TIMEOUT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(what, || condition().then_some(()));
}

/// The `key=value` lines of a ready file (`sluice-sc` and `sluice-spu --ready-file`); empty
/// while the file does not exist.
pub fn read_ready_file(path: &Path) -> BTreeMap<String, String> {
    parse_ready_file(&std::fs::read_to_string(path).unwrap_or_default())
}

pub(crate) fn parse_ready_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// A ready file beside `data_dir` whose name is unique in this test process: servers of a test
/// may share a parent directory, a restarted server must not be taken for ready by its old
/// file, and the servers write it through `<name>.tmp`, which must not collide either.
pub(crate) fn unique_ready_file(data_dir: &Path, role: &str) -> PathBuf {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let sequence = STARTED.fetch_add(1, Ordering::Relaxed);
    let stem = data_dir.file_name().map(|name| name.to_string_lossy().into_owned());
    let name =
        format!("{}.{role}-{}-{sequence}.ready", stem.unwrap_or_default(), std::process::id());
    data_dir.with_file_name(name)
}
