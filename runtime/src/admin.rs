//! The HTTP API on the main listener: `POST /api/publish` (docs/protocol.md, "Publish API")
//! and the plugin API (`/api/tenants/{tenant}/plugins`, "Plugin API"), both authenticated with
//! the tenant's API key.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::value::RawValue;

use crate::backplane::{Publish, RoomKey};
use crate::node::Node;
use crate::plugins::compile::{CompileError, Purpose};
use crate::plugins::pool::{LoadError, LoadedPlugin};
use crate::plugins::{PluginLimit, Plugins, SwapError, artifact};
use crate::protocol::{check_channel, check_type};
use crate::server::body::{self, BodyError, BodyLimit};
use crate::server::response::{json_error, json_ok};
use crate::tenant::Tenant;

/// Request bodies larger than this are refused before parsing.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// `POST /api/publish`: delivers a sequenced message to every subscriber of a channel.
pub async fn publish(node: &Arc<Node>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let bad_request = |message: &str| json_error(StatusCode::BAD_REQUEST, "bad_request", message);
    let (parts, body) = request.into_parts();
    let body = match read_publish_body(node, &parts.headers, body).await {
        Ok(body) => body,
        Err(refusal) => return *refusal,
    };
    // Fields stay raw JSON so the payload is forwarded byte for byte (key order, big numbers).
    let Ok(mut fields) = serde_json::from_slice::<HashMap<String, &RawValue>>(&body) else {
        return bad_request("the body must be a JSON object");
    };
    let Some(tenant_name) = fields.remove("tenant").and_then(json_string) else {
        return bad_request("`tenant` (a string) is required");
    };
    let Some(tenant) = node.tenants.get(&tenant_name).cloned() else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "unknown tenant");
    };
    if let Err(refusal) = authorize(&tenant, &parts.headers) {
        return *refusal;
    }
    let (channel, msg_type, payload) = match publish_fields(&mut fields) {
        Ok(fields) => fields,
        Err(message) => return bad_request(&message),
    };
    if payload.as_ref().map_or(0, String::len) > tenant.limits.max_message_bytes {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the payload is over the tenant's message size limit",
        );
    }
    let room = RoomKey::new(&tenant.name, &channel);
    let message = Publish {
        msg_type: &msg_type,
        payload: payload.as_deref(),
        except: None,
        history: &tenant.history,
    };
    match node.backplane.publish(&room, message).await {
        Ok(seq) => {
            tenant
                .metrics
                .publishes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            json_ok(StatusCode::OK, format!(r#"{{"seq":{seq}}}"#))
        }
        Err(error) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &error.to_string(),
        ),
    }
}

/// Reads a publish body. The tenant is named in the body, so the key is checked after it; but
/// a key that is no tenant's can never succeed, so such a request gets only the tight bounds of
/// `http.unauthenticated_*` and, past them, the 401 it would get anyway.
async fn read_publish_body(
    node: &Node,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<Vec<u8>, Box<Response<Full<Bytes>>>> {
    let http = &node.config.http;
    let known = presented_key(headers).is_some_and(|presented| {
        node.tenants.all().iter().any(|tenant| {
            tenant
                .api_key
                .as_deref()
                .is_some_and(|key| constant_time_eq(presented.as_bytes(), key.as_bytes()))
        })
    });
    let limit = if known {
        BodyLimit::new(MAX_BODY_BYTES, http)
    } else {
        BodyLimit::unauthenticated(http)
    };
    body::read(&node.http.bodies, headers, body, limit)
        .await
        .map_err(|error| {
            Box::new(match error {
                BodyError::TooLarge | BodyError::Timeout if !known => body::closing(unauthorized()),
                error => error.response("the body is over 2 MiB", limit.timeout),
            })
        })
}

/// The text of a JSON string; `None` for any other JSON value.
fn json_string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

fn publish_fields(
    fields: &mut HashMap<String, &RawValue>,
) -> Result<(String, String, Option<String>), String> {
    let channel = fields
        .remove("channel")
        .and_then(json_string)
        .ok_or("`channel` (a string) is required")?;
    check_channel(&channel).map_err(|error| error.to_string())?;
    let msg_type = fields
        .remove("type")
        .and_then(json_string)
        .ok_or("`type` (a string) is required")?;
    check_type(&msg_type).map_err(|error| error.to_string())?;
    let payload = fields
        .remove("payload")
        .map(|raw| raw.get().to_owned())
        .filter(|raw| raw != "null");
    Ok((channel, msg_type, payload))
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Largest plugin upload.
const MAX_PLUGIN_BYTES: usize = 32 * 1024 * 1024;

/// The key of `Authorization: Bearer <key>`, if any.
fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
}

/// The 401 for a missing or wrong API key.
fn unauthorized() -> Response<Full<Bytes>> {
    json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong API key for this tenant",
    )
}

