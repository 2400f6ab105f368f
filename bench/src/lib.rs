//! Shared pieces of the benchmark binaries (`cross-node`, `suite`, `bare-server`, `soak`,
//! `metrics-cost`): child processes under test, `/proc` readings, the machine's description and
//! statistics.

pub mod machine;
pub mod plugins;
pub mod process;
pub mod procstat;
pub mod stats;
