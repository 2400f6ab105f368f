//! The HTTP listener: accept loop, routing of `/ws`, `/healthz`, `/readyz`, `/metrics` and
//! `/api`, and the graceful drain.

pub mod response;
pub mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::Config;
use crate::node::Node;
use crate::plugins::Plugins;
use crate::tenant::Tenants;
use response::{json_error, json_ok};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A tenant's keys are unusable.
    #[error("{}", .0.join("\n"))]
    Tenants(Vec<String>),
    /// A configured plugin did not load.
    #[error("{}", .0.join("\n"))]
    Plugins(Vec<String>),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A server accepting connections.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The shared node state.
    pub node: Arc<Node>,
    accept: JoinHandle<()>,
    _watcher: Option<crate::plugins::watch::PluginWatcher>,
}

impl RunningServer {
    /// Drains (PROTOCOL.md section 7) and stops accepting. Returns the connections still open
    /// when the drain timeout passed.
    pub async fn shutdown(self) -> usize {
        tracing::info!("draining");
        let left = self.node.drain().await;
        self.node.backplane.close().await;
        self.accept.abort();
        tracing::info!(left, "drained");
        left
    }
}

/// Binds the listener and starts serving on the backplane the config names.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let tenants = Tenants::new(&config).map_err(StartError::Tenants)?;
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let node = Node::new(config, tenants);
    Plugins::load_configured(&node)
        .await
        .map_err(StartError::Plugins)?;
    let watcher =
        crate::plugins::watch::start(&node).map_err(|error| StartError::Plugins(vec![error]))?;
    let accept = tokio::spawn(accept_loop(listener, node.clone()));
    tracing::info!(%addr, node = %node.id, "listening");
    Ok(RunningServer {
        addr,
        node,
        accept,
        _watcher: watcher,
    })
}

/// Builds the node from a config and serves until `shutdown` resolves, then drains.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let server = start(config).await?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

async fn accept_loop(listener: TcpListener, node: Arc<Node>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or a reset before accept: back off briefly.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(route(node, request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%error, "http connection ended with an error");
            }
        });
    }
}

async fn route(node: Arc<Node>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json_ok(StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
        (&Method::GET, "/readyz") => {
            if node.is_ready() {
                json_ok(StatusCode::OK, r#"{"status":"ready"}"#.to_owned())
            } else {
                let message = if node.is_draining() {
                    "draining"
                } else {
                    "backplane not ready"
                };
                let mut response =
                    json_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
                response
            }
        }
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(node.render_metrics())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (_, "/ws") => upgrade::handle(&node, "default", request),
        (_, ws_path) if ws_path.starts_with("/ws/") => {
            let tenant = ws_path["/ws/".len()..].to_owned();
            upgrade::handle(&node, &tenant, request)
        }
        (&Method::POST, "/api/publish") => admin::publish(&node, request).await,
        (_, api_path) if api_path.starts_with("/api/tenants/") => {
            let rest = api_path["/api/tenants/".len()..].to_owned();
            admin::plugins(&node, request, &rest).await
        }
        (_, "/api/publish") => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
        ),
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such path"),
    }
}
