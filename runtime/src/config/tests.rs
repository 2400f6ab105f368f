//! Config parsing, defaults and error messages that name the file and the key.

use std::path::Path;
use std::time::Duration;

use super::{ConfigError, JwtKey, LogFormat, parse};

fn parse_ok(text: &str) -> super::Config {
    parse(text, "test.toml", Path::new(".")).unwrap_or_else(|error| panic!("{error}"))
}

/// Parses `text` and compares the error lines with `expect`.
fn check_errors(text: &str, expect: &[&str]) {
    let error = parse(text, "test.toml", Path::new(".")).expect_err("should be invalid");
    assert_eq!(error.lines(), expect, "for:\n{text}");
}

const MINIMAL: &str = r#"
[[tenants]]
name = "default"
[tenants.jwt]
secret = "s"
"#;

#[test]
fn defaults() {
    let config = parse_ok(MINIMAL);
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(config.heartbeat_timeout, Duration::from_secs(10));
    assert_eq!(config.drain_timeout, Duration::from_secs(10));
    assert_eq!(config.log.format, LogFormat::Text);
    let tenant = &config.tenants[0];
    assert_eq!(tenant.limits.max_message_bytes, 1024 * 1024);
    assert_eq!(tenant.limits.messages_per_second, 100.0);
    assert_eq!(tenant.limits.burst, 200.0);
    assert_eq!(tenant.jwt.algorithms, ["HS256", "HS384", "HS512"]);
    assert_eq!(tenant.jwt.leeway, Duration::from_secs(5));
    assert!(tenant.allowed_origins.is_empty());
    assert!(matches!(&tenant.jwt.key, JwtKey::Secret(secret) if secret == b"s"));
}

