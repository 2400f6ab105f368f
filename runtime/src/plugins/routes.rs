//! A tenant's routing table (envelope type to plugin), the bounds on the plugins it holds,
//! and the atomic swaps that change it: calls in flight finish on the versions they started
//! on, new messages go to the new ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Plugins;
use super::pool::LoadedPlugin;
use super::ticks;
use crate::tenant::Tenant;
use crate::wit::Hooks;

/// A tenant's plugins and the type routing built from their manifests.
#[derive(Debug, Default)]
pub struct Routes {
    /// Every plugin, in load order.
    pub plugins: Vec<Arc<LoadedPlugin>>,
    by_type: HashMap<String, Arc<LoadedPlugin>>,
    /// The one plugin with the `raw-handler` export, which takes a raw-frame tenant's messages.
    frames: Option<Arc<LoadedPlugin>>,
}

impl Routes {
    /// Builds the routing table; two plugins claiming one type is an error naming both.
    pub fn new(plugins: Vec<Arc<LoadedPlugin>>) -> Result<Routes, RouteConflict> {
        let mut by_type: HashMap<String, Arc<LoadedPlugin>> = HashMap::new();
        let mut names: HashMap<&str, ()> = HashMap::new();
        let mut frames: Option<Arc<LoadedPlugin>> = None;
        for plugin in &plugins {
            if plugin.takes_frames() {
                if let Some(first) = &frames {
                    return Err(RouteConflict::TwoFrameHandlers {
                        first: first.name().to_owned(),
                        second: plugin.name().to_owned(),
                    });
                }
                frames = Some(plugin.clone());
            }
            if names.insert(plugin.name(), ()).is_some() {
                return Err(RouteConflict::SameName(plugin.name().to_owned()));
            }
            for handled in &plugin.manifest.handles {
                if let Some(other) = by_type.get(handled) {
                    return Err(RouteConflict::SameType {
                        msg_type: handled.clone(),
                        first: other.name().to_owned(),
                        second: plugin.name().to_owned(),
                    });
                }
                by_type.insert(handled.clone(), plugin.clone());
            }
        }
        Ok(Routes {
            plugins,
            by_type,
            frames,
        })
    }

    /// The plugin that declared `msg_type`.
    pub fn handler(&self, msg_type: &str) -> Option<&Arc<LoadedPlugin>> {
        self.by_type.get(msg_type)
    }

    /// The plugin that takes raw frames, if any.
    pub fn frame_handler(&self) -> Option<&Arc<LoadedPlugin>> {
        self.frames.as_ref()
    }

    /// The plugins that declared `hook`, in load order.
    pub fn with_hook(&self, hook: Hooks) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins
            .iter()
            .filter(move |plugin| plugin.manifest.hooks.contains(hook))
    }
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

/// Two plugins of one tenant that cannot be routed side by side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteConflict {
    /// Two plugins have the same name.
    #[error("two plugins are named `{0}`")]
    SameName(String),
    /// Two plugins declared the same envelope type.
    #[error("type `{msg_type}` is claimed by both `{first}` and `{second}`")]
    SameType {
        /// The type.
        msg_type: String,
        /// The plugin that claimed it first.
        first: String,
        /// The plugin that claimed it too.
        second: String,
    },
    /// Two plugins export `raw-handler`: a raw-frame tenant's messages would have two homes.
    #[error(
        "both `{first}` and `{second}` export `raw-handler`; a tenant takes raw frames through one plugin"
    )]
    TwoFrameHandlers {
        /// The plugin that had it first.
        first: String,
        /// The plugin that has it too.
        second: String,
    },
}

/// Why a new version was not swapped in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    /// Its name or types clash with another plugin's.
    #[error(transparent)]
    Conflict(RouteConflict),
    /// The tenant is not one of the node's.
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    /// It would pass a bound on the plugins held.
    #[error("{0}")]
    Limit(PluginLimit),
}

