//! Pipelined clients on a busy machine: every request is answered exactly once, in order,
//! however the server's read batches fall (issue 16, finding 1).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, config, tenant};

const CONNECTIONS: usize = 50;
const REQUESTS: usize = 2_000;
/// The whole test, busy loops included, ends within this.
const LIMIT: Duration = Duration::from_secs(90);
/// No reply for this long means the rest are not coming.
const STALL: Duration = Duration::from_secs(15);

/// Threads that keep the machine's cores busy until dropped (or `LIMIT` passes).
struct BusyLoops {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyLoops {
    fn start(count: usize) -> BusyLoops {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let until = std::time::Instant::now() + LIMIT;
                    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                        for _ in 0..10_000 {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        BusyLoops { stop, threads }
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Sends `REQUESTS` pings back to back (one flush), then reads until every one is answered;
/// returns the correlationIds in the order they came back.
async fn pipeline(client: Client, connection: usize, deadline: Instant) -> Vec<String> {
    let (mut sink, mut stream) = client.ws.split();
    let writer = tokio::spawn(async move {
        for request in 0..REQUESTS {
            let text = format!(r#"{{"type":"ping","correlationId":"{connection}-{request}"}}"#);
            sink.feed(Message::text(text)).await.expect("request sent");
        }
        sink.flush().await.expect("requests flushed");
        sink
    });
    let mut answered = Vec::with_capacity(REQUESTS);
    while answered.len() < REQUESTS {
        // A reply that never comes shows as a stall: fail then, not at the overall deadline.
        let stalled = (Instant::now() + STALL).min(deadline);
        let message = timeout_at(stalled, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "connection {connection}: {} of {REQUESTS} answered in time",
                    answered.len()
                )
            })
            .expect("the connection stays open")
            .expect("no socket error");
        let Message::Text(text) = message else {
            continue;
        };
        let reply: Value = serde_json::from_str(text.as_str()).expect("JSON reply");
        assert_eq!(reply["type"], "pong", "{reply}");
        answered.push(
            reply["correlationId"]
                .as_str()
                .expect("correlated")
                .to_owned(),
        );
    }
    let _ = writer.await.expect("writer finished");
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipelined_request_is_answered_exactly_once_on_a_busy_machine() {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "",
            "[tenants.limits]\nmessages_per_second = 1000000\nburst = 1000000\n",
        )],
    ))
    .await;
    let _busy = BusyLoops::start(3);
    let deadline = Instant::now() + LIMIT;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for connection in 0..CONNECTIONS {
        clients.push(Client::connect(&server, "default", &format!("user{connection}")).await);
    }
    let runs: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(connection, client)| tokio::spawn(pipeline(client, connection, deadline)))
        .collect();
    for (connection, run) in runs.into_iter().enumerate() {
        let answered = run.await.expect("no panic");
        let expected: Vec<String> = (0..REQUESTS)
            .map(|request| format!("{connection}-{request}"))
            .collect();
        // Exactly once and in order: the same list, not merely the same set.
        if answered != expected {
            let seen: HashSet<&String> = answered.iter().collect();
            let missing: Vec<&String> = expected.iter().filter(|id| !seen.contains(id)).collect();
            panic!(
                "connection {connection}: {} answers, missing {missing:?}",
                answered.len()
            );
        }
    }
}