/// Checks `Authorization: Bearer <tenant api key>`; the 401 to send otherwise.
fn authorize(tenant: &Tenant, headers: &http::HeaderMap) -> Result<(), Box<Response<Full<Bytes>>>> {
    match (presented_key(headers), tenant.api_key.as_deref()) {
        (Some(presented), Some(expected))
            if constant_time_eq(presented.as_bytes(), expected.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(Box::new(unauthorized())),
    }
}

/// What the plugin API reports about a loaded plugin.
fn plugin_json(plugin: &LoadedPlugin) -> serde_json::Value {
    serde_json::json!({
        "name": plugin.manifest.name,
        "version": plugin.manifest.version,
        "types": plugin.manifest.handles,
        "sha256": plugin.sha256,
        "path": plugin.path.display().to_string(),
        "loadedAtMs": plugin.loaded_at_ms,
        "compileMs": plugin.load_time.compile.as_secs_f64() * 1000.0,
        "loadMs": plugin.load_time.total.as_secs_f64() * 1000.0,
        "tier": plugin.tier.as_str(),
        "calls": plugin.calls.load(std::sync::atomic::Ordering::Relaxed),
        "errors": plugin.errors.load(std::sync::atomic::Ordering::Relaxed),
        "yields": plugin.yields.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// `/api/tenants/{tenant}/plugins[/{name}]`: list (GET) and upload (PUT) a tenant's plugins.
pub async fn plugins(
    node: &Arc<Node>,
    request: Request<Incoming>,
    rest: &str,
) -> Response<Full<Bytes>> {
    let mut parts = rest.splitn(3, '/');
    let (Some(tenant_name), Some("plugins"), name) = (parts.next(), parts.next(), parts.next())
    else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no such path");
    };
    let Some(tenant) = node.tenants.get(tenant_name).cloned() else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "unknown tenant");
    };
    if let Err(refusal) = authorize(&tenant, request.headers()) {
        return *refusal;
    }
    match (request.method().clone(), name) {
        (http::Method::GET, None | Some("")) => {
            let routes = node.plugins.routes(&tenant.name).unwrap_or_default();
            let list: Vec<_> = routes
                .plugins
                .iter()
                .map(|plugin| plugin_json(plugin))
                .collect();
            json_ok(StatusCode::OK, serde_json::Value::from(list).to_string())
        }
        (http::Method::PUT, Some(name)) if !name.is_empty() && !name.contains('/') => {
            let name = name.to_owned();
            // A tenant at its plugin count is refused before its body is read.
            if let Err(limit) = node.plugins.room_for(&tenant, Some(&name), 0) {
                return limit_refusal(node, &tenant, &limit);
            }
            let (parts, body) = request.into_parts();
            let limit = BodyLimit::new(MAX_PLUGIN_BYTES, &node.config.http);
            let body = match body::read(&node.http.bodies, &parts.headers, body, limit).await {
                Ok(body) => body,
                Err(error) => {
                    return error.response("a plugin may be at most 32 MiB", limit.timeout);
                }
            };
            upload(node, &tenant, &name, body).await
        }
        _ => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET /api/tenants/{tenant}/plugins or PUT /api/tenants/{tenant}/plugins/{name}",
        ),
    }
}

/// The answer to an upload that would pass a bound on the plugins held.
fn limit_refusal(node: &Node, tenant: &Tenant, limit: &PluginLimit) -> Response<Full<Bytes>> {
    node.plugins.compiler.refused(&tenant.name, limit.label());
    tracing::warn!(tenant = %tenant.name, %limit, "plugin upload refused");
    json_error(StatusCode::CONFLICT, "plugin_limit", &limit.to_string())
}

