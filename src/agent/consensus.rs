//! What the loops need of Raft, behind a trait: the real openraft node, or an in-memory
//! fake for unit tests of the loops.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio::sync::watch;

use crate::consensus::Raft;
use crate::consensus::state_machine::StateMachineStore;
use crate::decide::lease::QUORUM_CLOCK_LOOK;
use crate::model::{ClusterState, Command, CommandResponse, NodeId};

/// One read of the Raft metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftFacts {
    pub state: ServerState,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub voters: BTreeSet<NodeId>,
    /// Every node of the membership (voters and learners) and its Raft address.
    pub nodes: BTreeMap<NodeId, String>,
    /// How long ago a quorum acknowledged this node as leader.
    pub millis_since_quorum_ack: Option<u64>,
}

impl RaftFacts {
    pub fn is_leader(&self) -> bool {
        self.state == ServerState::Leader
    }

    /// How long ago a quorum acknowledged this node as leader; `None` unless leader.
    pub fn quorum_ack_age(&self) -> Option<u64> {
        self.millis_since_quorum_ack.filter(|_| self.is_leader())
    }

    pub fn members(&self) -> BTreeSet<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn leader_addr(&self) -> Option<&str> {
        self.nodes.get(&self.leader?).map(String::as_str)
    }
}

