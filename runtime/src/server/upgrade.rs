//! The WebSocket upgrade: every check of docs/protocol.md, "Handshake", in its order, before any
//! 101; then the 101 and the hand-over of the upgraded socket to `connection`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::refusal::Refusal;
use crate::auth::AuthError;
use crate::conn_handle::ConnHandle;
use crate::connection;
use crate::node::{Node, NodeSlot};
use crate::protocol::{BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL};
use crate::tenant::{Tenant, TenantSlot};

/// Bytes reserved per socket read. tungstenite keeps (and zero-fills) this much per connection
/// for its whole life, so it is most of an idle connection's memory: 1 KiB holds a typical
/// envelope, or several pipelined ones, per read; a larger message takes one read per KiB.
const READ_BUFFER_BYTES: usize = 1024;
/// Frames are gathered up to this size before a write; larger batches go out in pieces.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Whether the connection that carries an upgrade may become a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It holds a place in the socket budget.
    Open,
    /// It arrived while the socket budget was spent: after the checks that come before the
    /// node's limit, it gets 503.
    SocketsFull,
}

/// Handles a request to `/ws` or `/ws/{tenant}`: the 101, or the refusal (counted).
pub fn handle(
    node: &Arc<Node>,
    tenant_name: &str,
    mut request: Request<Incoming>,
    admission: Admission,
) -> Response<Full<Bytes>> {
    match accept(node, tenant_name, &mut request, admission) {
        Ok(response) => response,
        Err(refusal) => {
            // An unknown tenant is not labelled with the requested name: clients must not
            // mint metric series.
            let tenant = if refusal == Refusal::UnknownTenant {
                ""
            } else {
                tenant_name
            };
            node.metrics
                .rejection(tenant, refusal.metric_label(), refusal.status().as_u16());
            refusal.response()
        }
    }
}

/// Every check of the handshake in its order; the 101 when all pass.
fn accept(
    node: &Arc<Node>,
    tenant_name: &str,
    request: &mut Request<Incoming>,
    admission: Admission,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let tenant = node
        .tenants
        .get(tenant_name)
        .ok_or(Refusal::UnknownTenant)?;
    let key = check_handshake(request)?;
    let headers = request.headers();
    if node.is_draining() {
        return Err(Refusal::Draining);
    }
    if admission == Admission::SocketsFull {
        return Err(Refusal::SocketsFull);
    }
    let node_slot = node.try_acquire().ok_or(Refusal::NodeFull)?;
    let origin = headers
        .get(header::ORIGIN)
        .map(|value| value.to_str().unwrap_or("\u{0}"));
    tenant.origins.check(origin).map_err(Refusal::Auth)?;
    let offered = offered_subprotocols(headers);
    let claims = find_token(headers, request.uri().query(), &offered)
        .ok_or(AuthError::MissingToken)
        .and_then(|token| tenant.verifier.verify(&token))
        .map_err(Refusal::Auth)?;
    let tenant_slot = tenant.try_acquire().ok_or(Refusal::TenantFull)?;

    let select_subprotocol = offered.iter().any(|entry| entry == SUBPROTOCOL);
    let on_upgrade = hyper::upgrade::on(request);
    let accepted = Accepted {
        node: node.clone(),
        tenant: tenant.clone(),
        // Serialised now: the claims map itself would otherwise live as long as the connection.
        claims_json: claims.to_json(),
        user_id: Arc::from(claims.user_id),
        slots: (node_slot, tenant_slot),
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => accepted.open(TokioIo::new(upgraded)).await,
            Err(error) => tracing::debug!(%error, "upgrade did not complete"),
        }
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        response_headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if select_subprotocol {
        response_headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(response)
}

/// The checks of the request itself, in their order (docs/protocol.md, "Refusals", 2 to 4): an
/// upgrade request, version 13, a valid `Sec-WebSocket-Key`, which it answers with.
pub(crate) fn check_handshake<B>(request: &Request<B>) -> Result<HeaderValue, Refusal> {
    if !is_upgrade_request(request) {
        return Err(Refusal::NotUpgrade);
    }
    let headers = request.headers();
    if header_str(headers, header::SEC_WEBSOCKET_VERSION) != Some("13") {
        return Err(Refusal::BadVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or(Refusal::MissingKey)?;
    if !is_valid_key(key.as_bytes()) {
        return Err(Refusal::BadKey);
    }
    Ok(key)
}

/// A handshake that passed every check, waiting for hyper to hand over the socket.
struct Accepted {
    node: Arc<Node>,
    tenant: Arc<Tenant>,
    user_id: Arc<str>,
    claims_json: String,
    /// Held for the connection's lifetime.
    slots: (NodeSlot, TenantSlot),
}

impl Accepted {
    /// Registers the connection, queues its welcome, runs `on-connect`, then hands the socket
    /// to a task of its own.
    async fn open(self, io: TokioIo<hyper::upgrade::Upgraded>) {
        let limits = &self.tenant.limits;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES)
            .max_message_size(Some(limits.max_message_bytes))
            .max_frame_size(Some(limits.max_message_bytes));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let node = self.node;
        let id = node.next_conn_id();
        let conn = Arc::new(ConnHandle::new(
            id,
            self.tenant.clone(),
            self.user_id,
            self.claims_json,
            crate::clock::unix_millis(),
        ));
        node.connect(&conn).await;
        // A fresh task rather than an await here: a task's future is sized by its largest await
        // point and stays allocated for the connection's life, so the long-lived one holds
        // nothing but `serve` (measured in BENCHMARKS.md, idle memory).
        tokio::spawn(connection::serve(node, conn, socket, self.slots));
    }
}

/// True for a `Sec-WebSocket-Key` that is the base64 of 16 bytes (RFC 6455 section 4.2.1):
/// 22 characters of the base64 alphabet and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    let is_base64 = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'+' || *byte == b'/';
    key.len() == 24 && key.ends_with(b"==") && key[..22].iter().all(is_base64)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    })
}

fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && header_has_token(request.headers(), header::CONNECTION, "upgrade")
        && header_has_token(request.headers(), header::UPGRADE, "websocket")
}

/// Every entry of every `Sec-WebSocket-Protocol` header, in order.
pub(crate) fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// The token from the first source that is present: `Authorization: Bearer`, `?token=`, then
/// a `bearer.<jwt>` subprotocol entry. Empty values count as absent.
pub(crate) fn find_token(
    headers: &HeaderMap,
    query: Option<&str>,
    offered: &[String],
) -> Option<String> {
    if let Some(value) = header_str(headers, header::AUTHORIZATION)
        && let Some((scheme, token)) = value.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_owned());
    }
    if let Some(query) = query
        && let Some((_, token)) = form_urlencoded::parse(query.as_bytes())
            .find(|(name, value)| name == "token" && !value.is_empty())
    {
        return Some(token.into_owned());
    }
    offered.iter().find_map(|entry| {
        entry
            .strip_prefix(BEARER_SUBPROTOCOL_PREFIX)
            .filter(|token| !token.is_empty())
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests;
