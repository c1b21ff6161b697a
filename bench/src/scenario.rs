//! One run of each scenario, on a fresh cluster each time.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::discovery::Discovery;
use crate::ours::{OursCluster, Timing};
use crate::phases;
use crate::procs::{Proc, ServerCommand, clock_ticks_per_second, redis_connect, signal};
use crate::report::{OURS, Record, SENTINEL};
use crate::sentinel::{SentinelCluster, SentinelTiming};
use crate::writer::{Ack, Watcher, Writer, first_new_master, key};

/// How long a cluster may take to elect and sync its first master.
const SETTLE: Duration = Duration::from_secs(60);
/// Writing goes on this long after the first write on the new master.
const TAIL: Duration = Duration::from_millis(300);
/// Idle clusters get this long after settling before CPU is measured.
const IDLE_SETTLE: Duration = Duration::from_secs(2);

pub const WRITE_UNAVAILABLE: &str = "write unavailability ms";
pub const FIRST_NEW_ACK: &str = "failure to new ack ms";
pub const DISCOVERY: &str = "discovery ms";
pub const LOST: &str = "lost acks";
pub const OLD_ACKS: &str = "acks on old after event";
pub const SWITCHOVER_REPLY: &str = "switchover reply ms";
/// Where our failover's time goes (from the agents' logs): the failed master's agent sees
/// its Redis down, the coordinator decides, the commit, the promotion, and the writer's
/// rediscovery up to its first acknowledged write on the new master.
pub const SEEN: &str = "where 0 seen ms";
pub const DETECT: &str = "where 1 detect ms";
pub const COMMIT: &str = "where 2 commit ms";
pub const PROMOTE: &str = "where 3 promote ms";
pub const CLIENT: &str = "where 4 client ms";
pub const PEAK_RSS: &str = "peak RSS MiB";
pub const RSS: &str = "RSS MiB";
pub const ANON_RSS: &str = "anon RSS MiB";
pub const CPU: &str = "CPU %";
pub const BINARY: &str = "size MiB";
/// The role of the Raft leader in the footprint and scaling records.
pub const COORDINATOR: &str = "coordinator";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// SIGKILL the master's redis-server.
    Kill,
    /// SIGSTOP the master's redis-server (and, for ours, its agent).
    HostLoss,
    /// Planned switchover: `POST /switchover` / `SENTINEL FAILOVER`.
    Switchover,
    /// Idle RSS and CPU of each agent and sentinel; binary size.
    Footprint,
    /// Idle CPU and RSS of our agents (the coordinator apart) and the kill failover time,
    /// with more data nodes.
    Scaling,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::HostLoss => "host-loss",
            Scenario::Switchover => "switchover",
            Scenario::Footprint => "footprint",
            Scenario::Scaling => "scaling",
        }
    }
}

/// A system under test in one configuration.
#[derive(Clone, Debug)]
pub enum System {
    Ours(Timing),
    Sentinel(SentinelTiming),
}

impl System {
    pub fn name(&self) -> &'static str {
        match self {
            System::Ours(_) => OURS,
            System::Sentinel(_) => SENTINEL,
        }
    }

    pub fn config(&self) -> &str {
        match self {
            System::Ours(t) => &t.label,
            System::Sentinel(t) => &t.label,
        }
    }

    pub fn variant(&self) -> Option<&str> {
        match self {
            System::Ours(t) => t.variant.as_deref(),
            System::Sentinel(t) => t.variant.as_deref(),
        }
    }

    /// `ours-1s`, `ours-defaults-5s`: names a run directory.
    pub fn slug(&self) -> String {
        let variant = self
            .variant()
            .map(|v| format!("{}-", v.replace(' ', "-")))
            .unwrap_or_default();
        format!("{}-{variant}{}", self.name(), self.config())
    }

    /// A record of one run of this system.
    pub fn record(&self, scenario: &str, run: usize) -> Record {
        Record {
            variant: self.variant().map(str::to_string),
            ..Record::new(scenario, self.name(), self.config(), run)
        }
    }

    fn detection(&self) -> Duration {
        match self {
            System::Ours(t) => t.down_after,
            System::Sentinel(t) => t.detection(),
        }
    }
}

