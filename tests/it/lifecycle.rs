//! A whole session: connect, authenticate, join, exchange, reconnect, graceful disconnect.

use serde_json::json;

use crate::support::{Client, TestServer, eventually, publish};

#[tokio::test]
async fn connect_join_exchange_reconnect_and_leave() {
    let server = TestServer::default().await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    let welcome = &alice.welcome["payload"];
    assert_eq!(welcome["userId"], "alice");
    assert_eq!(welcome["tenant"], "default");
    assert_eq!(welcome["heartbeatSec"], json!(30.0));
    assert_eq!(welcome["heartbeatTimeoutSec"], json!(10.0));

    let ack = alice.join("lobby").await;
    assert_eq!(ack["payload"]["channel"], "lobby");
    assert_eq!(
        ack["payload"]["members"],
        json!([{"userId": "alice", "connectionId": alice.connection_id()}])
    );

    let mut bob = Client::connect(&server, "default", "bob").await;
    let bob_ack = bob.join("lobby").await;
    assert_eq!(
        bob_ack["payload"]["members"].as_array().map(Vec::len),
        Some(2)
    );
    let joined = alice.recv().await;
    assert_eq!(
        joined,
        json!({"type": "presence:join", "channel": "lobby",
               "payload": {"userId": "bob", "connectionId": bob.connection_id()}})
    );

    let seq = publish(&server, "default", "lobby", json!({"text": "hi"})).await;
    for client in [&mut alice, &mut bob] {
        let message = client.recv().await;
        assert_eq!(
            message,
            json!({"type": "news", "channel": "lobby", "payload": {"text": "hi"}, "seq": seq})
        );
    }

    // Bob reconnects: the old connection leaves, the new one joins again.
    let old_bob = bob.connection_id();
    bob.close().await;
    let left = alice.recv().await;
    assert_eq!(left["type"], "presence:leave");
    assert_eq!(left["payload"]["connectionId"], json!(old_bob));
    let mut bob = Client::connect(&server, "default", "bob").await;
    assert_ne!(bob.connection_id(), old_bob);
    bob.join("lobby").await;
    assert_eq!(alice.recv().await["type"], "presence:join");

    let leave = bob
        .request(json!({"type": "room:leave", "channel": "lobby"}))
        .await;
    assert_eq!(leave["type"], "ack");
    assert_eq!(alice.recv().await["type"], "presence:leave");
    bob.close().await;
    alice.close().await;
    let node = server.node().clone();
    eventually("registry empty", || node.registry.is_empty()).await;
    eventually("rooms empty", || node.rooms.is_empty()).await;
}
