//! Harness for tests that run real external processes on 127.0.0.1: `redis-server` (alone or
//! as a three-node cluster) and `nginx` with `examples/cluster/nginx.conf`. Every wait is
//! bounded; on drop every process is killed and reaped and its temp folder removed.
//! `scripts/setup` installs the programs.

#![allow(
    dead_code,
    reason = "the tests that use this harness come later; its self-tests use only part of it"
)]

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::certs::{Ca, ServerCertificate, Validity};

/// How long a process may take to answer after it was started.
const START: Duration = Duration::from_secs(10);
/// How long a new cluster may take to report `cluster_state:ok` on every node.
const CLUSTER_READY: Duration = Duration::from_secs(20);
/// How long one `redis-cli` run may take (`--cluster create` included).
const CLI: Duration = Duration::from_secs(30);
/// How long a killed process may take to exit.
const REAP: Duration = Duration::from_secs(5);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// A port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range
/// (Linux: 32768 and up). A port from binding port 0 is an ephemeral one, which the next
/// outgoing connection of any test running beside this one may take before the server that
/// was meant to listen on it binds it; below that range only another `free_port` pick can,
/// and picks start at a random place and never repeat within a process.
pub fn free_port() -> u16 {
    const FIRST: u64 = 20_000;
    const SPAN: u64 = 12_000;
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static PICKS: AtomicU32 = AtomicU32::new(0);
    let seed = *SEED.get_or_init(|| {
        u64::from(std::process::id()).wrapping_mul(7919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.subsec_nanos().into())
    });
    for _ in 0..SPAN {
        // A step of 7 is prime to the span: successive picks visit every port once.
        let pick = u64::from(PICKS.fetch_add(1, Ordering::Relaxed));
        let port = FIRST + (seed.wrapping_add(pick.wrapping_mul(7)) % SPAN);
        let port = u16::try_from(port).unwrap_or(20_000);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `count` distinct free ports whose cluster bus ports (port + 10000) are free too.
fn cluster_ports(count: usize) -> Vec<u16> {
    // Both listeners of every pick stay bound until all are picked, so no pick repeats.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..200 {
        if ports.len() == count {
            break;
        }
        let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|addr| addr.port()) else {
            continue;
        };
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        let Ok(bus_listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, bus)) else {
            continue;
        };
        ports.push(port);
        held.push(listener);
        held.push(bus_listener);
    }
    assert_eq!(
        ports.len(),
        count,
        "found no {count} free ports with free bus ports"
    );
    ports
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `name` from `PATH`, else from the usual install folders (`nginx` lives in /usr/sbin, which
/// is not on a non-root `PATH`).
fn program(name: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let usual = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(usual)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not on PATH nor in /usr/sbin or /usr/local/sbin; run scripts/setup")
        })
}

/// A fresh folder under the temp folder, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str, port: u16) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchboard-{what}-{}-{}-{port}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier process with the same pid would mix in old files.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", path.display()));
        TempDir(path)
    }

    /// A path inside the folder.
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A log file's text for a failure message, or why there is none.
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| format!("({} unreadable: {error})", path.display()))
}

/// A log file opened for appending, and a second handle to it: stdout and stderr of a child.
fn log_handles(path: &Path) -> (File, File) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
    let second = file.try_clone().expect("log handle clones");
    (file, second)
}

/// Waits up to `within` for `child` to exit; true if it did.
async fn exited_within(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => sleep(POLL).await,
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Like `exited_within`, for `Drop`, where nothing can be awaited.
fn exited_within_blocking(child: &mut Child, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) | Err(_) => return false,
        }
    }
}

/// SIGKILLs `child` and reaps it.
async fn kill(child: &mut Child, what: &str) {
    let _ = child.kill();
    assert!(
        exited_within(child, REAP).await,
        "{what} (pid {}) did not exit within {REAP:?} of SIGKILL",
        child.id()
    );
}

