//! The compile worker: the child process (`switchboard compile-worker`) that compiles one
//! plugin for the node. It bounds itself before it reads a byte of the plugin (a data-segment
//! limit, a CPU-time limit, no core dumps), runs at a lower scheduling priority (a swap someone
//! waits for only once it has run past `DEMOTE_AFTER`), compiles with the
//! tier's engine, and writes the build sealed with the key the node sent, so the node maps
//! only code that came out of this compiler. The optimizing compiler's function cache lives in
//! the node and is asked over the pipes; when the node goes away (its end of stdin closes), the
//! worker exits.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use parking_lot::Mutex;
use rustix::process::{Resource, Rlimit};

use super::wire::{self, Tag};
use crate::config::ArtifactKey;
use crate::plugins::artifact;
use crate::plugins::engine::{self, Tier};

/// Exit status when the node's end of stdin closed mid-compile.
pub const EXIT_ORPHANED: i32 = 3;
/// Exit status when the request could not be read or the answer not written.
pub const EXIT_PROTOCOL: i32 = 4;

/// Niceness of a compile: connections (niceness 0) come first on a busy node.
pub const NICENESS: i32 = 10;

/// How long a swap's compile runs at the node's priority before it drops to `NICENESS`: a
/// plugin's baseline build takes milliseconds, and someone waits for it.
pub const DEMOTE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest request the worker reads: the plugin plus its key. The data-segment limit bounds
/// what it can actually hold.
const MAX_REQUEST_BYTES: usize = u32::MAX as usize;
/// Largest cached value the node sends back.
const MAX_CACHE_FRAME: usize = 256 * 1024 * 1024;

/// How the node bounds one compile.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Which compiler.
    pub tier: Tier,
    /// Data-segment bytes (`RLIMIT_DATA`).
    pub memory_bytes: u64,
    /// CPU seconds, all threads together (`RLIMIT_CPU`), a backstop to the node's wall clock.
    pub cpu_seconds: u64,
    /// Someone waits for this compile (a swap): it keeps the node's priority for
    /// `DEMOTE_AFTER`.
    pub urgent: bool,
}

/// Runs the worker on stdin and stdout; the process's exit status.
pub fn run(bounds: Bounds) -> i32 {
    if let Err(error) = limit_self(&bounds) {
        // Unbounded, it must not compile anything.
        let _ = writeln!(io::stderr(), "compile worker: cannot limit itself: {error}");
        return EXIT_PROTOCOL;
    }
    let stdout = Arc::new(Mutex::new(io::stdout()));
    let mut stdin = io::stdin().lock();
    let request = match wire::read(&mut stdin, MAX_REQUEST_BYTES) {
        Ok(Some(frame)) if frame.tag == Tag::Request && frame.payload.len() >= 32 => frame,
        _ => {
            let _ = writeln!(io::stderr(), "compile worker: no request on stdin");
            return EXIT_PROTOCOL;
        }
    };
    drop(stdin);
    let (key, wasm) = request.payload.split_at(32);
    let Some(key) = ArtifactKey::new(key.to_vec()) else {
        return EXIT_PROTOCOL;
    };
    let cache = Arc::new(RemoteCache {
        out: stdout.clone(),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        answered: AtomicBool::new(false),
    });
    let reader = cache.clone();
    let started = std::thread::Builder::new()
        .name("compile-worker-stdin".to_owned())
        .spawn(move || reader.serve_answers());
    if started.is_err() {
        return EXIT_PROTOCOL;
    }
    let (tag, answer) = match compile(bounds.tier, cache.clone(), wasm) {
        Ok(compiled) => (Tag::Done, artifact::seal(&key, wasm, &compiled)),
        Err(message) if out_of_memory(&message) => (Tag::OutOfMemory, message.into_bytes()),
        Err(message) => (Tag::Failed, message.into_bytes()),
    };
    cache.answered.store(true, Ordering::Release);
    let mut out = stdout.lock();
    match wire::write(&mut *out, tag, &[&answer]) {
        Ok(()) => 0,
        Err(_) => EXIT_PROTOCOL,
    }
}

