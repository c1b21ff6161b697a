//! The agent runtime: the only place that calls both the pure decisions and the adapters.
//!
//! Three loops run per agent:
//! - **report** (every agent, each `--probe-interval`): probe the local Redis, send a
//!   [`NodeReport`] to the Raft leader, and record confirmed quorum contact from its ack;
//! - **decide** (only while Raft leader): run [`decide`] over the latest reports and commit
//!   its commands to the log;
//! - **reconcile** (data agents, each probe and each committed change): run
//!   [`plan_local`] and apply it to the local Redis.

mod operator;

pub use operator::{OperatorError, SwitchoverDone};

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use openraft::{BasicNode, Config, ServerState};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::auth;
use crate::config::Settings;
use crate::consensus::network::PeerNetwork;
use crate::consensus::state_machine::StateMachineStore;
use crate::consensus::{Raft, open_storage};
use crate::decide::local::{LocalAction, LocalView, plan_local};
use crate::decide::{Policy, ReceivedReport, Reports, decide};
use crate::kube::{ClusterApi, RoleFacts, desired_role_label};
use crate::model::{
    ClusterState, Command, CommandResponse, DownKind, Member, MemberHealth, MemberKind, Millis,
    NodeId, NodeReport, RedisHealth, RedisRole, ReportAck,
};
use crate::redis::RedisNode;
use crate::redis::client::RedisClient;

