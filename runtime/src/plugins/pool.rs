//! One loaded plugin version: its compiled component, a pool of warm instances (one call in
//! flight each), admission control, and the call path with CPU and memory limits. A trap or an
//! overrun discards the instance; the next call gets a fresh one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use wasmtime::component::{InstancePre, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::artifact::{Verified, deserialize};
use super::compile::CompileError;
use super::engine::{EPOCH_TICK, Tier, ticks_for};
use super::host_api::{HostState, PluginEnv};
use crate::metrics::plugins::{CallFailure, InstanceGuard, PluginCalls};
use crate::tenant::Tenant;
use crate::wit::batch::{BatchHandler, GuestIndices as BatchIndices};
use crate::wit::raw::{GuestIndices as RawIndices, RawHandler};
use crate::wit::{ConnInfo, HandlerError, Manifest, Message, Plugin, PluginIndices, RawFrame};

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: cannot read: {message}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// Not a component, or not built for this world.
    #[error("{path}: not a Switchboard plugin component: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What wasmtime said.
        message: String,
    },
    /// A precompiled artifact this node does not accept.
    #[error("{path}: precompiled artifact refused: {message}")]
    Artifact {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A `.wasm` did not compile: refused by the compiler, stopped at a limit, cancelled, or
    /// not started for want of a compile slot.
    #[error("{path}: {error}")]
    Compile {
        /// The file.
        path: String,
        /// Why.
        error: CompileError,
    },
    /// `describe` or `init` failed, or the manifest is unusable.
    #[error("{path}: {message}")]
    Refused {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// Where a load's time went: compiling dominates, and happens while the old version serves.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTime {
    /// Compiling the component to native code in a worker and mapping it (for an artifact:
    /// mapping its code).
    pub compile: std::time::Duration,
    /// Everything: compile, link, instantiate, `describe` and `init`.
    pub total: std::time::Duration,
}

/// Why a call did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Every instance slot is busy.
    Overloaded,
    /// The guest trapped (panic, out of memory, stack overflow, host failure).
    Trapped {
        /// What wasmtime said.
        trap: String,
        /// The panic message the guest's panic hook reported before the trap, if any.
        panic: Option<String>,
    },
    /// The call ran past its CPU budget.
    Timeout,
}

impl CallError {
    /// A trap without a panic message.
    pub fn trapped(trap: impl Into<String>) -> CallError {
        CallError::Trapped {
            trap: trap.into(),
            panic: None,
        }
    }

    /// The `kind` it is counted as.
    fn failure(&self) -> CallFailure {
        match self {
            CallError::Overloaded => CallFailure::Overloaded,
            CallError::Trapped { .. } => CallFailure::Trap,
            CallError::Timeout => CallFailure::Timeout,
        }
    }
}

impl Call<'_> {
    /// The export it calls, for logs.
    fn export(&self) -> &'static str {
        match self {
            Call::Message(..) => "on-message",
            Call::Messages(..) => "on-messages",
            Call::Connect(_) => "on-connect",
            Call::Disconnect(..) => "on-disconnect",
            Call::AuthorizeJoin(..) => "authorize-join",
            Call::Tick(_) => "on-tick",
            Call::Frame(..) => "on-frame",
        }
    }

    /// How many messages it carries (a batch's; 1 for any other call).
    fn messages(&self) -> usize {
        match self {
            Call::Messages(_, messages) => messages.len(),
            _ => 1,
        }
    }

    /// The connection it is about, if any.
    fn connection(&self) -> Option<&str> {
        match self {
            Call::Message(conn, _)
            | Call::Messages(conn, _)
            | Call::Connect(conn)
            | Call::Disconnect(conn, _)
            | Call::AuthorizeJoin(conn, _)
            | Call::Frame(conn, _) => Some(&conn.id),
            Call::Tick(_) => None,
        }
    }
}

