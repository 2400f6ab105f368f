//! The plugins' key-value store on one node: one namespace per (tenant, plugin), entries with
//! optional expiry, bounded in entry count. Keys and values are checked by the caller.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::MAX_ENTRIES;
use crate::plugins::bindings::HostError;

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

type Namespace = Mutex<HashMap<String, Entry>>;

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
    ) -> Result<Option<Vec<u8>>, HostError> {
        let namespace = self.namespace(tenant, plugin);
        let mut entries = namespace.lock();
        let now = Instant::now();
        match entries.get(key) {
            Some(entry) if entry.live(now) => Ok(Some(entry.value.clone())),
            Some(_) => {
                entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Sets `key`, expiring after `ttl_ms` when given.
    pub fn set(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), HostError> {
        let now = Instant::now();
        let expires = ttl_ms.map(|ttl| now + std::time::Duration::from_millis(ttl));
        let namespace = self.namespace(tenant, plugin);
        let mut entries = namespace.lock();
        if !entries.contains_key(key) && entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| entry.live(now));
            if entries.len() >= MAX_ENTRIES {
                return Err(HostError::TooLarge);
            }
        }
        entries.insert(key.to_owned(), Entry { value, expires });
        Ok(())
    }

    /// Deletes `key`; true if it was live.
    pub fn delete(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
    ) -> Result<bool, HostError> {
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
    ) -> Result<i64, HostError> {
        let now = Instant::now();
        let namespace = self.namespace(tenant, plugin);
        let mut entries = namespace.lock();
        let (current, expires) = match entries.get(key) {
            Some(entry) if entry.live(now) => {
                let number = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| HostError::Invalid("the value is not an integer".to_owned()))?;
                (number, entry.expires)
            }
            _ => {
                if entries.len() >= MAX_ENTRIES && !entries.contains_key(key) {
                    return Err(HostError::TooLarge);
                }
                (0, None)
            }
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| HostError::Invalid("integer overflow".to_owned()))?;
        entries.insert(
            key.to_owned(),
            Entry {
                value: next.to_string().into_bytes(),
                expires,
            },
        );
        Ok(next)
    }
}
