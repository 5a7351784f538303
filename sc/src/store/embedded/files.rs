//! On-disk format and crash-safe file operations of the embedded store.
//!
//! Layout of a store directory:
//!
//! ```text
//! <dir>/LOCK                      flock'ed by the open store; holds the owner's pid
//! <dir>/REVISION                  {"revision": N}: lower bound of the store revision
//! <dir>/<kind>/<key>.json         one object: {"kind", "key", "version", "value"}
//! <dir>/<kind>/.pending.tmp       a write in progress; removed on open (never acknowledged)
//! ```
//!
//! Every file is replaced atomically: written to `.pending.tmp` in its directory, fsynced, renamed over `<name>`,
//! then the directory is fsynced. A reader (or a restart after `kill -9`) therefore sees either
//! the old or the new content, never a torn one, and a write that returned is on disk.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::store::{check_value, ObjectKey, ObjectKind, StoreError, Version, VALUE_BYTES_MAX};

/// Largest object file read on open: the value plus room for the envelope and indentation.
const OBJECT_FILE_BYTES_MAX: u64 = (VALUE_BYTES_MAX as u64) + 64 * 1024;

const OBJECT_SUFFIX: &str = ".json";
const TEMPORARY_SUFFIX: &str = ".tmp";
/// The temporary file of a write in progress. One per directory suffices: the store has one
/// writer at a time. A fixed short name keeps every valid key usable as a file name.
const TEMPORARY_FILE: &str = ".pending.tmp";
const REVISION_FILE: &str = "REVISION";
const LOCK_FILE: &str = "LOCK";

/// One object as written to `<kind>/<key>.json`.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    kind: &'a str,
    key: &'a str,
    version: u64,
    value: &'a RawValue,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    kind: String,
    key: String,
    version: u64,
    value: Box<RawValue>,
}

#[derive(Serialize, Deserialize)]
struct RevisionFile {
    revision: u64,
}

/// An object loaded from disk.
pub struct LoadedObject {
    pub key: ObjectKey,
    pub version: Version,
    pub value: Vec<u8>,
}

/// How far a failed replace got.
pub struct ReplaceError {
    /// `true` if the rename may have happened: the file may hold the new content.
    pub maybe_applied: bool,
    pub error: StoreError,
}

pub fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { operation, path: path.to_owned(), source }
}

/// Checks that `value` is one JSON document within the size limit, and returns it as such.
/// Leading and trailing whitespace is not preserved.
pub fn validate_value(
    kind: ObjectKind,
    key: &ObjectKey,
    value: &[u8],
) -> Result<Box<RawValue>, StoreError> {
    check_value(kind, key, value)?;
    let invalid = |reason: String| StoreError::InvalidValue { kind, key: key.to_string(), reason };
    let text =
        std::str::from_utf8(value).map_err(|error| invalid(format!("not UTF-8: {error}")))?;
    RawValue::from_string(text.to_owned())
        .map_err(|error| invalid(format!("not a JSON document: {error}")))
}

/// The bytes of `<kind>/<key>.json` for this object.
pub fn encode_object(
    kind: ObjectKind,
    key: &ObjectKey,
    version: Version,
    value: &RawValue,
) -> Vec<u8> {
    let envelope =
        EnvelopeOut { kind: kind.as_str(), key: key.as_str(), version: version.get(), value };
    let mut bytes = serde_json::to_vec_pretty(&envelope).expect("an envelope always serializes");
    bytes.push(b'\n');
    bytes
}

pub fn kind_dir(root: &Path, kind: ObjectKind) -> PathBuf {
    root.join(kind.as_str())
}

pub fn object_path(root: &Path, kind: ObjectKind, key: &ObjectKey) -> PathBuf {
    kind_dir(root, kind).join(format!("{key}{OBJECT_SUFFIX}"))
}

pub fn revision_path(root: &Path) -> PathBuf {
    root.join(REVISION_FILE)
}

pub fn lock_path(root: &Path) -> PathBuf {
    root.join(LOCK_FILE)
}

/// fsyncs a directory so that renames and unlinks in it are durable.
pub fn sync_directory(path: &Path) -> Result<(), StoreError> {
    let directory = File::open(path).map_err(|error| io_error("open directory", path, error))?;
    directory.sync_all().map_err(|error| io_error("fsync directory", path, error))
}

/// Atomically replaces `path` with `bytes`: temporary file, fsync, rename, fsync directory.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), ReplaceError> {
    let clean = |error| ReplaceError { maybe_applied: false, error };
    let parent = path.parent().unwrap_or(Path::new("."));
    let temporary = parent.join(TEMPORARY_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(|error| clean(io_error("create", &temporary, error)))?;
    file.write_all(bytes).map_err(|error| clean(io_error("write", &temporary, error)))?;
    file.sync_all().map_err(|error| clean(io_error("fsync", &temporary, error)))?;
    drop(file);
    fs::rename(&temporary, path).map_err(|error| ReplaceError {
        maybe_applied: true,
        error: io_error("rename into place", path, error),
    })?;
    sync_directory(parent).map_err(|error| ReplaceError { maybe_applied: true, error })
}

