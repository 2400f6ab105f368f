//! Handshake tests (docs/protocol.md, "Handshake"): rejection statuses and bodies, the order of
//! checks, origins, JWT verification, token sources, subprotocols and the rejection metrics.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{
    Client, Refusal, SECRET, TestServer, WAIT, api_key, assert_error_body, claims, config,
    fixtures, http_get, sign, sign_hs, tenant, token, try_upgrade, upgrade_request,
};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn now_secs() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// Asserts a `Retry-After` header holding a number of seconds.
fn assert_retry_after(headers: &http::HeaderMap, context: &str) {
    let value = headers
        .get(http::header::RETRY_AFTER)
        .unwrap_or_else(|| panic!("{context}: no Retry-After header in {headers:?}"))
        .to_str()
        .expect("Retry-After is ASCII");
    assert!(
        value.trim().parse::<u64>().is_ok(),
        "{context}: Retry-After `{value}` is not a number of seconds"
    );
}

/// Attempts the upgrade and asserts it is refused with `status` and the JSON error body.
async fn refused(request: http::Request<()>, status: u16, context: &str) -> Refusal {
    match try_upgrade(request).await {
        Ok((_, response)) => panic!(
            "{context}: expected {status}, but the upgrade was accepted ({})",
            response.status()
        ),
        Err(refusal) => {
            assert_eq!(refusal.status, status, "{context}: {refusal:?}");
            assert_error_body(&refusal.body, context);
            if status == 503 {
                assert_retry_after(&refusal.headers, context);
            }
            refusal
        }
    }
}

/// Attempts the upgrade, asserts the 101, reads the welcome and checks its user and tenant.
async fn accepted(
    request: http::Request<()>,
    sub: &str,
    tenant: &str,
    context: &str,
) -> (Client, http::Response<Option<Vec<u8>>>) {
    match try_upgrade(request).await {
        Ok((ws, response)) => {
            assert_eq!(response.status().as_u16(), 101, "{context}");
            let client = Client::from_socket(ws).await;
            assert_eq!(
                client.welcome["payload"]["userId"],
                json!(sub),
                "{context}: welcome {}",
                client.welcome
            );
            assert_eq!(
                client.welcome["payload"]["tenant"],
                json!(tenant),
                "{context}: welcome {}",
                client.welcome
            );
            (client, response)
        }
        Err(refusal) => panic!("{context}: expected the upgrade to be accepted, got {refusal:?}"),
    }
}

/// An upgrade request for `url` with `Authorization: Bearer <token>`.
fn with_bearer(url: &str, token: &str) -> http::Request<()> {
    let bearer = format!("Bearer {token}");
    upgrade_request(url, &[("authorization", &bearer)])
}

/// Asserts `token` is refused with 401 on `tenant`, sent as a bearer header.
async fn assert_token_refused(server: &TestServer, tenant: &str, token: &str, context: &str) {
    refused(with_bearer(&server.ws_url(tenant), token), 401, context).await;
}

/// Asserts `token` is accepted on `tenant` for user `sub`, sent as a bearer header.
async fn assert_token_accepted(
    server: &TestServer,
    tenant: &str,
    token: &str,
    sub: &str,
    context: &str,
) {
    let (client, _) = accepted(
        with_bearer(&server.ws_url(tenant), token),
        sub,
        tenant,
        context,
    )
    .await;
    client.close().await;
}

/// A tenant section whose `[tenants.jwt]` table holds exactly `jwt_lines`.
fn jwt_tenant(name: &str, jwt_lines: &str) -> String {
    format!(
        "[[tenants]]\nname = \"{name}\"\napi_key = \"{key}\"\n[tenants.jwt]\n{jwt_lines}\n",
        key = api_key(name)
    )
}

/// A `default` tenant with the test secret and extra `[tenants.jwt]` lines.
fn secret_tenant_with(jwt_extra: &str) -> String {
    jwt_tenant("default", &format!("secret = \"{SECRET}\"\n{jwt_extra}"))
}

fn key_bytes(file: &str) -> Vec<u8> {
    let path = fixtures().join("keys").join(file);
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key_bytes("rsa_private.pem")).expect("RSA private key")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&key_bytes("ec_private.pem")).expect("EC private key")
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&key_bytes("ed_private.pem")).expect("Ed25519 private key")
}

/// Signs with a `kid` in the header.
fn sign_kid(claims: &Value, algorithm: Algorithm, key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).expect("token signs")
}

/// Base64url without padding.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for index in 0..chars {
            let sextet = (n >> (18 - 6 * index)) & 0x3f;
            out.push(char::from(ALPHABET[sextet as usize]));
        }
    }
    out
}

