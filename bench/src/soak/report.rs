//! The soak's samples, its checks against stated tolerances, and the markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use switchboard_bench::stats::percentile;

use crate::ledger::{Books, Category, Restart};
use crate::redis_server::{KINDS, Keys};
use crate::traffic::{Churned, Event, Swapped};

/// One node at one moment (NaN where it could not be read).
#[derive(Debug, Clone, Copy)]
pub struct NodeSample {
    pub rss_mib: f64,
    pub fds: f64,
    pub tasks: f64,
    pub connections: f64,
    pub rooms: f64,
    /// Redis channels the node listens on (its inbox, and one per room with members).
    pub subscriptions: f64,
}

/// Every node and Redis at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub label: String,
    /// Seconds since the soak started.
    pub at: f64,
    pub nodes: Vec<NodeSample>,
    /// `None` while Redis did not answer.
    pub redis: Option<Keys>,
}

/// How far the end may be from the baseline.
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    /// Live tasks: the same tasks run at both ends; a few may be in flight at either reading.
    pub tasks: f64,
    /// Open descriptors: the same listener, Redis connections, plugin watches and the one
    /// connection the sample itself holds.
    pub fds: f64,
    /// Resident memory the node may keep after the load, MiB.
    pub rss_mib: f64,
}

/// One pass/fail line.
#[derive(Debug, Clone)]
pub struct Check {
    pub what: String,
    pub measured: String,
    pub bound: String,
    pub pass: bool,
}

fn check(what: impl Into<String>, measured: String, bound: &str, pass: bool) -> Check {
    Check {
        what: what.into(),
        measured,
        bound: bound.to_owned(),
        pass,
    }
}

/// Resources at the end against the baseline, per node, and Redis's keys.
pub fn resource_checks(
    baseline: &Sample,
    end: &Sample,
    names: &[String],
    tolerances: Tolerances,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let (Some(before), Some(after)) = (baseline.nodes.get(index), end.nodes.get(index)) else {
            checks.push(check(
                format!("{name}: sampled"),
                "missing".to_owned(),
                "",
                false,
            ));
            continue;
        };
        let pair = |before: f64, after: f64| format!("{before:.0} → {after:.0}");
        let within = |before: f64, after: f64, slack: f64| (after - before).abs() <= slack;
        checks.push(check(
            format!("{name}: connections back to baseline"),
            pair(before.connections, after.connections),
            "exactly",
            after.connections == before.connections,
        ));
        checks.push(check(
            format!("{name}: rooms back to baseline"),
            pair(before.rooms, after.rooms),
            "exactly",
            after.rooms == before.rooms,
        ));
        checks.push(check(
            format!("{name}: Redis subscriptions back to baseline"),
            pair(before.subscriptions, after.subscriptions),
            "exactly",
            after.subscriptions == before.subscriptions,
        ));
        checks.push(check(
            format!("{name}: live tasks back to baseline"),
            pair(before.tasks, after.tasks),
            &format!("± {}", tolerances.tasks),
            within(before.tasks, after.tasks, tolerances.tasks),
        ));
        checks.push(check(
            format!("{name}: open fds back to baseline"),
            pair(before.fds, after.fds),
            &format!("± {}", tolerances.fds),
            within(before.fds, after.fds, tolerances.fds),
        ));
        checks.push(check(
            format!("{name}: RSS after the settle"),
            format!(
                "{:.1} → {:.1} MiB ({:+.1})",
                before.rss_mib,
                after.rss_mib,
                after.rss_mib - before.rss_mib
            ),
            &format!("≤ baseline + {} MiB", tolerances.rss_mib),
            after.rss_mib - before.rss_mib <= tolerances.rss_mib,
        ));
    }
    match (&baseline.redis, &end.redis) {
        (Some(before), Some(after)) => {
            checks.push(check(
                "Redis: DBSIZE back to baseline",
                format!("{} → {}", before.total, after.total),
                "exactly",
                before.total == after.total,
            ));
            for kind in KINDS {
                let (b, a) = (before.count(kind), after.count(kind));
                if a != 0 || b != 0 {
                    checks.push(check(
                        format!("Redis: `{kind}` keys back to baseline"),
                        format!("{b} → {a}"),
                        "exactly",
                        a == b,
                    ));
                }
            }
            checks.push(check(
                "Redis: members of the nodes' room and user sets back to baseline",
                format!("{} → {}", before.node_set_members, after.node_set_members),
                "exactly",
                before.node_set_members == after.node_set_members,
            ));
        }
        _ => checks.push(check(
            "Redis: keys read at baseline and end",
            "Redis did not answer".to_owned(),
            "",
            false,
        )),
    }
    checks
}

