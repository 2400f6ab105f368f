//! A tenant's plugins: the `[[tenants.plugins]]` entries and the `plugin_limits` table (the
//! sandbox of each call, the tenant's CPU share, its compiles and the plugins it may hold).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{RawDuration, Validator};

/// One plugin of a tenant.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The `.wasm` component.
    pub path: PathBuf,
    /// Values the plugin reads with `env::config`.
    pub config: BTreeMap<String, String>,
}

/// Sandbox limits for a tenant's plugins.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// CPU time one call may take.
    pub cpu_budget: Duration,
    /// Calls in flight per plugin; past it a message gets `overloaded`.
    pub max_concurrency: usize,
    /// An instance is replaced after this many calls (1: a fresh instance per call).
    pub recycle_after: u64,
    /// Sends, broadcasts and user sends one call may make.
    pub max_sends_per_call: u32,
    /// Recipients one call may reach through `send-to-user`.
    pub max_fanout_per_call: u32,
    /// Payload bytes one call may send in total.
    pub max_bytes_per_call: usize,
    /// Key-value operations one call may make.
    pub max_kv_ops_per_call: u32,
    /// Fraction of the node's cores the tenant's plugin calls may use together (0 < x <= 1).
    pub cpu_share: f64,
    /// Bytes one plugin's key-value namespace may hold in a node's memory.
    pub kv_max_bytes: usize,
    /// Wall-clock time one compile of this tenant's code may take before it is stopped.
    pub compile_timeout: Duration,
    /// Memory (data segment, `RLIMIT_DATA`) a compile of this tenant's code may use.
    pub compile_memory_bytes: usize,
    /// This tenant's compiles running at once.
    pub compile_concurrency: usize,
    /// This tenant's uploads waiting for a compile slot; past it they are refused.
    pub compile_queue: usize,
    /// Plugins this tenant may have loaded.
    pub max_plugins: usize,
    /// Bytes of this tenant's loaded plugin files (as uploaded).
    pub max_plugin_bytes: usize,
    /// Development only: a client whose message trapped a plugin gets the plugin's panic
    /// message instead of the trap's.
    pub expose_panics: bool,
}

/// The default `plugin_limits.memory_bytes`.
pub const DEFAULT_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// The default `plugin_limits.cpu_budget`.
pub const DEFAULT_CPU_BUDGET: Duration = Duration::from_millis(100);
/// The default `plugin_limits.max_concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// The default `plugin_limits.recycle_after`.
pub const DEFAULT_RECYCLE_AFTER: usize = 10_000;
/// The default `plugin_limits.max_sends_per_call`.
pub const DEFAULT_MAX_SENDS_PER_CALL: u32 = 1000;
/// The default `plugin_limits.max_fanout_per_call`.
pub const DEFAULT_MAX_FANOUT_PER_CALL: u32 = 10_000;
/// The default `plugin_limits.max_bytes_per_call`.
pub const DEFAULT_MAX_BYTES_PER_CALL: usize = 8 * 1024 * 1024;
/// The default `plugin_limits.max_kv_ops_per_call`.
pub const DEFAULT_MAX_KV_OPS_PER_CALL: u32 = 1000;
/// The default `plugin_limits.kv_max_bytes`.
pub const DEFAULT_KV_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Default of `plugin_limits.cpu_share`: half the node's cores per tenant.
pub const DEFAULT_CPU_SHARE: f64 = 0.5;
/// Wall-clock time one compile may take.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Memory one compile may use: the example plugins compile in about 30 MiB, a crafted module
/// of a few kilobytes needs gigabytes.
pub const DEFAULT_COMPILE_MEMORY_BYTES: usize = 512 * 1024 * 1024;
/// The least memory a compile may be given: the compiler process needs about 20 MiB of its
/// own before it reads a byte of the plugin.
pub const MIN_COMPILE_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// The default `plugin_limits.compile_concurrency`: one compile of a tenant at a time.
pub const DEFAULT_TENANT_COMPILE_CONCURRENCY: usize = 1;
/// The default `plugin_limits.compile_queue`.
pub const DEFAULT_TENANT_COMPILE_QUEUE: usize = 2;
/// Plugins one tenant may have loaded.
pub const DEFAULT_TENANT_MAX_PLUGINS: usize = 16;
/// Bytes of plugin files one tenant may have loaded.
pub const DEFAULT_TENANT_MAX_PLUGIN_BYTES: usize = 128 * 1024 * 1024;

/// One raw `[[tenants.plugins]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    path: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// The raw `[tenants.plugin_limits]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPluginLimits {
    memory_bytes: Option<i64>,
    cpu_budget: Option<RawDuration>,
    max_concurrency: Option<i64>,
    recycle_after: Option<i64>,
    max_sends_per_call: Option<i64>,
    max_fanout_per_call: Option<i64>,
    max_bytes_per_call: Option<i64>,
    max_kv_ops_per_call: Option<i64>,
    cpu_share: Option<f64>,
    kv_max_bytes: Option<i64>,
    compile_timeout: Option<RawDuration>,
    compile_memory_bytes: Option<i64>,
    compile_concurrency: Option<i64>,
    compile_queue: Option<i64>,
    max_plugins: Option<i64>,
    max_plugin_bytes: Option<i64>,
    expose_panics: Option<bool>,
}

