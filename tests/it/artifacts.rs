//! Precompiled plugin artifacts (`switchboard precompile`): signed with the node's artifact
//! key, loaded without compiling, from an upload or a configured file; anything unsigned,
//! signed with another key, changed, or not wasmtime's build is refused and the old version
//! keeps serving.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest as _;
use switchboard::config::ArtifactKey;
use switchboard::plugins::Plugins;
use switchboard::plugins::artifact;
use switchboard::plugins::engine::{self, Tier};

use crate::support::{
    BinaryServer, Client, TestServer, api_key, binary, config, deploy, greet_version, temp_file,
    tenant,
};

const KEY: &str = "artifact-key-for-tests-0123456789abcdef";

fn key(text: &str) -> ArtifactKey {
    ArtifactKey::new(text).expect("long enough")
}

fn wasm(name: &str) -> String {
    format!(
        "{}/switchboard_plugin_{}.wasm",
        env!("PLUGIN_DIR"),
        name.replace('-', "_")
    )
}

fn wasm_bytes(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).expect("plugin built")
}

fn precompiled(name: &str, key_text: &str) -> Vec<u8> {
    Plugins::precompile(&key(key_text), &wasm_bytes(name)).expect("precompiles")
}

/// The config section that gives a node the artifact key.
fn key_section(key_text: &str) -> String {
    format!("[plugins]\nartifact_key = \"{key_text}\"\n")
}

/// A server whose `default` tenant runs `greeter` 1.0 from its `.wasm`.
async fn greeter_server(global: &str) -> TestServer {
    let tables = format!("[[tenants.plugins]]\npath = \"{}\"\n", wasm("greeter-v1"));
    TestServer::start(&config(global, &[tenant("default", "", &tables)])).await
}

async fn put_plugin(server: &TestServer, name: &str, body: Vec<u8>) -> (u16, Value) {
    crate::support::put_plugin(server, name, Some(&api_key("default")), body).await
}

