//! The three servers under test (Switchboard with the `echo` and `broadcast` plugins, the bare
//! tokio-tungstenite baseline, the Node `ws` baseline): finding and preparing their programs,
//! and starting a fresh process of one for each run. Switchboard has a second config for the
//! isolation scenario: two tenants, one with `echo`, one with `hostile`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use switchboard_bench::process::{Guarded, START_TIMEOUT, spawn_listening, tail};
use switchboard_bench::{plugins, procstat};

/// The HS256 secret of every server, and the Switchboard tenant's API key.
pub const JWT_SECRET: &str = "bench-secret";
pub const API_KEY: &str = "bench-key";
/// The key that signs precompiled plugin artifacts for the benchmark's servers.
pub const ARTIFACT_KEY: &str = "bench-artifact-key-0123456789abcdef";
/// The file names of Switchboard's configs in the scratch folder: the one of every scenario
/// (tenant `default`), and the isolation scenario's (tenants `quiet` and `noisy`).
pub const CONFIG: &str = "switchboard.toml";
pub const ISOLATION_CONFIG: &str = "isolation.toml";
/// Channels with this prefix have presence off (no member list in join acks, no presence
/// events): the fan-out rooms.
pub const PRESENCE_OFF_PREFIX: &str = "fanout";

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Server {
    /// Switchboard (release build), `echo` and `broadcast` as WASM plugins.
    Switchboard,
    /// `bare-server`: plain tokio-tungstenite.
    Bare,
    /// `server.mjs`: Node's `ws`.
    Node,
    /// A second Switchboard binary (`--before PATH`, e.g. built before an optimisation), run
    /// with the same config: the table gets a `sb ÷ before` column.
    Before,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::Switchboard, Server::Bare, Server::Node];

    pub fn label(self) -> &'static str {
        match self {
            Server::Switchboard => "switchboard",
            Server::Bare => "bare",
            Server::Node => "node",
            Server::Before => "before",
        }
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    pub repo: PathBuf,
    pub switchboard: PathBuf,
    pub bare: PathBuf,
    /// The `before` Switchboard binary, when comparing two.
    pub before: Option<PathBuf>,
    /// The folder of the plugins the `before` binary loads, when not the current ones.
    pub before_plugins: Option<PathBuf>,
    pub node: String,
    pub node_script: PathBuf,
    /// The plugins as built (copied next to the config before use).
    pub echo_wasm: PathBuf,
    pub broadcast_wasm: PathBuf,
    /// `hostile` (its `hostile:loop` spins until its CPU budget runs out): the isolation
    /// scenario's noisy tenant.
    pub hostile_wasm: PathBuf,
}

const ECHO: &str = "switchboard_plugin_echo.wasm";
const BROADCAST: &str = "switchboard_plugin_broadcast.wasm";
const HOSTILE: &str = "switchboard_plugin_hostile.wasm";
/// Every plugin the suite loads: packages, and the files they build into.
const PACKAGES: [&str; 3] = [
    "switchboard-plugin-echo",
    "switchboard-plugin-broadcast",
    "switchboard-plugin-hostile",
];
const PLUGINS: [&str; 3] = [ECHO, BROADCAST, HOSTILE];

