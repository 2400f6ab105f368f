//! Pipelined messages for one plugin reach it in one `on-messages` call (issue 15), and each of
//! them keeps what a call of its own would have: its answer, in order, its CPU budget, its
//! quotas, and its own failure.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::plugins::plugin_tables;
use crate::support::{Client, TestServer, config, http_get, tenant};

/// Attempts at getting a pipelined burst read in one batch (a burst sent in one write almost
/// always arrives in one read; the socket may still split it).
const ATTEMPTS: usize = 5;

/// Writes every message with one flush.
async fn send_all(client: &mut Client, messages: &[Value]) {
    for message in messages {
        client
            .ws
            .feed(Message::text(message.to_string()))
            .await
            .expect("queued");
    }
    client.ws.flush().await.expect("flushed");
}

/// Writes every message with one flush, then reads one reply per correlated message.
async fn pipelined(client: &mut Client, messages: &[Value]) -> Vec<Value> {
    send_all(client, messages).await;
    let correlated = messages
        .iter()
        .filter(|message| message.get("correlationId").is_some())
        .count();
    let mut replies = Vec::with_capacity(correlated);
    for _ in 0..correlated {
        replies.push(client.recv().await);
    }
    replies
}

/// `switchboard_plugin_batch_calls_total` of a plugin of the `default` tenant.
async fn batch_calls(server: &TestServer, plugin: &str) -> u64 {
    let (_, _, text) = http_get(&server.http_url("/metrics")).await;
    let prefix =
        format!("switchboard_plugin_batch_calls_total{{tenant=\"default\",plugin=\"{plugin}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in the metrics"))
}

fn request(msg_type: &str, id: String, payload: Value) -> Value {
    json!({"type": msg_type, "correlationId": id, "payload": payload})
}

#[tokio::test]
async fn pipelined_messages_for_a_plugin_go_in_one_call_and_are_answered_in_order() {
    let server = TestServer::start(&config(
        "",
        &[tenant("default", "", &plugin_tables(&["echo"], ""))],
    ))
    .await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let mut batched = false;
    for attempt in 0..ATTEMPTS {
        let before = batch_calls(&server, "echo").await;
        // Echoes, with what splits a batch in between: a built-in, a type no plugin takes, and
        // an uncorrelated echo (handled, not answered).
        let mut burst = Vec::new();
        for index in 0..12 {
            burst.push(request("echo", format!("{attempt}-{index}"), json!(index)));
        }
        burst.insert(4, json!({"type": "echo", "payload": "unanswered"}));
        burst.insert(
            6,
            json!({"type": "ping", "correlationId": format!("{attempt}-ping")}),
        );
        burst.insert(
            9,
            request("nobody:takes", format!("{attempt}-none"), json!(null)),
        );
        let replies = pipelined(&mut client, &burst).await;
        let expected: Vec<&Value> = burst
            .iter()
            .filter(|message| message.get("correlationId").is_some())
            .collect();
        assert_eq!(replies.len(), expected.len());
        for (reply, sent) in replies.iter().zip(&expected) {
            assert_eq!(reply["correlationId"], sent["correlationId"], "{reply}");
            match sent["type"].as_str() {
                Some("echo") => {
                    assert_eq!(reply["type"], "ack", "{reply}");
                    assert_eq!(reply["payload"], sent["payload"], "{reply}");
                }
                Some("ping") => assert_eq!(reply["type"], "pong", "{reply}"),
                _ => assert_eq!(reply["payload"]["code"], "unknown_type", "{reply}"),
            }
        }
        if batch_calls(&server, "echo").await > before {
            batched = true;
            break;
        }
    }
    assert!(batched, "no burst of {ATTEMPTS} reached echo in one call");
    // Nothing else arrived: the uncorrelated echo was not answered.
    client
        .expect_silence(std::time::Duration::from_millis(100))
        .await;
}

/// Limits small enough that a per-call budget or quota shared by a batch would run out.
const LIMITS: &str = "[tenants.plugin_limits]\ncpu_budget = \"150ms\"\nmax_sends_per_call = 20\n";

