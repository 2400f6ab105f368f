//! Plugin swap under load: the echo load runs; meanwhile a new build of the `echo` plugin (the
//! same component with a custom section naming the run, so its bytes differ) is uploaded with
//! `PUT /api/tenants/default/plugins/echo`. Reports how long the PUT took and the worst reply
//! latency around it; every request must still get its reply. The server's answer says how
//! much of the PUT was loading the component (compiling, then validating it), during which
//! the old version serves; the rest is the upload and the swap itself. The PUT puts in place
//! a baseline (Winch) build; "optimized after" is when the listing first shows the optimized
//! (Cranelift) build that replaces it in the background, timed from the PUT's start.
//!
//! The precompiled variant uploads the same new build as an artifact made ahead of time by
//! `switchboard precompile` (untimed, as a deploy pipeline would) with the server's artifact
//! key: the node maps the optimized code instead of compiling it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use switchboard_bench::plugins::rebuilt;
use switchboard_bench::stats::percentile;

use crate::client::Clock;
use crate::echo::{self, Load};
use crate::results::{Better, Measured};
use crate::servers::{API_KEY, Running};

/// The knobs of the swap scenario.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub load: echo::Params,
    /// Load before the swap, and after it.
    pub before: Duration,
    pub after: Duration,
}

/// What the swap uploads.
#[derive(Debug, Clone, Copy)]
pub enum Upload<'a> {
    /// The new build's `.wasm`, compiled by the node.
    Wasm,
    /// The new build precompiled by this `switchboard` binary with this config's artifact key.
    Precompiled {
        switchboard: &'a Path,
        config: &'a Path,
    },
}

