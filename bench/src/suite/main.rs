//! `suite`: the benchmark suite. Runs every scenario (echo, fan-out, idle memory, handshakes,
//! churn, plugin hop, plugin swap, tenant isolation) against Switchboard and the two baselines (bare
//! tokio-tungstenite, Node `ws`), a fresh server process per run, the servers interleaved in
//! every repetition, and writes a markdown table of medians and ratios. See `bench/README.md`.

mod churn;
mod client;
mod echo;
mod fanout;
mod handshake;
mod hop;
mod idle;
mod isolation;
mod results;
mod servers;
mod swap;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use switchboard_bench::process::ScratchDir;
use switchboard_bench::{machine, procstat};

use crate::client::Clock;
use crate::results::{Measured, Record};
use crate::servers::{Programs, Running, Server};

/// Benchmark suite: Switchboard against bare tokio-tungstenite and Node `ws`.
#[derive(Debug, Parser)]
#[command(name = "suite", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// (used by the suite itself) hold idle connections for the idle scenario.
    IdleWorker(idle::WorkerArgs),
}

/// A scenario, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Echo,
    Fanout,
    Idle,
    Handshakes,
    Churn,
    Hop,
    Swap,
    Isolation,
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Tiny sizes, Switchboard and bare only, one repetition, no settling: a few seconds;
    /// exits 1 on any lost message or failed reply.
    #[arg(long)]
    smoke: bool,
    /// Repetitions; medians are shown [default: 3, smoke 1]
    #[arg(long)]
    reps: Option<usize>,
    /// Run only these scenarios (repeatable) [default: all]
    #[arg(long, value_enum)]
    only: Vec<Scenario>,
    /// Run only against these servers (repeatable) [default: all; smoke: switchboard, bare]
    #[arg(long, value_enum)]
    server: Vec<Server>,
    /// Also write the markdown to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The switchboard binary [default: next to this binary]
    #[arg(long)]
    switchboard: Option<PathBuf>,
    /// The bare-server binary [default: next to this binary]
    #[arg(long)]
    bare: Option<PathBuf>,
    /// A second switchboard binary (e.g. built before an optimisation), run as server `before`
    /// alongside the others in every repetition: the table gets a `sb ÷ before` column
    #[arg(long)]
    before: Option<PathBuf>,
    /// The plugins the `before` binary loads (a folder of `switchboard_plugin_*.wasm` built from
    /// the same commit), when it cannot load the current build's: a plugin built against a
    /// newer plugin world imports what an older host does not have [default: the current ones]
    #[arg(long, requires = "before")]
    before_plugins: Option<PathBuf>,
    /// The Node program.
    #[arg(long, default_value = "node")]
    node: String,
    /// Serve `echo` with this plugin instead of the Rust echo plugin (e.g. the JavaScript one,
    /// plugins/echo-js built with sdk/js/build.mjs): what another plugin costs per message.
    #[arg(long)]
    echo_wasm: Option<PathBuf>,
    /// Before each run, wait up to this many seconds for other processes to use less than
    /// `--quiet-cores` [default: 20, smoke 0]
    #[arg(long)]
    settle: Option<u64>,
    /// What counts as quiet for `--settle`, in CPU cores used by other processes.
    #[arg(long, default_value_t = 0.3)]
    quiet_cores: f64,
    /// One run may take this many seconds before the suite aborts.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Keep the scratch folder (config, plugins, logs) and print its path.
    #[arg(long)]
    keep_logs: bool,
    /// Seconds measured per throughput run [default: 5, smoke 0.5]
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of warm-up before measuring [default: 1, smoke 0.2]
    #[arg(long)]
    warmup: Option<f64>,
    /// Echo: connections [default: 50]
    #[arg(long)]
    echo_connections: Option<usize>,
    /// Echo: requests in flight per connection [default: 8]
    #[arg(long)]
    echo_in_flight: Option<usize>,
    /// Echo and hop: payload bytes (a JSON string, quotes included).
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Fan-out: room sizes, comma separated [default: 1000,5000]
    #[arg(long, value_delimiter = ',')]
    fanout_members: Vec<usize>,
    /// Fan-out: messages in flight end to end [default: 8]
    #[arg(long)]
    fanout_window: Option<usize>,
    /// Idle: connection counts, ascending, comma separated [default: 10000,19000]
    #[arg(long, value_delimiter = ',')]
    idle_counts: Vec<usize>,
    /// Idle: connections per loader worker process [default: 5000]
    #[arg(long)]
    idle_per_worker: Option<usize>,
    /// Handshakes: parallel clients [default: 32]
    #[arg(long)]
    handshake_parallel: Option<usize>,
    /// Churn: cycles measured [default: 4000]
    #[arg(long)]
    churn_cycles: Option<usize>,
    /// Churn: parallel workers [default: 16]
    #[arg(long)]
    churn_workers: Option<usize>,
    /// Hop: samples of each of echo and ping [default: 5000]
    #[arg(long)]
    hop_samples: Option<usize>,
    /// Isolation: noisy connections, each keeping one `hostile:loop` in flight [default: 32,
    /// smoke 8]
    #[arg(long)]
    isolation_noisy: Option<usize>,
    /// Isolation: seconds measured in each window, alone and with noise [default: 10, smoke 1]
    #[arg(long)]
    isolation_secs: Option<f64>,
}

