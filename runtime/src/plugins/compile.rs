//! Compiling plugin code, bounded. A compile runs in a child process (the `switchboard` binary's
//! hidden `compile-worker` command, see `worker`), because neither Cranelift nor Winch can be
//! stopped or held to a memory budget inside the node: the child is killed when its wall-clock
//! time runs out, when a newer upload of the same plugin or a newer version supersedes it, and
//! when the node shuts down; it holds itself to the tenant's memory budget. Compiles wait for a
//! slot of their tenant and of the node (`gate`), with bounded queues and a bounded wait.
//!
//! The worker seals its build with a key made for that one compile and sent over its stdin, and
//! the node opens it with `artifact::open` like any artifact: only code that came out of the
//! compiler reaches `Component::deserialize`.
//!
//! - `gate`: compile slots and queues, swaps before background builds;
//! - `wire`: the frames exchanged with the worker;
//! - `worker`: the child's side.

pub mod gate;
pub mod wire;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{oneshot, watch};
use wasmtime::CacheStore as _;

use super::artifact::{self, Verified};
use super::engine::{self, Tier};
use crate::config::{ArtifactKey, Config, PluginBounds, PluginLimits};
use crate::metrics::plugins::CompileFigures;
use crate::tenant::Tenant;
use gate::{Gate, Permit, Priority};

/// The command line name of the worker.
pub const WORKER_COMMAND: &str = "compile-worker";

/// How often a waiting or running compile checks whether the node began to drain.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// The end of a worker's stderr kept to explain a crash.
const STDERR_TAIL: usize = 4096;

/// Why a compile did not produce a build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The tenant's compile queue is full.
    #[error(
        "this tenant already has {0} compiles waiting (plugin_limits.compile_queue); retry later"
    )]
    TenantBusy(usize),
    /// The node's compile queue is full.
    #[error("the node already has {0} compiles waiting (plugins.compile_queue); retry later")]
    NodeBusy(usize),
    /// No compile slot came free in time.
    #[error("no compile slot came free within plugins.compile_wait ({0:?}); retry later")]
    WaitTimeout(Duration),
    /// Stopped at the tenant's compile time limit.
    #[error("compiling took longer than plugin_limits.compile_timeout ({0:?}) and was stopped")]
    TimeLimit(Duration),
    /// Stopped at the tenant's compile memory limit.
    #[error(
        "compiling needed more than plugin_limits.compile_memory_bytes ({0} bytes) and was stopped"
    )]
    MemoryLimit(usize),
    /// The compiler refused the code.
    #[error("{0}")]
    Invalid(String),
    /// The compiler died for another reason.
    #[error("the compiler failed: {0}")]
    Crashed(String),
    /// A newer version of the plugin replaced this one before its build was done.
    #[error("a newer version of this plugin superseded this one while it compiled")]
    Superseded,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The compiler program could not be started.
    #[error("cannot start the compiler {path}: {message}")]
    Worker {
        /// The program.
        path: String,
        /// The I/O error.
        message: String,
    },
}

impl CompileError {
    /// The `outcome` or `reason` label of the metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CompileError::TenantBusy(_) => "tenant_compile_queue",
            CompileError::NodeBusy(_) => "node_compile_queue",
            CompileError::WaitTimeout(_) => "compile_wait",
            CompileError::TimeLimit(_) => "time_limit",
            CompileError::MemoryLimit(_) => "memory_limit",
            CompileError::Invalid(_) => "invalid",
            CompileError::Crashed(_) => "crashed",
            CompileError::Superseded => "superseded",
            CompileError::ShuttingDown => "shutdown",
            CompileError::Worker { .. } => "no_worker",
        }
    }

    /// Whether the compile was refused before it started (counted as a refusal, not an outcome).
    pub fn refused(&self) -> bool {
        matches!(
            self,
            CompileError::TenantBusy(_) | CompileError::NodeBusy(_) | CompileError::WaitTimeout(_)
        )
    }
}

/// What a compile is for: decides its queue and what cancels it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A new version to swap in. With a plugin name (an upload), a newer upload under the same
    /// name cancels it.
    Swap(Option<String>),
    /// The optimized build of a version that serves on baseline code: cancelled when that
    /// version stops being routed, or when a newer upload of its plugin begins.
    Optimize {
        /// The plugin's name.
        plugin: String,
        /// The serving version (its `LoadedPlugin`'s address).
        version: usize,
    },
}

