//! The JSON bodies of the HTTP API (docs/protocol.md, "Publish API" and "Plugin API"): the
//! publish request and its answer, the plugin descriptions, the health answers. Error bodies
//! are `protocol::http_error_body`.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{EnvelopeError, check_channel, check_type};

/// Why a publish body was refused (a 400; the text is the answer's `message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The body is not a JSON object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// `tenant` is missing or not a string.
    #[error("`tenant` (a string) is required")]
    MissingTenant,
    /// `channel` is missing or not a string.
    #[error("`channel` (a string) is required")]
    MissingChannel,
    /// `type` is missing or not a string.
    #[error("`type` (a string) is required")]
    MissingType,
    /// `channel` or `type` is outside its length range.
    #[error("{0}")]
    Field(EnvelopeError),
    /// A field the server reads is given twice: which one counts would depend on the parser
    /// (a proxy or a log could read the other), so neither does.
    #[error("`{0}` is given twice")]
    Duplicate(&'static str),
}

/// The fields of a publish body the server reads, in the order it checks them.
const READ_FIELDS: [&str; 4] = ["tenant", "channel", "type", "payload"];

/// A body's top-level fields, and the first field the server reads that is given twice.
struct Fields<'a> {
    map: HashMap<String, &'a RawValue>,
    duplicate: Option<&'static str>,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut access: M,
            ) -> Result<Fields<'a>, M::Error> {
                let mut fields = Fields {
                    map: HashMap::new(),
                    duplicate: None,
                };
                while let Some((key, value)) = access.next_entry::<String, &'de RawValue>()? {
                    if let Some(read) = READ_FIELDS.iter().find(|read| **read == key)
                        && fields.map.contains_key(&key)
                    {
                        // The earliest in checking order wins, so refusals keep their order.
                        let rank = |field: &str| READ_FIELDS.iter().position(|f| *f == field);
                        if fields
                            .duplicate
                            .is_none_or(|first| rank(read) < rank(first))
                        {
                            fields.duplicate = Some(read);
                        }
                    }
                    fields.map.insert(key, value);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A `POST /api/publish` body, read in two steps so its refusals come in the documented order:
/// the tenant first (the API key is checked against it), then the message fields.
#[derive(Debug)]
pub struct PublishRequest<'a> {
    /// The tenant named in the body.
    pub tenant: String,
    /// The other top-level fields, still raw, so the payload is forwarded byte for byte (key
    /// order, big numbers).
    fields: HashMap<String, &'a RawValue>,
    /// A message field given twice, refused when the message is read.
    duplicate: Option<&'static str>,
}

/// The message of a publish body, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishMessage<'a> {
    /// The channel to publish on.
    pub channel: String,
    /// The message type.
    pub msg_type: String,
    /// The payload as raw JSON; `None` when absent or `null`.
    pub payload: Option<&'a str>,
}

impl<'a> PublishRequest<'a> {
    /// Reads the body as a JSON object and takes its `tenant`.
    pub fn parse(body: &'a [u8]) -> Result<Self, PublishError> {
        let Fields {
            map: mut fields,
            duplicate,
        } = serde_json::from_slice::<Fields<'a>>(body).map_err(|_| PublishError::NotAnObject)?;
        if duplicate == Some("tenant") {
            return Err(PublishError::Duplicate("tenant"));
        }
        let tenant = fields
            .remove("tenant")
            .and_then(json_string)
            .ok_or(PublishError::MissingTenant)?;
        Ok(PublishRequest {
            tenant,
            fields,
            duplicate,
        })
    }

    /// Checks `channel`, `type` and `payload`, in that order (a field given twice first).
    pub fn message(mut self) -> Result<PublishMessage<'a>, PublishError> {
        if let Some(field) = self.duplicate {
            return Err(PublishError::Duplicate(field));
        }
        let channel = self
            .fields
            .remove("channel")
            .and_then(json_string)
            .ok_or(PublishError::MissingChannel)?;
        check_channel(&channel).map_err(PublishError::Field)?;
        let msg_type = self
            .fields
            .remove("type")
            .and_then(json_string)
            .ok_or(PublishError::MissingType)?;
        check_type(&msg_type).map_err(PublishError::Field)?;
        let payload = self
            .fields
            .remove("payload")
            .map(RawValue::get)
            .filter(|raw| *raw != "null");
        Ok(PublishMessage {
            channel,
            msg_type,
            payload,
        })
    }
}

