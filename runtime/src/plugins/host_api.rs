//! The host API plugins import (`realtime`, `kv`, `logging`, `env`), scoped to the calling
//! plugin's tenant by construction: every connection and room is looked up within that tenant.
//! Per-call quotas answer `rate-limited` instead of trapping.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::services::HostServices;
use crate::backplane::{ConnCommand, Publish};
use crate::config::PluginLimits;
use crate::conn_handle::ConnHandle;
use crate::cpu_share::RunClock;
use crate::ids::{ConnId, RoomKey};
use crate::kv::KvError;
use crate::protocol::{self, Frame, check_channel, check_type};
use crate::tenant::Tenant;
use crate::wit::switchboard::plugin::{
    batch, env, kv, kv_versioned, logging, raw_frames, realtime, types,
};
use crate::wit::{HandlerError, HostError, LogLevel, RawFrame};

/// Largest attachment a plugin may store with a connection.
pub const MAX_ATTACHMENT_BYTES: usize = 4096;

/// What a plugin instance acts for: its tenant, name and config, and the node's services.
#[derive(Debug)]
pub struct PluginEnv {
    /// What the imports reach of the node.
    pub services: Arc<HostServices>,
    /// The plugin's tenant; every call is confined to it.
    pub tenant: Arc<Tenant>,
    /// The plugin's name from `describe`.
    pub plugin: Arc<str>,
    /// Values for `env::config-get`.
    pub config: BTreeMap<String, String>,
    /// Sandbox limits.
    pub limits: PluginLimits,
}

/// What one call has used of its quotas.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    sends: u32,
    fanout: u32,
    bytes: usize,
    kv_ops: u32,
}

/// The `batch-handler.on-messages` call in progress: how many messages it carries, and the
/// answers `batch.answer` gave so far.
#[derive(Debug, Default)]
pub struct Batch {
    /// Messages in the call; 0 when no batch call is in progress.
    pub messages: usize,
    /// Their answers, in order.
    pub answers: Vec<Result<Option<String>, HandlerError>>,
}

/// The state of one store (one instance).
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory cap, consulted by wasmtime on every grow.
    pub limits: StoreLimits,
    /// Whom the instance acts for.
    pub env: Arc<PluginEnv>,
    /// Quota use of the call in progress.
    pub usage: Usage,
    /// Epoch ticks the call in progress may still run for.
    pub ticks_left: u64,
    /// Times the call in progress gave up its worker thread.
    pub yields: u64,
    /// Epoch ticks the call in progress has run through.
    pub ticks_run: u64,
    /// Running time of the call in progress, charged to the tenant's CPU share.
    pub clock: Arc<RunClock>,
    /// The panic message the guest reported in the call in progress (the SDK's panic hook
    /// logs it just before the trap); the call's failure line carries it.
    pub panic: Option<String>,
    /// The batch call in progress, if it is one.
    pub batch: Batch,
}

impl HostState {
    /// A fresh state with no WASI capability at all (no files, env, network or clock).
    pub fn new(env: Arc<PluginEnv>) -> Self {
        HostState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(env.limits.memory_bytes)
                .instances(16)
                .trap_on_grow_failure(true)
                .build(),
            env,
            usage: Usage::default(),
            ticks_left: 0,
            yields: 0,
            ticks_run: 0,
            clock: Arc::default(),
            panic: None,
            batch: Batch::default(),
        }
    }

    fn services(&self) -> Arc<HostServices> {
        self.env.services.clone()
    }

    /// A connection of this plugin's tenant on this node.
    fn connection(&self, id: &str) -> Result<Arc<ConnHandle>, HostError> {
        self.env
            .services
            .registry
            .get(&ConnId::from(id))
            .filter(|conn| Arc::ptr_eq(&conn.tenant, &self.env.tenant))
            .ok_or(HostError::NotFound)
    }

    fn spend_send(&mut self, bytes: usize, fanout: u32) -> Result<(), HostError> {
        let limits = &self.env.limits;
        let usage = &mut self.usage;
        if usage.sends >= limits.max_sends_per_call
            || usage.fanout.saturating_add(fanout) > limits.max_fanout_per_call
            || usage.bytes.saturating_add(bytes) > limits.max_bytes_per_call
        {
            return Err(HostError::RateLimited);
        }
        usage.sends += 1;
        usage.fanout += fanout;
        usage.bytes += bytes;
        Ok(())
    }

    fn spend_kv(&mut self) -> Result<(), HostError> {
        if self.usage.kv_ops >= self.env.limits.max_kv_ops_per_call {
            return Err(HostError::RateLimited);
        }
        self.usage.kv_ops += 1;
        Ok(())
    }

    fn check_payload(&self, payload_json: &str) -> Result<(), HostError> {
        if payload_json.len() > self.env.tenant.limits.max_message_bytes {
            return Err(HostError::TooLarge);
        }
        protocol::validate_payload(payload_json)
            .map_err(|error| HostError::Invalid(format!("payload is not JSON: {error}")))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Applies a command to a connection of `tenant` on whichever node holds it. A free function:
/// the host state is not `Sync`, so no borrow of it may live across the await.
async fn command(
    services: Arc<HostServices>,
    tenant: Arc<str>,
    id: &str,
    command: ConnCommand,
) -> Result<(), HostError> {
    let found = services
        .backplane
        .command(&tenant, &ConnId::from(id), command)
        .await
        .map_err(|_| HostError::Unavailable)?;
    if found {
        Ok(())
    } else {
        Err(HostError::NotFound)
    }
}

fn invalid(error: impl std::fmt::Display) -> HostError {
    HostError::Invalid(error.to_string())
}

impl types::Host for HostState {}

/// Ends a host call with a host error (not a trap). The method body itself awaits, so no
/// borrow of the whole state is held across an await (the state is not `Sync`).
macro_rules! refuse_on_err {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(error) => return Ok(Err(error)),
        }
    };
}

