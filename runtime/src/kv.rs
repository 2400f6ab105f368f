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

/// Longest key (and list prefix) in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Entries one namespace may hold.
pub const MAX_ENTRIES: usize = 100_000;
/// Most keys one `list` answers.
pub const MAX_LIST_PAGE: u32 = 100;
pub use memory::ENTRY_COST;

/// A live entry and the version its last write gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// Unique within the namespace; every write gives a new, higher one.
    pub version: u64,
}

/// One page of keys, in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<String>,
    /// More keys match after the last one.
    pub more: bool,
}

/// The decimal integer an entry holds, for `incr`.
fn parse_integer(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| KvError::Invalid("the value is not an integer".to_owned()))
}

/// A key-value store shared by every node. Keys and values arrive already checked; a write
/// refuses to make the namespace hold more than `max_bytes` (by [`ENTRY_COST`] accounting) or
/// [`MAX_ENTRIES`] entries, exactly as the memory store does.
#[async_trait]
pub trait SharedKv: Send + Sync + std::fmt::Debug {
    /// The live value of `key` and its version.
    async fn get(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
    ) -> Result<Option<Versioned>, KvError>;
    /// Writes `key` if it is at `expected` (`Expected::Any`: whatever it holds); the new
    /// version, or `None` when it was not.
    #[allow(clippy::too_many_arguments, reason = "one write's whole description")]
    async fn write(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        expected: Expected,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        max_bytes: usize,
    ) -> Result<Option<u64>, KvError>;
    /// Deletes `key` (only at version `expected` when given); true if a live entry was.
    async fn delete(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<bool, KvError>;
    /// Adds `delta` to the decimal integer at `key` (0 when absent); keeps its expiry.
    async fn incr(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        delta: i64,
        max_bytes: usize,
    ) -> Result<i64, KvError>;
    /// Live keys starting with `prefix`, after `after`, at most `limit`.
    async fn list(
        &self,
        tenant: &str,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, KvError>;
    /// Deletes every namespace of a deleted tenant; how many stored keys went.
    async fn clear_tenant(&self, tenant: &str) -> Result<usize, KvError>;
}

/// What a shared store's write expects of the entry it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Anything.
    Any,
    /// No live entry.
    Absent,
    /// A live entry at this version.
    Version(u64),
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

fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::TooLarge);
    }
    Ok(())
}

impl KvStore {
    /// From now on, keeps every entry in `shared` (set once, before plugins run).
    pub fn share(&self, shared: Arc<dyn SharedKv>) {
        let _ = self.shared.set(shared);
    }

    /// The live value of `key` and its version.
    pub async fn get(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
    ) -> Result<Option<Versioned>, KvError> {
        check_key(key)?;
        match self.shared.get() {
            Some(shared) => shared.get(tenant, plugin, key).await,
            None => self.memory.get(tenant, plugin, key),
        }
    }

    /// Sets `key`, expiring after `ttl_ms` when given; the plugin's namespace holds at most
    /// `max_bytes`.
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
        check_value(&value)?;
        match self.shared.get() {
            Some(shared) => shared
                .write(tenant, plugin, key, Expected::Any, value, ttl_ms, max_bytes)
                .await
                .map(drop),
            None => self
                .memory
                .set(tenant, plugin, key, value, ttl_ms, max_bytes)
                .map(drop),
        }
    }

    /// Sets `key` only if it is at version `expected` (`None`: absent); the new version, or
    /// `None` when it was not.
    #[allow(clippy::too_many_arguments, reason = "one write's whole description")]
    pub async fn compare_and_set(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        max_bytes: usize,
    ) -> Result<Option<u64>, KvError> {
        check_key(key)?;
        check_value(&value)?;
        match self.shared.get() {
            Some(shared) => {
                let expected = expected.map_or(Expected::Absent, Expected::Version);
                shared
                    .write(tenant, plugin, key, expected, value, ttl_ms, max_bytes)
                    .await
            }
            None => self
                .memory
                .compare_and_set(tenant, plugin, key, expected, value, ttl_ms, max_bytes),
        }
    }

    /// Deletes `key` (only at version `expected` when given); true if it was deleted.
    pub async fn delete(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        key: &str,
        expected: Option<u64>,
    ) -> Result<bool, KvError> {
        check_key(key)?;
        match self.shared.get() {
            Some(shared) => shared.delete(tenant, plugin, key, expected).await,
            None => self.memory.delete(tenant, plugin, key, expected),
        }
    }

    /// Adds `delta` to the decimal integer at `key` (0 when absent); keeps its expiry. The
    /// plugin's namespace holds at most `max_bytes`.
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
            Some(shared) => shared.incr(tenant, plugin, key, delta, max_bytes).await,
            None => self.memory.incr(tenant, plugin, key, delta, max_bytes),
        }
    }

    /// Deletes every plugin namespace of a deleted tenant; how many namespaces (memory) or
    /// stored keys (shared store) went.
    pub async fn clear_tenant(&self, tenant: &str) -> Result<usize, KvError> {
        match self.shared.get() {
            Some(shared) => shared.clear_tenant(tenant).await,
            None => Ok(self.memory.clear_tenant(tenant)),
        }
    }

    /// Live keys that start with `prefix`, in byte order, after `after`, at most `limit`
    /// (1 to [`MAX_LIST_PAGE`]).
    pub async fn list(
        &self,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, KvError> {
        if prefix.len() > MAX_KEY_BYTES || after.is_some_and(|after| after.len() > MAX_KEY_BYTES) {
            return Err(KvError::Invalid(format!(
                "prefixes and cursors are at most {MAX_KEY_BYTES} bytes"
            )));
        }
        if !(1..=MAX_LIST_PAGE).contains(&limit) {
            return Err(KvError::Invalid(format!(
                "a page holds 1..{MAX_LIST_PAGE} keys"
            )));
        }
        let limit = limit as usize;
        match self.shared.get() {
            Some(shared) => shared.list(tenant, plugin, prefix, after, limit).await,
            None => self.memory.list(tenant, plugin, prefix, after, limit),
        }
    }
}
