//! A plugin's failures as an operator and a developer see them: one log line per failed call
//! with what is needed to find it, the panic message for the client only when the tenant asks
//! for it, per-plugin series in `/metrics` that run on across versions, and load errors that
//! say what to do.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::plugins::{plugin_tables, server_with, wasm_bytes};
use crate::support::{
    BinaryServer, Client, TestServer, api_key, config, greet_version, http_get, put_plugin, tenant,
};

/// The value of the series `line` starts with (labels included) in `metrics`, or 0.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The connection id the client's welcome named.
fn connection_of(client: &Client) -> String {
    client.welcome["payload"]["connectionId"]
        .as_str()
        .expect("a connection id")
        .to_owned()
}

async fn metrics_of(addr: std::net::SocketAddr) -> String {
    http_get(&format!("http://{addr}/metrics")).await.2
}

/// The `hostile` test plugin for tenant `name`, panic messages exposed or not.
fn hostile_tenant(name: &str, expose_panics: bool) -> String {
    let limits = format!("[tenants.plugin_limits]\nexpose_panics = {expose_panics}\n");
    tenant(name, "", &plugin_tables(&["hostile"], &limits))
}

#[tokio::test]
async fn a_panic_is_one_log_line_with_its_context_and_reaches_the_client_only_when_asked() {
    let server = BinaryServer::start_logged(&config(
        "",
        &[hostile_tenant("dev", true), hostile_tenant("prod", false)],
    ))
    .await;
    let mut dev = Client::connect_addr(server.addr, "dev", "alice").await;
    let mut prod = Client::connect_addr(server.addr, "prod", "bob").await;
    let told = dev.request(json!({"type": "hostile:panic"})).await;
    assert_eq!(told["payload"]["code"], "handler_failed", "{told}");
    let message = told["payload"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the handler panicked: ")
            && message.contains("hostile plugin panics on purpose"),
        "{told}"
    );
    let hidden = prod.request(json!({"type": "hostile:panic"})).await;
    assert_eq!(hidden["payload"]["code"], "handler_failed", "{hidden}");
    assert!(
        !hidden.to_string().contains("on purpose"),
        "the panic message reached a client of a tenant that did not ask: {hidden}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let failures = loop {
        let log = server.log();
        let failures: Vec<String> = log
            .lines()
            .filter(|line| line.contains("plugin call failed"))
            .map(str::to_owned)
            .collect();
        if failures.len() >= 2 {
            assert!(
                !log.contains("plugin panicked"),
                "the panic has a line of its own:\n{log}"
            );
            break failures;
        }
        assert!(Instant::now() < deadline, "no failure lines:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failures.len(), 2, "{failures:#?}");
    for (line, tenant, connection) in [
        (&failures[0], "dev", connection_of(&dev)),
        (&failures[1], "prod", connection_of(&prod)),
    ] {
        for field in [
            format!("tenant={tenant}"),
            "plugin=hostile".to_owned(),
            "version=".to_owned(),
            "export=\"on-message\"".to_owned(),
            "msg_type=\"hostile:panic\"".to_owned(),
            format!("connection=\"{connection}\""),
            "correlation_id=\"c".to_owned(),
            "trap=".to_owned(),
            "hostile plugin panics on purpose".to_owned(),
        ] {
            assert!(line.contains(&field), "`{field}` missing from {line}");
        }
    }
}

#[tokio::test]
async fn every_plugin_failure_is_counted_by_kind_with_the_calls_and_their_durations() {
    let server = TestServer::start(&config("", &[hostile_tenant("default", false)])).await;
    let mut client = Client::connect(&server, "default", "mallory").await;
    let cases = [
        ("hostile:ok", json!(null), None),
        ("hostile:panic", json!(null), Some("trap")),
        ("hostile:loop", json!(null), Some("timeout")),
        ("hostile:huge-reply", json!(null), Some("bad_reply")),
        // Its payload must be a string: the plugin answers `bad_request` on its own.
        ("hostile:poke", json!(7), Some("handler_error")),
    ];
    for (msg_type, payload, _) in &cases {
        let reply = client
            .request(json!({"type": msg_type, "payload": payload}))
            .await;
        assert!(
            reply["type"] == "ack" || reply["type"] == "error",
            "{reply}"
        );
    }
    let metrics = metrics_of(server.addr).await;
    let labels = r#"tenant="default",plugin="hostile""#;
    assert_eq!(
        value(
            &metrics,
            &format!("switchboard_plugin_calls_total{{{labels}}}")
        ),
        cases.len() as f64,
        "{metrics}"
    );
    for kind in ["trap", "timeout", "bad_reply", "handler_error"] {
        let series = format!("switchboard_plugin_errors_total{{{labels},kind=\"{kind}\"}}");
        assert_eq!(value(&metrics, &series), 1.0, "{series}\n{metrics}");
    }
    let overloaded = format!("switchboard_plugin_errors_total{{{labels},kind=\"overloaded\"}}");
    assert_eq!(value(&metrics, &overloaded), 0.0, "{metrics}");
    let count = format!("switchboard_plugin_call_duration_seconds_count{{{labels}}}");
    assert_eq!(value(&metrics, &count), cases.len() as f64, "{metrics}");
    let all = format!("switchboard_plugin_call_duration_seconds_bucket{{{labels},le=\"+Inf\"}}");
    assert_eq!(value(&metrics, &all), cases.len() as f64, "{metrics}");
    // The loop ran for its whole CPU budget (100 ms).
    let sum = format!("switchboard_plugin_call_duration_seconds_sum{{{labels}}}");
    assert!(value(&metrics, &sum) >= 0.09, "{metrics}");
    let instances = format!("switchboard_plugin_instances{{{labels}}}");
    assert!(value(&metrics, &instances) >= 1.0, "{metrics}");
}

#[tokio::test]
async fn a_plugins_series_run_on_across_its_versions_and_count_its_reloads() {
    let server = server_with(&["greeter-v1"], "").await;
    let mut client = Client::connect(&server, "default", "alice").await;
    for _ in 0..3 {
        assert_eq!(greet_version(&mut client).await, 1);
    }
    let key = api_key("default");
    let (status, body) = put_plugin(&server, "greeter", Some(&key), wasm_bytes("greeter-v2")).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        assert_eq!(greet_version(&mut client).await, 2);
    }
    let metrics = metrics_of(server.addr).await;
    let labels = r#"tenant="default",plugin="greeter""#;
    assert_eq!(
        value(
            &metrics,
            &format!("switchboard_plugin_calls_total{{{labels}}}")
        ),
        5.0,
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            &format!("switchboard_plugin_reloads_total{{{labels}}}")
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_core_module_upload_is_refused_with_how_to_build_a_component() {
    let server = server_with(&["greeter-v1"], "").await;
    let key = api_key("default");
    // The smallest core module: the magic number and version 1.
    let core = b"\0asm\x01\0\0\0".to_vec();
    let (status, body) = put_plugin(&server, "greeter", Some(&key), core).await;
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("wasm32-wasip2"), "{body}");
    let (status, body) = put_plugin(&server, "greeter", Some(&key), b"hello".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains("not a WebAssembly file")),
        "{body}"
    );
}

/// The lines of `server`'s log that contain `needle`, waiting up to 10 s for `count` of them.
async fn log_lines(server: &BinaryServer, needle: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        let lines: Vec<String> = log
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(Instant::now() < deadline, "no `{needle}` lines:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn plugin_log_fields_are_fields_of_their_own_in_text_and_json_logs() {
    // Text logs: `name="value"` beside the host's `tenant` and `plugin`.
    let text = BinaryServer::start_logged(&config("", &[hostile_tenant("default", false)])).await;
    let mut client = Client::connect_addr(text.addr, "default", "mallory").await;
    let reply = client.request(json!({"type": "hostile:log"})).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let line = &log_lines(&text, "hostile logs with fields", 1).await[0];
    for field in [
        "tenant=default",
        "plugin=hostile",
        "poll_id=\"7\"",
        "choice=\"b c\"",
        "field_tenant=\"evil\"",
    ] {
        assert!(line.contains(field), "`{field}` missing from {line}");
    }
    assert!(!line.contains("fields="), "{line}");
    // Past 16 fields they are folded into one, and counted.
    let folded = &log_lines(&text, "hostile logs too many fields", 1).await[0];
    assert!(folded.contains("fields=\"f0=\\\"0\\\" f1="), "{folded}");
    let metrics = metrics_of(text.addr).await;
    let series = r#"switchboard_plugin_log_fields_folded_total{tenant="default"}"#;
    assert_eq!(value(&metrics, series), 1.0, "{metrics}");

    // JSON logs: keys of the event's fields.
    let json_config = config("format = \"json\"", &[hostile_tenant("default", false)]);
    let json_server = BinaryServer::start_logged(&json_config).await;
    let mut client = Client::connect_addr(json_server.addr, "default", "mallory").await;
    client.request(json!({"type": "hostile:log"})).await;
    let line = &log_lines(&json_server, "hostile logs with fields", 1).await[0];
    let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    let fields = &event["fields"];
    assert_eq!(fields["message"], "hostile logs with fields", "{event}");
    assert_eq!(fields["tenant"], "default", "{event}");
    assert_eq!(fields["plugin"], "hostile", "{event}");
    assert_eq!(fields["poll_id"], "7", "{event}");
    assert_eq!(fields["choice"], "b c", "{event}");
    assert_eq!(fields["field_tenant"], "evil", "{event}");
}
