//! Workload and observation: one writer per site and a poller of every agent's `/state`,
//! all recording into one [`History`] on one monotonic clock (they are threads of one
//! process, whatever namespace each thread sits in).

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

/// Pause between two writes of one writer.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);
/// Connect and response bound of a write: a fenced master holds writes, and the writer
/// must notice within a fraction of `--lease`.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a writer asks the agents who the master is.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(200);
/// How often the poller samples every agent.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

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
    api: ApiClient,
    mut stop: watch::Receiver<bool>,
) {
    let (target_tx, target_rx) = watch::channel(None);
    tokio::spawn(discover(site, api, target_tx, stop.clone()));
    let mut conn: Option<(Site, MultiplexedConnection)> = None;
    let mut seq: u64 = 0;
    while !*stop.borrow() {
        let target = *target_rx.borrow();
        if let Some(node) = target
            && conn.as_ref().is_none_or(|(n, _)| *n != node)
        {
            conn = connect(&addr_from(Some(site), node, REDIS_PORT))
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

async fn connect(addr: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(WRITE_TIMEOUT))
        .set_response_timeout(Some(WRITE_TIMEOUT));
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

/// Sample every agent from the client namespace until `stop`.
pub async fn poller(history: Arc<History>, api: ApiClient, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let at = history.now();
        let views = query_all(&api, None)
            .await
            .map(|v| v.as_ref().map(Sample::from));
        history.lock().rounds.push(Round { at, views });
        let next = at + POLL_INTERVAL;
        tokio::select! {
            _ = tokio::time::sleep(next.saturating_sub(history.now())) => {}
            _ = stop.changed() => {}
        }
    }
}