/// SIGKILLs `child` and reaps it, for `Drop`.
fn kill_blocking(child: &mut Child, what: &str) {
    let _ = child.kill();
    if !exited_within_blocking(child, REAP) {
        eprintln!(
            "{what} (pid {}) did not exit within {REAP:?} of SIGKILL",
            child.id()
        );
    }
}

/// Asks the Redis on `port` for `PING` and then for its `process_id`: `Some(pid)` once it
/// answers both, `None` while it does not (not yet listening, loading, or another program).
async fn redis_pid(port: u16) -> Option<u32> {
    let ask = async {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        let mut stream = BufReader::new(stream);
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await.ok()?;
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        if !line.starts_with("+PONG") {
            return None;
        }
        stream
            .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            .await
            .ok()?;
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let length: usize = line.strip_prefix('$')?.trim_end().parse().ok()?;
        let mut info = vec![0; length + 2];
        stream.read_exact(&mut info).await.ok()?;
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    };
    timeout(Duration::from_secs(1), ask).await.ok().flatten()
}

/// Runs `redis-cli` with `args` (bounded by `CLI`); panics if it does not run or exits
/// non-zero (as when it cannot connect). Error replies are output, not failures.
async fn redis_cli(args: &[String]) -> String {
    let output = timeout(
        CLI,
        tokio::process::Command::new(program("redis-cli"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("redis-cli {args:?} did not finish within {CLI:?}"))
    .unwrap_or_else(|error| panic!("redis-cli {args:?} did not run: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `-h 127.0.0.1 -p port`, then `args`.
fn cli_args(port: u16, extra: &[&str], args: &[&str]) -> Vec<String> {
    ["-h", "127.0.0.1", "-p", &port.to_string()]
        .iter()
        .chain(extra)
        .chain(args)
        .map(|arg| (*arg).to_owned())
        .collect()
}

/// One `redis-server` process on 127.0.0.1 without persistence.
pub struct RedisServer {
    /// Its port; it keeps this number across `stop` and `restart`.
    pub port: u16,
    /// Options after the common ones (the cluster's).
    extra: Vec<String>,
    /// `None` while stopped.
    child: Option<Child>,
    /// Its working folder (`--dir`) and `redis.log`.
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub async fn start() -> RedisServer {
        RedisServer::launch(free_port(), Vec::new()).await
    }

    async fn launch(port: u16, extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            port,
            extra,
            child: None,
            dir: TempDir::new("redis", port),
        };
        server.run().await;
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Everything the process (and earlier ones on this port) logged.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("redis.log"))
    }

    /// Whether this server answers `PING` now.
    pub async fn ping(&self) -> bool {
        redis_pid(self.port).await.is_some()
    }

    /// Kills the process (SIGKILL: no shutdown work) and reaps it. The port stays this
    /// server's by number; `restart` uses it again.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child, "redis-server").await;
        }
    }

    /// Stops the process if it runs, then starts a new one on the same port (empty: nothing
    /// is persisted) and waits until it answers `PING`.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// `redis-cli -p PORT args...`: its output, trimmed. Error replies come back as text
    /// (`ERR ...`); a failure to connect panics.
    pub async fn command(&self, args: &[&str]) -> String {
        redis_cli(&cli_args(self.port, &[], args)).await
    }

    fn spawn(&self) -> Child {
        let (stdout, stderr) = log_handles(&self.dir.join("redis.log"));
        Command::new(program("redis-server"))
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("redis-server did not start: {error}"))
    }

    /// Starts the process and waits until it answers `PING` as itself (its `process_id`), for
    /// at most `START`. A process that exits first, as when the port is still taken, is
    /// started again until then.
    async fn run(&mut self) {
        let deadline = Instant::now() + START;
        loop {
            let mut child = self.spawn();
            loop {
                if redis_pid(self.port).await == Some(child.id()) {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    kill(&mut child, "redis-server").await;
                    panic!(
                        "redis-server on port {} did not answer PING within {START:?}; log:\n{}",
                        self.port,
                        self.log()
                    );
                }
                sleep(POLL).await;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} kept exiting for {START:?}; log:\n{}",
                self.port,
                self.log()
            );
            sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_blocking(&mut child, "redis-server");
        }
    }
}

