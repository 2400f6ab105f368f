//! Tests of the dashboard plugin against the SDK's mock host: who may report, what a tick
//! broadcasts, and what a snapshot holds.

use serde_json::{Value, json};
use switchboard_sdk::{ConnInfo, HandlerError, Plugin, mock};

use super::Dashboard;

fn publisher() -> ConnInfo {
    mock::conn("n-1", "feeder", json!({"role": "publisher"}))
}

fn viewer() -> ConnInfo {
    mock::conn("n-2", "alice", json!({}))
}

fn report(conn: &ConnInfo, metrics: Value) -> Result<Value, String> {
    let reply = Dashboard::on_message(
        conn.clone(),
        mock::message("dashboard:report", None, json!({"metrics": metrics})),
    )
    .map_err(|error: HandlerError| error.code)?;
    Ok(serde_json::from_str(&reply.expect("an ack")).expect("json"))
}

fn snapshot() -> Value {
    let reply = Dashboard::on_message(
        viewer(),
        mock::message("dashboard:snapshot", None, json!(null)),
    )
    .expect("snapshot")
    .expect("an ack");
    serde_json::from_str(&reply).expect("json")
}

/// Runs a tick at `now` and returns the delta it broadcast, if any.
fn tick(now: u64) -> Option<Value> {
    let before = mock::with(|host| host.broadcasts.len());
    Dashboard::on_tick(now);
    mock::with(|host| {
        assert!(host.broadcasts.len() <= before + 1);
        host.broadcasts.get(before).map(|broadcast| {
            assert_eq!(broadcast.channel, "dashboard");
            assert_eq!(broadcast.msg_type, "dashboard:delta");
            serde_json::from_str(&broadcast.payload_json).expect("json")
        })
    })
}

#[test]
fn only_publishers_report_and_only_numbers_by_plain_names() {
    mock::reset();
    assert_eq!(
        report(&viewer(), json!({"cpu": 1})),
        Err("forbidden".into())
    );
    for bad in [
        json!({}),
        json!({"cpu": "high"}),
        json!({"": 1}),
        json!({"a b": 1}),
        json!({"x".repeat(65): 1}),
    ] {
        assert_eq!(
            report(&publisher(), bad.clone()),
            Err("bad_request".into()),
            "{bad}"
        );
    }
    assert_eq!(
        report(&publisher(), json!({"cpu": 12.5, "mem.used": 3})),
        Ok(json!({"version": 1}))
    );
}

#[test]
fn a_tick_broadcasts_only_what_changed() {
    mock::reset();
    report(&publisher(), json!({"cpu": 10, "mem": 500})).expect("report");
    report(&publisher(), json!({"cpu": 11})).expect("report");
    assert_eq!(
        tick(1_000),
        Some(json!({"version": 2, "ts": 1000, "metrics": {
            "cpu": {"value": 11.0, "version": 2},
            "mem": {"value": 500.0, "version": 1},
        }}))
    );
    assert_eq!(tick(2_000), None, "nothing changed");
    report(&publisher(), json!({"mem": 501})).expect("report");
    assert_eq!(
        tick(3_000),
        Some(json!({"version": 3, "ts": 3000, "metrics": {"mem": {"value": 501.0, "version": 3}}}))
    );
}

#[test]
fn a_value_written_after_a_tick_read_the_version_still_goes_out() {
    mock::reset();
    report(&publisher(), json!({"cpu": 1})).expect("report");
    tick(1_000).expect("first delta");
    // A report that took version 2 but whose value the tick did not see yet.
    mock::with(|host| {
        host.kv.insert("version".into(), b"2".to_vec());
    });
    assert_eq!(tick(2_000), None);
    mock::with(|host| {
        host.kv.insert(
            "m:cpu".into(),
            json!({"value": 2.0, "version": 2, "at": 0})
                .to_string()
                .into_bytes(),
        );
    });
    assert_eq!(tick(3_000).expect("delta")["metrics"]["cpu"]["value"], 2.0);
}

#[test]
fn the_snapshot_has_values_versions_and_bounded_histories() {
    mock::reset();
    mock::with(|host| {
        host.config.insert("history_points".into(), "3".into());
        host.now_ms = 77;
    });
    for (second, value) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
        report(&publisher(), json!({"cpu": value})).expect("report");
        tick(second * 1000).expect("delta");
    }
    report(&publisher(), json!({"cpu": 5})).expect("report");
    let state = snapshot();
    assert_eq!(state["version"], 5);
    assert_eq!(state["channel"], "dashboard");
    assert_eq!(state["metrics"]["cpu"]["value"], 5.0);
    assert_eq!(state["metrics"]["cpu"]["version"], 5);
    assert_eq!(state["metrics"]["cpu"]["at"], 77);
    assert_eq!(
        state["metrics"]["cpu"]["history"],
        json!([[2000, 2.0], [3000, 3.0], [4000, 4.0]])
    );
}

#[test]
fn ticks_of_two_nodes_add_one_point() {
    mock::reset();
    report(&publisher(), json!({"cpu": 1})).expect("report");
    tick(1_000).expect("delta");
    report(&publisher(), json!({"cpu": 2})).expect("report");
    tick(1_100).expect("delta");
    assert_eq!(
        snapshot()["metrics"]["cpu"]["history"],
        json!([[1000, 1.0]])
    );
}

#[test]
fn the_number_of_metrics_is_bounded_and_the_channel_configurable() {
    mock::reset();
    mock::with(|host| {
        host.config.insert("max_metrics".into(), "2".into());
        host.config.insert("channel".into(), "ops-board".into());
    });
    report(&publisher(), json!({"a": 1, "b": 2})).expect("two metrics");
    assert_eq!(
        report(&publisher(), json!({"c": 3})),
        Err("bad_request".into())
    );
    report(&publisher(), json!({"a": 3})).expect("a known metric");
    Dashboard::on_tick(1_000);
    mock::with(|host| assert_eq!(host.broadcasts[0].channel, "ops-board"));
    assert_eq!(snapshot()["channel"], "ops-board");
}
