//! The plugins' key-value store on one node: one namespace per (tenant, plugin), entries with
//! optional expiry, bounded in entry count and in bytes. Keys and values are checked by the
//! caller.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{KvError, MAX_ENTRIES};

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|expires| now < expires)
    }
}

/// What an entry costs beside its key and value: the map's slot and the value's allocation.
const ENTRY_COST: usize = 96;

fn cost(key: &str, entry: &Entry) -> usize {
    key.len() + entry.value.len() + ENTRY_COST
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Entry>,
    /// What `map` holds, by `cost`.
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let removed = self.map.remove(key)?;
        self.bytes -= cost(key, &removed);
        Some(removed)
    }

    fn drop_expired(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|key, entry| {
            let live = entry.live(now);
            if !live {
                freed += cost(key, entry);
            }
            live
        });
        self.bytes -= freed;
    }

    /// Puts `entry` at `key` unless the namespace would pass `max_bytes` or `MAX_ENTRIES`
    /// (expired entries are dropped first to make room).
    fn insert(
        &mut self,
        key: &str,
        entry: Entry,
        max_bytes: usize,
        now: Instant,
    ) -> Result<(), KvError> {
        let replaced = self.map.get(key).map_or(0, |old| cost(key, old));
        let fits = |entries: &Entries| {
            let count_ok = replaced > 0 || entries.map.len() < MAX_ENTRIES;
            count_ok && entries.bytes - replaced + cost(key, &entry) <= max_bytes
        };
        if !fits(self) {
            self.drop_expired(now);
            let replaced_now = self.map.get(key).map_or(0, |old| cost(key, old));
            let count_ok = replaced_now > 0 || self.map.len() < MAX_ENTRIES;
            if !count_ok || self.bytes - replaced_now + cost(key, &entry) > max_bytes {
                return Err(KvError::TooLarge);
            }
        }
        self.remove(key);
        self.bytes += cost(key, &entry);
        self.map.insert(key.to_owned(), entry);
        Ok(())
    }
}

type Namespace = Mutex<Entries>;

/// Key-value state of every plugin on this node.
#[derive(Debug, Default)]
pub struct MemoryKv {
    namespaces: DashMap<(Arc<str>, Arc<str>), Arc<Namespace>>,
}

impl MemoryKv {
    fn namespace(&self, tenant: &Arc<str>, plugin: &Arc<str>) -> Arc<Namespace> {
        self.namespaces
            .entry((tenant.clone(), plugin.clone()))
            .or_default()
            .clone()
    }

    /// The live value of `key`.
    pub fn get(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let namespace = self.namespace(tenant, plugin);
        let mut entries = namespace.lock();
        let now = Instant::now();
        match entries.map.get(key) {
            Some(entry) if entry.live(now) => Ok(Some(entry.value.clone())),
            Some(_) => {
                entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Sets `key`, expiring after `ttl_ms` when given; `too-large` when the namespace would
    /// hold more than `max_bytes`.
    pub fn set(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        max_bytes: usize,
    ) -> Result<(), KvError> {
        let now = Instant::now();
        let expires = ttl_ms.map(|ttl| now + std::time::Duration::from_millis(ttl));
        let namespace = self.namespace(tenant, plugin);
        let mut entries = namespace.lock();
        entries.insert(key, Entry { value, expires }, max_bytes, now)
    }

    /// Bytes a namespace holds (keys, values and bookkeeping).
    pub fn bytes(&self, tenant: &Arc<str>, plugin: &Arc<str>) -> usize {
        self.namespaces
            .get(&(tenant.clone(), plugin.clone()))
            .map_or(0, |namespace| namespace.lock().bytes)
    }

    /// Deletes `key`; true if it was live.
    pub fn delete(&self, tenant: &Arc<str>, plugin: &Arc<str>, key: &str) -> Result<bool, KvError> {
        let namespace = self.namespace(tenant, plugin);
        let removed = namespace.lock().remove(key);
        Ok(removed.is_some_and(|entry| entry.live(Instant::now())))
    }

    /// Adds `delta` to the decimal integer at `key` (0 when absent); keeps its expiry.
    pub fn incr(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        delta: i64,
        max_bytes: usize,
    ) -> Result<i64, KvError> {
        let now = Instant::now();
        let namespace = self.namespace(tenant, plugin);
        let mut entries = namespace.lock();
        let (current, expires) = match entries.map.get(key) {
            Some(entry) if entry.live(now) => {
                let number = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| KvError::Invalid("the value is not an integer".to_owned()))?;
                (number, entry.expires)
            }
            _ => (0, None),
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Invalid("integer overflow".to_owned()))?;
        let value = next.to_string().into_bytes();
        entries.insert(key, Entry { value, expires }, max_bytes, now)?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests;