/// Every knob of a suite run, after defaults.
#[derive(Debug, Clone)]
struct Plan {
    reps: usize,
    scenarios: Vec<Scenario>,
    servers: Vec<Server>,
    settle: Duration,
    echo: echo::Params,
    fanout: Vec<fanout::Params>,
    idle: idle::Params,
    handshake: handshake::Params,
    churn: churn::Params,
    hop: hop::Params,
    swap: swap::Params,
    isolation: isolation::Params,
}

impl Plan {
    fn new(args: &Args) -> Result<Plan> {
        let smoke = args.smoke;
        let pick = |value: Option<usize>, full: usize, tiny: usize| {
            value.unwrap_or(if smoke { tiny } else { full })
        };
        let secs = |value: Option<f64>, full: f64, tiny: f64| {
            Duration::from_secs_f64(value.unwrap_or(if smoke { tiny } else { full }))
        };
        let measure = secs(args.duration, 5.0, 0.5);
        let warmup = secs(args.warmup, 1.0, 0.2);
        let short = if smoke {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        let echo = echo::Params {
            request: echo::Request::Echo,
            connections: pick(args.echo_connections, 50, 5),
            in_flight: pick(args.echo_in_flight, 8, 2),
            payload_bytes: args.payload_bytes,
            warmup,
            measure,
        };
        let members = if !args.fanout_members.is_empty() {
            args.fanout_members.clone()
        } else if smoke {
            vec![50]
        } else {
            vec![1000, 5000]
        };
        let window = pick(args.fanout_window, 8, 4);
        let fanout = members
            .into_iter()
            .map(|members| fanout::Params {
                members,
                window,
                warmup,
                measure,
            })
            .collect();
        let counts = if !args.idle_counts.is_empty() {
            args.idle_counts.clone()
        } else if smoke {
            vec![100, 200]
        } else {
            vec![10_000, 19_000]
        };
        if counts.windows(2).any(|pair| pair[0] >= pair[1]) {
            bail!("--idle-counts must be ascending");
        }
        let mut servers = if !args.server.is_empty() {
            args.server.clone()
        } else if smoke {
            vec![Server::Switchboard, Server::Bare]
        } else {
            Server::ALL.to_vec()
        };
        if args.before.is_some() && !servers.contains(&Server::Before) {
            servers.insert(1, Server::Before);
        }
        Ok(Plan {
            reps: pick(args.reps, 3, 1).max(1),
            scenarios: if args.only.is_empty() {
                vec![
                    Scenario::Echo,
                    Scenario::Fanout,
                    Scenario::Idle,
                    Scenario::Handshakes,
                    Scenario::Churn,
                    Scenario::Hop,
                    Scenario::Swap,
                    Scenario::Isolation,
                ]
            } else {
                args.only.clone()
            },
            servers,
            settle: Duration::from_secs(args.settle.unwrap_or(if smoke { 0 } else { 20 })),
            echo,
            fanout,
            idle: idle::Params {
                counts,
                per_worker: pick(args.idle_per_worker, 5000, 100),
                settle: short,
            },
            handshake: handshake::Params {
                parallel: pick(args.handshake_parallel, 32, 4),
                warmup: warmup / 2,
                measure,
            },
            churn: churn::Params {
                workers: pick(args.churn_workers, 16, 4),
                cycles: pick(args.churn_cycles, 4000, 40),
                warmup_cycles: if smoke { 8 } else { 400 },
                settle: short,
            },
            hop: hop::Params {
                samples: pick(args.hop_samples, 5000, 100),
                warmup: if smoke { 20 } else { 500 },
                payload_bytes: args.payload_bytes,
                load: echo::Params {
                    measure: measure.mul_f64(0.6),
                    ..echo
                },
            },
            swap: swap::Params {
                load: echo::Params {
                    request: echo::Request::Echo,
                    connections: if smoke { 4 } else { 20 },
                    in_flight: if smoke { 2 } else { 4 },
                    payload_bytes: args.payload_bytes,
                    warmup,
                    measure,
                },
                before: if smoke {
                    Duration::from_millis(300)
                } else {
                    Duration::from_secs(1)
                },
                after: if smoke {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(2)
                },
            },
            isolation: isolation::Params {
                noisy_connections: pick(args.isolation_noisy, 32, 8).max(1),
                warmup: if smoke {
                    Duration::from_millis(300)
                } else {
                    Duration::from_secs(1)
                },
                measure: secs(args.isolation_secs, 10.0, 1.0),
                payload_bytes: args.payload_bytes,
            },
        })
    }

    /// What runs, in order: one unit per scenario (per room size for fan-out).
    fn units(&self) -> Vec<Unit> {
        let mut units = Vec::new();
        for scenario in &self.scenarios {
            match scenario {
                Scenario::Echo => units.push(Unit::Echo),
                Scenario::Fanout => units.extend((0..self.fanout.len()).map(Unit::Fanout)),
                Scenario::Idle => units.push(Unit::Idle),
                Scenario::Handshakes => units.push(Unit::Handshakes),
                Scenario::Churn => units.push(Unit::Churn),
                Scenario::Hop => units.push(Unit::Hop),
                Scenario::Swap => units.extend([Unit::Swap, Unit::SwapPrecompiled]),
                Scenario::Isolation => units.push(Unit::Isolation),
            }
        }
        units
    }
}

/// One scenario run against one fresh server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Echo,
    /// The index of the room size.
    Fanout(usize),
    Idle,
    Handshakes,
    Churn,
    Hop,
    Swap,
    /// The swap, uploading a precompiled artifact.
    SwapPrecompiled,
    Isolation,
}

