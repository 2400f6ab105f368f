//! The one wasmtime `Engine` of the process and its epoch ticker. Epoch interruption is the CPU
//! budget: a call gets `budget / EPOCH_TICK` ticks before it traps with `Interrupt`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine};

use super::code_cache::{CodeCache, CodeCacheStats, DEFAULT_CAPACITY};

/// How often the epoch advances; the resolution of CPU budgets.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Guest wasm stack cap per call.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Function code compiled by the shared engine, reused across loads.
fn code_cache() -> &'static Arc<CodeCache> {
    static CACHE: OnceLock<Arc<CodeCache>> = OnceLock::new();
    CACHE.get_or_init(|| Arc::new(CodeCache::new(DEFAULT_CAPACITY)))
}

/// How the compiled-code cache is doing.
pub fn code_cache_stats() -> CodeCacheStats {
    code_cache().stats()
}

/// The shared engine, created (with its ticker thread) on first use.
pub fn shared() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config
                .wasm_component_model(true)
                .epoch_interruption(true)
                // Only WASI 0.3 async guests need it, and it makes every call dearer.
                .concurrency_support(false)
                .max_wasm_stack(MAX_WASM_STACK);
            // A swap recompiles only the functions that changed.
            config
                .enable_incremental_compilation(code_cache().clone())
                .map_err(|error| format!("{error:#}"))?;
            let engine = Engine::new(&config).map_err(|error| format!("{error:#}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("switchboard-epoch".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        ticker.increment_epoch();
                    }
                })
                .map_err(|error| format!("cannot start the epoch ticker: {error}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Epoch ticks for a CPU budget (at least one).
pub fn ticks_for(budget: Duration) -> u64 {
    (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
