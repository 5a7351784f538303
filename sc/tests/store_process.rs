//! Real-process tests of the embedded store: `kill -9` durability and the cross-process lock.
//!
//! The test binary re-executes itself to run a child entry point (an ignored test selected with
//! `--exact --ignored`), directed by environment variables. Children are owned by a guard that
//! kills them by handle if a test fails.
//!
//! Seeded: `SLUICE_TEST_SEED` replays a run, `SLUICE_TEST_ITERATIONS` sets the number of kills.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rand::{Rng, SeedableRng};
use sluice_sc::store::embedded::EmbeddedStore;
use sluice_sc::store::{ExpectedVersion, MetadataStore, ObjectKey, ObjectKind, Version};

const STORE_DIRECTORY_ENV: &str = "SLUICE_TEST_STORE_DIRECTORY";
const KEYS: u64 = 16;
/// Every this many operations on a key, the child deletes it instead of updating it.
const DELETE_EVERY: u64 = 7;

/// Kills and reaps the child if the test ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(entry: &str, directory: &Path) -> ChildGuard {
    let executable = std::env::current_exe().expect("test executable path");
    let child = Command::new(executable)
        .args(["--exact", entry, "--ignored", "--nocapture", "--test-threads=1"])
        .env(STORE_DIRECTORY_ENV, directory)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child process");
    ChildGuard(child)
}

fn child_directory() -> std::path::PathBuf {
    std::env::var_os(STORE_DIRECTORY_ENV)
        .expect("child entry point: run by its parent test, not directly")
        .into()
}

fn payload(sequence: u64) -> String {
    // Varying sizes (up to ~6 KiB) so that a torn file would be visible.
    let repeat = 1 + (sequence * 7919 % 600) as usize;
    format!("{sequence:x}-").repeat(repeat)
}

