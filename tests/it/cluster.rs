//! Many nodes on a real Redis: one `seq` order across nodes, presence across nodes and after a
//! node dies, recovery on another node and after restarts, interest-based subscriptions,
//! plugins reaching other nodes, Redis outages and stalls, Redis Cluster, and nginx in front.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::{Instant, sleep, timeout};

use crate::external::{ClusterExample, Nginx, RedisCluster, RedisServer};
use crate::support::{BinaryServer, Client, TestServer, WAIT, api_key, http_get, tenant};

/// Liveness timing short enough for tests: a dead node's members leave within ~1.5 s.
const TIMING: &str = "heartbeat_interval = \"200ms\"\nnode_ttl = \"1s\"\nprobe_interval = \"200ms\"\ncommand_timeout = \"500ms\"\n";

fn plugin(name: &str) -> String {
    format!(
        "[[tenants.plugins]]\npath = \"{}/switchboard_plugin_{name}.wasm\"\n",
        env!("PLUGIN_DIR")
    )
}

/// A node config on a single Redis server.
fn node_config(redis_url: &str, tenant_tables: &str) -> String {
    redis_node_config(&format!("url = \"{redis_url}\"\n"), tenant_tables)
}

/// A node config with the given `[redis]` lines.
pub(crate) fn redis_node_config(redis: &str, tenant_tables: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nbackplane = \"redis\"\n[log]\nlevel = \"warn\"\n[redis]\n{redis}{TIMING}\n{}",
        tenant("default", "", tenant_tables)
    )
}

/// Waits until the node at `addr` answers `/readyz` with `status`.
pub(crate) async fn readyz_becomes(addr: SocketAddr, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (now, _, body) = http_get(&format!("http://{addr}/readyz")).await;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz of {addr} stayed {now} ({body}), wanted {status}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn start_node(config: &str) -> TestServer {
    let server = TestServer::start(config).await;
    readyz_becomes(server.addr, 200, WAIT).await;
    server
}

/// Publishes through the node at `addr`; returns status and reply.
pub(crate) async fn publish_at(addr: SocketAddr, channel: &str, payload: Value) -> (u16, Value) {
    let body = json!({"tenant": "default", "channel": channel, "type": "news", "payload": payload});
    let response = timeout(
        WAIT,
        reqwest::Client::new()
            .post(format!("http://{addr}/api/publish"))
            .bearer_auth(api_key("default"))
            .json(&body)
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("request succeeds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

pub(crate) async fn publish_ok(addr: SocketAddr, channel: &str, payload: Value) -> u64 {
    let (status, reply) = publish_at(addr, channel, payload).await;
    assert_eq!(status, 200, "publish answered {reply}");
    reply["seq"].as_u64().expect("seq")
}

/// The next frame of `msg_type`, skipping others (presence events and the like).
pub(crate) async fn next_of(client: &mut Client, msg_type: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == msg_type {
            return frame;
        }
    }
}

/// The next `count` channel messages as (seq, payload).
pub(crate) async fn news(client: &mut Client, count: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let frame = next_of(client, "news").await;
        out.push((
            frame["seq"].as_u64().expect("seq"),
            frame["payload"].clone(),
        ));
    }
    out
}

/// The distinct node ids (connection id prefixes) of these clients.
fn node_ids<'a>(
    clients: impl IntoIterator<Item = &'a Client>,
) -> std::collections::HashSet<String> {
    clients
        .into_iter()
        .map(|client| {
            let id = client.connection_id();
            id.rsplit_once('-').expect("id").0.to_owned()
        })
        .collect()
}

fn member_ids(ack: &Value) -> Vec<String> {
    let mut ids: Vec<String> = ack["payload"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| member["connectionId"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

pub(crate) async fn join_since(client: &mut Client, channel: &str, since: u64) -> Value {
    let reply = client
        .request(json!({"type": "room:join", "channel": channel, "payload": {"since": since}}))
        .await;
    assert_eq!(reply["type"], "ack", "join answered {reply}");
    reply
}

pub(crate) async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, _, text) = http_get(&format!("http://{addr}/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[tokio::test]
async fn three_processes_deliver_one_seq_order_with_presence_across_nodes() {
    let redis = RedisServer::start().await;
    let config = node_config(&redis.url(), "");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let node = BinaryServer::start(&config).await;
        readyz_becomes(node.addr, 200, WAIT).await;
        nodes.push(node);
    }
    let mut alice = Client::connect_addr(nodes[0].addr, "default", "alice").await;
    let mut bob = Client::connect_addr(nodes[1].addr, "default", "bob").await;
    let mut carol = Client::connect_addr(nodes[2].addr, "default", "carol").await;
    let prefixes = node_ids([&alice, &bob, &carol]);
    assert_eq!(prefixes.len(), 3, "three nodes, three id prefixes");

    alice.join("lobby").await;
    let ack = bob.join("lobby").await;
    assert_eq!(
        member_ids(&ack),
        {
            let mut ids = vec![alice.connection_id(), bob.connection_id()];
            ids.sort();
            ids
        },
        "bob's ack lists alice, who is on another node"
    );
    let joined = next_of(&mut alice, "presence:join").await;
    assert_eq!(joined["payload"]["userId"], "bob");
    let ack = carol.join("lobby").await;
    assert_eq!(member_ids(&ack).len(), 3);

    // Publishes through all three nodes at once.
    let mut tasks = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let addr = node.addr;
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..10 {
                seqs.push(publish_ok(addr, "lobby", json!({"node": index, "n": n})).await);
            }
            seqs
        }));
    }
    let mut published = Vec::new();
    for task in tasks {
        published.extend(task.await.expect("publisher"));
    }
    published.sort_unstable();
    published.dedup();
    assert_eq!(published.len(), 30, "every publish got its own seq");

    let seen_by_alice = news(&mut alice, 30).await;
    let seen_by_bob = news(&mut bob, 30).await;
    let seen_by_carol = news(&mut carol, 30).await;
    assert!(
        seen_by_alice.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "seq strictly increases: {seen_by_alice:?}"
    );
    assert_eq!(seen_by_alice, seen_by_bob, "one order on every node");
    assert_eq!(seen_by_alice, seen_by_carol, "one order on every node");
    assert_eq!(
        seen_by_alice
            .iter()
            .map(|(seq, _)| *seq)
            .collect::<Vec<_>>(),
        published
    );
}