/// Three `redis-server` processes in cluster mode, all slots assigned, no replicas.
pub struct RedisCluster {
    /// The nodes' ports.
    pub ports: Vec<u16>,
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok` and knows all three.
    pub async fn start() -> RedisCluster {
        let ports = cluster_ports(3);
        let mut nodes = Vec::new();
        for &port in &ports {
            let config_file = format!("nodes-{port}.conf");
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                config_file.as_str(),
                "--cluster-node-timeout",
                "2000",
            ];
            nodes.push(RedisServer::launch(port, extra.map(str::to_owned).to_vec()).await);
        }
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(ports.iter().map(|port| format!("127.0.0.1:{port}")));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        redis_cli(&create).await;
        let cluster = RedisCluster { ports, nodes };
        cluster.wait_until_ok().await;
        cluster
    }

    async fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_READY;
        loop {
            let mut infos = Vec::new();
            for index in 0..self.nodes.len() {
                infos.push(self.command(index, &["CLUSTER", "INFO"]).await);
            }
            let ok = |info: &String| {
                let lines: Vec<&str> = info.lines().map(str::trim).collect();
                lines.contains(&"cluster_state:ok") && lines.contains(&"cluster_known_nodes:3")
            };
            if infos.iter().all(ok) {
                return;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self.nodes.iter().map(RedisServer::log).collect();
                panic!(
                    "the cluster was not ok within {CLUSTER_READY:?}:\n{infos:#?}\nlogs:\n{}",
                    logs.join("\n---\n")
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// `redis-cli -c -p PORT args...` against node `index` (`-c` follows MOVED redirects, so
    /// key commands work from any node): its output, trimmed.
    pub async fn command(&self, index: usize, args: &[&str]) -> String {
        redis_cli(&cli_args(self.ports[index], &["-c"], args)).await
    }
}

/// `nginx` running `examples/cluster/nginx.conf` on a free port (and TLS on another),
/// proxying to given ports.
pub struct Nginx {
    /// Where it listens in plain HTTP.
    pub port: u16,
    /// Where it listens with TLS.
    pub tls_port: u16,
    /// The private CA that signed its certificate (PEM), unless the test brought its own.
    pub ca_pem: Option<String>,
    /// `None` once stopped.
    child: Option<Child>,
    /// Its prefix: the rendered `nginx.conf`, `nginx.pid`, logs, temp folders.
    dir: TempDir,
}

/// The line of `examples/cluster/nginx.conf` (as a whole, indentation aside) that `Nginx`
/// replaces with its own port.
const NGINX_LISTEN: &str = "listen 127.0.0.1:8080;";
/// The TLS line `Nginx` replaces with its own TLS port.
const NGINX_TLS_LISTEN: &str = "listen 127.0.0.1:8443 ssl;";
/// The lines of `examples/cluster/nginx.conf` around the upstream `server` lines, which
/// `Nginx` replaces with its own.
const NGINX_BEGIN: &str = "# BEGIN upstream servers";
const NGINX_END: &str = "# END upstream servers";

/// `template` listening on `port` and `tls_port` and proxying to `upstream_ports`.
fn render_nginx_conf(template: &str, port: u16, tls_port: u16, upstream_ports: &[u16]) -> String {
    let mut rendered = String::new();
    let (mut listens, mut tls_listens, mut begun, mut ended) = (0, 0, false, false);
    for line in template.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        match line.trim() {
            NGINX_LISTEN => {
                listens += 1;
                rendered.push_str(&format!("{indent}listen 127.0.0.1:{port};\n"));
            }
            NGINX_TLS_LISTEN => {
                tls_listens += 1;
                rendered.push_str(&format!("{indent}listen 127.0.0.1:{tls_port} ssl;\n"));
            }
            NGINX_BEGIN if !begun => {
                begun = true;
                rendered.push_str(line);
                rendered.push('\n');
                for upstream in upstream_ports {
                    rendered.push_str(&format!("{indent}server 127.0.0.1:{upstream};\n"));
                }
            }
            NGINX_END if begun && !ended => {
                ended = true;
                rendered.push_str(line);
                rendered.push('\n');
            }
            // The example's own servers.
            _ if begun && !ended => {}
            _ => {
                rendered.push_str(line);
                rendered.push('\n');
            }
        }
    }
    assert_eq!(
        listens, 1,
        "examples/cluster/nginx.conf must hold the line `{NGINX_LISTEN}` exactly once"
    );
    assert_eq!(
        tls_listens, 1,
        "examples/cluster/nginx.conf must hold the line `{NGINX_TLS_LISTEN}` exactly once"
    );
    assert!(
        begun && ended,
        "examples/cluster/nginx.conf must hold the lines `{NGINX_BEGIN}` and then `{NGINX_END}`"
    );
    rendered
}

impl Nginx {
    /// Renders `examples/cluster/nginx.conf` for free ports and `upstream_ports`, runs nginx
    /// on it (its prefix a temp folder) and waits until it listens. Its TLS port serves a
    /// certificate for `localhost` and 127.0.0.1 from a fresh private CA (`ca_pem`).
    pub async fn start(upstream_ports: &[u16]) -> Nginx {
        let ca = Ca::new("Switchboard test CA");
        let certificate = ca.server(&["localhost", "127.0.0.1"], Validity::Current);
        let mut nginx = Nginx::start_with_certificate(upstream_ports, &certificate).await;
        nginx.ca_pem = Some(ca.pem());
        nginx
    }

    /// As [`Nginx::start`], with `certificate` on the TLS port.
    pub async fn start_with_certificate(
        upstream_ports: &[u16],
        certificate: &ServerCertificate,
    ) -> Nginx {
        assert!(!upstream_ports.is_empty(), "nginx needs an upstream");
        let (port, tls_port) = (free_port(), free_port());
        let dir = TempDir::new("nginx", port);
        let template_path = repo_root().join("examples/cluster/nginx.conf");
        let template = std::fs::read_to_string(&template_path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", template_path.display()));
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            render_nginx_conf(&template, port, tls_port, upstream_ports),
        )
        .expect("nginx.conf written");
        std::fs::create_dir_all(dir.join("tls")).expect("tls folder");
        std::fs::write(dir.join("tls/cert.pem"), &certificate.cert_pem).expect("cert written");
        std::fs::write(dir.join("tls/key.pem"), &certificate.key_pem).expect("key written");
        let (stdout, stderr) = log_handles(&dir.join("stderr.log"));
        // The conf sets `pid nginx.pid;` (under the prefix), so `-g` must not set it again.
        let child = Command::new(program("nginx"))
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("nginx did not start: {error}"));
        let mut nginx = Nginx {
            port,
            tls_port,
            ca_pem: None,
            child: Some(child),
            dir,
        };
        nginx.wait_until_listening().await;
        nginx
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// `wss://localhost:TLS_PORT{path}`.
    pub fn wss_url(&self, path: &str) -> String {
        format!("wss://localhost:{}{path}", self.tls_port)
    }

