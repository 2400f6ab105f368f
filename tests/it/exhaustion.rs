//! What a client can make the node hold over HTTP, and the bounds on it: request heads (431,
//! 414, 400, all with the JSON body; slowloris), request bodies (size, time, the node-wide
//! budget, memory per byte received), responses to a client that does not read, and the
//! socket budget at the open-files limit (503 with `Retry-After`, `/healthz` still answers).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::support::{
    BinaryServer, Client, TestServer, WAIT, api_key, assert_error_body, config, http_get, publish,
    tenant, token, try_upgrade, upgrade_request,
};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// A response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Asserts the status, a JSON content type and the `{"error", "message"}` body.
    fn assert_error(&self, status: u16, context: &str) -> Value {
        assert_eq!(self.status, status, "{context}: {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{context}: {self:?}"
        );
        let body: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{context}: body is not JSON ({error}): {self:?}"));
        assert_error_body(&body, context);
        body
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connected in time")
        .expect("TCP connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    timeout(WAIT, stream.write_all(bytes))
        .await
        .expect("written in time")
        .expect("written");
}

/// Reads one response: the head, then a body of its `Content-Length`.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    timeout(WAIT, async {
        let mut bytes = Vec::new();
        let head_end = loop {
            if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await.expect("socket readable");
            assert!(read > 0, "closed inside the response head: {bytes:?}");
            bytes.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8(bytes[..head_end].to_vec()).expect("UTF-8 head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(':').expect("header line");
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map_or(0, |(_, value)| value.parse().expect("a length"));
        let mut body = bytes[head_end..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await.expect("socket readable");
            assert!(read > 0, "closed inside the body");
            body.extend_from_slice(&chunk[..read]);
        }
        body.truncate(length);
        RawResponse {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("a response in time")
}

/// Asserts the server closes the socket (end of stream or a reset) within `WAIT`.
async fn expect_closed(stream: &mut TcpStream, context: &str) {
    timeout(WAIT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{context}: the server kept the connection open"));
}

/// A server with `http` settings and the `default` tenant.
async fn server_with(http: &str) -> TestServer {
    TestServer::start(&config(
        &format!("[http]\n{http}"),
        &[tenant("default", "", "")],
    ))
    .await
}

/// The value of one series in the node's metrics.
fn metric(server: &TestServer, series: &str) -> f64 {
    let text = server.node().render_metrics();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Waits until `series` reaches `value`.
async fn metric_reaches(server: &TestServer, series: &str, value: f64) {
    let deadline = Instant::now() + WAIT;
    while metric(server, series) < value {
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value} (it is {})",
            metric(server, series)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The head of a publish request announcing `length` body bytes.
fn publish_head(key: Option<&str>, length: usize) -> String {
    let auth = key.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{auth}Content-Length: {length}\r\n\r\n"
    )
}

/// A valid publish body for `default`, padded to about `size` bytes.
fn publish_body(size: usize) -> Vec<u8> {
    let base = json!({"tenant": "default", "channel": "lobby", "type": "news", "payload": ""});
    let padding = size.saturating_sub(base.to_string().len());
    json!({"tenant": "default", "channel": "lobby", "type": "news", "payload": "x".repeat(padding)})
        .to_string()
        .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// request heads
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_head_over_the_limit_is_431_with_the_json_body_and_counted() {
    let server = TestServer::default().await;
    let mut stream = connect(server.addr).await;
    let filler = "a".repeat(20 * 1024);
    send(
        &mut stream,
        format!("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Filler: {filler}\r\n\r\n").as_bytes(),
    )
    .await;
    let response = read_response(&mut stream).await;
    let body = response.assert_error(431, "a 20 KiB header");
    assert_eq!(body["error"], "header_too_large");
    assert_eq!(response.header("connection"), Some("close"));
    expect_closed(&mut stream, "after a 431").await;
    assert_eq!(
        metric(
            &server,
            "switchboard_http_head_refusals_total{reason=\"header_too_large\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn too_many_header_fields_is_431_with_the_json_body() {
    let server = TestServer::default().await;
    let mut stream = connect(server.addr).await;
    let fields: String = (0..150).map(|index| format!("X-F{index}: v\r\n")).collect();
    send(
        &mut stream,
        format!("GET /healthz HTTP/1.1\r\nHost: test\r\n{fields}\r\n").as_bytes(),
    )
    .await;
    read_response(&mut stream)
        .await
        .assert_error(431, "150 header fields");
}

#[tokio::test]
async fn a_head_of_the_configured_size_passes_and_one_byte_more_is_431() {
    let server = server_with("max_header_bytes = 2048").await;
    let head = |size: usize| {
        let start = "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Filler: ";
        let filler = "a".repeat(size - start.len() - 4);
        format!("{start}{filler}\r\n\r\n")
    };
    let mut stream = connect(server.addr).await;
    send(&mut stream, head(2048).as_bytes()).await;
    assert_eq!(read_response(&mut stream).await.status, 200, "2048 bytes");
    let mut stream = connect(server.addr).await;
    send(&mut stream, head(2049).as_bytes()).await;
    read_response(&mut stream)
        .await
        .assert_error(431, "2049 bytes");
}

#[tokio::test]
async fn a_target_over_the_limit_is_414_with_the_json_body_and_counted() {
    let server = TestServer::default().await;
    let mut stream = connect(server.addr).await;
    let query = "q".repeat(9000);
    send(
        &mut stream,
        format!("GET /healthz?{query} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
    .await;
    let body = read_response(&mut stream)
        .await
        .assert_error(414, "a 9000-byte query");
    assert_eq!(body["error"], "uri_too_long");
    assert_eq!(
        metric(
            &server,
            "switchboard_http_head_refusals_total{reason=\"uri_too_long\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_malformed_request_is_400_with_the_json_body() {
    let server = TestServer::default().await;
    for request in [
        &b"GET /healthz HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n"[..],
        b"G\x01T / HTTP/1.1\r\n\r\n",
    ] {
        let mut stream = connect(server.addr).await;
        send(&mut stream, request).await;
        read_response(&mut stream)
            .await
            .assert_error(400, &String::from_utf8_lossy(request));
    }
    assert_eq!(
        metric(
            &server,
            "switchboard_http_head_refusals_total{reason=\"malformed\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn a_431_after_other_responses_on_the_connection_still_has_the_json_body() {
    let server = TestServer::default().await;
    let mut stream = connect(server.addr).await;
    for _ in 0..2 {
        send(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
        let response = read_response(&mut stream).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, br#"{"status":"ok"}"#);
    }
    let filler = "a".repeat(20 * 1024);
    send(
        &mut stream,
        format!("GET /healthz HTTP/1.1\r\nX-Filler: {filler}\r\n\r\n").as_bytes(),
    )
    .await;
    read_response(&mut stream)
        .await
        .assert_error(431, "the third, oversized request");
}

#[tokio::test]
async fn a_head_sent_slowly_is_closed_at_the_header_timeout() {
    let server = server_with("header_timeout = \"500ms\"").await;
    let mut stream = connect(server.addr).await;
    send(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ",
    )
    .await;
    // A byte every 100 ms: the head would never end, each read is short.
    let closed = timeout(WAIT, async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b"a").await.is_err() {
                return;
            }
            let mut byte = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                timeout(Duration::from_millis(1), stream.read(&mut byte)).await
            {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickled head kept its connection open");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let server = server_with("header_timeout = \"500ms\"").await;
    let mut stream = connect(server.addr).await;
    send(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(read_response(&mut stream).await.status, 200);
    expect_closed(&mut stream, "an idle keep-alive connection").await;
}

// ---------------------------------------------------------------------------------------------
// request bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_publish_body_that_stalls_gets_408_and_its_connection_closes() {
    let server = server_with("body_timeout = \"1s\"\nunauthenticated_body_timeout = \"1s\"").await;
    let mut stream = connect(server.addr).await;
    send(
        &mut stream,
        publish_head(Some(&api_key("default")), 100).as_bytes(),
    )
    .await;
    send(&mut stream, b"{\"tenant\":").await;
    let started = Instant::now();
    let response = read_response(&mut stream).await;
    response.assert_error(408, "a stalled body");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "408 before the body timeout"
    );
    expect_closed(&mut stream, "after a 408").await;
    assert_eq!(
        metric(
            &server,
            "switchboard_http_body_refusals_total{reason=\"timeout\"}"
        ),
        1.0
    );
    assert_eq!(metric(&server, "switchboard_http_bodies_in_flight"), 0.0);
}

#[tokio::test]
async fn a_publish_body_trickling_in_is_cut_at_the_body_timeout() {
    let server = server_with("body_timeout = \"1s\"\nunauthenticated_body_timeout = \"1s\"").await;
    let mut stream = connect(server.addr).await;
    send(
        &mut stream,
        publish_head(Some(&api_key("default")), 1000).as_bytes(),
    )
    .await;
    // A byte every 50 ms: every read is quick, only the total is late.
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        for _ in 0..1000 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let answer = async {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 1024];
        while !bytes.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = reader.read(&mut chunk).await.expect("readable");
            assert!(read > 0, "closed without an answer");
            bytes.extend_from_slice(&chunk[..read]);
        }
        bytes
    };
    let head = tokio::select! {
        head = answer => head,
        () = trickle => panic!("the body was read to its end"),
        () = tokio::time::sleep(WAIT) => panic!("no answer in time"),
    };
    assert!(
        head.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

#[tokio::test]
async fn a_publish_announcing_more_than_2_mib_is_413_before_it_is_sent() {
    let server = TestServer::default().await;
    let mut stream = connect(server.addr).await;
    send(
        &mut stream,
        publish_head(Some(&api_key("default")), 2 * 1024 * 1024 + 1).as_bytes(),
    )
    .await;
    let response = read_response(&mut stream).await;
    response.assert_error(413, "an announced 2 MiB + 1");
    expect_closed(&mut stream, "after a 413").await;
}

#[tokio::test]
async fn a_publish_without_a_tenants_key_gets_only_the_tight_bounds_then_401() {
    let server = server_with(
        "max_unauthenticated_body_bytes = 1024\nunauthenticated_body_timeout = \"500ms\"",
    )
    .await;
    // Announced over the unauthenticated cap: refused before it is sent, with the 401 it
    // would get anyway.
    for key in [None, Some("not-a-key")] {
        let mut stream = connect(server.addr).await;
        send(&mut stream, publish_head(key, 1025).as_bytes()).await;
        let response = read_response(&mut stream).await;
        response.assert_error(401, &format!("{key:?}, 1025 bytes announced"));
        expect_closed(&mut stream, "after a 401").await;
    }
    // Stalled: 401 at the unauthenticated timeout.
    let mut stream = connect(server.addr).await;
    send(&mut stream, publish_head(None, 100).as_bytes()).await;
    send(&mut stream, b"{").await;
    read_response(&mut stream)
        .await
        .assert_error(401, "a stalled body without a key");
    // The same sizes with a key are read as usual.
    let body = publish_body(1500);
    let mut stream = connect(server.addr).await;
    send(
        &mut stream,
        publish_head(Some(&api_key("default")), body.len()).as_bytes(),
    )
    .await;
    send(&mut stream, &body).await;
    assert_eq!(read_response(&mut stream).await.status, 200);
    // A small body without a key keeps the documented order: its faults come before the key's.
    let mut stream = connect(server.addr).await;
    send(&mut stream, publish_head(None, 5).as_bytes()).await;
    send(&mut stream, b"[1,2]").await;
    read_response(&mut stream)
        .await
        .assert_error(400, "a small non-object without a key");
    assert_eq!(
        metric(
            &server,
            "switchboard_http_body_refusals_total{reason=\"unauthenticated_too_large\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &server,
            "switchboard_http_body_refusals_total{reason=\"unauthenticated_timeout\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn bodies_past_the_node_wide_budget_are_503_with_retry_after() {
    let server = server_with("max_bodies_in_flight = 2").await;
    let body = publish_body(200);
    // Two publishes hold both body slots, a byte in.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(server.addr).await;
        send(
            &mut stream,
            publish_head(Some(&api_key("default")), body.len()).as_bytes(),
        )
        .await;
        send(&mut stream, &body[..1]).await;
        holders.push(stream);
    }
    metric_reaches(&server, "switchboard_http_bodies_in_flight", 2.0).await;
    let mut stream = connect(server.addr).await;
    send(
        &mut stream,
        publish_head(Some(&api_key("default")), body.len()).as_bytes(),
    )
    .await;
    let response = read_response(&mut stream).await;
    response.assert_error(503, "a third body");
    assert!(
        response
            .header("retry-after")
            .is_some_and(|value| value.parse::<u64>().is_ok()),
        "{response:?}"
    );
    expect_closed(&mut stream, "after a 503").await;
    // The held bodies complete; then the slots are free again.
    for stream in &mut holders {
        send(stream, &body[1..]).await;
        assert_eq!(read_response(stream).await.status, 200);
    }
    publish(&server, "default", "lobby", json!("after")).await;
    assert_eq!(
        metric(
            &server,
            "switchboard_http_body_refusals_total{reason=\"busy\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_plugin_upload_that_stalls_gets_408() {
    let server = server_with("body_timeout = \"1s\"\nunauthenticated_body_timeout = \"1s\"").await;
    let mut stream = connect(server.addr).await;
    send(
        &mut stream,
        format!(
            "PUT /api/tenants/default/plugins/echo HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n\0asm",
            api_key("default")
        )
        .as_bytes(),
    )
    .await;
    read_response(&mut stream)
        .await
        .assert_error(408, "a stalled upload");
    expect_closed(&mut stream, "after a 408").await;
}

/// The peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn publish_bodies_sent_a_byte_per_segment_keep_memory_flat() {
    let server = BinaryServer::start(&config("", &[tenant("default", "", "")])).await;
    let pid = server.child.id().expect("running");
    let before = peak_rss_kib(pid);
    let body = publish_body(8 * 1024);
    let addr = server.addr;
    let head = publish_head(Some(&api_key("default")), body.len());
    // Blocking sockets on a thread of their own: one byte per write on each connection in
    // turn, with a pause per round so that each byte reaches the server as a read of its own.
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut streams: Vec<std::net::TcpStream> = (0..4)
            .map(|_| {
                let stream = std::net::TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                stream.set_read_timeout(Some(WAIT)).expect("timeout");
                stream
            })
            .collect();
        for stream in &mut streams {
            stream.write_all(head.as_bytes()).expect("head written");
        }
        for byte in &body {
            for stream in &mut streams {
                stream
                    .write_all(std::slice::from_ref(byte))
                    .expect("written");
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        streams
            .iter_mut()
            .map(|stream| {
                let mut answer = [0u8; 12];
                stream.read_exact(&mut answer).expect("an answer");
                String::from_utf8_lossy(&answer).into_owned()
            })
            .collect::<Vec<_>>()
    });
    let answers = timeout(Duration::from_secs(60), writer)
        .await
        .expect("the bodies were sent in time")
        .expect("the writer thread");
    for answer in answers {
        assert_eq!(answer, "HTTP/1.1 200", "a publish answered {answer}");
    }
    let grown_kib = peak_rss_kib(pid).saturating_sub(before);
    // 32 KiB of bodies; a read buffer kept per byte grew this by over 100 MiB.
    assert!(
        grown_kib < 12 * 1024,
        "peak memory grew {grown_kib} KiB for 32 KiB of bodies"
    );
}

// ---------------------------------------------------------------------------------------------
// responses to a client that does not read
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_never_reads_is_closed_at_the_write_timeout() {
    let server = server_with("write_timeout = \"500ms\"").await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut stream = timeout(WAIT, socket.connect(server.addr))
        .await
        .expect("connected in time")
        .expect("connect");
    // Pipelined requests whose answers are never read: the server's writes stall.
    let request = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n".repeat(64);
    let deadline = Instant::now() + WAIT;
    loop {
        if metric(&server, "switchboard_http_write_timeouts_total") >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a stalled response was never cut off"
        );
        // Writing stops mattering once the server stops reading; keep the loop bounded.
        let _ = timeout(Duration::from_millis(50), stream.write_all(&request)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// the socket budget
// ---------------------------------------------------------------------------------------------

/// Asserts an upgrade is refused with 503, `Retry-After` and the JSON body.
async fn assert_upgrade_refused(addr: SocketAddr, context: &str) {
    let bearer = format!("Bearer {}", token("late"));
    let request = upgrade_request(
        &format!("ws://{addr}/ws"),
        &[("authorization", bearer.as_str())],
    );
    match try_upgrade(request).await {
        Ok(_) => panic!("{context}: the upgrade was accepted past the socket budget"),
        Err(refusal) => {
            assert_eq!(refusal.status, 503, "{context}: {refusal:?}");
            assert_error_body(&refusal.body, context);
            assert!(
                refusal
                    .headers
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .is_some_and(|value| value.parse::<u64>().is_ok()),
                "{context}: no Retry-After in {refusal:?}"
            );
        }
    }
}

/// Connects once a place is free in the budget (a closed socket is released just after).
async fn connect_when_free(addr: SocketAddr, sub: &str) -> Client {
    let deadline = Instant::now() + WAIT;
    loop {
        let bearer = format!("Bearer {}", token(sub));
        let request = upgrade_request(
            &format!("ws://{addr}/ws"),
            &[("authorization", bearer.as_str())],
        );
        match try_upgrade(request).await {
            Ok((ws, _)) => return Client::from_socket(ws).await,
            Err(refusal) => {
                assert_eq!(refusal.status, 503, "{refusal:?}");
                assert!(Instant::now() < deadline, "no place was ever freed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::test]
async fn past_the_socket_budget_upgrades_get_503_and_health_still_answers() {
    let server = server_with("max_open_sockets = 4").await;
    let mut clients = Vec::new();
    for index in 0..4 {
        clients.push(connect_when_free(server.addr, &format!("user{index}")).await);
    }
    assert_eq!(metric(&server, "switchboard_open_sockets"), 4.0);
    assert_eq!(metric(&server, "switchboard_socket_capacity"), 4.0);
    assert_eq!(metric(&server, "switchboard_connection_capacity"), 4.0);
    assert_upgrade_refused(server.addr, "a fifth connection").await;
    for path in ["/healthz", "/readyz"] {
        let (status, headers, body) = http_get(&server.http_url(path)).await;
        assert_eq!(status, 200, "{path} at the socket budget: {body}");
        assert_eq!(
            headers
                .get("connection")
                .and_then(|value| value.to_str().ok()),
            Some("close"),
            "{path}"
        );
    }
    let (status, _, text) = http_get(&server.http_url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("switchboard_open_sockets 4"),
        "metrics at the budget:\n{text}"
    );
    // Anything else is refused too, with the JSON body.
    let mut stream = connect(server.addr).await;
    send(&mut stream, publish_head(None, 2).as_bytes()).await;
    read_response(&mut stream)
        .await
        .assert_error(503, "a publish at the socket budget");
    assert!(
        metric(
            &server,
            "switchboard_socket_refusals_total{outcome=\"answered\"}"
        ) >= 5.0
    );
    assert_eq!(
        metric(
            &server,
            "switchboard_handshake_rejections_total{tenant=\"default\",reason=\"socket_capacity\",status=\"503\"}"
        ),
        1.0
    );
    // A closed connection frees its place.
    clients.pop().expect("a client").close().await;
    let client = connect_when_free(server.addr, "again").await;
    assert!(client.welcome["payload"]["connectionId"].is_string());
}

#[tokio::test]
async fn past_the_refusal_reserve_connections_are_shed_with_a_503() {
    let server = server_with("max_open_sockets = 1\nrefusal_sockets = 1").await;
    let _client = connect_when_free(server.addr, "alice").await;
    // A silent connection holds the one refusal place until its head times out.
    let _silent = connect(server.addr).await;
    metric_reaches(
        &server,
        "switchboard_socket_refusals_total{outcome=\"answered\"}",
        1.0,
    )
    .await;
    let mut stream = connect(server.addr).await;
    let response = read_response(&mut stream).await;
    response.assert_error(503, "a connection past the reserve");
    assert_eq!(response.header("retry-after"), Some("1"));
    expect_closed(&mut stream, "a shed connection").await;
    assert_eq!(
        metric(
            &server,
            "switchboard_socket_refusals_total{outcome=\"shed\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn the_budget_follows_the_open_files_limit_of_the_real_binary() {
    // 64 descriptors: 24 kept for the process, 8 for refusals, 32 for connections.
    let config_text = config(
        "[http]\nreserved_files = 24\nrefusal_sockets = 8",
        &[tenant("default", "", "")],
    );
    let server = BinaryServer::start_with_open_files(&config_text, 64).await;
    let scrape = || async {
        let (status, _, text) = http_get(&format!("http://{}/metrics", server.addr)).await;
        assert_eq!(status, 200, "{text}");
        text
    };
    let text = scrape().await;
    assert!(
        text.contains("switchboard_socket_capacity 32\n"),
        "capacity from `ulimit -n 64`:\n{text}"
    );
    let mut clients = Vec::new();
    for index in 0..32 {
        clients.push(connect_when_free(server.addr, &format!("user{index}")).await);
    }
    let started = Instant::now();
    assert_upgrade_refused(server.addr, "connection 33 at the descriptor limit").await;
    let (status, _, body) = http_get(&format!("http://{}/healthz", server.addr)).await;
    assert_eq!(status, 200, "/healthz at the descriptor limit: {body}");
    assert!(
        started.elapsed() < WAIT,
        "answers at the limit took {:?}",
        started.elapsed()
    );
    let text = scrape().await;
    assert!(
        text.contains("switchboard_accept_errors_total 0\n"),
        "the listener ran out of descriptors:\n{text}"
    );
    assert!(text.contains("switchboard_open_sockets 32\n"), "{text}");
    for client in clients.drain(..4) {
        client.close().await;
    }
    let client = connect_when_free(server.addr, "again").await;
    assert!(client.welcome["payload"]["connectionId"].is_string());
}