async fn hostile() -> (TestServer, Client) {
    let server = TestServer::start(&config(
        "",
        &[tenant("default", "", &plugin_tables(&["hostile"], LIMITS))],
    ))
    .await;
    let client = Client::connect(&server, "default", "mallory").await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_or_an_overrun_in_a_batch_fails_only_its_own_message() {
    let (server, mut client) = hostile().await;
    let mut batched = false;
    for attempt in 0..ATTEMPTS {
        let before = batch_calls(&server, "hostile").await;
        let kinds = [
            ("hostile:ok", None),
            ("hostile:panic", Some("handler_failed")),
            ("hostile:ok", None),
            ("hostile:loop", Some("handler_timeout")),
            ("hostile:ok", None),
            ("hostile:ok", None),
        ];
        let burst: Vec<Value> = kinds
            .iter()
            .enumerate()
            .map(|(index, (kind, _))| request(kind, format!("{attempt}-{index}"), Value::Null))
            .collect();
        let replies = pipelined(&mut client, &burst).await;
        for ((reply, sent), (kind, failure)) in replies.iter().zip(&burst).zip(kinds) {
            assert_eq!(reply["correlationId"], sent["correlationId"], "{reply}");
            match failure {
                None => assert_eq!(reply["payload"], "ok", "{kind}: {reply}"),
                Some(code) => {
                    assert_eq!(reply["type"], "error", "{kind}: {reply}");
                    assert_eq!(reply["payload"]["code"], code, "{kind}: {reply}");
                }
            }
        }
        if batch_calls(&server, "hostile").await > before {
            batched = true;
            break;
        }
    }
    assert!(
        batched,
        "no burst of {ATTEMPTS} reached hostile in one call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_of_a_batch_has_its_own_cpu_budget_and_quotas() {
    let (server, mut client) = hostile().await;
    let mut batched = false;
    for attempt in 0..ATTEMPTS {
        let before = batch_calls(&server, "hostile").await;
        // Four times 90 ms: within the 150 ms budget each, far past it together.
        let spins: Vec<Value> = (0..4)
            .map(|index| request("hostile:spin", format!("{attempt}-spin-{index}"), json!(90)))
            .collect();
        for reply in pipelined(&mut client, &spins).await {
            assert_eq!(reply["type"], "ack", "{reply}");
            assert_eq!(reply["payload"], 90, "{reply}");
        }
        // Each flood may send up to its own quota of 20, not what is left of a shared one.
        let floods: Vec<Value> = (0..3)
            .map(|index| {
                request(
                    "hostile:flood",
                    format!("{attempt}-flood-{index}"),
                    json!(null),
                )
            })
            .collect();
        let sent = floods.len() * 20;
        let mut replies = Vec::new();
        let expected = floods.len() + sent;
        send_all(&mut client, &floods).await;
        while replies.len() < expected {
            replies.push(client.recv().await);
        }
        let acks: Vec<&Value> = replies
            .iter()
            .filter(|reply| reply["type"] == "ack")
            .collect();
        assert_eq!(acks.len(), floods.len(), "{replies:?}");
        for ack in acks {
            assert_eq!(ack["payload"]["sent"], 20, "{ack}");
            assert_eq!(ack["payload"]["refused"], "HostError::RateLimited", "{ack}");
        }
        assert_eq!(
            replies
                .iter()
                .filter(|reply| reply["type"] == "flood")
                .count(),
            sent
        );
        if batch_calls(&server, "hostile").await >= before + 2 {
            batched = true;
            break;
        }
    }
    assert!(
        batched,
        "no attempt of {ATTEMPTS} had both bursts in one call each"
    );
}

#[tokio::test]
async fn a_plugin_built_before_batches_gets_one_call_per_message() {
    // `echo-before-raw-frames` was built before the plugin world had `batch-handler`
    // (tests/fixtures/plugins/README.md).
    let old = crate::support::fixtures().join("plugins/echo-before-raw-frames.wasm");
    let old_plugin = format!("[[tenants.plugins]]\npath = \"{}\"\n", old.display());
    let server = TestServer::start(&config("", &[tenant("default", "", &old_plugin)])).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let burst: Vec<Value> = (0..16)
        .map(|index| request("echo", format!("old-{index}"), json!({"n": index})))
        .collect();
    let replies = pipelined(&mut client, &burst).await;
    for (reply, sent) in replies.iter().zip(&burst) {
        assert_eq!(reply["type"], "ack", "{reply}");
        assert_eq!(reply["correlationId"], sent["correlationId"], "{reply}");
        assert_eq!(reply["payload"], sent["payload"], "{reply}");
    }
    assert_eq!(batch_calls(&server, "echo").await, 0);
}
