//! Frames: envelope validation (1008), binary (1003), UTF-8 (1007), size (1009), the rate
//! limit, slow consumers (1013) and the replies to built-in types (docs/protocol.md, "Frames",
//! "Message types", "Replies and errors", "Limits", "Closing").

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::ids::ConnId;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};

use crate::support::{Client, TestServer, WAIT, config, eventually, publish, tenant};

// ---- helpers shared by the frames, rooms, heartbeat and shutdown tests ----

/// Reads text frames until none arrives within `window` of the last one; control frames are
/// skipped (and do not extend the window). Panics if the connection closes, more than 10 000
/// text frames arrive, or the whole read takes longer than `WAIT`.
pub(crate) async fn frames_until_silence(client: &mut Client, window: Duration) -> Vec<Value> {
    let limit = Instant::now() + WAIT;
    let mut frames = Vec::new();
    let mut quiet_until = Instant::now() + window;
    loop {
        assert!(frames.len() < 10_000, "too many frames: {}", frames.len());
        assert!(Instant::now() < limit, "no silence within {WAIT:?}");
        match timeout_at(quiet_until, client.ws.next()).await {
            Err(_) => return frames,
            Ok(Some(Ok(Message::Text(text)))) => {
                frames.push(serde_json::from_str(text.as_str()).expect("server sends JSON"));
                quiet_until = Instant::now() + window;
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected text frames or silence, got {other:?}"),
        }
    }
}

/// Reads to the end of the stream (answering the server's close, if any) within `WAIT`.
pub(crate) async fn read_to_end(client: &mut Client) {
    read_to_end_of(&mut client.ws).await;
}

/// `read_to_end` of a bare socket.
pub(crate) async fn read_to_end_of(ws: &mut crate::support::WsClient) {
    let drained = timeout(WAIT, async {
        let mut frames = 0_u32;
        while let Some(Ok(_)) = ws.next().await {
            frames += 1;
            assert!(frames < 100_000, "the stream does not end");
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection did not end in time");
}

/// A config with one `default` tenant whose `[tenants.limits]` section holds `limits`.
fn limits_config(limits: &str) -> String {
    config(
        "",
        &[tenant(
            "default",
            "",
            &format!("[tenants.limits]\n{limits}\n"),
        )],
    )
}

/// A text frame (one fragment) with arbitrary bytes.
fn text_fragment(bytes: Vec<u8>, opcode: OpData, is_final: bool) -> Message {
    Message::Frame(Frame::message(bytes, OpCode::Data(opcode), is_final))
}

/// Sends `text` as a fragmented text message, cut at the given byte offsets.
async fn send_fragmented(client: &mut Client, bytes: &[u8], cuts: &[usize]) {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(bytes.len());
    let pieces = bounds.len() - 1;
    for index in 0..pieces {
        let opcode = if index == 0 {
            OpData::Text
        } else {
            OpData::Continue
        };
        let piece = bytes[bounds[index]..bounds[index + 1]].to_vec();
        let message = text_fragment(piece, opcode, index + 1 == pieces);
        timeout(WAIT, client.ws.send(message))
            .await
            .expect("send in time")
            .expect("send succeeds");
    }
}

/// Opens a fresh connection, sends `text` and expects close 1008 `invalid envelope...`.
async fn assert_invalid_envelope(server: &TestServer, text: &str) {
    let mut client = Client::connect(server, "default", "eve").await;
    client.send_text(text).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1008, "frame {text:?} closed with {code} {reason:?}");
    assert!(
        reason.starts_with("invalid envelope"),
        "frame {text:?}: reason {reason:?}"
    );
    read_to_end(&mut client).await;
}

/// An envelope of exactly `size` bytes: a correlated ping padded through its payload.
fn ping_of_size(size: usize, correlation_id: &str) -> String {
    let empty = json!({"type": "ping", "correlationId": correlation_id, "payload": ""}).to_string();
    assert!(
        size >= empty.len(),
        "size {size} below the minimum {}",
        empty.len()
    );
    let text = json!({"type": "ping", "correlationId": correlation_id,
                      "payload": "x".repeat(size - empty.len())})
    .to_string();
    assert_eq!(text.len(), size);
    text
}

// ---- envelope validation: 1008 ----

#[tokio::test]
async fn text_that_is_not_json_closes_1008() {
    let server = TestServer::default().await;
    for text in [
        "hello",
        "",
        "{",
        "{\"type\":\"ping\"",
        "{\"type\":\"ping\"} trailing",
        "{type: \"ping\"}",
    ] {
        assert_invalid_envelope(&server, text).await;
    }
    let node = server.node().clone();
    eventually("registry empty", || node.registry.is_empty()).await;
}

#[tokio::test]
async fn json_that_is_not_an_object_closes_1008() {
    let server = TestServer::default().await;
    for text in [
        "[]",
        r#"[{"type":"ping"}]"#,
        r#""ping""#,
        "42",
        "null",
        "true",
    ] {
        assert_invalid_envelope(&server, text).await;
    }
}

#[tokio::test]
async fn missing_or_malformed_type_closes_1008() {
    let server = TestServer::default().await;
    let too_long = json!({"type": "t".repeat(129)}).to_string();
    // 65 characters but 129 bytes: the limit counts bytes.
    let too_long_multibyte = json!({"type": format!("{}a", "é".repeat(64))}).to_string();
    for text in [
        "{}",
        r#"{"channel":"lobby","payload":{}}"#,
        r#"{"type":null}"#,
        r#"{"type":42}"#,
        r#"{"type":true}"#,
        r#"{"type":["ping"]}"#,
        r#"{"type":{"name":"ping"}}"#,
        r#"{"type":""}"#,
        too_long.as_str(),
        too_long_multibyte.as_str(),
    ] {
        assert_invalid_envelope(&server, text).await;
    }
}

#[tokio::test]
async fn type_of_128_bytes_is_accepted_and_unknown() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    for msg_type in ["t".repeat(128), "é".repeat(64)] {
        assert_eq!(msg_type.len(), 128);
        let reply = client.request(json!({"type": msg_type})).await;
        assert_eq!(reply["type"], "error", "reply: {reply}");
        assert_eq!(reply["payload"]["code"], "unknown_type", "reply: {reply}");
    }
    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn escaped_strings_are_decoded_before_routing_and_length_checks() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client
        .send_text(r#"{"type":"pi\u006eg","correlationId":"e\u0031"}"#)
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "e1"})
    );
    // 64 escaped `é` are 384 bytes of JSON text but 128 bytes of `type`: accepted.
    let escaped = "\\u00e9".repeat(64);
    client
        .send_text(&format!(r#"{{"type":"{escaped}","correlationId":"e2"}}"#))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["correlationId"], "e2", "reply: {reply}");
    assert_eq!(reply["payload"]["code"], "unknown_type", "reply: {reply}");
    // 65 of them are 130 bytes: refused.
    let escaped = "\\u00e9".repeat(65);
    assert_invalid_envelope(&server, &format!(r#"{{"type":"{escaped}"}}"#)).await;
}

#[tokio::test]
async fn malformed_channel_closes_1008() {
    let server = TestServer::default().await;
    let too_long = json!({"type": "room:join", "channel": "c".repeat(257)}).to_string();
    for text in [
        r#"{"type":"room:join","channel":42}"#,
        r#"{"type":"room:join","channel":true}"#,
        r#"{"type":"room:join","channel":["lobby"]}"#,
        r#"{"type":"room:join","channel":{"name":"lobby"}}"#,
        r#"{"type":"room:join","channel":""}"#,
        r#"{"type":"ping","channel":""}"#,
        too_long.as_str(),
    ] {
        assert_invalid_envelope(&server, text).await;
    }
}

#[tokio::test]
async fn channel_of_256_bytes_is_accepted() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let channel = "c".repeat(256);
    let ack = client.join(&channel).await;
    assert_eq!(ack["payload"]["channel"], json!(channel));
}

#[tokio::test]
async fn malformed_correlation_id_closes_1008() {
    let server = TestServer::default().await;
    let too_long = json!({"type": "ping", "correlationId": "i".repeat(129)}).to_string();
    for text in [
        r#"{"type":"ping","correlationId":42}"#,
        r#"{"type":"ping","correlationId":false}"#,
        r#"{"type":"ping","correlationId":["a"]}"#,
        r#"{"type":"ping","correlationId":{}}"#,
        r#"{"type":"ping","correlationId":""}"#,
        too_long.as_str(),
    ] {
        assert_invalid_envelope(&server, text).await;
    }
}

#[tokio::test]
async fn correlation_id_of_128_bytes_is_accepted() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let id = "i".repeat(128);
    client
        .send(json!({"type": "ping", "correlationId": id}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": id})
    );
}

#[tokio::test]
async fn null_optional_fields_mean_absent() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;

    client
        .send_text(r#"{"type":"ping","correlationId":null}"#)
        .await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));

    client
        .send_text(r#"{"type":"ping","channel":null,"payload":null,"correlationId":null}"#)
        .await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));

    // A join whose channel is null has no channel: bad_request, not a join of "null".
    client
        .send_text(r#"{"type":"room:join","channel":null,"correlationId":"j1"}"#)
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "error", "reply: {reply}");
    assert_eq!(reply["correlationId"], "j1");
    assert_eq!(reply["payload"]["code"], "bad_request");

    // An unknown type without a correlationId (null): the error carries none.
    client
        .send_text(r#"{"type":"nope","correlationId":null}"#)
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "error", "reply: {reply}");
    assert!(reply.get("correlationId").is_none(), "reply: {reply}");
    assert_eq!(reply["payload"]["code"], "unknown_type");

    // A join with a null payload is a plain join: no `recovered` in the ack.
    client
        .send_text(r#"{"type":"room:join","channel":"lobby","payload":null,"correlationId":"j2"}"#)
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["type"], "ack", "reply: {ack}");
    assert_eq!(ack["correlationId"], "j2");
    assert_eq!(ack["payload"]["channel"], "lobby");
    assert!(ack["payload"].get("recovered").is_none(), "ack: {ack}");
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unknown_extra_fields_are_ignored() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client
        .send_text(
            r#"{"type":"ping","correlationId":"p1","extra":1,"nested":{"a":[1,2]},"seq":99,"Type":"x"}"#,
        )
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "p1"})
    );
    client
        .send_text(
            r#"{"unknown":null,"type":"room:join","channel":"lobby","correlationId":"j1","z":"z"}"#,
        )
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["type"], "ack", "reply: {ack}");
    assert_eq!(ack["correlationId"], "j1");
    assert_eq!(ack["payload"]["channel"], "lobby");
}

