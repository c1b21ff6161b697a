//! What the loops need of Raft, behind a trait: the real openraft node, or an in-memory
//! fake for unit tests of the loops.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio::sync::watch;

use crate::consensus::Raft;
use crate::consensus::state_machine::StateMachineStore;
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
}

impl RaftFacts {
    pub fn is_leader(&self) -> bool {
        self.state == ServerState::Leader
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
    /// How long ago, as of now, a quorum acknowledged this node as leader; `None` unless
    /// it leads. Never younger than the truth, even right after the process stalled.
    fn quorum_ack_age(&self) -> impl Future<Output = Option<u64>> + Send;
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
}

impl RaftConsensus {
    pub fn new(raft: Raft, state_machine: StateMachineStore) -> RaftConsensus {
        RaftConsensus {
            raft,
            state_machine,
        }
    }
}

/// An age openraft published, as of a moment `since_asked` after the publication was asked
/// for: the publication came after the asking, so the age has grown by at most that much.
fn aged_since_asking(published_ms: Option<u64>, since_asked: Duration) -> Option<u64> {
    let since = crate::duration::whole_millis(since_asked);
    published_ms.map(|age| age.saturating_add(since))
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
        }
    }

    /// openraft computes `millis_since_quorum_ack` when its core publishes metrics, and a
    /// published value read later understates the age by however long it sat there: after a
    /// stall of the process (SIGSTOP, a frozen VM) it still says "acknowledged 100 ms ago",
    /// and a lease renewed on it would outlive the stall. So this asks the core for a turn of
    /// its loop (it publishes at the top of every turn) and takes the first publication after
    /// asking, aged from the moment of asking. The runtime is single-threaded, so a
    /// publication is computed and sent in one go between two polls of this task: one seen
    /// after asking was computed after it. No timer polls the metrics meanwhile.
    async fn quorum_ack_age(&self) -> Option<u64> {
        let mut metrics = self.raft.metrics();
        metrics.mark_unchanged();
        let asked = Instant::now();
        self.raft.external_request(|_| ());
        metrics.changed().await.ok()?;
        let (state, published) = {
            let m = metrics.borrow_and_update();
            (m.state, m.millis_since_quorum_ack)
        };
        // A stopped core keeps its last metrics (a panic leaves them saying Leader).
        if state != ServerState::Leader || crate::consensus::core_failure(&self.raft).is_some() {
            return None;
        }
        aged_since_asking(published, asked.elapsed())
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
    quorum_ack_age: std::sync::Mutex<Option<u64>>,
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
            }),
            quorum_ack_age: std::sync::Mutex::new(Some(0)),
            committed: std::sync::Mutex::default(),
        }
    }

    pub fn set_facts(&self, change: impl FnOnce(&mut RaftFacts)) {
        change(&mut self.facts.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// What a quorum acknowledgement's age reads while leading (`None`: no quorum).
    pub fn set_quorum_ack_age(&self, age: Option<u64>) {
        *self
            .quorum_ack_age
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = age;
    }

    /// [`Consensus::quorum_ack_age`] without awaiting.
    pub fn quorum_ack_age_now(&self) -> Option<u64> {
        let age = *self
            .quorum_ack_age
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        age.filter(|_| self.facts().is_leader())
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

    async fn quorum_ack_age(&self) -> Option<u64> {
        self.quorum_ack_age_now()
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

    #[test]
    fn a_published_age_counts_from_the_asking() {
        // Published 100 ms, read 3 s after asking (the process stalled): 3.1 s.
        assert_eq!(
            aged_since_asking(Some(100), Duration::from_secs(3)),
            Some(3_100)
        );
        assert_eq!(aged_since_asking(Some(100), Duration::ZERO), Some(100));
        assert_eq!(aged_since_asking(None, Duration::from_secs(3)), None);
        assert_eq!(
            aged_since_asking(Some(u64::MAX), Duration::from_secs(1)),
            Some(u64::MAX)
        );
    }
}