impl Plugins {
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
        for (other, routes) in self.routes.load().iter() {
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

    /// Swaps a tenant's routing table atomically: calls in flight finish on the old versions,
    /// new messages go to the new ones. Starts the tick tasks of the new plugins.
    pub fn install(self: &Arc<Self>, tenant: &str, routes: Routes) {
        let Some(slot) = self.slot(tenant) else {
            return;
        };
        let routes = Arc::new(routes);
        let previous = slot.swap(routes.clone());
        ticks::start(self, tenant, &routes, &previous);
    }

    /// Applies `change` to a tenant's current routes and swaps the result in, retrying if
    /// another swap landed meanwhile (so two swaps never undo each other). `Ok(false)` when
    /// `change` declines.
    fn update(
        self: &Arc<Self>,
        tenant: &str,
        change: impl Fn(&Routes) -> Result<Option<Routes>, SwapError>,
    ) -> Result<bool, SwapError> {
        let Some(slot) = self.slot(tenant) else {
            return Err(SwapError::UnknownTenant(tenant.to_owned()));
        };
        loop {
            let current = slot.load_full();
            let Some(routes) = change(&current)? else {
                return Ok(false);
            };
            let routes = Arc::new(routes);
            let previous = slot.compare_and_swap(&current, routes.clone());
            if Arc::ptr_eq(&*previous, &current) {
                ticks::start(self, tenant, &routes, &current);
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
        self: &Arc<Self>,
        tenant: &Tenant,
        plugin: Arc<LoadedPlugin>,
    ) -> Result<(), SwapError> {
        // Whether the swap that landed replaced a version (the last attempt's answer).
        let replaced = std::cell::Cell::new(false);
        self.update(&tenant.name, |current| {
            self.room_in(tenant, current, Some(plugin.name()), plugin.file_bytes)
                .map_err(SwapError::Limit)?;
            let mut plugins: Vec<Arc<LoadedPlugin>> = current
                .plugins
                .iter()
                .filter(|existing| existing.name() != plugin.name())
                .cloned()
                .collect();
            replaced.set(plugins.len() < current.plugins.len());
            plugins.push(plugin.clone());
            Routes::new(plugins).map(Some).map_err(SwapError::Conflict)
        })?;
        if replaced.get() {
            plugin.series.reloaded();
        }
        Ok(())
    }

    /// Checks, without swapping, that `plugin` could replace the tenant's version of the same
    /// name now: what `replace` would refuse, it refuses.
    pub fn would_replace(
        &self,
        tenant: &Tenant,
        plugin: &Arc<LoadedPlugin>,
    ) -> Result<(), SwapError> {
        let current = self
            .routes(&tenant.name)
            .ok_or_else(|| SwapError::UnknownTenant(tenant.name.to_string()))?;
        self.room_in(tenant, &current, Some(plugin.name()), plugin.file_bytes)
            .map_err(SwapError::Limit)?;
        let plugins = current
            .plugins
            .iter()
            .filter(|existing| existing.name() != plugin.name())
            .cloned()
            .chain(std::iter::once(plugin.clone()))
            .collect();
        Routes::new(plugins).map(drop).map_err(SwapError::Conflict)
    }

    /// Takes plugin `name` out of the tenant's routes, atomically: calls in flight finish, its
    /// types answer `unknown_type` from the next message on, its ticks stop. Returns the
    /// version that was routed, `None` when the tenant has no such plugin.
    pub fn remove(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Arc<LoadedPlugin>>, SwapError> {
        let removed = std::cell::RefCell::new(None);
        self.update(tenant, |current| {
            let Some(found) = current.plugins.iter().find(|plugin| plugin.name() == name) else {
                *removed.borrow_mut() = None;
                return Ok(None);
            };
            *removed.borrow_mut() = Some(found.clone());
            let rest = current
                .plugins
                .iter()
                .filter(|plugin| plugin.name() != name)
                .cloned()
                .collect();
            Routes::new(rest).map(Some).map_err(SwapError::Conflict)
        })?;
        Ok(removed.into_inner())
    }

    /// Swaps `optimized` in for `baseline` if `baseline` is still the routed version (a newer
    /// upload wins over an older version's optimized build). Its call counts carry over.
    pub(super) fn upgrade(
        self: &Arc<Self>,
        tenant: &str,
        baseline: &Arc<LoadedPlugin>,
        optimized: Arc<LoadedPlugin>,
    ) -> Result<bool, SwapError> {
        self.update(tenant, |current| {
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
}
