//! The calls a connection makes into its tenant's plugins: a message routed by its type,
//! `authorize-join`, `on-connect`, `on-disconnect`; and the one reply the client gets for a
//! routed message (the mapping from a call's outcome to the protocol's error codes).

use std::sync::Arc;

use super::Plugins;
use super::pool::{Answer, Call, CallError, LoadedPlugin};
use crate::conn_handle::ConnHandle;
use crate::metrics::plugins::CallFailure;
use crate::protocol::{self, CloseReason, ErrorCode, Frame};
use crate::wit::{ConnInfo, HandlerError, Hooks, Message, RawFrame};

/// The outcome of routing a message to a plugin.
#[derive(Debug)]
pub enum Routed {
    /// The plugin answered (or returned an error of its own).
    Answered(Result<Option<String>, HandlerError>),
    /// The plugin's reply cannot be sent: why.
    BadReply(&'static str),
    /// The call failed.
    Failed(CallError),
}

impl Routed {
    /// The one reply the client gets for a message routed to a plugin: an `ack` (only when
    /// the message had a `correlationId`), the plugin's own error, or the host's error for a
    /// failure: `overloaded` (no instance free), `handler_timeout` (past the CPU budget),
    /// `handler_failed` (a trap, or a reply over the message size limit or not JSON). With
    /// `expose_panics` (the tenant's `plugin_limits.expose_panics`, for development) a trap's
    /// message is the plugin's panic message. `None`: nothing to send.
    pub fn reply(self, correlation_id: Option<&str>, expose_panics: bool) -> Option<Frame> {
        let failure =
            |code: ErrorCode, message: &str| Some(protocol::error(correlation_id, code, message));
        match self {
            Routed::Answered(Ok(reply)) => Some(protocol::ack(correlation_id?, reply.as_deref())),
            Routed::Answered(Err(error)) => Some(protocol::error_with_code(
                correlation_id,
                &error.code,
                &error.message,
            )),
            Routed::BadReply(why) => failure(ErrorCode::HandlerFailed, why),
            Routed::Failed(CallError::Overloaded) => failure(
                ErrorCode::Overloaded,
                "the handler is at capacity; retry later",
            ),
            Routed::Failed(CallError::Timeout) => failure(
                ErrorCode::HandlerTimeout,
                "the handler ran past its CPU budget",
            ),
            Routed::Failed(CallError::Trapped {
                panic: Some(panic), ..
            }) if expose_panics => failure(
                ErrorCode::HandlerFailed,
                &format!("the handler panicked: {panic}"),
            ),
            Routed::Failed(CallError::Trapped { trap, .. }) => failure(
                ErrorCode::HandlerFailed,
                &format!("the handler failed: {trap}"),
            ),
        }
    }
}

/// The outcome of a message the plugin answered: a reply goes out only to a correlated
/// message (the others' are dropped unread), and only if it is JSON within the size limit.
fn answered(
    conn: &ConnHandle,
    plugin: &LoadedPlugin,
    info: &ConnInfo,
    message: &Message,
    answer: Result<Option<String>, HandlerError>,
) -> Routed {
    let Ok(Some(reply)) = &answer else {
        return Routed::Answered(answer);
    };
    if message.correlation_id.is_none() {
        return Routed::Answered(answer);
    }
    match bad_reply(reply, conn.tenant.limits.max_message_bytes) {
        Some(why) => {
            plugin.series.failed(CallFailure::BadReply);
            tracing::warn!(
                tenant = %conn.tenant.name,
                plugin = %plugin.name(),
                version = %plugin.manifest.version,
                msg_type = %message.msg_type,
                connection = %info.id,
                correlation_id = message.correlation_id.as_deref(),
                bytes = reply.len(),
                "{why}"
            );
            Routed::BadReply(why)
        }
        None => Routed::Answered(answer),
    }
}

/// Why a reply the plugin returned cannot go to the client, if it cannot.
fn bad_reply(reply: &str, max_reply_bytes: usize) -> Option<&'static str> {
    if reply.len() > max_reply_bytes {
        Some("the plugin's reply is over the message size limit")
    } else if protocol::validate_payload(reply).is_err() {
        Some("the plugin's reply is not JSON")
    } else {
        None
    }
}

