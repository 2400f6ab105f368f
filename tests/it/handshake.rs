//! Handshake tests (docs/protocol.md, "Handshake"): what needs a real socket. Each refusal
//! comes before the 101 with its status and JSON body, each token source and subprotocol works
//! end to end, the checks run in their order, and refusals are counted. The matrices behind
//! them are unit tests where they are decided: token verification and the origin policy in
//! `runtime/src/auth/tests.rs`, token discovery, subprotocol parsing and the key check in
//! `runtime/src/server/upgrade/tests.rs`, each refusal's answer in
//! `runtime/src/server/refusal/tests.rs`.

use std::net::SocketAddr;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{
    Client, TestServer, WAIT, accepted, assert_error_body, claims, config, connect_when_free,
    http_get, http_send, refused, refused_each, sign, sign_hs, tenant, token, upgrade_request,
    with_bearer, with_origin,
};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

const EVIL_ORIGIN: &str = "https://evil.example.com";

/// A server whose `default` tenant allows only `https://app.example.com`, beside `other`.
async fn origin_server() -> TestServer {
    TestServer::start(&config(
        "",
        &[
            tenant(
                "default",
                "allowed_origins = [\"https://app.example.com\"]",
                "",
            ),
            tenant("other", "", ""),
        ],
    ))
    .await
}

/// Asserts a plain GET of `url` answers `status` with a JSON error body.
async fn assert_get_refused(url: &str, status: u16, context: &str) {
    let (got, _, body) = http_get(url).await;
    assert_eq!(got, status, "{context}: {body}");
    assert_error_body(&serde_json::from_str(&body).expect("JSON body"), context);
}

/// The `Sec-WebSocket-Key` of RFC 6455's example, and its accept value.
const RAW_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RAW_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// What a raw HTTP upgrade answered, and the socket (positioned just after the header block).
struct RawResponse {
    status: u16,
    /// Header names lower-cased, in order, repeated headers kept.
    headers: Vec<(String, String)>,
    stream: TcpStream,
}

impl RawResponse {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// Writes a WebSocket upgrade request by hand (so the client does not police the subprotocol)
/// and reads the response head byte by byte.
async fn raw_upgrade(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut stream = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connected in time")
        .expect("TCP connect");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {RAW_KEY}\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    timeout(WAIT, stream.write_all(request.as_bytes()))
        .await
        .expect("written in time")
        .expect("request written");
    let mut head = Vec::new();
    timeout(WAIT, async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let read = stream.read(&mut byte).await.expect("socket readable");
            assert_eq!(
                read, 1,
                "connection closed inside the response head: {head:?}"
            );
            head.push(byte[0]);
        }
    })
    .await
    .expect("response head in time");
    let head = String::from_utf8(head).expect("response head is UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line `{status_line}`"));
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line has a colon");
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    RawResponse {
        status,
        headers,
        stream,
    }
}

/// The `switchboard_handshake_rejections_total` series: (labels, value).
fn rejection_series(metrics: &str) -> Vec<(Vec<(String, String)>, u64)> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("switchboard_handshake_rejections_total{"))
        .map(|rest| {
            let (labels, value) = rest.split_once("} ").expect("a labelled sample");
            let labels = labels
                .split(',')
                .map(|pair| {
                    let (name, quoted) = pair.split_once('=').expect("label pair");
                    (name.to_owned(), quoted.trim_matches('"').to_owned())
                })
                .collect();
            (labels, value.trim().parse().expect("an integer count"))
        })
        .collect()
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

// ---------------------------------------------------------------------------------------------
// 404, 426, 400
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_tenant_is_404() {
    let server = TestServer::default().await;
    refused_each(vec![
        (
            with_bearer(&server.ws_url("nope"), &token("alice")),
            404,
            "upgrade to /ws/nope",
        ),
        (
            with_bearer(&format!("ws://{}/ws/", server.addr), &token("alice")),
            404,
            "upgrade to /ws/ (empty tenant)",
        ),
    ])
    .await;
    // A plain GET to an unknown tenant is still 404 (not 426): 404 is checked first.
    assert_get_refused(&server.http_url("/ws/nope"), 404, "plain GET /ws/nope").await;
}

#[tokio::test]
async fn unknown_path_is_404() {
    let server = TestServer::default().await;
    for path in ["/socket", "/wss"] {
        let url = format!("ws://{}{path}", server.addr);
        refused(with_bearer(&url, &token("alice")), 404, path).await;
    }
    for path in ["/nope", "/ws-not", "/api/nothing"] {
        assert_get_refused(&server.http_url(path), 404, path).await;
    }
}

