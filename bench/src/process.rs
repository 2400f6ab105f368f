//! Child processes under test, each owned by a guard that stops it (SIGTERM, then SIGKILL) on
//! drop, also when a run fails, times out or panics; the `listening on ADDR` readiness line;
//! and a scratch folder for configs and logs.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a process gets to start (print its readiness line).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process gets to stop after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A scratch folder for configs and logs, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// A fresh folder named after `prefix` and this process; `keep` leaves it (configs and
    /// logs) behind for inspection.
    pub fn new(prefix: &str, keep: bool) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ScratchDir { path, keep })
    }

    /// The folder.
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
pub struct Guarded {
    name: String,
    child: Child,
}

impl Guarded {
    /// Takes ownership of a spawned child.
    pub fn new(name: &str, child: Child) -> Self {
        Guarded {
            name: name.to_owned(),
            child,
        }
    }

    /// The name given at spawn, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its stdin or check on it.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends SIGTERM and waits; SIGKILL if it outlives `STOP_TIMEOUT`. Returns whether it
    /// exited on its own with status 0.
    pub fn stop(&mut self) -> bool {
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

/// Spawns `command` with stdout piped and stderr into `log`, and waits (up to
/// `START_TIMEOUT`) for its `listening on ADDR` line.
pub fn spawn_listening(command: Command, name: &str, log: &Path) -> Result<(Guarded, SocketAddr)> {
    let (process, addr) = spawn_reporting(
        command,
        name,
        log,
        "listening on ",
        Stdio::null(),
        START_TIMEOUT,
    )?;
    let addr = addr
        .parse()
        .with_context(|| format!("{name} printed a bad address `{addr}`"))?;
    Ok((process, addr))
}

/// Spawns `command` with `stdin`, stdout piped and stderr into `log`, and waits up to `limit`
/// for a line starting with `prefix`; returns the rest of that line. A thread reads stdout to
/// its end, so the child never blocks on a full pipe.
pub fn spawn_reporting(
    mut command: Command,
    name: &str,
    log: &Path,
    prefix: &'static str,
    stdin: Stdio,
    limit: Duration,
) -> Result<(Guarded, String)> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut process = Guarded::new(name, child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let deadline = Instant::now() + limit;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(rest) => return Ok((process, rest)),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                if let Ok(Some(status)) = process.child.try_wait() {
                    bail!(
                        "{name} exited with {status} before `{prefix}`: {}",
                        tail(log)
                    );
                }
            }
            Err(_) => bail!(
                "{name} did not print `{prefix}` within {limit:?}: {}",
                tail(log)
            ),
        }
    }
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(10);
    if lines.is_empty() {
        format!("{} is empty", path.display())
    } else {
        format!("{}:\n{}", path.display(), lines[start..].join("\n"))
    }
}
