//! Test support: start a real server on `127.0.0.1:0` (in process, or as the real binary),
//! mint tokens, connect real WebSocket clients, and wrap every wait in a timeout.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the support API"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard::server::RunningServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS secret of tenants made by `tenant`.
pub const SECRET: &str = "integration-test-secret";
/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The folder of key fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The API key of a tenant made by `tenant`.
pub fn api_key(tenant: &str) -> String {
    format!("{tenant}-api-key")
}

/// A `[[tenants]]` section with an HS secret: `keys` are extra top-level keys of the tenant
/// (e.g. `allowed_origins = [...]`), `tables` are extra sub-tables (e.g. `[tenants.limits]`).
pub fn tenant(name: &str, keys: &str, tables: &str) -> String {
    format!(
        "[[tenants]]\nname = \"{name}\"\napi_key = \"{key}\"\n{keys}\n[tenants.jwt]\nsecret = \"{SECRET}\"\n{tables}\n",
        key = api_key(name)
    )
}

/// A whole config: `global` keys and tables, then the tenant sections.
pub fn config(global: &str, tenants: &[String]) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n{global}\n{}",
        tenants.concat()
    )
}

/// The plainest config: one `default` tenant.
pub fn default_config() -> String {
    config("", &[tenant("default", "", "")])
}

/// Parses a test config (relative key paths resolve against `fixtures()`). Plugins compile in
/// a worker process, which the test binary cannot be: unless the config names one, the
/// `switchboard` binary does it.
pub fn parse_config(config_text: &str) -> switchboard::config::Config {
    let mut config = switchboard::config::parse(config_text, "test.toml", &fixtures())
        .unwrap_or_else(|error| panic!("test config invalid:\n{error}\n---\n{config_text}"));
    let compiler = &mut config.plugin_bounds.compiler_path;
    if compiler.is_none() {
        *compiler = Some(binary());
    }
    // Every server keeps its desired state apart (the default, `test.state` beside the
    // fixtures, would be shared by every test), unless the test names a directory.
    if !config_text.contains("[state]") {
        config.state_dir = fresh_state_dir();
    }
    config
}

/// A state directory no other server uses (not created: a node makes it on its first write).
pub fn fresh_state_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // The pid alone repeats within a run (pid_max can be 32768, and a run starts thousands
    // of processes), and a reused directory would hand a test another test's deploys.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "switchboard-state-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A server running inside the test process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    server: Option<RunningServer>,
}

impl TestServer {
    /// Starts a server from config text; relative key paths resolve against `fixtures()`.
    pub async fn start(config_text: &str) -> TestServer {
        let config = parse_config(config_text);
        let server = switchboard::server::start(config)
            .await
            .unwrap_or_else(|error| panic!("server did not start: {error}"));
        TestServer {
            addr: server.addr,
            server: Some(server),
        }
    }

    /// Starts a server with `default_config()`.
    pub async fn default() -> TestServer {
        TestServer::start(&default_config()).await
    }

    /// The node's shared state.
    pub fn node(&self) -> &std::sync::Arc<switchboard::node::Node> {
        &self.server.as_ref().expect("server running").node
    }

    /// `ws://addr/ws` for `default`, `ws://addr/ws/{tenant}` otherwise.
    pub fn ws_url(&self, tenant: &str) -> String {
        ws_url(self.addr, tenant)
    }

    /// `http://addr{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Drains like SIGTERM does; returns the connections left at the deadline.
    pub async fn shutdown(mut self) -> usize {
        let server = self.server.take().expect("server running");
        timeout(Duration::from_secs(30), server.shutdown())
            .await
            .expect("shutdown finished")
    }
}

/// `ws://addr/ws` for `default`, `ws://addr/ws/{tenant}` otherwise.
pub fn ws_url(addr: SocketAddr, tenant: &str) -> String {
    if tenant == "default" {
        format!("ws://{addr}/ws")
    } else {
        format!("ws://{addr}/ws/{tenant}")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Signs `claims` with an algorithm and key.
pub fn sign(claims: &Value, algorithm: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("token signs")
}

/// Signs `claims` with the tests' HS256 secret.
pub fn sign_hs(claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// A valid token for `sub`, an hour long.
pub fn token(sub: &str) -> String {
    sign_hs(&json!({"sub": sub, "exp": now_secs() + 3600}))
}

/// Standard claims `sub` and `exp` (`exp_offset` seconds from now), plus `extra`.
pub fn claims(sub: &str, exp_offset: i64, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "exp": now_secs() as i64 + exp_offset});
    if let (Some(target), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        target.extend(extra);
    }
    claims
}

/// What a refused handshake answered.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// Every header, lower-case names.
    pub headers: http::HeaderMap,
    /// The body parsed as JSON.
    pub body: Value,
}

