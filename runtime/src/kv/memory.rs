//! The plugins' key-value store on one node: one namespace per (tenant, plugin), entries with
//! optional expiry and a version, bounded in entry count and in bytes. Keys and values are
//! checked by the caller.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Expected, KeyPage, KvError, MAX_ENTRIES, Versioned, parse_integer};

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    version: u64,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|expires| now < expires)
    }
}

/// What an entry costs beside its key and value: the map's slot and the value's allocation.
pub const ENTRY_COST: usize = 96;

fn cost(key: &str, value_len: usize) -> usize {
    key.len() + value_len + ENTRY_COST
}

/// When a written entry expires.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    /// After this long, or never.
    After(Option<u64>),
    /// When the entry it replaces would have (`incr`).
    Keep,
}

#[derive(Debug, Default)]
struct Entries {
    map: BTreeMap<String, Entry>,
    /// What `map` holds, by `cost`.
    bytes: usize,
    /// The last version given; versions only grow, so one never comes back after a delete.
    version: u64,
}

impl Entries {
    fn live(&self, key: &str, now: Instant) -> Option<&Entry> {
        self.map.get(key).filter(|entry| entry.live(now))
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let removed = self.map.remove(key)?;
        self.bytes -= cost(key, removed.value.len());
        Some(removed)
    }

    fn drop_expired(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|key, entry| {
            let live = entry.live(now);
            if !live {
                freed += cost(key, entry.value.len());
            }
            live
        });
        self.bytes -= freed;
    }

    fn fits(&self, key: &str, value_len: usize, max_bytes: usize) -> bool {
        let replaced = self
            .map
            .get(key)
            .map_or(0, |old| cost(key, old.value.len()));
        let count_ok = replaced > 0 || self.map.len() < MAX_ENTRIES;
        count_ok && self.bytes - replaced + cost(key, value_len) <= max_bytes
    }

    /// Writes `value` at `key` if the entry there is as `expect`ed and the namespace stays
    /// within `max_bytes` and `MAX_ENTRIES` (expired entries are dropped first to make room).
    /// The new version, or `None` when the entry was not as expected.
    fn write(
        &mut self,
        key: &str,
        expect: Expected,
        value: Vec<u8>,
        expiry: Expiry,
        max_bytes: usize,
        now: Instant,
    ) -> Result<Option<u64>, KvError> {
        let current = self.live(key, now);
        let matches = match expect {
            Expected::Any => true,
            Expected::Absent => current.is_none(),
            Expected::Version(version) => current.is_some_and(|entry| entry.version == version),
        };
        if !matches {
            return Ok(None);
        }
        let expires = match expiry {
            Expiry::After(ttl) => ttl.map(|ttl| now + std::time::Duration::from_millis(ttl)),
            Expiry::Keep => current.and_then(|entry| entry.expires),
        };
        if !self.fits(key, value.len(), max_bytes) {
            self.drop_expired(now);
            if !self.fits(key, value.len(), max_bytes) {
                return Err(KvError::TooLarge);
            }
        }
        self.remove(key);
        self.version += 1;
        let version = self.version;
        self.bytes += cost(key, value.len());
        self.map.insert(
            key.to_owned(),
            Entry {
                value,
                expires,
                version,
            },
        );
        Ok(Some(version))
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

    /// Drops every namespace of a tenant; how many there were.
    pub fn clear_tenant(&self, tenant: &str) -> usize {
        let before = self.namespaces.len();
        self.namespaces.retain(|(owner, _), _| &**owner != tenant);
        before - self.namespaces.len()
    }

    /// The live value of `key` and its version.
    pub fn get(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
    ) -> Result<Option<Versioned>, KvError> {
        let namespace = self.namespace(tenant, plugin);
        let mut entries = namespace.lock();
        let now = Instant::now();
        match entries.map.get(key) {
            Some(entry) if entry.live(now) => Ok(Some(Versioned {
                value: entry.value.clone(),
                version: entry.version,
            })),
            Some(_) => {
                entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Sets `key`, expiring after `ttl_ms` when given; `too-large` when the namespace would
    /// hold more than `max_bytes`. Returns the new version.
    pub fn set(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        max_bytes: usize,
    ) -> Result<u64, KvError> {
        let namespace = self.namespace(tenant, plugin);
        let written = namespace.lock().write(
            key,
            Expected::Any,
            value,
            Expiry::After(ttl_ms),
            max_bytes,
            Instant::now(),
        )?;
        Ok(written.unwrap_or_default())
    }

    /// Sets `key` only if it is at version `expected` (`None`: absent). The new version, or
    /// `None` when it was not.
    #[allow(clippy::too_many_arguments, reason = "one write's whole description")]
    pub fn compare_and_set(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        max_bytes: usize,
    ) -> Result<Option<u64>, KvError> {
        let expect = expected.map_or(Expected::Absent, Expected::Version);
        let namespace = self.namespace(tenant, plugin);
        namespace.lock().write(
            key,
            expect,
            value,
            Expiry::After(ttl_ms),
            max_bytes,
            Instant::now(),
        )
    }

    /// Bytes a namespace holds (keys, values and bookkeeping).
    pub fn bytes(&self, tenant: &Arc<str>, plugin: &Arc<str>) -> usize {
        self.namespaces
            .get(&(tenant.clone(), plugin.clone()))
            .map_or(0, |namespace| namespace.lock().bytes)
    }

    /// Deletes `key` if it is live and, when `expected` is given, at that version; true if it
    /// was deleted.
    pub fn delete(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        expected: Option<u64>,
    ) -> Result<bool, KvError> {
        let namespace = self.namespace(tenant, plugin);
        let mut entries = namespace.lock();
        let now = Instant::now();
        let Some(entry) = entries.map.get(key) else {
            return Ok(false);
        };
        let live = entry.live(now);
        if live && expected.is_some_and(|version| version != entry.version) {
            return Ok(false);
        }
        entries.remove(key);
        Ok(live)
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
        let current = match entries.live(key, now) {
            Some(entry) => parse_integer(&entry.value)?,
            None => 0,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Invalid("integer overflow".to_owned()))?;
        let value = next.to_string().into_bytes();
        entries.write(key, Expected::Any, value, Expiry::Keep, max_bytes, now)?;
        Ok(next)
    }

    /// Live keys that start with `prefix`, after `after`, at most `limit` of them.
    pub fn list(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, KvError> {
        let namespace = self.namespace(tenant, plugin);
        let entries = namespace.lock();
        let now = Instant::now();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut keys = Vec::new();
        let mut more = false;
        let matching = entries
            .map
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, entry)| entry.live(now));
        for (key, _) in matching {
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(key.clone());
        }
        Ok(KeyPage { keys, more })
    }
}

#[cfg(test)]
mod tests;
