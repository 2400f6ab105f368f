//! Idle: the server's resident memory per open, idle connection (welcome read, nothing else),
//! at growing connection counts. The connections are held by worker processes (this binary's
//! `idle-worker` subcommand), each at most `per_worker` connections, so no process nears the
//! open-files limit; the server's `VmRSS` is read before and at each count.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client;
use crate::results::{Better, Measured};
use crate::servers::{JWT_SECRET, Running};
use switchboard_bench::process::{Guarded, spawn_reporting};

/// The knobs of the idle scenario.
#[derive(Debug, Clone)]
pub struct Params {
    /// Connection counts to measure at, ascending.
    pub counts: Vec<usize>,
    pub per_worker: usize,
    /// Wait after the connections are open before reading the RSS.
    pub settle: Duration,
}

/// The worker's readiness line: `connected OK FAILED`.
const REPORT: &str = "connected ";
/// How long a worker may take to open its connections.
const WORKER_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a worker holds its connections at most (a bound in case nobody tells it to stop).
const WORKER_HOLD: Duration = Duration::from_secs(1800);
/// Connections a worker opens at once.
const CONNECT_CONCURRENCY: usize = 32;

/// The case label of each count.
pub fn case(count: usize) -> String {
    format!("idle {count}")
}

/// The `idle-worker` subcommand: what one worker does.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The server.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open and hold.
    #[arg(long)]
    count: usize,
    /// The number of the first user (`idle-{first}`, ...).
    #[arg(long, default_value_t = 0)]
    first: usize,
}

/// Opens the connections, reports `connected OK FAILED` on stdout, holds them (reading, so
/// pings are answered) until stdin closes, then exits.
pub async fn worker(args: WorkerArgs) -> Result<()> {
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut connecting = JoinSet::new();
    for index in args.first..args.first + args.count {
        let (addr, permits) = (args.addr, permits.clone());
        connecting.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let token = client::token(JWT_SECRET, &format!("idle-{index}"))?;
            client::connect(addr, &token).await
        });
    }
    let mut holding = JoinSet::new();
    let mut failed = 0usize;
    while let Some(result) = connecting.join_next().await {
        match result? {
            Ok(mut socket) => {
                holding.spawn(async move { while let Some(Ok(_)) = socket.next().await {} });
            }
            Err(error) => {
                if failed == 0 {
                    eprintln!("connect failed: {error:#}");
                }
                failed += 1;
            }
        }
    }
    println!("{REPORT}{} {failed}", holding.len());
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if line.is_err() {
                break;
            }
        }
        let _ = closed.send(());
    });
    let _ = tokio::time::timeout(WORKER_HOLD, stdin_closed).await;
    Ok(())
}

/// Starts a worker for `count` connections from user `first` on and waits for its report.
fn start_worker(
    exe: &Path,
    dir: &Path,
    addr: SocketAddr,
    first: usize,
    count: usize,
) -> Result<(Guarded, usize, usize)> {
    let mut command = Command::new(exe);
    command
        .arg("idle-worker")
        .arg("--addr")
        .arg(addr.to_string())
        .arg("--count")
        .arg(count.to_string())
        .arg("--first")
        .arg(first.to_string());
    let name = format!("idle-worker-{first}");
    let log = dir.join(format!("{name}.log"));
    let (worker, report) =
        spawn_reporting(command, &name, &log, REPORT, Stdio::piped(), WORKER_TIMEOUT)?;
    let mut numbers = report.split_whitespace().map(str::parse::<usize>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(ok)), Some(Ok(failed))) => Ok((worker, ok, failed)),
        _ => bail!("{name} reported `{report}`"),
    }
}

/// The idle scenario: one measurement per count.
pub async fn run(
    running: &mut Running,
    params: &Params,
    exe: &Path,
    dir: &Path,
) -> Result<Vec<(String, Measured)>> {
    tokio::time::sleep(params.settle).await;
    let baseline_kib = running.rss_kib()?;
    let mut workers: Vec<Guarded> = Vec::new();
    let mut results = Vec::new();
    let (mut connected, mut failed, mut next_user) = (0usize, 0usize, 0usize);
    let (mut previous_kib, mut previous_count) = (baseline_kib, 0usize);
    for &count in &params.counts {
        let started = tokio::time::Instant::now();
        let failed_before = failed;
        let mut starting = JoinSet::new();
        let mut wanted = count.saturating_sub(connected + failed);
        while wanted > 0 {
            let chunk = wanted.min(params.per_worker);
            let (exe, dir, addr, first) = (
                PathBuf::from(exe),
                PathBuf::from(dir),
                running.addr,
                next_user,
            );
            starting.spawn_blocking(move || start_worker(&exe, &dir, addr, first, chunk));
            next_user += chunk;
            wanted -= chunk;
        }
        while let Some(result) = starting.join_next().await {
            let (worker, ok, not_ok) = result.context("a worker starter panicked")??;
            workers.push(worker);
            connected += ok;
            failed += not_ok;
        }
        let connect_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(params.settle).await;
        running.check_alive()?;
        let rss_kib = running.rss_kib()?;
        let per_connection =
            (rss_kib.saturating_sub(baseline_kib)) as f64 / connected.max(1) as f64;
        let marginal = (rss_kib as f64 - previous_kib as f64)
            / (connected.saturating_sub(previous_count)).max(1) as f64;
        let mut measured = Measured::default();
        measured.push("KiB/conn", Better::Lower, per_connection, 2);
        measured.push("marginal KiB/conn", Better::Lower, marginal, 2);
        measured.push("RSS MiB", Better::Lower, rss_kib as f64 / 1024.0, 1);
        measured.push(
            "baseline RSS MiB",
            Better::Neither,
            baseline_kib as f64 / 1024.0,
            1,
        );
        measured.push(
            "projected MiB @100k",
            Better::Lower,
            (baseline_kib as f64 + marginal * 100_000.0) / 1024.0,
            0,
        );
        measured.push(
            "connects/s",
            Better::Neither,
            connected.saturating_sub(previous_count) as f64 / connect_secs,
            0,
        );
        measured.fail((failed - failed_before) as u64, "failed connections");
        results.push((case(count), measured));
        previous_kib = rss_kib;
        previous_count = connected;
    }
    // Closing stdin tells the workers to exit; the guards reap them.
    for worker in &mut workers {
        drop(worker.child_mut().stdin.take());
    }
    tokio::task::block_in_place(|| drop(workers));
    Ok(results)
}
