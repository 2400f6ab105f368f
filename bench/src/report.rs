//! Statistics over runs and the markdown output.

use std::fmt::Write as _;
use std::process::Command;

use switchboard_bench::stats::median;

use crate::scenario::Scenario;

/// One run of one scenario.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub scenario: Scenario,
    pub run: usize,
    /// Throughput phase: deliveries (subscriber × message) per second, and messages per second.
    pub deliveries_per_sec: f64,
    pub messages_per_sec: f64,
    /// Paced phase: publish-to-receive latency over all deliveries, µs.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Paced phase: HTTP publish round trip (request to `200`), median, µs.
    pub publish_p50_us: u64,
    /// Paced phase: the largest lag of a publish behind its schedule, µs.
    pub max_lag_us: u64,
    /// (subscriber, message) pairs never received, over all phases.
    pub lost: u64,
    /// Duplicates, `seq` not increasing, malformed ticks.
    pub anomalies: u64,
    /// Throughput phase: CPU time per delivery of the nodes, Redis and the client, µs.
    pub node_cpu_us: f64,
    pub redis_cpu_us: f64,
    pub client_cpu_us: f64,
    /// Throughput phase: deliveries per write syscall of the nodes (frames batched per write).
    pub deliveries_per_write: f64,
    /// CPU cores kept busy by other processes of the machine during the run (noise).
    pub other_cores: f64,
}

fn ms(micros: f64) -> String {
    format!("{:.2}", micros / 1000.0)
}

/// The summary table: medians over runs, ratios to the memory baseline of the same run.
pub fn summary(measurements: &[Measurement], scenarios: &[Scenario]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | deliveries/s | msgs/s | vs memory | p50 ms | p99 ms | max ms | p50 vs memory | p99 vs memory | publish p50 ms | lost | anomalies |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for scenario in scenarios {
        let runs: Vec<&Measurement> = measurements
            .iter()
            .filter(|m| m.scenario == *scenario)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&Measurement) -> f64| median(runs.iter().map(|m| f(m)).collect());
        // Ratios within the same run, then their median.
        let ratio = |f: &dyn Fn(&Measurement) -> f64| {
            let ratios: Vec<f64> = runs
                .iter()
                .filter_map(|m| {
                    measurements
                        .iter()
                        .find(|b| b.scenario == Scenario::Memory && b.run == m.run)
                        .map(|b| f(m) / f(b))
                })
                .collect();
            if ratios.is_empty() {
                "n/a".to_owned()
            } else {
                format!("{:.2}×", median(ratios))
            }
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            scenario.label(),
            med(&|m| m.deliveries_per_sec),
            med(&|m| m.messages_per_sec),
            ratio(&|m| m.deliveries_per_sec),
            ms(med(&|m| m.p50_us as f64)),
            ms(med(&|m| m.p99_us as f64)),
            ms(med(&|m| m.max_us as f64)),
            ratio(&|m| m.p50_us as f64),
            ratio(&|m| m.p99_us as f64),
            ms(med(&|m| m.publish_p50_us as f64)),
            runs.iter().map(|m| m.lost).sum::<u64>(),
            runs.iter().map(|m| m.anomalies).sum::<u64>(),
        );
    }
    out
}

/// Where the CPU goes in the throughput phase, medians over runs.
pub fn cpu(measurements: &[Measurement], scenarios: &[Scenario]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | nodes µs/delivery | redis µs/delivery | client µs/delivery | deliveries per node write |\n");
    out.push_str("|---|---:|---:|---:|---:|\n");
    for scenario in scenarios {
        let runs: Vec<&Measurement> = measurements
            .iter()
            .filter(|m| m.scenario == *scenario)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&Measurement) -> f64| median(runs.iter().map(|m| f(m)).collect());
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.1} |",
            scenario.label(),
            med(&|m| m.node_cpu_us),
            med(&|m| m.redis_cpu_us),
            med(&|m| m.client_cpu_us),
            med(&|m| m.deliveries_per_write),
        );
    }
    out
}

/// Every run, in the order it ran.
pub fn raw(measurements: &[Measurement]) -> String {
    let mut out = String::new();
    out.push_str(
        "| run | scenario | deliveries/s | p50 ms | p99 ms | max ms | publish p50 ms | pacing lag max ms | other load (cores) | lost | anomalies |\n",
    );
    out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for m in measurements {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            m.run + 1,
            m.scenario.label(),
            m.deliveries_per_sec,
            ms(m.p50_us as f64),
            ms(m.p99_us as f64),
            ms(m.max_us as f64),
            ms(m.publish_p50_us as f64),
            ms(m.max_lag_us as f64),
            m.other_cores,
            m.lost,
            m.anomalies,
        );
    }
    out
}

/// CPUs, memory, kernel, CPU model and Redis version, on one line.
pub fn machine(redis_server: &str) -> String {
    let redis = Command::new(redis_server)
        .arg("--version")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "redis-server: unknown version".to_owned());
    format!("{}; {redis}", switchboard_bench::machine::describe())
}
