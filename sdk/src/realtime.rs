//! Side effects on connections and channels, always within the plugin's tenant.

#[cfg(target_arch = "wasm32")]
use crate::__bindings::switchboard::plugin::realtime as host;
use crate::HostError;
#[cfg(not(target_arch = "wasm32"))]
use crate::mock::realtime as host;

/// Sends an envelope to one connection.
pub fn send(
    to: &str,
    msg_type: &str,
    channel: Option<&str>,
    payload_json: &str,
) -> Result<(), HostError> {
    host::send(to, msg_type, channel, payload_json)
}

/// Sends an envelope to every connection of a user; returns how many got it.
pub fn send_to_user(user_id: &str, msg_type: &str, payload_json: &str) -> Result<u32, HostError> {
    host::send_to_user(user_id, msg_type, payload_json)
}

/// Publishes to every member of a channel (except `except`); returns the message's `seq`.
pub fn broadcast(
    channel: &str,
    msg_type: &str,
    payload_json: &str,
    except: Option<&str>,
) -> Result<u64, HostError> {
    host::broadcast(channel, msg_type, payload_json, except)
}

/// Joins a connection to a channel on its behalf.
pub fn join(who: &str, channel: &str) -> Result<(), HostError> {
    host::join(who, channel)
}

/// Removes a connection from a channel.
pub fn leave(who: &str, channel: &str) -> Result<(), HostError> {
    host::leave(who, channel)
}

/// Closes a connection with a close code (4000-4999 for application codes) and reason.
pub fn close(who: &str, code: u16, reason: &str) -> Result<(), HostError> {
    host::close(who, code, reason)
}

/// Stores up to 4 KiB with the connection; it comes back in every `ConnInfo`.
pub fn set_attachment(who: &str, data: &[u8]) -> Result<(), HostError> {
    host::set_attachment(who, data)
}

/// `(connection id, user id)` of every member of a channel.
pub fn members(channel: &str) -> Result<Vec<(String, String)>, HostError> {
    host::members(channel)
}
