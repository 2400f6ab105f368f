//! HTTP endpoint tests (docs/protocol.md, "Endpoints", "Publish API", "Draining", "Health,
//! readiness and metrics"): health, readiness, metrics, and the server-side publish API with its
//! errors in the documented order.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{
    Client, TestServer, WAIT, api_key, assert_error_body, assert_retry_after, config, http_get,
    http_send, publish, publish_raw, tenant,
};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// POSTs `body` to the publish API and asserts the status and the error body.
async fn publish_error(
    server: &TestServer,
    body: &str,
    key: Option<&str>,
    status: u16,
    context: &str,
) {
    let (got, reply) = publish_raw(server, body, key).await;
    assert_eq!(got, status, "{context}: body {body:?} answered {reply}");
    assert_error_body(&reply, context);
}

/// `publish_error` for each `(body, key, status, context)`.
async fn publish_errors(server: &TestServer, cases: &[(&str, Option<&str>, u16, &str)]) {
    for (body, key, status, context) in cases {
        publish_error(server, body, *key, *status, context).await;
    }
}

/// The value of one exact series (`name{labels}` or `name`) in Prometheus text.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

async fn scrape(server: &TestServer) -> String {
    let (status, _, text) = http_get(&server.http_url("/metrics")).await;
    assert_eq!(status, 200, "GET /metrics: {text}");
    text
}

