//! `collab`: a shared plain-text document per channel, edited concurrently through operational
//! transformation. `collab:op` carries an operation made against a revision the client has
//! seen; the plugin transforms it against the operations committed since, applies it, gives it
//! the next revision and broadcasts it to the channel as `collab:op`. `collab:snapshot` answers
//! the text and its revision, `collab:ops` the committed operations after a revision (catch-up).
//!
//! State lives in the key-value store, and the log of operations is the truth:
//! `op:{channel}:{rev}` (the revision zero-padded to 20 digits, so keys sort by revision)
//! holds each committed operation, the last `history` of them (config, default 200, at most
//! 900), and `doc:{channel}` holds a snapshot `{rev, text}` that may lag the log by a few
//! revisions. A client further behind than the history gets the error `resync` and must start
//! again from `collab:snapshot`. Positions count Unicode scalar values (see [`ot`]).
//!
//! Calls may overlap, on one node or many: an operation is committed by creating its
//! revision's key with compare-and-set (absent), so of two calls that transformed against the
//! same revision exactly one gets it, and the other reads the log again, transforms once more
//! and retries. Readers roll the snapshot forward through the log; a committer moves the
//! snapshot with compare-and-set and trims the log only behind a snapshot it wrote. A resent
//! operation that was already committed (same `clientId` and `opId`) is answered with its
//! revision and not applied twice.

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

fn op_prefix(channel: &str) -> String {
    format!("op:{channel}:")
}

fn op_key(channel: &str, rev: u64) -> String {
    format!("{}{rev:020}", op_prefix(channel))
}

/// A document as the log has it, and the snapshot it was rolled forward from.
struct Loaded {
    doc: Document,
    /// The snapshot's version (`None`: no snapshot yet), for moving it with compare-and-set.
    snapshot_version: Option<u64>,
}

/// The snapshot, rolled forward through the operations committed after it.
fn load_document(channel: &str) -> Result<Loaded, HandlerError> {
    let snapshot = kv::get_json_versioned::<Document>(&doc_key(channel))?;
    let snapshot_version = snapshot.as_ref().map(|entry| entry.version);
    let mut doc = snapshot.map(|entry| entry.value).unwrap_or_default();
    for _ in 0..MAX_HISTORY {
        let Some(next) = kv::get_json::<Committed>(&op_key(channel, doc.rev + 1))? else {
            return Ok(Loaded {
                doc,
                snapshot_version,
            });
        };
        doc.text = next
            .op
            .apply(&doc.text)
            .map_err(|error| HandlerError::internal(format!("revision {}: {error}", next.rev)))?;
        doc.rev = next.rev;
    }
    Err(HandlerError::unavailable(format!(
        "the snapshot of `{channel}` is more than {MAX_HISTORY} revisions behind its log"
    )))
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

/// Attempts to commit one operation before it is refused with `conflict` (the client resends).
const COMMIT_ATTEMPTS: u32 = 8;
/// Old operations one commit deletes at most, so a backlog drains a little per commit.
const TRIM_PER_COMMIT: u32 = 8;

fn submit(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    let payload: OpPayload = msg.payload()?;
    if payload.client_id.is_empty() || payload.client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(HandlerError::bad_request(format!(
            "`clientId` must be 1..{MAX_CLIENT_ID_BYTES} bytes"
        )));
    }
    require_member(conn, channel)?;
    for _ in 0..COMMIT_ATTEMPTS {
        let Loaded {
            doc,
            snapshot_version,
        } = load_document(channel)?;
        if payload.rev > doc.rev {
            return Err(HandlerError::bad_request(format!(
                "revision {} is ahead of the document ({})",
                payload.rev, doc.rev
            )));
        }
        let mut operation = payload.op.clone();
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
            client_id: payload.client_id.clone(),
            op_id: payload.op_id,
            user_id: conn.user_id.clone(),
        };
        let claimed =
            kv::compare_and_set_json(&op_key(channel, committed.rev), None, &committed, None)?;
        if claimed.is_none() {
            // Another call committed this revision first: read the log again.
            continue;
        }
        let snapshot = Document {
            rev: committed.rev,
            text,
        };
        let moved = kv::compare_and_set_json(&doc_key(channel), snapshot_version, &snapshot, None)?;
        if moved.is_some() {
            // Only behind a snapshot this call wrote: a reader never needs what is deleted.
            trim(channel, committed.rev.saturating_sub(history()))?;
        }
        let encoded = json!(committed).to_string();
        realtime::broadcast(channel, "collab:op", &encoded, None)?;
        return Ok(Some(json!({"rev": committed.rev}).to_string()));
    }
    Err(HandlerError::conflict(format!(
        "`{channel}` changed under {COMMIT_ATTEMPTS} attempts in a row; send the operation again"
    )))
}

/// Deletes the oldest kept operations up to revision `upto`, a few at a time.
fn trim(channel: &str, upto: u64) -> Result<(), HandlerError> {
    if upto == 0 {
        return Ok(());
    }
    let page = kv::list(&op_prefix(channel), None, TRIM_PER_COMMIT)?;
    for key in page.keys {
        if key > op_key(channel, upto) {
            break;
        }
        kv::delete(&key)?;
    }
    Ok(())
}

fn snapshot(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    require_member(conn, channel)?;
    let doc = load_document(channel)?.doc;
    Ok(Some(json!(doc).to_string()))
}

fn operations_since(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    let payload: OpsPayload = msg.payload()?;
    require_member(conn, channel)?;
    let doc = load_document(channel)?.doc;
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
