//! What the plugin host reaches of its node, handed over when the node is built: live
//! connections, rooms, the backplane, the plugins' key-value store, the node's counters and
//! its drain flag. Nothing here leads back to the node itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backplane::Backplane;
use crate::kv::KvStore;
use crate::metrics::NodeMetrics;
use crate::registry::Registry;
use crate::rooms::Rooms;

/// The node's services a plugin's host calls use.
#[derive(Debug)]
pub struct HostServices {
    /// Live connections of this node (a plugin names connections by id).
    pub registry: Arc<Registry>,
    /// Room membership (a plugin joins and removes connections).
    pub rooms: Arc<Rooms>,
    /// Sends, broadcasts and presence across nodes.
    pub backplane: Arc<dyn Backplane>,
    /// The plugins' key-value store.
    pub kv: KvStore,
    /// The node's counters (failed loads).
    pub metrics: Arc<NodeMetrics>,
    /// Set once the node began to drain: ticks stop, compiles end.
    pub draining: Arc<AtomicBool>,
}

impl HostServices {
    /// True once the node began to drain.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
