//! The desired state of plugin deployments: deploys, rollbacks and deletes kept across a
//! node's restarts (memory backplane, state directory), and converging on every node of a
//! Redis cluster behind nginx while clients keep sending.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::cluster::{readyz_becomes, redis_node_config};
use crate::external::{Nginx, RedisServer, free_port};
use crate::plugins::{plugin_tables, wasm_bytes};
use crate::support::{
    BinaryServer, Client, WAIT, api_key, config, fresh_state_dir, http_send, tenant,
};

/// How soon a change made through one node must serve on every node (the bound).
const CONVERGED: Duration = Duration::from_secs(2);

/// A plugin API request to the node (or proxy) at `addr` with the `default` tenant's key.
async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
    let url = format!("http://{addr}/api/tenants/default/plugins{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let (status, _, answer) = http_send(|client| {
        let request = client.request(method, url).bearer_auth(api_key("default"));
        match body {
            Some(body) => request.body(body),
            None => request,
        }
    })
    .await;
    (status, answer)
}

/// One `greet` and its reply, which must be the next frame and carry the same id.
async fn greet(client: &mut Client, id: u64) -> Value {
    let id = format!("g{id}");
    client
        .send(json!({"type": "greet", "correlationId": id}))
        .await;
    let reply = client.recv().await;
    assert_eq!(
        reply["correlationId"],
        json!(id),
        "replies in order: {reply}"
    );
    reply
}

/// What a `greet` reply says: the greeter's version, or the error code.
fn outcome(reply: &Value) -> Value {
    match reply["type"].as_str() {
        Some("ack") => reply["payload"]["version"].clone(),
        _ => reply["payload"]["code"].clone(),
    }
}

/// A history's versions as (`field`, `active`), newest first.
fn kept_versions(history: &Value, field: &str) -> Vec<(Value, Value)> {
    history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|version| (version[field].clone(), version["active"].clone()))
        .collect()
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|plugin| plugin["name"] == name)
}

/// A single node's config with `greeter-v1` and `echo` from files and its state in `dir`.
fn single_node(dir: &std::path::Path, listen: &str) -> String {
    config(
        &format!("[state]\ndir = \"{}\"\n", dir.display()),
        &[tenant(
            "default",
            "",
            &plugin_tables(&["greeter-v1", "echo"], ""),
        )],
    )
    .replace("127.0.0.1:0", listen)
}