impl Programs {
    /// Locates everything; `switchboard` and `bare` default to the binaries next to this one.
    pub fn locate(
        repo: PathBuf,
        switchboard: Option<PathBuf>,
        bare: Option<PathBuf>,
        before: Option<PathBuf>,
        node: String,
    ) -> Result<Self> {
        let sibling = |name: &str| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
                .unwrap_or_else(|| repo.join("target/release").join(name))
        };
        let plugin_dir = plugins::dir_with(&repo, &PLUGINS);
        Ok(Programs {
            switchboard: switchboard.unwrap_or_else(|| sibling("switchboard")),
            bare: bare.unwrap_or_else(|| sibling("bare-server")),
            before,
            before_plugins: None,
            node,
            node_script: repo.join("bench/baselines/node-ws/server.mjs"),
            echo_wasm: plugin_dir.join(ECHO),
            broadcast_wasm: plugin_dir.join(BROADCAST),
            hostile_wasm: plugin_dir.join(HOSTILE),
            repo,
        })
    }

    /// Checks the binaries, builds the plugins if missing, installs the Node baseline's
    /// dependencies (`npm ci`) if missing.
    pub fn prepare(&self, servers: &[Server]) -> Result<()> {
        for (server, path) in [
            (Server::Switchboard, &self.switchboard),
            (Server::Bare, &self.bare),
        ] {
            if servers.contains(&server) && !path.exists() {
                bail!(
                    "{} not found: run `cargo build --release -p switchboard -p switchboard-bench` first",
                    path.display()
                );
            }
        }
        if let Some(before) = &self.before
            && !before.exists()
        {
            bail!("--before {} not found", before.display());
        }
        if (servers.contains(&Server::Switchboard) || servers.contains(&Server::Before))
            && ![&self.echo_wasm, &self.broadcast_wasm, &self.hostile_wasm]
                .iter()
                .all(|plugin| plugin.exists())
        {
            plugins::build(&self.repo, &PACKAGES)?;
        }
        if servers.contains(&Server::Node) {
            let folder = self.node_script.parent().context("no script folder")?;
            if !folder.join("node_modules/ws").exists() {
                eprintln!("installing the Node baseline's dependencies (npm ci)");
                let status = Command::new("npm")
                    .arg("ci")
                    .arg("--no-audit")
                    .arg("--no-fund")
                    .current_dir(folder)
                    .status()
                    .context("cannot run npm")?;
                if !status.success() {
                    bail!("npm ci in {} failed", folder.display());
                }
            }
        }
        Ok(())
    }

    /// Copies the binaries and the plugins into `dir`, so that a rebuild while the suite runs
    /// does not change what it measures; returns the programs pointing at the copies.
    pub fn copied_into(self, dir: &Path) -> Result<Programs> {
        let copy = |from: &Path, name: &str| -> Result<PathBuf> {
            if !from.exists() {
                // Not needed by the selected servers (`prepare` checked the others).
                return Ok(from.to_path_buf());
            }
            let to = dir.join(name);
            std::fs::copy(from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
            Ok(to)
        };
        Ok(Programs {
            switchboard: copy(&self.switchboard, "switchboard")?,
            bare: copy(&self.bare, "bare-server")?,
            before: self
                .before
                .as_deref()
                .map(|before| copy(before, "switchboard-before"))
                .transpose()?,
            echo_wasm: copy(&self.echo_wasm, ECHO)?,
            broadcast_wasm: copy(&self.broadcast_wasm, BROADCAST)?,
            hostile_wasm: copy(&self.hostile_wasm, HOSTILE)?,
            ..self
        })
    }

    /// The `echo` plugin `server` loads: `before`'s own with `--before-plugins`.
    pub fn echo_wasm_of(&self, server: Server) -> PathBuf {
        match (server, &self.before_plugins) {
            (Server::Before, Some(dir)) => dir.join(ECHO),
            _ => self.echo_wasm.clone(),
        }
    }

    /// Versions of the programs, for the report.
    pub fn describe(&self) -> String {
        let node = Command::new(&self.node)
            .arg("--version")
            .output()
            .ok()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(&self.repo)
                .args(args)
                .output()
                .ok()
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let commit = git(&["rev-parse", "--short", "HEAD"]);
        let dirty = if git(&["status", "--porcelain", "runtime", "sdk", "plugins"]).is_empty() {
            ""
        } else {
            " (with uncommitted changes in runtime/, sdk/ or plugins/)"
        };
        format!("switchboard built from the tree at {commit}{dirty}; node {node} with ws 8.23.0")
    }
}

/// Switchboard's config for the benchmark: limits high enough not to interfere.
fn switchboard_config(plugin_dir: &Path) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
max_connections = 100000

[log]
level = "warn"

[plugins]
artifact_key = "{ARTIFACT_KEY}"

[[tenants]]
name = "default"
api_key = "{API_KEY}"

[tenants.jwt]
secret = "{JWT_SECRET}"

[tenants.limits]
max_connections = 100000
messages_per_second = 1000000
burst = 1000000
outbound_queue_messages = 100000

[tenants.presence]
disabled = ["{PRESENCE_OFF_PREFIX}*"]

[tenants.plugin_limits]
max_concurrency = 1024
# The whole node (the default is half): with a loader cheap enough to saturate the server,
# half the cores of plugin running time is a limit the echo load reaches, and messages past it
# are answered `overloaded`.
cpu_share = 1.0

[[tenants.plugins]]
path = "{}/{ECHO}"

[[tenants.plugins]]
path = "{}/{BROADCAST}"
"#,
        plugin_dir.display(),
        plugin_dir.display()
    )
}

/// The isolation scenario's config: tenant `quiet` with `echo`, tenant `noisy` with `hostile`,
/// both with the message limits raised as above. The plugin limits stay at their defaults
/// (100 ms CPU budget per call, 64 calls in flight per plugin; on a build that has it, a CPU
/// share of half the node's cores per tenant), which is what is measured.
fn isolation_config(plugin_dir: &Path) -> String {
    let tenant = |name: &str, api_key: &str, plugin: &str| {
        format!(
            r#"
[[tenants]]
name = "{name}"
api_key = "{api_key}"

[tenants.jwt]
secret = "{JWT_SECRET}"

[tenants.limits]
max_connections = 100000
messages_per_second = 1000000
burst = 1000000
outbound_queue_messages = 100000

[[tenants.plugins]]
path = "{}/{plugin}"
"#,
            plugin_dir.display()
        )
    };
    format!(
        "listen = \"127.0.0.1:0\"\nmax_connections = 100000\n\n[log]\nlevel = \"warn\"\n{}{}",
        tenant(QUIET_TENANT, API_KEY, ECHO),
        tenant(NOISY_TENANT, NOISY_API_KEY, HOSTILE)
    )
}

