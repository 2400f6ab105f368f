//! Echo: `C` connections each keep `K` `echo` requests in flight (a fixed-size string payload);
//! every reply is matched to its request by `correlationId`. Reports messages/s, latency
//! percentiles and CPU per message. The same load, with its phases driven from outside,
//! serves the plugin swap scenario.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use switchboard_bench::procstat;
use switchboard_bench::stats::percentile;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Clock, Frame, STEP_TIMEOUT, Socket};
use crate::results::{Better, Measured};
use crate::servers::{JWT_SECRET, Running};

/// What the load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `echo`, answered by an `ack` with the same payload (on Switchboard: the WASM plugin).
    Echo,
    /// The built-in `ping` with the same payload, answered by a `pong`.
    Ping,
}

impl Request {
    fn kind(self) -> &'static str {
        match self {
            Request::Echo => "echo",
            Request::Ping => "ping",
        }
    }
}

/// The knobs of the echo load.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub request: Request,
    pub connections: usize,
    pub in_flight: usize,
    /// Bytes of the payload as JSON (a string, quotes included).
    pub payload_bytes: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What one connection saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latencies of replies received while measuring, µs.
    pub latencies_us: Vec<u64>,
    /// Replies that were errors or carried the wrong payload.
    pub failed: u64,
    /// Requests never answered.
    pub missing: u64,
    /// The first problem, for the report.
    pub note: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.failed += other.failed;
        self.missing += other.missing;
        if self.note.is_none() {
            self.note = other.note;
        }
    }
}

/// A running echo load: connections sending flat out until stopped.
#[derive(Debug)]
pub struct Load {
    phase: Arc<AtomicU8>,
    tasks: JoinSet<Tally>,
    /// Connections that failed to open (counted as failures).
    pub failed_connects: u64,
}

impl Load {
    /// Connects and starts sending (in the warm-up phase).
    pub async fn start(running: &Running, params: &Params, clock: Clock) -> Result<Load> {
        let payload = format!(
            "\"{}\"",
            "x".repeat(params.payload_bytes.saturating_sub(2).max(1))
        );
        let payload: Arc<str> = payload.into();
        let mut connecting = JoinSet::new();
        for index in 0..params.connections {
            let addr = running.addr;
            connecting.spawn(async move {
                let token = client::token(JWT_SECRET, &format!("echo-{index}"))?;
                client::connect(addr, &token).await
            });
        }
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let mut tasks = JoinSet::new();
        let mut failed_connects = 0;
        while let Some(socket) = connecting.join_next().await {
            match socket? {
                Ok(socket) => {
                    tasks.spawn(connection(
                        socket,
                        phase.clone(),
                        params.request,
                        params.in_flight,
                        payload.clone(),
                        clock,
                    ));
                }
                Err(error) => {
                    failed_connects += 1;
                    eprintln!("    connect failed: {error:#}");
                }
            }
        }
        Ok(Load {
            phase,
            tasks,
            failed_connects,
        })
    }

    /// From now on, replies count.
    pub fn measure(&self) {
        self.phase.store(MEASURE, Ordering::Release);
    }

    /// Stops sending; replies from now on do not count.
    pub fn stop_sending(&self) {
        self.phase.store(STOP, Ordering::Release);
    }

    /// Stops sending, waits for the outstanding replies (bounded), returns the tally.
    pub async fn finish(mut self) -> Result<Tally> {
        self.stop_sending();
        let mut tally = Tally::default();
        while let Some(result) = self.tasks.join_next().await {
            tally.merge(result.context("an echo connection panicked")?);
        }
        Ok(tally)
    }
}

fn request_frame(request: Request, id: u64, payload: &str) -> Message {
    Message::text(format!(
        r#"{{"type":"{}","correlationId":"{id}","payload":{payload}}}"#,
        request.kind()
    ))
}

