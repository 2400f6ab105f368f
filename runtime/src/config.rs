//! The TOML configuration: parsed into raw serde structs, then validated once into typed
//! settings. Every error names the file and the key it concerns.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod http;

pub use http::HttpConfig;

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
}

/// Node-wide bounds on plugin compiles and on the plugins held, all tenants together (each
/// tenant also has its own, in `PluginLimits`).
#[derive(Debug, Clone)]
pub struct PluginBounds {
    /// The program that compiles plugin code in a child process (`switchboard compile-worker`);
    /// `None`: the running executable.
    pub compiler_path: Option<PathBuf>,
    /// Compiles running at once.
    pub compile_concurrency: usize,
    /// Uploads and reloads waiting for a compile slot; past it they are refused.
    pub compile_queue: usize,
    /// How long an upload or a reload waits for a compile slot before it is refused.
    pub compile_wait: Duration,
    /// Plugins loaded on the node.
    pub max_plugins: usize,
    /// Bytes of plugin files (the `.wasm` or `.cwasm` as uploaded) loaded on the node.
    pub max_plugin_bytes: usize,
}

/// The operator's secret that signs precompiled plugin artifacts (`switchboard precompile`).
/// An artifact is native code, so whoever holds this key can run code in the host: it is a
/// node setting, never a tenant's.
#[derive(Clone, PartialEq, Eq)]
pub struct ArtifactKey(Vec<u8>);

/// Shortest accepted artifact key, in bytes: as long as an HMAC-SHA256 tag, so the key is
/// never the weak part.
pub const MIN_ARTIFACT_KEY_BYTES: usize = 32;

impl ArtifactKey {
    /// A key from its bytes; `None` when shorter than `MIN_ARTIFACT_KEY_BYTES`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<ArtifactKey> {
        let bytes = bytes.into();
        (bytes.len() >= MIN_ARTIFACT_KEY_BYTES).then_some(ArtifactKey(bytes))
    }

    /// The secret.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ArtifactKey {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArtifactKey(..)")
    }
}

/// The backplane a node runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackplaneConfig {
    /// One node, everything in process memory (the default).
    Memory,
    /// Many nodes sharing a Redis server or a Redis Cluster.
    Redis(RedisConfig),
}

/// How nodes reach Redis, and the timing of liveness and probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` URL of a single server; unused when `cluster_nodes` is set.
    pub url: String,
    /// Seed nodes of a Redis Cluster; when non-empty, sharded pub/sub is used.
    pub cluster_nodes: Vec<String>,
    /// Prefix of every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// How often a node refreshes its liveness, presence and user entries.
    pub heartbeat_interval: Duration,
    /// How long a node's entries live without a refresh; after it, its members leave.
    pub node_ttl: Duration,
    /// How often a probe message is round-tripped through Redis.
    pub probe_interval: Duration,
    /// Timeout for connecting and for each command.
    pub command_timeout: Duration,
    /// Longest wait between reconnection attempts while Redis is unreachable.
    pub reconnect_max_delay: Duration,
}

/// Shortest accepted `redis.reconnect_max_delay`, and the first wait after a failed attempt:
/// the attempts of an outage start this close together and double up to the maximum.
pub const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(50);
/// Longest accepted `redis.reconnect_max_delay`.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(60);

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

/// One tenant's settings.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// Name used in `/ws/{tenant}` and the publish API.
    pub name: String,
    /// Bearer key for `POST /api/publish`; without one the tenant has no publish API.
    pub api_key: Option<String>,
    /// `Origin` values accepted on upgrade; empty means any.
    pub allowed_origins: Vec<String>,
    /// How tokens are verified.
    pub jwt: JwtConfig,
    /// Connection and message limits.
    pub limits: TenantLimits,
    /// Per-channel history kept for recovery.
    pub history: HistoryConfig,
    /// Channel patterns (`*` wildcards) in which presence is off.
    pub presence_disabled: Vec<String>,
    /// WASM plugins, in load order.
    pub plugins: Vec<PluginConfig>,
    /// Sandbox limits of this tenant's plugins.
    pub plugin_limits: PluginLimits,
}

/// One plugin of a tenant.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The `.wasm` component.
    pub path: PathBuf,
    /// Values the plugin reads with `env::config`.
    pub config: std::collections::BTreeMap<String, String>,
}

