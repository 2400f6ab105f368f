//! The TOML configuration: parsed into raw serde structs, then validated once into typed
//! settings. Every error names the file and the key it concerns. Each section lives in its own
//! module (its raw and typed structs, its validation and its named defaults); this one holds the
//! top-level `Config`, loading and parsing, and the `Validator` that collects every problem.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub mod admin;
pub mod heartbeat;
pub mod history;
pub mod http;
pub mod jwt;
pub mod limits;
pub mod log;
pub mod plugins;
pub mod presence;
pub mod redis;
pub mod shutdown;
pub mod state;
pub mod tenant;
pub mod tenant_plugins;

pub use self::log::{LogConfig, LogFormat};
pub use self::redis::{BackplaneConfig, MAX_RECONNECT_DELAY, MIN_RECONNECT_DELAY, RedisConfig};
pub use history::{DEFAULT_HISTORY_MAX_BYTES, HistoryConfig};
pub use http::HttpConfig;
pub use jwt::{JwtConfig, JwtKey};
pub use limits::TenantLimits;
pub use plugins::{
    ArtifactKey, DEFAULT_COMPILE_WAIT, DEFAULT_NODE_COMPILE_CONCURRENCY,
    DEFAULT_NODE_COMPILE_QUEUE, DEFAULT_NODE_MAX_PLUGIN_BYTES, DEFAULT_NODE_MAX_PLUGINS,
    MIN_ARTIFACT_KEY_BYTES, PluginBounds,
};
pub use tenant::{TenantConfig, TenantProtocol};
pub use tenant_plugins::{
    DEFAULT_COMPILE_MEMORY_BYTES, DEFAULT_COMPILE_TIMEOUT, DEFAULT_CPU_SHARE,
    DEFAULT_TENANT_MAX_PLUGIN_BYTES, DEFAULT_TENANT_MAX_PLUGINS, MIN_COMPILE_MEMORY_BYTES,
    PluginConfig, PluginLimits,
};

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the one HTTP listener.
    pub listen: SocketAddr,
    /// Log output settings.
    pub log: LogConfig,
    /// Ping interval.
    pub heartbeat_interval: Duration,
    /// How long after a ping a silent connection is presumed dead.
    pub heartbeat_timeout: Duration,
    /// How long a graceful shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// Connections this node accepts across all tenants.
    pub max_connections: usize,
    /// The tenants, `default` serving `/ws`.
    pub tenants: Vec<TenantConfig>,
    /// What carries messages between nodes.
    pub backplane: BackplaneConfig,
    /// The key that signs precompiled plugin artifacts; without one, only `.wasm` components
    /// are loaded.
    pub artifact_key: Option<ArtifactKey>,
    /// Whether a swapped-in `.wasm` serves on baseline code until its optimized build is
    /// ready (a fast swap), or waits for the optimized build (one compile, less CPU).
    pub tiered_swaps: bool,
    /// Bounds of the HTTP listener (`[http]`).
    pub http: HttpConfig,
    /// Node-wide bounds on compiling and holding plugins.
    pub plugin_bounds: PluginBounds,
    /// Where the memory backplane keeps the desired state (`[state] dir`); a Redis backplane
    /// keeps it in Redis.
    pub state_dir: std::path::PathBuf,
    /// The operator's key (`admin.api_key`): the tenant API, and every tenant's plugin API.
    pub admin_api_key: Option<String>,
}

/// The default `listen`.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));
/// The default `max_connections`, all tenants together.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

/// A configuration problem, naming the file and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigIssue {
    /// The config file.
    pub file: String,
    /// The dotted key, e.g. `tenants[0].jwt.secret`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The config file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse into the expected shape.
    #[error("{file}: {message}")]
    Parse {
        /// The config file.
        file: String,
        /// The parser's message, which names the key and the line.
        message: String,
    },
    /// Values that parsed but are invalid.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// One line per problem, for the `check` command.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(issues) => issues.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &file, base_dir)
}

/// Parses and validates config text; relative key paths resolve against `base_dir`.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
        file: file.to_owned(),
        message: error.to_string().trim_end().to_owned(),
    })?;
    let mut validator = Validator {
        file,
        base_dir,
        issues: Vec::new(),
        inline_only: false,
    };
    let config = validator.config(raw);
    if validator.issues.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(validator.issues))
    }
}

/// Validates one tenant given as JSON with the fields of a `[[tenants]]` table (the tenant
/// API). Everything is inline: a file path or an `env` reference would name one node's disk
/// or environment, and plugins are deployed through the plugin API. The problems, keyed by
/// the field (`jwt.secret`).
pub fn tenant_from_json(value: serde_json::Value) -> Result<TenantConfig, Vec<ConfigIssue>> {
    let issue = |key: &str, message: String| ConfigIssue {
        file: String::new(),
        key: key.to_owned(),
        message,
    };
    let raw: tenant::RawTenant =
        serde_json::from_value(value).map_err(|error| vec![issue("", error.to_string())])?;
    let mut validator = Validator {
        file: "",
        base_dir: Path::new("."),
        issues: Vec::new(),
        inline_only: true,
    };
    let config = validator.tenant("", raw);
    let mut issues = validator.issues;
    for issue in &mut issues {
        issue.key = issue.key.trim_start_matches('.').to_owned();
    }
    match config {
        Some(config) if issues.is_empty() => Ok(config),
        _ => Err(issues),
    }
}

