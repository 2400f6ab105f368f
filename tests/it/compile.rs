//! Compiling uploaded plugins, bounded: crafted uploads that would hold the compiler for many
//! minutes or gigabytes are stopped at the tenant's limits while the old version serves; a
//! newer upload cancels an older one's compile; tenants wait for compile slots in bounded
//! queues; and what a tenant may hold (plugins, bytes) is capped before anything compiles.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use wasm_encoder::{
    BlockType, CodeSection, ComponentSection, Encode, Function, FunctionSection, Instruction,
    Module, ModuleSection, TypeSection, ValType,
};

use crate::support::{
    Client, TestServer, api_key, assert_error_body, config, greet_version, http_get, tenant,
    wait_for_metric,
};

/// A compiled plugin from `plugins/`.
fn wasm_bytes(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/switchboard_plugin_{}.wasm",
        env!("PLUGIN_DIR"),
        name.replace('-', "_")
    );
    std::fs::read(path).expect("plugin built")
}

/// A core module of one function that keeps `locals` values live across `depth` nested loops:
/// a few kilobytes that Cranelift's register allocator needs minutes for (1000 x 400 ran past
/// two minutes of CPU on the test machine), while Winch, a single pass, takes milliseconds.
fn slow_module(locals: u32, depth: u32) -> Module {
    let mut body = Function::new([(locals, ValType::I64)]);
    for local in 0..locals {
        body.instruction(&Instruction::I64Const(i64::from(local)));
        body.instruction(&Instruction::LocalSet(local));
    }
    for _ in 0..depth {
        body.instruction(&Instruction::Loop(BlockType::Empty));
    }
    let mix = |body: &mut Function, local: u32| {
        body.instruction(&Instruction::LocalGet(local % locals));
        body.instruction(&Instruction::LocalGet((local + 1) % locals));
        body.instruction(&Instruction::I64Add);
        body.instruction(&Instruction::LocalSet(local % locals));
    };
    for local in 0..locals {
        mix(&mut body, local);
    }
    for level in 0..depth {
        for local in (0..locals).step_by((locals / 8).max(1) as usize) {
            mix(&mut body, local + level);
        }
        body.instruction(&Instruction::LocalGet(level % locals));
        body.instruction(&Instruction::I64Eqz);
        body.instruction(&Instruction::BrIf(0));
        body.instruction(&Instruction::End);
    }
    body.instruction(&Instruction::LocalGet(0));
    for local in 1..locals {
        body.instruction(&Instruction::LocalGet(local));
        body.instruction(&Instruction::I64Add);
    }
    body.instruction(&Instruction::End);
    one_function_module(&body)
}

/// A core module of one function made of `depth` nested blocks: 3 bytes a level, and about
/// 370 bytes of the baseline compiler's memory a level.
fn nested_blocks_module(depth: u32) -> Module {
    let mut body = Function::new([]);
    for _ in 0..depth {
        body.instruction(&Instruction::Block(BlockType::Empty));
    }
    for _ in 0..depth {
        body.instruction(&Instruction::End);
    }
    body.instruction(&Instruction::I64Const(0));
    body.instruction(&Instruction::End);
    one_function_module(&body)
}

fn one_function_module(body: &Function) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I64]);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut code = CodeSection::new();
    code.function(body);
    let mut module = Module::new();
    module.section(&types).section(&functions).section(&code);
    module
}

/// A real plugin component with `module` added as a core module it never instantiates: the
/// plugin loads and answers as before, but every compile of it compiles `module` too.
fn with_extra_module(plugin: &str, module: &Module) -> Vec<u8> {
    let mut bytes = wasm_bytes(plugin);
    let section = ModuleSection(module);
    bytes.push(section.id());
    section.encode(&mut bytes);
    bytes
}

/// The `greeter` v2 fixture with a module Cranelift needs minutes for.
pub fn slow_greeter() -> Vec<u8> {
    with_extra_module("greeter-v2", &slow_module(1000, 400))
}

