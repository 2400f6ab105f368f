//! The desired state of the cluster: the tenants made through the tenant API, and for each
//! (tenant, plugin) a record of the version that should serve and the versions kept for
//! rollback, and the plugin binaries they name, stored by their SHA-256. One node keeps it in a state directory
//! (`disk`); a cluster keeps it in Redis (`backplane::redis`), where every node reads it.

pub mod disk;
pub mod record;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use record::{MAX_HISTORY, PluginRecord, RecordError, TenantRecord, Version};

/// Why the state store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (Redis down, a disk error).
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
    /// What the store holds does not parse (a torn or foreign value).
    #[error("the state store holds an unreadable record: {0}")]
    Corrupt(String),
}

/// Every plugin record, as of one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Changes with every write of any record.
    pub revision: u64,
    /// The records by (tenant, plugin).
    pub plugins: BTreeMap<(String, String), PluginRecord>,
    /// The tenant records by name.
    pub tenants: BTreeMap<String, TenantRecord>,
}

impl Snapshot {
    /// The record of a tenant's plugin, if one was ever written.
    pub fn record(&self, tenant: &str, plugin: &str) -> Option<&PluginRecord> {
        self.plugins.get(&(tenant.to_owned(), plugin.to_owned()))
    }

    /// Every blob some record still names.
    pub fn blobs(&self) -> BTreeSet<String> {
        self.plugins
            .values()
            .flat_map(|record| record.history.iter().map(|version| version.blob.clone()))
            .collect()
    }
}

/// What one node serves of a deployed plugin, as it reports it to the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// The tenant.
    pub tenant: String,
    /// The plugin.
    pub plugin: String,
    /// The routed version's SHA-256 (of its component), `None` when none is routed.
    pub sha256: Option<String>,
    /// The routed version's declared version.
    pub version: Option<String>,
    /// `baseline` or `optimized`.
    pub tier: Option<String>,
    /// Why the desired version did not load here, if it did not.
    pub error: Option<String>,
}

/// One node's report of what it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id.
    pub node: String,
    /// When it was made (Unix milliseconds).
    pub at_ms: u64,
    /// The revision of the desired state the node last applied.
    pub revision: u64,
    /// Its deployed plugins.
    pub plugins: Vec<Served>,
}

/// Where the desired state lives.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// `disk` or `redis`, for logs and `/metrics`.
    fn kind(&self) -> &'static str;
    /// A number that changes whenever any record does (cheap: nodes poll it).
    async fn revision(&self) -> Result<u64, StoreError>;
    /// Every record.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Stores a plugin binary under `blob`, the hex SHA-256 of `bytes`.
    async fn put_blob(&self, blob: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// The binary stored under `blob`.
    async fn blob(&self, blob: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a plugin's record if the stored one is at `record.revision - 1` (0: none), so
    /// two writers never undo each other; `false` when another write came first.
    async fn write(
        &self,
        tenant: &str,
        plugin: &str,
        record: &PluginRecord,
    ) -> Result<bool, StoreError>;
    /// Writes a tenant's record if the stored one is at `record.revision - 1` (0: none);
    /// `false` when another write came first.
    async fn write_tenant(&self, tenant: &str, record: &TenantRecord) -> Result<bool, StoreError>;
    /// Removes a plugin's record if it is still at `revision` (a deleted plugin forgotten);
    /// `false` when another write came first.
    async fn forget(&self, tenant: &str, plugin: &str, revision: u64) -> Result<bool, StoreError>;
    /// Deletes the blobs no record names (any stored for longer than a minute: a deploy puts
    /// its blob before its record). Returns how many went.
    async fn collect(&self, keep: &BTreeSet<String>) -> Result<usize, StoreError>;
    /// Publishes what this node serves, for the other nodes' plugin lists.
    async fn report(&self, _report: &NodeReport) -> Result<(), StoreError> {
        Ok(())
    }
    /// The recent reports of the other nodes (a node silent for 30 s is left out).
    async fn reports(&self) -> Result<Vec<NodeReport>, StoreError> {
        Ok(Vec::new())
    }
    /// Takes this node's report out (it is leaving).
    async fn withdraw(&self, _node: &str) {}
}

/// How long a node's report stays listed without being renewed.
pub const REPORT_TTL_MS: u64 = 30_000;

/// How long an unnamed blob is kept: longer than any deploy takes between storing its blob
/// and its record.
pub const BLOB_GRACE_MS: u64 = 60_000;
