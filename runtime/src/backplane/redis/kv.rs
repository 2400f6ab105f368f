//! The plugins' key-value store in Redis, shared by every node. Each (tenant, plugin)
//! namespace keeps its entries beside an expiry index, a meta hash (versions, sizes, bytes
//! held) and a key list; the scripts in `scripts` keep them in step and enforce the same
//! bounds as the memory store.

use std::sync::Arc;

use async_trait::async_trait;

use super::scripts;
use super::shared::Shared;
use crate::kv::{ENTRY_COST, Expected, KeyPage, KvError, MAX_ENTRIES, SharedKv, Versioned};

/// Plugin key-value entries kept in Redis.
#[derive(Debug)]
pub struct RedisKv {
    shared: Arc<Shared>,
}

/// The names of one entry's structures, in the order the scripts take them.
struct Names {
    entry: String,
    index: String,
    meta: String,
    keys: String,
}

impl Names {
    fn all(&self) -> [&str; 4] {
        [&self.entry, &self.index, &self.meta, &self.keys]
    }
}

impl RedisKv {
    /// A store on the backplane's connection.
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        RedisKv { shared }
    }

    fn names(&self, tenant: &str, plugin: &str, key: &str) -> Names {
        let keys = &self.shared.keys;
        Names {
            entry: keys.kv_entry(tenant, plugin, key),
            index: keys.kv_index(tenant, plugin),
            meta: keys.kv_meta(tenant, plugin),
            keys: keys.kv_keys(tenant, plugin),
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> KvError {
    tracing::warn!(%error, "plugin key-value store unavailable");
    KvError::Unavailable
}

#[async_trait]
impl SharedKv for RedisKv {
    async fn get(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
    ) -> Result<Option<Versioned>, KvError> {
        let names = self.names(tenant, plugin, key);
        let found: Option<(Vec<u8>, u64)> = self
            .shared
            .link
            .invoke(&scripts::KV_GET, &names.all(), &[key])
            .await
            .map_err(unavailable)?;
        Ok(found.map(|(value, version)| Versioned { value, version }))
    }

    async fn write(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        expected: Expected,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        max_bytes: usize,
    ) -> Result<Option<u64>, KvError> {
        let names = self.names(tenant, plugin, key);
        let expected = match expected {
            Expected::Any => "any".to_owned(),
            Expected::Absent => "absent".to_owned(),
            Expected::Version(version) => version.to_string(),
        };
        let outcome: i64 = self
            .shared
            .link
            .invoke_bytes(
                &scripts::KV_WRITE,
                &names.all(),
                &[
                    &value,
                    ttl_ms.unwrap_or(0).to_string().as_bytes(),
                    MAX_ENTRIES.to_string().as_bytes(),
                    max_bytes.to_string().as_bytes(),
                    expected.as_bytes(),
                    ENTRY_COST.to_string().as_bytes(),
                    key.as_bytes(),
                ],
            )
            .await
            .map_err(unavailable)?;
        match outcome {
            -2 => Err(KvError::TooLarge),
            version if version > 0 => Ok(Some(version.unsigned_abs())),
            _ => Ok(None),
        }
    }

    async fn delete(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<bool, KvError> {
        let names = self.names(tenant, plugin, key);
        let expected = expected
            .map(|version| version.to_string())
            .unwrap_or_default();
        let deleted: i64 = self
            .shared
            .link
            .invoke(&scripts::KV_DELETE, &names.all(), &[&expected, key])
            .await
            .map_err(unavailable)?;
        Ok(deleted > 0)
    }

    async fn incr(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        delta: i64,
        max_bytes: usize,
    ) -> Result<i64, KvError> {
        let names = self.names(tenant, plugin, key);
        let (ok, value): (i64, redis::Value) = self
            .shared
            .link
            .invoke(
                &scripts::KV_INCR,
                &names.all(),
                &[
                    &delta.to_string(),
                    &MAX_ENTRIES.to_string(),
                    &max_bytes.to_string(),
                    &ENTRY_COST.to_string(),
                    key,
                ],
            )
            .await
            .map_err(unavailable)?;
        match (ok, value) {
            (1, redis::Value::Int(value)) => Ok(value),
            (_, value) if matches!(redis::from_redis_value_ref::<String>(&value), Ok(text) if text == "full") => {
                Err(KvError::TooLarge)
            }
            _ => Err(KvError::Invalid(
                "the value is not an integer, or the sum overflows".to_owned(),
            )),
        }
    }

    async fn list(
        &self,
        tenant: &str,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, KvError> {
        let names = self.names(tenant, plugin, "");
        let lowest = match after {
            Some(after) if after >= prefix => format!("({after}").into_bytes(),
            _ => format!("[{prefix}").into_bytes(),
        };
        // No key holds the byte 0xff (keys are UTF-8), so every key starting with the prefix
        // sorts below the prefix followed by it.
        let highest = if prefix.is_empty() {
            b"+".to_vec()
        } else {
            let mut highest = format!("[{prefix}").into_bytes();
            highest.push(0xff);
            highest
        };
        let mut keys: Vec<String> = self
            .shared
            .link
            .invoke_bytes(
                &scripts::KV_LIST,
                &names.all(),
                &[&lowest, &highest, limit.to_string().as_bytes()],
            )
            .await
            .map_err(unavailable)?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok(KeyPage { keys, more })
    }

    async fn clear_tenant(&self, tenant: &str) -> Result<usize, KvError> {
        let pattern = self.shared.keys.kv_tenant_pattern(tenant);
        super::scan::unlink_matching(&self.shared, &pattern)
            .await
            .map_err(unavailable)
    }
}
