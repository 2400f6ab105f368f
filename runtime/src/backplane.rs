//! The backplane: what crosses nodes. Channel publish with per-channel sequencing and history,
//! unsequenced room signals (presence events), presence lists, and delivery to a user or a
//! connection wherever it lives. `rooms` and `registry` reach other nodes only through it.
//!
//! Contract for every implementation:
//! - `publish` assigns the channel's next `seq` (strictly increasing, cluster-wide) and hands
//!   the encoded frame to `LocalDelivery::deliver_to_room` on every node with members, in `seq`
//!   order per channel.
//! - `history_since` answers with every retained message after `since`, in order, or says it
//!   cannot (`recovered: false`).
//! - Implementations never call into `LocalDelivery` while holding a lock that `LocalDelivery`
//!   might take, and `LocalDelivery` never calls back into the backplane.

pub mod memory;
pub mod redis;

use std::sync::{Arc, Weak};

use async_trait::async_trait;

use crate::config::HistoryConfig;
use crate::ids::{ConnId, RoomKey};
use crate::kv::SharedKv;
use crate::protocol::{Frame, MemberInfo};
use crate::state::StateStore;

/// A message to publish on a channel.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// The envelope type subscribers see.
    pub msg_type: &'a str,
    /// Raw JSON payload; `None` is delivered as `null`.
    pub payload: Option<&'a str>,
    /// A connection that should not receive its own message.
    pub except: Option<&'a ConnId>,
    /// How much history the channel keeps.
    pub history: &'a HistoryConfig,
}

/// The answer to a recovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// True when every message after `since` is in `frames`.
    pub recovered: bool,
    /// The missed messages in order, with their `seq`.
    pub frames: Vec<(u64, Frame)>,
}

/// Applies the recovery rules to a channel's last `seq` and its retained messages (oldest
/// first): everything after `since`, or an honest `recovered: false`.
pub fn recovery(last_seq: u64, since: u64, retained: Vec<(u64, Frame)>) -> Recovery {
    if since > last_seq {
        return unrecovered();
    }
    if since == last_seq {
        return Recovery {
            recovered: true,
            frames: Vec::new(),
        };
    }
    match retained.first() {
        Some((first, _)) if *first <= since + 1 => Recovery {
            recovered: true,
            frames: retained
                .into_iter()
                .filter(|(seq, _)| *seq > since)
                .collect(),
        },
        _ => unrecovered(),
    }
}

/// Nothing replayed, `recovered: false`.
pub fn unrecovered() -> Recovery {
    Recovery {
        recovered: false,
        frames: Vec::new(),
    }
}

/// Why a backplane operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackplaneError {
    /// The shared store cannot be reached; local delivery goes on.
    #[error("backplane unavailable: {0}")]
    Unavailable(String),
}

/// Something done to one connection on whichever node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnCommand {
    /// Queue a frame.
    Deliver(Frame),
    /// Close with a code and reason.
    Close(u16, String),
    /// Replace the connection's attachment.
    Attach(Vec<u8>),
    /// Join a room on its behalf.
    Join(String),
    /// Leave a room on its behalf.
    Leave(String),
}

/// Cross-node messaging, sequencing, history and presence.
#[async_trait]
pub trait Backplane: Send + Sync + std::fmt::Debug {
    /// Connects the backplane to this node (its id and its local delivery) and starts any
    /// background work.
    fn attach(&self, node_id: &str, local: Weak<dyn LocalDelivery>);
    /// Sequences, records and delivers a channel message; returns its `seq`.
    async fn publish(&self, room: &RoomKey, message: Publish<'_>) -> Result<u64, BackplaneError>;
    /// Delivers an unsequenced frame (a presence event) to the room on every node.
    async fn signal(
        &self,
        room: &RoomKey,
        frame: Frame,
        except: Option<&ConnId>,
    ) -> Result<(), BackplaneError>;
    /// This node has its first local member in the room.
    async fn subscribe(&self, room: &RoomKey) -> Result<(), BackplaneError>;
    /// This node has no local member left in the room.
    async fn unsubscribe(&self, room: &RoomKey) -> Result<(), BackplaneError>;
    /// Records a member for cluster-wide presence.
    async fn presence_add(&self, room: &RoomKey, member: &MemberInfo)
    -> Result<(), BackplaneError>;
    /// Forgets a member.
    async fn presence_remove(
        &self,
        room: &RoomKey,
        connection: &ConnId,
    ) -> Result<(), BackplaneError>;
    /// Every member of the room on every node.
    async fn presence_members(&self, room: &RoomKey) -> Result<Vec<MemberInfo>, BackplaneError>;
    /// Delivers a frame to every connection of a user, on any node; returns how many.
    async fn send_to_user(
        &self,
        tenant: &str,
        user_id: &str,
        frame: Frame,
    ) -> Result<usize, BackplaneError>;
    /// Applies a command to a connection of `tenant` on any node; false when it is not found.
    async fn command(
        &self,
        tenant: &str,
        connection: &ConnId,
        command: ConnCommand,
    ) -> Result<bool, BackplaneError>;
    /// A connection of `tenant`'s user `user_id` opened on this node (for cluster-wide user
    /// lookups).
    async fn connected(&self, _tenant: &str, _user_id: &str, _connection: &ConnId) {}
    /// A connection of this node closed.
    async fn disconnected(&self, _tenant: &str, _user_id: &str, _connection: &ConnId) {}
    /// The retained messages after `since`.
    async fn history_since(&self, room: &RoomKey, since: u64) -> Result<Recovery, BackplaneError>;
    /// False while cross-node delivery cannot be trusted.
    fn is_ready(&self) -> bool;
    /// The key-value store plugins share across nodes, when this backplane has one.
    fn shared_kv(&self) -> Option<Arc<dyn SharedKv>> {
        None
    }
    /// Where the cluster keeps its desired state (plugin deployments), when this backplane
    /// shares one; a node without it keeps the state on local disk.
    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        None
    }
    /// Deletes what a deleted tenant's rooms keep (sequences, history, presence); how many
    /// channels or keys went.
    async fn forget_tenant(&self, _tenant: &str) -> Result<usize, BackplaneError> {
        Ok(0)
    }
    /// Appends this backplane's Prometheus metrics.
    fn render_metrics(&self, _out: &mut String) {}
    /// Leaves the cluster cleanly (after the node drained).
    async fn close(&self) {}
}

/// How a backplane hands messages to this node's connections.
pub trait LocalDelivery: Send + Sync {
    /// Queues a frame for every local member of the room except `except`.
    fn deliver_to_room(
        &self,
        room: &RoomKey,
        frame: &Frame,
        seq: Option<u64>,
        except: Option<&ConnId>,
    );
    /// Queues a frame for every local connection of a user; returns how many.
    fn deliver_to_user(&self, tenant: &str, user_id: &str, frame: &Frame) -> usize;
    /// Applies a command to a local connection of `tenant`; false when it is not here.
    fn command(&self, tenant: &str, connection: &ConnId, command: ConnCommand) -> bool;
    /// The room's members on this node.
    fn local_members(&self, room: &RoomKey) -> Vec<MemberInfo>;
    /// Whether the room has a member on this node (without listing them).
    fn has_local_members(&self, room: &RoomKey) -> bool;
    /// Whether the user of the tenant has a connection on this node.
    fn has_user(&self, tenant: &str, user_id: &str) -> bool;
    /// Every connection on this node as `(tenant, user id, connection id)`.
    fn local_connections(&self) -> Vec<(Arc<str>, Arc<str>, ConnId)>;
}
