//! Live connections of this node: by id and by (tenant, user). Add, remove, look up; nothing
//! else. Sharded maps, so no global lock sits on the message path.

use std::sync::Arc;

use dashmap::DashMap;

use crate::conn_handle::ConnHandle;
use crate::ids::ConnId;

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
