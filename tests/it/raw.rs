//! Raw-frame tenants (`protocol = "raw"`): no welcome and no envelopes; every text and binary
//! message goes to the tenant's frame plugin, whose answers go back as frames. What stays the
//! host's is checked here too: fragments, size, UTF-8 and rate limits, slow consumers, plugin
//! failures, swaps under traffic, draining, tenant confinement, and other nodes.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};

use crate::cluster::{redis_node_config, start_node};
use crate::external::RedisServer;
use crate::plugins::{plugin_tables, wasm_bytes};
use crate::support::{
    Client, TestServer, WAIT, WsClient, api_key, config, tenant, token, try_upgrade,
    upgrade_request, ws_url,
};

/// A `raw` tenant with these plugins and extra tables, beside an envelope tenant `default`.
fn raw_config(plugins: &[&str], extra: &str) -> String {
    config(
        "",
        &[
            tenant("default", "", ""),
            tenant("raw", "protocol = \"raw\"", &plugin_tables(plugins, extra)),
        ],
    )
}

/// A client of a raw-frame tenant: the socket, with nothing read yet.
struct Raw {
    ws: WsClient,
}

impl Raw {
    /// Connects to `tenant` at `addr` as `sub`, with the token in the query (as non-browser
    /// clients such as Autobahn's send it).
    async fn connect(addr: SocketAddr, tenant: &str, sub: &str) -> Raw {
        let url = format!("{}?token={}", ws_url(addr, tenant), token(sub));
        let (ws, response) = try_upgrade(upgrade_request(&url, &[]))
            .await
            .unwrap_or_else(|refusal| panic!("upgrade refused: {refusal:?}"));
        assert!(
            response.headers().get("sec-websocket-protocol").is_none(),
            "no subprotocol was offered, none is chosen"
        );
        Raw { ws }
    }

    async fn send(&mut self, message: Message) {
        timeout(WAIT, self.ws.send(message))
            .await
            .expect("sent in time")
            .expect("send succeeds");
    }

    async fn text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    async fn binary(&mut self, data: &[u8]) {
        self.send(Message::binary(data.to_vec())).await;
    }

