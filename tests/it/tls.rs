//! TLS at the edge: the Rust client through nginx terminating TLS with the cluster example's
//! own `nginx.conf`. It connects, reconnects and recovers across the example's three nodes when
//! the node holding its connection dies; a certificate it must not trust fails `connect` at
//! once (no reconnect loop) and says what was wrong. Behind the proxy, the Origin check sees
//! the page's origin.

use std::time::Duration;

use serde_json::json;
use switchboard_client::{Client, ClientError, Tls};
use tokio::time::{Instant, timeout};

use crate::certs::{Ca, Validity};
use crate::client::{connect, expect_rejoin, next_message, settings};
use crate::external::{ClusterExample, Nginx, signal};
use crate::support::{
    TestServer, WAIT, claims, config, default_config, http_get, sign, tenant, token, try_upgrade,
    upgrade_request,
};

/// A token for the cluster example's `default` tenant, signed with its development secret.
fn example_token(sub: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(b"dev-secret-change-me");
    sign(
        &claims(sub, 3600, json!({})),
        jsonwebtoken::Algorithm::HS256,
        &key,
    )
}

/// The node (port, pid) whose `/metrics` counts one connection of the `default` tenant.
async fn node_holding_the_connection(example: &ClusterExample) -> (u16, u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        for &(port, pid) in &example.nodes {
            let metrics = http_get(&format!("http://127.0.0.1:{port}/metrics"))
                .await
                .2;
            if metrics
                .lines()
                .any(|line| line == r#"switchboard_connections{tenant="default"} 1"#)
            {
                return (port, pid);
            }
        }
        assert!(Instant::now() < deadline, "no node reports the connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_rust_client_connects_reconnects_and_recovers_through_the_tls_front_door() {
    let example = ClusterExample::start().await;
    let mut config = settings(
        format!("wss://localhost:{}/ws", example.tls_port),
        example_token("alice"),
    );
    config.tls = Tls::private_only()
        .add_ca_file(example.ca_path())
        .expect("the example's CA loads");
    let client = connect(config).await;
    let mut events = client.events();
    client.join("lobby").await.expect("joined");
    let first_node = example.nodes[0].0;
    let seq = ClusterExample::publish_through(first_node, "lobby", json!("before")).await;
    assert_eq!(
        next_message(&mut events, "lobby").await,
        (seq, json!("before"))
    );

    // The node behind the client's connection dies; the messages published meanwhile are
    // recovered after the client comes back through the front door to a surviving node.
    let (dead_port, dead_pid) = node_holding_the_connection(&example).await;
    let welcome = client.welcome().expect("welcomed");
    signal(dead_pid, "-KILL");
    let survivor = example
        .nodes
        .iter()
        .map(|&(port, _)| port)
        .find(|&port| port != dead_port)
        .expect("a surviving node");
    let mut published = Vec::new();
    for n in 1..=3 {
        published.push((
            ClusterExample::publish_through(survivor, "lobby", json!(n)).await,
            json!(n),
        ));
    }
    expect_rejoin(&mut events, "lobby", true).await;
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(next_message(&mut events, "lobby").await);
    }
    assert_eq!(received, published);
    let rewelcome = client.welcome().expect("welcomed again");
    assert_ne!(rewelcome.connection_id, welcome.connection_id);
    client.close().await;
}

#[tokio::test]
async fn a_certificate_the_client_must_not_trust_fails_connect_at_once_and_says_why() {
    let server = TestServer::start(&default_config()).await;
    let ca = Ca::new("Switchboard test CA");
    let stranger = Ca::new("Someone else's CA");
    let here = ["localhost", "127.0.0.1"];
    let cases = [
        (
            "expired",
            ca.server(&here, Validity::Expired),
            "certificate expired",
        ),
        (
            "for another name",
            ca.server(&["switchboard.example.com"], Validity::Current),
            "not valid for name \"localhost\"",
        ),
        (
            "from an unknown CA",
            stranger.server(&here, Validity::Current),
            "a certificate authority the client does not trust",
        ),
    ];
    for (what, certificate, says) in cases {
        let nginx = Nginx::start_with_certificate(&[server.addr.port()], &certificate).await;
        // Reconnecting is on: a retryable failure would keep `connect` trying past the timeout.
        let mut config = settings(nginx.wss_url("/ws"), token("alice"));
        config.tls = Tls::default().add_ca_pem(ca.pem().as_bytes()).expect("CA");
        let started = Instant::now();
        let refused = timeout(Duration::from_secs(5), Client::connect(config))
            .await
            .unwrap_or_else(|_| panic!("{what}: connect kept retrying"));
        let error = refused.err().unwrap_or_else(|| panic!("{what}: connected"));
        let ClientError::Certificate(message) = &error else {
            panic!("{what}: not a certificate error: {error:?}");
        };
        assert!(message.contains(says), "{what}: {message}");
        assert!(message.contains("`localhost`"), "{what}: {message}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn the_same_certificate_is_accepted_once_its_ca_is_trusted() {
    let server = TestServer::start(&default_config()).await;
    let nginx = Nginx::start(&[server.addr.port()]).await;
    let ca = nginx.ca_pem.clone().expect("a CA");

    // Public roots only: the private CA is unknown.
    let mut config = settings(nginx.wss_url("/ws"), token("alice"));
    config.reconnect = None;
    let Err(error) = Client::connect(config).await else {
        panic!("connected without trusting the CA");
    };
    assert!(matches!(error, ClientError::Certificate(_)), "{error:?}");

    let mut config = settings(nginx.wss_url("/ws"), token("alice"));
    config.tls = Tls::default().add_ca_pem(ca.as_bytes()).expect("CA");
    let client = connect(config).await;
    let info = client.join("lobby").await.expect("joined over TLS");
    assert_eq!(info.members.len(), 1);
    client.close().await;
}

#[tokio::test]
async fn behind_the_proxy_the_origin_check_sees_the_page_origin() {
    let tenant = tenant(
        "default",
        "allowed_origins = [\"https://app.example.com\"]",
        "",
    );
    let server = TestServer::start(&config("", &[tenant])).await;
    let nginx = Nginx::start(&[server.addr.port()]).await;
    let bearer = format!("Bearer {}", token("alice"));
    let upgrade = |origin: &'static str| {
        upgrade_request(
            &nginx.ws_url("/ws"),
            &[("authorization", &bearer), ("origin", origin)],
        )
    };
    // nginx passes Origin on unchanged: the node compares the page's origin, never the
    // proxy's address or its own.
    let (ws, response) = try_upgrade(upgrade("https://app.example.com"))
        .await
        .unwrap_or_else(|refusal| panic!("the allowed origin was refused: {refusal:?}"));
    assert_eq!(response.status().as_u16(), 101);
    drop(ws);
    let refusal = try_upgrade(upgrade("https://evil.example.com"))
        .await
        .err()
        .unwrap_or_else(|| panic!("a foreign origin upgraded through the proxy"));
    assert_eq!(refusal.status, 403, "{refusal:?}");
}
