//! Start-up of a node whose Raft store is empty: ask the peers, decide with
//! [`super::recovery::plan_start`], set the vote guard, and lift it once the node's own
//! durable vote and log protect it again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use openraft::storage::RaftLogStorage;

use super::recovery::{
    Guard, PeerAnswer, StartPlan, VoteGuard, is_satisfied, may_campaign, plan_start,
};
use super::typ::StorageError;
use super::{LogStore, Raft};
use crate::client::SignedClient;
use crate::model::{ClusterState, NodeId};
use crate::wire::{Hello, HelloRaft};

/// How long one `/hello` may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between rounds of asking the peers that have not answered.
const ASK_EVERY: Duration = Duration::from_millis(250);
/// How often a node still refusing votes says what it waits for.
const NOTE_EVERY: Duration = Duration::from_secs(10);

/// True when the store holds neither a vote nor a log entry: new, or lost. Read from the
/// store itself, before openraft starts (its metrics show defaults until the core has run).
pub async fn store_is_empty(log: &mut LogStore) -> Result<bool, StorageError> {
    let vote = log.read_vote().await?;
    let state = log.get_log_state().await?;
    Ok(vote.is_none_or(|v| v == Default::default())
        && state.last_log_id.is_none()
        && state.last_purged_log_id.is_none())
}

/// What this node tells a peer that says hello.
pub fn hello_raft(raft: &Raft, state: &ClusterState) -> HelloRaft {
    let m = raft.metrics();
    let m = m.borrow();
    HelloRaft {
        initialized: m
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some(),
        term: m.current_term,
        applied: m.last_applied.map(|l| l.index),
        registered: state.members.keys().copied().collect(),
    }
}

/// Everything the start-up of an empty store needs.
pub struct Rejoin {
    pub raft: Raft,
    pub client: SignedClient,
    pub me: NodeId,
    /// Every `--raft-peers` entry, this node included: id and address.
    pub voters: Vec<(NodeId, String)>,
    pub guard: Arc<VoteGuard>,
    /// How long to wait for every peer when this node lost its store.
    pub bound: Duration,
    pub data_dir: PathBuf,
}

impl Rejoin {
    /// Ask every peer once and act on the answers; when this node lost its store and some
    /// peer is silent, keep asking in the background (the agent starts meanwhile, refusing
    /// votes) until it answers or `bound` passes.
    pub async fn start(self: Arc<Self>) {
        let deadline = Instant::now() + self.bound;
        let mut answers = BTreeMap::new();
        self.ask_round(&mut answers).await;
        match plan_start(&self.peer_ids(), &answers, false) {
            StartPlan::Ask { unanswered } => {
                warn!(
                    data_dir = %self.data_dir.display(),
                    waiting_for = %self.addrs(&unanswered),
                    bound_ms = crate::duration::whole_millis(self.bound),
                    "no raft state under --raft-data-dir, but a peer lists this node as a member: its store was wiped or lost, and with it its vote and log. Not bootstrapping, not voting or campaigning until every peer has said which term and log it holds (it may have voted for any of them); waiting for {}",
                    self.addrs(&unanswered)
                );
                tokio::spawn(self.keep_asking(answers, deadline));
            }
            plan => self.apply(plan).await,
        }
    }

    async fn keep_asking(
        self: Arc<Self>,
        mut answers: BTreeMap<NodeId, PeerAnswer>,
        deadline: Instant,
    ) {
        loop {
            tokio::time::sleep(ASK_EVERY).await;
            self.ask_round(&mut answers).await;
            let plan = plan_start(&self.peer_ids(), &answers, Instant::now() >= deadline);
            if !matches!(plan, StartPlan::Ask { .. }) {
                self.apply(plan).await;
                return;
            }
        }
    }

