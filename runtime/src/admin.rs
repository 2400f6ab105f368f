//! The HTTP API on the main listener: `POST /api/publish` (docs/protocol.md, "Publish API")
//! and the plugin API (`/api/tenants/{tenant}/plugins`, "Plugin API"), both authenticated with
//! the tenant's API key.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::backplane::Publish;
use crate::ids::RoomKey;
use crate::listener::body::{self, BodyError, BodyLimit};
use crate::listener::response::json_ok;
use crate::node::Node;
use crate::plugins::compile::{CompileError, Purpose};
use crate::plugins::pool::{LoadError, LoadedPlugin};
use crate::plugins::{PluginLimit, SwapError, artifact};
use crate::protocol::api::{self, PluginInfo, PublishRequest};
use crate::tenant::Tenant;

mod error;

pub use error::ApiError;

/// Request bodies larger than this are refused before parsing.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// `POST /api/publish`: delivers a sequenced message to every subscriber of a channel.
pub async fn publish(node: &Arc<Node>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    publish_checked(node, request)
        .await
        .unwrap_or_else(|error| error.response())
}

async fn publish_checked(
    node: &Arc<Node>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let bad_request = |error: api::PublishError| ApiError::BadRequest(error.to_string());
    let (parts, body) = request.into_parts();
    let body = read_publish_body(node, &parts.headers, body).await?;
    let request = PublishRequest::parse(&body).map_err(bad_request)?;
    let tenant = node
        .tenants
        .get(&request.tenant)
        .cloned()
        .ok_or(ApiError::UnknownTenant)?;
    authorize(&tenant, &parts.headers)?;
    let message = request.message().map_err(bad_request)?;
    if message.payload.map_or(0, str::len) > tenant.limits.max_message_bytes {
        return Err(ApiError::PayloadTooLarge);
    }
    let room = RoomKey::new(&tenant.name, &message.channel);
    let message = Publish {
        msg_type: &message.msg_type,
        payload: message.payload,
        except: None,
        history: &tenant.history,
    };
    let seq = node
        .backplane
        .publish(&room, message)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    tenant
        .metrics
        .publishes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(json_ok(StatusCode::OK, api::publish_answer(seq)))
}

