//! The processes under test: one `redis-server` and switchboard nodes, each owned by a guard
//! that stops it on drop (also when a run fails, times out or panics).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use switchboard_bench::process::{Guarded, START_TIMEOUT, spawn_listening, tail};

/// The tenant's credentials, shared with the clients.
pub const API_KEY: &str = "bench-key";
pub const JWT_SECRET: &str = "bench-secret";

/// A free loopback port (bound and released; good enough on a quiet machine).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A `redis-server` on a free loopback port, without persistence.
#[derive(Debug)]
pub struct Redis {
    process: Guarded,
    port: u16,
}

impl Redis {
    pub fn start(program: &str, dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let log = File::create(dir.join("redis.log"))?;
        let child = Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start `{program}` (is Redis installed?)"))?;
        let mut process = Guarded::new("redis-server", child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(port).is_ok() {
                break;
            }
            if let Ok(Some(status)) = process.child_mut().try_wait() {
                bail!(
                    "redis-server exited with {status}; see {}",
                    dir.join("redis.log").display()
                );
            }
            if Instant::now() > deadline {
                process.stop();
                bail!("redis-server did not answer PING within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Redis { process, port })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Checks that the server is still alive.
    pub fn check(&mut self) -> Result<()> {
        match self.process.child_mut().try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(anyhow!("redis-server exited with {status}")),
            Err(error) => Err(error.into()),
        }
    }
}

/// One `PING` over a fresh connection, answered `+PONG`.
fn ping(port: u16) -> Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer)?;
    if &answer != b"+PONG\r\n" {
        bail!("unexpected answer to PING");
    }
    Ok(())
}

/// What a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backplane {
    Memory,
    Redis,
}

/// The node's TOML config.
fn config(backplane: Backplane, redis_url: &str) -> String {
    let (backplane_line, redis_table) = match backplane {
        Backplane::Memory => (String::new(), String::new()),
        Backplane::Redis => (
            "backplane = \"redis\"\n".to_owned(),
            format!("[redis]\nurl = \"{redis_url}\"\n"),
        ),
    };
    format!(
        r#"listen = "127.0.0.1:0"
{backplane_line}max_connections = 100000

[log]
level = "warn"

{redis_table}
[[tenants]]
name = "default"
api_key = "{API_KEY}"

[tenants.jwt]
secret = "{JWT_SECRET}"

[tenants.limits]
messages_per_second = 1000000
burst = 1000000
outbound_queue_messages = 100000
"#
    )
}

/// A running switchboard node.
#[derive(Debug)]
pub struct Node {
    process: Guarded,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Node {
    /// Starts `server serve` with a generated config and waits for its `listening on` line.
    /// Readiness (`/readyz`) is awaited separately, see [`Node::wait_ready`].
    pub fn start(
        server: &Path,
        dir: &Path,
        name: &str,
        backplane: Backplane,
        redis_url: &str,
    ) -> Result<Self> {
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config(backplane, redis_url))?;
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(server);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG");
        let (process, addr) = spawn_listening(command, name, &log).with_context(|| {
            format!(
                "starting {} (run `cargo build --release -p switchboard` first)",
                server.display()
            )
        })?;
        Ok(Node { process, addr, log })
    }

    /// Polls `GET /readyz` until it answers 200.
    pub async fn wait_ready(&self, http: &reqwest::Client) -> Result<()> {
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

    /// SIGTERM and wait; an unclean exit is an error naming the log.
    pub fn stop(mut self) -> Result<()> {
        if self.process.stop() {
            Ok(())
        } else {
            Err(anyhow!(
                "{} did not exit cleanly: {}",
                self.process.name(),
                tail(&self.log)
            ))
        }
    }
}