#[tokio::test]
async fn whitespace_around_the_object_is_accepted() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client
        .send_text(" \n\t{ \"type\" : \"ping\" , \"correlationId\" : \"w1\" } \n")
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "w1"})
    );
}

// ---- 1003, 1007, 1009 ----

#[tokio::test]
async fn binary_frame_closes_1003() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    timeout(
        WAIT,
        client
            .ws
            .send(Message::binary(br#"{"type":"ping"}"#.to_vec())),
    )
    .await
    .expect("send in time")
    .expect("send succeeds");
    let (code, _) = client.expect_close().await;
    assert_eq!(code, 1003);
    read_to_end(&mut client).await;
    let node = server.node().clone();
    eventually("registry empty", || node.registry.is_empty()).await;
}

#[tokio::test]
async fn invalid_utf8_text_closes_1007() {
    let server = TestServer::default().await;
    let invalid: [&[u8]; 3] = [
        b"{\"type\":\"\xC3\x28\"}",
        b"{\"type\":\"ping\",\"payload\":\"\xFF\xFE\"}",
        b"{\"type\":\"\xED\xA0\x80\"}",
    ];
    for bytes in invalid {
        let mut client = Client::connect(&server, "default", "alice").await;
        timeout(
            WAIT,
            client
                .ws
                .send(text_fragment(bytes.to_vec(), OpData::Text, true)),
        )
        .await
        .expect("send in time")
        .expect("send succeeds");
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 1007, "bytes {bytes:?}: reason {reason:?}");
        read_to_end(&mut client).await;
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_fragmented_message_closes_1007() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let bytes = b"{\"type\":\"ping\",\"payload\":\"ab\xFFcd\"}";
    send_fragmented(&mut client, bytes, &[10, 20]).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1007, "reason {reason:?}");
}

