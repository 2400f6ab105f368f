//! `collab`: a shared plain-text document per channel, edited concurrently through operational
//! transformation. `collab:op` carries an operation made against a revision the client has
//! seen; the plugin transforms it against the operations committed since, applies it, gives it
//! the next revision and broadcasts it to the channel as `collab:op`. `collab:snapshot` answers
//! the text and its revision, `collab:ops` the committed operations after a revision (catch-up).
//!
//! State lives in the key-value store: `doc:{channel}` holds `{rev, text}` and `op:{channel}:{rev}`
//! each committed operation, the last `history` of them (config, default 200, at most 900). A client further
//! behind than that gets the error `resync` and must start again from `collab:snapshot`.
//! Positions count Unicode scalar values (see [`ot`]).
//!
//! Calls that change a document must not overlap: the key-value store has no compare-and-set,
//! so the tenant runs this plugin with `plugin_limits.max_concurrency = 1` (one node), and
//! clients resend an operation refused with `overloaded`. A resent operation that was already
//! committed (same `clientId` and `opId`) is answered with its revision and not applied twice.

pub mod ot;

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_sdk::{
    ConnInfo, HandlerError, Manifest, Message, Plugin, env, export_plugin, kv, realtime,
};

use crate::ot::{Operation, transform};

/// The plugin.
pub struct Collab;

const DEFAULT_HISTORY: u64 = 200;
const DEFAULT_MAX_CHARS: usize = 100_000;
const MAX_CLIENT_ID_BYTES: usize = 64;
/// Most operations kept: catching up reads one key per operation, within the per-call quota.
const MAX_HISTORY: u64 = 900;

/// A document: its text after `rev` operations.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct Document {
    rev: u64,
    text: String,
}

/// A committed operation, as stored and as broadcast.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Committed {
    rev: u64,
    op: Operation,
    client_id: String,
    op_id: u64,
    user_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpPayload {
    rev: u64,
    op: Operation,
    client_id: String,
    op_id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpsPayload {
    since: u64,
}

fn channel_of(msg: &Message) -> Result<&str, HandlerError> {
    msg.channel
        .as_deref()
        .ok_or_else(|| HandlerError::bad_request(format!("`{}` needs a `channel`", msg.msg_type)))
}

fn require_member(conn: &ConnInfo, channel: &str) -> Result<(), HandlerError> {
    if realtime::members(channel)?
        .iter()
        .any(|(id, _)| *id == conn.id)
    {
        Ok(())
    } else {
        Err(HandlerError::new(
            "not_member",
            format!("join `{channel}` before editing it"),
        ))
    }
}

fn config_number<T: std::str::FromStr>(key: &str, default: T) -> T {
    env::config(key)
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn history() -> u64 {
    config_number("history", DEFAULT_HISTORY).clamp(1, MAX_HISTORY)
}

fn doc_key(channel: &str) -> String {
    format!("doc:{channel}")
}

fn op_key(channel: &str, rev: u64) -> String {
    format!("op:{channel}:{rev}")
}

fn load_document(channel: &str) -> Result<Document, HandlerError> {
    Ok(kv::get_json(&doc_key(channel))?.unwrap_or_default())
}

fn resync(message: String) -> HandlerError {
    HandlerError::new("resync", message)
}

/// The committed operations `from..=to`; `resync` when one is no longer kept.
fn committed_range(channel: &str, from: u64, to: u64) -> Result<Vec<Committed>, HandlerError> {
    let kept = history();
    if to.saturating_sub(from) >= kept {
        return Err(resync(format!(
            "revision {} is more than {kept} revisions behind {to}; fetch `collab:snapshot`",
            from.saturating_sub(1)
        )));
    }
    (from..=to)
        .map(|rev| {
            kv::get_json::<Committed>(&op_key(channel, rev))?.ok_or_else(|| {
                resync(format!(
                    "revision {rev} is no longer kept; fetch `collab:snapshot`"
                ))
            })
        })
        .collect()
}

fn submit(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    let payload: OpPayload = msg.payload()?;
    if payload.client_id.is_empty() || payload.client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(HandlerError::bad_request(format!(
            "`clientId` must be 1..{MAX_CLIENT_ID_BYTES} bytes"
        )));
    }
    require_member(conn, channel)?;
    let doc = load_document(channel)?;
    if payload.rev > doc.rev {
        return Err(HandlerError::bad_request(format!(
            "revision {} is ahead of the document ({})",
            payload.rev, doc.rev
        )));
    }
    let mut operation = payload.op;
    for concurrent in committed_range(channel, payload.rev + 1, doc.rev)? {
        if concurrent.client_id == payload.client_id && concurrent.op_id == payload.op_id {
            // A resend of an operation already committed: answer, do not apply twice.
            return Ok(Some(
                json!({"rev": concurrent.rev, "duplicate": true}).to_string(),
            ));
        }
        operation = transform(&operation, &concurrent.op)
            .map_err(|error| HandlerError::bad_request(error.to_string()))?
            .0;
    }
    let text = operation
        .apply(&doc.text)
        .map_err(|error| HandlerError::bad_request(error.to_string()))?;
    let max_chars = config_number("max_chars", DEFAULT_MAX_CHARS);
    if operation.target_len() > max_chars {
        return Err(HandlerError::bad_request(format!(
            "the document would exceed {max_chars} characters"
        )));
    }
    let committed = Committed {
        rev: doc.rev + 1,
        op: operation,
        client_id: payload.client_id,
        op_id: payload.op_id,
        user_id: conn.user_id.clone(),
    };
    // The operation first: a call that stops between the two writes leaves the document as it
    // was, and the next commit overwrites the orphan.
    kv::set_json(&op_key(channel, committed.rev), &committed, None)?;
    kv::set_json(
        &doc_key(channel),
        &Document {
            rev: committed.rev,
            text,
        },
        None,
    )?;
    if let Some(expired) = committed.rev.checked_sub(history()) {
        kv::delete(&op_key(channel, expired))?;
    }
    let encoded = json!(committed).to_string();
    realtime::broadcast(channel, "collab:op", &encoded, None)?;
    Ok(Some(json!({"rev": committed.rev}).to_string()))
}

fn snapshot(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    require_member(conn, channel)?;
    let doc = load_document(channel)?;
    Ok(Some(json!(doc).to_string()))
}

fn operations_since(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    let payload: OpsPayload = msg.payload()?;
    require_member(conn, channel)?;
    let doc = load_document(channel)?;
    if payload.since > doc.rev {
        return Err(HandlerError::bad_request(format!(
            "revision {} is ahead of the document ({})",
            payload.since, doc.rev
        )));
    }
    let ops = committed_range(channel, payload.since + 1, doc.rev)?;
    Ok(Some(json!({"rev": doc.rev, "ops": ops}).to_string()))
}

impl Plugin for Collab {
    fn describe() -> Manifest {
        Manifest::new(
            "collab",
            env!("CARGO_PKG_VERSION"),
            &["collab:op", "collab:snapshot", "collab:ops"],
        )
    }

    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        match msg.msg_type.as_str() {
            "collab:op" => submit(&conn, &msg),
            "collab:snapshot" => snapshot(&conn, &msg),
            "collab:ops" => operations_since(&conn, &msg),
            other => Err(HandlerError::new("unknown_type", other)),
        }
    }
}

export_plugin!(Collab);

#[cfg(test)]
mod tests;