/// A call into a plugin.
#[derive(Debug)]
pub enum Call<'a> {
    /// `on-message`.
    Message(&'a ConnInfo, &'a Message),
    /// `batch-handler.on-messages`: messages of one connection, in order.
    Messages(&'a ConnInfo, &'a [Message]),
    /// `on-connect`.
    Connect(&'a ConnInfo),
    /// `on-disconnect`.
    Disconnect(&'a ConnInfo, u16),
    /// `authorize-join`.
    AuthorizeJoin(&'a ConnInfo, &'a String),
    /// `on-tick`.
    Tick(u64),
    /// `raw-handler.on-frame`.
    Frame(&'a ConnInfo, &'a RawFrame),
}

/// What a call answered.
#[derive(Debug)]
pub enum Answer {
    /// From `on-message`.
    Message(Result<Option<String>, HandlerError>),
    /// From `authorize-join`.
    Authorized(bool),
    /// From `on-frame`: the frames for the sender.
    Frames(Result<Vec<RawFrame>, HandlerError>),
    /// `on-frame` was called on a plugin without the `raw-handler` export.
    NoFrameHandler,
    /// From `on-messages`: the answers, in order, of the messages before the one the call
    /// failed at (all of them when it did not fail), and the failure.
    Batch {
        /// What `batch.answer` gave, one per message, in order.
        answers: Vec<Result<Option<String>, HandlerError>>,
        /// Why the call stopped at message `answers.len()`, if it did.
        failed: Option<CallError>,
    },
    /// `on-messages` was called on a plugin without the `batch-handler` export.
    NoBatchHandler,
    /// From a hook without a result.
    Done,
}

struct Instance {
    store: Store<HostState>,
    plugin: Plugin,
    /// The `raw-handler` export, when the component has it.
    raw: Option<RawHandler>,
    /// The `batch-handler` export, when the component has it.
    batch: Option<BatchHandler>,
    calls: u64,
    /// Counted in `switchboard_plugin_instances` while it lives.
    _counted: InstanceGuard,
}

/// A loaded, validated plugin version.
pub struct LoadedPlugin {
    /// What `describe` declared.
    pub manifest: Manifest,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Size of the file as uploaded or configured (the `.wasm`, or the artifact).
    pub file_bytes: usize,
    /// Where it came from.
    pub path: PathBuf,
    /// Unix milliseconds at load.
    pub loaded_at_ms: u64,
    /// How long compiling the component took, and the whole load (compile, link, validate).
    pub load_time: LoadTime,
    /// Which compiler made its code.
    pub tier: Tier,
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that trapped or timed out.
    pub errors: AtomicU64,
    /// Times a call gave up its worker thread at an epoch tick (it ran longer than a tick).
    pub yields: AtomicU64,
    /// The counters of the plugin's name, shared with its other versions (`/metrics`).
    pub series: Arc<PluginCalls>,
    engine: Engine,
    bindings: Bindings,
    env: Arc<PluginEnv>,
    idle: Mutex<Vec<Instance>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("sha256", &self.sha256)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

/// A store with the memory cap and the CPU budget wired in. At every epoch tick a call is
/// charged to its tenant's CPU share and waits, off the worker thread, if the tenant is past
/// it; once a call has run a whole tick it yields to the async runtime at every tick, so a busy
/// plugin never holds a worker thread for long. It traps with `Interrupt` once its ticks run
/// out.
fn new_store(engine: &Engine, env: Arc<PluginEnv>) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(env));
    store.limiter(|state| &mut state.limits);
    store.epoch_deadline_callback(|mut context| {
        let state = context.data_mut();
        if state.ticks_left == 0 {
            return Err(Trap::Interrupt.into());
        }
        state.ticks_left -= 1;
        state.ticks_run += 1;
        let tenant = &state.env.tenant;
        let used = state.clock.uncharged();
        tenant
            .metrics
            .plugin_cpu_ns
            .fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
        if let Some(wait) = tenant.cpu.charge(used, Duration::ZERO, Instant::now()) {
            tenant
                .metrics
                .plugin_cpu_throttled
                .fetch_add(1, Ordering::Relaxed);
            state.yields += 1;
            let wait = wait.min(MAX_SHARE_WAIT);
            return Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::time::sleep(wait)),
            ));
        }
        // Not at the first tick boundary: a short call that merely crosses one (a broadcast
        // to thousands of members) would go to the back of the run queue, behind every
        // connection it had just woken (see BENCHMARKS.md, fan-out).
        if state.ticks_run < FIRST_YIELD_TICKS {
            return Ok(UpdateDeadline::Continue(1));
        }
        state.yields += 1;
        Ok(UpdateDeadline::Yield(1))
    });
    arm(&mut store);
    store
}

