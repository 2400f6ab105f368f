//! `switchboard dev`: the plugin author's loop. Builds the plugin crate in a folder, serves it
//! on a local server (a `dev` tenant that shows panic messages to clients), mints a token and
//! prints how to connect, then rebuilds on every change of the crate's sources; the server's
//! own file watcher swaps each new build in. The server's log (and the plugin's panics) go to
//! this terminal. Part of the binary, not of the library.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use notify::{RecursiveMode, Watcher};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The tenant the plugin is served for.
const TENANT: &str = "dev";

/// How long sources must stay unchanged before a rebuild (an editor writes several files).
const SETTLE: Duration = Duration::from_millis(300);

/// Runs the loop for the crate in `dir`, the server on `port`, until Ctrl-C.
pub fn run(dir: &Path, port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(dir, port))
}

async fn serve(dir: &Path, port: u16) -> anyhow::Result<()> {
    let manifest = dir.join("Cargo.toml");
    let name = crate_name(&manifest)?;
    let component = target_dir(&manifest)
        .await?
        .join("wasm32-wasip2/release")
        .join(switchboard::scaffold::component_file(&name));
    // Watching starts before anything is built or printed: an edit made as soon as the token
    // shows (or during the first build) is not missed.
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| !event.kind.is_access()) {
            let _ = changed.send(());
        }
    })
    .context("cannot watch the sources")?;
    watcher
        .watch(&dir.join("src"), RecursiveMode::Recursive)
        .context("cannot watch src/")?;
    watcher
        .watch(&manifest, RecursiveMode::NonRecursive)
        .context("cannot watch Cargo.toml")?;

    if !build(&manifest).await? {
        bail!("the first build failed; fix it and run `switchboard dev` again");
    }
    let work = WorkDir::new()?;
    let secret = random_hex()?;
    let api_key = random_hex()?;
    let config = work.join("switchboard.toml");
    std::fs::write(&config, config_text(port, &component, &secret, &api_key))
        .with_context(|| format!("writing {}", config.display()))?;

    let mut server = Command::new(std::env::current_exe().context("where is this binary")?)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the server")?;
    let stdout = server.stdout.take().context("the server's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return Some(addr.to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the server did not start (its log is above)")?;
    let token = mint(&secret)?;
    println!("dev: serving plugin `{name}` for tenant `{TENANT}` on {addr}");
    println!("dev: token (user `{TENANT}`, 24 h): {token}");
    println!("dev: connect: websocat -H 'Authorization: Bearer {token}' ws://{addr}/ws/{TENANT}");
    println!(
        "dev: plugins: curl -H 'Authorization: Bearer {api_key}' http://{addr}/api/tenants/{TENANT}/plugins"
    );
    println!(
        "dev: watching {}: a change rebuilds the plugin and the server swaps it in (Ctrl-C stops)",
        dir.join("src").display()
    );

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            exit = server.wait() => bail!("the server stopped: {}", exit.map(|status| status.to_string()).unwrap_or_else(|error| error.to_string())),
            Some(()) = changes.recv() => {
                // Let the burst of writes settle, then build once for all of them.
                while tokio::time::timeout(SETTLE, changes.recv()).await.is_ok_and(|more| more.is_some()) {}
                let started = Instant::now();
                if build(&manifest).await? {
                    println!("dev: rebuilt in {:.1} s; the server swaps it in", started.elapsed().as_secs_f64());
                } else {
                    println!("dev: the build failed; the last good version keeps serving");
                }
            }
        }
    }
    if let Some(pid) = server.id() {
        // SIGTERM: the server drains (clients get 1001) rather than dropping them.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), server.wait()).await;
    Ok(())
}

/// The `[package] name` of the crate.
fn crate_name(manifest: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(manifest).with_context(|| {
        format!(
            "no plugin crate here ({}); make one with `switchboard plugin new NAME`",
            manifest.display()
        )
    })?;
    let parsed: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not TOML", manifest.display()))?;
    parsed
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(|name| name.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no [package] name", manifest.display()))
}

/// Where cargo puts the crate's builds (`CARGO_TARGET_DIR` and workspaces included).
async fn target_dir(manifest: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("cargo metadata failed for {}", manifest.display());
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata's answer")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata named no target directory")
}

/// Builds the component; its messages go to this terminal. `false` when it did not build.
async fn build(manifest: &Path) -> anyhow::Result<bool> {
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .status()
        .await
        .context("cannot run cargo")?;
    Ok(status.success())
}

/// The config of the dev server: one tenant, the plugin from its build folder, panics shown.
fn config_text(port: u16, component: &Path, secret: &str, api_key: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"

[log]
level = "info"

[[tenants]]
name = "{TENANT}"
api_key = "{api_key}"

[tenants.jwt]
secret = "{secret}"

[tenants.plugin_limits]
expose_panics = true

[[tenants.plugins]]
path = {component}
"#,
        component = toml::Value::String(component.display().to_string())
    )
}

/// A development token for user `dev`, valid 24 hours.
fn mint(secret: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let claims = serde_json::json!({"sub": TENANT, "iat": now, "exp": now + 24 * 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign the token")
}

/// 16 random bytes in hex, for the development server's secret and API key.
fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// A fresh folder for the dev server's config, removed however `dev` ends.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> anyhow::Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("switchboard-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_serves_the_component_for_the_dev_tenant_with_panics_shown() {
        let text = config_text(9000, Path::new("/p/\"odd\".wasm"), "s", "k");
        let config: toml::Table = text.parse().expect("TOML");
        assert_eq!(config["listen"].as_str(), Some("127.0.0.1:9000"));
        let tenant = &config["tenants"][0];
        assert_eq!(tenant["name"].as_str(), Some(TENANT));
        assert_eq!(
            tenant["plugin_limits"]["expose_panics"].as_bool(),
            Some(true)
        );
        assert_eq!(
            tenant["plugins"][0]["path"].as_str(),
            Some("/p/\"odd\".wasm")
        );
    }

    #[test]
    fn a_folder_without_a_crate_says_how_to_make_one() {
        let error = crate_name(Path::new("/nonexistent/Cargo.toml")).expect_err("refused");
        assert!(
            error.to_string().contains("switchboard plugin new"),
            "{error}"
        );
    }

    #[test]
    fn secrets_differ_between_uses() {
        let (a, b) = (random_hex().expect("random"), random_hex().expect("random"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
