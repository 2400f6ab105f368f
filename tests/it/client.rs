//! The Rust client (`clients/rust`) against the real server: welcome, request/reply, timeouts,
//! presence, reconnects through a TCP proxy that cuts or blackholes connections, recovery with
//! `since`, a server restart on the same port, `close`, refused tokens and liveness pings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::protocol::CloseReason;
use switchboard_client::{
    Client, ClientError, Config, Event, Liveness, Member, PresenceChange, Reconnect, State,
    TokenSource, TokenTransport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, timeout};

use crate::support::{TestServer, WAIT, config, default_config, publish, tenant, token, ws_url};

/// A compiled plugin from `plugins/`.
fn wasm(name: &str) -> String {
    format!("{}/switchboard_plugin_{name}.wasm", env!("PLUGIN_DIR"))
}

/// A server whose `default` tenant loads these plugins.
async fn server_with(plugins: &[&str]) -> TestServer {
    let tables: String = plugins
        .iter()
        .map(|name| format!("[[tenants.plugins]]\npath = \"{}\"\n", wasm(name)))
        .collect();
    TestServer::start(&config("", &[tenant("default", "", &tables)])).await
}

/// Client settings for tests: quick reconnects, every wait bounded by `WAIT`, liveness off
/// unless a test turns it on.
pub(crate) fn settings(url: String, token: impl Into<TokenSource>) -> Config {
    let mut settings = Config::new(url, token);
    settings.reconnect = Some(Reconnect {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(400),
        max_attempts: None,
    });
    settings.request_timeout = WAIT;
    settings.connect_timeout = WAIT;
    settings.liveness = None;
    settings
}

pub(crate) async fn connect(settings: Config) -> Client {
    timeout(WAIT, Client::connect(settings))
        .await
        .expect("connected in time")
        .unwrap_or_else(|error| panic!("connect failed: {error}"))
}

/// The next event that `wanted` accepts, skipping others; panics after `WAIT`.
async fn next_event(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    mut wanted: impl FnMut(&Event) -> bool,
) -> Event {
    let found = timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => continue,
                Err(RecvError::Lagged(skipped)) => panic!("events lagged by {skipped}"),
                Err(RecvError::Closed) => panic!("the event stream ended"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next presence event: a join when `join`, else a leave.
async fn next_presence(events: &mut broadcast::Receiver<Event>, what: &str, join: bool) -> Event {
    next_event(events, what, |event| match event {
        Event::Presence { change, .. } => matches!(change, PresenceChange::Join(_)) == join,
        _ => false,
    })
    .await
}

/// Waits for the next `rejoined` event and checks its channel and `recovered`.
pub(crate) async fn expect_rejoin(
    events: &mut broadcast::Receiver<Event>,
    channel: &str,
    recovered: bool,
) {
    let rejoined = next_event(events, "the rejoin", |event| {
        matches!(event, Event::Rejoined { .. })
    })
    .await;
    assert_eq!(
        rejoined,
        Event::Rejoined {
            channel: channel.to_owned(),
            recovered
        }
    );
}

/// Every event that arrives within `window`.
async fn events_within(events: &mut broadcast::Receiver<Event>, window: Duration) -> Vec<Event> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        seen.push(event);
    }
    seen
}

/// The next channel message on `channel` (as `(seq, payload)`).
pub(crate) async fn next_message(
    events: &mut broadcast::Receiver<Event>,
    channel: &str,
) -> (u64, Value) {
    let event = next_event(events, &format!("a message on {channel}"), |event| {
        matches!(event, Event::Message(envelope) if envelope["channel"] == channel
            && envelope.get("seq").is_some())
    })
    .await;
    let Event::Message(envelope) = event else {
        unreachable!("matched a message")
    };
    (
        envelope["seq"].as_u64().expect("seq"),
        envelope["payload"].clone(),
    )
}

fn is_reconnecting(event: &Event) -> bool {
    matches!(event, Event::State(State::Reconnecting { .. }))
}

fn member_of(client: &Client) -> Member {
    let welcome = client.welcome().expect("connected");
    Member {
        user_id: welcome.user_id,
        connection_id: welcome.connection_id,
    }
}

// ---- a TCP proxy that can cut or freeze its connections ----

