//! WASM plugins: the host facade. Loads each tenant's plugins, routes envelope types to them
//! through a routing table swapped atomically, and wires the lifecycle hooks.
//!
//! - `artifact`: precompiled, signed plugin artifacts (`switchboard precompile`);
//! - `bindings`: the WIT world as Rust types (`bindgen!`);
//! - `compile`: compiling a `.wasm` in a worker process, bounded in time, memory and
//!   concurrency, and cancelled when superseded;
//! - `engine`: the shared wasmtime engine and the epoch ticker (CPU budgets);
//! - `host_api`: what plugins import, confined to their tenant, with per-call quotas;
//! - `pool`: one loaded version: warm instances, admission, the call path;
//! - `kv`: the plugins' key-value store;
//! - `watch`: hot reload when a configured plugin file changes.

pub mod artifact;
pub mod bindings;
pub mod code_cache;
pub mod compile;
pub mod engine;
pub mod host_api;
pub mod kv;
pub mod pool;
pub mod watch;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use wasmtime::component::{HasSelf, Linker};

use bindings::{Hooks, Message, Plugin};
use compile::{Compiler, Purpose};
use engine::Tier;
use host_api::{HostState, PluginEnv};
use pool::{Answer, Call, CallError, LoadError, LoadedPlugin, Source};

use crate::config::{ArtifactKey, Config};
use crate::metrics;
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

/// How a background optimized build (`Plugins::optimize_later`) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Optimized {
    /// The optimized build replaced the baseline one.
    InPlace,
    /// Not used: a newer version (or the node's shutdown) came first.
    Superseded,
    /// It failed to build; the baseline build keeps serving.
    Failed(String),
}

/// Every tenant's plugins on this node, plus their key-value store.
#[derive(Debug)]
pub struct Plugins {
    routes: HashMap<Arc<str>, ArcSwap<Routes>>,
    /// The plugins' key-value store.
    pub kv: kv::KvStore,
    /// Compiles of plugin code, bounded and cancellable.
    pub compiler: Compiler,
}

/// A bound on the plugins held that a new version would pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginLimit {
    /// The tenant has as many plugins as it may.
    #[error("the tenant already has {0} plugins (plugin_limits.max_plugins)")]
    TenantCount(usize),
    /// The tenant's plugin files would take more bytes than it may.
    #[error("the tenant's plugins would take {0} bytes, over plugin_limits.max_plugin_bytes ({1})")]
    TenantBytes(usize, usize),
    /// The node has as many plugins as it may.
    #[error("the node already has {0} plugins (plugins.max_plugins)")]
    NodeCount(usize),
    /// The node's plugin files would take more bytes than it may.
    #[error("the node's plugins would take {0} bytes, over plugins.max_plugin_bytes ({1})")]
    NodeBytes(usize, usize),
}

impl PluginLimit {
    /// The `reason` label of `switchboard_plugin_refusals_total`.
    pub fn label(&self) -> &'static str {
        match self {
            PluginLimit::TenantCount(_) => "max_plugins",
            PluginLimit::TenantBytes(..) => "max_plugin_bytes",
            PluginLimit::NodeCount(_) => "node_max_plugins",
            PluginLimit::NodeBytes(..) => "node_max_plugin_bytes",
        }
    }
}

/// Why a new version was not swapped in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    /// Its types clash with another plugin's, or the tenant is unknown.
    #[error("{0}")]
    Conflict(String),
    /// It would pass a bound on the plugins held.
    #[error("{0}")]
    Limit(PluginLimit),
}