impl Purpose {
    /// Whether a job for `self` makes a job for `other` of the same tenant pointless: a newer
    /// upload of a plugin supersedes older uploads of it and its serving version's build.
    fn supersedes(&self, other: &Purpose) -> bool {
        let Purpose::Swap(Some(name)) = self else {
            return false;
        };
        match other {
            Purpose::Swap(Some(older)) => older == name,
            Purpose::Optimize { plugin, .. } => plugin == name,
            Purpose::Swap(None) => false,
        }
    }
}

#[derive(Debug)]
struct Job {
    id: u64,
    tenant: Arc<str>,
    purpose: Purpose,
    cancel: watch::Sender<bool>,
    /// Closed when the job has ended and given back its slots.
    ended: watch::Receiver<()>,
}

/// The node's compiles: slots, the jobs in flight (to cancel them), and their metrics.
#[derive(Debug)]
pub struct Compiler {
    bounds: PluginBounds,
    /// The node's drain flag: set, no compile starts and running ones are stopped.
    draining: Arc<AtomicBool>,
    node_gate: Arc<Gate>,
    /// Each tenant's compile slots, swapped whole when a tenant comes, goes or changes them.
    tenant_gates: ArcSwap<HashMap<Arc<str>, Arc<Gate>>>,
    jobs: Mutex<Vec<Job>>,
    next_job: AtomicU64,
    outcomes: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    refusals: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// Removes a job from the registry when its compile ends, however it ends, and tells the jobs
/// that superseded it.
struct Registered<'a> {
    compiler: &'a Compiler,
    id: u64,
    _ended: watch::Sender<()>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.compiler.jobs.lock().retain(|job| job.id != self.id);
    }
}

impl Compiler {
    /// Slots and queues from the config, for the node and each tenant.
    pub fn new(config: &Config, draining: Arc<AtomicBool>) -> Compiler {
        let bounds = config.plugin_bounds.clone();
        Compiler {
            draining,
            node_gate: Gate::new(bounds.compile_concurrency, bounds.compile_queue),
            tenant_gates: ArcSwap::from_pointee(
                config
                    .tenants
                    .iter()
                    .map(|tenant| {
                        let limits = &tenant.plugin_limits;
                        (
                            Arc::from(tenant.name.as_str()),
                            Gate::new(limits.compile_concurrency, limits.compile_queue),
                        )
                    })
                    .collect(),
            ),
            bounds,
            jobs: Mutex::new(Vec::new()),
            next_job: AtomicU64::new(0),
            outcomes: Mutex::default(),
            refusals: Mutex::default(),
        }
    }

    /// Gives a tenant compile slots by its limits (a compile already holding a slot of the
    /// old ones keeps it).
    pub fn set_tenant_gate(&self, tenant: &str, limits: &PluginLimits) {
        self.tenant_gates.rcu(|current| {
            let mut next = (**current).clone();
            let same = next.get(tenant).is_some_and(|gate| {
                gate.capacity() == (limits.compile_concurrency.max(1), limits.compile_queue)
            });
            if !same {
                next.insert(
                    Arc::from(tenant),
                    Gate::new(limits.compile_concurrency, limits.compile_queue),
                );
            }
            next
        });
    }

