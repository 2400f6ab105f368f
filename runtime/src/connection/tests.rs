//! The connection loop driven over an in-memory transport: no socket, no server.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{Ending, HELD_BYTES, Held, Linger, message_bytes, plugin_bindings, run};
use crate::conn_handle::ConnHandle;
use crate::node::Node;
use crate::tenant::Tenants;

/// Both ends of a connection as channels; `blocked` makes the writing side stop accepting
/// frames, like a peer that stopped reading.
struct Pipe {
    from_client: mpsc::UnboundedReceiver<Message>,
    to_client: mpsc::UnboundedSender<Message>,
    blocked: bool,
}

impl Stream for Pipe {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.from_client
            .poll_recv(cx)
            .map(|message| message.map(Ok))
    }
}

impl Sink<Message> for Pipe {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.blocked {
            // Never woken: the peer never reads again.
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        self.to_client
            .send(message)
            .map_err(|_| WsError::ConnectionClosed)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.poll_ready(cx)
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
}

impl Linger for Pipe {
    async fn linger(&mut self, _deadline: Instant) {}
}

struct Harness {
    node: Arc<Node>,
    conn: Arc<ConnHandle>,
    to_server: mpsc::UnboundedSender<Message>,
    from_server: mpsc::UnboundedReceiver<Message>,
    pipe: Pipe,
}

fn harness(limits: &str) -> Harness {
    let text = format!(
        "[[tenants]]\nname = \"default\"\n[tenants.jwt]\nsecret = \"unit-test-secret\"\n[tenants.limits]\n{limits}\n"
    );
    let config = crate::config::parse(&text, "unit.toml", std::path::Path::new("."))
        .expect("the test config is valid");
    let tenants = Tenants::new(&config).expect("the test tenant builds");
    let tenant = tenants.get("default").expect("tenant default");
    let node = Node::new(config, tenants);
    let conn = Arc::new(ConnHandle::new(
        node.next_conn_id(),
        tenant,
        Arc::from("alice"),
        "{}".to_owned(),
        0,
    ));
    let (to_server, from_client) = mpsc::unbounded_channel();
    let (to_client, from_server) = mpsc::unbounded_channel();
    Harness {
        node,
        conn,
        to_server,
        from_server,
        pipe: Pipe {
            from_client,
            to_client,
            blocked: false,
        },
    }
}

fn ping(id: usize) -> Message {
    Message::text(format!(r#"{{"type":"ping","correlationId":"{id}"}}"#))
}

fn correlation_id(message: &Message) -> String {
    let Message::Text(text) = message else {
        panic!("expected a text frame, got {message:?}");
    };
    let value: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON frame");
    assert_eq!(value["type"], "pong", "{value}");
    value["correlationId"]
        .as_str()
        .expect("a correlationId")
        .to_owned()
}

#[tokio::test]
async fn every_message_of_a_pipelined_burst_is_handled_once_and_in_order() {
    let mut harness = harness("messages_per_second = 100000\nburst = 100000");
    // More than three whole read batches, so that batches end with messages still waiting.
    let count = super::READ_BATCH * 3 + 5;
    for id in 0..count {
        harness.to_server.send(ping(id)).expect("loop alive");
    }
    let (node, conn, mut pipe) = (harness.node.clone(), harness.conn.clone(), harness.pipe);
    let running = tokio::spawn(async move { run(&node, &conn, &mut pipe).await });

    let mut answered = VecDeque::new();
    while answered.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(5), harness.from_server.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} answered", answered.len()))
            .expect("loop alive");
        answered.push_back(correlation_id(&message));
    }
    let expected: VecDeque<String> = (0..count).map(|id| id.to_string()).collect();
    assert_eq!(answered, expected);

    harness
        .to_server
        .send(Message::Close(None))
        .expect("loop alive");
    drop(harness.to_server);
    let ending = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the loop ends")
        .expect("no panic");
    assert_eq!(ending, Ending::ClosedByClient(1005));
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_closed_as_a_slow_consumer_when_its_queue_overflows() {
    let mut harness = harness("outbound_queue_messages = 4");
    harness.pipe.blocked = true;
    let (node, conn, mut pipe) = (harness.node.clone(), harness.conn.clone(), harness.pipe);
    let running = tokio::spawn(async move { run(&node, &conn, &mut pipe).await });
    // The first frame starts a write that can never finish; the queue then fills behind it.
    harness.conn.outbox.push(crate::protocol::pong(Some("0")));
    tokio::task::yield_now().await;
    for id in 1..=5 {
        harness
            .conn
            .outbox
            .push(crate::protocol::pong(Some(&id.to_string())));
    }
    let started = Instant::now();
    let ending = running.await.expect("no panic");
    assert_eq!(ending, Ending::ClosedByServer(1013));
    // Time is paused: only the close frame's own time limit passed, never the write timeout
    // (heartbeat interval + timeout, 40 s by default) the connection used to wait out.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(harness.from_server);
}
/// What one connection wrote, in short (`pong <id>`, `close <code> <reason>`, `<type>`), and
/// how it ended, after `inputs` were sent and the client stopped sending.
async fn drive(harness: Harness, inputs: Vec<Message>) -> (Vec<String>, Ending) {
    let Harness {
        node,
        conn,
        to_server,
        mut from_server,
        mut pipe,
    } = harness;
    for message in inputs {
        to_server.send(message).expect("loop alive");
    }
    drop(to_server);
    let running = tokio::spawn(async move { run(&node, &conn, &mut pipe).await });
    let mut written = Vec::new();
    while let Some(message) = from_server.recv().await {
        written.push(match message {
            Message::Text(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(text.as_str()).expect("JSON frame");
                match value["correlationId"].as_str() {
                    Some(id) => format!("{} {id}", value["type"].as_str().expect("a type")),
                    None => value["type"].as_str().expect("a type").to_owned(),
                }
            }
            Message::Close(Some(frame)) => {
                format!("close {} {}", u16::from(frame.code), frame.reason)
            }
            other => format!("{other:?}"),
        });
    }
    (written, running.await.expect("no panic"))
}

#[tokio::test(start_paused = true)]
async fn each_inbound_fault_closes_with_its_code_and_nothing_after_it_is_handled() {
    // `(limits, inputs, the replies before the close, the close, a reply that must never be
    // written, ending)`. The messages handled before the fault in the same read batch are
    // answered, in order, before the close frame.
    type Case = (
        &'static str,
        Vec<Message>,
        Vec<&'static str>,
        &'static str,
        &'static str,
        Ending,
    );
    let cases: Vec<Case> = vec![
        // The third message is over the rate (burst 2) and closes with 1008.
        (
            "messages_per_second = 1\nburst = 2",
            vec![ping(1), ping(2), ping(3), ping(4)],
            vec!["pong 1", "pong 2"],
            "close 1008 rate limit exceeded",
            "pong 3",
            Ending::ClosedByServer(1008),
        ),
        // A text frame that is no envelope closes with 1008.
        (
            "",
            vec![ping(1), Message::text("not json"), ping(2)],
            vec!["pong 1"],
            "close 1008 invalid envelope",
            "pong 2",
            Ending::ClosedByServer(1008),
        ),
        // Binary frames are not part of the protocol.
        (
            "",
            vec![ping(1), Message::binary(vec![1, 2, 3]), ping(2)],
            vec!["pong 1"],
            "close 1003",
            "pong 2",
            Ending::ClosedByServer(1003),
        ),
    ];
    for (limits, inputs, replies, last, never, ending) in cases {
        let (written, got) = drive(harness(limits), inputs).await;
        assert_eq!(got, ending, "{limits:?}: {written:?}");
        let before_close: Vec<&str> = written
            .iter()
            .map(String::as_str)
            .filter(|line| line.starts_with("pong"))
            .collect();
        assert_eq!(before_close, replies, "{limits:?}: {written:?}");
        let final_frame = written.last().map(String::as_str).unwrap_or("");
        assert!(
            final_frame.starts_with(last),
            "{written:?} does not end in {last:?}"
        );
        assert!(
            !written.iter().any(|line| line == never),
            "{written:?} has {never:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_close_ends_the_loop_with_its_code_after_the_replies_already_written() {
    let mut harness = harness("");
    harness.to_server.send(ping(1)).expect("loop alive");
    let (node, conn, mut pipe) = (harness.node.clone(), harness.conn.clone(), harness.pipe);
    let running = tokio::spawn(async move { run(&node, &conn, &mut pipe).await });
    let reply = harness.from_server.recv().await.expect("a reply");
    assert_eq!(correlation_id(&reply), "1");
    harness
        .to_server
        .send(Message::Close(None))
        .expect("loop alive");
    harness.to_server.send(ping(2)).expect("loop alive");
    drop(harness.to_server);
    assert_eq!(
        running.await.expect("no panic"),
        Ending::ClosedByClient(1005)
    );
    // The ping after the close was never answered.
    assert!(harness.from_server.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn frames_queued_by_others_are_written_before_a_server_close() {
    let harness = harness("");
    // What rooms, replies and the backplane queue goes out in order, then the close.
    harness.conn.outbox.push(crate::protocol::pong(Some("a")));
    harness.conn.outbox.push(crate::protocol::pong(Some("b")));
    harness
        .conn
        .outbox
        .close(crate::protocol::CloseReason::ShuttingDown);
    harness
        .conn
        .outbox
        .push(crate::protocol::pong(Some("late")));
    let (written, ending) = drive(harness, Vec::new()).await;
    assert_eq!(
        written,
        ["pong a", "pong b", "close 1001 server shutting down"]
    );
    assert_eq!(ending, Ending::ClosedByServer(1001));
}

fn plugin_message_of(payload_bytes: usize) -> plugin_bindings::Message {
    plugin_bindings::Message {
        msg_type: "echo".to_owned(),
        channel: None,
        payload_json: "1".repeat(payload_bytes),
        correlation_id: Some("c1".to_owned()),
        received_at_ms: 0,
    }
}

#[test]
fn a_held_batch_takes_large_messages_one_at_a_time_and_small_ones_up_to_its_bound() {
    let mut held = Held::default();
    // The first message always fits, however large.
    let big = plugin_message_of(1 << 20);
    assert!(held.has_room(message_bytes(&big)));
    held.bytes += message_bytes(&big);
    held.messages.push(big);
    assert!(!held.has_room(message_bytes(&plugin_message_of(10))));

    let mut held = Held::default();
    let small = plugin_message_of(1000);
    let each = message_bytes(&small);
    assert_eq!(each, 4 + 1000 + 2);
    let mut count = 0;
    while held.has_room(each) && count < 1000 {
        held.bytes += each;
        held.messages.push(small.clone());
        count += 1;
    }
    assert_eq!(count, HELD_BYTES / each);
    assert!(held.bytes <= HELD_BYTES);
}
