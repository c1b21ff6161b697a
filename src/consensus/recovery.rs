//! A node whose Raft store is empty at start: is it new, or did it lose its store?
//!
//! Raft's safety rests on a node remembering its vote and its log. A wiped `raft.redb` forgets
//! both: voting again in a term it already voted in can elect two leaders in that term, and
//! voting for a candidate that lacks entries this node had acknowledged can lose committed
//! entries. So a node with an empty store asks its peers (`/hello`) before it votes:
//!
//! - no peer holds a cluster with history: a new cluster (or a new node of one that never had
//!   a leader, so nothing can be lost): bootstrap with the full voter set, as every node does;
//! - peers hold a cluster but none lists this node as registered: a new member; the leader
//!   sends it the log;
//! - a peer lists this node as registered: it ran in this cluster and lost its store. It waits
//!   (bounded) for every peer to answer, then votes only in terms above the highest term they
//!   report — any term it voted in is at most the term of the candidate it voted for, and that
//!   candidate is among them — and only once its log again holds the highest index they
//!   report applied, so its vote cannot elect a leader missing a committed entry.
//!
//! A node that hears from no peer at all cannot tell the first start of a new cluster from a
//! wipe while every peer is down; it bootstraps, as the first node of a deployment must.
//! Pure rules here, with table tests; `Agent` gathers the answers and `serve_rpc_guarded`
//! enforces the verdict.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::model::NodeId;

/// What one peer answered about its Raft state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAnswer {
    /// It holds a membership (it bootstrapped or was replicated to).
    pub initialized: bool,
    pub term: u64,
    /// The highest log index it has applied (committed), if any.
    pub applied: Option<u64>,
    /// Its committed state lists the asking node as a registered member.
    pub knows_asker: bool,
}

/// What a node with an empty store does, given its peers' answers so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPlan {
    /// No peer holds a cluster with history: initialize with every `--raft-peers` entry.
    Bootstrap { term_floor: u64 },
    /// A formed cluster this node never ran in: wait for the leader's log, do not initialize
    /// (the membership may have changed since `--raft-peers` was written).
    JoinNew { term_floor: u64 },
    /// This node lost its store: no bootstrap, no vote or candidacy up to `term_floor`, and
    /// none before its log reaches `log_floor`. `unanswered`: peers that never answered
    /// within the bound (their votes and logs are not accounted for).
    Recover {
        term_floor: u64,
        log_floor: Option<u64>,
        unanswered: Vec<NodeId>,
    },
    /// This node lost its store and these peers have not answered yet: ask again.
    Ask { unanswered: Vec<NodeId> },
}

/// The plan for a node whose store is empty, from the answers of `peers` (the other voters)
/// so far; `waited_out` once the bound for asking has passed.
pub fn plan_start(
    peers: &[NodeId],
    answers: &BTreeMap<NodeId, PeerAnswer>,
    waited_out: bool,
) -> StartPlan {
    let term_floor = answers.values().map(|a| a.term).max().unwrap_or(0);
    if !answers.values().any(|a| a.knows_asker) {
        // Index 0 is the membership every node bootstraps with; a leader's first entry is 1.
        let history = answers
            .values()
            .any(|a| a.initialized && a.applied.is_some_and(|i| i > 0));
        return if history {
            StartPlan::JoinNew { term_floor }
        } else {
            StartPlan::Bootstrap { term_floor }
        };
    }
    let unanswered: Vec<NodeId> = peers
        .iter()
        .copied()
        .filter(|p| !answers.contains_key(p))
        .collect();
    if !unanswered.is_empty() && !waited_out {
        return StartPlan::Ask { unanswered };
    }
    StartPlan::Recover {
        term_floor,
        log_floor: answers.values().filter_map(|a| a.applied).max(),
        unanswered,
    }
}

