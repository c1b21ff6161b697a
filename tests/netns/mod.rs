//! The seed topology as separate hosts on one machine, and the means to attack it.
//!
//! [`run`] builds five network namespaces (see [`topology`]): site A and site B each run a
//! `redis-server` and a data agent, site C runs the witness, the hub holds the bridge and
//! the delaying [`relay`], and the client namespace observes. Agents name each other only
//! by WAN address, so every inter-site byte crosses the relay and the site's `eth0`, where
//! [`Fault`]s cut, slow or drop it. One writer per site and a poller of every agent's
//! `/state` record a [`History`](workload::History) that [`checker`] judges at the end.
//!
//! Test code runs on a runtime inside the client namespace; writers run inside their
//! site's namespace; the relay inside the hub. Everything is torn down when the test ends,
//! passes or panics; namespaces of killed runs are swept at the next start.
//!
//! With [`System::Sentinel`] the same hosts run Redis Sentinel instead of our agents: one
//! sentinel per site in the agent's place, the same Redis settings, writers that ask the
//! sentinels, and the same faults where they apply ([`Fault::applies_to`]).
//!
//! Used by `tests/netns_scenarios.rs` (CI) and `tests/netns_nemesis.rs` (on demand).

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod checker;
pub mod procs;
pub mod relay;
#[path = "../common/server_program.rs"]
pub mod server_program;
pub mod topology;
pub mod workload;

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_orchestrator::client::ApiClient;
use redis_orchestrator::wire::StateView;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

use checker::{Bounds, Report};
use procs::{Proc, Spec};
use relay::{Relay, Route};
use topology::{HUB_IP, Netns, Site, Topology};
use workload::{
    API_PORT, Ack, EventKind, History, MASTER_NAME, Observe, RAFT_PORT, REDIS_PORT, SENTINEL_PORT,
    Sample,
};

pub const SECRET: &str = "netns-test-secret";
/// What an operator mistypes: the Redis password and the shared secret of one agent.
pub const WRONG_PASSWORD: &str = "not-the-redis-password";
pub const WRONG_SECRET: &str = "a-rotated-secret-only-one-agent-has";
/// Size of the tmpfs under each agent's `--raft-data-dir` with [`Options::raft_tmpfs`].
const RAFT_TMPFS: &str = "size=128m";
/// The file that fills an agent's raft tmpfs during [`Fault::DiskFull`].
const FILLER: &str = "nemesis-filler";

/// Agent timings for the suite: fast, accepted by the agent's own checks, and valid for
/// what the network and openraft actually do:
/// - `--raft-heartbeat` 250 ms: openraft gives every AppendEntries (heartbeats included) one
///   heartbeat interval to complete, so it must exceed the inter-site round trip (100 ms in
///   the latency test) with room for a fresh connection; the 100 ms of `tests/common` suits
///   loopback only (`a_heartbeat_below_the_round_trip_between_sites_is_explained_loudly`).
/// - `--lease` 2.5 s: a follower that knows a leader waits the leader lease (the maximum
///   election timeout) plus a random election timeout before it campaigns, so replacing a
///   lost Raft leader takes up to 4 x `--raft-election-timeout` (1.2 s), then a vote, a
///   heartbeat round and a report; the lease must outlast that and the age of the master's
///   contact when the leader is lost, or losing the leader (e.g. an isolated witness) fences
///   a healthy master. The agent's own check says the same with no room for slow hosts
///   (`losing_the_witness_as_raft_leader_does_not_fence_the_master` runs at it).
/// - `--down-after` 3.5 s: the agent wants it at least four heartbeats above the lease.
pub const TIMING: &[&str] = &[
    "--probe-interval=100ms",
    "--redis-down-after=300ms",
    "--down-after=3500ms",
    "--lease=2500ms",
    "--raft-heartbeat=250ms",
    "--raft-election-timeout=300ms",
];
pub const PROBE: Duration = Duration::from_millis(100);
pub const DOWN_AFTER: Duration = Duration::from_millis(3500);
pub const LEASE: Duration = Duration::from_millis(2500);
/// The stated convergence bound after a heal.
pub const CONVERGE: Duration = Duration::from_secs(10);
/// How long a fresh cluster may take to elect its first master.
pub const SETTLE: Duration = Duration::from_secs(30);

const REDIS_START: Duration = Duration::from_secs(5);
const API_TIMEOUT: Duration = Duration::from_millis(400);

/// Which failover system runs beside the Redis servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Our agents (two data agents and the witness).
    Ours,
    /// One Redis Sentinel per site, quorum 2.
    Sentinel,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Ours => "ours",
            System::Sentinel => "sentinel",
        }
    }
}

/// Per-run choices.
#[derive(Clone, Debug)]
pub struct Options {
    /// Extra `redis-server` arguments.
    pub redis_args: Vec<String>,
    /// Agent timing flags.
    pub timing: Vec<String>,
    pub system: System,
    /// `requirepass`/`masterauth` of every Redis, given to agents, sentinels and writers.
    pub redis_password: Option<String>,
    /// Mount a small tmpfs under every agent's `--raft-data-dir`, so a disk can fill up.
    pub raft_tmpfs: bool,
}