#[tokio::test]
async fn plain_http_request_to_upgrade_path_is_426_before_drain_origin_and_token() {
    let server = origin_server().await;
    for path in ["/ws", "/ws/other"] {
        assert_get_refused(&server.http_url(path), 426, path).await;
    }
    // Neither a valid token nor a bad origin turns a plain request into an upgrade.
    let url = server.http_url("/ws");
    let (status, _, body) = http_send(|client| client.get(&url).bearer_auth(token("alice"))).await;
    assert_eq!(status, 426, "GET /ws with a token: {body}");
    assert_error_body(&body, "GET /ws with a token");
    let (status, _, body) =
        http_send(|client| client.get(&url).header("origin", EVIL_ORIGIN)).await;
    assert_eq!(status, 426, "GET /ws with a bad origin: {body}");
    timeout(WAIT, server.node().drain()).await.expect("drained");
    assert_get_refused(&url, 426, "plain GET while draining").await;
}

#[tokio::test]
async fn a_key_that_is_not_the_base64_of_16_bytes_is_400_before_the_drain_and_counted() {
    let server = TestServer::default().await;
    let with_key = |key: &str| {
        let mut request = with_bearer(&server.ws_url("default"), &token("alice"));
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_KEY,
            http::HeaderValue::from_str(key).expect("header value"),
        );
        request
    };
    // Which keys are malformed: `server/upgrade/tests.rs`.
    refused(with_key("c2hvcnQ="), 400, "a 5-byte key").await;
    // A malformed key makes a request no valid upgrade: refused before the drain's 503.
    timeout(WAIT, server.node().drain()).await.expect("drained");
    refused(with_key("c2hvcnQ="), 400, "a bad key while draining").await;
    let (_, _, text) = http_get(&server.http_url("/metrics")).await;
    let bad_keys: u64 = rejection_series(&text)
        .iter()
        .filter(|(labels, _)| {
            label(labels, "reason") == Some("bad_key") && label(labels, "status") == Some("400")
        })
        .map(|(_, count)| count)
        .sum();
    assert_eq!(bad_keys, 2, "bad keys counted under one label:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// 503
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn draining_node_refuses_upgrades_with_503() {
    // `/readyz` while draining: `http::readyz_is_200_normally_and_503_with_retry_after_while_draining`.
    let server = TestServer::default().await;
    let left = timeout(WAIT, server.node().drain())
        .await
        .expect("drain with no clients finishes at once");
    assert_eq!(left, 0);
    refused(
        with_bearer(&server.ws_url("default"), &token("alice")),
        503,
        "upgrade while draining",
    )
    .await;
}

#[tokio::test]
async fn node_at_its_connection_limit_is_503() {
    let text = format!(
        "max_connections = 1\n{}",
        config("", &[tenant("default", "", ""), tenant("other", "", "")])
    );
    let server = TestServer::start(&text).await;
    let first = Client::connect(&server, "default", "alice").await;
    refused_each(vec![
        (
            with_bearer(&server.ws_url("default"), &token("bob")),
            503,
            "second connection, same tenant",
        ),
        (
            with_bearer(&server.ws_url("other"), &token("bob")),
            503,
            "second connection, other tenant (the limit is node-wide)",
        ),
    ])
    .await;
    // The slot is freed when the connection ends.
    first.close().await;
    let again = connect_when_free(&server, "other", "bob").await;
    assert_eq!(again.welcome["payload"]["userId"], "bob");
    again.close().await;
}

#[tokio::test]
async fn tenant_at_its_connection_limit_is_503() {
    let server = TestServer::start(&config(
        "",
        &[
            tenant("default", "", "[tenants.limits]\nmax_connections = 1"),
            tenant("other", "", ""),
        ],
    ))
    .await;
    let first = Client::connect(&server, "default", "alice").await;
    refused(
        with_bearer(&server.ws_url("default"), &token("bob")),
        503,
        "second connection to the full tenant",
    )
    .await;
    // Another tenant is not affected.
    let other = Client::connect(&server, "other", "carol").await;
    assert_eq!(other.welcome["payload"]["tenant"], "other");
    other.close().await;
    first.close().await;
    let again = connect_when_free(&server, "default", "bob").await;
    assert_eq!(again.welcome["payload"]["userId"], "bob");
    again.close().await;
}

#[tokio::test]
async fn rejected_handshakes_do_not_leak_connection_slots() {
    // Node limit 2, tenant `default` limit 1: every refusal below takes the node slot (and the
    // 503 below also the tenant check) and must give it back.
    let text = format!(
        "max_connections = 2\n{}",
        config(
            "",
            &[
                tenant(
                    "default",
                    "allowed_origins = [\"https://app.example.com\"]",
                    "[tenants.limits]\nmax_connections = 1",
                ),
                tenant("other", "", ""),
            ]
        )
    );
    let server = TestServer::start(&text).await;
    let url = server.ws_url("default");
    for _ in 0..3 {
        refused_each(vec![
            (with_bearer(&url, "garbage"), 401, "bad token"),
            (
                with_origin(with_bearer(&url, &token("x")), EVIL_ORIGIN),
                403,
                "bad origin",
            ),
        ])
        .await;
    }
    let first = Client::connect(&server, "default", "alice").await;
    for _ in 0..3 {
        refused(with_bearer(&url, &token("bob")), 503, "tenant full").await;
    }
    // One node slot is still free.
    let second = Client::connect(&server, "other", "carol").await;
    refused(
        with_bearer(&server.ws_url("other"), &token("dave")),
        503,
        "node now full",
    )
    .await;
    second.close().await;
    first.close().await;
}

// ---------------------------------------------------------------------------------------------
// 403 and 401 before the 101 (which origins and tokens: `runtime/src/auth/tests.rs`)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_origin_outside_the_allow_list_is_403_and_one_inside_connects() {
    let server = origin_server().await;
    let url = server.ws_url("default");
    refused_each(vec![
        (
            with_origin(with_bearer(&url, &token("alice")), EVIL_ORIGIN),
            403,
            "evil",
        ),
        (
            with_origin(with_bearer(&url, &token("alice")), "null"),
            403,
            "null",
        ),
    ])
    .await;
    let request = with_origin(
        with_bearer(&url, &token("alice")),
        "https://APP.Example.COM",
    );
    let (client, _) = accepted(request, "alice", "default", "allowed, other case").await;
    client.close().await;
    let (client, _) = accepted(
        with_bearer(&url, &token("bob")),
        "bob",
        "default",
        "no Origin",
    )
    .await;
    client.close().await;
}

