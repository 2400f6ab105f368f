//! A mock host for native unit tests of plugin logic (`cargo test`, not wasm32). Every host
//! call lands in a thread-local [`MockHost`] that a test sets up and inspects.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::{ConnInfo, Frame, HostError, LogLevel, Message};

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
    /// Every `frames::send`, as (connection, frame).
    pub frames_sent: Vec<(String, Frame)>,
    /// Every `frames::broadcast`, as (channel, frame, except).
    pub frames_broadcast: Vec<(String, Frame, Option<String>)>,
    /// Every `close`, as (connection, code, reason).
    pub closes: Vec<(String, u16, String)>,
    /// Attachments by connection.
    pub attachments: HashMap<String, Vec<u8>>,
    /// The key-value store's values (a test may put entries here directly; they get a
    /// version when first read and never expire).
    pub kv: HashMap<String, Vec<u8>>,
    /// The host's per-call quotas and store bounds, as a tenant's `plugin_limits` sets them.
    pub limits: MockLimits,
    /// Every log line.
    pub logs: Vec<(LogLevel, String)>,
    /// The fields of every log line, at the same index as in `logs`.
    pub log_fields: Vec<Vec<(String, String)>>,
    /// Config values answered by `env::config`.
    pub config: HashMap<String, String>,
    /// The clock answered by `env::now_ms`.
    pub now_ms: u64,
    seqs: HashMap<String, u64>,
    kv_meta: HashMap<String, EntryMeta>,
    kv_version: u64,
    kv_ops: u32,
}

/// The limits the mock host enforces, with the host's defaults. The key-value store's fixed
/// bounds ([`crate::kv::MAX_KEY_BYTES`] and the rest) apply as on a real host.
#[derive(Debug, Clone)]
pub struct MockLimits {
    /// `plugin_limits.max_kv_ops_per_call`: key-value operations from one [`begin_call`] (or
    /// [`reset`]) to the next.
    pub max_kv_ops_per_call: u32,
    /// `plugin_limits.kv_max_bytes`: what the namespace may hold.
    pub kv_max_bytes: usize,
}