#[tokio::test]
async fn utf8_character_split_across_fragments_is_accepted() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let text = r#"{"type":"ping","correlationId":"é-split"}"#;
    let cut = text.find('é').expect("é in text") + 1;
    assert!(!text.is_char_boundary(cut));
    send_fragmented(&mut client, text.as_bytes(), &[cut]).await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "é-split"})
    );
}

#[tokio::test]
async fn message_over_the_size_limit_closes_1009() {
    let server = TestServer::start(&limits_config("max_message_bytes = 1024")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client.send_text(&ping_of_size(1025, "big")).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1009, "reason {reason:?}");
    read_to_end(&mut client).await;
    let node = server.node().clone();
    eventually("registry empty", || node.registry.is_empty()).await;
}

#[tokio::test]
async fn message_of_exactly_the_size_limit_is_accepted() {
    let server = TestServer::start(&limits_config("max_message_bytes = 1024")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client.send_text(&ping_of_size(1024, "exact")).await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "exact"})
    );
    client.send_text(&ping_of_size(1023, "under")).await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "under"})
    );
}

#[tokio::test]
async fn fragmented_message_over_the_limit_closes_1009() {
    let server = TestServer::start(&limits_config("max_message_bytes = 1024")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    // Four fragments of 400 bytes: each is under the limit, the message (1600) is over it.
    let text = ping_of_size(1600, "frag");
    send_fragmented(&mut client, text.as_bytes(), &[400, 800, 1200]).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1009, "reason {reason:?}");
}

