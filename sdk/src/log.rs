//! Logging through the host's log, tagged with the tenant and the plugin.

#[cfg(target_arch = "wasm32")]
use crate::__bindings::switchboard::plugin::logging as host;
use crate::LogLevel;
#[cfg(not(target_arch = "wasm32"))]
use crate::mock::logging as host;

/// Logs a message with structured fields. The host logs each field as a field of its own
/// (`name="value"` in text logs, a key in JSON logs) beside `tenant` and `plugin`: at most 16
/// per line (more are folded into one `fields` value), names of `[A-Za-z0-9_.-]` up to 64
/// bytes (other characters become `_`; `message`, `tenant` and `plugin` become
/// `field_message` and so on), values up to 1 KiB.
pub fn log(level: LogLevel, message: &str, fields: &[(String, String)]) {
    host::log(level, message, fields);
}

/// [`log`] with fields given as names and anything printable.
///
/// ```no_run
/// use switchboard_sdk::{LogLevel, log};
/// log::with_fields(LogLevel::Info, "vote counted", &[("poll", &"p-1"), ("choice", &2)]);
/// ```
pub fn with_fields(level: LogLevel, message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.to_string()))
        .collect();
    host::log(level, message, &fields);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message, &[]);
}

/// Logs at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message, &[]);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message, &[]);
}

/// Logs at error level.
pub fn error(message: &str) {
    log(LogLevel::Error, message, &[]);
}
