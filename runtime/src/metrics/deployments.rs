//! The desired state's series: changes written and applied, how long they took to reach this
//! node, versions that did not load, store failures, and whether this node serves what the
//! desired state says.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::header;

/// Counters of the node's desired-state work.
#[derive(Debug, Default)]
pub struct DeployMetrics {
    /// Records written through this node (deploys, rollbacks, deletes).
    pub changes_written: AtomicU64,
    /// Changes applied here (a version swapped in or a plugin taken out).
    pub changes_applied: AtomicU64,
    /// Milliseconds from the last applied change's write to its application here.
    pub last_lag_ms: AtomicU64,
    /// Sum of those lags, in milliseconds, for the mean.
    pub lag_ms_sum: AtomicU64,
    /// Deployed versions that did not load here.
    pub failures: AtomicU64,
    /// Reads or writes of the store that failed.
    pub store_errors: AtomicU64,
    /// The store revision last applied.
    pub revision: AtomicU64,
    /// Recorded plugins whose desired version this node does not serve.
    pub mismatched: AtomicU64,
    /// Tenant records whose settings do not apply on this node.
    pub mismatched_tenants: AtomicU64,
}

impl DeployMetrics {
    /// Counts a change applied here, written at `changed_at_ms`.
    pub fn applied(&self, changed_at_ms: u64) {
        let lag = crate::clock::unix_millis().saturating_sub(changed_at_ms);
        self.changes_applied.fetch_add(1, Ordering::Relaxed);
        self.last_lag_ms.store(lag, Ordering::Relaxed);
        self.lag_ms_sum.fetch_add(lag, Ordering::Relaxed);
    }

    /// Appends the series.
    pub fn render(&self, out: &mut String, synced: bool) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 7] = [
            (
                "switchboard_state_changes_written_total",
                "counter",
                "Desired-state changes (tenant changes, deploys, rollbacks, deletes) written through this node.",
                load(&self.changes_written),
            ),
            (
                "switchboard_state_changes_applied_total",
                "counter",
                "Desired-state changes applied on this node (a tenant made, changed or removed, a version swapped in, a plugin taken out).",
                load(&self.changes_applied),
            ),
            (
                "switchboard_state_apply_failures_total",
                "counter",
                "Deployed versions, or tenant settings, that did not apply on this node (the previous ones kept serving).",
                load(&self.failures),
            ),
            (
                "switchboard_state_store_errors_total",
                "counter",
                "Reads or writes of the desired-state store that failed.",
                load(&self.store_errors),
            ),
            (
                "switchboard_state_revision",
                "gauge",
                "The desired-state revision this node applied last.",
                load(&self.revision),
            ),
            (
                "switchboard_state_mismatched_plugins",
                "gauge",
                "Deployed plugins whose desired version this node does not serve.",
                load(&self.mismatched),
            ),
            (
                "switchboard_state_mismatched_tenants",
                "gauge",
                "Tenant records whose settings do not apply on this node (it serves the tenant as it was).",
                load(&self.mismatched_tenants),
            ),
        ];
        for (name, kind, help, value) in rows {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            out,
            "switchboard_state_convergence_lag_seconds",
            "gauge",
            "Time from the last applied change's write (on any node) to its application here.",
        );
        let _ = writeln!(
            out,
            "switchboard_state_convergence_lag_seconds {:.3}",
            load(&self.last_lag_ms) as f64 / 1000.0
        );
        header(
            out,
            "switchboard_state_synced",
            "gauge",
            "1 when this node applied the current desired state since the store last failed.",
        );
        let _ = writeln!(out, "switchboard_state_synced {}", u8::from(synced));
    }
}