#[tokio::test]
async fn a_missing_or_bad_token_is_401() {
    let server = TestServer::default().await;
    let url = server.ws_url("default");
    let forged = sign(
        &claims("alice", 3600, json!({})),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"some-other-secret"),
    );
    let expired = sign_hs(&claims("alice", -60, json!({})));
    refused_each(vec![
        (upgrade_request(&url, &[]), 401, "no token"),
        (with_bearer(&url, "not-a-jwt"), 401, "malformed"),
        (
            with_bearer(&url, &forged),
            401,
            "signed with another secret",
        ),
        (with_bearer(&url, &expired), 401, "expired"),
    ])
    .await;
}

#[tokio::test]
async fn a_public_key_tenant_verifies_tokens_from_its_key_file() {
    let server = TestServer::start(&config(
        "",
        &[
            "[[tenants]]\nname = \"default\"\napi_key = \"k\"\n[tenants.jwt]\n\
             public_key_file = \"keys/rsa_public.pem\"\n"
                .to_owned(),
        ],
    ))
    .await;
    let path = crate::support::fixtures().join("keys/rsa_private.pem");
    let pem = std::fs::read(&path).expect("RSA private key fixture");
    let key = EncodingKey::from_rsa_pem(&pem).expect("RSA private key");
    let good = sign(&claims("alice", 3600, json!({})), Algorithm::RS256, &key);
    let url = server.ws_url("default");
    let (client, _) = accepted(with_bearer(&url, &good), "alice", "default", "RS256").await;
    client.close().await;
    refused(
        with_bearer(&url, &token("alice")),
        401,
        "HS256 on an RSA tenant",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Token sources and subprotocols (which source wins: `runtime/src/server/upgrade/tests.rs`)
// ---------------------------------------------------------------------------------------------

/// The `Sec-WebSocket-Protocol` values of a response.
fn selected(response: &http::Response<Option<Vec<u8>>>) -> Vec<&str> {
    response
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .map(|value| value.to_str().expect("ASCII"))
        .collect()
}

#[tokio::test]
async fn token_in_authorization_header_is_accepted_and_no_subprotocol_selected() {
    let server = TestServer::default().await;
    let request = with_bearer(&server.ws_url("default"), &token("alice"));
    let (client, response) = accepted(request, "alice", "default", "bearer header").await;
    assert!(
        selected(&response).is_empty(),
        "none offered, none selected"
    );
    client.close().await;
}

#[tokio::test]
async fn token_in_query_is_accepted_on_a_named_tenant() {
    let server = TestServer::start(&config("", &[tenant("acme", "", "")])).await;
    let url = format!("{}?x=1&token={}&y=2", server.ws_url("acme"), token("bob"));
    let (client, _) = accepted(upgrade_request(&url, &[]), "bob", "acme", "?x&token&y").await;
    client.close().await;
}

#[tokio::test]
async fn token_in_subprotocol_is_accepted_and_switchboard_v1_selected() {
    let server = TestServer::default().await;
    let jwt = token("alice");
    let offer = format!("switchboard.v1, bearer.{jwt}");
    let request = upgrade_request(
        &server.ws_url("default"),
        &[("sec-websocket-protocol", &offer)],
    );
    let (client, response) = accepted(request, "alice", "default", "bearer subprotocol").await;
    assert_eq!(selected(&response), ["switchboard.v1"]);
    for (name, value) in response.headers() {
        let value = value.to_str().unwrap_or("");
        assert!(
            !value.contains(&jwt) && !value.contains("bearer."),
            "the token leaked into the response header {name}: {value}"
        );
    }
    client.close().await;
}

#[tokio::test]
async fn switchboard_v1_is_selected_when_offered_with_a_header_token() {
    let server = TestServer::default().await;
    let bearer = format!("Bearer {}", token("alice"));
    let request = upgrade_request(
        &server.ws_url("default"),
        &[
            ("authorization", &bearer),
            ("sec-websocket-protocol", "switchboard.v1"),
        ],
    );
    let (client, response) = accepted(request, "alice", "default", "switchboard.v1 offered").await;
    assert_eq!(selected(&response), ["switchboard.v1"]);
    client.close().await;
}

#[tokio::test]
async fn only_bearer_subprotocol_connects_with_no_subprotocol_selected() {
    let server = TestServer::default().await;
    let entry = format!("bearer.{}", token("alice"));
    let raw = raw_upgrade(
        server.addr,
        "/ws",
        &[("Sec-WebSocket-Protocol", entry.as_str())],
    )
    .await;
    assert_eq!(raw.status, 101, "headers: {:?}", raw.headers);
    assert_eq!(raw.header_values("sec-websocket-accept"), [RAW_ACCEPT]);
    assert!(
        raw.header_values("sec-websocket-protocol").is_empty(),
        "no subprotocol may be selected (and the token never echoed): {:?}",
        raw.headers
    );
    // The socket is a working WebSocket: the welcome names the token's user.
    let ws =
        WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(raw.stream), Role::Client, None)
            .await;
    let client = Client::from_socket(ws).await;
    assert_eq!(client.welcome["payload"]["userId"], "alice");
    client.close().await;
}

// ---------------------------------------------------------------------------------------------
// Order of checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn order_unknown_tenant_before_everything() {
    let server = origin_server().await;
    let nope = server.ws_url("nope");
    refused_each(vec![
        (upgrade_request(&nope, &[]), 404, "no token"),
        (
            upgrade_request(&nope, &[("origin", EVIL_ORIGIN)]),
            404,
            "bad origin",
        ),
    ])
    .await;
    timeout(WAIT, server.node().drain()).await.expect("drained");
    refused(upgrade_request(&nope, &[]), 404, "while draining").await;
}