/// A TCP proxy in front of a server: counts the connections it accepts, and can sever them,
/// refuse new ones, or blackhole the open ones (keep them open, forward nothing).
struct Proxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyShared {
    accepted: AtomicUsize,
    refusing: AtomicBool,
    links: Mutex<Vec<Link>>,
}

/// One proxied connection: its two pumps and whether it is blackholed.
struct Link {
    pumps: [AbortHandle; 2],
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(ProxyShared::default());
        let accept = tokio::spawn(accept_links(listener, target, shared.clone()));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// Connections accepted so far, refused ones included.
    fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Drops every open connection (both sides see the TCP connection end).
    fn sever(&self) {
        let links = std::mem::take(&mut *self.shared.links.lock().expect("links"));
        for link in links {
            for pump in link.pumps {
                pump.abort();
            }
        }
    }

    /// While on, new connections are accepted and closed at once.
    fn refuse(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
    }

    /// The open connections stay open but forward nothing any more, either way.
    fn blackhole(&self) {
        for link in self.shared.links.lock().expect("links").iter() {
            link.frozen.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}

async fn accept_links(listener: TcpListener, target: SocketAddr, shared: Arc<ProxyShared>) {
    // Ends when the proxy is dropped (the task is aborted).
    while let Ok((client, _)) = listener.accept().await {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let frozen = Arc::new(AtomicBool::new(false));
        let up = tokio::spawn(pump(client_read, server_write, frozen.clone()));
        let down = tokio::spawn(pump(server_read, client_write, frozen.clone()));
        shared.links.lock().expect("links").push(Link {
            pumps: [up.abort_handle(), down.abort_handle()],
            frozen,
        });
    }
}

/// Copies bytes one way until either side ends; once frozen, swallows them and never ends
/// on its own (it is aborted with the proxy).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

// ---- connecting ----

#[tokio::test]
async fn connects_with_a_header_or_a_subprotocol_and_reads_the_welcome() {
    let server = TestServer::default().await;
    for transport in [TokenTransport::Header, TokenTransport::Subprotocol] {
        let mut settings = settings(server.ws_url("default"), token("alice"));
        settings.transport = transport;
        let client = connect(settings).await;
        assert_eq!(client.state(), State::Open, "{transport:?}");
        let welcome = client.welcome().expect("a welcome");
        assert_eq!(welcome.user_id, "alice");
        assert_eq!(welcome.tenant, "default");
        assert!(!welcome.connection_id.is_empty());
        assert!(welcome.heartbeat_sec > 0.0);
        // A built-in `ping` request is answered by its `pong`.
        let pong = client.request("ping", None, Value::Null, WAIT).await;
        assert_eq!(pong, Ok(Value::Null), "{transport:?}");
        client.close().await;
        assert_eq!(client.state(), State::Closed);
    }
}

#[tokio::test]
async fn a_refused_token_fails_connect_with_an_auth_error_and_no_retries() {
    let server = TestServer::default().await;
    let proxy = Proxy::start(server.addr).await;
    let cases = [
        ("default", "not-a-jwt".to_owned(), 401),
        ("nowhere", token("alice"), 404),
    ];
    let mut connections = 0;
    for (tenant, bad_token, status) in cases {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let settings = settings(
            ws_url(proxy.addr, tenant),
            TokenSource::from_fn(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                bad_token.clone()
            }),
        );
        let error = timeout(WAIT, Client::connect(settings))
            .await
            .expect("connect answered in time")
            .expect_err("the upgrade is refused");
        assert!(
            matches!(&error, ClientError::Auth { status: got, error, message }
                if *got == status && !error.is_empty() && !message.is_empty()),
            "tenant {tenant}: {error:?}"
        );
        connections += 1;
        // Many backoff periods later, still one attempt and one token.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(proxy.accepted(), connections, "tenant {tenant}: retried");
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "tenant {tenant}");
    }
}

// ---- requests ----

