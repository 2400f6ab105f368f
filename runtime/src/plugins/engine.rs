//! The two wasmtime engines of the process and their epoch ticker. Epoch interruption is the CPU
//! budget: a call gets `budget / EPOCH_TICK` ticks before it traps with `Interrupt`.
//!
//! A new plugin version is first compiled by Winch, wasmtime's baseline compiler, so a swap
//! takes milliseconds, then by Cranelift in the background; the optimized build replaces the
//! baseline one when it is ready (see `Plugins::optimize_later`). Both compile in a worker
//! process (`super::compile`) with an engine of the same configuration (`compiler`), and the
//! node maps the build into its shared engine.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{CacheStore, Config, Engine, OptLevel, Strategy};

use super::code_cache::{CodeCache, CodeCacheStats, DEFAULT_CAPACITY};

/// How often the epoch advances; the resolution of CPU budgets.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Guest wasm stack cap per call.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Which compiler made a loaded plugin's machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Winch: compiles in a fraction of Cranelift's time, runs slower. A swapped-in version
    /// serves on it until its optimized build is ready.
    Baseline,
    /// Cranelift: optimized code, what every version ends up on.
    Optimized,
}

impl Tier {
    /// The name the API and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Baseline => "baseline",
            Tier::Optimized => "optimized",
        }
    }

    /// The tier of a name given by `as_str`.
    pub fn from_name(name: &str) -> Option<Tier> {
        [Tier::Baseline, Tier::Optimized]
            .into_iter()
            .find(|tier| tier.as_str() == name)
    }
}

/// Function code compiled by the optimizing engine, reused across loads.
pub(crate) fn code_cache() -> &'static Arc<CodeCache> {
    static CACHE: OnceLock<Arc<CodeCache>> = OnceLock::new();
    CACHE.get_or_init(|| Arc::new(CodeCache::new(DEFAULT_CAPACITY)))
}

/// How the compiled-code cache is doing.
pub fn code_cache_stats() -> CodeCacheStats {
    code_cache().stats()
}

struct Engines {
    baseline: Engine,
    optimized: Engine,
}

fn engine(tier: Tier) -> Result<Engine, String> {
    compiler(tier, code_cache().clone())
}

/// An engine of a tier's configuration whose optimizing compiler reuses function code through
/// `cache`, without the epoch ticker: what the compile worker (`super::compile::worker`)
/// compiles with. Its builds load into `shared(tier)`, whose configuration is the same.
pub fn compiler(tier: Tier, cache: Arc<dyn CacheStore>) -> Result<Engine, String> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        // Only WASI 0.3 async guests need it, and it makes every call dearer.
        .concurrency_support(false)
        .max_wasm_stack(MAX_WASM_STACK);
    match tier {
        // Winch has no incremental compilation: it is fast enough without.
        Tier::Baseline => {
            // Cranelift still builds this engine's trampolines: unoptimized, they compile in
            // a fraction of the time and cost a few instructions per call.
            config
                .strategy(Strategy::Winch)
                .cranelift_opt_level(OptLevel::None);
        }
        Tier::Optimized => {
            config.strategy(Strategy::Cranelift);
            // A rebuilt plugin recompiles only the functions that changed.
            config
                .enable_incremental_compilation(cache)
                .map_err(|error| format!("{error:#}"))?;
        }
    }
    Engine::new(&config).map_err(|error| format!("{} engine: {error:#}", tier.as_str()))
}

fn engines() -> Result<&'static Engines, String> {
    static ENGINES: OnceLock<Result<Engines, String>> = OnceLock::new();
    ENGINES
        .get_or_init(|| {
            let engines = Engines {
                baseline: engine(Tier::Baseline)?,
                optimized: engine(Tier::Optimized)?,
            };
            let ticked = [engines.baseline.clone(), engines.optimized.clone()];
            std::thread::Builder::new()
                .name("switchboard-epoch".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &ticked {
                            engine.increment_epoch();
                        }
                    }
                })
                .map_err(|error| format!("cannot start the epoch ticker: {error}"))?;
            Ok(engines)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The shared engine of a tier, created (with the ticker thread) on first use.
pub fn shared(tier: Tier) -> Result<&'static Engine, String> {
    let engines = engines()?;
    Ok(match tier {
        Tier::Baseline => &engines.baseline,
        Tier::Optimized => &engines.optimized,
    })
}

/// Epoch ticks for a CPU budget (at least one).
pub fn ticks_for(budget: Duration) -> u64 {
    (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
