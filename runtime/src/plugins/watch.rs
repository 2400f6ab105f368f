//! Hot reload from disk: watches the folders of the configured plugin files and, when one of
//! those files changes, loads the new version off the hot path and swaps it in. A version that
//! fails to load is logged and counted, and the old one keeps serving. The files are the
//! operator's, but they compile in the worker like an upload (`super::compile`): one path,
//! within the tenant's compile limits, and a shutdown never waits for one of them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Plugins;
use super::compile::CompileError;
use super::pool::LoadError;
use crate::config::Config;
use crate::tenant::{Tenant, Tenants};

/// Quiet time after the last change before a file is loaded (writers take a while).
const SETTLE: Duration = Duration::from_millis(250);

/// A configured plugin file: which tenant it belongs to and its config values.
#[derive(Debug, Clone)]
struct Watched {
    tenant: Arc<Tenant>,
    config: std::collections::BTreeMap<String, String>,
}

/// Why hot reload could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The operating system's file watcher could not be created.
    #[error("cannot watch plugin files: {0}")]
    Watcher(String),
    /// A plugin file's folder could not be watched.
    #[error("cannot watch {folder}: {1}", folder = .0.display())]
    Folder(PathBuf, String),
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginWatcher")
    }
}

/// Starts watching every configured plugin file of the node; `None` when there are none.
pub fn start(
    plugins: &Arc<Plugins>,
    config: &Config,
    tenants: &Tenants,
) -> Result<Option<PluginWatcher>, WatchError> {
    let mut files: HashMap<PathBuf, Watched> = HashMap::new();
    for tenant_config in &config.tenants {
        let Some(tenant) = tenants.get(&tenant_config.name) else {
            continue;
        };
        for plugin in &tenant_config.plugins {
            let path = std::fs::canonicalize(&plugin.path).unwrap_or_else(|_| plugin.path.clone());
            files.insert(
                path,
                Watched {
                    tenant: tenant.clone(),
                    config: plugin.config.clone(),
                },
            );
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    // Changed files wait here until they settle; the set is bounded by the configured files.
    let pending: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
    let wake = Arc::new(Notify::new());
    let watched: HashSet<PathBuf> = files.keys().cloned().collect();
    let (pending_in, wake_in) = (pending.clone(), wake.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !changes_content(&event.kind) {
            return;
        }
        let mut changed = false;
        for path in event.paths {
            if watched.contains(&path) {
                changed |= pending_in.lock().insert(path);
            }
        }
        if changed {
            wake_in.notify_one();
        }
    })
    .map_err(|error| WatchError::Watcher(error.to_string()))?;
    let folders: HashSet<PathBuf> = files
        .keys()
        .filter_map(|path| path.parent().map(PathBuf::from))
        .collect();
    for folder in folders {
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .map_err(|error| WatchError::Folder(folder.clone(), error.to_string()))?;
    }
    tokio::spawn(reload_loop(Arc::downgrade(plugins), files, pending, wake));
    Ok(Some(PluginWatcher { _watcher: watcher }))
}

/// Whether an event can mean new contents. Opening or reading a plugin file (a backup, a
/// checksum, a deploy tool comparing bytes) must not reload it: that would also undo a
/// version uploaded through the API since.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

async fn reload_loop(
    plugins: Weak<Plugins>,
    files: HashMap<PathBuf, Watched>,
    pending: Arc<Mutex<HashSet<PathBuf>>>,
    wake: Arc<Notify>,
) {
    loop {
        wake.notified().await;
        // Let a burst of writes settle.
        loop {
            tokio::time::sleep(SETTLE).await;
            if tokio::time::timeout(Duration::ZERO, wake.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        let Some(plugins) = plugins.upgrade() else {
            break;
        };
        let changed: Vec<PathBuf> = pending.lock().drain().collect();
        for path in changed {
            let Some(watched) = files.get(&path) else {
                continue;
            };
            reload(&plugins, &path, watched).await;
        }
    }
}

async fn reload(plugins: &Arc<Plugins>, path: &std::path::Path, watched: &Watched) {
    let tenant = &watched.tenant;
    if !tenant.serves_configured_files() {
        tracing::info!(tenant = %tenant.name, path = %path.display(), "plugin file changed; not loaded: the tenant was deleted or made anew through the tenant API");
        return;
    }
    let result = async {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|error| Some(format!("cannot read the file: {error}")))?;
        let config = watched.config.clone();
        // The baseline compiler (when swaps are tiered) puts the new version in place
        // quickly; the optimized build follows.
        let loaded = plugins
            .load_bytes(
                tenant,
                path.to_path_buf(),
                bytes.clone(),
                config.clone(),
                plugins.swap_tier(),
            )
            .await
            .map_err(|error| match error {
                LoadError::Compile {
                    error: CompileError::ShuttingDown,
                    ..
                } => None,
                other => Some(other.to_string()),
            })?;
        if plugins.is_deployed(&tenant.name, loaded.name()) {
            // The file is only the seed: once a version was deployed (or the plugin deleted)
            // through the API, the desired state decides, on every node alike.
            tracing::info!(tenant = %tenant.name, plugin = %loaded.name(), path = %path.display(), "plugin file changed; not swapped in: the version deployed through the API wins over the file");
            return Err(None);
        }
        plugins
            .replace(tenant, loaded.clone())
            .map_err(|error| Some(error.to_string()))?;
        plugins.optimize_later(tenant, &loaded, bytes, config);
        Ok::<_, Option<String>>((loaded.name().to_owned(), loaded.manifest.version.clone()))
    }
    .await;
    match result {
        Ok((name, version)) => {
            tracing::info!(tenant = %tenant.name, plugin = %name, %version, "plugin reloaded from disk");
        }
        // The node is shutting down: nothing failed.
        Err(None) => {}
        Err(Some(error)) => {
            plugins.services.metrics.plugin_load_failure(&tenant.name);
            tracing::warn!(tenant = %tenant.name, path = %path.display(), %error, "plugin reload failed; the old version keeps serving");
        }
    }
}
