//! Churn: `M` parallel workers repeat a connection's whole life — connect, join a room, one
//! `echo`, leave, close — `K` times in all. The server's RSS is read after a warm-up round, right
//! after the measured round and after a settle: it must come back to its baseline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::client;
use crate::results::{Better, Measured};
use crate::servers::{JWT_SECRET, Running};

/// The knobs of the churn scenario.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub workers: usize,
    pub cycles: usize,
    pub warmup_cycles: usize,
    pub settle: Duration,
}

/// One life of a connection.
async fn cycle(addr: SocketAddr, token: &str, worker: usize) -> Result<()> {
    let mut socket = client::connect(addr, token).await?;
    let channel = format!("churn-{worker}");
    client::request(
        &mut socket,
        format!(r#"{{"type":"room:join","channel":"{channel}","correlationId":"j"}}"#),
        "j",
    )
    .await?;
    client::request(
        &mut socket,
        r#"{"type":"echo","correlationId":"e","payload":"churn"}"#.to_owned(),
        "e",
    )
    .await?;
    client::request(
        &mut socket,
        format!(r#"{{"type":"room:leave","channel":"{channel}","correlationId":"l"}}"#),
        "l",
    )
    .await?;
    client::close(socket).await
}

/// Runs `cycles` cycles over the workers; returns (failed, first error).
async fn round(addr: SocketAddr, workers: usize, cycles: usize) -> Result<(u64, Option<String>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let next = next.clone();
        let token = client::token(JWT_SECRET, &format!("churn-{worker}"))?;
        tasks.spawn(async move {
            let (mut failed, mut note) = (0u64, None);
            while next.fetch_add(1, Ordering::Relaxed) < cycles {
                if let Err(error) = cycle(addr, &token, worker).await {
                    failed += 1;
                    note.get_or_insert_with(|| format!("{error:#}"));
                }
            }
            (failed, note)
        });
    }
    let (mut failed, mut note) = (0, None);
    while let Some(result) = tasks.join_next().await {
        let (worker_failed, worker_note) = result.context("a churn worker panicked")?;
        failed += worker_failed;
        note = note.or(worker_note);
    }
    Ok((failed, note))
}

/// The churn scenario.
pub async fn run(running: &mut Running, params: &Params) -> Result<Measured> {
    let (warmup_failed, warmup_note) =
        round(running.addr, params.workers, params.warmup_cycles).await?;
    tokio::time::sleep(params.settle).await;
    let baseline_kib = running.rss_kib()?;
    let server_before = running.cpu_secs();
    let started = tokio::time::Instant::now();
    let (failed, note) = round(running.addr, params.workers, params.cycles).await?;
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = running.cpu_secs() - server_before;
    let after_kib = running.rss_kib()?;
    tokio::time::sleep(params.settle).await;
    running.check_alive()?;
    let settled_kib = running.rss_kib()?;
    let growth = |kib: u64| kib as f64 - baseline_kib as f64;
    let mut measured = Measured::default();
    measured.push(
        "cycles/s",
        Better::Higher,
        params.cycles as f64 / seconds,
        0,
    );
    measured.push(
        "server CPU µs/cycle",
        Better::Lower,
        server_cpu * 1e6 / params.cycles.max(1) as f64,
        1,
    );
    measured.push(
        "baseline RSS MiB",
        Better::Neither,
        baseline_kib as f64 / 1024.0,
        1,
    );
    measured.push("RSS growth KiB", Better::Lower, growth(after_kib), 0);
    measured.push(
        "RSS growth settled KiB",
        Better::Lower,
        growth(settled_kib),
        0,
    );
    measured.push(
        "settled growth B/cycle",
        Better::Lower,
        growth(settled_kib) * 1024.0 / params.cycles.max(1) as f64,
        1,
    );
    let note = note.or(warmup_note).unwrap_or_default();
    measured.fail(failed + warmup_failed, &format!("failed cycles ({note})"));
    Ok(measured)
}