#[tokio::test]
async fn a_killed_nodes_members_leave_on_every_other_node() {
    let redis = RedisServer::start().await;
    let config = node_config(&redis.url(), "");
    let mut doomed = BinaryServer::start(&config).await;
    let survivor = BinaryServer::start(&config).await;
    readyz_becomes(doomed.addr, 200, WAIT).await;
    readyz_becomes(survivor.addr, 200, WAIT).await;

    let mut alice = Client::connect_addr(doomed.addr, "default", "alice").await;
    let mut bob = Client::connect_addr(survivor.addr, "default", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let alice_id = alice.connection_id();

    doomed.signal("KILL");
    doomed.wait(WAIT).await;
    let killed = Instant::now();
    // node_ttl (1 s) + a heartbeat (0.2 s) + the reaper's round: well inside WAIT.
    let left = next_of(&mut bob, "presence:leave").await;
    assert_eq!(left["payload"]["connectionId"], alice_id.as_str());
    assert_eq!(left["channel"], "lobby");
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "took {:?}",
        killed.elapsed()
    );

    let mut carol = Client::connect_addr(survivor.addr, "default", "carol").await;
    let ack = carol.join("lobby").await;
    let ids = member_ids(&ack);
    assert!(
        !ids.contains(&alice_id),
        "the dead node's member is gone: {ids:?}"
    );
    assert_eq!(ids.len(), 2);
    let nodes = redis.command(&["ZCARD", "switchboard:nodes"]).await;
    assert_eq!(nodes, "1", "the dead node left the node set");
}

