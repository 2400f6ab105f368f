//! The soak's side of the wire: tokens, connecting (welcome awaited), requests answered by
//! `correlationId`, and closing, every step bounded by [`STEP`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::nodes::JWT_SECRET;

/// How long a handshake, a welcome or one reply may take.
pub const STEP: Duration = Duration::from_secs(10);

pub type Socket = WebSocketStream<TcpStream>;

/// The fields of a server frame the soak reads.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    #[serde(borrow, default)]
    pub channel: Option<&'a str>,
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

/// A reply to a request: `ack` (or `pong`) with its payload, or an `error` with its code.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok(String),
    Error(String),
}

/// A fresh HS256 token for `sub`, valid one day, distinct per call.
pub fn token(sub: &str) -> Result<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "sub": sub,
        "iat": now,
        "exp": now + 86_400,
        "jti": format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .context("cannot sign a token")
}

/// Connects to `ws://{addr}/ws` as user `sub` and waits for the `welcome`.
pub async fn connect(addr: SocketAddr, sub: &str) -> Result<Socket> {
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(sub)?))?,
    );
    let handshake = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (socket, _) = tokio_tungstenite::client_async(request, stream).await?;
        anyhow::Ok(socket)
    };
    let mut socket = tokio::time::timeout(STEP, handshake)
        .await
        .map_err(|_| anyhow!("handshake with {addr} timed out"))?
        .with_context(|| format!("handshake with {addr}"))?;
    let welcome = next_text(&mut socket, STEP).await?;
    if Frame::parse(&welcome)?.kind != "welcome" {
        bail!("expected a welcome, got {welcome}");
    }
    Ok(socket)
}

/// The next text frame within `limit`.
pub async fn next_text(socket: &mut Socket, limit: Duration) -> Result<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow!("no frame within {limit:?}"))?
            .ok_or_else(|| anyhow!("connection closed"))??;
        match message {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Close(frame) => bail!("closed by the server: {frame:?}"),
            _ => {}
        }
    }
}

/// Sends `text` and waits (up to [`STEP`]) for the reply carrying `correlation`, skipping
/// other frames.
pub async fn request(socket: &mut Socket, text: String, correlation: &str) -> Result<Reply> {
    socket.send(Message::text(text)).await?;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let reply = next_text(socket, left).await?;
        let frame = Frame::parse(&reply)?;
        if frame.correlation_id != Some(correlation) {
            continue;
        }
        let payload = frame.payload.map_or("null", RawValue::get);
        if frame.kind == "error" {
            #[derive(Deserialize)]
            struct Error {
                code: String,
            }
            let code = serde_json::from_str::<Error>(payload)
                .map(|error| error.code)
                .unwrap_or_else(|_| payload.to_owned());
            return Ok(Reply::Error(code));
        }
        return Ok(Reply::Ok(payload.to_owned()));
    }
}

/// [`request`] that must be answered with an `ack` (or `pong`): its payload.
pub async fn expect_ok(socket: &mut Socket, text: String, correlation: &str) -> Result<String> {
    match request(socket, text, correlation).await? {
        Reply::Ok(payload) => Ok(payload),
        Reply::Error(code) => bail!("error `{code}` in reply to {correlation}"),
    }
}

/// Closes with 1000 and waits (up to [`STEP`]) for the server's close.
pub async fn close(mut socket: Socket) -> Result<()> {
    socket.send(Message::Close(None)).await?;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => bail!("no close from the server within {STEP:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Ok(()),
            Ok(Some(Ok(_))) => {}
        }
    }
}
