//! A tenant at run time: its verifier, origin policy, API key, limits, presence policy and
//! connection count. The configured tenants are the seed; the operator's tenant API creates,
//! updates and deletes tenants while the node runs (`deployments` applies those records here).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use crate::auth::{KeyError, OriginPolicy, TokenVerifier};
use crate::config::{
    Config, HistoryConfig, PluginLimits, TenantConfig, TenantLimits, TenantProtocol,
};
use crate::cpu_share::CpuShare;
use crate::metrics::TenantMetrics;

/// One version of a tenant's settings. An update makes a new version that shares the
/// previous one's connection count, counters and CPU share, so a change never resets a limit
/// in force or a metric series; a connection keeps the version it was accepted under.
#[derive(Debug)]
pub struct Tenant {
    /// Its name.
    pub name: Arc<str>,
    /// Verifies its tokens.
    pub verifier: TokenVerifier,
    /// Its `Origin` allow-list.
    pub origins: OriginPolicy,
    /// The key of its publish API.
    pub api_key: Option<String>,
    /// Its limits.
    pub limits: TenantLimits,
    /// Its history settings.
    pub history: HistoryConfig,
    /// Sandbox limits of its plugins.
    pub plugin_limits: PluginLimits,
    /// Its plugins' share of the node's CPU.
    pub cpu: Arc<CpuShare>,
    /// What its connections speak.
    pub protocol: TenantProtocol,
    presence_disabled: Vec<String>,
    connections: Arc<AtomicUsize>,
    /// Set when the tenant is deleted (shared by its versions), so a connection that was
    /// upgrading meanwhile is closed too.
    removed: Arc<AtomicBool>,
    /// Set when the tenant API made the tenant anew (shared by its versions): the config
    /// file's plugins of that name are not its own.
    files_off: Arc<AtomicBool>,
    /// Its counters.
    pub metrics: Arc<TenantMetrics>,
    /// The settings it was built from.
    pub config: TenantConfig,
}

impl Tenant {
    /// Builds a tenant; fails when its key material is unusable.
    pub fn new(config: &TenantConfig) -> Result<Self, KeyError> {
        Self::next(config, None)
    }

    /// Builds a tenant, carrying over the count, counters and (unless its share changed) the
    /// CPU budget of the version it replaces.
    fn next(config: &TenantConfig, previous: Option<&Tenant>) -> Result<Self, KeyError> {
        let cpu = match previous {
            Some(previous)
                if previous.config.plugin_limits.cpu_share == config.plugin_limits.cpu_share =>
            {
                previous.cpu.clone()
            }
            _ => Arc::new(CpuShare::new(CpuShare::cores_for(
                config.plugin_limits.cpu_share,
            ))),
        };
        Ok(Tenant {
            name: Arc::from(config.name.as_str()),
            verifier: TokenVerifier::new(&config.jwt)?,
            origins: OriginPolicy::new(&config.allowed_origins),
            api_key: config.api_key.clone(),
            limits: config.limits.clone(),
            history: config.history.clone(),
            plugin_limits: config.plugin_limits.clone(),
            cpu,
            protocol: config.protocol,
            presence_disabled: config.presence_disabled.clone(),
            connections: previous
                .map(|previous| previous.connections.clone())
                .unwrap_or_default(),
            removed: previous
                .map(|previous| previous.removed.clone())
                .unwrap_or_default(),
            files_off: previous
                .map(|previous| previous.files_off.clone())
                .unwrap_or_default(),
            metrics: previous
                .map(|previous| previous.metrics.clone())
                .unwrap_or_default(),
            config: config.clone(),
        })
    }

    /// Whether joins and leaves in this channel are announced and listed.
    pub fn presence_enabled(&self, channel: &str) -> bool {
        !self
            .presence_disabled
            .iter()
            .any(|pattern| glob_match(pattern, channel))
    }

