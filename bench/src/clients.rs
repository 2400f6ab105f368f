//! The clients: WebSocket subscribers that record every `tick` they receive, and the HTTP
//! publisher (`POST /api/publish`), flat out or paced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::cluster::{API_KEY, JWT_SECRET};

/// How long a handshake, a join, or one publish may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Microseconds on one monotonic clock shared by publisher and subscribers (same process).
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    pub fn now_us(self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// The message indices `[start, end)` of one phase.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub start: u64,
    pub end: u64,
}

impl Phase {
    pub fn len(self) -> u64 {
        self.end - self.start
    }

    fn contains(self, index: u64) -> bool {
        (self.start..self.end).contains(&index)
    }
}

/// Progress all subscribers report, read by the coordinator.
#[derive(Debug)]
pub struct Progress {
    phases: Vec<Phase>,
    /// Per phase: subscribers that have every message of it.
    done: Vec<AtomicUsize>,
    /// Ticks received by all subscribers together (to detect a stall).
    received: AtomicU64,
}

impl Progress {
    pub fn new(phases: Vec<Phase>) -> Arc<Self> {
        let done = phases.iter().map(|_| AtomicUsize::new(0)).collect();
        Arc::new(Progress {
            phases,
            done,
            received: AtomicU64::new(0),
        })
    }

    pub fn done(&self, phase: usize) -> usize {
        self.done[phase].load(Ordering::Acquire)
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// What one subscriber saw.
#[derive(Debug)]
pub struct Record {
    /// Per message index: send time (µs, from the payload) and first receive time, 0 if not yet.
    pub sent_us: Vec<u64>,
    pub recv_us: Vec<u64>,
    /// Copies of a message after the first.
    pub duplicates: u64,
    /// Frames whose `seq` was not above the previous one.
    pub seq_errors: u64,
    /// Ticks that did not parse or had an index out of range.
    pub malformed: u64,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(rename = "correlationId", borrow, default)]
    correlation_id: Option<&'a str>,
}

#[derive(Deserialize)]
struct Tick {
    t: u64,
    i: u64,
}

/// An HS256 token for user `sub`, valid one hour.
fn token(sub: &str) -> Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let claims = serde_json::json!({"sub": sub, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .context("cannot sign a token")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads text frames until one satisfies `want`, bounded by `STEP_TIMEOUT`.
async fn expect_frame(
    socket: &mut Socket,
    what: &str,
    want: impl Fn(&Frame<'_>) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow!("no {what} within {STEP_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow!("socket closed before {what}"))??;
        if let Message::Text(text) = message {
            let frame: Frame<'_> = serde_json::from_str(text.as_str())
                .with_context(|| format!("bad frame while waiting for {what}: {text}"))?;
            if frame.kind == "error" {
                bail!("error while waiting for {what}: {text}");
            }
            if want(&frame) {
                return Ok(());
            }
        }
    }
}

/// Connects user `u{id}` to `addr`, reads the welcome, joins `channel` and waits for the ack.
pub async fn connect(addr: SocketAddr, id: usize, channel: &str) -> Result<Socket> {
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(&format!("u{id}"))?))?,
    );
    let (mut socket, _) =
        tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| anyhow!("handshake with {addr} timed out"))?
            .with_context(|| format!("handshake with {addr}"))?;
    expect_frame(&mut socket, "welcome", |frame| frame.kind == "welcome").await?;
    let join = format!(r#"{{"type":"room:join","channel":"{channel}","correlationId":"j"}}"#);
    socket.send(Message::text(join)).await?;
    expect_frame(&mut socket, "join ack", |frame| {
        frame.kind == "ack" && frame.correlation_id == Some("j")
    })
    .await?;
    Ok(socket)
}

