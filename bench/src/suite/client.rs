//! The loader's side of the wire: tokens, connecting (`Authorization: Bearer`, welcome
//! awaited), reading frames with deadlines, and the few frame fields the scenarios look at.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long a handshake, a welcome, or one reply may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A loader connection.
pub type Socket = WebSocketStream<TcpStream>;

/// Microseconds on one monotonic clock, shared by the tasks of one process.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    pub fn now_us(self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// The fields of a server frame the loader reads.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(borrow, default)]
    pub payload: Option<&'a RawValue>,
    #[serde(rename = "correlationId", borrow, default)]
    pub correlation_id: Option<&'a str>,
}

impl<'a> Frame<'a> {
    pub fn parse(text: &'a str) -> Result<Self> {
        serde_json::from_str(text).with_context(|| format!("bad frame: {text}"))
    }
}

/// A fresh HS256 token for `sub`, valid one hour: every call signs a distinct token (`jti`).
pub fn token(secret: &str, sub: &str) -> Result<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "sub": sub,
        "iat": now,
        "exp": now + 3600,
        "jti": format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign a token")
}

/// Small buffers: the loader holds up to thousands of connections per process.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// Opens a WebSocket to `ws://{addr}/ws` (the `default` tenant) with `token` and waits for
/// the `welcome`.
pub async fn connect(addr: SocketAddr, token: &str) -> Result<Socket> {
    connect_path(addr, "/ws", token).await
}

/// Opens a WebSocket to `ws://{addr}{path}` (`/ws/{tenant}` for a tenant other than
/// `default`) with `token` and waits for the `welcome`.
pub async fn connect_path(addr: SocketAddr, path: &str, token: &str) -> Result<Socket> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let handshake = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config())).await?;
        anyhow::Ok(socket)
    };
    let mut socket = tokio::time::timeout(STEP_TIMEOUT, handshake)
        .await
        .map_err(|_| anyhow!("handshake with {addr} timed out"))?
        .with_context(|| format!("handshake with {addr}"))?;
    let welcome = next_text(&mut socket, STEP_TIMEOUT).await?;
    if Frame::parse(&welcome)?.kind != "welcome" {
        bail!("expected a welcome, got {welcome}");
    }
    Ok(socket)
}

/// The next text frame, within `limit`.
pub async fn next_text(socket: &mut Socket, limit: Duration) -> Result<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow!("no frame within {limit:?}"))?
            .ok_or_else(|| anyhow!("connection closed"))??;
        match message {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Close(frame) => bail!("connection closed by the server: {frame:?}"),
            _ => {}
        }
    }
}

/// Sends `text` and waits for the reply carrying `correlation_id`; an `error` reply is an
/// error. Other frames (broadcasts, presence) are skipped.
pub async fn request(socket: &mut Socket, text: String, correlation_id: &str) -> Result<()> {
    socket.send(Message::text(text)).await?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let reply = next_text(socket, left).await?;
        let frame = Frame::parse(&reply)?;
        if frame.correlation_id == Some(correlation_id) {
            if frame.kind == "error" {
                bail!("error reply: {reply}");
            }
            return Ok(());
        }
    }
}

/// Closes with 1000 and waits (bounded) for the server's close or the end of the stream.
pub async fn close(mut socket: Socket) -> Result<()> {
    socket.send(Message::Close(None)).await?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => bail!("no close from the server within {STEP_TIMEOUT:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Ok(()),
            Ok(Some(Ok(_))) => {}
        }
    }
}