#[tokio::test]
async fn one_node_keeps_deploys_rollbacks_and_deletes_across_a_kill() {
    let dir = fresh_state_dir();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut node = BinaryServer::start(&single_node(&dir, &listen)).await;
    let addr = node.addr;
    let mut client = Client::connect_addr(addr, "default", "alice").await;
    assert_eq!(outcome(&greet(&mut client, 1).await), 1);
    let (_, list) = api(addr, "GET", "", None).await;
    assert_eq!(find(&list, "greeter").expect("listed")["source"], "file");
    assert_eq!(
        api(addr, "GET", "/greeter/history", None).await,
        (
            200,
            json!({"name": "greeter", "deleted": false, "versions": []})
        )
    );
    assert_eq!(
        api(addr, "POST", "/greeter/rollback", None).await.0,
        404,
        "a file's plugin has nothing to roll back to"
    );

    let (status, deployed) = api(addr, "PUT", "/greeter", Some(wasm_bytes("greeter-v2"))).await;
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(deployed["source"], "api");
    assert_eq!(outcome(&greet(&mut client, 2).await), 2);
    let v2 = deployed["sha256"].as_str().expect("sha256").to_owned();
    // The file's version the first deploy replaced is kept: a rollback can return to it.
    let (_, history) = api(addr, "GET", "/greeter/history", None).await;
    assert_eq!(history["deleted"], false);
    let kept = kept_versions(&history, "version");
    assert_eq!(
        kept,
        vec![
            (json!("2.0.0"), json!(true)),
            (json!("1.0.0"), json!(false))
        ]
    );

    // SIGKILL: no shutdown work. The same config on the same directory serves the deploy.
    node.signal("KILL");
    node.wait(WAIT).await;
    let mut node = BinaryServer::start(&single_node(&dir, &listen)).await;
    let mut client = Client::connect_addr(addr, "default", "alice").await;
    assert_eq!(
        outcome(&greet(&mut client, 3).await),
        2,
        "the deploy survived"
    );
    let (_, list) = api(addr, "GET", "", None).await;
    let greeter = find(&list, "greeter").expect("listed");
    assert_eq!(
        (greeter["source"].clone(), greeter["sha256"].clone()),
        (json!("api"), json!(v2))
    );

    // v1 deployed on top; then back to v2, then to v1 by its SHA-256.
    let hits = "switchboard_plugin_build_cache_hits_total";
    let before = crate::cluster::metric(addr, hits).await;
    let (status, deployed) = api(addr, "PUT", "/greeter", Some(wasm_bytes("greeter-v1"))).await;
    assert_eq!(status, 200, "{deployed}");
    // The same bytes as the configured file, whose optimized build was made at start: kept
    // and reused, not compiled again.
    assert_eq!(deployed["tier"], "optimized", "{deployed}");
    assert_eq!(crate::cluster::metric(addr, hits).await, before + 1.0);
    let v1 = deployed["sha256"].as_str().expect("sha256").to_owned();
    assert_eq!(outcome(&greet(&mut client, 4).await), 1);
    let (status, back) = api(addr, "POST", "/greeter/rollback", None).await;
    assert_eq!(
        (status, back["version"].clone()),
        (200, json!("2.0.0")),
        "{back}"
    );
    assert_eq!(outcome(&greet(&mut client, 5).await), 2);
    let (status, history) = api(addr, "GET", "/greeter/history", None).await;
    assert_eq!(status, 200);
    let versions = kept_versions(&history, "sha256");
    assert_eq!(
        versions,
        vec![(json!(v1), json!(false)), (json!(v2), json!(true))],
        "newest first, the serving one marked"
    );
    let (status, to) = api(addr, "POST", &format!("/greeter/rollback?to={v1}"), None).await;
    assert_eq!((status, to["sha256"].clone()), (200, json!(v1)));
    assert_eq!(outcome(&greet(&mut client, 6).await), 1);

    // Refusals change nothing.
    for (method, path, status, code) in [
        ("POST", "/greeter/rollback?to=0000", 404, "not_found"),
        ("POST", "/nobody/rollback", 404, "not_found"),
        ("GET", "/nobody/history", 404, "not_found"),
        ("DELETE", "/nobody", 404, "not_found"),
        ("PUT", "/greeter/history", 405, "method_not_allowed"),
        ("GET", "/greeter/other", 404, "not_found"),
    ] {
        let (got, body) = api(addr, method, path, None).await;
        assert_eq!(
            (got, body["error"].clone()),
            (status, json!(code)),
            "{method} {path}: {body}"
        );
    }
    assert_eq!(outcome(&greet(&mut client, 7).await), 1);

    // A delete outlives a restart too, though the file still configures the plugin.
    let (status, deleted) = api(addr, "DELETE", "/greeter", None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(outcome(&greet(&mut client, 8).await), "unknown_type");
    node.signal("KILL");
    node.wait(WAIT).await;
    let node = BinaryServer::start(&single_node(&dir, &listen)).await;
    let mut client = Client::connect_addr(node.addr, "default", "alice").await;
    assert_eq!(outcome(&greet(&mut client, 9).await), "unknown_type");
    let echo = client
        .request(json!({"type": "echo", "payload": "still here"}))
        .await;
    assert_eq!(echo["payload"], "still here", "other plugins untouched");
    // A rollback after a delete brings the newest kept version back.
    let (status, restored) = api(addr, "POST", "/greeter/rollback", None).await;
    assert_eq!(
        (status, restored["sha256"].clone()),
        (200, json!(v1)),
        "{restored}"
    );
    assert_eq!(outcome(&greet(&mut client, 10).await), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_state_file_that_does_not_parse_stops_the_start_instead_of_dropping_deploys() {
    let dir = fresh_state_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("state.json"), "{\"revision\": 2, \"plugins\": [").expect("torn");
    let config = crate::support::temp_file("config", &single_node(&dir, "127.0.0.1:0"));
    let output = tokio::process::Command::new(crate::support::binary())
        .args(["serve", "--config"])
        .arg(&config.0)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("exited in time")
        .expect("ran");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("state.json"), "names the file: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_tenant_keeps_at_most_max_plugins_deleted_records_forgetting_the_oldest() {
    let server = crate::support::TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "",
            "[tenants.plugin_limits]\nmax_plugins = 1\n",
        )],
    ))
    .await;
    let addr = server.addr;
    for name in ["greeter", "echo"] {
        let fixture = if name == "greeter" {
            "greeter-v1"
        } else {
            "echo"
        };
        let (status, body) = api(addr, "PUT", &format!("/{name}"), Some(wasm_bytes(fixture))).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = api(addr, "DELETE", &format!("/{name}"), None).await;
        assert_eq!(status, 200, "{body}");
    }
    // Two deleted records for a tenant that keeps one: the older is gone with its history.
    let (status, body) = api(addr, "GET", "/greeter/history", None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("not_found")),
        "{body}"
    );
    assert_eq!(
        api(addr, "POST", "/greeter/rollback", None).await.0,
        404,
        "nothing left to bring back"
    );
    let (status, body) = api(addr, "GET", "/echo/history", None).await;
    assert_eq!(
        (status, body["deleted"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (status, body) = api(addr, "POST", "/echo/rollback", None).await;
    assert_eq!(
        (status, body["name"].clone()),
        (200, json!("echo")),
        "{body}"
    );
}

/// Three nodes on one Redis behind nginx, `greeter-v1` and `echo` from their files.
struct Cluster {
    redis: RedisServer,
    nodes: Vec<BinaryServer>,
    configs: Vec<String>,
    nginx: Nginx,
}

impl Cluster {
    async fn start() -> Cluster {
        let redis = RedisServer::start().await;
        let tables = plugin_tables(&["greeter-v1", "echo"], "");
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        for _ in 0..3 {
            let config = redis_node_config(&format!("url = \"{}\"\n", redis.url()), &tables)
                .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()));
            let node = BinaryServer::start(&config).await;
            readyz_becomes(node.addr, 200, WAIT).await;
            nodes.push(node);
            configs.push(config);
        }
        let ports: Vec<u16> = nodes.iter().map(|node| node.addr.port()).collect();
        let nginx = Nginx::start(&ports).await;
        Cluster {
            redis,
            nodes,
            configs,
            nginx,
        }
    }

    /// SIGKILLs node `index` and starts it again on the same config; returns once it is ready.
    async fn restart(&mut self, index: usize) -> SocketAddr {
        self.nodes[index].signal("KILL");
        self.nodes[index].wait(WAIT).await;
        self.nodes[index] = BinaryServer::start(&self.configs[index]).await;
        readyz_becomes(self.nodes[index].addr, 200, WAIT).await;
        self.nodes[index].addr
    }

    fn front(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.nginx.port).into()
    }

    /// Every node's direct answer to a `greet`.
    async fn outcomes(&self) -> Vec<Value> {
        let mut outcomes = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let mut client = Client::connect_addr(node.addr, "default", "probe").await;
            outcomes.push(outcome(&greet(&mut client, index as u64).await));
        }
        outcomes
    }
}