#[tokio::test]
async fn fragmented_message_of_exactly_the_limit_is_accepted() {
    let server = TestServer::start(&limits_config("max_message_bytes = 1024")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let text = ping_of_size(1024, "frag-exact");
    send_fragmented(&mut client, text.as_bytes(), &[300, 600, 900]).await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "frag-exact"})
    );
}

// ---- rate limit ----

/// Sends `count` correlated pings, waiting for each pong.
async fn pings_answered(client: &mut Client, count: usize) {
    for index in 0..count {
        let reply = client.request(json!({"type": "ping"})).await;
        assert_eq!(reply["type"], "pong", "ping {index}: {reply}");
    }
}

#[tokio::test]
async fn sixth_quick_message_exceeds_the_rate_limit() {
    let server = TestServer::start(&limits_config("burst = 5\nmessages_per_second = 1")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    pings_answered(&mut client, 5).await;
    client
        .send(json!({"type": "ping", "correlationId": "sixth"}))
        .await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1008);
    assert_eq!(reason, "rate limit exceeded");
    read_to_end(&mut client).await;
    let node = server.node().clone();
    eventually("registry empty", || node.registry.is_empty()).await;
}

#[tokio::test]
async fn every_data_frame_counts_against_the_rate_limit() {
    let server = TestServer::start(&limits_config("burst = 5\nmessages_per_second = 1")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    // Uncorrelated messages and errors count the same as correlated pings.
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
    client.send(json!({"type": "nope"})).await;
    assert_eq!(client.recv().await["payload"]["code"], "unknown_type");
    client
        .send(json!({"type": "room:leave", "channel": "x"}))
        .await;
    assert_eq!(client.recv().await["payload"]["code"], "not_member");
    client.join("lobby").await;
    pings_answered(&mut client, 1).await;
    client.send(json!({"type": "ping"})).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));
}

#[tokio::test]
async fn ping_frames_do_not_count_against_the_rate_limit() {
    let server = TestServer::start(&limits_config("burst = 5\nmessages_per_second = 1")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let mut pongs = 0;
    for index in 0..20_u8 {
        timeout(WAIT, client.ws.send(Message::Ping(vec![index].into())))
            .await
            .expect("send in time")
            .expect("send succeeds");
        // Each ping frame is answered with a pong frame carrying its payload.
        let reply = timeout(WAIT, client.ws.next())
            .await
            .expect("a pong in time")
            .expect("open")
            .expect("valid");
        assert_eq!(reply, Message::Pong(vec![index].into()));
        pongs += 1;
    }
    assert_eq!(pongs, 20);
    // The bucket is still full: five data messages pass, the sixth does not.
    pings_answered(&mut client, 5).await;
    client.send(json!({"type": "ping"})).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));
}

#[tokio::test]
async fn rate_limit_counts_messages_after_reassembly() {
    let server = TestServer::start(&limits_config("burst = 5\nmessages_per_second = 1")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    // Five messages of four fragments each: 20 frames, but 5 messages.
    for index in 0..5 {
        let text = json!({"type": "ping", "correlationId": format!("f{index}")}).to_string();
        send_fragmented(&mut client, text.as_bytes(), &[4, 9, 15]).await;
        assert_eq!(
            client.recv().await,
            json!({"type": "pong", "correlationId": format!("f{index}")})
        );
    }
    let text = json!({"type": "ping", "correlationId": "f5"}).to_string();
    send_fragmented(&mut client, text.as_bytes(), &[4, 9, 15]).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));
}