/// Sandbox limits for a tenant's plugins.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// CPU time one call may take.
    pub cpu_budget: Duration,
    /// Calls in flight per plugin; past it a message gets `overloaded`.
    pub max_concurrency: usize,
    /// An instance is replaced after this many calls (1: a fresh instance per call).
    pub recycle_after: u64,
    /// Sends, broadcasts and user sends one call may make.
    pub max_sends_per_call: u32,
    /// Recipients one call may reach through `send-to-user`.
    pub max_fanout_per_call: u32,
    /// Payload bytes one call may send in total.
    pub max_bytes_per_call: usize,
    /// Key-value operations one call may make.
    pub max_kv_ops_per_call: u32,
    /// Fraction of the node's cores the tenant's plugin calls may use together (0 < x <= 1).
    pub cpu_share: f64,
    /// Bytes one plugin's key-value namespace may hold in a node's memory.
    pub kv_max_bytes: usize,
    /// Wall-clock time one compile of this tenant's code may take before it is stopped.
    pub compile_timeout: Duration,
    /// Memory (data segment, `RLIMIT_DATA`) a compile of this tenant's code may use.
    pub compile_memory_bytes: usize,
    /// This tenant's compiles running at once.
    pub compile_concurrency: usize,
    /// This tenant's uploads waiting for a compile slot; past it they are refused.
    pub compile_queue: usize,
    /// Plugins this tenant may have loaded.
    pub max_plugins: usize,
    /// Bytes of this tenant's loaded plugin files (as uploaded).
    pub max_plugin_bytes: usize,
}

/// Default of `plugin_limits.cpu_share`: half the node's cores per tenant.
pub const DEFAULT_CPU_SHARE: f64 = 0.5;

/// Token verification settings of a tenant.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The key material.
    pub key: JwtKey,
    /// Algorithms accepted, all of the key's family unless narrowed.
    pub algorithms: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`.
    pub leeway: Duration,
}

/// Where a tenant's verification key comes from.
#[derive(Clone)]
pub enum JwtKey {
    /// A shared HMAC secret (HS256/384/512).
    Secret(Vec<u8>),
    /// A public key in PEM, with the algorithm family it is for.
    PublicKeyPem {
        /// The file it was read from, for error messages.
        path: PathBuf,
        /// The PEM text.
        pem: Vec<u8>,
    },
    /// A JWKS document (RFC 7517), read from a file.
    Jwks {
        /// The file it was read from, for error messages.
        path: PathBuf,
        /// The JSON text.
        json: String,
    },
}

impl fmt::Debug for JwtKey {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(..)"),
            JwtKey::PublicKeyPem { path, .. } => write!(f, "PublicKeyPem({})", path.display()),
            JwtKey::Jwks { path, .. } => write!(f, "Jwks({})", path.display()),
        }
    }
}

/// Limits of one tenant.
#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Live connections of this tenant on this node.
    pub max_connections: usize,
    /// Token bucket refill rate, messages per second.
    pub messages_per_second: f64,
    /// Token bucket capacity.
    pub burst: f64,
    /// Largest accepted message, after reassembly.
    pub max_message_bytes: usize,
    /// Outbound queue bound in messages.
    pub outbound_queue_messages: usize,
    /// Outbound queue bound in bytes.
    pub outbound_queue_bytes: usize,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
}

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

/// Default of `history.max_bytes`: 64 MiB of a tenant's history per node.
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 64 * 1024 * 1024;

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
    };
    let config = validator.config(raw);
    if validator.issues.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(validator.issues))
    }
}

// ---- raw shape of the file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    max_connections: Option<i64>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    heartbeat: RawHeartbeat,
    #[serde(default)]
    shutdown: RawShutdown,
    #[serde(default)]
    tenants: Vec<RawTenant>,
    backplane: Option<String>,
    redis: Option<RawRedis>,
    #[serde(default)]
    plugins: RawNodePlugins,
    #[serde(default)]
    http: http::RawHttp,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNodePlugins {
    artifact_key: Option<RawSecret>,
    tiered_swaps: Option<bool>,
    compiler_path: Option<String>,
    compile_concurrency: Option<i64>,
    compile_queue: Option<i64>,
    compile_wait: Option<RawDuration>,
    max_plugins: Option<i64>,
    max_plugin_bytes: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    #[serde(default)]
    cluster_nodes: Vec<String>,
    key_prefix: Option<String>,
    heartbeat_interval: Option<RawDuration>,
    node_ttl: Option<RawDuration>,
    probe_interval: Option<RawDuration>,
    command_timeout: Option<RawDuration>,
    reconnect_max_delay: Option<RawDuration>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    drain_timeout: Option<RawDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    api_key: Option<RawSecret>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    jwt: RawJwt,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    history: RawHistory,
    #[serde(default)]
    presence: RawPresence,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
    #[serde(default)]
    plugin_limits: RawPluginLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    path: String,
    #[serde(default)]
    config: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPluginLimits {
    memory_bytes: Option<i64>,
    cpu_budget: Option<RawDuration>,
    max_concurrency: Option<i64>,
    recycle_after: Option<i64>,
    max_sends_per_call: Option<i64>,
    max_fanout_per_call: Option<i64>,
    max_bytes_per_call: Option<i64>,
    max_kv_ops_per_call: Option<i64>,
    cpu_share: Option<f64>,
    kv_max_bytes: Option<i64>,
    compile_timeout: Option<RawDuration>,
    compile_memory_bytes: Option<i64>,
    compile_concurrency: Option<i64>,
    compile_queue: Option<i64>,
    max_plugins: Option<i64>,
    max_plugin_bytes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    secret: Option<RawSecret>,
    public_key_file: Option<String>,
    jwks_file: Option<String>,
    algorithms: Option<Vec<String>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Option<RawDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<i64>,
    messages_per_second: Option<f64>,
    burst: Option<f64>,
    max_message_bytes: Option<i64>,
    outbound_queue_messages: Option<i64>,
    outbound_queue_bytes: Option<i64>,
    max_rooms_per_connection: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    size: Option<i64>,
    ttl: Option<RawDuration>,
    max_bytes: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPresence {
    #[serde(default)]
    disabled: Vec<String>,
}

/// A secret given inline or as `{ env = "VAR" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Inline(String),
    Env { env: String },
}

