//! The `switchboard` command: `serve`, `check`, `token`, `precompile`, `dev`, `plugin new`,
//! the operator's `plugins` and `tenants` (and the hidden `compile-worker` that `serve` runs). Thin: parse flags, load the config, set up logging,
//! hand over to the library.

mod dev_loop;
mod ops;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use switchboard::config::{self, Config, JwtKey, LogFormat};
use switchboard::plugins::compile::worker;
use switchboard::plugins::engine::Tier;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A WebAssembly-programmable WebSocket runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSocket connections with the given config.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Listen here instead of the config's `listen` (one config for many nodes).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Validate a config file; prints every problem with its file and key.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Mint a development token from a tenant's HS secret.
    Token {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The tenant whose secret signs the token.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. `1h` or `15m`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// An extra claim `key=value`; the value is JSON when it parses, a string otherwise.
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, Value)>,
    },
    /// Compile a plugin ahead of time into an artifact signed with the config's
    /// `plugins.artifact_key`; nodes of the same build and key load it without compiling.
    Precompile {
        /// The TOML config file that holds the artifact key.
        #[arg(long, short)]
        config: PathBuf,
        /// The plugin component (`.wasm`).
        wasm: PathBuf,
        /// Where to write the artifact (default: the component's path with `.cwasm`).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Build the plugin crate in a folder, serve it locally, rebuild and swap it on every change.
    Dev {
        /// The plugin crate's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The local server's port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Plugin authoring.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// A running node's plugins, through its API: list, deploy, rollback, history, delete
    /// (changes reach every node of the cluster). Exit code 1 when the node refuses, 2 when
    /// it cannot be asked.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
        /// The node (or its load balancer): an http:// URL.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The tenant.
        #[arg(long, global = true, default_value = "default")]
        tenant: String,
        /// The tenant's API key (default: the environment's `SWITCHBOARD_API_KEY`).
        #[arg(
            long,
            global = true,
            env = "SWITCHBOARD_API_KEY",
            hide_env_values = true
        )]
        key: Option<String>,
    },
    /// A running node's tenants, through the operator's tenant API: list, get, apply (create or
    /// update from a TOML or JSON file), delete (changes reach every node of the cluster).
    /// Exit code 1 when the node refuses, 2 when it cannot be asked.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
        /// The node (or its load balancer): an http:// URL.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The operator's key, `admin.api_key` (default: the environment's
        /// `SWITCHBOARD_ADMIN_KEY`).
        #[arg(
            long,
            global = true,
            env = "SWITCHBOARD_ADMIN_KEY",
            hide_env_values = true
        )]
        key: Option<String>,
    },
    /// Compiles one plugin for a running node: the component on stdin, the sealed build on
    /// stdout. `serve` starts it; not for people.
    #[command(name = "compile-worker", hide = true)]
    CompileWorker {
        /// `baseline` (Winch) or `optimized` (Cranelift).
        #[arg(long, value_parser = parse_tier)]
        tier: Tier,
        /// Data-segment limit of the process, bytes.
        #[arg(long)]
        memory_bytes: u64,
        /// CPU-time limit of the process, seconds.
        #[arg(long)]
        cpu_seconds: u64,
        /// Someone waits for the build: keep the node's priority for a moment.
        #[arg(long)]
        urgent: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Make a plugin crate (typed handlers, a native test) that builds and tests as it is.
    New {
        /// The plugin's name (also the crate's and the folder's): a-z 0-9 - _.
        name: String,
        /// Where to make it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The `sdk` folder of a Switchboard checkout (default: the one this binary was built
        /// from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// The tenant's plugins: name, version, source, tier, nodes serving it, calls, errors,
    /// sha256, types.
    List,
    /// Deploy a component (`.wasm`) or a precompiled artifact (`.cwasm`) as plugin NAME on
    /// every node; the version serving keeps serving if it does not load.
    Deploy {
        /// The plugin's name (as its manifest says).
        name: String,
        /// The file to upload.
        file: PathBuf,
    },
    /// Take plugin NAME out on every node: its message types answer `unknown_type` from then
    /// on (a configured file of that name is not served either).
    Delete {
        /// The plugin's name.
        name: String,
    },
    /// Serve the version of NAME deployed before the serving one again (or, with --to, a kept
    /// version by its sha256).
    Rollback {
        /// The plugin's name.
        name: String,
        /// The sha256 of a kept version (`switchboard plugins history NAME`).
        #[arg(long)]
        to: Option<String>,
    },
    /// The kept versions of NAME (the last 10 deployed), newest first.
    History {
        /// The plugin's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Every tenant: name, source (file or api), protocol, connections here, plugins.
    List,
    /// One tenant: its summary and, if made through the API, its settings (secrets hidden).
    Get {
        /// The tenant's name.
        name: String,
    },
    /// Create or update tenants from FILE: the fields of a `[[tenants]]` table, one tenant at
    /// the top level or several as `[[tenants]]` (TOML, or JSON for a `.json` file). Secrets
    /// and keys are given inline; plugins are deployed with `switchboard plugins deploy`.
    Apply {
        /// The TOML or JSON file.
        file: PathBuf,
    },
    /// Delete tenant NAME on every node: its connections close (1008 `tenant removed`), its
    /// plugins, history and key-value entries go.
    Delete {
        /// The tenant's name.
        name: String,
    },
}

fn parse_tier(name: &str) -> Result<Tier, String> {
    Tier::from_name(name).ok_or_else(|| format!("`{name}` is not `baseline` or `optimized`"))
}

fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not key=value"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Check { config } => return check(&config),
        Command::Token {
            config,
            tenant,
            sub,
            ttl,
            claims,
        } => token(&config, &tenant, &sub, ttl, claims),
        Command::Precompile {
            config,
            wasm,
            output,
        } => precompile(&config, &wasm, output),
        Command::Plugin {
            command: PluginCommand::New { name, dir, sdk },
        } => new_plugin(&name, dir, sdk),
        Command::Dev { dir, port } => dev_loop::run(&dir, port),
        Command::Plugins {
            command,
            url,
            tenant,
            key,
        } => {
            let target = ops::Target { url, tenant, key };
            let action = match &command {
                PluginsCommand::List => ops::Action::List,
                PluginsCommand::Deploy { name, file } => ops::Action::Deploy { name, file },
                PluginsCommand::Delete { name } => ops::Action::Delete { name },
                PluginsCommand::Rollback { name, to } => ops::Action::Rollback {
                    name,
                    to: to.as_deref(),
                },
                PluginsCommand::History { name } => ops::Action::History { name },
            };
            return ops::run(&target, action);
        }
        Command::Tenants { command, url, key } => {
            let target = ops::Target {
                url,
                tenant: String::new(),
                key,
            };
            let action = match &command {
                TenantsCommand::List => ops::tenants::Action::List,
                TenantsCommand::Get { name } => ops::tenants::Action::Get { name },
                TenantsCommand::Apply { file } => ops::tenants::Action::Apply { file },
                TenantsCommand::Delete { name } => ops::tenants::Action::Delete { name },
            };
            return ops::finish(ops::tenants::act(&target, action));
        }
        Command::CompileWorker {
            tier,
            memory_bytes,
            cpu_seconds,
            urgent,
        } => {
            let status = worker::run(worker::Bounds {
                tier,
                memory_bytes,
                cpu_seconds,
                urgent,
            });
            return ExitCode::from(u8::try_from(status).unwrap_or(1));
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn new_plugin(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let sdk = sdk.unwrap_or_else(switchboard::scaffold::built_in_sdk);
    let written = switchboard::scaffold::new_plugin(name, &dir, &sdk)?;
    for path in written {
        println!("wrote {}", path.display());
    }
    let file = switchboard::scaffold::component_file(name);
    println!(
        "next: cd {dir} && cargo test && cargo build --release --target wasm32-wasip2 \
         (the component: target/wasm32-wasip2/release/{file})",
        dir = dir.display()
    );
    Ok(())
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|error| anyhow::anyhow!("{error}"))
}

fn check(path: &std::path::Path) -> ExitCode {
    let mut problems = match config::load(path) {
        Ok(config) => {
            let tenants = config.tenants.len();
            match check_plugins(config) {
                Ok(plugins) => {
                    println!(
                        "{}: ok ({tenants} tenant{}, {plugins} plugin{} loaded)",
                        path.display(),
                        if tenants == 1 { "" } else { "s" },
                        if plugins == 1 { "" } else { "s" },
                    );
                    return ExitCode::SUCCESS;
                }
                Err(errors) => errors
                    .into_iter()
                    .map(|error| format!("{}: {error}", path.display()))
                    .collect(),
            }
        }
        Err(error) => error.lines(),
    };
    problems.sort();
    for problem in problems {
        eprintln!("{problem}");
    }
    ExitCode::FAILURE
}

/// Loads and links every configured plugin (`server::check`); the problems, one a line.
fn check_plugins(config: Config) -> Result<usize, Vec<String>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| vec![format!("cannot start the async runtime: {error}")])?;
    let checked = runtime.block_on(switchboard::server::check(config));
    // Compile workers end with their tasks; nothing else is left to wait for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    checked.map_err(|error| match error {
        switchboard::server::StartError::Tenants(errors)
        | switchboard::server::StartError::Plugins(errors) => errors,
        other => vec![other.to_string()],
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr so stdout carries only the `listening on` line scripts read.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Raises the open-files soft limit to the hard limit: every connection is a descriptor, and
/// the node derives its socket budget from this limit when it starts (and logs it).
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(open_files = limit, "open files limit raised"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
}

fn serve(path: &std::path::Path, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let mut config = load(path)?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    init_logging(&config);
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let server = switchboard::server::start(config).await?;
        // Scripts and tests read the bound address from this line.
        println!("listening on {}", server.addr);
        shutdown_signal().await?;
        server.shutdown().await;
        anyhow::Ok(())
    });
    // Dropping the runtime would wait for every blocking task; the drain is over, so give
    // them a moment and go (compile workers are killed with their tasks).
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