fn value(sequence: u64) -> String {
    format!(r#"{{"sequence":{sequence},"payload":"{}"}}"#, payload(sequence))
}

/// Child: writes and deletes as fast as it can, printing `begin` before and `ack` after each
/// operation, until it is killed.
#[test]
#[ignore = "child process entry point of kill_9_loses_no_acknowledged_write"]
fn child_writer() {
    let store = EmbeddedStore::open(child_directory()).expect("child opens the store");
    let mut out = std::io::stdout().lock();
    let mut sequence = store.revision().get() * 1000;
    loop {
        sequence += 1;
        let name = format!("object-{}", sequence % KEYS);
        let key = ObjectKey::new(&name).unwrap();
        let current = store.get(ObjectKind::Topic, &key).unwrap();
        match current {
            Some(object) if sequence % DELETE_EVERY == 0 => {
                writeln!(out, "begin delete {name}").unwrap();
                out.flush().unwrap();
                let version = store.delete(ObjectKind::Topic, &key, object.version, None).unwrap();
                writeln!(out, "ack delete {name} {version}").unwrap();
            }
            current => {
                writeln!(out, "begin put {name} {sequence}").unwrap();
                out.flush().unwrap();
                let expected = ExpectedVersion::from(current.map(|object| object.version));
                let version = store
                    .put(ObjectKind::Topic, &key, value(sequence).as_bytes(), expected, None)
                    .unwrap();
                writeln!(out, "ack put {name} {version} {sequence}").unwrap();
            }
        }
        out.flush().unwrap();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Present { version: Version, sequence: u64 },
    Deleted { version: Version },
}

#[derive(Clone, Copy, Debug)]
enum Pending {
    Put { sequence: u64 },
    Delete,
}

#[derive(Default)]
struct Model {
    acknowledged: BTreeMap<String, State>,
    pending: Option<(String, Pending)>,
    version_max: Version,
    acknowledgements: u64,
}

impl Model {
    fn apply(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |index: usize| -> u64 { words[index].parse().expect("a number") };
        match words.as_slice() {
            ["begin", "put", name, _] => {
                self.pending = Some((name.to_string(), Pending::Put { sequence: number(3) }))
            }
            ["begin", "delete", name] => self.pending = Some((name.to_string(), Pending::Delete)),
            ["ack", "put", name, _, _] => {
                let version = Version(number(3));
                let state = State::Present { version, sequence: number(4) };
                self.acknowledge(name, state, version);
            }
            ["ack", "delete", name, _] => {
                let version = Version(number(3));
                self.acknowledge(name, State::Deleted { version }, version);
            }
            _ => {} // test harness chatter
        }
    }

    fn acknowledge(&mut self, name: &str, state: State, version: Version) {
        assert!(
            version > self.version_max,
            "versions increase: {version} after {}",
            self.version_max
        );
        self.version_max = version;
        self.acknowledged.insert(name.to_owned(), state);
        self.pending = None;
        self.acknowledgements += 1;
    }

    /// Checks the reopened store against every acknowledged operation (and at most one
    /// unacknowledged one, which may or may not have landed), then adopts the outcome of the
    /// unacknowledged one.
    fn check(&mut self, store: &EmbeddedStore, seed: u64) {
        let pending_name = self.pending.as_ref().map(|(name, _)| name.clone());
        let names: Vec<String> =
            self.acknowledged.keys().cloned().chain(pending_name.clone()).collect();
        for name in &names {
            let key = ObjectKey::new(name).unwrap();
            let actual = store.get(ObjectKind::Topic, &key).unwrap();
            let state = self.acknowledged.get(name).copied();
            let pending = self.pending.as_ref().filter(|(pending, _)| pending == name).map(|p| p.1);
            let acknowledged_matches = match (state, &actual) {
                (Some(State::Present { version, sequence }), Some(object)) => {
                    object.version == version && object.value == value(sequence).into_bytes()
                }
                (Some(State::Deleted { .. }) | None, None) => true,
                _ => false,
            };
            let pending_matches = match (pending, &actual) {
                (Some(Pending::Put { sequence }), Some(object)) => {
                    object.version > self.version_max
                        && object.value == value(sequence).into_bytes()
                }
                (Some(Pending::Delete), None) => true,
                _ => false,
            };
            assert!(
                acknowledged_matches || pending_matches,
                "seed {seed}: {name}: acknowledged {state:?}, pending {pending:?}, found {:?}",
                actual.map(|o| (o.version, String::from_utf8_lossy(&o.value).into_owned()))
            );
            if pending_matches && !acknowledged_matches {
                let adopted = match (pending, actual) {
                    (Some(Pending::Put { sequence }), Some(object)) => {
                        State::Present { version: object.version, sequence }
                    }
                    _ => State::Deleted { version: store.revision() },
                };
                self.acknowledged.insert(name.clone(), adopted);
            }
        }
        self.pending = None;
        self.version_max = self.version_max.max(store.revision());
    }
}

/// Runs one child, kills it after `kill_after` acknowledgements, reads everything it printed.
fn run_and_kill(directory: &Path, kill_after: u64, model: &mut Model) {
    let mut child = spawn_child("child_writer", directory);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let start = model.acknowledgements;
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line).expect("read child output");
        if read == 0 {
            break;
        }
        if !line.ends_with('\n') {
            break; // cut off by the kill: not an acknowledgement
        }
        model.apply(&line);
        if !killed && model.acknowledgements - start >= kill_after {
            child.0.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.0.wait().expect("reap the child");
    assert!(killed, "the child exited by itself: {status}");
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let iterations: u64 = std::env::var("SLUICE_TEST_ITERATIONS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5);
    eprintln!("kill_9_loses_no_acknowledged_write: SLUICE_TEST_SEED={seed}");
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    let directory = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    for iteration in 0..iterations {
        let kill_after = random.gen_range(1..=300);
        run_and_kill(directory.path(), kill_after, &mut model);
        let store = EmbeddedStore::open(directory.path())
            .unwrap_or_else(|error| panic!("seed {seed}, iteration {iteration}: reopen: {error}"));
        model.check(&store, seed);
        assert!(store.revision() >= model.version_max, "seed {seed}: revision went back");
        assert!(!directory.path().join("topics").join(".pending.tmp").exists());
    }
    assert!(model.acknowledgements >= iterations, "the children made progress");
    eprintln!("{} acknowledged operations checked over {iterations} kills", model.acknowledgements);
}

/// Child: tries to open a store its parent holds, prints the error, exits non-zero unless the
/// error is the expected `Locked`.
#[test]
#[ignore = "child process entry point of a_second_process_is_told_who_holds_the_lock"]
fn child_open_locked_store() {
    match EmbeddedStore::open(child_directory()) {
        Err(error @ sluice_sc::store::StoreError::Locked { .. }) => println!("refused: {error}"),
        Err(error) => panic!("unexpected error: {error}"),
        Ok(_) => panic!("opened a store that another process holds"),
    }
}

#[test]
fn a_second_process_is_told_who_holds_the_lock() {
    let directory = tempfile::tempdir().unwrap();
    let _store = EmbeddedStore::open(directory.path()).unwrap();
    let mut child = spawn_child("child_open_locked_store", directory.path());
    let mut output = String::new();
    let stdout = child.0.stdout.take().expect("piped stdout");
    std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut output).unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "child failed: {output}");
    let expected = format!("locked by process {}", std::process::id());
    assert!(output.contains(&expected), "child said: {output}");
}
