//! The backplanes' series: the in-memory backplane's history bytes and evictions, and the Redis
//! backplane's readiness, probes, recoveries and sequence repairs.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{escape, header};

/// Renders the in-memory backplane's history: (tenant, bytes held, messages evicted to stay
/// within `history.max_bytes`), one row per tenant that ever published with history.
pub fn render_history(out: &mut String, rows: &[(Arc<str>, usize, u64)]) {
    header(
        out,
        "switchboard_history_bytes",
        "gauge",
        "Bytes of channel history a tenant holds on this node (frames and bookkeeping).",
    );
    for (tenant, bytes, _) in rows {
        let _ = writeln!(
            out,
            "switchboard_history_bytes{{tenant=\"{}\"}} {bytes}",
            escape(tenant)
        );
    }
    header(
        out,
        "switchboard_history_evicted_total",
        "counter",
        "History messages dropped early because the tenant reached history.max_bytes.",
    );
    for (tenant, _, evicted) in rows {
        let _ = writeln!(
            out,
            "switchboard_history_evicted_total{{tenant=\"{}\"}} {evicted}",
            escape(tenant)
        );
    }
}

/// What the Redis backplane reports at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisFigures {
    /// Cross-node delivery is verified by the probe.
    pub ready: bool,
    /// Room channels this node is subscribed to.
    pub subscriptions: usize,
    /// Round trip of the last probe, in microseconds.
    pub probe_rtt_micros: u64,
    /// Probes that came back.
    pub probes: u64,
    /// Probes that did not come back in time.
    pub probe_failures: u64,
    /// Recoveries after Redis was unreachable.
    pub reconnects: u64,
    /// Sequence gaps refilled from history.
    pub gaps_filled: u64,
    /// Sequence gaps history could no longer fill.
    pub gaps_lost: u64,
    /// Messages whose `seq` went back.
    pub seq_regressions: u64,
    /// Channel messages sequenced locally while Redis was unreachable.
    pub local_fallbacks: u64,
    /// Pub/sub messages dropped at the full dispatch queue.
    pub dropped: u64,
    /// Pub/sub messages that could not be read.
    pub malformed: u64,
    /// Dead nodes whose members this node removed.
    pub reaped_nodes: u64,
    /// Times Redis was found to have lost its data.
    pub data_losses: u64,
}

/// Renders the Redis backplane's series.
pub fn render_redis(out: &mut String, figures: &RedisFigures) {
    let gauge = |out: &mut String, name: &str, help: &str, value: &dyn std::fmt::Display| {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    };
    gauge(
        out,
        "switchboard_backplane_ready",
        "1 while cross-node delivery is verified by the probe, else 0.",
        &u64::from(figures.ready),
    );
    gauge(
        out,
        "switchboard_backplane_subscriptions",
        "Room channels this node is subscribed to.",
        &(figures.subscriptions as u64),
    );
    gauge(
        out,
        "switchboard_backplane_probe_rtt_seconds",
        "Round trip of the last probe through Redis.",
        &(figures.probe_rtt_micros as f64 / 1e6),
    );
    for (name, help, value) in [
        (
            "switchboard_backplane_probes_total",
            "Probes that came back through Redis.",
            figures.probes,
        ),
        (
            "switchboard_backplane_probe_failures_total",
            "Probes that did not come back in time.",
            figures.probe_failures,
        ),
        (
            "switchboard_backplane_reconnects_total",
            "Recoveries after Redis was unreachable.",
            figures.reconnects,
        ),
        (
            "switchboard_backplane_gaps_filled_total",
            "Sequence gaps refilled from history.",
            figures.gaps_filled,
        ),
        (
            "switchboard_backplane_gaps_lost_total",
            "Sequence gaps history could no longer fill.",
            figures.gaps_lost,
        ),
        (
            "switchboard_backplane_seq_regressions_total",
            "Messages whose seq went back (Redis lost state).",
            figures.seq_regressions,
        ),
        (
            "switchboard_backplane_local_fallbacks_total",
            "Channel messages sequenced locally while Redis was unreachable.",
            figures.local_fallbacks,
        ),
        (
            "switchboard_backplane_dropped_total",
            "Pub/sub messages dropped because the dispatch queue was full.",
            figures.dropped,
        ),
        (
            "switchboard_backplane_malformed_total",
            "Pub/sub messages that could not be read.",
            figures.malformed,
        ),
        (
            "switchboard_backplane_reaped_nodes_total",
            "Dead nodes whose members this node removed.",
            figures.reaped_nodes,
        ),
        (
            "switchboard_backplane_data_losses_total",
            "Times this node found that Redis had lost its data (restart without persistence, flush).",
            figures.data_losses,
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
}