#[tokio::test]
async fn recovery_works_on_another_node_and_after_every_node_restarted() {
    let redis = RedisServer::start().await;
    let config = node_config(&redis.url(), "");
    let first = start_node(&config).await;
    let second = start_node(&config).await;

    let mut reader = Client::connect(&first, "default", "reader").await;
    reader.join("feed").await;
    for n in 1..=3 {
        publish_ok(second.addr, "feed", json!(n)).await;
    }
    let seen = news(&mut reader, 3).await;
    assert_eq!(
        seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    reader.close().await;
    for n in 4..=6 {
        publish_ok(first.addr, "feed", json!(n)).await;
    }

    // Back on the other node, asking for everything after 3.
    let mut back = Client::connect(&second, "default", "reader").await;
    let ack = join_since(&mut back, "feed", 3).await;
    assert_eq!(ack["payload"]["recovered"], true, "{ack}");
    let replayed = news(&mut back, 3).await;
    assert_eq!(
        replayed,
        vec![(4, json!(4)), (5, json!(5)), (6, json!(6))],
        "missed messages, in order"
    );
    publish_ok(first.addr, "feed", json!(7)).await;
    assert_eq!(
        news(&mut back, 1).await,
        vec![(7, json!(7))],
        "then live ones"
    );
    back.close().await;

    let first_id = first.node().id.clone();
    first.shutdown().await;
    second.shutdown().await;
    let members = redis
        .command(&["ZRANGE", "switchboard:nodes", "0", "-1"])
        .await;
    assert!(
        !members.contains(&first_id),
        "a drained node leaves the node set: {members}"
    );

    // Every node restarted: history lives in Redis.
    let fresh = start_node(&config).await;
    let mut again = Client::connect(&fresh, "default", "reader").await;
    let ack = join_since(&mut again, "feed", 5).await;
    assert_eq!(ack["payload"]["recovered"], true, "{ack}");
    assert_eq!(
        news(&mut again, 2).await,
        vec![(6, json!(6)), (7, json!(7))]
    );
    let mut late = Client::connect(&fresh, "default", "late").await;
    let ack = join_since(&mut late, "feed", 100).await;
    assert_eq!(
        ack["payload"]["recovered"], false,
        "a seq beyond the channel's: {ack}"
    );
    assert_eq!(
        publish_ok(fresh.addr, "feed", json!(8)).await,
        8,
        "seq continues"
    );
}

#[tokio::test]
async fn a_node_subscribes_to_a_room_only_while_it_has_members() {
    let redis = RedisServer::start().await;
    let config = node_config(&redis.url(), "");
    let first = start_node(&config).await;
    let second = start_node(&config).await;
    let channel = "switchboard:r:{default:alpha}";
    let subscribers = || async {
        let reply = redis.command(&["PUBSUB", "NUMSUB", channel]).await;
        reply.lines().nth(1).unwrap_or("?").trim().to_owned()
    };
    assert_eq!(subscribers().await, "0");

    let mut alice = Client::connect(&first, "default", "alice").await;
    let mut bob = Client::connect(&second, "default", "bob").await;
    alice.join("alpha").await;
    assert_eq!(subscribers().await, "1", "only the node with a member");
    bob.join("alpha").await;
    assert_eq!(subscribers().await, "2");

    bob.request(json!({"type": "room:leave", "channel": "alpha"}))
        .await;
    wait_for(
        || async { subscribers().await == "1" },
        "the empty node unsubscribed",
    )
    .await;
    // The remaining member still gets what the other node publishes.
    publish_ok(second.addr, "alpha", json!("still here")).await;
    assert_eq!(news(&mut alice, 1).await[0].1, json!("still here"));
    alice.close().await;
    wait_for(
        || async { subscribers().await == "0" },
        "no subscriber left",
    )
    .await;
    bob.close().await;
}

#[tokio::test]
async fn a_nodes_room_and_user_sets_hold_only_what_it_has_now() {
    let redis = RedisServer::start().await;
    let node = start_node(&node_config(&redis.url(), "")).await;
    let mut alice = Client::connect(&node, "default", "alice").await;
    let mut alice_again = Client::connect(&node, "default", "alice").await;
    let mut bob = Client::connect(&node, "default", "bob").await;
    let id = node_ids([&alice]).into_iter().next().expect("a node id");
    let members = |set: &'static str| {
        let key = format!("switchboard:n:{{{id}}}:{set}");
        let redis = &redis;
        async move {
            let reply = redis.command(&["SMEMBERS", &key]).await;
            let mut members: Vec<String> = reply
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
            members.sort();
            members
        }
    };
    alice.join("alpha").await;
    alice_again.join("alpha").await;
    bob.join("beta").await;
    assert_eq!(members("rooms").await, ["default:alpha", "default:beta"]);
    assert_eq!(members("users").await, ["default:alice", "default:bob"]);

    // Not the last member or connection here: both stay.
    alice
        .request(json!({"type": "room:leave", "channel": "alpha"}))
        .await;
    alice.close().await;
    sleep(Duration::from_millis(200)).await;
    assert_eq!(members("rooms").await, ["default:alpha", "default:beta"]);
    assert_eq!(members("users").await, ["default:alice", "default:bob"]);

    // The last member leaves (explicitly, then by closing): the room goes, then the users.
    alice_again
        .request(json!({"type": "room:leave", "channel": "alpha"}))
        .await;
    wait_for(
        || async { members("rooms").await == ["default:beta"] },
        "alpha left the node's room set",
    )
    .await;
    alice_again.close().await;
    bob.close().await;
    wait_for(
        || async { members("rooms").await.is_empty() && members("users").await.is_empty() },
        "the node's sets are empty with nothing connected",
    )
    .await;
}

