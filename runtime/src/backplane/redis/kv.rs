//! The plugins' key-value store in Redis, shared by every node. Each (tenant, plugin)
//! namespace has an index of its keys by expiry, which bounds how many entries it holds.

use std::sync::Arc;

use async_trait::async_trait;

use super::scripts;
use super::shared::Shared;
use crate::kv::{KvError, MAX_ENTRIES, SharedKv};

/// Plugin key-value entries kept in Redis.
#[derive(Debug)]
pub struct RedisKv {
    shared: Arc<Shared>,
}

impl RedisKv {
    /// A store on the backplane's connection.
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        RedisKv { shared }
    }
}

fn unavailable(error: impl std::fmt::Display) -> KvError {
    tracing::warn!(%error, "plugin key-value store unavailable");
    KvError::Unavailable
}

#[async_trait]
impl SharedKv for RedisKv {
    async fn get(&self, tenant: &str, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let entry = self.shared.keys.kv_entry(tenant, plugin, key);
        self.shared
            .link
            .query(redis::cmd("GET").arg(entry))
            .await
            .map_err(unavailable)
    }

    async fn set(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let keys = &self.shared.keys;
        let entry = keys.kv_entry(tenant, plugin, key);
        let index = keys.kv_index(tenant, plugin);
        let stored: i64 = self
            .shared
            .link
            .invoke_bytes(
                &scripts::KV_SET,
                &[&entry, &index],
                &[
                    &value,
                    ttl_ms.unwrap_or(0).to_string().as_bytes(),
                    MAX_ENTRIES.to_string().as_bytes(),
                ],
            )
            .await
            .map_err(unavailable)?;
        if stored == 1 {
            Ok(())
        } else {
            Err(KvError::TooLarge)
        }
    }

    async fn delete(&self, tenant: &str, plugin: &str, key: &str) -> Result<bool, KvError> {
        let keys = &self.shared.keys;
        let entry = keys.kv_entry(tenant, plugin, key);
        let index = keys.kv_index(tenant, plugin);
        let deleted: i64 = self
            .shared
            .link
            .invoke(&scripts::KV_DELETE, &[&entry, &index], &[])
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
    ) -> Result<i64, KvError> {
        let keys = &self.shared.keys;
        let entry = keys.kv_entry(tenant, plugin, key);
        let index = keys.kv_index(tenant, plugin);
        let (ok, value): (i64, redis::Value) = self
            .shared
            .link
            .invoke(
                &scripts::KV_INCR,
                &[&entry, &index],
                &[&delta.to_string(), &MAX_ENTRIES.to_string()],
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
}
