//! Handshakes: `P` parallel clients, each in a loop: sign a fresh JWT (every connection a
//! distinct token), connect with it, read the welcome, close. Reports handshakes/s, CPU per
//! handshake and the connect-to-welcome latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use switchboard_bench::stats::percentile;
use tokio::task::JoinSet;

use crate::client::{self, Clock};
use crate::results::{Better, Measured};
use crate::servers::{JWT_SECRET, Running};

/// The knobs of the handshake scenario.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub parallel: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Debug)]
struct Shared {
    next: AtomicUsize,
    done: AtomicU64,
    phase: AtomicU8,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    /// Connect-to-welcome latencies while measuring, µs.
    latencies_us: Vec<u64>,
    failed: u64,
    note: Option<String>,
}

async fn client_loop(addr: std::net::SocketAddr, shared: Arc<Shared>, clock: Clock) -> Tally {
    let mut tally = Tally::default();
    while shared.phase.load(Ordering::Acquire) != STOP {
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        let mut started = 0;
        let result = async {
            let token = client::token(JWT_SECRET, &format!("hs-{index}"))?;
            started = clock.now_us();
            let socket = client::connect(addr, &token).await?;
            let welcomed = clock.now_us();
            client::close(socket).await?;
            anyhow::Ok(welcomed)
        }
        .await;
        match result {
            Ok(welcomed) => {
                shared.done.fetch_add(1, Ordering::Relaxed);
                if shared.phase.load(Ordering::Acquire) == MEASURE {
                    tally.latencies_us.push(welcomed.saturating_sub(started));
                }
            }
            Err(error) => {
                tally.failed += 1;
                tally.note.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    tally
}

/// The handshake scenario.
pub async fn run(running: &Running, params: &Params, clock: Clock) -> Result<Measured> {
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        done: AtomicU64::new(0),
        phase: AtomicU8::new(WARMUP),
    });
    let mut clients = JoinSet::new();
    for _ in 0..params.parallel {
        clients.spawn(client_loop(running.addr, shared.clone(), clock));
    }
    tokio::time::sleep(params.warmup).await;
    let done_before = shared.done.load(Ordering::Relaxed);
    let server_before = running.cpu_secs();
    let started = tokio::time::Instant::now();
    shared.phase.store(MEASURE, Ordering::Release);
    tokio::time::sleep(params.measure).await;
    let done = shared.done.load(Ordering::Relaxed) - done_before;
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = running.cpu_secs() - server_before;
    shared.phase.store(STOP, Ordering::Release);
    let mut latencies = Vec::new();
    let (mut failed, mut note) = (0, None);
    while let Some(tally) = clients.join_next().await {
        let tally = tally.context("a handshake client panicked")?;
        latencies.extend(tally.latencies_us);
        failed += tally.failed;
        note = note.or(tally.note);
    }
    latencies.sort_unstable();
    let mut measured = Measured::default();
    measured.push("handshakes/s", Better::Higher, done as f64 / seconds, 0);
    measured.push(
        "server CPU µs/handshake",
        Better::Lower,
        server_cpu * 1e6 / (done as f64).max(1.0),
        1,
    );
    measured.push(
        "p50 ms",
        Better::Lower,
        percentile(&latencies, 0.50) as f64 / 1000.0,
        2,
    );
    measured.push(
        "p99 ms",
        Better::Lower,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        2,
    );
    measured.fail(
        failed,
        &format!("failed handshakes ({})", note.unwrap_or_default()),
    );
    Ok(measured)
}