    /// Drops a deleted tenant's compile slots and its series.
    pub fn remove_tenant_gate(&self, tenant: &str) {
        self.tenant_gates.rcu(|current| {
            let mut next = (**current).clone();
            next.remove(tenant);
            next
        });
        self.outcomes
            .lock()
            .retain(|(name, _, _), _| name != tenant);
        self.refusals.lock().retain(|(name, _), _| name != tenant);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The node-wide bounds.
    pub fn bounds(&self) -> &PluginBounds {
        &self.bounds
    }

    /// Compiles `wasm` for `tenant` with `tier`'s compiler in a worker process, within the
    /// tenant's and the node's bounds; the build, verified.
    pub async fn compile(
        &self,
        tenant: &Tenant,
        tier: Tier,
        purpose: Purpose,
        wasm: &[u8],
    ) -> Result<Verified, CompileError> {
        let result = self
            .compile_within_bounds(tenant, tier, purpose, wasm)
            .await;
        let label = match &result {
            Ok(_) => "ok",
            Err(error) => error.label(),
        };
        match &result {
            Err(error) if error.refused() => self.refused(&tenant.name, label),
            _ => {
                *self
                    .outcomes
                    .lock()
                    .entry((tenant.name.to_string(), tier.as_str(), label))
                    .or_default() += 1;
            }
        }
        result
    }

    /// `compile` without its metrics: wait for slots, then run the worker, either stopped by a
    /// cancel or the drain.
    async fn compile_within_bounds(
        &self,
        tenant: &Tenant,
        tier: Tier,
        purpose: Purpose,
        wasm: &[u8],
    ) -> Result<Verified, CompileError> {
        if self.is_draining() {
            return Err(CompileError::ShuttingDown);
        }
        let priority = match purpose {
            Purpose::Swap(_) => Priority::Swap,
            Purpose::Optimize { .. } => Priority::Background,
        };
        let (_registered, mut cancel, superseded) = self.register(&tenant.name, purpose);
        let waited = async {
            let wait = self.bounds.compile_wait;
            let slots = async {
                // The jobs this one cancelled give back their slots first; they end as soon
                // as their worker is killed.
                for mut ended in superseded {
                    let _ = ended.changed().await;
                }
                self.slots(&tenant.name, priority).await
            };
            if priority == Priority::Background {
                return slots.await;
            }
            tokio::time::timeout(wait, slots)
                .await
                .map_err(|_| CompileError::WaitTimeout(wait))?
        };
        let _slots = stoppable(waited, &self.draining, &mut cancel).await?;
        let limits = &tenant.plugin_limits;
        let run = self.run_worker(
            tier,
            priority,
            limits.compile_timeout,
            limits.compile_memory_bytes,
            wasm,
        );
        stoppable(run, &self.draining, &mut cancel).await
    }

    /// A slot of the tenant, then one of the node (always in this order, so waits never cross).
    async fn slots(
        &self,
        tenant: &str,
        priority: Priority,
    ) -> Result<(Option<Permit>, Permit), CompileError> {
        let gate = self.tenant_gates.load().get(tenant).cloned();
        let tenant_permit = match gate {
            Some(gate) => Some(
                gate.acquire(priority)
                    .await
                    .map_err(|_| CompileError::TenantBusy(gate.load().1))?,
            ),
            None => None,
        };
        let node_permit = self
            .node_gate
            .acquire(priority)
            .await
            .map_err(|_| CompileError::NodeBusy(self.node_gate.load().1))?;
        Ok((tenant_permit, node_permit))
    }

    /// Lists a job so it can be cancelled; an upload first cancels the jobs it supersedes and
    /// returns what tells when they have ended.
    fn register(
        &self,
        tenant: &str,
        purpose: Purpose,
    ) -> (
        Registered<'_>,
        watch::Receiver<bool>,
        Vec<watch::Receiver<()>>,
    ) {
        let id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let (cancel, cancelled) = watch::channel(false);
        let (ended_in, ended) = watch::channel(());
        let mut jobs = self.jobs.lock();
        let mut superseded = Vec::new();
        for job in jobs.iter() {
            if &*job.tenant == tenant && purpose.supersedes(&job.purpose) {
                job.cancel.send_replace(true);
                superseded.push(job.ended.clone());
            }
        }
        jobs.push(Job {
            id,
            tenant: Arc::from(tenant),
            purpose,
            cancel,
            ended,
        });
        let registered = Registered {
            compiler: self,
            id,
            _ended: ended_in,
        };
        (registered, cancelled, superseded)
    }

    /// Cancels the jobs a load for `purpose` supersedes, for a load that needs no compile (its
    /// build was kept): a newer upload cancels older ones whether it compiles or not.
    pub fn supersede(&self, tenant: &str, purpose: &Purpose) {
        for job in self.jobs.lock().iter() {
            if &*job.tenant == tenant && purpose.supersedes(&job.purpose) {
                job.cancel.send_replace(true);
            }
        }
    }

    /// Cancels the optimized builds of versions no longer routed.
    pub fn cancel_optimizing(&self, tenant: &str, stale: impl Fn(usize) -> bool) {
        for job in self.jobs.lock().iter() {
            if let Purpose::Optimize { version, .. } = job.purpose
                && &*job.tenant == tenant
                && stale(version)
            {
                job.cancel.send_replace(true);
            }
        }
    }

    /// Counts a refused upload or reload.
    pub fn refused(&self, tenant: &str, reason: &'static str) {
        *self
            .refusals
            .lock()
            .entry((tenant.to_owned(), reason))
            .or_default() += 1;
    }

    fn compiler_path(&self) -> Result<PathBuf, CompileError> {
        match &self.bounds.compiler_path {
            Some(path) => Ok(path.clone()),
            None => std::env::current_exe().map_err(|error| CompileError::Worker {
                path: "the running executable".to_owned(),
                message: error.to_string(),
            }),
        }
    }

    /// Runs one worker to its end, killing it at `timeout`; dropping the future kills it too.
    async fn run_worker(
        &self,
        tier: Tier,
        priority: Priority,
        timeout: Duration,
        memory_bytes: usize,
        wasm: &[u8],
    ) -> Result<Verified, CompileError> {
        let path = self.compiler_path()?;
        let worker_error = |error: std::io::Error| CompileError::Worker {
            path: path.display().to_string(),
            message: error.to_string(),
        };
        let key = sealing_key().map_err(worker_error)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let cpu_seconds = timeout.as_secs().saturating_add(1).saturating_mul(threads);
        let mut child = tokio::process::Command::new(&path)
            .arg(WORKER_COMMAND)
            .args(["--tier", tier.as_str()])
            .args(["--memory-bytes", &memory_bytes.to_string()])
            .args(["--cpu-seconds", &cpu_seconds.to_string()])
            .args(match priority {
                Priority::Swap => &["--urgent"][..],
                Priority::Background => &[],
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(worker_error)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(CompileError::Crashed(
                "the worker's pipes are missing".into(),
            ));
        };
        let stderr = tokio::spawn(stderr_tail(stderr));
        // The conversation runs on a thread of its own with blocking pipes: a cache lookup
        // is answered at once, not when a busy runtime gets to it. Killing the worker ends
        // the thread (its pipes close).
        let pipes = stdin
            .into_owned_fd()
            .and_then(|stdin| Ok((std::fs::File::from(stdin), stdout.into_owned_fd()?)));
        let (stdin, stdout) = pipes.map_err(worker_error)?;
        let max_frame = memory_bytes.max(1024 * 1024);
        let (answer, answered) = oneshot::channel();
        let request = [key.as_bytes(), wasm].concat();
        std::thread::Builder::new()
            .name("switchboard-compile-io".to_owned())
            .spawn(move || {
                let conversation =
                    converse(stdin, std::fs::File::from(stdout), &request, max_frame);
                let _ = answer.send(conversation);
            })
            .map_err(worker_error)?;
        let session = async {
            match answered.await {
                Ok(Ok(sealed)) => Ok(sealed),
                Ok(Err(Said::Failed(message))) => {
                    Err(Some(CompileError::Invalid(super::hint::with_hint(message))))
                }
                Ok(Err(Said::OutOfMemory)) => Err(Some(CompileError::MemoryLimit(memory_bytes))),
                Ok(Err(Said::Nothing)) | Err(_) => Err(None),
            }
        };
        let outcome = match tokio::time::timeout(timeout, session).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let _ = child.kill().await;
                return Err(CompileError::TimeLimit(timeout));
            }
        };
        match outcome {
            Ok(sealed) => {
                // It exits right after its answer; never wait on it for long.
                if tokio::time::timeout(Duration::from_secs(1), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
                artifact::open(Some(&key), sealed).map_err(|error| {
                    CompileError::Crashed(format!("the worker's build did not verify: {error}"))
                })
            }
            Err(Some(error)) => {
                let _ = child.kill().await;
                Err(error)
            }
            Err(None) => {
                let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await
                {
                    Ok(Ok(status)) => Some(status),
                    _ => {
                        let _ = child.kill().await;
                        None
                    }
                };
                let tail = stderr.await.unwrap_or_default();
                Err(classify_exit(status, &tail, timeout, memory_bytes))
            }
        }
    }

    /// What the compiles report to the metrics now.
    pub fn figures(&self) -> CompileFigures {
        let outcomes = self
            .outcomes
            .lock()
            .iter()
            .map(|(labels, count)| (labels.clone(), *count))
            .collect();
        let refusals = self
            .refusals
            .lock()
            .iter()
            .map(|(labels, count)| (labels.clone(), *count))
            .collect();
        let (running, waiting) = self.node_gate.load();
        CompileFigures {
            outcomes,
            refusals,
            running,
            waiting,
        }
    }
}

/// How a worker's conversation ended without a build.
#[derive(Debug)]
enum Said {
    /// The compiler refused the code.
    Failed(String),
    /// The compiler ran out of memory.
    OutOfMemory,
    /// No answer: the worker ended (or broke the protocol) before one.
    Nothing,
}

/// Sends the request to a worker, serves its cache lookups and inserts from the node's code
/// cache, and returns its sealed build. Blocking: it runs on a thread of its own.
fn converse(
    mut stdin: std::fs::File,
    mut stdout: std::fs::File,
    request: &[u8],
    max_frame: usize,
) -> Result<Vec<u8>, Said> {
    wire::write(&mut stdin, wire::Tag::Request, &[request]).map_err(|_| Said::Nothing)?;
    let cache = engine::code_cache();
    loop {
        let Ok(Some(frame)) = wire::read(&mut stdout, max_frame) else {
            return Err(Said::Nothing);
        };
        match frame.tag {
            wire::Tag::CacheGet => {
                let (id, cache_key) = wire::split_u64(&frame.payload).ok_or(Said::Nothing)?;
                let found = cache.get(cache_key);
                let (flag, code): (&[u8], &[u8]) = match &found {
                    Some(code) => (&[1], code),
                    None => (&[0], &[]),
                };
                wire::write(
                    &mut stdin,
                    wire::Tag::CacheValue,
                    &[&id.to_le_bytes(), flag, code],
                )
                .map_err(|_| Said::Nothing)?;
            }
            wire::Tag::CacheInsert => {
                if let Some((cache_key, code)) = wire::split_field(&frame.payload) {
                    cache.insert(cache_key, code.to_vec());
                }
            }
            wire::Tag::Done => return Ok(frame.payload),
            wire::Tag::Failed => {
                return Err(Said::Failed(
                    String::from_utf8_lossy(&frame.payload).into_owned(),
                ));
            }
            wire::Tag::OutOfMemory => return Err(Said::OutOfMemory),
            wire::Tag::Request | wire::Tag::CacheValue => return Err(Said::Nothing),
        }
    }
}

/// Runs `work` unless the job is cancelled or the node starts to drain first (dropping `work`,
/// which kills its worker).
async fn stoppable<T>(
    work: impl Future<Output = Result<T, CompileError>>,
    draining: &AtomicBool,
    cancel: &mut watch::Receiver<bool>,
) -> Result<T, CompileError> {
    let stopped = async {
        let mut poll = tokio::time::interval(DRAIN_POLL);
        loop {
            tokio::select! {
                changed = cancel.changed() => {
                    if changed.is_err() {
                        // The registry entry is gone: only a node being dropped does that.
                        return CompileError::ShuttingDown;
                    }
                    if *cancel.borrow() {
                        return CompileError::Superseded;
                    }
                }
                _ = poll.tick() => {
                    if draining.load(Ordering::Acquire) {
                        return CompileError::ShuttingDown;
                    }
                }
            }
        }
    };
    tokio::select! {
        result = work => result,
        error = stopped => Err(error),
    }
}

/// A fresh key that seals one compile's build.
fn sealing_key() -> std::io::Result<ArtifactKey> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    ArtifactKey::new(bytes.to_vec()).ok_or_else(|| std::io::ErrorKind::InvalidData.into())
}

