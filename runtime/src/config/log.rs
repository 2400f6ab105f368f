//! The `[log]` section: how log lines are written and which are kept.

use serde::Deserialize;

use super::Validator;

/// Log format and filter.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Text for humans or JSON lines for collectors.
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info` or `switchboard=debug`.
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The default `log.format`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// The default `log.level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The raw `[log]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

impl Validator<'_> {
    /// The validated `[log]` table.
    pub(super) fn log(&mut self, raw: RawLog) -> LogConfig {
        let level = raw.level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.issue("log.level", format!("`{level}` is not a log filter"));
        }
        LogConfig {
            format: raw.format.unwrap_or(DEFAULT_LOG_FORMAT),
            level,
        }
    }
}