/// Growth with time, per node: RSS at the end of the load (the last sample taken by then)
/// against the highest sample of the load's first half. Memory a node keeps for reuse (the
/// allocator's pages, warm plugin instances) is taken early, at the load's peak working set; a
/// leak keeps growing with the load's length.
pub fn drift_checks(
    samples: &[Sample],
    (from, until): (f64, f64),
    names: &[String],
    drift_mib: f64,
) -> Vec<Check> {
    let middle = from + (until - from) / 2.0;
    let first_half: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at > from && s.at <= middle)
        .collect();
    let end = samples.iter().rfind(|s| s.at <= until + 1.0);
    names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let peak = first_half
                .iter()
                .filter_map(|s| s.nodes.get(index))
                .map(|n| n.rss_mib)
                .filter(|rss| !rss.is_nan())
                .fold(f64::NAN, f64::max);
            let last = end
                .and_then(|s| s.nodes.get(index))
                .map_or(f64::NAN, |n| n.rss_mib);
            let growth = last - peak;
            check(
                format!("{name}: RSS growth over the load's second half"),
                format!("{peak:.1} → {last:.1} MiB ({growth:+.1})"),
                &format!("≤ {drift_mib} MiB"),
                growth <= drift_mib,
            )
        })
        .collect()
}

/// Counts of events by source, inside and outside the restart window.
pub fn events_by_source(
    events: &[Event],
    restart: Option<Restart>,
) -> BTreeMap<&'static str, [u64; 2]> {
    let mut counts: BTreeMap<&'static str, [u64; 2]> = BTreeMap::new();
    for event in events {
        let inside = restart.is_some_and(|r| r.contains(event.at));
        counts.entry(event.source).or_default()[usize::from(!inside)] += 1;
    }
    counts
}

/// The checks on messages and on the load's own failures.
pub fn traffic_checks(
    books: &Books,
    events: &[Event],
    dropped_events: u64,
    restart: Option<Restart>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for category in Category::ALL.iter().filter(|c| !c.allowed()) {
        let count = books.count(*category);
        checks.push(check(
            format!("lost: {}", category.describe()),
            count.to_string(),
            "0",
            count == 0,
        ));
    }
    let zero = |what: &str, count: u64| check(what, count.to_string(), "0", count == 0);
    checks.push(zero("duplicate deliveries", books.duplicates));
    checks.push(zero(
        "seq not above the one before (per subscriber and channel)",
        books.disorder,
    ));
    checks.push(zero("malformed deliveries", books.malformed));
    checks.push(zero("seq gaps outside the restart window", books.gaps[1]));
    checks.push(zero(
        "publishes and broadcasts refused outside the restart window",
        books.refused[1],
    ));
    checks.push(zero(
        "publishes and broadcasts unanswered outside the restart window",
        books.unanswered[1],
    ));
    checks.push(zero(
        "messages delivered although refused, outside the restart window",
        books.delivered_refused[1],
    ));
    for (source, [_, outside]) in events_by_source(events, restart) {
        checks.push(zero(
            &format!("{source} failures outside the restart window"),
            outside,
        ));
    }
    checks.push(zero("events not kept (over the cap)", dropped_events));
    checks
}

/// Everything the report shows.
#[derive(Debug)]
pub struct Report<'a> {
    pub title: String,
    pub setup: String,
    pub names: &'a [String],
    pub samples: &'a [Sample],
    pub restart: Option<Restart>,
    pub restarted_at: Option<f64>,
    pub load: (f64, f64),
    pub books: &'a Books,
    pub sources: &'a [(String, SourceSummary)],
    pub churned: Churned,
    pub swapped: &'a Swapped,
    pub events: &'a [Event],
    pub logs: &'a [(String, BTreeMap<String, u64>)],
    pub checks: &'a [Check],
}

/// What one source sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceSummary {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub unanswered: u64,
}