/// Resets the per-call budget, quotas and running time before a call.
fn arm(store: &mut Store<HostState>) {
    let ticks = ticks_for(store.data().env.limits.cpu_budget);
    let state = store.data_mut();
    state.ticks_left = ticks;
    state.ticks_run = 0;
    state.yields = 0;
    state.usage = Default::default();
    state.panic = None;
    state.batch.messages = 0;
    state.batch.answers.clear();
    state.clock.reset();
    store.set_epoch_deadline(1);
}

/// Epoch ticks a call runs before its first yield to the runtime.
const FIRST_YIELD_TICKS: u64 = 2;

/// Longest a running call waits at one tick for its tenant's CPU share.
const MAX_SHARE_WAIT: Duration = Duration::from_secs(1);

/// Waits until the tenant may start a call within its CPU share. A message waits at most its
/// CPU budget, then is answered `overloaded`; hooks wait as long as it takes.
async fn admit(tenant: &Tenant, wait: bool, budget: Duration) -> Result<(), CallError> {
    let mut waited = Duration::ZERO;
    loop {
        match tenant.cpu.admit(EPOCH_TICK, Instant::now()) {
            Ok(()) => return Ok(()),
            Err(needed) => {
                if !wait && waited + needed > budget {
                    return Err(CallError::Overloaded);
                }
                tenant
                    .metrics
                    .plugin_cpu_throttled
                    .fetch_add(1, Ordering::Relaxed);
                let needed = needed.min(MAX_SHARE_WAIT);
                tokio::time::sleep(needed).await;
                waited += needed;
            }
        }
    }
}

const BUILT_IN_TYPES: [&str; 3] = ["ping", "room:join", "room:leave"];

/// What a plugin version is loaded from: a build whose seal checked, either a precompiled
/// artifact signed with the node's key or the compile worker's output sealed for that compile.
#[derive(Debug)]
pub struct Source {
    /// The build.
    pub build: Verified,
    /// Size of the file as uploaded or configured.
    pub file_bytes: usize,
    /// Time already spent compiling it (in the worker) before the load.
    pub compiled_in: std::time::Duration,
}