/// The answer to an upload whose compile did not produce a build.
fn compile_refusal(
    node: &Node,
    tenant: &Tenant,
    error: &CompileError,
    message: &str,
) -> Response<Full<Bytes>> {
    let (status, code, retry_after) = match error {
        CompileError::TenantBusy(_) => (StatusCode::TOO_MANY_REQUESTS, "compile_busy", Some(1)),
        CompileError::NodeBusy(_) | CompileError::WaitTimeout(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "compile_busy", Some(5))
        }
        CompileError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "draining", Some(5)),
        CompileError::Superseded => (StatusCode::CONFLICT, "superseded", None),
        CompileError::TimeLimit(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "compile_time_limit", None)
        }
        CompileError::MemoryLimit(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "compile_memory_limit",
            None,
        ),
        CompileError::Invalid(_) | CompileError::Crashed(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin", None)
        }
        CompileError::Worker { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
    };
    // A version that was tried and did not load is a load failure; a refusal to try, a newer
    // upload, or the shutdown is not.
    if !error.refused() && !matches!(error, CompileError::Superseded | CompileError::ShuttingDown) {
        node.metrics.plugin_load_failure(&tenant.name);
    }
    tracing::warn!(tenant = %tenant.name, %message, "plugin upload refused");
    let mut response = json_error(status, code, message);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    response
}

/// Loads an uploaded version off the hot path, then swaps it in; a failure leaves the old
/// version serving. A newer upload of the same plugin cancels this one's compile.
async fn upload(
    node: &Arc<Node>,
    tenant: &Arc<Tenant>,
    name: &str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    if let Err(limit) = node.plugins.room_for(tenant, Some(name), body.len()) {
        return limit_refusal(node, tenant, &limit);
    }
    let config = node
        .config
        .tenants
        .iter()
        .find(|candidate| *candidate.name == *tenant.name)
        .and_then(|candidate| {
            candidate
                .plugins
                .iter()
                .find(|plugin| plugin.path.file_stem().is_some_and(|stem| stem == name))
        })
        .map(|plugin| plugin.config.clone())
        .unwrap_or_default();
    let source = std::path::PathBuf::from(format!("upload:{name}"));
    // The baseline compiler puts the new version in place quickly; the optimized build follows.
    // An artifact is optimized code already, so it needs no copy for a background build (nor
    // does a build when swaps are not tiered).
    let kept = (node.config.tiered_swaps && !artifact::is_artifact(&body))
        .then(|| (body.clone(), config.clone()));
    let tier = Plugins::swap_tier(&node.config);
    let purpose = Purpose::Swap(Some(name.to_owned()));
    let loaded = match Plugins::load_for(node, tenant, source, body, config, tier, purpose).await {
        Ok(loaded) => loaded,
        Err(LoadError::Compile { path, error }) => {
            return compile_refusal(node, tenant, &error, &format!("{path}: {error}"));
        }
        Err(error) => {
            node.metrics.plugin_load_failure(&tenant.name);
            tracing::warn!(tenant = %tenant.name, %error, "plugin upload refused");
            return json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_plugin",
                &error.to_string(),
            );
        }
    };
    if loaded.name() != name {
        node.metrics.plugin_load_failure(&tenant.name);
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!(
                "the component describes itself as `{}`, not `{name}`",
                loaded.name()
            ),
        );
    }
    match node.plugins.replace(node, &tenant.name, loaded.clone()) {
        Ok(()) => {
            tracing::info!(
                tenant = %tenant.name,
                plugin = name,
                version = %loaded.manifest.version,
                compile_ms = loaded.load_time.compile.as_millis() as u64,
                load_ms = loaded.load_time.total.as_millis() as u64,
                tier = loaded.tier.as_str(),
                "plugin swapped in"
            );
            if let Some((bytes, config)) = kept {
                Plugins::optimize_later(node, tenant, &loaded, bytes, config);
            }
            json_ok(StatusCode::OK, plugin_json(&loaded).to_string())
        }
        Err(SwapError::Limit(limit)) => limit_refusal(node, tenant, &limit),
        Err(SwapError::Conflict(message)) => {
            node.metrics.plugin_load_failure(&tenant.name);
            json_error(StatusCode::CONFLICT, "conflict", &message)
        }
    }
}