impl Unit {
    fn label(self, plan: &Plan) -> String {
        match self {
            Unit::Echo => "echo".to_owned(),
            Unit::Fanout(index) => format!("fan-out {}", plan.fanout[index].members),
            Unit::Idle => "idle".to_owned(),
            Unit::Handshakes => "handshakes".to_owned(),
            Unit::Churn => "churn".to_owned(),
            Unit::Hop => "plugin hop".to_owned(),
            Unit::Swap => "plugin swap".to_owned(),
            Unit::SwapPrecompiled => "plugin swap, precompiled".to_owned(),
            Unit::Isolation => "isolation".to_owned(),
        }
    }

    /// The servers this unit runs against: the hop is Switchboard's plugin against its
    /// built-in `ping` (bare shows the same difference without a plugin); the swap is
    /// Switchboard's alone (the precompiled swap needs the `precompile` command of this tree);
    /// isolation needs tenants and plugins.
    fn servers(self, selected: &[Server]) -> Vec<Server> {
        selected
            .iter()
            .copied()
            .filter(|server| match self {
                Unit::Hop => *server != Server::Node,
                Unit::Swap | Unit::Isolation => {
                    matches!(server, Server::Switchboard | Server::Before)
                }
                Unit::SwapPrecompiled => *server == Server::Switchboard,
                _ => true,
            })
            .collect()
    }
}

/// What a run needs from its surroundings.
#[derive(Debug)]
struct Env {
    programs: Programs,
    dir: ScratchDir,
    http: reqwest::Client,
    clock: Clock,
    exe: PathBuf,
}