#[tokio::test]
async fn requests_get_their_own_replies_and_error_replies_are_typed() {
    let server = server_with(&["echo"]).await;
    let client = connect(settings(server.ws_url("default"), token("alice"))).await;
    let reply = client
        .request("echo", None, json!({"text": "hi", "n": [1, 2]}), WAIT)
        .await;
    assert_eq!(reply, Ok(json!({"text": "hi", "n": [1, 2]})));
    // Many at once: each caller gets the reply to its own request.
    let requests = (0..20).map(|n| {
        let client = client.clone();
        async move { (n, client.request("echo", None, json!({"n": n}), WAIT).await) }
    });
    for (n, reply) in futures_util::future::join_all(requests).await {
        assert_eq!(reply, Ok(json!({"n": n})));
    }
    let unknown = client.request("nobody", None, json!(1), WAIT).await;
    assert!(
        matches!(&unknown, Err(ClientError::Server { code, .. }) if code == "unknown_type"),
        "{unknown:?}"
    );
    let not_member = client.leave("nowhere").await;
    assert!(
        matches!(&not_member, Err(ClientError::Server { code, .. }) if code == "not_member"),
        "{not_member:?}"
    );
    // An error to a message without a correlationId arrives as an event.
    let mut events = client.events();
    client.send("nobody", None, json!(1)).await.expect("sent");
    let error = next_event(&mut events, "an uncorrelated error", |event| {
        matches!(event, Event::Error { .. })
    })
    .await;
    assert!(
        matches!(&error, Event::Error { code, .. } if code == "unknown_type"),
        "{error:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn a_request_without_a_reply_in_time_times_out() {
    let server = TestServer::default().await;
    let proxy = Proxy::start(server.addr).await;
    let client = connect(settings(ws_url(proxy.addr, "default"), token("alice"))).await;
    proxy.blackhole();
    let limit = Duration::from_millis(200);
    let started = Instant::now();
    let reply = client.request("ping", None, Value::Null, limit).await;
    let waited = started.elapsed();
    assert_eq!(reply, Err(ClientError::Timeout));
    assert!(waited >= limit && waited < WAIT, "waited {waited:?}");
    client.close().await;
}

#[tokio::test]
async fn a_late_reply_after_a_timeout_is_ignored() {
    let server = server_with(&["hostile", "echo"]).await;
    let client = connect(settings(server.ws_url("default"), token("alice"))).await;
    let mut events = client.events();
    // The plugin spins until its CPU budget (100 ms) ends it; its reply comes too late.
    let late = client
        .request("hostile:loop", None, Value::Null, Duration::from_millis(20))
        .await;
    assert_eq!(late, Err(ClientError::Timeout));
    // The next request is answered by its own reply, not by the late `handler_timeout`.
    let reply = client.request("echo", None, json!("after"), WAIT).await;
    assert_eq!(reply, Ok(json!("after")));
    // The late reply went nowhere: no uncorrelated error, no message.
    let stray: Vec<Event> = events_within(&mut events, Duration::from_millis(100))
        .await
        .into_iter()
        .filter(|event| matches!(event, Event::Error { .. } | Event::Message(_)))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    assert_eq!(client.state(), State::Open);
    client.close().await;
}

// ---- presence ----

#[tokio::test]
async fn presence_is_tracked_per_room_across_two_clients() {
    let server = TestServer::default().await;
    let alice = connect(settings(server.ws_url("default"), token("alice"))).await;
    let bob = connect(settings(server.ws_url("default"), token("bob"))).await;
    let mut alice_events = alice.events();

    let joined = alice.join("lobby").await.expect("alice joins");
    assert_eq!(joined.members, [member_of(&alice)]);
    assert!(!joined.recovered);
    let joined = bob.join("lobby").await.expect("bob joins");
    let mut both = vec![member_of(&alice), member_of(&bob)];
    both.sort();
    let mut listed = joined.members.clone();
    listed.sort();
    assert_eq!(listed, both);

    let event = next_presence(&mut alice_events, "bob's presence:join", true).await;
    assert_eq!(
        event,
        Event::Presence {
            channel: "lobby".to_owned(),
            change: PresenceChange::Join(member_of(&bob)),
            members: both.clone(),
        }
    );
    assert_eq!(alice.presence("lobby"), both);
    assert_eq!(bob.presence("lobby"), both);
    assert_eq!(alice.rooms(), ["lobby"]);
    assert!(alice.presence("elsewhere").is_empty());

    let bob_member = member_of(&bob);
    bob.close().await;
    let event = next_presence(&mut alice_events, "bob's presence:leave", false).await;
    assert_eq!(
        event,
        Event::Presence {
            channel: "lobby".to_owned(),
            change: PresenceChange::Leave(bob_member),
            members: vec![member_of(&alice)],
        }
    );
    assert_eq!(alice.presence("lobby"), [member_of(&alice)]);

    alice.leave("lobby").await.expect("alice leaves");
    assert!(alice.rooms().is_empty());
    assert!(alice.presence("lobby").is_empty());
    alice.close().await;
}

// ---- reconnecting ----

#[tokio::test]
async fn after_a_network_cut_the_client_backs_off_reconnects_and_recovers_what_it_missed() {
    let server = TestServer::default().await;
    let proxy = Proxy::start(server.addr).await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let client = connect(settings(
        ws_url(proxy.addr, "default"),
        TokenSource::from_fn(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            token("alice")
        }),
    ))
    .await;
    let mut events = client.events();
    client.join("feed").await.expect("joins");
    let first = publish(&server, "default", "feed", json!({"n": 1})).await;
    assert_eq!(
        next_message(&mut events, "feed").await,
        (first, json!({"n": 1}))
    );
    let first_connection = client.welcome().expect("connected").connection_id;

    // Cut every connection and refuse new ones for a while.
    proxy.refuse(true);
    proxy.sever();
    next_event(&mut events, "reconnecting", is_reconnecting).await;
    let mut missed = Vec::new();
    for n in 2..=4 {
        missed.push((
            publish(&server, "default", "feed", json!({"n": n})).await,
            json!({"n": n}),
        ));
    }
    // Refused attempts count up: attempt 3 means two attempts failed after the cut.
    let third = next_event(
        &mut events,
        "a third attempt",
        |event| matches!(event, Event::State(State::Reconnecting { attempt, .. }) if *attempt >= 3),
    )
    .await;
    let Event::State(State::Reconnecting { delay, .. }) = third else {
        unreachable!("matched a reconnecting state")
    };
    assert!(
        delay <= Duration::from_millis(400),
        "delay {delay:?} over the cap"
    );
    proxy.refuse(false);

    expect_rejoin(&mut events, "feed", true).await;
    assert_eq!(client.state(), State::Open);
    let connection = client.welcome().expect("connected again").connection_id;
    assert_ne!(connection, first_connection, "a new connection");
    // What was missed arrives once, in order, then live messages follow.
    let live = publish(&server, "default", "feed", json!({"n": 5})).await;
    let mut expected = missed;
    expected.push((live, json!({"n": 5})));
    let mut received = Vec::new();
    for _ in 0..expected.len() {
        received.push(next_message(&mut events, "feed").await);
    }
    assert_eq!(received, expected);
    let extra: Vec<Event> = events_within(&mut events, Duration::from_millis(200))
        .await
        .into_iter()
        .filter(|event| matches!(event, Event::Message(_)))
        .collect();
    assert!(extra.is_empty(), "delivered twice: {extra:?}");
    // A token was fetched for every attempt, refused ones included.
    assert!(
        fetches.load(Ordering::SeqCst) >= 4,
        "token fetched per attempt"
    );
    assert!(proxy.accepted() >= 4, "attempts: {}", proxy.accepted());
    client.close().await;
}