/// Clients through the proxy sending `greet` one after another until told to stop; each
/// returns (when sent, outcome) for every request.
fn senders(
    front: SocketAddr,
    count: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Vec<(Instant, Value)>>> {
    (0..count)
        .map(|index| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut client =
                    Client::connect_addr(front, "default", &format!("user{index}")).await;
                let mut seen = Vec::new();
                // Bounded: the test stops them within seconds; 20,000 is far beyond that.
                for id in 0..20_000 {
                    if *stop.borrow() {
                        break;
                    }
                    let sent = Instant::now();
                    seen.push((sent, outcome(&greet(&mut client, id).await)));
                    sleep(Duration::from_millis(5)).await;
                }
                client.expect_silence(Duration::from_millis(200)).await;
                seen
            })
        })
        .collect()
}

/// Makes `change` through the proxy while 20 clients send, and checks that every request sent
/// `CONVERGED` after the change was answered with `after` (and none failed otherwise).
async fn change_under_load(
    cluster: &Cluster,
    change: (&str, &str, Option<Vec<u8>>),
    before: Value,
    after: Value,
) {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let clients = senders(cluster.front(), 20, stop);
    sleep(Duration::from_millis(300)).await;
    let (method, path, body) = change;
    let (status, answer) = api(cluster.front(), method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {answer}");
    let changed = Instant::now();
    sleep(CONVERGED + Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let mut total = 0;
    // The latest request after the change that still got the old answer: how long the change
    // took to reach every node (printed with `--no-capture`).
    let mut last_old = Duration::ZERO;
    for client in clients {
        let seen = client.await.expect("client ran");
        total += seen.len();
        for (sent, got) in seen {
            if got == before && sent > changed {
                last_old = last_old.max(sent - changed);
            }
            if sent >= changed + CONVERGED {
                assert_eq!(
                    got,
                    after,
                    "{method} {path}: a request {:?} after the change",
                    sent - changed
                );
            } else {
                assert!(
                    got == before || got == after,
                    "{method} {path}: only the old or the new answer, got {got}"
                );
            }
        }
    }
    assert!(total > 200, "the clients kept sending ({total} requests)");
    eprintln!(
        "{method} {path}: {total} requests, the last old answer {last_old:?} after the change was answered"
    );
    assert_eq!(
        cluster.outcomes().await,
        vec![after.clone(); 3],
        "every node"
    );
}

#[tokio::test]
async fn a_change_through_nginx_serves_on_every_node_within_two_seconds_under_load() {
    let mut cluster = Cluster::start().await;
    let front = cluster.front();
    change_under_load(
        &cluster,
        ("PUT", "/greeter", Some(wasm_bytes("greeter-v2"))),
        json!(1),
        json!(2),
    )
    .await;
    // Each node reports the version it serves.
    let (_, list) = api(front, "GET", "", None).await;
    let greeter = find(&list, "greeter").expect("listed");
    assert_eq!(greeter["source"], "api");
    let mut nodes: Vec<(Value, Value)> = greeter["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| (node["version"].clone(), node["error"].clone()))
        .collect();
    nodes.sort_by_key(|node| node.0.to_string());
    assert_eq!(nodes, vec![(json!("2.0.0"), Value::Null); 3], "{greeter}");
    let echo = find(&list, "echo").expect("listed");
    assert_eq!(echo["source"], "file");
    assert_eq!(
        echo["nodes"].as_array().map(Vec::len),
        Some(3),
        "file plugins too: {echo}"
    );

    change_under_load(
        &cluster,
        ("POST", "/greeter/rollback", None),
        json!(2),
        json!(1),
    )
    .await;
    change_under_load(
        &cluster,
        ("DELETE", "/greeter", None),
        json!(1),
        json!("unknown_type"),
    )
    .await;
    change_under_load(
        &cluster,
        ("POST", "/greeter/rollback", None),
        json!("unknown_type"),
        json!(1),
    )
    .await;
    change_under_load(
        &cluster,
        ("PUT", "/greeter", Some(wasm_bytes("greeter-v2"))),
        json!(1),
        json!(2),
    )
    .await;

    // A node killed and started again serves the current version before it says ready.
    let restarted = cluster.restart(1).await;
    let mut client = Client::connect_addr(restarted, "default", "back").await;
    assert_eq!(
        outcome(&greet(&mut client, 1).await),
        2,
        "the restarted node"
    );

    // Redis restarted (empty: the test's Redis keeps nothing): every node keeps serving what
    // it had, comes back ready, and the next deploy reaches all of them again.
    cluster.redis.restart().await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cluster.outcomes().await,
        vec![json!(2); 3],
        "kept through the outage"
    );
    for node in &cluster.nodes {
        readyz_becomes(node.addr, 200, Duration::from_secs(10)).await;
    }
    // The nodes put back what they serve: a node started now gets the deployed version, not
    // its file's, and the history starts again from it.
    let restarted = cluster.restart(2).await;
    let mut client = Client::connect_addr(restarted, "default", "back").await;
    assert_eq!(
        outcome(&greet(&mut client, 2).await),
        2,
        "started after the loss"
    );
    let (status, history) = api(front, "GET", "/greeter/history", None).await;
    let kept = kept_versions(&history, "version");
    assert_eq!(
        (status, kept),
        (200, vec![(json!("2.0.0"), json!(true))]),
        "{history}"
    );
    change_under_load(
        &cluster,
        ("PUT", "/greeter", Some(wasm_bytes("greeter-v1"))),
        json!(2),
        json!(1),
    )
    .await;
}

#[tokio::test]
async fn a_version_that_cannot_load_is_refused_and_changes_nothing_anywhere() {
    let cluster = Cluster::start().await;
    let front = cluster.front();
    let mut garbage = wasm_bytes("greeter-v2");
    garbage.truncate(garbage.len() / 2);
    let (status, answer) = api(front, "PUT", "/greeter", Some(garbage)).await;
    assert_eq!(status, 422, "{answer}");
    // A component of another plugin under this name.
    let (status, answer) = api(front, "PUT", "/greeter", Some(wasm_bytes("echo"))).await;
    assert_eq!(status, 400, "{answer}");
    sleep(CONVERGED).await;
    assert_eq!(cluster.outcomes().await, vec![json!(1); 3]);
    let (status, history) = api(front, "GET", "/greeter/history", None).await;
    assert_eq!(
        (status, history["versions"].clone()),
        (200, json!([])),
        "nothing recorded"
    );
}

/// Waits until the node's series `name` reads `value`.
pub(crate) async fn metric_becomes(addr: SocketAddr, name: &str, value: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = crate::cluster::metric(addr, name).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed {now}, wanted {value}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_version_one_node_cannot_load_is_reported_there_and_its_old_version_keeps_serving() {
    const KEY: &str = "artifact-key-for-tests-0123456789abcdef";
    let redis = RedisServer::start().await;
    let tables = plugin_tables(&["greeter-v1", "echo"], "");
    let keyless = redis_node_config(&format!("url = \"{}\"\n", redis.url()), &tables);
    // Only this node may load artifacts signed with the key.
    let keyed = keyless.replacen(
        "[redis]\n",
        &format!("[plugins]\nartifact_key = \"{KEY}\"\n[redis]\n"),
        1,
    );
    let (keyed, keyless) = (
        BinaryServer::start(&keyed).await,
        BinaryServer::start(&keyless).await,
    );
    for node in [&keyed, &keyless] {
        readyz_becomes(node.addr, 200, WAIT).await;
    }
    let key = switchboard::config::ArtifactKey::new(KEY).expect("long enough");
    let artifact = switchboard::plugins::Plugins::precompile(&key, &wasm_bytes("greeter-v2"))
        .expect("precompiles");
    let (status, answer) = api(keyed.addr, "PUT", "/greeter", Some(artifact)).await;
    assert_eq!(status, 200, "{answer}");

    // The keyless node refuses the artifact, keeps 1.0 and says so; the keyed one serves 2.0.
    let failures = "switchboard_state_apply_failures_total";
    metric_becomes(keyless.addr, failures, 1.0, CONVERGED).await;
    let mismatched = "switchboard_state_mismatched_plugins";
    assert_eq!(crate::cluster::metric(keyless.addr, mismatched).await, 1.0);
    assert_eq!(crate::cluster::metric(keyed.addr, mismatched).await, 0.0);
    for (node, version) in [(&keyed, 2), (&keyless, 1)] {
        let mut client = Client::connect_addr(node.addr, "default", "probe").await;
        assert_eq!(outcome(&greet(&mut client, 1).await), version);
    }
    // Both nodes' reports, listed through either node.
    sleep(Duration::from_millis(500)).await;
    let (_, list) = api(keyed.addr, "GET", "", None).await;
    let greeter = find(&list, "greeter").expect("listed");
    let mut nodes: Vec<(Value, bool)> = greeter["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| (node["version"].clone(), node["error"].is_string()))
        .collect();
    nodes.sort_by_key(|node| node.0.to_string());
    assert_eq!(
        nodes,
        vec![(json!("1.0.0"), true), (json!("2.0.0"), false)],
        "{greeter}"
    );
    let error = greeter["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find_map(|node| node["error"].as_str()))
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("artifact"),
        "the load error says why: {error}"
    );

    // A version every node loads ends the mismatch.
    let (status, answer) = api(
        keyless.addr,
        "PUT",
        "/greeter",
        Some(wasm_bytes("greeter-v2")),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for node in [&keyed, &keyless] {
        metric_becomes(node.addr, mismatched, 0.0, CONVERGED).await;
        let mut client = Client::connect_addr(node.addr, "default", "probe").await;
        assert_eq!(outcome(&greet(&mut client, 2).await), 2);
    }
}

#[tokio::test]
async fn the_store_going_away_keeps_the_node_serving_and_unready_until_it_is_back() {
    let mut cluster = Cluster::start().await;
    cluster.redis.stop().await;
    let node = cluster.nodes[0].addr;
    readyz_becomes(node, 503, Duration::from_secs(10)).await;
    assert_eq!(cluster.outcomes().await, vec![json!(1); 3], "still serving");
    // A change cannot be recorded while the store is away: refused, nothing changes.
    let (status, answer) = api(node, "PUT", "/greeter", Some(wasm_bytes("greeter-v2"))).await;
    assert_eq!(
        (status, answer["error"].clone()),
        (503, json!("unavailable")),
        "{answer}"
    );
    assert_eq!(cluster.outcomes().await, vec![json!(1); 3]);
    cluster.redis.restart().await;
    readyz_becomes(node, 200, Duration::from_secs(10)).await;
}
