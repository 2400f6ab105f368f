//! What a client needs to know: where to connect, how to get and present its token, and its
//! reconnect, timeout and liveness settings.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Reconnect;
use crate::tls::Tls;

/// A client's settings. Start from [`Config::new`] and change the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The WebSocket URL: `ws://host:port/ws` (or `wss://` through TLS) for the `default`
    /// tenant, `/ws/{tenant}` otherwise.
    pub url: String,
    /// The certificate authorities trusted for a `wss://` URL: the public web's by default.
    pub tls: Tls,
    /// Where each connection attempt gets its token.
    pub token: TokenSource,
    /// How the token travels in the upgrade request.
    pub transport: TokenTransport,
    /// The reconnect policy; `None` gives up at the first lost connection or failed attempt.
    pub reconnect: Option<Reconnect>,
    /// How long `join` and `leave` wait for their reply.
    pub request_timeout: Duration,
    /// How long one attempt may take, from fetching the token to the `welcome` frame; also the
    /// bound on writing one frame.
    pub connect_timeout: Duration,
    /// Application-level pings when the server has gone quiet; `None` relies on TCP alone.
    pub liveness: Option<Liveness>,
    /// How many events a slow [`events`](crate::Client::events) receiver may fall behind before
    /// it skips some (it then sees `RecvError::Lagged`).
    pub event_capacity: usize,
}

impl Config {
    /// Settings for `url` with `token` and the defaults: the public web's certificate
    /// authorities for `wss://`, header transport, reconnect with
    /// backoff from 250 ms to 10 s and no attempt limit, 10 s request and connect timeouts,
    /// a ping after 20 s of silence answered within 10 s, room for 1024 pending events.
    pub fn new(url: impl Into<String>, token: impl Into<TokenSource>) -> Config {
        Config {
            url: url.into(),
            tls: Tls::default(),
            token: token.into(),
            transport: TokenTransport::Header,
            reconnect: Some(Reconnect::default()),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            liveness: Some(Liveness::default()),
            event_capacity: 1024,
        }
    }
}

/// Where the token goes in the upgrade request. Either way the client offers the subprotocol
/// `switchboard.v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTransport {
    /// `Authorization: Bearer <jwt>`.
    Header,
    /// A `Sec-WebSocket-Protocol` entry `bearer.<jwt>`, as browsers must send it.
    Subprotocol,
}

/// Application-level liveness: when nothing has arrived for `idle`, send a `ping`; when nothing
/// arrives within `timeout` after it, the connection is presumed dead and replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// Silence before the client pings.
    pub idle: Duration,
    /// How long the client waits for any frame after its ping.
    pub timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            idle: Duration::from_secs(20),
            timeout: Duration::from_secs(10),
        }
    }
}

type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
type TokenFn = dyn Fn() -> TokenFuture + Send + Sync;

/// Where connection attempts get their token: a fixed string, or a function called before
/// every attempt (so a reconnect can present a fresh token).
#[derive(Clone)]
pub struct TokenSource(Source);

#[derive(Clone)]
enum Source {
    Fixed(String),
    Dynamic(Arc<TokenFn>),
}

impl TokenSource {
    /// The same token for every attempt.
    pub fn fixed(token: impl Into<String>) -> TokenSource {
        TokenSource(Source::Fixed(token.into()))
    }

    /// A token from `mint`, called before every attempt.
    pub fn from_fn(mint: impl Fn() -> String + Send + Sync + 'static) -> TokenSource {
        TokenSource(Source::Dynamic(Arc::new(move || {
            let token = mint();
            Box::pin(async move { Ok(token) })
        })))
    }

    /// A token from an async `fetch`, awaited before every attempt. A failure counts as a
    /// failed attempt (retried under the reconnect policy).
    pub fn from_async_fn<F, Fut, E>(fetch: F) -> TokenSource
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: fmt::Display,
    {
        TokenSource(Source::Dynamic(Arc::new(move || {
            let pending = fetch();
            Box::pin(async move { pending.await.map_err(|error| error.to_string()) })
        })))
    }

    /// The token for the next attempt.
    pub(crate) async fn fetch(&self) -> Result<String, String> {
        match &self.0 {
            Source::Fixed(token) => Ok(token.clone()),
            Source::Dynamic(fetch) => fetch().await,
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token itself.
        match &self.0 {
            Source::Fixed(_) => formatter.write_str("TokenSource::Fixed(..)"),
            Source::Dynamic(_) => formatter.write_str("TokenSource::Dynamic(..)"),
        }
    }
}

impl From<String> for TokenSource {
    fn from(token: String) -> Self {
        TokenSource::fixed(token)
    }
}

impl From<&str> for TokenSource {
    fn from(token: &str) -> Self {
        TokenSource::fixed(token)
    }
}