async fn put_plugin(server: &TestServer, tenant: &str, name: &str, body: Vec<u8>) -> PutAnswer {
    put_plugin_at(server.addr, tenant, name, body).await
}

/// What a `PUT` of a plugin answered.
#[derive(Debug)]
pub struct PutAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
    /// The JSON body.
    pub body: Value,
}

/// `PUT /api/tenants/{tenant}/plugins/{name}` with the tenant's API key.
pub async fn put_plugin_at(
    addr: std::net::SocketAddr,
    tenant: &str,
    name: &str,
    body: Vec<u8>,
) -> PutAnswer {
    let request = reqwest::Client::new()
        .put(format!("http://{addr}/api/tenants/{tenant}/plugins/{name}"))
        .bearer_auth(api_key(tenant))
        .body(body);
    let response = tokio::time::timeout(Duration::from_secs(90), request.send())
        .await
        .expect("answered in time")
        .expect("request succeeds");
    PutAnswer {
        status: response.status().as_u16(),
        retry_after: response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        body: response.json().await.expect("JSON body"),
    }
}

/// Asserts an error answer: its status, its `error` code, and words of its message.
fn assert_refused(answer: &PutAnswer, status: u16, code: &str, words: &[&str]) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_error_body(&answer.body, code);
    assert_eq!(answer.body["error"], code, "{answer:?}");
    let message = answer.body["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(message.contains(word), "`{word}` not in {message:?}");
    }
}

/// The value of one metric line (`name{labels}`), 0 when absent.
async fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    let text = http_get(&format!("http://{addr}/metrics")).await.2;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `count` compiles run on the node.
async fn wait_for_running_compiles(addr: std::net::SocketAddr, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(addr, "switchboard_plugin_compiles_running").await != count as f64 {
        assert!(Instant::now() < deadline, "never {count} compiles running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The process ids of the compile workers that `parent` started and that still exist.
pub fn compile_workers(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent id is the second field after the `(command)`, which may hold spaces.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent)
                && String::from_utf8_lossy(&cmdline)
                    .contains(switchboard::plugins::compile::WORKER_COMMAND)
        })
        .collect()
}

/// The niceness of each thread of process `pid`.
fn thread_niceness(pid: u32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // Field 19, the 17th after the `(command)`.
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(16)?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until every thread of the compile worker `pid` runs at niceness 10 (or lower
/// priority, when the tests themselves run niced).
async fn wait_for_demotion(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let niceness = thread_niceness(pid);
        if !niceness.is_empty() && niceness.iter().all(|nice| *nice >= 10) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker {pid} threads at niceness {niceness:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no compile worker of `parent` is left.
pub async fn wait_for_no_workers(parent: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = compile_workers(parent);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "compile workers left: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn greeter_tables(limits: &str) -> String {
    format!(
        "[[tenants.plugins]]\npath = \"{}/switchboard_plugin_greeter_v1.wasm\"\n{limits}",
        env!("PLUGIN_DIR")
    )
}

#[tokio::test]
async fn a_slow_compile_is_stopped_at_the_time_limit_while_the_old_version_and_other_tenants_carry_on()
 {
    let server = TestServer::start(&config(
        "[plugins]\ntiered_swaps = false\n",
        &[
            tenant(
                "default",
                "",
                &greeter_tables("[tenants.plugin_limits]\ncompile_timeout = \"2s\"\n"),
            ),
            tenant("other", "", ""),
        ],
    ))
    .await;
    let addr = server.addr;
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 1);

    let started = Instant::now();
    let slow = tokio::spawn(put_plugin_at(addr, "default", "greeter", slow_greeter()));
    wait_for_running_compiles(addr, 1).await;
    // While it compiles, version 1 answers and another tenant's upload goes through.
    assert_eq!(greet_version(&mut client).await, 1);
    let echo = put_plugin(&server, "other", "echo", wasm_bytes("echo")).await;
    assert_eq!(echo.status, 200, "{echo:?}");

    let answer = slow.await.expect("joined");
    let took = started.elapsed();
    assert_refused(
        &answer,
        422,
        "compile_time_limit",
        &["plugin_limits.compile_timeout", "2s"],
    );
    assert!(took < Duration::from_secs(30), "stopped after {took:?}");
    assert_eq!(greet_version(&mut client).await, 1);
    wait_for_no_workers(std::process::id()).await;
    let series = r#"switchboard_plugin_compiles_total{tenant="default",tier="optimized",outcome="time_limit"}"#;
    assert_eq!(metric(addr, series).await, 1.0);
    wait_for_metric(
        &server,
        r#"switchboard_plugin_load_failures_total{tenant="default"} 1"#,
        "the stopped compile",
    )
    .await;
}

#[tokio::test]
async fn a_background_build_that_runs_out_of_time_leaves_the_baseline_build_serving() {
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "",
            // Memory to spare, so the clock is the limit this build meets however fast the
            // machine is (on an idle one it reached 512 MiB before 3 s).
            &greeter_tables(
                "[tenants.plugin_limits]\ncompile_timeout = \"3s\"\ncompile_memory_bytes = 4294967296\n",
            ),
        )],
    ))
    .await;
    // Winch takes the slow module in its stride: the upload serves at once.
    let answer = put_plugin(&server, "default", "greeter", slow_greeter()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["tier"], "baseline");
    let series = r#"switchboard_plugin_compiles_total{tenant="default",tier="optimized",outcome="time_limit"}"#;
    wait_for_metric(
        &server,
        &format!("{series} 1"),
        "the stopped background build",
    )
    .await;
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 2);
    let list = list_plugins(&server, "default").await;
    assert_eq!(list[0]["tier"], "baseline", "{list}");
    wait_for_no_workers(std::process::id()).await;
}

