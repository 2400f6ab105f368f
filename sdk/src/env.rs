//! The host's clock and this plugin's config values.

#[cfg(target_arch = "wasm32")]
use crate::__bindings::switchboard::plugin::env as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::mock::env as host;

/// Milliseconds since the Unix epoch, from the host.
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// A value from this plugin's `config` table in the tenant config.
pub fn config(key: &str) -> Option<String> {
    host::config_get(key)
}