/// The isolation scenario's tenants, and the noisy one's API key.
pub const QUIET_TENANT: &str = "quiet";
pub const NOISY_TENANT: &str = "noisy";
const NOISY_API_KEY: &str = "bench-noisy-key";

/// Writes Switchboard's configs ([`CONFIG`], [`ISOLATION_CONFIG`]) and a private copy of the
/// plugins into `dir`.
/// With `--before-plugins`, the `before` server's configs go in [`BEFORE_DIR`] of `dir`, with
/// those plugins.
pub fn write_switchboard_config(programs: &Programs, dir: &Path) -> Result<()> {
    let plugins = [
        (programs.echo_wasm.clone(), ECHO),
        (programs.broadcast_wasm.clone(), BROADCAST),
        (programs.hostile_wasm.clone(), HOSTILE),
    ];
    write_configs(dir, &plugins)?;
    if let Some(before) = &programs.before_plugins {
        let plugins = PLUGINS.map(|name| (before.join(name), name));
        write_configs(&dir.join(BEFORE_DIR), &plugins)?;
    }
    Ok(())
}

/// Where the `before` server's configs are, under the scratch folder, with `--before-plugins`.
const BEFORE_DIR: &str = "before";

fn write_configs(dir: &Path, plugins: &[(PathBuf, &str)]) -> Result<()> {
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugin_dir)?;
    for (from, name) in plugins {
        std::fs::copy(from, plugin_dir.join(name))
            .with_context(|| format!("cannot copy {}", from.display()))?;
    }
    std::fs::write(dir.join(CONFIG), switchboard_config(&plugin_dir))?;
    std::fs::write(dir.join(ISOLATION_CONFIG), isolation_config(&plugin_dir))?;
    Ok(())
}

/// One running server process.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    process: Guarded,
    log: PathBuf,
}

impl Running {
    /// Starts a fresh process of `server` and waits until it accepts connections; Switchboard
    /// reads the config `config` of `dir` (one of [`CONFIG`] and [`ISOLATION_CONFIG`]).
    pub async fn start(
        programs: &Programs,
        server: Server,
        (dir, config): (&Path, &str),
        name: &str,
        http: &reqwest::Client,
    ) -> Result<Running> {
        let log = dir.join(format!("{name}.log"));
        let command = match server {
            Server::Switchboard | Server::Before => {
                let binary = match (server, &programs.before) {
                    (Server::Before, Some(before)) => before,
                    (Server::Before, None) => bail!("the `before` server needs --before PATH"),
                    _ => &programs.switchboard,
                };
                let config_dir = match (server, &programs.before_plugins) {
                    (Server::Before, Some(_)) => dir.join(BEFORE_DIR),
                    _ => dir.to_path_buf(),
                };
                let mut command = Command::new(binary);
                command
                    .arg("serve")
                    .arg("--config")
                    .arg(config_dir.join(config))
                    .env_remove("RUST_LOG");
                command
            }
            Server::Bare => {
                let mut command = Command::new(&programs.bare);
                command.args([
                    "--listen",
                    "127.0.0.1:0",
                    "--secret",
                    JWT_SECRET,
                    "--presence-off",
                    PRESENCE_OFF_PREFIX,
                ]);
                command
            }
            Server::Node => {
                let mut command = Command::new(&programs.node);
                command.arg(&programs.node_script).args([
                    "--listen",
                    "127.0.0.1:0",
                    "--secret",
                    JWT_SECRET,
                    "--presence-off",
                    PRESENCE_OFF_PREFIX,
                ]);
                command
            }
        };
        let (process, addr) = tokio::task::block_in_place(|| spawn_listening(command, name, &log))?;
        let running = Running { addr, process, log };
        if matches!(server, Server::Switchboard | Server::Before) {
            running.wait_ready(http).await?;
        }
        Ok(running)
    }

    /// Polls `GET /readyz` until it answers 200 (Switchboard: plugins loaded).
    async fn wait_ready(&self, http: &reqwest::Client) -> Result<()> {
        let url = format!("http://{}/readyz", self.addr);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} not ready within {START_TIMEOUT:?}: {}",
                    self.process.name(),
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// User + system CPU time so far, seconds.
    pub fn cpu_secs(&self) -> f64 {
        procstat::sample(self.pid()).cpu_secs
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        procstat::rss_kib(self.pid())
            .ok_or_else(|| anyhow!("{} is gone: {}", self.process.name(), tail(&self.log)))
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.process.child_mut().try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(anyhow!(
                "{} exited with {status}: {}",
                self.process.name(),
                tail(&self.log)
            )),
            Err(error) => Err(error.into()),
        }
    }

    /// SIGTERM and wait; an unclean exit is reported, not fatal (the run's numbers stand).
    pub fn stop(mut self) {
        if !tokio::task::block_in_place(|| self.process.stop()) {
            eprintln!(
                "    warning: {} did not exit cleanly: {}",
                self.process.name(),
                tail(&self.log)
            );
        }
    }
}