impl Default for MockLimits {
    fn default() -> Self {
        MockLimits {
            max_kv_ops_per_call: 1000,
            kv_max_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct EntryMeta {
    version: u64,
    /// `now_ms` from which the entry is gone.
    expires_at_ms: Option<u64>,
}

/// Starts a new call as the host would: the per-call quotas start again.
pub fn begin_call() {
    with(|host| host.kv_ops = 0);
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
pub mod raw_frames {
    use super::{Frame, HostError, with};

    pub fn send_frame(to: &str, frame: &Frame) -> Result<(), HostError> {
        with(|host| host.frames_sent.push((to.to_owned(), frame.clone())));
        Ok(())
    }

    pub fn broadcast_frame(
        channel: &str,
        frame: &Frame,
        except: Option<&str>,
    ) -> Result<(), HostError> {
        with(|host| {
            host.frames_broadcast.push((
                channel.to_owned(),
                frame.clone(),
                except.map(str::to_owned),
            ))
        });
        Ok(())
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
    use super::{EntryMeta, HostError, MockHost, with};
    use crate::kv::{ENTRY_COST, MAX_ENTRIES, MAX_KEY_BYTES, MAX_LIST_PAGE, MAX_VALUE_BYTES};

    pub struct Versioned {
        pub value: Vec<u8>,
        pub version: u64,
    }

    pub struct KeyPage {
        pub keys: Vec<String>,
        pub more: bool,
    }

    enum Expected {
        Any,
        Absent,
        Version(u64),
    }

    impl MockHost {
        /// Counts one operation against the quota, checks the key and drops what expired.
        fn kv_begin(&mut self, key: Option<&str>) -> Result<(), HostError> {
            if self.kv_ops >= self.limits.max_kv_ops_per_call {
                return Err(HostError::RateLimited);
            }
            self.kv_ops += 1;
            if let Some(key) = key
                && (key.is_empty() || key.len() > MAX_KEY_BYTES)
            {
                return Err(HostError::Invalid(format!(
                    "keys are 1..{MAX_KEY_BYTES} bytes"
                )));
            }
            let now = self.now_ms;
            let expired: Vec<String> = self
                .kv_meta
                .iter()
                .filter(|(_, meta)| meta.expires_at_ms.is_some_and(|at| now >= at))
                .map(|(key, _)| key.clone())
                .collect();
            for key in expired {
                self.kv.remove(&key);
                self.kv_meta.remove(&key);
            }
            Ok(())
        }

        fn version_of(&mut self, key: &str) -> Option<u64> {
            self.kv.get(key)?;
            if !self.kv_meta.contains_key(key) {
                self.kv_version += 1;
                let meta = EntryMeta {
                    version: self.kv_version,
                    expires_at_ms: None,
                };
                self.kv_meta.insert(key.to_owned(), meta);
            }
            self.kv_meta.get(key).map(|meta| meta.version)
        }

        fn kv_write(
            &mut self,
            key: &str,
            expected: Expected,
            value: Vec<u8>,
            expires_at_ms: Option<u64>,
        ) -> Result<Option<u64>, HostError> {
            if value.len() > MAX_VALUE_BYTES {
                return Err(HostError::TooLarge);
            }
            let current = self.version_of(key);
            let matches = match expected {
                Expected::Any => true,
                Expected::Absent => current.is_none(),
                Expected::Version(version) => current == Some(version),
            };
            if !matches {
                return Ok(None);
            }
            let cost = |key: &str, value: &[u8]| key.len() + value.len() + ENTRY_COST;
            let held: usize = self.kv.iter().map(|(key, value)| cost(key, value)).sum();
            let replaced = self.kv.get(key).map_or(0, |old| cost(key, old));
            if (current.is_none() && self.kv.len() >= MAX_ENTRIES)
                || held - replaced + cost(key, &value) > self.limits.kv_max_bytes
            {
                return Err(HostError::TooLarge);
            }
            self.kv_version += 1;
            let version = self.kv_version;
            self.kv.insert(key.to_owned(), value);
            self.kv_meta.insert(
                key.to_owned(),
                EntryMeta {
                    version,
                    expires_at_ms,
                },
            );
            Ok(Some(version))
        }

        fn expiry(&self, ttl_ms: Option<u64>) -> Option<u64> {
            ttl_ms.map(|ttl| self.now_ms.saturating_add(ttl))
        }
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
        with(|host| {
            host.kv_begin(Some(key))?;
            Ok(host.kv.get(key).cloned())
        })
    }

    pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), HostError> {
        with(|host| {
            host.kv_begin(Some(key))?;
            let expires = host.expiry(ttl_ms);
            host.kv_write(key, Expected::Any, value.to_vec(), expires)
                .map(drop)
        })
    }

    pub fn delete(key: &str) -> Result<bool, HostError> {
        with(|host| {
            host.kv_begin(Some(key))?;
            host.kv_meta.remove(key);
            Ok(host.kv.remove(key).is_some())
        })
    }

    pub fn incr(key: &str, delta: i64) -> Result<i64, HostError> {
        with(|host| {
            host.kv_begin(Some(key))?;
            let current = match host.kv.get(key) {
                None => 0,
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| HostError::Invalid("the value is not an integer".to_owned()))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| HostError::Invalid("integer overflow".to_owned()))?;
            let expires = host.kv_meta.get(key).and_then(|meta| meta.expires_at_ms);
            host.kv_write(key, Expected::Any, next.to_string().into_bytes(), expires)?;
            Ok(next)
        })
    }

    pub fn get_versioned(key: &str) -> Result<Option<Versioned>, HostError> {
        with(|host| {
            host.kv_begin(Some(key))?;
            let Some(version) = host.version_of(key) else {
                return Ok(None);
            };
            let value = host.kv.get(key).cloned().unwrap_or_default();
            Ok(Some(Versioned { value, version }))
        })
    }

    pub fn compare_and_set(
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, HostError> {
        with(|host| {
            host.kv_begin(Some(key))?;
            let expected = expected.map_or(Expected::Absent, Expected::Version);
            let expires = host.expiry(ttl_ms);
            host.kv_write(key, expected, value.to_vec(), expires)
        })
    }

    pub fn compare_and_delete(key: &str, expected: u64) -> Result<bool, HostError> {
        with(|host| {
            host.kv_begin(Some(key))?;
            if host.version_of(key) != Some(expected) {
                return Ok(false);
            }
            host.kv_meta.remove(key);
            Ok(host.kv.remove(key).is_some())
        })
    }

    pub fn list(prefix: &str, after: Option<&str>, limit: u32) -> Result<KeyPage, HostError> {
        with(|host| {
            host.kv_begin(None)?;
            if prefix.len() > MAX_KEY_BYTES
                || after.is_some_and(|after| after.len() > MAX_KEY_BYTES)
            {
                return Err(HostError::Invalid(format!(
                    "prefixes and cursors are at most {MAX_KEY_BYTES} bytes"
                )));
            }
            if !(1..=MAX_LIST_PAGE).contains(&limit) {
                return Err(HostError::Invalid(format!(
                    "a page holds 1..{MAX_LIST_PAGE} keys"
                )));
            }
            let mut keys: Vec<String> = host
                .kv
                .keys()
                .filter(|key| key.starts_with(prefix))
                .filter(|key| after.is_none_or(|after| key.as_str() > after))
                .cloned()
                .collect();
            keys.sort_unstable();
            let more = keys.len() > limit as usize;
            keys.truncate(limit as usize);
            Ok(KeyPage { keys, more })
        })
    }
}

#[doc(hidden)]
pub mod logging {
    use super::{LogLevel, with};

    pub fn log(level: LogLevel, message: &str, fields: &[(String, String)]) {
        with(|host| {
            host.logs.push((level, message.to_owned()));
            host.log_fields.push(fields.to_vec());
        });
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