impl Default for Options {
    /// [`TIMING`], and Redis tuned so a replica notices a dead link to its master within
    /// about two seconds (ping every second, time out after two).
    ///
    /// The Redis tuning is needed for failover across a real partition: the coordinator
    /// keeps a silent master while any replica reports a live link to it, and with Redis's
    /// defaults (`repl-timeout 60`) a replica cut off by dropped packets reports its link up
    /// for a minute. `isolating_the_master_site_with_default_redis_settings` shows it.
    fn default() -> Options {
        Options {
            redis_args: ["--repl-ping-replica-period", "1", "--repl-timeout", "2"]
                .map(String::from)
                .to_vec(),
            timing: TIMING.iter().map(|s| s.to_string()).collect(),
            system: System::Ours,
            redis_password: None,
            raft_tmpfs: false,
        }
    }
}

impl Options {
    /// Redis with its default replication timeouts.
    pub fn redis_defaults(mut self) -> Options {
        self.redis_args.clear();
        self
    }

    /// `--down-after` in force.
    pub fn down_after(&self) -> Duration {
        self.timing
            .iter()
            .find_map(|t| t.strip_prefix("--down-after="))
            .and_then(|v| redis_orchestrator::duration::parse(v).ok())
            .unwrap_or(DOWN_AFTER)
    }

    /// Replace one timing flag, e.g. `("--raft-heartbeat", "100ms")`.
    pub fn with(mut self, flag: &str, value: &str) -> Options {
        self.timing.retain(|t| !t.starts_with(&format!("{flag}=")));
        self.timing.push(format!("{flag}={value}"));
        self
    }
}

/// Runs `body` against a fresh three-site topology, one test at a time.
///
/// Prints a loud notice and returns without running when this machine cannot create
/// network namespaces (not root, or `ip netns add` fails).
pub fn run<F, Fut>(test: &str, options: Options, body: F)
where
    F: FnOnce(Harness) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(why) = topology::unavailable() {
        let bar = "!".repeat(78);
        // Straight to the process's stderr: `eprintln!` would be captured by the test
        // harness and the skip would pass silently.
        let _ = writeln!(
            std::io::stderr(),
            "\n{bar}\n!!! SKIPPED {test}: network namespaces are not available here ({why}).\n\
             !!! These tests need root, iproute2 and iptables; nothing was checked.\n{bar}\n"
        );
        return;
    }
    let swept = topology::sweep_stale();
    if !swept.is_empty() {
        eprintln!("removed namespaces left by killed runs: {swept:?}");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();

    let topo = Topology::create().unwrap_or_else(|e| panic!("cannot build the topology: {e}"));
    let runtimes = Runtimes::new(&topo);
    let hosts = Hosts {
        hub: topo.hub.clone(),
        sites: topo.sites.clone(),
        client: topo.client.clone(),
    };
    let handles = runtimes.handles();
    let task = runtimes.client.spawn(async move {
        let harness = Harness::start(hosts, handles, options).await;
        body(harness).await;
    });
    let result = runtimes.client.block_on(task);
    runtimes.shutdown();
    drop(topo);
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("{test}: test task did not finish: {e}");
    }
}

/// One runtime per namespace that runs code of ours.
struct Runtimes {
    hub: Runtime,
    sites: [Runtime; 3],
    client: Runtime,
}

impl Runtimes {
    fn new(topo: &Topology) -> Runtimes {
        let rt = |ns: &Netns, workers| {
            topology::runtime(ns, workers)
                .unwrap_or_else(|e| panic!("runtime in {}: {e}", ns.name()))
        };
        Runtimes {
            hub: rt(&topo.hub, 1),
            sites: [
                rt(&topo.sites[0], 1),
                rt(&topo.sites[1], 1),
                rt(&topo.sites[2], 1),
            ],
            client: rt(&topo.client, 2),
        }
    }

    fn handles(&self) -> Handles {
        Handles {
            hub: self.hub.handle().clone(),
            sites: [
                self.sites[0].handle().clone(),
                self.sites[1].handle().clone(),
                self.sites[2].handle().clone(),
            ],
        }
    }

    fn shutdown(self) {
        let grace = Duration::from_secs(1);
        self.client.shutdown_timeout(grace);
        self.hub.shutdown_timeout(grace);
        for rt in self.sites {
            rt.shutdown_timeout(grace);
        }
    }
}

#[derive(Clone)]
struct Handles {
    hub: Handle,
    sites: [Handle; 3],
}

/// Namespace names (the [`Topology`] that owns them stays with [`run`]).
#[derive(Clone)]
pub struct Hosts {
    pub hub: Netns,
    pub sites: [Netns; 3],
    pub client: Netns,
}

/// A fault the harness can inject and heal.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Cut a site off from both others, both directions (the client namespace still
    /// reaches it, as an observer outside the WAN).
    Isolate(Site),
    /// Cut A from B while both still reach C.
    CutDataSites,
    /// SIGKILL the agent; healed by restarting it on its data directory.
    KillAgent(Site),
    /// SIGKILL the redis-server; healed by restarting it (empty: no persistence).
    KillRedis(Site),
    /// SIGSTOP the agent; healed by SIGCONT.
    PauseAgent(Site),
    /// SIGSTOP the redis-server; healed by SIGCONT.
    PauseRedis(Site),
    /// One-way delay on every inter-site path (the relay) and random loss on every
    /// inter-site packet (iptables, at the receiver).
    Wan { delay: Duration, loss_percent: u32 },
    /// Restart the agent with a wrong `--redis-password`; healed by restarting it right.
    /// Sentinel: `SENTINEL SET auth-pass` to a wrong one on the site's sentinel, then back.
    WrongRedisPassword(Site),
    /// Restart the agent with another shared secret; healed by restarting it right.
    SecretMismatch(Site),
    /// Fill the tmpfs under the agent's `--raft-data-dir`; healed by freeing it (and
    /// restarting the agent if it exited or reports itself unhealthy, as a supervisor would).
    DiskFull(Site),
    /// SIGKILL the agent and delete everything in its `--raft-data-dir`; healed by starting it.
    WipeRaftDir(Site),
    /// SIGSTOP the redis-server until a failover away from it is seen (the caller holds it
    /// past `--down-after`); healed by SIGCONT.
    PauseRedisPastFailover(Site),
    /// SIGKILL the redis-server, delete its RDB file and start it again at once, empty;
    /// healing does nothing.
    RestartRedisEmpty(Site),
}