/// Removes an object file and fsyncs its directory.
pub fn remove_file_durably(path: &Path) -> Result<(), StoreError> {
    fs::remove_file(path).map_err(|error| io_error("remove", path, error))?;
    sync_directory(path.parent().unwrap_or(Path::new(".")))
}

/// Removes a temporary file left in the store's root by a crash during a delete (its
/// REVISION update was never acknowledged).
pub fn remove_root_leftover(root: &Path) -> Result<(), StoreError> {
    let path = root.join(TEMPORARY_FILE);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("remove", &path, error)),
    }
}

/// The revision recorded in `<dir>/REVISION`, 0 if the file does not exist.
pub fn read_revision(root: &Path) -> Result<Version, StoreError> {
    let path = revision_path(root);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Version::ZERO),
        Err(error) => return Err(io_error("read", &path, error)),
    };
    let file: RevisionFile = serde_json::from_slice(&bytes)
        .map_err(|error| StoreError::Corrupt { path, reason: error.to_string() })?;
    Ok(Version(file.revision))
}

pub fn encode_revision(revision: Version) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&RevisionFile { revision: revision.get() })
        .expect("a revision always serializes");
    bytes.push(b'\n');
    bytes
}

/// Loads every object of `kind`, creating the kind's directory if needed and removing
/// temporary files left by a crash (their writes were never acknowledged).
pub fn load_kind(root: &Path, kind: ObjectKind) -> Result<Vec<LoadedObject>, StoreError> {
    let directory = kind_dir(root, kind);
    fs::create_dir_all(&directory).map_err(|error| io_error("create", &directory, error))?;
    let entries = fs::read_dir(&directory).map_err(|error| io_error("list", &directory, error))?;
    let mut objects = Vec::new();
    let mut removed_temporary = false;
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", &directory, error))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "ignoring non-UTF-8 file in metadata store");
            continue;
        };
        if name.ends_with(TEMPORARY_SUFFIX) {
            fs::remove_file(&path).map_err(|error| io_error("remove", &path, error))?;
            removed_temporary = true;
        } else if let Some(stem) = name.strip_suffix(OBJECT_SUFFIX) {
            objects.push(load_object(&path, kind, stem)?);
        } else {
            tracing::warn!(path = %path.display(), "ignoring unknown file in metadata store");
        }
    }
    if removed_temporary {
        sync_directory(&directory)?;
    }
    Ok(objects)
}

fn load_object(path: &Path, kind: ObjectKind, stem: &str) -> Result<LoadedObject, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_owned(), reason };
    let file = File::open(path).map_err(|error| io_error("open", path, error))?;
    let mut bytes = Vec::new();
    file.take(OBJECT_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| io_error("read", path, error))?;
    if bytes.len() as u64 > OBJECT_FILE_BYTES_MAX {
        return Err(corrupt(format!("larger than {OBJECT_FILE_BYTES_MAX} bytes")));
    }
    let envelope: EnvelopeIn =
        serde_json::from_slice(&bytes).map_err(|error| corrupt(error.to_string()))?;
    if envelope.kind != kind.as_str() || envelope.key != stem {
        return Err(corrupt(format!(
            "holds {}/{} but is stored as {kind}/{stem}",
            envelope.kind, envelope.key
        )));
    }
    let key = ObjectKey::new(stem).map_err(|error| corrupt(error.to_string()))?;
    if envelope.version == 0 {
        return Err(corrupt("version 0 is never written".to_owned()));
    }
    let value = envelope.value.get().as_bytes().to_vec();
    Ok(LoadedObject { key, version: Version(envelope.version), value })
}

/// The exclusive `flock` on `<dir>/LOCK`, held for as long as the store is open.
///
/// `flock` locks belong to the open file description, so a second open of the same directory
/// fails even within one process, and the kernel drops the lock when the process dies
/// (`kill -9` included): a stale LOCK file never blocks a restart.
pub struct DirectoryLock {
    _file: File,
}

impl DirectoryLock {
    pub fn acquire(root: &Path) -> Result<DirectoryLock, StoreError> {
        let path = lock_path(root);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| io_error("open", &path, error))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let holder_pid =
                    file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(StoreError::Locked { dir: root.to_owned(), holder_pid });
            }
            return Err(io_error("lock", &path, error));
        }
        file.set_len(0).map_err(|error| io_error("truncate", &path, error))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(|error| io_error("write", &path, error))?;
        Ok(DirectoryLock { _file: file })
    }
}
