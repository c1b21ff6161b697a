//! Child processes of a benchmark cluster, free ports, and what `/proc` says about a process.
//!
//! Every child is spawned with `kill_on_drop`, so dropping a cluster (end of a run, an
//! error, or Ctrl-C dropping the whole benchmark future) SIGKILLs all of its processes,
//! stopped ones included.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::{Child, Command};

/// One running child process.
pub struct Proc {
    pub label: String,
    pub pid: u32,
    child: Child,
}

impl Proc {
    /// Spawn `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(label: impl Into<String>, mut cmd: Command, log: &Path) -> Result<Proc> {
        let label = label.into();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open log {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {label}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{label} exited at once"))?;
        Ok(Proc { label, pid, child })
    }

    /// SIGKILL now (does not wait for the exit).
    pub fn kill(&mut self) -> Result<()> {
        self.child
            .start_kill()
            .with_context(|| format!("SIGKILL {}", self.label))
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn rss_kib(&self) -> Option<u64> {
        status_kib(self.pid, "VmRSS")
    }

    /// Resident anonymous memory (heap, stacks): what the process costs beyond the
    /// file pages of its binary and libraries, which other processes share.
    pub fn anon_rss_kib(&self) -> Option<u64> {
        status_kib(self.pid, "RssAnon")
    }

    /// Peak resident set size since the process started.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.pid, "VmHWM")
    }

    pub fn cpu_ticks(&self) -> Option<u64> {
        cpu_ticks(self.pid)
    }
}

/// Send `signal` (e.g. "STOP", "CONT") to every pid with one `kill` command, so all of
/// them change state within the same instant.
pub async fn signal(signal: &str, pids: &[u32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .await
        .context("run kill")?;
    if !status.success() {
        bail!("kill -{signal} {pids:?} failed: {status}");
    }
    Ok(())
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User plus system CPU time of the whole process (all threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may contain spaces and parentheses: count from the last ')'.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, index 0 is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we know of).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// A loopback port that was free a moment ago and was not handed out before by this
/// process (another process may still take it; clusters then fail to start and the
/// run is recorded as failed).
pub fn free_port() -> Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free loopback port found")
}

/// The first file named `name` in a directory of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Names the server binary for every Redis of both systems: a path, or a name on `PATH`.
pub const REDIS_SERVER_ENV: &str = "RORC_REDIS_SERVER";

/// [`REDIS_SERVER_ENV`] if set, else `redis-server`.
pub fn default_redis_server() -> PathBuf {
    std::env::var_os(REDIS_SERVER_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// How every Redis of both systems is started, and Sentinel too (the same binary with
/// `--sentinel`, as `redis-sentinel` is): so a run on Valkey compares with Valkey's Sentinel.
#[derive(Clone, Debug)]
pub struct ServerCommand {
    /// `redis-server` or `valkey-server`: a path, or a name on `PATH`.
    pub program: PathBuf,
    /// Extra arguments for every data node (e.g. `--repl-timeout 3`), not for Sentinel.
    pub args: Vec<String>,
}

impl ServerCommand {
    /// The binary's path, looking a bare name up on `PATH`.
    pub fn resolved(&self) -> Result<PathBuf> {
        if self.program.components().count() > 1 {
            return Ok(self.program.clone());
        }
        let name = self.program.to_string_lossy();
        on_path(&name).ok_or_else(|| anyhow!("{name} is not on PATH"))
    }

    /// A Sentinel started from `conf`.
    pub fn sentinel(&self, conf: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg(conf).arg("--sentinel");
        cmd
    }
}

/// Start a `redis-server` on 127.0.0.1 with the same settings for both systems under
/// test: no persistence, full syncs without delay, then `server.args`; optionally as a
/// replica of `replicaof`.
pub fn spawn_redis(
    label: &str,
    port: u16,
    dir: &Path,
    replicaof: Option<u16>,
    server: &ServerCommand,
) -> Result<Proc> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Command::new(&server.program);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .args(&server.args);
    if let Some(master) = replicaof {
        cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    Proc::spawn(label, cmd, &dir.join("redis.log"))
}

/// A multiplexed connection with both connecting and every answer bounded by `timeout`.
pub async fn redis_connect(
    addr: &str,
    timeout: Duration,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Wait until the redis-server at `addr` answers PING.
pub async fn wait_redis(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut conn) = redis_connect(addr, Duration::from_millis(500)).await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("redis-server at {addr} did not answer PING within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
