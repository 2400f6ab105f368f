//! Builds the plugins in `plugins/` for `wasm32-wasip2`, so the tests load real components,
//! and tells the tests where they are (`PLUGIN_DIR`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.join("..");
    let target_dir = root.join("target").join("plugins");
    for watched in ["plugins", "sdk/src", "sdk/wit", "sdk/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // A separate target dir: the outer cargo holds the lock on the main one.
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("plugins").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MAKEFLAGS")
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building plugins/ for wasm32-wasip2 failed (is the target installed? scripts/setup adds it)"
    );
    let plugin_dir = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=PLUGIN_DIR={}", plugin_dir.display());
}