impl realtime::Host for HostState {
    async fn send(
        &mut self,
        to: String,
        msg_type: String,
        channel: Option<String>,
        payload_json: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        refuse_on_err!(check_type(&msg_type).map_err(invalid));
        if let Some(channel) = &channel {
            refuse_on_err!(check_channel(channel).map_err(invalid));
        }
        refuse_on_err!(self.check_payload(&payload_json));
        refuse_on_err!(self.spend_send(payload_json.len(), 1));
        let frame = protocol::message(&msg_type, channel.as_deref(), &payload_json);
        Ok(command(
            self.services(),
            self.env.tenant.name.clone(),
            &to,
            ConnCommand::Deliver(frame),
        )
        .await)
    }

    async fn send_to_user(
        &mut self,
        user_id: String,
        msg_type: String,
        payload_json: String,
    ) -> wasmtime::Result<Result<u32, HostError>> {
        refuse_on_err!(check_type(&msg_type).map_err(invalid));
        refuse_on_err!(self.check_payload(&payload_json));
        let services = self.services();
        let tenant = self.env.tenant.name.clone();
        let reach = services.registry.of_user(&tenant, &user_id).len();
        refuse_on_err!(
            self.spend_send(payload_json.len(), u32::try_from(reach).unwrap_or(u32::MAX))
        );
        let frame = protocol::message(&msg_type, None, &payload_json);
        let delivered = refuse_on_err!(
            services
                .backplane
                .send_to_user(&tenant, &user_id, frame)
                .await
                .map_err(|_| HostError::Unavailable)
        );
        Ok(Ok(u32::try_from(delivered).unwrap_or(u32::MAX)))
    }

    async fn broadcast(
        &mut self,
        channel: String,
        msg_type: String,
        payload_json: String,
        except: Option<String>,
    ) -> wasmtime::Result<Result<u64, HostError>> {
        refuse_on_err!(check_channel(&channel).map_err(invalid));
        refuse_on_err!(check_type(&msg_type).map_err(invalid));
        refuse_on_err!(self.check_payload(&payload_json));
        refuse_on_err!(self.spend_send(payload_json.len(), 1));
        let services = self.services();
        let tenant = self.env.tenant.clone();
        let room = RoomKey::new(&tenant.name, &channel);
        let except = except.map(|id| ConnId::from(id.as_str()));
        let message = Publish {
            msg_type: &msg_type,
            payload: Some(&payload_json),
            except: except.as_ref(),
            history: &tenant.history,
        };
        Ok(services
            .backplane
            .publish(&room, message)
            .await
            .map_err(|_| HostError::Unavailable))
    }

    async fn join(
        &mut self,
        who: String,
        channel: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        refuse_on_err!(check_channel(&channel).map_err(invalid));
        let services = self.services();
        let Ok(conn) = self.connection(&who) else {
            // Another node's connection joins there; its refusals are not reported back.
            return Ok(command(
                self.services(),
                self.env.tenant.name.clone(),
                &who,
                ConnCommand::Join(channel),
            )
            .await);
        };
        Ok(services
            .rooms
            .join(&conn, &channel, None, None)
            .await
            .map_err(|error| HostError::Invalid(error.message)))
    }

