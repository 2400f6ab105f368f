//! WASM plugins: the host facade. Loads each tenant's plugins, routes envelope types to them
//! through a routing table swapped atomically, and wires the lifecycle hooks.
//!
//! - `bindings`: the WIT world as Rust types (`bindgen!`);
//! - `engine`: the shared wasmtime engine and the epoch ticker (CPU budgets);
//! - `host_api`: what plugins import, confined to their tenant, with per-call quotas;
//! - `pool`: one loaded version: warm instances, admission, the call path;
//! - `kv`: the plugins' key-value store;
//! - `watch`: hot reload when a configured plugin file changes.

pub mod bindings;
pub mod code_cache;
pub mod engine;
pub mod host_api;
pub mod kv;
pub mod pool;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use wasmtime::component::{HasSelf, Linker};

use bindings::{Hooks, Message, Plugin};
use host_api::{HostState, PluginEnv};
use pool::{Answer, Call, CallError, LoadError, LoadedPlugin};

use crate::config::Config;
use crate::node::Node;
use crate::registry::ConnHandle;
use crate::tenant::Tenant;

/// A tenant's plugins and the type routing built from their manifests.
#[derive(Debug, Default)]
pub struct Routes {
    /// Every plugin, in load order.
    pub plugins: Vec<Arc<LoadedPlugin>>,
    by_type: HashMap<String, Arc<LoadedPlugin>>,
}

impl Routes {
    /// Builds the routing table; two plugins claiming one type is an error naming both.
    pub fn new(plugins: Vec<Arc<LoadedPlugin>>) -> Result<Routes, String> {
        let mut by_type: HashMap<String, Arc<LoadedPlugin>> = HashMap::new();
        let mut names: HashMap<&str, ()> = HashMap::new();
        for plugin in &plugins {
            if names.insert(plugin.name(), ()).is_some() {
                return Err(format!("two plugins are named `{}`", plugin.name()));
            }
            for handled in &plugin.manifest.handles {
                if let Some(other) = by_type.get(handled) {
                    return Err(format!(
                        "type `{handled}` is claimed by both `{}` and `{}`",
                        other.name(),
                        plugin.name()
                    ));
                }
                by_type.insert(handled.clone(), plugin.clone());
            }
        }
        Ok(Routes { plugins, by_type })
    }

    fn with_hook(&self, hook: Hooks) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins
            .iter()
            .filter(move |plugin| plugin.manifest.hooks.contains(hook))
    }
}

/// The outcome of routing a message to a plugin.
#[derive(Debug)]
pub enum Routed {
    /// No plugin handles the type.
    Unrouted,
    /// The plugin answered (or returned an error of its own).
    Answered(Result<Option<String>, bindings::HandlerError>),
    /// The call failed.
    Failed(CallError),
}

/// Every tenant's plugins on this node, plus their key-value store.
#[derive(Debug, Default)]
pub struct Plugins {
    routes: HashMap<Arc<str>, ArcSwap<Routes>>,
    /// The plugins' key-value store.
    pub kv: kv::KvStore,
}

