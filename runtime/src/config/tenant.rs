//! The `[[tenants]]` entries: a tenant's name, publish key and allowed origins, with its
//! sections (`jwt`, `limits`, `history`, `presence`, `plugins`, `plugin_limits`) gathered.

use serde::Deserialize;

use super::history::{HistoryConfig, RawHistory};
use super::jwt::{JwtConfig, RawJwt};
use super::limits::{RawLimits, TenantLimits};
use super::presence::RawPresence;
use super::tenant_plugins::{PluginConfig, PluginLimits, RawPlugin, RawPluginLimits};
use super::{RawSecret, Validator};

/// One tenant's settings.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// Name used in `/ws/{tenant}` and the publish API.
    pub name: String,
    /// Bearer key for `POST /api/publish`; without one the tenant has no publish API.
    pub api_key: Option<String>,
    /// `Origin` values accepted on upgrade; empty means any.
    pub allowed_origins: Vec<String>,
    /// How tokens are verified.
    pub jwt: JwtConfig,
    /// Connection and message limits.
    pub limits: TenantLimits,
    /// Per-channel history kept for recovery.
    pub history: HistoryConfig,
    /// Channel patterns (`*` wildcards) in which presence is off.
    pub presence_disabled: Vec<String>,
    /// WASM plugins, in load order.
    pub plugins: Vec<PluginConfig>,
    /// Sandbox limits of this tenant's plugins.
    pub plugin_limits: PluginLimits,
    /// What the tenant's connections speak.
    pub protocol: TenantProtocol,
}

/// What a tenant's connections speak (`protocol` in its `[[tenants]]` table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantProtocol {
    /// `"envelope"`, the default: JSON envelopes (docs/protocol.md), built-in types, rooms.
    #[default]
    Envelope,
    /// `"raw"`: no welcome and no envelopes; every text and binary message goes to the
    /// tenant's frame plugin (the one that exports `raw-handler`), which answers with frames.
    Raw,
}

/// Longest accepted tenant name, in bytes.
const MAX_TENANT_NAME_BYTES: usize = 64;

/// One raw `[[tenants]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    name: String,
    api_key: Option<RawSecret>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    jwt: RawJwt,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    history: RawHistory,
    #[serde(default)]
    presence: RawPresence,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
    #[serde(default)]
    plugin_limits: RawPluginLimits,
    #[serde(default)]
    protocol: TenantProtocol,
}

impl Validator<'_> {
    /// The `[[tenants]]` entries; their plugins together must fit `node_max_plugins`
    /// (`plugins.max_plugins`). A tenant whose token key is unusable is left out.
    pub(super) fn tenants(
        &mut self,
        raw: Vec<RawTenant>,
        node_max_plugins: usize,
    ) -> Vec<TenantConfig> {
        if raw.is_empty() {
            self.issue("tenants", "at least one tenant is required");
        }
        let configured_plugins: usize = raw.iter().map(|tenant| tenant.plugins.len()).sum();
        if configured_plugins > node_max_plugins {
            self.issue(
                "plugins.max_plugins",
                format!(
                    "the tenants configure {configured_plugins} plugins, more than this node holds"
                ),
            );
        }
        let mut tenants = Vec::with_capacity(raw.len());
        for (index, tenant) in raw.into_iter().enumerate() {
            let key = format!("tenants[{index}]");
            if tenants
                .iter()
                .any(|existing: &TenantConfig| existing.name == tenant.name)
            {
                self.issue(
                    format!("{key}.name"),
                    format!("tenant `{}` is defined twice", tenant.name),
                );
            }
            if let Some(valid) = self.tenant(&key, tenant) {
                tenants.push(valid);
            }
        }
        tenants
    }

    pub(super) fn tenant(&mut self, key: &str, raw: RawTenant) -> Option<TenantConfig> {
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= MAX_TENANT_NAME_BYTES
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            self.issue(
                format!("{key}.name"),
                format!(
                    "`{}` is not a tenant name (1..64 of A-Z a-z 0-9 - _)",
                    raw.name
                ),
            );
        }
        let api_key = raw
            .api_key
            .and_then(|secret| self.secret(&format!("{key}.api_key"), secret));
        if api_key.as_deref() == Some("") {
            self.issue(format!("{key}.api_key"), "must not be empty");
        }
        for (index, origin) in raw.allowed_origins.iter().enumerate() {
            if origin == "null" {
                // Opaque origins (sandboxed frames, file: pages) all send `null`: it names no one.
                self.issue(
                    format!("{key}.allowed_origins[{index}]"),
                    "`null` cannot be allowed: every opaque origin sends it",
                );
            } else if origin.is_empty() || origin.ends_with('/') {
                self.issue(
                    format!("{key}.allowed_origins[{index}]"),
                    format!("`{origin}` is not an origin such as https://example.com"),
                );
            }
        }
        let jwt = self.jwt(&format!("{key}.jwt"), raw.jwt);
        let limits = self.limits(&format!("{key}.limits"), raw.limits);
        let history = self.history(&format!("{key}.history"), raw.history);
        let presence_disabled = self.presence_disabled(&format!("{key}.presence"), raw.presence);
        let plugins_key = format!("{key}.plugins");
        if self.inline_only && !raw.plugins.is_empty() {
            self.issue(
                &plugins_key,
                "deploy plugins with PUT /api/tenants/{tenant}/plugins/{name}",
            );
        }
        let plugins = self.tenant_plugins(&plugins_key, raw.plugins);
        let plugin_limits = self.plugin_limits(&format!("{key}.plugin_limits"), raw.plugin_limits);
        self.tenant_plugin_count(&plugins_key, &plugins, &plugin_limits);
        Some(TenantConfig {
            name: raw.name,
            api_key,
            allowed_origins: raw.allowed_origins,
            jwt: jwt?,
            limits,
            history,
            presence_disabled,
            plugins,
            plugin_limits,
            protocol: raw.protocol,
        })
    }
}
