//! Heartbeat: the server pings every `heartbeatSec`; a peer from which nothing arrives within
//! the timeout after a ping is dropped without a close handshake (docs/protocol.md, "Liveness").

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use switchboard::ids::ConnId;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::frames::frames_until_silence;
use crate::support::{Client, TestServer, WAIT, config, tenant};

/// 200 ms pings, dropped 300 ms after an unanswered ping.
fn short_heartbeat() -> String {
    config(
        "[heartbeat]\ninterval = \"200ms\"\ntimeout = \"300ms\"\n",
        &[tenant("default", "", "")],
    )
}

fn registered(server: &TestServer, client: &Client) -> bool {
    server
        .node()
        .registry
        .get(&ConnId::from(client.connection_id().as_str()))
        .is_some()
}

#[tokio::test]
async fn welcome_reports_the_heartbeat_settings() {
    let server = TestServer::start(&short_heartbeat()).await;
    let client = Client::connect(&server, "default", "alice").await;
    let payload = &client.welcome["payload"];
    assert_eq!(
        payload["heartbeatSec"].as_f64(),
        Some(0.2),
        "welcome: {payload}"
    );
    assert_eq!(
        payload["heartbeatTimeoutSec"].as_f64(),
        Some(0.3),
        "welcome: {payload}"
    );

    let server = TestServer::start(&config(
        "[heartbeat]\ninterval = 45\ntimeout = \"1500ms\"\n",
        &[tenant("default", "", "")],
    ))
    .await;
    let client = Client::connect(&server, "default", "alice").await;
    let payload = &client.welcome["payload"];
    assert_eq!(
        payload["heartbeatSec"].as_f64(),
        Some(45.0),
        "welcome: {payload}"
    );
    assert_eq!(
        payload["heartbeatTimeoutSec"].as_f64(),
        Some(1.5),
        "welcome: {payload}"
    );
}

#[tokio::test]
async fn reading_client_receives_pings_and_stays_connected() {
    let server = TestServer::start(&short_heartbeat()).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    // Reading answers every ping (tungstenite queues the pong and sends it on the next read).
    let watch = Duration::from_millis(1600);
    let deadline = Instant::now() + watch;
    let mut pings = 0;
    loop {
        match timeout_at(deadline, client.ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("expected only pings, got {other:?}"),
        }
    }
    // One ping per 200 ms: about 8 in 1.6 s.
    assert!((5..=9).contains(&pings), "{pings} pings in {watch:?}");
    assert!(
        registered(&server, &client),
        "the reading client was dropped"
    );
    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn client_that_stops_reading_is_dropped_and_its_rooms_told() {
    let server = TestServer::start(&short_heartbeat()).await;
    let mut observer = Client::connect(&server, "default", "observer").await;
    observer.join("lobby").await;
    let mut silent = Client::connect(&server, "default", "silent").await;
    silent.join("lobby").await;
    let connected = Instant::now();
    let silent_id = silent.connection_id();
    assert_eq!(observer.recv().await["type"], "presence:join");

    // From here on `silent` is never polled, so it answers no ping. The observer keeps
    // reading (and so answering pings) while it waits.
    let left = observer.recv().await;
    let elapsed = connected.elapsed();
    assert_eq!(
        left,
        json!({"type": "presence:leave", "channel": "lobby",
               "payload": {"userId": "silent", "connectionId": silent_id}})
    );
    // Not before a ping and its timeout (200 + 300 ms), and well within a second or two.
    assert!(
        elapsed >= Duration::from_millis(400),
        "dropped after {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_millis(2000),
        "dropped after {elapsed:?}"
    );
    let node = server.node().clone();
    assert!(
        node.registry
            .get(&ConnId::from(silent_id.as_str()))
            .is_none()
    );
    assert_eq!(node.registry.len(), 1);

    // The dropped peer sees pings, then the end of the stream, but no close frame.
    let ending = timeout(WAIT, async {
        let mut count = 0_u32;
        loop {
            count += 1;
            assert!(count < 1000, "the stream does not end");
            match silent.ws.next().await {
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(other)) => panic!("a dropped peer got {other:?}"),
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(ending.is_ok(), "the dropped connection did not end");

    // The observer, which kept answering, is still there.
    let pong = observer.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert!(registered(&server, &observer));
}

/// Keeps sending `message` every 100 ms for 1.2 s without ever reading.
async fn send_without_reading(client: &mut Client, message: &Message) -> usize {
    let mut sent = 0;
    for _ in 0..12 {
        timeout(WAIT, client.ws.send(message.clone()))
            .await
            .expect("send in time")
            .expect("send succeeds");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent
}

#[tokio::test]
async fn silent_client_that_sends_data_frames_is_not_dropped() {
    let server = TestServer::start(&short_heartbeat()).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let sent = send_without_reading(&mut client, &Message::text(r#"{"type":"ping"}"#)).await;
    assert!(registered(&server, &client), "dropped despite data frames");
    // Every app ping was answered.
    let frames = frames_until_silence(&mut client, Duration::from_millis(300)).await;
    assert_eq!(frames, vec![json!({"type": "pong"}); sent]);
    assert!(registered(&server, &client));
}

#[tokio::test]
async fn silent_client_that_sends_ping_frames_is_not_dropped() {
    let server = TestServer::start(&short_heartbeat()).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    send_without_reading(&mut client, &Message::Ping(b"alive".to_vec().into())).await;
    assert!(registered(&server, &client), "dropped despite ping frames");
    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn silent_client_that_sends_pong_frames_is_not_dropped() {
    let server = TestServer::start(&short_heartbeat()).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    send_without_reading(&mut client, &Message::Pong(b"alive".to_vec().into())).await;
    assert!(registered(&server, &client), "dropped despite pong frames");
    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}
