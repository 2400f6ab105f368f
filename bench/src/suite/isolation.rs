//! Isolation: one node, two tenants side by side. `quiet` runs `echo`; `noisy` runs `hostile`,
//! whose `hostile:loop` spins until its CPU budget (100 ms by default) runs out and is answered
//! `handler_timeout` (or, on a build that holds a tenant to its CPU share, `overloaded` when
//! the call could not start within that budget). The quiet tenant's `echo` round trip and
//! `GET /healthz` are sampled, each strictly one at a time, first with no noise, then while `N`
//! noisy connections each keep one `hostile:loop` in flight. Reports both, their ratios
//! (noisy ÷ alone), the server's CPU, and what the loader itself was doing (its CPU, its timer
//! lag, how many noisy requests it really kept in flight), to tell a slow server from a slow
//! loader.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use switchboard_bench::procstat;
use switchboard_bench::stats::percentile;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Clock, Frame, STEP_TIMEOUT, Socket};
use crate::results::{Better, Measured};
use crate::servers::{JWT_SECRET, NOISY_TENANT, QUIET_TENANT, Running};

/// The knobs of the isolation scenario.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Noisy connections, each with one `hostile:loop` in flight.
    pub noisy_connections: usize,
    /// Before each window is measured: probes run unrecorded (and, in the noisy window, the
    /// noise ramps up).
    pub warmup: Duration,
    /// How long each window (alone, noisy) is measured.
    pub measure: Duration,
    /// Bytes of the echo payload as JSON (a string, quotes included).
    pub payload_bytes: usize,
}

/// The metrics of the quiet echo and of `/healthz`: p50 and p99 alone and with noise, their
/// ratios, and how many samples the noisy window got.
pub const ECHO_METRICS: [&str; 7] = [
    "echo p50 alone µs",
    "echo p99 alone µs",
    "echo p50 noisy µs",
    "echo p99 noisy µs",
    "echo p50 noisy ÷ alone",
    "echo p99 noisy ÷ alone",
    "echo samples noisy",
];
pub const HEALTHZ_METRICS: [&str; 7] = [
    "healthz p50 alone µs",
    "healthz p99 alone µs",
    "healthz p50 noisy µs",
    "healthz p99 noisy µs",
    "healthz p50 noisy ÷ alone",
    "healthz p99 noisy ÷ alone",
    "healthz samples noisy",
];

/// How often the loader's timer lag is sampled.
const LAG_PERIOD: Duration = Duration::from_millis(5);

/// What the quiet probes saw in one window.
#[derive(Debug, Default)]
struct Window {
    /// Sorted round trips of the measured part, µs.
    echo_us: Vec<u64>,
    healthz_us: Vec<u64>,
    /// How late the loader's timer fired, µs, sorted.
    lag_us: Vec<u64>,
    failed: u64,
    note: Option<String>,
    /// The measured part, and the CPU the server and the loader used in it.
    seconds: f64,
    server_cpu_secs: f64,
    loader_cpu_secs: f64,
}

impl Window {
    fn fail(&mut self, what: &str, error: &anyhow::Error) {
        self.failed += 1;
        self.note
            .get_or_insert_with(|| format!("{what}: {error:#}"));
    }
}

