//! The embedded metadata store: JSON files in a directory, for a single machine.
//!
//! ## Ownership and invariants
//!
//! - **One writer.** [`EmbeddedStore::open`] takes an exclusive `flock` on `<dir>/LOCK` and
//!   keeps it until the store is dropped; a second open (from any process) fails with
//!   [`StoreError::Locked`] naming the holder's pid. Within the process, one mutex serializes
//!   all operations, so the in-memory copy of every object is authoritative and reads never
//!   touch the disk.
//! - **Durable acknowledgements.** A write returns only after its file was written to a
//!   temporary file, fsynced, renamed into place and its directory fsynced
//!   (layout below). After `kill -9` or power loss every acknowledged
//!   write is present and intact; an unacknowledged one is either fully there or absent.
//! - **Monotonic versions.** Each object file records its version. A delete first persists the
//!   new revision in `<dir>/REVISION`, then unlinks the object; on open the revision is the
//!   maximum of that file and every object's version. So versions are never reused, even for a
//!   key that was deleted and re-created across a restart.
//! - **Fencing** tokens are accepted and ignored: the directory lock already guarantees that no
//!   other process writes.
//!
//! ## Layout (readable by an operator: `jq .value <dir>/topics/orders.json`)
//!
//! ```text
//! <dir>/LOCK                      flock'ed by the open store; holds the owner's pid
//! <dir>/REVISION                  {"revision": N}: lower bound of the store revision
//! <dir>/<kind>/<key>.json         one object: {"kind", "key", "version", "value"}
//! <dir>/<kind>/.pending.tmp       a write in progress; removed on open (never acknowledged)
//! ```
//!
//! `<kind>` is `spus`, `spu-groups`, `topics` or `partitions`.
//!
//! ## Failure modes
//!
//! - A write whose file operation fails before the rename changes nothing and returns
//!   [`StoreError::Io`]. One that fails at or after the rename may or may not be on disk: the
//!   handle is then *poisoned* and refuses every later write ([`StoreError::Poisoned`]); reopening
//!   the store reads back what the disk holds.
//! - A damaged object file (not the store's JSON, wrong kind/key, too large) fails
//!   [`EmbeddedStore::open`] with [`StoreError::Corrupt`] naming the file, for an operator.
//! - Values must be JSON documents of at most [`VALUE_BYTES_MAX`](crate::store::VALUE_BYTES_MAX) bytes; leading and
//!   trailing whitespace of a value is not preserved.
//!
//! Watches are in-process only: the last [`HISTORY_EVENTS_MAX`] changes
//! are kept in memory; a watch from an older version, or one that falls that far behind, gets
//! [`WatchEvent::Resync`]. After a restart the history starts empty at the recovered revision.

mod files;
mod history;

pub use self::history::{HISTORY_BYTES_MAX, HISTORY_EVENTS_MAX};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_channel::Receiver;

use self::files::DirectoryLock;
use self::history::WatchHub;
use super::{
    ExpectedVersion, FencingToken, Listing, MetadataStore, ObjectKey, ObjectKind, StoreError,
    StoredObject, Version, WatchEvent, WATCH_CHANNEL_EVENTS_MAX,
};

struct Entry {
    version: Version,
    value: Vec<u8>,
}

struct State {
    objects: BTreeMap<ObjectKind, BTreeMap<ObjectKey, Entry>>,
    /// The version of the newest change.
    revision: Version,
    /// Set when a write failed after it may have reached the disk.
    poisoned: bool,
}

/// Tunables of an [`EmbeddedStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Changes kept in memory for watchers (at most; [`HISTORY_BYTES_MAX`] also applies).
    pub history_events_max: usize,
    /// Capacity of each watch's channel.
    pub watch_channel_events_max: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            history_events_max: HISTORY_EVENTS_MAX,
            watch_channel_events_max: WATCH_CHANNEL_EVENTS_MAX,
        }
    }
}

/// The file-backed [`MetadataStore`]. See the module docs for its guarantees.
pub struct EmbeddedStore {
    directory: PathBuf,
    state: Mutex<State>,
    hub: Arc<WatchHub>,
    _lock: DirectoryLock,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `directory` and takes its lock.
    pub fn open(directory: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        Self::open_with_options(directory, EmbeddedOptions::default())
    }

