//! Every metric name and label, defined in one place, and the Prometheus text rendering.
//! Hot-path counters are plain atomics owned by their tenant; rarer events (rejections, closes)
//! go into small locked maps. The series of other areas are rendered by the children from
//! figures their modules count and hand over at a scrape:
//!
//! - `http`: the listener (sockets, bodies, heads);
//! - `backplane`: the in-memory history and the Redis backplane;
//! - `plugins`: plugins held and their compiles.

pub mod backplane;
pub mod deployments;
pub mod http;
pub mod plugins;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Counters of one tenant.
#[derive(Debug, Default)]
pub struct TenantMetrics {
    /// Upgrades completed.
    pub handshakes_accepted: AtomicU64,
    /// Data messages received.
    pub messages_in: AtomicU64,
    /// Bytes of data messages received.
    pub bytes_in: AtomicU64,
    /// Frames written to clients.
    pub messages_out: AtomicU64,
    /// Bytes of frames written to clients.
    pub bytes_out: AtomicU64,
    /// Messages published through the API.
    pub publishes: AtomicU64,
    /// CPU time its plugin calls ran, in nanoseconds.
    pub plugin_cpu_ns: AtomicU64,
    /// Times one of its plugin calls waited because the tenant had used its CPU share.
    pub plugin_cpu_throttled: AtomicU64,
    /// Key-value writes refused as too large (the value, or the namespace at its limit).
    pub kv_too_large: AtomicU64,
    /// Plugin log lines whose fields were folded into one (too many, or too many shapes).
    pub log_fields_folded: AtomicU64,
    /// Its plugins' call counters, by plugin name.
    pub plugins: plugins::PluginSeries,
}

