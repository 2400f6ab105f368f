//! The soak's load, every loop bounded by the load's end and every step by [`STEP`]:
//! subscribers that record every channel message, a publisher (`POST /api/publish`) and
//! broadcasters (the `broadcast` plugin) that keep the books of what they sent, churning
//! connections (connect, join, `greet`, `echo`, leave, disconnect), and plugin swaps through
//! the admin API.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use switchboard_bench::plugins::rebuilt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::ledger::{Outcome, Sent, Stream, Subscriber};
use crate::nodes::{API_KEY, Node, TENANT};
use crate::wire::{self, Frame, Reply, STEP, Socket};

/// Seconds since the soak started, on one monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn at(self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Something that went wrong (or was refused) during the load, and when.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: f64,
    pub source: &'static str,
    pub what: String,
}

/// At most this many events are kept; the rest are counted.
const EVENTS_KEPT: usize = 10_000;

/// The events of the whole load.
#[derive(Debug, Default)]
pub struct Events {
    list: Mutex<Vec<Event>>,
    dropped: AtomicU64,
}

impl Events {
    pub fn push(&self, at: f64, source: &'static str, what: String) {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        if list.len() < EVENTS_KEPT {
            list.push(Event { at, source, what });
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn take(&self) -> (Vec<Event>, u64) {
        (
            std::mem::take(&mut *self.list.lock().unwrap_or_else(PoisonError::into_inner)),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// A small deterministic generator (xorshift64): the load needs variety, not quality.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// `{"i": N}`: the payload every source sends.
#[derive(Debug, Deserialize)]
struct Index {
    i: u64,
}

/// Connects a subscriber to `addr` and joins every channel (each join acknowledged).
pub async fn subscribe(addr: SocketAddr, sub: &str, channels: &[String]) -> Result<Socket> {
    let mut socket = wire::connect(addr, sub).await?;
    for (number, channel) in channels.iter().enumerate() {
        let correlation = format!("j{number}");
        wire::expect_ok(
            &mut socket,
            format!(
                r#"{{"type":"room:join","channel":"{channel}","correlationId":"{correlation}"}}"#
            ),
            &correlation,
        )
        .await?;
    }
    Ok(socket)
}

/// Records every `tick` (publish) and `broadcast` (plugin) message of `channels` until
/// `stop`, then closes. A connection that ends before is an event, and the subscriber is
/// held only to what was sent before it ended.
pub async fn listen(
    mut socket: Socket,
    node: usize,
    channels: Vec<String>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
    events: Arc<Events>,
) -> Subscriber {
    let mut subscriber = Subscriber {
        node,
        ended_at: None,
        streams: channels
            .iter()
            .map(|channel| (channel.clone(), Stream::default()))
            .collect(),
    };
    let ended = loop {
        let message = tokio::select! {
            _ = stop.changed() => break None,
            message = socket.next() => message,
        };
        let at = clock.at();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                break Some(format!("closed by the server: {frame:?}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => break Some(format!("read failed: {error}")),
            None => break Some("connection ended".to_owned()),
        };
        let Ok(frame) = Frame::parse(text.as_str()) else {
            events.push(at, "subscriber", format!("unparsable frame: {text}"));
            continue;
        };
        if frame.kind != "tick" && frame.kind != "broadcast" {
            continue;
        }
        let Some(stream) = frame
            .channel
            .and_then(|channel| subscriber.streams.get_mut(channel))
        else {
            events.push(
                at,
                "subscriber",
                format!("message of another channel: {text}"),
            );
            continue;
        };
        let index = frame
            .payload
            .and_then(|payload| serde_json::from_str::<Index>(payload.get()).ok());
        match (index, frame.seq) {
            (Some(index), Some(seq)) => stream.receive(index.i, seq, at),
            _ => stream.malformed += 1,
        }
    };
    if let Some(why) = ended {
        let at = clock.at();
        events.push(at, "subscriber", format!("node {node}: {why}"));
        subscriber.ended_at = Some(at);
    } else {
        let _ = wire::close(socket).await;
    }
    subscriber
}

/// When the `k`-th message of a source paced at `rate` per second is due.
fn due(start: Instant, rate: f64, k: u64) -> Instant {
    start + Duration::from_secs_f64(k as f64 / rate.max(0.001))
}

/// Publishes `{"i": N}` to `channel` through `POST /api/publish` at `rate` per second until
/// `until`, one request at a time, alternating between the nodes.
pub async fn publisher(
    http: reqwest::Client,
    nodes: Vec<SocketAddr>,
    channel: String,
    rate: f64,
    clock: Clock,
    until: Instant,
) -> Vec<Sent> {
    let start = Instant::now();
    let mut sent = Vec::new();
    for index in 0.. {
        let at = due(start, rate, index);
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
        let node = usize::try_from(index).unwrap_or(0) % nodes.len();
        let sent_at = clock.at();
        let body = format!(
            r#"{{"tenant":"{TENANT}","channel":"{channel}","type":"tick","payload":{{"i":{index}}}}}"#
        );
        let answer = http
            .post(format!("http://{}/api/publish", nodes[node]))
            .header("authorization", format!("Bearer {API_KEY}"))
            .header("content-type", "application/json")
            .body(body)
            .timeout(STEP)
            .send()
            .await;
        let outcome = match answer {
            Err(error) => Outcome::Unanswered(error.to_string()),
            Ok(response) => {
                let status = response.status();
                match response.text().await {
                    Err(error) => Outcome::Unanswered(error.to_string()),
                    Ok(text) if status == reqwest::StatusCode::OK => {
                        match serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|value| value["seq"].as_u64())
                        {
                            Some(seq) => Outcome::Accepted { seq },
                            None => Outcome::Refused(format!("200 without a seq: {text}")),
                        }
                    }
                    Ok(text) => Outcome::Refused(format!("{status}: {text}")),
                }
            }
        };
        sent.push(Sent {
            index,
            node,
            sent_at,
            outcome,
        });
    }
    sent
}

/// Sends `broadcast` `{"i": N}` to `channel` through the `broadcast` plugin at `rate` per
/// second until `until`, from one connection to node `node` (not a member of the channel),
/// one request at a time. A broken connection is an event and is opened again.
pub async fn broadcaster(
    addr: SocketAddr,
    node: usize,
    channel: String,
    rate: f64,
    clock: Clock,
    until: Instant,
    events: Arc<Events>,
) -> Vec<Sent> {
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut socket: Option<Socket> = None;
    let mut index = 0u64;
    for slot in 0.. {
        let at = due(start, rate, slot);
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
        let connected = match socket.as_mut() {
            Some(connected) => connected,
            None => match wire::connect(addr, &format!("broadcaster-{channel}")).await {
                Ok(fresh) => socket.insert(fresh),
                Err(error) => {
                    events.push(clock.at(), "broadcaster", format!("connect: {error:#}"));
                    continue;
                }
            },
        };
        let correlation = format!("b{index}");
        let text = format!(
            r#"{{"type":"broadcast","channel":"{channel}","correlationId":"{correlation}","payload":{{"i":{index}}}}}"#
        );
        let sent_at = clock.at();
        let outcome = match wire::request(connected, text, &correlation).await {
            Ok(Reply::Ok(payload)) => {
                match serde_json::from_str::<serde_json::Value>(&payload)
                    .ok()
                    .and_then(|value| value["seq"].as_u64())
                {
                    Some(seq) => Outcome::Accepted { seq },
                    None => Outcome::Refused(format!("ack without a seq: {payload}")),
                }
            }
            Ok(Reply::Error(code)) => Outcome::Refused(code),
            Err(error) => {
                events.push(clock.at(), "broadcaster", format!("{error:#}"));
                socket = None;
                Outcome::Unanswered(format!("{error:#}"))
            }
        };
        sent.push(Sent {
            index,
            node,
            sent_at,
            outcome,
        });
        index += 1;
    }
    if let Some(socket) = socket {
        let _ = wire::close(socket).await;
    }
    sent
}

/// What one churning worker did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Churned {
    pub cycles: u64,
    /// Cycles that ended by dropping the TCP connection without a close handshake.
    pub abrupt: u64,
    pub failed: u64,
}

impl std::ops::AddAssign for Churned {
    fn add_assign(&mut self, other: Churned) {
        self.cycles += other.cycles;
        self.abrupt += other.abrupt;
        self.failed += other.failed;
    }
}

/// Connection churn until `until`: connect to a node (alternating) as a user never seen
/// before, join one of eight shared churn rooms, a room of its own (never used again) and one
/// of `watched` (a channel with traffic), `greet` (version 1 or 2, whichever is swapped in),
/// `echo`, leave the shared room, then close, which leaves the other two (one cycle in five
/// drops the connection without a close handshake); pause 20-120 ms. New users and rooms all
/// the time, as in a deployment: what a node records per user or room must go when they do.
pub async fn churner(
    nodes: Vec<SocketAddr>,
    worker: usize,
    watched: Vec<String>,
    clock: Clock,
    until: Instant,
    events: Arc<Events>,
) -> Churned {
    let mut rng = Rng::new(worker as u64 + 1);
    let mut churned = Churned::default();
    while Instant::now() < until {
        let node = usize::try_from(churned.cycles).unwrap_or(0) % nodes.len();
        let abrupt = rng.below(5) == 0;
        let room = format!("soak-churn-{}", rng.below(8));
        let own = format!("soak-room-{worker}-{}", churned.cycles + churned.failed);
        let other = watched[usize::try_from(rng.below(watched.len() as u64)).unwrap_or(0)].clone();
        let user = format!("user-{worker}-{}", churned.cycles + churned.failed);
        let cycle = async {
            let mut socket = wire::connect(nodes[node], &user).await?;
            for (correlation, channel) in [("j1", &room), ("j2", &own), ("j3", &other)] {
                wire::expect_ok(
                    &mut socket,
                    format!(r#"{{"type":"room:join","channel":"{channel}","correlationId":"{correlation}"}}"#),
                    correlation,
                )
                .await?;
            }
            let greeting = wire::expect_ok(
                &mut socket,
                r#"{"type":"greet","correlationId":"g"}"#.to_owned(),
                "g",
            )
            .await?;
            if greeting != r#"{"version":1}"# && greeting != r#"{"version":2}"# {
                bail!("greet answered {greeting}");
            }
            let payload = format!(r#"{{"worker":{worker},"n":{}}}"#, churned.cycles);
            let echoed = wire::expect_ok(
                &mut socket,
                format!(r#"{{"type":"echo","correlationId":"e","payload":{payload}}}"#),
                "e",
            )
            .await?;
            if echoed != payload {
                bail!("echo answered {echoed} to {payload}");
            }
            wire::expect_ok(
                &mut socket,
                format!(r#"{{"type":"room:leave","channel":"{room}","correlationId":"l"}}"#),
                "l",
            )
            .await?;
            if abrupt {
                drop(socket);
            } else {
                wire::close(socket).await?;
            }
            anyhow::Ok(())
        };
        match cycle.await {
            Ok(()) => {
                churned.cycles += 1;
                churned.abrupt += u64::from(abrupt);
            }
            Err(error) => {
                churned.failed += 1;
                events.push(clock.at(), "churn", format!("node {node}: {error:#}"));
            }
        }
        let pause = Duration::from_millis(20 + rng.below(100));
        tokio::time::sleep(pause.min(until.saturating_duration_since(Instant::now()))).await;
    }
    churned
}

/// The plugin builds the swapper uploads.
#[derive(Debug, Clone)]
pub struct Uploads {
    /// `greeter` version 1 and version 2.
    pub greeter: [Vec<u8>; 2],
    pub echo: Vec<u8>,
}

/// What the swapper did.
#[derive(Debug, Default, Clone)]
pub struct Swapped {
    pub swaps: u64,
    pub failed: u64,
    /// How long each successful PUT took, ms.
    pub put_ms: Vec<f64>,
}

/// Every `every` until `until`: swaps `greeter` to the other version on every node and checks
/// that a new connection is greeted by it, then uploads a new build of `echo` (a custom
/// section naming the round) to one node (alternating) and checks that it echoes.
pub async fn swapper(
    http: reqwest::Client,
    nodes: Vec<(SocketAddr, String)>,
    uploads: Uploads,
    every: Duration,
    clock: Clock,
    until: Instant,
    events: Arc<Events>,
) -> Swapped {
    let mut swapped = Swapped::default();
    for round in 1u64.. {
        let at = Instant::now() + every;
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
        let version = if round % 2 == 1 { 2 } else { 1 };
        for (node, (addr, name)) in nodes.iter().enumerate() {
            let body = uploads.greeter[version - 1].clone();
            let outcome = swap(&http, *addr, "greeter", body, Probe::Greeter(version)).await;
            record(&mut swapped, &events, clock, outcome, || {
                format!("greeter v{version} on node {node} ({name})")
            });
        }
        let node = usize::try_from(round).unwrap_or(0) % nodes.len();
        let body = rebuilt(&uploads.echo, &format!("soak round {round}"));
        let outcome = swap(&http, nodes[node].0, "echo", body, Probe::Echo).await;
        record(&mut swapped, &events, clock, outcome, || {
            format!("echo build {round} on node {node}")
        });
    }
    swapped
}

fn record(
    swapped: &mut Swapped,
    events: &Events,
    clock: Clock,
    outcome: Result<f64>,
    what: impl FnOnce() -> String,
) {
    swapped.swaps += 1;
    match outcome {
        Ok(ms) => swapped.put_ms.push(ms),
        Err(error) => {
            swapped.failed += 1;
            events.push(clock.at(), "swap", format!("{}: {error:#}", what()));
        }
    }
}

/// How a swap is checked on a fresh connection.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// `greet` answers this version.
    Greeter(usize),
    /// `echo` echoes.
    Echo,
}

/// PUTs `body` as `plugin` to `addr`, then checks it with `probe` on a fresh connection; the
/// PUT's ms.
async fn swap(
    http: &reqwest::Client,
    addr: SocketAddr,
    plugin: &str,
    body: Vec<u8>,
    probe: Probe,
) -> Result<f64> {
    let started = Instant::now();
    let response = http
        .put(format!(
            "http://{addr}/api/tenants/{TENANT}/plugins/{plugin}"
        ))
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status != reqwest::StatusCode::OK {
        bail!("PUT answered {status}: {text}");
    }
    let mut socket = wire::connect(addr, "swap-check").await?;
    let checked = match probe {
        Probe::Greeter(version) => check_greeter(&mut socket, version).await,
        Probe::Echo => check_echo(&mut socket).await,
    };
    let _ = wire::close(socket).await;
    checked.map(|()| ms)
}

/// The swapped-in `greeter` answers with `version`.
async fn check_greeter(socket: &mut Socket, version: usize) -> Result<()> {
    let expected = format!(r#"{{"version":{version}}}"#);
    let greeting = wire::expect_ok(
        socket,
        r#"{"type":"greet","correlationId":"g"}"#.to_owned(),
        "g",
    )
    .await?;
    if greeting != expected {
        bail!("after the swap, greet answered {greeting}, not {expected}");
    }
    Ok(())
}

/// The swapped-in `echo` echoes.
async fn check_echo(socket: &mut Socket) -> Result<()> {
    let echoed = wire::expect_ok(
        socket,
        r#"{"type":"echo","correlationId":"e","payload":"swapped"}"#.to_owned(),
        "e",
    )
    .await?;
    if echoed != r#""swapped""# {
        bail!("after the swap, echo answered {echoed}");
    }
    Ok(())
}

/// The nodes' addresses and names, for the swapper.
pub fn named(nodes: &[Node]) -> Vec<(SocketAddr, String)> {
    nodes
        .iter()
        .map(|node| (node.addr, node.name.clone()))
        .collect()
}
