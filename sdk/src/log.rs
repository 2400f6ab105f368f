//! Logging through the host's log, tagged with the tenant and the plugin.

#[cfg(target_arch = "wasm32")]
use crate::__bindings::switchboard::plugin::logging as host;
use crate::LogLevel;
#[cfg(not(target_arch = "wasm32"))]
use crate::mock::logging as host;

/// Logs a message with structured fields.
pub fn log(level: LogLevel, message: &str, fields: &[(String, String)]) {
    host::log(level, message, fields);
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
