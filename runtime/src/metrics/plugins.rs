//! The plugins' series: what each tenant holds loaded, the compiles (outcomes, refusals,
//! running and waiting), and the calls of each plugin (counts, failures by kind, durations,
//! instances, reloads).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{escape, header};

/// The compiled-code cache's figures (`plugins/code_cache.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeCacheFigures {
    /// Lookups that found a function's code.
    pub hits: u64,
    /// Lookups that did not, so the function was compiled.
    pub misses: u64,
    /// Bytes of machine code held.
    pub bytes: usize,
}

/// What the node's compiles report at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompileFigures {
    /// Compiles by (tenant, tier, outcome), in label order.
    pub outcomes: Vec<((String, &'static str, &'static str), u64)>,
    /// Uploads and reloads refused before compiling, by (tenant, reason), in label order.
    pub refusals: Vec<((String, &'static str), u64)>,
    /// Compiles running (worker processes).
    pub running: usize,
    /// Compiles waiting for a node compile slot.
    pub waiting: usize,
}

/// Renders the kept builds' figures (`plugins/builds.rs`).
pub fn render_builds(out: &mut String, hits: u64, misses: u64, bytes: usize) {
    for (name, kind, help, value) in [
        (
            "switchboard_plugin_build_cache_hits_total",
            "counter",
            "Plugin loads that took a build this node had made before instead of compiling.",
            hits,
        ),
        (
            "switchboard_plugin_build_cache_misses_total",
            "counter",
            "Plugin loads that compiled.",
            misses,
        ),
        (
            "switchboard_plugin_build_cache_bytes",
            "gauge",
            "Bytes of finished plugin builds kept for reuse.",
            bytes as u64,
        ),
    ] {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Renders what each tenant holds: rows of (tenant, plugins loaded, bytes of their files).
pub fn render_held(out: &mut String, rows: &[(&str, usize, usize)]) {
    let mut held: Vec<(String, usize, usize)> = rows
        .iter()
        .map(|(tenant, count, bytes)| (escape(tenant), *count, *bytes))
        .collect();
    held.sort();
    header(
        out,
        "switchboard_plugins",
        "gauge",
        "Plugins loaded (plugin_limits.max_plugins, plugins.max_plugins).",
    );
    for (tenant, count, _) in &held {
        let _ = writeln!(out, "switchboard_plugins{{tenant=\"{tenant}\"}} {count}");
    }
    header(
        out,
        "switchboard_plugin_bytes",
        "gauge",
        "Bytes of the loaded plugins' files as uploaded (plugin_limits.max_plugin_bytes).",
    );
    for (tenant, _, bytes) in &held {
        let _ = writeln!(
            out,
            "switchboard_plugin_bytes{{tenant=\"{tenant}\"}} {bytes}"
        );
    }
}

/// Renders the compiles' series.
pub fn render_compiles(out: &mut String, figures: &CompileFigures) {
    header(
        out,
        "switchboard_plugin_compiles_total",
        "counter",
        "Plugin compiles by tier and outcome (ok, invalid, time_limit, memory_limit, crashed, superseded, shutdown, no_worker).",
    );
    for ((tenant, tier, outcome), count) in &figures.outcomes {
        let _ = writeln!(
            out,
            "switchboard_plugin_compiles_total{{tenant=\"{}\",tier=\"{tier}\",outcome=\"{outcome}\"}} {count}",
            escape(tenant)
        );
    }
    header(
        out,
        "switchboard_plugin_refusals_total",
        "counter",
        "Plugin uploads and reloads refused before compiling, by the bound they hit.",
    );
    for ((tenant, reason), count) in &figures.refusals {
        let _ = writeln!(
            out,
            "switchboard_plugin_refusals_total{{tenant=\"{}\",reason=\"{reason}\"}} {count}",
            escape(tenant)
        );
    }
    for (name, help, value) in [
        (
            "switchboard_plugin_compiles_running",
            "Plugin compiles running (worker processes).",
            figures.running,
        ),
        (
            "switchboard_plugin_compiles_waiting",
            "Plugin compiles waiting for a node compile slot.",
            figures.waiting,
        ),
    ] {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Upper bounds (seconds) of the `switchboard_plugin_call_duration_seconds` buckets.
pub const CALL_DURATION_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// How a plugin call failed, the `kind` of `switchboard_plugin_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The guest trapped: a panic, its memory cap, a stack overflow.
    Trap,
    /// It ran past its CPU budget.
    Timeout,
    /// It returned an error of its own (`HandlerError`).
    HandlerError,
    /// Its reply was not JSON, or over the message size limit.
    BadReply,
    /// It was not called: every instance busy, or its tenant past its CPU share.
    Overloaded,
}

impl CallFailure {
    const ALL: [CallFailure; 5] = [
        CallFailure::Trap,
        CallFailure::Timeout,
        CallFailure::HandlerError,
        CallFailure::BadReply,
        CallFailure::Overloaded,
    ];

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            CallFailure::Trap => "trap",
            CallFailure::Timeout => "timeout",
            CallFailure::HandlerError => "handler_error",
            CallFailure::BadReply => "bad_reply",
            CallFailure::Overloaded => "overloaded",
        }
    }
}

/// The counters of one plugin (by name) of one tenant. Every loaded version of the plugin
/// shares them, so they run on across reloads.
#[derive(Debug, Default)]
pub struct PluginCalls {
    calls: AtomicU64,
    batches: AtomicU64,
    failures: [AtomicU64; CallFailure::ALL.len()],
    /// Calls per duration bucket (not cumulative); the last slot is past the last bound.
    buckets: [AtomicU64; CALL_DURATION_BUCKETS.len() + 1],
    duration_ns: AtomicU64,
    instances: AtomicU64,
    reloads: AtomicU64,
}

impl PluginCalls {
    /// Counts `calls` calls asked for (whether or not they ran): a batch counts one per
    /// message.
    pub fn called_many(&self, calls: usize) {
        self.calls.fetch_add(calls as u64, Ordering::Relaxed);
    }

    /// Counts one `on-messages` call (its messages are counted by `called_many`).
    pub fn batched(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a call that ran took, from entering the guest to its answer; a batch
    /// of `calls` messages counts as that many calls of equal share.
    pub fn ran_many(&self, took: Duration, calls: usize) {
        let calls = calls.max(1);
        let each = took / u32::try_from(calls).unwrap_or(u32::MAX);
        let seconds = each.as_secs_f64();
        let bucket = CALL_DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(CALL_DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(calls as u64, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.duration_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts a failed call.
    pub fn failed(&self, failure: CallFailure) {
        let index = CallFailure::ALL
            .iter()
            .position(|kind| *kind == failure)
            .unwrap_or_default();
        self.failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new version swapped in for the one serving.
    pub fn reloaded(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a live instance until the guard drops.
    pub fn instance(self: &Arc<Self>) -> InstanceGuard {
        self.instances.fetch_add(1, Ordering::Relaxed);
        InstanceGuard(self.clone())
    }
}

/// Keeps an instance counted in `switchboard_plugin_instances` while it lives.
#[derive(Debug)]
pub struct InstanceGuard(Arc<PluginCalls>);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        self.0.instances.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A tenant's plugin counters by plugin name.
#[derive(Debug, Default)]
pub struct PluginSeries(Mutex<BTreeMap<String, Arc<PluginCalls>>>);

impl PluginSeries {
    /// The counters of plugin `name`, made on its first load.
    pub fn of(&self, name: &str) -> Arc<PluginCalls> {
        let mut plugins = self.0.lock();
        if let Some(calls) = plugins.get(name) {
            return calls.clone();
        }
        // A new name: forget the unheld ones first, so loads that fail under ever new names
        // stay bounded even when nobody scrapes.
        plugins.retain(|_, calls| Arc::strong_count(calls) > 1);
        let calls = Arc::new(PluginCalls::default());
        plugins.insert(name.to_owned(), calls.clone());
        calls
    }

    /// Forgets the plugins no loaded version holds any more, so the series of every name a
    /// tenant ever loaded do not pile up: they are bounded by the versions loaded.
    fn forget_unloaded(&self) {
        self.0
            .lock()
            .retain(|_, calls| Arc::strong_count(calls) > 1);
    }
}

/// A series with one value per plugin: name, type, help text, and how to read it.
type SimpleSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PluginCalls) -> u64,
);

/// Renders the call series of every tenant's plugins: rows of (tenant, its plugins).
pub fn render_calls(out: &mut String, tenants: &[(&str, &PluginSeries)]) {
    let mut rows: Vec<(String, String, Arc<PluginCalls>)> = Vec::new();
    for (tenant, series) in tenants {
        series.forget_unloaded();
        for (plugin, calls) in series.0.lock().iter() {
            rows.push((escape(tenant), escape(plugin), calls.clone()));
        }
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let simple: [SimpleSeries; 4] = [
        (
            "switchboard_plugin_calls_total",
            "counter",
            "Plugin calls asked for (messages and hooks), across the plugin's versions.",
            |calls| calls.calls.load(Ordering::Relaxed),
        ),
        (
            "switchboard_plugin_batch_calls_total",
            "counter",
            "Guest calls that carried several messages of a connection (on-messages); each message also counts in switchboard_plugin_calls_total.",
            |calls| calls.batches.load(Ordering::Relaxed),
        ),
        (
            "switchboard_plugin_instances",
            "gauge",
            "Live instances of the plugin (warm in the pool or running a call).",
            |calls| calls.instances.load(Ordering::Relaxed),
        ),
        (
            "switchboard_plugin_reloads_total",
            "counter",
            "New versions of the plugin swapped in for the one serving.",
            |calls| calls.reloads.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in simple {
        header(out, name, kind, help);
        for (tenant, plugin, calls) in &rows {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{tenant}\",plugin=\"{plugin}\"}} {}",
                read(calls)
            );
        }
    }
    header(
        out,
        "switchboard_plugin_errors_total",
        "counter",
        "Failed plugin calls by kind (trap, timeout, handler_error, bad_reply, overloaded).",
    );
    for (tenant, plugin, calls) in &rows {
        for (failure, count) in CallFailure::ALL.iter().zip(&calls.failures) {
            let _ = writeln!(
                out,
                "switchboard_plugin_errors_total{{tenant=\"{tenant}\",plugin=\"{plugin}\",kind=\"{}\"}} {}",
                failure.label(),
                count.load(Ordering::Relaxed)
            );
        }
    }
    let name = "switchboard_plugin_call_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "Time from entering the plugin to its answer, for calls that ran.",
    );
    for (tenant, plugin, calls) in &rows {
        let mut cumulative = 0;
        for (bound, count) in CALL_DURATION_BUCKETS.iter().zip(&calls.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{tenant=\"{tenant}\",plugin=\"{plugin}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        if let Some(past) = calls.buckets.last() {
            cumulative += past.load(Ordering::Relaxed);
        }
        let labels = format!("tenant=\"{tenant}\",plugin=\"{plugin}\"");
        let seconds = calls.duration_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {seconds}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_no_version_holds_are_forgotten_when_a_new_one_comes() {
        let series = PluginSeries::default();
        let held = series.of("kept");
        drop(series.of("failed-load"));
        assert_eq!(series.0.lock().len(), 2);
        let _new = series.of("new");
        let names: Vec<String> = series.0.lock().keys().cloned().collect();
        assert_eq!(names, ["kept", "new"]);
        assert!(Arc::ptr_eq(&held, &series.of("kept")));
    }
}