/// Sequential `echo` requests on the quiet connection until `until`; round trips of the
/// requests sent from `from` on. Stops at the first failure (counted).
async fn echo_probe(
    socket: &mut Socket,
    payload: &str,
    (from, until): (Instant, Instant),
    window: &mut Window,
) {
    let mut id = 0u64;
    while Instant::now() < until {
        id += 1;
        let correlation = format!("q{id}");
        let text =
            format!(r#"{{"type":"echo","correlationId":"{correlation}","payload":{payload}}}"#);
        let sent = Instant::now();
        match client::request(socket, text, &correlation).await {
            Ok(()) if sent >= from => window.echo_us.push(micros(sent.elapsed())),
            Ok(()) => {}
            Err(error) => {
                window.fail("quiet echo", &error);
                return;
            }
        }
    }
}

/// Sequential `GET /healthz` on one keep-alive connection until `until`, like [`echo_probe`].
async fn healthz_probe(
    http: &reqwest::Client,
    addr: SocketAddr,
    (from, until): (Instant, Instant),
    window: &mut Window,
) {
    let url = format!("http://{addr}/healthz");
    while Instant::now() < until {
        let sent = Instant::now();
        let answer = async {
            let response = http.get(&url).timeout(STEP_TIMEOUT).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != reqwest::StatusCode::OK {
                return Err(anyhow!(
                    "answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            anyhow::Ok(())
        };
        match answer.await {
            Ok(()) if sent >= from => window.healthz_us.push(micros(sent.elapsed())),
            Ok(()) => {}
            Err(error) => {
                window.fail("GET /healthz", &error);
                return;
            }
        }
    }
}

/// How late a `LAG_PERIOD` sleep of the loader wakes, until `until`: the loader's own
/// scheduling delay, which inflates every latency it measures. Tokio's timer has a 1 ms
/// granularity, so up to about 1000 µs is the timer, not load.
async fn lag_probe((from, until): (Instant, Instant)) -> Vec<u64> {
    let mut lags = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        tokio::time::sleep(LAG_PERIOD).await;
        if started >= from {
            lags.push(micros(started.elapsed().saturating_sub(LAG_PERIOD)));
        }
    }
    lags
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// One window: the probes run for `warmup + measure`, the last `measure` of it recorded.
async fn window(
    running: &Running,
    http: &reqwest::Client,
    socket: &mut Socket,
    payload: &str,
    (from, until): (Instant, Instant),
) -> Window {
    let mut echo = Window::default();
    let mut healthz = Window::default();
    let cpu = async {
        tokio::time::sleep_until(from).await;
        let before = (
            running.cpu_secs(),
            procstat::sample(std::process::id()).cpu_secs,
        );
        tokio::time::sleep_until(until).await;
        let seconds = from.elapsed().as_secs_f64();
        let after = (
            running.cpu_secs(),
            procstat::sample(std::process::id()).cpu_secs,
        );
        (seconds, after.0 - before.0, after.1 - before.1)
    };
    let ((seconds, server_cpu_secs, loader_cpu_secs), (), (), mut lag_us) = tokio::join!(
        cpu,
        echo_probe(socket, payload, (from, until), &mut echo),
        healthz_probe(http, running.addr, (from, until), &mut healthz),
        lag_probe((from, until)),
    );
    echo.echo_us.sort_unstable();
    healthz.healthz_us.sort_unstable();
    lag_us.sort_unstable();
    Window {
        echo_us: echo.echo_us,
        healthz_us: healthz.healthz_us,
        lag_us,
        failed: echo.failed + healthz.failed,
        note: echo.note.or(healthz.note),
        seconds,
        server_cpu_secs,
        loader_cpu_secs,
    }
}

/// The `payload` of an `error` reply.
#[derive(Debug, Deserialize)]
struct ErrorPayload {
    code: String,
}

/// What the noisy connections saw; replies counted when they arrived in the measured window.
#[derive(Debug, Default)]
struct NoisyTally {
    handler_timeout: u64,
    overloaded: u64,
    /// Any other reply (an `ack`, another error code): `hostile:loop` never ends well.
    unexpected: u64,
    /// Time requests were in flight within the window, µs, over all connections.
    in_flight_us: u64,
    /// Connections that broke (closed, a reply missing for `STEP_TIMEOUT`).
    broken: u64,
    note: Option<String>,
}

impl NoisyTally {
    fn merge(&mut self, other: NoisyTally) {
        self.handler_timeout += other.handler_timeout;
        self.overloaded += other.overloaded;
        self.unexpected += other.unexpected;
        self.in_flight_us += other.in_flight_us;
        self.broken += other.broken;
        if self.note.is_none() {
            self.note = other.note;
        }
    }
}

/// The noisy tenant's connections, each keeping one `hostile:loop` in flight until stopped.
#[derive(Debug)]
struct Noise {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<NoisyTally>,
    failed_connects: u64,
}

impl Noise {
    /// Connects the noisy connections and starts them; replies count between `from_us` and
    /// `until_us` on `clock`.
    async fn start(
        addr: SocketAddr,
        connections: usize,
        clock: Clock,
        (from_us, until_us): (u64, u64),
    ) -> Result<Noise> {
        let path = format!("/ws/{NOISY_TENANT}");
        let mut connecting = JoinSet::new();
        for index in 0..connections {
            let path = path.clone();
            connecting.spawn(async move {
                let token = client::token(JWT_SECRET, &format!("noisy-{index}"))?;
                client::connect_path(addr, &path, &token).await
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let window = Arc::new((AtomicU64::new(from_us), AtomicU64::new(until_us)));
        let mut tasks = JoinSet::new();
        let mut failed_connects = 0;
        while let Some(socket) = connecting.join_next().await {
            match socket.context("a noisy connect panicked")? {
                Ok(socket) => {
                    tasks.spawn(noisy(socket, stop.clone(), window.clone(), clock));
                }
                Err(error) => {
                    failed_connects += 1;
                    eprintln!("    noisy connect failed: {error:#}");
                }
            }
        }
        Ok(Noise {
            stop,
            tasks,
            failed_connects,
        })
    }

    /// Stops sending, waits for the replies in flight (each bounded by `STEP_TIMEOUT`).
    async fn finish(mut self) -> Result<NoisyTally> {
        self.stop.store(true, Ordering::Release);
        let mut tally = NoisyTally::default();
        while let Some(result) = self.tasks.join_next().await {
            tally.merge(result.context("a noisy connection panicked")?);
        }
        Ok(tally)
    }
}

/// One noisy connection.
async fn noisy(
    mut socket: Socket,
    stop: Arc<AtomicBool>,
    window: Arc<(AtomicU64, AtomicU64)>,
    clock: Clock,
) -> NoisyTally {
    let mut tally = NoisyTally::default();
    let mut id = 0u64;
    while !stop.load(Ordering::Acquire) {
        id += 1;
        let correlation = format!("n{id}");
        let text = format!(r#"{{"type":"hostile:loop","correlationId":"{correlation}"}}"#);
        let sent = clock.now_us();
        if let Err(error) = socket.send(Message::text(text)).await {
            tally.broken += 1;
            tally.note.get_or_insert_with(|| format!("send: {error}"));
            break;
        }
        let code = match reply_code(&mut socket, &correlation).await {
            Ok(code) => code,
            Err(error) => {
                tally.broken += 1;
                tally.note.get_or_insert_with(|| format!("{error:#}"));
                break;
            }
        };
        let received = clock.now_us();
        let (from, until) = (
            window.0.load(Ordering::Relaxed),
            window.1.load(Ordering::Relaxed),
        );
        tally.in_flight_us += received.min(until).saturating_sub(sent.max(from));
        if (from..until).contains(&received) {
            match code.as_deref() {
                Some("handler_timeout") => tally.handler_timeout += 1,
                Some("overloaded") => tally.overloaded += 1,
                _ => {
                    tally.unexpected += 1;
                    tally.note.get_or_insert_with(|| {
                        format!("unexpected reply to hostile:loop: {code:?}")
                    });
                }
            }
        }
    }
    let _ = client::close(socket).await;
    tally
}

/// Waits for the reply carrying `correlation`: the error code, or `None` for an `ack`.
async fn reply_code(socket: &mut Socket, correlation: &str) -> Result<Option<String>> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow!("no reply to hostile:loop within {STEP_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow!("connection closed"))??;
        let Message::Text(text) = message else {
            if let Message::Close(frame) = message {
                return Err(anyhow!("closed by the server: {frame:?}"));
            }
            continue;
        };
        let frame = Frame::parse(text.as_str())?;
        if frame.correlation_id != Some(correlation) {
            continue;
        }
        if frame.kind != "error" {
            return Ok(None);
        }
        let payload = frame
            .payload
            .map(|raw| serde_json::from_str::<ErrorPayload>(raw.get()))
            .transpose()
            .with_context(|| format!("bad error reply: {text}"))?;
        return Ok(payload.map(|payload| payload.code));
    }
}

/// The isolation scenario.
pub async fn run(
    running: &Running,
    params: &Params,
    clock: Clock,
    http: &reqwest::Client,
) -> Result<Measured> {
    let payload = format!(
        "\"{}\"",
        "x".repeat(params.payload_bytes.saturating_sub(2).max(1))
    );
    let token = client::token(JWT_SECRET, "quiet")?;
    let mut quiet =
        client::connect_path(running.addr, &format!("/ws/{QUIET_TENANT}"), &token).await?;

    let start = Instant::now();
    let bounds = (
        start + params.warmup,
        start + params.warmup + params.measure,
    );
    let alone = window(running, http, &mut quiet, &payload, bounds).await;

    // The noise's window on the shared clock: the same span as the probes' measured part.
    let start = Instant::now();
    let start_us = clock.now_us();
    let noise = Noise::start(
        running.addr,
        params.noisy_connections,
        clock,
        (
            start_us + micros(params.warmup),
            start_us + micros(params.warmup + params.measure),
        ),
    )
    .await?;
    let bounds = (
        start + params.warmup,
        start + params.warmup + params.measure,
    );
    let noisy = window(running, http, &mut quiet, &payload, bounds).await;
    let failed_connects = noise.failed_connects;
    let tally = noise.finish().await?;
    let _ = client::close(quiet).await;

    let mut measured = Measured::default();
    let p = |sorted: &[u64], q: f64| percentile(sorted, q) as f64;
    let ratio = |noisy: f64, alone: f64| noisy / alone.max(1.0);
    for (names, alone_us, noisy_us) in [
        (ECHO_METRICS, &alone.echo_us, &noisy.echo_us),
        (HEALTHZ_METRICS, &alone.healthz_us, &noisy.healthz_us),
    ] {
        let [alone50, alone99, noisy50, noisy99] = [
            p(alone_us, 0.5),
            p(alone_us, 0.99),
            p(noisy_us, 0.5),
            p(noisy_us, 0.99),
        ];
        let [
            p50_alone,
            p99_alone,
            p50_noisy,
            p99_noisy,
            p50_ratio,
            p99_ratio,
            samples,
        ] = names;
        measured.push(p50_alone, Better::Lower, alone50, 0);
        measured.push(p99_alone, Better::Lower, alone99, 0);
        measured.push(p50_noisy, Better::Lower, noisy50, 0);
        measured.push(p99_noisy, Better::Lower, noisy99, 0);
        measured.push(p50_ratio, Better::Lower, ratio(noisy50, alone50), 2);
        measured.push(p99_ratio, Better::Lower, ratio(noisy99, alone99), 2);
        measured.push(samples, Better::Neither, noisy_us.len() as f64, 0);
    }
    let cores = |cpu: f64, window: &Window| cpu / window.seconds.max(1e-3);
    measured.push(
        "server CPU cores alone",
        Better::Neither,
        cores(alone.server_cpu_secs, &alone),
        2,
    );
    measured.push(
        "server CPU cores noisy",
        Better::Neither,
        cores(noisy.server_cpu_secs, &noisy),
        2,
    );
    measured.push(
        "loader CPU cores alone",
        Better::Neither,
        cores(alone.loader_cpu_secs, &alone),
        2,
    );
    measured.push(
        "loader CPU cores noisy",
        Better::Neither,
        cores(noisy.loader_cpu_secs, &noisy),
        2,
    );
    measured.push(
        "loader lag p99 alone µs",
        Better::Neither,
        p(&alone.lag_us, 0.99),
        0,
    );
    measured.push(
        "loader lag p99 noisy µs",
        Better::Neither,
        p(&noisy.lag_us, 0.99),
        0,
    );
    let seconds = noisy.seconds.max(1e-3);
    measured.push(
        "noisy in flight",
        Better::Neither,
        tally.in_flight_us as f64 / 1e6 / seconds,
        1,
    );
    measured.push(
        "noisy handler_timeout/s",
        Better::Neither,
        tally.handler_timeout as f64 / seconds,
        1,
    );
    measured.push(
        "noisy overloaded/s",
        Better::Neither,
        tally.overloaded as f64 / seconds,
        1,
    );
    let note = |window: &Window| window.note.clone().unwrap_or_default();
    measured.fail(
        alone.failed,
        &format!("failed quiet requests alone ({})", note(&alone)),
    );
    measured.fail(
        noisy.failed,
        &format!("failed quiet requests with noise ({})", note(&noisy)),
    );
    let noisy_note = tally.note.clone().unwrap_or_default();
    measured.fail(failed_connects, "failed noisy connections");
    measured.fail(
        tally.broken,
        &format!("broken noisy connections ({noisy_note})"),
    );
    measured.fail(
        tally.unexpected,
        &format!("unexpected noisy replies ({noisy_note})"),
    );
    Ok(measured)
}
