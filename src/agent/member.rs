//! The member loop, run by every agent: each cycle takes ONE snapshot of the committed
//! state, probes the local Redis, reports to the coordinator, runs the pure
//! [`plan_local`] and executes what it returns. A witness runs it without a Redis: it
//! only reports (to register and be seen).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

use super::consensus::Consensus;
use super::coordinator::Coordinator;
use super::feeds::KubeFeed;
use super::leadership::LeaderRoundTrip;
use super::{Clock, lock, millis};
use crate::client::SignedClient;
use crate::decide::lease::{fence_pause, losing_writes, renewed_contact};
use crate::decide::local::{
    DETACHED_HOST, DETACHED_PORT, LocalAction, LocalView, MasterFound, master_replaced,
    min_replicas_to_write, plan_local,
};
use crate::kube::{RoleFacts, desired_role_label};
use crate::metrics::{Metrics, PeerLabel};
use crate::model::{
    ClusterState, DownKind, Member, MemberHealth, Millis, NodeId, NodeReport, RedisHealth,
    RedisRole, ReportAck,
};
use crate::redis::RedisNode;

/// Probe and report period while this node hands over or takes over the master role.
const SWITCHOVER_PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Probe and report period while the local Redis is down, so `--redis-down-after` is
/// measured finely instead of rounded up to the next `--probe-interval`.
const DOWN_PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long a replica's write probe of its master may be held before it counts as refused.
/// A healthy master answers a `PUBLISH` in well under a millisecond; a paused one never does.
const WRITE_PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// What the member loop needs of the settings.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub me: NodeId,
    /// How this agent describes itself in reports (and so in the committed members).
    pub member: Member,
    pub probe_interval: Duration,
    pub lease: Duration,
    /// How often a report goes out when nothing changed
    /// ([`keep_alive_interval`](crate::decide::lease::keep_alive_interval)).
    pub keep_alive: Duration,
    pub down_after: Duration,
    pub redis_down_after: Duration,
}

/// What this agent knows about its own Redis and its contact with the cluster; read by
/// the API between cycles.
pub struct LocalState {
    pub health: RedisHealth,
    pub down_since: Option<Millis>,
    pub last_seen: Option<SystemTime>,
    /// Latest quorum acknowledgement of a coordinator that answered our report, by our clock.
    pub contact_at: Option<Millis>,
    /// True while our Redis may be paused; starts true because a previous run may have paused it.
    pub fenced: bool,
    pub last_plan_reason: String,
    /// The master's replication offset as last told by the coordinator.
    pub master_offset: Option<u64>,
    /// Epoch of the switchover for which this agent paused its master's writes.
    pub handover_paused_for: Option<u64>,
    /// What the last report sent said, to report a change at once.
    pub last_reported: Option<Observation>,
    /// run_id of the Redis process whose replication timeouts we already set.
    pub tuned_run_id: Option<String>,
    /// The coordinator's member health from its last confirmed ack, and when it came.
    pub cluster_health: Option<(Millis, BTreeMap<NodeId, MemberHealth>)>,
    /// What the last write probe of the committed master found (replicas only).
    pub master_accepts_writes: Option<bool>,
    /// What the last probe found at the committed master's address. `Gone` (nothing
    /// listens) also makes this agent's Sentinel view flag that master disconnected at once,
    /// as Sentinel does when its own link to a master drops.
    pub master_found: MasterFound,
    /// Woken after every cycle, so the Sentinel view follows what this agent just learned.
    pub updated: Arc<tokio::sync::Notify>,
    /// `min-replicas-to-write` last set, and on which Redis process (run_id).
    pub min_replicas_set: Option<(String, u32)>,
}

/// The parts of a report whose change the coordinator must hear at once rather than at
/// the next keep-alive: they can decide a failover or end one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    up: bool,
    role: Option<RedisRole>,
    down_kind: Option<DownKind>,
    master_link_up: bool,
    master_addr: Option<String>,
    master_accepts_writes: Option<bool>,
    fenced: bool,
}