impl Fault {
    /// The kind, for tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Isolate(Site::C) => "isolate witness",
            Fault::Isolate(_) => "isolate data site",
            Fault::CutDataSites => "cut A<->B",
            Fault::KillAgent(_) => "kill agent",
            Fault::KillRedis(_) => "kill redis",
            Fault::PauseAgent(_) => "pause agent",
            Fault::PauseRedis(_) => "pause redis",
            Fault::Wan { .. } => "wan latency/loss",
            Fault::WrongRedisPassword(_) => "wrong redis password",
            Fault::SecretMismatch(_) => "secret mismatch",
            Fault::DiskFull(_) => "disk full",
            Fault::WipeRaftDir(_) => "wipe raft dir",
            Fault::PauseRedisPastFailover(_) => "pause redis>down",
            Fault::RestartRedisEmpty(_) => "redis restarted empty",
        }
    }

    /// Whether the fault means anything for `system`. Sentinel has no shared secret among
    /// its processes and no Raft log, so a secret mismatch, a full Raft disk and a wiped Raft
    /// dir have no counterpart there; agent kills and pauses hit the site's sentinel.
    pub fn applies_to(&self, system: System) -> bool {
        system == System::Ours
            || !matches!(
                self,
                Fault::SecretMismatch(_) | Fault::DiskFull(_) | Fault::WipeRaftDir(_)
            )
    }

    pub fn label(&self) -> String {
        match self {
            Fault::Isolate(s) => format!("isolate {}", s.name()),
            Fault::CutDataSites => "cut site-a<->site-b".to_string(),
            Fault::KillAgent(s) => format!("kill agent {}", s.name()),
            Fault::KillRedis(s) => format!("kill redis {}", s.name()),
            Fault::PauseAgent(s) => format!("pause agent {}", s.name()),
            Fault::PauseRedis(s) => format!("pause redis {}", s.name()),
            Fault::Wan {
                delay,
                loss_percent,
            } => format!(
                "wan {} ms each way, {loss_percent}% loss",
                delay.as_millis()
            ),
            Fault::WrongRedisPassword(s) => format!("wrong redis password on {}", s.name()),
            Fault::SecretMismatch(s) => format!("shared-secret mismatch on {}", s.name()),
            Fault::DiskFull(s) => format!("disk full on {}", s.name()),
            Fault::WipeRaftDir(s) => format!("wipe raft dir of {}", s.name()),
            Fault::PauseRedisPastFailover(s) => {
                format!("pause redis {} past a failover", s.name())
            }
            Fault::RestartRedisEmpty(s) => format!("restart redis {} empty", s.name()),
        }
    }
}

/// An injected fault and what healing it must undo.
#[derive(Debug)]
pub struct Active {
    pub fault: Fault,
    pub at: Duration,
    /// iptables rules added per site (`CHAIN match... -j DROP`, without `-A`).
    rules: Vec<(Site, Vec<String>)>,
}

pub struct Harness {
    pub hosts: Hosts,
    handles: Handles,
    dir: Option<tempfile::TempDir>,
    /// Our agents, or under [`System::Sentinel`] the site's sentinel in the agent's place.
    agents: [Proc; 3],
    redis: [Option<Proc>; 3],
    pub relay: Relay,
    pub history: Arc<History>,
    pub api: ApiClient,
    pub system: System,
    observe: Observe,
    redis_password: Option<String>,
    raft_dirs: [PathBuf; 3],
    /// Raft dirs with a tmpfs mounted on them, unmounted on drop.
    mounted: Vec<PathBuf>,
    stop: watch::Sender<bool>,
    writers_started: bool,
}

impl Harness {
    async fn start(hosts: Hosts, handles: Handles, options: Options) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("netns-")
            .tempdir()
            .expect("temp dir");
        let history = History::new();
        let (stop, stop_rx) = watch::channel(false);

        let source_of = Arc::new(|peer: IpAddr| match peer {
            IpAddr::V4(ip) => IpAddr::V4(Site::of_ip(ip).map_or(HUB_IP, Site::wan)),
            IpAddr::V6(_) => IpAddr::V4(HUB_IP),
        });
        let relay = handles
            .hub
            .spawn(Relay::start(relay_routes(), source_of, stop_rx.clone()))
            .await
            .expect("relay task")
            .expect("relay binds the WAN addresses");

