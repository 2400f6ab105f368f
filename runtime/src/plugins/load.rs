//! Loading a plugin version: a `.wasm` component compiled in a worker process (bounded, and
//! cancelled when superseded), or a precompiled artifact checked against the node's key; then
//! linked and validated. And the configured plugins of every tenant at start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::compile::Purpose;
use super::engine::{self, Tier};
use super::host_api::PluginEnv;
use super::linker::linker;
use super::pool::{LoadError, LoadedPlugin, Source};
use super::{Plugins, Routes, artifact};
use crate::config::Config;
use crate::tenant::{Tenant, Tenants};

impl Plugins {
    /// Loads one plugin file for a tenant (compiled, linked and validated, not yet routed).
    pub async fn load_file(
        &self,
        tenant: &Arc<Tenant>,
        path: PathBuf,
        config: BTreeMap<String, String>,
        tier: Tier,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|error| LoadError::Read {
                path: path.display().to_string(),
                message: error.to_string(),
            })?;
        self.load_bytes(tenant, path, bytes, config, tier).await
    }

    /// Loads a plugin from bytes for a tenant, as a swap (an operator's reload or a test; an
    /// upload uses `load_for` with its name).
    pub async fn load_bytes(
        &self,
        tenant: &Arc<Tenant>,
        path: PathBuf,
        bytes: Vec<u8>,
        config: BTreeMap<String, String>,
        tier: Tier,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        self.load_for(tenant, path, bytes, config, tier, Purpose::Swap(None))
            .await
    }

    /// Loads a plugin from bytes for a tenant: a `.wasm` component is compiled by the given
    /// tier in a worker process (bounded by the tenant's and the node's compile limits, and
    /// cancelled as `purpose` says), a precompiled artifact (checked against the node's
    /// artifact key) is optimized code already.
    pub async fn load_for(
        &self,
        tenant: &Arc<Tenant>,
        path: PathBuf,
        bytes: Vec<u8>,
        config: BTreeMap<String, String>,
        tier: Tier,
        purpose: Purpose,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let shown = path.display().to_string();
        let setup = |message: String| LoadError::Invalid {
            path: shown.clone(),
            message,
        };
        let file_bytes = bytes.len();
        let started = std::time::Instant::now();
        let (tier, build) = if artifact::is_artifact(&bytes) {
            let verified = artifact::open(self.artifact_key.as_ref(), bytes).map_err(|error| {
                LoadError::Artifact {
                    path: shown.clone(),
                    message: error.to_string(),
                }
            })?;
            (Tier::Optimized, verified)
        } else {
            let source = artifact::hex(&Sha256::digest(&bytes));
            // A deploy by name takes a kept optimized build at once; other loads (files,
            // tests of one tier) get the tier they asked for.
            let upgrade = matches!(purpose, Purpose::Swap(Some(_)));
            match self.builds.best(tier, &source, upgrade) {
                Some(kept) => {
                    self.compiler.supersede(&tenant.name, &purpose);
                    kept
                }
                None => {
                    let compiled = self
                        .compiler
                        .compile(tenant, tier, purpose, &bytes)
                        .await
                        .map_err(|error| LoadError::Compile {
                            path: shown.clone(),
                            error,
                        })?;
                    self.builds.insert(tier, &source, &compiled);
                    (tier, compiled)
                }
            }
        };
        let source = Source {
            build,
            file_bytes,
            compiled_in: started.elapsed(),
        };
        let engine = engine::shared(tier).map_err(setup)?;
        let linker = linker(tier).map_err(setup)?;
        let services = self.services.clone();
        let tenant = tenant.clone();
        let limits = tenant.plugin_limits.clone();
        let loaded = LoadedPlugin::load((tier, engine, linker), path, source, move |plugin| {
            PluginEnv {
                services,
                tenant,
                plugin,
                config,
                limits,
            }
        })
        .await?;
        Ok(Arc::new(loaded))
    }

    /// Loads every configured plugin of every tenant; each error names the tenant and file.
    pub async fn load_configured(
        self: &Arc<Self>,
        config: &Config,
        tenants: &Tenants,
    ) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (index, tenant_config) in config.tenants.iter().enumerate() {
            let Some(tenant) = tenants.get(&tenant_config.name) else {
                continue;
            };
            let mut loaded = Vec::new();
            for (plugin_index, plugin) in tenant_config.plugins.iter().enumerate() {
                // At start nothing is serving yet: compile optimized code straight away.
                let path = plugin.path.clone();
                match self
                    .load_file(&tenant, path, plugin.config.clone(), Tier::Optimized)
                    .await
                {
                    Ok(plugin) => loaded.push(plugin),
                    Err(error) => {
                        errors.push(format!("tenants[{index}].plugins[{plugin_index}]: {error}"))
                    }
                }
            }
            match Routes::new(loaded) {
                Ok(routes) => self.install(&tenant.name, routes),
                Err(error) => errors.push(format!("tenants[{index}].plugins: {error}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
