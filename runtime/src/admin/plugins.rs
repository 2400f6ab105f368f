//! The plugin API (`/api/tenants/{tenant}/plugins`, docs/protocol.md "Plugin API"): list,
//! deploy, delete, roll back and read the history of a tenant's plugins. Every change goes
//! to the desired state first (`deployments`), so it reaches every node and survives
//! restarts.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{ApiError, authorize};
use crate::deployments::{DeployError, Deployments};
use crate::listener::body::{self, BodyLimit};
use crate::listener::response::json_ok;
use crate::node::Node;
use crate::plugins::compile::CompileError;
use crate::plugins::pool::{LoadError, LoadedPlugin};
use crate::plugins::{PluginLimit, SwapError};
use crate::protocol::api::{self, KeptVersion, ListedPlugin, NodeServing, PluginInfo};
use crate::state::{NodeReport, RecordError};
use crate::tenant::Tenant;

/// The methods and paths of the plugin API, for a 405.
const PLUGIN_ROUTES: &str = "GET /api/tenants/{tenant}/plugins, PUT or DELETE /api/tenants/{tenant}/plugins/{name}, GET .../{name}/history, POST .../{name}/rollback";

/// What the plugin API reports about a loaded plugin.
fn plugin_info<'a>(node: &Node, tenant: &str, plugin: &'a LoadedPlugin) -> PluginInfo<'a> {
    let source = if node.plugins.is_deployed(tenant, plugin.name()) {
        "api"
    } else {
        "file"
    };
    PluginInfo {
        name: &plugin.manifest.name,
        version: &plugin.manifest.version,
        types: &plugin.manifest.handles,
        sha256: &plugin.sha256,
        source,
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

/// `/api/tenants/{tenant}/plugins[/{name}[/history|/rollback]]`.
pub async fn plugins(
    node: &Arc<Node>,
    request: Request<Incoming>,
    rest: &str,
) -> Response<Full<Bytes>> {
    plugins_checked(node, request, rest)
        .await
        .unwrap_or_else(|error| error.response())
}

/// A plugin name as a path segment: not empty, no `/`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/')
}

async fn plugins_checked(
    node: &Arc<Node>,
    request: Request<Incoming>,
    rest: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut parts = rest.splitn(4, '/');
    let (Some(tenant_name), Some("plugins"), name, action) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::NoSuchPath);
    };
    let tenant = node
        .tenants
        .get(tenant_name)
        .ok_or(ApiError::UnknownTenant)?;
    if !super::tenants::is_operator(node, request.headers()) {
        authorize(&tenant, request.headers())?;
    }
    match (request.method().clone(), name, action) {
        (Method::GET, None | Some(""), None) => list(node, &tenant).await,
        (Method::PUT, Some(name), None) if valid_name(name) => {
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
            deploy(node, &tenant, &name, body).await
        }
        (Method::DELETE, Some(name), None) if valid_name(name) => {
            let removed = node
                .deployments
                .delete(&node.plugins, &tenant, name)
                .await
                .map_err(|error| refusal(node, &tenant, error))?;
            tracing::info!(tenant = %tenant.name, plugin = name, "plugin deleted");
            let body = match &removed {
                Some(plugin) => plugin_info(node, &tenant.name, plugin).to_json(),
                None => api::plugin_history(name, true, &[]),
            };
            Ok(json_ok(StatusCode::OK, body))
        }
        (Method::GET, Some(name), Some("history")) if valid_name(name) => {
            history(node, &tenant, name).await
        }
        (Method::POST, Some(name), Some("rollback")) if valid_name(name) => {
            let to = request.uri().query().and_then(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .find(|(key, _)| key == "to")
                    .map(|(_, value)| value.into_owned())
            });
            let loaded = node
                .deployments
                .rollback(&node.plugins, &node.config, &tenant, name, to.as_deref())
                .await
                .map_err(|error| refusal(node, &tenant, error))?;
            tracing::info!(tenant = %tenant.name, plugin = name, version = %loaded.manifest.version, "plugin rolled back");
            Ok(json_ok(
                StatusCode::OK,
                plugin_info(node, &tenant.name, &loaded).to_json(),
            ))
        }
        (_, Some(name), Some("history" | "rollback")) if valid_name(name) => {
            Err(ApiError::MethodNotAllowed(PLUGIN_ROUTES))
        }
        (_, _, Some(_)) => Err(ApiError::NoSuchPath),
        _ => Err(ApiError::MethodNotAllowed(PLUGIN_ROUTES)),
    }
}

/// The tenant's plugins as this node serves them, each deployed one with every live node's
/// version.
async fn list(node: &Arc<Node>, tenant: &Tenant) -> Result<Response<Full<Bytes>>, ApiError> {
    let routes = node.plugins.routes(&tenant.name).unwrap_or_default();
    let mut reports: Vec<NodeReport> = vec![node.deployments.served(&node.plugins, &node.id).await];
    // The other nodes' reports are a view, not a dependency: the list still answers while
    // the store is down, with this node alone.
    if let Ok(others) = node.deployments.reports().await {
        reports.extend(others.into_iter().filter(|report| report.node != node.id));
    }
    let list: Vec<ListedPlugin<'_>> = routes
        .plugins
        .iter()
        .map(|plugin| ListedPlugin {
            info: plugin_info(node, &tenant.name, plugin),
            nodes: reports
                .iter()
                .flat_map(|report| {
                    report
                        .plugins
                        .iter()
                        .filter(|served| {
                            *served.tenant == *tenant.name && served.plugin == plugin.name()
                        })
                        .map(|served| NodeServing {
                            node: &report.node,
                            version: served.version.as_deref(),
                            sha256: served.sha256.as_deref(),
                            tier: served.tier.as_deref(),
                            error: served.error.as_deref(),
                        })
                })
                .collect(),
        })
        .collect();
    Ok(json_ok(StatusCode::OK, api::plugin_list(&list)))
}