/// A valid signed token with `sub` for `user`.
fn hs_token(algorithm: Algorithm, user: &str) -> String {
    sign(
        &claims(user, 3600, json!({})),
        algorithm,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
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

/// Connects as `sub`, retrying while the server still answers 503 (a freed slot is released
/// just after the close handshake).
async fn connect_when_free(server: &TestServer, tenant: &str, sub: &str) -> Client {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_upgrade(with_bearer(&server.ws_url(tenant), &token(sub))).await {
            Ok((ws, _)) => return Client::from_socket(ws).await,
            Err(refusal) => {
                assert_eq!(
                    refusal.status, 503,
                    "only a full node may refuse: {refusal:?}"
                );
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot was never freed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 404
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_tenant_is_404() {
    let server = TestServer::default().await;
    refused(
        with_bearer(&server.ws_url("nope"), &token("alice")),
        404,
        "upgrade to /ws/nope",
    )
    .await;
    refused(
        with_bearer(&format!("ws://{}/ws/", server.addr), &token("alice")),
        404,
        "upgrade to /ws/ (empty tenant)",
    )
    .await;
    // A plain GET to an unknown tenant is still 404 (not 426): 404 is checked first.
    let (status, _, body) = http_get(&server.http_url("/ws/nope")).await;
    assert_eq!(status, 404, "plain GET /ws/nope: {body}");
    assert_error_body(
        &serde_json::from_str(&body).expect("JSON body"),
        "plain GET /ws/nope",
    );
}

#[tokio::test]
async fn unknown_path_is_404() {
    let server = TestServer::default().await;
    refused(
        with_bearer(&format!("ws://{}/socket", server.addr), &token("alice")),
        404,
        "upgrade to /socket",
    )
    .await;
    refused(
        with_bearer(&format!("ws://{}/wss", server.addr), &token("alice")),
        404,
        "upgrade to /wss",
    )
    .await;
    for path in ["/nope", "/ws-not", "/api/nothing"] {
        let (status, _, body) = http_get(&server.http_url(path)).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        assert_error_body(&serde_json::from_str(&body).expect("JSON body"), path);
    }
}

// ---------------------------------------------------------------------------------------------
// 426
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn plain_http_request_to_upgrade_path_is_426() {
    let server = TestServer::start(&config(
        "",
        &[tenant("default", "", ""), tenant("other", "", "")],
    ))
    .await;
    for path in ["/ws", "/ws/other"] {
        let (status, _, body) = http_get(&server.http_url(path)).await;
        assert_eq!(status, 426, "GET {path}: {body}");
        assert_error_body(&serde_json::from_str(&body).expect("JSON body"), path);
    }
    // A valid token does not turn a plain request into an upgrade.
    let response = timeout(
        WAIT,
        reqwest::Client::new()
            .get(server.http_url("/ws"))
            .bearer_auth(token("alice"))
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("request succeeds");
    assert_eq!(response.status().as_u16(), 426);
    let body: Value = response.json().await.expect("JSON body");
    assert_error_body(&body, "GET /ws with a token");
}

// ---------------------------------------------------------------------------------------------
// 400: a malformed Sec-WebSocket-Key
// ---------------------------------------------------------------------------------------------

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
    for key in ["c2hvcnQ=", "not a key at all", "dGhlIHNhbXBsZSBub25jZXNz"] {
        refused(with_key(key), 400, &format!("key {key:?}")).await;
    }
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
    assert_eq!(bad_keys, 4, "bad keys counted under one label:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// 503
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn draining_node_refuses_upgrades_with_503_and_readyz_is_503() {
    let server = TestServer::default().await;
    let (status, _, _) = http_get(&server.http_url("/readyz")).await;
    assert_eq!(status, 200, "ready before the drain");
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
    let (status, headers, body) = http_get(&server.http_url("/readyz")).await;
    assert_eq!(status, 503, "readyz while draining: {body}");
    assert_retry_after(&headers, "readyz while draining");
    assert_error_body(
        &serde_json::from_str(&body).expect("JSON body"),
        "readyz while draining",
    );
}

#[tokio::test]
async fn node_at_its_connection_limit_is_503() {
    let text = format!(
        "max_connections = 1\n{}",
        config("", &[tenant("default", "", ""), tenant("other", "", "")])
    );
    let server = TestServer::start(&text).await;
    let first = Client::connect(&server, "default", "alice").await;
    refused(
        with_bearer(&server.ws_url("default"), &token("bob")),
        503,
        "second connection, same tenant",
    )
    .await;
    refused(
        with_bearer(&server.ws_url("other"), &token("bob")),
        503,
        "second connection, other tenant (the limit is node-wide)",
    )
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
    for round in 0..3 {
        refused(
            with_bearer(&server.ws_url("default"), "garbage"),
            401,
            &format!("bad token, round {round}"),
        )
        .await;
        refused(
            with_bearer(&server.ws_url("default"), &token("x"))
                .tap_origin("https://evil.example.com"),
            403,
            &format!("bad origin, round {round}"),
        )
        .await;
    }
    let first = Client::connect(&server, "default", "alice").await;
    for round in 0..3 {
        refused(
            with_bearer(&server.ws_url("default"), &token("bob")),
            503,
            &format!("tenant full, round {round}"),
        )
        .await;
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
// Origins
// ---------------------------------------------------------------------------------------------

fn origin_request(server: &TestServer, origin: Option<&str>, sub: &str) -> http::Request<()> {
    let bearer = format!("Bearer {}", token(sub));
    match origin {
        Some(origin) => upgrade_request(
            &server.ws_url("default"),
            &[("authorization", &bearer), ("origin", origin)],
        ),
        None => upgrade_request(&server.ws_url("default"), &[("authorization", &bearer)]),
    }
}

async fn origin_server() -> TestServer {
    TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "allowed_origins = [\"https://app.example.com\", \"http://localhost:3000\"]",
            "",
        )],
    ))
    .await
}

#[tokio::test]
async fn origin_not_in_allow_list_is_403() {
    let server = origin_server().await;
    for origin in [
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.com",
        "http://localhost:3001",
    ] {
        refused(
            origin_request(&server, Some(origin), "alice"),
            403,
            &format!("Origin {origin}"),
        )
        .await;
    }
}

#[tokio::test]
async fn null_origin_is_403_with_an_allow_list() {
    let server = origin_server().await;
    refused(
        origin_request(&server, Some("null"), "alice"),
        403,
        "Origin null",
    )
    .await;
}

#[tokio::test]
async fn allowed_origin_is_accepted_and_matched_case_insensitively() {
    let server = origin_server().await;
    for origin in [
        "https://app.example.com",
        "https://APP.Example.COM",
        "http://localhost:3000",
    ] {
        let (client, _) = accepted(
            origin_request(&server, Some(origin), "alice"),
            "alice",
            "default",
            &format!("Origin {origin}"),
        )
        .await;
        client.close().await;
    }
}

#[tokio::test]
async fn no_origin_header_is_accepted_with_an_allow_list() {
    let server = origin_server().await;
    let request = origin_request(&server, None, "alice");
    assert!(request.headers().get("origin").is_none());
    let (client, _) = accepted(request, "alice", "default", "no Origin").await;
    client.close().await;
}

#[tokio::test]
async fn any_origin_is_accepted_without_an_allow_list() {
    let server = TestServer::default().await;
    for origin in ["https://anything.example.org", "null", "http://127.0.0.1:9"] {
        let (client, _) = accepted(
            origin_request(&server, Some(origin), "alice"),
            "alice",
            "default",
            &format!("Origin {origin} without an allow-list"),
        )
        .await;
        client.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 401: token problems
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_token_is_401() {
    let server = TestServer::default().await;
    refused(
        upgrade_request(&server.ws_url("default"), &[]),
        401,
        "no token",
    )
    .await;
}

#[tokio::test]
async fn malformed_token_is_401() {
    let server = TestServer::default().await;
    let valid = token("alice");
    let two_parts = valid.rsplit_once('.').expect("three parts").0.to_owned();
    for bad in [
        "not-a-jwt",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.!!!.###",
        two_parts.as_str(),
    ] {
        assert_token_refused(&server, "default", bad, &format!("malformed `{bad}`")).await;
    }
}

#[tokio::test]
async fn bad_signature_is_401() {
    let server = TestServer::default().await;
    let forged = sign(
        &claims("alice", 3600, json!({})),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"some-other-secret"),
    );
    assert_token_refused(&server, "default", &forged, "signed with another secret").await;
    // The claims of one token with the signature of another.
    let alice = token("alice");
    let mallory = sign_hs(&claims("mallory", 7200, json!({})));
    let (alice_head, _) = alice.rsplit_once('.').expect("three parts");
    let (_, mallory_sig) = mallory.rsplit_once('.').expect("three parts");
    assert_token_refused(
        &server,
        "default",
        &format!("{alice_head}.{mallory_sig}"),
        "signature of another token",
    )
    .await;
}

#[tokio::test]
async fn expired_token_beyond_leeway_is_401() {
    let server = TestServer::default().await;
    let expired = sign_hs(&claims("alice", -60, json!({})));
    assert_token_refused(&server, "default", &expired, "exp 60 s ago").await;
    let just_beyond = sign_hs(&claims("alice", -10, json!({})));
    assert_token_refused(&server, "default", &just_beyond, "exp 10 s ago").await;
}

#[tokio::test]
async fn expired_token_within_leeway_is_accepted() {
    let server = TestServer::default().await;
    let recent = sign_hs(&claims("alice", -2, json!({})));
    assert_token_accepted(&server, "default", &recent, "alice", "exp 2 s ago").await;
}

#[tokio::test]
async fn nbf_in_the_future_is_401() {
    let server = TestServer::default().await;
    let early = sign_hs(&claims("alice", 3600, json!({"nbf": now_secs() + 60})));
    assert_token_refused(&server, "default", &early, "nbf in 60 s").await;
    // A past nbf is fine.
    let ok = sign_hs(&claims("alice", 3600, json!({"nbf": now_secs() - 60})));
    assert_token_accepted(&server, "default", &ok, "alice", "nbf 60 s ago").await;
}

#[tokio::test]
async fn nbf_within_leeway_is_accepted() {
    let server = TestServer::default().await;
    let soon = sign_hs(&claims("alice", 3600, json!({"nbf": now_secs() + 2})));
    assert_token_accepted(&server, "default", &soon, "alice", "nbf in 2 s").await;
    let later = sign_hs(&claims("alice", 3600, json!({"nbf": now_secs() + 15})));
    assert_token_refused(&server, "default", &later, "nbf in 15 s").await;
}

#[tokio::test]
async fn configured_leeway_replaces_the_default() {
    let wide = TestServer::start(&config("", &[secret_tenant_with("leeway = \"60s\"")])).await;
    let expired_30s = sign_hs(&claims("alice", -30, json!({})));
    assert_token_accepted(
        &wide,
        "default",
        &expired_30s,
        "alice",
        "exp 30 s ago, leeway 60 s",
    )
    .await;
    let narrow = TestServer::start(&config("", &[secret_tenant_with("leeway = 1")])).await;
    let expired_3s = sign_hs(&claims("alice", -3, json!({})));
    assert_token_refused(&narrow, "default", &expired_3s, "exp 3 s ago, leeway 1 s").await;
}

async fn iss_aud_server() -> TestServer {
    TestServer::start(&config(
        "",
        &[secret_tenant_with(
            "issuer = \"https://issuer.example\"\naudience = \"switchboard\"",
        )],
    ))
    .await
}

#[tokio::test]
async fn matching_iss_and_aud_are_accepted() {
    let server = iss_aud_server().await;
    let good = sign_hs(&claims(
        "alice",
        3600,
        json!({"iss": "https://issuer.example", "aud": "switchboard"}),
    ));
    assert_token_accepted(&server, "default", &good, "alice", "right iss and aud").await;
}

#[tokio::test]
async fn aud_array_containing_the_audience_is_accepted() {
    let server = iss_aud_server().await;
    let good = sign_hs(&claims(
        "alice",
        3600,
        json!({"iss": "https://issuer.example", "aud": ["other", "switchboard"]}),
    ));
    assert_token_accepted(&server, "default", &good, "alice", "aud array").await;
    let bad = sign_hs(&claims(
        "alice",
        3600,
        json!({"iss": "https://issuer.example", "aud": ["other", "more"]}),
    ));
    assert_token_refused(&server, "default", &bad, "aud array without ours").await;
}

#[tokio::test]
async fn wrong_iss_is_401() {
    let server = iss_aud_server().await;
    let bad = sign_hs(&claims(
        "alice",
        3600,
        json!({"iss": "https://other.example", "aud": "switchboard"}),
    ));
    assert_token_refused(&server, "default", &bad, "wrong iss").await;
}

#[tokio::test]
async fn wrong_aud_is_401() {
    let server = iss_aud_server().await;
    let bad = sign_hs(&claims(
        "alice",
        3600,
        json!({"iss": "https://issuer.example", "aud": "someone-else"}),
    ));
    assert_token_refused(&server, "default", &bad, "wrong aud").await;
}

#[tokio::test]
async fn missing_iss_is_401_when_configured() {
    let server = iss_aud_server().await;
    let bad = sign_hs(&claims("alice", 3600, json!({"aud": "switchboard"})));
    assert_token_refused(&server, "default", &bad, "no iss").await;
}

#[tokio::test]
async fn missing_aud_is_401_when_configured() {
    let server = iss_aud_server().await;
    let bad = sign_hs(&claims(
        "alice",
        3600,
        json!({"iss": "https://issuer.example"}),
    ));
    assert_token_refused(&server, "default", &bad, "no aud").await;
}

#[tokio::test]
async fn missing_sub_is_401() {
    let server = TestServer::default().await;
    let bad = sign_hs(&json!({"exp": now_secs() + 3600}));
    assert_token_refused(&server, "default", &bad, "no sub").await;
}

#[tokio::test]
async fn empty_sub_is_401() {
    let server = TestServer::default().await;
    let bad = sign_hs(&claims("", 3600, json!({})));
    assert_token_refused(&server, "default", &bad, "empty sub").await;
}

#[tokio::test]
async fn non_string_sub_is_401() {
    let server = TestServer::default().await;
    let bad = sign_hs(&json!({"sub": 42, "exp": now_secs() + 3600}));
    assert_token_refused(&server, "default", &bad, "numeric sub").await;
}

#[tokio::test]
async fn missing_exp_is_401() {
    let server = TestServer::default().await;
    let bad = sign_hs(&json!({"sub": "alice"}));
    assert_token_refused(&server, "default", &bad, "no exp").await;
}

#[tokio::test]
async fn alg_none_is_401() {
    let server = TestServer::default().await;
    let claims_json = claims("alice", 3600, json!({})).to_string();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let unsigned = format!(
            "{}.{}.",
            b64url(header.as_bytes()),
            b64url(claims_json.as_bytes())
        );
        assert_token_refused(&server, "default", &unsigned, &format!("header {header}")).await;
    }
}

#[tokio::test]
async fn alg_none_is_401_on_a_public_key_tenant() {
    let server = TestServer::start(&config(
        "",
        &[jwt_tenant(
            "default",
            "public_key_file = \"keys/rsa_public.pem\"",
        )],
    ))
    .await;
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims("alice", 3600, json!({})).to_string().as_bytes())
    );
    assert_token_refused(&server, "default", &unsigned, "alg none, RSA tenant").await;
}

#[tokio::test]
async fn algorithm_confusion_hs256_with_rsa_public_key_is_401() {
    let server = TestServer::start(&config(
        "",
        &[jwt_tenant(
            "default",
            "public_key_file = \"keys/rsa_public.pem\"",
        )],
    ))
    .await;
    let pem = key_bytes("rsa_public.pem");
    for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let confused = sign(
            &claims("mallory", 3600, json!({})),
            algorithm,
            &EncodingKey::from_secret(&pem),
        );
        assert_token_refused(
            &server,
            "default",
            &confused,
            &format!("{algorithm:?} keyed with the RSA public key PEM"),
        )
        .await;
    }
    // Control: a real RS256 token is accepted by the same tenant.
    let real = sign(
        &claims("alice", 3600, json!({})),
        Algorithm::RS256,
        &rsa_key(),
    );
    assert_token_accepted(&server, "default", &real, "alice", "RS256 control").await;
}

#[tokio::test]
async fn hs384_is_401_when_tenant_is_narrowed_to_hs256() {
    let server = TestServer::start(&config(
        "",
        &[secret_tenant_with("algorithms = [\"HS256\"]")],
    ))
    .await;
    assert_token_refused(
        &server,
        "default",
        &hs_token(Algorithm::HS384, "alice"),
        "HS384 on an HS256-only tenant",
    )
    .await;
    assert_token_refused(
        &server,
        "default",
        &hs_token(Algorithm::HS512, "alice"),
        "HS512 on an HS256-only tenant",
    )
    .await;
    assert_token_accepted(
        &server,
        "default",
        &hs_token(Algorithm::HS256, "alice"),
        "alice",
        "HS256 on an HS256-only tenant",
    )
    .await;
}

#[tokio::test]
async fn token_of_another_key_family_is_401() {
    // An RS256 token on an EC-key tenant, and an ES256 token on an RSA-key tenant.
    let server = TestServer::start(&config(
        "",
        &[
            jwt_tenant("ec", "public_key_file = \"keys/ec_public.pem\""),
            jwt_tenant("rsa", "public_key_file = \"keys/rsa_public.pem\""),
        ],
    ))
    .await;
    let rs = sign(
        &claims("alice", 3600, json!({})),
        Algorithm::RS256,
        &rsa_key(),
    );
    let es = sign(
        &claims("alice", 3600, json!({})),
        Algorithm::ES256,
        &ec_key(),
    );
    assert_token_refused(&server, "ec", &rs, "RS256 on the EC tenant").await;
    assert_token_refused(&server, "rsa", &es, "ES256 on the RSA tenant").await;
    assert_token_refused(
        &server,
        "rsa",
        &token("alice"),
        "HS256 (test secret) on the RSA tenant",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Accepted algorithms and keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn public_keys_of_each_family_are_accepted() {
    let cases = [
        ("keys/rsa_public.pem", Algorithm::RS256, rsa_key()),
        ("keys/ec_public.pem", Algorithm::ES256, ec_key()),
        ("keys/ed_public.pem", Algorithm::EdDSA, ed_key()),
    ];
    for (file, algorithm, key) in cases {
        let server = TestServer::start(&config(
            "",
            &[jwt_tenant(
                "default",
                &format!("public_key_file = \"{file}\""),
            )],
        ))
        .await;
        let good = sign(&claims("alice", 3600, json!({})), algorithm, &key);
        assert_token_accepted(
            &server,
            "default",
            &good,
            "alice",
            &format!("{algorithm:?}"),
        )
        .await;
    }
}

async fn jwks_server() -> TestServer {
    TestServer::start(&config(
        "",
        &[jwt_tenant("default", "jwks_file = \"keys/jwks.json\"")],
    ))
    .await
}

#[tokio::test]
async fn jwks_rs256_with_kid_is_accepted() {
    let server = jwks_server().await;
    let good = sign_kid(
        &claims("alice", 3600, json!({})),
        Algorithm::RS256,
        &rsa_key(),
        "rsa-1",
    );
    assert_token_accepted(&server, "default", &good, "alice", "JWKS RS256 kid rsa-1").await;
}

#[tokio::test]
async fn jwks_es256_with_kid_is_accepted() {
    let server = jwks_server().await;
    let good = sign_kid(
        &claims("bob", 3600, json!({})),
        Algorithm::ES256,
        &ec_key(),
        "ec-1",
    );
    assert_token_accepted(&server, "default", &good, "bob", "JWKS ES256 kid ec-1").await;
}

#[tokio::test]
async fn jwks_unknown_kid_is_401() {
    let server = jwks_server().await;
    let bad = sign_kid(
        &claims("alice", 3600, json!({})),
        Algorithm::RS256,
        &rsa_key(),
        "rsa-2",
    );
    assert_token_refused(&server, "default", &bad, "JWKS unknown kid").await;
}

#[tokio::test]
async fn jwks_kid_of_the_wrong_key_is_401() {
    let server = jwks_server().await;
    // Signed by the RSA key but naming the EC key, and the other way round.
    let rsa_as_ec = sign_kid(
        &claims("alice", 3600, json!({})),
        Algorithm::RS256,
        &rsa_key(),
        "ec-1",
    );
    assert_token_refused(&server, "default", &rsa_as_ec, "RS256 with kid ec-1").await;
    let ec_as_rsa = sign_kid(
        &claims("alice", 3600, json!({})),
        Algorithm::ES256,
        &ec_key(),
        "rsa-1",
    );
    assert_token_refused(&server, "default", &ec_as_rsa, "ES256 with kid rsa-1").await;
}

#[tokio::test]
async fn all_hs_sizes_are_accepted_for_a_secret_tenant_by_default() {
    let server = TestServer::default().await;
    for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_token_accepted(
            &server,
            "default",
            &hs_token(algorithm, "alice"),
            "alice",
            &format!("{algorithm:?}"),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Token sources and subprotocols
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_in_authorization_header_is_accepted() {
    let server = TestServer::default().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} {}", token("alice"));
        let request = upgrade_request(&server.ws_url("default"), &[("authorization", &value)]);
        let (client, response) =
            accepted(request, "alice", "default", &format!("scheme {scheme}")).await;
        assert!(
            response.headers().get("sec-websocket-protocol").is_none(),
            "no subprotocol offered, none selected"
        );
        client.close().await;
    }
}

#[tokio::test]
async fn token_in_query_is_accepted() {
    let server = TestServer::default().await;
    let url = format!("{}?token={}", server.ws_url("default"), token("alice"));
    let (client, _) = accepted(upgrade_request(&url, &[]), "alice", "default", "?token=").await;
    client.close().await;
    // Among other parameters, on a named tenant.
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
    let selected: Vec<&str> = response
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .map(|value| value.to_str().expect("ASCII"))
        .collect();
    assert_eq!(selected, ["switchboard.v1"]);
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
async fn token_entry_before_switchboard_v1_and_in_separate_headers() {
    let server = TestServer::default().await;
    let jwt = token("alice");
    // Order of entries does not matter.
    let offer = format!("bearer.{jwt}, switchboard.v1");
    let raw = raw_upgrade(
        server.addr,
        "/ws",
        &[("Sec-WebSocket-Protocol", offer.as_str())],
    )
    .await;
    assert_eq!(raw.status, 101, "{:?}", raw.headers);
    assert_eq!(
        raw.header_values("sec-websocket-protocol"),
        ["switchboard.v1"]
    );
    drop(raw);
    // Two separate headers.
    let bearer_entry = format!("bearer.{jwt}");
    let raw = raw_upgrade(
        server.addr,
        "/ws",
        &[
            ("Sec-WebSocket-Protocol", "switchboard.v1"),
            ("Sec-WebSocket-Protocol", bearer_entry.as_str()),
        ],
    )
    .await;
    assert_eq!(raw.status, 101, "{:?}", raw.headers);
    assert_eq!(
        raw.header_values("sec-websocket-protocol"),
        ["switchboard.v1"]
    );
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
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|value| value.to_str().expect("ASCII")),
        Some("switchboard.v1")
    );
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

#[tokio::test]
async fn valid_header_token_wins_over_invalid_query_token() {
    let server = TestServer::default().await;
    let url = format!("{}?token=garbage.not.jwt", server.ws_url("default"));
    let (client, _) = accepted(
        with_bearer(&url, &token("alice")),
        "alice",
        "default",
        "valid header, invalid query",
    )
    .await;
    client.close().await;
}

#[tokio::test]
async fn invalid_header_token_is_401_even_with_valid_query_token() {
    let server = TestServer::default().await;
    let url = format!("{}?token={}", server.ws_url("default"), token("alice"));
    refused(
        with_bearer(&url, "garbage.not.jwt"),
        401,
        "invalid header, valid query",
    )
    .await;
    let expired = sign_hs(&claims("alice", -3600, json!({})));
    refused(
        with_bearer(&url, &expired),
        401,
        "expired header, valid query",
    )
    .await;
}

#[tokio::test]
async fn invalid_query_token_is_401_even_with_valid_subprotocol_token() {
    let server = TestServer::default().await;
    let url = format!("{}?token=garbage.not.jwt", server.ws_url("default"));
    let offer = format!("switchboard.v1, bearer.{}", token("alice"));
    refused(
        upgrade_request(&url, &[("sec-websocket-protocol", &offer)]),
        401,
        "invalid query, valid subprotocol",
    )
    .await;
    // And the other way round the query token wins.
    let url = format!("{}?token={}", server.ws_url("default"), token("bob"));
    let offer = "switchboard.v1, bearer.garbage.not.jwt";
    let (client, _) = accepted(
        upgrade_request(&url, &[("sec-websocket-protocol", offer)]),
        "bob",
        "default",
        "valid query, invalid subprotocol",
    )
    .await;
    client.close().await;
}

#[tokio::test]
async fn non_bearer_authorization_counts_as_absent() {
    let server = TestServer::default().await;
    let url = format!("{}?token={}", server.ws_url("default"), token("alice"));
    let (client, _) = accepted(
        upgrade_request(&url, &[("authorization", "Basic YWxpY2U6c2VjcmV0")]),
        "alice",
        "default",
        "Basic header + valid query token",
    )
    .await;
    client.close().await;
    // Basic alone is no token at all.
    refused(
        upgrade_request(
            &server.ws_url("default"),
            &[("authorization", "Basic YWxpY2U6c2VjcmV0")],
        ),
        401,
        "Basic header only",
    )
    .await;
}

#[tokio::test]
async fn empty_bearer_header_counts_as_absent() {
    let server = TestServer::default().await;
    let url = format!("{}?token={}", server.ws_url("default"), token("alice"));
    let (client, _) = accepted(
        upgrade_request(&url, &[("authorization", "Bearer ")]),
        "alice",
        "default",
        "`Bearer ` + valid query",
    )
    .await;
    client.close().await;
    let (client, _) = accepted(
        upgrade_request(&url, &[("authorization", "Bearer")]),
        "alice",
        "default",
        "`Bearer` + valid query",
    )
    .await;
    client.close().await;
}

#[tokio::test]
async fn empty_query_token_counts_as_absent() {
    let server = TestServer::default().await;
    let url = format!("{}?token=", server.ws_url("default"));
    let offer = format!("switchboard.v1, bearer.{}", token("alice"));
    let (client, response) = accepted(
        upgrade_request(&url, &[("sec-websocket-protocol", &offer)]),
        "alice",
        "default",
        "`?token=` + valid subprotocol",
    )
    .await;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|value| value.to_str().expect("ASCII")),
        Some("switchboard.v1")
    );
    client.close().await;
}

#[tokio::test]
async fn bare_bearer_subprotocol_counts_as_absent() {
    let server = TestServer::default().await;
    // Everything empty: no token at all.
    let url = format!("{}?token=", server.ws_url("default"));
    refused(
        upgrade_request(
            &url,
            &[
                ("authorization", "Bearer "),
                ("sec-websocket-protocol", "switchboard.v1, bearer."),
            ],
        ),
        401,
        "all three sources empty",
    )
    .await;
    // A bare `bearer.` entry is skipped for a later non-empty one.
    let offer = format!("switchboard.v1, bearer., bearer.{}", token("alice"));
    let (client, _) = accepted(
        upgrade_request(
            &server.ws_url("default"),
            &[("sec-websocket-protocol", &offer)],
        ),
        "alice",
        "default",
        "bare bearer. then a real one",
    )
    .await;
    client.close().await;
}

// ---------------------------------------------------------------------------------------------
// Order of checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn order_unknown_tenant_before_everything() {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "allowed_origins = [\"https://app.example.com\"]",
            "",
        )],
    ))
    .await;
    refused(
        upgrade_request(&server.ws_url("nope"), &[]),
        404,
        "unknown tenant, no token",
    )
    .await;
    refused(
        upgrade_request(
            &server.ws_url("nope"),
            &[("origin", "https://evil.example.com")],
        ),
        404,
        "unknown tenant, bad origin, no token",
    )
    .await;
    timeout(WAIT, server.node().drain()).await.expect("drained");
    refused(
        upgrade_request(&server.ws_url("nope"), &[]),
        404,
        "unknown tenant while draining",
    )
    .await;
}