#[tokio::test]
async fn after_a_server_restart_on_the_same_port_the_client_rejoins_unrecovered() {
    let server = TestServer::default().await;
    let addr = server.addr;
    let client = connect(settings(server.ws_url("default"), token("alice"))).await;
    let mut events = client.events();
    client.join("feed").await.expect("joins");
    let first = publish(&server, "default", "feed", json!("before")).await;
    assert_eq!(next_message(&mut events, "feed").await.0, first);

    // The drain closes the connection with 1001; the client keeps trying while it is down.
    server.shutdown().await;
    next_event(&mut events, "reconnecting", is_reconnecting).await;
    next_event(
        &mut events,
        "a failed attempt",
        |event| matches!(event, Event::State(State::Reconnecting { attempt, .. }) if *attempt >= 2),
    )
    .await;
    wait_until_free(addr).await;
    let restarted =
        TestServer::start(&default_config().replace("127.0.0.1:0", &addr.to_string())).await;
    assert_eq!(restarted.addr, addr);

    // The new server has no history: the rejoin says so, and its numbering starts over.
    expect_rejoin(&mut events, "feed", false).await;
    let renumbered = publish(&restarted, "default", "feed", json!("after")).await;
    assert!(renumbered <= first, "seq {renumbered} after {first}");
    assert_eq!(
        next_message(&mut events, "feed").await,
        (renumbered, json!("after")),
        "a new seq at or below the old one is not taken for a repeat"
    );
    client.close().await;
}

