//! One run of one scenario: start the nodes, connect and join the subscribers, warm up,
//! measure throughput flat out, measure latency paced, tally what arrived, stop.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use switchboard_bench::procstat::{self, Sample};
use switchboard_bench::stats::percentile;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clients::{self, Clock, Phase, Progress, Publisher, Record};
use crate::cluster::Node;
use crate::report::Measurement;
use crate::scenario::Scenario;

/// How long delivery may make no progress before the missing messages count as lost.
const STALL: Duration = Duration::from_secs(5);
/// Messages published before measuring, to open connections and warm caches.
const WARMUP: u64 = 100;

/// The knobs of a run.
#[derive(Debug, Clone)]
pub struct Params {
    pub subscribers: usize,
    pub messages: u64,
    pub in_flight: usize,
    pub rate: u64,
    pub latency_messages: u64,
}

/// What a run needs from its surroundings.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub server: &'a Path,
    pub dir: &'a Path,
    pub redis_url: &'a str,
    pub redis_pid: u32,
    pub http: &'a reqwest::Client,
    pub clock: Clock,
}

/// Waits until every subscriber has all of `phase`'s messages, or delivery stalls.
async fn wait_phase(progress: &Progress, phase: usize, subscribers: usize) {
    let mut last = progress.received();
    let mut last_change = tokio::time::Instant::now();
    while progress.done(phase) < subscribers {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let received = progress.received();
        if received != last {
            last = received;
            last_change = tokio::time::Instant::now();
        } else if last_change.elapsed() > STALL {
            eprintln!(
                "    delivery stalled: {}/{subscribers} subscribers complete; counting the rest as lost",
                progress.done(phase)
            );
            return;
        }
    }
}

pub async fn measure(
    env: Env<'_>,
    params: &Params,
    scenario: Scenario,
    run: usize,
) -> Result<Measurement> {
    // A channel of its own per attempt: nothing carries over in Redis from an earlier one.
    static ATTEMPTS: AtomicUsize = AtomicUsize::new(0);
    let attempt = ATTEMPTS.fetch_add(1, Ordering::Relaxed);
    let channel = format!("bench-{}-{}-{attempt}", run + 1, scenario.slug());
    let mut nodes = Vec::new();
    for k in 0..scenario.nodes() {
        let name = format!("run{}-{}-{}", run + 1, scenario.slug(), k);
        let node = tokio::task::block_in_place(|| {
            Node::start(
                env.server,
                env.dir,
                &name,
                scenario.backplane(),
                env.redis_url,
            )
        })?;
        nodes.push(node);
    }
    for node in &nodes {
        node.wait_ready(env.http).await?;
    }

    let warmup = Phase {
        start: 0,
        end: WARMUP,
    };
    let throughput = Phase {
        start: warmup.end,
        end: warmup.end + params.messages,
    };
    let latency = Phase {
        start: throughput.end,
        end: throughput.end + params.latency_messages,
    };
    let total = latency.end;
    let progress = Progress::new(vec![warmup, throughput, latency]);

    let mut connecting = JoinSet::new();
    for index in 0..params.subscribers {
        let addr = nodes[scenario.node_of(index)].addr;
        let channel = channel.clone();
        connecting.spawn(async move {
            clients::connect(addr, index, &channel)
                .await
                .with_context(|| format!("subscriber {index} on {addr}"))
        });
    }
    let (stop, stopped) = watch::channel(false);
    let mut subscribers = JoinSet::new();
    while let Some(socket) = connecting.join_next().await {
        subscribers.spawn(clients::subscribe(
            socket??,
            total,
            env.clock,
            progress.clone(),
            stopped.clone(),
        ));
    }
    // Let the join presence traffic settle.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let publisher = Publisher::new(env.http.clone(), nodes[0].addr, &channel, env.clock);
    publisher.flat_out(warmup, params.in_flight).await?;
    wait_phase(&progress, 0, params.subscribers).await;

    let pids: Vec<u32> = nodes.iter().map(Node::pid).collect();
    let before = Usage::sample(&pids, env.redis_pid);
    let busy_before = procstat::machine_busy_secs();
    let started_us = env.clock.now_us();
    publisher.flat_out(throughput, params.in_flight).await?;
    wait_phase(&progress, 1, params.subscribers).await;
    let usage = Usage::sample(&pids, env.redis_pid).since(before);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let paced = publisher
        .paced(latency, params.rate, params.in_flight.max(64))
        .await?;
    wait_phase(&progress, 2, params.subscribers).await;
    // Everything else the machine did meanwhile: a noise indicator.
    let span_secs = env.clock.now_us().saturating_sub(started_us).max(1) as f64 / 1e6;
    let ours = Usage::sample(&pids, env.redis_pid)
        .since(before)
        .total_cpu_secs();
    let other_cores = ((procstat::machine_busy_secs() - busy_before - ours) / span_secs).max(0.0);

    let _ = stop.send(true);
    let mut records: Vec<Record> = Vec::with_capacity(params.subscribers);
    while let Some(record) = subscribers.join_next().await {
        records.push(record?);
    }
    for node in nodes {
        if let Err(error) = tokio::task::block_in_place(|| node.stop()) {
            eprintln!("    warning: {error:#}");
        }
    }
    let observed = Observed {
        records,
        started_us,
        throughput,
        latency,
        paced,
        usage,
        other_cores,
    };
    tally(scenario, run, params, &observed)
}