async fn wait_for<F, Fut>(check: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn plugins_reach_members_users_and_state_on_other_nodes() {
    let redis = RedisServer::start().await;
    let config = node_config(&redis.url(), &plugin("chat"));
    let first = start_node(&config).await;
    let second = start_node(&config).await;
    let mut alice = Client::connect(&first, "default", "alice").await;
    let mut bob = Client::connect(&second, "default", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;

    // Broadcast across nodes; the message count lives in the shared key-value store.
    let ack = alice
        .request(json!({"type": "chat:send", "channel": "lobby", "payload": {"text": "hi"}}))
        .await;
    assert_eq!(ack["payload"]["count"], 1, "{ack}");
    let message = next_of(&mut bob, "chat:message").await;
    assert_eq!(message["payload"]["text"], "hi");
    let ack = bob
        .request(json!({"type": "chat:send", "channel": "lobby", "payload": {"text": "yo"}}))
        .await;
    assert_eq!(ack["payload"]["count"], 2, "one count across nodes: {ack}");

    // `send` to a connection on the other node (typing goes to the other members).
    bob.send(json!({"type": "typing:start", "channel": "lobby"}))
        .await;
    let typing = next_of(&mut alice, "typing:start").await;
    assert_eq!(typing["payload"]["userId"], "bob");

    // `send-to-user` finds every connection of the user, on any node.
    let mut bob_again = Client::connect(&first, "default", "bob").await;
    let ack = alice
        .request(json!({"type": "chat:dm", "payload": {"to": "bob", "text": "psst"}}))
        .await;
    assert_eq!(ack["payload"]["delivered"], 2, "{ack}");
    for client in [&mut bob, &mut bob_again] {
        let dm = next_of(client, "chat:dm").await;
        assert_eq!(
            dm["payload"],
            json!({"from": "alice", "text": "psst", "ts": dm["payload"]["ts"]})
        );
    }
    bob_again.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let ack = alice
            .request(json!({"type": "chat:dm", "payload": {"to": "bob", "text": "?"}}))
            .await;
        if ack["payload"]["delivered"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed connection still counts: {ack}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_redis_outage_keeps_local_delivery_then_everything_resumes() {
    let mut redis = RedisServer::start().await;
    let config = node_config(&redis.url(), "");
    let first = start_node(&config).await;
    let second = start_node(&config).await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let baseline = tasks();
    let mut alice = Client::connect(&first, "default", "alice").await;
    let mut bob = Client::connect(&second, "default", "bob").await;
    alice.join("room").await;
    bob.join("room").await;
    assert_eq!(publish_ok(first.addr, "room", json!("before")).await, 1);
    assert_eq!(news(&mut alice, 1).await[0].0, 1);
    assert_eq!(news(&mut bob, 1).await[0].0, 1);

    // Traffic keeps flowing through the outage: a publisher on the first node, a watcher there.
    let mut watcher = Client::connect(&first, "default", "watcher").await;
    watcher.join("traffic").await;
    // The watcher reads as messages come, so that its queue never fills during the outage.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let watching = tokio::spawn(async move {
        loop {
            let frame = next_of(&mut watcher, "news").await;
            let seq = frame["seq"].as_u64().expect("seq");
            if seen_tx.send(seq).is_err() {
                break;
            }
        }
    });
    let (stop_traffic, stopped) = tokio::sync::watch::channel(false);
    // Two publishers, so that some publish lands in every step of the node's recovery.
    let publishers: Vec<_> = (0..2)
        .map(|publisher| {
            let addr = first.addr;
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let mut accepted = 0usize;
                for n in 0..5_000 {
                    if *stopped.borrow_and_update() {
                        break;
                    }
                    let (status, _) = publish_at(addr, "traffic", json!([publisher, n])).await;
                    accepted += usize::from(status == 200);
                    sleep(Duration::from_millis(2)).await;
                }
                accepted
            })
        })
        .collect();

    redis.stop().await;
    readyz_becomes(first.addr, 503, WAIT).await;
    readyz_becomes(second.addr, 503, WAIT).await;
    let (health, _, _) = http_get(&first.http_url("/healthz")).await;
    assert_eq!(
        health, 200,
        "the process is alive; only the backplane is down"
    );

    // Local delivery goes on: the publisher's own members still get messages, in order.
    let local = publish_ok(first.addr, "room", json!("during")).await;
    assert_eq!(news(&mut alice, 1).await, vec![(local, json!("during"))]);
    assert!(local > 1);
    bob.expect_silence(Duration::from_millis(300)).await;
    // A node with no member of a channel cannot deliver it anywhere: an honest 503.
    let (status, reply) = publish_at(second.addr, "elsewhere", json!(1)).await;
    assert_eq!(status, 503, "{reply}");
    // Connections, pings and joins keep working on both nodes.
    let pong = alice.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let mut carol = Client::connect(&first, "default", "carol").await;
    let ack = carol.join("room").await;
    assert!(member_ids(&ack).contains(&carol.connection_id()));

    redis.restart().await;
    readyz_becomes(first.addr, 200, Duration::from_secs(15)).await;
    readyz_becomes(second.addr, 200, Duration::from_secs(15)).await;

    // Every accepted publish reached the local watcher exactly once, in increasing seq order.
    sleep(Duration::from_millis(100)).await;
    stop_traffic.send(true).expect("publisher listening");
    let mut accepted = 0;
    for publisher in publishers {
        accepted += publisher.await.expect("publisher finished");
    }
    assert!(accepted > 10, "traffic flowed: {accepted}");
    let mut seen = Vec::with_capacity(accepted);
    while seen.len() < accepted {
        match tokio::time::timeout(WAIT, seen_rx.recv()).await {
            Ok(Some(seq)) => seen.push(seq),
            _ => panic!(
                "{} of {accepted} accepted publishes arrived: {seen:?}",
                seen.len()
            ),
        }
    }
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "seq strictly increases through the outage: {seen:?}"
    );
    sleep(Duration::from_millis(300)).await;
    assert!(
        seen_rx.try_recv().is_err(),
        "no more than the accepted publishes"
    );
    watching.abort();

    // Cross-node delivery resumes, and seq keeps increasing for everyone.
    let after = publish_ok(second.addr, "room", json!("after")).await;
    assert!(
        after > local,
        "seq {after} continues past the local {local}"
    );
    for client in [&mut alice, &mut bob, &mut carol] {
        let got = news(client, 1).await;
        assert_eq!(got, vec![(after, json!("after"))]);
    }
    // Presence was re-registered: a new member on the other node sees all three.
    let mut dave = Client::connect(&second, "default", "dave").await;
    let ack = dave.join("room").await;
    assert_eq!(member_ids(&ack).len(), 4, "{ack}");
    assert!(metric(first.addr, "switchboard_backplane_reconnects_total").await >= 1.0);
    assert!(metric(first.addr, "switchboard_backplane_local_fallbacks_total").await >= 1.0);

    // Nothing leaked: with the clients gone, the tasks and subscriptions are what they were.
    for client in [alice, bob, carol, dave] {
        client.close().await;
    }
    wait_for(
        || async { tasks() <= baseline },
        "tasks back to the baseline",
    )
    .await;
    for node in [&first, &second] {
        wait_for(
            || async { metric(node.addr, "switchboard_backplane_subscriptions").await == 0.0 },
            "no room subscription left",
        )
        .await;
    }
}

