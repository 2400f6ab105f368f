//! The processes under test: one `redis-server` and switchboard nodes, each owned by a guard
//! that stops it on drop (also when a run fails, times out or panics).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How long a process gets to start, and to stop after SIGTERM before SIGKILL.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The tenant's credentials, shared with the clients.
pub const API_KEY: &str = "bench-key";
pub const JWT_SECRET: &str = "bench-secret";

/// A scratch folder for configs and logs, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// A fresh folder; `keep` leaves it (configs and logs) behind for inspection.
    pub fn new(keep: bool) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ScratchDir { path, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("configs and logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process stopped with SIGTERM (then SIGKILL) on drop.
#[derive(Debug)]
struct Guarded {
    name: String,
    child: Child,
}

impl Guarded {
    /// Sends SIGTERM and waits; SIGKILL if it outlives `STOP_TIMEOUT`. Returns whether it
    /// exited on its own with status 0.
    fn stop(&mut self) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        eprintln!("{} did not stop after SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

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
        let mut process = Guarded {
            name: "redis-server".to_owned(),
            child,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(port).is_ok() {
                break;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
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
        self.process.child.id()
    }

    /// Checks that the server is still alive.
    pub fn check(&mut self) -> Result<()> {
        match self.process.child.try_wait() {
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
        let mut child = Command::new(server)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (run `cargo build --release -p switchboard` first)",
                    server.display()
                )
            })?;
        let stdout = child.stdout.take().context("no stdout")?;
        let process = Guarded {
            name: name.to_owned(),
            child,
        };
        // A thread reads stdout to its end, so the node never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr
                .parse()
                .with_context(|| format!("{name} printed a bad address `{addr}`"))?,
            Err(_) => bail!(
                "{name} did not print `listening on` within {START_TIMEOUT:?}: {}",
                tail(&log)
            ),
        };
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
                    self.process.name,
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// SIGTERM and wait; an unclean exit is an error naming the log.
    pub fn stop(mut self) -> Result<()> {
        if self.process.stop() {
            Ok(())
        } else {
            Err(anyhow!(
                "{} did not exit cleanly: {}",
                self.process.name,
                tail(&self.log)
            ))
        }
    }
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(10);
    if lines.is_empty() {
        format!("{} is empty", path.display())
    } else {
        format!("{}:\n{}", path.display(), lines[start..].join("\n"))
    }
}
