//! Test support shared by the integration tests: real `redis-server`
//! processes on free local ports.
//!
//! Use it from a test file with `mod common;`. Each server gets its own port
//! and temporary directory, so tests may run in parallel. Servers are
//! SIGKILLed when dropped.

// Every test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod raft;
pub mod server_program;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo};
use redis_orchestrator::redis::RedisConfig;
use tempfile::TempDir;

/// How long a new server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Read timeout of [`RedisServer::connection`]: long enough for a write to
/// sit behind `CLIENT PAUSE` in a test, short enough that a bug fails the
/// test instead of hanging it.
const HELPER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at finding a port nobody else grabbed meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Options for [`RedisServer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `requirepass`: clients (helpers included) must AUTH with it.
    pub requirepass: Option<String>,
    /// `masterauth`: what this server sends when it replicates.
    pub masterauth: Option<String>,
    /// `min-replicas-to-write` at start: 1 is how the deployment starts its Redis, so one
    /// that (re)starts refuses writes until its agent has placed it.
    pub min_replicas_to_write: Option<u32>,
}

/// A `redis-server` child process bound to 127.0.0.1.
pub struct RedisServer {
    child: Child,
    port: u16,
    options: ServerOptions,
    dir: TempDir,
}

impl RedisServer {
    /// A server without password.
    pub fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server on a free port and waits until it answers PING.
    ///
    /// Panics if `redis-server` is missing or does not come up.
    pub fn start_with(options: ServerOptions) -> Self {
        let dir = tempfile::tempdir().expect("create temp dir for redis-server");
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut child = spawn(port, &options, &dir);
            match wait_ready(&mut child, port, &options) {
                Ok(()) => {
                    return Self {
                        child,
                        port,
                        options,
                        dir,
                    };
                }
                Err(e) => {
                    // Most likely another process took the port first.
                    kill_and_reap(&mut child);
                    last_error = e;
                }
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The adapter's configuration for this server, with its password.
    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            host: "127.0.0.1".to_string(),
            port: self.port,
            password: self.options.requirepass.clone(),
            tls: false,
            tls_skip_verify: false,
            tls_ca_file: None,
        }
    }

    /// SIGKILL the process and reap it; the port is then refused.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// Kills the process (if alive) and starts a new one on the same port
    /// with the same options and directory (empty dataset, new run_id).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.port, &self.options, &self.dir);
        if let Err(e) = wait_ready(&mut self.child, self.port, &self.options) {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// SIGSTOP: the process keeps its port but answers nothing.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`stop`](Self::stop).
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    /// A new synchronous connection, authenticated when the server has a
    /// password, with a read timeout of a few seconds.
    pub fn connection(&self) -> redis::Connection {
        try_connect(self.port, &self.options, HELPER_READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to redis-server {}: {e}", self.addr()))
    }

    /// Runs one command on a new connection, e.g. `query(&["SET", "k", "v"])`.
    pub fn query<T: FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        command(args).query(&mut self.connection())
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.child.id());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Builds a command from its words.
pub fn command(args: &[&str]) -> redis::Cmd {
    let (name, rest) = args.split_first().expect("a command needs a name");
    let mut cmd = redis::cmd(name);
    for arg in rest {
        cmd.arg(*arg);
    }
    cmd
}

/// Polls `check` every 20 ms until it returns true; panics after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago. Another process may take it before
/// redis-server binds it; [`RedisServer::start_with`] retries then.
///
/// Never the same port twice in one test process: a port handed out but not bound yet
/// (an agent's, say) would otherwise come back from the kernel for the next caller.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("bind an ephemeral port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

fn spawn(port: u16, options: &ServerOptions, dir: &TempDir) -> Child {
    let mut cmd = Command::new(server_program::redis_server());
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        // Full syncs start at once instead of waiting 5 s for more replicas.
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(dir.path().join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(password) = &options.requirepass {
        cmd.args(["--requirepass", password]);
    }
    if let Some(password) = &options.masterauth {
        cmd.args(["--masterauth", password]);
    }
    if let Some(count) = options.min_replicas_to_write {
        cmd.args(["--min-replicas-to-write", &count.to_string()]);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("{}", server_program::spawn_failure(&e)))
}

/// Waits until the server answers PING, and checks that the answer comes from
/// this child and not from another server that owns the port.
fn wait_ready(child: &mut Child, port: u16, options: &ServerOptions) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on port {port} exited: {status}"));
        }
        if let Ok(mut conn) = try_connect(port, options, Duration::from_millis(500))
            && let Ok(info) = command(&["INFO", "server"]).query::<String>(&mut conn)
        {
            let pid = format!("process_id:{}", child.id());
            return if info.lines().any(|line| line == pid) {
                Ok(())
            } else {
                Err(format!("port {port} is served by another process"))
            };
        }
        if Instant::now() >= deadline {
            return Err(format!("redis-server on port {port} not ready"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn try_connect(
    port: u16,
    options: &ServerOptions,
    read_timeout: Duration,
) -> redis::RedisResult<redis::Connection> {
    let mut settings = RedisConnectionInfo::default();
    if let Some(password) = &options.requirepass {
        settings = settings.set_password(password);
    }
    let info = ConnectionAddr::Tcp("127.0.0.1".to_string(), port)
        .into_connection_info()?
        .set_redis_settings(settings);
    let mut conn =
        redis::Client::open(info)?.get_connection_with_timeout(Duration::from_secs(1))?;
    conn.set_read_timeout(Some(read_timeout))?;
    conn.set_write_timeout(Some(read_timeout))?;
    command(&["PING"]).query::<()>(&mut conn)?;
    Ok(conn)
}

fn kill_and_reap(child: &mut Child) {
    // Fails only if the process was already reaped, which is fine.
    let _ = child.kill();
    let _ = child.wait();
}
