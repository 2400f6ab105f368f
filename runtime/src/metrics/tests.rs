//! Metric labels stay a bounded set whatever clients send.

use super::{NodeMetrics, close_code_label, render};

#[test]
fn close_codes_chosen_by_clients_share_one_series() {
    let metrics = NodeMetrics::default();
    for code in 3000..3200 {
        metrics.close("default", code);
    }
    metrics.close("default", 1000);
    metrics.close("default", 1013);
    let text = render(&metrics, &[], 0, false);
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
