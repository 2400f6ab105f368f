//! The TOML config loader (`config::parse`) on any text. Only the text is read: a config that
//! would have the loader read a file given by an absolute path or an environment variable that
//! is set is skipped, and relative paths resolve against a directory that does not exist, so a
//! run never touches the disk or depends on its environment.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchboard::config::{self, ConfigError};

/// Where relative key files would be: nowhere, so reading one fails like a missing file.
const BASE_DIR: &str = "/nonexistent/switchboard-fuzz";
const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(table) = text.parse::<toml::Table>()
        && reaches_outside(&toml::Value::Table(table))
    {
        return;
    }
    let result = config::parse(text, FILE, Path::new(BASE_DIR));
    match &result {
        Ok(config) => {
            assert!(!config.heartbeat_interval.is_zero());
            assert!(!config.heartbeat_timeout.is_zero());
            assert!(!config.drain_timeout.is_zero());
        }
        Err(error) => {
            let lines = error.lines();
            assert!(!lines.is_empty());
            for line in &lines {
                assert!(line.starts_with(&format!("{FILE}: ")), "{line}");
            }
            if let ConfigError::Invalid(issues) = error {
                assert!(!issues.is_empty());
                assert_eq!(lines.len(), issues.len());
            }
        }
    }
    // The same text gives the same answer: no problem list in hash order.
    let again = config::parse(text, FILE, Path::new(BASE_DIR));
    assert_eq!(format!("{result:?}"), format!("{again:?}"));
});

/// Whether the config names a key file by an absolute path (read from disk) or a secret in an
/// environment variable that is set.
fn reaches_outside(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(table) => table.iter().any(|(key, value)| {
            let outside = match (key.as_str(), value) {
                ("public_key_file" | "jwks_file", toml::Value::String(path)) => {
                    Path::new(path).is_absolute()
                }
                // A name that cannot be set is the loader's to refuse.
                ("env", toml::Value::String(name)) => {
                    !name.is_empty()
                        && !name.contains(['=', '\0'])
                        && std::env::var_os(name).is_some()
                }
                _ => false,
            };
            outside || reaches_outside(value)
        }),
        toml::Value::Array(items) => items.iter().any(reaches_outside),
        _ => false,
    }
}
