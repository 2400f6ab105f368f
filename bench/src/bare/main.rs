//! `bare-server`: the benchmark's bare Rust baseline. The Switchboard protocol subset (welcome,
//! JWT check, `room:join`/`room:leave`, `ping`, `echo`, `broadcast`; see `bench/README.md`) on
//! plain tokio-tungstenite, written the way a competent Rust developer would: a task per
//! connection, rooms in a map of senders, each broadcast serialised once.
//!
//! ```sh
//! bare-server --listen 127.0.0.1:0 --secret SECRET [--presence-off PREFIX]
//! ```
//!
//! Prints `listening on ADDR` once bound; SIGTERM or SIGINT exits 0.

mod handshake;
mod rooms;
mod session;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::handshake::Verifier;
use crate::rooms::Rooms;

/// Bare tokio-tungstenite baseline server for the benchmark suite.
#[derive(Debug, Parser)]
#[command(name = "bare-server")]
struct Args {
    /// The address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The HS256 secret tokens are signed with.
    #[arg(long)]
    secret: String,
    /// Channels starting with this prefix have no member list in their join ack (like
    /// Switchboard's `presence.disabled`).
    #[arg(long)]
    presence_off: Option<String>,
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    verifier: Verifier,
    rooms: Rooms,
    next_connection: AtomicU64,
    presence_off: Option<String>,
}

impl Shared {
    /// Whether a join ack of `channel` lists the members.
    fn presence_on(&self, channel: &str) -> bool {
        self.presence_off
            .as_deref()
            .is_none_or(|prefix| !channel.starts_with(prefix))
    }
}

async fn serve(args: Args) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let shared = Arc::new(Shared {
        verifier: Verifier::new(&args.secret),
        rooms: Rooms::default(),
        next_connection: AtomicU64::new(1),
        presence_off: args.presence_off,
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(session::run(stream, shared.clone()));
            }
            Err(error) => {
                // Out of file descriptors, typically: back off instead of spinning.
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = serve(args) => result,
        _ = terminate.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
