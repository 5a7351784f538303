//! A [`MetadataStore`] that times every write into [`super::METRICS`]; reads and watches pass
//! through untimed (the cache's watch is the SC's only hot reader).

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::METRICS;
use crate::store::{
    ExpectedVersion, FencingToken, Listing, MetadataStore, ObjectKey, ObjectKind, StoreError,
    StoredObject, Version, WatchEvent,
};

/// The store with its writes measured.
pub struct MeasuredStore {
    inner: Arc<dyn MetadataStore>,
}

impl MeasuredStore {
    /// Measures the writes of `inner`.
    pub fn new(inner: Arc<dyn MetadataStore>) -> MeasuredStore {
        MeasuredStore { inner }
    }
}

fn timed<T>(write: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = write();
    METRICS.record_write(started.elapsed(), result.is_err());
    result
}

impl MetadataStore for MeasuredStore {
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
        timed(|| self.inner.put(kind, key, value, expected, fence))
    }

    fn delete(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        version: Version,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError> {
        timed(|| self.inner.delete(kind, key, version, fence))
    }

    fn watch(
        &self,
        kinds: &[ObjectKind],
        from: Version,
    ) -> Result<Receiver<WatchEvent>, StoreError> {
        self.inner.watch(kinds, from)
    }
}