// ---- raw shape of the file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    max_connections: Option<i64>,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    heartbeat: heartbeat::RawHeartbeat,
    #[serde(default)]
    shutdown: shutdown::RawShutdown,
    #[serde(default)]
    tenants: Vec<tenant::RawTenant>,
    backplane: Option<String>,
    redis: Option<self::redis::RawRedis>,
    #[serde(default)]
    plugins: plugins::RawNodePlugins,
    #[serde(default)]
    http: http::RawHttp,
    #[serde(default)]
    state: state::RawState,
    #[serde(default)]
    admin: admin::RawAdmin,
}

/// A secret given inline or as `{ env = "VAR" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Inline(String),
    Env { env: String },
}

/// A duration given as seconds (integer or fractional) or as text such as `"250ms"` or `"30s"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(f64),
    Text(String),
}

// ---- validation ----

/// Validates raw sections into typed ones, collecting every problem instead of stopping at the
/// first. Each section module adds the methods for its own tables.
struct Validator<'a> {
    file: &'a str,
    base_dir: &'a Path,
    issues: Vec<ConfigIssue>,
    /// A tenant given through the API: no file paths, no `env`, no plugins.
    inline_only: bool,
}

impl Validator<'_> {
    fn issue(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: self.file.to_owned(),
            key: key.into(),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let listen = match raw.listen {
            None => DEFAULT_LISTEN,
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.issue(
                    "listen",
                    format!("`{text}` is not an address such as 127.0.0.1:8080"),
                );
                DEFAULT_LISTEN
            }),
        };
        let log = self.log(raw.log);
        let heartbeat = self.heartbeat(raw.heartbeat);
        let drain_timeout = self.drain_timeout(raw.shutdown);
        let max_connections = self.count(
            "max_connections",
            raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        );
        let backplane = self.backplane(raw.backplane.as_deref(), raw.redis);
        let http = self.http(raw.http);
        let plugins = self.node_plugins(raw.plugins);
        let tenants = self.tenants(raw.tenants, plugins.bounds.max_plugins);
        let state_dir = self.state_dir(raw.state);
        let admin_api_key = self.admin_key(raw.admin);
        Config {
            listen,
            log,
            heartbeat_interval: heartbeat.interval,
            heartbeat_timeout: heartbeat.timeout,
            drain_timeout,
            max_connections,
            tenants,
            backplane,
            artifact_key: plugins.artifact_key,
            tiered_swaps: plugins.tiered_swaps,
            http,
            plugin_bounds: plugins.bounds,
            state_dir,
            admin_api_key,
        }
    }

    fn secret(&mut self, key: &str, raw: RawSecret) -> Option<String> {
        match raw {
            RawSecret::Inline(value) => Some(value),
            RawSecret::Env { .. } if self.inline_only => {
                self.issue(
                    key,
                    "give the value inline: `env` would name one node's environment",
                );
                None
            }
            RawSecret::Env { env } => match std::env::var(&env) {
                Ok(value) => Some(value),
                Err(_) => {
                    self.issue(
                        key,
                        format!("environment variable `{env}` is not set or not UTF-8"),
                    );
                    None
                }
            },
        }
    }

    fn count(&mut self, key: &str, raw: Option<i64>, default: usize) -> usize {
        match raw {
            None => default,
            Some(value) => usize::try_from(value).unwrap_or_else(|_| {
                self.issue(key, "must not be negative");
                default
            }),
        }
    }

    fn at_least(&mut self, key: &str, raw: Option<i64>, default: usize, min: usize) -> usize {
        let value = self.count(key, raw, default);
        if value < min {
            self.issue(key, format!("must be at least {min}"));
            return default;
        }
        value
    }

    fn positive(&mut self, key: &str, raw: Option<i64>, default: usize) -> usize {
        match raw {
            Some(value) if value <= 0 => {
                self.issue(key, "must be positive");
                default
            }
            other => self.count(key, other, default),
        }
    }

    fn duration(&mut self, key: &str, raw: Option<RawDuration>, default: Duration) -> Duration {
        let parsed = match raw {
            None => return default,
            Some(RawDuration::Seconds(seconds)) => {
                Duration::try_from_secs_f64(seconds).map_err(|_| "a non-negative number".into())
            }
            Some(RawDuration::Text(text)) => humantime::parse_duration(&text)
                .map_err(|error| format!("`{text}`: {error} (write e.g. \"250ms\" or \"30s\")")),
        };
        match parsed {
            Ok(duration) if !duration.is_zero() => duration,
            Ok(_) => {
                self.issue(key, "must be greater than zero");
                default
            }
            Err(message) => {
                self.issue(key, format!("not a duration: {message}"));
                default
            }
        }
    }
}

#[cfg(test)]
mod tests;
