//! `switchboard plugins list|deploy|delete|history|rollback` and `switchboard tenants
//! list|get|apply|delete`, the operator's commands, against a real node: readable output, the
//! API's refusals passed on, exit codes 0, 1 (refused) and 2 (not asked).

use serde_json::json;

use crate::plugins::{server_with, wasm_bytes};
use crate::support::{Client, TestServer, api_key, binary, greet_version};

/// Runs `switchboard plugins ARGS --url <server>`; the exit code, stdout and stderr.
async fn plugins(server: &TestServer, key: Option<&str>, args: &[&str]) -> (i32, String, String) {
    cli(server, "plugins", "SWITCHBOARD_API_KEY", key, args).await
}

/// Runs `switchboard tenants ARGS --url <server>` with the operator's key from the
/// environment; the exit code, stdout and stderr.
async fn tenants(server: &TestServer, key: Option<&str>, args: &[&str]) -> (i32, String, String) {
    cli(server, "tenants", "SWITCHBOARD_ADMIN_KEY", key, args).await
}

async fn cli(
    server: &TestServer,
    group: &str,
    key_variable: &str,
    key: Option<&str>,
    args: &[&str],
) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(binary());
    command
        .arg(group)
        .args(args)
        .args(["--url", &server.http_url("")])
        .env_remove("SWITCHBOARD_API_KEY")
        .env_remove("SWITCHBOARD_ADMIN_KEY");
    if let Some(key) = key {
        command.env(key_variable, key);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("the command ends in time")
        .expect("the command runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_commands_list_deploy_delete_and_roll_back_through_the_api() {
    let server = server_with(&["greeter-v1", "echo"], "").await;
    let key = api_key("default");
    let mut client = Client::connect(&server, "default", "alice").await;

    let (code, out, err) = plugins(&server, Some(&key), &["list"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("VERSION"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("greeter") && line.contains("1.0.0")),
        "{out}"
    );
    assert!(lines.iter().any(|line| line.starts_with("echo")), "{out}");

    let v2 = crate::support::temp_file("greeter-v2.wasm", "");
    std::fs::write(&v2.0, wasm_bytes("greeter-v2")).expect("written");
    let file = v2.0.display().to_string();
    let (code, out, err) = plugins(&server, Some(&key), &["deploy", "greeter", &file]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("deployed greeter 2.0.0"), "{out}");
    assert_eq!(greet_version(&mut client).await, json!(2));

    let (code, out, err) = plugins(&server, Some(&key), &["delete", "greeter"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("deleted greeter 2.0.0"), "{out}");
    let reply = client.request(json!({"type": "greet"})).await;
    assert_eq!(reply["payload"]["code"], "unknown_type", "{reply}");

    // The kept versions: the deploy and the file's version it replaced.
    let (code, out, err) = plugins(&server, Some(&key), &["history", "greeter"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("VERSION") && lines[0].contains("SHA256"),
        "{out}"
    );
    assert!(
        lines[1].contains("2.0.0") && lines[2].contains("1.0.0"),
        "{out}"
    );
    assert!(out.contains("(deleted:"), "{out}");
    // Back from the delete to what served, then one further back, then no further.
    let (code, out, err) = plugins(&server, Some(&key), &["rollback", "greeter"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("rolled back to greeter 2.0.0"), "{out}");
    assert_eq!(greet_version(&mut client).await, json!(2));
    let (code, out, err) = plugins(&server, Some(&key), &["rollback", "greeter"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("rolled back to greeter 1.0.0"), "{out}");
    assert_eq!(greet_version(&mut client).await, json!(1));
    let (code, out, err) = plugins(&server, Some(&key), &["history", "greeter"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .nth(2)
            .is_some_and(|line| line.starts_with('*') && line.contains("1.0.0")),
        "the serving one marked: {out}"
    );
    let (code, _, err) = plugins(&server, Some(&key), &["rollback", "greeter"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("409 conflict"), "{err}");
    let (code, _, err) = plugins(
        &server,
        Some(&key),
        &["rollback", "greeter", "--to", "0000"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("404 not_found"), "{err}");
    assert_eq!(
        greet_version(&mut client).await,
        json!(1),
        "refusals changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_commands_say_why_and_exit_1_when_refused_and_2_when_not_asked() {
    let server = server_with(&["echo"], "").await;
    let key = api_key("default");

    // Refused by the node: its code and message, exit 1.
    let (code, _, err) = plugins(&server, None, &["list"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401 unauthorized"), "{err}");
    let (code, _, err) = plugins(&server, Some(&key), &["delete", "nobody"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("404 not_found") && err.contains("`nobody`"),
        "{err}"
    );
    let garbage = crate::support::temp_file("garbage.wasm", "not a component");
    let file = garbage.0.display().to_string();
    let (code, _, err) = plugins(&server, Some(&key), &["deploy", "echo", &file]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("422 invalid_plugin"), "{err}");
    // The refused upload changed nothing.
    let mut client = Client::connect(&server, "default", "alice").await;
    let echoed = client.request(json!({"type": "echo", "payload": 1})).await;
    assert_eq!(echoed["payload"], 1, "{echoed}");

    // Not asked: exit 2 with the reason.
    let (code, _, err) = plugins(
        &server,
        Some(&key),
        &["deploy", "echo", "/no/such/file.wasm"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read /no/such/file.wasm"), "{err}");
    for (url, why) in [
        ("https://127.0.0.1:1", "not an http:// URL"),
        ("http://127.0.0.1:1", "cannot reach"),
        ("not a url", "not a URL"),
    ] {
        let output = tokio::process::Command::new(binary())
            .args(["plugins", "list", "--url", url, "--key", &key])
            .output()
            .await
            .expect("the command runs");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(why), "{url}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_commands_apply_list_get_and_delete_through_the_api() {
    use crate::tenants::{ADMIN_KEY, admin};
    let server = TestServer::start(&crate::support::config(
        &admin(),
        &[crate::support::tenant("default", "", "")],
    ))
    .await;
    let file = crate::support::temp_file(
        "tenants.toml",
        "[[tenants]]\nname = \"acme\"\napi_key = \"acme-key\"\n[tenants.jwt]\nsecret = \"acme-secret\"\n[tenants.limits]\nmax_connections = 10\n\n[[tenants]]\nname = \"globex\"\nprotocol = \"raw\"\n[tenants.jwt]\nsecret = \"globex-secret\"\n",
    );
    let path = file.0.display().to_string();
    let (code, out, err) = tenants(&server, Some(ADMIN_KEY), &["apply", &path]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "applied acme (api)\napplied globex (api)",
        "{out}"
    );

    let (code, out, err) = tenants(&server, Some(ADMIN_KEY), &["list"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("SOURCE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("acme") && lines[1].contains("api"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("default") && lines[2].contains("file"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("globex") && lines[3].contains("raw"),
        "{out}"
    );

    let (code, out, err) = tenants(&server, Some(ADMIN_KEY), &["get", "acme"]).await;
    assert_eq!(code, 0, "{err}");
    let acme: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(acme["settings"]["limits"]["max_connections"], 10, "{out}");
    assert_eq!(acme["settings"]["jwt"]["secret"], "(hidden)", "{out}");
    assert!(
        !out.contains("acme-secret") && !out.contains("acme-key"),
        "{out}"
    );

    // A single tenant at the top level of a file updates it.
    let one = crate::support::temp_file(
        "acme.toml",
        "name = \"acme\"\n[jwt]\nsecret = \"rotated\"\n",
    );
    let (code, out, err) = tenants(
        &server,
        Some(ADMIN_KEY),
        &["apply", &one.0.display().to_string()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "applied acme (api)");

    let (code, out, err) = tenants(&server, Some(ADMIN_KEY), &["delete", "globex"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("deleted globex"), "{out}");

    // Refusals: the API's code and message, exit 1; nothing changed.
    let (code, _, err) = tenants(&server, None, &["list"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401 unauthorized"), "{err}");
    let (code, _, err) = tenants(&server, Some(ADMIN_KEY), &["delete", "globex"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("404 not_found"), "{err}");
    let bad = crate::support::temp_file(
        "bad.toml",
        "name = \"acme\"\n[jwt]\nsecret = { env = \"HOME\" }\n",
    );
    let (code, _, err) = tenants(
        &server,
        Some(ADMIN_KEY),
        &["apply", &bad.0.display().to_string()],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("acme: 422 invalid_tenant") && err.contains("jwt.secret"),
        "{err}"
    );
    // Not asked: exit 2.
    let (code, _, err) = tenants(
        &server,
        Some(ADMIN_KEY),
        &["apply", "/no/such/tenants.toml"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read /no/such/tenants.toml"), "{err}");
    let (code, out, _) = tenants(&server, Some(ADMIN_KEY), &["list"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "acme and default: {out}");
}
