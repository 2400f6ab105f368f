//! `on-tick`: one task per routed version that declared it, calling it on its interval until
//! the version is no longer routed or the node drains.

use std::sync::Arc;
use std::time::Duration;

use super::pool::{Call, LoadedPlugin};
use super::{Plugins, Routes};
use crate::wit::Hooks;

/// Starts the tick tasks of the plugins that `routes` added to `previous` (the others keep
/// theirs: a second task would tick them twice as often).
pub(super) fn start(plugins: &Arc<Plugins>, tenant: &str, routes: &Routes, previous: &Routes) {
    for plugin in routes.with_hook(Hooks::ON_TICK) {
        if !previous.plugins.iter().any(|old| Arc::ptr_eq(old, plugin)) {
            spawn(plugins, tenant, plugin);
        }
    }
}

/// Calls `on-tick` on the plugin's interval for as long as it is the routed version.
fn spawn(plugins: &Arc<Plugins>, tenant: &str, plugin: &Arc<LoadedPlugin>) {
    let Some(interval_ms) = plugin.manifest.tick_interval_ms else {
        return;
    };
    let plugins = Arc::downgrade(plugins);
    let weak_plugin = Arc::downgrade(plugin);
    let tenant: Arc<str> = Arc::from(tenant);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(u64::from(interval_ms)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let (Some(plugins), Some(plugin)) = (plugins.upgrade(), weak_plugin.upgrade()) else {
                break;
            };
            let current = plugins
                .routes(&tenant)
                .is_some_and(|routes| routes.plugins.iter().any(|p| Arc::ptr_eq(p, &plugin)));
            if !current || plugins.services.is_draining() {
                break;
            }
            let _ = plugin
                .call(Call::Tick(crate::clock::unix_millis()), true)
                .await;
        }
    });
}