/// Scrapes until `series` satisfies `check`; returns its value.
async fn metric_eventually(
    server: &TestServer,
    series: &str,
    what: &str,
    check: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(server).await;
        let value = metric_value(&text, series);
        if let Some(value) = value
            && check(value)
        {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {series} to be {what}; last value {value:?} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads one series now; panics if it is missing.
async fn metric_now(server: &TestServer, series: &str) -> f64 {
    let text = scrape(server).await;
    metric_value(&text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// A server with two tenants, `default` and `other`.
async fn two_tenants() -> TestServer {
    TestServer::start(&config(
        "",
        &[tenant("default", "", ""), tenant("other", "", "")],
    ))
    .await
}

/// A valid publish body.
fn body(tenant: &str, channel: &str, msg_type: &str) -> String {
    json!({"tenant": tenant, "channel": channel, "type": msg_type, "payload": {"n": 1}}).to_string()
}

// ---------------------------------------------------------------------------------------------
// health, readiness
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_is_200() {
    let server = TestServer::default().await;
    let (status, _, body) = http_get(&server.http_url("/healthz")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn healthz_stays_200_while_draining() {
    let server = TestServer::default().await;
    timeout(WAIT, server.node().drain()).await.expect("drained");
    let (status, _, body) = http_get(&server.http_url("/healthz")).await;
    assert_eq!(status, 200, "healthz while draining: {body}");
}

#[tokio::test]
async fn readyz_is_200_normally_and_503_with_retry_after_while_draining() {
    let server = TestServer::default().await;
    let (status, _, body) = http_get(&server.http_url("/readyz")).await;
    assert_eq!(status, 200, "readyz before the drain: {body}");
    let (_, headers, _) = http_get(&server.http_url("/readyz")).await;
    assert!(
        headers.get(http::header::RETRY_AFTER).is_none(),
        "no Retry-After on a 200"
    );

    let left = timeout(WAIT, server.node().drain())
        .await
        .expect("drain with no clients finishes at once");
    assert_eq!(left, 0);
    let (status, headers, body) = http_get(&server.http_url("/readyz")).await;
    assert_eq!(status, 503, "readyz while draining: {body}");
    assert_retry_after(&headers, "readyz while draining");
    assert_error_body(
        &serde_json::from_str(&body).expect("JSON body"),
        "readyz while draining",
    );
}

// ---------------------------------------------------------------------------------------------
// metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_is_prometheus_text() {
    let server = TestServer::default().await;
    let (status, headers, text) = http_get(&server.http_url("/metrics")).await;
    assert_eq!(status, 200);
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("text/plain"),
        "content type `{content_type}`"
    );
    assert!(
        text.contains("# TYPE switchboard_connections gauge"),
        "no TYPE line for the connections gauge in:\n{text}"
    );
    assert_eq!(
        metric_value(&text, "switchboard_connections{tenant=\"default\"}"),
        Some(0.0),
        "{text}"
    );
    // Every non-comment line is `series value`.
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        let (_, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value on line `{line}`"));
        assert!(value.parse::<f64>().is_ok(), "bad value on line `{line}`");
    }
}

#[tokio::test]
async fn metrics_connections_gauge_follows_a_client() {
    let server = two_tenants().await;
    let client = Client::connect(&server, "default", "alice").await;
    let text = scrape(&server).await;
    assert!(
        text.lines()
            .any(|line| line == "switchboard_connections{tenant=\"default\"} 1"),
        "one connection expected in:\n{text}"
    );
    assert_eq!(
        metric_value(&text, "switchboard_connections{tenant=\"other\"}"),
        Some(0.0),
        "the other tenant has none:\n{text}"
    );
    client.close().await;
    metric_eventually(
        &server,
        "switchboard_connections{tenant=\"default\"}",
        "0",
        |value| value == 0.0,
    )
    .await;
    let text = scrape(&server).await;
    assert!(
        text.lines()
            .any(|line| line == "switchboard_connections{tenant=\"default\"} 0"),
        "zero connections expected in:\n{text}"
    );
}

#[tokio::test]
async fn metrics_message_counters_rise_with_traffic() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let in_series = "switchboard_messages_in_total{tenant=\"default\"}";
    let out_series = "switchboard_messages_out_total{tenant=\"default\"}";
    // The welcome has been written.
    let out_before =
        metric_eventually(&server, out_series, "at least 1", |value| value >= 1.0).await;
    let in_before = metric_now(&server, in_series).await;
    assert_eq!(in_before, 0.0, "nothing sent yet");

    for _ in 0..3 {
        let pong = client.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong", "{pong}");
    }
    let in_after = metric_eventually(&server, in_series, "3", |value| value >= 3.0).await;
    assert_eq!(in_after, in_before + 3.0, "three data messages received");
    let out_after = metric_eventually(&server, out_series, "raised by 3", |value| {
        value >= out_before + 3.0
    })
    .await;
    assert_eq!(out_after, out_before + 3.0, "three pongs written");
    client.close().await;
}

#[tokio::test]
async fn metrics_closes_total_counts_a_normal_close_as_1000() {
    let server = TestServer::default().await;
    let series = "switchboard_closes_total{tenant=\"default\",code=\"1000\"}";
    assert_eq!(
        metric_value(&scrape(&server).await, series),
        None,
        "no close yet"
    );
    let mut client = Client::connect(&server, "default", "alice").await;
    // Closed by hand to also check that the server echoes the code.
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    timeout(WAIT, client.ws.close(Some(frame)))
        .await
        .expect("close sent in time")
        .expect("close sent");
    // The server answers the close handshake and ends the stream.
    let answered = timeout(WAIT, async {
        loop {
            match client.ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|frame| u16::from(frame.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected the server's close reply, got {other:?}"),
            }
        }
    })
    .await
    .expect("close answered in time");
    assert_eq!(answered, Some(1000), "the server echoes 1000");
    let count = metric_eventually(&server, series, "1", |value| value >= 1.0).await;
    assert_eq!(count, 1.0);
}

#[tokio::test]
async fn metrics_rooms_gauge_reflects_joined_rooms() {
    let server = TestServer::default().await;
    assert_eq!(metric_now(&server, "switchboard_rooms").await, 0.0);
    let mut alice = Client::connect(&server, "default", "alice").await;
    let mut bob = Client::connect(&server, "default", "bob").await;
    alice.join("lobby").await;
    assert_eq!(
        metric_eventually(&server, "switchboard_rooms", "1", |value| value == 1.0).await,
        1.0
    );
    bob.join("lobby").await;
    assert_eq!(
        metric_now(&server, "switchboard_rooms").await,
        1.0,
        "a second member does not make a second room"
    );
    bob.join("news").await;
    assert_eq!(
        metric_eventually(&server, "switchboard_rooms", "2", |value| value == 2.0).await,
        2.0
    );
    let leave = bob
        .request(json!({"type": "room:leave", "channel": "news"}))
        .await;
    assert_eq!(leave["type"], "ack", "{leave}");
    metric_eventually(&server, "switchboard_rooms", "1", |value| value == 1.0).await;
    alice.close().await;
    bob.close().await;
    metric_eventually(&server, "switchboard_rooms", "0", |value| value == 0.0).await;
}

// ---------------------------------------------------------------------------------------------
// POST /api/publish: errors in order
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_body_not_json_is_400() {
    let server = TestServer::default().await;
    let key = api_key("default");
    for raw in [
        "",
        "not json",
        "{\"tenant\": \"default\"",
        "{tenant: default}",
    ] {
        publish_error(&server, raw, Some(&key), 400, &format!("body {raw:?}")).await;
    }
}

#[tokio::test]
async fn publish_body_not_an_object_is_400() {
    let server = TestServer::default().await;
    let key = api_key("default");
    for raw in [
        "[]",
        "[{\"tenant\":\"default\"}]",
        "\"default\"",
        "42",
        "null",
        "true",
    ] {
        publish_error(&server, raw, Some(&key), 400, &format!("body {raw}")).await;
    }
}

#[tokio::test]
async fn publish_tenant_missing_or_not_a_string_is_400() {
    let server = TestServer::default().await;
    let key = api_key("default");
    for raw in [
        json!({"channel": "lobby", "type": "news"}),
        json!({"tenant": null, "channel": "lobby", "type": "news"}),
        json!({"tenant": 1, "channel": "lobby", "type": "news"}),
        json!({"tenant": ["default"], "channel": "lobby", "type": "news"}),
        json!({"tenant": {"name": "default"}, "channel": "lobby", "type": "news"}),
    ] {
        publish_error(
            &server,
            &raw.to_string(),
            Some(&key),
            400,
            &format!("body {raw}"),
        )
        .await;
    }
}

#[tokio::test]
async fn publish_400_for_the_body_comes_before_404_and_401() {
    let server = TestServer::default().await;
    // No key at all: a bad body is still 400, not 401.
    publish_errors(
        &server,
        &[
            ("not json", None, 400, "not JSON, no key"),
            ("[1]", None, 400, "array, no key"),
            (
                &json!({"channel": "lobby", "type": "news"}).to_string(),
                None,
                400,
                "no tenant, no key",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn publish_unknown_tenant_is_404_even_without_a_key() {
    let server = TestServer::default().await;
    let raw = body("nope", "lobby", "news");
    publish_errors(
        &server,
        &[
            (&raw, None, 404, "unknown tenant, no key"),
            (&raw, Some("wrong"), 404, "unknown tenant, wrong key"),
            (
                &raw,
                Some(&api_key("default")),
                404,
                "unknown tenant, another tenant's key",
            ),
        ],
    )
    .await;
    // 404 comes before the field checks too.
    publish_error(
        &server,
        &json!({"tenant": "nope"}).to_string(),
        None,
        404,
        "unknown tenant, no fields",
    )
    .await;
}

#[tokio::test]
async fn publish_missing_key_is_401() {
    let server = TestServer::default().await;
    publish_error(
        &server,
        &body("default", "lobby", "news"),
        None,
        401,
        "no key",
    )
    .await;
}

#[tokio::test]
async fn publish_wrong_key_is_401() {
    let server = TestServer::default().await;
    let raw = body("default", "lobby", "news");
    for key in [
        "wrong",
        "default-api-ke",
        "default-api-key-",
        "DEFAULT-API-KEY",
    ] {
        publish_error(&server, &raw, Some(key), 401, &format!("key {key:?}")).await;
    }
}

#[tokio::test]
async fn publish_another_tenants_key_is_401() {
    let server = two_tenants().await;
    publish_errors(
        &server,
        &[
            (
                &body("default", "lobby", "news"),
                Some(&api_key("other")),
                401,
                "other's key for default",
            ),
            (
                &body("other", "lobby", "news"),
                Some(&api_key("default")),
                401,
                "default's key for other",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn publish_key_with_another_scheme_is_401() {
    let server = TestServer::default().await;
    let url = server.http_url("/api/publish");
    let (status, _, reply) = http_send(|client| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", format!("Basic {}", api_key("default")))
            .body(body("default", "lobby", "news"))
    })
    .await;
    assert_eq!(status, 401, "Basic scheme: {reply}");
    assert_error_body(&reply, "Basic scheme");
}

#[tokio::test]
async fn publish_tenant_without_api_key_is_401() {
    let keyless = "[[tenants]]\nname = \"keyless\"\n[tenants.jwt]\nsecret = \"s\"\n".to_owned();
    let server = TestServer::start(&config("", &[tenant("default", "", ""), keyless])).await;
    publish_errors(
        &server,
        &[
            (
                &body("keyless", "lobby", "news"),
                None,
                401,
                "keyless, no key",
            ),
            (
                &body("keyless", "lobby", "news"),
                Some(&api_key("keyless")),
                401,
                "keyless, some key",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn publish_401_comes_before_field_errors() {
    let server = TestServer::default().await;
    publish_errors(
        &server,
        &[
            (
                &json!({"tenant": "default"}).to_string(),
                None,
                401,
                "no key, no fields",
            ),
            (
                &json!({"tenant": "default", "channel": "", "type": "news"}).to_string(),
                Some("wrong"),
                401,
                "wrong key, empty channel",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn publish_channel_missing_empty_or_too_long_is_400() {
    let server = TestServer::default().await;
    let key = api_key("default");
    let too_long = "c".repeat(257);
    let too_many_bytes = "é".repeat(129); // 129 chars, 258 bytes
    for raw in [
        json!({"tenant": "default", "type": "news"}),
        json!({"tenant": "default", "channel": null, "type": "news"}),
        json!({"tenant": "default", "channel": "", "type": "news"}),
        json!({"tenant": "default", "channel": too_long, "type": "news"}),
        json!({"tenant": "default", "channel": too_many_bytes, "type": "news"}),
        json!({"tenant": "default", "channel": 7, "type": "news"}),
    ] {
        let shown: String = raw.to_string().chars().take(120).collect();
        publish_error(
            &server,
            &raw.to_string(),
            Some(&key),
            400,
            &format!("body {shown}"),
        )
        .await;
    }
}

#[tokio::test]
async fn publish_type_missing_empty_or_too_long_is_400() {
    let server = TestServer::default().await;
    let key = api_key("default");
    let too_long = "t".repeat(129);
    let too_many_bytes = "é".repeat(65); // 65 chars, 130 bytes
    for raw in [
        json!({"tenant": "default", "channel": "lobby"}),
        json!({"tenant": "default", "channel": "lobby", "type": null}),
        json!({"tenant": "default", "channel": "lobby", "type": ""}),
        json!({"tenant": "default", "channel": "lobby", "type": too_long}),
        json!({"tenant": "default", "channel": "lobby", "type": too_many_bytes}),
        json!({"tenant": "default", "channel": "lobby", "type": 3}),
    ] {
        let shown: String = raw.to_string().chars().take(120).collect();
        publish_error(
            &server,
            &raw.to_string(),
            Some(&key),
            400,
            &format!("body {shown}"),
        )
        .await;
    }
}

#[tokio::test]
async fn publish_channel_and_type_at_their_limits_are_accepted() {
    let server = TestServer::default().await;
    let mut member = Client::connect(&server, "default", "alice").await;
    let channel = "c".repeat(256);
    let msg_type = "t".repeat(128);
    member.join(&channel).await;
    let raw = json!({"tenant": "default", "channel": channel, "type": msg_type});
    let (status, reply) = publish_raw(&server, &raw.to_string(), Some(&api_key("default"))).await;
    assert_eq!(status, 200, "{reply}");
    let seq = reply["seq"].as_u64().expect("seq");
    let delivered = member.recv().await;
    assert_eq!(
        delivered,
        json!({"type": msg_type, "channel": channel, "payload": null, "seq": seq})
    );
    // Multi-byte at exactly 256 bytes.
    let wide = "é".repeat(128);
    let raw = json!({"tenant": "default", "channel": wide, "type": "news"});
    let (status, reply) = publish_raw(&server, &raw.to_string(), Some(&api_key("default"))).await;
    assert_eq!(status, 200, "256-byte multi-byte channel: {reply}");
    member.close().await;
}

// ---------------------------------------------------------------------------------------------
// POST /api/publish: delivery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_returns_seq_and_delivers_exactly_the_message_to_subscribers() {
    let server = TestServer::default().await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    let mut bob = Client::connect(&server, "default", "bob").await;
    let mut carol = Client::connect(&server, "default", "carol").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    assert_eq!(alice.recv().await["type"], "presence:join");
    carol.join("elsewhere").await;

    let raw = json!({
        "tenant": "default", "channel": "lobby", "type": "news",
        "payload": {"text": "hello", "list": [1, 2.5, null, true], "nested": {"k": "v"}}
    });
    let (status, reply) = publish_raw(&server, &raw.to_string(), Some(&api_key("default"))).await;
    assert_eq!(status, 200, "{reply}");
    let object = reply.as_object().expect("reply is an object");
    assert_eq!(object.len(), 1, "reply is exactly {{\"seq\": N}}: {reply}");
    let seq = reply["seq"]
        .as_u64()
        .expect("seq is a non-negative integer");
    assert_eq!(seq, 1, "seq starts at 1 on a new channel");

    let expected = json!({
        "type": "news", "channel": "lobby",
        "payload": {"text": "hello", "list": [1, 2.5, null, true], "nested": {"k": "v"}},
        "seq": seq
    });
    assert_eq!(alice.recv().await, expected);
    assert_eq!(bob.recv().await, expected);
    carol.expect_silence(Duration::from_millis(300)).await;
    alice.close().await;
    bob.close().await;
    carol.close().await;
}

#[tokio::test]
async fn publish_does_not_reach_a_client_in_no_room() {
    let server = TestServer::default().await;
    let mut member = Client::connect(&server, "default", "alice").await;
    let mut outsider = Client::connect(&server, "default", "bob").await;
    member.join("lobby").await;
    let seq = publish(&server, "default", "lobby", json!("x")).await;
    assert_eq!(
        member.recv().await,
        json!({"type": "news", "channel": "lobby", "payload": "x", "seq": seq})
    );
    outsider.expect_silence(Duration::from_millis(300)).await;
    member.close().await;
    outsider.close().await;
}

#[tokio::test]
async fn publish_to_a_channel_with_no_subscribers_is_200() {
    let server = TestServer::default().await;
    let seq = publish(&server, "default", "empty-room", json!({"a": 1})).await;
    assert!(seq >= 1, "seq {seq}");
}

#[tokio::test]
async fn consecutive_publishes_have_strictly_increasing_seq() {
    let server = TestServer::default().await;
    let mut member = Client::connect(&server, "default", "alice").await;
    member.join("lobby").await;
    let mut seqs = Vec::new();
    for n in 0..5 {
        seqs.push(publish(&server, "default", "lobby", json!({"n": n})).await);
    }
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "seqs not strictly increasing: {seqs:?}"
    );
    for (n, seq) in seqs.iter().enumerate() {
        let message = member.recv().await;
        assert_eq!(
            message,
            json!({"type": "news", "channel": "lobby", "payload": {"n": n}, "seq": seq}),
            "message {n} in order"
        );
    }
    member.expect_silence(Duration::from_millis(200)).await;
    member.close().await;
}

#[tokio::test]
async fn publish_payload_omitted_or_null_is_delivered_as_null() {
    let server = TestServer::default().await;
    let mut member = Client::connect(&server, "default", "alice").await;
    member.join("lobby").await;
    for raw in [
        json!({"tenant": "default", "channel": "lobby", "type": "omitted"}),
        json!({"tenant": "default", "channel": "lobby", "type": "null", "payload": null}),
    ] {
        let (status, reply) =
            publish_raw(&server, &raw.to_string(), Some(&api_key("default"))).await;
        assert_eq!(status, 200, "{raw}: {reply}");
        let seq = reply["seq"].as_u64().expect("seq");
        let message = member.recv().await;
        let object = message.as_object().expect("an object");
        assert!(
            object.contains_key("payload"),
            "payload key present: {message}"
        );
        assert_eq!(
            message,
            json!({"type": raw["type"], "channel": "lobby", "payload": null, "seq": seq})
        );
    }
    // Falsy but non-null payloads are kept as they are.
    for payload in [json!(0), json!(false), json!(""), json!([]), json!({})] {
        let seq = publish(&server, "default", "lobby", payload.clone()).await;
        assert_eq!(
            member.recv().await,
            json!({"type": "news", "channel": "lobby", "payload": payload, "seq": seq})
        );
    }
    member.close().await;
}

#[tokio::test]
async fn publish_is_isolated_between_tenants() {
    let server = two_tenants().await;
    let mut in_default = Client::connect(&server, "default", "alice").await;
    let mut in_other = Client::connect(&server, "other", "alice").await;
    in_default.join("lobby").await;
    in_other.join("lobby").await;

    let seq = publish(&server, "default", "lobby", json!({"for": "default"})).await;
    assert_eq!(
        in_default.recv().await,
        json!({"type": "news", "channel": "lobby", "payload": {"for": "default"}, "seq": seq})
    );
    in_other.expect_silence(Duration::from_millis(300)).await;

    let seq = publish(&server, "other", "lobby", json!({"for": "other"})).await;
    assert_eq!(
        in_other.recv().await,
        json!({"type": "news", "channel": "lobby", "payload": {"for": "other"}, "seq": seq})
    );
    in_default.expect_silence(Duration::from_millis(300)).await;
    in_default.close().await;
    in_other.close().await;
}

#[tokio::test]
async fn publish_with_get_is_refused_with_json_body() {
    let server = TestServer::default().await;
    let (status, _, body) = http_get(&server.http_url("/api/publish")).await;
    assert!(
        (400..500).contains(&status),
        "GET /api/publish answered {status}: {body}"
    );
    assert_error_body(
        &serde_json::from_str(&body).expect("JSON body"),
        "GET /api/publish",
    );
}

#[tokio::test]
async fn publish_counts_in_metrics() {
    let server = TestServer::default().await;
    let series = "switchboard_publishes_total{tenant=\"default\"}";
    assert_eq!(metric_now(&server, series).await, 0.0);
    publish(&server, "default", "lobby", json!(1)).await;
    publish(&server, "default", "lobby", json!(2)).await;
    publish_error(
        &server,
        &body("default", "lobby", "news"),
        None,
        401,
        "no key",
    )
    .await;
    assert_eq!(metric_now(&server, series).await, 2.0);
}

#[tokio::test]
async fn publish_forwards_the_payload_byte_for_byte() {
    let server = TestServer::default().await;
    let mut member = Client::connect(&server, "default", "alice").await;
    member.join("lobby").await;
    let payload = r#"{"z":1,"a":123456789012345678901234567890,"m":[1.50,"\u00e9"]}"#;
    let body =
        format!(r#"{{"tenant":"default","channel":"lobby","type":"raw","payload":{payload}}}"#);
    let (status, reply) = publish_raw(&server, &body, Some(&api_key("default"))).await;
    assert_eq!(status, 200, "{reply}");
    let frame = timeout(Duration::from_secs(5), member.ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("valid");
    let Message::Text(text) = frame else {
        panic!("expected text, got {frame:?}");
    };
    assert_eq!(
        text.as_str(),
        format!(
            r#"{{"type":"raw","channel":"lobby","payload":{payload},"seq":{}}}"#,
            reply["seq"]
        )
    );
}