impl LoadedPlugin {
    /// Maps a build's code (off the async threads), links, instantiates once, and validates
    /// `describe` and `init`. The instance used for validation stays warm in the pool.
    pub async fn load(
        (tier, engine, linker): (Tier, &Engine, &Linker<HostState>),
        path: PathBuf,
        source: Source,
        env: impl FnOnce(Arc<str>) -> PluginEnv,
    ) -> Result<LoadedPlugin, LoadError> {
        let shown = path.display().to_string();
        let invalid = |error: wasmtime::Error| LoadError::Invalid {
            path: shown.clone(),
            message: super::hint::with_hint(format!("{error:#}")),
        };
        let (started, compiled_in) = (std::time::Instant::now(), source.compiled_in);
        let sha256 = source.build.source_sha256();
        let file_bytes = source.file_bytes;
        let map_engine = engine.clone();
        let component =
            tokio::task::spawn_blocking(move || deserialize(&map_engine, &source.build))
                .await
                .map_err(|error| LoadError::Invalid {
                    path: shown.clone(),
                    message: error.to_string(),
                })?
                .map_err(invalid)?;
        let compiled = compiled_in + started.elapsed();
        let bindings = linker
            .instantiate_pre(&component)
            .and_then(Bindings::new)
            .map_err(invalid)?;

        // Describe with a provisional environment, then bind the real name.
        let provisional = Arc::new(env(Arc::from("")));
        let mut store = new_store(engine, provisional.clone());
        let (plugin, raw, batch) = bindings.instantiate(&mut store).await.map_err(invalid)?;
        let manifest = plugin
            .switchboard_plugin_handler()
            .call_describe(&mut store)
            .await
            .map_err(invalid)?;
        check_manifest(&manifest).map_err(|message| LoadError::Refused {
            path: shown.clone(),
            message,
        })?;
        let series = provisional.tenant.metrics.plugins.of(&manifest.name);
        let env = Arc::new(PluginEnv {
            plugin: Arc::from(manifest.name.as_str()),
            services: provisional.services.clone(),
            tenant: provisional.tenant.clone(),
            config: provisional.config.clone(),
            limits: provisional.limits.clone(),
        });
        store.data_mut().env = env.clone();
        arm(&mut store);
        plugin
            .switchboard_plugin_handler()
            .call_init(&mut store)
            .await
            .map_err(invalid)?
            .map_err(|message| LoadError::Refused {
                path: shown.clone(),
                message: format!("init refused: {message}"),
            })?;
        let loaded_at_ms = crate::clock::unix_millis();
        let permits = Arc::new(Semaphore::new(env.limits.max_concurrency));
        Ok(LoadedPlugin {
            manifest,
            sha256,
            file_bytes,
            path,
            loaded_at_ms,
            load_time: LoadTime {
                compile: compiled,
                total: compiled_in + started.elapsed(),
            },
            tier,
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            yields: AtomicU64::new(0),
            engine: engine.clone(),
            bindings,
            env,
            idle: Mutex::new(vec![Instance {
                store,
                plugin,
                raw,
                batch,
                calls: 0,
                _counted: series.instance(),
            }]),
            series,
            permits,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Whether the component exports `raw-handler` (it can be a raw-frame tenant's plugin).
    pub fn takes_frames(&self) -> bool {
        self.bindings.raw.is_some()
    }

    /// Whether the component exports `batch-handler` (it takes several messages per call).
    pub fn takes_batches(&self) -> bool {
        self.bindings.batch.is_some()
    }

    async fn instantiate(&self) -> Result<Instance, CallError> {
        let mut store = new_store(&self.engine, self.env.clone());
        let (plugin, raw, batch) = self
            .bindings
            .instantiate(&mut store)
            .await
            .map_err(|error| classify(&error, None))?;
        match plugin
            .switchboard_plugin_handler()
            .call_init(&mut store)
            .await
        {
            Ok(Ok(())) => Ok(Instance {
                store,
                plugin,
                raw,
                batch,
                calls: 0,
                _counted: self.series.instance(),
            }),
            Ok(Err(message)) => Err(CallError::trapped(format!("init refused: {message}"))),
            Err(error) => Err(classify(&error, store.data_mut().panic.take())),
        }
    }

    /// Runs one call on a warm (or fresh) instance. `wait` lets lifecycle hooks queue for a
    /// slot instead of being refused; messages never wait.
    pub async fn call(&self, call: Call<'_>, wait: bool) -> Result<Answer, CallError> {
        self.series.called_many(call.messages());
        if let Call::Messages(..) = call {
            self.series.batched();
        }
        let result = self.run(&call, wait).await;
        match &result {
            Ok(Answer::Message(Err(_)) | Answer::Frames(Err(_))) => {
                self.series.failed(CallFailure::HandlerError);
            }
            Ok(Answer::Batch { answers, failed }) => {
                for _ in answers.iter().filter(|answer| answer.is_err()) {
                    self.series.failed(CallFailure::HandlerError);
                }
                if let Some(error) = failed {
                    self.series.failed(error.failure());
                    let stopped_at = match call {
                        Call::Messages(_, messages) => messages.get(answers.len()),
                        _ => None,
                    };
                    self.log_failure(&call, stopped_at, error);
                }
            }
            Ok(_) => {}
            Err(error) => {
                self.series.failed(error.failure());
                if *error != CallError::Overloaded {
                    let message = match call {
                        Call::Message(_, message) => Some(message),
                        Call::Messages(_, messages) => messages.first(),
                        _ => None,
                    };
                    self.log_failure(&call, message, error);
                }
            }
        }
        result
    }

    /// One line per failed call, with everything needed to find it again.
    fn log_failure(&self, call: &Call<'_>, message: Option<&Message>, error: &CallError) {
        let (msg_type, correlation_id) = match message {
            Some(message) => (
                Some(message.msg_type.as_str()),
                message.correlation_id.as_deref(),
            ),
            None => (None, None),
        };
        let (trap, panic) = match error {
            CallError::Trapped { trap, panic } => (trap.as_str(), panic.as_deref()),
            CallError::Timeout => ("ran past its CPU budget", None),
            CallError::Overloaded => ("overloaded", None),
        };
        tracing::warn!(
            tenant = %self.env.tenant.name,
            plugin = %self.manifest.name,
            version = %self.manifest.version,
            export = call.export(),
            msg_type,
            connection = call.connection(),
            correlation_id,
            trap,
            panic,
            "plugin call failed"
        );
    }

    async fn run(&self, call: &Call<'_>, wait: bool) -> Result<Answer, CallError> {
        let _permit = if wait {
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| CallError::Overloaded)?
        } else {
            self.permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| CallError::Overloaded)?
        };
        let tenant = &self.env.tenant;
        admit(tenant, wait, self.env.limits.cpu_budget).await?;
        let messages = call.messages();
        self.calls.fetch_add(messages as u64, Ordering::Relaxed);
        let pooled = self.idle.lock().pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => match self.instantiate().await {
                Ok(instance) => instance,
                Err(error) => {
                    tenant
                        .cpu
                        .charge(Duration::ZERO, EPOCH_TICK, Instant::now());
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(error);
                }
            },
        };
        arm(&mut instance.store);
        if let Call::Messages(..) = call {
            instance.store.data_mut().batch.messages = messages;
        }
        let started = Instant::now();
        let clock = instance.store.data().clock.clone();
        let handler = instance.plugin.switchboard_plugin_handler();
        let raw = instance.raw.as_ref();
        let batch = instance.batch.as_ref();
        let store = &mut instance.store;
        let result = clock
            .run(async {
                match *call {
                    Call::Message(conn, message) => handler
                        .call_on_message(&mut *store, conn, message)
                        .await
                        .map(Answer::Message),
                    Call::Messages(conn, messages) => match batch {
                        Some(batch) => batch
                            .call_on_messages(&mut *store, conn, messages)
                            .await
                            .map(|()| Answer::Batch {
                                answers: Vec::new(),
                                failed: None,
                            }),
                        None => Ok(Answer::NoBatchHandler),
                    },
                    Call::Connect(conn) => handler
                        .call_on_connect(&mut *store, conn)
                        .await
                        .map(|()| Answer::Done),
                    Call::Disconnect(conn, code) => handler
                        .call_on_disconnect(&mut *store, conn, code)
                        .await
                        .map(|()| Answer::Done),
                    Call::AuthorizeJoin(conn, channel) => handler
                        .call_authorize_join(&mut *store, conn, channel)
                        .await
                        .map(Answer::Authorized),
                    Call::Tick(now_ms) => handler
                        .call_on_tick(&mut *store, now_ms)
                        .await
                        .map(|()| Answer::Done),
                    Call::Frame(conn, frame) => match raw {
                        Some(raw) => raw
                            .call_on_frame(&mut *store, conn, frame)
                            .await
                            .map(Answer::Frames),
                        None => Ok(Answer::NoFrameHandler),
                    },
                }
            })
            .await;
        self.series.ran_many(started.elapsed(), messages);
        let used = clock.uncharged();
        tenant
            .metrics
            .plugin_cpu_ns
            .fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
        tenant.cpu.charge(used, EPOCH_TICK, Instant::now());
        let yields = instance.store.data().yields;
        if yields > 0 {
            self.yields.fetch_add(yields, Ordering::Relaxed);
        }
        let panic = instance.store.data_mut().panic.take();
        let answers = std::mem::take(&mut instance.store.data_mut().batch.answers);
        match result {
            Ok(Answer::Batch { .. }) if answers.len() < messages => {
                // Not a trap, yet the store is in no known state: the instance goes.
                self.errors.fetch_add(1, Ordering::Relaxed);
                Ok(Answer::Batch {
                    answers,
                    failed: Some(CallError::trapped(
                        "`on-messages` returned without answering every message",
                    )),
                })
            }
            Ok(answer) => {
                let answer = match answer {
                    Answer::Batch { failed, .. } => Answer::Batch { answers, failed },
                    answer => answer,
                };
                if let Some(panic) = panic {
                    // Reported, yet the call answered: say so rather than lose it.
                    tracing::error!(
                        tenant = %self.env.tenant.name,
                        plugin = %self.manifest.name,
                        panic,
                        "plugin reported a panic and went on"
                    );
                }
                instance.calls += messages as u64;
                if instance.calls < self.env.limits.recycle_after {
                    self.idle.lock().push(instance);
                }
                Ok(answer)
            }
            Err(error) => {
                // A trapped store refuses further calls: the instance is dropped here.
                self.errors.fetch_add(1, Ordering::Relaxed);
                match call {
                    // The messages answered keep their answers.
                    Call::Messages(..) => Ok(Answer::Batch {
                        answers,
                        failed: Some(classify(&error, panic)),
                    }),
                    _ => Err(classify(&error, panic)),
                }
            }
        }
    }
}

/// How instances of one component are made: the pre-linked component and the indices of its
/// exports, looked up once at load.
struct Bindings {
    pre: InstancePre<HostState>,
    plugin: PluginIndices,
    /// `None` for a component without the `raw-handler` export (every plugin built before it).
    raw: Option<RawIndices>,
    /// `None` for a component without the `batch-handler` export (every plugin built before
    /// it, and components not built with the Rust SDK).
    batch: Option<BatchIndices>,
}

impl Bindings {
    fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Bindings> {
        let plugin = PluginIndices::new(&pre)?;
        // Only the name is looked up here; a `raw-handler` of the wrong shape fails `load`.
        let raw = RawIndices::new(&pre).ok();
        let batch = BatchIndices::new(&pre).ok();
        Ok(Bindings {
            pre,
            plugin,
            raw,
            batch,
        })
    }