/// What this node may vote for, enforced on every vote request before openraft sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// The store was empty and the peers are being asked: no vote, no candidacy yet.
    Asking,
    /// A new node: no vote in a term up to `term_floor`; it may campaign.
    New { term_floor: u64 },
    /// It lost its store: no vote or candidacy up to `term_floor`, none before its log
    /// reaches `log_floor`.
    Lost {
        term_floor: u64,
        log_floor: Option<u64>,
    },
    /// Its own durable vote and log protect it: openraft's rules alone.
    Open,
}

impl Guard {
    pub fn from_plan(plan: &StartPlan) -> Guard {
        match plan {
            StartPlan::Bootstrap { term_floor } | StartPlan::JoinNew { term_floor } => Guard::New {
                term_floor: *term_floor,
            },
            StartPlan::Recover {
                term_floor,
                log_floor,
                ..
            } => Guard::Lost {
                term_floor: *term_floor,
                log_floor: *log_floor,
            },
            StartPlan::Ask { .. } => Guard::Asking,
        }
    }
}

/// May this node grant a vote request for `term`, its own log ending at `last_index`?
/// `Err` says why not.
pub fn may_vote(guard: Guard, term: u64, last_index: Option<u64>) -> Result<(), String> {
    match guard {
        Guard::Open => Ok(()),
        Guard::Asking => Err(format!(
            "not voting in term {term}: this node's raft store was empty at start and its peers have not all answered yet"
        )),
        Guard::New { term_floor } if term <= term_floor => Err(format!(
            "not voting in term {term}: this node's raft store was empty at start and its peers were already at term {term_floor}"
        )),
        Guard::New { .. } => Ok(()),
        Guard::Lost { term_floor, .. } if term <= term_floor => Err(format!(
            "not voting in term {term}: this node lost its raft store and may have voted in any term up to {term_floor}"
        )),
        Guard::Lost { log_floor, .. } if last_index < log_floor => Err(format!(
            "not voting in term {term}: this node lost its raft store and its log (at {}) does not yet hold the committed entries up to {}",
            show(last_index),
            show(log_floor)
        )),
        Guard::Lost { .. } => Ok(()),
    }
}

/// Whether a guard has served its purpose: the node's own durable state now refuses
/// everything the guard refused. `current_term` is its term, `last_index` how far its
/// log is applied.
pub fn is_satisfied(guard: Guard, current_term: u64, last_index: Option<u64>) -> bool {
    match guard {
        Guard::Open => true,
        Guard::Asking => false,
        // Its vote is durable at `current_term`: openraft refuses lower terms itself.
        Guard::New { term_floor } => current_term >= term_floor,
        Guard::Lost {
            term_floor,
            log_floor,
        } => current_term >= term_floor && last_index >= log_floor,
    }
}

/// Whether openraft may start elections here: a candidate votes for itself, so a node that
/// lost its store campaigns only once its guard is satisfied; a new node at once.
pub fn may_campaign(guard: Guard, current_term: u64, last_index: Option<u64>) -> bool {
    match guard {
        Guard::New { .. } | Guard::Open => true,
        Guard::Asking | Guard::Lost { .. } => is_satisfied(guard, current_term, last_index),
    }
}

fn show(index: Option<u64>) -> String {
    index.map_or_else(|| "nothing".to_string(), |i| format!("index {i}"))
}

/// The guard shared by the peer port (which enforces it) and the agent (which sets it).
#[derive(Debug)]
pub struct VoteGuard(Mutex<Guard>);

impl Default for VoteGuard {
    fn default() -> Self {
        VoteGuard(Mutex::new(Guard::Open))
    }
}

impl VoteGuard {
    pub fn new(guard: Guard) -> VoteGuard {
        VoteGuard(Mutex::new(guard))
    }

    pub fn get(&self) -> Guard {
        // A `Copy` value cannot be left half-written, so poisoning is harmless.
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, guard: Guard) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = guard;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(initialized: bool, term: u64, applied: Option<u64>, knows: bool) -> PeerAnswer {
        PeerAnswer {
            initialized,
            term,
            applied,
            knows_asker: knows,
        }
    }

