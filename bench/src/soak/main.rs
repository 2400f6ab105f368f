//! `soak`: two switchboard nodes on a Redis backplane under a long mixed load (connection
//! churn, publishes, plugin broadcasts, plugin swaps) with one Redis restart in the middle;
//! checks that nothing leaks (connections, rooms, tasks, descriptors, memory, Redis keys) and
//! that no message is lost except as the scaling guide allows. See `bench/README.md`.

mod ledger;
mod nodes;
mod redis_server;
mod report;
mod traffic;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use switchboard_bench::process::ScratchDir;
use switchboard_bench::{machine, plugins, procstat};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ledger::{Outcome, Restart, Sent, Subscriber};
use crate::nodes::{HISTORY_TTL_SECS, NODE_TTL_SECS, Node, Plugins};
use crate::redis_server::RedisServer;
use crate::report::{NodeSample, Report, Sample, SourceSummary, Tolerances};
use crate::traffic::{Churned, Clock, Events, Swapped, Uploads};

/// Soak: two nodes on Redis under churn, publishes, broadcasts, plugin swaps and a Redis
/// restart; checks for leaks and lost messages.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// Minutes of load (0.5 to 720).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seconds to wait after the load before the final sample (30 to 3600): long enough for
    /// the Redis keys' TTLs (see bench/README.md).
    #[arg(long, default_value_t = 90)]
    settle: u64,
    /// Seconds between samples during the load [default: the load ÷ 12, 10 to 300]
    #[arg(long)]
    sample_every: Option<u64>,
    /// Subscribers per node (1 to 200), each joined to every channel.
    #[arg(long, default_value_t = 4)]
    subscribers: usize,
    /// Channels published to through the API, and as many broadcast to through the plugin
    /// (1 to 32 each).
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Publishes per second (`POST /api/publish`), over all channels (0.1 to 1000).
    #[arg(long, default_value_t = 40.0)]
    publish_rate: f64,
    /// Plugin broadcasts per second, over all channels (0.1 to 1000).
    #[arg(long, default_value_t = 20.0)]
    broadcast_rate: f64,
    /// Churning workers (0 to 200).
    #[arg(long, default_value_t = 8)]
    churners: usize,
    /// Seconds between plugin swap rounds (2 to 3600).
    #[arg(long, default_value_t = 20)]
    swap_every: u64,
    /// Seconds Redis stays down at the restart (0 to 60).
    #[arg(long, default_value_t = 2.0)]
    outage: f64,
    /// Resident memory a node may keep after the load and the settle, MiB above its baseline.
    #[arg(long, default_value_t = 48.0)]
    rss_tolerance_mib: f64,
    /// How much a node's RSS may grow over the second half of the load, MiB: its RSS at the
    /// load's end against the highest sample of the first half.
    #[arg(long, default_value_t = 8.0)]
    rss_drift_mib: f64,
    /// The switchboard binary [default: `switchboard` next to this binary]
    #[arg(long)]
    server: Option<PathBuf>,
    /// The Redis server program.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the scratch folder (configs, node and Redis logs) and print its path.
    #[arg(long)]
    keep_logs: bool,
}

impl Args {
    fn validate(&self) -> Result<()> {
        let within = |name: &str, value: f64, low: f64, high: f64| {
            if value.is_finite() && (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(anyhow!("--{name} must be within {low} and {high}"))
            }
        };
        within("minutes", self.minutes, 0.5, 720.0)?;
        within("settle", self.settle as f64, 30.0, 3600.0)?;
        if let Some(every) = self.sample_every {
            within("sample-every", every as f64, 1.0, 3600.0)?;
        }
        within("subscribers", self.subscribers as f64, 1.0, 200.0)?;
        within("channels", self.channels as f64, 1.0, 32.0)?;
        within("publish-rate", self.publish_rate, 0.1, 1000.0)?;
        within("broadcast-rate", self.broadcast_rate, 0.1, 1000.0)?;
        within("churners", self.churners as f64, 0.0, 200.0)?;
        within("swap-every", self.swap_every as f64, 2.0, 3600.0)?;
        within("outage", self.outage, 0.0, 60.0)?;
        within("rss-tolerance-mib", self.rss_tolerance_mib, 0.0, 1e6)?;
        within("rss-drift-mib", self.rss_drift_mib, 0.0, 1e6)?;
        Ok(())
    }
}