/// Why a join was refused by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    /// A plugin's `authorize-join` said no.
    #[error("`{0}` refused the join")]
    Refused(String),
    /// A plugin could not answer (trap, timeout, overload): joins fail closed.
    #[error("`{0}` could not authorize: {1:?}")]
    Failed(String, CallError),
}

impl Plugins {
    /// The plugin that declared `msg_type` in the connection's tenant, if any.
    pub fn handler_for(&self, conn: &ConnHandle, msg_type: &str) -> Option<Arc<LoadedPlugin>> {
        self.routes
            .load()
            .get(&*conn.tenant.name)
            .and_then(|routes| routes.load().handler(msg_type).cloned())
    }

    /// Hands messages of one connection, in the order they arrived, to `plugin`, which
    /// declared their types: one `on-messages` call for two or more when the plugin has that
    /// export, one `on-message` call each otherwise. Returns one outcome per message, in order.
    /// A batch that fails at a message (trap, CPU budget) fails that message only: the ones
    /// before keep their answers and the ones after go to a fresh call, as if each had had
    /// its own.
    pub async fn to_plugin(
        &self,
        conn: &ConnHandle,
        plugin: &LoadedPlugin,
        messages: &[Message],
    ) -> Vec<Routed> {
        let info = conn.plugin_view();
        let mut routed = Vec::with_capacity(messages.len());
        let mut rest = messages;
        while let Some(first) = rest.first() {
            if rest.len() == 1 || !plugin.takes_batches() {
                let outcome = match plugin.call(Call::Message(&info, first), false).await {
                    Ok(Answer::Message(answer)) => answered(conn, plugin, &info, first, answer),
                    Ok(_) => Routed::Failed(CallError::trapped("unexpected answer")),
                    Err(error) => Routed::Failed(error),
                };
                routed.push(outcome);
                rest = &rest[1..];
                continue;
            }
            match plugin.call(Call::Messages(&info, rest), false).await {
                Ok(Answer::Batch { answers, failed }) => {
                    let count = answers.len();
                    for (message, answer) in rest.iter().zip(answers) {
                        routed.push(answered(conn, plugin, &info, message, answer));
                    }
                    rest = &rest[count..];
                    if let Some(error) = failed
                        && !rest.is_empty()
                    {
                        routed.push(Routed::Failed(error));
                        rest = &rest[1..];
                    }
                }
                outcome => {
                    let error = match outcome {
                        Err(error) => error,
                        Ok(_) => CallError::trapped("unexpected answer"),
                    };
                    routed.extend(rest.iter().map(|_| Routed::Failed(error.clone())));
                    rest = &[];
                }
            }
        }
        routed
    }

