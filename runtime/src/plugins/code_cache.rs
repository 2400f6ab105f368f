//! Compiled machine code of plugin functions, kept in memory and keyed by Cranelift's
//! incremental-compilation keys (a hash of a function's IR and the compiler's settings).
//!
//! A new build of a plugin mostly repeats the functions of the old one (the SDK, the standard
//! library, serde, every handler that did not change): with this cache, a hot swap compiles
//! only what changed, and a plugin loaded for a second tenant compiles nothing twice.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use wasmtime::CacheStore;

/// Machine code kept at most, in bytes of cached values; the oldest entries go first.
pub const DEFAULT_CAPACITY: usize = 64 * 1024 * 1024;

/// An in-memory, size-bounded store for Cranelift's incremental compilation cache.
#[derive(Debug)]
pub struct CodeCache {
    capacity: usize,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Box<[u8]>, Box<[u8]>>,
    /// Keys in insertion order, for eviction.
    order: VecDeque<Box<[u8]>>,
    bytes: usize,
}

/// What the cache holds and how well it serves, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeCacheStats {
    /// Functions held.
    pub entries: usize,
    /// Bytes of machine code held.
    pub bytes: usize,
    /// Lookups that found a function's code.
    pub hits: u64,
    /// Lookups that did not, so the function was compiled.
    pub misses: u64,
}

impl CodeCache {
    /// An empty cache that keeps at most `capacity` bytes of code.
    pub fn new(capacity: usize) -> Self {
        CodeCache {
            capacity,
            entries: Mutex::new(Entries::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Current size and hit counts.
    pub fn stats(&self) -> CodeCacheStats {
        let entries = self.entries.lock();
        CodeCacheStats {
            entries: entries.by_key.len(),
            bytes: entries.bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

impl CacheStore for CodeCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        // A copy: the entry may be evicted while Cranelift still reads it.
        let found = self
            .entries
            .lock()
            .by_key
            .get(key)
            .map(|value| value.to_vec());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found.map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        if value.len() > self.capacity {
            return false;
        }
        let mut entries = self.entries.lock();
        if entries.by_key.contains_key(key) {
            return true;
        }
        while entries.bytes + value.len() > self.capacity {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            if let Some(evicted) = entries.by_key.remove(&oldest) {
                entries.bytes -= evicted.len();
            }
        }
        entries.bytes += value.len();
        let key: Box<[u8]> = key.into();
        entries.order.push_back(key.clone());
        entries.by_key.insert(key, value.into_boxed_slice());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_was_inserted_and_counts_hits_and_misses() {
        let cache = CodeCache::new(1024);
        assert!(cache.get(b"f").is_none());
        assert!(cache.insert(b"f", vec![1, 2, 3]));
        assert_eq!(cache.get(b"f").as_deref(), Some(&[1, 2, 3][..]));
        let stats = cache.stats();
        assert_eq!(
            (stats.entries, stats.bytes, stats.hits, stats.misses),
            (1, 3, 1, 1)
        );
    }

    #[test]
    fn evicts_the_oldest_entries_to_stay_within_capacity() {
        let cache = CodeCache::new(10);
        assert!(cache.insert(b"a", vec![0; 4]));
        assert!(cache.insert(b"b", vec![0; 4]));
        assert!(cache.insert(b"c", vec![0; 4]));
        assert!(cache.get(b"a").is_none(), "the oldest went first");
        assert!(cache.get(b"b").is_some() && cache.get(b"c").is_some());
        assert_eq!(cache.stats().bytes, 8);
        assert!(
            !cache.insert(b"huge", vec![0; 11]),
            "larger than the whole cache"
        );
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn a_repeated_insert_keeps_one_copy() {
        let cache = CodeCache::new(100);
        assert!(cache.insert(b"k", vec![7; 5]));
        assert!(cache.insert(b"k", vec![7; 5]));
        assert_eq!(cache.stats().bytes, 5);
        assert_eq!(cache.stats().entries, 1);
    }
}