/// What every run needs to know.
#[derive(Clone, Debug)]
pub struct RunContext {
    pub agent_bin: std::path::PathBuf,
    /// Bound on every Redis connect and answer of the writer, and every discovery request.
    pub io_timeout: Duration,
    /// Writing before the failure is injected.
    pub warmup: Duration,
    pub idle_window: Duration,
    /// The server binary and extra arguments for every Redis of both systems.
    pub server: ServerCommand,
}

enum Cluster {
    Ours(OursCluster),
    Sentinel(SentinelCluster),
}

impl Cluster {
    /// Two data nodes, as both systems run in the failover and footprint scenarios.
    async fn start(system: &System, ctx: &RunContext, dir: &Path) -> Result<Cluster> {
        Ok(match system {
            System::Ours(timing) => Cluster::Ours(
                OursCluster::start(&ctx.agent_bin, 2, timing, dir, ctx.io_timeout, &ctx.server)
                    .await?,
            ),
            System::Sentinel(timing) => Cluster::Sentinel(
                SentinelCluster::start(timing, dir, ctx.io_timeout, &ctx.server).await?,
            ),
        })
    }

    /// Ours: the coordinator's name.
    async fn wait_ready(&mut self) -> Result<Option<String>> {
        match self {
            Cluster::Ours(c) => c.wait_ready(SETTLE).await.map(Some),
            Cluster::Sentinel(c) => c.wait_ready(SETTLE).await.map(|()| None),
        }
    }

    fn discovery(&self) -> Discovery {
        match self {
            Cluster::Ours(c) => c.discovery(),
            Cluster::Sentinel(c) => c.discovery(),
        }
    }

    fn kill_redis(&mut self, addr: &str) -> Result<()> {
        let proc = match self {
            Cluster::Ours(c) => c
                .node_by_redis(addr)?
                .redis
                .as_mut()
                .ok_or_else(|| anyhow!("no redis-server at {addr}"))?,
            Cluster::Sentinel(c) => &mut c.node_by_addr(addr)?.proc,
        };
        proc.kill()
    }

    /// The processes that go silent when the master's host is lost.
    fn host_pids(&mut self, addr: &str) -> Result<Vec<u32>> {
        Ok(match self {
            Cluster::Ours(c) => {
                let node = c.node_by_redis(addr)?;
                node.redis
                    .iter()
                    .map(|r| r.pid)
                    .chain(std::iter::once(node.agent.pid))
                    .collect()
            }
            Cluster::Sentinel(c) => vec![c.node_by_addr(addr)?.proc.pid],
        })
    }

    /// The redis address of a data node other than `addr`.
    fn other_redis(&self, addr: &str) -> Option<String> {
        match self {
            Cluster::Ours(c) => c
                .data_nodes()
                .filter_map(|n| n.redis_addr.clone())
                .find(|a| a != addr),
            Cluster::Sentinel(c) => c.redis.iter().map(|n| n.addr.clone()).find(|a| a != addr),
        }
    }

    /// The orchestration processes (agents, sentinels) with their roles.
    /// Every control process with its role; ours' Raft leader as [`COORDINATOR`] when
    /// `leader` names it (it alone sends heartbeats and answers reports).
    fn watched(&self, leader: Option<&str>) -> Vec<(&'static str, &Proc)> {
        match self {
            Cluster::Ours(c) => c
                .nodes
                .iter()
                .map(|n| {
                    let role = if Some(n.name.as_str()) == leader {
                        COORDINATOR
                    } else if n.redis_addr.is_some() {
                        "data agent"
                    } else {
                        "witness"
                    };
                    (role, &n.agent)
                })
                .collect(),
            Cluster::Sentinel(c) => c.sentinels.iter().map(|(_, p)| ("sentinel", p)).collect(),
        }
    }
}

