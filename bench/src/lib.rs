//! Shared pieces of the benchmark binaries (`cross-node`, `suite`, `bare-server`): child
//! processes under test, `/proc` readings and statistics.

pub mod process;
pub mod procstat;
pub mod stats;
