//! Key-value state scoped to the tenant and the plugin; it outlives instances.

#[cfg(target_arch = "wasm32")]
use crate::__bindings::switchboard::plugin::kv as host;
use crate::HostError;
#[cfg(not(target_arch = "wasm32"))]
use crate::mock::kv as host;

/// The value of `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
    host::get(key)
}

/// Sets `key`, optionally expiring after `ttl_ms`.
pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), HostError> {
    host::set(key, value, ttl_ms)
}

/// Deletes `key`; true if it existed.
pub fn delete(key: &str) -> Result<bool, HostError> {
    host::delete(key)
}

/// Adds `delta` to the integer at `key` (0 when absent) and returns the new value.
pub fn incr(key: &str, delta: i64) -> Result<i64, HostError> {
    host::incr(key, delta)
}

/// The value of `key` decoded from JSON; `None` when absent or not valid JSON for `T`.
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, HostError> {
    Ok(get(key)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Stores a value as JSON.
pub fn set_json<T: serde::Serialize>(
    key: &str,
    value: &T,
    ttl_ms: Option<u64>,
) -> Result<(), HostError> {
    let bytes = serde_json::to_vec(value).map_err(|error| HostError::Invalid(error.to_string()))?;
    set(key, &bytes, ttl_ms)
}
