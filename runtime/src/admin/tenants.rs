//! The tenant API (`/api/tenants[/{name}]`, docs/protocol.md "Tenant API"), for the operator
//! (`admin.api_key`): list, read, create or update (`PUT`), and delete tenants while the node
//! runs. Every change goes to the desired state first (`deployments`), so it reaches every
//! node and survives restarts.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{ApiError, constant_time_eq, presented_key};
use crate::deployments::{TenantChange, TenantError};
use crate::listener::body::{self, BodyLimit};
use crate::listener::response::json_ok;
use crate::node::Node;
use crate::tenant::Tenant;

/// The methods and paths of the tenant API, for a 405.
const TENANT_ROUTES: &str =
    "GET /api/tenants, GET, PUT or DELETE /api/tenants/{name}, and the plugin API below it";

/// Largest tenant settings body: a JWKS or a PEM key fits many times over.
pub const MAX_TENANT_BODY_BYTES: usize = 256 * 1024;

/// Written in place of a secret in what the API answers.
const HIDDEN: &str = "(hidden)";

/// Whether the request carries the operator's key.
pub fn is_operator(node: &Node, headers: &http::HeaderMap) -> bool {
    match (presented_key(headers), node.config.admin_api_key.as_deref()) {
        (Some(presented), Some(expected)) => {
            constant_time_eq(presented.as_bytes(), expected.as_bytes())
        }
        _ => false,
    }
}

/// `/api/tenants` and `/api/tenants/{name}` (`name` is `None` for the list).
pub async fn tenants(
    node: &Arc<Node>,
    request: Request<Incoming>,
    name: Option<&str>,
) -> Response<Full<Bytes>> {
    tenants_checked(node, request, name)
        .await
        .unwrap_or_else(|error| error.response())
}

async fn tenants_checked(
    node: &Arc<Node>,
    request: Request<Incoming>,
    name: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !is_operator(node, request.headers()) {
        // Its body is never read: the connection cannot carry another request.
        return Err(ApiError::NotOperator);
    }
    match (request.method().clone(), name) {
        (Method::GET, None) => Ok(json_ok(StatusCode::OK, list(node).to_string())),
        (Method::GET, Some(name)) => {
            let tenant = node.tenants.get(name).ok_or(ApiError::UnknownTenant)?;
            Ok(json_ok(StatusCode::OK, describe(node, &tenant).to_string()))
        }
        (Method::PUT, Some(name)) => {
            let (parts, body) = request.into_parts();
            let limit = BodyLimit::new(MAX_TENANT_BODY_BYTES, &node.config.http);
            let body = body::read(&node.http.bodies, &parts.headers, body, limit)
                .await
                .map_err(|error| ApiError::Body {
                    error,
                    too_large: "the tenant settings are over 256 KiB",
                    timeout: limit.timeout,
                })?;
            let settings: Value = serde_json::from_slice(&body)
                .map_err(|error| ApiError::BadRequest(format!("the body is not JSON: {error}")))?;
            let change = node
                .deployments
                .put_tenant(&node.plugins, &node.tenants, name, settings)
                .await
                .map_err(refusal)?;
            let (status, tenant) = match change {
                TenantChange::Created(tenant) => (StatusCode::CREATED, tenant),
                TenantChange::Updated(tenant) => (StatusCode::OK, tenant),
            };
            Ok(json_ok(status, describe(node, &tenant).to_string()))
        }
        (Method::DELETE, Some(name)) => {
            let tenant = node
                .deployments
                .delete_tenant(&node.plugins, &node.tenants, name)
                .await
                .map_err(refusal)?;
            let connections = tenant.connection_count();
            node.clear_removed_tenants().await;
            Ok(json_ok(
                StatusCode::OK,
                json!({ "name": name, "deleted": true, "connections_closed": connections })
                    .to_string(),
            ))
        }
        _ => Err(ApiError::MethodNotAllowed(TENANT_ROUTES)),
    }
}

/// The answer to a tenant change that was not made.
fn refusal(error: TenantError) -> ApiError {
    match error {
        error @ (TenantError::Invalid(_) | TenantError::Key(_)) => {
            ApiError::InvalidTenant(error.to_string())
        }
        TenantError::Unknown => ApiError::UnknownTenant,
        error @ (TenantError::Store(_) | TenantError::Contended) => {
            tracing::warn!(%error, "tenant change not made");
            ApiError::Unavailable(error.to_string())
        }
    }
}

/// Every tenant this node serves, by name.
fn list(node: &Node) -> Value {
    let tenants: Vec<Value> = node
        .tenants
        .all()
        .iter()
        .map(|tenant| summary(node, tenant))
        .collect();
    json!({ "tenants": tenants })
}

/// Where a tenant's settings come from: `api` once a record decides them.
fn source(node: &Node, name: &str) -> &'static str {
    let known = node.deployments.known();
    if known
        .tenants
        .get(name)
        .is_some_and(|record| record.settings.is_some())
    {
        "api"
    } else {
        "file"
    }
}

/// A tenant in a list.
fn summary(node: &Node, tenant: &Tenant) -> Value {
    let plugins = node
        .plugins
        .routes(&tenant.name)
        .map_or(0, |routes| routes.plugins.len());
    json!({
        "name": &*tenant.name,
        "source": source(node, &tenant.name),
        "protocol": match tenant.protocol {
            crate::config::TenantProtocol::Envelope => "envelope",
            crate::config::TenantProtocol::Raw => "raw",
        },
        "connections": tenant.connection_count(),
        "plugins": plugins,
    })
}

/// One tenant: its summary and, for a tenant made through this API, its settings as given
/// with the secrets hidden.
fn describe(node: &Node, tenant: &Tenant) -> Value {
    let mut value = summary(node, tenant);
    let settings = node
        .deployments
        .known()
        .tenants
        .get(&*tenant.name)
        .and_then(|record| record.settings.clone())
        .map(hide_secrets);
    let config = &tenant.config;
    if let Some(object) = value.as_object_mut() {
        object.insert("settings".to_owned(), settings.unwrap_or(Value::Null));
        object.insert("allowed_origins".to_owned(), json!(config.allowed_origins));
        object.insert("jwt_algorithms".to_owned(), json!(config.jwt.algorithms));
        object.insert("api_key".to_owned(), json!(config.api_key.is_some()));
        object.insert(
            "max_connections".to_owned(),
            json!(config.limits.max_connections),
        );
    }
    value
}

/// Settings with `api_key` and `jwt.secret` replaced by a marker.
fn hide_secrets(mut settings: Value) -> Value {
    if let Some(object) = settings.as_object_mut() {
        if object.contains_key("api_key") {
            object.insert("api_key".to_owned(), Value::from(HIDDEN));
        }
        if let Some(jwt) = object.get_mut("jwt").and_then(Value::as_object_mut)
            && jwt.contains_key("secret")
        {
            jwt.insert("secret".to_owned(), Value::from(HIDDEN));
        }
    }
    settings
}