#[tokio::test]
async fn rate_limit_refills_over_time() {
    let server = TestServer::start(&limits_config("burst = 5\nmessages_per_second = 2")).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    pings_answered(&mut client, 5).await;
    // 700 ms at 2/s refills 1.4 tokens: one message passes, the next does not.
    tokio::time::sleep(Duration::from_millis(700)).await;
    pings_answered(&mut client, 1).await;
    client.send(json!({"type": "ping"})).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));
}

// ---- slow consumer: 1013 ----

/// Publishes `payload_bytes`-sized messages to `channel` while the client with `id` does not
/// read, until its outbound queue overflows; returns how many were published.
async fn publish_until_overflow(
    server: &TestServer,
    id: &str,
    channel: &str,
    payload_bytes: usize,
) -> usize {
    let conn = server
        .node()
        .registry
        .get(&ConnId::from(id))
        .expect("connection registered");
    let payload = json!("x".repeat(payload_bytes));
    let started = Instant::now();
    for published in 1..=2_000 {
        publish(server, "default", channel, payload.clone()).await;
        if conn.outbox.is_closing() {
            return published;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no overflow after {published} publishes"
        );
    }
    panic!("no overflow after 2000 publishes of {payload_bytes} bytes");
}

async fn assert_slow_consumer_closed(limits: &str) {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "",
            &format!("[tenants.limits]\n{limits}\n[tenants.history]\nsize = 0\n"),
        )],
    ))
    .await;
    // The observer shares only a quiet room with the slow client, so it sees none of the flood.
    let mut observer = Client::connect(&server, "default", "observer").await;
    observer.join("quiet").await;
    let mut slow = Client::connect(&server, "default", "slow").await;
    slow.join("quiet").await;
    slow.join("firehose").await;
    let slow_id = slow.connection_id();
    assert_eq!(observer.recv().await["type"], "presence:join");
    let published = publish_until_overflow(&server, &slow_id, "firehose", 64 * 1024).await;
    assert!(published > 8, "overflowed after only {published} publishes");
    // Now the client reads: whatever was written before the overflow, then the close.
    let (code, reason) = slow.expect_close_skipping_text().await;
    assert_eq!(code, 1013);
    assert_eq!(reason, "slow consumer");
    read_to_end(&mut slow).await;
    // Its rooms are told.
    assert_eq!(
        observer.recv().await,
        json!({"type": "presence:leave", "channel": "quiet",
               "payload": {"userId": "slow", "connectionId": slow_id}})
    );
    observer.close().await;
    let node = server.node().clone();
    eventually("registry empty", || node.registry.is_empty()).await;
    eventually("rooms empty", || node.rooms.is_empty()).await;
}

#[tokio::test]
async fn slow_consumer_over_the_message_bound_closes_1013() {
    // The byte bound is out of reach: 2000 publishes of 64 KiB are 128 MiB.
    assert_slow_consumer_closed("outbound_queue_messages = 8\noutbound_queue_bytes = 1073741824")
        .await;
}

#[tokio::test]
async fn slow_consumer_over_the_byte_bound_closes_1013() {
    // 512 KiB is 8 messages of 64 KiB; the message bound is out of reach of 2000 publishes.
    assert_slow_consumer_closed("outbound_queue_bytes = 524288\noutbound_queue_messages = 100000")
        .await;
}

#[tokio::test]
async fn reading_consumer_is_not_closed_by_the_bound() {
    // The bound is on the queue at any moment, not on the traffic in total.
    let server = TestServer::start(&limits_config(
        "outbound_queue_messages = 2\noutbound_queue_bytes = 200000",
    ))
    .await;
    let mut reader = Client::connect(&server, "default", "reader").await;
    reader.join("news").await;
    let payload = json!("y".repeat(64 * 1024));
    for _ in 0..40 {
        let seq = publish(&server, "default", "news", payload.clone()).await;
        let message = reader.recv().await;
        assert_eq!(message["seq"], json!(seq));
        assert_eq!(message["payload"], payload);
    }
    let pong = reader.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

// ---- replies ----

#[tokio::test]
async fn unknown_type_is_an_error_and_the_connection_stays_open() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client
        .send(
            json!({"type": "chat:send", "channel": "lobby", "payload": {"text": "hi"},
                     "correlationId": "u1"}),
        )
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["correlationId"], "u1");
    assert_eq!(reply["payload"]["code"], "unknown_type");
    assert!(
        reply["payload"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "reply: {reply}"
    );
    let keys: Vec<&String> = reply.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 3, "reply: {reply}");

    client
        .send(json!({"type": "ping", "correlationId": "after"}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "after"})
    );
}