fn number(value: f64, decimals: usize) -> String {
    if value.is_nan() {
        "–".to_owned()
    } else {
        format!("{value:.decimals$}")
    }
}

impl Report<'_> {
    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n{}\n\n", self.title, self.setup);
        self.timeline(&mut out);
        self.samples_table(&mut out);
        self.checks_table(&mut out);
        self.messages(&mut out);
        self.load_table(&mut out);
        self.events_list(&mut out);
        self.logs_list(&mut out);
        out
    }

    fn timeline(&self, out: &mut String) {
        let (from, until) = self.load;
        let _ = write!(
            out,
            "Timeline (seconds since the nodes were ready): load from {from:.1} to {until:.1}"
        );
        match (self.restart, self.restarted_at) {
            (Some(restart), Some(restarted)) => {
                let _ = write!(
                    out,
                    "; Redis killed (SIGKILL) at {:.1}, started again (empty) at {restarted:.1}, \
                     every node ready again at {:.1} ({:.2} s after Redis answered). Restart \
                     window for losses: {:.1} to {:.1}.",
                    restart.kill_at,
                    restart.ready_at,
                    restart.ready_at - restarted,
                    restart.kill_at - restart.before,
                    restart.ready_at + restart.after
                );
            }
            _ => out.push_str("; no Redis restart."),
        }
        out.push_str("\n\n");
    }

    fn samples_table(&self, out: &mut String) {
        out.push_str("### Samples\n\n| sample | t (s) |");
        for name in self.names {
            let _ = write!(
                out,
                " {name} RSS MiB | fds | tasks | conns | rooms | subs |"
            );
        }
        out.push_str(" Redis DBSIZE |");
        for kind in KINDS {
            let _ = write!(out, " {kind} |");
        }
        out.push_str(" node set members |\n|---|---:|");
        out.push_str(&"---:|".repeat(self.names.len() * 6 + 2 + KINDS.len()));
        out.push('\n');
        for sample in self.samples {
            let _ = write!(out, "| {} | {:.0} |", sample.label, sample.at);
            for node in &sample.nodes {
                let _ = write!(
                    out,
                    " {} | {} | {} | {} | {} | {} |",
                    number(node.rss_mib, 1),
                    number(node.fds, 0),
                    number(node.tasks, 0),
                    number(node.connections, 0),
                    number(node.rooms, 0),
                    number(node.subscriptions, 0),
                );
            }
            match &sample.redis {
                Some(keys) => {
                    let _ = write!(out, " {} |", keys.total);
                    for kind in KINDS {
                        let _ = write!(out, " {} |", keys.count(kind));
                    }
                    let _ = write!(out, " {} |", keys.node_set_members);
                }
                None => {
                    out.push_str(" down |");
                    out.push_str(&" |".repeat(KINDS.len() + 1));
                }
            }
            out.push('\n');
        }
        out.push('\n');
    }

    fn checks_table(&self, out: &mut String) {
        let failed = self.checks.iter().filter(|c| !c.pass).count();
        let _ = writeln!(
            out,
            "### Checks: {}\n\n| check | measured | bound | result |\n|---|---|---|---|",
            if failed == 0 {
                "all passed".to_owned()
            } else {
                format!("**{failed} failed**")
            }
        );
        for c in self.checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                c.what,
                c.measured,
                c.bound,
                if c.pass { "pass" } else { "**FAIL**" }
            );
        }
        out.push('\n');
    }

    fn messages(&self, out: &mut String) {
        out.push_str(
            "### Messages\n\n| source | sent | accepted | refused | unanswered |\n|---|---:|---:|---:|---:|\n",
        );
        for (name, summary) in self.sources {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                summary.sent, summary.accepted, summary.refused, summary.unanswered
            );
        }
        let books = self.books;
        let _ = writeln!(
            out,
            "\nDeliveries: {} expected (accepted messages × subscribers of their channel), {} \
             delivered, {} lost. Refused in / outside the restart window: {} / {}; unanswered: \
             {} / {}; delivered although refused: {} / {}. Seq gaps seen by subscribers in / \
             outside the window: {} / {}.\n",
            books.expected,
            books.delivered,
            books.lost.len(),
            books.refused[0],
            books.refused[1],
            books.unanswered[0],
            books.unanswered[1],
            books.delivered_refused[0],
            books.delivered_refused[1],
            books.gaps[0],
            books.gaps[1],
        );
        out.push_str(
            "| lost (subscriber × message) | count | distinct messages | sent from (s) | to (s) | relative to the kill (s) | allowed |\n|---|---:|---:|---:|---:|---|---|\n",
        );
        for category in Category::ALL {
            let lost: Vec<_> = books
                .lost
                .iter()
                .filter(|l| l.category == category)
                .collect();
            if lost.is_empty() {
                continue;
            }
            let first = lost.iter().map(|l| l.sent_at).fold(f64::INFINITY, f64::min);
            let last = lost
                .iter()
                .map(|l| l.sent_at)
                .fold(f64::NEG_INFINITY, f64::max);
            let mut distinct: Vec<(&str, u64)> =
                lost.iter().map(|l| (l.channel.as_str(), l.index)).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let relative = self.restart.map_or("–".to_owned(), |r| {
                format!("{:+.2} to {:+.2}", first - r.kill_at, last - r.kill_at)
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {first:.2} | {last:.2} | {relative} | {} |",
                category.describe(),
                lost.len(),
                distinct.len(),
                if category.allowed() { "yes" } else { "**no**" }
            );
        }
        let unallowed: Vec<_> = books
            .lost
            .iter()
            .filter(|l| !l.category.allowed())
            .take(20)
            .collect();
        if !unallowed.is_empty() {
            out.push_str(
                "\nLosses not allowed (the first 20): the message, the node it was sent to, the \
                 subscriber's node and the `seq`s it got just before and after it (by send \
                 order).\n\n| channel | index | sent at (s) | seq | sent to | subscriber | on node | seq before | seq after |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            let seq = |seq: Option<u64>| seq.map_or("–".to_owned(), |seq| seq.to_string());
            for lost in unallowed {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
                    lost.channel,
                    lost.index,
                    lost.sent_at,
                    lost.seq,
                    self.node_name(lost.node),
                    lost.subscriber,
                    self.node_name(lost.subscriber_node),
                    seq(lost.around.0),
                    seq(lost.around.1),
                );
            }
        }
        out.push('\n');
    }

    fn node_name(&self, node: usize) -> &str {
        self.names.get(node).map_or("?", String::as_str)
    }

    fn load_table(&self, out: &mut String) {
        let mut put = self.swapped.put_ms.clone();
        put.sort_by(f64::total_cmp);
        let as_micros: Vec<u64> = put.iter().map(|ms| (ms * 1000.0) as u64).collect();
        let seconds = (self.load.1 - self.load.0).max(1e-3);
        let _ = writeln!(
            out,
            "### Load\n\nChurn: {} cycles ({:.1}/s), {} of them ending without a close \
             handshake, {} failed. Plugin swaps: {} (greeter v1/v2 on every node, a new echo \
             build on one), {} failed; PUT p50 {:.1} ms, max {:.1} ms.\n",
            self.churned.cycles,
            self.churned.cycles as f64 / seconds,
            self.churned.abrupt,
            self.churned.failed,
            self.swapped.swaps,
            self.swapped.failed,
            percentile(&as_micros, 0.5) as f64 / 1000.0,
            as_micros.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
    }

    fn events_list(&self, out: &mut String) {
        let counts = events_by_source(self.events, self.restart);
        if counts.is_empty() {
            out.push_str("### Load failures\n\nNone.\n\n");
            return;
        }
        out.push_str(
            "### Load failures\n\n| source | in the restart window | outside |\n|---|---:|---:|\n",
        );
        for (source, [inside, outside]) in &counts {
            let _ = writeln!(out, "| {source} | {inside} | {outside} |");
        }
        out.push_str("\nFirst ones:\n\n");
        for event in self.events.iter().take(20) {
            let _ = writeln!(out, "- {:.2} s, {}: {}", event.at, event.source, event.what);
        }
        out.push('\n');
    }

    fn logs_list(&self, out: &mut String) {
        out.push_str("### Warnings and errors the nodes logged\n\n");
        for (name, problems) in self.logs {
            if problems.is_empty() {
                let _ = writeln!(out, "- {name}: none");
                continue;
            }
            let _ = writeln!(out, "- {name}:");
            let mut rows: Vec<(&String, &u64)> = problems.iter().collect();
            rows.sort_by(|a, b| b.1.cmp(a.1));
            for (event, count) in rows.iter().take(25) {
                let _ = writeln!(out, "  - {count} × `{event}`");
            }
            if rows.len() > 25 {
                let _ = writeln!(out, "  - … {} more kinds", rows.len() - 25);
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{NodeSample, Sample, Tolerances, drift_checks, resource_checks, traffic_checks};
    use crate::ledger::{Books, Restart};
    use crate::redis_server::Keys;
    use crate::traffic::Event;

    fn node(rss_mib: f64, fds: f64, tasks: f64, connections: f64) -> NodeSample {
        NodeSample {
            rss_mib,
            fds,
            tasks,
            connections,
            rooms: 0.0,
            subscriptions: 1.0,
        }
    }

    fn sample(node: NodeSample, keys: u64) -> Sample {
        Sample {
            label: String::new(),
            at: 0.0,
            nodes: vec![node],
            redis: Some(Keys {
                total: keys,
                by_kind: BTreeMap::from([("state", 1), ("nodes", 1), ("meta", keys - 2)]),
                node_set_members: 0,
            }),
        }
    }

    const TOLERANCES: Tolerances = Tolerances {
        tasks: 3.0,
        fds: 2.0,
        rss_mib: 48.0,
    };

    fn failed(checks: &[super::Check]) -> Vec<String> {
        checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.what.clone())
            .collect()
    }

    #[test]
    fn resources_back_within_tolerance_pass() {
        let names = ["a".to_owned()];
        let checks = resource_checks(
            &sample(node(60.0, 20.0, 30.0, 0.0), 2),
            &sample(node(100.0, 22.0, 27.0, 0.0), 2),
            &names,
            TOLERANCES,
        );
        assert!(failed(&checks).is_empty(), "{checks:?}");
    }

    #[test]
    fn leaks_fail_each_on_its_own() {
        let names = ["a".to_owned()];
        let checks = resource_checks(
            &sample(node(60.0, 20.0, 30.0, 0.0), 2),
            &sample(node(120.0, 23.0, 34.0, 1.0), 3),
            &names,
            TOLERANCES,
        );
        assert_eq!(
            failed(&checks),
            [
                "a: connections back to baseline",
                "a: live tasks back to baseline",
                "a: open fds back to baseline",
                "a: RSS after the settle",
                "Redis: DBSIZE back to baseline",
                "Redis: `meta` keys back to baseline",
            ]
        );
    }

    #[test]
    fn growth_is_measured_from_the_first_half_peak_to_the_load_end() {
        let names = ["a".to_owned()];
        let at = |at: f64, rss: f64| Sample {
            at,
            ..sample(node(rss, 0.0, 0.0, 0.0), 2)
        };
        // Load from 10 to 110: the first half peaks at 40 MiB; the end reads 47.
        let samples = [
            at(5.0, 30.0),
            at(30.0, 40.0),
            at(50.0, 38.0),
            at(90.0, 45.0),
            at(110.0, 47.0),
            at(200.0, 60.0),
        ];
        let checks = drift_checks(&samples, (10.0, 110.0), &names, 8.0);
        assert!(checks[0].pass, "{checks:?}");
        assert_eq!(checks[0].measured, "40.0 → 47.0 MiB (+7.0)");
        let checks = drift_checks(&samples, (10.0, 110.0), &names, 6.0);
        assert!(!checks[0].pass);
        // No sample in the first half: NaN growth fails rather than passes.
        let checks = drift_checks(&samples[3..], (10.0, 110.0), &names, 8.0);
        assert!(!checks[0].pass);
    }

    #[test]
    fn failures_count_only_outside_the_restart_window() {
        let restart = Restart {
            kill_at: 10.0,
            ready_at: 12.0,
            before: 1.0,
            after: 1.0,
        };
        let event = |at: f64| Event {
            at,
            source: "churn",
            what: String::new(),
        };
        let books = Books::default();
        let inside = traffic_checks(&books, &[event(11.0)], 0, Some(restart));
        assert!(failed(&inside).is_empty());
        let outside = traffic_checks(&books, &[event(11.0), event(20.0)], 0, Some(restart));
        assert_eq!(
            failed(&outside),
            ["churn failures outside the restart window"]
        );
    }
}
