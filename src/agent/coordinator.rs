//! The coordinator: while this agent is Raft leader it collects the members' reports,
//! runs the pure [`decide`] over one snapshot of them and commits what it returns.
//! Operator requests (switchover, pause, membership) are in `operator.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};

use super::consensus::{Consensus, RaftFacts};
use super::{Clock, lock, unix_millis};
use crate::addr::node_id;
use crate::decide::membership::accepts_report;
use crate::decide::{Policy, ReceivedReport, Reports, decide};
use crate::metrics::{Metrics, PeerLabel};
use crate::model::{ClusterState, Command, CommandResponse, Millis, NodeId, NodeReport, ReportAck};

/// The longest the coordinator goes without looking, whatever it was told: a follower
/// whether it leads, a leader at a change nothing woke it for (a Raft membership change
/// made without a commit being applied yet, a leadership lost and won back).
const BACKSTOP: Duration = Duration::from_secs(1);

/// How soon a decision whose command was not committed is tried again: soon, but not in a
/// loop (a rejection repeats on the same state).
const COMMIT_RETRY: Duration = Duration::from_millis(100);

/// What the coordinator has heard since it became leader.
#[derive(Default)]
struct Heard {
    /// (term, leader_since) of the current leadership.
    leadership: Option<(u64, Millis)>,
    reports: BTreeMap<NodeId, ReceivedReport>,
    /// (switchover epoch, when this coordinator first saw it committed)
    switchover_seen: Option<(u64, Millis)>,
    last_reason: String,
    last_reason_logged: Option<Millis>,
}

/// Why a report is refused (HTTP 400 on the peer port).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportRefusal {
    #[error(
        "report from {name} claims node id {claimed} but its raft address {raft_addr} has id {expected}"
    )]
    WrongId {
        name: String,
        claimed: NodeId,
        raft_addr: String,
        expected: NodeId,
    },
    #[error("report from {name} (node {node}): not a member of the Raft group")]
    NotMember { name: String, node: NodeId },
}

pub struct Coordinator {
    pub(super) policy: Policy,
    pub(super) clock: Clock,
    pub(super) metrics: Arc<Metrics>,
    /// How long an operator's switchover request waits for the new master.
    pub(super) switchover_wait: Duration,
    heard: Mutex<Heard>,
    pub(super) decide_now: Notify,
    /// Held from snapshot to commit by each decision and operator request, so none commits
    /// on a view another has just made stale (a removed member's cached report must not
    /// register it again after its removal).
    pub(super) turn: tokio::sync::Mutex<()>,
}