/// Starts the server, runs the unit, stops the server; returns (case, measurement) pairs.
async fn run_unit(
    env: &Env,
    plan: &Plan,
    unit: Unit,
    server: Server,
    rep: usize,
) -> Result<Vec<(String, Measured)>> {
    let name = format!(
        "rep{}-{}-{}",
        rep + 1,
        unit.label(plan).replace(' ', "-"),
        server.label()
    );
    let config = if unit == Unit::Isolation {
        servers::ISOLATION_CONFIG
    } else {
        servers::CONFIG
    };
    let mut running = Running::start(
        &env.programs,
        server,
        (env.dir.path(), config),
        &name,
        &env.http,
    )
    .await?;
    let clock = env.clock;
    let label = unit.label(plan);
    let outcome = match unit {
        Unit::Echo => echo::run(&running, &plan.echo, clock)
            .await
            .map(|m| vec![(label, m)]),
        Unit::Fanout(index) => fanout::run(&running, &plan.fanout[index], clock, rep)
            .await
            .map(|m| vec![(label, m)]),
        Unit::Idle => idle::run(&mut running, &plan.idle, &env.exe, env.dir.path()).await,
        Unit::Handshakes => handshake::run(&running, &plan.handshake, clock)
            .await
            .map(|m| vec![(label, m)]),
        Unit::Churn => churn::run(&mut running, &plan.churn)
            .await
            .map(|m| vec![(label, m)]),
        Unit::Hop => hop::run(&running, &plan.hop, clock)
            .await
            .map(|m| vec![(label, m)]),
        Unit::Swap => swap::run(
            &running,
            &plan.swap,
            clock,
            &env.http,
            (&env.programs.echo_wasm_of(server), swap::Upload::Wasm),
            rep,
        )
        .await
        .map(|m| vec![(label, m)]),
        Unit::SwapPrecompiled => {
            let config = env.dir.path().join(servers::CONFIG);
            let upload = swap::Upload::Precompiled {
                switchboard: &env.programs.switchboard,
                config: &config,
            };
            swap::run(
                &running,
                &plan.swap,
                clock,
                &env.http,
                (&env.programs.echo_wasm, upload),
                rep,
            )
            .await
            .map(|m| vec![(label, m)])
        }
        Unit::Isolation => isolation::run(&running, &plan.isolation, clock, &env.http)
            .await
            .map(|m| vec![(label, m)]),
    };
    if outcome.is_ok() {
        running.check_alive()?;
    }
    running.stop();
    outcome
}

/// CPU time of this process and every child it has reaped (servers, workers), seconds.
fn own_cpu_secs() -> f64 {
    procstat::cpu_with_reaped_children_secs(std::process::id())
}

async fn suite(args: Args) -> Result<()> {
    let plan = Plan::new(&args)?;
    let repo = switchboard_bench::plugins::find_repo()?;
    let programs = Programs::locate(
        repo,
        args.switchboard.clone(),
        args.bare.clone(),
        args.before.clone(),
        args.node.clone(),
    )?;
    let mut programs = programs;
    if let Some(echo) = &args.echo_wasm {
        programs.echo_wasm = echo.clone();
    }
    programs.before_plugins = args.before_plugins.clone();
    programs.prepare(&plan.servers)?;
    eprintln!(
        "switchboard: {}; plugins: {}",
        programs.switchboard.display(),
        programs
            .echo_wasm
            .parent()
            .map_or_else(String::new, |dir| dir.display().to_string())
    );
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open files limit: {error}");
    }
    let dir = ScratchDir::new("switchboard-suite", args.keep_logs)?;
    // Private copies: a rebuild during the run must not change what is measured.
    let programs = programs.copied_into(dir.path())?;
    servers::write_switchboard_config(&programs, dir.path())?;
    let env = Env {
        programs,
        dir,
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .context("cannot build the HTTP client")?,
        clock: Clock::new(),
        // `/proc/self/exe` still runs this binary if a rebuild replaced the file meanwhile.
        exe: ["/proc/self/exe"]
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .map_or_else(std::env::current_exe, Ok)
            .context("cannot find this binary")?,
    };
    let machine = machine::describe();
    eprintln!("machine: {machine}");

    let units = plan.units();
    let mut records: Vec<Record> = Vec::new();
    for rep in 0..plan.reps {
        for &unit in &units {
            let mut order = unit.servers(&plan.servers);
            if !order.is_empty() {
                let shift = rep % order.len();
                order.rotate_left(shift);
            }
            for server in order {
                eprintln!(
                    "rep {}/{}: {} on {}",
                    rep + 1,
                    plan.reps,
                    unit.label(&plan),
                    server.label()
                );
                if !plan.settle.is_zero() {
                    let other = procstat::settle(plan.settle, args.quiet_cores, &[]).await;
                    if other >= args.quiet_cores {
                        eprintln!(
                            "    machine not quiet ({other:.2} cores busy elsewhere); going on"
                        );
                    }
                }
                let (busy_before, own_before) = (procstat::machine_busy_secs(), own_cpu_secs());
                let started = tokio::time::Instant::now();
                let limit = Duration::from_secs(args.timeout);
                let outcome = tokio::time::timeout(limit, run_unit(&env, &plan, unit, server, rep))
                    .await
                    .map_err(|_| anyhow!("took longer than {limit:?}"))
                    .and_then(|outcome| outcome)
                    .with_context(|| {
                        format!(
                            "{} on {} (rep {})",
                            unit.label(&plan),
                            server.label(),
                            rep + 1
                        )
                    })?;
                let wall = started.elapsed().as_secs_f64().max(1e-3);
                let other_cores = ((procstat::machine_busy_secs() - busy_before)
                    - (own_cpu_secs() - own_before))
                    .max(0.0)
                    / wall;
                for (case, mut measured) in outcome {
                    echo::judge_with_other_load(&mut measured, other_cores);
                    let record = Record {
                        case,
                        server,
                        rep,
                        measured,
                        other_cores,
                    };
                    eprintln!("    {}: {}", record.case, results::progress_line(&record));
                    records.push(record);
                }
            }
        }
    }

    let markdown = report(&plan, &records, &machine, &env.programs);
    println!("{markdown}");
    if let Some(path) = &args.out {
        std::fs::write(path, &markdown)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("written to {}", path.display());
    }
    let failures: u64 = records.iter().map(|r| r.measured.failures).sum();
    if failures > 0 {
        bail!(
            "{failures} failures (lost messages, failed or missing replies, failed connections): see the table"
        );
    }
    Ok(())
}