    /// Its error log and what it wrote to stderr.
    pub fn log(&self) -> String {
        format!(
            "{}\n{}",
            read_log(&self.dir.join("error.log")),
            read_log(&self.dir.join("stderr.log"))
        )
    }

    /// Waits until its pid file names its process (written once the port is bound, so the
    /// port is not someone else's) and the port accepts a connection.
    async fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START;
        let pid_file = self.dir.join("nginx.pid");
        loop {
            let child = self.child.as_mut().expect("nginx started");
            let pid = child.id().to_string();
            let own = std::fs::read_to_string(&pid_file).is_ok_and(|text| text.trim() == pid);
            if own
                && timeout(
                    Duration::from_secs(1),
                    TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)),
                )
                .await
                .is_ok_and(|connected| connected.is_ok())
            {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx exited ({status}) before listening; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                let log = self.log();
                self.stop().await;
                panic!("nginx did not listen within {START:?}; log:\n{log}");
            }
            sleep(POLL).await;
        }
    }

    /// Stops nginx: SIGTERM (the master stops its workers and reaps them), and SIGKILL if it
    /// has not exited within `REAP`.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            if !exited_within(&mut child, REAP).await {
                kill(&mut child, "nginx").await;
            }
        }
    }
}

/// Sends SIGTERM to `child` (std offers only SIGKILL, which would orphan nginx's workers).
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            if !exited_within_blocking(&mut child, REAP) {
                kill_blocking(&mut child, "nginx");
            }
        }
    }
}