#[tokio::test]
async fn uncorrelated_unknown_type_gets_an_error_without_correlation_id() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client.send(json!({"type": "mystery"})).await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "error");
    assert!(reply.get("correlationId").is_none(), "reply: {reply}");
    assert_eq!(reply["payload"]["code"], "unknown_type");
    assert!(reply["payload"]["message"].is_string(), "reply: {reply}");
    client.expect_silence(Duration::from_millis(200)).await;
    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn ping_gets_a_pong_with_or_without_correlation_id() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client
        .send(json!({"type": "ping", "correlationId": "abc-1"}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "abc-1"})
    );
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
    // A payload does not change the answer.
    client
        .send(json!({"type": "ping", "payload": {"t": 1}, "correlationId": "abc-2"}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": "abc-2"})
    );
    // An id that needs JSON escaping comes back unchanged.
    let odd = "quote\" back\\slash\nnewline é";
    client
        .send(json!({"type": "ping", "correlationId": odd}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "correlationId": odd})
    );
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn exactly_one_reply_per_correlation_id() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let requests = [
        json!({"type": "ping", "correlationId": "p1"}),
        json!({"type": "mystery", "correlationId": "u1"}),
        json!({"type": "room:join", "channel": "lobby", "correlationId": "j1"}),
        json!({"type": "room:join", "channel": "lobby", "correlationId": "j2"}),
        json!({"type": "room:leave", "channel": "nowhere", "correlationId": "l1"}),
        json!({"type": "room:join", "correlationId": "b1"}),
        json!({"type": "room:leave", "correlationId": "b2"}),
        json!({"type": "room:join", "channel": "lobby", "payload": {"since": -1},
               "correlationId": "b3"}),
        json!({"type": "room:leave", "channel": "lobby", "correlationId": "l2"}),
        json!({"type": "room:leave", "channel": "lobby", "correlationId": "l3"}),
        json!({"type": "ping", "correlationId": "p2"}),
        json!({"type": "ping"}),
    ];
    for request in &requests {
        client.send(request.clone()).await;
    }
    let frames = frames_until_silence(&mut client, Duration::from_millis(400)).await;

    let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
    let mut uncorrelated = Vec::new();
    for frame in frames {
        match frame["correlationId"].as_str() {
            Some(id) => by_id.entry(id.to_owned()).or_default().push(frame),
            None => uncorrelated.push(frame),
        }
    }
    let expected = [
        ("p1", "pong", None),
        ("u1", "error", Some("unknown_type")),
        ("j1", "ack", None),
        ("j2", "ack", None),
        ("l1", "error", Some("not_member")),
        ("b1", "error", Some("bad_request")),
        ("b2", "error", Some("bad_request")),
        ("b3", "error", Some("bad_request")),
        ("l2", "ack", None),
        ("l3", "error", Some("not_member")),
        ("p2", "pong", None),
    ];
    for (id, reply_type, code) in expected {
        let replies = by_id.remove(id).unwrap_or_default();
        assert_eq!(replies.len(), 1, "replies to {id}: {replies:?}");
        assert_eq!(
            replies[0]["type"], reply_type,
            "reply to {id}: {}",
            replies[0]
        );
        if let Some(code) = code {
            assert_eq!(replies[0]["payload"]["code"], code, "reply to {id}");
        }
    }
    assert!(by_id.is_empty(), "replies to ids never sent: {by_id:?}");
    assert_eq!(uncorrelated, vec![json!({"type": "pong"})]);
}

#[tokio::test]
async fn uncorrelated_built_ins_get_no_ack() {
    let server = TestServer::default().await;
    let mut client = Client::connect(&server, "default", "alice").await;
    client
        .send(json!({"type": "room:join", "channel": "lobby"}))
        .await;
    client
        .send(json!({"type": "room:leave", "channel": "lobby"}))
        .await;
    client.expect_silence(Duration::from_millis(300)).await;
    // But an error still comes, without a correlationId.
    client
        .send(json!({"type": "room:leave", "channel": "lobby"}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "error");
    assert!(reply.get("correlationId").is_none(), "reply: {reply}");
    assert_eq!(reply["payload"]["code"], "not_member");
}
