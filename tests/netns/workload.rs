//! Workload and observation: one writer per site and a poller of every agent's `/state`,
//! all recording into one [`History`] on one monotonic clock (they are threads of one
//! process, whatever namespace each thread sits in).
//!
//! The system under test is either our agents or Redis Sentinel ([`Observe`]): writers and
//! the poller differ only in whom they ask who the master is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis_orchestrator::client::ApiClient;
use redis_orchestrator::wire::StateView;
use tokio::sync::watch;

use super::topology::Site;

pub const RAFT_PORT: u16 = 7000;
pub const API_PORT: u16 = 8080;
pub const REDIS_PORT: u16 = 6379;
pub const SENTINEL_PORT: u16 = 26379;
/// The name every sentinel monitors the master by.
pub const MASTER_NAME: &str = "mymaster";

/// Pause between two writes of one writer.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);
/// Connect and response bound of a write: a fenced master holds writes, and the writer
/// must notice within a fraction of `--lease`.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a writer asks the agents who the master is.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(200);
/// How often the poller samples every agent.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Connect and response bound of one question to a sentinel or a Redis (INFO).
const QUERY_TIMEOUT: Duration = Duration::from_millis(300);

/// An acknowledged write.
#[derive(Clone, Debug)]
pub struct Ack {
    pub writer: Site,
    /// The site whose Redis acknowledged it.
    pub node: Site,
    pub key: String,
    pub sent: Duration,
    pub at: Duration,
}

/// What the checker needs from one `/state` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub epoch: u64,
    pub master: Option<String>,
    pub is_master: bool,
    pub role: String,
    pub fenced: bool,
    pub link_up: Option<bool>,
    pub raft_state: String,
    pub raft_leader: Option<String>,
    /// The node lost its Raft store and has not got the committed state back: its epoch
    /// and master claim nothing.
    pub recovering: bool,
}

impl From<&StateView> for Sample {
    fn from(v: &StateView) -> Sample {
        Sample {
            epoch: v.epoch,
            master: v.master.clone(),
            is_master: v.is_master,
            role: v.role.clone(),
            fenced: v.fenced,
            link_up: v.master_link_up,
            raft_state: v.raft_state.clone(),
            raft_leader: v.raft_leader.clone(),
            recovering: v.raft_store_recovering,
        }
    }
}

/// One poll of all three agents (index = [`Site::index`]); `None`: no answer in time.
#[derive(Clone, Debug)]
pub struct Round {
    pub at: Duration,
    pub views: [Option<Sample>; 3],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Inject,
    Heal,
    Note,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub at: Duration,
    pub kind: EventKind,
    pub label: String,
}

#[derive(Clone, Debug, Default)]
pub struct Records {
    pub acks: Vec<Ack>,
    pub failed_writes: u64,
    pub rounds: Vec<Round>,
    pub events: Vec<Event>,
}