    async fn leave(
        &mut self,
        who: String,
        channel: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let services = self.services();
        let Ok(conn) = self.connection(&who) else {
            return Ok(command(
                self.services(),
                self.env.tenant.name.clone(),
                &who,
                ConnCommand::Leave(channel),
            )
            .await);
        };
        Ok(services
            .rooms
            .leave(&conn, &channel, None)
            .await
            .map_err(|_| HostError::NotFound))
    }

    async fn close(
        &mut self,
        who: String,
        code: u16,
        reason: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        if !(code == 1000 || (3000..=4999).contains(&code)) {
            return Ok(Err(HostError::Invalid(
                "close codes are 1000 or 3000..4999".to_owned(),
            )));
        }
        Ok(command(
            self.services(),
            self.env.tenant.name.clone(),
            &who,
            ConnCommand::Close(code, reason),
        )
        .await)
    }

    async fn set_attachment(
        &mut self,
        who: String,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), HostError>> {
        if data.len() > MAX_ATTACHMENT_BYTES {
            return Ok(Err(HostError::TooLarge));
        }
        Ok(command(
            self.services(),
            self.env.tenant.name.clone(),
            &who,
            ConnCommand::Attach(data),
        )
        .await)
    }

    async fn members(
        &mut self,
        channel: String,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, HostError>> {
        refuse_on_err!(check_channel(&channel).map_err(invalid));
        let services = self.services();
        let room = RoomKey::new(&self.env.tenant.name.clone(), &channel);
        let members = refuse_on_err!(
            services
                .backplane
                .presence_members(&room)
                .await
                .map_err(|_| HostError::Unavailable)
        );
        Ok(Ok(members
            .into_iter()
            .map(|member| (member.connection_id, member.user_id))
            .collect()))
    }
}

impl HostState {
    /// A plugin's raw frame, checked against the tenant's message size limit and the call's
    /// send quota (`fanout` recipients).
    fn raw_frame(&mut self, frame: RawFrame, fanout: u32) -> Result<Frame, HostError> {
        let frame = host_frame(frame);
        if frame.len() > self.env.tenant.limits.max_message_bytes {
            return Err(HostError::TooLarge);
        }
        self.spend_send(frame.len(), fanout)?;
        Ok(frame)
    }
}

/// A plugin's raw frame as the host queues it.
pub(crate) fn host_frame(frame: RawFrame) -> Frame {
    match frame {
        RawFrame::Text(text) => Frame::raw_text(text),
        RawFrame::Binary(data) => Frame::binary(data),
    }
}

impl raw_frames::Host for HostState {
    async fn send_frame(
        &mut self,
        to: String,
        frame: RawFrame,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let frame = refuse_on_err!(self.raw_frame(frame, 1));
        Ok(command(
            self.services(),
            self.env.tenant.name.clone(),
            &to,
            ConnCommand::Deliver(frame),
        )
        .await)
    }

