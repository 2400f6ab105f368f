//! The tenant side of the desired state: the operator's creates, updates and deletes are
//! written as tenant records, then applied here; every node applies the records it finds by
//! polling, tenants before plugins (a plugin record of a new tenant needs the tenant).
//!
//! A record wins over a configured tenant of the same name, on every node and across
//! restarts; a tenant without a record is the one in the config file.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Applied, Deployments, WRITE_ATTEMPTS};
use crate::auth::KeyError;
use crate::clock::unix_millis as now_ms;
use crate::config::{ConfigIssue, TenantConfig, tenant_from_json};
use crate::plugins::Plugins;
use crate::state::{Snapshot, StoreError, TenantRecord};
use crate::tenant::{Tenant, Tenants};

/// Why a tenant change was not made.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The settings are not a valid tenant (each issue names its field).
    #[error("{}", .0.iter().map(|issue| if issue.key.is_empty() { issue.message.clone() } else { format!("{}: {}", issue.key, issue.message) }).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigIssue>),
    /// The token key does not load.
    #[error("jwt: {0}")]
    Key(KeyError),
    /// No such tenant.
    #[error("unknown tenant")]
    Unknown,
    /// The store cannot be reached or read.
    #[error(transparent)]
    Store(StoreError),
    /// Other writers changed the record at every attempt.
    #[error("the tenant's record kept changing under this write; try again")]
    Contended,
}

/// A tenant's settings checked as every node will check them: valid, the name the path
/// gives, and a token key that loads.
pub fn validate(name: &str, mut settings: serde_json::Value) -> Result<TenantConfig, TenantError> {
    let issue = |key: &str, message: &str| {
        TenantError::Invalid(vec![ConfigIssue {
            file: String::new(),
            key: key.to_owned(),
            message: message.to_owned(),
        }])
    };
    let Some(object) = settings.as_object_mut() else {
        return Err(issue(
            "",
            "the body must be a JSON object of tenant settings",
        ));
    };
    match object.get("name") {
        None => {
            object.insert("name".to_owned(), serde_json::Value::from(name));
        }
        Some(given) if given.as_str() == Some(name) => {}
        Some(_) => return Err(issue("name", "must be the tenant named in the path")),
    }
    let config = tenant_from_json(settings).map_err(TenantError::Invalid)?;
    Tenant::new(&config).map_err(TenantError::Key)?;
    Ok(config)
}

/// What a tenant change did here.
#[derive(Debug)]
pub enum TenantChange {
    /// Created (no tenant of that name served here before).
    Created(Arc<Tenant>),
    /// Its settings replaced.
    Updated(Arc<Tenant>),
}

impl Deployments {
    /// Creates or updates a tenant: its record is written (so every node and every restart
    /// serves it), then applied here. Refused, with nothing stored, when its settings are
    /// not valid.
    pub async fn put_tenant(
        &self,
        plugins: &Plugins,
        tenants: &Tenants,
        name: &str,
        settings: serde_json::Value,
    ) -> Result<TenantChange, TenantError> {
        let config = validate(name, settings.clone())?;
        let mut applied = self.applying.lock().await;
        let existed = tenants.get(name).is_some();
        let record = self
            .write_tenant(name, Some(settings.clone()), !existed)
            .await?;
        let tenant = tenants.upsert(&config).map_err(TenantError::Key)?;
        if record.created {
            tenant.disown_configured_files();
        }
        plugins.add_tenant(&tenant);
        applied.tenants.insert(name.to_owned(), settings);
        applied.tenant_failures.remove(name);
        self.remember_tenant(name, record);
        tracing::info!(
            tenant = name,
            created = !existed,
            "tenant applied (tenant API)"
        );
        Ok(if existed {
            TenantChange::Updated(tenant)
        } else {
            TenantChange::Created(tenant)
        })
    }

    /// Deletes a tenant: its record says it is gone (a configured tenant of that name is not
    /// served either), it is taken out here with its plugins, and its plugin records are
    /// forgotten. Returns the tenant, whose connections the caller closes.
    pub async fn delete_tenant(
        &self,
        plugins: &Plugins,
        tenants: &Tenants,
        name: &str,
    ) -> Result<Arc<Tenant>, TenantError> {
        let mut applied = self.applying.lock().await;
        let Some(tenant) = tenants.get(name) else {
            return Err(TenantError::Unknown);
        };
        let record = self.write_tenant(name, None, false).await?;
        tenants.remove(name);
        plugins.remove_tenant(name);
        applied.tenants.remove(name);
        self.removed.lock().push(tenant.clone());
        self.remember_tenant(name, record);
        self.forget_plugins_of(name).await;
        tracing::info!(tenant = name, "tenant deleted (tenant API)");
        Ok(tenant)
    }

