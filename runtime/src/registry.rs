//! Live connections of this node: by id and by (tenant, user). Add, remove, look up; nothing
//! else. Sharded maps, so no global lock sits on the message path.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::outbox::Outbox;
use crate::plugins::bindings::ConnInfo;
use crate::tenant::Tenant;

/// A cluster-unique connection id: this node's id and a counter.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(Arc<str>);

impl ConnId {
    /// The id as text, as clients and plugins see it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({})", self.0)
    }
}

impl From<&str> for ConnId {
    fn from(text: &str) -> Self {
        ConnId(Arc::from(text))
    }
}

/// Mints connection ids unique across nodes and restarts.
#[derive(Debug)]
pub struct ConnIdGenerator {
    node: String,
    counter: AtomicU64,
}

impl ConnIdGenerator {
    /// A generator for the node with this id.
    pub fn new(node: &str) -> Self {
        ConnIdGenerator {
            node: node.to_owned(),
            counter: AtomicU64::new(0),
        }
    }

    /// The next id.
    pub fn next_id(&self) -> ConnId {
        let number = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        ConnId(Arc::from(format!("{}-{number:x}", self.node)))
    }
}

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

/// Live connections of this node.
#[derive(Debug, Default)]
pub struct Registry {
    by_id: DashMap<ConnId, Arc<ConnHandle>>,
    by_user: DashMap<(Arc<str>, Arc<str>), Vec<ConnId>>,
}

impl Registry {
    /// Adds a connection.
    pub fn insert(&self, conn: Arc<ConnHandle>) {
        self.by_user
            .entry((conn.tenant.name.clone(), conn.user_id.clone()))
            .or_default()
            .push(conn.id.clone());
        self.by_id.insert(conn.id.clone(), conn);
    }

    /// Removes a connection; returns it if it was there.
    pub fn remove(&self, id: &ConnId) -> Option<Arc<ConnHandle>> {
        let (_, conn) = self.by_id.remove(id)?;
        let user_key = (conn.tenant.name.clone(), conn.user_id.clone());
        self.by_user.remove_if_mut(&user_key, |_, ids| {
            ids.retain(|other| other != id);
            ids.is_empty()
        });
        Some(conn)
    }

    /// Looks a connection up by id.
    pub fn get(&self, id: &ConnId) -> Option<Arc<ConnHandle>> {
        self.by_id.get(id).map(|entry| entry.value().clone())
    }

    /// The connections of one user of one tenant.
    pub fn of_user(&self, tenant: &str, user_id: &str) -> Vec<Arc<ConnHandle>> {
        let key: (Arc<str>, Arc<str>) = (Arc::from(tenant), Arc::from(user_id));
        let Some(ids) = self.by_user.get(&key).map(|entry| entry.value().clone()) else {
            return Vec::new();
        };
        ids.iter().filter_map(|id| self.get(id)).collect()
    }

    /// Whether the user of the tenant has a live connection here.
    pub fn has_user(&self, tenant: &str, user_id: &str) -> bool {
        self.by_user
            .contains_key(&(Arc::<str>::from(tenant), Arc::<str>::from(user_id)))
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// A snapshot of every live connection.
    pub fn all(&self) -> Vec<Arc<ConnHandle>> {
        self.by_id
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }
}
