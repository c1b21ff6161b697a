//! redis-orchestrator under test: N redis-servers, one data agent beside each, and a
//! witness agent, all on 127.0.0.1.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use redis_orchestrator::client::ApiClient;
use redis_orchestrator::duration::format as fmt_duration;
use redis_orchestrator::wire::StateView;
use redis_orchestrator::wire::SwitchoverDone;
use tokio::process::Command;

use crate::discovery::Discovery;
use crate::procs::{Proc, ServerCommand, free_port, spawn_redis, wait_redis};

const SECRET: &str = "bench-shared-secret";

/// Agent flags for one configuration.
#[derive(Clone, Debug)]
pub struct Timing {
    /// The detection timeout (`--down-after`), as the table's config column shows it.
    pub label: String,
    /// What sets this configuration apart from equal timeouts, if anything.
    pub variant: Option<String>,
    pub args: Vec<String>,
    /// `--down-after` (silent agent or unreachable Redis).
    pub down_after: Duration,
}

impl Timing {
    /// The agent's defaults: `--down-after 5s`, `--redis-down-after 50ms`, probe 200 ms.
    pub fn defaults() -> Timing {
        Timing {
            label: "5s".into(),
            variant: Some("defaults".into()),
            args: Vec::new(),
            down_after: Duration::from_secs(5),
        }
    }

    /// `--down-after d` with the timings of [`Timing::equal`], but the default
    /// `--redis-down-after` (50 ms): a Redis refusing connections is dead, not slow.
    pub fn equal_fast_crash(d: Duration) -> Timing {
        let mut timing = Timing::equal(d);
        timing
            .args
            .retain(|a| !a.starts_with("--redis-down-after="));
        timing.variant = Some("redis-down-after 50ms".into());
        timing
    }

    /// Every detection timeout equal to `d` (`--down-after` and `--redis-down-after`),
    /// with the other timings scaled to pass the agent's validation:
    /// probe `min(d/20, 200ms)`, heartbeat `min(d/20, 250ms)`, election timeout
    /// `min(d/10, 500ms)`, lease `0.7·d`. Then lease < down-after by 0.3·d ≥ 4 heartbeats,
    /// and lease > 4 × election + heartbeat + probe (0.7·d > 0.5·d). For d = 1 s: probe
    /// 50 ms, heartbeat 50 ms, election 100 ms, lease 700 ms; for d = 5 s: probe 200 ms,
    /// heartbeat 250 ms, election 500 ms (the defaults) and lease 3.5 s.
    pub fn equal(d: Duration) -> Timing {
        let probe = (d / 20).min(Duration::from_millis(200));
        let heartbeat = (d / 20).min(Duration::from_millis(250));
        let election = (d / 10).min(Duration::from_millis(500));
        let lease = d * 7 / 10;
        let flag = |name: &str, value: Duration| format!("--{name}={}", fmt_duration(value));
        Timing {
            label: fmt_duration(d),
            variant: None,
            args: vec![
                flag("down-after", d),
                flag("redis-down-after", d),
                flag("probe-interval", probe),
                flag("raft-heartbeat", heartbeat),
                flag("raft-election-timeout", election),
                flag("lease", lease),
            ],
            down_after: d,
        }
    }
}

/// One agent and, for a data node, its redis-server.
pub struct Node {
    pub name: String,
    pub api_addr: String,
    pub redis_addr: Option<String>,
    pub redis: Option<Proc>,
    pub agent: Proc,
}

pub struct OursCluster {
    /// Data nodes first, the witness last.
    pub nodes: Vec<Node>,
    pub api: ApiClient,
    pub timing: Timing,
}

