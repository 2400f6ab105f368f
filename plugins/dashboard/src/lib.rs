//! `dashboard`: live metrics. A publisher (a connection whose token carries the claim
//! `role: "publisher"`) sends `dashboard:report` with `{"metrics": {"name": number, ...}}`; the
//! plugin keeps each metric's latest value in the key-value store, stamped with a version from
//! one counter. Every second `on_tick` broadcasts `dashboard:delta` to the dashboard channel
//! with only the metrics that changed since the last delta, and appends them to each metric's
//! bounded history. `dashboard:snapshot` answers the full state: values, versions, histories.
//!
//! Ordering for a viewer: join the channel, then ask for the snapshot; afterwards apply a
//! metric from a delta only when its `version` is newer than the one held (deltas that
//! arrived before the snapshot's answer included). Values are absolute, so a delta seen twice
//! (every node of a cluster ticks) changes nothing.
//!
//! Config (all optional): `channel` (default `dashboard`), `max_metrics` (32),
//! `history_points` (120).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchboard_sdk::{
    ConnInfo, HandlerError, Manifest, Message, Plugin, env, export_plugin, kv, log, realtime,
};

/// The plugin.
pub struct Dashboard;

/// How often deltas go out, in milliseconds.
pub const TICK_MS: u32 = 1000;
const DEFAULT_CHANNEL: &str = "dashboard";
const DEFAULT_MAX_METRICS: usize = 32;
const DEFAULT_HISTORY_POINTS: usize = 120;
const MAX_NAME_BYTES: usize = 64;

/// A metric's latest value and the version of the report that set it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Metric {
    value: f64,
    version: i64,
    /// When the report arrived (ms since the epoch).
    at: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportPayload {
    metrics: Map<String, Value>,
}

/// A point of a chart: `[ms since the epoch, value]`.
type Point = (u64, f64);

fn config_number(key: &str, default: usize) -> usize {
    env::config(key)
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn channel() -> String {
    env::config("channel").unwrap_or_else(|| DEFAULT_CHANNEL.to_owned())
}

fn metric_key(name: &str) -> String {
    format!("m:{name}")
}

fn history_key(name: &str) -> String {
    format!("h:{name}")
}

fn names() -> Result<Vec<String>, HandlerError> {
    Ok(kv::get_json("names")?.unwrap_or_default())
}

fn check_name(name: &str) -> Result<(), HandlerError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if valid {
        Ok(())
    } else {
        Err(HandlerError::bad_request(format!(
            "metric names are 1..{MAX_NAME_BYTES} of `A-Z a-z 0-9 _ - . :`, not {name:?}"
        )))
    }
}

fn report(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    if conn.claims()["role"] != "publisher" {
        return Err(HandlerError::forbidden(
            "reporting needs a token with the claim role=publisher",
        ));
    }
    let payload: ReportPayload = msg.payload()?;
    if payload.metrics.is_empty() {
        return Err(HandlerError::bad_request("`metrics` is empty"));
    }
    let mut values = Vec::with_capacity(payload.metrics.len());
    for (name, value) in &payload.metrics {
        check_name(name)?;
        let number = value
            .as_f64()
            .ok_or_else(|| HandlerError::bad_request(format!("metric `{name}` is not a number")))?;
        values.push((name, number));
    }
    let mut known = names()?;
    let before = known.len();
    for (name, _) in &values {
        if !known.iter().any(|known| known == *name) {
            known.push((*name).clone());
        }
    }
    let max = config_number("max_metrics", DEFAULT_MAX_METRICS);
    if known.len() > max {
        return Err(HandlerError::bad_request(format!(
            "the dashboard holds at most {max} metrics"
        )));
    }
    if known.len() != before {
        kv::set_json("names", &known, None)?;
    }
    let version = kv::incr("version", 1)?;
    let at = env::now_ms();
    for (name, value) in values {
        kv::set_json(&metric_key(name), &Metric { value, version, at }, None)?;
    }
    Ok(Some(json!({"version": version}).to_string()))
}

fn snapshot() -> Result<Option<String>, HandlerError> {
    // The version first: every value read after it is at least as new.
    let version = kv::incr("version", 0)?;
    let mut metrics = Map::new();
    for name in names()? {
        let Some(metric) = kv::get_json::<Metric>(&metric_key(&name))? else {
            continue;
        };
        let history: Vec<Point> = kv::get_json(&history_key(&name))?.unwrap_or_default();
        metrics.insert(
            name,
            json!({"value": metric.value, "version": metric.version, "at": metric.at, "history": history}),
        );
    }
    Ok(Some(
        json!({"channel": channel(), "version": version, "ts": env::now_ms(), "metrics": metrics})
            .to_string(),
    ))
}

/// Appends a point unless the last one is under half a tick old (another node's tick).
fn append_point(name: &str, point: Point) -> Result<(), HandlerError> {
    let key = history_key(name);
    let mut history: Vec<Point> = kv::get_json(&key)?.unwrap_or_default();
    if let Some((last, _)) = history.last()
        && point.0 < last.saturating_add(u64::from(TICK_MS / 2))
    {
        return Ok(());
    }
    history.push(point);
    let keep = config_number("history_points", DEFAULT_HISTORY_POINTS).max(1);
    let excess = history.len().saturating_sub(keep);
    history.drain(..excess);
    kv::set_json(&key, &history, None)?;
    Ok(())
}

/// Broadcasts the metrics changed since the last delta; returns how many.
///
/// What went out is remembered per metric (`sent`: name -> version), not as one version: a
/// report takes its version before it writes its values, so a value that lands after this
/// tick read it still has a version newer than the one remembered, and the next tick sends it.
fn publish_delta(now_ms: u64) -> Result<usize, HandlerError> {
    let version = kv::incr("version", 0)?;
    let mut sent: BTreeMap<String, i64> = kv::get_json("sent")?.unwrap_or_default();
    let mut changed = Map::new();
    for name in names()? {
        let Some(metric) = kv::get_json::<Metric>(&metric_key(&name))? else {
            continue;
        };
        if sent.get(&name).is_none_or(|last| metric.version > *last) {
            append_point(&name, (now_ms, metric.value))?;
            changed.insert(
                name.clone(),
                json!({"value": metric.value, "version": metric.version}),
            );
            sent.insert(name, metric.version);
        }
    }
    let count = changed.len();
    if count > 0 {
        let delta = json!({"version": version, "ts": now_ms, "metrics": changed});
        realtime::broadcast(&channel(), "dashboard:delta", &delta.to_string(), None)?;
        kv::set_json("sent", &sent, None)?;
    }
    Ok(count)
}

impl Plugin for Dashboard {
    fn describe() -> Manifest {
        Manifest::new(
            "dashboard",
            env!("CARGO_PKG_VERSION"),
            &["dashboard:report", "dashboard:snapshot"],
        )
        .with_tick(TICK_MS)
    }

    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        match msg.msg_type.as_str() {
            "dashboard:report" => report(&conn, &msg),
            "dashboard:snapshot" => snapshot(),
            other => Err(HandlerError::new("unknown_type", other)),
        }
    }

    fn on_tick(now_ms: u64) {
        if let Err(error) = publish_delta(now_ms) {
            log::warn(&format!(
                "dashboard delta not sent: {}: {}",
                error.code, error.message
            ));
        }
    }
}

export_plugin!(Dashboard);

#[cfg(test)]
mod tests;
