//! The scrape: the per-tenant series of `/metrics` rendered by hand (a copy of the runtime's
//! `metrics::render` for these families) and by each library, over the same values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::path::TenantLabel;

/// The runtime's per-tenant counters (name without `_total`, HELP), in its order.
const COUNTERS: [(&str, &str); 8] = [
    (
        "switchboard_handshakes_accepted",
        "WebSocket upgrades completed.",
    ),
    (
        "switchboard_messages_in",
        "Data messages received from clients.",
    ),
    (
        "switchboard_bytes_in",
        "Bytes of data messages received from clients.",
    ),
    ("switchboard_messages_out", "Frames written to clients."),
    (
        "switchboard_bytes_out",
        "Bytes of frames written to clients.",
    ),
    (
        "switchboard_publishes",
        "Messages published through the publish API.",
    ),
    (
        "switchboard_plugin_cpu_throttled",
        "Plugin calls that waited because their tenant had used its share of the node's CPU.",
    ),
    (
        "switchboard_plugin_kv_too_large",
        "Key-value writes refused as too-large: a value over 1 MiB, or the plugin's namespace at its byte or entry limit.",
    ),
];
const CONNECTIONS: (&str, &str) = ("switchboard_connections", "Live WebSocket connections.");
const CPU: (&str, &str) = (
    "switchboard_plugin_cpu_seconds",
    "CPU time the tenant's plugin calls ran (time inside the calls, waits excluded).",
);
const CLOSES: (&str, &str) = (
    "switchboard_closes",
    "Connections ended, by close code (1006: dropped without a close frame; other: a code outside RFC 6455's list).",
);

/// The figures of one tenant, the same for every renderer.
#[derive(Debug, Clone)]
pub struct Figures {
    name: String,
    connections: u64,
    counters: [u64; 8],
    cpu_ns: u64,
    closes_1000: u64,
}

/// `count` tenants with distinct, nonzero figures.
pub fn tenants(count: usize) -> Vec<Figures> {
    (0..count as u64)
        .map(|i| Figures {
            name: format!("tenant-{i:04}"),
            connections: 10 + i,
            counters: std::array::from_fn(|k| 1_000 * (i + 1) + k as u64),
            cpu_ns: 1_500_000 * (i + 1),
            closes_1000: 3 + i,
        })
        .collect()
}