impl Coordinator {
    pub fn new(policy: Policy, clock: Clock, metrics: Arc<Metrics>) -> Coordinator {
        let switchover_wait = Duration::from_millis(
            policy
                .switchover_timeout
                .0
                .saturating_add(policy.down_after.0)
                .saturating_add(2_000),
        );
        Coordinator {
            policy,
            clock,
            metrics,
            switchover_wait,
            heard: Mutex::new(Heard::default()),
            decide_now: Notify::new(),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Record a report and answer it with `quorum_ack_age_ms`, read by
    /// [`Consensus::quorum_ack_age`] just before. Reports reaching a non-leader are answered
    /// without a quorum age, so the sender's lease does not renew.
    pub fn handle_report(
        &self,
        facts: &RaftFacts,
        quorum_ack_age_ms: Option<u64>,
        state: &ClusterState,
        report: NodeReport,
    ) -> Result<ReportAck, ReportRefusal> {
        let expected = node_id(&report.member.raft_addr);
        if report.node != expected {
            return Err(ReportRefusal::WrongId {
                name: report.member.name,
                claimed: report.node,
                raft_addr: report.member.raft_addr,
                expected,
            });
        }
        if !accepts_report(&facts.members(), report.node) {
            return Err(ReportRefusal::NotMember {
                name: report.member.name,
                node: report.node,
            });
        }
        let quorum_ack_age_ms = quorum_ack_age_ms.filter(|_| facts.is_leader());
        let mut heard = lock(&self.heard);
        let master_offset = state
            .master
            .and_then(|m| heard.reports.get(&m))
            .and_then(|r| r.report.redis.as_ref())
            .and_then(|h| h.status())
            .map(|s| s.repl_offset);
        if quorum_ack_age_ms.is_some() {
            self.metrics
                .reports_received
                .get_or_create(&PeerLabel {
                    peer: report.member.name.clone(),
                })
                .inc();
            heard.reports.insert(
                report.node,
                ReceivedReport {
                    report,
                    received_at: self.clock.now(),
                },
            );
            self.decide_now.notify_one();
        }
        // Every agent's Sentinel endpoint shows the member health only the coordinator has.
        let health = match quorum_ack_age_ms {
            Some(_) => crate::sentinel::health_summary(&heard.reports, self.clock.now()),
            None => Default::default(),
        };
        Ok(ReportAck {
            quorum_ack_age_ms,
            epoch: state.epoch,
            master: state.master,
            master_offset,
            health,
        })
    }

    /// Forget a removed member's report, so it cannot register it again; without it the
    /// decision may differ (a first election no longer waits for it).
    pub(super) fn forget(&self, id: NodeId) {
        lock(&self.heard).reports.remove(&id);
        self.decide_now.notify_one();
    }

    /// The coordinator's view for one decision, or `None` when this node is not leader.
    /// Starting or losing leadership resets what was heard before.
    pub fn snapshot(
        &self,
        facts: &RaftFacts,
        state: ClusterState,
    ) -> Option<(Reports, ClusterState)> {
        let now = self.clock.now();
        let mut heard = lock(&self.heard);
        if !facts.is_leader() {
            if heard.leadership.take().is_some() {
                info!(
                    term = facts.term,
                    "no longer raft leader: stopped coordinating"
                );
                heard.reports.clear();
            }
            return None;
        }
        let leader_since = match heard.leadership {
            Some((term, since)) if term == facts.term => since,
            _ => {
                info!(
                    term = facts.term,
                    "raft leader: coordinating failovers from now"
                );
                heard.leadership = Some((facts.term, now));
                heard.reports.clear();
                now
            }
        };
        heard.switchover_seen = match (&state.switchover, heard.switchover_seen) {
            (Some(sw), Some((epoch, since))) if epoch == sw.epoch => Some((epoch, since)),
            (Some(sw), _) => Some((sw.epoch, now)),
            (None, _) => None,
        };
        let reports = Reports {
            leader_since,
            voters: facts.voters.clone(),
            latest: heard.reports.clone(),
            switchover_since: heard.switchover_seen.map(|(_, since)| since),
        };
        Some((reports, state))
    }

    /// One decision over one snapshot; commits what it returns, in order. Returns when to
    /// decide again at the latest, if time alone may change the decision (`None` also when
    /// this node does not lead). A committed command wakes the loop through the state it
    /// changed.
    pub async fn decide_once<C: Consensus>(&self, consensus: &C) -> Option<Duration> {
        let _turn = self.turn.lock().await;
        let (reports, state) = self.snapshot(&consensus.facts(), consensus.state())?;
        let now = self.clock.now();
        let decision = decide(&state, &reports, &self.policy, now);
        let decide_again = decision
            .decide_again_at
            .map(|at| Duration::from_millis(at.since(now).0));
        if decision.commands.is_empty() {
            let mut heard = lock(&self.heard);
            let repeat_due = heard
                .last_reason_logged
                .is_none_or(|at| now.since(at) >= Millis(5_000));
            if decision.reason != heard.last_reason && repeat_due {
                info!(reason = %decision.reason, "coordinator");
                heard.last_reason_logged = Some(now);
                heard.last_reason = decision.reason;
            }
            return decide_again;
        }
        info!(reason = %decision.reason, "coordinator decided");
        for command in decision.commands {
            let command = command.stamped(unix_millis());
            match consensus.commit(command.clone()).await {
                Ok(CommandResponse::Applied) => {
                    info!(?command, "committed");
                    if let Command::SetMaster { .. } = command {
                        let kind = match (&state.master, &state.switchover) {
                            (None, _) => "election",
                            (_, Some(_)) => "switchover",
                            _ => "failover",
                        };
                        let seconds = decision
                            .failing_since
                            .map(|since| self.clock.now().since(since).0 as f64 / 1000.0);
                        self.metrics.count_failover(kind, seconds);
                    }
                }
                Ok(CommandResponse::Rejected(why)) => {
                    warn!(?command, %why, "state machine rejected command");
                    return Some(COMMIT_RETRY);
                }
                Err(e) => {
                    warn!(error = %e, ?command, "could not commit");
                    return Some(COMMIT_RETRY);
                }
            }
        }
        decide_again
    }

    /// Decide only when the inputs may have changed: at once on a report, an applied commit
    /// (own, an operator's, a membership change) or a new leadership, and at the moment a
    /// decision said time alone would change it (a report going stale, a silence reaching
    /// its bound), so an idle leader sleeps and a failover is not late. Never longer than
    /// [`BACKSTOP`] without a look.
    pub async fn run<C: Consensus>(self: Arc<Self>, consensus: Arc<C>) {
        let mut committed = consensus.subscribe();
        let mut watching = true;
        let mut next = BACKSTOP;
        loop {
            // A follower has nothing to decide: it wakes when it becomes leader.
            let follower = !consensus.facts().is_leader();
            let sleep = if follower { BACKSTOP } else { next };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.decide_now.notified() => {}
                _ = consensus.until_leader(), if follower => {}
                changed = committed.changed(), if watching && !follower => {
                    // A state machine that is gone publishes nothing more.
                    watching = changed.is_ok();
                }
            }
            // Commits from here on are news to the next decision.
            committed.mark_unchanged();
            let again = self.decide_once(consensus.as_ref()).await;
            next = again.map_or(BACKSTOP, |d| d.min(BACKSTOP));
        }
    }
}
