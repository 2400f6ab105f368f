//! The node: everything a connection, the HTTP routes and the backplane share: config, tenants,
//! registry, rooms, metrics and the drain state. It is the backplane's `LocalDelivery`.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::backplane::memory::MemoryBackplane;
use crate::backplane::redis::RedisBackplane;
use crate::backplane::{Backplane, ConnCommand, LocalDelivery};
use crate::config::{BackplaneConfig, Config, TenantProtocol};
use crate::conn_handle::ConnHandle;
use crate::deployments::{self, Deployments};
use crate::ids::{ConnId, ConnIdGenerator, RoomKey};
use crate::kv::KvStore;
use crate::listener::HttpState;
use crate::metrics::{self, NodeMetrics, TenantSample};
use crate::plugins::{HostServices, Plugins};
use crate::protocol::{self, CloseReason, Frame, MemberInfo};
use crate::registry::Registry;
use crate::rooms::Rooms;
use crate::state::StateStore;
use crate::state::disk::DiskStore;
use crate::tenant::Tenants;

/// State shared by every part of a running node.
#[derive(Debug)]
pub struct Node {
    /// The validated config.
    pub config: Config,
    /// This node's id, the prefix of its connection ids.
    pub id: String,
    /// The tenants.
    pub tenants: Tenants,
    /// Live connections.
    pub registry: Arc<Registry>,
    /// Room membership.
    pub rooms: Arc<Rooms>,
    /// Cross-node messaging.
    pub backplane: Arc<dyn Backplane>,
    /// Node-wide counters.
    pub metrics: Arc<NodeMetrics>,
    /// Every tenant's WASM plugins.
    pub plugins: Arc<Plugins>,
    /// The HTTP listener's bounds: socket budget, request bodies, refused heads.
    pub http: HttpState,
    /// The desired state of plugin deployments, as this node applies it.
    pub deployments: Arc<Deployments>,
    ids: ConnIdGenerator,
    me: Weak<Node>,
    draining: Arc<AtomicBool>,
    connections: AtomicUsize,
}

/// A connection slot under the node's limit, released on drop.
#[derive(Debug)]
pub struct NodeSlot(Arc<Node>);

impl Drop for NodeSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

