//! What a metrics library would cost Switchboard: the per-message counter updates and the
//! `/metrics` rendering, as the runtime does them by hand and through `prometheus-client`
//! (the Prometheus project's client) and `prometheus` (tikv). In-process, no server.

mod path;
mod scrape;
#[cfg(test)]
mod tests;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use switchboard_bench::{machine, stats::median};

use path::{
    ClientCached, ClientFamilies, ClientLookup, MessagePath, Ours, TenantLabel, TikvCached,
    TikvLookup, TikvVecs,
};

#[derive(Debug, Parser)]
#[command(about = "The cost of a metrics library on the message path and at a scrape")]
struct Args {
    /// Runs of every measurement; the tables show medians.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Milliseconds one run of the message path lasts on one thread (each variant's message
    /// count is sized from its warm-up to take about this long).
    #[arg(long, default_value_t = 200)]
    run_ms: u64,
    /// Messages of the warm-up run of each variant.
    #[arg(long, default_value_t = 200_000)]
    calibrate_ops: u64,
    /// Tenant counts of the scrape.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    tenants: Vec<usize>,
    /// Tenant-series rendered per run of the scrape (the renders of a run are this divided by
    /// the tenant count, at least 5).
    #[arg(long, default_value_t = 20_000)]
    scrape_series: usize,
}

/// The variants of the message path, built fresh for a benchmark.
struct Variants {
    ours: Arc<Ours>,
    client_families: ClientFamilies,
    client_cached: Arc<ClientCached>,
    client_lookup: ClientLookup,
    tikv_vecs: TikvVecs,
    tikv_cached: Arc<TikvCached>,
    tikv_lookup: TikvLookup,
}

const NAMES: [&str; 5] = [
    "ours (AtomicU64 in the tenant)",
    "prometheus-client, cached handles",
    "prometheus-client, label lookup",
    "prometheus (tikv), cached handles",
    "prometheus (tikv), label lookup",
];

fn new_tikv_vecs() -> anyhow::Result<TikvVecs> {
    let vec = |name: &str| {
        prometheus::IntCounterVec::new(prometheus::Opts::new(name, "help"), &["tenant"])
            .context("counter vector")
    };
    Ok(TikvVecs {
        messages_in: vec("switchboard_messages_in_total")?,
        bytes_in: vec("switchboard_bytes_in_total")?,
        messages_out: vec("switchboard_messages_out_total")?,
        bytes_out: vec("switchboard_bytes_out_total")?,
    })
}

impl Variants {
    fn new() -> anyhow::Result<Self> {
        let tenant = "default".to_owned();
        let label = TenantLabel {
            tenant: tenant.clone(),
        };
        let client_families = ClientFamilies::default();
        let client_cached = Arc::new(ClientCached::new(&client_families, &label));
        let tikv_vecs = new_tikv_vecs()?;
        let tikv_cached = Arc::new(TikvCached::new(&tikv_vecs, &tenant));
        Ok(Self {
            ours: Arc::new(Ours::default()),
            client_families,
            client_cached,
            client_lookup: ClientLookup {
                families: ClientFamilies::default(),
                label,
            },
            tikv_vecs,
            tikv_cached,
            tikv_lookup: TikvLookup {
                vecs: new_tikv_vecs()?,
                tenant,
            },
        })
    }

    /// Counts `ops` messages with variant `which` on each of `threads` threads.
    fn measure(&self, which: usize, threads: usize, ops: u64) -> Run {
        match which {
            0 => run(&self.ours, threads, ops),
            1 => run(&self.client_cached, threads, ops),
            2 => run(&self.client_lookup, threads, ops),
            3 => run(&self.tikv_cached, threads, ops),
            _ => run(&self.tikv_lookup, threads, ops),
        }
    }

    /// The messages each variant counted: they must all have counted every message.
    fn counted(&self) -> [u64; 5] {
        let label = &self.client_lookup.label;
        let tenant = [self.tikv_lookup.tenant.as_str()];
        [
            self.ours.totals()[0],
            self.client_families.messages_in.get_or_create(label).get(),
            self.client_lookup
                .families
                .messages_in
                .get_or_create(label)
                .get(),
            self.tikv_vecs.messages_in.with_label_values(&tenant).get(),
            self.tikv_lookup
                .vecs
                .messages_in
                .with_label_values(&tenant)
                .get(),
        ]
    }
}

/// One run of the message path.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// ns per message as one thread sees it (the slowest thread's time ÷ its messages).
    ns_per_message: f64,
    /// How much of the slowest thread's time the threads ran together (1 for one thread): on
    /// a shared machine a thread may be descheduled while the other runs alone.
    overlap: f64,
}

/// Counts `ops` messages on each of `threads` threads, all on the same tenant, started together.
fn run<P: MessagePath>(path: &P, threads: usize, ops: u64) -> Run {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..ops {
                        // A message of 64 to 127 bytes, opaque to the optimiser.
                        path.count(black_box(64 + (i & 63) as usize));
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|worker| worker.join().ok())
            .collect()
    });
    let longest = spans
        .iter()
        .map(|(start, end)| *end - *start)
        .max()
        .unwrap_or(Duration::MAX);
    let together = match (
        spans.iter().map(|(start, _)| *start).max(),
        spans.iter().map(|(_, end)| *end).min(),
    ) {
        (Some(last_start), Some(first_end)) => first_end.saturating_duration_since(last_start),
        _ => Duration::ZERO,
    };
    Run {
        ns_per_message: longest.as_nanos() as f64 / ops as f64,
        overlap: together.as_secs_f64() / longest.as_secs_f64(),
    }
}

