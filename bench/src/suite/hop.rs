//! Plugin hop: on one connection, strictly one request at a time, alternating `echo` (through
//! the WASM plugin on Switchboard) and the built-in `ping` with the same payload; the difference
//! of their median round trips is what the plugin adds. Then the same pipelined load of each
//! (as in the echo scenario): the difference of the server's CPU per message is what the hop
//! costs in CPU, a steadier figure than latency on a shared machine. Last, the server's CPU per
//! lone request (one at a time again, in blocks of echo and of ping): a lone request runs the
//! call path with cold caches, and this is the CPU the latency hop is made of.

use std::time::Duration;

use anyhow::Result;
use switchboard_bench::procstat;
use switchboard_bench::stats::percentile;

use crate::client::{self, Clock};
use crate::echo::{self, Request};
use crate::results::{Better, Measured};
use crate::servers::{JWT_SECRET, Running};

/// The knobs of the hop scenario.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub samples: usize,
    pub warmup: usize,
    pub payload_bytes: usize,
    /// The pipelined loads (its `request` is set for each).
    pub load: echo::Params,
}

/// One request of `kind`, waiting for its reply: the round trip in µs.
async fn lone(
    socket: &mut client::Socket,
    kind: &str,
    index: usize,
    payload: &str,
    clock: Clock,
) -> Result<u64> {
    let id = format!("{kind}{index}");
    let text = format!(r#"{{"type":"{kind}","correlationId":"{id}","payload":{payload}}}"#);
    let started = clock.now_us();
    client::request(socket, text, &id).await?;
    Ok(clock.now_us().saturating_sub(started))
}

/// The hop scenario.
pub async fn run(running: &Running, params: &Params, clock: Clock) -> Result<Measured> {
    let token = client::token(JWT_SECRET, "hop")?;
    let mut socket = client::connect(running.addr, &token).await?;
    let payload = format!(
        "\"{}\"",
        "x".repeat(params.payload_bytes.saturating_sub(2).max(1))
    );
    let (mut echo, mut ping) = (Vec::new(), Vec::new());
    let (mut failed, mut note) = (0u64, None);
    for index in 0..params.warmup + params.samples {
        for (kind, samples) in [("echo", &mut echo), ("ping", &mut ping)] {
            match lone(&mut socket, kind, index, &payload, clock).await {
                Ok(took) if index >= params.warmup => samples.push(took),
                Ok(_) => {}
                Err(error) => {
                    failed += 1;
                    note.get_or_insert_with(|| format!("{error:#}"));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    // Short blocks of each kind, alternating and in alternating order (echo-ping, ping-echo),
    // so that a drift of the machine weighs on both kinds alike.
    const ROUNDS: usize = 20;
    let (mut lone_cpu_ns, mut lone_count) = ([0u64; 2], [0u64; 2]);
    let block = (params.samples / ROUNDS).max(1);
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for slot in order {
            let kind = ["echo", "ping"][slot];
            let before = procstat::cpu_ns(running.pid());
            for index in 0..block {
                match lone(&mut socket, kind, round * block + index, &payload, clock).await {
                    Ok(_) => lone_count[slot] += 1,
                    Err(error) => {
                        failed += 1;
                        note.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
            lone_cpu_ns[slot] += procstat::cpu_ns(running.pid()).saturating_sub(before);
        }
    }
    let _ = client::close(socket).await;
    echo.sort_unstable();
    ping.sort_unstable();
    let (echo_p50, ping_p50) = (percentile(&echo, 0.5), percentile(&ping, 0.5));
    let mut measured = Measured::default();
    measured.push(
        "hop p50 µs",
        Better::LowerNoRatio,
        echo_p50 as f64 - ping_p50 as f64,
        1,
    );
    measured.push("echo p50 µs", Better::Lower, echo_p50 as f64, 0);
    measured.push("ping p50 µs", Better::Lower, ping_p50 as f64, 0);
    measured.push(
        "echo p99 µs",
        Better::Lower,
        percentile(&echo, 0.99) as f64,
        0,
    );
    measured.push(
        "ping p99 µs",
        Better::Lower,
        percentile(&ping, 0.99) as f64,
        0,
    );
    let [lone_echo, lone_ping] =
        [0, 1].map(|slot| lone_cpu_ns[slot] as f64 / 1e3 / lone_count[slot].max(1) as f64);
    measured.push(
        "hop CPU µs/lone req",
        Better::LowerNoRatio,
        lone_echo - lone_ping,
        1,
    );
    measured.push("echo CPU µs/lone req", Better::Lower, lone_echo, 1);
    measured.push("ping CPU µs/lone req", Better::Lower, lone_ping, 1);
    measured.fail(
        failed,
        &format!("failed requests ({})", note.unwrap_or_default()),
    );
    let mut cpu = [0.0; 2];
    for (slot, request) in cpu.iter_mut().zip([Request::Echo, Request::Ping]) {
        let load = echo::Params {
            request,
            ..params.load
        };
        let timed = echo::timed(running, &load, clock).await?;
        *slot = timed.server_cpu_us;
        echo::record_failures(&mut measured, timed.failed_connects, &timed.tally);
    }
    measured.push("hop CPU µs/msg", Better::LowerNoRatio, cpu[0] - cpu[1], 2);
    measured.push("echo CPU µs/msg", Better::Lower, cpu[0], 2);
    measured.push("ping CPU µs/msg", Better::Lower, cpu[1], 2);
    Ok(measured)
}
