//! `switchboard plugins list|deploy|rollback|history|delete` and `switchboard tenants
//! list|get|apply|delete` (`tenants`): the operator's commands, thin clients of a node's
//! plugin API (`/api/tenants/{tenant}/plugins`) and tenant API (`/api/tenants`) over plain
//! HTTP/1.1. What the API answers is printed readably; a refusal prints the API's error code
//! and message. Exit codes: 0 done, 1 the node refused, 2 the node could not be asked (bad
//! URL, unreachable, not the API). Part of the binary, not of the library.

pub mod tenants;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Longest wait for an answer: a deploy compiles first (`plugin_limits.compile_timeout` is 60 s
/// by default), and may wait for a compile slot (`plugins.compile_wait`, 30 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the node is and who asks.
pub struct Target {
    /// `http://host:port` of a node (or of the load balancer in front of the nodes).
    pub url: String,
    /// The tenant whose plugins these are (unused by the tenant commands).
    pub tenant: String,
    /// The tenant's API key, or the operator's.
    pub key: Option<String>,
}

/// What went wrong, and the exit code it gets.
pub enum Failure {
    /// The node answered with an API error.
    Refused(String),
    /// The node could not be asked, or did not answer like the API.
    Unreachable(String),
}

/// One `plugins` command.
pub enum Action<'a> {
    /// List the tenant's plugins.
    List,
    /// Upload a component or artifact as plugin `name`.
    Deploy { name: &'a str, file: &'a Path },
    /// Take plugin `name` out.
    Delete { name: &'a str },
    /// Serve an earlier kept version of `name` (`to`: its sha256; none: the one before).
    Rollback { name: &'a str, to: Option<&'a str> },
    /// The kept versions of `name`.
    History { name: &'a str },
}

/// Runs one plugin command against `target` and prints its outcome.
pub fn run(target: &Target, action: Action<'_>) -> ExitCode {
    finish(act(target, action))
}

/// Runs a command's request and prints its outcome; the exit code.
pub fn finish(work: impl Future<Output = Result<String, Failure>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(work) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Unreachable(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn act(target: &Target, action: Action<'_>) -> Result<String, Failure> {
    let base = format!("/api/tenants/{}/plugins", target.tenant);
    match action {
        Action::List => {
            let list = call(target, "GET", &base, Vec::new()).await?;
            let plugins = list
                .as_array()
                .ok_or_else(|| Failure::Unreachable(format!("not a plugin list: {list}")))?;
            Ok(table(plugins))
        }
        Action::Deploy { name, file } => {
            let body = std::fs::read(file).map_err(|error| {
                Failure::Unreachable(format!("cannot read {}: {error}", file.display()))
            })?;
            let plugin = call(target, "PUT", &format!("{base}/{name}"), body).await?;
            Ok(format!("deployed {}", describe(&plugin)))
        }
        Action::Delete { name } => {
            let plugin = call(target, "DELETE", &format!("{base}/{name}"), Vec::new()).await?;
            Ok(format!("deleted {}", describe(&plugin)))
        }
        Action::Rollback { name, to } => {
            let query = to.map(|to| format!("?to={to}")).unwrap_or_default();
            let path = format!("{base}/{name}/rollback{query}");
            let plugin = call(target, "POST", &path, Vec::new()).await?;
            Ok(format!("rolled back to {}", describe(&plugin)))
        }
        Action::History { name } => {
            let history =
                call(target, "GET", &format!("{base}/{name}/history"), Vec::new()).await?;
            Ok(history_table(&history))
        }
    }
}

/// The kept versions as aligned columns, the serving one marked with `*`.
fn history_table(history: &Value) -> String {
    let mut rows = vec![[
        String::new(),
        "VERSION".to_owned(),
        "SHA256".to_owned(),
        "BYTES".to_owned(),
        "DEPLOYED_AT_MS".to_owned(),
    ]];
    for version in history["versions"].as_array().into_iter().flatten() {
        rows.push([
            if version["active"] == Value::Bool(true) {
                "*".to_owned()
            } else {
                String::new()
            },
            text(&version["version"]),
            text(&version["sha256"]),
            text(&version["bytes"]),
            text(&version["deployedAtMs"]),
        ]);
    }
    let mut out = columns(&rows);
    if history["deleted"] == Value::Bool(true) {
        out.push_str("\n(deleted: no version serves; `rollback` serves the one that served before the delete)");
    } else if rows.len() == 1 {
        out.push_str("\n(no kept versions: the configured file decides this plugin)");
    }
    out
}

/// How many of the reporting nodes serve this node's version: `3/3`, `2/3 (1 error)`, or
/// `-` for a plugin its file decides.
fn nodes_column(plugin: &Value) -> String {
    let Some(nodes) = plugin["nodes"].as_array().filter(|nodes| !nodes.is_empty()) else {
        return "-".to_owned();
    };
    let same = nodes
        .iter()
        .filter(|node| node["sha256"] == plugin["sha256"])
        .count();
    let errors = nodes.iter().filter(|node| !node["error"].is_null()).count();
    match errors {
        0 => format!("{same}/{}", nodes.len()),
        errors => format!(
            "{same}/{} ({errors} error{})",
            nodes.len(),
            if errors == 1 { "" } else { "s" }
        ),
    }
}

/// One request; the JSON answer of a 2xx, or the API's error as a `Refused`.
pub async fn call(
    target: &Target,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Value, Failure> {
    let uri: hyper::Uri = target
        .url
        .parse()
        .map_err(|error| Failure::Unreachable(format!("`{}` is not a URL: {error}", target.url)))?;
    if uri.scheme_str() != Some("http") {
        return Err(Failure::Unreachable(format!(
            "`{}` is not an http:// URL (the commands speak plain HTTP to a node or its load \
             balancer; reach a TLS-only front door through a tunnel)",
            target.url
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| Failure::Unreachable(format!("`{}` names no host", target.url)))?;
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let unreachable = |error: &dyn std::fmt::Display| {
        Failure::Unreachable(format!("cannot reach {}: {error}", target.url))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address))
        .await
        .map_err(|_| unreachable(&"timed out connecting"))?
        .map_err(|error| unreachable(&error))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| unreachable(&error))?;
    let driver = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority.as_str());
    if let Some(key) = &target.key {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|error| Failure::Unreachable(format!("cannot build the request: {error}")))?;
    let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    })
    .await;
    driver.abort();
    let (status, body) = answered
        .map_err(|_| unreachable(&"no answer in time"))?
        .map_err(|error| unreachable(&error))?;
    let value: Value = serde_json::from_slice(&body).map_err(|_| {
        Failure::Unreachable(format!(
            "{} answered {status} without the API's JSON: {}",
            target.url,
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })?;
    if status.is_success() {
        return Ok(value);
    }
    let code = value["error"].as_str().unwrap_or("error");
    let message = value["message"].as_str().unwrap_or("");
    Err(Failure::Refused(format!(
        "{} {code}: {message}",
        status.as_u16()
    )))
}

/// `greeter 2.0.0 (optimized, types greet)`.
fn describe(plugin: &Value) -> String {
    let types: Vec<&str> = plugin["types"]
        .as_array()
        .map(|types| types.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "{} {} ({}, types {})",
        text(&plugin["name"]),
        text(&plugin["version"]),
        text(&plugin["tier"]),
        types.join(" ")
    )
}

/// The plugin list as aligned columns.
fn table(plugins: &[Value]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "VERSION".to_owned(),
        "SOURCE".to_owned(),
        "TIER".to_owned(),
        "NODES".to_owned(),
        "CALLS".to_owned(),
        "ERRORS".to_owned(),
        "SHA256".to_owned(),
        "TYPES".to_owned(),
    ]];
    for plugin in plugins {
        let types: Vec<&str> = plugin["types"]
            .as_array()
            .map(|types| types.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let sha = text(&plugin["sha256"]);
        rows.push([
            text(&plugin["name"]),
            text(&plugin["version"]),
            text(&plugin["source"]),
            text(&plugin["tier"]),
            nodes_column(plugin),
            text(&plugin["calls"]),
            text(&plugin["errors"]),
            sha.chars().take(12).collect(),
            types.join(" "),
        ]);
    }
    columns(&rows)
}

/// Rows of cells as aligned columns.
pub fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON value as plain text (a string without its quotes).
pub fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}