/// What `GET /api/tenants/{tenant}/plugins` lists.
async fn list_plugins(server: &TestServer, tenant: &str) -> Value {
    let response = reqwest::Client::new()
        .get(server.http_url(&format!("/api/tenants/{tenant}/plugins")))
        .bearer_auth(api_key(tenant))
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("JSON body")
}

#[tokio::test]
async fn a_compile_that_needs_too_much_memory_is_stopped_at_the_memory_limit() {
    let limit = 128 * 1024 * 1024;
    let server = TestServer::start(&config(
        "",
        &[tenant(
            "default",
            "",
            &greeter_tables(&format!(
                "[tenants.plugin_limits]\ncompile_memory_bytes = {limit}\n"
            )),
        )],
    ))
    .await;
    // About 370 MB of the baseline compiler's memory in a 3 MB upload.
    let bomb = with_extra_module("greeter-v2", &nested_blocks_module(1_000_000));
    let answer = put_plugin(&server, "default", "greeter", bomb).await;
    assert_refused(
        &answer,
        422,
        "compile_memory_limit",
        &["plugin_limits.compile_memory_bytes", &limit.to_string()],
    );
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 1);
    let series = r#"switchboard_plugin_compiles_total{tenant="default",tier="baseline",outcome="memory_limit"}"#;
    assert_eq!(metric(server.addr, series).await, 1.0);
    // The same plugin without the bomb compiles within the limit.
    let answer = put_plugin(&server, "default", "greeter", wasm_bytes("greeter-v2")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(greet_version(&mut client).await, 2);
}

