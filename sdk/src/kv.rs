//! Key-value state scoped to the tenant and the plugin; it outlives instances and, on the
//! Redis backplane, is shared by every node.
//!
//! Every write gives an entry a new version, unique within the namespace (a version seen once
//! never comes back, even after a delete). [`get_versioned`] and [`compare_and_set`] make a
//! read-change-write safe when calls overlap (on one node or many); [`update_json`] wraps
//! them in a retry loop. [`incr`] is atomic on its own.
//!
//! # Limits
//!
//! The same on every store (a node's memory, Redis, and the [`mock`](crate::mock) host):
//!
//! | what | bound | past it |
//! |---|---|---|
//! | a key (and a `list` prefix or cursor) | 1 to [`MAX_KEY_BYTES`] bytes | `invalid` |
//! | a value | [`MAX_VALUE_BYTES`] bytes | `too-large` |
//! | entries in the namespace | [`MAX_ENTRIES`] | `too-large` |
//! | bytes in the namespace | `plugin_limits.kv_max_bytes` (64 MiB), counting key + value + [`ENTRY_COST`] per entry | `too-large` |
//! | keys in one `list` page | 1 to [`MAX_LIST_PAGE`] | `invalid` |
//! | operations in one call | `plugin_limits.max_kv_ops_per_call` (1000) | `rate-limited` |
//!
//! Expired entries are never read or listed, and make room before a write is refused.

#[cfg(target_arch = "wasm32")]
use crate::__bindings::switchboard::plugin::kv as host;
#[cfg(target_arch = "wasm32")]
use crate::__bindings::switchboard::plugin::kv_versioned as versioned_host;
#[cfg(not(target_arch = "wasm32"))]
use crate::mock::kv as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::mock::kv as versioned_host;
use crate::{HandlerError, HostError};

/// Longest key (and `list` prefix or cursor) in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Entries one namespace may hold.
pub const MAX_ENTRIES: usize = 100_000;
/// Most keys one [`list`] answers.
pub const MAX_LIST_PAGE: u32 = 100;
/// What an entry costs toward `plugin_limits.kv_max_bytes` beside its key and value.
pub const ENTRY_COST: usize = 96;
/// Attempts [`update_json`] makes before it gives up with `conflict`.
pub const UPDATE_ATTEMPTS: u32 = 16;

/// A value and the version its last write gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Pass it to [`compare_and_set`] to write only if nobody wrote since.
    pub version: u64,
}

/// One page of keys, in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<String>,
    /// More keys match after the last one: pass it as `after` for the next page.
    pub more: bool,
}

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

/// Adds `delta` to the integer at `key` (0 when absent) and returns the new value, atomically;
/// the entry keeps its expiry.
pub fn incr(key: &str, delta: i64) -> Result<i64, HostError> {
    host::incr(key, delta)
}

/// The value of `key` and its version, if any.
pub fn get_versioned(key: &str) -> Result<Option<Versioned<Vec<u8>>>, HostError> {
    Ok(versioned_host::get_versioned(key)?.map(|entry| Versioned {
        value: entry.value,
        version: entry.version,
    }))
}

/// Writes `value` only if `key` is at `expected` (`None`: only if absent), optionally expiring
/// after `ttl_ms`. The new version, or `None` when the entry was not at `expected` (nothing
/// was written: read it again and retry).
pub fn compare_and_set(
    key: &str,
    expected: Option<u64>,
    value: &[u8],
    ttl_ms: Option<u64>,
) -> Result<Option<u64>, HostError> {
    versioned_host::compare_and_set(key, expected, value, ttl_ms)
}

/// Deletes `key` only if it is at version `expected`; true when it was deleted.
pub fn compare_and_delete(key: &str, expected: u64) -> Result<bool, HostError> {
    versioned_host::compare_and_delete(key, expected)
}

/// Live keys that start with `prefix`, in byte order, after `after` when given, at most
/// `limit` (1 to [`MAX_LIST_PAGE`]). Each page is one operation toward the per-call quota.
pub fn list(prefix: &str, after: Option<&str>, limit: u32) -> Result<KeyPage, HostError> {
    let page = versioned_host::list(prefix, after, limit)?;
    Ok(KeyPage {
        keys: page.keys,
        more: page.more,
    })
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, HostError> {
    serde_json::from_slice(bytes).map_err(|error| {
        HostError::Invalid(format!("the value at `{key}` does not decode: {error}"))
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, HostError> {
    serde_json::to_vec(value).map_err(|error| HostError::Invalid(error.to_string()))
}

/// The value of `key` decoded from JSON; `None` when absent. A value that does not decode as
/// `T` (say, a record written before a field was added) is an `invalid` error naming the key,
/// never `None`: give new fields `#[serde(default)]`.
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, HostError> {
    get(key)?.map(|bytes| decode(key, &bytes)).transpose()
}

/// [`get_json`] with the entry's version.
pub fn get_json_versioned<T: serde::de::DeserializeOwned>(
    key: &str,
) -> Result<Option<Versioned<T>>, HostError> {
    get_versioned(key)?
        .map(|entry| {
            Ok(Versioned {
                value: decode(key, &entry.value)?,
                version: entry.version,
            })
        })
        .transpose()
}

/// Stores a value as JSON.
pub fn set_json<T: serde::Serialize>(
    key: &str,
    value: &T,
    ttl_ms: Option<u64>,
) -> Result<(), HostError> {
    set(key, &encode(value)?, ttl_ms)
}

/// [`compare_and_set`] with a value stored as JSON.
pub fn compare_and_set_json<T: serde::Serialize>(
    key: &str,
    expected: Option<u64>,
    value: &T,
    ttl_ms: Option<u64>,
) -> Result<Option<u64>, HostError> {
    compare_and_set(key, expected, &encode(value)?, ttl_ms)
}

/// Reads the JSON value at `key` (`None` when absent), lets `change` make the next one, and
/// writes it only if nobody wrote in between; otherwise reads again and retries, up to
/// [`UPDATE_ATTEMPTS`] times (then the error `conflict`). An error from `change` stops it
/// and writes nothing. Returns what was written and its version.
///
/// ```no_run
/// use switchboard_sdk::kv;
/// # fn vote() -> Result<(), switchboard_sdk::HandlerError> {
/// let tally = kv::update_json("poll:1", None, |tally: Option<Vec<u32>>| {
///     let mut tally = tally.unwrap_or_else(|| vec![0; 3]);
///     tally[1] += 1;
///     Ok(tally)
/// })?;
/// # Ok(()) }
/// ```
pub fn update_json<T, F>(
    key: &str,
    ttl_ms: Option<u64>,
    mut change: F,
) -> Result<Versioned<T>, HandlerError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: FnMut(Option<T>) -> Result<T, HandlerError>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let current = get_json_versioned::<T>(key)?;
        let expected = current.as_ref().map(|entry| entry.version);
        let next = change(current.map(|entry| entry.value))?;
        if let Some(version) = compare_and_set_json(key, expected, &next, ttl_ms)? {
            return Ok(Versioned {
                value: next,
                version,
            });
        }
    }
    Err(HandlerError::conflict(format!(
        "`{key}` kept changing: {UPDATE_ATTEMPTS} attempts lost the race"
    )))
}
