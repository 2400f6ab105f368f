//! The plugins' key-value store through the real runtime: one conformance script
//! (`plugins/kv-probe/conformance.json`, which the plugin's native test runs against the mock
//! host) gives the same answers on a node's memory store and on the Redis store, versions
//! guard a write across nodes, and the Redis namespace's bookkeeping matches what it holds.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::sleep;

use crate::cluster::{redis_node_config, start_node};
use crate::external::RedisServer;
use crate::plugins::plugin_tables;
use crate::support::{Client, TestServer, config, tenant};

/// The limits `conformance.json` is written for.
const LIMITS: &str = "[tenants.plugin_limits]\nmax_kv_ops_per_call = 20\nkv_max_bytes = 4096\n";

fn probe_tables() -> String {
    plugin_tables(&["kv-probe"], LIMITS)
}

fn script() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/kv-probe/conformance.json"
    );
    let text = std::fs::read_to_string(path).expect("the conformance script");
    serde_json::from_str(&text).expect("the script parses")
}

async fn run(client: &mut Client, ops: Vec<Value>) -> Vec<Value> {
    let reply = client
        .request(json!({"type": "kv:run", "payload": {"ops": ops}}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    reply["payload"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("results: {reply}"))
}

/// Runs the whole script on `server`'s `default` tenant and compares every answer.
async fn conforms(server: &TestServer) {
    let mut client = Client::connect(server, "default", "alice").await;
    for step in script() {
        if let Some(wait) = step["wait_ms"].as_u64() {
            sleep(Duration::from_millis(wait)).await;
            continue;
        }
        let pairs = step["ops"].as_array().expect("ops").clone();
        let ops = pairs.iter().map(|pair| pair[0].clone()).collect();
        let got = run(&mut client, ops).await;
        assert_eq!(got.len(), pairs.len(), "step {}", step["name"]);
        for (index, (got, pair)) in got.iter().zip(&pairs).enumerate() {
            assert_eq!(
                got, &pair[1],
                "step {}, op {index}: {}",
                step["name"], pair[0]
            );
        }
    }
}

#[tokio::test]
async fn the_memory_store_gives_the_conformance_answers() {
    let server = TestServer::start(&config("", &[tenant("default", "", &probe_tables())])).await;
    conforms(&server).await;
}

#[tokio::test]
async fn the_redis_store_gives_the_conformance_answers_and_counts_what_it_holds() {
    let redis = RedisServer::start().await;
    let node = start_node(&redis_node_config(
        &format!("url = \"{}\"\n", redis.url()),
        &probe_tables(),
    ))
    .await;
    conforms(&node).await;

    // The namespace's byte count is what its live entries cost, as the memory store counts.
    let index = "switchboard:kv:{default:kv-probe}";
    let keys = redis
        .command(&["ZRANGE", &format!("{index}#keys"), "0", "-1"])
        .await;
    let mut expected = 0;
    for key in keys.lines().filter(|key| !key.is_empty()) {
        let length = redis.command(&["STRLEN", &format!("{index}:{key}")]).await;
        expected += key.len() + length.parse::<usize>().expect("a length") + 96;
    }
    assert!(expected > 0, "the script leaves entries: {keys}");
    let bytes = redis
        .command(&["HGET", &format!("{index}#meta"), "bytes"])
        .await;
    assert_eq!(bytes, expected.to_string(), "keys: {keys}");
}

#[tokio::test]
async fn a_version_lets_one_of_two_racing_writers_win_across_nodes() {
    let redis = RedisServer::start().await;
    let node_config = redis_node_config(&format!("url = \"{}\"\n", redis.url()), &probe_tables());
    let first = start_node(&node_config).await;
    let second = start_node(&node_config).await;
    let mut ada = Client::connect(&first, "default", "ada").await;
    let mut bob = Client::connect(&second, "default", "bob").await;

    let set = json!({"op": "set", "key": "doc", "value": "v0"});
    assert_eq!(run(&mut ada, vec![set]).await, [json!(true)]);
    // Both read the same version on different nodes, then both try to write over it.
    let read = json!({"op": "get_versioned", "key": "doc"});
    let seen = run(&mut bob, vec![read.clone()]).await[0]["version"].clone();
    assert_eq!(run(&mut ada, vec![read]).await[0]["version"], seen);
    let write = |value: &str| json!({"op": "cas", "key": "doc", "expected": seen, "value": value});
    let (ada_wrote, bob_wrote) = tokio::join!(
        run(&mut ada, vec![write("ada")]),
        run(&mut bob, vec![write("bob")])
    );
    let winners: Vec<&str> = [(&ada_wrote[0], "ada"), (&bob_wrote[0], "bob")]
        .into_iter()
        .filter(|(answer, _)| answer.is_u64())
        .map(|(_, name)| name)
        .collect();
    assert_eq!(winners.len(), 1, "ada {ada_wrote:?}, bob {bob_wrote:?}");
    let stored = run(&mut bob, vec![json!({"op": "get", "key": "doc"})]).await;
    assert_eq!(stored, [json!(winners[0])]);
}

#[test]
fn the_sdk_documents_the_limits_the_host_enforces() {
    use switchboard::kv as host;
    use switchboard_sdk::kv as sdk;
    assert_eq!(sdk::MAX_KEY_BYTES, host::MAX_KEY_BYTES);
    assert_eq!(sdk::MAX_VALUE_BYTES, host::MAX_VALUE_BYTES);
    assert_eq!(sdk::MAX_ENTRIES, host::MAX_ENTRIES);
    assert_eq!(sdk::MAX_LIST_PAGE, host::MAX_LIST_PAGE);
    assert_eq!(sdk::ENTRY_COST, host::ENTRY_COST);
}
