//! The node-wide `[plugins]` section: the artifact signing key, tiered swaps, and the bounds on
//! compiling and holding plugins, all tenants together.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{RawDuration, RawSecret, Validator};

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
    /// The largest plugin upload (one request's body).
    pub max_upload_bytes: usize,
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

/// The default `plugins.tiered_swaps`: a swap serves on baseline code until the optimized
/// build is ready.
pub const DEFAULT_TIERED_SWAPS: bool = true;
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
/// The default `plugins.max_upload_bytes`: room for a JavaScript plugin's precompiled artifact
/// (about 37 MB; its component is about 12 MB).
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// The raw node-wide `[plugins]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodePlugins {
    artifact_key: Option<RawSecret>,
    tiered_swaps: Option<bool>,
    compiler_path: Option<String>,
    compile_concurrency: Option<i64>,
    compile_queue: Option<i64>,
    compile_wait: Option<RawDuration>,
    max_plugins: Option<i64>,
    max_plugin_bytes: Option<i64>,
    max_upload_bytes: Option<i64>,
}

/// The validated `[plugins]` table (flattened into `Config`).
pub(super) struct NodePlugins {
    /// The artifact signing key, when set.
    pub(super) artifact_key: Option<ArtifactKey>,
    /// Whether swaps are tiered.
    pub(super) tiered_swaps: bool,
    /// The node-wide compile and holding bounds.
    pub(super) bounds: PluginBounds,
}

impl Validator<'_> {
    /// The validated node-wide `[plugins]` table.
    pub(super) fn node_plugins(&mut self, raw: RawNodePlugins) -> NodePlugins {
        let tiered_swaps = raw.tiered_swaps.unwrap_or(DEFAULT_TIERED_SWAPS);
        let compiler_path = raw.compiler_path.as_ref().map(|path| {
            if path.is_empty() {
                self.issue("plugins.compiler_path", "must not be empty");
            }
            self.base_dir.join(path)
        });
        let bounds = PluginBounds {
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
                raw.compile_wait,
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
            max_upload_bytes: self.positive(
                "plugins.max_upload_bytes",
                raw.max_upload_bytes,
                DEFAULT_MAX_UPLOAD_BYTES,
            ),
        };
        let artifact_key = raw.artifact_key.and_then(|raw| {
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
        NodePlugins {
            artifact_key,
            tiered_swaps,
            bounds,
        }
    }
}
