//! A tenant's `history` table: the messages kept per channel for `since` recovery and the
//! bytes they may hold on a node.

use std::time::Duration;

use serde::Deserialize;

use super::{RawDuration, Validator};

/// Per-channel history settings.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Messages kept per channel; 0 turns recovery off.
    pub size: usize,
    /// How long a channel's history outlives its last message.
    pub ttl: Duration,
    /// Bytes of history the tenant keeps on a node across all its channels; past it the
    /// oldest messages go first.
    pub max_bytes: usize,
}

/// The default `history.size`.
pub const DEFAULT_HISTORY_SIZE: usize = 100;
/// The default `history.ttl`.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);
/// Default of `history.max_bytes`: 64 MiB of a tenant's history per node.
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The raw `[tenants.history]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    size: Option<i64>,
    ttl: Option<RawDuration>,
    max_bytes: Option<i64>,
}

impl Validator<'_> {
    /// A tenant's `history` table (`key` is `tenants[i].history`).
    pub(super) fn history(&mut self, key: &str, raw: RawHistory) -> HistoryConfig {
        HistoryConfig {
            size: self.count(&format!("{key}.size"), raw.size, DEFAULT_HISTORY_SIZE),
            ttl: self.duration(&format!("{key}.ttl"), raw.ttl, DEFAULT_HISTORY_TTL),
            max_bytes: self.count(
                &format!("{key}.max_bytes"),
                raw.max_bytes,
                DEFAULT_HISTORY_MAX_BYTES,
            ),
        }
    }
}
