//! The cluster backplane on Redis (one server, or a Redis Cluster with sharded pub/sub).
//!
//! - Fan-out is interest based: a node subscribes to a room's channel only while it has local
//!   members, and every room message reaches it through that subscription, its own included,
//!   so each node delivers a channel in the one order Redis published it.
//! - One script per publish assigns the channel's next `seq`, appends to its bounded history
//!   and publishes, atomically (`scripts::PUBLISH`). Each node remembers the last `seq` it
//!   delivered per room: a gap is refilled from history, a step back means Redis lost state
//!   and the counter is raised past it under a new epoch. A node that finds Redis emptied of
//!   the data it knew (`scripts::STATE`) starts every counter above any `seq` issued before,
//!   so no `seq` is issued twice and what was lost stays visible to clients.
//! - Presence, user and connection lookups live in Redis hashes tagged with the owning node;
//!   a node heartbeat lets the survivors reap a dead node's members and announce their leave.
//! - When Redis is unreachable the node keeps delivering locally, `/readyz` says 503, and the
//!   supervisor reconnects with capped backoff, resubscribes, re-registers and resynchronises.

mod commands;
mod dispatch;
pub(crate) mod entries;
mod keys;
mod kv;
mod link;
mod random;
mod scan;
mod scripts;
mod shared;
mod state;
mod subscriptions;
mod supervisor;
pub(crate) mod wire;

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use self::shared::{Control, Shared, SubRequest};
use super::{
    Backplane, BackplaneError, ConnCommand, LocalDelivery, Publish, Recovery, RoomKey, recovery,
    unrecovered,
};
use crate::config::RedisConfig;
use crate::ids::ConnId;
use crate::kv::SharedKv;
use crate::metrics;
use crate::protocol::{Frame, MemberInfo};
use crate::state::StateStore;

/// Receivers handed to the tasks when the backplane is attached.
struct TaskInputs {
    pushes: mpsc::Receiver<redis::PushInfo>,
    subscriptions: mpsc::Receiver<SubRequest>,
    control: mpsc::Receiver<Control>,
}

/// The Redis backplane. Dropping it stops its tasks.
pub struct RedisBackplane {
    shared: Arc<Shared>,
    inputs: Mutex<Option<TaskInputs>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("link", &self.shared.link)
            .field("ready", &self.shared.is_ready())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl RedisBackplane {
    /// A backplane for `config`; it connects in the background once attached to a node.
    pub fn new(config: RedisConfig) -> Self {
        let (push_tx, pushes) = mpsc::channel(link::PUSH_QUEUE);
        let (sub_tx, subscriptions) = mpsc::channel(4096);
        let (control_tx, control) = mpsc::channel(64);
        RedisBackplane {
            shared: Arc::new(Shared::new(config, push_tx, sub_tx, control_tx)),
            inputs: Mutex::new(Some(TaskInputs {
                pushes,
                subscriptions,
                control,
            })),
            stop: watch::channel(false).0,
        }
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    async fn forget_tenant(&self, tenant: &str) -> Result<usize, BackplaneError> {
        let mut removed = 0;
        for pattern in self.shared.keys.tenant_room_patterns(tenant) {
            removed += scan::unlink_matching(&self.shared, &pattern).await?;
        }
        Ok(removed)
    }

    fn attach(&self, node_id: &str, local: Weak<dyn LocalDelivery>) {
        let shared = &self.shared;
        let _ = shared.node.set(node_id.to_owned());
        let _ = shared.local.set(local);
        let Some(inputs) = self.inputs.lock().take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("the Redis backplane needs a tokio runtime; it stays unready");
            return;
        };
        runtime.spawn(dispatch::run(
            shared.clone(),
            inputs.pushes,
            inputs.control,
            self.stop.subscribe(),
        ));
        runtime.spawn(subscriptions::run(
            shared.clone(),
            inputs.subscriptions,
            self.stop.subscribe(),
        ));
        runtime.spawn(supervisor::run(shared.clone(), self.stop.subscribe()));
    }

    async fn publish(&self, room: &RoomKey, message: Publish<'_>) -> Result<u64, BackplaneError> {
        let shared = &self.shared;
        let channel = shared.keys.room_channel(room);
        if shared.is_healthy() {
            match shared.publish_sequenced(room, &channel, &message).await {
                Ok(seq) => return Ok(seq),
                Err(error) => shared.degrade("publish", &error),
            }
        }
        shared.publish_locally(room, &channel, &message)
    }

    async fn signal(
        &self,
        room: &RoomKey,
        frame: Frame,
        except: Option<&ConnId>,
    ) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        if shared.is_healthy() {
            match shared.signal(room, &frame, except).await {
                Ok(()) => return Ok(()),
                Err(error) => shared.degrade("signal", &error),
            }
        }
        shared.deliver(room, &frame, None, except);
        Ok(())
    }

    async fn subscribe(&self, room: &RoomKey) -> Result<(), BackplaneError> {
        subscriptions::subscribe(&self.shared, room).await;
        Ok(())
    }

    async fn unsubscribe(&self, room: &RoomKey) -> Result<(), BackplaneError> {
        subscriptions::unsubscribe(&self.shared, room).await;
        Ok(())
    }