/// Waits (bounded) until nothing listens on `addr` any more.
async fn wait_until_free(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} still taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn after_close_there_is_no_reconnect_and_calls_fail_as_closed() {
    let server = TestServer::default().await;
    let proxy = Proxy::start(server.addr).await;
    let client = connect(settings(ws_url(proxy.addr, "default"), token("alice"))).await;
    let mut events = client.events();
    client.join("lobby").await.expect("joins");
    let other_handle = client.clone();

    client.close().await;
    assert_eq!(other_handle.state(), State::Closed);
    let closed = next_event(&mut events, "closed", |event| {
        matches!(event, Event::Closed { .. })
    })
    .await;
    assert!(
        matches!(closed, Event::Closed { code: 1000, .. }),
        "{closed:?}"
    );
    assert_eq!(
        other_handle.request("ping", None, Value::Null, WAIT).await,
        Err(ClientError::Closed)
    );
    assert_eq!(
        other_handle.join("lobby").await.map(drop),
        Err(ClientError::Closed)
    );
    assert_eq!(
        other_handle.send("x", None, Value::Null).await,
        Err(ClientError::Closed)
    );
    // The server saw a normal close; many backoff periods later, nothing reconnected.
    crate::support::eventually("the server to forget the connection", || {
        server.node().registry.is_empty()
    })
    .await;
    let later = events_within(&mut events, Duration::from_millis(300)).await;
    assert!(later.is_empty(), "events after close: {later:?}");
    assert_eq!(proxy.accepted(), 1);
    other_handle.close().await;
}

#[tokio::test]
async fn a_blackholed_connection_is_found_dead_by_liveness_pings_and_replaced() {
    let server = TestServer::default().await;
    let proxy = Proxy::start(server.addr).await;
    let mut settings = settings(ws_url(proxy.addr, "default"), token("alice"));
    settings.liveness = Some(Liveness {
        idle: Duration::from_millis(200),
        timeout: Duration::from_millis(800),
    });
    let client = connect(settings).await;
    client.join("feed").await.expect("joins");
    let mut events = client.events();

    // Quiet but healthy: the pings are answered, the connection stays.
    let quiet = events_within(&mut events, Duration::from_millis(1000)).await;
    assert!(quiet.is_empty(), "events while healthy: {quiet:?}");
    assert_eq!(proxy.accepted(), 1);

    // Blackholed: the TCP connection stays open, nothing gets through.
    let cut = Instant::now();
    proxy.blackhole();
    next_event(&mut events, "reconnecting", is_reconnecting).await;
    let noticed = cut.elapsed();
    // Not before a ping went unanswered for most of its timeout (one may already have been
    // on its way when the proxy froze).
    assert!(
        noticed >= Duration::from_millis(500),
        "gave up before the ping timeout: {noticed:?}"
    );
    let rejoined = next_event(&mut events, "the rejoin", |event| {
        matches!(event, Event::Rejoined { .. })
    })
    .await;
    assert!(
        matches!(&rejoined, Event::Rejoined { channel, .. } if channel == "feed"),
        "{rejoined:?}"
    );
    assert_eq!(client.state(), State::Open);
    assert_eq!(proxy.accepted(), 2);
    client.close().await;
}

#[tokio::test]
async fn a_server_close_with_1000_ends_the_client_and_any_other_close_reconnects() {
    let server = TestServer::default().await;
    let client = connect(settings(server.ws_url("default"), token("alice"))).await;
    let mut events = client.events();
    let close_all = |reason: CloseReason| {
        for connection in server.node().registry.all() {
            connection.outbox.close(reason.clone());
        }
    };

    // An internal error (1011) is worth another try.
    close_all(CloseReason::Internal);
    next_event(&mut events, "reconnecting", is_reconnecting).await;
    next_event(&mut events, "open again", |event| {
        matches!(event, Event::State(State::Open))
    })
    .await;

    // A normal close from the server is final.
    close_all(CloseReason::Normal);
    let closed = next_event(&mut events, "closed", |event| {
        matches!(event, Event::Closed { .. })
    })
    .await;
    assert!(
        matches!(closed, Event::Closed { code: 1000, .. }),
        "{closed:?}"
    );
    assert_eq!(client.state(), State::Closed);
    let later = events_within(&mut events, Duration::from_millis(300)).await;
    assert!(later.is_empty(), "events after the close: {later:?}");
    assert!(server.node().registry.is_empty(), "reconnected");
}
