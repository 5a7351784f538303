//! A [`MetadataStore`] that stamps every write with the active SC's [`FencingToken`].
//!
//! The active SC hands this wrapper, not the raw store, to every thread that writes (controllers,
//! admin handlers, SPU sessions), so no write can leave without the token: once another SC has
//! taken the leadership lock, each of them fails as a whole with [`StoreError::Fenced`] (the
//! Consul backend checks the lock in the same transaction; see [`super::consul`]). Reads and
//! watches pass through unchanged. A caller's own token, if it passes one, wins.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::{
    ExpectedVersion, FencingToken, Listing, MetadataStore, ObjectKey, ObjectKind, StoreError,
    StoredObject, Version, WatchEvent,
};

/// The store as one leadership term may write it.
pub struct FencedStore {
    inner: Arc<dyn MetadataStore>,
    token: FencingToken,
}

impl FencedStore {
    /// Writes through `inner` carrying `token`.
    pub fn new(inner: Arc<dyn MetadataStore>, token: FencingToken) -> FencedStore {
        FencedStore { inner, token }
    }

    /// The token every write carries.
    pub fn token(&self) -> &FencingToken {
        &self.token
    }
}

impl MetadataStore for FencedStore {
    fn get(&self, kind: ObjectKind, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        self.inner.get(kind, key)
    }

    fn list(&self, kind: ObjectKind) -> Result<Listing, StoreError> {
        self.inner.list(kind)
    }

    fn put(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        value: &[u8],
        expected: ExpectedVersion,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError> {
        self.inner.put(kind, key, value, expected, Some(fence.unwrap_or(&self.token)))
    }

    fn delete(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        version: Version,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError> {
        self.inner.delete(kind, key, version, Some(fence.unwrap_or(&self.token)))
    }

    fn watch(
        &self,
        kinds: &[ObjectKind],
        from: Version,
    ) -> Result<Receiver<WatchEvent>, StoreError> {
        self.inner.watch(kinds, from)
    }
}