/// The text of a JSON string; `None` for any other JSON value.
fn json_string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

/// The body of a successful publish: `{"seq":N}`.
pub fn publish_answer(seq: u64) -> String {
    let mut out = String::with_capacity(28);
    // Writing to a String cannot fail.
    let _ = write!(out, r#"{{"seq":{seq}}}"#);
    out
}

/// What the plugin API reports about a loaded plugin.
///
/// The fields are declared in byte order of their names: the order the API has always
/// answered with (it was a `serde_json::Value` map, which sorts its keys).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginInfo<'a> {
    /// Calls made.
    pub calls: u64,
    /// Compile time in milliseconds.
    pub compile_ms: f64,
    /// Calls that trapped or timed out.
    pub errors: u64,
    /// The whole load (compile, link, validate) in milliseconds.
    pub load_ms: f64,
    /// When it was loaded (Unix milliseconds).
    pub loaded_at_ms: u64,
    /// The plugin's name, as `describe` declared it.
    pub name: &'a str,
    /// Where it came from (a file, or `upload:{name}`).
    pub path: String,
    /// Hex SHA-256 of the component bytes.
    pub sha256: &'a str,
    /// `file` when its configured file decides its version, `api` once a deploy, rollback or
    /// delete through the API recorded it in the desired state.
    pub source: &'static str,
    /// Which compiler made its code: `baseline` or `optimized`.
    pub tier: &'static str,
    /// The message types it handles.
    pub types: &'a [String],
    /// The version it declares.
    pub version: &'a str,
    /// Times a call gave up its worker thread at an epoch tick.
    pub yields: u64,
}

impl PluginInfo<'_> {
    /// The body describing one plugin (the answer to an upload).
    pub fn to_json(&self) -> String {
        // Serialising plain fields into a String cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// What one node serves of a plugin (the list's `nodes`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeServing<'a> {
    /// The node's id.
    pub node: &'a str,
    /// The version it serves (`null`: none).
    pub version: Option<&'a str>,
    /// The SHA-256 of the component it serves.
    pub sha256: Option<&'a str>,
    /// `baseline` or `optimized`.
    pub tier: Option<&'a str>,
    /// Why the deployed version did not load there (it keeps the version it had).
    pub error: Option<&'a str>,
}

/// A plugin in the list: what this node serves, and, for a deployed one, every live node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedPlugin<'a> {
    /// This node's version.
    #[serde(flatten)]
    pub info: PluginInfo<'a>,
    /// Every live node's version (a plugin deployed through the API; empty for a file's).
    pub nodes: Vec<NodeServing<'a>>,
}

/// The body listing a tenant's plugins: a JSON array of `ListedPlugin`.
pub fn plugin_list(plugins: &[ListedPlugin<'_>]) -> String {
    // Serialising plain fields into a String cannot fail.
    serde_json::to_string(plugins).unwrap_or_else(|_| "[]".to_owned())
}

/// A kept version of a plugin (`GET .../plugins/{name}/history`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptVersion<'a> {
    /// The version it declares.
    pub version: &'a str,
    /// The SHA-256 of its component.
    pub sha256: &'a str,
    /// The SHA-256 of the bytes as uploaded (its address in the state store).
    pub blob: &'a str,
    /// The upload's size.
    pub bytes: usize,
    /// When it was last deployed (Unix milliseconds; a configured file's version: when it
    /// was loaded).
    pub deployed_at_ms: u64,
    /// Whether it is the version that should serve.
    pub active: bool,
}

/// The body of a plugin's history: `{"name", "deleted", "versions": [...]}`, newest first.
pub fn plugin_history(name: &str, deleted: bool, versions: &[KeptVersion<'_>]) -> String {
    #[derive(Serialize)]
    struct History<'a> {
        name: &'a str,
        deleted: bool,
        versions: &'a [KeptVersion<'a>],
    }
    // Serialising plain fields into a String cannot fail.
    serde_json::to_string(&History {
        name,
        deleted,
        versions,
    })
    .unwrap_or_else(|_| "{}".to_owned())
}

/// The body of `/healthz` and of a ready `/readyz`: `{"status":...}`.
pub fn status_body(status: &str) -> String {
    let mut out = String::from(r#"{"status":"#);
    super::json_string(&mut out, status);
    out.push('}');
    out
}