/// Open descriptors and live tasks may differ from the baseline by this much at the end.
const TASKS_SLACK: f64 = 3.0;
const FDS_SLACK: f64 = 2.0;
/// A loss may fall this long before the kill (a message in flight through Redis), and this
/// long after every node is ready again (the first messages after the recovery).
const BEFORE_KILL: f64 = 1.0;
const AFTER_READY: f64 = 1.0;
/// How long the nodes get to be ready again after Redis is back.
const READY_AGAIN: Duration = Duration::from_secs(30);
/// Deliveries in flight when the sources stop get this long to arrive.
const DRAIN: Duration = Duration::from_secs(3);

const NODE_NAMES: [&str; 2] = ["node-a", "node-b"];
const PLUGIN_PACKAGES: [&str; 4] = [
    "switchboard-plugin-echo",
    "switchboard-plugin-broadcast",
    "switchboard-plugin-greeter-v1",
    "switchboard-plugin-greeter-v2",
];

/// Copies the plugins into the scratch folder (a rebuild during the soak must not count as a
/// changed file the nodes swap in).
fn prepare_plugins(dir: &std::path::Path) -> Result<Plugins> {
    let repo = plugins::find_repo()?;
    let built = plugins::locate_or_build(&repo, &PLUGIN_PACKAGES)?;
    let target = dir.join("plugins");
    std::fs::create_dir_all(&target)?;
    let copy = |package: &str| -> Result<PathBuf> {
        let file = plugins::file_of(package);
        let to = target.join(&file);
        std::fs::copy(built.join(&file), &to)
            .with_context(|| format!("cannot copy {}", built.join(&file).display()))?;
        Ok(to)
    };
    Ok(Plugins {
        echo: copy(PLUGIN_PACKAGES[0])?,
        broadcast: copy(PLUGIN_PACKAGES[1])?,
        greeter_v1: copy(PLUGIN_PACKAGES[2])?,
        greeter_v2: copy(PLUGIN_PACKAGES[3])?,
    })
}

/// Every node's metrics and Redis's keys now.
async fn sample(
    label: String,
    clock: Clock,
    nodes: &[(SocketAddr, u32)],
    http: &reqwest::Client,
    redis_url: &str,
) -> Sample {
    let at = clock.at();
    let mut samples = Vec::new();
    for (addr, pid) in nodes {
        let metrics = nodes::scrape(http, *addr).await;
        let value = |name: &str| {
            metrics
                .as_ref()
                .map_or(f64::NAN, |metrics| metrics.get(name))
        };
        let mut rss_mib = value("process_resident_memory_bytes") / 1024.0 / 1024.0;
        if rss_mib.is_nan() {
            rss_mib = procstat::rss_kib(*pid).map_or(f64::NAN, |kib| kib as f64 / 1024.0);
        }
        samples.push(NodeSample {
            rss_mib,
            fds: value("process_open_fds"),
            tasks: value("switchboard_runtime_alive_tasks"),
            connections: value("switchboard_connections"),
            rooms: value("switchboard_rooms"),
            subscriptions: value("switchboard_backplane_subscriptions"),
        });
    }
    let redis = redis_server::keys(redis_url).await.ok();
    let sample = Sample {
        label,
        at,
        nodes: samples,
        redis,
    };
    let nodes: Vec<String> = sample
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{:.1} MiB, {} fds, {} tasks, {} conns, {} rooms",
                n.rss_mib, n.fds, n.tasks, n.connections, n.rooms
            )
        })
        .collect();
    eprintln!(
        "  [{:>7.1} s] {}: {}; Redis {}",
        sample.at,
        sample.label,
        nodes.join(" | "),
        sample
            .redis
            .as_ref()
            .map_or("down".to_owned(), |keys| format!("{} keys", keys.total))
    );
    sample
}

