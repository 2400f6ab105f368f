//! The HTTP API on the main listener: `POST /api/publish` (PROTOCOL.md section 6).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::value::RawValue;

use crate::backplane::{Publish, RoomKey};
use crate::node::Node;
use crate::protocol::{check_channel, check_type};
use crate::server::response::{json_error, json_ok};

/// Request bodies larger than this are refused before parsing.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// `POST /api/publish`: delivers a sequenced message to every subscriber of a channel.
pub async fn publish(node: &Arc<Node>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let bad_request = |message: &str| json_error(StatusCode::BAD_REQUEST, "bad_request", message);
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is over 2 MiB",
            );
        }
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
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    let authorized = match (presented, tenant.api_key.as_deref()) {
        (Some(presented), Some(expected)) => {
            constant_time_eq(presented.as_bytes(), expected.as_bytes())
        }
        _ => false,
    };
    if !authorized {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key for this tenant",
        );
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