/// Asserts the body of an HTTP error: exactly `{"error", "message"}`, both non-empty strings.
pub fn assert_error_body(body: &Value, context: &str) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{context}: error body is not a JSON object: {body}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "message"], "{context}: error body {body}");
    for key in ["error", "message"] {
        let text = object[key]
            .as_str()
            .unwrap_or_else(|| panic!("{context}: `{key}` is not a string: {body}"));
        assert!(!text.is_empty(), "{context}: `{key}` is empty: {body}");
    }
}

/// Attempts an upgrade with a prepared request; `Ok` is the open socket, `Err` the refusal.
pub async fn try_upgrade(
    request: http::Request<()>,
) -> Result<(WsClient, http::Response<Option<Vec<u8>>>), Refusal> {
    match timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake answered in time")
    {
        Ok((socket, response)) => Ok((socket, response)),
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|bytes| serde_json::from_slice(bytes).expect("error body is JSON"))
                .unwrap_or(Value::Null);
            Err(Refusal {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                body,
            })
        }
        Err(other) => panic!("handshake failed unexpectedly: {other}"),
    }
}

/// An upgrade request for `url` with `headers` added.
pub fn upgrade_request(url: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut request = url.into_client_request().expect("valid url");
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    request
}

/// An upgrade request for `url` with `Authorization: Bearer <token>`.
pub fn with_bearer(url: &str, token: &str) -> http::Request<()> {
    let bearer = format!("Bearer {token}");
    upgrade_request(url, &[("authorization", &bearer)])
}

/// Adds an `Origin` header to an upgrade request.
pub fn with_origin(mut request: http::Request<()>, origin: &str) -> http::Request<()> {
    request.headers_mut().insert(
        http::header::ORIGIN,
        http::HeaderValue::from_str(origin).expect("origin value"),
    );
    request
}