/// The runtime's state: a `TenantMetrics` of atomics per tenant, the live connection count
/// read at a scrape, and the closes in a locked `BTreeMap`.
#[derive(Debug)]
pub struct Ours {
    tenants: Vec<(String, u64, [AtomicU64; 8], AtomicU64)>,
    closes: parking_lot::Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Ours {
    /// Holds `figures`.
    pub fn new(figures: &[Figures]) -> Self {
        let mut closes = BTreeMap::new();
        for tenant in figures {
            closes.insert((tenant.name.clone(), "1000"), tenant.closes_1000);
        }
        Self {
            tenants: figures
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.connections,
                        t.counters.map(AtomicU64::new),
                        AtomicU64::new(t.cpu_ns),
                    )
                })
                .collect(),
            closes: parking_lot::Mutex::new(closes),
        }
    }

    /// The runtime's rendering of these families (`metrics::render`, same code shape).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        header(&mut out, CONNECTIONS.0, "gauge", CONNECTIONS.1);
        for (name, connections, _, _) in &self.tenants {
            let _ = writeln!(
                out,
                "switchboard_connections{{tenant=\"{}\"}} {}",
                escape(name),
                connections
            );
        }
        for (k, (name, help)) in COUNTERS.iter().enumerate() {
            let name = format!("{name}_total");
            header(&mut out, &name, "counter", help);
            for (tenant, _, counters, _) in &self.tenants {
                let _ = writeln!(
                    out,
                    "{name}{{tenant=\"{}\"}} {}",
                    escape(tenant),
                    counters[k].load(Ordering::Relaxed)
                );
            }
        }
        header(
            &mut out,
            "switchboard_plugin_cpu_seconds_total",
            "counter",
            CPU.1,
        );
        for (tenant, _, _, cpu) in &self.tenants {
            let _ = writeln!(
                out,
                "switchboard_plugin_cpu_seconds_total{{tenant=\"{}\"}} {}",
                escape(tenant),
                cpu.load(Ordering::Relaxed) as f64 / 1e9
            );
        }
        header(&mut out, "switchboard_closes_total", "counter", CLOSES.1);
        for ((tenant, code), count) in self.closes.lock().iter() {
            let _ = writeln!(
                out,
                "switchboard_closes_total{{tenant=\"{}\",code=\"{code}\"}} {count}",
                escape(tenant)
            );
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The `tenant`, `code` label set of `switchboard_closes_total` in `prometheus-client`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabel {
    tenant: String,
    code: String,
}

/// `prometheus-client`: a registry of families; the connection gauge is set from the live count
/// at each scrape, as the runtime's count is read then.
#[derive(Debug)]
pub struct Client {
    registry: Registry,
    connections: Family<TenantLabel, Gauge>,
    live: Vec<(TenantLabel, i64)>,
}

/// The registry's HELP: `prometheus-client` appends a full stop, so ours loses its own.
fn client_help(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

impl Client {
    /// Holds `figures`.
    pub fn new(figures: &[Figures]) -> Self {
        let mut registry = Registry::default();
        let connections = Family::<TenantLabel, Gauge>::default();
        registry.register(
            CONNECTIONS.0,
            client_help(CONNECTIONS.1),
            connections.clone(),
        );
        let counters: Vec<Family<TenantLabel, Counter>> =
            COUNTERS.iter().map(|_| Family::default()).collect();
        for ((name, help), family) in COUNTERS.iter().zip(&counters) {
            registry.register(*name, client_help(help), family.clone());
        }
        let cpu = Family::<TenantLabel, Counter<f64, AtomicU64>>::default();
        registry.register(CPU.0, client_help(CPU.1), cpu.clone());
        let closes = Family::<CloseLabel, Counter>::default();
        registry.register(CLOSES.0, client_help(CLOSES.1), closes.clone());
        let mut live = Vec::new();
        for tenant in figures {
            let label = TenantLabel {
                tenant: tenant.name.clone(),
            };
            for (family, value) in counters.iter().zip(tenant.counters) {
                family.get_or_create(&label).inc_by(value);
            }
            cpu.get_or_create(&label).inc_by(tenant.cpu_ns as f64 / 1e9);
            closes
                .get_or_create(&CloseLabel {
                    tenant: tenant.name.clone(),
                    code: "1000".to_owned(),
                })
                .inc_by(tenant.closes_1000);
            live.push((label, tenant.connections as i64));
        }
        Self {
            registry,
            connections,
            live,
        }
    }

    /// Sets the gauges and encodes the registry in the Prometheus text format 0.0.4.
    pub fn render(&self) -> anyhow::Result<String> {
        for (label, count) in &self.live {
            self.connections.get_or_create(label).set(*count);
        }
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .context("encoding")?;
        Ok(out)
    }
}

/// `prometheus` (tikv): a registry of vectors; the connection gauge is set at each scrape.
#[derive(Debug)]
pub struct Tikv {
    registry: prometheus::Registry,
    connections: prometheus::IntGaugeVec,
    live: Vec<(String, i64)>,
}

impl Tikv {
    /// Holds `figures`.
    pub fn new(figures: &[Figures]) -> anyhow::Result<Self> {
        use prometheus::{CounterVec, IntCounterVec, IntGaugeVec, Opts};
        let registry = prometheus::Registry::new();
        let connections = IntGaugeVec::new(Opts::new(CONNECTIONS.0, CONNECTIONS.1), &["tenant"])?;
        registry.register(Box::new(connections.clone()))?;
        let mut counters = Vec::new();
        for (name, help) in COUNTERS {
            let vec = IntCounterVec::new(Opts::new(format!("{name}_total"), help), &["tenant"])?;
            registry.register(Box::new(vec.clone()))?;
            counters.push(vec);
        }
        let cpu = CounterVec::new(Opts::new(format!("{}_total", CPU.0), CPU.1), &["tenant"])?;
        registry.register(Box::new(cpu.clone()))?;
        let closes = IntCounterVec::new(
            Opts::new(format!("{}_total", CLOSES.0), CLOSES.1),
            &["tenant", "code"],
        )?;
        registry.register(Box::new(closes.clone()))?;
        let mut live = Vec::new();
        for tenant in figures {
            let name = tenant.name.as_str();
            for (vec, value) in counters.iter().zip(tenant.counters) {
                vec.with_label_values(&[name]).inc_by(value);
            }
            cpu.with_label_values(&[name])
                .inc_by(tenant.cpu_ns as f64 / 1e9);
            closes
                .with_label_values(&[name, "1000"])
                .inc_by(tenant.closes_1000);
            live.push((tenant.name.clone(), tenant.connections as i64));
        }
        Ok(Self {
            registry,
            connections,
            live,
        })
    }

    /// Sets the gauges, gathers and encodes in the Prometheus text format 0.0.4.
    pub fn render(&self) -> anyhow::Result<String> {
        for (tenant, count) in &self.live {
            self.connections
                .with_label_values(&[tenant.as_str()])
                .set(*count);
        }
        let mut out = String::with_capacity(4096);
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .context("encoding")?;
        Ok(out)
    }
}

/// What a rendering changes against ours: lines of ours it lacks and lines it adds (order
/// ignored), with up to `examples` of each.
pub fn differences(ours: &str, theirs: &str, examples: usize) -> (usize, usize, Vec<String>) {
    let ours_lines: std::collections::BTreeSet<&str> = ours.lines().collect();
    let their_lines: std::collections::BTreeSet<&str> = theirs.lines().collect();
    let missing: Vec<&str> = ours_lines.difference(&their_lines).copied().collect();
    let added: Vec<&str> = their_lines.difference(&ours_lines).copied().collect();
    let mut shown: Vec<String> = missing
        .iter()
        .take(examples)
        .map(|line| format!("- {line}"))
        .collect();
    shown.extend(added.iter().take(examples).map(|line| format!("+ {line}")));
    (missing.len(), added.len(), shown)
}

/// Whether the series of a rendering come in ours's order (families and series alike).
pub fn same_order(ours: &str, theirs: &str) -> bool {
    ours.lines().eq(theirs.lines())
}
