//! Graceful shutdown: close 1001 to every connection, 503 for `/readyz` and upgrades while
//! draining, exit status 0 within the drain timeout (docs/protocol.md, "Draining").

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::compile::{compile_workers, put_plugin_at, slow_greeter};
use crate::frames::read_to_end;
use crate::support::{
    BinaryServer, Client, TestServer, config, eventually, http_get, tenant, token, try_upgrade,
    upgrade_request, ws_url,
};

const SHUTTING_DOWN: &str = "server shutting down";

fn drain_config(drain_timeout: &str) -> String {
    config(
        &format!("[shutdown]\ndrain_timeout = \"{drain_timeout}\"\n"),
        &[tenant("default", "", "")],
    )
}

/// Expects close 1001 `server shutting down` (skipping any text first) and ends the stream.
async fn expect_shutdown_close(client: &mut Client) {
    let (code, reason) = client.expect_close_skipping_text().await;
    assert_eq!(code, 1001, "reason {reason:?}");
    assert_eq!(reason, SHUTTING_DOWN);
    read_to_end(client).await;
}

/// Checks what a draining server answers: `/readyz` 503, `/healthz` 200, upgrades 503 with
/// `Retry-After`.
async fn assert_draining_answers(addr: SocketAddr) {
    let (status, headers, body) = http_get(&format!("http://{addr}/readyz")).await;
    assert_eq!(status, 503, "readyz while draining: {body}");
    assert!(
        headers.get("retry-after").is_some(),
        "a 503 without Retry-After: {headers:?}"
    );
    let body: Value = serde_json::from_str(&body).expect("readyz body is JSON");
    assert!(body["error"].is_string(), "readyz body: {body}");
    assert!(body["message"].is_string(), "readyz body: {body}");

    let (status, _, body) = http_get(&format!("http://{addr}/healthz")).await;
    assert_eq!(status, 200, "healthz while draining: {body}");

    let bearer = format!("Bearer {}", token("late"));
    let request = upgrade_request(&ws_url(addr, "default"), &[("authorization", &bearer)]);
    let Err(refusal) = try_upgrade(request).await else {
        panic!("an upgrade was accepted while draining");
    };
    assert_eq!(refusal.status, 503, "upgrade while draining: {refusal:?}");
    let retry_after = refusal
        .headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    assert!(retry_after.is_some(), "no numeric Retry-After: {refusal:?}");
    assert!(refusal.body["error"].is_string(), "body: {}", refusal.body);
}

async fn assert_ready(addr: SocketAddr) {
    let (status, _, body) = http_get(&format!("http://{addr}/readyz")).await;
    assert_eq!(status, 200, "readyz before shutdown: {body}");
}

#[tokio::test]
async fn in_process_shutdown_closes_every_connection_with_1001() {
    let server = TestServer::start(&drain_config("5s")).await;
    assert_ready(server.addr).await;
    let mut alice = Client::connect(&server, "default", "alice").await;
    alice.join("lobby").await;
    let mut bob = Client::connect(&server, "default", "bob").await;
    bob.join("lobby").await;
    assert_eq!(alice.recv().await["type"], "presence:join");
    let mut idle = Client::connect(&server, "default", "idle").await;
    let node = server.node().clone();
    assert_eq!(node.registry.len(), 3);

    let started = Instant::now();
    let (left, (), (), ()) = tokio::join!(
        server.shutdown(),
        expect_shutdown_close(&mut alice),
        expect_shutdown_close(&mut bob),
        expect_shutdown_close(&mut idle),
    );
    assert_eq!(left, 0);
    // Every client answered the close, so the drain did not wait for its timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the drain took {:?}",
        started.elapsed()
    );
    assert!(node.registry.is_empty());
    eventually("rooms empty", || node.rooms.is_empty()).await;
}