fn precompile(
    config: &std::path::Path,
    wasm: &std::path::Path,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = load(config)?;
    let key = config.artifact_key.context(
        "the config has no `plugins.artifact_key`: set it (at least 32 bytes) to sign artifacts",
    )?;
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let artifact = switchboard::plugins::Plugins::precompile(&key, &bytes)
        .map_err(|error| anyhow::anyhow!("{}: {error}", wasm.display()))?;
    let output = output.unwrap_or_else(|| wasm.with_extension("cwasm"));
    std::fs::write(&output, &artifact)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!("{} ({} bytes)", output.display(), artifact.len());
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM"),
        _ = interrupt.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}

fn token(
    path: &std::path::Path,
    tenant_name: &str,
    sub: &str,
    ttl: Duration,
    extra: Vec<(String, Value)>,
) -> anyhow::Result<()> {
    let config = load(path)?;
    let tenant = config
        .tenants
        .iter()
        .find(|tenant| tenant.name == tenant_name)
        .with_context(|| format!("no tenant `{tenant_name}` in {}", path.display()))?;
    let JwtKey::Secret(secret) = &tenant.jwt.key else {
        anyhow::bail!(
            "tenant `{tenant_name}` verifies with a public key; only HS secrets can mint tokens here"
        );
    };
    let algorithm: Algorithm = tenant
        .jwt
        .algorithms
        .first()
        .and_then(|name| name.parse().ok())
        .unwrap_or(Algorithm::HS256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let mut claims = Map::new();
    claims.insert("sub".into(), sub.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + ttl.as_secs().max(1)).into());
    if let Some(issuer) = &tenant.jwt.issuer {
        claims.insert("iss".into(), issuer.clone().into());
    }
    if let Some(audience) = &tenant.jwt.audience {
        claims.insert("aud".into(), audience.clone().into());
    }
    for (key, value) in extra {
        claims.insert(key, value);
    }
    let token = jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .context("cannot sign the token")?;
    println!("{token}");
    Ok(())
}