impl Records {
    /// Longest stretch without any acknowledged write between two run times.
    pub fn longest_write_gap(&self, from: Duration, to: Duration) -> Duration {
        let mut times: Vec<Duration> = self
            .acks
            .iter()
            .map(|a| a.at)
            .filter(|t| *t >= from && *t <= to)
            .collect();
        times.sort();
        let mut edges = vec![from];
        edges.extend(times);
        edges.push(to);
        edges
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

/// Everything observed during a run.
pub struct History {
    t0: Instant,
    records: Mutex<Records>,
}

impl History {
    pub fn new() -> Arc<History> {
        Arc::new(History {
            t0: Instant::now(),
            records: Mutex::new(Records::default()),
        })
    }

    /// Time since the run began.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn event(&self, kind: EventKind, label: impl Into<String>) -> Duration {
        let at = self.now();
        self.lock().events.push(Event {
            at,
            kind,
            label: label.into(),
        });
        at
    }

    pub fn snapshot(&self) -> Records {
        self.lock().clone()
    }

    pub fn last_round(&self) -> Option<Round> {
        self.lock().rounds.last().cloned()
    }

    /// How many writes have been acknowledged so far.
    pub fn ack_count(&self) -> usize {
        self.lock().acks.len()
    }

    /// Acknowledged writes per node since `from`.
    pub fn acks_since(&self, from: Duration) -> Vec<Ack> {
        self.lock()
            .acks
            .iter()
            .filter(|a| a.at >= from)
            .cloned()
            .collect()
    }
}

/// `host:port` of `to`'s service as seen from `from`: the own site directly, every other
/// site by its WAN address (through the relay), like an application at that site would.
pub fn addr_from(from: Option<Site>, to: Site, port: u16) -> String {
    let ip = if from.is_none_or(|f| f == to) {
        to.lan()
    } else {
        to.wan()
    };
    format!("{ip}:{port}")
}

/// Write unique keys `<site>:<n>` to whichever Redis the agents say is master, recording
/// every acknowledgement. Runs on the runtime of `site`'s namespace until `stop`.
pub async fn writer(
    site: Site,
    history: Arc<History>,
    observe: Observe,
    mut stop: watch::Receiver<bool>,
) {
    let (target_tx, target_rx) = watch::channel(None);
    let password = observe.redis_password().map(str::to_string);
    match observe {
        Observe::Agents { api, .. } => {
            tokio::spawn(discover(site, api, target_tx, stop.clone()));
        }
        Observe::Sentinels { .. } => {
            tokio::spawn(discover_sentinel(site, target_tx, stop.clone()));
        }
    }
    let mut conn: Option<(Site, MultiplexedConnection)> = None;
    let mut seq: u64 = 0;
    while !*stop.borrow() {
        let target = *target_rx.borrow();
        if let Some(node) = target
            && conn.as_ref().is_none_or(|(n, _)| *n != node)
        {
            conn = connect(
                &addr_from(Some(site), node, REDIS_PORT),
                password.as_deref(),
                WRITE_TIMEOUT,
            )
            .await
            .ok()
            .map(|c| (node, c));
        }
        if let Some((node, c)) = conn.as_mut() {
            seq += 1;
            let key = format!("{}:{seq}", site.name());
            let sent = history.now();
            let result: redis::RedisResult<()> = c.set(&key, seq).await;
            match result {
                Ok(()) => {
                    let ack = Ack {
                        writer: site,
                        node: *node,
                        key,
                        sent,
                        at: history.now(),
                    };
                    history.lock().acks.push(ack);
                }
                Err(e) => {
                    history.lock().failed_writes += 1;
                    // An error reply (READONLY) leaves the connection usable; anything
                    // else (timeout, reset) may leave it in an unknown state.
                    if e.code().is_none() {
                        conn = None;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(WRITE_INTERVAL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// A connection to a Redis (or a sentinel, without password) at `host:port`.
pub async fn connect(
    addr: &str,
    password: Option<&str>,
    timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let auth = password.map_or(String::new(), |p| format!(":{p}@"));
    let client = redis::Client::open(format!("redis://{auth}{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Keep `target` on the node an agent reports `is_master` for (highest epoch wins). When
/// no reachable agent claims it, keep the last target: a client cut off with an old master
/// keeps writing to it, which is exactly what fencing must withstand.
async fn discover(
    site: Site,
    api: ApiClient,
    target: watch::Sender<Option<Site>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let views = query_all(&api, Some(site)).await;
        let claimed = views
            .iter()
            .flatten()
            .filter(|v| v.is_master)
            .max_by_key(|v| v.epoch)
            .and_then(|v| Site::from_name(&v.name));
        let committed = views
            .iter()
            .flatten()
            .max_by_key(|v| v.epoch)
            .and_then(|v| v.master.as_deref())
            .and_then(Site::from_name);
        let current = *target.borrow();
        let next = claimed.or(current).or(committed);
        if next != current {
            target.send_replace(next);
        }
        tokio::select! {
            _ = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// `/state` of all three agents at once, as seen from `from` (`None`: the client namespace).
pub async fn query_all(api: &ApiClient, from: Option<Site>) -> [Option<StateView>; 3] {
    let ask = |to: Site| {
        let addr = addr_from(from, to, API_PORT);
        async move { api.state(&addr).await.ok() }
    };
    let (a, b, c) = tokio::join!(ask(Site::A), ask(Site::B), ask(Site::C));
    [a, b, c]
}

/// Sample every site from the client namespace until `stop`.
pub async fn poller(history: Arc<History>, observe: Observe, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let at = history.now();
        let views = observe.samples().await;
        history.lock().rounds.push(Round { at, views });
        let next = at + POLL_INTERVAL;
        tokio::select! {
            _ = tokio::time::sleep(next.saturating_sub(history.now())) => {}
            _ = stop.changed() => {}
        }
    }
}

/// How the observer and the writers learn who the master is: our agents' `/state`, or the
/// sentinels (plus each Redis's own `INFO replication`).
#[derive(Clone)]
pub enum Observe {
    Agents {
        api: ApiClient,
        redis_password: Option<String>,
    },
    Sentinels {
        redis_password: Option<String>,
    },
}

impl Observe {
    pub fn redis_password(&self) -> Option<&str> {
        match self {
            Observe::Agents { redis_password, .. } | Observe::Sentinels { redis_password } => {
                redis_password.as_deref()
            }
        }
    }

    /// One sample per site, asked from the client namespace.
    pub async fn samples(&self) -> [Option<Sample>; 3] {
        match self {
            Observe::Agents { api, .. } => query_all(api, None)
                .await
                .map(|v| v.as_ref().map(Sample::from)),
            Observe::Sentinels { redis_password } => {
                let pw = redis_password.as_deref();
                let (a, b, c) = tokio::join!(
                    sentinel_sample(Site::A, pw),
                    sentinel_sample(Site::B, pw),
                    sentinel_sample(Site::C, pw)
                );
                [a, b, c]
            }
        }
    }
}

/// A sentinel's view of the master: its site and its `config-epoch` (plus one); `None` while
/// it does not answer or is in the middle of a failover.
pub async fn sentinel_master(addr: &str) -> Option<(Site, u64)> {
    let mut conn = connect(addr, None, QUERY_TIMEOUT).await.ok()?;
    let fields: HashMap<String, String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(MASTER_NAME)
        .query_async(&mut conn)
        .await
        .ok()?;
    // Mid-failover a sentinel already carries the new epoch but still names the old
    // master: that is no settled view, like an agent that does not answer.
    if fields
        .get("flags")
        .is_some_and(|f| f.contains("failover_in_progress"))
    {
        return None;
    }
    let site = Site::of_ip(fields.get("ip")?.parse().ok()?)?;
    // Sentinel starts at config-epoch 0, ours at epoch 1: shifted so the checker counts
    // the first failover of both alike.
    let epoch = fields.get("config-epoch")?.parse::<u64>().ok()? + 1;
    Some((site, epoch))
}

/// `INFO replication` of a Redis, as field/value pairs.
pub async fn replication_info(
    addr: &str,
    password: Option<&str>,
) -> Option<HashMap<String, String>> {
    let mut conn = connect(addr, password, QUERY_TIMEOUT).await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(
        info.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// A site's sample under Sentinel, shaped like an agent's: the epoch and master its sentinel
/// names, and what its own Redis says (role; for a replica, a live link to that master).
/// `None` when the site's sentinel does not answer, as for a silent agent.
async fn sentinel_sample(site: Site, password: Option<&str>) -> Option<Sample> {
    let sentinel = addr_from(None, site, SENTINEL_PORT);
    let redis = addr_from(None, site, REDIS_PORT);
    let (master, info) = tokio::join!(sentinel_master(&sentinel), async {
        if site.is_data() {
            replication_info(&redis, password).await
        } else {
            None
        }
    });
    let (master, epoch) = master?;
    let role = match info
        .as_ref()
        .and_then(|i| i.get("role"))
        .map(String::as_str)
    {
        _ if !site.is_data() => "witness",
        Some("master") => "master",
        Some("slave") => "replica",
        _ => "down",
    };
    let link_up = (role == "replica").then(|| {
        info.as_ref().is_some_and(|i| {
            i.get("master_link_status").map(String::as_str) == Some("up")
                && i.get("master_host").map(String::as_str) == Some(&master.wan().to_string())
        })
    });
    Some(Sample {
        epoch,
        master: Some(master.name().to_string()),
        is_master: role == "master" && master == site,
        role: role.to_string(),
        fenced: false,
        link_up,
        raft_state: String::new(),
        raft_leader: None,
        recovering: false,
    })
}

/// Keep `target` on the master the sentinels name, as a client library configured with
/// all three sentinels would: the answer of at least two, else the own site's sentinel,
/// else any answer; with no answer at all, keep the last target.
async fn discover_sentinel(
    site: Site,
    target: watch::Sender<Option<Site>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let ask = |to: Site| async move {
            let addr = addr_from(Some(site), to, SENTINEL_PORT);
            let mut conn = connect(&addr, None, QUERY_TIMEOUT).await.ok()?;
            let answer: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query_async(&mut conn)
                .await
                .ok()?;
            Site::of_ip(answer?.0.parse().ok()?)
        };
        let (a, b, c) = tokio::join!(ask(Site::A), ask(Site::B), ask(Site::C));
        let answers = [a, b, c];
        let agreed = Site::DATA
            .into_iter()
            .find(|s| answers.iter().filter(|a| **a == Some(*s)).count() >= 2);
        let next = agreed
            .or(answers[site.index()])
            .or(answers.iter().flatten().next().copied())
            .or(*target.borrow());
        if next != *target.borrow() {
            target.send_replace(next);
        }
        tokio::select! {
            _ = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
            _ = stop.changed() => {}
        }
    }
}