/// CPU and writes of the nodes, Redis and this process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    nodes: Sample,
    redis: Sample,
    client: Sample,
}

impl Usage {
    fn sample(nodes: &[u32], redis: u32) -> Self {
        Usage {
            nodes: nodes
                .iter()
                .map(|&pid| procstat::sample(pid))
                .fold(Sample::default(), |sum, sample| sum + sample),
            redis: procstat::sample(redis),
            client: procstat::sample(std::process::id()),
        }
    }

    fn total_cpu_secs(self) -> f64 {
        self.nodes.cpu_secs + self.redis.cpu_secs + self.client.cpu_secs
    }

    fn since(self, before: Usage) -> Self {
        Usage {
            nodes: self.nodes - before.nodes,
            redis: self.redis - before.redis,
            client: self.client - before.client,
        }
    }
}

/// Everything a run observed, before it is reduced to a [`Measurement`].
#[derive(Debug)]
struct Observed {
    records: Vec<Record>,
    /// When the first publish of the throughput phase left, µs.
    started_us: u64,
    throughput: Phase,
    latency: Phase,
    paced: clients::Published,
    usage: Usage,
    /// CPU cores other processes kept busy from the throughput phase to the end.
    other_cores: f64,
}

fn tally(
    scenario: Scenario,
    run: usize,
    params: &Params,
    observed: &Observed,
) -> Result<Measurement> {
    let Observed {
        records,
        started_us,
        throughput,
        latency,
        paced,
        usage,
        other_cores,
    } = observed;
    let (started_us, throughput, latency, usage) = (*started_us, *throughput, *latency, *usage);
    if records.len() != params.subscribers {
        bail!(
            "{} of {} subscribers reported",
            records.len(),
            params.subscribers
        );
    }
    let range = |phase: Phase| {
        usize::try_from(phase.start).unwrap_or(usize::MAX)
            ..usize::try_from(phase.end).unwrap_or(usize::MAX)
    };
    let mut lost = 0u64;
    let mut anomalies = 0u64;
    let mut delivered = 0u64;
    let mut last_us = started_us;
    let mut latencies = Vec::with_capacity(params.subscribers * range(latency).len());
    for record in records {
        lost += record.recv_us.iter().filter(|&&at| at == 0).count() as u64;
        anomalies += record.duplicates + record.seq_errors + record.malformed;
        for &at in &record.recv_us[range(throughput)] {
            if at != 0 {
                delivered += 1;
                last_us = last_us.max(at);
            }
        }
        for index in range(latency) {
            if record.recv_us[index] != 0 {
                latencies.push(record.recv_us[index].saturating_sub(record.sent_us[index]));
            }
        }
    }
    latencies.sort_unstable();
    let mut round_trips = paced.round_trips_us.clone();
    round_trips.sort_unstable();
    let per_delivery = |cpu_secs: f64| cpu_secs * 1e6 / delivered.max(1) as f64;
    let seconds = (last_us.saturating_sub(started_us)).max(1) as f64 / 1e6;
    Ok(Measurement {
        scenario,
        run,
        deliveries_per_sec: delivered as f64 / seconds,
        messages_per_sec: throughput.len() as f64 / seconds,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        publish_p50_us: percentile(&round_trips, 0.50),
        max_lag_us: paced.max_lag_us,
        lost,
        anomalies,
        node_cpu_us: per_delivery(usage.nodes.cpu_secs),
        redis_cpu_us: per_delivery(usage.redis.cpu_secs),
        client_cpu_us: per_delivery(usage.client.cpu_secs),
        deliveries_per_write: delivered as f64 / usage.nodes.writes.max(1) as f64,
        other_cores: *other_cores,
    })
}

/// A run's result as a line on stderr.
pub fn progress_line(m: &Measurement) -> String {
    format!(
        "{:>10.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, other load {:.2} cores, lost {}, anomalies {}",
        m.deliveries_per_sec,
        m.p50_us as f64 / 1000.0,
        m.p99_us as f64 / 1000.0,
        m.max_us as f64 / 1000.0,
        m.other_cores,
        m.lost,
        m.anomalies
    )
}