/// The whole markdown output.
fn report(plan: &Plan, records: &[Record], machine: &str, programs: &Programs) -> String {
    let idle_max = plan
        .idle
        .counts
        .last()
        .map(|count| idle::case(*count))
        .filter(|case| records.iter().any(|r| &r.case == case));
    let targets = results::targets(records, idle_max.as_deref());
    let fanout = plan
        .fanout
        .first()
        .map_or(String::new(), |p| format!("window {}", p.window));
    format!(
        "## Switchboard vs bare tokio-tungstenite vs Node ws\n\n\
         Machine: {machine}; {}.\n\n\
         Parameters: {} repetitions (medians; ratios are medians of per-repetition ratios); \
         echo {} connections × {} in flight, {}-byte payload, {:.1} s measured after {:.1} s warm-up; \
         fan-out {}; idle {:?} connections, ≤ {} per loader process; handshakes {} parallel; \
         churn {} cycles over {} workers; hop {} samples each; isolation {} noisy connections, \
         {:.1} s measured per window after {:.1} s warm-up.\n\n\
         {}\n\
         Targets (issue 5; isolation: issue 16):\n\n{}\n\
         <details>\n<summary>Every run (in the order they ran)</summary>\n\n{}\n</details>\n",
        programs.describe(),
        plan.reps,
        plan.echo.connections,
        plan.echo.in_flight,
        plan.echo.payload_bytes,
        plan.echo.measure.as_secs_f64(),
        plan.echo.warmup.as_secs_f64(),
        fanout,
        plan.idle.counts,
        plan.idle.per_worker,
        plan.handshake.parallel,
        plan.churn.cycles,
        plan.churn.workers,
        plan.hop.samples,
        plan.isolation.noisy_connections,
        plan.isolation.measure.as_secs_f64(),
        plan.isolation.warmup.as_secs_f64(),
        results::summary(records),
        results::targets_table(&targets),
        results::raw(records),
    )
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Some(Command::IdleWorker(worker)) => idle::worker(worker).await,
            None => {
                // On Ctrl-C or SIGTERM the suite's future is dropped, and with it every process
                // guard (servers and workers are stopped) and the scratch folder.
                let mut terminate =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .context("cannot listen for SIGTERM")?;
                tokio::select! {
                    result = suite(cli.args) => result,
                    _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
                    _ = terminate.recv() => Err(anyhow!("terminated")),
                }
            }
        }
    })
}