impl OursCluster {
    /// Start `data_nodes` redis-servers with their agents, and the witness.
    pub async fn start(
        bin: &Path,
        data_nodes: usize,
        timing: &Timing,
        dir: &Path,
        io_timeout: Duration,
        server: &ServerCommand,
    ) -> Result<OursCluster> {
        let names: Vec<String> = (1..=data_nodes)
            .map(|i| format!("data-{i}"))
            .chain(std::iter::once("witness".to_string()))
            .collect();
        let mut ports = Vec::new();
        for _ in &names {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let peers = ports
            .iter()
            .map(|(raft, _, _)| format!("127.0.0.1:{raft}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, (name, (raft, api, redis_port))) in names.iter().zip(&ports).enumerate() {
            let node_dir = dir.join(name);
            std::fs::create_dir_all(&node_dir)?;
            let data = i < data_nodes;
            let redis = if data {
                Some(spawn_redis(
                    &format!("{name} redis"),
                    *redis_port,
                    &node_dir,
                    None,
                    server,
                )?)
            } else {
                None
            };
            let mut cmd = Command::new(bin);
            cmd.arg(format!("--raft-peers={peers}"))
                .arg(format!("--raft-advertise=127.0.0.1:{raft}"))
                .arg(format!("--raft-bind=127.0.0.1:{raft}"))
                .arg(format!("--api-bind=127.0.0.1:{api}"))
                .arg(format!(
                    "--raft-data-dir={}",
                    node_dir.join("raft").display()
                ))
                .arg(format!("--site={name}"))
                .arg(format!("--node-name={name}"))
                .arg("--election-mode=raft")
                .args(&timing.args)
                .env("SHARED_SECRET", SECRET)
                // The agent's own default log level, whatever the caller's environment says.
                .env_remove("RUST_LOG");
            if data {
                cmd.arg("--redis-host=127.0.0.1")
                    .arg(format!("--redis-port={redis_port}"));
            } else {
                cmd.arg("--standalone");
            }
            let agent = Proc::spawn(format!("{name} agent"), cmd, &node_dir.join("agent.log"))?;
            nodes.push(Node {
                name: name.clone(),
                api_addr: format!("127.0.0.1:{api}"),
                redis_addr: data.then(|| format!("127.0.0.1:{redis_port}")),
                redis,
                agent,
            });
        }
        for node in &nodes {
            if let Some(addr) = &node.redis_addr {
                wait_redis(addr, Duration::from_secs(10)).await?;
            }
        }
        let api =
            ApiClient::new(Some(SECRET.as_bytes()), io_timeout).context("build the API client")?;
        Ok(OursCluster {
            nodes,
            api,
            timing: timing.clone(),
        })
    }

    pub fn data_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.redis_addr.is_some())
    }

    pub fn discovery(&self) -> Discovery {
        Discovery::ours(
            self.api.clone(),
            self.data_nodes().map(|n| n.api_addr.clone()).collect(),
        )
    }

    pub fn node_by_redis(&mut self, redis_addr: &str) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.redis_addr.as_deref() == Some(redis_addr))
            .ok_or_else(|| anyhow!("no data node serves {redis_addr}"))
    }

    async fn states(&self) -> Vec<Option<StateView>> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.push(self.api.state(&node.api_addr).await.ok());
        }
        out
    }

    /// Wait until every agent agrees on one master whose Redis is master and every other
    /// data node replicates from it with a live link. Returns the coordinator's name.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            for node in &mut self.nodes {
                if node.agent.exited() {
                    bail!(
                        "{} exited; see its agent.log (is the agent binary current?)",
                        node.agent.label
                    );
                }
            }
            let states = self.states().await;
            if let Some(leader) = settled(&states) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!("redis-orchestrator did not settle within {timeout:?}: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Planned switchover to the data node serving `to`, asked through the witness (which
    /// forwards to the coordinator). The request answers once the new master is committed,
    /// so it is returned as a future the caller can run aside.
    pub fn switchover(
        &self,
        to: &str,
        timeout: Duration,
    ) -> Result<impl Future<Output = Result<SwitchoverDone>> + Send + 'static> {
        let target = self
            .nodes
            .iter()
            .find(|n| n.redis_addr.as_deref() == Some(to))
            .ok_or_else(|| anyhow!("no data node serves {to}"))?
            .name
            .clone();
        let witness = self
            .nodes
            .last()
            .ok_or_else(|| anyhow!("cluster without nodes"))?
            .api_addr
            .clone();
        let api = ApiClient::new(Some(SECRET.as_bytes()), timeout)?;
        Ok(async move {
            Ok(api
                .post(
                    &witness,
                    "/switchover",
                    &serde_json::json!({ "to": target }),
                )
                .await?)
        })
    }
}

/// The coordinator's name if the cluster is settled (see [`OursCluster::wait_ready`]).
fn settled(states: &[Option<StateView>]) -> Option<String> {
    let views: Vec<&StateView> = states.iter().map(Option::as_ref).collect::<Option<_>>()?;
    let first = views.first()?;
    let master = first.master.clone()?;
    let agreed = views
        .iter()
        .all(|v| v.master.as_ref() == Some(&master) && v.epoch == first.epoch);
    let masters: Vec<&&StateView> = views.iter().filter(|v| v.is_master).collect();
    let replicas_ok = views.iter().all(|v| {
        v.is_witness || v.is_master || (v.role == "replica" && v.master_link_up == Some(true))
    });
    let leader = first.raft_leader.clone()?;
    // Up to three voters, the witness takes the Raft leadership over from a data agent
    // (`decide::leadership`): settled means it has.
    let placed = views.len() > 3
        || views
            .iter()
            .any(|v| v.is_witness && v.name == leader && v.raft_state == "Leader");
    (agreed && replicas_ok && placed && masters.len() == 1 && masters[0].name == master)
        .then_some(leader)
}