fn compile(tier: Tier, cache: Arc<RemoteCache>, wasm: &[u8]) -> Result<Vec<u8>, String> {
    let engine = engine::compiler(tier, cache)?;
    let component = wasmtime::component::Component::new(&engine, wasm)
        .map_err(|error| format!("not a Switchboard plugin component: {error:#}"))?;
    component
        .serialize()
        .map_err(|error| format!("cannot serialize the build: {error:#}"))
}

/// Whether a compile error is the data-segment limit rather than the plugin.
fn out_of_memory(message: &str) -> bool {
    message.contains("Cannot allocate memory") || message.contains("out of memory")
}

/// Applies the bounds to this process: they hold for every thread the compiler starts.
fn limit_self(bounds: &Bounds) -> io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        rustix::process::setrlimit(
            resource,
            Rlimit {
                current: Some(soft),
                maximum: Some(hard),
            },
        )
    };
    set(Resource::Data, bounds.memory_bytes, bounds.memory_bytes)?;
    // Past the soft limit the kernel sends SIGXCPU, which ends the process.
    set(
        Resource::Cpu,
        bounds.cpu_seconds,
        bounds.cpu_seconds.saturating_add(1),
    )?;
    // A compile stopped by a limit is expected, not a crash to keep a core of.
    set(Resource::Core, 0, 0)?;
    if bounds.urgent {
        std::thread::Builder::new()
            .name("compile-worker-demote".to_owned())
            .spawn(|| {
                std::thread::sleep(DEMOTE_AFTER);
                demote();
            })?;
    } else {
        demote();
    }
    Ok(())
}

/// Lowers every thread of the process to `NICENESS` (on Linux a priority is a thread's, and a
/// new thread takes its creator's). Lowering one's own priority needs no privilege; failing to
/// is not a reason to stop compiling.
fn demote() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        let _ = rustix::process::setpriority_process(None, NICENESS);
        return;
    };
    for task in tasks.flatten() {
        let thread = task
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(thread) = thread {
            let _ = rustix::process::setpriority_process(Some(thread), NICENESS);
        }
    }
}

/// The optimizing compiler's cache, kept by the node: a lookup is a round trip over the
/// pipes, an insert a one-way frame. Compiler threads ask concurrently; answers are matched to
/// questions by id.
#[derive(Debug)]
struct RemoteCache {
    out: Arc<Mutex<io::Stdout>>,
    pending: Mutex<HashMap<u64, mpsc::SyncSender<Option<Vec<u8>>>>>,
    next_id: AtomicU64,
    /// Set once the answer is being written: the node may close stdin from then on.
    answered: AtomicBool,
}

impl RemoteCache {
    /// Reads the node's answers until stdin ends, then exits unless the answer is on its way:
    /// nobody waits for the build any more.
    fn serve_answers(&self) {
        let mut stdin = io::stdin().lock();
        while let Ok(Some(frame)) = wire::read(&mut stdin, MAX_CACHE_FRAME) {
            if frame.tag != Tag::CacheValue {
                continue;
            }
            let Some((id, rest)) = wire::split_u64(&frame.payload) else {
                continue;
            };
            let value = match rest.split_first() {
                Some((1, code)) => Some(code.to_vec()),
                _ => None,
            };
            if let Some(waiter) = self.pending.lock().remove(&id) {
                let _ = waiter.send(value);
            }
        }
        if !self.answered.load(Ordering::Acquire) {
            std::process::exit(EXIT_ORPHANED);
        }
    }
}

impl wasmtime::CacheStore for RemoteCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, waiter) = mpsc::sync_channel(1);
        self.pending.lock().insert(id, answer);
        let sent = wire::write(
            &mut *self.out.lock(),
            Tag::CacheGet,
            &[&id.to_le_bytes(), key],
        );
        if sent.is_err() {
            self.pending.lock().remove(&id);
            return None;
        }
        waiter.recv().ok().flatten().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes();
        wire::write(
            &mut *self.out.lock(),
            Tag::CacheInsert,
            &[&key_len, key, &value],
        )
        .is_ok()
    }
}
