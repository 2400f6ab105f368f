//! `cross-node`: throughput and latency of a channel broadcast that crosses the Redis
//! backplane, against one that stays on one node. It drives real `switchboard` processes and a
//! private `redis-server`; see `bench/README.md` for the method.

mod clients;
mod cluster;
mod report;
mod run;
mod scenario;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use switchboard_bench::process::ScratchDir;
use switchboard_bench::procstat;

use crate::clients::Clock;
use crate::cluster::Redis;
use crate::run::{Env, Params};
use crate::scenario::Scenario;

/// Cross-node delivery benchmark: memory vs Redis, same node vs across nodes.
#[derive(Debug, Parser)]
#[command(name = "cross-node")]
struct Args {
    /// The switchboard binary [default: `switchboard` next to this binary, i.e. target/release]
    #[arg(long)]
    server: Option<PathBuf>,
    /// The Redis server program.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// WebSocket subscribers of the channel.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Messages of the throughput phase (published flat out).
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// Concurrent publish requests in the throughput phase.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Messages per second of the latency phase.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Messages of the latency phase.
    #[arg(long, default_value_t = 1000)]
    latency_messages: u64,
    /// Runs of every scenario (order alternates between runs); the table shows medians.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds one run of one scenario may take before the benchmark aborts.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Before each run of a scenario, wait up to this many seconds for other processes to
    /// use less than `--quiet-cores` CPU (0: do not wait).
    #[arg(long, default_value_t = 30)]
    settle: u64,
    /// What counts as quiet for `--settle`, in CPU cores used by other processes.
    #[arg(long, default_value_t = 0.25)]
    quiet_cores: f64,
    /// Repeat a run (at most this many times) when other processes kept `--quiet-cores` or
    /// more busy during it.
    #[arg(long, default_value_t = 2)]
    retries: usize,
    /// Keep the scratch folder (node configs and logs, Redis log) instead of removing it.
    #[arg(long)]
    keep_logs: bool,
    /// Scenarios to run (repeatable) [default: all]
    #[arg(long, value_enum)]
    scenario: Vec<Scenario>,
}

fn default_server() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("switchboard")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("target/release/switchboard"))
}

async fn bench(args: Args) -> Result<()> {
    let server = args.server.clone().unwrap_or_else(default_server);
    if !server.exists() {
        return Err(anyhow!(
            "{} not found: run `cargo build --release -p switchboard` first, or pass --server",
            server.display()
        ));
    }
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open files limit: {error}");
    }
    let scenarios = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    let params = Params {
        subscribers: args.subscribers,
        messages: args.messages,
        in_flight: args.in_flight,
        rate: args.rate,
        latency_messages: args.latency_messages,
    };
    let machine = report::machine(&args.redis_server);
    eprintln!("machine: {machine}");
    eprintln!("server: {}", server.display());

    let dir = ScratchDir::new("switchboard-bench", args.keep_logs)?;
    let mut redis = Redis::start(&args.redis_server, dir.path())?;
    let redis_url = redis.url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    let env = Env {
        server: &server,
        dir: dir.path(),
        redis_url: &redis_url,
        redis_pid: redis.pid(),
        http: &http,
        clock: Clock::new(),
    };

    let mut measurements = Vec::new();
    for run in 0..args.runs {
        let mut order = scenarios.clone();
        if run % 2 == 1 {
            order.reverse();
        }
        for scenario in order {
            eprintln!("run {}/{}: {}", run + 1, args.runs, scenario.label());
            let mut attempt = 0;
            let measurement = loop {
                let measurement = settled_run(&args, env, &params, &redis, scenario, run).await?;
                if measurement.other_cores < args.quiet_cores || attempt >= args.retries {
                    break measurement;
                }
                attempt += 1;
                eprintln!(
                    "    disturbed ({:.2} cores busy elsewhere): repeating ({attempt}/{})",
                    measurement.other_cores, args.retries
                );
            };
            eprintln!("    {}", run::progress_line(&measurement));
            redis.check()?;
            measurements.push(measurement);
        }
    }

    println!("## Cross-node delivery\n");
    println!("Machine: {machine}\n");
    println!(
        "Parameters: {} subscribers; throughput: {} messages, {} publishes in flight; latency: {} messages at {}/s; {} runs, medians shown; `vs memory` is the median of per-run ratios to the memory baseline.\n",
        params.subscribers,
        params.messages,
        params.in_flight,
        params.latency_messages,
        params.rate,
        args.runs
    );
    println!("{}", report::summary(&measurements, &scenarios));
    println!(
        "CPU per delivery in the throughput phase (user + system time of each process over deliveries), and deliveries per write syscall of the nodes:\n"
    );
    println!("{}", report::cpu(&measurements, &scenarios));
    println!("Every run:\n");
    println!("{}", report::raw(&measurements));
    Ok(())
}

/// Waits for a quiet machine (see `--settle`), then measures one run of one scenario.
async fn settled_run(
    args: &Args,
    env: Env<'_>,
    params: &Params,
    redis: &Redis,
    scenario: Scenario,
    run: usize,
) -> Result<report::Measurement> {
    if args.settle > 0 {
        let other = procstat::settle(
            Duration::from_secs(args.settle),
            args.quiet_cores,
            &[redis.pid()],
        )
        .await;
        if other >= args.quiet_cores {
            eprintln!(
                "    machine not quiet after {}s ({other:.2} cores busy elsewhere); going on",
                args.settle
            );
        }
    }
    let limit = Duration::from_secs(args.timeout);
    tokio::time::timeout(limit, run::measure(env, params, scenario, run))
        .await
        .map_err(|_| {
            anyhow!(
                "{} (run {}) took longer than {limit:?}; aborting",
                scenario.label(),
                run + 1
            )
        })?
        .with_context(|| format!("{} (run {})", scenario.label(), run + 1))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // On Ctrl-C the benchmark future is dropped, and with it every process guard.
        tokio::select! {
            result = bench(args) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    })
}
