//! Redis Sentinel under test: the same two redis-servers (the second a replica of the
//! first) and three `redis-sentinel` processes with quorum 2, all on 127.0.0.1.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::discovery::{Discovery, MASTER_NAME};
use crate::procs::{Proc, ServerCommand, free_port, redis_connect, spawn_redis, wait_redis};

pub const SENTINELS: usize = 3;
pub const QUORUM: usize = 2;

/// Sentinel settings for one configuration.
#[derive(Clone, Debug)]
pub struct SentinelTiming {
    pub label: String,
    pub variant: Option<String>,
    /// `down-after-milliseconds`; `None` keeps Sentinel's default (30 s).
    pub down_after: Option<Duration>,
}

impl SentinelTiming {
    pub fn equal(d: Duration) -> SentinelTiming {
        SentinelTiming {
            label: redis_orchestrator::duration::format(d),
            variant: None,
            down_after: Some(d),
        }
    }

    pub fn defaults() -> SentinelTiming {
        SentinelTiming {
            label: "30s".into(),
            variant: Some("defaults".into()),
            down_after: None,
        }
    }

    /// The detection timeout in force.
    pub fn detection(&self) -> Duration {
        self.down_after.unwrap_or(Duration::from_secs(30))
    }

    /// `failover-timeout`: ten times the detection timeout, at least 10 s. It bounds a
    /// failover attempt and spaces retries; nothing in a healthy failover waits for it.
    fn failover_timeout(&self) -> Option<Duration> {
        self.down_after
            .map(|d| (d * 10).max(Duration::from_secs(10)))
    }

    fn config(&self, port: u16, master_port: u16, dir: &Path) -> String {
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir \"{}\"\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir.display()
        );
        if let Some(d) = self.down_after {
            conf.push_str(&format!(
                "sentinel down-after-milliseconds {MASTER_NAME} {}\n",
                d.as_millis()
            ));
        }
        if let Some(t) = self.failover_timeout() {
            conf.push_str(&format!(
                "sentinel failover-timeout {MASTER_NAME} {}\n",
                t.as_millis()
            ));
        }
        conf
    }
}

pub struct RedisNode {
    pub addr: String,
    pub proc: Proc,
}

pub struct SentinelCluster {
    pub redis: Vec<RedisNode>,
    pub sentinels: Vec<(String, Proc)>,
    pub io_timeout: Duration,
}

impl SentinelCluster {
    pub async fn start(
        timing: &SentinelTiming,
        dir: &Path,
        io_timeout: Duration,
        server: &ServerCommand,
    ) -> Result<SentinelCluster> {
        let master_port = free_port()?;
        let replica_port = free_port()?;
        let mut redis = Vec::new();
        for (name, port, replicaof) in [
            ("data-1", master_port, None),
            ("data-2", replica_port, Some(master_port)),
        ] {
            let proc = spawn_redis(
                &format!("{name} redis"),
                port,
                &dir.join(name),
                replicaof,
                server,
            )?;
            redis.push(RedisNode {
                addr: format!("127.0.0.1:{port}"),
                proc,
            });
        }
        for node in &redis {
            wait_redis(&node.addr, Duration::from_secs(10)).await?;
        }
        let mut sentinels = Vec::new();
        for i in 1..=SENTINELS {
            let port = free_port()?;
            let sdir = dir.join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&sdir)?;
            // Sentinel rewrites its config file, so each gets its own writable copy.
            let conf = sdir.join("sentinel.conf");
            std::fs::write(&conf, timing.config(port, master_port, &sdir))
                .with_context(|| format!("write {}", conf.display()))?;
            let cmd = server.sentinel(&conf);
            let proc = Proc::spawn(format!("sentinel-{i}"), cmd, &sdir.join("sentinel.log"))?;
            sentinels.push((format!("127.0.0.1:{port}"), proc));
        }
        Ok(SentinelCluster {
            redis,
            sentinels,
            io_timeout,
        })
    }

    pub fn discovery(&self) -> Discovery {
        Discovery::sentinel(
            self.sentinels.iter().map(|(a, _)| a.clone()).collect(),
            self.io_timeout,
        )
    }

    pub fn node_by_addr(&mut self, addr: &str) -> Result<&mut RedisNode> {
        match self.redis.iter_mut().find(|n| n.addr == addr) {
            Some(n) => Ok(n),
            None => bail!("no redis-server at {addr}"),
        }
    }

    /// Wait until every sentinel sees the master, its replica with a live link, and both
    /// other sentinels, and the replica itself reports its link up.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for (_, proc) in &mut self.sentinels {
                if proc.exited() {
                    bail!("{} exited; see its sentinel.log", proc.label);
                }
            }
            let mut ready = true;
            let mut why = String::new();
            for (addr, _) in &self.sentinels {
                if let Err(e) = sentinel_ready(addr).await {
                    ready = false;
                    why = format!("{addr}: {e}");
                    break;
                }
            }
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("Sentinel did not settle within {timeout:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `SENTINEL FAILOVER`: Sentinel answers at once and promotes the replica on its own.
    pub async fn failover(&self) -> Result<()> {
        let (addr, _) = self
            .sentinels
            .first()
            .context("cluster without sentinels")?;
        let mut conn = redis_connect(addr, Duration::from_secs(2)).await?;
        let _: String = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .context("SENTINEL FAILOVER")?;
        Ok(())
    }
}

async fn sentinel_ready(addr: &str) -> Result<()> {
    let mut conn = redis_connect(addr, Duration::from_secs(1)).await?;
    let master: HashMap<String, String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(MASTER_NAME)
        .query_async(&mut conn)
        .await?;
    let field = |k: &str| master.get(k).map(String::as_str).unwrap_or("");
    if field("flags") != "master" {
        bail!("master flags {:?}", field("flags"));
    }
    if field("num-other-sentinels") != (SENTINELS - 1).to_string() {
        bail!("knows {} other sentinels", field("num-other-sentinels"));
    }
    let replicas: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("REPLICAS")
        .arg(MASTER_NAME)
        .query_async(&mut conn)
        .await?;
    let live = replicas
        .iter()
        .filter(|r| {
            r.get("flags").map(String::as_str) == Some("slave")
                && r.get("master-link-status").map(String::as_str) == Some("ok")
        })
        .count();
    if live < 1 {
        bail!("no replica with a live link yet");
    }
    Ok(())
}
