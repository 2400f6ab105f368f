//! WASM plugins through the real runtime: routing by type, replies, hooks, the example plugins,
//! and the sandbox holding against hostile ones.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{Client, TestServer, config, deploy, greet_version, put_plugin, tenant};

/// A compiled plugin from `plugins/`.
pub(crate) fn wasm(name: &str) -> String {
    format!(
        "{}/switchboard_plugin_{}.wasm",
        env!("PLUGIN_DIR"),
        name.replace('-', "_")
    )
}

/// `[[tenants.plugins]]` entries for these plugins, plus extra tables.
pub(crate) fn plugin_tables(names: &[&str], extra: &str) -> String {
    let mut tables = String::new();
    for name in names {
        tables.push_str(&format!("[[tenants.plugins]]\npath = \"{}\"\n", wasm(name)));
    }
    tables.push_str(extra);
    tables
}

pub(crate) async fn server_with(names: &[&str], extra: &str) -> TestServer {
    TestServer::start(&config(
        "",
        &[tenant("default", "", &plugin_tables(names, extra))],
    ))
    .await
}

#[tokio::test]
async fn echo_answers_a_correlated_message_with_its_payload() {
    let server = server_with(&["echo"], "").await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let reply = client
        .request(json!({"type": "echo", "payload": {"text": "hi", "n": [1, 2]}}))
        .await;
    assert_eq!(reply["type"], "ack");
    assert_eq!(reply["payload"], json!({"text": "hi", "n": [1, 2]}));
    // Without a correlationId there is no ack, and nothing else either.
    client.send(json!({"type": "echo", "payload": 1})).await;
    client.expect_silence(Duration::from_millis(200)).await;
    // Types no plugin declared are still unknown.
    let unknown = client.request(json!({"type": "nobody"})).await;
    assert_eq!(unknown["payload"]["code"], "unknown_type");
}

#[tokio::test]
async fn broadcast_relays_to_every_member_including_the_sender() {
    let server = server_with(&["broadcast"], "").await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    let mut bob = Client::connect(&server, "default", "bob").await;
    alice.join("room").await;
    bob.join("room").await;
    assert_eq!(alice.recv().await["type"], "presence:join");
    alice
        .send(json!({"type": "broadcast", "channel": "room", "payload": {"x": 1}, "correlationId": "b1"}))
        .await;
    let mut to_alice = Vec::new();
    for _ in 0..2 {
        to_alice.push(alice.recv().await);
    }
    let copy = to_alice
        .iter()
        .find(|frame| frame["type"] == "broadcast")
        .expect("the sender gets a copy");
    let ack = to_alice
        .iter()
        .find(|frame| frame["type"] == "ack")
        .expect("the sender gets its ack");
    let seq = ack["payload"]["seq"].as_u64().expect("seq in the ack");
    assert_eq!(
        *copy,
        json!({"type": "broadcast", "channel": "room", "payload": {"x": 1}, "seq": seq})
    );
    assert_eq!(bob.recv().await, *copy);
    let missing = alice
        .request(json!({"type": "broadcast", "payload": 1}))
        .await;
    assert_eq!(missing["payload"]["code"], "bad_request");
}

#[tokio::test]
async fn chat_messages_typing_private_rooms_and_counts() {
    let server = server_with(&["chat"], "").await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    let mut bob = Client::connect(&server, "default", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    assert_eq!(alice.recv().await["type"], "presence:join");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    alice
        .send(json!({"type": "chat:send", "channel": "lobby", "payload": {"text": "hello"}, "correlationId": "s1"}))
        .await;
    // The sender gets its own copy (broadcast during the call) and then the ack.
    let own_copy = alice.recv().await;
    let ack = alice.recv().await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["correlationId"], "s1");
    assert_eq!(ack["payload"]["count"], 1);
    let message = bob.recv().await;
    assert_eq!(message["type"], "chat:message");
    assert_eq!(message["channel"], "lobby");
    assert_eq!(message["payload"]["userId"], "alice");
    assert_eq!(message["payload"]["text"], "hello");
    assert!(message["payload"]["ts"].as_u64().expect("ts") >= before);
    assert_eq!(message["seq"], ack["payload"]["seq"]);
    assert_eq!(own_copy, message, "the sender sees its own message too");

    // Typing goes to the others only.
    alice
        .send(json!({"type": "typing:start", "channel": "lobby"}))
        .await;
    let typing = bob.recv().await;
    assert_eq!(
        typing,
        json!({"type": "typing:start", "channel": "lobby", "payload": {"userId": "alice"}})
    );
    alice.expect_silence(Duration::from_millis(200)).await;

    // The count lives in the key-value store, so it survives instance recycling.
    let second = bob
        .request(json!({"type": "chat:send", "channel": "lobby", "payload": {"text": "hey"}}))
        .await;
    assert_eq!(second["payload"]["count"], 2);
    assert_eq!(alice.recv().await["payload"]["text"], "hey");
    let stats = alice
        .request(json!({"type": "chat:stats", "channel": "lobby"}))
        .await;
    assert_eq!(stats["payload"], json!({"channel": "lobby", "count": 2}));

    // Bad input is the plugin's bad_request, and the connection stays.
    let empty = alice
        .request(json!({"type": "chat:send", "channel": "lobby", "payload": {"text": ""}}))
        .await;
    assert_eq!(empty["payload"]["code"], "bad_request");

    // private-* rooms need a claim.
    let refused = alice
        .request(json!({"type": "room:join", "channel": "private-ops"}))
        .await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["payload"]["code"], "forbidden");
}