    /// The next text or binary message (control frames skipped).
    async fn recv(&mut self) -> Message {
        loop {
            let next = timeout(WAIT, self.ws.next())
                .await
                .expect("a message arrived in time")
                .expect("the connection is open")
                .expect("a message, not an error");
            match next {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
    }

    async fn recv_binary(&mut self) -> Vec<u8> {
        match self.recv().await {
            Message::Binary(data) => data.to_vec(),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    /// Waits for the server's close frame, skipping anything before it.
    async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let next = timeout(WAIT, self.ws.next())
                .await
                .expect("the close arrived in time");
            match next {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (u16::from(code), reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("expected a close frame, got error {error}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Asserts that no message arrives within `window`.
    async fn expect_silence(&mut self, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// This connection's id, asked of `raw-relay` (op 0x05).
    async fn relay_id(&mut self) -> String {
        self.binary(&[0x05]).await;
        let answer = self.recv_binary().await;
        assert_eq!(answer[0], 0x85, "{answer:?}");
        String::from_utf8(answer[1..].to_vec()).expect("an id")
    }
}

/// `raw-relay`'s `len name payload` framing after an op byte.
fn relay_frame(op: u8, name: &str, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![op, u8::try_from(name.len()).expect("short name")];
    frame.extend_from_slice(name.as_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn a_raw_tenant_echoes_text_and_binary_with_no_welcome_and_no_envelope() {
    let server = TestServer::start(&raw_config(&["raw-echo"], "")).await;
    let mut client = Raw::connect(server.addr, "raw", "alice").await;
    // Nothing arrives unasked: no welcome.
    client.expect_silence(Duration::from_millis(200)).await;

    let cases = [
        Message::text("hello"),
        // Not an envelope, and would be closed 1008 in an envelope tenant.
        Message::text("{\"type\":\"ping\"}"),
        Message::text("héllo wörld ✓"),
        Message::text(""),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(Vec::new()),
        Message::binary(vec![42u8; 100_000]),
    ];
    for message in &cases {
        client.send(message.clone()).await;
    }
    // Pipelined: every answer comes back, in order, with its own frame type.
    for message in cases {
        assert_eq!(client.recv().await, message);
    }

    // The envelope tenant of the same node still speaks envelopes and still refuses binary.
    let mut envelope = Client::connect(&server, "default", "bob").await;
    envelope
        .send_text("{\"type\":\"ping\",\"correlationId\":\"1\"}")
        .await;
    assert_eq!(envelope.recv().await["type"], "pong");
    envelope
        .ws
        .send(Message::binary(vec![1u8]))
        .await
        .expect("sent");
    assert_eq!(envelope.expect_close().await.0, 1003);
}

#[tokio::test]
async fn fragmented_messages_reach_the_plugin_whole_with_pings_between_the_fragments() {
    let server = TestServer::start(&raw_config(&["raw-echo"], "")).await;
    let mut client = Raw::connect(server.addr, "raw", "alice").await;
    let fragment = |opcode: OpCode, fin: bool, data: &[u8]| {
        Message::Frame(Frame::message(data.to_vec(), opcode, fin))
    };
    client
        .send(fragment(
            OpCode::Data(OpData::Text),
            false,
            "frag".as_bytes(),
        ))
        .await;
    client.send(Message::Ping(b"mid".to_vec().into())).await;
    client
        .send(fragment(
            OpCode::Data(OpData::Continue),
            false,
            "men".as_bytes(),
        ))
        .await;
    client
        .send(fragment(
            OpCode::Data(OpData::Continue),
            true,
            "ted ✓".as_bytes(),
        ))
        .await;
    client
        .send(fragment(OpCode::Data(OpData::Binary), false, &[1, 2]))
        .await;
    client
        .send(fragment(OpCode::Data(OpData::Continue), true, &[3]))
        .await;
    // The server answers the ping between the fragments first: it is a control frame.
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let next = timeout(WAIT, client.ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("a message");
        match next {
            Message::Pong(data) => assert_eq!(&data[..], b"mid"),
            Message::Ping(_) => {}
            other => answers.push(other),
        }
    }
    assert_eq!(
        answers,
        vec![
            Message::text("fragmented ✓"),
            Message::binary(vec![1u8, 2, 3])
        ]
    );

    // A text message whose fragments are not UTF-8 together is closed 1007, as in envelope
    // tenants, and the plugin never sees it.
    client
        .send(fragment(OpCode::Data(OpData::Text), false, &[0xe2, 0x9c]))
        .await;
    client
        .send(fragment(OpCode::Data(OpData::Continue), true, &[0x41]))
        .await;
    assert_eq!(client.expect_close().await.0, 1007);
}

#[tokio::test]
async fn the_hosts_limits_hold_for_raw_frames() {
    let limits = "[tenants.limits]\nmax_message_bytes = 1000\nmessages_per_second = 5\nburst = 5\noutbound_queue_messages = 100\n";
    let server = TestServer::start(&raw_config(&["hostile"], limits)).await;

    // Size: one byte over the limit, text or binary, closes 1009.
    let mut big = Raw::connect(server.addr, "raw", "big").await;
    big.binary(&[1u8; 1000]).await;
    assert_eq!(big.recv_binary().await.len(), 1000);
    big.binary(&[1u8; 1001]).await;
    assert_eq!(big.expect_close().await.0, 1009);

    // Rate: the burst passes (and is answered), the next message closes 1008.
    let mut fast = Raw::connect(server.addr, "raw", "fast").await;
    for index in 0..6u8 {
        fast.binary(&[index]).await;
    }
    for index in 0..5u8 {
        assert_eq!(fast.recv_binary().await, vec![index]);
    }
    let (code, reason) = fast.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));

    // Slow consumer: more answers than the outbound queue holds closes 1013.
    let mut flooded = Raw::connect(server.addr, "raw", "flooded").await;
    flooded.text("flood").await;
    let (code, reason) = flooded.expect_close().await;
    assert_eq!((code, reason.as_str()), (1013, "slow consumer"));

    // A binary frame over the plugin's reply limit closes 1011 instead of reaching the client.
    let mut huge = Raw::connect(server.addr, "raw", "huge").await;
    huge.text("huge").await;
    let (code, reason) = huge.expect_close().await;
    assert_eq!(code, 1011);
    assert!(reason.contains("over the message size limit"), "{reason}");
}

#[tokio::test]
async fn a_failing_plugin_closes_only_its_connection_with_1011() {
    let extra = "[tenants.plugin_limits]\ncpu_budget = \"50ms\"\n";
    let server = TestServer::start(&raw_config(&["hostile"], extra)).await;
    let mut bystander = Raw::connect(server.addr, "raw", "bystander").await;

    // The plugin's own error answers nothing; the connection goes on.
    let mut refused = Raw::connect(server.addr, "raw", "refused").await;
    refused.text("error").await;
    refused.expect_silence(Duration::from_millis(300)).await;
    refused.text("still here").await;
    assert_eq!(refused.recv().await, Message::text("still here"));

    for (command, expected) in [
        ("panic", "handler failed"),
        (
            "loop",
            "handler failed: the handler ran past its CPU budget",
        ),
    ] {
        let mut client = Raw::connect(server.addr, "raw", command).await;
        client.text(command).await;
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 1011, "{command}: {reason}");
        assert!(reason.starts_with(expected), "{command}: {reason}");
    }

    bystander.binary(b"unharmed").await;
    assert_eq!(bystander.recv_binary().await, b"unharmed");
    let metrics = crate::support::http_get(&server.http_url("/metrics"))
        .await
        .2;
    assert!(
        metrics.contains("switchboard_plugin_errors_total{tenant=\"raw\",plugin=\"hostile\",kind=\"handler_error\"} 1"),
        "the plugin's own error is counted:\n{metrics}"
    );
}

#[tokio::test]
async fn a_raw_tenant_without_a_frame_plugin_closes_with_1011_and_an_old_plugin_still_works() {
    // `echo-before-raw-frames` was built before the plugin world had `raw-frames` and
    // `raw-handler` (tests/fixtures/plugins/README.md).
    let old = crate::support::fixtures().join("plugins/echo-before-raw-frames.wasm");
    let old_plugin = format!("[[tenants.plugins]]\npath = \"{}\"\n", old.display());
    let server = TestServer::start(&config(
        "",
        &[
            tenant("default", "", &old_plugin),
            tenant("raw", "protocol = \"raw\"", &old_plugin),
        ],
    ))
    .await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let reply = client
        .request(serde_json::json!({"type": "echo", "payload": {"still": "works"}}))
        .await;
    assert_eq!(reply["payload"], serde_json::json!({"still": "works"}));

    let mut raw = Raw::connect(server.addr, "raw", "alice").await;
    raw.text("anyone?").await;
    let (code, reason) = raw.expect_close().await;
    assert_eq!(code, 1011);
    assert!(reason.contains("no plugin that takes frames"), "{reason}");
}

#[tokio::test]
async fn two_frame_plugins_in_one_tenant_are_refused() {
    let config_text = raw_config(&["raw-echo", "raw-relay"], "");
    let config = crate::support::parse_config(&config_text);
    let error = match switchboard::server::start(config).await {
        Ok(_) => panic!("a tenant with two frame plugins started"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("`raw-echo`")
            && error.contains("`raw-relay`")
            && error.contains("raw-handler"),
        "{error}"
    );
}

#[tokio::test]
async fn raw_relay_publishes_binary_frames_to_other_members_and_to_one_connection() {
    let server = TestServer::start(&raw_config(&["raw-relay"], "")).await;
    relay_between(server.addr, server.addr).await;
}

#[tokio::test]
async fn raw_frames_cross_nodes_through_redis() {
    let redis = RedisServer::start().await;
    let node_config = format!(
        "{}{}",
        redis_node_config(&format!("url = \"{}\"\n", redis.url()), ""),
        tenant(
            "raw",
            "protocol = \"raw\"",
            &plugin_tables(&["raw-relay"], "")
        )
    );
    let first = start_node(&node_config).await;
    let second = start_node(&node_config).await;
    relay_between(first.addr, second.addr).await;
}

/// Alice on `first` and Bob on `second` join `lobby`; what Alice publishes reaches Bob (not
/// her), and a frame Bob sends to Alice's connection reaches her, bytes intact (every byte
/// value, including ones that are not UTF-8).
async fn relay_between(first: SocketAddr, second: SocketAddr) {
    let mut alice = Raw::connect(first, "raw", "alice").await;
    let mut bob = Raw::connect(second, "raw", "bob").await;
    for client in [&mut alice, &mut bob] {
        client.binary(b"\x01lobby").await;
        assert_eq!(client.recv_binary().await, b"\x81lobby");
    }
    let every_byte: Vec<u8> = (0..=255u8).collect();
    alice.binary(&relay_frame(0x03, "lobby", &every_byte)).await;
    assert_eq!(
        bob.recv_binary().await,
        relay_frame(0x90, "lobby", &every_byte)
    );
    alice.expect_silence(Duration::from_millis(200)).await;

    let alice_id = alice.relay_id().await;
    let bob_id = bob.relay_id().await;
    bob.binary(&relay_frame(0x04, &alice_id, b"\x01direct"))
        .await;
    assert_eq!(
        alice.recv_binary().await,
        relay_frame(0x91, &bob_id, b"\x01direct")
    );

    // Bad input gets a clear refusal and changes nothing.
    bob.binary(b"\x03\x09lob").await;
    let refusal = bob.recv_binary().await;
    assert_eq!(refusal[0], 0xEE, "{refusal:?}");
    bob.binary(&relay_frame(0x04, "n-nobody-1", b"x")).await;
    let refusal = bob.recv_binary().await;
    assert_eq!(refusal[0], 0xEE, "{refusal:?}");
    assert!(String::from_utf8_lossy(&refusal[1..]).contains("does not exist"));

    // After leaving, Bob gets nothing more from the channel.
    bob.binary(b"\x02lobby").await;
    assert_eq!(bob.recv_binary().await, b"\x82lobby");
    alice.binary(&relay_frame(0x03, "lobby", b"gone")).await;
    bob.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_frame_plugin_reaches_no_connection_of_another_tenant() {
    let server = TestServer::start(&config(
        "",
        &[
            tenant("default", "", &plugin_tables(&["raw-relay"], "")),
            tenant(
                "raw",
                "protocol = \"raw\"",
                &plugin_tables(&["hostile"], ""),
            ),
        ],
    ))
    .await;
    let victim = Client::connect(&server, "default", "victim").await;
    let victim_id = victim.connection_id();
    let mut attacker = Raw::connect(server.addr, "raw", "attacker").await;
    attacker.text(&format!("poke {victim_id}")).await;
    assert_eq!(attacker.recv().await, Message::text("not_found"));
    attacker.text("whoami").await;
    let Message::Text(own_id) = attacker.recv().await else {
        panic!("an id");
    };
    attacker.text(&format!("poke {own_id}")).await;
    assert_eq!(attacker.recv().await, Message::text("poked"));
    assert_eq!(attacker.recv().await, Message::text("sent"));
}

#[tokio::test]
async fn a_swap_under_traffic_answers_every_message_once_in_order() {
    let server = TestServer::start(&raw_config(
        &["raw-echo"],
        "[tenants.limits]\nmessages_per_second = 10000\nburst = 10000\n",
    ))
    .await;
    let mut clients = Vec::new();
    for index in 0..4 {
        clients.push(Raw::connect(server.addr, "raw", &format!("sender-{index}")).await);
    }
    let key = api_key("raw");
    let swapped = std::sync::atomic::AtomicBool::new(false);
    let swap = async {
        // A different build of the same plugin (one more custom section), so it is a new version.
        let mut rebuilt = wasm_bytes("raw-echo");
        rebuilt.extend_from_slice(&[0, 9, 8]);
        rebuilt.extend_from_slice(b"build-2!");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let request = reqwest::Client::new()
            .put(server.http_url("/api/tenants/raw/plugins/raw-echo"))
            .bearer_auth(&key)
            .body(rebuilt);
        let response = timeout(Duration::from_secs(60), request.send())
            .await
            .expect("answered in time")
            .expect("request succeeds");
        assert_eq!(response.status().as_u16(), 200);
        swapped.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let swapped = &swapped;
    let traffic = async {
        let senders = clients
            .iter_mut()
            .enumerate()
            .map(|(index, client)| async move {
                let (mut write, mut read) = (&mut client.ws).split();
                let (count_tx, mut count_rx) = tokio::sync::oneshot::channel::<u32>();
                // Sends until the swap is done, and 100 more on the new version (at most 20 000
                // in all); then says how many.
                let sending = async move {
                    let mut seq = 0u32;
                    let mut after_swap = 0;
                    while after_swap < 100 && seq < 20_000 {
                        let frame = if seq.is_multiple_of(2) {
                            Message::text(format!("{index}:{seq}"))
                        } else {
                            Message::binary(format!("{index}:{seq}").into_bytes())
                        };
                        write.send(frame).await.expect("sent");
                        seq += 1;
                        if swapped.load(std::sync::atomic::Ordering::SeqCst) {
                            after_swap += 1;
                        }
                        if seq.is_multiple_of(20) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    let _ = count_tx.send(seq);
                };
                let receiving = async {
                    let mut seq = 0u32;
                    let mut total = None;
                    while total != Some(seq) {
                        let next = tokio::select! {
                            biased;
                            next = timeout(Duration::from_secs(30), read.next()) => next
                                .expect("every answer in time")
                                .expect("open")
                                .expect("a message"),
                            sent = &mut count_rx, if total.is_none() => {
                                total = Some(sent.expect("the sender says how many"));
                                continue;
                            }
                        };
                        let text = match next {
                            Message::Text(text) if seq.is_multiple_of(2) => text.to_string(),
                            Message::Binary(data) if !seq.is_multiple_of(2) => {
                                String::from_utf8(data.to_vec()).expect("utf-8")
                            }
                            Message::Ping(_) | Message::Pong(_) => continue,
                            other => panic!("sender {index}, message {seq}: got {other:?}"),
                        };
                        assert_eq!(text, format!("{index}:{seq}"), "once each, in order");
                        seq += 1;
                    }
                    seq
                };
                let ((), answered) = tokio::join!(sending, receiving);
                assert!(answered > 100, "sender {index}: {answered} answered");
            });
        futures_util::future::join_all(senders).await;
    };
    let before = served_sha(&server).await;
    tokio::join!(swap, traffic);
    let after = served_sha(&server).await;
    assert_ne!(before, after, "the new build serves");
}

/// The sha256 of the `raw-echo` version the `raw` tenant serves.
async fn served_sha(server: &TestServer) -> String {
    let response = reqwest::Client::new()
        .get(server.http_url("/api/tenants/raw/plugins"))
        .bearer_auth(api_key("raw"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON");
    body[0]["sha256"]
        .as_str()
        .unwrap_or_else(|| panic!("a sha256 in {body}"))
        .to_owned()
}

#[tokio::test]
async fn draining_closes_raw_connections_with_1001() {
    let server = TestServer::start(&config(
        "[shutdown]\ndrain_timeout = \"10s\"\n",
        &[tenant(
            "raw",
            "protocol = \"raw\"",
            &plugin_tables(&["raw-echo"], ""),
        )],
    ))
    .await;
    let mut client = Raw::connect(server.addr, "raw", "alice").await;
    client.text("before").await;
    assert_eq!(client.recv().await, Message::text("before"));
    let client_side = async {
        let closed = client.expect_close().await;
        // Reading on sends the answer to the close and sees the server end the connection.
        crate::frames::read_to_end_of(&mut client.ws).await;
        closed
    };
    let (closed, left) = tokio::join!(client_side, server.shutdown());
    assert_eq!(closed, (1001, "server shutting down".to_owned()));
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_client_close_code_is_answered_and_counted() {
    let server = TestServer::start(&raw_config(&["raw-echo"], "")).await;
    let mut client = Raw::connect(server.addr, "raw", "alice").await;
    client
        .ws
        .close(Some(CloseFrame {
            code: CloseCode::Library(4321),
            reason: "done".into(),
        }))
        .await
        .expect("close sent");
    let answer = timeout(WAIT, client.ws.next()).await.expect("answered");
    match answer {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4321),
        None => {}
        other => panic!("expected the close answered, got {other:?}"),
    }
    crate::support::wait_for_metric(
        &server,
        "switchboard_closes_total{tenant=\"raw\",code=\"other\"} 1",
        "the client's close is counted",
    )
    .await;
}

#[tokio::test]
async fn the_raw_example_serves_its_echo_and_relay_tenants() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/raw/switchboard.toml"))
        .expect("the example config")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        // The tests' build of the same plugins.
        .replace(
            "../../plugins/target/wasm32-wasip2/release",
            env!("PLUGIN_DIR"),
        );
    let mut config =
        switchboard::config::parse(&text, "switchboard.toml", &root.join("examples/raw"))
            .unwrap_or_else(|error| panic!("the example config is valid: {error}"));
    config.plugin_bounds.compiler_path = Some(crate::support::binary());
    let server = switchboard::server::start(config).await.expect("started");
    // Both tenants verify with the example's development secret.
    let token = crate::support::sign(
        &crate::support::claims("alice", 3600, serde_json::json!({})),
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"raw-dev-secret-change-me"),
    );
    for tenant in ["echo", "relay"] {
        let url = format!("{}?token={token}", ws_url(server.addr, tenant));
        let (ws, _) = try_upgrade(upgrade_request(&url, &[]))
            .await
            .unwrap_or_else(|refusal| panic!("{tenant}: refused {refusal:?}"));
        let mut client = Raw { ws };
        if tenant == "echo" {
            client.binary(&[9, 8, 7]).await;
            assert_eq!(client.recv_binary().await, [9, 8, 7]);
        } else {
            client.binary(b"\x01lobby").await;
            assert_eq!(client.recv_binary().await, b"\x81lobby");
        }
    }
    timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("drained");
}

#[tokio::test]
async fn the_heartbeat_pings_raw_connections_and_drops_a_silent_one() {
    let server = TestServer::start(&config(
        "[heartbeat]\ninterval = \"200ms\"\ntimeout = \"300ms\"\n",
        &[tenant(
            "raw",
            "protocol = \"raw\"",
            &plugin_tables(&["raw-echo"], ""),
        )],
    ))
    .await;
    // A client that reads (tungstenite answers each ping) stays.
    let mut alive = Raw::connect(server.addr, "raw", "alive").await;
    let pinged = timeout(WAIT, async {
        loop {
            match alive.ws.next().await {
                Some(Ok(Message::Ping(_))) => return,
                Some(Ok(_)) => {}
                other => panic!("expected a ping, got {other:?}"),
            }
        }
    })
    .await;
    assert!(pinged.is_ok(), "the server pings a raw connection");
    // A client that reads nothing never answers: it is dropped, and counted as 1006.
    let _silent = Raw::connect(server.addr, "raw", "silent").await;
    // Meanwhile the live client keeps reading, which answers the pings.
    let keep_reading = async {
        while let Some(Ok(message)) = alive.ws.next().await {
            assert!(
                matches!(message, Message::Ping(_) | Message::Pong(_)),
                "{message:?}"
            );
        }
        panic!("the live connection ended");
    };
    tokio::select! {
        () = crate::support::wait_for_metric(
            &server,
            "switchboard_closes_total{tenant=\"raw\",code=\"1006\"} 1",
            "the silent connection is dropped",
        ) => {}
        () = keep_reading => {}
    }
    alive.text("still here").await;
    assert_eq!(alive.recv().await, Message::text("still here"));
}
