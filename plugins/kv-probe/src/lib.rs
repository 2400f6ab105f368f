//! `kv-probe`: a test plugin that runs a script of key-value operations and answers what each
//! one returned, so the same script (`conformance.json`) can be run against the mock host, a
//! node's memory store and the Redis store, and their answers compared.
//!
//! `kv:run` takes `{"ops": [op, ...]}` and answers `{"results": [result, ...]}`: one result per
//! op, either what the operation returned or `{"error": code}` (the code a plugin's `?` would
//! give the client). Ops: `get`, `set`, `delete`, `incr`, `get_versioned`, `cas`,
//! `cas_delete`, `list`, `get_json` (decodes `{"n": number}`); a value is `value` (text) or
//! `fill` (that many `x`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_sdk::{
    ConnInfo, HandlerError, HostError, Manifest, Message, Plugin, Request, Router, export_plugin,
    kv,
};

/// The plugin.
pub struct KvProbe;

/// One operation of a script.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    /// `kv::get`.
    Get { key: String },
    /// `kv::set`.
    Set {
        key: String,
        #[serde(flatten)]
        value: Fill,
        ttl: Option<u64>,
    },
    /// `kv::delete`.
    Delete { key: String },
    /// `kv::incr`.
    Incr { key: String, delta: i64 },
    /// `kv::get_versioned`.
    GetVersioned { key: String },
    /// `kv::compare_and_set`.
    Cas {
        key: String,
        expected: Option<u64>,
        #[serde(flatten)]
        value: Fill,
        ttl: Option<u64>,
    },
    /// `kv::compare_and_delete`.
    CasDelete { key: String, expected: u64 },
    /// `kv::list`.
    List {
        prefix: String,
        after: Option<String>,
        limit: u32,
    },
    /// `kv::get_json` into [`Record`].
    GetJson { key: String },
}

/// A value to write: given, or `fill` bytes of `x`.
#[derive(Deserialize)]
struct Fill {
    value: Option<String>,
    fill: Option<usize>,
}

impl Fill {
    fn bytes(&self) -> Vec<u8> {
        match (&self.value, self.fill) {
            (Some(value), _) => value.clone().into_bytes(),
            (None, Some(fill)) => vec![b'x'; fill],
            (None, None) => Vec::new(),
        }
    }
}

/// The record `get_json` decodes.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Record {
    n: u64,
}

#[derive(Deserialize)]
struct Script {
    ops: Vec<Op>,
}

#[derive(Serialize)]
struct Results {
    results: Vec<Value>,
}

fn text(bytes: Vec<u8>) -> Value {
    Value::String(String::from_utf8_lossy(&bytes).into_owned())
}

fn run(op: &Op) -> Result<Value, HostError> {
    Ok(match op {
        Op::Get { key } => kv::get(key)?.map_or(Value::Null, text),
        Op::Set { key, value, ttl } => {
            kv::set(key, &value.bytes(), *ttl)?;
            Value::Bool(true)
        }
        Op::Delete { key } => Value::Bool(kv::delete(key)?),
        Op::Incr { key, delta } => json!(kv::incr(key, *delta)?),
        Op::GetVersioned { key } => kv::get_versioned(key)?.map_or(
            Value::Null,
            |entry| json!({"value": text(entry.value), "version": entry.version}),
        ),
        Op::Cas {
            key,
            expected,
            value,
            ttl,
        } => json!(kv::compare_and_set(key, *expected, &value.bytes(), *ttl)?),
        Op::CasDelete { key, expected } => Value::Bool(kv::compare_and_delete(key, *expected)?),
        Op::List {
            prefix,
            after,
            limit,
        } => {
            let page = kv::list(prefix, after.as_deref(), *limit)?;
            json!({"keys": page.keys, "more": page.more})
        }
        Op::GetJson { key } => json!(kv::get_json::<Record>(key)?),
    })
}

/// Runs `ops` in order; each answer is the operation's result or `{"error": code}`.
pub(crate) fn run_script(ops: &[Op]) -> Vec<Value> {
    ops.iter()
        .map(|op| run(op).unwrap_or_else(|error| json!({"error": HandlerError::from(error).code})))
        .collect()
}

fn router() -> Router {
    Router::new("kv-probe", env!("CARGO_PKG_VERSION")).on("kv:run", |request: Request<Script>| {
        Ok(Results {
            results: run_script(&request.payload.ops),
        })
    })
}

impl Plugin for KvProbe {
    fn describe() -> Manifest {
        router().manifest()
    }

    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        router().handle(conn, msg)
    }
}

export_plugin!(KvProbe);

#[cfg(test)]
mod tests;