    /// Hands a raw-frame tenant's message to its frame plugin and returns the frames it
    /// answered, for the sender. It waits for an instance and for the tenant's CPU share (the
    /// connection reads nothing meanwhile) rather than refusing: a raw client has no `error`
    /// to be told with. A plugin's own error is logged and counted, and answers nothing;
    /// what the connection cannot go on from (no frame plugin, a trap, a call past its CPU
    /// budget, a frame over the message size limit) closes it with 1011.
    pub async fn on_frame(
        &self,
        conn: &ConnHandle,
        frame: RawFrame,
    ) -> Result<Vec<Frame>, CloseReason> {
        let plugin = self
            .routes
            .load()
            .get(&*conn.tenant.name)
            .and_then(|routes| routes.load().frame_handler().cloned())
            .ok_or_else(|| {
                CloseReason::HandlerFailed("the tenant has no plugin that takes frames".to_owned())
            })?;
        let info = conn.plugin_view();
        let frames = match plugin.call(Call::Frame(&info, &frame), true).await {
            Ok(Answer::Frames(Ok(frames))) => frames,
            Ok(Answer::Frames(Err(error))) => {
                // Debug, not info: a client decides how often this happens.
                tracing::debug!(
                    tenant = %conn.tenant.name,
                    plugin = %plugin.name(),
                    connection = %info.id,
                    code = %error.code,
                    "frame handler error: {}",
                    error.message
                );
                return Ok(Vec::new());
            }
            Ok(_) => {
                return Err(CloseReason::HandlerFailed(
                    "the plugin does not take frames".to_owned(),
                ));
            }
            Err(CallError::Timeout) => {
                return Err(CloseReason::HandlerFailed(
                    "the handler ran past its CPU budget".to_owned(),
                ));
            }
            Err(CallError::Trapped { panic, trap }) => {
                let detail = match panic {
                    Some(panic) if conn.tenant.plugin_limits.expose_panics => panic,
                    _ => trap,
                };
                return Err(CloseReason::HandlerFailed(detail));
            }
            Err(CallError::Overloaded) => {
                return Err(CloseReason::HandlerFailed(
                    "the handler is at capacity".to_owned(),
                ));
            }
        };
        let max = conn.tenant.limits.max_message_bytes;
        frames
            .into_iter()
            .map(|frame| {
                let frame = super::host_api::host_frame(frame);
                if frame.len() > max {
                    plugin.series.failed(CallFailure::BadReply);
                    tracing::warn!(
                        tenant = %conn.tenant.name,
                        plugin = %plugin.name(),
                        connection = %info.id,
                        bytes = frame.len(),
                        "the plugin's frame is over the message size limit"
                    );
                    return Err(CloseReason::HandlerFailed(
                        "a reply frame is over the message size limit".to_owned(),
                    ));
                }
                Ok(frame)
            })
            .collect()
    }

    /// Asks every plugin with `authorize-join`; the first refusal (or failure) wins.
    pub async fn authorize_join(
        &self,
        conn: &ConnHandle,
        channel: &str,
    ) -> Result<(), JoinRefused> {
        let Some(routes) = self.routes(&conn.tenant.name) else {
            return Ok(());
        };
        let channel = channel.to_owned();
        let mut info = None;
        for plugin in routes.with_hook(Hooks::AUTHORIZE_JOIN) {
            let info = info.get_or_insert_with(|| conn.plugin_view());
            match plugin.call(Call::AuthorizeJoin(info, &channel), true).await {
                Ok(Answer::Authorized(true)) => {}
                Ok(_) => return Err(JoinRefused::Refused(plugin.name().to_owned())),
                // Fail closed: a plugin that cannot answer does not let anyone in.
                Err(error) => return Err(JoinRefused::Failed(plugin.name().to_owned(), error)),
            }
        }
        Ok(())
    }

    /// Tells every plugin with `on-connect`.
    pub async fn on_connect(&self, conn: &ConnHandle) {
        let Some(routes) = self.routes(&conn.tenant.name) else {
            return;
        };
        // Built only when a plugin has the hook (it stays cached on the connection).
        let mut info = None;
        for plugin in routes.with_hook(Hooks::ON_CONNECT) {
            let info = info.get_or_insert_with(|| conn.plugin_view());
            let _ = plugin.call(Call::Connect(info), true).await;
        }
    }

    /// Tells every plugin with `on-disconnect`, for every kind of drop.
    pub async fn on_disconnect(&self, conn: &ConnHandle, code: u16) {
        let Some(routes) = self.routes(&conn.tenant.name) else {
            return;
        };
        let info = conn.plugin_view();
        for plugin in routes.with_hook(Hooks::ON_DISCONNECT) {
            let _ = plugin.call(Call::Disconnect(&info, code), true).await;
        }
    }
}