/// One connection: keeps `in_flight` requests outstanding until the phase is `STOP`, then
/// drains.
async fn connection(
    mut socket: Socket,
    phase: Arc<AtomicU8>,
    request: Request,
    in_flight: usize,
    payload: Arc<str>,
    clock: Clock,
) -> Tally {
    let mut tally = Tally::default();
    let mut pending: HashMap<u64, u64> = HashMap::with_capacity(in_flight);
    let mut next_id = 0u64;
    for _ in 0..in_flight {
        pending.insert(next_id, clock.now_us());
        if socket
            .feed(request_frame(request, next_id, &payload))
            .await
            .is_err()
        {
            break;
        }
        next_id += 1;
    }
    let _ = socket.flush().await;
    loop {
        let current = phase.load(Ordering::Acquire);
        if current == STOP && pending.is_empty() {
            break;
        }
        let message = match tokio::time::timeout(STEP_TIMEOUT, socket.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => {
                tally.note.get_or_insert_with(|| format!("read: {error}"));
                break;
            }
            Ok(None) => {
                tally
                    .note
                    .get_or_insert_with(|| "closed by the server".to_owned());
                break;
            }
            Err(_) => {
                tally
                    .note
                    .get_or_insert_with(|| format!("no reply within {STEP_TIMEOUT:?}"));
                break;
            }
        };
        let Message::Text(text) = message else {
            continue;
        };
        let now = clock.now_us();
        let Ok(frame) = Frame::parse(text.as_str()) else {
            tally.failed += 1;
            continue;
        };
        let Some(sent) = frame
            .correlation_id
            .and_then(|id| id.parse::<u64>().ok())
            .and_then(|id| pending.remove(&id))
        else {
            continue;
        };
        let good = match request {
            Request::Echo => {
                frame.kind == "ack"
                    && frame
                        .payload
                        .is_some_and(|reply| reply.get().len() == payload.len())
            }
            Request::Ping => frame.kind == "pong",
        };
        if !good {
            tally.failed += 1;
            tally
                .note
                .get_or_insert_with(|| format!("bad reply: {}", text.as_str()));
        } else if phase.load(Ordering::Acquire) == MEASURE {
            tally.latencies_us.push(now.saturating_sub(sent));
        }
        if phase.load(Ordering::Acquire) != STOP {
            pending.insert(next_id, clock.now_us());
            if socket
                .send(request_frame(request, next_id, &payload))
                .await
                .is_err()
            {
                pending.remove(&next_id);
                break;
            }
            next_id += 1;
        }
    }
    tally.missing += pending.len() as u64;
    let _ = client::close(socket).await;
    tally
}

/// One timed run of the load.
#[derive(Debug)]
pub struct Timed {
    /// Replies in the measured window, per second.
    pub rate: f64,
    /// CPU of the server and of this process per reply in the window, µs.
    pub server_cpu_us: f64,
    pub loader_cpu_us: f64,
    /// Sorted latencies of the window's replies.
    pub tally: Tally,
    pub failed_connects: u64,
}

/// Connects, warms up, measures, stops.
pub async fn timed(running: &Running, params: &Params, clock: Clock) -> Result<Timed> {
    let load = Load::start(running, params, clock).await?;
    tokio::time::sleep(params.warmup).await;
    let server_before = running.cpu_secs();
    let loader_before = procstat::sample(std::process::id()).cpu_secs;
    let started = tokio::time::Instant::now();
    load.measure();
    tokio::time::sleep(params.measure).await;
    // The window ends when the stop is signalled; the drain is not counted.
    load.stop_sending();
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = running.cpu_secs() - server_before;
    let loader_cpu = procstat::sample(std::process::id()).cpu_secs - loader_before;
    let failed_connects = load.failed_connects;
    let mut tally = load.finish().await?;
    tally.latencies_us.sort_unstable();
    let replies = (tally.latencies_us.len() as f64).max(1.0);
    Ok(Timed {
        rate: tally.latencies_us.len() as f64 / seconds,
        server_cpu_us: server_cpu * 1e6 / replies,
        loader_cpu_us: loader_cpu * 1e6 / replies,
        tally,
        failed_connects,
    })
}

/// The echo scenario.
pub async fn run(running: &Running, params: &Params, clock: Clock) -> Result<Measured> {
    let Timed {
        rate,
        server_cpu_us,
        loader_cpu_us,
        tally,
        failed_connects,
    } = timed(running, params, clock).await?;
    let mut measured = Measured::default();
    measured.push("msgs/s", Better::Higher, rate, 0);
    measured.push("server CPU µs/msg", Better::Lower, server_cpu_us, 2);
    measured.push(
        "p50 µs",
        Better::Lower,
        percentile(&tally.latencies_us, 0.50) as f64,
        0,
    );
    measured.push(
        "p99 µs",
        Better::Lower,
        percentile(&tally.latencies_us, 0.99) as f64,
        0,
    );
    measured.push(
        "p999 µs",
        Better::Lower,
        percentile(&tally.latencies_us, 0.999) as f64,
        0,
    );
    measured.push("loader CPU µs/msg", Better::Neither, loader_cpu_us, 2);
    record_failures(&mut measured, failed_connects, &tally);
    Ok(measured)
}

/// Failed connections, failed and missing replies.
pub fn record_failures(measured: &mut Measured, failed_connects: u64, tally: &Tally) {
    let note = tally.note.as_deref().unwrap_or("");
    measured.fail(failed_connects, "failed connections");
    measured.fail(tally.failed, &format!("failed replies ({note})"));
    measured.fail(tally.missing, &format!("missing replies ({note})"));
}