#[tokio::test]
async fn a_newer_upload_cancels_the_compile_of_an_older_one() {
    let server = TestServer::start(&config(
        "[plugins]\ntiered_swaps = false\n",
        &[tenant("default", "", &greeter_tables(""))],
    ))
    .await;
    let addr = server.addr;
    let started = Instant::now();
    let slow = tokio::spawn(put_plugin_at(addr, "default", "greeter", slow_greeter()));
    wait_for_running_compiles(addr, 1).await;
    // A swap's compile keeps the node's priority for its first second only.
    let workers = compile_workers(std::process::id());
    assert_eq!(workers.len(), 1, "{workers:?}");
    wait_for_demotion(workers[0]).await;
    // The tenant compiles one at a time: the newer upload gets the slot because the older
    // compile is cancelled, not because it ended.
    let newer = put_plugin(&server, "default", "greeter", wasm_bytes("greeter-v2")).await;
    assert_eq!(newer.status, 200, "{newer:?}");
    let older = slow.await.expect("joined");
    assert_refused(&older, 409, "superseded", &["newer version"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the cancelled compile held on for {:?}",
        started.elapsed()
    );
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 2);
    wait_for_no_workers(std::process::id()).await;
    let series = r#"switchboard_plugin_compiles_total{tenant="default",tier="optimized",outcome="superseded"}"#;
    assert_eq!(metric(addr, series).await, 1.0);
}

