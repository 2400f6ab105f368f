//! Echo: `C` connections each keep `K` `echo` requests in flight (a fixed-size string payload);
//! every reply is matched to its request by `correlationId`. Reports messages/s, latency
//! percentiles and CPU per message. The same load, with its phases driven from outside,
//! serves the plugin swap scenario.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{FutureExt, SinkExt, StreamExt};
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
    let mut text = String::with_capacity(48 + payload.len());
    let _ = write!(
        text,
        r#"{{"type":"{}","correlationId":"{id}","payload":{payload}}}"#,
        request.kind()
    );
    Message::text(text)
}

/// Messages one burst reads at most before it writes again (a bound; a connection holds at
/// most `in_flight` replies, so a burst normally ends when the socket has nothing more).
const MAX_BURST: usize = 4096;

/// How a connection's loop ended early.
fn stop_note(tally: &mut Tally, note: String) {
    tally.note.get_or_insert(note);
}

/// One connection: keeps `in_flight` requests outstanding until the phase is `STOP`, then
/// drains.
///
/// The loader is made cheap so that the server is what is measured: the window is fed and
/// flushed once; then each turn waits for one reply, takes every reply the socket already
/// holds (without waiting), checks them, and writes one request per answered one with a
/// single flush for the whole burst. A reply's latency runs from the moment its request was
/// fed (just before the burst's flush) to the moment the loader took the reply.
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
    let mut to_send = in_flight;
    'turns: loop {
        // Write: one request per answered one (the whole window at first), one flush.
        if to_send > 0 && phase.load(Ordering::Acquire) != STOP {
            for _ in 0..to_send {
                pending.insert(next_id, clock.now_us());
                if let Err(error) = socket.feed(request_frame(request, next_id, &payload)).await {
                    pending.remove(&next_id);
                    stop_note(&mut tally, format!("write: {error}"));
                    break 'turns;
                }
                next_id += 1;
            }
            if let Err(error) = socket.flush().await {
                stop_note(&mut tally, format!("flush: {error}"));
                break;
            }
        }
        to_send = 0;
        if pending.is_empty() {
            // Only after STOP: nothing was sent and nothing is outstanding.
            break;
        }
        // Read: wait for one message, then take every one the socket already holds.
        let first = match tokio::time::timeout(STEP_TIMEOUT, socket.next()).await {
            Ok(next) => next,
            Err(_) => {
                stop_note(&mut tally, format!("no reply within {STEP_TIMEOUT:?}"));
                break;
            }
        };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(message) = next.take() {
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    stop_note(&mut tally, format!("read: {error}"));
                    break 'turns;
                }
                None => {
                    stop_note(&mut tally, "closed by the server".to_owned());
                    break 'turns;
                }
            };
            if let Message::Text(text) = message
                && check_reply(
                    text.as_str(),
                    request,
                    &payload,
                    &phase,
                    &clock,
                    &mut pending,
                    &mut tally,
                )
            {
                to_send += 1;
            }
            taken += 1;
            if taken < MAX_BURST {
                next = socket.next().now_or_never();
            }
        }
    }
    tally.missing += pending.len() as u64;
    let _ = client::close(socket).await;
    tally
}

