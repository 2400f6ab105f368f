//! The operator's tenant API: tenants created, updated and deleted while nodes run, kept in
//! the desired state (a state directory on one node, Redis in a cluster), applied on every
//! node without touching other tenants' connections, and every refusal changing nothing.

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::cluster::{readyz_becomes, redis_node_config};
use crate::external::{Nginx, RedisServer, free_port};
use crate::plugins::{plugin_tables, wasm_bytes};
use crate::support::{
    BinaryServer, Client, TestServer, WAIT, api_key, assert_error_body, claims, config,
    fresh_state_dir, http_send, sign, tenant, try_upgrade, upgrade_request, ws_url,
};

/// The operator's key in these tests' configs.
pub(crate) const ADMIN_KEY: &str = "operator-key-for-tests";

/// How soon a change made through one node must apply on every node (the bound).
const CONVERGED: Duration = Duration::from_secs(2);

/// The `[admin]` table with the operator's key.
pub(crate) fn admin() -> String {
    format!("[admin]\napi_key = \"{ADMIN_KEY}\"\n")
}

/// A tenant API request with `key` as the bearer.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let url = format!("http://{addr}/api/tenants{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let key = key.map(str::to_owned);
    let (status, _, answer) = http_send(|client| {
        let mut request = client.request(method, url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        match body {
            Some(body) => request.body(body),
            None => request,
        }
    })
    .await;
    (status, answer)
}

/// A tenant API request with the operator's key.
async fn operator(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|body| body.to_string().into_bytes());
    call(addr, method, path, Some(ADMIN_KEY), body).await
}