#[tokio::test]
async fn in_process_drain_refuses_new_work_until_it_ends() {
    let server = TestServer::start(&drain_config("1500ms")).await;
    let addr = server.addr;
    let mut reader = Client::connect(&server, "default", "reader").await;
    // Never read during the drain: it keeps the drain going until its timeout.
    let mut stuck = Client::connect(&server, "default", "stuck").await;
    let node = server.node().clone();

    let started = Instant::now();
    let probes = async {
        expect_shutdown_close(&mut reader).await;
        assert!(node.is_draining());
        assert_draining_answers(addr).await;
    };
    let (left, ()) = tokio::join!(server.shutdown(), probes);
    let elapsed = started.elapsed();
    assert_eq!(left, 1, "the stuck client was still open at the deadline");
    assert!(
        elapsed >= Duration::from_millis(1400),
        "drain ended after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "drain ended after {elapsed:?}"
    );
    // The stuck client got its close frame as well.
    expect_shutdown_close(&mut stuck).await;
}

/// The real binary: a signal starts the drain; clients get 1001; `/readyz` and upgrades answer
/// 503 meanwhile; the process exits 0 within the drain timeout plus a margin.
async fn binary_drains_on(signal: &str) {
    let drain = Duration::from_secs(2);
    let mut server = BinaryServer::start(&drain_config("2s")).await;
    let addr = server.addr;
    assert_ready(addr).await;
    let mut reader = Client::connect_addr(addr, "default", "reader").await;
    reader.join("lobby").await;
    // `stuck` does not read during the drain, so the drain lasts until its timeout.
    let mut stuck = Client::connect_addr(addr, "default", "stuck").await;
    stuck.join("lobby").await;
    assert_eq!(reader.recv().await["type"], "presence:join");

    let signalled = Instant::now();
    server.signal(signal);
    expect_shutdown_close(&mut reader).await;
    assert_draining_answers(addr).await;
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the process exited before the drain could be observed"
    );

    let code = server.wait(drain + Duration::from_secs(5)).await;
    let elapsed = signalled.elapsed();
    assert_eq!(code, Some(0), "exit status after {signal}");
    assert!(
        elapsed <= drain + Duration::from_secs(2),
        "exited {elapsed:?} after {signal}, drain timeout {drain:?}"
    );
    // The close frame reached the client that was not reading, too.
    expect_shutdown_close(&mut stuck).await;
}

#[tokio::test]
async fn binary_drains_and_exits_0_on_sigterm() {
    binary_drains_on("TERM").await;
}

#[tokio::test]
async fn binary_drains_and_exits_0_on_sigint() {
    binary_drains_on("INT").await;
}

#[tokio::test]
async fn binary_with_no_connections_exits_0_promptly_on_sigterm() {
    let mut server = BinaryServer::start(&drain_config("5s")).await;
    assert_ready(server.addr).await;
    let signalled = Instant::now();
    server.signal("TERM");
    let code = server.wait(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
    // Nothing to wait for: the drain ends long before its timeout.
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exited after {:?}",
        signalled.elapsed()
    );
}

/// Whether a process exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[tokio::test]
async fn binary_stops_its_compiles_and_exits_within_the_drain_timeout() {
    let drain = Duration::from_secs(2);
    let mut server = BinaryServer::start(&drain_config("2s")).await;
    let addr = server.addr;
    let pid = server.child.id().expect("running");
    // Winch serves the upload at once; Cranelift's build of it, in the background, would take
    // many minutes.
    let answer = put_plugin_at(addr, "default", "greeter", slow_greeter()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let worker = loop {
        if let Some(worker) = compile_workers(pid).first() {
            break *worker;
        }
        assert!(Instant::now() < deadline, "no compile worker started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // `stuck` does not read during the drain, so the drain lasts until its timeout.
    let mut stuck = Client::connect_addr(addr, "default", "stuck").await;

    let signalled = Instant::now();
    server.signal("TERM");
    // The compile is stopped when the drain begins, not when the process ends.
    while running(worker) {
        assert!(
            signalled.elapsed() < drain / 2,
            "the compile worker {worker} still ran {:?} into the drain",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the process exited before the drain could be observed"
    );
    let code = server.wait(drain + Duration::from_secs(10)).await;
    let elapsed = signalled.elapsed();
    assert_eq!(code, Some(0), "exit status after SIGTERM");
    assert!(
        elapsed <= drain + Duration::from_secs(2),
        "exited {elapsed:?} after SIGTERM, drain timeout {drain:?}"
    );
    expect_shutdown_close(&mut stuck).await;
}