#[tokio::test]
async fn order_not_an_upgrade_before_drain_origin_and_token() {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "allowed_origins = [\"https://app.example.com\"]",
            "",
        )],
    ))
    .await;
    let (status, _, body) = http_get(&server.http_url("/ws")).await;
    assert_eq!(status, 426, "plain GET, no token: {body}");
    let response = timeout(
        WAIT,
        reqwest::Client::new()
            .get(server.http_url("/ws"))
            .header("origin", "https://evil.example.com")
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("request succeeds");
    assert_eq!(response.status().as_u16(), 426, "plain GET, bad origin");
    timeout(WAIT, server.node().drain()).await.expect("drained");
    let (status, _, body) = http_get(&server.http_url("/ws")).await;
    assert_eq!(status, 426, "plain GET while draining: {body}");
    assert_error_body(&serde_json::from_str(&body).expect("JSON"), "426 draining");
}

#[tokio::test]
async fn order_bad_origin_before_token() {
    let server = origin_server().await;
    refused(
        upgrade_request(
            &server.ws_url("default"),
            &[("origin", "https://evil.example.com")],
        ),
        403,
        "bad origin, no token",
    )
    .await;
    refused(
        with_bearer(&server.ws_url("default"), "garbage").tap_origin("https://evil.example.com"),
        403,
        "bad origin, bad token",
    )
    .await;
}