/// Tenant settings with an HS secret and a publish key.
fn settings(secret: &str, extra: Value) -> Value {
    let mut settings = json!({"api_key": "acme-api-key", "jwt": {"secret": secret}});
    if let (Some(object), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    settings
}

/// A token for `sub` signed with `secret`.
fn token_with(secret: &str, sub: &str) -> String {
    sign(
        &claims(sub, 3600, json!({})),
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Opens a connection to `tenant` with a token signed by `secret`; the HTTP status of a
/// refusal otherwise.
async fn open(addr: SocketAddr, tenant: &str, secret: &str, sub: &str) -> Result<Client, u16> {
    let bearer = format!("Bearer {}", token_with(secret, sub));
    let request = upgrade_request(&ws_url(addr, tenant), &[("authorization", &bearer)]);
    match try_upgrade(request).await {
        Ok((ws, _)) => Ok(Client::from_socket(ws).await),
        Err(refusal) => Err(refusal.status),
    }
}

/// Retries `open` until it succeeds or `within` passes.
async fn open_within(
    addr: SocketAddr,
    tenant: &str,
    secret: &str,
    sub: &str,
    within: Duration,
) -> Client {
    let deadline = Instant::now() + within;
    loop {
        match open(addr, tenant, secret, sub).await {
            Ok(client) => return client,
            Err(status) => assert!(
                Instant::now() < deadline,
                "{tenant} on {addr} still refused ({status}) after {within:?}"
            ),
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until an upgrade to `tenant` with `secret` gets `status`.
async fn refused_within(
    addr: SocketAddr,
    tenant: &str,
    secret: &str,
    status: u16,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        match open(addr, tenant, secret, "probe").await {
            Err(got) if got == status => return,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "{tenant} on {addr}: wanted {status} within {within:?}, got {:?}",
                    other.map(|_| 101)
                );
                if let Ok(client) = other {
                    client.close().await;
                }
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// The names the tenant list shows, with their source.
async fn listed(addr: SocketAddr) -> Vec<(String, String)> {
    let (status, list) = operator(addr, "GET", "", None).await;
    assert_eq!(status, 200, "{list}");
    list["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|tenant| {
            (
                tenant["name"].as_str().expect("name").to_owned(),
                tenant["source"].as_str().expect("source").to_owned(),
            )
        })
        .collect()
}

/// Deploys the fixture `fixture` as plugin `name` of `acme` with `key`.
async fn deploy_to_acme(addr: SocketAddr, key: &str, name: &str, fixture: &str) {
    let url = format!("http://{addr}/api/tenants/acme/plugins/{name}");
    let (key, bytes) = (key.to_owned(), wasm_bytes(fixture));
    let (status, _, answer) =
        http_send(|client| client.put(url).bearer_auth(key).body(bytes)).await;
    assert_eq!(status, 200, "{answer}");
}

/// Sets `a` in acme's `kv-probe` namespace through `client`, and publishes to its `news`
/// channel with acme's key: state a delete must not leave behind.
async fn leave_state(addr: SocketAddr, client: &mut Client) {
    let set =
        json!({"type": "kv:run", "payload": {"ops": [{"op": "set", "key": "a", "value": "1"}]}});
    assert_eq!(
        client.request(set).await["payload"]["results"],
        json!([true])
    );
    let url = format!("http://{addr}/api/publish");
    let published = json!({"tenant": "acme", "channel": "news", "type": "n", "payload": 1});
    let (status, _, _) = http_send(|client| {
        client
            .post(url)
            .bearer_auth("acme-api-key")
            .body(published.to_string())
    })
    .await;
    assert_eq!(status, 200);
}

/// A round trip on a connection (a join of a fresh room), which must be answered.
async fn alive(client: &mut Client, context: &str) {
    static ROOMS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let room = ROOMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reply = client.join(&format!("check-{room}")).await;
    assert_eq!(reply["type"], "ack", "{context}: {reply}");
}

/// A refused request: method, path, body, status and error code.
type Case<'a> = (&'a str, &'a str, Option<Vec<u8>>, u16, &'a str);

#[tokio::test]
async fn every_refusal_of_the_tenant_api_answers_4xx_json_and_changes_nothing() {
    let server = TestServer::start(&config(&admin(), &[tenant("default", "", "")])).await;
    let addr = server.addr;
    let good = settings("acme-secret", json!({}));
    let body = |value: &Value| Some(value.to_string().into_bytes());

    // Who may ask: only the operator's key; a tenant's key has no power over tenants.
    let tenant_key = api_key("default");
    for (key, context) in [
        (None, "no key"),
        (Some("wrong-key-wrong-key"), "a wrong key"),
        (Some(tenant_key.as_str()), "the tenant's key"),
    ] {
        for (method, path) in [("GET", ""), ("PUT", "/acme"), ("DELETE", "/default")] {
            let (status, answer) = call(addr, method, path, key, body(&good)).await;
            assert_eq!(status, 401, "{context}, {method} {path}: {answer}");
            assert_eq!(answer["error"], "unauthorized");
            assert_error_body(&answer, context);
        }
    }

    let too_big = json!({"jwt": {"secret": "x".repeat(300 * 1024)}});
    let cases: Vec<Case<'_>> = vec![
        (
            "PUT",
            "/acme",
            Some(b"not json".to_vec()),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/acme",
            body(&json!(["a list"])),
            422,
            "invalid_tenant",
        ),
        (
            "PUT",
            "/acme",
            body(&json!({"jwt": {"secret": "s"}, "colour": "red"})),
            422,
            "invalid_tenant",
        ),
        (
            "PUT",
            "/acme",
            body(&json!({"api_key": "k"})),
            422,
            "invalid_tenant",
        ),
        (
            "PUT",
            "/acme",
            body(&settings("s", json!({"name": "other"}))),
            422,
            "invalid_tenant",
        ),
        ("PUT", "/bad%20name", body(&good), 422, "invalid_tenant"),
        (
            "PUT",
            "/acme",
            body(&json!({"jwt": {"secret": {"env": "HOME"}}})),
            422,
            "invalid_tenant",
        ),
        (
            "PUT",
            "/acme",
            body(&json!({"jwt": {"public_key_file": "keys/rsa.pub.pem"}})),
            422,
            "invalid_tenant",
        ),
        (
            "PUT",
            "/acme",
            body(&json!({"jwt": {"public_key_pem": "not a key"}})),
            422,
            "invalid_tenant",
        ),
        (
            "PUT",
            "/acme",
            body(&json!({"jwt": {"secret": "s"}, "limits": {"max_connections": -1}})),
            422,
            "invalid_tenant",
        ),
        (
            "PUT",
            "/acme",
            body(&json!({"jwt": {"secret": "s"}, "plugins": [{"path": "x.wasm"}]})),
            422,
            "invalid_tenant",
        ),
        (
            "PUT",
            "/acme",
            body(&json!({"jwt": {"secret": "s"}, "protocol": "morse"})),
            422,
            "invalid_tenant",
        ),
        ("PUT", "/acme", body(&too_big), 413, "payload_too_large"),
        ("GET", "/nobody", None, 404, "not_found"),
        ("DELETE", "/nobody", None, 404, "not_found"),
        ("PATCH", "/default", body(&good), 405, "method_not_allowed"),
        ("POST", "", body(&good), 405, "method_not_allowed"),
    ];
    for (method, path, payload, status, code) in cases {
        let (got, answer) = call(addr, method, path, Some(ADMIN_KEY), payload).await;
        assert_eq!(
            (got, answer["error"].clone()),
            (status, json!(code)),
            "{method} {path}: {answer}"
        );
        assert_error_body(&answer, &format!("{method} {path}"));
    }
    // The messages name the field.
    let (_, answer) = operator(
        addr,
        "PUT",
        "/acme",
        Some(json!({"jwt": {"secret": "s"}, "limits": {"max_connections": -1}})),
    )
    .await;
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("limits.max_connections")),
        "{answer}"
    );

    assert_eq!(
        listed(addr).await,
        vec![("default".to_owned(), "file".to_owned())]
    );
    assert_eq!(
        open(addr, "acme", "acme-secret", "alice").await.err(),
        Some(404)
    );
    assert!(
        server.node().deployments.known().tenants.is_empty(),
        "nothing recorded"
    );
    let mut client = Client::connect(&server, "default", "alice").await;
    alive(&mut client, "default").await;

    // Without `admin.api_key` the tenant API is off.
    let closed = TestServer::start(&config("", &[tenant("default", "", "")])).await;
    let (status, answer) = call(closed.addr, "GET", "", Some(ADMIN_KEY), None).await;
    assert_eq!(
        (status, answer["error"].clone()),
        (401, json!("unauthorized"))
    );
}

#[tokio::test]
async fn a_tenant_made_at_run_time_serves_rotates_keys_and_goes_without_touching_others() {
    let server = TestServer::start(&config(&admin(), &[tenant("default", "", "")])).await;
    let addr = server.addr;
    let mut bystander = Client::connect(&server, "default", "bystander").await;
    bystander.join("lobby").await;

    let (status, created) = operator(
        addr,
        "PUT",
        "/acme",
        Some(settings(
            "secret-a",
            json!({"limits": {"max_connections": 3}}),
        )),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["source"], "api");
    assert_eq!(
        created["settings"]["jwt"]["secret"], "(hidden)",
        "secrets are never shown"
    );
    assert_eq!(created["settings"]["api_key"], "(hidden)");
    let mut first = open(addr, "acme", "secret-a", "alice")
        .await
        .expect("acme serves at once");
    assert_eq!(
        open(addr, "acme", "wrong-secret", "bob").await.err(),
        Some(401)
    );

    // The tenant's own key reaches its plugin API; the operator's reaches it too.
    deploy_to_acme(addr, "acme-api-key", "greeter", "greeter-v1").await;
    let reply = first.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"]["version"], 1, "{reply}");
    let kv = format!("http://{addr}/api/tenants/acme/plugins");
    let (status, _, list) = http_send(|client| client.get(kv).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(
        (status, list[0]["name"].clone()),
        (200, json!("greeter")),
        "{list}"
    );
    // Another tenant's key does not.
    let url = format!("http://{addr}/api/tenants/acme/plugins");
    let (status, _, _) = http_send(|client| client.get(url).bearer_auth(api_key("default"))).await;
    assert_eq!(status, 401);

    // Rotating the JWT key: connections made with the old one stay; new ones need the new.
    let (status, updated) = operator(
        addr,
        "PUT",
        "/acme",
        Some(settings(
            "secret-b",
            json!({"limits": {"max_connections": 3}}),
        )),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        open(addr, "acme", "secret-a", "carol").await.err(),
        Some(401)
    );
    let mut second = open(addr, "acme", "secret-b", "dave")
        .await
        .expect("the new key");
    alive(&mut first, "a connection made before the rotation").await;
    let reply = first.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"]["version"], 1, "its plugins stay: {reply}");

    // A lower connection limit holds at once, counting the connections already open.
    let (status, _) = operator(
        addr,
        "PUT",
        "/acme",
        Some(settings(
            "secret-b",
            json!({"limits": {"max_connections": 2}}),
        )),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        open(addr, "acme", "secret-b", "erin").await.err(),
        Some(503),
        "2 of 2 open"
    );

    // Delete: its connections close with 1008 `tenant removed`; it is gone; others stay.
    let (status, deleted) = operator(addr, "DELETE", "/acme", None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["connections_closed"], 2);
    for client in [&mut first, &mut second] {
        assert_eq!(
            client.expect_close_skipping_text().await,
            (1008, "tenant removed".to_owned())
        );
    }
    assert_eq!(
        open(addr, "acme", "secret-b", "frank").await.err(),
        Some(404)
    );
    let (status, _) = operator(addr, "GET", "/acme", None).await;
    assert_eq!(status, 404);
    let url = format!("http://{addr}/api/tenants/acme/plugins");
    let (status, _, _) = http_send(|client| client.get(url).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(status, 404, "its plugin API is gone");
    alive(&mut bystander, "another tenant's connection").await;
    bystander.expect_silence(Duration::from_millis(100)).await;

    // Made again under the same name, it starts empty: no plugins, no key-value entries.
    let (status, _) = operator(addr, "PUT", "/acme", Some(settings("secret-c", json!({})))).await;
    assert_eq!(status, 201);
    let mut again = open(addr, "acme", "secret-c", "gina")
        .await
        .expect("made again");
    let reply = again.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"]["code"], "unknown_type", "{reply}");
    assert!(
        server
            .node()
            .plugins
            .routes("acme")
            .is_some_and(|routes| routes.plugins.is_empty())
    );
}

#[tokio::test]
async fn a_deleted_tenants_key_value_entries_and_history_do_not_come_back_with_its_name() {
    let tables = plugin_tables(&["kv-probe"], "");
    let server = TestServer::start(&config(&admin(), &[tenant("default", "", &tables)])).await;
    let addr = server.addr;
    let (status, _) = operator(
        addr,
        "PUT",
        "/acme",
        Some(settings("s", json!({"history": {"size": 10}}))),
    )
    .await;
    assert_eq!(status, 201);
    deploy_to_acme(addr, ADMIN_KEY, "kv-probe", "kv-probe").await;
    let mut client = open(addr, "acme", "s", "alice").await.expect("acme");
    leave_state(addr, &mut client).await;

    let (status, _) = operator(addr, "DELETE", "/acme", None).await;
    assert_eq!(status, 200);
    let (status, _) = operator(
        addr,
        "PUT",
        "/acme",
        Some(settings("s", json!({"history": {"size": 10}}))),
    )
    .await;
    assert_eq!(status, 201);
    deploy_to_acme(addr, ADMIN_KEY, "kv-probe", "kv-probe").await;
    let mut client = open(addr, "acme", "s", "alice").await.expect("acme again");
    let get = json!({"type": "kv:run", "payload": {"ops": [{"op": "get", "key": "a"}]}});
    assert_eq!(
        client.request(get).await["payload"]["results"],
        json!([null]),
        "no old entries"
    );
    let joined = client
        .request(json!({"type": "room:join", "channel": "news", "payload": {"since": 0}}))
        .await;
    assert_eq!(joined["type"], "ack", "{joined}");
    assert_eq!(
        joined["payload"]["recovered"], true,
        "an empty channel: {joined}"
    );
    client.expect_silence(Duration::from_millis(200)).await;
}

/// A single node on the memory backplane with its state in `dir`, tenants `default`,
/// `other` and `third` from the file, each with the `greeter-v1` plugin file.
fn single_node(dir: &std::path::Path, listen: &str) -> String {
    let greeter = plugin_tables(&["greeter-v1"], "");
    config(
        &format!("{}[state]\ndir = \"{}\"\n", admin(), dir.display()),
        &[
            tenant("default", "", &greeter),
            tenant("other", "", &greeter),
            tenant("third", "", &greeter),
        ],
    )
    .replace("127.0.0.1:0", listen)
}

#[tokio::test]
async fn a_single_node_keeps_its_tenants_and_deletes_across_a_kill() {
    let dir = fresh_state_dir();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut node = BinaryServer::start(&single_node(&dir, &listen)).await;
    let addr = node.addr;
    let (status, _) = operator(
        addr,
        "PUT",
        "/acme",
        Some(settings("acme-secret", json!({}))),
    )
    .await;
    assert_eq!(status, 201);
    // A file's tenant updated and another deleted through the API: the records win.
    let (status, _) = operator(
        addr,
        "PUT",
        "/default",
        Some(settings("rotated", json!({}))),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = operator(addr, "DELETE", "/other", None).await;
    assert_eq!(status, 200);
    // A configured tenant deleted and made again through the API starts empty: the file's
    // plugins are not its own.
    let (status, _) = operator(addr, "DELETE", "/third", None).await;
    assert_eq!(status, 200);
    let (status, _) = operator(
        addr,
        "PUT",
        "/third",
        Some(settings("third-secret", json!({}))),
    )
    .await;
    assert_eq!(status, 201);
    let mut third = open(addr, "third", "third-secret", "dan")
        .await
        .expect("third");
    let reply = third.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"]["code"], "unknown_type", "{reply}");
    let mut updated = open(addr, "default", "rotated", "erin")
        .await
        .expect("default");
    let reply = updated.request(json!({"type": "greet"})).await;
    assert_eq!(
        reply["payload"]["version"], 1,
        "an update keeps the file's plugins: {reply}"
    );

    node.signal("KILL");
    node.wait(WAIT).await;
    let node = BinaryServer::start(&single_node(&dir, &listen)).await;
    assert_eq!(
        listed(node.addr).await,
        vec![
            ("acme".to_owned(), "api".to_owned()),
            ("default".to_owned(), "api".to_owned()),
            ("third".to_owned(), "api".to_owned())
        ]
    );
    let mut acme = open(addr, "acme", "acme-secret", "alice")
        .await
        .expect("acme kept");
    alive(&mut acme, "acme after the restart").await;
    assert_eq!(
        open(addr, "default", crate::support::SECRET, "bob")
            .await
            .err(),
        Some(401)
    );
    let mut bob = open(addr, "default", "rotated", "bob")
        .await
        .expect("the rotated key kept");
    let reply = bob.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"]["version"], 1, "{reply}");
    let mut third = open(addr, "third", "third-secret", "dan")
        .await
        .expect("third kept");
    let reply = third.request(json!({"type": "greet"})).await;
    assert_eq!(
        reply["payload"]["code"], "unknown_type",
        "still not the file's plugins after the restart: {reply}"
    );
    assert_eq!(
        open(addr, "other", crate::support::SECRET, "carol")
            .await
            .err(),
        Some(404)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node config on `redis` with the operator's key and tenant `default` without plugins.
fn redis_config(redis: &RedisServer) -> String {
    redis_node_config(&format!("url = \"{}\"\n", redis.url()), "")
        .replace("[redis]", &format!("{}[redis]", admin()))
}

/// Clients of tenant `default` through `front` sending `greet` one after another until told
/// to stop; each returns how many replies it got, every one checked to be the answer to the
/// request before it (so none is lost, doubled or out of order).
fn senders(
    front: SocketAddr,
    count: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..count)
        .map(|index| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut client =
                    Client::connect_addr(front, "default", &format!("sender{index}")).await;
                let mut answered = 0;
                // Bounded: the test stops them within seconds; 20,000 is far beyond that.
                for id in 0..20_000u64 {
                    if *stop.borrow() {
                        break;
                    }
                    let id = format!("s{id}");
                    client
                        .send(json!({"type": "greet", "correlationId": id}))
                        .await;
                    let reply = client.recv().await;
                    assert_eq!(
                        (reply["correlationId"].clone(), reply["type"].clone()),
                        (json!(id), json!("ack")),
                        "sender {index}: {reply}"
                    );
                    answered += 1;
                    sleep(Duration::from_millis(5)).await;
                }
                client.expect_silence(Duration::from_millis(200)).await;
                answered
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_made_through_one_node_serves_on_every_node_and_goes_from_every_node() {
    let redis = RedisServer::start().await;
    let tables = plugin_tables(&["greeter-v1"], "");
    let mut nodes = Vec::new();
    let mut configs = Vec::new();
    for _ in 0..3 {
        let config = redis_node_config(&format!("url = \"{}\"\n", redis.url()), &tables)
            .replace("[redis]", &format!("{}[redis]", admin()))
            .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()));
        let node = BinaryServer::start(&config).await;
        readyz_becomes(node.addr, 200, WAIT).await;
        nodes.push(node);
        configs.push(config);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
    let ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
    let nginx = Nginx::start(&ports).await;
    let front: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    // Another tenant's clients keep sending through the balancer the whole time.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let senders = senders(front, 20, stopped);

    // Created through node A: usable through B and C within the bound.
    let started = Instant::now();
    let (status, _) = operator(
        addrs[0],
        "PUT",
        "/acme",
        Some(settings("secret-a", json!({}))),
    )
    .await;
    assert_eq!(status, 201);
    let mut acme = Vec::new();
    for (index, addr) in addrs.iter().enumerate() {
        acme.push(
            open_within(
                *addr,
                "acme",
                "secret-a",
                &format!("user{index}"),
                CONVERGED,
            )
            .await,
        );
    }
    eprintln!(
        "created through A, serving on every node after {:?}",
        started.elapsed()
    );

    // Updated through the balancer (the key rotated): applies on every node within the
    // bound, and the connections made with the old key stay.
    let started = Instant::now();
    let (status, _) = operator(front, "PUT", "/acme", Some(settings("secret-b", json!({})))).await;
    assert_eq!(status, 200);
    for addr in &addrs {
        refused_within(*addr, "acme", "secret-a", 401, CONVERGED).await;
        open(*addr, "acme", "secret-b", "new")
            .await
            .expect("the new key");
    }
    eprintln!(
        "updated through nginx, applied everywhere after {:?}",
        started.elapsed()
    );
    for (index, client) in acme.iter_mut().enumerate() {
        alive(client, &format!("acme on node {index} after the rotation")).await;
    }

    // Deleted through C: every node closes its connections and refuses it within the bound.
    let started = Instant::now();
    let (status, _) = operator(addrs[2], "DELETE", "/acme", None).await;
    assert_eq!(status, 200);
    for client in &mut acme {
        assert_eq!(
            client.expect_close_skipping_text().await,
            (1008, "tenant removed".to_owned())
        );
    }
    for addr in &addrs {
        refused_within(*addr, "acme", "secret-b", 404, CONVERGED).await;
    }
    eprintln!(
        "deleted through C, gone everywhere after {:?}",
        started.elapsed()
    );

    // The other tenant's connections were never touched: every request answered, in order.
    stop.send(true).expect("senders listening");
    let mut answered = 0;
    for sender in senders {
        answered += sender.await.expect("a sender saw every reply");
    }
    eprintln!("the other tenant's 20 clients got all {answered} replies");
    assert!(answered > 0);

    // A node started now has no `acme` either.
    let late =
        BinaryServer::start(&configs[0].replace(&format!("{}", addrs[0]), "127.0.0.1:0")).await;
    readyz_becomes(late.addr, 200, WAIT).await;
    assert_eq!(
        open(late.addr, "acme", "secret-b", "late").await.err(),
        Some(404)
    );
    let (status, list) = operator(late.addr, "GET", "", None).await;
    assert_eq!(
        (status, list["tenants"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{list}"
    );
}

#[tokio::test]
async fn a_deleted_tenant_leaves_no_key_in_redis() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis);
    let node = BinaryServer::start(&config).await;
    readyz_becomes(node.addr, 200, WAIT).await;
    let addr = node.addr;
    let (status, _) = operator(addr, "PUT", "/acme", Some(settings("s", json!({})))).await;
    assert_eq!(status, 201);
    deploy_to_acme(addr, ADMIN_KEY, "kv-probe", "kv-probe").await;
    let mut client = open(addr, "acme", "s", "alice").await.expect("acme");
    client.join("news").await;
    leave_state(addr, &mut client).await;
    let keys = redis.command(&["KEYS", "*acme*"]).await;
    assert!(keys.contains("kv:{acme:kv-probe}"), "written: {keys}");

    let (status, _) = operator(addr, "DELETE", "/acme", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        client.expect_close_skipping_text().await,
        (1008, "tenant removed".to_owned())
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let keys = redis.command(&["KEYS", "*acme*"]).await;
        if keys.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left in Redis: {keys}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tenants_survive_redis_losing_its_data_and_reach_a_node_started_afterwards() {
    let mut redis = RedisServer::start().await;
    let config = redis_config(&redis);
    let node =
        BinaryServer::start_logged(&config.replace("level = \"warn\"", "level = \"info\"")).await;
    readyz_becomes(node.addr, 200, WAIT).await;
    let (status, _) = operator(
        node.addr,
        "PUT",
        "/acme",
        Some(settings("acme-secret", json!({}))),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = operator(node.addr, "DELETE", "/default", None).await;
    assert_eq!(status, 200);
    let mut client = open(node.addr, "acme", "acme-secret", "alice")
        .await
        .expect("acme");

    // Redis comes back empty: the running node keeps serving and puts the records back.
    redis.restart().await;
    let deadline = Instant::now() + WAIT;
    while !redis
        .command(&["HEXISTS", "switchboard:{state}:tenants", "acme"])
        .await
        .contains('1')
    {
        assert!(
            Instant::now() < deadline,
            "the tenant record was not put back: {}\n{}",
            redis.command(&["KEYS", "*"]).await,
            node.log()
        );
        sleep(Duration::from_millis(50)).await;
    }
    alive(&mut client, "acme through the Redis restart").await;
    let late = BinaryServer::start(&config).await;
    readyz_becomes(late.addr, 200, WAIT).await;
    open(late.addr, "acme", "acme-secret", "bob")
        .await
        .expect("a node started after the loss serves the tenant");
    assert_eq!(
        open(late.addr, "default", crate::support::SECRET, "carol")
            .await
            .err(),
        Some(404),
        "and the delete"
    );
}

#[tokio::test]
async fn a_tenant_record_a_node_cannot_apply_is_shown_and_changes_nothing_there() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis);
    let node = BinaryServer::start(&config).await;
    readyz_becomes(node.addr, 200, WAIT).await;
    let mut client = Client::connect_addr(node.addr, "default", "alice").await;
    // What a newer node might write: a field this one does not know.
    let record = json!({
        "revision": 1,
        "settings": {"jwt": {"secret": "s"}, "a_future_field": true},
        "changed_at_ms": 1
    });
    redis
        .command(&[
            "HSET",
            "switchboard:{state}:tenants",
            "default",
            &record.to_string(),
        ])
        .await;
    redis
        .command(&["INCR", "switchboard:{state}:revision"])
        .await;
    crate::deployments::metric_becomes(
        node.addr,
        "switchboard_state_mismatched_tenants",
        1.0,
        WAIT,
    )
    .await;
    assert_eq!(
        crate::cluster::metric(node.addr, "switchboard_state_apply_failures_total").await,
        1.0
    );
    alive(&mut client, "the tenant as it was").await;
    Client::connect_addr(node.addr, "default", "bob").await;
}