/// Reads a publish body. The tenant is named in the body, so the key is checked after it; but
/// a key that is no tenant's can never succeed, so such a request gets only the tight bounds of
/// `http.unauthenticated_*` and, past them, the 401 it would get anyway.
async fn read_publish_body(
    node: &Node,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<Vec<u8>, ApiError> {
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
        .map_err(|error| match error {
            BodyError::TooLarge | BodyError::Timeout if !known => {
                ApiError::Unauthorized { closing: true }
            }
            error => ApiError::Body {
                error,
                too_large: "the body is over 2 MiB",
                timeout: limit.timeout,
            },
        })
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key of `Authorization: Bearer <key>`, if any.
fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
}

/// Checks `Authorization: Bearer <tenant api key>`.
fn authorize(tenant: &Tenant, headers: &http::HeaderMap) -> Result<(), ApiError> {
    match (presented_key(headers), tenant.api_key.as_deref()) {
        (Some(presented), Some(expected))
            if constant_time_eq(presented.as_bytes(), expected.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(ApiError::Unauthorized { closing: false }),
    }
}

/// What the plugin API reports about a loaded plugin.
fn plugin_info(plugin: &LoadedPlugin) -> PluginInfo<'_> {
    PluginInfo {
        name: &plugin.manifest.name,
        version: &plugin.manifest.version,
        types: &plugin.manifest.handles,
        sha256: &plugin.sha256,
        path: plugin.path.display().to_string(),
        loaded_at_ms: plugin.loaded_at_ms,
        compile_ms: plugin.load_time.compile.as_secs_f64() * 1000.0,
        load_ms: plugin.load_time.total.as_secs_f64() * 1000.0,
        tier: plugin.tier.as_str(),
        calls: plugin.calls.load(std::sync::atomic::Ordering::Relaxed),
        errors: plugin.errors.load(std::sync::atomic::Ordering::Relaxed),
        yields: plugin.yields.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// `/api/tenants/{tenant}/plugins[/{name}]`: list (GET), upload (PUT) and remove (DELETE) a
/// tenant's plugins.
pub async fn plugins(
    node: &Arc<Node>,
    request: Request<Incoming>,
    rest: &str,
) -> Response<Full<Bytes>> {
    plugins_checked(node, request, rest)
        .await
        .unwrap_or_else(|error| error.response())
}

async fn plugins_checked(
    node: &Arc<Node>,
    request: Request<Incoming>,
    rest: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut parts = rest.splitn(3, '/');
    let (Some(tenant_name), Some("plugins"), name) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::NoSuchPath);
    };
    let tenant = node
        .tenants
        .get(tenant_name)
        .cloned()
        .ok_or(ApiError::UnknownTenant)?;
    authorize(&tenant, request.headers())?;
    match (request.method().clone(), name) {
        (http::Method::GET, None | Some("")) => {
            let routes = node.plugins.routes(&tenant.name).unwrap_or_default();
            let list: Vec<_> = routes
                .plugins
                .iter()
                .map(|plugin| plugin_info(plugin))
                .collect();
            Ok(json_ok(StatusCode::OK, api::plugin_list(&list)))
        }
        (http::Method::PUT, Some(name)) if !name.is_empty() && !name.contains('/') => {
            let name = name.to_owned();
            // A tenant at its plugin count is refused before its body is read.
            node.plugins
                .room_for(&tenant, Some(&name), 0)
                .map_err(|limit| limit_refusal(node, &tenant, limit))?;
            let (parts, body) = request.into_parts();
            let max_upload = node.plugins.compiler.bounds().max_upload_bytes;
            let limit = BodyLimit::new(max_upload, &node.config.http);
            let body = body::read(&node.http.bodies, &parts.headers, body, limit)
                .await
                .map_err(|error| ApiError::Body {
                    error,
                    too_large: "the plugin is over plugins.max_upload_bytes",
                    timeout: limit.timeout,
                })?;
            upload(node, &tenant, &name, body).await
        }
        (http::Method::DELETE, Some(name)) if !name.is_empty() && !name.contains('/') => {
            let removed = node
                .plugins
                .remove(&tenant.name, name)
                .map_err(|error| ApiError::Conflict(error.to_string()))?
                .ok_or_else(|| ApiError::UnknownPlugin(name.to_owned()))?;
            tracing::info!(
                tenant = %tenant.name,
                plugin = name,
                version = %removed.manifest.version,
                "plugin removed"
            );
            Ok(json_ok(StatusCode::OK, plugin_info(&removed).to_json()))
        }
        _ => Err(ApiError::MethodNotAllowed(
            "GET /api/tenants/{tenant}/plugins, PUT or DELETE /api/tenants/{tenant}/plugins/{name}",
        )),
    }
}

/// Counts and logs an upload that would pass a bound on the plugins held.
fn limit_refusal(node: &Node, tenant: &Tenant, limit: PluginLimit) -> ApiError {
    node.plugins.compiler.refused(&tenant.name, limit.label());
    tracing::warn!(tenant = %tenant.name, %limit, "plugin upload refused");
    ApiError::PluginLimit(limit)
}

/// Counts and logs an upload whose compile did not produce a build.
fn compile_refusal(node: &Node, tenant: &Tenant, error: CompileError, message: String) -> ApiError {
    // A version that was tried and did not load is a load failure; a refusal to try, a newer
    // upload, or the shutdown is not.
    if !error.refused() && !matches!(error, CompileError::Superseded | CompileError::ShuttingDown) {
        node.metrics.plugin_load_failure(&tenant.name);
    }
    tracing::warn!(tenant = %tenant.name, %message, "plugin upload refused");
    ApiError::Compile { error, message }
}

/// Loads an uploaded version off the hot path, then swaps it in; a failure leaves the old
/// version serving. A newer upload of the same plugin cancels this one's compile.
async fn upload(
    node: &Arc<Node>,
    tenant: &Arc<Tenant>,
    name: &str,
    body: Vec<u8>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    node.plugins
        .room_for(tenant, Some(name), body.len())
        .map_err(|limit| limit_refusal(node, tenant, limit))?;
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
    let tier = node.plugins.swap_tier();
    let purpose = Purpose::Swap(Some(name.to_owned()));
    let loaded = match node
        .plugins
        .load_for(tenant, source, body, config, tier, purpose)
        .await
    {
        Ok(loaded) => loaded,
        Err(LoadError::Compile { path, error }) => {
            let message = format!("{path}: {error}");
            return Err(compile_refusal(node, tenant, error, message));
        }
        Err(error) => {
            node.metrics.plugin_load_failure(&tenant.name);
            tracing::warn!(tenant = %tenant.name, %error, "plugin upload refused");
            return Err(ApiError::InvalidPlugin(error.to_string()));
        }
    };
    if loaded.name() != name {
        node.metrics.plugin_load_failure(&tenant.name);
        return Err(ApiError::BadRequest(format!(
            "the component describes itself as `{}`, not `{name}`",
            loaded.name()
        )));
    }
    match node.plugins.replace(tenant, loaded.clone()) {
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
                node.plugins.optimize_later(tenant, &loaded, bytes, config);
            }
            Ok(json_ok(StatusCode::OK, plugin_info(&loaded).to_json()))
        }
        Err(SwapError::Limit(limit)) => Err(limit_refusal(node, tenant, limit)),
        Err(error @ (SwapError::Conflict(_) | SwapError::UnknownTenant(_))) => {
            node.metrics.plugin_load_failure(&tenant.name);
            Err(ApiError::Conflict(error.to_string()))
        }
    }
}