/// Adds an `Origin` header to a request.
trait TapOrigin {
    fn tap_origin(self, origin: &str) -> Self;
}

impl TapOrigin for http::Request<()> {
    fn tap_origin(mut self, origin: &str) -> Self {
        self.headers_mut().insert(
            http::header::ORIGIN,
            http::HeaderValue::from_str(origin).expect("origin value"),
        );
        self
    }
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
    refused(
        with_bearer(&server.ws_url("default"), "garbage"),
        401,
        "tenant full, bad token",
    )
    .await;
    refused(
        upgrade_request(&server.ws_url("default"), &[]),
        401,
        "tenant full, no token",
    )
    .await;
    refused(
        with_bearer(&server.ws_url("default"), &token("bob")),
        503,
        "tenant full, good token",
    )
    .await;
    first.close().await;
}

#[tokio::test]
async fn order_draining_before_origin_and_token() {
    let server = origin_server().await;
    timeout(WAIT, server.node().drain()).await.expect("drained");
    refused(
        with_bearer(&server.ws_url("default"), "garbage"),
        503,
        "draining, bad token",
    )
    .await;
    refused(
        upgrade_request(&server.ws_url("default"), &[]),
        503,
        "draining, no token",
    )
    .await;
    refused(
        upgrade_request(
            &server.ws_url("default"),
            &[("origin", "https://evil.example.com")],
        ),
        503,
        "draining, bad origin, no token",
    )
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
                "",
            )]
        )
    );
    let server = TestServer::start(&text).await;
    let first = Client::connect(&server, "default", "alice").await;
    refused(
        with_bearer(&server.ws_url("default"), "garbage"),
        503,
        "node full, bad token",
    )
    .await;
    refused(
        upgrade_request(
            &server.ws_url("default"),
            &[("origin", "https://evil.example.com")],
        ),
        503,
        "node full, bad origin, no token",
    )
    .await;
    first.close().await;
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rejections_are_counted_in_metrics_by_reason_and_status() {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "allowed_origins = [\"https://app.example.com\"]",
            "",
        )],
    ))
    .await;
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
        with_bearer(&server.ws_url("default"), &token("alice"))
            .tap_origin("https://evil.example.com"),
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

    let (status, headers, text) = http_get(&server.http_url("/metrics")).await;
    assert_eq!(status, 200);
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("text/plain"),
        "metrics content type `{content_type}`"
    );
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
