//! A mock host for native unit tests of plugin logic (`cargo test`, not wasm32). Every host
//! call lands in a thread-local [`MockHost`] that a test sets up and inspects.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::{ConnInfo, HostError, LogLevel, Message};

/// A recorded `send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Target connection.
    pub to: String,
    /// Envelope type.
    pub msg_type: String,
    /// Channel, if any.
    pub channel: Option<String>,
    /// Payload JSON.
    pub payload_json: String,
}

/// A recorded `broadcast`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    /// Channel.
    pub channel: String,
    /// Envelope type.
    pub msg_type: String,
    /// Payload JSON.
    pub payload_json: String,
    /// Excluded connection.
    pub except: Option<String>,
    /// The `seq` handed back.
    pub seq: u64,
}

/// What the plugin did and what the host answers.
#[derive(Debug, Default)]
pub struct MockHost {
    /// Every `send`.
    pub sent: Vec<Sent>,
    /// Every `send_to_user`, as (user, type, payload).
    pub sent_to_users: Vec<(String, String, String)>,
    /// Every `broadcast`.
    pub broadcasts: Vec<Broadcast>,
    /// Members per channel, as (connection id, user id); `join`/`leave` update it.
    pub members: HashMap<String, Vec<(String, String)>>,
    /// Every `close`, as (connection, code, reason).
    pub closes: Vec<(String, u16, String)>,
    /// Attachments by connection.
    pub attachments: HashMap<String, Vec<u8>>,
    /// The key-value store.
    pub kv: HashMap<String, Vec<u8>>,
    /// Every log line.
    pub logs: Vec<(LogLevel, String)>,
    /// Config values answered by `env::config`.
    pub config: HashMap<String, String>,
    /// The clock answered by `env::now_ms`.
    pub now_ms: u64,
    seqs: HashMap<String, u64>,
}

thread_local! {
    static HOST: RefCell<MockHost> = RefCell::new(MockHost::default());
}

/// Replaces the mock host with a fresh one.
pub fn reset() {
    HOST.with(|host| *host.borrow_mut() = MockHost::default());
}

/// Reads or changes the mock host.
pub fn with<R>(f: impl FnOnce(&mut MockHost) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// A connection as the host would describe it.
pub fn conn(id: &str, user_id: &str, claims: serde_json::Value) -> ConnInfo {
    ConnInfo {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        tenant: "default".to_owned(),
        claims_json: claims.to_string(),
        attachment: None,
        connected_at_ms: 0,
    }
}

/// A message as the host would pass it.
pub fn message(msg_type: &str, channel: Option<&str>, payload: serde_json::Value) -> Message {
    Message {
        msg_type: msg_type.to_owned(),
        channel: channel.map(str::to_owned),
        payload_json: payload.to_string(),
        correlation_id: None,
        received_at_ms: 0,
    }
}

#[doc(hidden)]
pub mod realtime {
    use super::{Broadcast, HostError, Sent, with};

    pub fn send(
        to: &str,
        msg_type: &str,
        channel: Option<&str>,
        payload_json: &str,
    ) -> Result<(), HostError> {
        with(|host| {
            host.sent.push(Sent {
                to: to.to_owned(),
                msg_type: msg_type.to_owned(),
                channel: channel.map(str::to_owned),
                payload_json: payload_json.to_owned(),
            })
        });
        Ok(())
    }

    pub fn send_to_user(
        user_id: &str,
        msg_type: &str,
        payload_json: &str,
    ) -> Result<u32, HostError> {
        with(|host| {
            host.sent_to_users.push((
                user_id.to_owned(),
                msg_type.to_owned(),
                payload_json.to_owned(),
            ))
        });
        Ok(1)
    }

    pub fn broadcast(
        channel: &str,
        msg_type: &str,
        payload_json: &str,
        except: Option<&str>,
    ) -> Result<u64, HostError> {
        with(|host| {
            let seq = host.seqs.entry(channel.to_owned()).or_default();
            *seq += 1;
            let seq = *seq;
            host.broadcasts.push(Broadcast {
                channel: channel.to_owned(),
                msg_type: msg_type.to_owned(),
                payload_json: payload_json.to_owned(),
                except: except.map(str::to_owned),
                seq,
            });
            Ok(seq)
        })
    }

    pub fn join(who: &str, channel: &str) -> Result<(), HostError> {
        with(|host| {
            let members = host.members.entry(channel.to_owned()).or_default();
            if !members.iter().any(|(id, _)| id == who) {
                members.push((who.to_owned(), String::new()));
            }
        });
        Ok(())
    }

    pub fn leave(who: &str, channel: &str) -> Result<(), HostError> {
        with(|host| {
            let members = host.members.entry(channel.to_owned()).or_default();
            let before = members.len();
            members.retain(|(id, _)| id != who);
            if members.len() == before {
                Err(HostError::NotFound)
            } else {
                Ok(())
            }
        })
    }

    pub fn close(who: &str, code: u16, reason: &str) -> Result<(), HostError> {
        with(|host| host.closes.push((who.to_owned(), code, reason.to_owned())));
        Ok(())
    }

    pub fn set_attachment(who: &str, data: &[u8]) -> Result<(), HostError> {
        if data.len() > 4096 {
            return Err(HostError::TooLarge);
        }
        with(|host| host.attachments.insert(who.to_owned(), data.to_vec()));
        Ok(())
    }

    pub fn members(channel: &str) -> Result<Vec<(String, String)>, HostError> {
        Ok(with(|host| {
            host.members.get(channel).cloned().unwrap_or_default()
        }))
    }
}

#[doc(hidden)]
pub mod kv {
    use super::{HostError, with};

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(with(|host| host.kv.get(key).cloned()))
    }

    pub fn set(key: &str, value: &[u8], _ttl_ms: Option<u64>) -> Result<(), HostError> {
        with(|host| host.kv.insert(key.to_owned(), value.to_vec()));
        Ok(())
    }

    pub fn delete(key: &str) -> Result<bool, HostError> {
        Ok(with(|host| host.kv.remove(key).is_some()))
    }

    pub fn incr(key: &str, delta: i64) -> Result<i64, HostError> {
        with(|host| {
            let current = match host.kv.get(key) {
                None => 0,
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| HostError::Invalid("not an integer".to_owned()))?,
            };
            let next = current.saturating_add(delta);
            host.kv
                .insert(key.to_owned(), next.to_string().into_bytes());
            Ok(next)
        })
    }
}

#[doc(hidden)]
pub mod logging {
    use super::{LogLevel, with};

    pub fn log(level: LogLevel, message: &str, _fields: &[(String, String)]) {
        with(|host| host.logs.push((level, message.to_owned())));
    }
}

#[doc(hidden)]
pub mod env {
    use super::with;

    pub fn now_ms() -> u64 {
        with(|host| host.now_ms)
    }

    pub fn config_get(key: &str) -> Option<String> {
        with(|host| host.config.get(key).cloned())
    }
}
