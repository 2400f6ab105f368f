//! The node's side of the desired state (`state`): deploys, deletes and rollbacks made
//! through this node are written to the store and then applied here; changes made through
//! other nodes are found by polling the store's revision and applied the same way, so every
//! node converges on one version of each plugin.
//!
//! The configured files are the seed: a plugin without a record serves its file. A deploy,
//! rollback or delete writes a record, and from then on the record decides on every node,
//! across restarts; a change of the file no longer swaps it (`Plugins::is_deployed`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};

use crate::clock::unix_millis as now_ms;
use crate::config::Config;
use crate::plugins::compile::Purpose;
use crate::plugins::pool::{LoadError, LoadedPlugin};
use crate::plugins::{Plugins, SwapError, artifact};
use crate::state::{
    NodeReport, PluginRecord, RecordError, Served, Snapshot, StateStore, StoreError, TenantRecord,
    Version,
};
use crate::tenant::{Tenant, Tenants};

pub use crate::metrics::deployments::DeployMetrics;
pub use tenants::{TenantChange, TenantError};

mod tenants;

/// How often a node asks the store whether the desired state changed.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often a node renews its report, changed or not.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How long a version that failed to load here waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Attempts at a record write that keep losing to other writers.
const WRITE_ATTEMPTS: usize = 8;

/// Why a deploy, rollback or delete was not made.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The version did not load (compile, link or validation).
    #[error(transparent)]
    Load(LoadError),
    /// The component's `describe` names another plugin.
    #[error("the component describes itself as `{found}`, not `{name}`")]
    WrongName {
        /// The name in the path.
        name: String,
        /// The name it declared.
        found: String,
    },
    /// It cannot be routed beside the tenant's other plugins, or passes a bound.
    #[error(transparent)]
    Swap(SwapError),
    /// The store cannot be reached or read.
    #[error(transparent)]
    Store(StoreError),
    /// The rollback has no target.
    #[error(transparent)]
    Record(RecordError),
    /// The tenant has neither a record nor a routed plugin of that name.
    #[error("the tenant has no plugin `{0}`")]
    UnknownPlugin(String),
    /// The record names a binary the store no longer has.
    #[error("the store has no binary {0}")]
    MissingBlob(String),
    /// The stored binary is not the one its address names.
    #[error("the stored binary {0} does not match its SHA-256")]
    BadBlob(String),
    /// Other writers changed the record at every attempt.
    #[error("the plugin's record kept changing under this write; try again")]
    Contended,
}

/// A version that did not load here, so it is not tried at every poll.
#[derive(Debug, Clone)]
struct Failure {
    blob: String,
    error: String,
    at: Instant,
}

/// This node's desired-state bookkeeping.
#[derive(Debug, Default)]
struct Applied {
    /// The store revision last applied in full.
    revision: Option<u64>,
    failures: HashMap<(String, String), Failure>,
    /// The settings of each tenant record applied here (or found not to apply), so a pass
    /// rebuilds only the tenants whose record changed.
    tenants: HashMap<String, serde_json::Value>,
    /// The tenants whose recorded settings do not apply here.
    tenant_failures: HashSet<String>,
}

/// The desired state as this node knows and applies it.
#[derive(Debug)]
pub struct Deployments {
    store: Arc<dyn StateStore>,
    /// Held while this node changes routes for the desired state (a deploy through it, or a
    /// convergence pass), so the two never undo each other.
    applying: tokio::sync::Mutex<Applied>,
    /// The records as last read or written here.
    known: ArcSwap<Snapshot>,
    /// A convergence pass succeeded since the store last failed.
    synced: AtomicBool,
    /// Unix milliseconds of the last report sent.
    reported_at: AtomicU64,
    /// The highest store revision this node has seen, by a poll or after its own write: a
    /// store whose revision is lower lost its data (even one that lost it before this node's
    /// next pass applied its own write).
    highest: AtomicU64,
    /// The bytes of the versions this node serves by record, by blob: what it puts back if
    /// the store loses its data (bounded by what the tenants may load).
    sources: parking_lot::Mutex<HashMap<String, Arc<[u8]>>>,
    /// Tenants taken out whose connections and state the node has not cleared yet.
    removed: parking_lot::Mutex<Vec<Arc<Tenant>>>,
    /// Counters for `/metrics`.
    pub metrics: DeployMetrics,
}