#[tokio::test]
async fn a_stalled_redis_turns_readyz_red_through_the_probe() {
    let redis = RedisServer::start().await;
    // A slow heartbeat, so the probe is what notices.
    let config = node_config(&redis.url(), "")
        .replace(
            "heartbeat_interval = \"200ms\"",
            "heartbeat_interval = \"10s\"",
        )
        .replace("node_ttl = \"1s\"", "node_ttl = \"30s\"");
    let node = start_node(&config).await;
    let failures_before = metric(node.addr, "switchboard_backplane_probe_failures_total").await;
    // Redis keeps its connections open but answers nothing: only a round trip notices.
    redis.command(&["CLIENT", "PAUSE", "2500", "ALL"]).await;
    readyz_becomes(node.addr, 503, Duration::from_secs(2)).await;
    let (health, _, _) = http_get(&node.http_url("/healthz")).await;
    assert_eq!(health, 200);
    assert_eq!(metric(node.addr, "switchboard_backplane_ready").await, 0.0);
    readyz_becomes(node.addr, 200, Duration::from_secs(15)).await;
    assert!(
        metric(node.addr, "switchboard_backplane_probe_failures_total").await > failures_before
    );
    assert_eq!(metric(node.addr, "switchboard_backplane_ready").await, 1.0);
}

