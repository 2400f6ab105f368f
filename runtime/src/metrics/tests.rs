//! Metric labels stay a bounded set whatever clients send; the series of other areas keep
//! their text.

use super::{NodeMetrics, close_code_label, render};

#[test]
fn close_codes_chosen_by_clients_share_one_series() {
    let metrics = NodeMetrics::default();
    for code in 3000..3200 {
        metrics.close("default", code);
    }
    metrics.close("default", 1000);
    metrics.close("default", 1013);
    let text = render(&metrics, &[], 0, false, &Default::default());
    let series: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("switchboard_closes_total{"))
        .collect();
    assert_eq!(
        series,
        [
            r#"switchboard_closes_total{tenant="default",code="1000"} 1"#,
            r#"switchboard_closes_total{tenant="default",code="1013"} 1"#,
            r#"switchboard_closes_total{tenant="default",code="other"} 200"#,
        ]
    );
}

#[test]
fn every_code_the_server_sends_keeps_its_own_label() {
    for code in [1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1013] {
        assert_eq!(close_code_label(code), code.to_string());
    }
    for code in [0, 999, 1004, 1015, 2000, 4000, 4999, u16::MAX] {
        assert_eq!(close_code_label(code), "other", "{code}");
    }
}

#[test]
fn the_redis_backplane_series_keep_their_names_help_and_values() {
    let figures = super::backplane::RedisFigures {
        ready: true,
        subscriptions: 3,
        probe_rtt_micros: 1500,
        probes: 4,
        probe_failures: 5,
        reconnects: 6,
        gaps_filled: 7,
        gaps_lost: 8,
        seq_regressions: 9,
        local_fallbacks: 10,
        dropped: 11,
        malformed: 12,
        reaped_nodes: 13,
        data_losses: 14,
    };
    let mut text = String::new();
    super::backplane::render_redis(&mut text, &figures);
    let expected = "\
# HELP switchboard_backplane_ready 1 while cross-node delivery is verified by the probe, else 0.
# TYPE switchboard_backplane_ready gauge
switchboard_backplane_ready 1
# HELP switchboard_backplane_subscriptions Room channels this node is subscribed to.
# TYPE switchboard_backplane_subscriptions gauge
switchboard_backplane_subscriptions 3
# HELP switchboard_backplane_probe_rtt_seconds Round trip of the last probe through Redis.
# TYPE switchboard_backplane_probe_rtt_seconds gauge
switchboard_backplane_probe_rtt_seconds 0.0015
# HELP switchboard_backplane_probes_total Probes that came back through Redis.
# TYPE switchboard_backplane_probes_total counter
switchboard_backplane_probes_total 4
# HELP switchboard_backplane_probe_failures_total Probes that did not come back in time.
# TYPE switchboard_backplane_probe_failures_total counter
switchboard_backplane_probe_failures_total 5
# HELP switchboard_backplane_reconnects_total Recoveries after Redis was unreachable.
# TYPE switchboard_backplane_reconnects_total counter
switchboard_backplane_reconnects_total 6
# HELP switchboard_backplane_gaps_filled_total Sequence gaps refilled from history.
# TYPE switchboard_backplane_gaps_filled_total counter
switchboard_backplane_gaps_filled_total 7
# HELP switchboard_backplane_gaps_lost_total Sequence gaps history could no longer fill.
# TYPE switchboard_backplane_gaps_lost_total counter
switchboard_backplane_gaps_lost_total 8
# HELP switchboard_backplane_seq_regressions_total Messages whose seq went back (Redis lost state).
# TYPE switchboard_backplane_seq_regressions_total counter
switchboard_backplane_seq_regressions_total 9
# HELP switchboard_backplane_local_fallbacks_total Channel messages sequenced locally while Redis was unreachable.
# TYPE switchboard_backplane_local_fallbacks_total counter
switchboard_backplane_local_fallbacks_total 10
# HELP switchboard_backplane_dropped_total Pub/sub messages dropped because the dispatch queue was full.
# TYPE switchboard_backplane_dropped_total counter
switchboard_backplane_dropped_total 11
# HELP switchboard_backplane_malformed_total Pub/sub messages that could not be read.
# TYPE switchboard_backplane_malformed_total counter
switchboard_backplane_malformed_total 12
# HELP switchboard_backplane_reaped_nodes_total Dead nodes whose members this node removed.
# TYPE switchboard_backplane_reaped_nodes_total counter
switchboard_backplane_reaped_nodes_total 13
# HELP switchboard_backplane_data_losses_total Times this node found that Redis had lost its data (restart without persistence, flush).
# TYPE switchboard_backplane_data_losses_total counter
switchboard_backplane_data_losses_total 14
";
    assert_eq!(text, expected);
}