/// Checks one reply against the outstanding requests; true if it answered one (a good or a
/// failed reply: either way, that request is done). A reply for an id that is not outstanding
/// (unknown, or answered before) is a failure.
fn check_reply(
    text: &str,
    request: Request,
    payload: &str,
    phase: &AtomicU8,
    clock: &Clock,
    pending: &mut HashMap<u64, u64>,
    tally: &mut Tally,
) -> bool {
    let now = clock.now_us();
    let Ok(frame) = Frame::parse(text) else {
        tally.failed += 1;
        tally
            .note
            .get_or_insert_with(|| format!("bad frame: {text}"));
        return false;
    };
    let Some(id) = frame.correlation_id.and_then(|id| id.parse::<u64>().ok()) else {
        // Not a reply (the server may send frames of its own); not ours to count.
        return false;
    };
    let Some(sent) = pending.remove(&id) else {
        tally.failed += 1;
        tally
            .note
            .get_or_insert_with(|| format!("reply to no outstanding request: {text}"));
        return false;
    };
    let good = match request {
        Request::Echo => {
            frame.kind == "ack" && frame.payload.is_some_and(|reply| reply.get() == payload)
        }
        Request::Ping => frame.kind == "pong",
    };
    if !good {
        tally.failed += 1;
        tally
            .note
            .get_or_insert_with(|| format!("bad reply: {text}"));
    } else if phase.load(Ordering::Acquire) == MEASURE {
        tally.latencies_us.push(now.saturating_sub(sent));
    }
    true
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
    let server_cores = server_cpu_us * rate / 1e6;
    let loader_cores = loader_cpu_us * rate / 1e6;
    measured.push("server cores", Better::Neither, server_cores, 2);
    measured.push("loader cores", Better::Neither, loader_cores, 2);
    measured.push(
        "bottleneck",
        Better::Verdict(&BOTTLENECKS),
        bottleneck(server_cpu_us, loader_cpu_us, server_cores + loader_cores),
        0,
    );
    record_failures(&mut measured, failed_connects, &tally);
    Ok(measured)
}

/// The labels of the `bottleneck` row, by index.
const BOTTLENECKS: [&str; 4] = ["neither", "loader", "shared", "server"];

/// Below this many cores busy (server and loader together) the run was not CPU-bound.
const SATURATED_CORES: f64 = 1.5;

/// Which side limited an echo run (an index into `BOTTLENECKS`). Loader and server share the
/// machine's cores, so a CPU-bound run reaches about cores ÷ (server + loader CPU per message):
/// the side that takes at least two thirds of the CPU per message (twice the other's) is the
/// bottleneck (making the other side free would raise the rate by at most 1.5×); between the
/// two it is `shared`. A run in which server, loader and other processes together kept fewer
/// than 1.5 of the 2 cores busy was not CPU-bound (the window or the scheduler limited it):
/// `neither`. (`run` judges without the other load; the suite judges again with it.)
fn bottleneck(server_cpu_us: f64, loader_cpu_us: f64, busy_cores: f64) -> f64 {
    let index = if busy_cores < SATURATED_CORES {
        0
    } else if server_cpu_us >= 2.0 * loader_cpu_us {
        3
    } else if loader_cpu_us >= 2.0 * server_cpu_us {
        1
    } else {
        2
    };
    f64::from(index)
}

/// Judges the `bottleneck` row of an echo run again, now that the cores other processes kept
/// busy during the run are known (they count towards saturation). A no-op for other runs.
pub fn judge_with_other_load(measured: &mut Measured, other_cores: f64) {
    let get = |metric: &str| {
        measured
            .values
            .iter()
            .find(|value| value.metric == metric)
            .map(|value| value.value)
    };
    let (Some(server_us), Some(loader_us), Some(server_cores), Some(loader_cores)) = (
        get("server CPU µs/msg"),
        get("loader CPU µs/msg"),
        get("server cores"),
        get("loader cores"),
    ) else {
        return;
    };
    let verdict = bottleneck(
        server_us,
        loader_us,
        server_cores + loader_cores + other_cores,
    );
    if let Some(value) = measured
        .values
        .iter_mut()
        .find(|value| value.metric == "bottleneck")
    {
        value.value = verdict;
    }
}

/// Failed connections, failed and missing replies.
pub fn record_failures(measured: &mut Measured, failed_connects: u64, tally: &Tally) {
    let note = tally.note.as_deref().unwrap_or("");
    measured.fail(failed_connects, "failed connections");
    measured.fail(tally.failed, &format!("failed replies ({note})"));
    measured.fail(tally.missing, &format!("missing replies ({note})"));
}
