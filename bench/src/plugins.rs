//! Finding the repository and the WASM plugins the benchmarks load, building them when missing,
//! and making a distinct build of one (for swaps).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};

/// The repository root: the first ancestor of the executable (or the working directory)
/// holding `bench/baselines/node-ws/server.mjs`.
pub fn find_repo() -> Result<PathBuf> {
    let marker = Path::new("bench/baselines/node-ws/server.mjs");
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    starts
        .into_iter()
        .flatten()
        .flat_map(|start| start.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .find(|dir| dir.join(marker).exists())
        .ok_or_else(|| anyhow!("cannot find the repository (run from inside it)"))
}

/// The folders plugins may have been built into, in order of preference: `plugins/target`
/// (where [`build`] puts them), then `target/plugins` (where the tests' build script does).
pub fn dirs(repo: &Path) -> [PathBuf; 2] {
    [
        repo.join("plugins/target/wasm32-wasip2/release"),
        repo.join("target/plugins/wasm32-wasip2/release"),
    ]
}

/// The first folder of [`dirs`] that holds every one of `files`, else the first folder (where
/// [`build`] puts them).
pub fn dir_with(repo: &Path, files: &[&str]) -> PathBuf {
    let dirs = dirs(repo);
    dirs.iter()
        .find(|dir| files.iter().all(|file| dir.join(file).exists()))
        .unwrap_or(&dirs[0])
        .clone()
}

/// The file a plugin package builds into: `switchboard-plugin-echo` gives
/// `switchboard_plugin_echo.wasm`.
pub fn file_of(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

/// Builds `packages` (wasm32-wasip2, release) into `plugins/target`.
pub fn build(repo: &Path, packages: &[&str]) -> Result<()> {
    eprintln!("building the plugins (wasm32-wasip2, release) into plugins/target");
    let mut command = Command::new("cargo");
    command.args(["build", "--release", "--target", "wasm32-wasip2"]);
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command
        .arg("--manifest-path")
        .arg(repo.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(repo.join("plugins/target"))
        .status()
        .context("cannot run cargo")?;
    let dir = &dirs(repo)[0];
    if !status.success() || !packages.iter().all(|p| dir.join(file_of(p)).exists()) {
        bail!("building the plugins failed");
    }
    Ok(())
}

/// The folder holding every plugin of `packages`, built there first if no folder has them
/// all.
pub fn locate_or_build(repo: &Path, packages: &[&str]) -> Result<PathBuf> {
    let files: Vec<String> = packages.iter().map(|package| file_of(package)).collect();
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let dir = dir_with(repo, &names);
    if !names.iter().all(|name| dir.join(name).exists()) {
        build(repo, packages)?;
    }
    Ok(dir)
}

/// Appends `value` as an unsigned LEB128 number.
fn leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The component with a custom section (id 0) appended: a different build of the same plugin
/// (other bytes, another hash, the same code).
pub fn rebuilt(component: &[u8], label: &str) -> Vec<u8> {
    let name = b"switchboard-bench-build";
    let mut section = Vec::new();
    leb128(&mut section, name.len());
    section.extend_from_slice(name);
    section.extend_from_slice(label.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb128(&mut out, section.len());
    out.extend_from_slice(&section);
    out
}

#[cfg(test)]
mod tests {
    use super::{file_of, leb128, rebuilt};

    #[test]
    fn appends_one_custom_section() {
        let out = rebuilt(b"\0asm", "x");
        // id 0, size 25 (1 length byte, 23 name bytes, 1 label byte), the name, the label.
        assert_eq!(&out[..6], b"\0asm\x00\x19");
        assert_eq!(out[6], 23);
        assert_eq!(&out[7..30], b"switchboard-bench-build");
        assert_eq!(&out[30..], b"x");
    }

    #[test]
    fn leb128_uses_continuation_bits() {
        let mut out = Vec::new();
        leb128(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn package_names_map_to_files() {
        assert_eq!(
            file_of("switchboard-plugin-greeter-v1"),
            "switchboard_plugin_greeter_v1.wasm"
        );
    }
}
