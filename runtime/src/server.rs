//! The HTTP listener: accept loop under the socket budget, routing of `/ws`, `/healthz`,
//! `/readyz`, `/metrics` and `/api`, and the graceful drain.

pub mod io;
pub mod permit;
pub mod refusal;
pub mod route_error;
pub mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
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
use crate::config::{Config, HttpConfig};
use crate::listener::body::closing;
use crate::listener::heads::HeadRefusal;
use crate::listener::response::json_ok;
use crate::node::Node;
use crate::protocol::{self, api};
use crate::tenant::Tenants;
use io::NodeIo;
use permit::SocketPermit;
use route_error::RouteError;

/// The first pause after a failed accept; it doubles while accepts keep failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause between failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection answered from the refusal reserve may take to send its head.
const REFUSAL_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A 503 written without reading the request, when even the refusal reserve is spent; built
/// once, so shedding allocates nothing.
static SHED_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = protocol::http_error_body("unavailable", "node at its open socket capacity");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A tenant's keys are unusable.
    #[error("{}", .0.join("\n"))]
    Tenants(Vec<String>),
    /// A configured plugin did not load.
    #[error("{}", .0.join("\n"))]
    Plugins(Vec<String>),
    /// The state directory cannot be read (a disk error, or a file that does not parse: it
    /// is not taken as empty, which would silently drop deployments).
    #[error("{0}")]
    State(String),
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
    /// Drains (docs/protocol.md, "Draining") and stops accepting. Returns the connections still
    /// open when the drain timeout passed.
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
    log_capacity(&node);
    node.plugins
        .load_configured(&node.config, &node.tenants)
        .await
        .map_err(StartError::Plugins)?;
    // The desired state wins over the files. On one node it is on local disk, so the node
    // serves it from its first connection on; in a cluster, Redis may not be reachable yet:
    // the node converges in the background and `/readyz` waits for it.
    match node.converge().await {
        Ok(()) => {}
        Err(error) if node.deployments.store_kind() == "disk" => {
            return Err(StartError::State(error.to_string()));
        }
        Err(error) => {
            tracing::info!(%error, "the desired state is not readable yet; /readyz waits for it")
        }
    }
    node.spawn_convergence();
    let watcher = crate::plugins::watch::start(&node.plugins, &node.config, &node.tenants)
        .map_err(|error| StartError::Plugins(vec![error.to_string()]))?;
    let accept = tokio::spawn(accept_loop(listener, node.clone()));
    tracing::info!(%addr, node = %node.id, "listening");
    Ok(RunningServer {
        addr,
        node,
        accept,
        _watcher: watcher,
    })
}

/// Loads every configured plugin as `start` would (compiled in a worker, linked, `describe`
/// and `init` run, routed), on a node with the memory backplane and no listener: what
/// `switchboard check` runs, so a config it passes does not fail `serve` on its plugins.
/// Returns how many plugins loaded.
pub async fn check(config: Config) -> Result<usize, StartError> {
    let tenants = Tenants::new(&config).map_err(StartError::Tenants)?;
    let plugins = config
        .tenants
        .iter()
        .map(|tenant| tenant.plugins.len())
        .sum();
    let backplane = Arc::new(crate::backplane::memory::MemoryBackplane::new());
    let node = Node::with_backplane(config, tenants, backplane);
    node.plugins
        .load_configured(&node.config, &node.tenants)
        .await
        .map_err(StartError::Plugins)?;
    Ok(plugins)
}

/// Builds the node from a config and serves until `shutdown` resolves, then drains.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let server = start(config).await?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

/// Logs the socket budget, warning when it promises fewer connections than `max_connections`.
fn log_capacity(node: &Node) {
    let capacity = node.http.sockets.capacity();
    let max_connections = node.config.max_connections;
    let http = &node.config.http;
    if capacity.sockets < max_connections {
        tracing::warn!(
            open_files = capacity.open_files,
            sockets = capacity.sockets,
            reserved_files = http.reserved_files,
            refusal_sockets = http.refusal_sockets,
            max_connections,
            "the socket budget allows fewer connections than max_connections; raise `ulimit -Hn` (or http.max_open_sockets)"
        );
    } else {
        tracing::info!(
            open_files = capacity.open_files,
            sockets = capacity.sockets,
            connections = max_connections,
            "connection capacity"
        );
    }
}