/// `examples/cluster/run` on free ports: Redis, three nodes and nginx (plain and TLS), its CA
/// and certificate in a temp folder. Stopped with SIGTERM (so the script's trap stops every
/// process it started) when dropped, even after a failure.
pub struct ClusterExample {
    /// The script; `None` once it exited.
    script: Option<tokio::process::Child>,
    /// The plain front door.
    pub front_port: u16,
    /// The TLS front door (`wss://localhost:PORT`).
    pub tls_port: u16,
    /// Each node's port and process id.
    pub nodes: Vec<(u16, u32)>,
    /// `TLS_DIR`: the CA (`ca.pem`), certificate and key the script made.
    tls: TempDir,
}

impl ClusterExample {
    /// Runs the script and waits (bounded) for its `cluster ready` line.
    pub async fn start() -> ClusterExample {
        let (front_port, tls_port) = (free_port(), free_port());
        let node_ports = [free_port(), free_port(), free_port()];
        let tls = TempDir::new("cluster-tls", tls_port);
        let mut script = tokio::process::Command::new(repo_root().join("examples/cluster/run"))
            .env("SWITCHBOARD_BINARY", crate::support::binary())
            .env("FRONT_PORT", front_port.to_string())
            .env("FRONT_TLS_PORT", tls_port.to_string())
            .env("REDIS_PORT", free_port().to_string())
            .env(
                "NODE_PORTS",
                node_ports.map(|port| port.to_string()).join(" "),
            )
            .env("TLS_DIR", &tls.0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the example starts");
        let stdout = script.stdout.take().expect("stdout");
        let mut example = ClusterExample {
            script: Some(script),
            front_port,
            tls_port,
            nodes: Vec::new(),
            tls,
        };
        let mut lines = BufReader::new(stdout).lines();
        let nodes = timeout(Duration::from_secs(60), async {
            let mut nodes = Vec::new();
            while let Some(line) = lines.next_line().await.expect("readable") {
                if line.starts_with("cluster ready") {
                    return nodes;
                }
                // `node 127.0.0.1:PORT pid PID`
                let words: Vec<&str> = line.split_whitespace().collect();
                if let ["node", addr, "pid", pid] = words[..] {
                    let port = addr.rsplit(':').next().and_then(|port| port.parse().ok());
                    nodes.push((port.expect("a node port"), pid.parse().expect("a pid")));
                }
            }
            panic!("the example exited before it was ready");
        })
        .await
        .expect("ready in time");
        assert_eq!(nodes.len(), 3, "three nodes: {nodes:?}");
        example.nodes = nodes;
        example
    }

    /// The private CA the script made (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.tls.join("ca.pem")).expect("the script made ca.pem")
    }

    /// The private CA's file.
    pub fn ca_path(&self) -> PathBuf {
        self.tls.join("ca.pem")
    }

    /// Publishes `payload` (type `news`) to `channel` of the example's `default` tenant
    /// through `port` (a node's, or the plain front door's); returns its `seq`.
    pub async fn publish_through(port: u16, channel: &str, payload: serde_json::Value) -> u64 {
        let body = serde_json::json!({
            "tenant": "default", "channel": channel, "type": "news", "payload": payload
        });
        let reply: serde_json::Value = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/publish"))
            .bearer_auth("dev-api-key")
            .json(&body)
            .send()
            .await
            .expect("published")
            .json()
            .await
            .expect("JSON");
        reply["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq in {reply}"))
    }

    /// Sends the script SIGTERM and waits for it: `Ok` when it exited with status 0.
    pub async fn stop(&mut self) -> Result<(), String> {
        let Some(mut script) = self.script.take() else {
            return Err("already stopped".to_owned());
        };
        if let Some(pid) = script.id() {
            signal(pid, "-TERM");
        }
        match timeout(Duration::from_secs(20), script.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("the example exited with {status}")),
            Ok(Err(error)) => Err(format!("waiting for the example: {error}")),
            Err(_) => Err("the example did not stop within 20 s".to_owned()),
        }
    }
}

