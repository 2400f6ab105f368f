//! Rooms: join and leave acks, presence, disconnects, per-channel `seq`, tenant isolation,
//! recovery from history and the per-connection room limit (docs/protocol.md, "Rooms and
//! presence", "Sequence numbers and recovery", "Limits").

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use switchboard::ids::ConnId;
use tokio::time::timeout;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

use crate::frames::{frames_until_silence, read_to_end};
use crate::support::{Client, TestServer, WAIT, config, eventually, publish, tenant};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(250);

/// The `members` of a join ack as a set of (userId, connectionId).
fn member_set(ack: &Value) -> BTreeSet<(String, String)> {
    let members = ack["payload"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("ack without members: {ack}"));
    let set: BTreeSet<(String, String)> = members
        .iter()
        .map(|member| {
            let keys = member.as_object().map(|object| object.len());
            assert_eq!(keys, Some(2), "member {member} has other keys");
            (
                member["userId"].as_str().expect("userId").to_owned(),
                member["connectionId"]
                    .as_str()
                    .expect("connectionId")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(set.len(), members.len(), "duplicate members in {ack}");
    set
}

/// The (userId, connectionId) pairs of `clients`.
fn pairs(clients: &[(&str, &Client)]) -> BTreeSet<(String, String)> {
    clients
        .iter()
        .map(|(user, client)| ((*user).to_owned(), client.connection_id()))
        .collect()
}

fn presence(kind: &str, channel: &str, user: &str, client: &Client) -> Value {
    json!({"type": kind, "channel": channel,
           "payload": {"userId": user, "connectionId": client.connection_id()}})
}

fn news(channel: &str, payload: &Value, seq: u64) -> Value {
    json!({"type": "news", "channel": channel, "payload": payload, "seq": seq})
}

/// Sends a `room:join` with a recovery `since` and returns the reply (the next frame).
async fn join_since(client: &mut Client, channel: &str, since: Value, id: &str) -> Value {
    client
        .send(
            json!({"type": "room:join", "channel": channel, "payload": {"since": since},
                     "correlationId": id}),
        )
        .await;
    client.recv().await
}

/// Connects `user` to `default` and joins `channel` (the ack is checked and dropped).
async fn joined(server: &TestServer, user: &str, channel: &str) -> Client {
    let mut client = Client::connect(server, "default", user).await;
    client.join(channel).await;
    client
}

/// Alice and then Bob in `lobby` of `default`, Alice past Bob's `presence:join`.
async fn two_in_lobby(server: &TestServer) -> (Client, Client) {
    let mut alice = joined(server, "alice", "lobby").await;
    let bob = joined(server, "bob", "lobby").await;
    assert_eq!(alice.recv().await["type"], "presence:join");
    (alice, bob)
}

/// Bob leaves `lobby`: his reply is an ack, and Alice sees his `presence:leave`.
async fn bob_leaves(bob: &mut Client, alice: &mut Client) -> Value {
    let leave = bob.leave("lobby").await;
    assert_eq!(leave["type"], "ack", "reply: {leave}");
    assert_eq!(
        alice.recv().await,
        presence("presence:leave", "lobby", "bob", bob)
    );
    leave
}

// ---- join, leave, presence ----

#[tokio::test]
async fn join_ack_lists_the_members_including_the_joiner() {
    let server = TestServer::default().await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    let ack = alice.join("lobby").await;
    assert_eq!(ack["payload"]["channel"], "lobby");
    assert_eq!(member_set(&ack), pairs(&[("alice", &alice)]));
    assert!(ack["payload"].get("recovered").is_none(), "ack: {ack}");

    let mut bob = Client::connect(&server, "default", "bob").await;
    let ack = bob.join("lobby").await;
    assert_eq!(ack["payload"]["channel"], "lobby");
    assert_eq!(member_set(&ack), pairs(&[("alice", &alice), ("bob", &bob)]));

    // A second connection of the same user is a member of its own.
    let mut alice2 = Client::connect(&server, "default", "alice").await;
    let ack = alice2.join("lobby").await;
    assert_eq!(
        member_set(&ack),
        pairs(&[("alice", &alice), ("bob", &bob), ("alice", &alice2)])
    );
    assert_eq!(member_set(&ack).len(), 3);
}

#[tokio::test]
async fn others_see_presence_join_and_the_joiner_sees_none_for_itself() {
    let server = TestServer::default().await;
    let mut alice = joined(&server, "alice", "lobby").await;
    alice.expect_silence(QUIET).await;

    let mut bob = joined(&server, "bob", "lobby").await;
    assert_eq!(
        alice.recv().await,
        presence("presence:join", "lobby", "bob", &bob)
    );
    bob.expect_silence(QUIET).await;

    let mut carol = joined(&server, "carol", "lobby").await;
    let expected = presence("presence:join", "lobby", "carol", &carol);
    assert_eq!(alice.recv().await, expected);
    assert_eq!(bob.recv().await, expected);
    carol.expect_silence(QUIET).await;
    alice.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn presence_stays_within_its_room() {
    let server = TestServer::default().await;
    let mut alice = joined(&server, "alice", "lobby").await;
    let mut bob = joined(&server, "bob", "kitchen").await;
    bob.leave("kitchen").await;
    alice.expect_silence(QUIET).await;
    let _watcher = joined(&server, "watcher", "kitchen").await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn joining_again_is_acked_again_without_a_second_presence_event() {
    let server = TestServer::default().await;
    let (mut alice, mut bob) = two_in_lobby(&server).await;

    let again = bob.join("lobby").await;
    assert_eq!(again["payload"]["channel"], "lobby");
    assert_eq!(
        member_set(&again),
        pairs(&[("alice", &alice), ("bob", &bob)])
    );
    alice.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;

    // Membership is a set: one leave is enough, a second is not_member.
    bob_leaves(&mut bob, &mut alice).await;
    let second = bob.leave("lobby").await;
    assert_eq!(second["type"], "error");
    assert_eq!(second["payload"]["code"], "not_member");
    // And a published message reaches one copy at alice and none at bob.
    let seq = publish(&server, "default", "lobby", json!(1)).await;
    assert_eq!(alice.recv().await, news("lobby", &json!(1), seq));
    alice.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn leave_is_acked_and_others_see_presence_leave() {
    let server = TestServer::default().await;
    let (mut alice, mut bob) = two_in_lobby(&server).await;

    let leave = bob_leaves(&mut bob, &mut alice).await;
    assert!(leave["correlationId"].is_string());
    bob.expect_silence(QUIET).await;

    // Bob no longer receives the room's messages, and is no longer listed.
    let seq = publish(&server, "default", "lobby", json!("after")).await;
    assert_eq!(alice.recv().await, news("lobby", &json!("after"), seq));
    bob.expect_silence(QUIET).await;
    let mut carol = Client::connect(&server, "default", "carol").await;
    let ack = carol.join("lobby").await;
    assert_eq!(
        member_set(&ack),
        pairs(&[("alice", &alice), ("carol", &carol)])
    );
}

#[tokio::test]
async fn leaving_a_room_one_is_not_in_is_not_member() {
    let server = TestServer::default().await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    let reply = alice.leave("never-joined").await;
    assert_eq!(reply["type"], "error", "reply: {reply}");
    assert_eq!(reply["payload"]["code"], "not_member");
    assert!(reply["payload"]["message"].is_string());

    // Another member's room does not count either.
    let mut bob = joined(&server, "bob", "lobby").await;
    let reply = alice.leave("lobby").await;
    assert_eq!(reply["payload"]["code"], "not_member", "reply: {reply}");
    bob.expect_silence(QUIET).await;

    // The connection stays open.
    let pong = alice.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn join_or_leave_without_channel_is_bad_request() {
    let server = TestServer::default().await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    for request in [
        json!({"type": "room:join"}),
        json!({"type": "room:join", "payload": {"channel": "lobby"}}),
        json!({"type": "room:leave"}),
        json!({"type": "room:leave", "channel": null}),
    ] {
        let reply = alice.request(request.clone()).await;
        assert_eq!(reply["type"], "error", "{request} answered {reply}");
        assert_eq!(reply["payload"]["code"], "bad_request", "{request}");
    }
    // Without a correlationId the error still comes, without one.
    alice.send(json!({"type": "room:join"})).await;
    let reply = alice.recv().await;
    assert_eq!(reply["payload"]["code"], "bad_request");
    assert!(reply.get("correlationId").is_none(), "reply: {reply}");
    let pong = alice.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn uncorrelated_join_gets_no_ack_but_joins() {
    let server = TestServer::default().await;
    let mut alice = joined(&server, "alice", "lobby").await;
    let mut bob = Client::connect(&server, "default", "bob").await;
    bob.send(json!({"type": "room:join", "channel": "lobby"}))
        .await;
    assert_eq!(
        alice.recv().await,
        presence("presence:join", "lobby", "bob", &bob)
    );
    bob.expect_silence(QUIET).await;
    let seq = publish(&server, "default", "lobby", json!("hi")).await;
    assert_eq!(bob.recv().await, news("lobby", &json!("hi"), seq));

    assert_eq!(alice.recv().await, news("lobby", &json!("hi"), seq));

    bob.send(json!({"type": "room:leave", "channel": "lobby"}))
        .await;
    assert_eq!(
        alice.recv().await,
        presence("presence:leave", "lobby", "bob", &bob)
    );
    bob.expect_silence(QUIET).await;
    // Bob really left: the next message does not reach him.
    let seq = publish(&server, "default", "lobby", json!("bye")).await;
    assert_eq!(alice.recv().await, news("lobby", &json!("bye"), seq));
    bob.expect_silence(QUIET).await;
}

// ---- disconnects ----

/// Starts a server with `alice` in `lobby` and `kitchen`, and one observer in each.
async fn two_rooms() -> (TestServer, Client, Client, Client) {
    let server = TestServer::default().await;
    let mut lobby = Client::connect(&server, "default", "obs-lobby").await;
    lobby.join("lobby").await;
    let mut kitchen = Client::connect(&server, "default", "obs-kitchen").await;
    kitchen.join("kitchen").await;
    let mut alice = joined(&server, "alice", "lobby").await;
    alice.join("kitchen").await;
    assert_eq!(lobby.recv().await["type"], "presence:join");
    assert_eq!(kitchen.recv().await["type"], "presence:join");
    (server, alice, lobby, kitchen)
}

/// Checks that alice's departure reached both observers and she is gone from the node.
async fn assert_departed(
    server: &TestServer,
    alice_id: &str,
    lobby: &mut Client,
    kitchen: &mut Client,
) {
    let leave = |channel: &str| {
        json!({"type": "presence:leave", "channel": channel,
               "payload": {"userId": "alice", "connectionId": alice_id}})
    };
    assert_eq!(lobby.recv().await, leave("lobby"));
    assert_eq!(kitchen.recv().await, leave("kitchen"));
    let node = server.node().clone();
    let id = ConnId::from(alice_id);
    eventually("alice gone from the registry", || {
        node.registry.get(&id).is_none()
    })
    .await;
    assert_eq!(node.registry.len(), 2);
    // The member lists no longer hold her.
    let mut late = Client::connect(server, "default", "late").await;
    let ack = late.join("lobby").await;
    assert!(
        !member_set(&ack).iter().any(|(_, conn)| conn == alice_id),
        "alice still listed: {ack}"
    );
    assert_eq!(member_set(&ack).len(), 2);
    assert_eq!(
        lobby.recv().await,
        presence("presence:join", "lobby", "late", &late)
    );
    let late_id = late.connection_id();
    late.close().await;
    let left = lobby.recv().await;
    assert_eq!(left["type"], "presence:leave");
    assert_eq!(left["payload"]["connectionId"], json!(late_id));
    kitchen.expect_silence(Duration::from_millis(100)).await;
}

async fn assert_node_empty(server: &TestServer, clients: Vec<Client>) {
    for client in clients {
        client.close().await;
    }
    let node = server.node().clone();
    eventually("registry empty", || node.registry.is_empty()).await;
    eventually("rooms empty", || node.rooms.is_empty()).await;
}

#[tokio::test]
async fn closing_client_leaves_every_room() {
    let (server, alice, mut lobby, mut kitchen) = two_rooms().await;
    let alice_id = alice.connection_id();
    alice.close().await;
    assert_departed(&server, &alice_id, &mut lobby, &mut kitchen).await;
    assert_node_empty(&server, vec![lobby, kitchen]).await;
}

#[tokio::test]
async fn client_dropping_tcp_without_close_leaves_every_room() {
    let (server, alice, mut lobby, mut kitchen) = two_rooms().await;
    let alice_id = alice.connection_id();
    // No close frame: the socket is just dropped (FIN).
    drop(alice);
    assert_departed(&server, &alice_id, &mut lobby, &mut kitchen).await;
    assert_node_empty(&server, vec![lobby, kitchen]).await;
}

#[tokio::test]
async fn client_resetting_tcp_leaves_every_room() {
    let (server, alice, mut lobby, mut kitchen) = two_rooms().await;
    let alice_id = alice.connection_id();
    match alice.ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.set_zero_linger().expect("SO_LINGER 0"),
        _ => panic!("plain TCP expected"),
    }
    // Dropped with SO_LINGER 0: an RST, no close frame, no FIN.
    drop(alice);
    assert_departed(&server, &alice_id, &mut lobby, &mut kitchen).await;
    assert_node_empty(&server, vec![lobby, kitchen]).await;
}

#[tokio::test]
async fn members_closed_by_the_server_leave_their_rooms() {
    let server = TestServer::default().await;
    let mut observer = joined(&server, "observer", "lobby").await;
    let offences = [
        Message::binary(b"\x01\x02".to_vec()),
        Message::text("not json"),
        Message::text(r#"{"type":""}"#),
    ];
    for offence in offences {
        let mut member = joined(&server, "member", "lobby").await;
        assert_eq!(
            observer.recv().await,
            presence("presence:join", "lobby", "member", &member)
        );
        timeout(WAIT, member.ws.send(offence.clone()))
            .await
            .expect("send in time")
            .expect("send succeeds");
        let (code, _) = member.expect_close().await;
        assert!(
            code == 1003 || code == 1008,
            "{offence:?} closed with {code}"
        );
        read_to_end(&mut member).await;
        assert_eq!(
            observer.recv().await,
            presence("presence:leave", "lobby", "member", &member),
            "after {offence:?}"
        );
    }
    let node = server.node().clone();
    eventually("only the observer left", || node.registry.len() == 1).await;
}

// ---- presence off by pattern ----

#[tokio::test]
async fn presence_disabled_by_pattern() {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "",
            "[tenants.presence]\ndisabled = [\"dash*\"]\n",
        )],
    ))
    .await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    let mut bob = Client::connect(&server, "default", "bob").await;
    for channel in ["dashboard", "dash"] {
        let ack = alice.join(channel).await;
        assert_eq!(ack["payload"]["channel"], json!(channel));
        assert!(ack["payload"].get("members").is_none(), "ack: {ack}");
        let ack = bob.join(channel).await;
        assert!(ack["payload"].get("members").is_none(), "ack: {ack}");
        // Joining again: still no members.
        let again = bob.join(channel).await;
        assert!(again["payload"].get("members").is_none(), "ack: {again}");
        alice.expect_silence(QUIET).await;

        // Messages are still delivered to every member.
        let seq = publish(&server, "default", channel, json!({"v": 1})).await;
        assert_eq!(alice.recv().await, news(channel, &json!({"v": 1}), seq));
        assert_eq!(bob.recv().await, news(channel, &json!({"v": 1}), seq));

        let leave = bob
            .request(json!({"type": "room:leave", "channel": channel}))
            .await;
        assert_eq!(leave["type"], "ack");
        alice.expect_silence(QUIET).await;
        bob.join(channel).await;
    }
    // A disconnect announces nothing either.
    bob.close().await;
    alice.expect_silence(QUIET).await;

    // Channels that do not match the pattern keep presence.
    let ack = alice.join("lobby").await;
    assert_eq!(member_set(&ack).len(), 1);
    let carol = joined(&server, "carol", "lobby").await;
    assert_eq!(
        alice.recv().await,
        presence("presence:join", "lobby", "carol", &carol)
    );
    let node = server.node().clone();
    eventually("bob gone", || node.registry.len() == 2).await;
}

// ---- seq ----

/// Three clients in `ticker`, past the presence events of the later joiners.
async fn ticker_subscribers(server: &TestServer) -> Vec<Client> {
    let mut subscribers = Vec::new();
    for user in ["a", "b", "c"] {
        let mut client = Client::connect(server, "default", user).await;
        client.join("ticker").await;
        subscribers.push(client);
    }
    for client in &mut subscribers {
        frames_until_silence(client, Duration::from_millis(150)).await;
    }
    subscribers
}

#[tokio::test]
async fn seq_is_increasing_shared_by_subscribers_and_matches_the_publish_reply() {
    let server = TestServer::default().await;
    let mut subscribers = ticker_subscribers(&server).await;
    let mut published = Vec::new();
    for index in 0..40 {
        published.push((
            index,
            publish(&server, "default", "ticker", json!(index)).await,
        ));
    }
    assert_eq!(published[0].1, 1, "seq starts at 1 on a new channel");
    assert!(
        published.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "publish replies not increasing: {published:?}"
    );
    for client in &mut subscribers {
        for (index, seq) in &published {
            assert_eq!(client.recv().await, news("ticker", &json!(index), *seq));
        }
        client.expect_silence(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seq_order_holds_under_concurrent_publishers() {
    let server = TestServer::default().await;
    let mut subscribers = ticker_subscribers(&server).await;
    let publisher = |name: &'static str| {
        let server = &server;
        async move {
            let mut seqs = Vec::new();
            for index in 0..25 {
                seqs.push(
                    publish(server, "default", "ticker", json!(format!("{name}{index}"))).await,
                );
            }
            seqs
        }
    };
    let (x, y, z) = tokio::join!(publisher("x"), publisher("y"), publisher("z"));
    let mut all: Vec<u64> = x.iter().chain(&y).chain(&z).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 75, "a seq was given twice");

    let mut seen = Vec::new();
    for client in &mut subscribers {
        let mut frames = Vec::new();
        for _ in 0..75 {
            frames.push(client.recv().await);
        }
        let seqs: Vec<u64> = frames
            .iter()
            .map(|frame| frame["seq"].as_u64().expect("seq"))
            .collect();
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "not strictly increasing: {seqs:?}"
        );
        assert_eq!(seqs, all, "seqs differ from the publish replies");
        // Per publisher, its own messages arrive in the order it published them.
        for name in ["x", "y", "z"] {
            let order: Vec<String> = frames
                .iter()
                .filter_map(|frame| frame["payload"].as_str())
                .filter(|payload| payload.starts_with(name))
                .map(str::to_owned)
                .collect();
            let expected: Vec<String> = (0..25).map(|index| format!("{name}{index}")).collect();
            assert_eq!(order, expected);
        }
        seen.push(frames);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
}

#[tokio::test]
async fn seq_is_independent_per_channel() {
    let server = TestServer::default().await;
    let mut alice = joined(&server, "alice", "one").await;
    alice.join("two").await;
    let mut last = 0;
    for index in 0..10 {
        let seq = publish(&server, "default", "one", json!(index)).await;
        assert!(seq > last);
        last = seq;
        assert_eq!(alice.recv().await, news("one", &json!(index), seq));
    }
    let seq = publish(&server, "default", "two", json!("first")).await;
    assert_eq!(seq, 1, "a new channel starts at 1");
    assert_eq!(alice.recv().await, news("two", &json!("first"), 1));
    // A channel nobody is in is sequenced too, on its own.
    assert_eq!(publish(&server, "default", "three", json!(0)).await, 1);
    assert_eq!(publish(&server, "default", "three", json!(0)).await, 2);
    let seq = publish(&server, "default", "one", json!("next")).await;
    assert!(seq > last, "{seq} after {last}");
    assert_eq!(alice.recv().await, news("one", &json!("next"), seq));
    alice.expect_silence(QUIET).await;
}

// ---- tenant isolation ----

#[tokio::test]
async fn tenants_are_isolated() {
    let server = TestServer::start(&config("", &[tenant("a", "", ""), tenant("b", "", "")])).await;
    // The same user id in both tenants.
    let mut a_alice = Client::connect(&server, "a", "alice").await;
    let mut b_alice = Client::connect(&server, "b", "alice").await;
    assert_eq!(a_alice.welcome["payload"]["tenant"], "a");
    assert_eq!(b_alice.welcome["payload"]["tenant"], "b");

    let ack = a_alice.join("lobby").await;
    assert_eq!(member_set(&ack), pairs(&[("alice", &a_alice)]));
    let ack = b_alice.join("lobby").await;
    assert_eq!(member_set(&ack), pairs(&[("alice", &b_alice)]));
    a_alice.expect_silence(QUIET).await;

    let mut b_bob = Client::connect(&server, "b", "bob").await;
    let ack = b_bob.join("lobby").await;
    assert_eq!(
        member_set(&ack),
        pairs(&[("alice", &b_alice), ("bob", &b_bob)])
    );
    assert_eq!(
        b_alice.recv().await,
        presence("presence:join", "lobby", "bob", &b_bob)
    );
    a_alice.expect_silence(QUIET).await;

    let mut a_carol = Client::connect(&server, "a", "carol").await;
    let ack = a_carol.join("lobby").await;
    assert_eq!(
        member_set(&ack),
        pairs(&[("alice", &a_alice), ("carol", &a_carol)])
    );
    assert_eq!(a_alice.recv().await["type"], "presence:join");
    b_alice.expect_silence(QUIET).await;
    b_bob.expect_silence(QUIET).await;

    // Messages and their sequences are per tenant.
    let seq_a = publish(&server, "a", "lobby", json!("for a")).await;
    assert_eq!(seq_a, 1);
    assert_eq!(a_alice.recv().await, news("lobby", &json!("for a"), 1));
    assert_eq!(a_carol.recv().await, news("lobby", &json!("for a"), 1));
    b_alice.expect_silence(QUIET).await;
    b_bob.expect_silence(QUIET).await;
    let seq_b = publish(&server, "b", "lobby", json!("for b")).await;
    assert_eq!(seq_b, 1);
    assert_eq!(b_alice.recv().await, news("lobby", &json!("for b"), 1));
    assert_eq!(b_bob.recv().await, news("lobby", &json!("for b"), 1));
    a_alice.expect_silence(QUIET).await;
    a_carol.expect_silence(QUIET).await;

    // Leaves and disconnects too.
    b_bob.leave("lobby").await;
    assert_eq!(b_alice.recv().await["type"], "presence:leave");
    b_alice.close().await;
    a_alice.expect_silence(QUIET).await;
    a_carol.expect_silence(QUIET).await;
    // Tenant a's room is intact after tenant b's emptied.
    let reply = a_alice.leave("lobby").await;
    assert_eq!(
        reply["type"], "ack",
        "a's own membership is intact: {reply}"
    );
    assert_eq!(
        a_carol.recv().await,
        presence("presence:leave", "lobby", "alice", &a_alice)
    );
}

// ---- recovery ----

fn history_config(size: u64) -> String {
    config(
        "",
        &[tenant(
            "default",
            "",
            &format!("[tenants.history]\nsize = {size}\n"),
        )],
    )
}

/// Publishes `count` messages `0..count` to `channel`; returns their seqs.
async fn publish_many(server: &TestServer, channel: &str, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for index in 0..count {
        seqs.push(publish(server, "default", channel, json!(index)).await);
    }
    seqs
}

/// Connects `user` and joins `c` asking for recovery since `since`; returns the first reply.
async fn recover(server: &TestServer, user: &str, since: Value, id: &str) -> (Client, Value) {
    let mut client = Client::connect(server, "default", user).await;
    let reply = join_since(&mut client, "c", since, id).await;
    (client, reply)
}

/// Asserts the next frames are the messages `publish_many` sent from index `from` on.
async fn assert_replayed(client: &mut Client, seqs: &[u64], from: usize) {
    for (index, seq) in seqs.iter().enumerate().skip(from) {
        assert_eq!(client.recv().await, news("c", &json!(index), *seq));
    }
}

/// Publishes a marker and asserts it is the next frame `client` gets.
async fn assert_next_is_live(server: &TestServer, client: &mut Client, channel: &str) {
    let seq = publish(server, "default", channel, json!("live")).await;
    assert_eq!(client.recv().await, news(channel, &json!("live"), seq));
}

#[tokio::test]
async fn recovery_replays_missed_messages_after_the_ack_then_live_ones() {
    let server = TestServer::default().await;
    let seqs = publish_many(&server, "c", 10).await;
    let since = seqs[3];
    let (mut alice, ack) = recover(&server, "alice", json!(since), "r1").await;
    assert_eq!(ack["type"], "ack", "first frame: {ack}");
    assert_eq!(ack["correlationId"], "r1");
    assert_eq!(ack["payload"]["channel"], "c");
    assert_eq!(ack["payload"]["recovered"], json!(true));
    assert_eq!(member_set(&ack), pairs(&[("alice", &alice)]));
    assert_replayed(&mut alice, &seqs, 4).await;
    assert_next_is_live(&server, &mut alice, "c").await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn recovery_since_zero_replays_the_whole_history() {
    let server = TestServer::default().await;
    let seqs = publish_many(&server, "c", 5).await;
    let (mut alice, ack) = recover(&server, "alice", json!(0), "r1").await;
    assert_eq!(ack["payload"]["recovered"], json!(true), "ack: {ack}");
    assert_replayed(&mut alice, &seqs, 0).await;
    assert_next_is_live(&server, &mut alice, "c").await;
}

#[tokio::test]
async fn recovery_without_correlation_id_replays_without_an_ack() {
    let server = TestServer::default().await;
    let seqs = publish_many(&server, "c", 4).await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    alice
        .send(json!({"type": "room:join", "channel": "c", "payload": {"since": seqs[1]}}))
        .await;
    assert_replayed(&mut alice, &seqs, 2).await;
    assert_next_is_live(&server, &mut alice, "c").await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn recovery_since_the_last_seq_replays_nothing() {
    let server = TestServer::default().await;
    let seqs = publish_many(&server, "c", 5).await;
    let (mut alice, ack) = recover(&server, "alice", json!(seqs[4]), "r1").await;
    assert_eq!(ack["type"], "ack", "first frame: {ack}");
    assert_eq!(ack["payload"]["recovered"], json!(true));
    alice.expect_silence(QUIET).await;
    assert_next_is_live(&server, &mut alice, "c").await;
}

#[tokio::test]
async fn recovery_since_beyond_the_last_seq_is_not_recovered() {
    let server = TestServer::default().await;
    let seqs = publish_many(&server, "c", 5).await;
    let (mut alice, ack) = recover(&server, "alice", json!(seqs[4] + 1), "r1").await;
    assert_eq!(ack["type"], "ack", "first frame: {ack}");
    assert_eq!(ack["payload"]["recovered"], json!(false));
    alice.expect_silence(QUIET).await;
    assert_next_is_live(&server, &mut alice, "c").await;

    let (mut bob, ack) = recover(&server, "bob", json!(1_000_000), "r2").await;
    assert_eq!(ack["payload"]["recovered"], json!(false), "ack: {ack}");
    assert_eq!(alice.recv().await["type"], "presence:join");
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn recovery_past_a_short_history_is_not_recovered() {
    let server = TestServer::start(&history_config(3)).await;
    let seqs = publish_many(&server, "c", 10).await;
    let (mut alice, ack) = recover(&server, "alice", json!(seqs[1]), "r1").await;
    assert_eq!(ack["type"], "ack", "first frame: {ack}");
    assert_eq!(ack["payload"]["recovered"], json!(false));
    alice.expect_silence(QUIET).await;
    assert_next_is_live(&server, &mut alice, "c").await;
}

#[tokio::test]
async fn recovery_within_a_short_history_is_recovered() {
    let server = TestServer::start(&history_config(3)).await;
    let seqs = publish_many(&server, "c", 10).await;
    // The history holds the last three: since the fourth-last, nothing is missing.
    let (mut alice, ack) = recover(&server, "alice", json!(seqs[6]), "r1").await;
    assert_eq!(ack["payload"]["recovered"], json!(true), "ack: {ack}");
    assert_replayed(&mut alice, &seqs, 7).await;
    assert_next_is_live(&server, &mut alice, "c").await;

    // One further back is one message short.
    let (mut bob, ack) = recover(&server, "bob", json!(seqs[5]), "r2").await;
    assert_eq!(ack["payload"]["recovered"], json!(false), "ack: {ack}");
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn recovery_since_must_be_a_non_negative_integer() {
    let server = TestServer::default().await;
    publish_many(&server, "c", 3).await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    for (index, since) in [
        json!(-1),
        json!(-100),
        json!(1.5),
        json!(0.5),
        json!("2"),
        json!(true),
        json!([1]),
        json!({"seq": 1}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("bad{index}");
        let reply = join_since(&mut alice, "c", since.clone(), &id).await;
        assert_eq!(reply["type"], "error", "since {since}: {reply}");
        assert_eq!(reply["correlationId"], json!(id));
        assert_eq!(reply["payload"]["code"], "bad_request", "since {since}");
    }
    // None of them joined, and nothing was replayed.
    alice.expect_silence(QUIET).await;
    let reply = alice.leave("c").await;
    assert_eq!(reply["payload"]["code"], "not_member", "reply: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_during_live_publishing_has_no_gap_and_no_duplicate() {
    let server = TestServer::default().await;
    let before = publish_many(&server, "c", 20).await;
    let since = before[9];
    let mut alice = Client::connect(&server, "default", "alice").await;
    let publishing = async {
        let mut seqs = Vec::new();
        for index in 20..80 {
            seqs.push(publish(&server, "default", "c", json!(index)).await);
        }
        seqs
    };
    let joining = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        join_since(&mut alice, "c", json!(since), "r1").await
    };
    let (during, ack) = tokio::join!(publishing, joining);
    assert_eq!(ack["type"], "ack", "first frame: {ack}");
    assert_eq!(ack["payload"]["recovered"], json!(true));
    let expected: Vec<u64> = before
        .iter()
        .chain(&during)
        .copied()
        .filter(|seq| *seq > since)
        .collect();
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        let frame = alice.recv().await;
        got.push(
            frame["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("not a message: {frame}")),
        );
    }
    assert_eq!(got, expected);
    alice.expect_silence(QUIET).await;
}

// ---- room limit ----

#[tokio::test]
async fn third_room_is_refused_past_max_rooms_per_connection() {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "",
            "[tenants.limits]\nmax_rooms_per_connection = 2\n",
        )],
    ))
    .await;
    let mut alice = joined(&server, "alice", "r1").await;
    alice.join("r2").await;
    let refused = alice
        .request(json!({"type": "room:join", "channel": "r3"}))
        .await;
    assert_eq!(refused["type"], "error", "reply: {refused}");
    assert_eq!(refused["payload"]["code"], "forbidden");
    // Not a member of r3: no messages, not listed.
    let mut bob = Client::connect(&server, "default", "bob").await;
    let ack = bob.join("r3").await;
    assert_eq!(member_set(&ack), pairs(&[("bob", &bob)]));
    let seq = publish(&server, "default", "r3", json!("x")).await;
    assert_eq!(bob.recv().await, news("r3", &json!("x"), seq));
    alice.expect_silence(QUIET).await;

    // Joining a room one is in does not count as a third.
    let again = alice.join("r1").await;
    assert_eq!(again["payload"]["channel"], "r1");
    // Leaving one frees a place.
    let leave = alice.leave("r1").await;
    assert_eq!(leave["type"], "ack");
    let ack = alice.join("r3").await;
    assert_eq!(member_set(&ack), pairs(&[("bob", &bob), ("alice", &alice)]));
    assert_eq!(
        bob.recv().await,
        presence("presence:join", "r3", "alice", &alice)
    );
    let refused = alice
        .request(json!({"type": "room:join", "channel": "r4"}))
        .await;
    assert_eq!(refused["payload"]["code"], "forbidden", "reply: {refused}");
}