    async fn broadcast_frame(
        &mut self,
        channel: String,
        frame: RawFrame,
        except: Option<String>,
    ) -> wasmtime::Result<Result<(), HostError>> {
        refuse_on_err!(check_channel(&channel).map_err(invalid));
        let frame = refuse_on_err!(self.raw_frame(frame, 1));
        let services = self.services();
        let room = RoomKey::new(&self.env.tenant.name.clone(), &channel);
        let except = except.map(|id| ConnId::from(id.as_str()));
        Ok(services
            .backplane
            .signal(&room, frame, except.as_ref())
            .await
            .map_err(|_| HostError::Unavailable))
    }
}

/// The plugin world's error for a key-value store's.
fn kv_error(error: KvError) -> HostError {
    match error {
        KvError::Invalid(message) => HostError::Invalid(message),
        KvError::TooLarge => HostError::TooLarge,
        KvError::Unavailable => HostError::Unavailable,
    }
}

/// Counts a write refused as too large (the value, or the namespace at its limit).
fn count_too_large<T>(env: &PluginEnv, written: Result<T, KvError>) -> Result<T, HostError> {
    if matches!(written, Err(KvError::TooLarge)) {
        env.tenant
            .metrics
            .kv_too_large
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    written.map_err(kv_error)
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, HostError>> {
        refuse_on_err!(self.spend_kv());
        let services = self.services();
        let env = self.env.clone();
        Ok(services
            .kv
            .get(&env.tenant.name, &env.plugin, &key)
            .await
            .map(|found| found.map(|entry| entry.value))
            .map_err(kv_error))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), HostError>> {
        refuse_on_err!(self.spend_kv());
        let services = self.services();
        let env = self.env.clone();
        let written = services
            .kv
            .set(
                &env.tenant.name,
                &env.plugin,
                &key,
                value,
                ttl_ms,
                env.limits.kv_max_bytes,
            )
            .await;
        Ok(count_too_large(&env, written))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, HostError>> {
        refuse_on_err!(self.spend_kv());
        let services = self.services();
        let env = self.env.clone();
        Ok(services
            .kv
            .delete(&env.tenant.name, &env.plugin, &key, None)
            .await
            .map_err(kv_error))
    }

    async fn incr(&mut self, key: String, delta: i64) -> wasmtime::Result<Result<i64, HostError>> {
        refuse_on_err!(self.spend_kv());
        let services = self.services();
        let env = self.env.clone();
        let written = services
            .kv
            .incr(
                &env.tenant.name,
                &env.plugin,
                &key,
                delta,
                env.limits.kv_max_bytes,
            )
            .await;
        Ok(count_too_large(&env, written))
    }
}

impl kv_versioned::Host for HostState {
    async fn get_versioned(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<kv_versioned::Versioned>, HostError>> {
        refuse_on_err!(self.spend_kv());
        let services = self.services();
        let env = self.env.clone();
        Ok(services
            .kv
            .get(&env.tenant.name, &env.plugin, &key)
            .await
            .map(|found| {
                found.map(|entry| kv_versioned::Versioned {
                    value: entry.value,
                    version: entry.version,
                })
            })
            .map_err(kv_error))
    }

    async fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<Option<u64>, HostError>> {
        refuse_on_err!(self.spend_kv());
        let services = self.services();
        let env = self.env.clone();
        let written = services
            .kv
            .compare_and_set(
                &env.tenant.name,
                &env.plugin,
                &key,
                expected,
                value,
                ttl_ms,
                env.limits.kv_max_bytes,
            )
            .await;
        Ok(count_too_large(&env, written))
    }

    async fn compare_and_delete(
        &mut self,
        key: String,
        expected: u64,
    ) -> wasmtime::Result<Result<bool, HostError>> {
        refuse_on_err!(self.spend_kv());
        let services = self.services();
        let env = self.env.clone();
        Ok(services
            .kv
            .delete(&env.tenant.name, &env.plugin, &key, Some(expected))
            .await
            .map_err(kv_error))
    }

    async fn list(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<kv_versioned::KeyPage, HostError>> {
        refuse_on_err!(self.spend_kv());
        let services = self.services();
        let env = self.env.clone();
        Ok(services
            .kv
            .list(
                &env.tenant.name,
                &env.plugin,
                &prefix,
                after.as_deref(),
                limit,
            )
            .await
            .map(|page| kv_versioned::KeyPage {
                keys: page.keys,
                more: page.more,
            })
            .map_err(kv_error))
    }
}

/// The longest log message (and panic message) kept from a plugin.
const MAX_LOG_BYTES: usize = 4096;

/// How the SDK's panic hook starts the message it logs (`sdk/src/lib.rs`).
const PANIC_PREFIX: &str = "plugin panicked: ";

impl logging::Host for HostState {
    async fn log(
        &mut self,
        level: LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let message = if message.len() > MAX_LOG_BYTES {
            &message[..message.floor_char_boundary(MAX_LOG_BYTES)]
        } else {
            message.as_str()
        };
        if matches!(level, LogLevel::Error)
            && let Some(panic) = message.strip_prefix(PANIC_PREFIX)
        {
            // Kept for the failure line that follows the trap, instead of a line of its own.
            self.panic = Some(panic.to_owned());
            return Ok(());
        }
        let level = match level {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        };
        super::plugin_log::emit(
            level,
            &self.env.tenant.name,
            &self.env.plugin,
            message,
            fields,
            &self.env.tenant.metrics,
        );
        Ok(())
    }
}

impl batch::Host for HostState {
    fn answer(&mut self, reply: Result<Option<String>, HandlerError>) -> wasmtime::Result<()> {
        if self.batch.answers.len() >= self.batch.messages {
            return Err(wasmtime::Error::msg(
                "`batch.answer` called outside `on-messages`, or more often than there are messages",
            ));
        }
        self.batch.answers.push(reply);
        // The next message gets what its own call would: a whole CPU budget and fresh quotas.
        // (`ticks_run` runs on: it paces the yields of the worker thread the call holds.)
        self.ticks_left = super::engine::ticks_for(self.env.limits.cpu_budget);
        self.usage = Usage::default();
        Ok(())
    }
}

impl env::Host for HostState {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::clock::unix_millis())
    }

    async fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.env.config.get(&key).cloned())
    }
}