/// The last `STDERR_TAIL` bytes a worker wrote to stderr.
async fn stderr_tail(mut stderr: tokio::process::ChildStderr) -> String {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(read) = stderr.read(&mut chunk).await {
        if read == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..read]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Why a worker ended without an answer.
fn classify_exit(
    status: Option<std::process::ExitStatus>,
    stderr: &str,
    timeout: Duration,
    memory_bytes: usize,
) -> CompileError {
    const SIGXCPU: i32 = 24;
    if status.and_then(|status| status.signal()) == Some(SIGXCPU) {
        return CompileError::TimeLimit(timeout);
    }
    // What Rust's allocation failure handler prints before it aborts.
    if stderr.contains("memory allocation of") {
        return CompileError::MemoryLimit(memory_bytes);
    }
    let last = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no message");
    match status {
        Some(status) => CompileError::Crashed(format!("{status}: {last}")),
        None => CompileError::Crashed(format!("it did not exit: {last}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_is_explained_by_its_signal_or_its_last_words() {
        let (timeout, memory) = (Duration::from_secs(3), 64);
        let signalled = |signal| Some(std::process::ExitStatus::from_raw(signal));
        assert_eq!(
            classify_exit(signalled(24), "", timeout, memory),
            CompileError::TimeLimit(timeout)
        );
        assert_eq!(
            classify_exit(
                signalled(6),
                "memory allocation of 4096 bytes failed\n",
                timeout,
                memory
            ),
            CompileError::MemoryLimit(memory)
        );
        let crashed = classify_exit(
            Some(std::process::ExitStatus::from_raw(101 << 8)),
            "thread 'main' panicked at x.rs:1:1:\nboom\n\n",
            timeout,
            memory,
        );
        assert!(
            matches!(&crashed, CompileError::Crashed(message) if message.ends_with(": boom")),
            "{crashed:?}"
        );
    }

    #[test]
    fn sealing_keys_are_fresh() {
        let (a, b) = (sealing_key().expect("a key"), sealing_key().expect("a key"));
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.as_bytes().len(), 32);
    }
}
