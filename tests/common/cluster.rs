//! A three-site cluster of real processes on 127.0.0.1: two redis-server data nodes with
//! their agents ("site-a", "site-b") and a witness agent ("site-c").

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_orchestrator::client::ApiClient;
use redis_orchestrator::wire::StateView;

use super::{RedisServer, free_port};

pub const SECRET: &str = "test-shared-secret";

/// Fast timings so failure scenarios finish in seconds.
pub const TIMING: &[&str] = &[
    "--probe-interval=100ms",
    "--redis-down-after=300ms",
    "--down-after=3s",
    "--lease=2s",
    "--raft-heartbeat=100ms",
    "--raft-election-timeout=400ms",
];
pub const DOWN_AFTER: Duration = Duration::from_secs(3);
pub const LEASE: Duration = Duration::from_secs(2);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_redis-orchestrator")
}

pub struct Node {
    pub name: String,
    pub raft_port: u16,
    pub api_port: u16,
    pub redis: Option<RedisServer>,
    pub secret: String,
    pub extra_args: Vec<String>,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    pub fn raft_addr(&self) -> String {
        format!("127.0.0.1:{}", self.raft_port)
    }

    pub fn is_witness(&self) -> bool {
        self.redis.is_none()
    }

    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("data node has a redis")
    }

    pub fn redis_mut(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("data node has a redis")
    }

    /// Its `--raft-data-dir` (created by the agent if missing).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub peers: String,
    pub api: ApiClient,
    /// The agents' timing flags, [`TIMING`] unless a test replaces one.
    pub timing: Vec<String>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Start both redis-servers (not the agents).
    pub fn new() -> Cluster {
        Cluster::with_redis(super::ServerOptions::default())
    }

    /// Start both redis-servers with `options` (say, a password), not the agents; as the
    /// deployment does, with `min-replicas-to-write 1` unless the options say otherwise.
    pub fn with_redis(mut options: super::ServerOptions) -> Cluster {
        options.min_replicas_to_write.get_or_insert(1);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for (name, data) in [("site-a", true), ("site-b", true), ("site-c", false)] {
            nodes.push(Node {
                name: name.to_string(),
                raft_port: free_port(),
                api_port: free_port(),
                redis: data.then(|| RedisServer::start_with(options.clone())),
                secret: SECRET.to_string(),
                extra_args: Vec::new(),
                data_dir: dir.path().join(name),
                log_path: dir.path().join(format!("{name}.log")),
                child: None,
            });
        }
        let peers = nodes
            .iter()
            .map(Node::raft_addr)
            .collect::<Vec<_>>()
            .join(",");
        let api = ApiClient::new(Some(SECRET.as_bytes()), Duration::from_millis(800))
            .expect("api client");
        Cluster {
            nodes,
            peers,
            api,
            timing: TIMING.iter().map(|a| a.to_string()).collect(),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replace the timing flag `--name=...` of every agent started from now on.
    pub fn set_timing(&mut self, name: &str, value: &str) {
        let prefix = format!("{name}=");
        self.timing.retain(|a| !a.starts_with(&prefix));
        self.timing.push(format!("{name}={value}"));
    }

    pub fn start_agent(&mut self, i: usize) {
        let peers = self.peers.clone();
        let timing = self.timing.clone();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} already running", node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        let mut cmd = Command::new(binary());
        cmd.arg(format!("--raft-peers={peers}"))
            .arg(format!("--raft-advertise={}", node.raft_addr()))
            .arg(format!("--raft-bind={}", node.raft_addr()))
            .arg(format!("--api-bind={}", node.api_addr()))
            .arg(format!("--raft-data-dir={}", node.data_dir.display()))
            .arg(format!("--site={}", node.name))
            .arg(format!("--node-name={}", node.name))
            .arg("--election-mode=raft")
            .args(&timing)
            .args(&node.extra_args)
            .env("SHARED_SECRET", &node.secret)
            // TEST_AGENT_LOG, e.g. `debug,openraft=info`, to see more of a failing test.
            .env(
                "RUST_LOG",
                std::env::var("TEST_AGENT_LOG").unwrap_or("info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        match &node.redis {
            Some(r) => {
                cmd.arg("--redis-host=127.0.0.1")
                    .arg(format!("--redis-port={}", r.port()));
            }
            None => {
                cmd.arg("--standalone");
            }
        }
        node.child = Some(cmd.spawn().expect("spawn agent"));
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_agent(i);
        }
    }

    /// SIGKILL an agent (its Redis keeps running).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send a signal (e.g. "STOP", "CONT") to a running agent; false if it is not running.
    pub fn signal_agent(&self, i: usize, signal: &str) -> bool {
        self.nodes[i].child.as_ref().is_some_and(|child| {
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Process id of a running agent.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    pub async fn state(&self, i: usize) -> Option<StateView> {
        self.api.state(&self.nodes[i].api_addr()).await.ok()
    }

    pub async fn states(&self) -> Vec<Option<StateView>> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            out.push(self.state(i).await);
        }
        out
    }

    /// Poll every agent until `pred` holds; panic with the last states and logs on timeout.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[Option<StateView>]) -> bool,
    ) -> Vec<Option<StateView>> {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.states().await;
            if pred(&states) {
                return states;
            }
            if Instant::now() >= deadline {
                self.dump_logs();
                panic!("timed out after {timeout:?} waiting for {what}; last states: {states:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the running agents agree on one master whose Redis is master, every
    /// other running data node replicates from it with a live link, and return its index.
    /// Then, while the witness answers and does not lead yet, wait (up to 10 s) for it to
    /// take the Raft leadership over (`decide::leadership`), so no test races that move, and
    /// after a move for every agent to report to it (a keep-alive is 200 ms here): a new
    /// coordinator refuses operator requests about members it has not heard yet.
    pub async fn wait_stable_master(&self, timeout: Duration) -> usize {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        let stable = || {
            self.wait_until("one agreed master with live replicas", timeout, |states| {
                stable_master(states, &running).is_some()
            })
        };
        stable().await;
        let placed_by = Instant::now() + Duration::from_secs(10);
        for w in running
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].is_witness())
        {
            let mut moved = false;
            while Instant::now() < placed_by {
                match self.state(w).await {
                    Some(v) if v.raft_state != "Leader" => {
                        moved = true;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => break,
                }
            }
            if moved {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let states = stable().await;
        stable_master(&states, &running).expect("checked")
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("known node")
    }

    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!("===== log of {} =====\n{}", n.name, n.log());
        }
    }
}

/// The index of the agreed master, if the cluster is settled.
pub fn stable_master(states: &[Option<StateView>], running: &[usize]) -> Option<usize> {
    let views: Vec<&StateView> = running
        .iter()
        .map(|&i| states[i].as_ref())
        .collect::<Option<_>>()?;
    let first = views.first()?;
    let master_name = first.master.clone()?;
    if views
        .iter()
        .any(|v| v.master.as_ref() != Some(&master_name) || v.epoch != first.epoch)
    {
        return None;
    }
    let masters: Vec<usize> = running
        .iter()
        .copied()
        .filter(|&i| states[i].as_ref().is_some_and(|v| v.is_master))
        .collect();
    let [m] = masters.as_slice() else { return None };
    if states[*m].as_ref()?.name != master_name {
        return None;
    }
    let replicas_ok = running.iter().all(|&i| {
        let v = states[i].as_ref();
        i == *m
            || v.is_some_and(|v| {
                v.is_witness || (v.role == "replica" && v.master_link_up == Some(true))
            })
    });
    replicas_ok.then_some(*m)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Set REDIS_ORCHESTRATOR_TEST_LOGS=1 to read every agent's log after a passing test too.
        if std::thread::panicking() || std::env::var_os("REDIS_ORCHESTRATOR_TEST_LOGS").is_some() {
            self.dump_logs();
        }
        for i in 0..self.nodes.len() {
            // A stopped process must be continued before it can die cleanly.
            self.signal_agent(i, "CONT");
            self.kill_agent(i);
        }
    }
}

/// Run one async cluster test at a time: the machine has two cores and timing matters.
pub fn run_serial<F: Future<Output = ()>>(test: F) {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test);
}

/// Ask a data agent for a switchover to `to` until one is accepted (right after a master
/// change the new replica must report its link first), for at most `limit`.
pub async fn switch_over(c: &Cluster, to: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut last = String::new();
        for n in c.nodes.iter().filter(|n| !n.is_witness()) {
            let answer: Result<serde_json::Value, _> = c
                .api
                .post(
                    &n.api_addr(),
                    "/switchover",
                    &serde_json::json!({ "to": to }),
                )
                .await;
            match answer {
                Ok(_) => return,
                // An earlier attempt whose answer timed out may have done it.
                Err(e) if e.to_string().contains(&format!("{to} is already master")) => return,
                Err(e) => last = e.to_string(),
            }
        }
        assert!(Instant::now() < deadline, "no switchover to {to}: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