    /// [`EmbeddedStore::open`] with explicit tunables.
    pub fn open_with_options(
        directory: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedStore, StoreError> {
        let directory = directory.as_ref().to_owned();
        std::fs::create_dir_all(&directory)
            .map_err(|error| files::io_error("create", &directory, error))?;
        let lock = DirectoryLock::acquire(&directory)?;
        files::remove_root_leftover(&directory)?;
        let mut revision = files::read_revision(&directory)?;
        let mut objects = BTreeMap::new();
        for kind in ObjectKind::ALL {
            let mut entries = BTreeMap::new();
            for loaded in files::load_kind(&directory, kind)? {
                revision = revision.max(loaded.version);
                entries.insert(loaded.key, Entry { version: loaded.version, value: loaded.value });
            }
            objects.insert(kind, entries);
        }
        files::sync_directory(&directory)?;
        let state = State { objects, revision, poisoned: false };
        Ok(EmbeddedStore {
            directory,
            state: Mutex::new(state),
            hub: Arc::new(WatchHub::new(
                revision,
                options.history_events_max.max(1),
                options.watch_channel_events_max.max(1),
            )),
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The version of the newest change.
    pub fn revision(&self) -> Version {
        self.lock().revision
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Memory is only updated after the disk, in one step, so a panic elsewhere while the
        // lock was held leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current_version(state: &State, kind: ObjectKind, key: &ObjectKey) -> Option<Version> {
        state.objects.get(&kind).and_then(|entries| entries.get(key)).map(|entry| entry.version)
    }

    fn conflict(
        kind: ObjectKind,
        key: &ObjectKey,
        expected: ExpectedVersion,
        actual: Option<Version>,
    ) -> StoreError {
        StoreError::VersionConflict { kind, key: key.to_string(), expected, actual }
    }
}

impl MetadataStore for EmbeddedStore {
    fn get(&self, kind: ObjectKind, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let state = self.lock();
        let entry = state.objects.get(&kind).and_then(|entries| entries.get(key));
        Ok(entry.map(|entry| StoredObject {
            key: key.clone(),
            version: entry.version,
            value: entry.value.clone(),
        }))
    }

    fn list(&self, kind: ObjectKind) -> Result<Listing, StoreError> {
        let state = self.lock();
        let objects = state
            .objects
            .get(&kind)
            .into_iter()
            .flatten()
            .map(|(key, entry)| StoredObject {
                key: key.clone(),
                version: entry.version,
                value: entry.value.clone(),
            })
            .collect();
        Ok(Listing { revision: state.revision, objects })
    }

    fn put(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        value: &[u8],
        expected: ExpectedVersion,
        _fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError> {
        let document = files::validate_value(kind, key, value)?;
        let mut state = self.lock();
        if state.poisoned {
            return Err(StoreError::Poisoned);
        }
        let actual = Self::current_version(&state, kind, key);
        let matches = match expected {
            ExpectedVersion::Absent => actual.is_none(),
            ExpectedVersion::Exactly(version) => actual == Some(version),
        };
        if !matches {
            return Err(Self::conflict(kind, key, expected, actual));
        }
        let version = Version(state.revision.get() + 1);
        let bytes = files::encode_object(kind, key, version, &document);
        let path = files::object_path(&self.directory, kind, key);
        if let Err(failure) = files::replace_file(&path, &bytes) {
            state.poisoned |= failure.maybe_applied;
            return Err(failure.error);
        }
        let value = document.get().as_bytes().to_vec();
        state.revision = version;
        state
            .objects
            .entry(kind)
            .or_default()
            .insert(key.clone(), Entry { version, value: value.clone() });
        self.hub.publish(WatchEvent::Put { kind, key: key.clone(), version, value });
        Ok(version)
    }

    fn delete(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        version: Version,
        _fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError> {
        let mut state = self.lock();
        if state.poisoned {
            return Err(StoreError::Poisoned);
        }
        let actual = Self::current_version(&state, kind, key);
        if actual != Some(version) {
            return Err(Self::conflict(kind, key, ExpectedVersion::Exactly(version), actual));
        }
        let delete_version = Version(state.revision.get() + 1);
        let revision_path = files::revision_path(&self.directory);
        if let Err(failure) =
            files::replace_file(&revision_path, &files::encode_revision(delete_version))
        {
            // A newer REVISION file alone only skips versions and loses nothing, so the handle
            // stays usable whether or not the rename happened.
            return Err(failure.error);
        }
        let path = files::object_path(&self.directory, kind, key);
        if let Err(error) = files::remove_file_durably(&path) {
            state.poisoned = true;
            return Err(error);
        }
        state.revision = delete_version;
        if let Some(entries) = state.objects.get_mut(&kind) {
            entries.remove(key);
        }
        self.hub.publish(WatchEvent::Delete { kind, key: key.clone(), version: delete_version });
        Ok(delete_version)
    }

    fn watch(
        &self,
        kinds: &[ObjectKind],
        from: Version,
    ) -> Result<Receiver<WatchEvent>, StoreError> {
        self.hub.subscribe(kinds, from)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.hub.close();
    }
}
