//! One live connection as the rest of the host sees it: its id, tenant and user, its outbox,
//! the rooms it is in, and the view of it plugins receive (built once per attachment). The
//! socket itself stays in the connection's task.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::ids::ConnId;
use crate::outbox::Outbox;
use crate::tenant::Tenant;
use crate::wit::ConnInfo;

/// One live connection as the rest of the host sees it; the socket stays in its task.
#[derive(Debug)]
pub struct ConnHandle {
    /// Its id.
    pub id: ConnId,
    /// Its tenant.
    pub tenant: Arc<Tenant>,
    /// The JWT `sub`.
    pub user_id: Arc<str>,
    /// All verified claims, as the JSON text plugins receive.
    pub claims_json: String,
    /// Small plugin-set state returned with every plugin call (at most 4 KiB).
    attachment: Mutex<Option<Vec<u8>>>,
    /// The `conn-info` plugins last saw, reused until the attachment changes: a plugin call
    /// then copies no strings on the host side.
    plugin_view: Mutex<Option<Arc<ConnInfo>>>,
    /// Frames waiting to be written.
    pub outbox: Outbox,
    /// Channels it is in (tenant-local names).
    pub rooms: Mutex<HashSet<Arc<str>>>,
    /// Unix milliseconds at the upgrade.
    pub connected_at_ms: u64,
}

impl ConnHandle {
    /// A connection with no attachment and no rooms.
    pub fn new(
        id: ConnId,
        tenant: Arc<Tenant>,
        user_id: Arc<str>,
        claims_json: String,
        connected_at_ms: u64,
    ) -> Self {
        let outbox = Outbox::new(
            tenant.limits.outbound_queue_messages,
            tenant.limits.outbound_queue_bytes,
        );
        ConnHandle {
            id,
            tenant,
            user_id,
            claims_json,
            attachment: Mutex::default(),
            plugin_view: Mutex::default(),
            outbox,
            rooms: Mutex::default(),
            connected_at_ms,
        }
    }

    /// Replaces the plugin-set attachment.
    pub fn set_attachment(&self, data: Vec<u8>) {
        *self.attachment.lock() = Some(data);
        *self.plugin_view.lock() = None;
    }

    /// The `conn-info` a plugin sees, built once per attachment.
    pub fn plugin_view(&self) -> Arc<ConnInfo> {
        let mut view = self.plugin_view.lock();
        view.get_or_insert_with(|| {
            Arc::new(ConnInfo {
                id: self.id.to_string(),
                user_id: self.user_id.to_string(),
                tenant: self.tenant.name.to_string(),
                claims_json: self.claims_json.clone(),
                attachment: self.attachment.lock().clone(),
                connected_at_ms: self.connected_at_ms,
            })
        })
        .clone()
    }
}