fn linker() -> Result<&'static Linker<HostState>, String> {
    static LINKER: OnceLock<Result<Linker<HostState>, String>> = OnceLock::new();
    LINKER
        .get_or_init(|| {
            let engine = engine::shared()?;
            let mut linker = Linker::new(engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)
                .map_err(|error| format!("{error:#}"))?;
            Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
                .map_err(|error| format!("{error:#}"))?;
            Ok(linker)
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Plugins {
    /// Empty routing tables for the config's tenants.
    pub fn new(config: &Config) -> Self {
        Plugins {
            routes: config
                .tenants
                .iter()
                .map(|tenant| {
                    (
                        Arc::from(tenant.name.as_str()),
                        ArcSwap::from_pointee(Routes::default()),
                    )
                })
                .collect(),
            kv: kv::KvStore::default(),
        }
    }

    /// The current routes of a tenant.
    pub fn routes(&self, tenant: &str) -> Option<Arc<Routes>> {
        self.routes.get(tenant).map(|routes| routes.load_full())
    }

    /// Loads one plugin file for a tenant (compiled, linked and validated, not yet routed).
    pub async fn load_file(
        node: &Arc<Node>,
        tenant: &Arc<Tenant>,
        path: std::path::PathBuf,
        config: std::collections::BTreeMap<String, String>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|error| LoadError::Read {
                path: path.display().to_string(),
                message: error.to_string(),
            })?;
        Self::load_bytes(node, tenant, path, bytes, config).await
    }

    /// Loads a plugin from bytes for a tenant.
    pub async fn load_bytes(
        node: &Arc<Node>,
        tenant: &Arc<Tenant>,
        path: std::path::PathBuf,
        bytes: Vec<u8>,
        config: std::collections::BTreeMap<String, String>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let shown = path.display().to_string();
        let setup = |message: String| LoadError::Invalid {
            path: shown.clone(),
            message,
        };
        let engine = engine::shared().map_err(setup)?;
        let linker = linker().map_err(setup)?;
        let weak: Weak<Node> = Arc::downgrade(node);
        let tenant = tenant.clone();
        let limits = tenant.plugin_limits.clone();
        let loaded = LoadedPlugin::load(engine, linker, path, bytes, move |plugin| PluginEnv {
            node: weak,
            tenant,
            plugin,
            config,
            limits,
        })
        .await?;
        Ok(Arc::new(loaded))
    }

    /// Loads every configured plugin of every tenant; each error names the tenant and file.
    pub async fn load_configured(node: &Arc<Node>) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (index, tenant_config) in node.config.tenants.iter().enumerate() {
            let Some(tenant) = node.tenants.get(&tenant_config.name).cloned() else {
                continue;
            };
            let mut loaded = Vec::new();
            for (plugin_index, plugin) in tenant_config.plugins.iter().enumerate() {
                match Self::load_file(node, &tenant, plugin.path.clone(), plugin.config.clone())
                    .await
                {
                    Ok(plugin) => loaded.push(plugin),
                    Err(error) => {
                        errors.push(format!("tenants[{index}].plugins[{plugin_index}]: {error}"))
                    }
                }
            }
            match Routes::new(loaded) {
                Ok(routes) => node.plugins.install(&tenant.name, routes, node),
                Err(error) => errors.push(format!("tenants[{index}].plugins: {error}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Swaps a tenant's routing table atomically: calls in flight finish on the old versions,
    /// new messages go to the new ones. Starts the tick tasks of the new plugins.
    pub fn install(&self, tenant: &str, routes: Routes, node: &Arc<Node>) {
        let Some(slot) = self.routes.get(tenant) else {
            return;
        };
        let routes = Arc::new(routes);
        slot.store(routes.clone());
        for plugin in routes.with_hook(Hooks::ON_TICK) {
            spawn_ticks(node, tenant, plugin);
        }
    }

    /// Puts a new version of a plugin in place of the one with the same name (or adds it),
    /// atomically. Refused, with the old routes still serving, if its types clash.
    pub fn replace(
        &self,
        node: &Arc<Node>,
        tenant: &str,
        plugin: Arc<LoadedPlugin>,
    ) -> Result<(), String> {
        let Some(slot) = self.routes.get(tenant) else {
            return Err(format!("unknown tenant `{tenant}`"));
        };
        let current = slot.load_full();
        let mut plugins: Vec<Arc<LoadedPlugin>> = current
            .plugins
            .iter()
            .filter(|existing| existing.name() != plugin.name())
            .cloned()
            .collect();
        plugins.push(plugin);
        let routes = Routes::new(plugins)?;
        self.install(tenant, routes, node);
        Ok(())
    }

    /// Routes a non-built-in envelope to the plugin that declared its type.
    pub async fn on_message(&self, conn: &ConnHandle, message: Message) -> Routed {
        let Some(plugin) = self
            .routes
            .get(&*conn.tenant.name)
            .and_then(|routes| routes.load().by_type.get(&message.msg_type).cloned())
        else {
            return Routed::Unrouted;
        };
        let info = conn.plugin_view();
        match plugin.call(Call::Message(&info, &message), false).await {
            Ok(Answer::Message(result)) => Routed::Answered(result),
            Ok(_) => Routed::Failed(CallError::Trapped("unexpected answer".to_owned())),
            Err(error) => Routed::Failed(error),
        }
    }

    /// Asks every plugin with `authorize-join`; the first refusal (or failure) wins.
    pub async fn authorize_join(&self, conn: &ConnHandle, channel: &str) -> Result<(), String> {
        let Some(routes) = self.routes(&conn.tenant.name) else {
            return Ok(());
        };
        let channel = channel.to_owned();
        let mut info = None;
        for plugin in routes.with_hook(Hooks::AUTHORIZE_JOIN) {
            let info = info.get_or_insert_with(|| conn.plugin_view());
            match plugin.call(Call::AuthorizeJoin(info, &channel), true).await {
                Ok(Answer::Authorized(true)) => {}
                Ok(_) => return Err(format!("`{}` refused the join", plugin.name())),
                // Fail closed: a plugin that cannot answer does not let anyone in.
                Err(error) => {
                    return Err(format!(
                        "`{}` could not authorize: {error:?}",
                        plugin.name()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Tells every plugin with `on-connect`.
    pub async fn on_connect(&self, conn: &ConnHandle) {
        let Some(routes) = self.routes(&conn.tenant.name) else {
            return;
        };
        // Built only when a plugin has the hook (it stays cached on the connection).
        let mut info = None;
        for plugin in routes.with_hook(Hooks::ON_CONNECT) {
            let info = info.get_or_insert_with(|| conn.plugin_view());
            let _ = plugin.call(Call::Connect(info), true).await;
        }
    }

    /// Tells every plugin with `on-disconnect`, for every kind of drop.
    pub async fn on_disconnect(&self, conn: &ConnHandle, code: u16) {
        let Some(routes) = self.routes(&conn.tenant.name) else {
            return;
        };
        let info = conn.plugin_view();
        for plugin in routes.with_hook(Hooks::ON_DISCONNECT) {
            let _ = plugin.call(Call::Disconnect(&info, code), true).await;
        }
    }
}

/// Calls `on-tick` on the plugin's interval for as long as it is the routed version.
fn spawn_ticks(node: &Arc<Node>, tenant: &str, plugin: &Arc<LoadedPlugin>) {
    let Some(interval_ms) = plugin.manifest.tick_interval_ms else {
        return;
    };
    let node = Arc::downgrade(node);
    let weak_plugin = Arc::downgrade(plugin);
    let tenant: Arc<str> = Arc::from(tenant);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(u64::from(interval_ms)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let (Some(node), Some(plugin)) = (node.upgrade(), weak_plugin.upgrade()) else {
                break;
            };
            let current = node
                .plugins
                .routes(&tenant)
                .is_some_and(|routes| routes.plugins.iter().any(|p| Arc::ptr_eq(p, &plugin)));
            if !current || node.is_draining() {
                break;
            }
            let _ = plugin
                .call(Call::Tick(crate::clock::unix_millis()), true)
                .await;
        }
    });
}
