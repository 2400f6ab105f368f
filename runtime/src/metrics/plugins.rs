//! The plugins' series: what each tenant holds loaded, and the compiles (outcomes, refusals,
//! running and waiting).

use std::fmt::Write as _;

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
