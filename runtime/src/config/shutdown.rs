//! The `[shutdown]` section: how long a graceful shutdown waits for connections to close.

use std::time::Duration;

use serde::Deserialize;

use super::{RawDuration, Validator};

/// The default `shutdown.drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The raw `[shutdown]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    drain_timeout: Option<RawDuration>,
}

impl Validator<'_> {
    /// The validated `shutdown.drain_timeout`.
    pub(super) fn drain_timeout(&mut self, raw: RawShutdown) -> Duration {
        self.duration(
            "shutdown.drain_timeout",
            raw.drain_timeout,
            DEFAULT_DRAIN_TIMEOUT,
        )
    }
}