#[test]
fn durations_as_text_or_seconds() {
    let config = parse_ok(&format!(
        "[heartbeat]\ninterval = \"250ms\"\ntimeout = 1.5\n[shutdown]\ndrain_timeout = 3\n{MINIMAL}"
    ));
    assert_eq!(config.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(config.heartbeat_timeout, Duration::from_millis(1500));
    assert_eq!(config.drain_timeout, Duration::from_secs(3));
}

#[test]
fn secrets_from_the_environment() {
    let name = "SWITCHBOARD_CONFIG_TEST_SECRET";
    let text = format!(
        "[[tenants]]\nname = \"default\"\napi_key = {{ env = \"{name}\" }}\n[tenants.jwt]\nsecret = {{ env = \"{name}\" }}\n"
    );
    check_errors(
        &text,
        &[
            "test.toml: tenants[0].api_key: environment variable `SWITCHBOARD_CONFIG_TEST_SECRET` is not set or not UTF-8",
            "test.toml: tenants[0].jwt.secret: environment variable `SWITCHBOARD_CONFIG_TEST_SECRET` is not set or not UTF-8",
        ],
    );
}

#[test]
fn every_error_names_its_key() {
    let text = r#"
listen = "nowhere"
max_connections = -1
[heartbeat]
interval = "soon"
timeout = 0
[[tenants]]
name = "bad name"
allowed_origins = ["https://ok.example", "https://slash.example/"]
[tenants.jwt]
secret = "s"
algorithms = ["RS256"]
[tenants.limits]
max_message_bytes = 0
burst = 0.5
[[tenants]]
name = "two"
[tenants.jwt]
secret = "s"
jwks_file = "x.json"
"#;
    check_errors(
        text,
        &[
            "test.toml: listen: `nowhere` is not an address such as 127.0.0.1:8080",
            "test.toml: heartbeat.interval: not a duration: `soon`: expected number at 0 (write e.g. \"250ms\" or \"30s\")",
            "test.toml: heartbeat.timeout: must be greater than zero",
            "test.toml: max_connections: must not be negative",
            "test.toml: tenants[0].name: `bad name` is not a tenant name (1..64 of A-Z a-z 0-9 - _)",
            "test.toml: tenants[0].allowed_origins[1]: `https://slash.example/` is not an origin such as https://example.com",
            "test.toml: tenants[0].jwt.algorithms[0]: `RS256` does not fit this key; one of HS256, HS384, HS512",
            "test.toml: tenants[0].limits.burst: must be at least 1",
            "test.toml: tenants[0].limits.max_message_bytes: must be positive",
            "test.toml: tenants[1].jwt: set exactly one of `secret`, `public_key_file`, `public_key_pem`, `jwks_file`, `jwks`",
        ],
    );
}

#[test]
fn missing_tenants_and_duplicates() {
    check_errors("", &["test.toml: tenants: at least one tenant is required"]);
    check_errors(
        &format!("{MINIMAL}{MINIMAL}"),
        &["test.toml: tenants[1].name: tenant `default` is defined twice"],
    );
}

#[test]
fn unreadable_key_files_are_named() {
    check_errors(
        "[[tenants]]\nname = \"t\"\n[tenants.jwt]\npublic_key_file = \"no/such.pem\"\n",
        &[
            "test.toml: tenants[0].jwt.public_key_file: cannot read ./no/such.pem: No such file or directory (os error 2)",
        ],
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_parse_errors_with_the_key() {
    let error = parse(
        &format!("lisen = \"x\"\n{MINIMAL}"),
        "test.toml",
        Path::new("."),
    )
    .expect_err("typo");
    let ConfigError::Parse { message, .. } = &error else {
        panic!("expected a parse error, got {error}");
    };
    assert!(message.contains("lisen"), "{message}");
    assert!(error.to_string().starts_with("test.toml: "), "{error}");

    let error = parse(
        "[[tenants]]\nname = 5\n[tenants.jwt]\nsecret = \"s\"\n",
        "test.toml",
        Path::new("."),
    )
    .expect_err("type");
    assert!(error.to_string().contains("name"), "{error}");
}

#[test]
fn null_cannot_be_an_allowed_origin() {
    check_errors(
        "[[tenants]]\nname = \"t\"\nallowed_origins = [\"null\"]\n[tenants.jwt]\nsecret = \"s\"\n",
        &[
            "test.toml: tenants[0].allowed_origins[0]: `null` cannot be allowed: every opaque origin sends it",
        ],
    );
}

#[test]
fn the_backplane_is_memory_unless_redis_is_named() {
    assert_eq!(parse_ok(MINIMAL).backplane, super::BackplaneConfig::Memory);
    let config = parse_ok(&format!("backplane = \"redis\"\n{MINIMAL}"));
    let super::BackplaneConfig::Redis(redis) = config.backplane else {
        panic!("not redis");
    };
    assert_eq!(redis.url, "redis://127.0.0.1:6379");
    assert_eq!(redis.key_prefix, "switchboard");
    assert!(redis.cluster_nodes.is_empty());
    assert_eq!(redis.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(redis.node_ttl, Duration::from_secs(15));
    assert_eq!(redis.probe_interval, Duration::from_secs(1));
    assert_eq!(redis.command_timeout, Duration::from_secs(2));
    assert_eq!(redis.reconnect_max_delay, Duration::from_millis(500));

    let config = parse_ok(&format!(
        "backplane = \"redis\"\n[redis]\ncluster_nodes = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\nkey_prefix = \"app1\"\nnode_ttl = \"3s\"\nheartbeat_interval = \"1s\"\nreconnect_max_delay = \"2s\"\n{MINIMAL}"
    ));
    let super::BackplaneConfig::Redis(redis) = config.backplane else {
        panic!("not redis");
    };
    assert_eq!(redis.cluster_nodes.len(), 2);
    assert_eq!(redis.key_prefix, "app1");
    assert_eq!(redis.reconnect_max_delay, Duration::from_secs(2));
}

#[test]
fn redis_settings_are_checked() {
    check_errors(
        &format!("backplane = \"kafka\"\n{MINIMAL}"),
        &["test.toml: backplane: `kafka` is not a backplane (\"memory\" or \"redis\")"],
    );
    check_errors(
        &format!("[redis]\nurl = \"redis://h:1\"\n{MINIMAL}"),
        &["test.toml: redis: is set but `backplane` is not \"redis\""],
    );
    check_errors(
        &format!(
            "backplane = \"redis\"\n[redis]\nurl = \"http://h:1\"\ncluster_nodes = [\"h:2\"]\nkey_prefix = \"a{{b}}\"\nheartbeat_interval = \"5s\"\nnode_ttl = \"6s\"\n{MINIMAL}"
        ),
        &[
            "test.toml: redis.url: `http://h:1` is not a redis:// or rediss:// URL",
            "test.toml: redis.cluster_nodes[0]: `h:2` is not a redis:// or rediss:// URL",
            "test.toml: redis.key_prefix: `a{b}` must be 1..64 bytes without `{` or `}`",
            "test.toml: redis.node_ttl: must be at least twice redis.heartbeat_interval, or live nodes expire",
        ],
    );
    check_errors(
        &format!(
            "backplane = \"redis\"\n[redis]\nurl = \"redis://h\"\nnode_ttl = \"forever\"\n{MINIMAL}"
        ),
        &[
            "test.toml: redis.node_ttl: not a duration: `forever`: expected number at 0 (write e.g. \"250ms\" or \"30s\")",
        ],
    );
    for delay in ["\"10ms\"", "\"2m\""] {
        check_errors(
            &format!("backplane = \"redis\"\n[redis]\nreconnect_max_delay = {delay}\n{MINIMAL}"),
            &[
                "test.toml: redis.reconnect_max_delay: must be from 50ms to 60s: shorter hammers Redis, longer leaves nodes unready long after it is back",
            ],
        );
    }
}

#[test]
fn the_artifact_key_is_optional_long_and_may_come_from_the_environment() {
    assert!(parse_ok(MINIMAL).artifact_key.is_none());
    let long = "k".repeat(super::MIN_ARTIFACT_KEY_BYTES);
    let config = parse_ok(&format!("[plugins]\nartifact_key = \"{long}\"\n{MINIMAL}"));
    assert_eq!(
        config.artifact_key.as_ref().map(|key| key.as_bytes()),
        Some(long.as_bytes())
    );
    assert_eq!(
        format!("{:?}", config.artifact_key),
        "Some(ArtifactKey(..))"
    );
    check_errors(
        &format!("[plugins]\nartifact_key = \"short\"\n{MINIMAL}"),
        &["test.toml: plugins.artifact_key: must be at least 32 bytes"],
    );
    check_errors(
        &format!(
            "[plugins]\nartifact_key = {{ env = \"SWITCHBOARD_TEST_UNSET_ARTIFACT_KEY\" }}\n{MINIMAL}"
        ),
        &[
            "test.toml: plugins.artifact_key: environment variable `SWITCHBOARD_TEST_UNSET_ARTIFACT_KEY` is not set or not UTF-8",
        ],
    );
}

#[test]
fn swaps_are_tiered_unless_turned_off() {
    assert!(parse_ok(MINIMAL).tiered_swaps);
    assert!(!parse_ok(&format!("[plugins]\ntiered_swaps = false\n{MINIMAL}")).tiered_swaps);
    let error = parse(
        &format!("[plugins]\ntiered_swaps = \"no\"\n{MINIMAL}"),
        "test.toml",
        Path::new("."),
    )
    .expect_err("a string is not a bool");
    assert!(error.to_string().contains("tiered_swaps"), "{error}");
}

#[test]
fn history_has_a_byte_budget_per_tenant() {
    let config = parse_ok(MINIMAL);
    assert_eq!(
        config.tenants[0].history.max_bytes,
        super::DEFAULT_HISTORY_MAX_BYTES
    );
    let config = parse_ok(&format!("{MINIMAL}[tenants.history]\nmax_bytes = 4096\n"));
    assert_eq!(config.tenants[0].history.max_bytes, 4096);
    check_errors(
        &format!("{MINIMAL}[tenants.history]\nmax_bytes = -1\n"),
        &["test.toml: tenants[0].history.max_bytes: must not be negative"],
    );
}

#[test]
fn http_bounds_have_safe_defaults() {
    assert_eq!(parse_ok(MINIMAL).http, super::HttpConfig::default());
    let http = super::HttpConfig::default();
    assert_eq!(http.header_timeout, Duration::from_secs(10));
    assert_eq!(http.max_header_bytes, 16 * 1024);
    assert_eq!(http.body_timeout, Duration::from_secs(30));
    assert_eq!(http.max_open_sockets, None);
    let config = parse_ok(&format!(
        "[http]\nheader_timeout = \"2s\"\nmax_header_bytes = 4096\nmax_uri_bytes = 1000\nwrite_timeout = 3\nbody_timeout = \"20s\"\nmax_bodies_in_flight = 8\nmax_body_bytes_in_flight = 1048576\nmax_unauthenticated_body_bytes = 1024\nunauthenticated_body_timeout = \"1s\"\nmax_open_sockets = 100\nreserved_files = 0\nrefusal_sockets = 2\n{MINIMAL}"
    ));
    assert_eq!(
        config.http,
        super::HttpConfig {
            header_timeout: Duration::from_secs(2),
            max_header_bytes: 4096,
            max_uri_bytes: 1000,
            write_timeout: Duration::from_secs(3),
            body_timeout: Duration::from_secs(20),
            max_bodies_in_flight: 8,
            max_body_bytes_in_flight: 1_048_576,
            max_unauthenticated_body_bytes: 1024,
            unauthenticated_body_timeout: Duration::from_secs(1),
            max_open_sockets: Some(100),
            reserved_files: 0,
            refusal_sockets: 2,
        }
    );
}

#[test]
fn http_bounds_are_checked() {
    check_errors(
        &format!(
            "[http]\nmax_header_bytes = 100\nmax_uri_bytes = 0\nbody_timeout = \"5s\"\nunauthenticated_body_timeout = \"6s\"\nmax_bodies_in_flight = -1\nmax_open_sockets = 0\nreserved_files = -1\nrefusal_sockets = 0\nheader_timeout = 0\n{MINIMAL}"
        ),
        &[
            "test.toml: http.max_header_bytes: must be 1024..1048576",
            "test.toml: http.unauthenticated_body_timeout: must not be longer than http.body_timeout",
            "test.toml: http.header_timeout: must be greater than zero",
            "test.toml: http.max_uri_bytes: must be positive",
            "test.toml: http.max_bodies_in_flight: must be positive",
            "test.toml: http.max_open_sockets: must be positive",
            "test.toml: http.reserved_files: must not be negative",
            "test.toml: http.refusal_sockets: must be positive",
        ],
    );
    let error = parse(
        &format!("[http]\nmax_body_bytes = 1\n{MINIMAL}"),
        "test.toml",
        Path::new("."),
    )
    .expect_err("an unknown key");
    assert!(
        error.to_string().contains("unknown field `max_body_bytes`"),
        "{error}"
    );
}

#[test]
fn compiles_and_plugins_held_have_bounds_with_safe_defaults() {
    let config = parse_ok(MINIMAL);
    let bounds = &config.plugin_bounds;
    assert_eq!(bounds.compiler_path, None);
    assert_eq!((bounds.compile_concurrency, bounds.compile_queue), (2, 16));
    assert_eq!(bounds.compile_wait, Duration::from_secs(30));
    assert_eq!(
        (bounds.max_plugins, bounds.max_plugin_bytes),
        (256, 1024 * 1024 * 1024)
    );
    let limits = &config.tenants[0].plugin_limits;
    assert_eq!(limits.compile_timeout, Duration::from_secs(60));
    assert_eq!(limits.compile_memory_bytes, 512 * 1024 * 1024);
    assert_eq!((limits.compile_concurrency, limits.compile_queue), (1, 2));
    assert_eq!(
        (limits.max_plugins, limits.max_plugin_bytes),
        (16, 128 * 1024 * 1024)
    );

    let config = parse_ok(&format!(
        "[plugins]\ncompiler_path = \"bin/sb\"\ncompile_concurrency = 4\ncompile_queue = 0\ncompile_wait = \"500ms\"\nmax_plugins = 9\nmax_plugin_bytes = 1000\n{MINIMAL}[tenants.plugin_limits]\ncompile_timeout = \"5s\"\ncompile_memory_bytes = 67108864\ncompile_concurrency = 2\ncompile_queue = 0\nmax_plugins = 3\nmax_plugin_bytes = 100\n"
    ));
    let bounds = &config.plugin_bounds;
    assert_eq!(bounds.compiler_path.as_deref(), Some(Path::new("./bin/sb")));
    assert_eq!(
        (
            bounds.compile_concurrency,
            bounds.compile_queue,
            bounds.compile_wait
        ),
        (4, 0, Duration::from_millis(500))
    );
    assert_eq!((bounds.max_plugins, bounds.max_plugin_bytes), (9, 1000));
    let limits = &config.tenants[0].plugin_limits;
    assert_eq!(
        (limits.compile_timeout, limits.compile_memory_bytes),
        (Duration::from_secs(5), 64 * 1024 * 1024)
    );
    assert_eq!((limits.compile_concurrency, limits.compile_queue), (2, 0));
    assert_eq!((limits.max_plugins, limits.max_plugin_bytes), (3, 100));
}

#[test]
fn compile_and_plugin_bounds_are_checked() {
    check_errors(
        &format!(
            "[plugins]\ncompiler_path = \"\"\ncompile_concurrency = 0\ncompile_queue = -1\ncompile_wait = \"0s\"\nmax_plugins = 0\nmax_plugin_bytes = -5\n{MINIMAL}[tenants.plugin_limits]\ncompile_timeout = \"soon\"\ncompile_memory_bytes = 1048576\ncompile_concurrency = 0\ncompile_queue = -1\nmax_plugins = 0\nmax_plugin_bytes = 0\n"
        ),
        &[
            "test.toml: plugins.compiler_path: must not be empty",
            "test.toml: plugins.compile_concurrency: must be positive",
            "test.toml: plugins.compile_queue: must not be negative",
            "test.toml: plugins.compile_wait: must be greater than zero",
            "test.toml: plugins.max_plugins: must be positive",
            "test.toml: plugins.max_plugin_bytes: must be positive",
            "test.toml: tenants[0].plugin_limits.compile_timeout: not a duration: `soon`: expected number at 0 (write e.g. \"250ms\" or \"30s\")",
            "test.toml: tenants[0].plugin_limits.compile_memory_bytes: must be at least 67108864",
            "test.toml: tenants[0].plugin_limits.compile_concurrency: must be positive",
            "test.toml: tenants[0].plugin_limits.compile_queue: must not be negative",
            "test.toml: tenants[0].plugin_limits.max_plugins: must be positive",
            "test.toml: tenants[0].plugin_limits.max_plugin_bytes: must be positive",
        ],
    );
}

#[test]
fn configured_plugins_must_fit_the_plugin_counts() {
    let plugins =
        "[[tenants.plugins]]\npath = \"a.wasm\"\n[[tenants.plugins]]\npath = \"b.wasm\"\n";
    check_errors(
        &format!("{MINIMAL}{plugins}[tenants.plugin_limits]\nmax_plugins = 1\n"),
        &["test.toml: tenants[0].plugins: 2 plugins, more than plugin_limits.max_plugins (1)"],
    );
    check_errors(
        &format!("[plugins]\nmax_plugins = 1\n{MINIMAL}{plugins}"),
        &[
            "test.toml: plugins.max_plugins: the tenants configure 2 plugins, more than this node holds",
        ],
    );
}

#[test]
fn a_tenant_speaks_envelopes_unless_it_says_raw() {
    use super::TenantProtocol;
    assert_eq!(
        parse_ok(MINIMAL).tenants[0].protocol,
        TenantProtocol::Envelope
    );
    let raw = MINIMAL.replace(
        "name = \"default\"",
        "name = \"default\"\nprotocol = \"raw\"",
    );
    assert_eq!(parse_ok(&raw).tenants[0].protocol, TenantProtocol::Raw);
    let explicit = MINIMAL.replace(
        "name = \"default\"",
        "name = \"default\"\nprotocol = \"envelope\"",
    );
    assert_eq!(
        parse_ok(&explicit).tenants[0].protocol,
        TenantProtocol::Envelope
    );
    let bad = MINIMAL.replace(
        "name = \"default\"",
        "name = \"default\"\nprotocol = \"binary\"",
    );
    let error = parse(&bad, "test.toml", Path::new("."))
        .expect_err("an unknown protocol is refused")
        .to_string();
    assert!(
        error.contains("test.toml")
            && error.contains("line 4")
            && error.contains("unknown variant `binary`, expected `envelope` or `raw`"),
        "{error}"
    );
}

#[test]
fn the_operator_key_is_optional_and_at_least_16_bytes() {
    assert_eq!(parse_ok(MINIMAL).admin_api_key, None);
    let config = parse_ok(&format!(
        "[admin]\napi_key = \"0123456789abcdef\"\n{MINIMAL}"
    ));
    assert_eq!(config.admin_api_key.as_deref(), Some("0123456789abcdef"));
    check_errors(
        &format!("[admin]\napi_key = \"short\"\n{MINIMAL}"),
        &["test.toml: admin.api_key: must be at least 16 bytes"],
    );
}

#[test]
fn a_tenant_from_the_api_is_validated_like_the_file_and_inline_only() {
    let config = super::tenant_from_json(serde_json::json!({
        "name": "acme",
        "jwt": {"secret": "s", "leeway": "2s"},
        "limits": {"max_connections": 7},
        "presence": {"disabled": ["big*"]},
    }))
    .expect("valid");
    assert_eq!(config.name, "acme");
    assert_eq!(config.limits.max_connections, 7);
    assert_eq!(config.jwt.leeway, Duration::from_secs(2));

    let pem = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/keys/rsa_public.pem"),
    )
    .expect("the fixture");
    let config = super::tenant_from_json(serde_json::json!({
        "name": "acme", "jwt": {"public_key_pem": pem}
    }))
    .expect("an inline key");
    assert!(matches!(config.jwt.key, JwtKey::PublicKeyPem { .. }));

    let keys = |value: serde_json::Value| -> Vec<String> {
        super::tenant_from_json(value)
            .expect_err("invalid")
            .iter()
            .map(|issue| format!("{}: {}", issue.key, issue.message))
            .collect()
    };
    assert_eq!(
        keys(serde_json::json!({"name": "acme", "jwt": {"secret": {"env": "HOME"}}})),
        ["jwt.secret: give the value inline: `env` would name one node's environment"]
    );
    assert_eq!(
        keys(serde_json::json!({"name": "acme", "jwt": {"jwks_file": "x.json"}})),
        [
            "jwt: give the key inline (`public_key_pem`, `jwks`): a file path would name one node's disk"
        ]
    );
    assert_eq!(
        keys(
            serde_json::json!({"name": "acme", "jwt": {"secret": "s"}, "plugins": [{"path": "x.wasm"}]})
        ),
        ["plugins: deploy plugins with PUT /api/tenants/{tenant}/plugins/{name}"]
    );
    assert_eq!(
        keys(serde_json::json!({"name": "a b", "jwt": {"secret": "s"}, "limits": {"burst": -1}})),
        [
            "name: `a b` is not a tenant name (1..64 of A-Z a-z 0-9 - _)",
            "limits.burst: must be at least 1"
        ]
    );
}