/// A duration given as seconds (integer or fractional) or as text such as `"250ms"` or `"30s"`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawDuration {
    Seconds(f64),
    Text(String),
}

// ---- validation ----

struct Validator<'a> {
    file: &'a str,
    base_dir: &'a Path,
    issues: Vec<ConfigIssue>,
}

const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Compiles running at once on a node: two, so that one tenant (one compile at a time by
/// default) never takes every slot.
pub const DEFAULT_NODE_COMPILE_CONCURRENCY: usize = 2;
/// Uploads and reloads waiting for a node compile slot.
pub const DEFAULT_NODE_COMPILE_QUEUE: usize = 16;
/// How long an upload waits for a compile slot.
pub const DEFAULT_COMPILE_WAIT: Duration = Duration::from_secs(30);
/// Plugins loaded on a node, all tenants together.
pub const DEFAULT_NODE_MAX_PLUGINS: usize = 256;
/// Bytes of plugin files loaded on a node, all tenants together.
pub const DEFAULT_NODE_MAX_PLUGIN_BYTES: usize = 1024 * 1024 * 1024;
/// The least memory a compile may be given: the compiler process needs about 20 MiB of its
/// own before it reads a byte of the plugin.
pub const MIN_COMPILE_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Wall-clock time one compile may take.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Memory one compile may use: the example plugins compile in about 30 MiB, a crafted module
/// of a few kilobytes needs gigabytes.
pub const DEFAULT_COMPILE_MEMORY_BYTES: usize = 512 * 1024 * 1024;
/// Plugins one tenant may have loaded.
pub const DEFAULT_TENANT_MAX_PLUGINS: usize = 16;
/// Bytes of plugin files one tenant may have loaded.
pub const DEFAULT_TENANT_MAX_PLUGIN_BYTES: usize = 128 * 1024 * 1024;

impl Validator<'_> {
    fn issue(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: self.file.to_owned(),
            key: key.into(),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let listen = raw.listen.parse().unwrap_or_else(|_| {
            self.issue(
                "listen",
                format!("`{}` is not an address such as 127.0.0.1:8080", raw.listen),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let level = raw.log.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.issue("log.level", format!("`{level}` is not a log filter"));
        }
        let heartbeat_interval = self.duration(
            "heartbeat.interval",
            raw.heartbeat.interval,
            Duration::from_secs(30),
        );
        let heartbeat_timeout = self.duration(
            "heartbeat.timeout",
            raw.heartbeat.timeout,
            Duration::from_secs(10),
        );
        let drain_timeout = self.duration(
            "shutdown.drain_timeout",
            raw.shutdown.drain_timeout,
            Duration::from_secs(10),
        );
        let max_connections = self.count("max_connections", raw.max_connections, 100_000);
        let backplane = self.backplane(raw.backplane.as_deref(), raw.redis);
        let http = self.http(raw.http);
        let tiered_swaps = raw.plugins.tiered_swaps.unwrap_or(true);
        let plugin_bounds = self.plugin_bounds(&raw.plugins);
        let artifact_key = raw.plugins.artifact_key.and_then(|raw| {
            let secret = self.secret("plugins.artifact_key", raw)?;
            let key = ArtifactKey::new(secret);
            if key.is_none() {
                self.issue(
                    "plugins.artifact_key",
                    format!("must be at least {MIN_ARTIFACT_KEY_BYTES} bytes"),
                );
            }
            key
        });

        if raw.tenants.is_empty() {
            self.issue("tenants", "at least one tenant is required");
        }
        let configured_plugins: usize = raw.tenants.iter().map(|tenant| tenant.plugins.len()).sum();
        if configured_plugins > plugin_bounds.max_plugins {
            self.issue(
                "plugins.max_plugins",
                format!(
                    "the tenants configure {configured_plugins} plugins, more than this node holds"
                ),
            );
        }
        let mut tenants = Vec::with_capacity(raw.tenants.len());
        for (index, tenant) in raw.tenants.into_iter().enumerate() {
            let key = format!("tenants[{index}]");
            if tenants
                .iter()
                .any(|existing: &TenantConfig| existing.name == tenant.name)
            {
                self.issue(
                    format!("{key}.name"),
                    format!("tenant `{}` is defined twice", tenant.name),
                );
            }
            if let Some(valid) = self.tenant(&key, tenant) {
                tenants.push(valid);
            }
        }
        Config {
            listen,
            log: LogConfig {
                format: raw.log.format.unwrap_or(LogFormat::Text),
                level,
            },
            heartbeat_interval,
            heartbeat_timeout,
            drain_timeout,
            max_connections,
            tenants,
            backplane,
            artifact_key,
            tiered_swaps,
            http,
            plugin_bounds,
        }
    }

    fn plugin_bounds(&mut self, raw: &RawNodePlugins) -> PluginBounds {
        let compiler_path = raw.compiler_path.as_ref().map(|path| {
            if path.is_empty() {
                self.issue("plugins.compiler_path", "must not be empty");
            }
            self.base_dir.join(path)
        });
        PluginBounds {
            compiler_path,
            compile_concurrency: self.positive(
                "plugins.compile_concurrency",
                raw.compile_concurrency,
                DEFAULT_NODE_COMPILE_CONCURRENCY,
            ),
            compile_queue: self.count(
                "plugins.compile_queue",
                raw.compile_queue,
                DEFAULT_NODE_COMPILE_QUEUE,
            ),
            compile_wait: self.duration(
                "plugins.compile_wait",
                raw.compile_wait.clone(),
                DEFAULT_COMPILE_WAIT,
            ),
            max_plugins: self.positive(
                "plugins.max_plugins",
                raw.max_plugins,
                DEFAULT_NODE_MAX_PLUGINS,
            ),
            max_plugin_bytes: self.positive(
                "plugins.max_plugin_bytes",
                raw.max_plugin_bytes,
                DEFAULT_NODE_MAX_PLUGIN_BYTES,
            ),
        }
    }

    fn backplane(&mut self, kind: Option<&str>, raw: Option<RawRedis>) -> BackplaneConfig {
        match kind {
            None | Some("memory") => {
                if raw.is_some() {
                    self.issue("redis", "is set but `backplane` is not \"redis\"");
                }
                BackplaneConfig::Memory
            }
            Some("redis") => BackplaneConfig::Redis(self.redis(raw.unwrap_or_default())),
            Some(other) => {
                self.issue(
                    "backplane",
                    format!("`{other}` is not a backplane (\"memory\" or \"redis\")"),
                );
                BackplaneConfig::Memory
            }
        }
    }

    fn redis(&mut self, raw: RawRedis) -> RedisConfig {
        let url = raw
            .url
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
        let urls = std::iter::once(("redis.url".to_owned(), &url)).chain(
            raw.cluster_nodes
                .iter()
                .enumerate()
                .map(|(index, node)| (format!("redis.cluster_nodes[{index}]"), node)),
        );
        let mut bad = Vec::new();
        for (key, text) in urls {
            if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
                bad.push((key, format!("`{text}` is not a redis:// or rediss:// URL")));
            }
        }
        for (key, message) in bad {
            self.issue(key, message);
        }
        let key_prefix = raw.key_prefix.unwrap_or_else(|| "switchboard".to_owned());
        // Braces would change which part of a key Redis Cluster hashes.
        if key_prefix.is_empty() || key_prefix.contains(['{', '}']) || key_prefix.len() > 64 {
            self.issue(
                "redis.key_prefix",
                format!("`{key_prefix}` must be 1..64 bytes without `{{` or `}}`"),
            );
        }
        let heartbeat_interval = self.duration(
            "redis.heartbeat_interval",
            raw.heartbeat_interval,
            Duration::from_secs(5),
        );
        let node_ttl = self.duration("redis.node_ttl", raw.node_ttl, Duration::from_secs(15));
        if node_ttl < heartbeat_interval * 2 {
            self.issue(
                "redis.node_ttl",
                "must be at least twice redis.heartbeat_interval, or live nodes expire",
            );
        }
        let reconnect_max_delay = self.duration(
            "redis.reconnect_max_delay",
            raw.reconnect_max_delay,
            Duration::from_millis(500),
        );
        if !(MIN_RECONNECT_DELAY..=MAX_RECONNECT_DELAY).contains(&reconnect_max_delay) {
            self.issue(
                "redis.reconnect_max_delay",
                "must be from 50ms to 60s: shorter hammers Redis, longer leaves nodes unready long after it is back",
            );
        }
        RedisConfig {
            url,
            cluster_nodes: raw.cluster_nodes,
            key_prefix,
            heartbeat_interval,
            node_ttl,
            probe_interval: self.duration(
                "redis.probe_interval",
                raw.probe_interval,
                Duration::from_secs(1),
            ),
            command_timeout: self.duration(
                "redis.command_timeout",
                raw.command_timeout,
                Duration::from_secs(2),
            ),
            reconnect_max_delay,
        }
    }

    fn tenant(&mut self, key: &str, raw: RawTenant) -> Option<TenantConfig> {
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            self.issue(
                format!("{key}.name"),
                format!(
                    "`{}` is not a tenant name (1..64 of A-Z a-z 0-9 - _)",
                    raw.name
                ),
            );
        }
        let api_key = raw
            .api_key
            .and_then(|secret| self.secret(&format!("{key}.api_key"), secret));
        if api_key.as_deref() == Some("") {
            self.issue(format!("{key}.api_key"), "must not be empty");
        }
        for (index, origin) in raw.allowed_origins.iter().enumerate() {
            if origin == "null" {
                // Opaque origins (sandboxed frames, file: pages) all send `null`: it names no one.
                self.issue(
                    format!("{key}.allowed_origins[{index}]"),
                    "`null` cannot be allowed: every opaque origin sends it",
                );
            } else if origin.is_empty() || origin.ends_with('/') {
                self.issue(
                    format!("{key}.allowed_origins[{index}]"),
                    format!("`{origin}` is not an origin such as https://example.com"),
                );
            }
        }
        let jwt = self.jwt(&format!("{key}.jwt"), raw.jwt);
        let limits = self.limits(&format!("{key}.limits"), raw.limits);
        let history = HistoryConfig {
            size: self.count(&format!("{key}.history.size"), raw.history.size, 100),
            ttl: self.duration(
                &format!("{key}.history.ttl"),
                raw.history.ttl,
                Duration::from_secs(300),
            ),
            max_bytes: self.count(
                &format!("{key}.history.max_bytes"),
                raw.history.max_bytes,
                DEFAULT_HISTORY_MAX_BYTES,
            ),
        };
        for (index, pattern) in raw.presence.disabled.iter().enumerate() {
            if pattern.is_empty() {
                self.issue(
                    format!("{key}.presence.disabled[{index}]"),
                    "an empty pattern",
                );
            }
        }
        let plugins: Vec<PluginConfig> = raw
            .plugins
            .into_iter()
            .enumerate()
            .map(|(index, plugin)| {
                if plugin.path.is_empty() {
                    self.issue(format!("{key}.plugins[{index}].path"), "must not be empty");
                }
                PluginConfig {
                    path: self.base_dir.join(&plugin.path),
                    config: plugin.config,
                }
            })
            .collect();
        let plugin_limits = self.plugin_limits(&format!("{key}.plugin_limits"), raw.plugin_limits);
        if plugins.len() > plugin_limits.max_plugins {
            self.issue(
                format!("{key}.plugins"),
                format!(
                    "{} plugins, more than plugin_limits.max_plugins ({})",
                    plugins.len(),
                    plugin_limits.max_plugins
                ),
            );
        }
        Some(TenantConfig {
            name: raw.name,
            api_key,
            allowed_origins: raw.allowed_origins,
            jwt: jwt?,
            limits,
            history,
            presence_disabled: raw.presence.disabled,
            plugins,
            plugin_limits,
        })
    }

    fn jwt(&mut self, key: &str, raw: RawJwt) -> Option<JwtConfig> {
        let sources = [
            raw.secret.is_some(),
            raw.public_key_file.is_some(),
            raw.jwks_file.is_some(),
        ]
        .iter()
        .filter(|present| **present)
        .count();
        if sources != 1 {
            self.issue(
                key,
                "set exactly one of `secret`, `public_key_file`, `jwks_file`",
            );
            return None;
        }
        let leeway = self.duration(&format!("{key}.leeway"), raw.leeway, Duration::from_secs(5));
        let (jwt_key, family): (JwtKey, &[&str]) = if let Some(secret) = raw.secret {
            let secret = self.secret(&format!("{key}.secret"), secret)?;
            if secret.is_empty() {
                self.issue(format!("{key}.secret"), "must not be empty");
                return None;
            }
            (
                JwtKey::Secret(secret.into_bytes()),
                &["HS256", "HS384", "HS512"],
            )
        } else if let Some(file) = raw.public_key_file {
            let path = self.base_dir.join(&file);
            let pem = match std::fs::read(&path) {
                Ok(pem) => pem,
                Err(error) => {
                    self.issue(
                        format!("{key}.public_key_file"),
                        format!("cannot read {}: {error}", path.display()),
                    );
                    return None;
                }
            };
            (
                JwtKey::PublicKeyPem { path, pem },
                &["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"],
            )
        } else {
            let file = raw.jwks_file.unwrap_or_default();
            let path = self.base_dir.join(&file);
            let json = match std::fs::read_to_string(&path) {
                Ok(json) => json,
                Err(error) => {
                    self.issue(
                        format!("{key}.jwks_file"),
                        format!("cannot read {}: {error}", path.display()),
                    );
                    return None;
                }
            };
            (
                JwtKey::Jwks { path, json },
                &["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"],
            )
        };
        let algorithms = match raw.algorithms {
            Some(list) => {
                if list.is_empty() {
                    self.issue(format!("{key}.algorithms"), "must not be empty");
                }
                for (index, algorithm) in list.iter().enumerate() {
                    if !family.contains(&algorithm.as_str()) {
                        self.issue(
                            format!("{key}.algorithms[{index}]"),
                            format!(
                                "`{algorithm}` does not fit this key; one of {}",
                                family.join(", ")
                            ),
                        );
                    }
                }
                list
            }
            None => family.iter().map(|name| (*name).to_owned()).collect(),
        };
        Some(JwtConfig {
            key: jwt_key,
            algorithms,
            issuer: raw.issuer,
            audience: raw.audience,
            leeway,
        })
    }

    fn limits(&mut self, key: &str, raw: RawLimits) -> TenantLimits {
        let messages_per_second = raw.messages_per_second.unwrap_or(100.0);
        if !(messages_per_second.is_finite() && messages_per_second > 0.0) {
            self.issue(
                format!("{key}.messages_per_second"),
                "must be a positive number",
            );
        }
        let burst = raw.burst.unwrap_or(200.0);
        if !(burst.is_finite() && burst >= 1.0) {
            self.issue(format!("{key}.burst"), "must be at least 1");
        }
        TenantLimits {
            max_connections: self.count(
                &format!("{key}.max_connections"),
                raw.max_connections,
                10_000,
            ),
            messages_per_second,
            burst,
            max_message_bytes: self.positive(
                &format!("{key}.max_message_bytes"),
                raw.max_message_bytes,
                DEFAULT_MAX_MESSAGE_BYTES,
            ),
            outbound_queue_messages: self.positive(
                &format!("{key}.outbound_queue_messages"),
                raw.outbound_queue_messages,
                1024,
            ),
            outbound_queue_bytes: self.positive(
                &format!("{key}.outbound_queue_bytes"),
                raw.outbound_queue_bytes,
                8 * 1024 * 1024,
            ),
            max_rooms_per_connection: self.positive(
                &format!("{key}.max_rooms_per_connection"),
                raw.max_rooms_per_connection,
                1000,
            ),
        }
    }

    fn plugin_limits(&mut self, key: &str, raw: RawPluginLimits) -> PluginLimits {
        let small = |validator: &mut Self, name: &str, value: Option<i64>, default: u32| {
            let value = validator.positive(&format!("{key}.{name}"), value, default as usize);
            u32::try_from(value).unwrap_or(u32::MAX)
        };
        PluginLimits {
            memory_bytes: self.positive(
                &format!("{key}.memory_bytes"),
                raw.memory_bytes,
                64 * 1024 * 1024,
            ),
            cpu_budget: self.duration(
                &format!("{key}.cpu_budget"),
                raw.cpu_budget,
                Duration::from_millis(100),
            ),
            max_concurrency: self.positive(
                &format!("{key}.max_concurrency"),
                raw.max_concurrency,
                64,
            ),
            recycle_after: self.positive(&format!("{key}.recycle_after"), raw.recycle_after, 10_000)
                as u64,
            max_sends_per_call: small(self, "max_sends_per_call", raw.max_sends_per_call, 1000),
            max_fanout_per_call: small(
                self,
                "max_fanout_per_call",
                raw.max_fanout_per_call,
                10_000,
            ),
            max_bytes_per_call: self.positive(
                &format!("{key}.max_bytes_per_call"),
                raw.max_bytes_per_call,
                8 * 1024 * 1024,
            ),
            max_kv_ops_per_call: small(self, "max_kv_ops_per_call", raw.max_kv_ops_per_call, 1000),
            kv_max_bytes: self.positive(
                &format!("{key}.kv_max_bytes"),
                raw.kv_max_bytes,
                64 * 1024 * 1024,
            ),
            cpu_share: match raw.cpu_share {
                None => DEFAULT_CPU_SHARE,
                Some(share) if share > 0.0 && share <= 1.0 => share,
                Some(_) => {
                    self.issue(
                        format!("{key}.cpu_share"),
                        "must be a fraction of the node's cores above 0 and at most 1",
                    );
                    DEFAULT_CPU_SHARE
                }
            },
            compile_timeout: self.duration(
                &format!("{key}.compile_timeout"),
                raw.compile_timeout,
                DEFAULT_COMPILE_TIMEOUT,
            ),
            compile_memory_bytes: self.at_least(
                &format!("{key}.compile_memory_bytes"),
                raw.compile_memory_bytes,
                DEFAULT_COMPILE_MEMORY_BYTES,
                MIN_COMPILE_MEMORY_BYTES,
            ),
            compile_concurrency: self.positive(
                &format!("{key}.compile_concurrency"),
                raw.compile_concurrency,
                1,
            ),
            compile_queue: self.count(&format!("{key}.compile_queue"), raw.compile_queue, 2),
            max_plugins: self.positive(
                &format!("{key}.max_plugins"),
                raw.max_plugins,
                DEFAULT_TENANT_MAX_PLUGINS,
            ),
            max_plugin_bytes: self.positive(
                &format!("{key}.max_plugin_bytes"),
                raw.max_plugin_bytes,
                DEFAULT_TENANT_MAX_PLUGIN_BYTES,
            ),
        }
    }

    fn secret(&mut self, key: &str, raw: RawSecret) -> Option<String> {
        match raw {
            RawSecret::Inline(value) => Some(value),
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