#[tokio::test]
async fn chat_private_rooms_open_to_listed_claims() {
    let server = server_with(&["chat"], "").await;
    let token = crate::support::sign_hs(&crate::support::claims(
        "carol",
        3600,
        json!({"rooms": ["private-ops"]}),
    ));
    let request = crate::support::upgrade_request(
        &server.ws_url("default"),
        &[("authorization", &format!("Bearer {token}"))],
    );
    let (socket, _) = crate::support::try_upgrade(request)
        .await
        .expect("upgrade accepted");
    let mut carol = Client::from_socket(socket).await;
    let ack = carol.join("private-ops").await;
    assert_eq!(ack["payload"]["channel"], "private-ops");
    let refused = carol
        .request(json!({"type": "room:join", "channel": "private-hr"}))
        .await;
    assert_eq!(refused["payload"]["code"], "forbidden");
}

#[tokio::test]
async fn two_plugins_claiming_one_type_is_a_load_error_naming_both() {
    let text = config(
        "",
        &[tenant(
            "default",
            "",
            &plugin_tables(&["echo", "echo-twin"], ""),
        )],
    );
    let parsed = crate::support::parse_config(&text);
    let error = switchboard::server::start(parsed)
        .await
        .expect_err("conflicting plugins refuse to start");
    let message = error.to_string();
    assert!(message.contains("tenants[0].plugins"), "{message}");
    assert!(
        message.contains("type `echo` is claimed by both `echo` and `echo-twin`"),
        "{message}"
    );
}

#[tokio::test]
async fn an_upload_whose_types_clash_is_a_conflict() {
    let server = server_with(&["echo"], "").await;
    let key = crate::support::api_key("default");
    let (status, body) =
        put_plugin(&server, "echo-twin", Some(&key), wasm_bytes("echo-twin")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("echo-twin")),
        "{body}"
    );
    let (_, list) = list_plugins(&server, Some(&key)).await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "only echo is loaded: {list}"
    );
}

#[tokio::test]
async fn the_sandbox_grants_no_files_environment_or_network() {
    let server = hostile_server().await;
    let mut client = Client::connect(&server, "default", "mallory").await;
    let reply = client.request(json!({"type": "hostile:escape"})).await;
    assert_eq!(
        reply["payload"],
        json!({"files": false, "secret": false, "vars": 0, "args": 0, "network": false}),
        "{reply}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_a_clear_load_error() {
    let bogus = crate::support::temp_file("bogus-wasm", "not wasm at all");
    let tables = format!("[[tenants.plugins]]\npath = \"{}\"\n", bogus.0.display());
    let text = config("", &[tenant("default", "", &tables)]);
    let parsed = crate::support::parse_config(&text);
    let error = switchboard::server::start(parsed)
        .await
        .expect_err("refuses to start");
    let message = error.to_string();
    assert!(
        message.contains("not a Switchboard plugin component"),
        "{message}"
    );
    assert!(
        message.contains(&bogus.0.display().to_string()),
        "{message}"
    );
}

/// Limits small enough for fast hostile tests.
const HOSTILE_LIMITS: &str = "[tenants.plugin_limits]\ncpu_budget = \"500ms\"\nmemory_bytes = 33554432\nmax_sends_per_call = 50\n";

async fn hostile_server() -> TestServer {
    let hostile = tenant(
        "default",
        "",
        &plugin_tables(&["hostile", "echo"], HOSTILE_LIMITS),
    );
    let other = tenant("other", "", &plugin_tables(&["echo"], ""));
    TestServer::start(&config("", &[hostile, other])).await
}

/// Sends one hostile message; while it runs, a neighbour of the same tenant and a stranger
/// of another tenant are answered; then the hostile call's error arrives, and the hostile
/// client is answered again by a fresh instance.
async fn expect_error_code(
    mallory: &mut Client,
    others: &mut [&mut Client; 2],
    msg_type: &str,
    code: &str,
) -> Value {
    mallory
        .send(json!({"type": msg_type, "correlationId": msg_type}))
        .await;
    for other in others.iter_mut() {
        let reply = other
            .request(json!({"type": "echo", "payload": msg_type}))
            .await;
        assert_eq!(reply["payload"], msg_type, "while {msg_type} ran: {reply}");
    }
    let reply = mallory.recv().await;
    assert_eq!(reply["type"], "error", "{msg_type}: {reply}");
    assert_eq!(reply["correlationId"], msg_type, "{reply}");
    assert_eq!(reply["payload"]["code"], code, "{msg_type}: {reply}");
    let ok = mallory.request(json!({"type": "hostile:ok"})).await;
    assert_eq!(ok["payload"], "ok", "after {msg_type}: {ok}");
    reply
}

// Multi-threaded like the server binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_end_only_their_own_call() {
    let server = hostile_server().await;
    each_hostile_call_ends_alone(&server).await;
}