    /// Whether joins and leaves in this channel are announced to its members with
    /// `presence:*` envelopes: never in a raw-frame tenant, whose clients get no envelope the
    /// plugin did not send (its members are still listed).
    pub fn announces_presence(&self, channel: &str) -> bool {
        self.protocol == TenantProtocol::Envelope && self.presence_enabled(channel)
    }

    /// Whether the tenant was deleted.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Whether the plugin files the config names for this tenant are its own: not once it
    /// was deleted, nor when the tenant API made it anew under that name.
    pub fn serves_configured_files(&self) -> bool {
        !self.is_removed() && !self.files_off.load(Ordering::SeqCst)
    }

    /// Disowns the config file's plugins of this name; `true` if they were its own until now.
    pub fn disown_configured_files(&self) -> bool {
        !self.files_off.swap(true, Ordering::SeqCst)
    }

    /// Live connections of this tenant on this node.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Takes a connection slot under the tenant's limit; the slot frees itself when dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<TenantSlot> {
        let limit = self.limits.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < limit).then_some(count + 1)
            })
            .ok()
            .map(|_| TenantSlot(self.clone()))
    }
}

/// A connection slot of a tenant, released on drop.
#[derive(Debug)]
pub struct TenantSlot(Arc<Tenant>);

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(index) => rest = &rest[index + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// All tenants by name, swapped whole on a change so a lookup takes no lock.
#[derive(Debug)]
pub struct Tenants {
    by_name: ArcSwap<HashMap<String, Arc<Tenant>>>,
    /// Serializes changes, so two never build on the same old map.
    changing: parking_lot::Mutex<()>,
}

impl Tenants {
    /// Builds every tenant of a config; each error names the tenant key.
    pub fn new(config: &Config) -> Result<Self, Vec<String>> {
        let mut by_name = HashMap::new();
        let mut errors = Vec::new();
        for (index, tenant_config) in config.tenants.iter().enumerate() {
            match Tenant::new(tenant_config) {
                Ok(tenant) => {
                    by_name.insert(tenant_config.name.clone(), Arc::new(tenant));
                }
                Err(error) => errors.push(format!("tenants[{index}].jwt: {error}")),
            }
        }
        if errors.is_empty() {
            Ok(Tenants {
                by_name: ArcSwap::from_pointee(by_name),
                changing: parking_lot::Mutex::new(()),
            })
        } else {
            Err(errors)
        }
    }

    /// A tenant by name.
    pub fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        self.by_name.load().get(name).cloned()
    }

    /// Every tenant, sorted by name.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        let mut tenants: Vec<_> = self.by_name.load().values().cloned().collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        tenants
    }

    /// Creates a tenant, or makes `config` its settings from now on (new connections and
    /// new messages see them; its count and counters carry over). The new version.
    pub fn upsert(&self, config: &TenantConfig) -> Result<Arc<Tenant>, KeyError> {
        let _changing = self.changing.lock();
        let current = self.by_name.load_full();
        let tenant = Arc::new(Tenant::next(
            config,
            current.get(&config.name).map(|t| &**t),
        )?);
        let mut next = (*current).clone();
        next.insert(config.name.clone(), tenant.clone());
        self.by_name.store(Arc::new(next));
        Ok(tenant)
    }

    /// Takes a tenant out; new upgrades and API calls naming it get 404 from now on.
    pub fn remove(&self, name: &str) -> Option<Arc<Tenant>> {
        let _changing = self.changing.lock();
        let current = self.by_name.load_full();
        let removed = current.get(name).cloned()?;
        removed.removed.store(true, Ordering::SeqCst);
        let mut next = (*current).clone();
        next.remove(name);
        self.by_name.store(Arc::new(next));
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_patterns() {
        let cases = [
            ("dashboard*", "dashboard", true),
            ("dashboard*", "dashboard-eu", true),
            ("dashboard*", "dash", false),
            ("*-live", "scores-live", true),
            ("*-live", "scores-lives", false),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-x-c", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "", true),
            ("ab*ba", "aba", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} vs {text}");
        }
    }
}