impl TenantMetrics {
    /// Counts one received data message.
    pub fn message_in(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a batch of written frames.
    pub fn messages_out(&self, count: usize, bytes: usize) {
        self.messages_out.fetch_add(count as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Node-wide counters keyed by labels.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    rejections: Mutex<BTreeMap<(String, &'static str, u16), u64>>,
    closes: Mutex<BTreeMap<(String, &'static str), u64>>,
    plugin_load_failures: Mutex<BTreeMap<String, u64>>,
}

impl NodeMetrics {
    /// Counts a refused handshake (`tenant` is empty when unknown).
    pub fn rejection(&self, tenant: &str, reason: &'static str, status: u16) {
        *self
            .rejections
            .lock()
            .entry((tenant.to_owned(), reason, status))
            .or_default() += 1;
    }

    /// Counts a plugin version that failed to load or swap in.
    pub fn plugin_load_failure(&self, tenant: &str) {
        *self
            .plugin_load_failures
            .lock()
            .entry(tenant.to_owned())
            .or_default() += 1;
    }

    /// Drops a deleted tenant's series, so tenant churn does not pile them up.
    pub fn forget_tenant(&self, tenant: &str) {
        self.rejections
            .lock()
            .retain(|(name, _, _), _| name != tenant);
        self.closes.lock().retain(|(name, _), _| name != tenant);
        self.plugin_load_failures.lock().remove(tenant);
    }

    /// Counts a closed connection by close code (1006 for a drop without a close frame).
    pub fn close(&self, tenant: &str, code: u16) {
        *self
            .closes
            .lock()
            .entry((tenant.to_owned(), close_code_label(code)))
            .or_default() += 1;
    }
}

/// The `code` label of a close: the codes RFC 6455 defines for use in close frames, or
/// `other`. Clients (and plugins) choose any code from 1000 to 4999: each must not become a
/// series of its own.
pub fn close_code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1005 => "1005",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1010 => "1010",
        1011 => "1011",
        1012 => "1012",
        1013 => "1013",
        1014 => "1014",
        _ => "other",
    }
}

/// The values of one tenant for a scrape.
#[derive(Debug)]
pub struct TenantSample<'a> {
    /// Tenant name.
    pub name: &'a str,
    /// Live connections.
    pub connections: usize,
    /// Its counters.
    pub metrics: &'a TenantMetrics,
}

/// A per-tenant counter: name, help text, and how to read it.
type CounterColumn = (&'static str, &'static str, fn(&TenantMetrics) -> &AtomicU64);

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

/// Renders the Prometheus text exposition of the node's own series (the other areas' series
/// follow it, see the children).
pub fn render(
    node: &NodeMetrics,
    tenants: &[TenantSample<'_>],
    rooms: usize,
    draining: bool,
    code: &plugins::CodeCacheFigures,
) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "switchboard_connections",
        "gauge",
        "Live WebSocket connections.",
    );
    for tenant in tenants {
        let _ = writeln!(
            out,
            "switchboard_connections{{tenant=\"{}\"}} {}",
            escape(tenant.name),
            tenant.connections
        );
    }
    let counters: [CounterColumn; 9] = [
        (
            "switchboard_handshakes_accepted_total",
            "WebSocket upgrades completed.",
            |m| &m.handshakes_accepted,
        ),
        (
            "switchboard_messages_in_total",
            "Data messages received from clients.",
            |m| &m.messages_in,
        ),
        (
            "switchboard_bytes_in_total",
            "Bytes of data messages received from clients.",
            |m| &m.bytes_in,
        ),
        (
            "switchboard_messages_out_total",
            "Frames written to clients.",
            |m| &m.messages_out,
        ),
        (
            "switchboard_bytes_out_total",
            "Bytes of frames written to clients.",
            |m| &m.bytes_out,
        ),
        (
            "switchboard_publishes_total",
            "Messages published through the publish API.",
            |m| &m.publishes,
        ),
        (
            "switchboard_plugin_cpu_throttled_total",
            "Plugin calls that waited because their tenant had used its share of the node's CPU.",
            |m| &m.plugin_cpu_throttled,
        ),
        (
            "switchboard_plugin_kv_too_large_total",
            "Key-value writes refused as too-large: a value over 1 MiB, or the plugin's namespace at its byte or entry limit.",
            |m| &m.kv_too_large,
        ),
        (
            "switchboard_plugin_log_fields_folded_total",
            "Plugin log lines whose fields were printed as one `fields` value: more than 16 fields, or a new set of field names past the tenant's 256 or the node's 4096.",
            |m| &m.log_fields_folded,
        ),
    ];
    for (name, help, field) in counters {
        header(&mut out, name, "counter", help);
        for tenant in tenants {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\"}} {}",
                escape(tenant.name),
                field(tenant.metrics).load(Ordering::Relaxed)
            );
        }
    }
    header(
        &mut out,
        "switchboard_plugin_cpu_seconds_total",
        "counter",
        "CPU time the tenant's plugin calls ran (time inside the calls, waits excluded).",
    );
    for tenant in tenants {
        let nanos = tenant.metrics.plugin_cpu_ns.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "switchboard_plugin_cpu_seconds_total{{tenant=\"{}\"}} {}",
            escape(tenant.name),
            nanos as f64 / 1e9
        );
    }
    header(
        &mut out,
        "switchboard_handshake_rejections_total",
        "counter",
        "Upgrades refused, by reason and HTTP status.",
    );
    for ((tenant, reason, status), count) in node.rejections.lock().iter() {
        let _ = writeln!(
            out,
            "switchboard_handshake_rejections_total{{tenant=\"{}\",reason=\"{reason}\",status=\"{status}\"}} {count}",
            escape(tenant)
        );
    }
    header(
        &mut out,
        "switchboard_closes_total",
        "counter",
        "Connections ended, by close code (1006: dropped without a close frame; other: a code outside RFC 6455's list).",
    );
    for ((tenant, code), count) in node.closes.lock().iter() {
        let _ = writeln!(
            out,
            "switchboard_closes_total{{tenant=\"{}\",code=\"{code}\"}} {count}",
            escape(tenant)
        );
    }
    header(
        &mut out,
        "switchboard_plugin_load_failures_total",
        "counter",
        "Plugin versions that failed to load or swap in; the old version kept serving.",
    );
    for (tenant, count) in node.plugin_load_failures.lock().iter() {
        let _ = writeln!(
            out,
            "switchboard_plugin_load_failures_total{{tenant=\"{}\"}} {count}",
            escape(tenant)
        );
    }
    for (name, kind, help, value) in [
        (
            "switchboard_plugin_code_cache_hits_total",
            "counter",
            "Plugin functions whose machine code came from the compiled-code cache.",
            code.hits,
        ),
        (
            "switchboard_plugin_code_cache_misses_total",
            "counter",
            "Plugin functions compiled because the cache did not have them.",
            code.misses,
        ),
        (
            "switchboard_plugin_code_cache_bytes",
            "gauge",
            "Bytes of machine code held by the compiled-code cache.",
            code.bytes as u64,
        ),
    ] {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    header(
        &mut out,
        "switchboard_rooms",
        "gauge",
        "Rooms with at least one member on this node.",
    );
    let _ = writeln!(out, "switchboard_rooms {rooms}");
    header(
        &mut out,
        "switchboard_draining",
        "gauge",
        "1 while the node drains for shutdown.",
    );
    let _ = writeln!(out, "switchboard_draining {}", u8::from(draining));
    render_process(&mut out);
    out
}

/// What the process holds: live async tasks, open descriptors and resident memory, the
/// figures a leak would show first.
fn render_process(out: &mut String) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        header(
            out,
            "switchboard_runtime_alive_tasks",
            "gauge",
            "Async tasks alive in the process's runtime.",
        );
        let _ = writeln!(
            out,
            "switchboard_runtime_alive_tasks {}",
            runtime.metrics().num_alive_tasks()
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        header(out, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(out, "process_open_fds {}", entries.count());
    }
    let resident_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    if let Some(kib) = resident_kib {
        header(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", kib * 1024);
    }
}

#[cfg(test)]
mod tests;