async fn listed(server: &TestServer, name: &str) -> Value {
    let list: Value = reqwest::Client::new()
        .get(server.http_url("/api/tenants/default/plugins"))
        .bearer_auth(api_key("default"))
        .send()
        .await
        .expect("request succeeds")
        .json()
        .await
        .expect("JSON body");
    list.as_array()
        .and_then(|plugins| plugins.iter().find(|plugin| plugin["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

#[tokio::test]
async fn a_signed_artifact_swaps_in_as_optimized_code_and_answers() {
    let server = greeter_server(&key_section(KEY)).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 1);

    let (status, loaded) = put_plugin(&server, "greeter", precompiled("greeter-v2", KEY)).await;
    assert_eq!(status, 200, "{loaded}");
    assert_eq!(loaded["version"], "2.0.0");
    // Optimized code at once: no baseline build, no background compile.
    assert_eq!(loaded["tier"], "optimized");
    // The listing names the source component, as it would had the `.wasm` been uploaded.
    let source = artifact::hex(&sha2::Sha256::digest(wasm_bytes("greeter-v2")));
    assert_eq!(loaded["sha256"], source.as_str());
    assert_eq!(greet_version(&mut client).await, 2);
    let listed = listed(&server, "greeter").await;
    assert_eq!(
        (&listed["tier"], &listed["version"]),
        (&json!("optimized"), &json!("2.0.0"))
    );
}

#[tokio::test]
async fn artifacts_not_signed_with_the_node_key_are_refused_and_the_old_version_serves() {
    let server = greeter_server(&key_section(KEY)).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let good = precompiled("greeter-v2", KEY);

    let mut changed = good.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    let refused = [
        (
            precompiled("greeter-v2", "another-key-for-tests-0123456789abcdef"),
            "signature does not match",
        ),
        (changed, "signature does not match"),
        (good[..50].to_vec(), "truncated"),
    ];
    for (body, reason) in refused {
        let (status, error) = put_plugin(&server, "greeter", body).await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(error["error"], "invalid_plugin");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("precompiled artifact refused") && message.contains(reason),
            "{message}"
        );
        assert_eq!(greet_version(&mut client).await, 1);
    }
    assert_eq!(listed(&server, "greeter").await["version"], "1.0.0");
}

#[tokio::test]
async fn a_signed_build_made_for_another_engine_configuration_is_refused() {
    let server = greeter_server(&key_section(KEY)).await;
    let mut client = Client::connect(&server, "default", "alice").await;
    // What a node gets from a `switchboard precompile` of a build whose engine settings differ
    // from its own, signed with the right key: here the baseline (Winch) engine's build.
    let source = wasm_bytes("greeter-v2");
    let baseline = engine::shared(Tier::Baseline).expect("engine");
    let compiled = wasmtime::component::Component::new(baseline, &source)
        .and_then(|component| component.serialize())
        .expect("compiles");
    let signed = artifact::seal(&key(KEY), &source, &compiled);

    let (status, error) = put_plugin(&server, "greeter", signed).await;
    assert_eq!(status, 422, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not a Switchboard plugin component"),
        "{message}"
    );
    assert_eq!(greet_version(&mut client).await, 1);
}

#[tokio::test]
async fn a_node_without_an_artifact_key_refuses_artifacts() {
    let server = greeter_server("").await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let (status, error) = put_plugin(&server, "greeter", precompiled("greeter-v2", KEY)).await;
    assert_eq!(status, 422, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("no `plugins.artifact_key`"), "{message}");
    assert_eq!(greet_version(&mut client).await, 1);
}

#[tokio::test]
async fn the_precompile_command_writes_an_artifact_a_node_serves_from_its_config() {
    let keyed = temp_file(
        "precompile",
        &config(&key_section(KEY), &[tenant("default", "", "")]),
    );
    let folder = std::env::temp_dir().join(format!("switchboard-artifact-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("folder");
    let output = folder.join("echo.cwasm");
    let run = Command::new(binary())
        .args(["precompile", "--config"])
        .arg(&keyed.0)
        .arg(wasm("echo"))
        .arg("--output")
        .arg(&output)
        .output()
        .expect("runs");
    assert!(run.status.success(), "{run:?}");
    let written = std::fs::read(&output).expect("artifact written");
    assert!(artifact::is_artifact(&written));

    let tables = format!("[[tenants.plugins]]\npath = \"{}\"\n", output.display());
    let server = BinaryServer::start(&config(
        &key_section(KEY),
        &[tenant("default", "", &tables)],
    ))
    .await;
    let mut client = Client::connect_addr(server.addr, "default", "alice").await;
    let reply = client
        .request(json!({"type": "echo", "payload": {"n": [1, 2]}}))
        .await;
    assert_eq!(reply["payload"], json!({"n": [1, 2]}));
    drop(server);

    // Without a key in the config, or with a file that is no component, it says why.
    let keyless = temp_file("precompile", &config("", &[tenant("default", "", "")]));
    let run = Command::new(binary())
        .args(["precompile", "--config"])
        .arg(&keyless.0)
        .arg(wasm("echo"))
        .output()
        .expect("runs");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("no `plugins.artifact_key`"),
        "{run:?}"
    );
    let run = Command::new(binary())
        .args(["precompile", "--config"])
        .arg(&keyed.0)
        .arg(&keyed.0)
        .arg("--output")
        .arg(folder.join("config.cwasm"))
        .output()
        .expect("runs");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("not a plugin component"),
        "{run:?}"
    );
    assert!(!folder.join("config.cwasm").exists());
    let _ = std::fs::remove_dir_all(&folder);
}

#[tokio::test]
async fn a_watched_artifact_file_is_reloaded_and_a_foreign_one_is_refused() {
    let folder =
        std::env::temp_dir().join(format!("switchboard-watch-artifact-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("folder");
    let path = folder.join("greeter.cwasm");
    deploy(&path, &precompiled("greeter-v1", KEY));
    let tables = format!("[[tenants.plugins]]\npath = \"{}\"\n", path.display());
    let server = TestServer::start(&config(
        &key_section(KEY),
        &[tenant("default", "", &tables)],
    ))
    .await;
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 1);

    deploy(&path, &precompiled("greeter-v2", KEY));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while greet_version(&mut client).await != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "version 2 never took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed(&server, "greeter").await["tier"], "optimized");

    // One signed with another key is refused and counted; version 2 keeps serving.
    crate::support::deploy_refused(
        &server,
        &mut client,
        &path,
        &precompiled("greeter-v1", "another-key-for-tests-0123456789abcdef"),
        "the foreign artifact",
        2,
    )
    .await;
    let _ = std::fs::remove_dir_all(&folder);
}