impl Observation {
    fn of(local: &LocalState) -> Observation {
        let status = local.health.status();
        Observation {
            up: status.is_some(),
            role: status.map(|s| s.role),
            down_kind: match &local.health {
                RedisHealth::Down { kind, .. } => Some(*kind),
                RedisHealth::Up(_) => None,
            },
            master_link_up: status.is_some_and(|s| s.master_link_up),
            master_addr: status.and_then(|s| s.master_addr.clone()),
            master_accepts_writes: local.master_accepts_writes,
            fenced: local.fenced,
        }
    }
}

impl Default for LocalState {
    fn default() -> Self {
        LocalState {
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
            master_accepts_writes: None,
            master_found: MasterFound::Unknown,
            updated: Arc::new(tokio::sync::Notify::new()),
            min_replicas_set: None,
        }
    }
}

/// Where reports go: the coordinator, wherever it runs.
pub trait ReportSink: Send + Sync + 'static {
    fn deliver(
        &self,
        report: NodeReport,
        timeout: Duration,
    ) -> impl Future<Output = Result<ReportAck, String>> + Send;
}

/// The production sink: this agent's own coordinator while it leads, else a signed POST
/// to the leader's peer port.
pub struct ToCoordinator<C> {
    pub me: NodeId,
    pub consensus: Arc<C>,
    pub coordinator: Arc<Coordinator>,
    pub client: SignedClient,
    /// Where each acknowledged report's round trip to a remote leader goes.
    pub round_trip: Arc<LeaderRoundTrip>,
}

impl<C: Consensus> ReportSink for ToCoordinator<C> {
    async fn deliver(&self, report: NodeReport, timeout: Duration) -> Result<ReportAck, String> {
        let facts = self.consensus.facts();
        if facts.leader == Some(self.me) {
            let quorum_ack_age = self.consensus.quorum_ack_age().await;
            return self
                .coordinator
                .handle_report(&facts, quorum_ack_age, &self.consensus.state(), report)
                .map_err(|e| e.to_string());
        }
        let addr = facts.leader_addr().ok_or("no raft leader known")?;
        let body = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
        let sent = tokio::time::Instant::now();
        let answer = self
            .client
            .call(
                reqwest::Method::POST,
                addr,
                "/report",
                Some(body),
                Some(timeout),
            )
            .await
            .map_err(|e| e.to_string())?;
        let ack =
            serde_json::from_slice(&answer).map_err(|e| format!("unreadable report ack: {e}"))?;
        if let Some(leader) = facts.leader {
            self.round_trip.record(leader, sent.elapsed());
        }
        Ok(ack)
    }
}

pub struct MemberLoop<R, C, S> {
    pub(super) config: MemberConfig,
    pub(super) redis: Option<R>,
    pub(super) consensus: Arc<C>,
    pub(super) sink: S,
    pub(super) local: Arc<Mutex<LocalState>>,
    pub(super) kube: Option<KubeFeed>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) clock: Clock,
}

