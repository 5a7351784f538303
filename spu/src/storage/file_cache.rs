//! A small per-core LRU of open read handles of sealed segment files, bounding open file
//! descriptors: a core hosting thousands of replicas keeps at most `capacity` sealed files open
//! (plus the ones readers still hold). Handles are `Rc<File>`: a reader that took one keeps it
//! valid even after eviction or after the segment is deleted (unlink-after-open semantics).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::storage::error::{IoContext, StorageResult};

/// Default number of sealed files kept open per core.
pub const SEGMENT_FILES_OPEN_MAX: usize = 64;

/// Shared (per core) cache of open sealed segment files. Cloning shares the cache.
#[derive(Clone)]
pub struct SegmentFileCache {
    inner: Rc<RefCell<CacheInner>>,
}

struct CacheInner {
    capacity: usize,
    entries: VecDeque<(PathBuf, Rc<File>)>,
    opens_total: u64,
}

impl Default for SegmentFileCache {
    fn default() -> Self {
        SegmentFileCache::new(SEGMENT_FILES_OPEN_MAX)
    }
}

impl SegmentFileCache {
    /// A cache holding at most `capacity` (at least 1) open files.
    pub fn new(capacity: usize) -> SegmentFileCache {
        let inner =
            CacheInner { capacity: capacity.max(1), entries: VecDeque::new(), opens_total: 0 };
        SegmentFileCache { inner: Rc::new(RefCell::new(inner)) }
    }

    /// The open handle of `path`, opening it (and evicting the least recently used) if needed.
    pub fn get_or_open(&self, path: &Path) -> StorageResult<Rc<File>> {
        let mut inner = self.inner.borrow_mut();
        if let Some(index) = inner.entries.iter().position(|(cached, _)| cached == path) {
            let entry = inner.entries.remove(index);
            if let Some(entry) = entry {
                let file = Rc::clone(&entry.1);
                inner.entries.push_front(entry);
                return Ok(file);
            }
        }
        let file = Rc::new(File::open(path).at(path)?);
        inner.opens_total += 1;
        inner.entries.push_front((path.to_path_buf(), Rc::clone(&file)));
        while inner.entries.len() > inner.capacity {
            inner.entries.pop_back();
        }
        Ok(file)
    }

    /// Puts an already open handle in the cache (a freshly sealed segment).
    pub fn insert(&self, path: &Path, file: Rc<File>) {
        self.remove(path);
        let mut inner = self.inner.borrow_mut();
        inner.entries.push_front((path.to_path_buf(), file));
        while inner.entries.len() > inner.capacity {
            inner.entries.pop_back();
        }
    }

    /// Forgets `path` (segment deleted or truncated away).
    pub fn remove(&self, path: &Path) {
        self.inner.borrow_mut().entries.retain(|(cached, _)| cached != path);
    }

    /// Files currently held by the cache.
    pub fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files opened by the cache so far (a reopen after eviction counts again).
    pub fn opens_total(&self) -> u64 {
        self.inner.borrow().opens_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_survives_unlink() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("{i}.log"))).collect();
        for path in &paths {
            std::fs::write(path, b"data").unwrap();
        }
        let cache = SegmentFileCache::new(2);
        let first = cache.get_or_open(&paths[0]).unwrap();
        cache.get_or_open(&paths[1]).unwrap();
        cache.get_or_open(&paths[0]).unwrap();
        cache.get_or_open(&paths[2]).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.opens_total(), 3);
        cache.get_or_open(&paths[1]).unwrap();
        assert_eq!(cache.opens_total(), 4, "paths[1] was evicted and reopened");
        std::fs::remove_file(&paths[0]).unwrap();
        let mut bytes = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&*first, &mut bytes, 0).unwrap();
        assert_eq!(&bytes, b"data");
    }
}