#[tokio::test]
async fn a_newer_version_cancels_the_background_build_of_the_one_it_replaces() {
    let server =
        TestServer::start(&config("", &[tenant("default", "", &greeter_tables(""))])).await;
    let addr = server.addr;
    let answer = put_plugin(&server, "default", "greeter", slow_greeter()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // Its optimized build would take minutes.
    wait_for_running_compiles(addr, 1).await;
    let workers = compile_workers(std::process::id());
    assert_eq!(workers.len(), 1, "{workers:?}");
    // A background build yields to connections from the start.
    wait_for_demotion(workers[0]).await;
    let newer = put_plugin(&server, "default", "greeter", wasm_bytes("greeter-v1")).await;
    assert_eq!(newer.status, 200, "{newer:?}");
    let series = r#"switchboard_plugin_compiles_total{tenant="default",tier="optimized",outcome="superseded"}"#;
    wait_for_metric(
        &server,
        &format!("{series} 1"),
        "the cancelled background build",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{}", workers[0])).exists() {
        assert!(Instant::now() < deadline, "the old worker still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = Client::connect(&server, "default", "alice").await;
    assert_eq!(greet_version(&mut client).await, 1);
}

#[tokio::test]
async fn compile_queues_are_bounded_per_tenant_and_per_node() {
    let server = TestServer::start(&config(
        "[plugins]\ntiered_swaps = false\ncompile_concurrency = 2\ncompile_queue = 0\ncompile_wait = \"300ms\"\n",
        &[
            tenant(
                "default",
                "",
                &greeter_tables("[tenants.plugin_limits]\ncompile_queue = 0\n"),
            ),
            tenant("other", "", "[tenants.plugin_limits]\ncompile_queue = 0\n"),
            tenant("third", "", ""),
        ],
    ))
    .await;
    let addr = server.addr;
    let slow = tokio::spawn(put_plugin_at(addr, "default", "greeter", slow_greeter()));
    wait_for_running_compiles(addr, 1).await;

    // The tenant's one slot is taken and its queue holds none: 429 at once.
    let refused = put_plugin(&server, "default", "echo", wasm_bytes("echo")).await;
    assert_refused(
        &refused,
        429,
        "compile_busy",
        &["plugin_limits.compile_queue"],
    );
    assert_eq!(refused.retry_after.as_deref(), Some("1"), "{refused:?}");

    // Another tenant takes the node's second slot.
    let other = tokio::spawn(put_plugin_at(addr, "other", "greeter", slow_greeter()));
    wait_for_running_compiles(addr, 2).await;
    // A third finds the node full and its queue empty-sized: 503.
    let busy = put_plugin(&server, "third", "echo", wasm_bytes("echo")).await;
    assert_refused(&busy, 503, "compile_busy", &["plugins.compile_queue"]);
    assert_eq!(busy.retry_after.as_deref(), Some("5"), "{busy:?}");

    let refusals = |tenant: &str, reason: &str| {
        format!(r#"switchboard_plugin_refusals_total{{tenant="{tenant}",reason="{reason}"}}"#)
    };
    assert_eq!(
        metric(addr, &refusals("default", "tenant_compile_queue")).await,
        1.0
    );
    assert_eq!(
        metric(addr, &refusals("third", "node_compile_queue")).await,
        1.0
    );

    // Newer uploads of the same plugins cancel both slow compiles.
    for tenant in ["default", "other"] {
        let answer = put_plugin(&server, tenant, "greeter", wasm_bytes("greeter-v1")).await;
        assert_eq!(answer.status, 200, "{tenant}: {answer:?}");
    }
    for cancelled in [slow, other] {
        assert_eq!(cancelled.await.expect("joined").status, 409);
    }
    wait_for_no_workers(std::process::id()).await;
    let answer = put_plugin(&server, "third", "echo", wasm_bytes("echo")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn a_compile_that_waits_too_long_for_a_slot_is_refused() {
    let server = TestServer::start(&config(
        "[plugins]\ntiered_swaps = false\ncompile_concurrency = 1\ncompile_wait = \"300ms\"\n",
        &[
            tenant("default", "", &greeter_tables("")),
            tenant("other", "", ""),
        ],
    ))
    .await;
    let addr = server.addr;
    let slow = tokio::spawn(put_plugin_at(addr, "default", "greeter", slow_greeter()));
    wait_for_running_compiles(addr, 1).await;
    let started = Instant::now();
    let waited = put_plugin(&server, "other", "echo", wasm_bytes("echo")).await;
    assert_refused(
        &waited,
        503,
        "compile_busy",
        &["plugins.compile_wait", "300ms"],
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let series = r#"switchboard_plugin_refusals_total{tenant="other",reason="compile_wait"}"#;
    assert_eq!(metric(addr, series).await, 1.0);
    let newer = put_plugin(&server, "default", "greeter", wasm_bytes("greeter-v1")).await;
    assert_eq!(newer.status, 200, "{newer:?}");
    assert_eq!(slow.await.expect("joined").status, 409);
}

#[tokio::test]
async fn what_a_tenant_and_the_node_hold_is_bounded_before_compiling() {
    // Room for either greeter version (the larger is swapped in below) and echo.
    let greeter = wasm_bytes("greeter-v1")
        .len()
        .max(wasm_bytes("greeter-v2").len());
    let echo = wasm_bytes("echo").len();
    let server = TestServer::start(&config(
        "[plugins]\nmax_plugins = 3\n",
        &[
            tenant(
                "default",
                "",
                &greeter_tables(&format!(
                    "[tenants.plugin_limits]\nmax_plugins = 2\nmax_plugin_bytes = {}\n",
                    greeter + echo + 100
                )),
            ),
            tenant("other", "", ""),
        ],
    ))
    .await;
    let addr = server.addr;
    let answer = put_plugin(&server, "default", "echo", wasm_bytes("echo")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // A third plugin is one too many for the tenant; nothing is compiled for it.
    let compiles =
        r#"switchboard_plugin_compiles_total{tenant="default",tier="baseline",outcome="ok"}"#;
    let before = metric(addr, compiles).await;
    let third = put_plugin(&server, "default", "broadcast", wasm_bytes("broadcast")).await;
    assert_refused(
        &third,
        409,
        "plugin_limit",
        &["plugin_limits.max_plugins", "2"],
    );
    assert_eq!(metric(addr, compiles).await, before, "nothing compiled");
    // A new version of a plugin it has replaces it: allowed, if its bytes fit.
    let answer = put_plugin(&server, "default", "greeter", wasm_bytes("greeter-v2")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut bigger = wasm_bytes("echo");
    bigger.extend_from_slice(&[0, 0x81, 0x01, 0]);
    bigger.extend_from_slice(&[0; 128]);
    let answer = put_plugin(&server, "default", "echo", bigger).await;
    assert_refused(
        &answer,
        409,
        "plugin_limit",
        &["plugin_limits.max_plugin_bytes"],
    );

    // The node holds 3: the other tenant may add one, not two.
    let answer = put_plugin(&server, "other", "echo", wasm_bytes("echo")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = put_plugin(&server, "other", "broadcast", wasm_bytes("broadcast")).await;
    assert_refused(&answer, 409, "plugin_limit", &["plugins.max_plugins", "3"]);

    let refusals = |tenant: &str, reason: &str| {
        format!(r#"switchboard_plugin_refusals_total{{tenant="{tenant}",reason="{reason}"}}"#)
    };
    assert_eq!(metric(addr, &refusals("default", "max_plugins")).await, 1.0);
    assert_eq!(
        metric(addr, &refusals("default", "max_plugin_bytes")).await,
        1.0
    );
    assert_eq!(
        metric(addr, &refusals("other", "node_max_plugins")).await,
        1.0
    );
    assert_eq!(
        metric(addr, r#"switchboard_plugins{tenant="default"}"#).await,
        2.0
    );
    assert_eq!(
        metric(addr, r#"switchboard_plugin_bytes{tenant="default"}"#).await,
        (wasm_bytes("greeter-v2").len() + echo) as f64
    );
    let mut client = Client::connect(&server, "default", "alice").await;
    let reply = client.request(json!({"type": "echo", "payload": 1})).await;
    assert_eq!(reply["payload"], 1);
}

#[tokio::test]
async fn an_upload_over_the_upload_limit_is_413_and_the_old_version_serves_on() {
    let server = TestServer::start(&config(
        "[plugins]\nmax_upload_bytes = 4096\n",
        &[tenant("default", "", &greeter_tables(""))],
    ))
    .await;
    let mut client = Client::connect(&server, "default", "alice").await;
    let (status, body) =
        crate::support::put_plugin(&server, "greeter", Some(&api_key("default")), vec![0; 8192])
            .await;
    assert_eq!(status, 413, "{body}");
    assert_error_body(&body, "an upload over the limit");
    assert_eq!(body["error"], "payload_too_large", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains("plugins.max_upload_bytes")),
        "{body}"
    );
    assert_eq!(greet_version(&mut client).await, 1);
}

/// `switchboard check` loads every configured plugin as `serve` would: a config it passes
/// does not fail `serve` on a missing, garbage or clashing plugin.
#[test]
fn the_check_command_loads_and_links_every_configured_plugin() {
    let check = |tables: &str| {
        let file = crate::support::temp_file(
            "check",
            &config("", &[tenant("default", "protocol = \"raw\"", tables)]),
        );
        let run = std::process::Command::new(crate::support::binary())
            .args(["check", "--config"])
            .arg(&file.0)
            .output()
            .expect("runs");
        (
            run.status.success(),
            String::from_utf8_lossy(&run.stdout).into_owned(),
            String::from_utf8_lossy(&run.stderr).into_owned(),
        )
    };
    let plugin = |path: &str| format!("[[tenants.plugins]]\npath = \"{path}\"\n");

    let (ok, out, err) = check(&plugin(&crate::plugins::wasm("raw-echo")));
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok (1 tenant, 1 plugin loaded)"), "{out}");

    let (ok, _, err) = check(&plugin("/nonexistent/plugin.wasm"));
    assert!(!ok);
    assert!(
        err.contains("tenants[0].plugins[0]") && err.contains("cannot read"),
        "{err}"
    );

    let garbage = crate::support::temp_file("check-garbage", "not wasm at all");
    let (ok, _, err) = check(&plugin(&garbage.0.display().to_string()));
    assert!(!ok);
    assert!(
        err.contains("tenants[0].plugins[0]") && err.contains("not a Switchboard plugin component"),
        "{err}"
    );

    // Each loads alone; together they clash (two frame plugins in one tenant).
    let both = format!(
        "{}{}",
        plugin(&crate::plugins::wasm("raw-echo")),
        plugin(&crate::plugins::wasm("raw-relay"))
    );
    let (ok, _, err) = check(&both);
    assert!(!ok);
    assert!(
        err.contains("tenants[0].plugins") && err.contains("raw-handler"),
        "{err}"
    );
}