        let redis = Site::ALL.map(|site| {
            site.is_data().then(|| {
                let data = dir.path().join(format!("{}-redis", site.name()));
                std::fs::create_dir_all(&data).expect("redis dir");
                let spec = match options.system {
                    System::Ours => redis_spec(&data, &options),
                    System::Sentinel => redis_conf_spec(site, &data, &options),
                };
                Proc::new(
                    &format!("redis {}", site.name()),
                    hosts.sites[site.index()].clone(),
                    spec,
                    dir.path().join(format!("{}-redis.log", site.name())),
                )
            })
        });
        let raft_dirs = Site::ALL.map(|site| dir.path().join(format!("{}-raft", site.name())));
        let mut mounted = Vec::new();
        if options.raft_tmpfs {
            for raft in &raft_dirs {
                std::fs::create_dir_all(raft).expect("raft dir");
                mount_tmpfs(raft).unwrap_or_else(|e| panic!("{e}"));
                mounted.push(raft.clone());
            }
        }
        let agents = Site::ALL.map(|site| {
            let spec = match options.system {
                System::Ours => agent_spec(
                    site,
                    &raft_dirs[site.index()],
                    &options.timing,
                    options.redis_password.as_deref(),
                ),
                System::Sentinel => sentinel_spec(site, dir.path(), &options),
            };
            let log = match options.system {
                System::Ours => format!("{}-agent.log", site.name()),
                System::Sentinel => format!("{}-sentinel.log", site.name()),
            };
            let label = match options.system {
                System::Ours => format!("agent {}", site.name()),
                System::Sentinel => format!("sentinel {}", site.name()),
            };
            Proc::new(
                &label,
                hosts.sites[site.index()].clone(),
                spec,
                dir.path().join(log),
            )
        });
        let api = ApiClient::new(Some(SECRET.as_bytes()), API_TIMEOUT).expect("api client");
        let observe = match options.system {
            System::Ours => Observe::Agents {
                api: api.clone(),
                redis_password: options.redis_password.clone(),
            },
            System::Sentinel => Observe::Sentinels {
                redis_password: options.redis_password.clone(),
            },
        };
        let mut harness = Harness {
            hosts,
            handles,
            dir: Some(dir),
            agents,
            redis,
            relay,
            history: history.clone(),
            api,
            system: options.system,
            observe: observe.clone(),
            redis_password: options.redis_password.clone(),
            raft_dirs,
            mounted,
            stop,
            writers_started: false,
        };
        for site in Site::DATA {
            harness.start_redis(site).await;
        }
        for site in Site::ALL {
            harness.agents[site.index()]
                .start()
                .unwrap_or_else(|e| panic!("{e}"));
        }
        tokio::spawn(workload::poller(history, observe, stop_rx));
        harness
    }

    fn redis_dir(&self, site: Site) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().join(format!("{}-redis", site.name())))
            .unwrap_or_default()
    }

    fn redis_proc(&mut self, site: Site) -> &mut Proc {
        self.redis[site.index()]
            .as_mut()
            .unwrap_or_else(|| panic!("{} has no redis", site.name()))
    }

    /// Start (or restart) a site's redis-server and wait until it answers PING.
    async fn start_redis(&mut self, site: Site) {
        let proc = self.redis_proc(site);
        proc.restart().unwrap_or_else(|e| panic!("{e}"));
        let addr = format!("{}:{REDIS_PORT}", site.lan());
        let password = self.redis_password.clone();
        let deadline = Instant::now() + REDIS_START;
        loop {
            let ping = async {
                let mut conn =
                    workload::connect(&addr, password.as_deref(), Duration::from_millis(300))
                        .await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), ping).await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server in {} did not start: {}",
                    site.name(),
                    self.redis_proc(site).log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Start one writer per site, each inside its site's namespace.
    pub fn start_writers(&mut self) {
        if self.writers_started {
            return;
        }
        self.writers_started = true;
        for site in Site::ALL {
            let observe = match &self.observe {
                Observe::Agents { redis_password, .. } => Observe::Agents {
                    api: ApiClient::new(Some(SECRET.as_bytes()), Duration::from_millis(300))
                        .expect("api client"),
                    redis_password: redis_password.clone(),
                },
                sentinels @ Observe::Sentinels { .. } => sentinels.clone(),
            };
            self.handles.sites[site.index()].spawn(workload::writer(
                site,
                self.history.clone(),
                observe,
                self.stop.subscribe(),
            ));
        }
    }

    /// Every agent's `/state`, asked from the client namespace.
    pub async fn states(&self) -> [Option<StateView>; 3] {
        workload::query_all(&self.api, None).await
    }

    /// What the poller records, now: every agent's `/state`, or every site's sentinel and Redis.
    pub async fn samples(&self) -> [Option<Sample>; 3] {
        self.observe.samples().await
    }

    /// The master most sites name now (two of three), if any.
    pub async fn named_master(&self) -> Option<Site> {
        let samples = self.samples().await;
        Site::DATA.into_iter().find(|s| {
            samples
                .iter()
                .flatten()
                .filter(|v| v.master.as_deref() == Some(s.name()))
                .count()
                >= 2
        })
    }

    /// Wait until two of three sites name a master other than `from`; whether they did.
    pub async fn wait_master_moved(&self, from: Site, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.named_master().await.is_some_and(|m| m != from) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Wait until the cluster has settled (see [`checker::converged`]); the master and how
    /// long it took.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<(Site, Duration), String> {
        let start = Instant::now();
        loop {
            let samples = self.samples().await;
            if let Some(m) = checker::converged(&samples) {
                return Ok((m, start.elapsed()));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "not converged after {} ms; last states: {samples:#?}",
                    timeout.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll every agent from the client namespace until `pred` holds; the run time when it
    /// did and the states.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[Option<StateView>; 3]) -> bool,
    ) -> Result<(Duration, [Option<StateView>; 3]), String> {
        let start = Instant::now();
        loop {
            let states = self.states().await;
            if pred(&states) {
                return Ok((self.history.now(), states));
            }
            if start.elapsed() > timeout {
                let samples = states.each_ref().map(|v| v.as_ref().map(Sample::from));
                return Err(format!(
                    "timed out after {} ms waiting for {what}; last states: {samples:#?}",
                    timeout.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Like [`wait_converged`](Self::wait_converged) but panics with the agents' logs.
    /// Also waits for the poller to record it, so the checker sees the settling too.
    /// Under our agents, also waits (up to [`CONVERGE`]) while the witness answers and does
    /// not lead yet: it takes the Raft leadership over from a data agent soon after a
    /// leader settles (`decide::leadership`), and a scenario should not race that move;
    /// after a move, also for every agent to report to it (a keep-alive is 625 ms here).
    pub async fn settled(&self, timeout: Duration) -> Site {
        let m = match self.wait_converged(timeout).await {
            Ok((m, _)) => m,
            Err(e) => panic!("{e}"),
        };
        if self.system == System::Ours {
            let deadline = Instant::now() + CONVERGE;
            let mut moved = false;
            while Instant::now() < deadline {
                let states = self.states().await;
                let Some(witness) = &states[Site::C.index()] else {
                    break;
                };
                if witness.raft_state == "Leader" {
                    break;
                }
                moved = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if moved {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        }
        self.converged_round_recorded().await;
        m
    }

    /// Wait (up to [`CONVERGE`]) until the poller has recorded a settled round from now on:
    /// the checker judges convergence from those rounds, and a settled cluster seen only by
    /// [`wait_converged`](Self::wait_converged) just before the next fault would look unsettled.
    pub async fn converged_round_recorded(&self) {
        let since = self.history.now();
        let deadline = Instant::now() + CONVERGE;
        while !self
            .history
            .last_round()
            .is_some_and(|r| r.at >= since && checker::converged(&r.views).is_some())
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Record a free-form note in the history (shown in failures).
    pub fn note(&self, text: &str) {
        self.history.event(EventKind::Note, text);
    }

    pub async fn inject(&mut self, fault: Fault) -> Result<Active, String> {
        if !fault.applies_to(self.system) {
            return Err(format!(
                "{} has no counterpart under {}",
                fault.label(),
                self.system.name()
            ));
        }
        let mut rules = Vec::new();
        match &fault {
            Fault::Isolate(site) => {
                let pairs: Vec<(Site, Site)> = Site::ALL
                    .into_iter()
                    .filter(|s| s != site)
                    .map(|s| (*site, s))
                    .collect();
                rules = cut_rules(&pairs);
            }
            Fault::CutDataSites => rules = cut_rules(&[(Site::A, Site::B)]),
            Fault::KillAgent(site) => self.agents[site.index()].kill(),
            Fault::KillRedis(site) => self.redis_proc(*site).kill(),
            Fault::PauseAgent(site) => self.agents[site.index()].pause()?,
            Fault::PauseRedis(site) | Fault::PauseRedisPastFailover(site) => {
                self.redis_proc(*site).pause()?
            }
            Fault::Wan {
                delay,
                loss_percent,
            } => {
                self.relay.set_delay(*delay);
                if *loss_percent > 0 {
                    rules = loss_rules(*loss_percent);
                }
            }
            Fault::WrongRedisPassword(site) => match self.system {
                System::Ours => self.restart_agent_with(*site, "REDIS_PASSWORD", WRONG_PASSWORD)?,
                System::Sentinel => self.sentinel_auth_pass(*site, WRONG_PASSWORD).await?,
            },
            Fault::SecretMismatch(site) => {
                self.restart_agent_with(*site, "SHARED_SECRET", WRONG_SECRET)?
            }
            Fault::DiskFull(site) => self.fill_raft_dir(*site)?,
            Fault::WipeRaftDir(site) => {
                self.agents[site.index()].kill();
                self.wipe_raft_dir(*site)?;
            }
            Fault::RestartRedisEmpty(site) => {
                self.redis_proc(*site).kill();
                // The RDB a replica keeps from its last full sync would come back otherwise.
                let rdb = self.redis_dir(*site).join("dump.rdb");
                match std::fs::remove_file(&rdb) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("remove {}: {e}", rdb.display())),
                }
                self.start_redis(*site).await;
            }
        }
        for (site, site_rules) in &rules {
            self.iptables(*site, 'A', site_rules)?;
        }
        let at = self.history.event(EventKind::Inject, fault.label());
        Ok(Active { fault, at, rules })
    }

    pub async fn heal(&mut self, active: Active) -> Result<Duration, String> {
        for (site, site_rules) in &active.rules {
            self.iptables(*site, 'D', site_rules)?;
        }
        match &active.fault {
            Fault::KillAgent(site) | Fault::WipeRaftDir(site) => {
                self.agents[site.index()].start()?
            }
            Fault::KillRedis(site) => self.start_redis(*site).await,
            Fault::PauseAgent(site) => self.agents[site.index()].resume()?,
            Fault::PauseRedis(site) | Fault::PauseRedisPastFailover(site) => {
                self.redis_proc(*site).resume()?
            }
            Fault::Wan { .. } => self.relay.set_delay(Duration::ZERO),
            Fault::WrongRedisPassword(site) => match self.system {
                System::Ours => self.restart_agent_with(
                    *site,
                    "REDIS_PASSWORD",
                    self.redis_password.clone().unwrap_or_default().as_str(),
                )?,
                System::Sentinel => {
                    let right = self.redis_password.clone().unwrap_or_default();
                    self.sentinel_auth_pass(*site, &right).await?
                }
            },
            Fault::SecretMismatch(site) => {
                self.restart_agent_with(*site, "SHARED_SECRET", SECRET)?
            }
            Fault::DiskFull(site) => {
                let filler = self.raft_dirs[site.index()].join(FILLER);
                std::fs::remove_file(&filler)
                    .map_err(|e| format!("free {}: {e}", filler.display()))?;
            }
            Fault::Isolate(_) | Fault::CutDataSites | Fault::RestartRedisEmpty(_) => {}
        }
        Ok(self.history.event(EventKind::Heal, active.fault.label()))
    }

    /// Restart, as a supervisor would, every agent (or sentinel) that exited on its own and
    /// every agent whose `/health` answers 503 (a failed liveness probe: the agent asks for
    /// a restart when its Raft core has stopped); each restart is noted and printed.
    pub async fn supervise(&mut self) -> Result<(), String> {
        for site in Site::ALL {
            let why = match self.agents[site.index()].exited() {
                Some(status) => Some(format!("exited ({status})")),
                None if self.system == System::Ours
                    && self.agents[site.index()].is_running()
                    && !self.agents[site.index()].is_stopped()
                    && self.agent_unhealthy(site).await =>
                {
                    Some("answers /health with 503".to_string())
                }
                None => None,
            };
            let Some(why) = why else { continue };
            let proc = &mut self.agents[site.index()];
            let text = format!(
                "supervisor: {} {why}; restarting it. Last log lines:\n{}",
                proc.label(),
                proc.log_tail(5)
            );
            proc.restart()?;
            println!("{text}");
            self.note(&text);
        }
        Ok(())
    }

    /// Restart a site's agent with one environment variable changed for good (until the
    /// next such call).
    fn restart_agent_with(&mut self, site: Site, key: &str, value: &str) -> Result<(), String> {
        let proc = &mut self.agents[site.index()];
        proc.set_env(key, value);
        proc.restart()
    }

    /// `SENTINEL SET <master> auth-pass` on a site's sentinel, from the client namespace.
    async fn sentinel_auth_pass(&self, site: Site, password: &str) -> Result<(), String> {
        let addr = workload::addr_from(None, site, SENTINEL_PORT);
        let mut conn = workload::connect(&addr, None, API_TIMEOUT)
            .await
            .map_err(|e| format!("sentinel {}: {e}", site.name()))?;
        redis::cmd("SENTINEL")
            .arg("SET")
            .arg(MASTER_NAME)
            .arg("auth-pass")
            .arg(password)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("SENTINEL SET auth-pass on {}: {e}", site.name()))
    }

    /// Fill a site's raft tmpfs up to the last byte.
    fn fill_raft_dir(&self, site: Site) -> Result<(), String> {
        if !self.mounted.contains(&self.raft_dirs[site.index()]) {
            return Err("disk full needs Options::raft_tmpfs".into());
        }
        let path = self.raft_dirs[site.index()].join(FILLER);
        let mut file =
            std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let chunk = vec![0u8; 1 << 16];
        loop {
            match file.write(&chunk) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(()),
                Err(e) => return Err(format!("filling {}: {e}", path.display())),
            }
        }
    }

    /// Delete everything in a site's raft dir (the dir itself may be a mount point).
    fn wipe_raft_dir(&self, site: Site) -> Result<(), String> {
        let dir = &self.raft_dirs[site.index()];
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| format!("remove {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// `/health` answers 503: the agent says a supervisor should restart it.
    async fn agent_unhealthy(&self, site: Site) -> bool {
        let addr = workload::addr_from(None, site, API_PORT);
        // `/health` is public and its answer unsigned: ask without the secret.
        let Ok(probe) = ApiClient::new(None, API_TIMEOUT) else {
            return false;
        };
        match probe.get::<serde_json::Value>(&addr, "/health").await {
            Err(e) => e.status() == Some(503),
            Ok(_) => false,
        }
    }

    /// Add (`op` = 'A') or delete ('D') rules in one site, atomically.
    fn iptables(&self, site: Site, op: char, rules: &[String]) -> Result<(), String> {
        let mut script = String::from("*filter\n");
        for rule in rules {
            script.push_str(&format!("-{op} {rule}\n"));
        }
        script.push_str("COMMIT\n");
        let mut child = self.hosts.sites[site.index()]
            .command("iptables-restore")
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("iptables-restore (apt-get install iptables): {e}"))?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "iptables-restore in {}: {}\n{script}",
                site.name(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Keys in a site's Redis (`DBSIZE`), `None` when it does not answer.
    pub async fn dbsize(&self, site: Site) -> Option<u64> {
        let mut conn = workload::connect(
            &format!("{}:{REDIS_PORT}", site.lan()),
            self.redis_password.as_deref(),
            Duration::from_secs(2),
        )
        .await
        .ok()?;
        redis::cmd("DBSIZE").query_async(&mut conn).await.ok()
    }

    /// Acknowledged writes that the Redis of `master` does not have.
    pub async fn lost_acks(&self, master: Site) -> Result<Vec<Ack>, String> {
        let acks = self.history.snapshot().acks;
        let mut conn = workload::connect(
            &format!("{}:{REDIS_PORT}", master.lan()),
            self.redis_password.as_deref(),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut lost = Vec::new();
        for chunk in acks.chunks(1000) {
            let mut pipe = redis::pipe();
            for a in chunk {
                pipe.cmd("EXISTS").arg(&a.key);
            }
            let found: Vec<u8> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            lost.extend(
                chunk
                    .iter()
                    .zip(found)
                    .filter(|(_, f)| *f == 0)
                    .map(|(a, _)| a.clone()),
            );
        }
        Ok(lost)
    }

    /// Stop the writers, wait for the cluster to settle, count lost acknowledged writes
    /// and check the whole history.
    ///
    /// Our agents must settle within [`CONVERGE`], Sentinel gets `sentinel_grace` more;
    /// failing that, the run is judged on the master two of three sites name and the failure
    /// to settle is one more violation.
    pub async fn finish(&mut self) -> Report {
        self.finish_within(Duration::ZERO).await
    }

    pub async fn finish_within(&mut self, sentinel_grace: Duration) -> Report {
        let bound = match self.system {
            System::Ours => CONVERGE,
            System::Sentinel => CONVERGE + sentinel_grace,
        };
        let mut unsettled = None;
        let master = match self.wait_converged(bound).await {
            Ok((master, _)) => {
                self.converged_round_recorded().await;
                master
            }
            Err(e) => {
                let named = self.named_master().await;
                unsettled = Some(format!(
                    "not settled at the end after {} ms; judged on the master the sentinels name ({})",
                    bound.as_millis(),
                    named.map_or("none: site-a's data", Site::name)
                ));
                eprintln!("final convergence: {e}");
                named.unwrap_or(Site::A)
            }
        };
        self.stop.send_replace(true);
        // Let writes in flight land before reading the final data.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let lost = self
            .lost_acks(master)
            .await
            .unwrap_or_else(|e| panic!("reading the final master: {e}"));
        let mut report = checker::check(
            &self.history.snapshot(),
            &Bounds {
                converge: CONVERGE,
                ..Bounds::default()
            },
            lost,
        );
        report.violations.extend(unsettled);
        report
    }

    /// Everything a site's agent has logged so far (JSON lines).
    pub fn agent_log(&self, site: Site) -> String {
        std::fs::read_to_string(self.agents[site.index()].log_path()).unwrap_or_default()
    }

    /// A site's agent's `GET /metrics` (public, unsigned), in the Prometheus text format.
    pub async fn metrics(&self, site: Site) -> Result<String, String> {
        let addr = workload::addr_from(None, site, API_PORT);
        let failed = |e: reqwest::Error| format!("GET /metrics from {}: {e}", site.name());
        reqwest::Client::new()
            .get(format!("http://{addr}/metrics"))
            .timeout(API_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failed)?
            .text()
            .await
            .map_err(failed)
    }

    pub fn dump_logs(&self, lines: usize) {
        for p in self.agents.iter().chain(self.redis.iter().flatten()) {
            eprintln!(
                "===== {} ({}) =====\n{}",
                p.label(),
                p.log_path().display(),
                p.log_tail(lines)
            );
        }
        let records = self.history.snapshot();
        eprintln!("===== fault events =====");
        for e in &records.events {
            eprintln!("{:>9.3}s {:?} {}", e.at.as_secs_f64(), e.kind, e.label);
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if std::thread::panicking() {
            self.dump_logs(80);
            if let Some(dir) = self.dir.take() {
                eprintln!("logs kept in {}", dir.keep().display());
            }
        }
        for p in self
            .agents
            .iter_mut()
            .chain(self.redis.iter_mut().flatten())
        {
            p.kill();
        }
        for dir in &self.mounted {
            // Lazy: nothing of ours holds it any more, and a leftover mount would pin the
            // temp dir.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(dir)
                .status();
        }
    }
}

/// A tmpfs of [`RAFT_TMPFS`] on `dir`, so filling it is a full disk.
fn mount_tmpfs(dir: &std::path::Path) -> Result<(), String> {
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", RAFT_TMPFS, "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Our Redis: settings on the command line (the agent sets the role at run time).
fn redis_spec(data: &std::path::Path, options: &Options) -> Spec {
    let mut args: Vec<String> = [
        "--port",
        &REDIS_PORT.to_string(),
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        // Full syncs start at once instead of waiting for more replicas.
        "--repl-diskless-sync-delay",
        "0",
        // As the deployment starts every Redis (README): one that restarts refuses writes
        // until its agent has placed it.
        "--min-replicas-to-write",
        "1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--dir".to_string(), data.display().to_string()]);
    if let Some(p) = &options.redis_password {
        args.extend(["--requirepass", p, "--masterauth", p].map(String::from));
    }
    args.extend(options.redis_args.iter().cloned());
    Spec {
        program: server_program::redis_server().into(),
        args,
        env: Vec::new(),
    }
}

/// Redis under Sentinel: the same settings, but in a config file, because Sentinel makes a
/// role change stick by `CONFIG REWRITE` and a restarted Redis must come back with it, as it
/// would in a real deployment. Site A starts as master, B as its replica; each announces its
/// WAN address, which is how the sentinels (at other sites) reach it.
fn redis_conf_spec(site: Site, data: &std::path::Path, options: &Options) -> Spec {
    let mut conf = format!(
        "port {REDIS_PORT}\nbind 0.0.0.0\nprotected-mode no\nsave \"\"\nappendonly no\n\
         repl-diskless-sync-delay 0\ndir \"{}\"\nreplica-announce-ip {}\n",
        data.display(),
        site.wan()
    );
    if let Some(p) = &options.redis_password {
        conf.push_str(&format!("requirepass \"{p}\"\nmasterauth \"{p}\"\n"));
    }
    // `--name value` pairs become `name value` lines.
    let mut line = String::new();
    for arg in &options.redis_args {
        match arg.strip_prefix("--") {
            Some(name) => {
                if !line.is_empty() {
                    conf.push_str(&format!("{line}\n"));
                }
                line = name.to_string();
            }
            None => line.push_str(&format!(" {arg}")),
        }
    }
    if !line.is_empty() {
        conf.push_str(&format!("{line}\n"));
    }
    if site != Site::A {
        conf.push_str(&format!("replicaof {} {REDIS_PORT}\n", Site::A.wan()));
    }
    let path = data.join("redis.conf");
    std::fs::write(&path, conf).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    Spec {
        program: server_program::redis_server().into(),
        args: vec![path.display().to_string()],
        env: Vec::new(),
    }
}

/// One sentinel per site, as the benchmark configures them: quorum 2, `down-after-milliseconds`
/// equal to our `--down-after`, `failover-timeout` ten times that (at least 10 s), one replica
/// resynced at a time. It announces its WAN address so the others reach it through the relay.
fn sentinel_spec(site: Site, dir: &std::path::Path, options: &Options) -> Spec {
    let sdir = dir.join(format!("{}-sentinel", site.name()));
    std::fs::create_dir_all(&sdir).expect("sentinel dir");
    let down_after = options.down_after();
    let failover_timeout = (down_after * 10).max(Duration::from_secs(10));
    let mut conf = format!(
        "port {SENTINEL_PORT}\nbind 0.0.0.0\nprotected-mode no\ndaemonize no\ndir \"{}\"\n\
         sentinel announce-ip {}\nsentinel announce-port {SENTINEL_PORT}\n\
         sentinel monitor {MASTER_NAME} {} {REDIS_PORT} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} {}\n\
         sentinel failover-timeout {MASTER_NAME} {}\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        sdir.display(),
        site.wan(),
        Site::A.wan(),
        down_after.as_millis(),
        failover_timeout.as_millis()
    );
    if let Some(p) = &options.redis_password {
        conf.push_str(&format!("sentinel auth-pass {MASTER_NAME} \"{p}\"\n"));
    }
    // Sentinel rewrites its config file, so each gets its own writable copy.
    let path = sdir.join("sentinel.conf");
    std::fs::write(&path, conf).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    Spec {
        program: server_program::redis_server().into(),
        args: vec![path.display().to_string(), "--sentinel".to_string()],
        env: Vec::new(),
    }
}

fn agent_spec(
    site: Site,
    data_dir: &std::path::Path,
    timing: &[String],
    redis_password: Option<&str>,
) -> Spec {
    let peers: Vec<String> = Site::ALL
        .iter()
        .map(|s| format!("{}:{RAFT_PORT}", s.wan()))
        .collect();
    let mut args = vec![
        format!("--raft-peers={}", peers.join(",")),
        format!("--raft-advertise={}:{RAFT_PORT}", site.wan()),
        format!("--raft-bind=0.0.0.0:{RAFT_PORT}"),
        format!("--api-bind=0.0.0.0:{API_PORT}"),
        format!("--raft-data-dir={}", data_dir.display()),
        format!("--site={}", site.name()),
        format!("--node-name={}", site.name()),
        "--election-mode=raft".to_string(),
    ];
    args.extend(timing.iter().cloned());
    if site.is_data() {
        args.extend([
            "--redis-host=127.0.0.1".to_string(),
            format!("--redis-port={REDIS_PORT}"),
            format!("--redis-announce={}:{REDIS_PORT}", site.wan()),
        ]);
    } else {
        args.push("--standalone".to_string());
    }
    let mut env = vec![
        ("SHARED_SECRET".into(), SECRET.into()),
        ("RUST_LOG".into(), "info,openraft=warn".into()),
    ];
    if let Some(p) = redis_password {
        env.push(("REDIS_PASSWORD".into(), p.into()));
    }
    Spec {
        program: PathBuf::from(env!("CARGO_BIN_EXE_redis-orchestrator")),
        args,
        env,
    }
}

/// Every service of every site behind its WAN address.
fn relay_routes() -> Vec<Route> {
    let mut routes = Vec::new();
    for site in Site::ALL {
        let mut ports = vec![RAFT_PORT, API_PORT, SENTINEL_PORT];
        if site.is_data() {
            ports.push(REDIS_PORT);
        }
        for port in ports {
            routes.push(Route {
                listen: SocketAddr::new(IpAddr::V4(site.wan()), port),
                target: SocketAddr::new(IpAddr::V4(site.lan()), port),
            });
        }
    }
    routes
}

/// Rules cutting each pair apart: each side drops everything from and to both addresses
/// (LAN and WAN) of the other, so a connection fails at whichever end starts it.
fn cut_rules(pairs: &[(Site, Site)]) -> Vec<(Site, Vec<String>)> {
    let mut per_site: Vec<(Site, Vec<String>)> = Vec::new();
    for &(x, y) in pairs {
        for (here, there) in [(x, y), (y, x)] {
            let rules: Vec<String> = [there.lan(), there.wan()]
                .iter()
                .flat_map(|ip| {
                    [
                        format!("INPUT -s {ip}/32 -j DROP"),
                        format!("OUTPUT -d {ip}/32 -j DROP"),
                    ]
                })
                .collect();
            match per_site.iter_mut().find(|(s, _)| *s == here) {
                Some((_, existing)) => existing.extend(rules),
                None => per_site.push((here, rules)),
            }
        }
    }
    per_site
}

/// Random loss on packets arriving from another site, in every site: each direction of
/// each path loses `percent` of its packets once.
fn loss_rules(percent: u32) -> Vec<(Site, Vec<String>)> {
    let p = f64::from(percent.min(100)) / 100.0;
    Site::ALL
        .into_iter()
        .map(|here| {
            let rules = Site::ALL
                .into_iter()
                .filter(|&s| s != here)
                .flat_map(|s| [s.lan(), s.wan()])
                .map(|ip| {
                    format!("INPUT -s {ip}/32 -m statistic --mode random --probability {p} -j DROP")
                })
                .collect();
            (here, rules)
        })
        .collect()
}
