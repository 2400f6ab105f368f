//! The linker of each compiler tier (WASI with no capabilities, and the Switchboard imports),
//! built once per process, and ahead-of-time compiles (`switchboard precompile`).

use std::sync::OnceLock;

use wasmtime::component::{HasSelf, Linker};

use super::Plugins;
use super::artifact;
use super::engine::{self, Tier};
use super::host_api::HostState;
use crate::config::ArtifactKey;
use crate::wit::Plugin;

/// The linker of a tier's engine: WASI and the Switchboard imports.
pub fn linker(tier: Tier) -> Result<&'static Linker<HostState>, String> {
    static LINKERS: [OnceLock<Result<Linker<HostState>, String>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let slot = match tier {
        Tier::Baseline => &LINKERS[0],
        Tier::Optimized => &LINKERS[1],
    };
    slot.get_or_init(|| {
        let engine = engine::shared(tier)?;
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| format!("{error:#}"))?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|error| format!("{error:#}"))?;
        Ok(linker)
    })
    .as_ref()
    .map_err(Clone::clone)
}

impl Plugins {
    /// Compiles a plugin component ahead of time with the optimizing engine, checks that it
    /// links against the plugin world, and signs the build with `key`: an artifact that nodes
    /// with the same key and the same build of Switchboard load without compiling.
    pub fn precompile(key: &ArtifactKey, wasm: &[u8]) -> Result<Vec<u8>, String> {
        let engine = engine::shared(Tier::Optimized)?;
        let component = wasmtime::component::Component::new(engine, wasm)
            .map_err(|error| format!("not a plugin component: {error:#}"))?;
        linker(Tier::Optimized)?
            .instantiate_pre(&component)
            .map_err(|error| format!("not built for the Switchboard plugin world: {error:#}"))?;
        let compiled = component
            .serialize()
            .map_err(|error| format!("cannot serialize the build: {error:#}"))?;
        Ok(artifact::seal(key, wasm, &compiled))
    }
}
