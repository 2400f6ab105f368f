//! Every close the server starts reaches a client behind the example nginx config while the
//! client's input is still arriving: the server sends its close frame, stops writing and reads
//! what is left instead of resetting the connection (issue 16, finding 2).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use switchboard::ids::ConnId;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::external::Nginx;
use crate::support::{
    Client, TestServer, WAIT, config, publish, tenant, token, try_upgrade, upgrade_request,
};

/// Largest message the tenant takes.
const MAX_MESSAGE: usize = 64 * 1024;

async fn server() -> TestServer {
    TestServer::start(&config(
        "[shutdown]\ndrain_timeout = \"5s\"\n",
        &[tenant(
            "default",
            "",
            &format!(
                "[tenants.limits]\nmax_message_bytes = {MAX_MESSAGE}\nmessages_per_second = 1000000\nburst = 1000000\noutbound_queue_messages = 8\n[tenants.history]\nsize = 0\n"
            ),
        )],
    ))
    .await
}

/// A client connected through nginx.
async fn through(nginx: &Nginx, sub: &str) -> Client {
    let bearer = format!("Bearer {}", token(sub));
    let request = upgrade_request(&nginx.ws_url("/ws"), &[("authorization", &bearer)]);
    let (ws, _) = try_upgrade(request)
        .await
        .unwrap_or_else(|refusal| panic!("upgrade through nginx refused: {refusal:?}"));
    Client::from_socket(ws).await
}

/// A message that needs no reply: joining a room the connection is already in, uncorrelated,
/// padded to `bytes`.
fn quiet_message(bytes: usize) -> Message {
    Message::text(format!(
        r#"{{"type":"room:join","channel":"lobby","payload":{{"pad":"{}"}}}}"#,
        "p".repeat(bytes)
    ))
}

/// Sends `frame`, then keeps sending (up to 4 MiB, more than the sockets and nginx buffer)
/// while it waits for the server's close frame: input the server has not read when it
/// closes. Returns the close's code and reason.
async fn close_with_input_pending(client: Client, frame: Message) -> (u16, String) {
    let (mut sink, mut stream) = client.ws.split();
    let sender = tokio::spawn(async move {
        if sink.send(frame).await.is_err() {
            return;
        }
        for _ in 0..128 {
            if sink.send(quiet_message(32 * 1024)).await.is_err() {
                return;
            }
        }
    });
    let close = tokio::time::timeout(WAIT, async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Ok(Message::Close(None)) => panic!("a close frame without a code"),
                Ok(_) => {}
                Err(error) => panic!("expected a close frame, got error {error}"),
            }
        }
        panic!("the connection ended without a close frame");
    })
    .await
    .expect("the close arrived in time");
    sender.abort();
    close
}

async fn assert_close(client: &mut Client, code: u16, reason_start: &str) {
    let (got, reason) = client.expect_close_skipping_text().await;
    assert_eq!(got, code, "reason: {reason}");
    assert!(reason.starts_with(reason_start), "{reason}");
}

/// A text frame whose bytes are not UTF-8.
fn invalid_utf8() -> Message {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    Message::Frame(Frame::message(
        vec![0xc3, 0x28],
        OpCode::Data(Data::Text),
        true,
    ))
}

#[tokio::test]
async fn each_close_the_server_starts_reaches_a_client_behind_nginx_with_input_pending() {
    let server = server().await;
    let nginx = Nginx::start(&[server.addr.port()]).await;

    let cases = [
        ("binary", Message::binary(vec![1, 2, 3]), 1003, ""),
        ("utf8", invalid_utf8(), 1007, ""),
        (
            "envelope",
            Message::text("not json"),
            1008,
            "invalid envelope",
        ),
        // The rest of the oversized message itself is unread input too.
        ("big", Message::text("y".repeat(16 * MAX_MESSAGE)), 1009, ""),
    ];
    for (sub, frame, code, reason_start) in cases {
        let client = through(&nginx, sub).await;
        let (got, reason) = close_with_input_pending(client, frame).await;
        assert_eq!(got, code, "{sub}: {reason}");
        assert!(reason.starts_with(reason_start), "{sub}: {reason}");
    }

    // A slow consumer: it reads nothing while its queue fills, and keeps sending.
    let mut client = through(&nginx, "slow").await;
    client.join("firehose").await;
    let id = client.connection_id();
    let conn = server
        .node()
        .registry
        .get(&ConnId::from(id.as_str()))
        .expect("registered");
    let payload = json!("z".repeat(32 * 1024));
    let started = Instant::now();
    while !conn.outbox.is_closing() {
        publish(&server, "default", "firehose", payload.clone()).await;
        client
            .ws
            .feed(quiet_message(16))
            .await
            .expect("message sent");
        assert!(started.elapsed() < WAIT * 4, "the queue never overflowed");
    }
    client.ws.flush().await.expect("flushed");
    assert_close(&mut client, 1013, "slow consumer").await;

    // The drain, while the client is sending.
    let client = through(&nginx, "draining").await;
    let (mut sink, mut stream) = client.ws.split();
    let sender = tokio::spawn(async move {
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            if sink.send(quiet_message(16)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = tokio::spawn(server.shutdown());
    let close = tokio::time::timeout(WAIT, async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => {}
                Err(error) => panic!("expected a close frame, got error {error}"),
            }
        }
        panic!("the connection ended without a close frame");
    })
    .await
    .expect("the close arrived in time")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "server shutting down");
    sender.abort();
    assert_eq!(drained.await.expect("no panic"), 0);
    drop(nginx);
}