fn random_node_id() -> String {
    // A randomly seeded hasher is enough entropy to tell nodes and restarts apart.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

impl Node {
    /// Builds a node on the backplane its config names.
    pub fn new(config: Config, tenants: Tenants) -> Arc<Self> {
        match &config.backplane {
            BackplaneConfig::Memory => {
                let memory = Arc::new(MemoryBackplane::new());
                let node = Self::with_backplane(config, tenants, memory.clone());
                spawn_history_sweeper(&memory);
                node
            }
            BackplaneConfig::Redis(redis) => {
                let redis = Arc::new(RedisBackplane::new(redis.clone()));
                Self::with_backplane(config, tenants, redis)
            }
        }
    }

    /// Builds a node on a given backplane.
    pub fn with_backplane(
        config: Config,
        tenants: Tenants,
        backplane: Arc<dyn Backplane>,
    ) -> Arc<Self> {
        let id = random_node_id();
        let kv = KvStore::default();
        if let Some(shared) = backplane.shared_kv() {
            kv.share(shared);
        }
        let services = Arc::new(HostServices {
            registry: Arc::default(),
            rooms: Arc::new(Rooms::new(backplane.clone())),
            backplane: backplane.clone(),
            kv,
            metrics: Arc::default(),
            draining: Arc::default(),
        });
        // A cluster keeps its desired state where every node reads it; one node keeps it on
        // its disk.
        let store: Arc<dyn StateStore> = backplane
            .state_store()
            .unwrap_or_else(|| Arc::new(DiskStore::new(config.state_dir.clone())));
        let node = Arc::new_cyclic(|me| Node {
            ids: ConnIdGenerator::new(&id),
            me: me.clone(),
            id,
            tenants,
            registry: services.registry.clone(),
            rooms: services.rooms.clone(),
            backplane: backplane.clone(),
            metrics: services.metrics.clone(),
            draining: services.draining.clone(),
            plugins: Arc::new(Plugins::new(&config, services)),
            http: HttpState::new(&config),
            deployments: Arc::new(Deployments::new(store)),
            connections: AtomicUsize::new(0),
            config,
        });
        let local: Arc<dyn LocalDelivery> = node.clone();
        backplane.attach(&node.id, Arc::downgrade(&local));
        node
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        self.ids.next_id()
    }

    /// True once a graceful shutdown began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ready to take connections: not draining, the backplane is healthy, and the current
    /// desired state is applied.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.backplane.is_ready() && self.deployments.is_synced()
    }

    /// Applies the desired state once (at start, before the listener opens).
    pub async fn converge(&self) -> Result<(), crate::state::StoreError> {
        let converged = self
            .deployments
            .converge(&self.plugins, &self.config, &self.tenants)
            .await;
        self.clear_removed_tenants().await;
        converged
    }

    /// Closes the connections of the tenants the desired state took out (1008 `tenant
    /// removed`; their rooms and presence empty as they go) and deletes their plugins'
    /// key-value entries.
    pub async fn clear_removed_tenants(&self) {
        for tenant in self.deployments.take_removed() {
            let mut closed = 0;
            for conn in self.registry.all() {
                // The flag, not the name: a tenant made again under the name keeps its own.
                if conn.tenant.name == tenant.name && conn.tenant.is_removed() {
                    conn.outbox.close(CloseReason::TenantRemoved);
                    closed += 1;
                }
            }
            let entries = match self.plugins.services.kv.clear_tenant(&tenant.name).await {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(tenant = %tenant.name, %error, "a deleted tenant's key-value entries not deleted");
                    0
                }
            };
            let rooms = match self.backplane.forget_tenant(&tenant.name).await {
                Ok(rooms) => rooms,
                Err(error) => {
                    tracing::warn!(tenant = %tenant.name, %error, "a deleted tenant's channel history not deleted");
                    0
                }
            };
            self.metrics.forget_tenant(&tenant.name);
            tracing::info!(tenant = %tenant.name, closed, kv = entries, rooms, "tenant removed: its connections closed and its state deleted");
        }
    }

    /// Polls the desired state every `deployments::POLL_INTERVAL` and applies its changes,
    /// until the node drains or is dropped.
    pub fn spawn_convergence(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(deployments::POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(node) = node.upgrade() else {
                    return;
                };
                if node.is_draining() {
                    node.deployments.withdraw(&node.id).await;
                    return;
                }
                node.deployments
                    .poll(&node.plugins, &node.config, &node.tenants, &node.id)
                    .await;
                node.clear_removed_tenants().await;
            }
        });
    }

    /// Takes a node-wide connection slot unless the node is full.
    pub fn try_acquire(self: &Arc<Self>) -> Option<NodeSlot> {
        let limit = self.config.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < limit).then_some(count + 1)
            })
            .ok()
            .map(|_| NodeSlot(self.clone()))
    }

    /// Opens an accepted connection: queues its welcome (an envelope tenant's only),
    /// registers it (here and with the backplane), counts the handshake, and runs
    /// `on-connect`. `disconnect` undoes it.
    pub async fn connect(&self, conn: &Arc<ConnHandle>) {
        if conn.tenant.protocol == TenantProtocol::Envelope {
            conn.outbox.push(protocol::welcome(
                conn.id.as_str(),
                &conn.user_id,
                &conn.tenant.name,
                self.config.heartbeat_interval.as_secs_f64(),
                self.config.heartbeat_timeout.as_secs_f64(),
            ));
        }
        self.registry.insert(conn.clone());
        self.backplane
            .connected(&conn.tenant.name, &conn.user_id, &conn.id)
            .await;
        conn.tenant
            .metrics
            .handshakes_accepted
            .fetch_add(1, Ordering::Relaxed);
        // A drain that began during the handshake did not see this connection, nor did the
        // close of a tenant deleted meanwhile.
        if self.is_draining() {
            conn.outbox.close(CloseReason::ShuttingDown);
        } else if conn.tenant.is_removed() {
            conn.outbox.close(CloseReason::TenantRemoved);
        }
        self.plugins.on_connect(conn).await;
    }

    /// Closes a finished connection: removes it from the registry, every room and the
    /// backplane, runs `on-disconnect`, and counts the close.
    pub async fn disconnect(&self, conn: &Arc<ConnHandle>, close_code: u16) {
        self.registry.remove(&conn.id);
        self.rooms.leave_all(conn).await;
        self.backplane
            .disconnected(&conn.tenant.name, &conn.user_id, &conn.id)
            .await;
        self.plugins.on_disconnect(conn, close_code).await;
        // A deleted tenant's series are gone; its last closes do not bring them back.
        if !conn.tenant.is_removed() {
            self.metrics.close(&conn.tenant.name, close_code);
        }
    }

    /// Starts a graceful shutdown: closes every connection with 1001 and waits until they are
    /// gone or `drain_timeout` passes. Returns how many were still open at the deadline.
    pub async fn drain(&self) -> usize {
        self.draining.store(true, Ordering::Release);
        for conn in self.registry.all() {
            conn.outbox.close(CloseReason::ShuttingDown);
        }
        let deadline = Instant::now() + self.config.drain_timeout;
        while !self.registry.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.registry.len()
    }

    /// The Prometheus text of this node.
    pub fn render_metrics(&self) -> String {
        let tenants = self.tenants.all();
        let samples: Vec<TenantSample<'_>> = tenants
            .iter()
            .map(|tenant| TenantSample {
                name: &tenant.name,
                connections: tenant.connection_count(),
                metrics: &tenant.metrics,
            })
            .collect();
        let code = crate::plugins::engine::code_cache_stats();
        let code = metrics::plugins::CodeCacheFigures {
            hits: code.hits,
            misses: code.misses,
            bytes: code.bytes,
        };
        let mut text = metrics::render(
            &self.metrics,
            &samples,
            self.rooms.len(),
            self.is_draining(),
            &code,
        );
        self.backplane.render_metrics(&mut text);
        self.http.render(&mut text, self.config.max_connections);
        self.plugins.render_metrics(&mut text);
        self.deployments
            .metrics
            .render(&mut text, self.deployments.is_synced());
        let calls: Vec<(&str, &metrics::plugins::PluginSeries)> = tenants
            .iter()
            .map(|tenant| (&*tenant.name, &tenant.metrics.plugins))
            .collect();
        metrics::plugins::render_calls(&mut text, &calls);
        text
    }
}