/// Maps monotonic instants to UTC wall-clock time (as the agents and Redis log it).
struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    fn now() -> WallClock {
        WallClock {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    fn system(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.system + after,
            None => self.system - self.instant.duration_since(at),
        }
    }

    fn format(&self, at: Instant) -> String {
        humantime::format_rfc3339_millis(self.system(at)).to_string()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A run's figures, plus the peak RSS of each orchestration process.
pub struct FailoverOutcome {
    pub run: Record,
    pub peak_rss: Vec<Record>,
    /// Wall-clock times of the event and of the first write acknowledged by the new master.
    pub event: SystemTime,
    pub first_new: SystemTime,
}

/// One failover run: settle, write, inject `scenario`, wait for writes on a new master,
/// then count acknowledged writes missing from it.
pub async fn failover_run(
    scenario: Scenario,
    system: &System,
    ctx: &RunContext,
    run: usize,
    dir: &Path,
) -> Result<FailoverOutcome> {
    let mut cluster = Cluster::start(system, ctx, dir).await?;
    cluster.wait_ready().await?;
    let mut outcome = failover(&mut cluster, scenario, system, ctx, run, true).await?;
    if let Cluster::Ours(_) = cluster {
        let m = phases::moments(dir, outcome.event);
        let span = |from: Option<SystemTime>, to: Option<SystemTime>| {
            to?.duration_since(from?).ok().map(ms)
        };
        let event = Some(outcome.event);
        // Only a kill is seen by the failed master's own agent (a stopped one logs its
        // Redis down once it runs again, long after).
        let seen = m.seen.filter(|_| scenario == Scenario::Kill);
        for (metric, value) in [
            (SEEN, span(event, seen)),
            (DETECT, span(event, m.decided)),
            (COMMIT, span(m.decided, m.committed)),
            (PROMOTE, span(m.committed, m.promoted)),
            (CLIENT, span(m.promoted, Some(outcome.first_new))),
        ] {
            if let Some(value) = value {
                outcome.run.metrics.insert(metric.into(), value);
            }
        }
    }
    Ok(outcome)
}

/// Inject `scenario` into a settled cluster and measure. `watch` polls every discovery
/// source on its own for the discovery time; the scaling runs leave it out, as that
/// client load grows with the cluster and would weigh on the agents it measures.
async fn failover(
    cluster: &mut Cluster,
    scenario: Scenario,
    system: &System,
    ctx: &RunContext,
    run: usize,
    watch: bool,
) -> Result<FailoverOutcome> {
    let discovery = cluster.discovery();
    let watcher = watch.then(|| Watcher::start(&discovery));
    let writer = Writer::start(discovery, ctx.io_timeout);
    tokio::time::sleep(ctx.warmup).await;
    let old = writer
        .last_ack()
        .ok_or_else(|| anyhow!("no write acknowledged during the warm-up"))?
        .node;

    let mut stopped = Vec::new();
    let mut switchover = None;
    let event_at = match scenario {
        Scenario::Kill => {
            let at = Instant::now();
            cluster.kill_redis(&old)?;
            at
        }
        Scenario::HostLoss => {
            let pids = cluster.host_pids(&old)?;
            let at = Instant::now();
            signal("STOP", &pids).await?;
            stopped = pids;
            at
        }
        Scenario::Switchover => {
            let to = cluster
                .other_redis(&old)
                .ok_or_else(|| anyhow!("no replica to switch over to"))?;
            let at = Instant::now();
            match &*cluster {
                Cluster::Ours(c) => {
                    // Answers only once the new master is committed: wait for it aside.
                    let timeout = system.detection() * 2 + Duration::from_secs(20);
                    let reply = c.switchover(&to, timeout)?;
                    let started = Instant::now();
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let result = async move {
                        let outcome = reply.await.map(|_| started.elapsed());
                        let _ = tx.send(outcome);
                    };
                    tokio::spawn(result);
                    switchover = Some(rx);
                }
                Cluster::Sentinel(c) => c.failover().await?,
            }
            at
        }
        Scenario::Footprint | Scenario::Scaling => bail!("{scenario:?} is not a failover"),
    };

    // Long enough for a replica's Redis to notice a silent master on its own (its default
    // `repl-timeout` is 60 s), so a system that waits for that is measured, not failed.
    let deadline = event_at + system.detection() * 4 + Duration::from_secs(80);
    let first_new = loop {
        if let Some(ack) = writer.first_ack_elsewhere(event_at, &old) {
            break ack;
        }
        if Instant::now() >= deadline {
            bail!(
                "no write acknowledged by a new master within {:?} of the {}",
                deadline - event_at,
                scenario.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(TAIL).await;
    let log = writer.finish().await;
    let sightings = match watcher {
        Some(w) => Some(w.finish().await),
        None => None,
    };
    signal("CONT", &stopped).await?;

    let mut record = system.record(scenario.name(), run);
    if let Some(reply) = switchover {
        let took = reply
            .await
            .context("switchover request task")?
            .context("POST /switchover")?;
        record = record.metric(SWITCHOVER_REPLY, ms(took));
    }
    let position = log
        .acks
        .iter()
        .position(|a| a.seq == first_new.seq)
        .ok_or_else(|| anyhow!("the first new-master write is missing from the log"))?;
    let last_before = position
        .checked_sub(1)
        .and_then(|i| log.acks.get(i))
        .ok_or_else(|| anyhow!("no write acknowledged before the failure"))?;
    let discovered = sightings
        .map(|s| {
            first_new_master(&s, event_at, &old)
                .ok_or_else(|| anyhow!("discovery never named a new master"))
        })
        .transpose()?;
    let final_master = log
        .acks
        .last()
        .map_or(first_new.node.clone(), |a| a.node.clone());
    let lost = count_missing(&final_master, &log.acks).await?;
    let old_after = log
        .acks
        .iter()
        .filter(|a| a.node == old && a.at > event_at)
        .count();
    record = record
        .metric(
            WRITE_UNAVAILABLE,
            ms(first_new.at.duration_since(last_before.at)),
        )
        .metric(FIRST_NEW_ACK, ms(first_new.at.duration_since(event_at)))
        .metric(LOST, lost as f64)
        .metric(OLD_ACKS, old_after as f64);
    if let Some(at) = discovered {
        record = record.metric(DISCOVERY, ms(at.duration_since(event_at)));
    }
    // Wall-clock times, to lay the run beside the agents' and sentinels' logs.
    let clock = WallClock::now();
    for (what, at) in [
        ("last ack before", Some(last_before.at)),
        ("event", Some(event_at)),
        ("discovery", discovered),
        ("first new ack", Some(first_new.at)),
    ] {
        if let Some(at) = at {
            record.timeline.insert(what.into(), clock.format(at));
        }
    }

    let peak_rss = cluster
        .watched(None)
        .into_iter()
        .filter_map(|(role, proc)| {
            proc.peak_rss_kib().map(|kib| {
                Record::new("footprint", system.name(), "failover loop", run)
                    .with_role(role, &proc.label)
                    .metric(PEAK_RSS, mib(kib))
            })
        })
        .collect();
    Ok(FailoverOutcome {
        run: record,
        peak_rss,
        event: clock.system(event_at),
        first_new: clock.system(first_new.at),
    })
}

/// How many acknowledged keys the Redis at `addr` does not have.
async fn count_missing(addr: &str, acks: &[Ack]) -> Result<u64> {
    let mut conn = redis_connect(addr, Duration::from_secs(5))
        .await
        .with_context(|| format!("connect to the final master {addr}"))?;
    let mut missing = 0;
    for chunk in acks.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|a| key(a.seq)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .context("MGET on the final master")?;
        missing += values.iter().filter(|v| v.is_none()).count() as u64;
    }
    Ok(missing)
}

/// One process over an idle window.
struct IdleSample {
    role: String,
    label: String,
    /// Percent of one core.
    cpu: f64,
    rss: f64,
    /// The private part of `rss`: heap and stacks, not the shared binary and libraries.
    anon: f64,
}

impl IdleSample {
    fn record(&self, scenario: &str, system: &str, config: &str, run: usize) -> Record {
        Record::new(scenario, system, config, run)
            .with_role(&self.role, &self.label)
            .metric(RSS, self.rss)
            .metric(ANON_RSS, self.anon)
            .metric(CPU, self.cpu)
    }
}

/// CPU and memory of each process over `window`; fails if one of them exits.
async fn sample_idle(procs: &[(String, &Proc)], window: Duration) -> Result<Vec<IdleSample>> {
    let ticks_per_second = clock_ticks_per_second() as f64;
    let before: Vec<Option<u64>> = procs.iter().map(|(_, p)| p.cpu_ticks()).collect();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    procs
        .iter()
        .zip(before)
        .map(|((role, p), t0)| {
            let sample = (|| {
                let used = p.cpu_ticks()?.checked_sub(t0?)? as f64 / ticks_per_second;
                Some(IdleSample {
                    role: role.clone(),
                    label: p.label.clone(),
                    cpu: used / elapsed * 100.0,
                    rss: mib(p.rss_kib()?),
                    anon: mib(p.anon_rss_kib()?),
                })
            })();
            sample.ok_or_else(|| anyhow!("{} exited during the idle window", p.label))
        })
        .collect()
}

/// Idle footprint of both systems side by side, at their default settings.
pub async fn footprint_run(ctx: &RunContext, run: usize, dir: &Path) -> Result<Vec<Record>> {
    let ours = System::Ours(Timing::defaults());
    let sentinel = System::Sentinel(SentinelTiming::defaults());
    let mut a = Cluster::start(&ours, ctx, &dir.join("ours")).await?;
    let mut b = Cluster::start(&sentinel, ctx, &dir.join("sentinel")).await?;
    let leader = a.wait_ready().await?;
    b.wait_ready().await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let mut procs: Vec<(String, &Proc)> = Vec::new();
    let mut systems = Vec::new();
    for cluster in [&a, &b] {
        for (role, proc) in cluster.watched(leader.as_deref()) {
            procs.push((role.to_string(), proc));
            systems.push(match cluster {
                Cluster::Ours(_) => OURS,
                Cluster::Sentinel(_) => SENTINEL,
            });
        }
    }
    let samples = sample_idle(&procs, ctx.idle_window).await?;
    Ok(samples
        .iter()
        .zip(systems)
        .map(|(sample, system)| sample.record("footprint", system, "idle (defaults)", run))
        .collect())
}

/// Size of both binaries (Sentinel is the server binary in sentinel mode).
pub fn binary_sizes(agent_bin: &Path, server: &ServerCommand) -> Result<Vec<Record>> {
    let size = |p: &Path| -> Result<f64> {
        let meta = std::fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
        Ok(mib(meta.len() / 1024))
    };
    let sentinel = server.resolved()?;
    Ok(vec![
        Record::new("footprint", OURS, "binary", 0).metric(BINARY, size(agent_bin)?),
        Record::new("footprint", SENTINEL, "binary", 0).metric(BINARY, size(&sentinel)?),
    ])
}

/// Idle CPU and RSS of every agent in a cluster of `data_nodes` data nodes and a witness
/// at the defaults, then the time from SIGKILLing the master's Redis to the first write
/// acknowledged by the new master, in the same cluster.
pub async fn scaling_run(
    ctx: &RunContext,
    data_nodes: usize,
    run: usize,
    dir: &Path,
) -> Result<Vec<Record>> {
    let system = System::Ours(Timing::defaults());
    let mut cluster = Cluster::Ours(
        OursCluster::start(
            &ctx.agent_bin,
            data_nodes,
            &Timing::defaults(),
            dir,
            ctx.io_timeout,
            &ctx.server,
        )
        .await?,
    );
    let leader = cluster.wait_ready().await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let config = scaling_config(data_nodes);
    let mut records: Vec<Record> = {
        let Cluster::Ours(ours) = &cluster else {
            bail!("the scaling scenario runs ours only");
        };
        let procs: Vec<(String, &Proc)> = ours
            .nodes
            .iter()
            .map(|n| {
                let role = if Some(&n.name) == leader.as_ref() {
                    COORDINATOR
                } else if n.redis_addr.is_some() {
                    "data agent"
                } else {
                    "witness"
                };
                (role.to_string(), &n.agent)
            })
            .collect();
        let samples = sample_idle(&procs, ctx.idle_window).await?;
        samples
            .iter()
            .map(|sample| sample.record("scaling", OURS, &config, run))
            .collect()
    };
    let outcome = failover(&mut cluster, Scenario::Kill, &system, ctx, run, false).await?;
    let took = outcome
        .run
        .metrics
        .get(FIRST_NEW_ACK)
        .copied()
        .ok_or_else(|| anyhow!("the kill run measured no failover time"))?;
    records.push(Record::new("scaling", OURS, &config, run).metric(FIRST_NEW_ACK, took));
    Ok(records)
}

/// The config column of a scaling record: `4 data nodes`.
pub fn scaling_config(data_nodes: usize) -> String {
    format!("{data_nodes} data nodes")
}