async fn accept_loop(listener: TcpListener, node: Arc<Node>) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                stream
            }
            Err(error) => {
                // Out of descriptors (the budget keeps a reserve, but other files count too) or
                // a reset before accept: the connection waits in the backlog meanwhile.
                node.http.sockets.accept_failed();
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(permit) = SocketPermit::acquire(&node) {
            tokio::spawn(serve(node.clone(), stream, permit));
        } else if let Some(permit) = SocketPermit::refusal(&node) {
            tokio::spawn(serve_refusal(node.clone(), stream, permit));
        } else {
            node.http.sockets.shed();
            // Best effort and without waiting: the socket is closed at once.
            let _ = stream.try_write(&SHED_RESPONSE);
        }
    }
}

/// hyper's HTTP/1 settings for the listener's bounds.
fn http1_builder(http: &HttpConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .max_header_size(http.max_header_bytes)
        // The read buffer holds a head, or a piece of a body on its way to `body::read`.
        .max_buf_size(http.max_header_bytes.max(8192))
        .writev(false);
    builder
}

/// Serves one connection under the socket budget, upgrades included.
async fn serve(node: Arc<Node>, stream: tokio::net::TcpStream, permit: SocketPermit) {
    let builder = http1_builder(&node.config.http);
    let service = service_fn(move |request| {
        let node = node.clone();
        async move { Ok::<_, Infallible>(route(node, request).await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(NodeIo::new(stream, permit)), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%error, "http connection ended with an error");
    }
}

/// Answers one request of a connection that arrived while the socket budget was spent: health,
/// readiness and metrics as usual, anything else 503; then closes.
async fn serve_refusal(node: Arc<Node>, stream: tokio::net::TcpStream, permit: SocketPermit) {
    let mut builder = http1_builder(&node.config.http);
    builder
        .keep_alive(false)
        .header_read_timeout(node.config.http.header_timeout.min(REFUSAL_HEADER_TIMEOUT));
    let service = service_fn(move |request| {
        let node = node.clone();
        async move { Ok::<_, Infallible>(closing(route_refusal(&node, request))) }
    });
    let connection = builder.serve_connection(TokioIo::new(NodeIo::new(stream, permit)), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "refused http connection ended with an error");
    }
}

/// The answer to a request that arrived while the socket budget was spent.
fn route_refusal(node: &Arc<Node>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET, "/healthz" | "/readyz" | "/metrics") => basic_route(node, path),
        (_, "/ws") => upgrade::handle(node, "default", request, upgrade::Admission::SocketsFull),
        (_, ws_path) if ws_path.starts_with("/ws/") => {
            let tenant = ws_path["/ws/".len()..].to_owned();
            upgrade::handle(node, &tenant, request, upgrade::Admission::SocketsFull)
        }
        _ => RouteError::SocketsFull.response(),
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
fn basic_route(node: &Node, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => json_ok(StatusCode::OK, api::status_body("ok")),
        "/readyz" => {
            if node.is_ready() {
                json_ok(StatusCode::OK, api::status_body("ready"))
            } else if node.is_draining() {
                RouteError::Draining.response()
            } else {
                RouteError::BackplaneNotReady.response()
            }
        }
        _ => {
            let mut response = Response::new(Full::new(Bytes::from(node.render_metrics())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
    }
}

async fn route(node: Arc<Node>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > node.config.http.max_uri_bytes {
        node.http.heads.refused(HeadRefusal::UriTooLong);
        return RouteError::UriTooLong(node.config.http.max_uri_bytes).response();
    }
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz" | "/readyz" | "/metrics") => basic_route(&node, &path),
        (_, "/ws") => upgrade::handle(&node, "default", request, upgrade::Admission::Open),
        (_, ws_path) if ws_path.starts_with("/ws/") => {
            let tenant = ws_path["/ws/".len()..].to_owned();
            upgrade::handle(&node, &tenant, request, upgrade::Admission::Open)
        }
        (&Method::POST, "/api/publish") => admin::publish(&node, request).await,
        (_, "/api/tenants" | "/api/tenants/") => admin::tenants(&node, request, None).await,
        (_, api_path) if api_path.starts_with("/api/tenants/") => {
            let rest = api_path["/api/tenants/".len()..].to_owned();
            match rest.split_once('/') {
                None => admin::tenants(&node, request, Some(&rest)).await,
                Some((name, "")) => {
                    let name = name.to_owned();
                    admin::tenants(&node, request, Some(&name)).await
                }
                Some(_) => admin::plugins(&node, request, &rest).await,
            }
        }
        (_, "/api/publish") => RouteError::MethodNotAllowed.response(),
        _ => RouteError::NotFound.response(),
    }
}
