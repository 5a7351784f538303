//! The metadata store: where the SC keeps every cluster object.
//!
//! ## Model
//!
//! A store holds JSON documents (as bytes) under `(kind, key)`. Every write is conditional and
//! gets a [`Version`] from one store-wide, strictly increasing counter (the store's revision),
//! so versions double as the position in the store's change stream:
//!
//! - [`MetadataStore::get`] / [`MetadataStore::list`] read objects with their versions; a listing
//!   also reports the revision it is consistent at.
//! - [`MetadataStore::put`] writes if the object is at the [`ExpectedVersion`] (absent for a
//!   create); [`MetadataStore::delete`] deletes if it is at the given version. A mismatch is
//!   [`StoreError::VersionConflict`] and writes nothing.
//! - [`MetadataStore::watch`] streams every change with a version above `from`, in version order,
//!   for the requested kinds, on a bounded crossbeam channel. A watcher that falls behind the
//!   backend's bounded history receives [`WatchEvent::Resync`] as its last event and must list
//!   again and watch from the listing's revision. The channel disconnecting without a resync
//!   means the store was closed.
//!
//! The canonical consumer loop (the shape of every SC controller's listener):
//!
//! ```no_run
//! # use sluice_sc::store::*;
//! # fn run(store: &dyn MetadataStore) -> Result<(), StoreError> {
//! loop {
//!     let listing = store.list(ObjectKind::Topic)?; // rebuild the cache from scratch
//!     let events = store.watch(&[ObjectKind::Topic], listing.revision)?;
//!     for event in events.iter() {
//!         match event {
//!             WatchEvent::Put { .. } | WatchEvent::Delete { .. } => { /* update cache, reduce */ }
//!             WatchEvent::Resync { .. } => break, // fell behind: list again
//!         }
//!     }
//! #   break;
//! }
//! # Ok(()) }
//! ```
//!
//! ## Fencing
//!
//! Writes may carry a [`FencingToken`], the active SC's proof of leadership. The Consul backend
//! makes every fenced write a transaction that also checks the leadership lock, so a deposed SC
//! cannot write ([`StoreError::Fenced`]). The embedded backend is single-writer by construction
//! (an exclusive lock on its directory) and ignores the token.
//!
//! ## Backends
//!
//! - [`embedded::EmbeddedStore`]: files in a directory, for one machine (the default).
//! - [`consul::ConsulStore`]: objects as JSON under `<prefix>/<cluster>/<kind>/<key>` in Consul,
//!   for datacenters. Both pass the same conformance suite, `sc/tests/store_conformance.rs`.
//!
//! Values are bytes so the store does not depend on the object model; [`typed::TypedStore`] adds
//! serde get/put/list of any type as pretty JSON on top of any backend.

pub mod consul;
pub mod embedded;
mod error;
mod fenced;
pub mod typed;
mod types;

pub use error::StoreError;
pub use fenced::FencedStore;
pub use typed::{TypedListing, TypedStore, Versioned};
pub use types::{
    ExpectedVersion, FencingToken, Listing, ObjectKey, ObjectKind, StoredObject, Version,
    WatchEvent, KEY_BYTES_MAX,
};

/// Largest value any backend accepts, in bytes: Consul's default KV value limit, so every value
/// one backend accepts is storable in the other.
pub const VALUE_BYTES_MAX: usize = 512 * 1024;

/// The value contract every backend enforces before writing: a JSON document of at most
/// [`VALUE_BYTES_MAX`] bytes.
pub(crate) fn check_value(
    kind: ObjectKind,
    key: &ObjectKey,
    value: &[u8],
) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::InvalidValue { kind, key: key.to_string(), reason };
    if value.len() > VALUE_BYTES_MAX {
        return Err(invalid(format!("{} bytes, more than {VALUE_BYTES_MAX}", value.len())));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(value)
        .map_err(|error| invalid(format!("not a JSON document: {error}")))?;
    Ok(())
}

/// Capacity of each watch's event channel. A watcher this many events behind stops receiving
/// and, once the backend's history moves past it, gets [`WatchEvent::Resync`].
pub const WATCH_CHANNEL_EVENTS_MAX: usize = 1024;

/// A versioned key-value store of JSON documents, shared by the SC's threads.
///
/// Object-safe: the SC holds an `Arc<dyn MetadataStore>` and does not care which backend it is.
/// All methods block the calling thread (no async runtime in the SC).
pub trait MetadataStore: Send + Sync {
    /// The object `(kind, key)` with its version, or `None` if it does not exist.
    fn get(&self, kind: ObjectKind, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError>;

    /// Every object of `kind`, sorted by key, with the revision the listing is consistent at.
    fn list(&self, kind: ObjectKind) -> Result<Listing, StoreError>;

    /// Writes `value` under `(kind, key)` if the object is as `expected`; returns the new
    /// version. `fence`, when given, must still be current (see [`FencingToken`]).
    fn put(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        value: &[u8],
        expected: ExpectedVersion,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError>;

    /// Deletes `(kind, key)` if it is at exactly `version`; returns the version of the delete.
    fn delete(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        version: Version,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError>;

    /// Streams every change to objects of `kinds` with a version above `from`, in version order.
    /// See the module docs for the resync protocol. Dropping the receiver ends the watch.
    fn watch(
        &self,
        kinds: &[ObjectKind],
        from: Version,
    ) -> Result<crossbeam_channel::Receiver<WatchEvent>, StoreError>;
}