/// A swapped-in version runs on Winch's baseline code until its optimized build is ready: the
/// sandbox (CPU budget, memory cap, stack limit, traps) must hold there just the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_on_baseline_code_end_only_their_own_call() {
    use switchboard::plugins::engine::Tier;
    let server = hostile_server().await;
    let node = server.node().clone();
    let tenant = node.tenants.get("default").expect("tenant").clone();
    let hostile = node
        .plugins
        .load_bytes(
            &tenant,
            wasm("hostile").into(),
            wasm_bytes("hostile"),
            Default::default(),
            Tier::Baseline,
        )
        .await
        .expect("the baseline build loads");
    assert_eq!(hostile.tier, Tier::Baseline);
    // Swapped in without its optimized build following, so every call below runs on Winch code.
    node.plugins.replace(&tenant, hostile).expect("swapped in");
    each_hostile_call_ends_alone(&server).await;
    let routes = node.plugins.routes("default").expect("routes");
    assert!(
        routes
            .plugins
            .iter()
            .any(|plugin| plugin.name() == "hostile" && plugin.tier == Tier::Baseline)
    );
}

#[tokio::test]
async fn an_optimized_build_replaces_only_the_build_it_was_made_for() {
    use switchboard::plugins::{Optimized, engine::Tier};
    let server = server_with(&["greeter-v1"], "").await;
    let node = server.node().clone();
    let tenant = node.tenants.get("default").expect("tenant").clone();
    let baseline = |name: &'static str| {
        node.plugins.load_bytes(
            &tenant,
            wasm(name).into(),
            wasm_bytes(name),
            Default::default(),
            Tier::Baseline,
        )
    };
    let (older, newer) = (baseline("greeter-v1").await, baseline("greeter-v2").await);
    let (older, newer) = (older.expect("v1 loads"), newer.expect("v2 loads"));
    let mut client = Client::connect(&server, "default", "alice").await;
    let routed_greeter = || {
        node.plugins
            .routes("default")
            .and_then(|routes| {
                routes
                    .plugins
                    .iter()
                    .find(|plugin| plugin.name() == "greeter")
                    .cloned()
            })
            .expect("greeter routed")
    };

    // An older version's optimized build that finishes after a newer upload is not used.
    node.plugins.replace(&tenant, older.clone()).expect("v1");
    let late = node
        .plugins
        .optimize_later(
            &tenant,
            &older,
            wasm_bytes("greeter-v1"),
            Default::default(),
        )
        .expect("a baseline build gets an optimized one");
    node.plugins.replace(&tenant, newer.clone()).expect("v2");
    assert_eq!(late.await.expect("joined"), Optimized::Superseded);
    assert!(std::sync::Arc::ptr_eq(&routed_greeter(), &newer));
    assert_eq!(greet_version(&mut client).await, 2);

    // An optimized build that fails leaves the baseline build serving.
    let mut broken = wasm_bytes("greeter-v2");
    broken.truncate(broken.len() / 2);
    let failed = node
        .plugins
        .optimize_later(&tenant, &newer, broken, Default::default())
        .expect("started")
        .await
        .expect("joined");
    assert!(
        matches!(&failed, Optimized::Failed(message) if message.contains("not a Switchboard plugin")),
        "{failed:?}"
    );
    assert!(std::sync::Arc::ptr_eq(&routed_greeter(), &newer));
    assert_eq!(greet_version(&mut client).await, 2);

    // The build it was made for, still routed, is replaced, with its call count.
    let calls = newer.calls.load(std::sync::atomic::Ordering::Relaxed);
    let optimized = node
        .plugins
        .optimize_later(
            &tenant,
            &newer,
            wasm_bytes("greeter-v2"),
            Default::default(),
        )
        .expect("started");
    assert_eq!(optimized.await.expect("joined"), Optimized::InPlace);
    let routed = routed_greeter();
    assert_eq!(
        (routed.tier, routed.manifest.version.as_str()),
        (Tier::Optimized, "2.0.0")
    );
    assert!(routed.calls.load(std::sync::atomic::Ordering::Relaxed) >= calls);
    assert_eq!(greet_version(&mut client).await, 2);
    // An optimized build needs no second one.
    assert!(
        node.plugins
            .optimize_later(&tenant, &routed, Vec::new(), Default::default())
            .is_none()
    );
}

