//! The plugins' key-value store: one namespace per (tenant, plugin), entries with optional
//! expiry, bounded in key size, value size and entry count. In process memory on one node;
//! shared through the backplane's store (Redis) in a cluster.

pub mod memory;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

/// Why a key-value operation failed. The host API turns it into the plugin world's
/// `host-error` (`invalid`, `too-large`, `unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key, or the value at it, is not acceptable (empty or long key, not an integer).
    #[error("{0}")]
    Invalid(String),
    /// The value, or the namespace with it, would pass its bound.
    #[error("too large")]
    TooLarge,
    /// The shared store cannot be reached.
    #[error("store unavailable")]
    Unavailable,
}

/// Longest key in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Entries one namespace may hold.
pub const MAX_ENTRIES: usize = 100_000;

/// A key-value store shared by every node. Keys and values arrive already checked.
#[async_trait]
pub trait SharedKv: Send + Sync + std::fmt::Debug {
    /// The live value of `key`.
    async fn get(&self, tenant: &str, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key`, expiring after `ttl_ms` when given.
    async fn set(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError>;
    /// Deletes `key`; true if it was live.
    async fn delete(&self, tenant: &str, plugin: &str, key: &str) -> Result<bool, KvError>;
    /// Adds `delta` to the decimal integer at `key` (0 when absent); keeps its expiry.
    async fn incr(&self, tenant: &str, plugin: &str, key: &str, delta: i64)
    -> Result<i64, KvError>;
}

/// Key-value state of every plugin: this node's memory unless a shared store was attached.
#[derive(Debug, Default)]
pub struct KvStore {
    /// The store in this node's memory (unused once a shared store is attached).
    pub memory: memory::MemoryKv,
    shared: OnceLock<Arc<dyn SharedKv>>,
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::Invalid(format!(
            "keys are 1..{MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

impl KvStore {
    /// From now on, keeps every entry in `shared` (set once, before plugins run).
    pub fn share(&self, shared: Arc<dyn SharedKv>) {
        let _ = self.shared.set(shared);
    }

    /// The live value of `key`.
    pub async fn get(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        match self.shared.get() {
            Some(shared) => shared.get(tenant, plugin, key).await,
            None => self.memory.get(tenant, plugin, key),
        }
    }

    /// Sets `key`, expiring after `ttl_ms` when given. On this node's memory the plugin's
    /// namespace holds at most `max_bytes`.
    pub async fn set(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        max_bytes: usize,
    ) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::TooLarge);
        }
        match self.shared.get() {
            Some(shared) => shared.set(tenant, plugin, key, value, ttl_ms).await,
            None => self
                .memory
                .set(tenant, plugin, key, value, ttl_ms, max_bytes),
        }
    }

    /// Deletes `key`; true if it was live.
    pub async fn delete(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
    ) -> Result<bool, KvError> {
        check_key(key)?;
        match self.shared.get() {
            Some(shared) => shared.delete(tenant, plugin, key).await,
            None => self.memory.delete(tenant, plugin, key),
        }
    }

    /// Adds `delta` to the decimal integer at `key` (0 when absent); keeps its expiry. On this
    /// node's memory the plugin's namespace holds at most `max_bytes`.
    pub async fn incr(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        delta: i64,
        max_bytes: usize,
    ) -> Result<i64, KvError> {
        check_key(key)?;
        match self.shared.get() {
            Some(shared) => shared.incr(tenant, plugin, key, delta).await,
            None => self.memory.incr(tenant, plugin, key, delta, max_bytes),
        }
    }
}