impl Validator<'_> {
    /// A tenant's plugin entries (`key` is `tenants[i].plugins`), paths resolved against the
    /// config file's folder.
    pub(super) fn tenant_plugins(&mut self, key: &str, raw: Vec<RawPlugin>) -> Vec<PluginConfig> {
        raw.into_iter()
            .enumerate()
            .map(|(index, plugin)| {
                if plugin.path.is_empty() {
                    self.issue(format!("{key}[{index}].path"), "must not be empty");
                }
                PluginConfig {
                    path: self.base_dir.join(&plugin.path),
                    config: plugin.config,
                }
            })
            .collect()
    }

    /// Checks that a tenant's configured plugins fit its own `plugin_limits.max_plugins`.
    pub(super) fn tenant_plugin_count(
        &mut self,
        key: &str,
        plugins: &[PluginConfig],
        limits: &PluginLimits,
    ) {
        if plugins.len() > limits.max_plugins {
            self.issue(
                key,
                format!(
                    "{} plugins, more than plugin_limits.max_plugins ({})",
                    plugins.len(),
                    limits.max_plugins
                ),
            );
        }
    }

    /// A tenant's `plugin_limits` table (`key` is `tenants[i].plugin_limits`).
    pub(super) fn plugin_limits(&mut self, key: &str, raw: RawPluginLimits) -> PluginLimits {
        let small = |validator: &mut Self, name: &str, value: Option<i64>, default: u32| {
            let value = validator.positive(&format!("{key}.{name}"), value, default as usize);
            u32::try_from(value).unwrap_or(u32::MAX)
        };
        PluginLimits {
            memory_bytes: self.positive(
                &format!("{key}.memory_bytes"),
                raw.memory_bytes,
                DEFAULT_MEMORY_BYTES,
            ),
            cpu_budget: self.duration(
                &format!("{key}.cpu_budget"),
                raw.cpu_budget,
                DEFAULT_CPU_BUDGET,
            ),
            max_concurrency: self.positive(
                &format!("{key}.max_concurrency"),
                raw.max_concurrency,
                DEFAULT_MAX_CONCURRENCY,
            ),
            recycle_after: self.positive(
                &format!("{key}.recycle_after"),
                raw.recycle_after,
                DEFAULT_RECYCLE_AFTER,
            ) as u64,
            max_sends_per_call: small(
                self,
                "max_sends_per_call",
                raw.max_sends_per_call,
                DEFAULT_MAX_SENDS_PER_CALL,
            ),
            max_fanout_per_call: small(
                self,
                "max_fanout_per_call",
                raw.max_fanout_per_call,
                DEFAULT_MAX_FANOUT_PER_CALL,
            ),
            max_bytes_per_call: self.positive(
                &format!("{key}.max_bytes_per_call"),
                raw.max_bytes_per_call,
                DEFAULT_MAX_BYTES_PER_CALL,
            ),
            max_kv_ops_per_call: small(
                self,
                "max_kv_ops_per_call",
                raw.max_kv_ops_per_call,
                DEFAULT_MAX_KV_OPS_PER_CALL,
            ),
            kv_max_bytes: self.positive(
                &format!("{key}.kv_max_bytes"),
                raw.kv_max_bytes,
                DEFAULT_KV_MAX_BYTES,
            ),
            cpu_share: match raw.cpu_share {
                None => DEFAULT_CPU_SHARE,
                Some(share) if share > 0.0 && share <= 1.0 => share,
                Some(_) => {
                    self.issue(
                        format!("{key}.cpu_share"),
                        "must be a fraction of the node's cores above 0 and at most 1",
                    );
                    DEFAULT_CPU_SHARE
                }
            },
            compile_timeout: self.duration(
                &format!("{key}.compile_timeout"),
                raw.compile_timeout,
                DEFAULT_COMPILE_TIMEOUT,
            ),
            compile_memory_bytes: self.at_least(
                &format!("{key}.compile_memory_bytes"),
                raw.compile_memory_bytes,
                DEFAULT_COMPILE_MEMORY_BYTES,
                MIN_COMPILE_MEMORY_BYTES,
            ),
            compile_concurrency: self.positive(
                &format!("{key}.compile_concurrency"),
                raw.compile_concurrency,
                DEFAULT_TENANT_COMPILE_CONCURRENCY,
            ),
            compile_queue: self.count(
                &format!("{key}.compile_queue"),
                raw.compile_queue,
                DEFAULT_TENANT_COMPILE_QUEUE,
            ),
            max_plugins: self.positive(
                &format!("{key}.max_plugins"),
                raw.max_plugins,
                DEFAULT_TENANT_MAX_PLUGINS,
            ),
            max_plugin_bytes: self.positive(
                &format!("{key}.max_plugin_bytes"),
                raw.max_plugin_bytes,
                DEFAULT_TENANT_MAX_PLUGIN_BYTES,
            ),
            expose_panics: raw.expose_panics.unwrap_or(false),
        }
    }
}