/// The hex SHA-256 of bytes: a blob's address.
pub fn blob_address(bytes: &[u8]) -> String {
    artifact::hex(&Sha256::digest(bytes))
}

/// A configured plugin's settings (`[tenants.plugins.config]`), matched by its file's stem;
/// a version of that name deployed through the API gets the same ones.
pub fn configured_settings(config: &Config, tenant: &str, name: &str) -> BTreeMap<String, String> {
    config
        .tenants
        .iter()
        .find(|candidate| candidate.name == tenant)
        .and_then(|candidate| {
            candidate
                .plugins
                .iter()
                .find(|plugin| plugin.path.file_stem().is_some_and(|stem| stem == name))
        })
        .map(|plugin| plugin.config.clone())
        .unwrap_or_default()
}

/// Where a deployed version says it came from (the plugin API's `path`).
fn deployed_path(name: &str) -> PathBuf {
    PathBuf::from(format!("upload:{name}"))
}

impl Deployments {
    /// Desired state kept in `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Deployments {
        Deployments {
            store,
            applying: tokio::sync::Mutex::new(Applied::default()),
            known: ArcSwap::from_pointee(Snapshot::default()),
            synced: AtomicBool::new(false),
            reported_at: AtomicU64::new(0),
            highest: AtomicU64::new(0),
            sources: parking_lot::Mutex::default(),
            removed: parking_lot::Mutex::default(),
            metrics: DeployMetrics::default(),
        }
    }

    /// `disk` or `redis`.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Whether this node applied the current desired state since the store last failed:
    /// until then `/readyz` says 503.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The records as this node last read them.
    pub fn known(&self) -> Arc<Snapshot> {
        self.known.load_full()
    }

    /// A plugin's record, read from the store now.
    pub async fn record(
        &self,
        tenant: &str,
        plugin: &str,
    ) -> Result<Option<PluginRecord>, StoreError> {
        let snapshot = self.store.snapshot().await?;
        Ok(snapshot.record(tenant, plugin).cloned())
    }

    /// The other nodes' recent reports.
    pub async fn reports(&self) -> Result<Vec<NodeReport>, StoreError> {
        self.store.reports().await
    }

    /// Loads a version of plugin `name` (not routed yet): compiled by the swap tier, linked,
    /// validated, and checked to be the plugin it claims to be.
    pub async fn load(
        plugins: &Arc<Plugins>,
        config: &Config,
        tenant: &Arc<Tenant>,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<Arc<LoadedPlugin>, DeployError> {
        let settings = configured_settings(config, &tenant.name, name);
        let purpose = Purpose::Swap(Some(name.to_owned()));
        let loaded = plugins
            .load_for(
                tenant,
                deployed_path(name),
                bytes,
                settings,
                plugins.swap_tier(),
                purpose,
            )
            .await
            .map_err(DeployError::Load)?;
        if loaded.name() != name {
            return Err(DeployError::WrongName {
                name: name.to_owned(),
                found: loaded.name().to_owned(),
            });
        }
        Ok(loaded)
    }

    /// Writes `change` of a plugin's record, retrying on the latest record when another
    /// writer came first. Returns the record written.
    async fn write(
        &self,
        tenant: &str,
        plugin: &str,
        change: impl Fn(&PluginRecord) -> Result<PluginRecord, DeployError>,
    ) -> Result<PluginRecord, DeployError> {
        for _ in 0..WRITE_ATTEMPTS {
            let snapshot = self.store.snapshot().await.map_err(DeployError::Store)?;
            let current = snapshot.record(tenant, plugin).cloned().unwrap_or_default();
            let mut next = change(&current)?;
            next.changed_at_ms = now_ms();
            if self
                .store
                .write(tenant, plugin, &next)
                .await
                .map_err(DeployError::Store)?
            {
                self.metrics.changes_written.fetch_add(1, Ordering::Relaxed);
                self.saw_own_write().await;
                return Ok(next);
            }
        }
        Err(DeployError::Contended)
    }

    /// Deploys a loaded version: its binary and record are stored (so every node and every
    /// restart serves it), then it is swapped in here. Refused, with nothing stored, when it
    /// could not be swapped in here.
    pub async fn deploy(
        &self,
        plugins: &Arc<Plugins>,
        tenant: &Tenant,
        loaded: &Arc<LoadedPlugin>,
        bytes: &[u8],
    ) -> Result<(), DeployError> {
        let mut applied = self.applying.lock().await;
        plugins
            .would_replace(tenant, loaded)
            .map_err(DeployError::Swap)?;
        let blob = blob_address(bytes);
        self.store
            .put_blob(&blob, bytes)
            .await
            .map_err(DeployError::Store)?;
        let version = Version {
            blob,
            sha256: loaded.sha256.clone(),
            version: loaded.manifest.version.clone(),
            bytes: bytes.len(),
            deployed_at_ms: now_ms(),
        };
        let seed = self.file_version(plugins, tenant, loaded.name()).await;
        let record = self
            .write(&tenant.name, loaded.name(), |current| {
                let mut current = current.clone();
                if let Some(seed) = seed.as_ref().filter(|_| current.history.is_empty()) {
                    current.history.push(seed.clone());
                }
                Ok(current.deployed(version.clone()))
            })
            .await?;
        applied
            .failures
            .remove(&(tenant.name.to_string(), loaded.name().to_owned()));
        let swapped = plugins.replace(tenant, loaded.clone());
        self.keep_source(&version.blob, bytes);
        self.remember(plugins, &tenant.name, loaded.name(), record);
        self.collect_blobs().await;
        swapped.map_err(DeployError::Swap)
    }

    /// The configured file's version a plugin serves here, stored as a blob, so the first
    /// deploy over it keeps it in the history and a rollback can return to it. `None` when
    /// the plugin has no file version routed, it is an artifact, or the file changed since it
    /// was loaded.
    async fn file_version(
        &self,
        plugins: &Plugins,
        tenant: &Tenant,
        name: &str,
    ) -> Option<Version> {
        let routed = plugins
            .routes(&tenant.name)?
            .plugins
            .iter()
            .find(|plugin| plugin.name() == name)
            .cloned()?;
        if routed.path == deployed_path(name) {
            return None;
        }
        let bytes = tokio::fs::read(&routed.path).await.ok()?;
        let blob = blob_address(&bytes);
        // An artifact names the `.wasm` it came from, not itself: only a `.wasm` is checked.
        if blob != routed.sha256 {
            return None;
        }
        self.store.put_blob(&blob, &bytes).await.ok()?;
        Some(Version {
            blob,
            sha256: routed.sha256.clone(),
            version: routed.manifest.version.clone(),
            bytes: bytes.len(),
            deployed_at_ms: routed.loaded_at_ms,
        })
    }

    /// Deletes a plugin: its record says none serves (a configured file of that name is not
    /// served either), and it is taken out here. Returns the version that was routed here.
    pub async fn delete(
        &self,
        plugins: &Arc<Plugins>,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<Arc<LoadedPlugin>>, DeployError> {
        let _applied = self.applying.lock().await;
        let routed = plugins
            .routes(&tenant.name)
            .and_then(|routes| routes.plugins.iter().find(|p| p.name() == name).cloned());
        let record = self
            .write(&tenant.name, name, |current| {
                if routed.is_none() && current.active.is_none() {
                    return Err(DeployError::UnknownPlugin(name.to_owned()));
                }
                Ok(current.deleted())
            })
            .await?;
        let removed = plugins
            .remove(&tenant.name, name)
            .map_err(DeployError::Swap)?;
        self.remember(plugins, &tenant.name, name, record);
        self.forget_deleted(tenant).await;
        self.collect_blobs().await;
        Ok(removed.or(routed))
    }

    /// Keeps at most `plugin_limits.max_plugins` deleted plugins' records (with their
    /// histories) per tenant, forgetting the longest-deleted first: what a tenant can make the
    /// store hold stays bounded however many names it deploys and deletes. A failure only
    /// leaves them for the next delete.
    async fn forget_deleted(&self, tenant: &Tenant) {
        let Ok(snapshot) = self.store.snapshot().await else {
            return;
        };
        let mut deleted: Vec<(u64, &str, u64)> = snapshot
            .plugins
            .iter()
            .filter(|((owner, _), record)| *owner == *tenant.name && record.active.is_none())
            .map(|((_, name), record)| (record.changed_at_ms, name.as_str(), record.revision))
            .collect();
        let kept = tenant.plugin_limits.max_plugins;
        if deleted.len() <= kept {
            return;
        }
        deleted.sort_unstable();
        for (_, name, revision) in &deleted[..deleted.len() - kept] {
            match self.store.forget(&tenant.name, name, *revision).await {
                Ok(true) => {
                    self.metrics.changes_written.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(tenant = %tenant.name, plugin = name, kept, "a deleted plugin's record and history forgotten (plugin_limits.max_plugins deleted ones are kept)");
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(tenant = %tenant.name, plugin = name, %error, "a deleted plugin's record not forgotten");
                    return;
                }
            }
        }
        // This node's next poll sees the new revision and drops them from what it knows.
    }

    /// Rolls a plugin back to a kept version (`to`: its blob or SHA-256; `None`: the one
    /// deployed before the serving one). The version is loaded here first: one that does not
    /// load is refused with nothing changed.
    pub async fn rollback(
        &self,
        plugins: &Arc<Plugins>,
        config: &Config,
        tenant: &Arc<Tenant>,
        name: &str,
        to: Option<&str>,
    ) -> Result<Arc<LoadedPlugin>, DeployError> {
        let mut applied = self.applying.lock().await;
        let current = self
            .record(&tenant.name, name)
            .await
            .map_err(DeployError::Store)?
            .ok_or_else(|| DeployError::UnknownPlugin(name.to_owned()))?;
        let target = current.rolled_back(to).map_err(DeployError::Record)?;
        let version = target
            .active_version()
            .cloned()
            .ok_or(DeployError::Record(RecordError::NothingEarlier))?;
        let bytes = self.fetch(&version.blob).await?;
        let loaded = Self::load(plugins, config, tenant, name, bytes.clone()).await?;
        plugins
            .would_replace(tenant, &loaded)
            .map_err(DeployError::Swap)?;
        let blob = version.blob.clone();
        let record = self
            .write(&tenant.name, name, |latest| {
                latest.rolled_back(Some(&blob)).map_err(DeployError::Record)
            })
            .await?;
        applied
            .failures
            .remove(&(tenant.name.to_string(), name.to_owned()));
        let swapped = plugins.replace(tenant, loaded.clone());
        self.keep_source(&blob, &bytes);
        self.remember(plugins, &tenant.name, name, record);
        swapped.map_err(DeployError::Swap)?;
        self.optimize_later(plugins, config, tenant, &loaded, bytes);
        Ok(loaded)
    }

    /// A stored binary, checked against its address.
    async fn fetch(&self, blob: &str) -> Result<Vec<u8>, DeployError> {
        let bytes = self
            .store
            .blob(blob)
            .await
            .map_err(DeployError::Store)?
            .ok_or_else(|| DeployError::MissingBlob(blob.to_owned()))?;
        if blob_address(&bytes) != blob {
            return Err(DeployError::BadBlob(blob.to_owned()));
        }
        Ok(bytes)
    }

    /// Starts the optimized build of a baseline version, as an upload does.
    pub fn optimize_later(
        &self,
        plugins: &Arc<Plugins>,
        config: &Config,
        tenant: &Arc<Tenant>,
        loaded: &Arc<LoadedPlugin>,
        bytes: Vec<u8>,
    ) {
        if config.tiered_swaps && !artifact::is_artifact(&bytes) {
            let settings = configured_settings(config, &tenant.name, loaded.name());
            plugins.optimize_later(tenant, loaded, bytes, settings);
        }
    }

    /// Notes a record this node wrote (so its next poll does not apply it again).
    fn remember(&self, plugins: &Plugins, tenant: &str, plugin: &str, record: PluginRecord) {
        let mut snapshot = (*self.known.load_full()).clone();
        snapshot
            .plugins
            .insert((tenant.to_owned(), plugin.to_owned()), record);
        plugins.set_deployed(snapshot.plugins.keys().cloned().collect::<HashSet<_>>());
        self.known.store(Arc::new(snapshot));
    }

    /// Deletes the blobs no record names any more (a failure only leaves them for later).
    async fn collect_blobs(&self) {
        let Ok(snapshot) = self.store.snapshot().await else {
            return;
        };
        match self.store.collect(&snapshot.blobs()).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                removed,
                "unused plugin binaries deleted from the state store"
            ),
            Err(error) => tracing::warn!(%error, "unused plugin binaries not collected"),
        }
    }

    /// One poll: applies the desired state if it changed since the last pass (or a failed
    /// version is due for another try). A store failure leaves everything serving as it is
    /// and the node unready until a pass succeeds.
    pub async fn poll(
        &self,
        plugins: &Arc<Plugins>,
        config: &Config,
        tenants: &Tenants,
        node: &str,
    ) {
        let revision = match self.store.revision().await {
            Ok(revision) => revision,
            Err(error) => return self.store_failed(&error),
        };
        let lost = revision < self.highest.load(Ordering::Acquire);
        if lost && let Err(error) = self.reseed().await {
            return self.store_failed(&error);
        }
        self.highest.fetch_max(revision, Ordering::AcqRel);
        let due = {
            let applied = self.applying.lock().await;
            applied.revision != Some(revision)
                || !self.is_synced()
                || applied
                    .failures
                    .values()
                    .any(|failure| failure.at.elapsed() >= RETRY_AFTER)
        };
        if due {
            if let Err(error) = self.converge(plugins, config, tenants).await {
                return self.store_failed(&error);
            }
            self.report(plugins, node).await;
        } else if now_ms().saturating_sub(self.reported_at.load(Ordering::Relaxed))
            >= REPORT_INTERVAL.as_millis() as u64
        {
            self.report(plugins, node).await;
        }
    }

    /// Notes the store's revision after a write of this node's, so a loss of the store's data
    /// right after it is noticed (best effort: a failed read leaves it to the next poll).
    async fn saw_own_write(&self) {
        if let Ok(revision) = self.store.revision().await {
            self.highest.fetch_max(revision, Ordering::AcqRel);
        }
    }

    /// Keeps the bytes of a version this node serves by record.
    fn keep_source(&self, blob: &str, bytes: &[u8]) {
        self.sources
            .lock()
            .entry(blob.to_owned())
            .or_insert_with(|| Arc::from(bytes));
    }

    /// Puts back what a store that lost its data (its revision went back: Redis restarted
    /// empty, say) no longer has, from what this node applied last: each record with the
    /// version it serves (whose bytes this node holds; the rest of the history is gone) or
    /// its delete. A record the store has again (another node was first, or a restored
    /// backup has it) is left as it is.
    async fn reseed(&self) -> Result<(), StoreError> {
        let _applied = self.applying.lock().await;
        let known = self.known.load_full();
        let sources = self.sources.lock().clone();
        let mut restored = 0;
        for ((tenant, plugin), record) in &known.plugins {
            let serving = record
                .active_version()
                .and_then(|version| Some((version.clone(), sources.get(&version.blob)?.clone())));
            let history = match (&record.active, serving) {
                (None, _) => Vec::new(),
                (Some(_), None) => continue,
                (Some(_), Some((version, bytes))) => {
                    self.store.put_blob(&version.blob, &bytes).await?;
                    vec![version]
                }
            };
            let record = PluginRecord {
                revision: 1,
                active: record.active.clone(),
                history,
                changed_at_ms: now_ms(),
                deleted_from: None,
            };
            if self.store.write(tenant, plugin, &record).await? {
                self.metrics.changes_written.fetch_add(1, Ordering::Relaxed);
                restored += 1;
            }
        }
        for (name, record) in &known.tenants {
            let record = TenantRecord {
                revision: 1,
                changed_at_ms: now_ms(),
                ..record.clone()
            };
            if self.store.write_tenant(name, &record).await? {
                self.metrics.changes_written.fetch_add(1, Ordering::Relaxed);
                restored += 1;
            }
        }
        // From here on the store's new count is the one to compare with.
        self.highest
            .store(self.store.revision().await?, Ordering::Release);
        tracing::warn!(
            restored,
            known = known.plugins.len() + known.tenants.len(),
            "the state store lost the desired state (its revision went back); records put back from what this node serves"
        );
        Ok(())
    }

    fn store_failed(&self, error: &StoreError) {
        self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
        if self.synced.swap(false, Ordering::AcqRel) {
            tracing::warn!(%error, "the desired state cannot be read; serving the last state applied");
        }
    }

    /// Applies the whole desired state: every recorded plugin to its active version (loaded
    /// from the store), a deleted one taken out. A version that does not load keeps the
    /// previous one serving and is reported.
    pub async fn converge(
        &self,
        plugins: &Arc<Plugins>,
        config: &Config,
        tenants: &Tenants,
    ) -> Result<(), StoreError> {
        let mut applied = self.applying.lock().await;
        let snapshot = self.store.snapshot().await?;
        self.apply_tenants(&mut applied, &snapshot, plugins, tenants);
        plugins.set_deployed(snapshot.plugins.keys().cloned().collect::<HashSet<_>>());
        for ((tenant_name, name), record) in &snapshot.plugins {
            // A record of a tenant this node does not have is kept for the nodes that do.
            let Some(tenant) = tenants.get(tenant_name) else {
                continue;
            };
            let key = (tenant_name.clone(), name.clone());
            match self
                .apply(
                    plugins,
                    config,
                    &tenant,
                    name,
                    record,
                    applied.failures.get(&key),
                )
                .await
            {
                Ok(changed) => {
                    applied.failures.remove(&key);
                    if changed {
                        self.metrics.applied(record.changed_at_ms);
                    }
                }
                Err(DeployError::Store(error)) => return Err(error),
                Err(error) => {
                    let blob = record.active.clone().unwrap_or_default();
                    let repeated = applied
                        .failures
                        .get(&key)
                        .is_some_and(|failure| failure.blob == blob);
                    if !repeated {
                        self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(tenant = %tenant_name, plugin = %name, %error, "the deployed version did not load here; the previous one keeps serving");
                    }
                    applied.failures.insert(
                        key,
                        Failure {
                            blob,
                            error: error.to_string(),
                            at: Instant::now(),
                        },
                    );
                }
            }
        }
        applied.revision = Some(snapshot.revision);
        self.highest.fetch_max(snapshot.revision, Ordering::AcqRel);
        let serving: HashSet<&String> = snapshot
            .plugins
            .values()
            .filter_map(|record| record.active.as_ref())
            .collect();
        self.sources.lock().retain(|blob, _| serving.contains(blob));
        self.metrics
            .revision
            .store(snapshot.revision, Ordering::Relaxed);
        self.known.store(Arc::new(snapshot));
        let mismatched = self.mismatches(plugins);
        self.metrics
            .mismatched
            .store(mismatched as u64, Ordering::Relaxed);
        if !self.synced.swap(true, Ordering::AcqRel) {
            tracing::info!(
                store = self.store.kind(),
                mismatched,
                "desired state applied"
            );
        }
        Ok(())
    }

    /// Brings one plugin to its record; `Ok(true)` when something changed here.
    async fn apply(
        &self,
        plugins: &Arc<Plugins>,
        config: &Config,
        tenant: &Arc<Tenant>,
        name: &str,
        record: &PluginRecord,
        failed: Option<&Failure>,
    ) -> Result<bool, DeployError> {
        let routed = plugins
            .routes(&tenant.name)
            .and_then(|routes| routes.plugins.iter().find(|p| p.name() == name).cloned());
        let Some(version) = record.active_version() else {
            if record.active.is_some() {
                return Err(DeployError::MissingBlob(
                    record.active.clone().unwrap_or_default(),
                ));
            }
            if routed.is_none() {
                return Ok(false);
            }
            plugins
                .remove(&tenant.name, name)
                .map_err(DeployError::Swap)?;
            tracing::info!(tenant = %tenant.name, plugin = name, "plugin removed (desired state)");
            return Ok(true);
        };
        if routed.is_some_and(|routed| routed.sha256 == version.sha256) {
            return Ok(false);
        }
        if let Some(failure) = failed
            && failure.blob == version.blob
            && failure.at.elapsed() < RETRY_AFTER
        {
            return Err(DeployError::Load(LoadError::Invalid {
                path: deployed_path(name).display().to_string(),
                message: failure.error.clone(),
            }));
        }
        let bytes = self.fetch(&version.blob).await?;
        let loaded = Self::load(plugins, config, tenant, name, bytes.clone()).await?;
        plugins
            .replace(tenant, loaded.clone())
            .map_err(DeployError::Swap)?;
        self.keep_source(&version.blob, &bytes);
        tracing::info!(
            tenant = %tenant.name,
            plugin = name,
            version = %loaded.manifest.version,
            tier = loaded.tier.as_str(),
            lag_ms = now_ms().saturating_sub(record.changed_at_ms),
            "plugin swapped in (desired state)"
        );
        self.optimize_later(plugins, config, tenant, &loaded, bytes);
        Ok(true)
    }

    /// Recorded plugins whose desired version this node does not serve.
    fn mismatches(&self, plugins: &Plugins) -> usize {
        self.known
            .load()
            .plugins
            .iter()
            .filter(|((tenant, name), record)| {
                let Some(routes) = plugins.routes(tenant) else {
                    return false;
                };
                let routed = routes.plugins.iter().find(|p| p.name() == name);
                match (record.active_version(), routed) {
                    (None, None) => false,
                    (Some(version), Some(routed)) => routed.sha256 != version.sha256,
                    _ => true,
                }
            })
            .count()
    }

    /// What this node serves (the recorded plugins and those from files), and why a
    /// recorded version did not load here.
    pub async fn served(&self, plugins: &Plugins, node: &str) -> NodeReport {
        let failures = self.applying.lock().await.failures.clone();
        let known = self.known.load_full();
        let mut names: BTreeSet<(String, String)> = known.plugins.keys().cloned().collect();
        for (tenant, routes) in plugins.all_routes() {
            names.extend(
                routes
                    .plugins
                    .iter()
                    .map(|plugin| (tenant.to_string(), plugin.name().to_owned())),
            );
        }
        let mut served = Vec::new();
        for (tenant, name) in &names {
            let Some(routes) = plugins.routes(tenant) else {
                continue;
            };
            let routed = routes.plugins.iter().find(|p| p.name() == name);
            served.push(Served {
                tenant: tenant.clone(),
                plugin: name.clone(),
                sha256: routed.map(|p| p.sha256.clone()),
                version: routed.map(|p| p.manifest.version.clone()),
                tier: routed.map(|p| p.tier.as_str().to_owned()),
                error: failures
                    .get(&(tenant.clone(), name.clone()))
                    .map(|failure| failure.error.clone()),
            });
        }
        NodeReport {
            node: node.to_owned(),
            at_ms: now_ms(),
            revision: known.revision,
            plugins: served,
        }
    }

    async fn report(&self, plugins: &Plugins, node: &str) {
        let report = self.served(plugins, node).await;
        if self.store.report(&report).await.is_ok() {
            self.reported_at.store(report.at_ms, Ordering::Relaxed);
        }
    }

    /// Takes this node's report out of the store (it is leaving).
    pub async fn withdraw(&self, node: &str) {
        self.store.withdraw(node).await;
    }
}