    /// The tenants taken out here since the last call, whose connections and state the node
    /// still has to close and clear.
    pub fn take_removed(&self) -> Vec<Arc<Tenant>> {
        std::mem::take(&mut *self.removed.lock())
    }

    /// Writes a tenant's record (`None`: deleted) over whatever is stored, retrying when
    /// another writer came first. `created`: the tenant is made anew (an update of a tenant
    /// made anew stays so).
    async fn write_tenant(
        &self,
        name: &str,
        settings: Option<serde_json::Value>,
        created: bool,
    ) -> Result<TenantRecord, TenantError> {
        for _ in 0..WRITE_ATTEMPTS {
            let snapshot = self.store.snapshot().await.map_err(TenantError::Store)?;
            let current = snapshot.tenants.get(name);
            let record = TenantRecord {
                revision: current.map_or(0, |record| record.revision) + 1,
                created: settings.is_some()
                    && (created
                        || current
                            .is_some_and(|record| record.settings.is_some() && record.created)),
                settings: settings.clone(),
                changed_at_ms: now_ms(),
            };
            if self
                .store
                .write_tenant(name, &record)
                .await
                .map_err(TenantError::Store)?
            {
                self.metrics.changes_written.fetch_add(1, Ordering::Relaxed);
                self.saw_own_write().await;
                return Ok(record);
            }
        }
        Err(TenantError::Contended)
    }

    /// Notes a tenant record this node wrote.
    fn remember_tenant(&self, name: &str, record: TenantRecord) {
        let mut snapshot = (*self.known.load_full()).clone();
        snapshot.tenants.insert(name.to_owned(), record);
        self.known.store(Arc::new(snapshot));
    }

    /// Forgets every plugin record of a deleted tenant, so a tenant made again under its
    /// name starts with none; what fails stays for the tenant's next delete.
    async fn forget_plugins_of(&self, name: &str) {
        let Ok(snapshot) = self.store.snapshot().await else {
            return;
        };
        for ((owner, plugin), record) in &snapshot.plugins {
            if owner != name {
                continue;
            }
            match self.store.forget(owner, plugin, record.revision).await {
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(tenant = name, plugin, %error, "a deleted tenant's plugin record not forgotten");
                    return;
                }
            }
        }
        self.collect_blobs().await;
    }

    /// Brings the tenants to their records: a record's settings replace the tenant's when
    /// they changed since this node applied them, a deleted one is taken out. Settings that
    /// do not apply here (a key that does not load) leave the tenant as it was, logged.
    pub(super) fn apply_tenants(
        &self,
        applied: &mut Applied,
        snapshot: &Snapshot,
        plugins: &Plugins,
        tenants: &Tenants,
    ) {
        for (name, record) in &snapshot.tenants {
            match &record.settings {
                None => {
                    applied.tenants.remove(name);
                    applied.tenant_failures.remove(name);
                    if let Some(tenant) = tenants.remove(name) {
                        plugins.remove_tenant(name);
                        self.removed.lock().push(tenant);
                        self.metrics.applied(record.changed_at_ms);
                        tracing::info!(tenant = %name, lag_ms = now_ms().saturating_sub(record.changed_at_ms), "tenant removed (desired state)");
                    }
                }
                Some(settings) => {
                    if applied.tenants.get(name) == Some(settings) && tenants.get(name).is_some() {
                        continue;
                    }
                    let tenant = validate(name, settings.clone())
                        .and_then(|config| tenants.upsert(&config).map_err(TenantError::Key));
                    match tenant {
                        Ok(tenant) => {
                            applied.tenant_failures.remove(name);
                            // A tenant made anew through the API does not serve the files
                            // this node loaded for a configured tenant of that name.
                            if record.created && tenant.disown_configured_files() {
                                let dropped = plugins.remove_tenant(name);
                                if dropped > 0 {
                                    tracing::info!(tenant = %name, dropped, "the config file's plugins are not served: the tenant API made this tenant anew");
                                }
                            }
                            plugins.add_tenant(&tenant);
                            applied.tenants.insert(name.clone(), settings.clone());
                            self.metrics.applied(record.changed_at_ms);
                            tracing::info!(tenant = %name, lag_ms = now_ms().saturating_sub(record.changed_at_ms), "tenant applied (desired state)");
                        }
                        Err(error) => {
                            // Counted and logged once per settings, not at every poll.
                            applied.tenants.insert(name.clone(), settings.clone());
                            applied.tenant_failures.insert(name.clone());
                            self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(tenant = %name, %error, "the tenant's settings do not apply here; it stays as it was");
                        }
                    }
                }
            }
        }
        self.metrics
            .mismatched_tenants
            .store(applied.tenant_failures.len() as u64, Ordering::Relaxed);
    }
}