/// `kill SIGNAL pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

impl Drop for ClusterExample {
    fn drop(&mut self) {
        let Some(mut script) = self.script.take() else {
            return;
        };
        let Some(pid) = script.id() else { return };
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if !matches!(script.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// Self-tests: the harness itself works.

#[tokio::test]
async fn redis_server_answers_stops_and_restarts_on_its_port() {
    let mut redis = RedisServer::start().await;
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port));
    assert_eq!(redis.command(&["SET", "greeting", "hello"]).await, "OK");
    assert_eq!(redis.command(&["GET", "greeting"]).await, "hello");
    assert_eq!(redis.command(&["DBSIZE"]).await, "1");

    let port = redis.port;
    redis.stop().await;
    assert!(!redis.ping().await, "PING answered after stop");

    redis.restart().await;
    assert_eq!(redis.port, port);
    assert!(redis.ping().await, "no PING answer after restart");
    assert_eq!(
        redis.command(&["DBSIZE"]).await,
        "0",
        "nothing survives a restart"
    );
}

#[tokio::test]
async fn redis_cluster_forms_with_three_nodes() {
    let cluster = RedisCluster::start().await;
    assert_eq!(cluster.ports.len(), 3);
    assert_eq!(cluster.urls().len(), 3);
    for index in 0..3 {
        let info = cluster.command(index, &["CLUSTER", "INFO"]).await;
        assert!(info.contains("cluster_state:ok"), "node {index}: {info}");
        assert!(
            info.contains("cluster_known_nodes:3"),
            "node {index}: {info}"
        );
    }
    // Keys hash to slots on different nodes; `-c` follows the redirects.
    for key in ["a", "b", "c"] {
        assert_eq!(cluster.command(0, &["SET", key, "1"]).await, "OK");
        assert_eq!(cluster.command(2, &["GET", key]).await, "1");
    }
}

/// A one-shot HTTP responder: answers every request with `name`, a newline, and the request
/// head it received. Returns its port.
async fn http_echo_head(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("responder binds");
    let port = listener.local_addr().expect("responder address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&chunk[..read]),
                    }
                }
                let body = format!("{name}\n{}", String::from_utf8_lossy(&head));
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn nginx_proxies_http_round_robin() {
    let ports = [http_echo_head("one").await, http_echo_head("two").await];
    let nginx = Nginx::start(&ports).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client builds");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let response = client
            .get(nginx.http_url("/healthz"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET through nginx: {error}\n{}", nginx.log()));
        assert_eq!(response.status().as_u16(), 200);
        let body = response.text().await.expect("body");
        assert!(body.contains("GET /healthz HTTP/1.1\r\n"), "{body}");
        assert!(body.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{body}");
        seen.push(body.lines().next().unwrap_or_default().to_owned());
    }
    assert!(
        seen.iter().any(|name| name == "one") && seen.iter().any(|name| name == "two"),
        "round robin reached both upstreams: {seen:?}"
    );
}

#[tokio::test]
async fn nginx_passes_websocket_upgrades() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("echo server binds");
    let upstream = listener.local_addr().expect("echo address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() && socket.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let nginx = Nginx::start(&[upstream]).await;
    let (mut socket, _) = timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(nginx.ws_url("/ws/acme")),
    )
    .await
    .expect("upgrade answered in time")
    .unwrap_or_else(|error| panic!("upgrade through nginx: {error}\n{}", nginx.log()));
    socket
        .send(Message::text("hello"))
        .await
        .expect("frame sent");
    let echoed = timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("echo in time")
        .expect("socket open")
        .expect("valid frame");
    assert_eq!(echoed, Message::text("hello"));
}