    #[test]
    fn start_plans() {
        let peers = [2, 3];
        type Case = (&'static str, Vec<(NodeId, PeerAnswer)>, bool, StartPlan);
        let cases: Vec<Case> = vec![
            (
                "nobody answers: the first node of a new cluster",
                vec![],
                false,
                StartPlan::Bootstrap { term_floor: 0 },
            ),
            (
                "peers as new as we are (all started at once)",
                vec![(2, answer(false, 0, None, false))],
                false,
                StartPlan::Bootstrap { term_floor: 0 },
            ),
            (
                "site by site: the first node campaigns alone, never had a leader",
                vec![(2, answer(true, 7, None, false))],
                false,
                StartPlan::Bootstrap { term_floor: 7 },
            ),
            (
                "the first node applied only the bootstrap membership",
                vec![(2, answer(true, 3, Some(0), false))],
                false,
                StartPlan::Bootstrap { term_floor: 3 },
            ),
            (
                "a formed cluster that never saw us: a new member",
                vec![
                    (2, answer(true, 4, Some(9), false)),
                    (3, answer(true, 5, Some(8), false)),
                ],
                false,
                StartPlan::JoinNew { term_floor: 5 },
            ),
            (
                "registered with a peer, one peer silent: ask again",
                vec![(2, answer(true, 4, Some(9), true))],
                false,
                StartPlan::Ask {
                    unanswered: vec![3],
                },
            ),
            (
                "registered, every peer answered: highest term and applied index",
                vec![
                    (2, answer(true, 6, Some(12), true)),
                    (3, answer(true, 9, Some(10), false)),
                ],
                false,
                StartPlan::Recover {
                    term_floor: 9,
                    log_floor: Some(12),
                    unanswered: vec![],
                },
            ),
            (
                "registered, the bound passed with a peer silent: decide, naming it",
                vec![(2, answer(true, 4, Some(9), true))],
                true,
                StartPlan::Recover {
                    term_floor: 4,
                    log_floor: Some(9),
                    unanswered: vec![3],
                },
            ),
        ];
        for (what, answers, waited_out, want) in cases {
            let answers: BTreeMap<NodeId, PeerAnswer> = answers.into_iter().collect();
            assert_eq!(plan_start(&peers, &answers, waited_out), want, "{what}");
        }
    }

    #[test]
    fn votes_and_candidacies() {
        let lost = Guard::Lost {
            term_floor: 5,
            log_floor: Some(10),
        };
        let new = Guard::New { term_floor: 5 };
        // (guard, vote term, own last index, may vote, satisfied at term 5, may campaign)
        let cases = [
            (Guard::Asking, 100, Some(100), false, false, false),
            (Guard::Open, 1, None, true, true, true),
            (new, 5, None, false, true, true),
            (new, 6, None, true, true, true),
            (lost, 5, Some(10), false, true, true),
            (lost, 6, Some(9), false, false, false),
            (lost, 6, None, false, false, false),
            (lost, 6, Some(10), true, true, true),
            (
                Guard::Lost {
                    term_floor: 5,
                    log_floor: None,
                },
                6,
                None,
                true,
                true,
                true,
            ),
        ];
        for (guard, term, last, vote, satisfied, campaign) in cases {
            assert_eq!(
                may_vote(guard, term, last).is_ok(),
                vote,
                "{guard:?} vote in {term} at {last:?}"
            );
            assert_eq!(
                is_satisfied(guard, 5, last),
                satisfied,
                "{guard:?} {last:?}"
            );
            assert_eq!(may_campaign(guard, 5, last), campaign, "{guard:?} {last:?}");
        }
        // Below its floor a node that lost its store does not campaign: its candidacy is a
        // vote for itself in a term it may have voted in.
        assert!(!may_campaign(lost, 4, Some(10)));
        assert!(!is_satisfied(new, 4, None));
    }
}
