//! The soak's `redis-server`: started on a free loopback port without persistence, killed
//! (SIGKILL) and started again on the same port, and read: `DBSIZE` and the keys by kind.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use switchboard_bench::process::Guarded;
use tokio::time::Instant;

/// How long a (re)started server may take to answer `PING`.
const START: Duration = Duration::from_secs(15);
/// How long one query (connecting included) may take.
const QUERY: Duration = Duration::from_secs(5);
/// At most this many `SCAN` rounds (of up to 1000 keys each) per count.
const MAX_SCANS: usize = 10_000;

/// A `redis-server` process on one port, kept across restarts.
#[derive(Debug)]
pub struct RedisServer {
    program: String,
    pub port: u16,
    dir: PathBuf,
    /// `None` while killed.
    process: Option<Guarded>,
    /// How many times it was started.
    starts: u32,
}

impl RedisServer {
    /// Starts `program` on a free loopback port and waits until it answers.
    pub async fn start(program: &str, dir: &Path) -> Result<RedisServer> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .context("cannot find a free loopback port")?
            .port();
        let mut server = RedisServer {
            program: program.to_owned(),
            port,
            dir: dir.to_path_buf(),
            process: None,
            starts: 0,
        };
        server.run().await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The log of every start.
    pub fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// SIGKILL: no shutdown work, everything in memory is gone.
    pub fn kill(&mut self) -> Result<()> {
        let mut process = self
            .process
            .take()
            .ok_or_else(|| anyhow!("redis-server is not running"))?;
        process
            .child_mut()
            .kill()
            .context("cannot kill redis-server")?;
        process
            .child_mut()
            .wait()
            .context("cannot reap redis-server")?;
        Ok(())
    }

    /// Starts it again on the same port (empty) and waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        if self.process.is_some() {
            self.kill()?;
        }
        self.run().await
    }

    /// Starts the process, and again while it exits at once (its port still held), until it
    /// answers `PING`, for at most `START`.
    async fn run(&mut self) -> Result<()> {
        let deadline = Instant::now() + START;
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log())?;
            let child = Command::new(&self.program)
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--dir"])
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| {
                    format!("cannot start `{}` (is Redis installed?)", self.program)
                })?;
            self.starts += 1;
            let mut process = Guarded::new(&format!("redis-server #{}", self.starts), child);
            loop {
                if ping(&self.url()).await.is_ok() {
                    self.process = Some(process);
                    return Ok(());
                }
                if let Ok(Some(_)) = process.child_mut().try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    process.stop();
                    bail!(
                        "redis-server on port {} did not answer within {START:?} (see {})",
                        self.port,
                        self.log().display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if Instant::now() >= deadline {
                bail!(
                    "redis-server on port {} kept exiting (see {})",
                    self.port,
                    self.log().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A connection to the Redis at `url`, within `QUERY`.
async fn connection(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    tokio::time::timeout(QUERY, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| anyhow!("connecting to Redis took over {QUERY:?}"))?
        .context("cannot connect to Redis")
}

/// `PING` answered `PONG`.
async fn ping(url: &str) -> Result<()> {
    let mut connection = connection(url).await?;
    let pong: String = tokio::time::timeout(QUERY, redis::cmd("PING").query_async(&mut connection))
        .await
        .map_err(|_| anyhow!("PING took over {QUERY:?}"))??;
    if pong != "PONG" {
        bail!("PING answered {pong}");
    }
    Ok(())
}

/// `DBSIZE` and every key counted by [`kind`], from one `SCAN` over the keyspace.
pub async fn keys(url: &str) -> Result<Keys> {
    let mut connection = connection(url).await?;
    let total: u64 = tokio::time::timeout(QUERY, redis::cmd("DBSIZE").query_async(&mut connection))
        .await
        .map_err(|_| anyhow!("DBSIZE took over {QUERY:?}"))??;
    let mut by_kind = BTreeMap::new();
    let mut node_sets = Vec::new();
    let mut cursor = 0u64;
    for _ in 0..MAX_SCANS {
        let (next, keys): (u64, Vec<String>) = tokio::time::timeout(
            QUERY,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection),
        )
        .await
        .map_err(|_| anyhow!("SCAN took over {QUERY:?}"))??;
        for key in keys {
            let kind = kind(&key);
            *by_kind.entry(kind).or_insert(0) += 1;
            if kind == "node sets" {
                node_sets.push(key);
            }
        }
        cursor = next;
        if cursor == 0 {
            let mut node_set_members = 0;
            for key in node_sets {
                let members: u64 = tokio::time::timeout(
                    QUERY,
                    redis::cmd("SCARD").arg(key).query_async(&mut connection),
                )
                .await
                .map_err(|_| anyhow!("SCARD took over {QUERY:?}"))??;
                node_set_members += members;
            }
            return Ok(Keys {
                total,
                by_kind,
                node_set_members,
            });
        }
    }
    bail!("SCAN did not finish within {MAX_SCANS} rounds")
}

/// Redis's keys at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// `DBSIZE`.
    pub total: u64,
    /// Keys by [`kind`] (a `SCAN` may count a key twice when the keyspace changes under it).
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Members of the nodes' room and user sets together (`SCARD`).
    pub node_set_members: u64,
}

impl Keys {
    pub fn count(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }
}

/// Every kind of key, in report order (see the scaling guide's table of what lives in Redis).
pub const KINDS: [&str; 10] = [
    "state",
    "nodes",
    "node sets",
    "meta",
    "history",
    "presence",
    "users",
    "kv",
    "locks",
    "other",
];

/// What a backplane key is, from its name (prefix `switchboard`).
pub fn kind(key: &str) -> &'static str {
    let Some(rest) = key.strip_prefix("switchboard:") else {
        return "other";
    };
    match rest {
        "state" => return "state",
        "nodes" => return "nodes",
        _ => {}
    }
    if rest.starts_with("r:{") {
        if rest.ends_with(":m") {
            "meta"
        } else if rest.ends_with(":h") {
            "history"
        } else if rest.ends_with(":p") {
            "presence"
        } else {
            "other"
        }
    } else if rest.starts_with("u:{") {
        "users"
    } else if rest.starts_with("n:{") {
        if rest.ends_with(":reap") {
            "locks"
        } else {
            "node sets"
        }
    } else if rest.starts_with("kv:{") {
        "kv"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::kind;

    #[test]
    fn keys_are_sorted_by_what_they_hold() {
        assert_eq!(kind("switchboard:state"), "state");
        assert_eq!(kind("switchboard:nodes"), "nodes");
        assert_eq!(kind("switchboard:r:{default:soak-pub-0}:m"), "meta");
        assert_eq!(kind("switchboard:r:{default:soak-pub-0}:h"), "history");
        assert_eq!(kind("switchboard:r:{default:a:p}:p"), "presence");
        assert_eq!(kind("switchboard:u:{default:alice}"), "users");
        assert_eq!(kind("switchboard:n:{n1}:rooms"), "node sets");
        assert_eq!(kind("switchboard:n:{n1}:users"), "node sets");
        assert_eq!(kind("switchboard:n:{n1}:reap"), "locks");
        assert_eq!(kind("switchboard:kv:{default:p}:k"), "kv");
        assert_eq!(kind("elsewhere"), "other");
    }
}
