//! Fan-out: `N` members of one room (presence off) and one publisher, not a member, sending
//! `broadcast` messages in a closed loop: at most `W` messages not yet delivered to every
//! member, so the rate settles at what the whole system sustains. Every member checks that it
//! gets every message once with `seq` increasing. Reports deliveries/s, end-to-end latency,
//! CPU per delivery, and lost messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use switchboard_bench::procstat;
use switchboard_bench::stats::percentile;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Clock, Frame, Socket};
use crate::results::{Better, Measured};
use crate::servers::{JWT_SECRET, PRESENCE_OFF_PREFIX, Running};

/// The knobs of a fan-out run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub members: usize,
    /// Messages in flight end to end (sent, not yet at every member).
    pub window: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// Messages one run may send at most (bounds the counters' memory).
const MAX_MESSAGES: usize = 1_000_000;
/// How long delivery may make no progress before what is missing counts as lost.
const STALL: Duration = Duration::from_secs(5);
/// Connections opened at once while the members join.
const CONNECT_CONCURRENCY: usize = 64;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// State shared by the publisher and the members.
#[derive(Debug)]
struct Shared {
    members: u32,
    /// Per message: members that got it.
    counts: Vec<AtomicU32>,
    /// Messages sent, and messages every member got.
    sent: AtomicU64,
    completed: AtomicU64,
    /// Signalled when a message completes.
    progress: Notify,
    phase: AtomicU8,
    /// Messages sent before the measured window, and the first one after it.
    window_start: AtomicU64,
    window_end: AtomicU64,
}

#[derive(Deserialize)]
struct Tick {
    i: u64,
    t: u64,
}

/// What one member saw.
#[derive(Debug, Default)]
struct Seen {
    /// (message index, latency µs) of every delivery.
    deliveries: Vec<(u32, u32)>,
    /// `seq` not above the previous one (duplicates included), unparsable broadcasts.
    anomalies: u64,
}

async fn member(
    mut socket: Socket,
    shared: Arc<Shared>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
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
        let Ok(frame) = Frame::parse(text.as_str()) else {
            seen.anomalies += 1;
            continue;
        };
        if frame.kind != "broadcast" {
            continue;
        }
        let seq = frame.seq.unwrap_or(0);
        if seq <= last_seq {
            seen.anomalies += 1;
        }
        last_seq = last_seq.max(seq);
        let tick = frame
            .payload
            .and_then(|payload| serde_json::from_str::<Tick>(payload.get()).ok());
        let Some(tick) = tick.filter(|tick| (tick.i as usize) < shared.counts.len()) else {
            seen.anomalies += 1;
            continue;
        };
        let count = shared.counts[tick.i as usize].fetch_add(1, Ordering::AcqRel) + 1;
        if count == shared.members {
            shared.completed.fetch_add(1, Ordering::AcqRel);
            shared.progress.notify_one();
        }
        let latency = u32::try_from(now.saturating_sub(tick.t)).unwrap_or(u32::MAX);
        seen.deliveries.push((tick.i as u32, latency));
    }
    let _ = client::close(socket).await;
    seen
}

/// What the publisher saw.
#[derive(Debug, Default)]
struct Published {
    /// Error replies, or acks that never came.
    failed_acks: u64,
    stalled: bool,
}

async fn publisher(
    socket: Socket,
    shared: Arc<Shared>,
    channel: String,
    window: u64,
    clock: Clock,
) -> Result<Published> {
    let (mut sink, mut stream) = socket.split();
    // Acks are read on the side: they only need counting.
    let acks = tokio::spawn(async move {
        let (mut acked, mut errors) = (0u64, 0u64);
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message
                && let Ok(frame) = Frame::parse(text.as_str())
            {
                match frame.kind {
                    "ack" => acked += 1,
                    "error" => errors += 1,
                    _ => {}
                }
            }
        }
        (acked, errors)
    });
    let mut published = Published::default();
    let mut index = 0u64;
    'sending: while shared.phase.load(Ordering::Acquire) != STOP && (index as usize) < MAX_MESSAGES
    {
        while index - shared.completed.load(Ordering::Acquire) >= window {
            let notified = shared.progress.notified();
            if index - shared.completed.load(Ordering::Acquire) < window {
                break;
            }
            if tokio::time::timeout(STALL, notified).await.is_err() {
                published.stalled = true;
                break 'sending;
            }
            if shared.phase.load(Ordering::Acquire) == STOP {
                break 'sending;
            }
        }
        let frame = format!(
            r#"{{"type":"broadcast","channel":"{channel}","correlationId":"{index}","payload":{{"i":{index},"t":{}}}}}"#,
            clock.now_us()
        );
        sink.send(Message::text(frame)).await?;
        index += 1;
        shared.sent.store(index, Ordering::Release);
    }
    // Give the acks a moment, then close (which ends the reader).
    let deadline = tokio::time::Instant::now() + STALL;
    while !acks.is_finished() && tokio::time::Instant::now() < deadline {
        if shared.completed.load(Ordering::Acquire) >= index {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = sink.send(Message::Close(None)).await;
    let (acked, errors) = tokio::time::timeout(client::STEP_TIMEOUT, acks)
        .await
        .map_err(|_| anyhow!("the publisher's connection did not close"))??;
    published.failed_acks = errors + index.saturating_sub(acked + errors);
    Ok(published)
}

/// Waits until every sent message reached every member, or delivery stalls.
async fn wait_delivered(shared: &Shared) {
    let mut last = shared.completed.load(Ordering::Acquire);
    let mut last_change = tokio::time::Instant::now();
    while shared.completed.load(Ordering::Acquire) < shared.sent.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let completed = shared.completed.load(Ordering::Acquire);
        if completed != last {
            last = completed;
            last_change = tokio::time::Instant::now();
        } else if last_change.elapsed() > STALL {
            return;
        }
    }
}

