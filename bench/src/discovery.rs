//! How a client finds the master, per system under test. Every answer is a Redis
//! address `host:port`.
//!
//! - ours: the data agents' signed `GET /state`; the agent answering `is_master` names
//!   its `redis_addr`;
//! - Sentinel: `SENTINEL get-master-addr-by-name` on each sentinel.
//!
//! Each agent or sentinel is one *source*. A client asks all sources at once and takes
//! the first that names a master, so one silent source costs nothing while another answers.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis_orchestrator::client::ApiClient;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::procs::redis_connect;

/// The Sentinel master name every benchmark cluster monitors.
pub const MASTER_NAME: &str = "mymaster";

#[derive(Clone)]
pub enum Discovery {
    Ours {
        api: ApiClient,
        /// API addresses of the data agents.
        agents: Arc<Vec<String>>,
    },
    Sentinel {
        sentinels: Arc<Vec<SentinelSource>>,
        timeout: Duration,
    },
}

/// One sentinel and a cached connection to it.
pub struct SentinelSource {
    addr: String,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl SentinelSource {
    pub fn new(addr: String) -> SentinelSource {
        SentinelSource {
            addr,
            conn: Mutex::new(None),
        }
    }

    async fn master(&self, timeout: Duration) -> Option<String> {
        let mut conn = {
            let mut cached = self.conn.lock().await;
            match cached.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = redis_connect(&self.addr, timeout).await.ok()?;
                    *cached = Some(c.clone());
                    c
                }
            }
        };
        let answer: redis::RedisResult<Option<(String, String)>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await;
        match answer {
            Ok(addr) => addr.map(|(host, port)| format!("{host}:{port}")),
            Err(_) => {
                *self.conn.lock().await = None;
                None
            }
        }
    }
}

impl Discovery {
    pub fn ours(api: ApiClient, agents: Vec<String>) -> Discovery {
        Discovery::Ours {
            api,
            agents: Arc::new(agents),
        }
    }

    pub fn sentinel(addrs: Vec<String>, timeout: Duration) -> Discovery {
        Discovery::Sentinel {
            sentinels: Arc::new(addrs.into_iter().map(SentinelSource::new).collect()),
            timeout,
        }
    }

    pub fn sources(&self) -> usize {
        match self {
            Discovery::Ours { agents, .. } => agents.len(),
            Discovery::Sentinel { sentinels, .. } => sentinels.len(),
        }
    }

    /// The master that source `i` names right now, if it answers and names one.
    pub async fn ask(&self, i: usize) -> Option<String> {
        match self {
            Discovery::Ours { api, agents } => {
                let state = api.state(agents.get(i)?).await.ok()?;
                state.is_master.then_some(state.redis_addr).flatten()
            }
            Discovery::Sentinel { sentinels, timeout } => sentinels.get(i)?.master(*timeout).await,
        }
    }

    /// Ask every source at once; the first master named wins.
    pub async fn master(&self) -> Option<String> {
        let mut asks = JoinSet::new();
        for i in 0..self.sources() {
            let me = self.clone();
            asks.spawn(async move { me.ask(i).await });
        }
        while let Some(answer) = asks.join_next().await {
            if let Ok(Some(addr)) = answer {
                return Some(addr);
            }
        }
        None
    }
}