#[tokio::test]
async fn a_gap_in_delivery_is_refilled_from_history_in_order() {
    let redis = RedisServer::start().await;
    let config = node_config(&redis.url(), "");
    let node = start_node(&config).await;
    let mut alice = Client::connect(&node, "default", "alice").await;
    alice.join("feed").await;
    for n in 1..=2 {
        publish_ok(node.addr, "feed", json!(n)).await;
    }
    assert_eq!(news(&mut alice, 2).await.len(), 2);
    // Message 3 reaches history and the counter but never pub/sub: this node missed it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let entry =
        format!("3\t{now_ms}\t{{\"type\":\"news\",\"channel\":\"feed\",\"payload\":3,\"seq\":3}}");
    redis
        .command(&["RPUSH", "switchboard:r:{default:feed}:h", &entry])
        .await;
    redis
        .command(&["HSET", "switchboard:r:{default:feed}:m", "seq", "3"])
        .await;
    publish_ok(node.addr, "feed", json!(4)).await;
    assert_eq!(
        news(&mut alice, 2).await,
        vec![(3, json!(3)), (4, json!(4))],
        "the missed message first, then the new one"
    );
    assert_eq!(
        metric(node.addr, "switchboard_backplane_gaps_filled_total").await,
        1.0
    );
}

#[tokio::test]
async fn redis_holds_frame_heads_and_the_receiving_node_completes_them() {
    let redis = RedisServer::start().await;
    let config = node_config(&redis.url(), "");
    let node = start_node(&config).await;
    let mut alice = Client::connect(&node, "default", "alice").await;
    alice.join("feed").await;
    assert_eq!(
        publish_ok(node.addr, "feed", json!({"text": "a\tb"})).await,
        1
    );
    let frame = next_of(&mut alice, "news").await;
    assert_eq!(
        frame,
        json!({"type": "news", "channel": "feed", "payload": {"text": "a\tb"}, "seq": 1})
    );
    // The publish script stored the head as opaque text: no `seq`, no closing brace.
    let history = "switchboard:r:{default:feed}:h";
    let stored = redis.command(&["LRANGE", history, "0", "-1"]).await;
    let fields: Vec<&str> = stored.splitn(3, '\t').collect();
    assert_eq!(fields.len(), 3, "{stored}");
    assert_eq!(fields[0], "1", "{stored}");
    assert!(fields[1].parse::<u64>().is_ok(), "{stored}");
    assert_eq!(
        fields[2],
        r#"{"type":"news","channel":"feed","payload":{"text":"a\tb"},"seq":"#
    );
    // A joiner recovering from 0 gets the stored head back as a whole frame.
    let mut bob = Client::connect(&node, "default", "bob").await;
    let ack = join_since(&mut bob, "feed", 0).await;
    assert_eq!(ack["payload"]["recovered"], true, "{ack}");
    assert_eq!(next_of(&mut bob, "news").await, frame);
    // A node of an older build publishes complete frames; they are delivered as they are.
    let epoch = redis
        .command(&["HGET", "switchboard:r:{default:feed}:m", "epoch"])
        .await;
    redis
        .command(&["HSET", "switchboard:r:{default:feed}:m", "seq", "2"])
        .await;
    let old = format!(
        "m\t{epoch}\t2\t\t{{\"type\":\"news\",\"channel\":\"feed\",\"payload\":2,\"seq\":2}}"
    );
    redis
        .command(&["PUBLISH", "switchboard:r:{default:feed}", &old])
        .await;
    assert_eq!(news(&mut alice, 1).await, vec![(2, json!(2))]);
    assert_eq!(news(&mut bob, 1).await, vec![(2, json!(2))]);
}