async fn each_hostile_call_ends_alone(server: &TestServer) {
    let mut mallory = Client::connect(server, "default", "mallory").await;
    let mut nina = Client::connect(server, "default", "nina").await;
    let mut olga = Client::connect(server, "other", "olga").await;
    let mut others = [&mut nina, &mut olga];
    let cases = [
        ("hostile:loop", "handler_timeout"),
        ("hostile:alloc", "handler_failed"),
        ("hostile:recurse", "handler_failed"),
        ("hostile:panic", "handler_failed"),
        ("hostile:huge-reply", "handler_failed"),
    ];
    for (msg_type, code) in cases {
        let reply = expect_error_code(&mut mallory, &mut others, msg_type, code).await;
        assert!(
            reply["payload"]["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()),
            "{reply}"
        );
    }
    assert_eq!(server.node().registry.len(), 3, "every connection survived");
}

#[tokio::test]
async fn a_flood_of_sends_hits_the_quota_not_the_host() {
    let server = hostile_server().await;
    let mut client = Client::connect(&server, "default", "mallory").await;
    client
        .send(json!({"type": "hostile:flood", "correlationId": "f"}))
        .await;
    let mut floods = 0;
    let ack = loop {
        let frame = client.recv().await;
        if frame["type"] == "flood" {
            floods += 1;
            continue;
        }
        break frame;
    };
    assert_eq!(floods, 50, "exactly the quota arrived");
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["payload"]["sent"], 50);
    assert!(
        ack["payload"]["refused"]
            .as_str()
            .is_some_and(|refused| refused.contains("RateLimited")),
        "{ack}"
    );
}

// Multi-threaded like the server binary: the spinning call yields at every epoch tick after its
// first, and the other connections' tasks run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_keep_getting_answers_while_a_plugin_spins() {
    let server = hostile_server().await;
    let mut mallory = Client::connect(&server, "default", "mallory").await;
    let mut neighbour = Client::connect(&server, "default", "nina").await;
    let mut stranger = Client::connect(&server, "other", "olga").await;
    let started = Instant::now();
    mallory
        .send(json!({"type": "hostile:loop", "correlationId": "spin"}))
        .await;
    // While the loop burns its 500 ms budget, the others are answered.
    for round in 0..3 {
        for client in [&mut neighbour, &mut stranger] {
            let reply = client
                .request(json!({"type": "echo", "payload": round}))
                .await;
            assert_eq!(reply["payload"], round);
        }
    }
    let answered_others = started.elapsed();
    // The spinning call has not ended yet: nothing has arrived for mallory.
    let pending = tokio::time::timeout(
        Duration::from_millis(1),
        futures_util::StreamExt::next(&mut mallory.ws),
    )
    .await;
    assert!(
        pending.is_err(),
        "mallory was answered before the others: {pending:?}"
    );
    let timeout = mallory.recv().await;
    assert_eq!(timeout["payload"]["code"], "handler_timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "the budget was spent: {:?} (others answered after {answered_others:?})",
        started.elapsed()
    );
    // The budget is 100 ticks of 5 ms. The call yielded at every tick but the first: a call
    // yields only once it has run a whole tick, so a short call that happens to cross a tick
    // boundary keeps its place in the run queue.
    let (_, list) = list_plugins(&server, Some(&crate::support::api_key("default"))).await;
    let hostile = list
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == "hostile"))
        .unwrap_or_else(|| panic!("hostile is listed: {list}"));
    assert_eq!(hostile["yields"].as_u64(), Some(99), "{hostile}");
}