/// The consensus the loops act through. Every method is cheap except the committing ones.
pub trait Consensus: Send + Sync + 'static {
    fn facts(&self) -> RaftFacts;
    /// The committed state as applied here.
    fn state(&self) -> ClusterState;
    fn subscribe(&self) -> watch::Receiver<ClusterState>;
    /// Resolves once this node is Raft leader (at once if it is); never for a stopped core.
    fn until_leader(&self) -> impl Future<Output = ()> + Send;
    /// Commit one command through the leader's log; `Err` when not committed.
    fn commit(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<CommandResponse, String>> + Send;
    /// Add a node as learner (caught up), then as voter when `voter`.
    fn add_node(
        &self,
        id: NodeId,
        addr: String,
        voter: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;
    fn remove_voter(&self, id: NodeId) -> impl Future<Output = Result<(), String>> + Send;
}

/// The real node: openraft and its state machine.
#[derive(Clone)]
pub struct RaftConsensus {
    pub raft: Raft,
    pub state_machine: StateMachineStore,
    quorum_clock: Arc<Mutex<QuorumClock>>,
}

/// openraft's `millis_since_quorum_ack` is computed when the core publishes its metrics, and
/// read any time later: after a stall of the process (SIGSTOP, a frozen VM) the published value
/// still says "acknowledged 100 ms ago", and a lease renewed on it outlives the stall. So the age
/// counts from the earliest moment the value can have been published: the last look at the
/// metrics before it appeared. In steady state that adds about a heartbeat interval.
#[derive(Clone, Copy, Debug)]
struct QuorumClock {
    age_ms: Option<u64>,
    published_after: Instant,
}

impl QuorumClock {
    /// The published age, counted from the earliest moment it can have been published.
    fn age_at(&self, now: Instant) -> Option<u64> {
        let since = now
            .saturating_duration_since(self.published_after)
            .as_millis();
        let since = u64::try_from(since).unwrap_or(u64::MAX);
        self.age_ms.map(|age| age.saturating_add(since))
    }
}

impl RaftConsensus {
    /// Wraps the node and starts following its metrics (needs a tokio runtime).
    pub fn new(raft: Raft, state_machine: StateMachineStore) -> RaftConsensus {
        let mut metrics = raft.metrics();
        let looked_at = Instant::now();
        metrics.mark_unchanged();
        // What was published before the first look is of unknown age: no quorum counts yet.
        let clock = Arc::new(Mutex::new(QuorumClock {
            age_ms: None,
            published_after: looked_at,
        }));
        let shared = clock.clone();
        tokio::spawn(async move {
            let mut last_look = looked_at;
            let mut electing_or_leading = false;
            loop {
                // Looking now and then, also when nothing changed, keeps the bound tight when
                // metrics change rarely, so a new leader's first published age is not taken
                // for seconds old. Only a leader's age is used, and a node becomes one through
                // candidacy, which is a change: a follower need not look between changes.
                let look = async {
                    if electing_or_leading {
                        tokio::time::sleep(QUORUM_CLOCK_LOOK).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                let changed = tokio::select! {
                    changed = metrics.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        true
                    }
                    () = look => false,
                };
                let look = Instant::now();
                if !changed && !metrics.has_changed().unwrap_or(false) {
                    last_look = look;
                    continue;
                }
                let (age_ms, state) = {
                    let m = metrics.borrow_and_update();
                    (m.millis_since_quorum_ack, m.state)
                };
                electing_or_leading = matches!(state, ServerState::Leader | ServerState::Candidate);
                *shared.lock().unwrap_or_else(|p| p.into_inner()) = QuorumClock {
                    age_ms,
                    published_after: last_look,
                };
                last_look = look;
            }
        });
        RaftConsensus {
            raft,
            state_machine,
            quorum_clock: clock,
        }
    }
}

impl Consensus for RaftConsensus {
    fn facts(&self) -> RaftFacts {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        // A stopped core keeps its last metrics (a panic leaves them saying Leader).
        let stopped = crate::consensus::core_failure(&self.raft).is_some();
        RaftFacts {
            state: if stopped {
                ServerState::Shutdown
            } else {
                m.state
            },
            term: m.current_term,
            leader: m.current_leader.filter(|_| !stopped),
            voters: membership.voter_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
            millis_since_quorum_ack: self
                .quorum_clock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .age_at(Instant::now()),
        }
    }

    fn state(&self) -> ClusterState {
        self.state_machine.current()
    }

    fn subscribe(&self) -> watch::Receiver<ClusterState> {
        self.state_machine.subscribe()
    }

    async fn until_leader(&self) {
        let mut metrics = self.raft.metrics();
        let leads = metrics
            .wait_for(|m| m.state == ServerState::Leader)
            .await
            .is_ok();
        // A core that stopped keeps its last metrics, which may say Leader.
        if !leads || crate::consensus::core_failure(&self.raft).is_some() {
            std::future::pending::<()>().await;
        }
    }

    async fn commit(&self, command: Command) -> Result<CommandResponse, String> {
        self.raft
            .client_write(command)
            .await
            .map(|resp| resp.data)
            .map_err(|e| e.to_string())
    }

    async fn add_node(&self, id: NodeId, addr: String, voter: bool) -> Result<(), String> {
        let learner = self.facts().nodes.contains_key(&id);
        if !learner {
            self.raft
                .add_learner(id, BasicNode { addr }, true)
                .await
                .map_err(|e| format!("cannot add as learner: {e}"))?;
        }
        if voter {
            let change = ChangeMembers::AddVoterIds(std::iter::once(id).collect());
            self.raft
                .change_membership(change, false)
                .await
                .map_err(|e| format!("added as learner but not as voter: {e}"))?;
        }
        Ok(())
    }

    async fn remove_voter(&self, id: NodeId) -> Result<(), String> {
        let change = ChangeMembers::RemoveVoters(std::iter::once(id).collect());
        self.raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// An in-memory consensus for unit tests: commits apply at once to one state.
#[cfg(test)]
pub struct FakeConsensus {
    state: watch::Sender<ClusterState>,
    facts: std::sync::Mutex<RaftFacts>,
    pub committed: std::sync::Mutex<Vec<Command>>,
}

#[cfg(test)]
impl FakeConsensus {
    /// `me` leads `voters` (addresses `"{id}:7000"`), acknowledged by a quorum just now.
    pub fn leading(me: NodeId, voters: &[NodeId]) -> FakeConsensus {
        FakeConsensus {
            state: watch::channel(ClusterState::default()).0,
            facts: std::sync::Mutex::new(RaftFacts {
                state: ServerState::Leader,
                term: 1,
                leader: Some(me),
                voters: voters.iter().copied().collect(),
                nodes: voters.iter().map(|v| (*v, format!("{v}:7000"))).collect(),
                millis_since_quorum_ack: Some(0),
            }),
            committed: std::sync::Mutex::default(),
        }
    }

    pub fn set_facts(&self, change: impl FnOnce(&mut RaftFacts)) {
        change(&mut self.facts.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Change the committed state directly, as another coordinator's commit would.
    pub fn set_state(&self, change: impl FnOnce(&mut ClusterState)) {
        self.state.send_modify(change);
    }
}

#[cfg(test)]
impl Consensus for FakeConsensus {
    fn facts(&self) -> RaftFacts {
        self.facts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn state(&self) -> ClusterState {
        self.state.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<ClusterState> {
        self.state.subscribe()
    }

    async fn until_leader(&self) {
        while !self.facts().is_leader() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn commit(&self, command: Command) -> Result<CommandResponse, String> {
        if !self.facts().is_leader() {
            return Err("not leader".into());
        }
        let mut response = CommandResponse::Applied;
        self.state.send_modify(|s| response = s.apply(&command));
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(command);
        Ok(response)
    }

    async fn add_node(&self, id: NodeId, addr: String, voter: bool) -> Result<(), String> {
        self.set_facts(|f| {
            f.nodes.insert(id, addr);
            if voter {
                f.voters.insert(id);
            }
        });
        Ok(())
    }

    async fn remove_voter(&self, id: NodeId) -> Result<(), String> {
        self.set_facts(|f| {
            f.voters.remove(&id);
            f.nodes.remove(&id);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_published_quorum_age_keeps_growing_until_the_next_publication() {
        let looked = Instant::now();
        let clock = QuorumClock {
            age_ms: Some(100),
            published_after: looked,
        };
        assert_eq!(clock.age_at(looked), Some(100));
        // The process stalls for 3 s before anyone reads the value again: the age says so.
        assert_eq!(clock.age_at(looked + Duration::from_secs(3)), Some(3_100));
        let none = QuorumClock {
            age_ms: None,
            ..clock
        };
        assert_eq!(none.age_at(looked + Duration::from_secs(3)), None);
    }
}