/// The Redis restart: kill at `kill`, start again after `outage`, wait until every node is
/// ready. Returns the server, and (kill, restarted, every node ready) in clock seconds.
async fn restart_redis(
    mut redis: RedisServer,
    kill: Instant,
    outage: Duration,
    nodes: Vec<SocketAddr>,
    http: reqwest::Client,
    clock: Clock,
) -> (RedisServer, Result<(f64, f64, f64)>) {
    tokio::time::sleep_until(kill).await;
    let kill_at = clock.at();
    eprintln!("  [{kill_at:>7.1} s] killing Redis (SIGKILL)");
    if let Err(error) = redis.kill() {
        return (redis, Err(error));
    }
    tokio::time::sleep(outage).await;
    if let Err(error) = redis.restart().await {
        return (redis, Err(error));
    }
    let restarted_at = clock.at();
    eprintln!("  [{restarted_at:>7.1} s] Redis started again (empty)");
    let deadline = Instant::now() + READY_AGAIN;
    for addr in &nodes {
        while !nodes::ready(&http, *addr).await {
            if Instant::now() > deadline {
                return (
                    redis,
                    Err(anyhow!(
                        "node {addr} not ready within {READY_AGAIN:?} of Redis's restart"
                    )),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ready_at = clock.at();
    eprintln!("  [{ready_at:>7.1} s] every node ready again");
    (redis, Ok((kill_at, restarted_at, ready_at)))
}

fn summarize(sent: &[Sent]) -> SourceSummary {
    let mut summary = SourceSummary {
        sent: sent.len() as u64,
        ..SourceSummary::default()
    };
    for message in sent {
        match message.outcome {
            Outcome::Accepted { .. } => summary.accepted += 1,
            Outcome::Refused(_) => summary.refused += 1,
            Outcome::Unanswered(_) => summary.unanswered += 1,
        }
    }
    summary
}

async fn soak(args: Args) -> Result<bool> {
    let load = Duration::from_secs_f64(args.minutes * 60.0);
    let sample_every = Duration::from_secs(
        args.sample_every
            .unwrap_or_else(|| (load.as_secs() / 12).clamp(10, 300)),
    );
    let settle = Duration::from_secs(args.settle);
    let server = match &args.server {
        Some(server) => server.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder")?
            .join("switchboard"),
    };
    if !server.exists() {
        bail!(
            "{} not found: run `cargo build --release -p switchboard` first",
            server.display()
        );
    }
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open files limit: {error}");
    }
    let dir = ScratchDir::new("switchboard-soak", args.keep_logs)?;
    let binary = dir.path().join("switchboard");
    std::fs::copy(&server, &binary).with_context(|| format!("cannot copy {}", server.display()))?;
    let plugins = prepare_plugins(dir.path())?;
    let uploads = Uploads {
        greeter: [
            std::fs::read(&plugins.greeter_v1)?,
            std::fs::read(&plugins.greeter_v2)?,
        ],
        echo: std::fs::read(&plugins.echo)?,
    };

    let redis = RedisServer::start(&args.redis_server, dir.path()).await?;
    let redis_url = redis.url();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, nodes::config(&redis_url, &plugins))?;
    let mut nodes = Vec::new();
    for name in NODE_NAMES {
        nodes.push(tokio::task::block_in_place(|| {
            Node::start(&binary, &config, dir.path(), name)
        })?);
    }
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    // A connection per sample, closed right after, so the samples hold no descriptor between.
    let sampler = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .context("cannot build the HTTP client")?;
    for node in &nodes {
        node.wait_ready(&http, Duration::from_secs(30)).await?;
    }
    let clock = Clock(Instant::now());
    let names: Vec<String> = NODE_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
    let targets: Vec<(SocketAddr, u32)> = nodes.iter().map(|n| (n.addr, n.pid())).collect();
    eprintln!(
        "soak: {} min of load, Redis on {redis_url}, nodes on {addrs:?}; scratch {}",
        args.minutes,
        dir.path().display()
    );

    // Baseline: started, plugins loaded, nothing connected.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut samples =
        vec![sample("baseline".to_owned(), clock, &targets, &sampler, &redis_url).await];

    // Subscribers join every channel before any message is sent.
    let publish_channels: Vec<String> = (0..args.channels)
        .map(|k| format!("soak-pub-{k}"))
        .collect();
    let broadcast_channels: Vec<String> =
        (0..args.channels).map(|k| format!("soak-bc-{k}")).collect();
    let all_channels: Vec<String> = publish_channels
        .iter()
        .chain(&broadcast_channels)
        .cloned()
        .collect();
    let events = Arc::new(Events::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut listeners = JoinSet::new();
    for (node, addr) in addrs.iter().enumerate() {
        for number in 0..args.subscribers {
            let socket =
                traffic::subscribe(*addr, &format!("sub-{node}-{number}"), &all_channels).await?;
            listeners.spawn(traffic::listen(
                socket,
                node,
                all_channels.clone(),
                clock,
                stop_rx.clone(),
                events.clone(),
            ));
        }
    }

    let load_from = clock.at();
    let until = Instant::now() + load;
    let mut publishers = JoinSet::new();
    for channel in &publish_channels {
        publishers.spawn({
            let channel = channel.clone();
            let sent = traffic::publisher(
                http.clone(),
                addrs.clone(),
                channel.clone(),
                args.publish_rate / args.channels as f64,
                clock,
                until,
            );
            async move { (channel, sent.await) }
        });
    }
    for (k, channel) in broadcast_channels.iter().enumerate() {
        let node = k % addrs.len();
        publishers.spawn({
            let channel = channel.clone();
            let sent = traffic::broadcaster(
                addrs[node],
                node,
                channel.clone(),
                args.broadcast_rate / args.channels as f64,
                clock,
                until,
                events.clone(),
            );
            async move { (channel, sent.await) }
        });
    }
    let mut churners = JoinSet::new();
    for worker in 0..args.churners {
        churners.spawn(traffic::churner(
            addrs.clone(),
            worker,
            publish_channels.clone(),
            clock,
            until,
            events.clone(),
        ));
    }
    let swapper = tokio::spawn(traffic::swapper(
        http.clone(),
        traffic::named(&nodes),
        uploads,
        Duration::from_secs(args.swap_every),
        clock,
        until,
        events.clone(),
    ));
    let restart = tokio::spawn(restart_redis(
        redis,
        Instant::now() + load / 2,
        Duration::from_secs_f64(args.outage),
        addrs.clone(),
        http.clone(),
        clock,
    ));

    // Samples during the load.
    let started = Instant::now();
    for round in 1u32.. {
        let at = started + sample_every * round;
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
        let label = format!("load +{:.0} s", clock.at() - load_from);
        samples.push(sample(label, clock, &targets, &sampler, &redis_url).await);
        for node in &mut nodes {
            node.check_alive()?;
        }
    }
    tokio::time::sleep_until(until).await;
    let load_until = clock.at();
    samples.push(sample("load end".to_owned(), clock, &targets, &sampler, &redis_url).await);

    // The sources stop on their own at `until`; then the deliveries drain.
    let mut sent: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    let mut sources = Vec::new();
    while let Some(result) = publishers.join_next().await {
        let (channel, messages) = result.context("a source panicked")?;
        sources.push((channel.clone(), summarize(&messages)));
        sent.insert(channel, messages);
    }
    sources.sort_by(|a, b| a.0.cmp(&b.0));
    let mut churned = Churned::default();
    while let Some(result) = churners.join_next().await {
        churned += result.context("a churner panicked")?;
    }
    let swapped: Swapped = swapper.await.context("the swapper panicked")?;
    let (redis, restarted) = restart.await.context("the restart panicked")?;
    let (restart, restarted_at) = match restarted {
        Ok((kill_at, restarted_at, ready_at)) => (
            Some(Restart {
                kill_at,
                ready_at,
                before: BEFORE_KILL,
                after: AFTER_READY,
            }),
            Some(restarted_at),
        ),
        Err(error) => {
            events.push(clock.at(), "restart", format!("{error:#}"));
            (None, None)
        }
    };
    tokio::time::sleep(DRAIN).await;
    stop_tx.send_replace(true);
    let mut subscribers: Vec<Subscriber> = Vec::new();
    while let Some(result) = listeners.join_next().await {
        subscribers.push(result.context("a subscriber panicked")?);
    }
    subscribers.sort_by_key(|s| s.node);
    // A node ends a connection (rooms left, Redis entries removed) just after its close
    // handshake: a moment later every client is gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    samples.push(
        sample(
            "stopped +1 s".to_owned(),
            clock,
            &targets,
            &sampler,
            &redis_url,
        )
        .await,
    );

    // Settle: the TTLs run out; sampled every 30 s.
    let settle_from = Instant::now();
    let settle_until = settle_from + settle;
    for round in 1u32.. {
        let at = (settle_from + Duration::from_secs(30) * round).min(settle_until);
        tokio::time::sleep_until(at).await;
        let label = format!(
            "settle +{:.0} s",
            at.duration_since(settle_from).as_secs_f64()
        );
        samples.push(sample(label, clock, &targets, &sampler, &redis_url).await);
        if at >= settle_until {
            break;
        }
    }
    for node in &mut nodes {
        node.check_alive()?;
    }

    let books = ledger::reconcile(&sent, &subscribers, restart);
    let (events, dropped_events) = events.take();
    let tolerances = Tolerances {
        tasks: TASKS_SLACK,
        fds: FDS_SLACK,
        rss_mib: args.rss_tolerance_mib,
    };
    let baseline = samples.first().context("no baseline")?;
    let end = samples.last().context("no final sample")?;
    let mut checks = report::resource_checks(baseline, end, &names, tolerances);
    checks.extend(report::drift_checks(
        &samples,
        (load_from, load_until),
        &names,
        args.rss_drift_mib,
    ));
    checks.extend(report::traffic_checks(
        &books,
        &events,
        dropped_events,
        restart,
    ));
    checks.push(match (restart, restarted_at) {
        (Some(restart), Some(restarted)) => {
            let took = restart.ready_at - restarted;
            report::Check {
                what: "every node ready again after Redis's restart".to_owned(),
                measured: format!("{took:.2} s"),
                bound: "≤ 5 s (the guide: within about a second)".to_owned(),
                pass: took <= 5.0,
            }
        }
        _ => report::Check {
            what: "Redis restarted and every node ready again".to_owned(),
            measured: "no".to_owned(),
            bound: "yes".to_owned(),
            pass: false,
        },
    });
    let mut logs = Vec::new();
    for node in nodes {
        let (name, log) = (node.name.clone(), node.log.clone());
        let clean = node.stop();
        checks.push(report::Check {
            what: format!("{name}: exits 0 on SIGTERM"),
            measured: if clean { "yes" } else { "no" }.to_owned(),
            bound: "yes".to_owned(),
            pass: clean,
        });
        logs.push((name, nodes::logged_problems(&log)));
    }
    drop(redis);

    let setup = format!(
        "Machine: {}. Server: {}. Two nodes on one `redis-server` (no persistence), tenant \
         `default` with `echo`, `broadcast`, `greeter`, default limits, `history.ttl = \
         \"{HISTORY_TTL_SECS}s\"`, `redis.node_ttl = \"{NODE_TTL_SECS}s\"`. Load: {} \
         subscribers per node on {} publish and {} broadcast channels; {} publishes/s and {} \
         broadcasts/s; {} churning workers; a plugin swap round every {} s; Redis down {} s \
         at half time. Samples every {} s, then a {} s settle.",
        machine::describe(),
        server.display(),
        args.subscribers,
        args.channels,
        args.channels,
        args.publish_rate,
        args.broadcast_rate,
        args.churners,
        args.swap_every,
        args.outage,
        sample_every.as_secs(),
        settle.as_secs(),
    );
    let markdown = Report {
        title: format!("Soak: {} min, two nodes on Redis", args.minutes),
        setup,
        names: &names,
        samples: &samples,
        restart,
        restarted_at,
        load: (load_from, load_until),
        books: &books,
        sources: &sources,
        churned,
        swapped: &swapped,
        events: &events,
        logs: &logs,
        checks: &checks,
    }
    .markdown();
    println!("{markdown}");
    if let Some(path) = &args.out {
        std::fs::write(path, &markdown)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("written to {}", path.display());
    }
    Ok(checks.iter().all(|check| check.pass))
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.validate()?;
    // Load, settle, and time to start, drain and stop around them.
    let limit = Duration::from_secs_f64(args.minutes * 60.0)
        + Duration::from_secs(args.settle)
        + Duration::from_secs(600);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let passed = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?;
        // On Ctrl-C, SIGTERM or the time limit the soak's future is dropped, and with it every
        // process guard (nodes, Redis) and the scratch folder.
        tokio::select! {
            result = tokio::time::timeout(limit, soak(args)) => {
                result.map_err(|_| anyhow!("the soak took longer than {limit:?}"))?
            }
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            _ = terminate.recv() => Err(anyhow!("terminated")),
        }
    })?;
    if !passed {
        bail!("some checks failed: see the report");
    }
    Ok(())
}