fn message_path(args: &Args) -> anyhow::Result<()> {
    println!(
        "## Message path: ns per message (in + out: 4 counter updates), medians of {} runs\n",
        args.runs
    );
    println!(
        "| variant | messages per run | 1 thread | ÷ ours | 2 threads, same tenant | ÷ ours | threads overlapped |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let variants = Variants::new()?;
    // Warm-up, which also sizes each variant's runs to last about --run-ms on one thread.
    let mut expected = [0u64; NAMES.len()];
    let mut ops = [0u64; NAMES.len()];
    for which in 0..NAMES.len() {
        let warm = variants.measure(which, 1, args.calibrate_ops);
        expected[which] += args.calibrate_ops;
        let target = args.run_ms as f64 * 1e6 / warm.ns_per_message.max(0.1);
        ops[which] = (target as u64).clamp(10_000, 100_000_000);
    }
    let mut results: [[Vec<Run>; 2]; NAMES.len()] = Default::default();
    for run in 0..args.runs {
        // The order rotates from run to run, so that drift of a shared machine favours none.
        for step in 0..NAMES.len() {
            let which = (run + step) % NAMES.len();
            for (slot, threads) in [1, 2].into_iter().enumerate() {
                results[which][slot].push(variants.measure(which, threads, ops[which]));
                expected[which] += threads as u64 * ops[which];
            }
        }
    }
    let counted = variants.counted();
    ensure!(
        counted == expected,
        "a variant lost counts: {counted:?}, expected {expected:?}"
    );
    let ns = |runs: &[Run]| median(runs.iter().map(|run| run.ns_per_message).collect());
    let ours = [ns(&results[0][0]), ns(&results[0][1])];
    for ((name, [one, two]), ops) in NAMES.iter().zip(&results).zip(ops) {
        let (one, overlap) = (ns(one), median(two.iter().map(|run| run.overlap).collect()));
        let two = ns(two);
        println!(
            "| {name} | {ops} | {one:.1} | {:.2}× | {two:.1} | {:.2}× | {:.0} % |",
            one / ours[0],
            two / ours[1],
            overlap * 100.0
        );
    }
    println!();
    Ok(())
}

fn scrapes(args: &Args) -> anyhow::Result<()> {
    println!(
        "## Scrape: µs per rendering of the per-tenant families (11 families), medians of {} runs\n",
        args.runs
    );
    println!(
        "| tenants | bytes (ours) | ours µs | prometheus-client µs | ÷ ours | prometheus (tikv) µs | ÷ ours |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &count in &args.tenants {
        let figures = scrape::tenants(count);
        let ours = scrape::Ours::new(&figures);
        let client = scrape::Client::new(&figures);
        let tikv = scrape::Tikv::new(&figures)?;
        let renders = (args.scrape_series / count.max(1)).max(5);
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        let bytes = ours.render().len();
        for run in 0..=args.runs {
            for step in 0..3 {
                let which = (run + step) % 3;
                let start = Instant::now();
                for _ in 0..renders {
                    let text = match which {
                        0 => ours.render(),
                        1 => client.render()?,
                        _ => tikv.render()?,
                    };
                    black_box(text);
                }
                // Run 0 warms up.
                if run > 0 {
                    times[which].push(start.elapsed().as_nanos() as f64 / renders as f64 / 1e3);
                }
            }
        }
        let [ours_us, client_us, tikv_us] = times.map(median);
        println!(
            "| {count} | {bytes} | {ours_us:.1} | {client_us:.1} | {:.2}× | {tikv_us:.1} | {:.2}× |",
            client_us / ours_us,
            tikv_us / ours_us
        );
    }
    println!();
    Ok(())
}

fn compatibility() -> anyhow::Result<()> {
    println!("## Compatibility with the runtime's text (lines compared as sets)\n");
    for count in [0, 2] {
        compare(count)?;
    }
    Ok(())
}

fn compare(count: usize) -> anyhow::Result<()> {
    let figures = scrape::tenants(count);
    let ours = scrape::Ours::new(&figures).render();
    for (name, text) in [
        ("prometheus-client", scrape::Client::new(&figures).render()?),
        ("prometheus (tikv)", scrape::Tikv::new(&figures)?.render()?),
    ] {
        let (missing, added, examples) = scrape::differences(&ours, &text, 4);
        println!(
            "{count} tenants, {name}: {missing} of our {} lines missing, {added} lines added; same order: {}",
            ours.lines().count(),
            scrape::same_order(&ours, &text)
        );
        println!("```diff");
        for line in examples {
            println!("{line}");
        }
        println!("```\n");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.runs >= 1 && args.run_ms >= 1 && args.calibrate_ops >= 1_000,
        "--runs and --run-ms must be positive, --calibrate-ops at least 1000"
    );
    println!("# Metrics library cost\n");
    println!("Machine: {}\n", machine::describe());
    println!(
        "Versions: prometheus-client 0.26, prometheus (tikv) 0.14 without default features. Release build.\n"
    );
    message_path(&args)?;
    scrapes(&args)?;
    compatibility()
}
