//! Tiered swaps: a swapped-in version first runs code from the baseline compiler (Winch, fast
//! to build), and the optimizing compiler's build takes its place when it is ready, unless a
//! newer version came first.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Plugins;
use super::compile::{CompileError, Purpose};
use super::engine::Tier;
use super::pool::{LoadError, LoadedPlugin};
use crate::tenant::Tenant;

/// How a background optimized build (`Plugins::optimize_later`) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Optimized {
    /// The optimized build replaced the baseline one.
    InPlace,
    /// Not used: a newer version (or the node's shutdown) came first.
    Superseded,
    /// It failed to build; the baseline build keeps serving.
    Failed(String),
}

impl Plugins {
    /// The compiler a swap (an upload or a reload) uses first: Winch when swaps are tiered,
    /// else Cranelift straight away.
    pub fn swap_tier(&self) -> Tier {
        if self.tiered_swaps {
            Tier::Baseline
        } else {
            Tier::Optimized
        }
    }

    /// Compiles a swapped-in baseline version again with the optimizing compiler, off the hot
    /// path, and puts that build in its place if it is still the routed version by then. The
    /// handle tells how that ended (`None`: the version is optimized already); dropping it
    /// leaves the build running.
    pub fn optimize_later(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        baseline: &Arc<LoadedPlugin>,
        bytes: Vec<u8>,
        config: BTreeMap<String, String>,
    ) -> Option<tokio::task::JoinHandle<Optimized>> {
        if baseline.tier == Tier::Optimized {
            return None;
        }
        let (plugins, tenant, baseline) = (Arc::downgrade(self), tenant.clone(), baseline.clone());
        Some(tokio::spawn(async move {
            let Some(plugins) = plugins.upgrade() else {
                return Optimized::Superseded;
            };
            let routed = plugins
                .routes(&tenant.name)
                .is_some_and(|routes| routes.plugins.iter().any(|p| Arc::ptr_eq(p, &baseline)));
            if !routed {
                return Optimized::Superseded;
            }
            let path = baseline.path.clone();
            let purpose = Purpose::Optimize {
                plugin: baseline.name().to_owned(),
                version: Arc::as_ptr(&baseline) as usize,
            };
            let loaded = plugins
                .load_for(&tenant, path, bytes, config, Tier::Optimized, purpose)
                .await;
            let outcome = match loaded {
                Err(LoadError::Compile {
                    error: CompileError::Superseded | CompileError::ShuttingDown,
                    ..
                }) => Ok((false, 0)),
                Err(error) => Err(error.to_string()),
                Ok(optimized) => {
                    let compile_ms = optimized.load_time.compile.as_millis() as u64;
                    plugins
                        .upgrade(&tenant.name, &baseline, optimized)
                        .map(|upgraded| (upgraded, compile_ms))
                        .map_err(|error| error.to_string())
                }
            };
            match outcome {
                Ok((true, compile_ms)) => {
                    tracing::info!(
                        tenant = %tenant.name,
                        plugin = %baseline.name(),
                        version = %baseline.manifest.version,
                        compile_ms,
                        "plugin now runs optimized code"
                    );
                    Optimized::InPlace
                }
                Ok((false, _)) => {
                    tracing::debug!(
                        tenant = %tenant.name,
                        plugin = %baseline.name(),
                        "optimized build not used: a newer version (or the node's shutdown) came first"
                    );
                    Optimized::Superseded
                }
                Err(error) => {
                    plugins.services.metrics.plugin_load_failure(&tenant.name);
                    tracing::warn!(
                        tenant = %tenant.name,
                        plugin = %baseline.name(),
                        %error,
                        "optimized build failed; the baseline build keeps serving"
                    );
                    Optimized::Failed(error)
                }
            }
        }))
    }
}