/// Records ticks until `stop` fires or the socket ends.
pub async fn subscribe(
    mut socket: Socket,
    total: u64,
    clock: Clock,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Record {
    let size = usize::try_from(total).unwrap_or(usize::MAX);
    let mut record = Record {
        sent_us: vec![0; size],
        recv_us: vec![0; size],
        duplicates: 0,
        seq_errors: 0,
        malformed: 0,
    };
    let mut phase_counts = vec![0u64; progress.phases.len()];
    let mut last_seq = 0u64;
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = socket.next() => message,
        };
        let now = clock.now_us();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        };
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
            record.malformed += 1;
            continue;
        };
        if frame.kind != "tick" {
            continue;
        }
        let seq = frame.seq.unwrap_or(0);
        if seq <= last_seq {
            record.seq_errors += 1;
        }
        last_seq = last_seq.max(seq);
        let tick = frame
            .payload
            .and_then(|payload| serde_json::from_str::<Tick>(payload.get()).ok());
        let Some(tick) = tick.filter(|tick| tick.i < total) else {
            record.malformed += 1;
            continue;
        };
        let index = usize::try_from(tick.i).unwrap_or(usize::MAX);
        if record.recv_us[index] != 0 {
            record.duplicates += 1;
            continue;
        }
        record.recv_us[index] = now.max(1);
        record.sent_us[index] = tick.t;
        progress.received.fetch_add(1, Ordering::Relaxed);
        for ((phase, count), done) in progress
            .phases
            .iter()
            .zip(phase_counts.iter_mut())
            .zip(&progress.done)
        {
            if phase.contains(tick.i) {
                *count += 1;
                if *count == phase.len() {
                    done.fetch_add(1, Ordering::Release);
                }
            }
        }
    }
    drop(socket);
    record
}

/// Publishes `tick` messages to one node over a keep-alive HTTP/1.1 pool.
#[derive(Debug, Clone)]
pub struct Publisher {
    http: reqwest::Client,
    url: String,
    channel: String,
    clock: Clock,
}

/// What the publisher measured.
#[derive(Debug, Default)]
pub struct Published {
    /// µs from request to `200 {"seq":N}` for every publish.
    pub round_trips_us: Vec<u64>,
    /// The largest delay between a message's schedule and its send (paced runs), µs.
    pub max_lag_us: u64,
}

impl Publisher {
    pub fn new(http: reqwest::Client, addr: SocketAddr, channel: &str, clock: Clock) -> Self {
        Publisher {
            http,
            url: format!("http://{addr}/api/publish"),
            channel: channel.to_owned(),
            clock,
        }
    }

    /// One publish of message `index`, stamped with the send time; returns the round trip.
    async fn publish(&self, index: u64) -> Result<u64> {
        let sent = self.clock.now_us();
        let body = format!(
            r#"{{"tenant":"default","channel":"{}","type":"tick","payload":{{"t":{sent},"i":{index}}}}}"#,
            self.channel
        );
        let response = self
            .http
            .post(&self.url)
            .header("authorization", format!("Bearer {API_KEY}"))
            .header("content-type", "application/json")
            .body(body)
            .timeout(STEP_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("publish {index}"))?;
        let status = response.status();
        let text = response.text().await?;
        if status != reqwest::StatusCode::OK || !text.contains("\"seq\"") {
            bail!("publish {index} answered {status}: {text}");
        }
        Ok(self.clock.now_us().saturating_sub(sent))
    }

    /// Publishes the phase's messages as fast as `in_flight` concurrent requests allow.
    pub async fn flat_out(&self, phase: Phase, in_flight: usize) -> Result<Published> {
        let next = Arc::new(AtomicU64::new(phase.start));
        let mut workers = JoinSet::new();
        for _ in 0..in_flight.max(1) {
            let publisher = self.clone();
            let next = next.clone();
            workers.spawn(async move {
                let mut round_trips = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= phase.end {
                        return anyhow::Ok(round_trips);
                    }
                    round_trips.push(publisher.publish(index).await?);
                }
            });
        }
        let mut published = Published::default();
        while let Some(result) = workers.join_next().await {
            published.round_trips_us.extend(result??);
        }
        Ok(published)
    }

    /// Publishes the phase's messages at `rate` per second, each on its own schedule, with at
    /// most `in_flight` requests outstanding.
    pub async fn paced(&self, phase: Phase, rate: u64, in_flight: usize) -> Result<Published> {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        let start = tokio::time::Instant::now();
        let mut requests = JoinSet::new();
        let mut max_lag = Duration::ZERO;
        let mut round_trips_us = Vec::new();
        for (k, index) in (phase.start..phase.end).enumerate() {
            let due = start + interval.mul_f64(k as f64);
            tokio::time::sleep_until(due).await;
            let permit = permits.clone().acquire_owned().await?;
            max_lag = max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
            let publisher = self.clone();
            requests.spawn(async move {
                let round_trip = publisher.publish(index).await;
                drop(permit);
                round_trip
            });
            // Surface failures early rather than after the whole phase.
            while let Some(result) = requests.try_join_next() {
                round_trips_us.push(result??);
            }
        }
        let mut published = Published {
            round_trips_us,
            max_lag_us: u64::try_from(max_lag.as_micros()).unwrap_or(u64::MAX),
        };
        while let Some(result) = requests.join_next().await {
            published.round_trips_us.push(result??);
        }
        Ok(published)
    }
}