#[tokio::test]
async fn a_three_master_redis_cluster_carries_rooms_on_sharded_pubsub() {
    let cluster = RedisCluster::start().await;
    let nodes: Vec<String> = cluster
        .urls()
        .iter()
        .map(|url| format!("\"{url}\""))
        .collect();
    let config = redis_node_config(&format!("cluster_nodes = [{}]\n", nodes.join(", ")), "");
    let first = start_node(&config).await;
    let second = start_node(&config).await;
    let mut alice = Client::connect(&first, "default", "alice").await;
    let mut bob = Client::connect(&second, "default", "bob").await;
    let channels: Vec<String> = (0..6).map(|n| format!("room-{n}")).collect();
    for channel in &channels {
        alice.join(channel).await;
        let ack = bob.join(channel).await;
        assert_eq!(
            member_ids(&ack).len(),
            2,
            "presence across nodes in {channel}"
        );
    }
    for (index, channel) in channels.iter().enumerate() {
        let via = if index % 2 == 0 {
            first.addr
        } else {
            second.addr
        };
        assert_eq!(
            publish_ok(via, channel, json!(index)).await,
            1,
            "a new channel starts at 1"
        );
    }
    for client in [&mut alice, &mut bob] {
        let mut got: Vec<(String, Value)> = Vec::new();
        while got.len() < channels.len() {
            let frame = next_of(client, "news").await;
            got.push((
                frame["channel"].as_str().expect("channel").to_owned(),
                frame["payload"].clone(),
            ));
        }
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let expected: Vec<(String, Value)> = channels
            .iter()
            .enumerate()
            .map(|(index, channel)| (channel.clone(), json!(index)))
            .collect();
        assert_eq!(got, expected);
    }
    // The rooms' channels are shard channels, spread over more than one master.
    let mut masters_with_channels = 0;
    for index in 0..3 {
        let listed = cluster
            .command(index, &["PUBSUB", "SHARDCHANNELS", "switchboard:r:*"])
            .await;
        if !listed.trim().is_empty() {
            masters_with_channels += 1;
        }
    }
    assert!(masters_with_channels >= 2, "sharded across masters");
    // Recovery through the cluster.
    publish_ok(first.addr, "room-0", json!("second")).await;
    let mut carol = Client::connect(&second, "default", "carol").await;
    let ack = join_since(&mut carol, "room-0", 0).await;
    assert_eq!(ack["payload"]["recovered"], true, "{ack}");
    assert_eq!(
        news(&mut carol, 2).await,
        vec![(1, json!(0)), (2, json!("second"))]
    );
}

