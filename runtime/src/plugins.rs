//! WASM plugins: the host facade. `Plugins` holds every tenant's routing table (envelope type
//! to plugin, swapped atomically) and the compiler; its jobs live in the children:
//!
//! - `linker`: the linker of each tier (WASI and the Switchboard imports) and `precompile`;
//! - `load`: loading a plugin (a `.wasm` compiled in a worker, or a signed artifact) and the
//!   configured plugins at start;
//! - `routes`: the routing table, the bounds on plugins held, and atomic swaps;
//! - `tiering`: baseline code first on a swap, optimized code in its place when it is ready;
//! - `hooks`: messages, `authorize-join`, `on-connect`, `on-disconnect`, and the one reply a
//!   client gets for a routed message;
//! - `ticks`: the `on-tick` tasks of the routed versions;
//! - `services`: what the host API reaches of the node;
//! - `builds`: finished builds kept by source and tier, so a version that comes back loads
//!   without a compile;
//! - `artifact`, `code_cache`, `compile`, `engine`, `hint`, `host_api`, `pool`, `watch`:
//!   precompiled artifacts, Cranelift's incremental cache, compiling in a worker process, the
//!   engines and their epoch ticker, what to do about a plugin that does not load, the imports
//!   plugins call, one loaded version's instances, and hot reload from disk.

pub mod artifact;
pub mod builds;
pub mod code_cache;
pub mod compile;
pub mod engine;
pub mod hint;
pub mod hooks;
pub mod host_api;
pub mod linker;
pub mod load;
pub mod plugin_log;
pub mod pool;
pub mod routes;
pub mod services;
pub mod ticks;
pub mod tiering;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ArtifactKey, Config};
use crate::metrics;
use compile::Compiler;

pub use hooks::Routed;
pub use linker::PrecompileError;
pub use routes::{PluginLimit, RouteConflict, Routes, SwapError};
pub use services::HostServices;
pub use tiering::Optimized;

/// Every tenant's plugins on this node, and what their host API reaches.
#[derive(Debug)]
pub struct Plugins {
    /// Each tenant's routing table; the map itself is swapped whole when a tenant comes or
    /// goes, so the message path takes no lock.
    routes: ArcSwap<HashMap<Arc<str>, Arc<ArcSwap<Routes>>>>,
    /// Compiles of plugin code, bounded and cancellable.
    pub compiler: Compiler,
    /// What the plugins' host API reaches of the node.
    pub services: Arc<HostServices>,
    artifact_key: Option<ArtifactKey>,
    tiered_swaps: bool,
    /// The (tenant, plugin) pairs whose version the desired state decides (deployed, rolled
    /// back or deleted through the API): a change of a configured file no longer swaps them.
    deployed: parking_lot::RwLock<std::collections::HashSet<(String, String)>>,
    /// Finished builds, so a source compiles once per tier on this node.
    pub builds: builds::Builds,
}

impl Plugins {
    /// Empty routing tables for the config's tenants.
    pub fn new(config: &Config, services: Arc<HostServices>) -> Self {
        Plugins {
            compiler: Compiler::new(config, services.draining.clone()),
            routes: ArcSwap::from_pointee(
                config
                    .tenants
                    .iter()
                    .map(|tenant| {
                        (
                            Arc::from(tenant.name.as_str()),
                            Arc::new(ArcSwap::from_pointee(Routes::default())),
                        )
                    })
                    .collect(),
            ),
            services,
            artifact_key: config.artifact_key.clone(),
            tiered_swaps: config.tiered_swaps,
            deployed: Default::default(),
            builds: builds::Builds::default(),
        }
    }

    /// The current routes of a tenant.
    pub fn routes(&self, tenant: &str) -> Option<Arc<Routes>> {
        self.routes
            .load()
            .get(tenant)
            .map(|routes| routes.load_full())
    }

    /// The slot of a tenant's routing table.
    fn slot(&self, tenant: &str) -> Option<Arc<ArcSwap<Routes>>> {
        self.routes.load().get(tenant).cloned()
    }

    /// Gives a tenant created at run time an empty routing table (and its compile slots),
    /// or a tenant updated its compile slots; a tenant's routes are kept.
    pub fn add_tenant(&self, tenant: &crate::tenant::Tenant) {
        self.compiler
            .set_tenant_gate(&tenant.name, &tenant.plugin_limits);
        if self.routes.load().contains_key(&*tenant.name) {
            return;
        }
        self.routes.rcu(|current| {
            let mut next = (**current).clone();
            next.entry(tenant.name.clone())
                .or_insert_with(|| Arc::new(ArcSwap::from_pointee(Routes::default())));
            next
        });
    }

    /// Takes a deleted tenant's plugins out: calls in flight finish, its tick tasks stop,
    /// and its versions are dropped when the last call ends. Returns how many were routed.
    pub fn remove_tenant(&self, tenant: &str) -> usize {
        let mut removed = 0;
        self.routes.rcu(|current| {
            let mut next = (**current).clone();
            removed = next
                .remove(tenant)
                .map_or(0, |slot| slot.load().plugins.len());
            next
        });
        self.compiler.remove_tenant_gate(tenant);
        removed
    }

    /// Every tenant's routing table.
    pub fn all_routes(&self) -> Vec<(Arc<str>, Arc<Routes>)> {
        self.routes
            .load()
            .iter()
            .map(|(tenant, routes)| (tenant.clone(), routes.load_full()))
            .collect()
    }

    /// Whether the desired state decides the version of a tenant's plugin (`source: api`),
    /// rather than its configured file.
    pub fn is_deployed(&self, tenant: &str, plugin: &str) -> bool {
        self.deployed
            .read()
            .contains(&(tenant.to_owned(), plugin.to_owned()))
    }

    /// Records which plugins the desired state decides.
    pub fn set_deployed(&self, pairs: std::collections::HashSet<(String, String)>) {
        *self.deployed.write() = pairs;
    }

    /// Appends the plugin metrics: what each tenant holds, and the compiles.
    pub fn render_metrics(&self, out: &mut String) {
        let all = self.routes.load();
        let held: Vec<(&str, usize, usize)> = all
            .iter()
            .map(|(tenant, routes)| {
                let routes = routes.load();
                let bytes = routes.plugins.iter().map(|plugin| plugin.file_bytes).sum();
                (&**tenant, routes.plugins.len(), bytes)
            })
            .collect();
        metrics::plugins::render_held(out, &held);
        metrics::plugins::render_compiles(out, &self.compiler.figures());
        let builds = self.builds.figures();
        metrics::plugins::render_builds(out, builds.hits, builds.misses, builds.bytes);
    }
}