impl LocalDelivery for Node {
    fn deliver_to_room(
        &self,
        room: &RoomKey,
        frame: &Frame,
        seq: Option<u64>,
        except: Option<&ConnId>,
    ) {
        self.rooms.deliver(room, frame, seq, except);
    }

    fn deliver_to_user(&self, tenant: &str, user_id: &str, frame: &Frame) -> usize {
        let connections = self.registry.of_user(tenant, user_id);
        for conn in &connections {
            conn.outbox.push(frame.clone());
        }
        connections.len()
    }

    fn command(&self, tenant: &str, connection: &ConnId, command: ConnCommand) -> bool {
        let Some(conn) = self
            .registry
            .get(connection)
            .filter(|conn| &*conn.tenant.name == tenant)
        else {
            return false;
        };
        match command {
            ConnCommand::Deliver(frame) => {
                conn.outbox.push(frame);
            }
            ConnCommand::Close(code, reason) => {
                conn.outbox.close(CloseReason::Custom(code, reason))
            }
            ConnCommand::Attach(data) => conn.set_attachment(data),
            ConnCommand::Join(channel) => self.spawn_membership(conn, channel, true),
            ConnCommand::Leave(channel) => self.spawn_membership(conn, channel, false),
        }
        true
    }

    fn local_members(&self, room: &RoomKey) -> Vec<MemberInfo> {
        self.rooms.local_members(room)
    }

    fn has_local_members(&self, room: &RoomKey) -> bool {
        self.rooms.has_local_members(room)
    }

    fn has_user(&self, tenant: &str, user_id: &str) -> bool {
        self.registry.has_user(tenant, user_id)
    }

    fn local_connections(&self) -> Vec<(Arc<str>, Arc<str>, ConnId)> {
        self.registry
            .all()
            .into_iter()
            .map(|conn| {
                (
                    conn.tenant.name.clone(),
                    conn.user_id.clone(),
                    conn.id.clone(),
                )
            })
            .collect()
    }
}

impl Node {
    /// Joins or leaves a room for a connection in its own task: the caller (the backplane's
    /// dispatcher) must not wait on the backplane round trips a join makes.
    fn spawn_membership(&self, conn: Arc<ConnHandle>, channel: String, join: bool) {
        let Some(node) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let result = if join {
                node.rooms.join(&conn, &channel, None, None).await
            } else {
                node.rooms.leave(&conn, &channel, None).await
            };
            if let Err(error) = result {
                tracing::debug!(%error, channel, connection = %conn.id, "remote membership change refused");
            }
        });
    }
}

fn spawn_history_sweeper(memory: &Arc<MemoryBackplane>) {
    let weak = Arc::downgrade(memory);
    // Runs while the backplane lives; a node outside a runtime (tests of config) has none.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(memory) = weak.upgrade() else { break };
                memory.sweep();
            }
        });
    }
}
