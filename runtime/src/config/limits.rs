//! A tenant's `limits` table: connections, message rate and size, outbound queues and rooms.

use serde::Deserialize;

use super::Validator;

/// Limits of one tenant.
#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Live connections of this tenant on this node.
    pub max_connections: usize,
    /// Token bucket refill rate, messages per second.
    pub messages_per_second: f64,
    /// Token bucket capacity.
    pub burst: f64,
    /// Largest accepted message, after reassembly.
    pub max_message_bytes: usize,
    /// Outbound queue bound in messages.
    pub outbound_queue_messages: usize,
    /// Outbound queue bound in bytes.
    pub outbound_queue_bytes: usize,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
}

/// The default `limits.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default `limits.messages_per_second`.
pub const DEFAULT_MESSAGES_PER_SECOND: f64 = 100.0;
/// The default `limits.burst`.
pub const DEFAULT_BURST: f64 = 200.0;
/// The default `limits.max_message_bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The default `limits.outbound_queue_messages`.
pub const DEFAULT_OUTBOUND_QUEUE_MESSAGES: usize = 1024;
/// The default `limits.outbound_queue_bytes`.
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// The default `limits.max_rooms_per_connection`.
pub const DEFAULT_MAX_ROOMS_PER_CONNECTION: usize = 1000;

/// Smallest accepted `limits.burst`: a bucket must hold at least one message.
const MIN_BURST: f64 = 1.0;

/// The raw `[tenants.limits]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_connections: Option<i64>,
    messages_per_second: Option<f64>,
    burst: Option<f64>,
    max_message_bytes: Option<i64>,
    outbound_queue_messages: Option<i64>,
    outbound_queue_bytes: Option<i64>,
    max_rooms_per_connection: Option<i64>,
}

impl Validator<'_> {
    /// A tenant's `limits` table (`key` is `tenants[i].limits`).
    pub(super) fn limits(&mut self, key: &str, raw: RawLimits) -> TenantLimits {
        let messages_per_second = raw
            .messages_per_second
            .unwrap_or(DEFAULT_MESSAGES_PER_SECOND);
        if !(messages_per_second.is_finite() && messages_per_second > 0.0) {
            self.issue(
                format!("{key}.messages_per_second"),
                "must be a positive number",
            );
        }
        let burst = raw.burst.unwrap_or(DEFAULT_BURST);
        if !(burst.is_finite() && burst >= MIN_BURST) {
            self.issue(format!("{key}.burst"), "must be at least 1");
        }
        TenantLimits {
            max_connections: self.count(
                &format!("{key}.max_connections"),
                raw.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            ),
            messages_per_second,
            burst,
            max_message_bytes: self.positive(
                &format!("{key}.max_message_bytes"),
                raw.max_message_bytes,
                DEFAULT_MAX_MESSAGE_BYTES,
            ),
            outbound_queue_messages: self.positive(
                &format!("{key}.outbound_queue_messages"),
                raw.outbound_queue_messages,
                DEFAULT_OUTBOUND_QUEUE_MESSAGES,
            ),
            outbound_queue_bytes: self.positive(
                &format!("{key}.outbound_queue_bytes"),
                raw.outbound_queue_bytes,
                DEFAULT_OUTBOUND_QUEUE_BYTES,
            ),
            max_rooms_per_connection: self.positive(
                &format!("{key}.max_rooms_per_connection"),
                raw.max_rooms_per_connection,
                DEFAULT_MAX_ROOMS_PER_CONNECTION,
            ),
        }
    }
}