    fn peer_ids(&self) -> Vec<NodeId> {
        self.voters
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.me)
            .collect()
    }

    fn addrs(&self, ids: &[NodeId]) -> String {
        let names: Vec<&str> = self
            .voters
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .map(|(_, addr)| addr.as_str())
            .collect();
        names.join(", ")
    }

    /// Ask every peer that has not answered yet, all at once.
    async fn ask_round(&self, answers: &mut BTreeMap<NodeId, PeerAnswer>) {
        let pending: Vec<&(NodeId, String)> = self
            .voters
            .iter()
            .filter(|(id, _)| *id != self.me && !answers.contains_key(id))
            .collect();
        let asked =
            futures_util::future::join_all(pending.iter().map(|(id, addr)| self.ask(*id, addr)))
                .await;
        for (peer, answer) in pending.iter().zip(asked) {
            if let Some(answer) = answer {
                answers.insert(peer.0, answer);
            }
        }
    }

    async fn ask(&self, id: NodeId, addr: &str) -> Option<PeerAnswer> {
        let answer = self
            .client
            .call(
                reqwest::Method::POST,
                addr,
                "/hello",
                Some(b"{}".to_vec()),
                Some(HELLO_TIMEOUT),
            )
            .await;
        let hello: Hello = match answer.map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(hello)) => hello,
            Ok(Err(e)) => {
                debug!(peer = addr, error = %e, "unreadable hello");
                return None;
            }
            Err(e) => {
                debug!(peer = addr, error = %e, "no hello yet");
                return None;
            }
        };
        if hello.node != id {
            debug!(
                peer = addr,
                node = hello.node,
                "another node answers at this address"
            );
            return None;
        }
        // An agent older than these fields cannot tell us its state.
        let raft = hello.raft?;
        Some(PeerAnswer {
            initialized: raft.initialized,
            term: raft.term,
            applied: raft.applied,
            knows_asker: raft.registered.contains(&self.me),
        })
    }

    async fn apply(&self, plan: StartPlan) {
        let guard = Guard::from_plan(&plan);
        self.guard.set(guard);
        match &plan {
            StartPlan::Bootstrap { term_floor } => {
                self.raft.runtime_config().elect(true);
                let members: BTreeMap<NodeId, BasicNode> = self
                    .voters
                    .iter()
                    .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                    .collect();
                match self.raft.initialize(members).await {
                    Ok(()) => info!(
                        voters = self.voters.len(),
                        peers_term = term_floor,
                        "initialized a new cluster with every --raft-peers entry as voter"
                    ),
                    Err(e) => {
                        debug!(error = %e, "initialize skipped: this node already has a log or vote")
                    }
                }
            }
            StartPlan::JoinNew { term_floor } => info!(
                votes_above_term = term_floor,
                "no raft state under --raft-data-dir and the peers hold a cluster this node never ran in: joining it as a new member, not bootstrapping; the leader sends the log"
            ),
            StartPlan::Recover {
                term_floor,
                log_floor,
                unanswered,
            } => {
                if !unanswered.is_empty() {
                    warn!(
                        silent = %self.addrs(unanswered),
                        "{} did not answer within {:?}: deciding from the peers that did; a vote this node cast for a silent peer before losing its store is not accounted for",
                        self.addrs(unanswered),
                        self.bound
                    );
                }
                warn!(
                    data_dir = %self.data_dir.display(),
                    refusing_votes_up_to_term = term_floor,
                    log_must_reach = ?log_floor,
                    "no raft state under --raft-data-dir, but peers list this node as a member: its store was wiped or lost. Recovering: no bootstrap; no vote or candidacy in any term up to {term_floor} (it may have voted in any of them), and none before the leader has sent back the committed log (up to index {}); then it votes and campaigns as before",
                    log_floor.map_or_else(|| "none".to_string(), |i| i.to_string())
                );
            }
            StartPlan::Ask { .. } => return,
        }
        self.lift_when_safe(guard);
    }

    /// Watch the node's term and log; enable campaigns and open the guard as soon as its own
    /// durable state refuses what the guard refuses.
    fn lift_when_safe(&self, guard: Guard) {
        let raft = self.raft.clone();
        let shared = self.guard.clone();
        tokio::spawn(async move {
            let mut metrics = raft.metrics();
            let mut campaigning = false;
            let mut noted = Instant::now();
            loop {
                // Applied, not only appended: until the state machine has the committed
                // state back, this node's view (its /state, its Sentinel endpoint) is empty,
                // not old, and says so.
                let (term, last) = {
                    let m = metrics.borrow_and_update();
                    (m.current_term, m.last_applied.map(|l| l.index))
                };
                if !campaigning && may_campaign(guard, term, last) {
                    raft.runtime_config().elect(true);
                    campaigning = true;
                }
                if is_satisfied(guard, term, last) {
                    shared.set(Guard::Open);
                    if matches!(guard, Guard::Lost { .. }) {
                        warn!(
                            term,
                            last_log_index = ?last,
                            "recovered from the lost raft store: the log is back and the term is past every term this node may have voted in; voting and campaigning normally again"
                        );
                    }
                    return;
                }
                if let Guard::Lost {
                    term_floor,
                    log_floor,
                } = guard
                    && noted.elapsed() >= NOTE_EVERY
                {
                    noted = Instant::now();
                    warn!(
                        term,
                        last_log_index = ?last,
                        refusing_votes_up_to_term = term_floor,
                        log_must_reach = ?log_floor,
                        "still recovering the lost raft store: not voting until a leader has sent the committed log (no leader can be elected without this node if fewer than a quorum of the others are up)"
                    );
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(NOTE_EVERY) => {}
                }
            }
        });
    }
}
