//! The desired state (plugin records and binaries, node reports) in Redis, shared by every
//! node. All of it shares one hash tag (`keys::Keys::state_records`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use super::scripts;
use super::shared::Shared;
use crate::clock::unix_millis as now_ms;
use crate::state::{
    BLOB_GRACE_MS, NodeReport, PluginRecord, REPORT_TTL_MS, Snapshot, StateStore, StoreError,
    TenantRecord,
};

/// The desired state kept in Redis.
#[derive(Debug)]
pub struct RedisState {
    shared: Arc<Shared>,
}

impl RedisState {
    /// A store on the backplane's connection.
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        RedisState { shared }
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisState {
    /// Writes `record` (at `revision`) to `field` of `hash` if the stored one is at
    /// `revision - 1` (0: none), and counts the change.
    async fn compare_and_set(
        &self,
        hash: &str,
        field: &str,
        revision: u64,
        record: &impl serde::Serialize,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let expected = revision.saturating_sub(1).to_string();
        let written: i64 = self
            .shared
            .link
            .invoke(
                &scripts::STATE_WRITE,
                &[hash, &self.shared.keys.state_revision()],
                &[field, &expected, &json],
            )
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }
}

/// A record's field in the records hash.
fn field(tenant: &str, plugin: &str) -> String {
    format!("{tenant}\t{plugin}")
}

#[async_trait]
impl StateStore for RedisState {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let keys = &self.shared.keys;
        let revision: Option<u64> = self
            .shared
            .link
            .query(redis::cmd("GET").arg(keys.state_revision()))
            .await
            .map_err(unavailable)?;
        Ok(revision.unwrap_or(0))
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let keys = &self.shared.keys;
        // One MULTI so the revision and the records are of the same moment.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(keys.state_revision())
            .cmd("HGETALL")
            .arg(keys.state_records())
            .cmd("HGETALL")
            .arg(keys.state_tenants());
        let (revision, fields, tenant_fields): (
            Option<u64>,
            BTreeMap<String, String>,
            BTreeMap<String, String>,
        ) = self
            .shared
            .link
            .query_pipe_values(&pipe)
            .await
            .map_err(unavailable)?;
        let mut plugins = BTreeMap::new();
        for (name, json) in fields {
            let Some((tenant, plugin)) = name.split_once('\t') else {
                return Err(StoreError::Corrupt(format!("record field `{name}`")));
            };
            let record: PluginRecord = serde_json::from_str(&json)
                .map_err(|error| StoreError::Corrupt(format!("record `{name}`: {error}")))?;
            plugins.insert((tenant.to_owned(), plugin.to_owned()), record);
        }
        let mut tenants = BTreeMap::new();
        for (name, json) in tenant_fields {
            let record: TenantRecord = serde_json::from_str(&json)
                .map_err(|error| StoreError::Corrupt(format!("tenant `{name}`: {error}")))?;
            tenants.insert(name, record);
        }
        Ok(Snapshot {
            revision: revision.unwrap_or(0),
            plugins,
            tenants,
        })
    }

    async fn put_blob(&self, blob: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let keys = &self.shared.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys.state_blob(blob))
            .arg(bytes)
            .ignore()
            .cmd("ZADD")
            .arg(keys.state_blobs())
            .arg(now_ms())
            .arg(blob)
            .ignore();
        self.shared
            .link
            .query_pipe(&pipe)
            .await
            .map_err(unavailable)
    }

    async fn blob(&self, blob: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = &self.shared.keys;
        self.shared
            .link
            .query(redis::cmd("GET").arg(keys.state_blob(blob)))
            .await
            .map_err(unavailable)
    }

    async fn write(
        &self,
        tenant: &str,
        plugin: &str,
        record: &PluginRecord,
    ) -> Result<bool, StoreError> {
        let hash = self.shared.keys.state_records();
        self.compare_and_set(&hash, &field(tenant, plugin), record.revision, record)
            .await
    }

    async fn write_tenant(&self, tenant: &str, record: &TenantRecord) -> Result<bool, StoreError> {
        let hash = self.shared.keys.state_tenants();
        self.compare_and_set(&hash, tenant, record.revision, record)
            .await
    }

    async fn forget(&self, tenant: &str, plugin: &str, revision: u64) -> Result<bool, StoreError> {
        let keys = &self.shared.keys;
        let forgotten: i64 = self
            .shared
            .link
            .invoke(
                &scripts::STATE_FORGET,
                &[&keys.state_records(), &keys.state_revision()],
                &[&field(tenant, plugin), &revision.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(forgotten == 1)
    }

    async fn collect(&self, keep: &BTreeSet<String>) -> Result<usize, StoreError> {
        let keys = &self.shared.keys;
        let before = now_ms().saturating_sub(BLOB_GRACE_MS);
        let stored: Vec<String> = self
            .shared
            .link
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(keys.state_blobs())
                    .arg("-inf")
                    .arg(before),
            )
            .await
            .map_err(unavailable)?;
        let unnamed: Vec<&String> = stored.iter().filter(|blob| !keep.contains(*blob)).collect();
        if unnamed.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for blob in &unnamed {
            pipe.cmd("DEL").arg(keys.state_blob(blob)).ignore();
            pipe.cmd("ZREM").arg(keys.state_blobs()).arg(*blob).ignore();
        }
        self.shared
            .link
            .query_pipe(&pipe)
            .await
            .map_err(unavailable)?;
        Ok(unnamed.len())
    }

    async fn report(&self, report: &NodeReport) -> Result<(), StoreError> {
        let keys = &self.shared.keys;
        let json = serde_json::to_string(report)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.shared
            .link
            .query::<()>(
                redis::cmd("HSET")
                    .arg(keys.state_reports())
                    .arg(&report.node)
                    .arg(json),
            )
            .await
            .map_err(unavailable)
    }

    async fn reports(&self) -> Result<Vec<NodeReport>, StoreError> {
        let keys = &self.shared.keys;
        let all: BTreeMap<String, String> = self
            .shared
            .link
            .query(redis::cmd("HGETALL").arg(keys.state_reports()))
            .await
            .map_err(unavailable)?;
        let fresh_after = now_ms().saturating_sub(REPORT_TTL_MS);
        let mut reports = Vec::new();
        let mut stale = Vec::new();
        for (node, json) in all {
            match serde_json::from_str::<NodeReport>(&json) {
                Ok(report) if report.at_ms >= fresh_after => reports.push(report),
                // A node silent that long is gone (or partitioned): its field would only grow
                // the hash.
                _ => stale.push(node),
            }
        }
        if !stale.is_empty() {
            let _ = self
                .shared
                .link
                .query::<()>(redis::cmd("HDEL").arg(keys.state_reports()).arg(&stale))
                .await;
        }
        Ok(reports)
    }

    async fn withdraw(&self, node: &str) {
        let keys = &self.shared.keys;
        let _ = self
            .shared
            .link
            .query::<()>(redis::cmd("HDEL").arg(keys.state_reports()).arg(node))
            .await;
    }
}