/// Runs `switchboard precompile` on `wasm`; the artifact's bytes and how long it took.
fn precompile(
    switchboard: &Path,
    config: &Path,
    wasm: &[u8],
    rep: usize,
) -> Result<(Vec<u8>, f64)> {
    let dir = config.parent().unwrap_or(Path::new("."));
    let source = dir.join(format!("echo-rebuilt-{rep}.wasm"));
    let output = source.with_extension("cwasm");
    std::fs::write(&source, wasm)?;
    let started = Instant::now();
    let run = std::process::Command::new(switchboard)
        .arg("precompile")
        .arg("--config")
        .arg(config)
        .arg(&source)
        .arg("--output")
        .arg(&output)
        .output()
        .context("cannot run switchboard precompile")?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !run.status.success() {
        anyhow::bail!(
            "switchboard precompile failed: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    let artifact = std::fs::read(&output)?;
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&output);
    Ok((artifact, ms))
}

/// The swap scenario.
pub async fn run(
    running: &Running,
    params: &Params,
    clock: Clock,
    http: &reqwest::Client,
    (echo_wasm, upload): (&Path, Upload<'_>),
    rep: usize,
) -> Result<Measured> {
    let component =
        std::fs::read(echo_wasm).with_context(|| format!("cannot read {}", echo_wasm.display()))?;
    let label = format!(
        "rep {rep}, pid {}, {:?}",
        std::process::id(),
        Instant::now()
    );
    let wasm = rebuilt(&component, &label);
    let (body, precompile_ms) = match upload {
        Upload::Wasm => (wasm, None),
        Upload::Precompiled {
            switchboard,
            config,
        } => {
            let (artifact, ms) = precompile(switchboard, config, &wasm, rep)?;
            (artifact, Some(ms))
        }
    };
    let url = format!("http://{}/api/tenants/default/plugins/echo", running.addr);

    let load = Load::start(running, &params.load, clock).await?;
    tokio::time::sleep(params.load.warmup).await;
    load.measure();
    let started = tokio::time::Instant::now();
    tokio::time::sleep(params.before).await;
    let put_started = Instant::now();
    let response = http
        .put(&url)
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let mut put_ms = put_started.elapsed().as_secs_f64() * 1000.0;
    // What the server says the load took (compile, then validation): `compileMs`, `loadMs`.
    let (mut compile_ms, mut load_ms) = (f64::NAN, f64::NAN);
    let put_outcome = match response {
        Ok(response) if response.status() == reqwest::StatusCode::OK => {
            let loaded: serde_json::Value = response.json().await.unwrap_or_default();
            put_ms = put_started.elapsed().as_secs_f64() * 1000.0;
            compile_ms = loaded["compileMs"].as_f64().unwrap_or(f64::NAN);
            load_ms = loaded["loadMs"].as_f64().unwrap_or(f64::NAN);
            None
        }
        Ok(response) => Some(format!(
            "PUT answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        )),
        Err(error) => Some(format!("PUT failed: {error}")),
    };
    let optimized_ms = if put_outcome.is_none() {
        optimized_after(running, http, put_started, params.after).await
    } else {
        f64::NAN
    };
    let after_end = put_started + params.after;
    tokio::time::sleep_until(tokio::time::Instant::from_std(after_end)).await;
    load.stop_sending();
    let seconds = started.elapsed().as_secs_f64();
    let failed_connects = load.failed_connects;
    let mut tally = load.finish().await?;
    tally.latencies_us.sort_unstable();

    let mut measured = Measured::default();
    if let Some(ms) = precompile_ms {
        measured.push("precompiled ahead ms", Better::Lower, ms, 0);
    }
    measured.push("PUT ms", Better::Lower, put_ms, 1);
    measured.push("compile ms", Better::Lower, compile_ms, 1);
    measured.push("load ms", Better::Lower, load_ms, 1);
    measured.push("PUT − load ms", Better::Lower, put_ms - load_ms, 1);
    measured.push("optimized after ms", Better::Lower, optimized_ms, 0);
    measured.push(
        "max reply µs",
        Better::Lower,
        tally.latencies_us.last().copied().unwrap_or(0) as f64,
        0,
    );
    measured.push(
        "p99 µs",
        Better::Lower,
        percentile(&tally.latencies_us, 0.99) as f64,
        0,
    );
    measured.push(
        "msgs/s",
        Better::Higher,
        tally.latencies_us.len() as f64 / seconds,
        0,
    );
    echo::record_failures(&mut measured, failed_connects, &tally);
    if let Some(problem) = put_outcome {
        measured.fail(1, &problem);
    } else if let Err(problem) = serving_upload(running, http).await {
        measured.fail(1, &format!("{problem:#}"));
    }
    Ok(measured)
}

/// What the plugin listing says of `echo`.
async fn listed_echo(running: &Running, http: &reqwest::Client) -> Result<serde_json::Value> {
    let url = format!("http://{}/api/tenants/default/plugins", running.addr);
    let list: serde_json::Value = http
        .get(&url)
        .header("authorization", format!("Bearer {API_KEY}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .json()
        .await?;
    list.as_array()
        .and_then(|plugins| plugins.iter().find(|plugin| plugin["name"] == "echo"))
        .cloned()
        .with_context(|| format!("no echo plugin listed: {list}"))
}

/// Milliseconds from `since` until the listing shows the optimized build (polled every 10 ms,
/// at most until `within` after `since`); NaN if it did not show up by then.
async fn optimized_after(
    running: &Running,
    http: &reqwest::Client,
    since: Instant,
    within: Duration,
) -> f64 {
    while since.elapsed() < within {
        let listed = listed_echo(running, http).await;
        if listed.is_ok_and(|echo| echo["tier"] == "optimized") {
            return since.elapsed().as_secs_f64() * 1000.0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f64::NAN
}

/// Checks that the uploaded `echo` is the one listed, and that it answered calls.
async fn serving_upload(running: &Running, http: &reqwest::Client) -> Result<()> {
    let echo = listed_echo(running, http).await?;
    let uploaded = echo["path"]
        .as_str()
        .is_some_and(|path| path.starts_with("upload:"));
    let calls = echo["calls"].as_u64().unwrap_or(0);
    if !uploaded || calls == 0 {
        anyhow::bail!("the uploaded echo is not the one serving: {echo}");
    }
    Ok(())
}