/// Startup failures; each ends the process with a message naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open Raft storage: {0}")]
    Storage(String),
    #[error("invalid Raft settings: {0}")]
    RaftConfig(String),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the Redis client: {0}")]
    Redis(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// What the coordinator has heard since it became leader.
#[derive(Default)]
struct CoordinatorView {
    /// (term, leader_since) of the current leadership.
    leadership: Option<(u64, Millis)>,
    reports: BTreeMap<NodeId, ReceivedReport>,
    /// (switchover epoch, when this coordinator first saw it committed)
    switchover_seen: Option<(u64, Millis)>,
    last_reason: String,
    last_reason_logged: Option<Millis>,
}

/// What this agent knows about its own Redis and its contact with the cluster.
struct LocalState {
    health: RedisHealth,
    down_since: Option<Millis>,
    last_seen: Option<SystemTime>,
    /// Latest quorum acknowledgement of a coordinator that answered our report, by our clock
    /// (conservatively early: report send time minus the coordinator's quorum-ack age).
    contact_at: Option<Millis>,
    /// True while our Redis may be paused; starts true because a previous run may have paused it.
    fenced: bool,
    last_plan_reason: String,
    /// The master's replication offset as last told by the coordinator.
    master_offset: Option<u64>,
    /// Epoch of the switchover for which this agent paused its master's writes.
    handover_paused_for: Option<u64>,
    /// Up/down and role of the last report sent, to report a change at once.
    last_reported: Option<(bool, Option<RedisRole>)>,
    /// run_id of the Redis process whose replication timeouts we already set.
    tuned_run_id: Option<String>,
    /// The coordinator's member health from its last confirmed ack, and when it came.
    cluster_health: Option<(Millis, BTreeMap<NodeId, MemberHealth>)>,
}

pub struct Agent {
    pub settings: Arc<Settings>,
    pub raft: Raft,
    pub state_machine: StateMachineStore,
    redis: Option<RedisClient>,
    http: reqwest::Client,
    pub verifier: Option<auth::Verifier>,
    started: Instant,
    pub started_wall: SystemTime,
    coordinator: Mutex<CoordinatorView>,
    local: Mutex<LocalState>,
    decide_now: Notify,
    report_rejected_by: Mutex<HashSet<String>>,
    pub metrics: crate::metrics::Metrics,
    /// The Kubernetes API, when running in a cluster.
    pub kube: Option<Arc<dyn ClusterApi>>,
    /// Last Kubernetes error logged per kind of update, so a persisting one is logged once.
    kube_errors: Mutex<BTreeMap<&'static str, String>>,
    /// (epoch, master address, when) of the last master endpoints update.
    endpoints_synced: Mutex<Option<(u64, String, Instant)>>,
}

/// Probe and report period while this node hands over or takes over the master role.
const SWITCHOVER_PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Probe and report period while the local Redis is down, so `--redis-down-after` is
/// measured finely instead of rounded up to the next `--probe-interval`.
const DOWN_PROBE_INTERVAL: Duration = Duration::from_millis(50);

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn millis(d: Duration) -> Millis {
    Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Agent {
    /// Open storage, start Raft and the servers, bootstrap if new, and spawn the loops.
    pub async fn start(
        settings: Settings,
        kube: Option<Arc<dyn ClusterApi>>,
    ) -> Result<Arc<Agent>, StartError> {
        let settings = Arc::new(settings);
        let raft_listener = bind("Raft/peer port", settings.raft_bind).await?;
        let api_listener = bind("API port", settings.api_bind).await?;
        let sentinel_listener = match settings.sentinel_bind {
            Some(addr) => Some(bind("Sentinel endpoint", addr).await?),
            None => None,
        };

        let (log_store, state_machine) = open_storage(&settings.raft_data_dir)
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let election_min =
            u64::try_from(settings.raft_election_timeout.as_millis()).unwrap_or(u64::MAX);
        let config = Config {
            cluster_name: "redis-orchestrator".into(),
            heartbeat_interval: u64::try_from(settings.raft_heartbeat.as_millis())
                .unwrap_or(u64::MAX),
            election_timeout_min: election_min,
            election_timeout_max: election_min.saturating_mul(2),
            // Our snapshots are a few KiB; keep chunks far below the HTTP body limit.
            snapshot_max_chunk_size: 256 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::RaftConfig(e.to_string()))?;

        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| StartError::Http(e.to_string()))?;
        let secret: Option<Arc<[u8]>> = settings.secret.as_deref().map(Arc::from);
        let network = PeerNetwork::with_client(http.clone(), secret);
        let raft = Raft::new(
            settings.me.id,
            Arc::new(config),
            network,
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let redis = match &settings.redis {
            Some(cfg) => {
                Some(RedisClient::new(cfg.clone()).map_err(|e| StartError::Redis(e.to_string()))?)
            }
            None => None,
        };
        let agent = Arc::new(Agent {
            verifier: settings.secret.as_deref().map(auth::Verifier::new),
            settings: settings.clone(),
            raft,
            state_machine,
            redis,
            http,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            coordinator: Mutex::new(CoordinatorView::default()),
            local: Mutex::new(LocalState {
                health: RedisHealth::Down {
                    kind: DownKind::Unreachable,
                    for_ms: 0,
                    error: "not probed yet".into(),
                },
                down_since: None,
                last_seen: None,
                contact_at: None,
                fenced: true,
                last_plan_reason: String::new(),
                master_offset: None,
                handover_paused_for: None,
                last_reported: None,
                tuned_run_id: None,
                cluster_health: None,
            }),
            decide_now: Notify::new(),
            report_rejected_by: Mutex::new(HashSet::new()),
            metrics: crate::metrics::Metrics::new(),
            kube,
            kube_errors: Mutex::new(BTreeMap::new()),
            endpoints_synced: Mutex::new(None),
        });

        crate::http::spawn_servers(agent.clone(), raft_listener, api_listener);
        agent.bootstrap().await;
        tokio::spawn(agent.clone().report_loop());
        tokio::spawn(agent.clone().decide_loop());
        if let Some(listener) = sentinel_listener {
            let first = agent.sentinel_view(&Default::default());
            let (view_tx, view_rx) = watch::channel(first);
            let config = crate::sentinel::SentinelConfig {
                master_name: agent.settings.sentinel_master_name.clone(),
                password: agent.settings.sentinel_password.clone(),
            };
            info!(addr = %agent.settings.sentinel_bind.map_or_else(String::new, |a| a.to_string()), "serving the Sentinel-compatible endpoint");
            tokio::spawn(crate::sentinel::serve(listener, config, view_rx));
            tokio::spawn(agent.clone().feed_sentinel(view_tx));
        }
        Ok(agent)
    }

    /// Every agent initializes with the identical full voter set from `--raft-peers`,
    /// so any start order forms exactly one cluster.
    async fn bootstrap(&self) {
        match self.raft.is_initialized().await {
            Ok(true) => {
                info!("raft state found on disk; rejoining the cluster");
                return;
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "cannot read raft state");
                return;
            }
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .settings
            .peers
            .iter()
            .map(|p| {
                (
                    p.id,
                    BasicNode {
                        addr: p.addr.clone(),
                    },
                )
            })
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => info!(
                voters = self.settings.peers.len(),
                "initialized a new cluster with every --raft-peers entry as voter"
            ),
            Err(e) => debug!(error = %e, "initialize skipped: this node already has a log or vote"),
        }
    }

    pub fn now(&self) -> Millis {
        millis(self.started.elapsed())
    }

    pub fn policy(&self) -> Policy {
        Policy {
            redis_down_after: millis(self.settings.redis_down_after),
            down_after: millis(self.settings.down_after),
            max_lag_bytes: self.settings.max_lag_on_failover,
            switchover_timeout: millis(self.settings.switchover_timeout),
        }
    }

    pub fn member(&self) -> Member {
        let s = &self.settings;
        Member {
            name: s.name.clone(),
            site: s.site.clone(),
            kind: if s.witness {
                MemberKind::Witness
            } else {
                MemberKind::Data
            },
            redis_addr: s.redis_announce.clone(),
            api_addr: s.api_advertise.clone(),
            raft_addr: s.me.addr.clone(),
            priority: s.priority,
            no_promote: s.no_promote,
            sentinel_addr: s.sentinel_announce.clone(),
        }
    }

    pub fn cluster_state(&self) -> ClusterState {
        self.state_machine.current()
    }

    /// How long ago a quorum acknowledged this node as leader; `None` unless leader.
    fn quorum_ack_age(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            m.millis_since_quorum_ack
        } else {
            None
        }
    }

    /// Record a report as coordinator and answer it. Reports reaching a non-leader are not
    /// confirmed, so the sender's lease does not renew.
    pub fn handle_report(&self, report: NodeReport) -> Result<ReportAck, String> {
        let expected = crate::config::node_id(&report.member.raft_addr);
        if report.node != expected {
            return Err(format!(
                "report from {} claims node id {} but its raft address {} has id {expected}",
                report.member.name, report.node, report.member.raft_addr
            ));
        }
        let state = self.cluster_state();
        let quorum_ack_age_ms = self.quorum_ack_age();
        let mut view = lock(&self.coordinator);
        let master_offset = state
            .master
            .and_then(|m| view.reports.get(&m))
            .and_then(|r| r.report.redis.as_ref())
            .and_then(|h| h.status())
            .map(|s| s.repl_offset);
        if quorum_ack_age_ms.is_some() {
            self.metrics
                .reports_received
                .get_or_create(&crate::metrics::PeerLabel {
                    peer: report.member.name.clone(),
                })
                .inc();
            view.reports.insert(
                report.node,
                ReceivedReport {
                    report,
                    received_at: self.now(),
                },
            );
            self.decide_now.notify_one();
        }
        let health = match quorum_ack_age_ms {
            Some(_) => crate::sentinel::health_summary(&view.reports, self.now()),
            None => BTreeMap::new(),
        };
        Ok(ReportAck {
            quorum_ack_age_ms,
            epoch: state.epoch,
            master: state.master,
            master_offset,
            health,
        })
    }

    async fn decide_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.probe_interval / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.decide_now.notified() => {}
            }
            self.decide_once().await;
        }
    }

    /// The coordinator's view for one decision, or `None` when this node is not leader.
    /// Starting or losing leadership resets what was heard before.
    fn coordinator_snapshot(&self, now: Millis) -> Option<(Reports, ClusterState)> {
        let metrics = self.raft.metrics().borrow().clone();
        let mut view = lock(&self.coordinator);
        if metrics.state != ServerState::Leader {
            if view.leadership.take().is_some() {
                info!(
                    term = metrics.current_term,
                    "no longer raft leader: stopped coordinating"
                );
                view.reports.clear();
            }
            return None;
        }
        let leader_since = match view.leadership {
            Some((term, since)) if term == metrics.current_term => since,
            _ => {
                info!(
                    term = metrics.current_term,
                    "raft leader: coordinating failovers from now"
                );
                view.leadership = Some((metrics.current_term, now));
                view.reports.clear();
                now
            }
        };
        let state = self.cluster_state();
        view.switchover_seen = match (&state.switchover, view.switchover_seen) {
            (Some(sw), Some((epoch, since))) if epoch == sw.epoch => Some((epoch, since)),
            (Some(sw), _) => Some((sw.epoch, now)),
            (None, _) => None,
        };
        let reports = Reports {
            leader_since,
            voters: metrics.membership_config.membership().voter_ids().collect(),
            latest: view.reports.clone(),
            switchover_since: view.switchover_seen.map(|(_, since)| since),
        };
        Some((reports, state))
    }

    async fn decide_once(&self) {
        let now = self.now();
        let Some((reports, state)) = self.coordinator_snapshot(now) else {
            return;
        };
        let decision = decide(&state, &reports, &self.policy(), now);
        if decision.commands.is_empty() {
            let mut view = lock(&self.coordinator);
            let repeat_due = view
                .last_reason_logged
                .is_none_or(|at| now.since(at) >= Millis(5_000));
            if decision.reason != view.last_reason && repeat_due {
                info!(reason = %decision.reason, "coordinator");
                view.last_reason_logged = Some(now);
                view.last_reason = decision.reason;
            }
            return;
        }
        info!(reason = %decision.reason, "coordinator decided");
        for command in decision.commands {
            let command = command.stamped(unix_millis());
            match self.raft.client_write(command.clone()).await {
                Ok(resp) => match resp.data {
                    CommandResponse::Applied => {
                        info!(?command, log_index = resp.log_id.index, "committed");
                        if let Command::SetMaster { .. } = command {
                            let kind = match (&state.master, &state.switchover) {
                                (None, _) => "election",
                                (_, Some(_)) => "switchover",
                                _ => "failover",
                            };
                            let seconds = decision
                                .failing_since
                                .map(|since| self.now().since(since).0 as f64 / 1000.0);
                            self.metrics.count_failover(kind, seconds);
                        }
                    }
                    CommandResponse::Rejected(why) => {
                        warn!(?command, %why, "state machine rejected command");
                        break;
                    }
                },
                Err(e) => {
                    warn!(error = %e, ?command, "could not commit");
                    break;
                }
            }
        }
    }

    /// Whether a switchover involving this node is in progress: then probe and report
    /// fast, because clients' writes wait for the hand-over to be committed.
    fn in_switchover(&self) -> bool {
        let me = self.settings.me.id;
        self.cluster_state()
            .switchover
            .is_some_and(|sw| sw.from == me || sw.to == me)
    }

    async fn report_loop(self: Arc<Self>) {
        let interval = if self.redis.is_some() {
            self.settings.probe_interval
        } else {
            // A witness only reports to register and be seen; it has no Redis to watch.
            self.settings.probe_interval.max(Duration::from_secs(1))
        };
        let mut committed = self.state_machine.subscribe();
        let mut next_report = tokio::time::Instant::now();
        loop {
            let period = if self.in_switchover() {
                SWITCHOVER_PROBE_INTERVAL
            } else if self.redis.is_some() && lock(&self.local).down_since.is_some() {
                DOWN_PROBE_INTERVAL.min(interval)
            } else {
                interval
            };
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                changed = committed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            if let Some(redis) = &self.redis {
                self.probe(redis).await;
            }
            // A shorter period (a switchover began, Redis went down) applies at once, not
            // after the deadline set under the longer one.
            next_report = next_report.min(tokio::time::Instant::now() + period);
            // Report every period, and at once when our Redis changed role or went up/down.
            if tokio::time::Instant::now() >= next_report || self.observation_changed() {
                next_report = tokio::time::Instant::now() + period;
                self.report().await;
            }
            if let Some(redis) = &self.redis {
                self.reconcile(redis).await;
            }
            self.sync_master_endpoints().await;
        }
    }

    /// Log a Kubernetes failure once (until it changes or clears); the next cycle retries.
    fn note_kube_result<E: std::fmt::Display>(
        &self,
        what: &'static str,
        result: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) {
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("kubernetes API did not answer in time".to_string()),
        };
        let mut logged = lock(&self.kube_errors);
        match error {
            Some(e) if logged.get(what) != Some(&e) => {
                warn!(update = what, error = %e, "kubernetes update failed; retrying every cycle");
                logged.insert(what, e);
            }
            Some(_) => {}
            None => {
                if logged.remove(what).is_some() {
                    info!(update = what, "kubernetes update succeeds again");
                }
            }
        }
    }

    /// Point the selector-less master Service at the committed master, whichever site it
    /// is in. Resolving and checking happen on a change, and every 30 s to repair drift.
    async fn sync_master_endpoints(&self) {
        let Some(kube) = &self.kube else { return };
        let state = self.cluster_state();
        let Some(addr) = state.master_member().and_then(|m| m.redis_addr.clone()) else {
            return;
        };
        let due = lock(&self.endpoints_synced)
            .as_ref()
            .is_none_or(|(epoch, synced_addr, at)| {
                *epoch != state.epoch
                    || *synced_addr != addr
                    || at.elapsed() >= Duration::from_secs(30)
            });
        if !due {
            return;
        }
        let limit = self.settings.probe_interval.max(Duration::from_secs(1));
        let result = tokio::time::timeout(limit, async {
            let (ip, port) = crate::kube::resolve_redis_addr(&addr).await?;
            kube.ensure_master_endpoints(state.epoch, &ip, port).await
        })
        .await;
        if matches!(result, Ok(Ok(()))) {
            *lock(&self.endpoints_synced) = Some((state.epoch, addr, Instant::now()));
        }
        self.note_kube_result("master endpoints", result);
    }

    fn observation_changed(&self) -> bool {
        let local = lock(&self.local);
        let seen = (
            local.health.status().is_some(),
            local.health.status().map(|s| s.role),
        );
        local.last_reported.is_some_and(|last| last != seen)
    }

    /// Replicas must notice a silent (partitioned) master within seconds: the master's
    /// "no replica sees it" failover rule relies on it, and Redis's default repl-timeout is
    /// 60 s with a ping only every 10 s. Set once per Redis process.
    async fn tune_replication(&self, redis: &RedisClient, run_id: &str) {
        let timeout = Duration::from_secs((self.settings.down_after.as_secs() / 2).max(2));
        let result = redis
            .tune_replication(Duration::from_secs(1), timeout)
            .await;
        match &result {
            Ok(()) => info!(
                repl_timeout_s = timeout.as_secs(),
                "set repl-ping-replica-period 1 and repl-timeout on the local redis so a partitioned master's link drops quickly"
            ),
            Err(e) => {
                warn!(error = %e, "cannot set repl-timeout on the local redis: a partitioned master is only replaced after Redis's own repl-timeout")
            }
        }
        lock(&self.local).tuned_run_id = Some(run_id.to_string());
    }

    async fn probe(&self, redis: &RedisClient) {
        let result = redis.probe().await;
        if let Ok(status) = &result {
            let tuned = lock(&self.local).tuned_run_id.as_deref() == Some(status.run_id.as_str());
            if !tuned {
                self.tune_replication(redis, &status.run_id).await;
            }
        }
        let now = self.now();
        let mut local = lock(&self.local);
        match result {
            Ok(status) => {
                if local.down_since.take().is_some() {
                    info!(role = %status.role, run_id = %status.run_id, "local redis is up");
                }
                local.last_seen = Some(SystemTime::now());
                local.health = RedisHealth::Up(status);
            }
            Err(e) => {
                let since = *local.down_since.get_or_insert_with(|| {
                    warn!(error = %e, "local redis is down");
                    now
                });
                local.health = RedisHealth::Down {
                    kind: e.down_kind(),
                    for_ms: now.since(since).0,
                    error: e.to_string(),
                };
            }
        }
    }

    fn build_report(&self) -> NodeReport {
        let state = self.cluster_state();
        let mut local = lock(&self.local);
        let handover_paused = state.switchover.is_some_and(|sw| {
            sw.from == self.settings.me.id && local.handover_paused_for == Some(sw.epoch)
        });
        local.last_reported = Some((
            local.health.status().is_some(),
            local.health.status().map(|s| s.role),
        ));
        NodeReport {
            node: self.settings.me.id,
            member: self.member(),
            redis: self.redis.is_some().then(|| local.health.clone()),
            fenced: local.fenced,
            handover_paused,
        }
    }

    async fn report(&self) {
        let report = self.build_report();
        let sent_at = self.now();
        let metrics = self.raft.metrics().borrow().clone();
        let Some(leader) = metrics.current_leader else {
            return;
        };
        let ack = if leader == self.settings.me.id {
            self.handle_report(report)
        } else {
            let Some(node) = metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .cloned()
            else {
                return;
            };
            self.send_report(&node.addr, &report).await
        };
        match ack {
            Ok(ack) => {
                // Only a coordinator whose master changes we have applied renews the lease. One
                // that is ahead may have elected our successor already, and with our stale state
                // the reconcile would lift the fence as "still master" until the new epoch
                // reaches us; the next report after it does renews the lease.
                let applied_epoch = self.cluster_state().epoch;
                let mut local = lock(&self.local);
                if let Some(age) = ack.quorum_ack_age_ms.filter(|_| ack.epoch <= applied_epoch) {
                    let contact = Millis(sent_at.0.saturating_sub(age));
                    local.contact_at = Some(local.contact_at.map_or(contact, |c| c.max(contact)));
                }
                local.master_offset = ack.master_offset;
                if ack.quorum_ack_age_ms.is_some() {
                    local.cluster_health = Some((self.now(), ack.health));
                }
            }
            Err(e) => {
                self.metrics
                    .reports_failed
                    .get_or_create(&crate::metrics::PeerLabel {
                        peer: leader.to_string(),
                    })
                    .inc();
                debug!(error = %e, "report not acknowledged");
            }
        }
    }

    async fn send_report(
        &self,
        leader_addr: &str,
        report: &NodeReport,
    ) -> Result<ReportAck, String> {
        let body = serde_json::to_vec(report).map_err(|e| e.to_string())?;
        let path = "/report";
        let mut req = self
            .http
            .post(format!("http://{leader_addr}{path}"))
            .timeout((self.settings.lease / 2).min(Duration::from_secs(1)))
            .header("content-type", "application/json");
        if let Some(secret) = &self.settings.secret {
            for (name, value) in auth::sign(secret, "POST", path, &body, auth::unix_now()).pairs() {
                req = req.header(name, value);
            }
        }
        let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            if lock(&self.report_rejected_by).insert(leader_addr.to_string()) {
                warn!(
                    peer = leader_addr,
                    "peer rejected our signed report: the shared secret likely differs between sites"
                );
            }
            return Err("401 from leader".into());
        }
        if !resp.status().is_success() {
            return Err(format!("leader answered {}", resp.status()));
        }
        resp.json::<ReportAck>().await.map_err(|e| e.to_string())
    }

    fn fence_pause(&self) -> Duration {
        // Long enough that a crashed agent leaves its Redis fenced until a new master is
        // committed; renewed every probe while isolated.
        (self.settings.down_after * 6).max(Duration::from_secs(30))
    }

    async fn reconcile(&self, redis: &RedisClient) {
        let state = self.cluster_state();
        let now = self.now();
        let (health, contact_at, fenced) = {
            let local = lock(&self.local);
            (local.health.clone(), local.contact_at, local.fenced)
        };
        let view = LocalView {
            self_id: self.settings.me.id,
            state: &state,
            redis: &health,
            contact_age: contact_at.map(|c| now.since(c)),
            fenced,
            lease: millis(self.settings.lease),
        };
        let plan = plan_local(&view);
        if let Some(kube) = &self.kube {
            let losing_writes = fenced
                || plan.actions.iter().any(|a| {
                    matches!(
                        a,
                        LocalAction::PauseWrites | LocalAction::ReplicateFrom { .. }
                    )
                });
            let facts = RoleFacts {
                witness: false,
                committed_master_is_self: state.master == Some(self.settings.me.id),
                local_redis_is_master: health.status().is_some_and(|s| s.role == RedisRole::Master),
                losing_writes,
            };
            // The label moves away from master before a demotion or fence runs below, and a
            // slow API server only delays the label, never those safety actions.
            let desired = desired_role_label(facts);
            let result = tokio::time::timeout(
                self.settings.probe_interval,
                kube.ensure_role_label(desired),
            )
            .await;
            self.note_kube_result("pod label", result);
        }
        {
            let mut local = lock(&self.local);
            if plan.reason != local.last_plan_reason {
                if plan.actions.is_empty() {
                    debug!(reason = %plan.reason, "reconcile");
                } else {
                    info!(reason = %plan.reason, epoch = state.epoch, "reconcile");
                }
                local.last_plan_reason = plan.reason.clone();
            }
        }
        let changes_role = plan
            .actions
            .iter()
            .any(|a| matches!(a, LocalAction::Promote | LocalAction::ReplicateFrom { .. }));
        for action in plan.actions {
            let result = match &action {
                LocalAction::Promote => redis.promote().await,
                LocalAction::ReplicateFrom { host, port } => {
                    redis.replicate_from(host, *port).await
                }
                LocalAction::PauseWrites => redis.pause_writes(self.fence_pause()).await,
                LocalAction::Unpause => redis.unpause().await,
            };
            match result {
                Ok(()) => {
                    let mut local = lock(&self.local);
                    match &action {
                        LocalAction::Promote => {
                            info!(epoch = state.epoch, "promoted local redis to master")
                        }
                        LocalAction::ReplicateFrom { host, port } => {
                            info!(epoch = state.epoch, master = %state.master_member().map_or("?", |m| m.name.as_str()), %host, port, "local redis now replicates from the master")
                        }
                        LocalAction::PauseWrites => {
                            // During a switchover, a pause of the master's writes makes the
                            // offset we report next final: the coordinator may then commit.
                            local.handover_paused_for = state
                                .switchover
                                .as_ref()
                                .filter(|sw| sw.from == self.settings.me.id)
                                .map(|sw| sw.epoch);
                            if !local.fenced {
                                warn!(reason = %plan.reason, "fenced: local redis writes paused");
                            }
                            local.fenced = true;
                        }
                        LocalAction::Unpause => {
                            if local.fenced {
                                info!("unfenced: local redis writes allowed");
                            }
                            local.fenced = false;
                        }
                    }
                }
                Err(e) => {
                    warn!(?action, error = %e, "reconcile action failed; will retry next cycle");
                    break;
                }
            }
        }
        // A role change is visible to clients (`/state`, `/master`) only through the probe:
        // take it now rather than a probe interval later.
        if changes_role {
            self.probe(redis).await;
        }
    }

    /// What the Sentinel endpoint serves: the committed master, flagged stale while this
    /// agent has no confirmed quorum contact (it may not know of a newer master), and the
    /// coordinator's member health from the last ack.
    fn sentinel_view(
        &self,
        previous: &crate::sentinel::SentinelView,
    ) -> crate::sentinel::SentinelView {
        let lease = millis(self.settings.lease);
        let metrics = self.raft.metrics().borrow().clone();
        let (health_age, health) = lock(&self.local)
            .cluster_health
            .clone()
            .map_or((Millis(0), BTreeMap::new()), |(at, h)| {
                (self.now().since(at), h)
            });
        let facts = crate::sentinel::SentinelFacts {
            now: Instant::now(),
            own: self.settings.me.id,
            coordinator: metrics.current_leader,
            voters: metrics.membership_config.membership().voter_ids().count(),
            health,
            health_age: Duration::from_millis(health_age.0),
            stale: self
                .local_snapshot()
                .contact_age
                .is_none_or(|age| age > lease),
            redis_down_after: self.settings.redis_down_after,
            down_after: self.settings.down_after,
            failover_timeout: self.settings.switchover_timeout,
        };
        crate::sentinel::build_view(&self.cluster_state(), &facts, previous)
    }

    async fn feed_sentinel(self: Arc<Self>, views: watch::Sender<crate::sentinel::SentinelView>) {
        let mut committed = self.state_machine.subscribe();
        let mut tick = tokio::time::interval(self.settings.probe_interval);
        while !views.is_closed() {
            tokio::select! {
                _ = tick.tick() => {}
                changed = committed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let fresh = self.sentinel_view(&views.borrow());
            views.send_if_modified(|current| {
                let changed = *current != fresh;
                if changed {
                    *current = fresh;
                }
                changed
            });
        }
    }

    /// A consistent copy of what this agent knows about itself, for the API.
    pub fn local_snapshot(&self) -> LocalSnapshot {
        let local = lock(&self.local);
        LocalSnapshot {
            health: local.health.clone(),
            last_seen: local.last_seen,
            contact_age: local.contact_at.map(|c| self.now().since(c)),
            fenced: local.fenced,
            reason: local.last_plan_reason.clone(),
            master_offset: local.master_offset,
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
    }

    pub fn has_redis(&self) -> bool {
        self.redis.is_some()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// API address of the current coordinator, from its committed registration.
    pub fn leader_api_addr(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        self.cluster_state()
            .members
            .get(&leader)
            .map(|m| m.api_addr.clone())
    }

    /// A client for other agents' APIs, signing with our shared secret.
    pub fn api_client(&self) -> crate::client::ApiClient {
        crate::client::ApiClient::with_client(self.http.clone(), self.settings.secret.as_deref())
    }

    /// Watch committed state changes.
    pub fn subscribe(&self) -> watch::Receiver<ClusterState> {
        self.state_machine.subscribe()
    }
}

pub struct LocalSnapshot {
    pub health: RedisHealth,
    pub last_seen: Option<SystemTime>,
    pub contact_age: Option<Millis>,
    pub fenced: bool,
    pub reason: String,
    pub master_offset: Option<u64>,
}

async fn bind(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}