#[tokio::test]
async fn nginx_round_robin_in_front_of_two_nodes_needs_no_sticky_sessions() {
    let redis = RedisServer::start().await;
    let config = node_config(&redis.url(), "");
    let first = BinaryServer::start(&config).await;
    let second = BinaryServer::start(&config).await;
    readyz_becomes(first.addr, 200, WAIT).await;
    readyz_becomes(second.addr, 200, WAIT).await;
    let nginx = Nginx::start(&[first.addr.port(), second.addr.port()]).await;
    let front: SocketAddr = ([127, 0, 0, 1], nginx.port).into();

    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol", "dave"] {
        clients.push(Client::connect_addr(front, "default", user).await);
    }
    let prefixes = node_ids(&clients);
    assert_eq!(
        prefixes.len(),
        2,
        "round robin spread the connections over both nodes"
    );
    for client in &mut clients {
        client.join("lobby").await;
    }
    let seq = publish_ok(front, "lobby", json!("through nginx")).await;
    for client in &mut clients {
        assert_eq!(news(client, 1).await, vec![(seq, json!("through nginx"))]);
    }
    let (status, _, _) = http_get(&format!("http://{front}/readyz")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tenants_stay_apart_across_nodes_even_for_a_hostile_plugin() {
    let redis = RedisServer::start().await;
    let config = format!(
        "listen = \"127.0.0.1:0\"\nbackplane = \"redis\"\n[log]\nlevel = \"warn\"\n[redis]\nurl = \"{}\"\n{TIMING}\n{}{}",
        redis.url(),
        tenant("alpha", "", ""),
        tenant("beta", "", &plugin("hostile")),
    );
    let first = start_node(&config).await;
    let second = start_node(&config).await;
    let mut victim = Client::connect(&first, "alpha", "victim").await;
    let mut stranger = Client::connect(&second, "beta", "stranger").await;
    victim.join("lobby").await;
    let ack = stranger.join("lobby").await;
    assert_eq!(
        member_ids(&ack),
        [stranger.connection_id()],
        "same channel name, another tenant: another room"
    );

    let body =
        json!({"tenant": "alpha", "channel": "lobby", "type": "news", "payload": "for alpha"});
    let response = reqwest::Client::new()
        .post(second.http_url("/api/publish"))
        .bearer_auth(api_key("alpha"))
        .json(&body)
        .send()
        .await
        .expect("published");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(news(&mut victim, 1).await[0].1, json!("for alpha"));
    stranger.expect_silence(Duration::from_millis(300)).await;

    // A plugin of `beta` aims at `alpha`'s connection on the other node: nothing happens.
    let reply = stranger
        .request(json!({"type": "hostile:poke", "payload": victim.connection_id()}))
        .await;
    assert_ne!(
        reply["type"], "error",
        "the poke itself is not refused: {reply}"
    );
    victim.expect_silence(Duration::from_millis(500)).await;
    let mut peer = Client::connect(&first, "alpha", "peer").await;
    let ack = peer.join("stolen").await;
    assert_eq!(
        member_ids(&ack),
        [peer.connection_id()],
        "the victim was not made to join"
    );
}

/// A client of the example's `default` tenant, with a token from its development secret.
async fn example_client(front: SocketAddr, sub: &str) -> Client {
    use crate::support::{claims, sign, try_upgrade, upgrade_request, ws_url};
    let key = jsonwebtoken::EncodingKey::from_secret(b"dev-secret-change-me");
    let token = sign(
        &claims(sub, 3600, json!({})),
        jsonwebtoken::Algorithm::HS256,
        &key,
    );
    let bearer = format!("Bearer {token}");
    let request = upgrade_request(&ws_url(front, "default"), &[("authorization", &bearer)]);
    let (ws, _) = try_upgrade(request).await.expect("upgraded");
    Client::from_socket(ws).await
}

#[tokio::test]
async fn the_cluster_example_runs_three_nodes_behind_nginx() {
    let mut example = ClusterExample::start().await;
    let front: SocketAddr = ([127, 0, 0, 1], example.front_port).into();
    let mut alice = example_client(front, "alice").await;
    let mut bob = example_client(front, "bob").await;
    alice.join("lobby").await;
    let ack = bob.join("lobby").await;
    assert_eq!(member_ids(&ack).len(), 2);
    let seq = ClusterExample::publish_through(example.front_port, "lobby", json!("hello")).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(news(client, 1).await, vec![(seq, json!("hello"))]);
    }

    example.stop().await.expect("the example exits cleanly");
    for (port, _) in &example.nodes {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .is_err(),
            "node {port} stopped with the example"
        );
    }
}