#[tokio::test]
async fn order_bad_origin_before_token() {
    let server = origin_server().await;
    let url = server.ws_url("default");
    refused_each(vec![
        (
            upgrade_request(&url, &[("origin", EVIL_ORIGIN)]),
            403,
            "no token",
        ),
        (
            with_origin(with_bearer(&url, "garbage"), EVIL_ORIGIN),
            403,
            "bad token",
        ),
    ])
    .await;
}

#[tokio::test]
async fn order_token_before_tenant_limit() {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "",
            "[tenants.limits]\nmax_connections = 1",
        )],
    ))
    .await;
    let first = Client::connect(&server, "default", "alice").await;
    let url = server.ws_url("default");
    refused_each(vec![
        (with_bearer(&url, "garbage"), 401, "tenant full, bad token"),
        (upgrade_request(&url, &[]), 401, "tenant full, no token"),
        (
            with_bearer(&url, &token("bob")),
            503,
            "tenant full, good token",
        ),
    ])
    .await;
    first.close().await;
}

#[tokio::test]
async fn order_draining_before_origin_and_token() {
    let server = origin_server().await;
    timeout(WAIT, server.node().drain()).await.expect("drained");
    let url = server.ws_url("default");
    refused_each(vec![
        (with_bearer(&url, "garbage"), 503, "bad token"),
        (upgrade_request(&url, &[]), 503, "no token"),
        (
            upgrade_request(&url, &[("origin", EVIL_ORIGIN)]),
            503,
            "bad origin",
        ),
    ])
    .await;
}

