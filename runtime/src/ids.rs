//! The plain ids the layers below the node share: a connection's id (cluster-unique) and a
//! room's key (tenant and channel). Tenants and users are named by their `&str` names.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// A room: a channel name within a tenant. Rooms of different tenants never meet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    /// The tenant's name.
    pub tenant: Arc<str>,
    /// The channel as clients name it.
    pub channel: Arc<str>,
}

impl RoomKey {
    /// The room `channel` of `tenant`.
    pub fn new(tenant: &Arc<str>, channel: &str) -> Self {
        RoomKey {
            tenant: tenant.clone(),
            channel: Arc::from(channel),
        }
    }
}
