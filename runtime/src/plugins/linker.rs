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

/// Why a plugin could not be compiled ahead of time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrecompileError {
    /// The engine or the linker could not be set up (a host problem, not the plugin's).
    #[error("{0}")]
    Setup(String),
    /// The bytes are not a WebAssembly component.
    #[error("not a plugin component: {0}")]
    NotAComponent(String),
    /// The component does not link against the Switchboard plugin world.
    #[error("not built for the Switchboard plugin world: {0}")]
    WrongWorld(String),
    /// wasmtime could not serialize the build.
    #[error("cannot serialize the build: {0}")]
    Serialize(String),
}

impl Plugins {
    /// Compiles a plugin component ahead of time with the optimizing engine, checks that it
    /// links against the plugin world, and signs the build with `key`: an artifact that nodes
    /// with the same key and the same build of Switchboard load without compiling.
    pub fn precompile(key: &ArtifactKey, wasm: &[u8]) -> Result<Vec<u8>, PrecompileError> {
        let engine = engine::shared(Tier::Optimized).map_err(PrecompileError::Setup)?;
        let component = wasmtime::component::Component::new(engine, wasm)
            .map_err(|error| PrecompileError::NotAComponent(format!("{error:#}")))?;
        linker(Tier::Optimized)
            .map_err(PrecompileError::Setup)?
            .instantiate_pre(&component)
            .map_err(|error| PrecompileError::WrongWorld(format!("{error:#}")))?;
        let compiled = component
            .serialize()
            .map_err(|error| PrecompileError::Serialize(format!("{error:#}")))?;
        Ok(artifact::seal(key, wasm, &compiled))
    }
}