    async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<(Plugin, Option<RawHandler>, Option<BatchHandler>)> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        let plugin = self.plugin.load(&mut *store, &instance)?;
        let raw = match &self.raw {
            Some(raw) => Some(raw.load(&mut *store, &instance)?),
            None => None,
        };
        let batch = match &self.batch {
            Some(batch) => Some(batch.load(&mut *store, &instance)?),
            None => None,
        };
        Ok((plugin, raw, batch))
    }
}

fn classify(error: &wasmtime::Error, panic: Option<String>) -> CallError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout,
        _ => CallError::Trapped {
            trap: format!("{}", error.root_cause()),
            panic,
        },
    }
}

fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    let name_ok = !manifest.name.is_empty()
        && manifest.name.len() <= 64
        && manifest
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(format!(
            "plugin name `{}` must be 1..64 of A-Z a-z 0-9 - _",
            manifest.name
        ));
    }
    for handled in &manifest.handles {
        if crate::protocol::check_type(handled).is_err() {
            return Err(format!("handled type `{handled}` must be 1..128 bytes"));
        }
        if BUILT_IN_TYPES.contains(&handled.as_str()) {
            return Err(format!(
                "`{handled}` is a built-in type; plugins cannot take it"
            ));
        }
    }
    if manifest.tick_interval_ms == Some(0) {
        return Err("tick interval must be positive".to_owned());
    }
    Ok(())
}