    async fn presence_add(
        &self,
        room: &RoomKey,
        member: &MemberInfo,
    ) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        if let Some(track) = shared
            .tracks
            .lock()
            .get_mut(&shared.keys.room_channel(room))
        {
            track.presence = true;
        }
        if shared.is_healthy()
            && let Err(error) = shared.register_member(room, member).await
        {
            shared.degrade("presence", &error);
        }
        Ok(())
    }

    async fn presence_remove(
        &self,
        room: &RoomKey,
        connection: &ConnId,
    ) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        if !shared.is_healthy() {
            return Ok(());
        }
        // The node's room set indexes where it has members (for the reaper, if it dies): a room
        // leaves it with its last local member, or the set grows with every room ever joined.
        // A join racing this removal adds the room back only after its own subscribe and
        // presence round trips, so after this SREM.
        let last_here = !shared
            .local()
            .is_some_and(|local| local.has_local_members(room));
        if let Err(error) = shared.forget_member(room, connection, last_here).await {
            shared.degrade("presence", &error);
        }
        Ok(())
    }

    async fn presence_members(&self, room: &RoomKey) -> Result<Vec<MemberInfo>, BackplaneError> {
        let shared = &self.shared;
        let local = shared
            .local()
            .map(|local| local.local_members(room))
            .unwrap_or_default();
        if !shared.is_healthy() {
            return Ok(local);
        }
        let mut members = match shared.presence(room).await {
            Ok(members) => members,
            Err(error) => {
                shared.degrade("presence", &error);
                return Ok(local);
            }
        };
        let seen: HashSet<String> = members
            .iter()
            .map(|member| member.connection_id.clone())
            .collect();
        // A local member whose registration has not reached Redis yet is still a member.
        members.extend(
            local
                .into_iter()
                .filter(|member| !seen.contains(&member.connection_id)),
        );
        Ok(members)
    }

    async fn send_to_user(
        &self,
        tenant: &str,
        user_id: &str,
        frame: Frame,
    ) -> Result<usize, BackplaneError> {
        let shared = &self.shared;
        let here = shared
            .local()
            .map_or(0, |local| local.deliver_to_user(tenant, user_id, &frame));
        if !shared.is_healthy() {
            return Ok(here);
        }
        let (elsewhere, sent) = shared.send_to_user_elsewhere(tenant, user_id, &frame).await;
        if let Err(error) = sent {
            shared.degrade("send to user", &error);
        }
        Ok(here + elsewhere)
    }

    async fn command(
        &self,
        tenant: &str,
        connection: &ConnId,
        command: ConnCommand,
    ) -> Result<bool, BackplaneError> {
        let shared = &self.shared;
        let node = keys::node_of(connection.as_str()).unwrap_or_default();
        if node == shared.node() {
            return Ok(shared
                .local()
                .is_some_and(|local| local.command(tenant, connection, command)));
        }
        if !shared.is_healthy() {
            return Err(BackplaneError::Unavailable(
                "Redis is unreachable: connections of other nodes cannot be reached".to_owned(),
            ));
        }
        // The owning node is alive and listening; it checks the tenant and the id.
        shared
            .send_command(node, tenant, connection, &command)
            .await
            .inspect_err(|error| shared.degrade("command", error))
    }

    async fn connected(&self, tenant: &str, user_id: &str, connection: &ConnId) {
        let shared = &self.shared;
        if shared.is_healthy()
            && let Err(error) = shared
                .register_connection(tenant, user_id, connection.as_str())
                .await
        {
            shared.degrade("register connection", &error);
        }
    }

    async fn disconnected(&self, tenant: &str, user: &str, connection: &ConnId) {
        let shared = &self.shared;
        if !shared.is_healthy() {
            return;
        }
        // Like rooms in `presence_remove`: the user leaves the node's user set with its last
        // connection here.
        let last_here = !shared
            .local()
            .is_some_and(|local| local.has_user(tenant, user));
        if let Err(error) = shared
            .forget_connection(tenant, user, connection, last_here)
            .await
        {
            shared.degrade("unregister connection", &error);
        }
    }

    async fn history_since(&self, room: &RoomKey, since: u64) -> Result<Recovery, BackplaneError> {
        let shared = &self.shared;
        if !shared.is_healthy() {
            // Without the shared history nothing can be promised.
            return Ok(unrecovered());
        }
        match shared.history(room).await {
            Ok(history) => Ok(recovery(history.last, since, history.retained)),
            Err(error) => {
                shared.degrade("history", &error);
                Ok(unrecovered())
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    fn shared_kv(&self) -> Option<Arc<dyn SharedKv>> {
        Some(Arc::new(kv::RedisKv::new(self.shared.clone())))
    }

    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        Some(Arc::new(state::RedisState::new(self.shared.clone())))
    }

    fn render_metrics(&self, out: &mut String) {
        metrics::backplane::render_redis(out, &self.shared.figures());
    }

    async fn close(&self) {
        let _ = self.stop.send(true);
        supervisor::leave_cluster(&self.shared).await;
    }
}

#[cfg(test)]
mod tests;