/// The linker of a tier's engine: WASI and the Switchboard imports.
fn linker(tier: Tier) -> Result<&'static Linker<HostState>, String> {
    static LINKERS: [OnceLock<Result<Linker<HostState>, String>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let slot = match tier {
        Tier::Baseline => &LINKERS[0],
        Tier::Optimized => &LINKERS[1],
    };
    slot.get_or_init(|| {
        let engine = engine::shared(tier)?;
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
    /// Compiles a plugin component ahead of time with the optimizing engine, checks that it
    /// links against the plugin world, and signs the build with `key`: an artifact that nodes
    /// with the same key and the same build of Switchboard load without compiling.
    pub fn precompile(key: &ArtifactKey, wasm: &[u8]) -> Result<Vec<u8>, String> {
        let engine = engine::shared(Tier::Optimized)?;
        let component = wasmtime::component::Component::new(engine, wasm)
            .map_err(|error| format!("not a plugin component: {error:#}"))?;
        linker(Tier::Optimized)?
            .instantiate_pre(&component)
            .map_err(|error| format!("not built for the Switchboard plugin world: {error:#}"))?;
        let compiled = component
            .serialize()
            .map_err(|error| format!("cannot serialize the build: {error:#}"))?;
        Ok(artifact::seal(key, wasm, &compiled))
    }

    /// Empty routing tables for the config's tenants.
    pub fn new(config: &Config) -> Self {
        Plugins {
            compiler: Compiler::new(config),
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

    /// Checks that `tenant` may hold one more version of plugin `name` of `bytes` bytes (a new
    /// version of a plugin it has replaces it; `name` unknown: counted as an addition).
    pub fn room_for(
        &self,
        tenant: &Tenant,
        name: Option<&str>,
        bytes: usize,
    ) -> Result<(), PluginLimit> {
        let current = self.routes(&tenant.name).unwrap_or_default();
        self.room_in(tenant, &current, name, bytes)
    }

    fn room_in(
        &self,
        tenant: &Tenant,
        current: &Routes,
        name: Option<&str>,
        bytes: usize,
    ) -> Result<(), PluginLimit> {
        // What stays of the tenant's plugins: all but the version this one replaces.
        let (count, total) = current
            .plugins
            .iter()
            .filter(|plugin| Some(plugin.name()) != name)
            .fold((0, 0), |(count, total), plugin| {
                (count + 1, total + plugin.file_bytes)
            });
        let limits = &tenant.plugin_limits;
        if count + 1 > limits.max_plugins {
            return Err(PluginLimit::TenantCount(count));
        }
        if total + bytes > limits.max_plugin_bytes {
            return Err(PluginLimit::TenantBytes(
                total + bytes,
                limits.max_plugin_bytes,
            ));
        }
        let (mut node_count, mut node_total) = (count + 1, total + bytes);
        for (other, routes) in &self.routes {
            if **other != *tenant.name {
                let routes = routes.load();
                node_count += routes.plugins.len();
                node_total += routes.plugins.iter().map(|p| p.file_bytes).sum::<usize>();
            }
        }
        let bounds = &self.compiler.bounds();
        if node_count > bounds.max_plugins {
            return Err(PluginLimit::NodeCount(node_count - 1));
        }
        if node_total > bounds.max_plugin_bytes {
            return Err(PluginLimit::NodeBytes(node_total, bounds.max_plugin_bytes));
        }
        Ok(())
    }

    /// Appends the plugin metrics: what each tenant holds, and the compiles.
    pub fn render_metrics(&self, out: &mut String) {
        let held: Vec<(&str, usize, usize)> = self
            .routes
            .iter()
            .map(|(tenant, routes)| {
                let routes = routes.load();
                let bytes = routes.plugins.iter().map(|plugin| plugin.file_bytes).sum();
                (&**tenant, routes.plugins.len(), bytes)
            })
            .collect();
        metrics::plugins::render_held(out, &held);
        metrics::plugins::render_compiles(out, &self.compiler.figures());
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
        tier: Tier,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|error| LoadError::Read {
                path: path.display().to_string(),
                message: error.to_string(),
            })?;
        Self::load_bytes(node, tenant, path, bytes, config, tier).await
    }

    /// Loads a plugin from bytes for a tenant, as a swap (an operator's reload or a test; an
    /// upload uses `load_for` with its name).
    pub async fn load_bytes(
        node: &Arc<Node>,
        tenant: &Arc<Tenant>,
        path: std::path::PathBuf,
        bytes: Vec<u8>,
        config: std::collections::BTreeMap<String, String>,
        tier: Tier,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        Self::load_for(node, tenant, path, bytes, config, tier, Purpose::Swap(None)).await
    }

    /// Loads a plugin from bytes for a tenant: a `.wasm` component is compiled by the given
    /// tier in a worker process (bounded by the tenant's and the node's compile limits, and
    /// cancelled as `purpose` says), a precompiled artifact (checked against the node's
    /// artifact key) is optimized code already.
    pub async fn load_for(
        node: &Arc<Node>,
        tenant: &Arc<Tenant>,
        path: std::path::PathBuf,
        bytes: Vec<u8>,
        config: std::collections::BTreeMap<String, String>,
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
            let verified =
                artifact::open(node.config.artifact_key.as_ref(), bytes).map_err(|error| {
                    LoadError::Artifact {
                        path: shown.clone(),
                        message: error.to_string(),
                    }
                })?;
            (Tier::Optimized, verified)
        } else {
            let compiled = node
                .plugins
                .compiler
                .compile(node, tenant, tier, purpose, &bytes)
                .await
                .map_err(|error| LoadError::Compile {
                    path: shown.clone(),
                    error,
                })?;
            (tier, compiled)
        };
        let source = Source {
            build,
            file_bytes,
            compiled_in: started.elapsed(),
        };
        let engine = engine::shared(tier).map_err(setup)?;
        let linker = linker(tier).map_err(setup)?;
        let weak: Weak<Node> = Arc::downgrade(node);
        let tenant = tenant.clone();
        let limits = tenant.plugin_limits.clone();
        let loaded = LoadedPlugin::load((tier, engine, linker), path, source, move |plugin| {
            PluginEnv {
                node: weak,
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
    pub async fn load_configured(node: &Arc<Node>) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (index, tenant_config) in node.config.tenants.iter().enumerate() {
            let Some(tenant) = node.tenants.get(&tenant_config.name).cloned() else {
                continue;
            };
            let mut loaded = Vec::new();
            for (plugin_index, plugin) in tenant_config.plugins.iter().enumerate() {
                // At start nothing is serving yet: compile optimized code straight away.
                let path = plugin.path.clone();
                match Self::load_file(node, &tenant, path, plugin.config.clone(), Tier::Optimized)
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
        let previous = slot.swap(routes.clone());
        start_ticks(node, tenant, &routes, &previous);
    }

    /// Applies `change` to a tenant's current routes and swaps the result in, retrying if
    /// another swap landed meanwhile (so two swaps never undo each other). `Ok(false)` when
    /// `change` declines.
    fn update(
        &self,
        node: &Arc<Node>,
        tenant: &str,
        change: impl Fn(&Routes) -> Result<Option<Routes>, SwapError>,
    ) -> Result<bool, SwapError> {
        let Some(slot) = self.routes.get(tenant) else {
            return Err(SwapError::Conflict(format!("unknown tenant `{tenant}`")));
        };
        loop {
            let current = slot.load_full();
            let Some(routes) = change(&current)? else {
                return Ok(false);
            };
            let routes = Arc::new(routes);
            let previous = slot.compare_and_swap(&current, routes.clone());
            if Arc::ptr_eq(&*previous, &current) {
                start_ticks(node, tenant, &routes, &current);
                // An optimized build of a version no longer routed would never be used.
                self.compiler.cancel_optimizing(tenant, |version| {
                    !routes
                        .plugins
                        .iter()
                        .any(|plugin| Arc::as_ptr(plugin) as usize == version)
                });
                return Ok(true);
            }
        }
    }

    /// Puts a new version of a plugin in place of the one with the same name (or adds it),
    /// atomically. Refused, with the old routes still serving, if its types clash or it would
    /// pass the tenant's or the node's bounds on plugins held.
    pub fn replace(
        &self,
        node: &Arc<Node>,
        tenant: &str,
        plugin: Arc<LoadedPlugin>,
    ) -> Result<(), SwapError> {
        let owner = node.tenants.get(tenant).cloned();
        self.update(node, tenant, |current| {
            if let Some(owner) = &owner {
                self.room_in(owner, current, Some(plugin.name()), plugin.file_bytes)
                    .map_err(SwapError::Limit)?;
            }
            let mut plugins: Vec<Arc<LoadedPlugin>> = current
                .plugins
                .iter()
                .filter(|existing| existing.name() != plugin.name())
                .cloned()
                .collect();
            plugins.push(plugin.clone());
            Routes::new(plugins).map(Some).map_err(SwapError::Conflict)
        })
        .map(|_| ())
    }

    /// Swaps `optimized` in for `baseline` if `baseline` is still the routed version (a newer
    /// upload wins over an older version's optimized build). Its call counts carry over.
    fn upgrade(
        &self,
        node: &Arc<Node>,
        tenant: &str,
        baseline: &Arc<LoadedPlugin>,
        optimized: Arc<LoadedPlugin>,
    ) -> Result<bool, SwapError> {
        self.update(node, tenant, |current| {
            if !current.plugins.iter().any(|p| Arc::ptr_eq(p, baseline)) {
                return Ok(None);
            }
            let plugins = current
                .plugins
                .iter()
                .map(|p| {
                    if Arc::ptr_eq(p, baseline) {
                        optimized.clone()
                    } else {
                        p.clone()
                    }
                })
                .collect();
            Routes::new(plugins).map(Some).map_err(SwapError::Conflict)
        })
        .inspect(|&upgraded| {
            if upgraded {
                for (to, from) in [
                    (&optimized.calls, &baseline.calls),
                    (&optimized.errors, &baseline.errors),
                    (&optimized.yields, &baseline.yields),
                ] {
                    to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        })
    }

    /// The compiler a swap (an upload or a reload) uses first: Winch when swaps are tiered,
    /// else Cranelift straight away.
    pub fn swap_tier(config: &Config) -> Tier {
        if config.tiered_swaps {
            Tier::Baseline
        } else {
            Tier::Optimized
        }
    }

    /// Compiles a swapped-in baseline version again with the optimizing compiler, off the hot
    /// path, and puts that build in its place if it is still the routed version by then. The
    /// handle tells how that ended (`None`: the version is optimized already); dropping it
    /// leaves the build running.
    pub fn optimize_later(
        node: &Arc<Node>,
        tenant: &Arc<Tenant>,
        baseline: &Arc<LoadedPlugin>,
        bytes: Vec<u8>,
        config: std::collections::BTreeMap<String, String>,
    ) -> Option<tokio::task::JoinHandle<Optimized>> {
        if baseline.tier == Tier::Optimized {
            return None;
        }
        let (node, tenant, baseline) = (Arc::downgrade(node), tenant.clone(), baseline.clone());
        Some(tokio::spawn(async move {
            let Some(node) = node.upgrade() else {
                return Optimized::Superseded;
            };
            let routed = node
                .plugins
                .routes(&tenant.name)
                .is_some_and(|routes| routes.plugins.iter().any(|p| Arc::ptr_eq(p, &baseline)));
            if !routed {
                return Optimized::Superseded;
            }
            let path = baseline.path.clone();
            let purpose = Purpose::Optimize {
                plugin: baseline.name().to_owned(),
                version: Arc::as_ptr(&baseline) as usize,
            };
            let loaded = Self::load_for(
                &node,
                &tenant,
                path,
                bytes,
                config,
                Tier::Optimized,
                purpose,
            )
            .await;
            let outcome = match loaded {
                Err(LoadError::Compile {
                    error: compile::CompileError::Superseded | compile::CompileError::ShuttingDown,
                    ..
                }) => Ok((false, 0)),
                Err(error) => Err(error.to_string()),
                Ok(optimized) => {
                    let compile_ms = optimized.load_time.compile.as_millis() as u64;
                    node.plugins
                        .upgrade(&node, &tenant.name, &baseline, optimized)
                        .map(|upgraded| (upgraded, compile_ms))
                        .map_err(|error| error.to_string())
                }
            };
            match outcome {
                Ok((true, compile_ms)) => {
                    tracing::info!(
                        tenant = %tenant.name,
                        plugin = %baseline.name(),
                        version = %baseline.manifest.version,
                        compile_ms,
                        "plugin now runs optimized code"
                    );
                    Optimized::InPlace
                }
                Ok((false, _)) => {
                    tracing::debug!(
                        tenant = %tenant.name,
                        plugin = %baseline.name(),
                        "optimized build not used: a newer version (or the node's shutdown) came first"
                    );
                    Optimized::Superseded
                }
                Err(error) => {
                    node.metrics.plugin_load_failure(&tenant.name);
                    tracing::warn!(
                        tenant = %tenant.name,
                        plugin = %baseline.name(),
                        %error,
                        "optimized build failed; the baseline build keeps serving"
                    );
                    Optimized::Failed(error)
                }
            }
        }))
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

/// Starts the tick tasks of the plugins that `routes` added to `previous` (the others keep
/// theirs: a second task would tick them twice as often).
fn start_ticks(node: &Arc<Node>, tenant: &str, routes: &Routes, previous: &Routes) {
    for plugin in routes.with_hook(Hooks::ON_TICK) {
        if !previous.plugins.iter().any(|old| Arc::ptr_eq(old, plugin)) {
            spawn_ticks(node, tenant, plugin);
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
