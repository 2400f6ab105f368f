//! The `backplane` key and the `[redis]` section: what carries messages between nodes, and how
//! nodes reach Redis (liveness, probes, reconnection timing).

use std::time::Duration;

use serde::Deserialize;

use super::{RawDuration, Validator};

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

/// The default `redis.url`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The default `redis.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "switchboard";
/// The default `redis.heartbeat_interval`.
pub const DEFAULT_REDIS_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// The default `redis.node_ttl`.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(15);
/// The default `redis.probe_interval`.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The default `redis.command_timeout`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The default `redis.reconnect_max_delay`.
pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Shortest accepted `redis.reconnect_max_delay`, and the first wait after a failed attempt:
/// the attempts of an outage start this close together and double up to the maximum.
pub const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(50);
/// Longest accepted `redis.reconnect_max_delay`.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(60);

/// Longest accepted `redis.key_prefix`, in bytes.
const MAX_KEY_PREFIX_BYTES: usize = 64;

/// The raw `[redis]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
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

impl Validator<'_> {
    /// The backplane named by the `backplane` key (memory when unset), with its `[redis]` table.
    pub(super) fn backplane(
        &mut self,
        kind: Option<&str>,
        raw: Option<RawRedis>,
    ) -> BackplaneConfig {
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
        let url = raw.url.unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
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
        let key_prefix = raw
            .key_prefix
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        // Braces would change which part of a key Redis Cluster hashes.
        if key_prefix.is_empty()
            || key_prefix.contains(['{', '}'])
            || key_prefix.len() > MAX_KEY_PREFIX_BYTES
        {
            self.issue(
                "redis.key_prefix",
                format!("`{key_prefix}` must be 1..64 bytes without `{{` or `}}`"),
            );
        }
        let heartbeat_interval = self.duration(
            "redis.heartbeat_interval",
            raw.heartbeat_interval,
            DEFAULT_REDIS_HEARTBEAT_INTERVAL,
        );
        let node_ttl = self.duration("redis.node_ttl", raw.node_ttl, DEFAULT_NODE_TTL);
        if node_ttl < heartbeat_interval * 2 {
            self.issue(
                "redis.node_ttl",
                "must be at least twice redis.heartbeat_interval, or live nodes expire",
            );
        }
        let reconnect_max_delay = self.duration(
            "redis.reconnect_max_delay",
            raw.reconnect_max_delay,
            DEFAULT_RECONNECT_MAX_DELAY,
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
                DEFAULT_PROBE_INTERVAL,
            ),
            command_timeout: self.duration(
                "redis.command_timeout",
                raw.command_timeout,
                DEFAULT_COMMAND_TIMEOUT,
            ),
            reconnect_max_delay,
        }
    }
}