impl<R: RedisNode, C: Consensus, S: ReportSink> MemberLoop<R, C, S> {
    /// Cycle every probe interval (faster while Redis is down or a switchover involves
    /// us), at once on every committed change and at once when the connection to the
    /// local Redis closes. Reports go out when what this agent sees changes, every cycle
    /// while it is down or in a switchover, and otherwise as a keep-alive that renews the
    /// lease well before it runs out.
    pub async fn run(mut self) {
        let keep_alive = self.config.keep_alive;
        let interval = if self.redis.is_some() {
            self.config.probe_interval
        } else {
            // A witness has no Redis to watch: it only reports, to register, to renew the
            // contact its Sentinel view's freshness rests on, and to be seen.
            keep_alive
        };
        let keep_alive = keep_alive.max(interval);
        let mut committed = self.consensus.subscribe();
        self.cycle(true).await;
        let mut next_report = tokio::time::Instant::now() + keep_alive;
        loop {
            let period = self.period(interval);
            let closed = async {
                match &self.redis {
                    Some(redis) => redis.closed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = closed => debug!("connection to the local redis closed; probing it now"),
                changed = committed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let every_cycle = self.reports_every_cycle();
            let report_due = every_cycle || tokio::time::Instant::now() >= next_report;
            match self.cycle(report_due).await {
                Some(true) => next_report = tokio::time::Instant::now() + keep_alive,
                // Not acknowledged: try again next cycle, not a keep-alive later.
                Some(false) => next_report = tokio::time::Instant::now(),
                None => {}
            }
        }
    }

    /// While its Redis is down or a switchover involves it, the coordinator needs this
    /// agent's every observation: the time down decides the failover, the offsets the
    /// handover.
    fn reports_every_cycle(&self) -> bool {
        let me = self.config.me;
        self.consensus
            .state()
            .switchover
            .is_some_and(|sw| sw.from == me || sw.to == me)
            || (self.redis.is_some() && lock(&self.local).down_since.is_some())
    }

    fn period(&self, interval: Duration) -> Duration {
        let me = self.config.me;
        let in_switchover = self
            .consensus
            .state()
            .switchover
            .is_some_and(|sw| sw.from == me || sw.to == me);
        if in_switchover {
            return SWITCHOVER_PROBE_INTERVAL;
        }
        let down_since = lock(&self.local).down_since;
        match down_since {
            Some(since) if self.redis.is_some() => {
                // The next look lands when the Redis has been down `--redis-down-after`,
                // so a dead one is reported failed at that moment, not a poll later.
                let down_for = Duration::from_millis(self.clock.now().since(since).0);
                let until_failover = self.config.redis_down_after.saturating_sub(down_for);
                let poll = DOWN_PROBE_INTERVAL.min(interval);
                if until_failover.is_zero() {
                    poll
                } else {
                    until_failover.min(poll)
                }
            }
            _ => interval.min(self.until_lease_ends()),
        }
    }

    /// How long until the lease of an unfenced master runs out, so its fence lands then
    /// and not up to a probe interval later.
    fn until_lease_ends(&self) -> Duration {
        let local = lock(&self.local);
        let serving = !local.fenced
            && local
                .health
                .status()
                .is_some_and(|s| s.role == RedisRole::Master);
        match local.contact_at {
            Some(contact) if serving => {
                let age = Duration::from_millis(self.clock.now().since(contact).0);
                // `is_isolated` is strict: the lease has run out a millisecond past it.
                (self.config.lease + Duration::from_millis(1))
                    .saturating_sub(age)
                    .max(Duration::from_millis(1))
            }
            _ => Duration::MAX,
        }
    }

    /// One cycle over one snapshot of the committed state: probe, report (when due or
    /// when what it sees changed), reconcile. Returns whether it reported, and if so
    /// whether the last report was acknowledged.
    pub async fn cycle(&mut self, report_due: bool) -> Option<bool> {
        let mut committed = self.consensus.subscribe();
        let state = self.consensus.state();
        // The write probe of a hung master and a report to a leader that is gone each wait
        // for their timeout; a commit meanwhile (e.g. this node's promotion) makes both moot,
        // so it cuts them short and the cycle acts on the new state at once.
        let probe_master_writes = async {
            tokio::select! {
                () = self.probe_master_writes(&state) => false,
                _ = committed.changed() => true,
            }
        };
        // The write probe needs the local Redis up: while it was, both probes go out
        // together (one wake-up for both answers, not two); once it is back, the master is
        // probed after it.
        let mut cut_short = if lock(&self.local).health.status().is_some() {
            let cut_short = tokio::join!(self.probe(), probe_master_writes).1;
            let mut local = lock(&self.local);
            if local.health.status().is_none() {
                // Gone meanwhile: as if the master had not been probed.
                local.master_accepts_writes = None;
                local.master_found = MasterFound::Unknown;
            }
            cut_short
        } else {
            self.probe().await;
            probe_master_writes.await
        };
        let mut reported = None;
        if !cut_short {
            // A master process that exited or was replaced is detached from before the
            // report: that may wait out its timeout on a leader that is gone (often the
            // master's own agent), and meanwhile the local Redis reconnects (within a
            // second) and takes a full resync from whatever process now answers there.
            if self.master_replaced(&state) {
                self.reconcile(&state).await;
            }
            if report_due || self.observation_changed() {
                tokio::select! {
                    acked = self.report(&state) => reported = Some(acked),
                    _ = committed.changed() => cut_short = true,
                }
            }
        }
        let state = if cut_short {
            debug!("a commit arrived while probing the master or reporting; acting on it now");
            // A report cut short counts as not acknowledged, so the next cycle sends one.
            reported = Some(false);
            self.consensus.state()
        } else {
            state
        };
        self.reconcile(&state).await;
        // A role change or fence just made is news the coordinator (and every Sentinel
        // view) needs now, not at the next keep-alive.
        if self.observation_changed() {
            reported = Some(self.report(&state).await);
        }
        self.keep_min_replicas(&state).await;
        if let Some(kube) = &mut self.kube {
            kube.sync_master_endpoints(&state).await;
        }
        lock(&self.local).updated.notify_one();
        reported
    }

    /// Whether the last probe found the committed master's process gone or replaced.
    fn master_replaced(&self, state: &ClusterState) -> bool {
        master_replaced(state, &lock(&self.local).master_found).is_some()
    }

    fn observation_changed(&self) -> bool {
        let local = lock(&self.local);
        local
            .last_reported
            .as_ref()
            .is_some_and(|last| *last != Observation::of(&local))
    }

    /// Replicas must notice a silent (partitioned) master within seconds: the master's
    /// "no replica sees it" failover rule relies on it, and Redis's default repl-timeout is
    /// 60 s with a ping only every 10 s. Set once per Redis process.
    async fn tune_replication(&self, redis: &R, run_id: &str) {
        let timeout = Duration::from_secs((self.config.down_after.as_secs() / 2).max(2));
        match redis
            .tune_replication(Duration::from_secs(1), timeout)
            .await
        {
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

    async fn probe(&self) {
        let Some(redis) = &self.redis else { return };
        let result = redis.probe().await;
        if let Ok(status) = &result {
            let tuned = lock(&self.local).tuned_run_id.as_deref() == Some(status.run_id.as_str());
            if !tuned {
                self.tune_replication(redis, &status.run_id).await;
            }
        }
        let now = self.clock.now();
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
                    if e.down_kind() == DownKind::Unauthorized {
                        warn!(error = %e, "local redis refuses this agent's credentials: fix --redis-password (or the ACL user); until then the agent can neither watch nor fence it, and the coordinator keeps it as it is");
                    } else {
                        warn!(error = %e, "local redis is down");
                    }
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

    /// A replica following the committed master checks that the master still takes writes:
    /// a master whose agent fenced it (it cannot reach the coordinator) keeps its replication
    /// link up, and only this tells the coordinator that its writes are blocked.
    async fn probe_master_writes(&self, state: &ClusterState) {
        let Some(redis) = &self.redis else { return };
        let target = self.write_probe_target(state);
        let (writable, master_found) = match target {
            // Not during a switchover: the master pauses on purpose, and the target must
            // not slow down.
            Some((host, port)) if state.switchover.is_none() => {
                match redis.probe_master(&host, port, WRITE_PROBE_TIMEOUT).await {
                    Ok(probe) => (
                        Some(probe.accepts_writes),
                        probe
                            .run_id
                            .map_or(MasterFound::Unknown, MasterFound::Process),
                    ),
                    Err(e) => {
                        debug!(error = %e, "probe of the master's redis failed");
                        match e {
                            crate::redis::RedisError::Refused(_)
                            | crate::redis::RedisError::HungUp(_) => (None, MasterFound::Gone),
                            _ => (None, MasterFound::Unknown),
                        }
                    }
                }
            }
            _ => (None, MasterFound::Unknown),
        };
        let mut local = lock(&self.local);
        if writable.is_some() && writable != local.master_accepts_writes {
            match writable {
                Some(false) => warn!(
                    master = %state.master_member().map_or("?", |m| m.name.as_str()),
                    "the master's redis holds writes (paused or hung) although our replication link is up"
                ),
                _ => info!("the master's redis takes writes"),
            }
        }
        local.master_accepts_writes = writable;
        local.master_found = master_found;
    }

    /// The committed master's Redis address when it is another node and the local Redis
    /// is up: before this agent points its Redis there (or while it follows it, or keeps it
    /// detached) the probe says whether the elected process still listens there.
    fn write_probe_target(&self, state: &ClusterState) -> Option<(String, u16)> {
        let master = state.master.filter(|m| *m != self.config.me)?;
        let addr = state.members.get(&master)?.redis_addr.as_deref()?;
        lock(&self.local).health.status()?;
        let parsed = crate::addr::RedisAddr::parse(addr)?;
        Some((parsed.host, parsed.port))
    }

    /// Keep `min-replicas-to-write` on the local master as [`min_replicas_to_write`] says.
    /// The max lag stays below `--down-after`, the least time between a Redis stopping and
    /// a failover, so a Redis that resumes after one finds its replica too old to count.
    async fn keep_min_replicas(&self, state: &ClusterState) {
        let Some(redis) = &self.redis else { return };
        let now = self.clock.now();
        let (want, run_id, current) = {
            let local = lock(&self.local);
            let view = LocalView {
                self_id: self.config.me,
                state,
                redis: &local.health,
                contact_age: local.contact_at.map(|c| now.since(c)),
                fenced: local.fenced,
                lease: millis(self.config.lease),
                master_found: &local.master_found,
            };
            let Some(want) = min_replicas_to_write(&view) else {
                return;
            };
            let run_id = local.health.status().map(|s| s.run_id.clone());
            (want, run_id, local.min_replicas_set.clone())
        };
        let Some(run_id) = run_id else { return };
        if current.as_ref() == Some(&(run_id.clone(), want)) {
            return;
        }
        let max_lag = Duration::from_secs((self.config.down_after.as_secs() / 2).max(2));
        match redis.set_min_replicas(want, max_lag).await {
            Ok(()) => {
                debug!(
                    min_replicas_to_write = want,
                    max_lag_s = max_lag.as_secs(),
                    "set min-replicas-to-write on the local master"
                );
                lock(&self.local).min_replicas_set = Some((run_id, want));
            }
            Err(e) => warn!(error = %e, "cannot set min-replicas-to-write on the local redis"),
        }
    }

    fn build_report(&self, state: &ClusterState) -> NodeReport {
        let me = self.config.me;
        let mut local = lock(&self.local);
        let handover_paused = state
            .switchover
            .as_ref()
            .is_some_and(|sw| sw.from == me && local.handover_paused_for == Some(sw.epoch));
        local.last_reported = Some(Observation::of(&local));
        NodeReport {
            node: me,
            member: self.config.member.clone(),
            redis: self.redis.is_some().then(|| local.health.clone()),
            fenced: local.fenced,
            handover_paused,
            master_accepts_writes: local.master_accepts_writes,
        }
    }

    /// Sends one report; true when a coordinator acknowledged it.
    async fn report(&self, state: &ClusterState) -> bool {
        let report = self.build_report(state);
        let sent_at = self.clock.now();
        // A report to a leader that is gone blocks this cycle until the timeout; keep that
        // short against the lease, so the report to its successor comes in time.
        let timeout = (self.config.lease / 4).min(Duration::from_secs(1));
        match self.sink.deliver(report, timeout).await {
            Ok(ack) => {
                let mut local = lock(&self.local);
                local.contact_at = renewed_contact(local.contact_at, &ack, sent_at, state.epoch);
                local.master_offset = ack.master_offset;
                let confirmed = ack.quorum_ack_age_ms.is_some();
                if confirmed {
                    local.cluster_health = Some((self.clock.now(), ack.health));
                }
                confirmed
            }
            Err(e) => {
                let leader = self.consensus.facts().leader;
                self.metrics
                    .reports_failed
                    .get_or_create(&PeerLabel {
                        peer: leader.map_or_else(|| "none".to_string(), |l| l.to_string()),
                    })
                    .inc();
                debug!(error = %e, "report not acknowledged");
                false
            }
        }
    }

    async fn reconcile(&mut self, state: &ClusterState) {
        let Some(redis) = &self.redis else { return };
        let now = self.clock.now();
        let (health, contact_at, fenced, master_found) = {
            let local = lock(&self.local);
            (
                local.health.clone(),
                local.contact_at,
                local.fenced,
                local.master_found.clone(),
            )
        };
        let view = LocalView {
            self_id: self.config.me,
            state,
            redis: &health,
            contact_age: contact_at.map(|c| now.since(c)),
            fenced,
            lease: millis(self.config.lease),
            master_found: &master_found,
        };
        let plan = plan_local(&view);
        if let Some(kube) = &mut self.kube {
            let facts = RoleFacts {
                witness: false,
                committed_master_is_self: state.master == Some(self.config.me),
                local_redis_is_master: health.status().is_some_and(|s| s.role == RedisRole::Master),
                losing_writes: losing_writes(fenced, &plan.actions),
            };
            // The label moves away from master before a demotion or fence runs below, and a
            // slow API server only delays the label, never those safety actions.
            kube.label(desired_role_label(facts)).await;
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
        let changes_role = plan.actions.iter().any(|a| {
            matches!(
                a,
                LocalAction::Promote
                    | LocalAction::ReplicateFrom { .. }
                    | LocalAction::Demote { .. }
                    | LocalAction::Detach
            )
        });
        let pause = Duration::from_millis(fence_pause(millis(self.config.down_after)).0);
        let mut all_done = true;
        for action in plan.actions {
            let result = match &action {
                LocalAction::Promote => redis.promote().await,
                LocalAction::ReplicateFrom { host, port } => {
                    redis.replicate_from(host, *port).await
                }
                LocalAction::Demote { host, port } => redis.demote(host, *port).await,
                LocalAction::Detach => redis.replicate_from(DETACHED_HOST, DETACHED_PORT).await,
                LocalAction::PauseWrites => redis.pause_writes(pause).await,
                LocalAction::Unpause => redis.unpause().await,
            };
            if let Err(e) = result {
                warn!(?action, error = %e, "reconcile action failed; will retry next cycle");
                all_done = false;
                break;
            }
            self.note_done(&action, state, &plan.reason);
        }
        // A role change is visible to clients (`/state`, `/master`) only through the probe:
        // take it now rather than a probe interval later.
        if changes_role {
            self.probe().await;
            // A confirmed promotion is routed now, not a probe interval later. Only when
            // every action ran: then nothing of this plan still fences or demotes.
            if all_done && let Some(kube) = &mut self.kube {
                let (health, fenced) = {
                    let local = lock(&self.local);
                    (local.health.clone(), local.fenced)
                };
                let facts = RoleFacts {
                    witness: false,
                    committed_master_is_self: state.master == Some(self.config.me),
                    local_redis_is_master: health
                        .status()
                        .is_some_and(|s| s.role == RedisRole::Master),
                    losing_writes: losing_writes(fenced, &[]),
                };
                kube.label(desired_role_label(facts)).await;
            }
        }
    }

    fn note_done(&self, action: &LocalAction, state: &ClusterState, reason: &str) {
        let mut local = lock(&self.local);
        match action {
            LocalAction::Promote => info!(epoch = state.epoch, "promoted local redis to master"),
            LocalAction::ReplicateFrom { host, port } => {
                info!(epoch = state.epoch, master = %state.master_member().map_or("?", |m| m.name.as_str()), %host, port, "local redis now replicates from the master")
            }
            LocalAction::Demote { host, port } => {
                info!(epoch = state.epoch, master = %state.master_member().map_or("?", |m| m.name.as_str()), %host, port, "local redis demoted; its client connections closed")
            }
            LocalAction::Detach => {
                warn!(epoch = state.epoch, master = %state.master_member().map_or("?", |m| m.name.as_str()), %reason, "local redis detached from the master (REPLICAOF 127.0.0.1 0): it keeps its data and stays read-only")
            }
            LocalAction::PauseWrites => {
                // During a switchover, a pause of the master's writes makes the offset we
                // report next final: the coordinator may then commit.
                local.handover_paused_for = state
                    .switchover
                    .as_ref()
                    .filter(|sw| sw.from == self.config.me)
                    .map(|sw| sw.epoch);
                if !local.fenced {
                    warn!(%reason, "fenced: local redis writes paused");
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
}
