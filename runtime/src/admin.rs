//! The HTTP API on the main listener: `POST /api/publish` (docs/protocol.md, "Publish API")
//! and the plugin API (`/api/tenants/{tenant}/plugins`, "Plugin API"), authenticated with the
//! tenant's API key (the plugin API also with the operator's), and the tenant API
//! (`/api/tenants[/{name}]`, "Tenant API"), for the operator only.

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
use crate::protocol::api::{self, PublishRequest};
use crate::tenant::Tenant;

mod error;
mod plugins;
mod tenants;

pub use error::ApiError;
pub use plugins::plugins;
pub use tenants::tenants;

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
