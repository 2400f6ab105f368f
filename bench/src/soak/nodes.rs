//! The soak's switchboard nodes: their config (Redis backplane, one tenant with `echo`,
//! `broadcast` and `greeter`), starting them, their readiness, their `/metrics`, the warnings
//! and errors they logged, and stopping them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use switchboard_bench::process::{Guarded, spawn_listening, tail};

/// The tenant's credentials.
pub const TENANT: &str = "default";
pub const API_KEY: &str = "soak-key";
pub const JWT_SECRET: &str = "soak-secret";
/// How long a channel's history (and, on Redis, its keys) outlive its last message in the
/// soak: short, so that the keys are gone within the settle period.
pub const HISTORY_TTL_SECS: u64 = 30;
/// The backplane's `redis.node_ttl` (the default): a room's meta key lives at least four times
/// this after its last message.
pub const NODE_TTL_SECS: u64 = 15;
/// One request to a node (metrics, readiness, an upload) may take this long.
const REQUEST: Duration = Duration::from_secs(10);

/// The plugins the soak loads, as files in one folder.
#[derive(Debug, Clone)]
pub struct Plugins {
    pub echo: PathBuf,
    pub broadcast: PathBuf,
    pub greeter_v1: PathBuf,
    pub greeter_v2: PathBuf,
}

/// The node config. Limits stay at their defaults (100 messages/s per connection, queues of
/// 1024 messages, ...); only the history TTL is shortened.
pub fn config(redis_url: &str, plugins: &Plugins) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
backplane = "redis"

[log]
level = "warn"

[redis]
url = "{redis_url}"
node_ttl = "{NODE_TTL_SECS}s"

[[tenants]]
name = "{TENANT}"
api_key = "{API_KEY}"

[tenants.jwt]
secret = "{JWT_SECRET}"

[tenants.history]
ttl = "{HISTORY_TTL_SECS}s"

[[tenants.plugins]]
path = "{}"

[[tenants.plugins]]
path = "{}"

[[tenants.plugins]]
path = "{}"
"#,
        plugins.echo.display(),
        plugins.broadcast.display(),
        plugins.greeter_v1.display(),
    )
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    process: Guarded,
    pub log: PathBuf,
}

impl Node {
    /// Starts `server serve --config CONFIG` and waits for its `listening on` line.
    pub fn start(server: &Path, config: &Path, dir: &Path, name: &str) -> Result<Node> {
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(server);
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG");
        let (process, addr) = spawn_listening(command, name, &log).with_context(|| {
            format!(
                "starting {} (run `cargo build --release -p switchboard` first)",
                server.display()
            )
        })?;
        Ok(Node {
            name: name.to_owned(),
            addr,
            process,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Polls `/readyz` every 25 ms until it answers 200, for at most `limit`.
    pub async fn wait_ready(&self, http: &reqwest::Client, limit: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while !ready(http, self.addr).await {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} not ready within {limit:?}: {}",
                    self.name,
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.process.child_mut().try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited with {status}: {}",
                self.name,
                tail(&self.log)
            )),
        }
    }

    /// SIGTERM and wait (then SIGKILL); whether it exited on its own with status 0.
    pub fn stop(mut self) -> bool {
        tokio::task::block_in_place(|| self.process.stop())
    }
}

/// Whether the node's `GET /readyz` answers 200 now.
pub async fn ready(http: &reqwest::Client, addr: SocketAddr) -> bool {
    let url = format!("http://{addr}/readyz");
    matches!(
        http.get(&url).timeout(REQUEST).send().await,
        Ok(response) if response.status() == reqwest::StatusCode::OK
    )
}

/// The node's `GET /metrics`, each series summed over its labels.
pub async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Result<Metrics> {
    let response = http
        .get(format!("http://{addr}/metrics"))
        .timeout(REQUEST)
        .send()
        .await
        .with_context(|| format!("GET /metrics of {addr}"))?;
    if !response.status().is_success() {
        bail!("GET /metrics of {addr} answered {}", response.status());
    }
    Ok(Metrics::parse(&response.text().await?))
}

/// A node's metrics: every series summed over its labels.
#[derive(Debug, Clone, Default)]
pub struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    /// Reads Prometheus text: `name{labels} value` lines, comments skipped.
    pub fn parse(text: &str) -> Metrics {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(pair) => pair,
                None => continue,
            };
            let name = series.split('{').next().unwrap_or(series).trim();
            if let Ok(value) = value.trim().parse::<f64>() {
                *values.entry(name.to_owned()).or_insert(0.0) += value;
            }
        }
        Metrics(values)
    }

    /// The series' sum; NaN when the node does not have it.
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(f64::NAN)
    }
}

/// The warnings and errors a node logged: count per distinct message (the text after the
/// level and target, fields included, so that counts group like events).
pub fn logged_problems(log: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut problems = BTreeMap::new();
    for line in text.lines() {
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        // `2025-... WARN target: message key=value`: keep the level and the message.
        let event = line[at..].trim();
        *problems.entry(shorten(event)).or_insert(0) += 1;
    }
    problems
}

/// The event without values that differ per occurrence (ids, addresses, numbers), so that
/// one kind of event is one row.
fn shorten(event: &str) -> String {
    let mut out = String::with_capacity(event.len());
    let mut previous_digit = false;
    for c in event.chars() {
        if c.is_ascii_digit() {
            if !previous_digit {
                out.push('N');
            }
            previous_digit = true;
        } else {
            out.push(c);
            previous_digit = false;
        }
    }
    if out.len() > 240 {
        let mut end = 240;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Metrics, shorten};

    #[test]
    fn series_are_summed_over_labels() {
        let metrics = Metrics::parse(
            "# HELP switchboard_connections Open connections.\n\
             # TYPE switchboard_connections gauge\n\
             switchboard_connections{tenant=\"a\"} 3\n\
             switchboard_connections{tenant=\"b b\"} 4\n\
             process_open_fds 17\n",
        );
        assert_eq!(metrics.get("switchboard_connections"), 7.0);
        assert_eq!(metrics.get("process_open_fds"), 17.0);
        assert!(metrics.get("missing").is_nan());
    }

    #[test]
    fn numbers_are_folded_so_that_like_events_group() {
        assert_eq!(
            shorten("WARN x: lost error=connection 127.0.0.1:6379 refused"),
            "WARN x: lost error=connection N.N.N.N:N refused"
        );
    }
}