/// Asserts a `Retry-After` header holding a number of seconds.
pub fn assert_retry_after(headers: &http::HeaderMap, context: &str) {
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

/// Attempts the upgrade and asserts it is refused with `status` and the JSON error body (and
/// `Retry-After` on a 503).
pub async fn refused(request: http::Request<()>, status: u16, context: &str) -> Refusal {
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

/// Attempts each upgrade and asserts its refusal: `(request, status, context)`.
pub async fn refused_each(cases: Vec<(http::Request<()>, u16, &str)>) {
    for (request, status, context) in cases {
        refused(request, status, context).await;
    }
}

/// Attempts the upgrade, asserts the 101, reads the welcome and checks its user and tenant.
pub async fn accepted(
    request: http::Request<()>,
    sub: &str,
    tenant: &str,
    context: &str,
) -> (Client, http::Response<Option<Vec<u8>>>) {
    match try_upgrade(request).await {
        Ok((ws, response)) => {
            assert_eq!(response.status().as_u16(), 101, "{context}");
            let client = Client::from_socket(ws).await;
            let payload = &client.welcome["payload"];
            assert_eq!(
                payload["userId"],
                json!(sub),
                "{context}: {}",
                client.welcome
            );
            assert_eq!(
                payload["tenant"],
                json!(tenant),
                "{context}: {}",
                client.welcome
            );
            (client, response)
        }
        Err(refusal) => panic!("{context}: expected the upgrade to be accepted, got {refusal:?}"),
    }
}

/// Connects as `sub`, retrying while the server still answers 503 (a freed slot is released
/// just after the close handshake).
pub async fn connect_when_free(server: &TestServer, tenant: &str, sub: &str) -> Client {
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

/// Sends a request built by `build` from a fresh client; returns status, headers and the body
/// parsed as JSON (`Null` when it is not JSON).
pub async fn http_send(
    build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
) -> (u16, http::HeaderMap, Value) {
    let client = reqwest::Client::new();
    let response = timeout(WAIT, build(&client).send())
        .await
        .expect("answered in time")
        .expect("request succeeds");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// The raw client socket.
pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected, authenticated client that has read its `welcome`.
pub struct Client {
    /// The socket.
    pub ws: WsClient,
    /// The `welcome` frame.
    pub welcome: Value,
    next_id: AtomicU32,
}

impl Client {
    /// Connects to `tenant` as `sub` with a bearer header and reads the welcome.
    pub async fn connect(server: &TestServer, tenant: &str, sub: &str) -> Client {
        Client::connect_addr(server.addr, tenant, sub).await
    }

    /// Like `connect`, by address.
    pub async fn connect_addr(addr: SocketAddr, tenant: &str, sub: &str) -> Client {
        let bearer = format!("Bearer {}", token(sub));
        let request = upgrade_request(&ws_url(addr, tenant), &[("authorization", &bearer)]);
        let (ws, _) = try_upgrade(request)
            .await
            .unwrap_or_else(|refusal| panic!("upgrade refused: {refusal:?}"));
        Client::from_socket(ws).await
    }

    /// Wraps an open socket and reads the welcome.
    pub async fn from_socket(ws: WsClient) -> Client {
        let mut client = Client {
            ws,
            welcome: Value::Null,
            next_id: AtomicU32::new(1),
        };
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
        client.welcome = welcome;
        client
    }

    /// This connection's id from the welcome.
    pub fn connection_id(&self) -> String {
        self.welcome["payload"]["connectionId"]
            .as_str()
            .expect("connectionId")
            .to_owned()
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        timeout(WAIT, self.ws.send(Message::text(text)))
            .await
            .expect("send in time")
            .expect("send succeeds");
    }

    /// The next text frame as JSON; control frames are skipped. Panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = timeout(WAIT, self.ws.next())
                .await
                .expect("a frame arrived in time")
                .expect("the connection is open")
                .expect("the frame is valid");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("server sends JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `value` with a fresh `correlationId` and returns the reply that carries it.
    /// Frames without that id that arrive first are returned in `before`.
    pub async fn request(&mut self, mut value: Value) -> Value {
        let id = format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        value["correlationId"] = json!(id);
        self.send(value).await;
        loop {
            let frame = self.recv().await;
            if frame["correlationId"] == json!(id) {
                return frame;
            }
        }
    }

    /// Joins `channel` and returns the ack (which must be an ack).
    pub async fn join(&mut self, channel: &str) -> Value {
        let reply = self
            .request(json!({"type": "room:join", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "ack", "join answered: {reply}");
        reply
    }

    /// Leaves `channel` and returns the reply (an ack, or the error).
    pub async fn leave(&mut self, channel: &str) -> Value {
        self.request(json!({"type": "room:leave", "channel": channel}))
            .await
    }

    /// Waits for the server's close frame; returns its code and reason. Panics on a text frame.
    pub async fn expect_close(&mut self) -> (u16, String) {
        self.wait_for_close(false).await
    }

    /// Like `expect_close`, but text frames before the close are skipped.
    pub async fn expect_close_skipping_text(&mut self) -> (u16, String) {
        self.wait_for_close(true).await
    }

    async fn wait_for_close(&mut self, skip_text: bool) -> (u16, String) {
        loop {
            let next = timeout(WAIT, self.ws.next())
                .await
                .expect("the close arrived in time");
            match next {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (u16::from(code), reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) if skip_text => continue,
                Some(Ok(other)) => panic!("expected a close, got {other:?}"),
                Some(Err(error)) => panic!("expected a close frame, got error {error}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Asserts that no text frame arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Closes normally (1000) and waits for the server's answer.
    pub async fn close(mut self) {
        let normal = CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        };
        let _ = timeout(WAIT, self.ws.close(Some(normal))).await;
        let _ = timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// GET `url`; returns status and body text.
pub async fn http_get(url: &str) -> (u16, http::HeaderMap, String) {
    let response = timeout(WAIT, reqwest::get(url))
        .await
        .expect("answered in time")
        .expect("request succeeds");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    (status, headers, body)
}

/// POST a JSON (or raw) body to the publish API with an optional bearer key.
pub async fn publish_raw(server: &TestServer, body: &str, key: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .post(server.http_url("/api/publish"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = timeout(WAIT, request.send())
        .await
        .expect("answered in time")
        .expect("request succeeds");
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON body");
    (status, body)
}

/// Publishes `payload` to `channel` of `tenant` with the right key; returns the `seq`.
pub async fn publish(server: &TestServer, tenant: &str, channel: &str, payload: Value) -> u64 {
    let body = json!({"tenant": tenant, "channel": channel, "type": "news", "payload": payload});
    let (status, reply) = publish_raw(server, &body.to_string(), Some(&api_key(tenant))).await;
    assert_eq!(status, 200, "publish answered {reply}");
    reply["seq"].as_u64().expect("seq")
}

/// Polls `check` every 10 ms until it holds or `WAIT` passes.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `/metrics` every 50 ms until it holds `line`, for at most 20 s (a file watcher's
/// reload takes a poll interval and a compile).
pub async fn wait_for_metric(server: &TestServer, line: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = http_get(&server.http_url("/metrics")).await.2;
        if metrics.contains(line) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            // The series of the same name that were reported say what happened instead.
            let name = line.split(['{', ' ']).next().unwrap_or(line);
            let reported: Vec<&str> = metrics.lines().filter(|l| l.starts_with(name)).collect();
            panic!("{what} was never reported ({line}); reported instead: {reported:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `bytes` next to `path`, then renames it into place, as a deploy would.
pub fn deploy(path: &std::path::Path, bytes: &[u8]) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, bytes).expect("staging written");
    std::fs::rename(&staging, path).expect("renamed into place");
}

/// Deploys `bytes` the node must refuse to load: waits until the tenant `default` has its first
/// load failure counted, then checks that the `greeter` version before still answers.
pub async fn deploy_refused(
    server: &TestServer,
    client: &mut Client,
    path: &std::path::Path,
    bytes: &[u8],
    what: &str,
    serving: u64,
) {
    deploy(path, bytes);
    wait_for_metric(
        server,
        "switchboard_plugin_load_failures_total{tenant=\"default\"} 1",
        what,
    )
    .await;
    assert_eq!(greet_version(client).await, serving, "after {what}");
}

/// `PUT /api/tenants/default/plugins/{name}` with `body` (and `key`, when given): the status and
/// the JSON answer, within 60 s.
pub async fn put_plugin(
    server: &TestServer,
    name: &str,
    key: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .put(server.http_url(&format!("/api/tenants/default/plugins/{name}")))
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = tokio::time::timeout(Duration::from_secs(60), request.send())
        .await
        .expect("answered in time")
        .expect("request succeeds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The version the `greeter` fixture plugin answers with.
pub async fn greet_version(client: &mut Client) -> Value {
    client.request(json!({"type": "greet"})).await["payload"]["version"].clone()
}

/// The real `switchboard` binary running `serve` on a config file.
pub struct BinaryServer {
    /// The child process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _config: TempFile,
    /// Where its stderr goes, when the test reads its log.
    log: Option<TempFile>,
}

/// A file removed on drop.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        // A server started on this config keeps its desired state beside it.
        let _ = std::fs::remove_dir_all(self.0.with_extension("state"));
    }
}

/// Writes `text` to a fresh file in the temp folder.
pub fn temp_file(stem: &str, text: &str) -> TempFile {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // Not the pid alone: it repeats within a run (see `fresh_state_dir`).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let path = std::env::temp_dir().join(format!(
        "switchboard-{stem}-{}-{nanos}-{}.toml",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).expect("temp file written");
    let _ = std::fs::remove_dir_all(path.with_extension("state"));
    TempFile(path)
}

/// The path of the `switchboard` binary, built once per test process.
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // scripts/test builds it once and names it, so parallel test processes never run
            // cargo on the shared target dir themselves.
            if let Some(path) = std::env::var_os("SWITCHBOARD_BINARY") {
                return PathBuf::from(path);
            }
            let status = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "switchboard",
                    "--bin",
                    "switchboard",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the switchboard binary failed");
            // The test binary lives in target/<profile>/deps/.
            let exe = std::env::current_exe().expect("test exe path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>");
            let path = profile_dir.join("switchboard");
            assert!(path.exists(), "no binary at {}", path.display());
            path
        })
        .clone()
}

impl BinaryServer {
    /// Runs `switchboard serve` with `config_text` (written to a temp file next to nothing, so
    /// key paths must be absolute) and waits for its `listening on` line.
    pub async fn start(config_text: &str) -> BinaryServer {
        let config = temp_file("config", config_text);
        let mut command = Command::new(binary());
        command.args(["serve", "--config"]).arg(&config.0);
        BinaryServer::spawn(command, config).await
    }

    /// Like `start`, with its log (stderr) kept for [`BinaryServer::log`].
    pub async fn start_logged(config_text: &str) -> BinaryServer {
        let config = temp_file("config", config_text);
        let log = temp_file("log", "");
        let file = std::fs::File::create(&log.0).expect("log file");
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(&config.0)
            .stderr(Stdio::from(file));
        let mut server = BinaryServer::spawn(command, config).await;
        server.log = Some(log);
        server
    }

    /// What it has logged so far (only after `start_logged`).
    pub fn log(&self) -> String {
        let log = self.log.as_ref().expect("started with start_logged");
        std::fs::read_to_string(&log.0).expect("the log reads")
    }

    /// Like `start`, with the process's open-files limit (soft and hard) set to `open_files`.
    pub async fn start_with_open_files(config_text: &str, open_files: u64) -> BinaryServer {
        let config = temp_file("config", config_text);
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -n {open_files} && exec \"$0\" serve --config \"$1\""
            ))
            .arg(binary())
            .arg(&config.0);
        BinaryServer::spawn(command, config).await
    }

    async fn spawn(mut command: Command, config: TempFile) -> BinaryServer {
        // stderr is inherited unless the caller chose a file.
        let mut child = command
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let addr = timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("stdout readable") {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.parse::<SocketAddr>().expect("an address");
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server listened in time");
        BinaryServer {
            child,
            addr,
            _config: config,
            log: None,
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(&mut self, within: Duration) -> Option<i32> {
        timeout(within, self.child.wait())
            .await
            .expect("the process exited in time")
            .expect("wait succeeds")
            .code()
    }
}