async fn list_plugins(server: &TestServer, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(server.http_url("/api/tenants/default/plugins"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request succeeds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

pub(crate) fn wasm_bytes(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).expect("plugin built")
}

#[tokio::test]
async fn the_plugin_api_lists_and_refuses_bad_uploads_keeping_the_old_version() {
    let server = server_with(&["greeter-v1", "echo"], "").await;
    let key = crate::support::api_key("default");
    let (status, _) = list_plugins(&server, None).await;
    assert_eq!(status, 401);
    let (status, list) = list_plugins(&server, Some(&key)).await;
    assert_eq!(status, 200);
    let greeter = list
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == "greeter"))
        .expect("greeter listed")
        .clone();
    assert_eq!(greeter["version"], "1.0.0");
    assert_eq!(greeter["types"], json!(["greet"]));
    assert_eq!(greeter["sha256"].as_str().map(str::len), Some(64));
    let compile_ms = greeter["compileMs"].as_f64().expect("compileMs");
    let load_ms = greeter["loadMs"].as_f64().expect("loadMs");
    assert!(compile_ms > 0.0 && load_ms >= compile_ms, "{greeter}");

    // Not a component: 422, and version 1 keeps answering.
    let (status, body) = put_plugin(&server, "greeter", Some(&key), b"garbage".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    // A component with another name under this name: 400.
    let (status, body) = put_plugin(&server, "greeter", Some(&key), wasm_bytes("broadcast")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = put_plugin(&server, "greeter", None, wasm_bytes("greeter-v2")).await;
    assert_eq!(status, 401);

    let mut client = Client::connect(&server, "default", "alice").await;
    let reply = client.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"], json!({"version": 1}));
    let metrics = crate::support::http_get(&server.http_url("/metrics"))
        .await
        .2;
    assert!(
        metrics.contains("switchboard_plugin_load_failures_total{tenant=\"default\"} 2"),
        "{metrics}"
    );

    let (status, body) = put_plugin(&server, "greeter", Some(&key), wasm_bytes("greeter-v2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "2.0.0");
    let reply = client.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"], json!({"version": 2}));
}

/// `DELETE /api/tenants/default/plugins/{name}`: the status and the JSON answer.
async fn delete_plugin(server: &TestServer, name: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .delete(server.http_url(&format!("/api/tenants/default/plugins/{name}")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request succeeds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn deleting_a_plugin_makes_its_types_unknown_and_leaves_the_others() {
    let server = server_with(&["greeter-v1", "echo"], "").await;
    let key = crate::support::api_key("default");
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, json!(1));

    // Refusals change nothing.
    let (status, body) = delete_plugin(&server, "greeter", None).await;
    assert_eq!(status, 401, "{body}");
    crate::support::assert_error_body(&body, "no key");
    let (status, body) = delete_plugin(&server, "greeter", Some("not-the-key")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = delete_plugin(&server, "nobody", Some(&key)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("`nobody`")),
        "{body}"
    );
    let (status, body) = delete_plugin(&server, "", Some(&key)).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(greet_version(&mut client).await, json!(1));

    let (status, body) = delete_plugin(&server, "greeter", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "greeter");
    assert_eq!(body["version"], "1.0.0");
    let reply = client.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"]["code"], "unknown_type", "{reply}");
    let echoed = client.request(json!({"type": "echo", "payload": 7})).await;
    assert_eq!(echoed["payload"], 7, "{echoed}");
    let (_, list) = list_plugins(&server, Some(&key)).await;
    let names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|plugin| plugin["name"].as_str())
        .collect();
    assert_eq!(names, ["echo"]);
    let (status, _) = delete_plugin(&server, "greeter", Some(&key)).await;
    assert_eq!(status, 404, "a second delete finds nothing");

    // The name is free again.
    let (status, body) = put_plugin(&server, "greeter", Some(&key), wasm_bytes("greeter-v2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(greet_version(&mut client).await, json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_twenty_times_under_traffic_drops_nothing() {
    let server = server_with(
        &["greeter-v1"],
        "[tenants.limits]\nmessages_per_second = 100000\nburst = 100000\n",
    )
    .await;
    let key = crate::support::api_key("default");
    let versions = [wasm_bytes("greeter-v1"), wasm_bytes("greeter-v2")];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for index in 0..3 {
        let addr = server.addr;
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            let mut client = Client::connect_addr(addr, "default", &format!("user{index}")).await;
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Acquire) && Instant::now() < deadline {
                let id = format!("{index}-{sent}");
                client
                    .send(json!({"type": "greet", "correlationId": id}))
                    .await;
                let reply = client.recv().await;
                assert_eq!(reply["type"], "ack", "{reply}");
                assert_eq!(reply["correlationId"], json!(id), "one reply, in order");
                seen.push(reply["payload"]["version"].as_u64().expect("version"));
                sent += 1;
            }
            // One more after the last swap.
            let last = client.request(json!({"type": "greet"})).await;
            seen.push(last["payload"]["version"].as_u64().expect("version"));
            (client, seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for round in 0..20 {
        let bytes = versions[(round + 1) % 2].clone();
        let (status, body) = put_plugin(&server, "greeter", Some(&key), bytes).await;
        assert_eq!(status, 200, "round {round}: {body}");
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(server.node().registry.len(), 3, "no connection dropped");
    for sender in senders {
        let (client, seen) = sender.await.expect("sender finished");
        assert!(
            seen.len() > 20,
            "traffic flowed during the reloads: {}",
            seen.len()
        );
        assert!(
            seen.contains(&1) && seen.contains(&2),
            "both versions answered: {seen:?}"
        );
        assert_eq!(
            seen.last(),
            Some(&1),
            "the last upload (version 1) answers at the end"
        );
        client.close().await;
    }
}

/// The next `audit` event of this kind, skipping the others (ticks arrive all the time).
async fn next_audit(watcher: &mut Client, event: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let frame = watcher.recv().await;
        if frame["type"] == "audit" && frame["payload"]["event"] == event {
            return frame["payload"].clone();
        }
    }
    panic!("no `{event}` audit event within 5 s");
}

#[tokio::test]
async fn lifecycle_hooks_fire_for_connects_every_kind_of_drop_and_ticks() {
    let server = server_with(
        &["lifecycle"],
        "[tenants.limits]\nburst = 3\nmessages_per_second = 1\n",
    )
    .await;
    let mut watcher = Client::connect(&server, "default", "watcher").await;
    watcher.join("audit").await;
    let first = next_audit(&mut watcher, "tick").await["n"]
        .as_i64()
        .expect("n");
    let second = next_audit(&mut watcher, "tick").await["n"]
        .as_i64()
        .expect("n");
    assert!(second > first, "ticks count up: {first} then {second}");

    // A normal close.
    let bob = Client::connect(&server, "default", "bob").await;
    assert_eq!(
        next_audit(&mut watcher, "connect").await,
        json!({"event": "connect", "userId": "bob"})
    );
    bob.close().await;
    assert_eq!(
        next_audit(&mut watcher, "disconnect").await,
        json!({"event": "disconnect", "userId": "bob", "code": 1000})
    );

    // A TCP drop without a close frame.
    let carol = Client::connect(&server, "default", "carol").await;
    next_audit(&mut watcher, "connect").await;
    drop(carol);
    assert_eq!(
        next_audit(&mut watcher, "disconnect").await,
        json!({"event": "disconnect", "userId": "carol", "code": 1006})
    );

    // A close by the server (rate limit).
    let mut dave = Client::connect(&server, "default", "dave").await;
    next_audit(&mut watcher, "connect").await;
    for _ in 0..4 {
        dave.send_text(r#"{"type":"ping"}"#).await;
    }
    let (code, _) = dave.expect_close_skipping_text().await;
    assert_eq!(code, 1008);
    assert_eq!(
        next_audit(&mut watcher, "disconnect").await,
        json!({"event": "disconnect", "userId": "dave", "code": 1008})
    );

    // The count of connects lives in the key-value store.
    let count = watcher.request(json!({"type": "lifecycle:count"})).await;
    assert_eq!(count["payload"]["connects"], 4);
}

#[tokio::test]
async fn a_plugin_sees_the_attachment_it_set_on_every_later_call() {
    let server = server_with(&["lifecycle"], "").await;
    let mut watcher = Client::connect(&server, "default", "watcher").await;
    watcher.join("audit").await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    let mut bob = Client::connect(&server, "default", "bob").await;
    let attach = |text: &'static str| json!({"type": "lifecycle:attach", "payload": text});
    // Each call sees what the previous one stored, on its own connection only.
    for (before, text) in [
        (json!(null), "one"),
        (json!("one"), "two"),
        (json!("two"), "three"),
    ] {
        let reply = alice.request(attach(text)).await;
        assert_eq!(reply["payload"], json!({"seen": before}), "{reply}");
    }
    let reply = bob.request(attach("bob's")).await;
    assert_eq!(reply["payload"], json!({"seen": null}), "{reply}");
    alice.close().await;
    let event = loop {
        let event = next_audit(&mut watcher, "disconnect").await;
        if event["userId"] == "alice" {
            break event;
        }
    };
    assert_eq!(event["attachment"], "three", "{event}");
}

#[tokio::test]
async fn on_disconnect_runs_when_the_heartbeat_gives_up() {
    let global = "[heartbeat]\ninterval = \"200ms\"\ntimeout = \"300ms\"\n";
    let server = TestServer::start(&config(
        global,
        &[tenant("default", "", &plugin_tables(&["lifecycle"], ""))],
    ))
    .await;
    let mut watcher = Client::connect(&server, "default", "watcher").await;
    watcher.join("audit").await;
    // Erin never reads, so she never answers a ping.
    let erin = Client::connect(&server, "default", "erin").await;
    let event = next_audit(&mut watcher, "disconnect").await;
    assert_eq!(
        event,
        json!({"event": "disconnect", "userId": "erin", "code": 1006})
    );
    drop(erin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_plugin_answers_overloaded_instead_of_queueing() {
    let limits = "[tenants.plugin_limits]\ncpu_budget = \"500ms\"\nmax_concurrency = 1\n";
    let server = server_with(&["hostile"], limits).await;
    let mut mallory = Client::connect(&server, "default", "mallory").await;
    let mut nina = Client::connect(&server, "default", "nina").await;
    mallory
        .send(json!({"type": "hostile:loop", "correlationId": "spin"}))
        .await;
    // Give the spinning call time to take the only slot.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = nina.request(json!({"type": "hostile:ok"})).await;
    assert_eq!(refused["payload"]["code"], "overloaded", "{refused}");
    assert_eq!(mallory.recv().await["payload"]["code"], "handler_timeout");
    let ok = nina.request(json!({"type": "hostile:ok"})).await;
    assert_eq!(ok["payload"], "ok");
}

#[tokio::test]
async fn a_plugin_cannot_reach_another_tenants_connections() {
    let server = hostile_server().await;
    let mut mallory = Client::connect(&server, "default", "mallory").await;
    let mut olga = Client::connect(&server, "other", "olga").await;
    let reply = mallory
        .request(json!({"type": "hostile:poke", "payload": olga.connection_id()}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    // The host's refusal, passed on with `?`, as its documented code.
    assert_eq!(reply["payload"]["code"], "not_found", "{reply}");
    olga.expect_silence(Duration::from_millis(200)).await;
    assert!(
        server.node().rooms.is_empty(),
        "nobody was joined to `stolen`"
    );
    // The same call within the tenant works.
    let mut nina = Client::connect(&server, "default", "nina").await;
    let reply = mallory
        .request(json!({"type": "hostile:poke", "payload": nina.connection_id()}))
        .await;
    assert_eq!(reply["payload"], "poked", "{reply}");
    assert_eq!(nina.recv().await["type"], "poke");
}

#[tokio::test]
async fn without_tiered_swaps_an_upload_serves_optimized_code_at_once() {
    let server = TestServer::start(&config(
        "[plugins]\ntiered_swaps = false\n",
        &[tenant("default", "", &plugin_tables(&["greeter-v1"], ""))],
    ))
    .await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let key = crate::support::api_key("default");
    let (status, loaded) =
        put_plugin(&server, "greeter", Some(&key), wasm_bytes("greeter-v2")).await;
    assert_eq!(status, 200, "{loaded}");
    assert_eq!(loaded["tier"], "optimized");
    assert_eq!(greet_version(&mut client).await, 2);
    // No background build follows: the listing stays on the build the PUT answered with.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, list) = list_plugins(&server, Some(&key)).await;
    let greeter = list
        .as_array()
        .and_then(|plugins| plugins.iter().find(|plugin| plugin["name"] == "greeter"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(greeter["loadedAtMs"], loaded["loadedAtMs"], "{greeter}");
    assert_eq!(greeter["tier"], "optimized");
}

#[tokio::test]
async fn a_changed_plugin_file_is_reloaded_and_a_broken_one_is_refused() {
    let folder = std::env::temp_dir().join(format!("switchboard-watch-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("folder");
    let path = folder.join("greeter.wasm");
    deploy(&path, &wasm_bytes("greeter-v1"));
    let tables = format!("[[tenants.plugins]]\npath = \"{}\"\n", path.display());
    let server = TestServer::start(&config("", &[tenant("default", "", &tables)])).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 1);

    deploy(&path, &wasm_bytes("greeter-v2"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while greet_version(&mut client).await != 2 {
        assert!(Instant::now() < deadline, "version 2 never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file is refused and counted; version 2 keeps serving.
    crate::support::deploy_refused(
        &server,
        &mut client,
        &path,
        b"this is not a component",
        "the broken file",
        2,
    )
    .await;

    // Reading the file changes nothing: an upload made since stays in place.
    deploy(&path, &wasm_bytes("greeter-v2"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while greet_version(&mut client).await != 2 {
        assert!(
            Instant::now() < deadline,
            "the fixed file was never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let key = crate::support::api_key("default");
    let (status, body) = put_plugin(&server, "greeter", Some(&key), wasm_bytes("greeter-v1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(greet_version(&mut client).await, 1);
    let read = std::fs::read(&path).expect("the file reads");
    assert_eq!(read, wasm_bytes("greeter-v2"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        greet_version(&mut client).await,
        1,
        "reading the file reloaded it over the upload"
    );
    let _ = std::fs::remove_dir_all(&folder);
}

/// A counter of the compiled-code cache.
async fn code_cache(server: &TestServer, which: &str) -> f64 {
    let text = crate::support::http_get(&server.http_url("/metrics"))
        .await
        .2;
    let name = format!("switchboard_plugin_code_cache_{which} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&name)?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[tokio::test]
async fn a_new_build_of_a_plugin_reuses_the_code_of_its_unchanged_functions() {
    let server = server_with(&["echo"], "").await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let (hits, misses) = (
        code_cache(&server, "hits_total").await,
        code_cache(&server, "misses_total").await,
    );
    assert!(misses > 0.0, "the first load compiled its functions");

    // The same code with one more custom section: a different build with the same functions.
    let mut rebuilt = wasm_bytes("echo");
    rebuilt.extend_from_slice(&[0, 9, 8]);
    rebuilt.extend_from_slice(b"build-2!");
    let key = crate::support::api_key("default");
    let (status, body) = put_plugin(&server, "echo", Some(&key), rebuilt).await;
    assert_eq!(status, 200, "{body}");
    // The cache serves the optimizing compiler, whose build follows the baseline one.
    wait_for_tier(&server, &key, "echo", "optimized").await;
    let reused = code_cache(&server, "hits_total").await - hits;
    let compiled = code_cache(&server, "misses_total").await - misses;
    assert!(
        reused > 4.0 * compiled,
        "most functions came from the cache: {reused} reused, {compiled} compiled"
    );
    assert!(code_cache(&server, "bytes").await > 0.0);
    let reply = client
        .request(json!({"type": "echo", "payload": {"after": "swap"}}))
        .await;
    assert_eq!(reply["payload"], json!({"after": "swap"}));
}

/// The listing of plugin `name` once it runs on `tier` (within 30 s).
async fn wait_for_tier(server: &TestServer, key: &str, name: &str, tier: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, list) = list_plugins(server, Some(key)).await;
        assert_eq!(status, 200, "{list}");
        let listed = list
            .as_array()
            .and_then(|plugins| plugins.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {list}"));
        if listed["tier"] == tier {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached the {tier} tier: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_swapped_in_version_serves_on_baseline_code_at_once_then_on_optimized_code() {
    let server = server_with(&["greeter-v1"], "").await;
    let key = crate::support::api_key("default");
    // Nothing serves yet at start: configured plugins are compiled optimized straight away.
    wait_for_tier(&server, &key, "greeter", "optimized").await;
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 1);

    let (status, body) = put_plugin(&server, "greeter", Some(&key), wasm_bytes("greeter-v2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tier"], "baseline", "{body}");
    assert_eq!(body["version"], "2.0.0");
    // The baseline build answers as soon as the upload does.
    assert_eq!(greet_version(&mut client).await, 2);
    let mut answered = 1;
    let optimized = wait_for_tier(&server, &key, "greeter", "optimized").await;
    assert_eq!(optimized["sha256"], body["sha256"], "the same version");
    assert_eq!(optimized["version"], "2.0.0");
    assert!(
        optimized["calls"].as_u64() >= Some(answered),
        "the baseline build's calls carry over: {optimized}"
    );
    for _ in 0..3 {
        assert_eq!(greet_version(&mut client).await, 2);
        answered += 1;
    }
    let (_, list) = list_plugins(&server, Some(&key)).await;
    assert_eq!(list[0]["calls"].as_u64(), Some(answered), "{list}");
}

/// The `n` of the newest tick the watcher has been sent: reads until the socket stays quiet
/// for a moment (ticks come every 100 ms) or for at most a second, after at least one tick.
async fn latest_tick(watcher: &mut Client) -> i64 {
    let mut latest = next_audit(watcher, "tick").await["n"].as_i64().expect("n");
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Ok(frame) = tokio::time::timeout(Duration::from_millis(40), watcher.recv()).await
        else {
            break;
        };
        if frame["type"] == "audit" && frame["payload"]["event"] == "tick" {
            latest = frame["payload"]["n"].as_i64().expect("n");
        }
    }
    latest
}

#[tokio::test]
async fn swapping_one_plugin_does_not_tick_the_others_twice() {
    let server = server_with(&["lifecycle", "echo"], "").await;
    let key = crate::support::api_key("default");
    let mut watcher = Client::connect(&server, "default", "watcher").await;
    watcher.join("audit").await;
    next_audit(&mut watcher, "tick").await;
    for round in 0..3u8 {
        let mut rebuilt = wasm_bytes("echo");
        rebuilt.extend_from_slice(&[0, 2, 1, b'a' + round]);
        let (status, body) = put_plugin(&server, "echo", Some(&key), rebuilt).await;
        assert_eq!(status, 200, "{body}");
        wait_for_tier(&server, &key, "echo", "optimized").await;
    }
    // `lifecycle` ticks every 100 ms: about 10 a second, whatever was swapped around it.
    // Ticks queued while the swaps ran are drained first, so they do not count as a burst.
    let (first, started) = (latest_tick(&mut watcher).await, Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (last, ended) = (latest_tick(&mut watcher).await, Instant::now());
    let per_second = (last - first) as f64 / (ended - started).as_secs_f64();
    assert!(
        // Under load a tick can come late (and a missed one is skipped), never early: a
        // second tick task would double the rate.
        (1.0..=15.0).contains(&per_second),
        "{per_second:.1} ticks a second after the swaps"
    );
}
