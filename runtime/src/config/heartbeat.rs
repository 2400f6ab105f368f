//! The `[heartbeat]` section: how often connections are pinged and how long silence is allowed.

use std::time::Duration;

use serde::Deserialize;

use super::{RawDuration, Validator};

/// The default `heartbeat.interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// The default `heartbeat.timeout`.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// The raw `[heartbeat]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeat {
    interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
}

/// The validated `[heartbeat]` table (flattened into `Config`).
pub(super) struct Heartbeat {
    /// Ping interval.
    pub(super) interval: Duration,
    /// How long after a ping a silent connection is presumed dead.
    pub(super) timeout: Duration,
}

impl Validator<'_> {
    /// The validated `[heartbeat]` table.
    pub(super) fn heartbeat(&mut self, raw: RawHeartbeat) -> Heartbeat {
        Heartbeat {
            interval: self.duration(
                "heartbeat.interval",
                raw.interval,
                DEFAULT_HEARTBEAT_INTERVAL,
            ),
            timeout: self.duration("heartbeat.timeout", raw.timeout, DEFAULT_HEARTBEAT_TIMEOUT),
        }
    }
}