#[tokio::test]
async fn order_node_limit_before_origin_and_token() {
    let text = format!(
        "max_connections = 1\n{}",
        config(
            "",
            &[tenant(
                "default",
                "allowed_origins = [\"https://app.example.com\"]",
                ""
            )]
        )
    );
    let server = TestServer::start(&text).await;
    let first = Client::connect(&server, "default", "alice").await;
    let url = server.ws_url("default");
    refused_each(vec![
        (with_bearer(&url, "garbage"), 503, "bad token"),
        (
            upgrade_request(&url, &[("origin", EVIL_ORIGIN)]),
            503,
            "bad origin",
        ),
    ])
    .await;
    first.close().await;
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rejections_are_counted_in_metrics_by_reason_and_status() {
    let server = origin_server().await;
    // Two different 401 reasons, one 403, one 404.
    refused(
        upgrade_request(&server.ws_url("default"), &[]),
        401,
        "no token",
    )
    .await;
    let expired = sign_hs(&claims("alice", -3600, json!({})));
    refused(
        with_bearer(&server.ws_url("default"), &expired),
        401,
        "expired",
    )
    .await;
    refused(
        with_bearer(&server.ws_url("default"), &expired),
        401,
        "expired again",
    )
    .await;
    refused(
        with_origin(
            with_bearer(&server.ws_url("default"), &token("alice")),
            "https://evil.example.com",
        ),
        403,
        "bad origin",
    )
    .await;
    refused(
        with_bearer(&server.ws_url("nope"), &token("alice")),
        404,
        "unknown tenant",
    )
    .await;

    // The format itself: `http::metrics_is_prometheus_text`.
    let (status, _, text) = http_get(&server.http_url("/metrics")).await;
    assert_eq!(status, 200);
    let series = rejection_series(&text);
    assert!(!series.is_empty(), "no rejection series in:\n{text}");
    for (labels, _) in &series {
        let reason =
            label(labels, "reason").unwrap_or_else(|| panic!("no reason label: {labels:?}"));
        assert!(!reason.is_empty(), "empty reason label: {labels:?}");
        assert!(
            label(labels, "status").is_some(),
            "no status label: {labels:?}"
        );
    }
    let total = |status: &str| -> u64 {
        series
            .iter()
            .filter(|(labels, _)| label(labels, "status") == Some(status))
            .map(|(_, count)| count)
            .sum()
    };
    assert_eq!(total("401"), 3, "401 rejections in:\n{text}");
    assert_eq!(total("403"), 1, "403 rejections in:\n{text}");
    assert_eq!(total("404"), 1, "404 rejections in:\n{text}");
    let reasons_401: std::collections::BTreeSet<&str> = series
        .iter()
        .filter(|(labels, _)| label(labels, "status") == Some("401"))
        .filter_map(|(labels, _)| label(labels, "reason"))
        .collect();
    assert_eq!(
        reasons_401.len(),
        2,
        "a missing and an expired token have different reasons: {reasons_401:?}"
    );
    // The two expired-token rejections share one series with count 2.
    assert!(
        series
            .iter()
            .any(|(labels, count)| label(labels, "status") == Some("401")
                && label(labels, "tenant") == Some("default")
                && *count == 2),
        "expired rejections counted together:\n{text}"
    );
    // Accepted handshakes are not rejections.
    let client = Client::connect(&server, "default", "alice").await;
    let (_, _, after) = http_get(&server.http_url("/metrics")).await;
    let after_total: u64 = rejection_series(&after)
        .iter()
        .map(|(_, count)| count)
        .sum();
    assert_eq!(
        after_total, 5,
        "an accepted upgrade changed the rejections:\n{after}"
    );
    client.close().await;
}