/// Connects `members` members to `channel`, each joined.
async fn join_members(running: &Running, members: usize, channel: &str) -> Result<Vec<Socket>> {
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut connecting = JoinSet::new();
    for index in 0..members {
        let (addr, channel, permits) = (running.addr, channel.to_owned(), permits.clone());
        connecting.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let token = client::token(JWT_SECRET, &format!("member-{index}"))?;
            let mut socket = client::connect(addr, &token).await?;
            let join =
                format!(r#"{{"type":"room:join","channel":"{channel}","correlationId":"j"}}"#);
            client::request(&mut socket, join, "j").await?;
            anyhow::Ok(socket)
        });
    }
    let mut sockets = Vec::with_capacity(members);
    while let Some(socket) = connecting.join_next().await {
        sockets.push(socket?.context("a member could not connect and join")?);
    }
    Ok(sockets)
}

/// The fan-out scenario.
pub async fn run(running: &Running, params: &Params, clock: Clock, rep: usize) -> Result<Measured> {
    let channel = format!("{PRESENCE_OFF_PREFIX}-{}-{rep}", params.members);
    let sockets = join_members(running, params.members, &channel).await?;
    let shared = Arc::new(Shared {
        members: u32::try_from(params.members)?,
        counts: (0..MAX_MESSAGES).map(|_| AtomicU32::new(0)).collect(),
        sent: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        progress: Notify::new(),
        phase: AtomicU8::new(WARMUP),
        window_start: AtomicU64::new(0),
        window_end: AtomicU64::new(0),
    });
    let (stop, stopped) = watch::channel(false);
    let mut members = JoinSet::new();
    for socket in sockets {
        members.spawn(member(socket, shared.clone(), clock, stopped.clone()));
    }
    let token = client::token(JWT_SECRET, "publisher")?;
    let socket = client::connect(running.addr, &token).await?;
    let publishing = tokio::spawn(publisher(
        socket,
        shared.clone(),
        channel,
        params.window as u64,
        clock,
    ));

    tokio::time::sleep(params.warmup).await;
    let completed_before = shared.completed.load(Ordering::Acquire);
    shared
        .window_start
        .store(shared.sent.load(Ordering::Acquire), Ordering::Release);
    let server_before = running.cpu_secs();
    let loader_before = procstat::sample(std::process::id()).cpu_secs;
    let started = tokio::time::Instant::now();
    shared.phase.store(MEASURE, Ordering::Release);
    tokio::time::sleep(params.measure).await;
    let completed_after = shared.completed.load(Ordering::Acquire);
    shared
        .window_end
        .store(shared.sent.load(Ordering::Acquire), Ordering::Release);
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = running.cpu_secs() - server_before;
    let loader_cpu = procstat::sample(std::process::id()).cpu_secs - loader_before;
    shared.phase.store(STOP, Ordering::Release);
    shared.progress.notify_one();

    let published = publishing.await.context("the publisher panicked")??;
    wait_delivered(&shared).await;
    let _ = stop.send(true);
    let mut seen = Vec::with_capacity(params.members);
    while let Some(result) = members.join_next().await {
        seen.push(result.context("a member panicked")?);
    }

    let sent = shared.sent.load(Ordering::Acquire) as usize;
    let lost: u64 = shared.counts[..sent]
        .iter()
        .map(|count| u64::from(shared.members.saturating_sub(count.load(Ordering::Acquire))))
        .sum();
    let anomalies: u64 = seen.iter().map(|s| s.anomalies).sum();
    let (first, end) = (
        shared.window_start.load(Ordering::Acquire),
        shared.window_end.load(Ordering::Acquire),
    );
    let mut latencies: Vec<u64> = seen
        .iter()
        .flat_map(|s| s.deliveries.iter())
        .filter(|(index, _)| (first..end).contains(&u64::from(*index)))
        .map(|&(_, latency)| u64::from(latency))
        .collect();
    latencies.sort_unstable();
    let deliveries =
        completed_after.saturating_sub(completed_before) as f64 * params.members as f64;

    let mut measured = Measured::default();
    measured.push("deliveries/s", Better::Higher, deliveries / seconds, 0);
    measured.push(
        "server CPU µs/delivery",
        Better::Lower,
        server_cpu * 1e6 / deliveries.max(1.0),
        3,
    );
    measured.push(
        "msgs/s",
        Better::Higher,
        deliveries / seconds / params.members as f64,
        0,
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
    measured.push(
        "loader CPU µs/delivery",
        Better::Neither,
        loader_cpu * 1e6 / deliveries.max(1.0),
        3,
    );
    measured.fail(lost, "lost deliveries");
    measured.fail(
        anomalies,
        "anomalies (seq not increasing, duplicates, bad frames)",
    );
    measured.fail(published.failed_acks, "failed or missing acks");
    if published.stalled {
        measured.fail(1, "stall (no delivery progress for 5 s)");
    }
    Ok(measured)
}