/// A plugin's kept versions, newest first.
async fn history(
    node: &Arc<Node>,
    tenant: &Tenant,
    name: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let record = node
        .deployments
        .record(&tenant.name, name)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let Some(record) = record else {
        let routed = node
            .plugins
            .routes(&tenant.name)
            .is_some_and(|routes| routes.plugins.iter().any(|p| p.name() == name));
        if !routed {
            return Err(ApiError::UnknownPlugin(name.to_owned()));
        }
        // A configured plugin never deployed through the API has no kept versions.
        return Ok(json_ok(
            StatusCode::OK,
            api::plugin_history(name, false, &[]),
        ));
    };
    let versions: Vec<KeptVersion<'_>> = record
        .history
        .iter()
        .map(|version| KeptVersion {
            version: &version.version,
            sha256: &version.sha256,
            blob: &version.blob,
            bytes: version.bytes,
            deployed_at_ms: version.deployed_at_ms,
            active: record.active.as_deref() == Some(version.blob.as_str()),
        })
        .collect();
    Ok(json_ok(
        StatusCode::OK,
        api::plugin_history(name, record.active.is_none(), &versions),
    ))
}

/// Counts and logs an upload that would pass a bound on the plugins held.
fn limit_refusal(node: &Node, tenant: &Tenant, limit: PluginLimit) -> ApiError {
    node.plugins.compiler.refused(&tenant.name, limit.label());
    tracing::warn!(tenant = %tenant.name, %limit, "plugin change refused");
    ApiError::PluginLimit(limit)
}

/// The answer to a change that was not made, counted and logged where it is a load failure.
fn refusal(node: &Node, tenant: &Tenant, error: DeployError) -> ApiError {
    let failed_load = || node.metrics.plugin_load_failure(&tenant.name);
    match error {
        DeployError::Load(LoadError::Compile { path, error }) => {
            // A version that was tried and did not load is a load failure; a refusal to try,
            // a newer upload, or the shutdown is not.
            if !error.refused()
                && !matches!(error, CompileError::Superseded | CompileError::ShuttingDown)
            {
                failed_load();
            }
            let message = format!("{path}: {error}");
            tracing::warn!(tenant = %tenant.name, %message, "plugin change refused");
            ApiError::Compile { error, message }
        }
        DeployError::Load(error) => {
            failed_load();
            tracing::warn!(tenant = %tenant.name, %error, "plugin change refused");
            ApiError::InvalidPlugin(error.to_string())
        }
        error @ DeployError::WrongName { .. } => {
            failed_load();
            ApiError::BadRequest(error.to_string())
        }
        DeployError::Swap(SwapError::Limit(limit)) => limit_refusal(node, tenant, limit),
        DeployError::Swap(error) => {
            failed_load();
            ApiError::Conflict(error.to_string())
        }
        DeployError::UnknownPlugin(name) => ApiError::UnknownPlugin(name),
        DeployError::Record(error @ RecordError::NotKept(_)) => {
            ApiError::UnknownVersion(error.to_string())
        }
        DeployError::Record(error @ RecordError::NothingEarlier) => {
            ApiError::Conflict(error.to_string())
        }
        error @ (DeployError::Store(_)
        | DeployError::MissingBlob(_)
        | DeployError::BadBlob(_)
        | DeployError::Contended) => {
            tracing::warn!(tenant = %tenant.name, %error, "plugin change not made");
            ApiError::Unavailable(error.to_string())
        }
    }
}

/// Loads an uploaded version off the hot path, records it in the desired state, then swaps
/// it in; a failure leaves the old version serving and nothing recorded. A newer upload of
/// the same plugin cancels this one's compile.
async fn deploy(
    node: &Arc<Node>,
    tenant: &Arc<Tenant>,
    name: &str,
    body: Vec<u8>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    node.plugins
        .room_for(tenant, Some(name), body.len())
        .map_err(|limit| limit_refusal(node, tenant, limit))?;
    let loaded = Deployments::load(&node.plugins, &node.config, tenant, name, body.clone())
        .await
        .map_err(|error| refusal(node, tenant, error))?;
    node.deployments
        .deploy(&node.plugins, tenant, &loaded, &body)
        .await
        .map_err(|error| refusal(node, tenant, error))?;
    tracing::info!(
        tenant = %tenant.name,
        plugin = name,
        version = %loaded.manifest.version,
        compile_ms = loaded.load_time.compile.as_millis() as u64,
        load_ms = loaded.load_time.total.as_millis() as u64,
        tier = loaded.tier.as_str(),
        "plugin deployed"
    );
    node.deployments
        .optimize_later(&node.plugins, &node.config, tenant, &loaded, body);
    Ok(json_ok(
        StatusCode::OK,
        plugin_info(node, &tenant.name, &loaded).to_json(),
    ))
}
