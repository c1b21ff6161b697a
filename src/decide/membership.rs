//! Who may join, report and leave: pure rules over the committed state, the Raft
//! membership and the coordinator's reports.

use std::collections::BTreeSet;

use super::{Policy, Reports, is_fresh};
use crate::addr::node_id;
use crate::model::{ClusterState, Millis, NodeId};

/// Why a membership request is refused, with the HTTP status that says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipRefusal {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

impl MembershipRefusal {
    pub fn status(&self) -> u16 {
        match self {
            MembershipRefusal::NotFound(_) => 404,
            MembershipRefusal::Conflict(_) => 409,
            MembershipRefusal::Invalid(_) => 400,
        }
    }
}

/// Only nodes of the Raft membership (voters and learners) report and register: a removed
/// member stays removed, and a forged report for an unknown node id changes nothing.
pub fn accepts_report(raft_members: &BTreeSet<NodeId>, node: NodeId) -> bool {
    raft_members.contains(&node)
}

/// A member to take out: its id, whether it votes, whether it is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    pub id: NodeId,
    pub voter: bool,
    pub registered: bool,
}

/// Take a member (by name or `--raft-peers` address) out, if it is not the master and a
/// majority of the remaining voters is live (`me`, the coordinator, always is).
pub fn plan_removal(
    state: &ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: Millis,
    me: NodeId,
    name: &str,
) -> Result<Removal, MembershipRefusal> {
    let by_name = state
        .members
        .iter()
        .find(|(_, m)| m.name == name)
        .map(|(id, _)| *id);
    let by_addr = reports
        .voters
        .iter()
        .copied()
        .find(|id| node_id(name) == *id);
    let id = by_name
        .or(by_addr)
        .ok_or_else(|| MembershipRefusal::NotFound(format!("no member named {name}")))?;
    if state.master == Some(id) {
        return Err(MembershipRefusal::Conflict(format!(
            "{name} is the master; switch over first"
        )));
    }
    let remaining: BTreeSet<NodeId> = reports
        .voters
        .iter()
        .copied()
        .filter(|v| *v != id)
        .collect();
    let live = remaining
        .iter()
        .filter(|v| {
            **v == me
                || reports
                    .latest
                    .get(v)
                    .is_some_and(|r| is_fresh(r, policy, now))
        })
        .count();
    if remaining.is_empty() || live * 2 <= remaining.len() {
        return Err(MembershipRefusal::Conflict(format!(
            "removing {name} would leave {} voters of which only {live} are live: no majority could serve",
            remaining.len()
        )));
    }
    Ok(Removal {
        id,
        voter: reports.voters.contains(&id),
        registered: state.members.contains_key(&id),
    })
}

/// Add the agent at `addr` (a normalized `--raft-peers` entry) once it has answered a
/// signed hello with `answered` (its node id; `None`: no answer). Refused when it did not
/// answer as the agent of that address: a voter that cannot vote is one more failure the
/// cluster can no longer survive.
pub fn plan_addition(
    raft_members: &BTreeSet<NodeId>,
    voters: &BTreeSet<NodeId>,
    addr: &str,
    as_voter: bool,
    answered: Result<NodeId, String>,
) -> Result<NodeId, MembershipRefusal> {
    let id = node_id(addr);
    if voters.contains(&id) || (!as_voter && raft_members.contains(&id)) {
        return Err(MembershipRefusal::Conflict(format!(
            "{addr} is already a member"
        )));
    }
    match answered {
        Ok(node) if node == id => Ok(id),
        Ok(node) => Err(MembershipRefusal::Invalid(format!(
            "the agent at {addr} answered as node {node}, not {id}: its own --raft-peers entry differs from {addr}"
        ))),
        Err(why) => Err(MembershipRefusal::Invalid(format!(
            "no agent sharing our secret answers at {addr}: {why}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::ReceivedReport;
    use crate::model::{Member, MemberKind, NodeReport};

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            site: name.into(),
            kind: MemberKind::Data,
            redis_addr: Some(format!("{name}:6379")),
            api_addr: format!("{name}:8080"),
            raft_addr: format!("{name}:7000"),
            priority: 100,
            no_promote: false,
            sentinel_addr: None,
        }
    }

    fn policy() -> Policy {
        Policy {
            redis_down_after: Millis(300),
            lease: Millis(3_000),
            down_after: Millis(5_000),
            max_lag_bytes: 0,
            switchover_timeout: Millis(5_000),
            election_timeout: Millis(500),
        }
    }

    /// Three registered voters a, b, c; `fresh` of them reported just now.
    fn cluster(fresh: &[&str]) -> (ClusterState, Reports) {
        let mut state = ClusterState::default();
        let mut reports = Reports::default();
        for name in ["a", "b", "c"] {
            let id = node_id(&format!("{name}:7000"));
            state.members.insert(id, member(name));
            reports.voters.insert(id);
            if fresh.contains(&name) {
                let report = NodeReport {
                    node: id,
                    member: member(name),
                    redis: None,
                    fenced: false,
                    handover_paused: false,
                    master_accepts_writes: None,
                };
                reports.latest.insert(
                    id,
                    ReceivedReport {
                        report,
                        received_at: Millis(10_000),
                    },
                );
            }
        }
        state.master = Some(node_id("a:7000"));
        (state, reports)
    }

    #[test]
    fn removal_needs_a_live_majority_of_the_rest_and_never_takes_the_master() {
        let me = node_id("b:7000");
        let cases: [(&[&str], &str, Result<NodeId, u16>); 6] = [
            (&["a", "b", "c"], "c", Ok(node_id("c:7000"))),
            (&["a"], "c", Ok(node_id("c:7000"))),
            (&[], "c", Err(409)),
            (&["a", "b", "c"], "a", Err(409)),
            (&["a", "b", "c"], "nobody", Err(404)),
            (&["a", "b", "c"], "c:7000", Ok(node_id("c:7000"))),
        ];
        for (fresh, name, want) in cases {
            let (state, reports) = cluster(fresh);
            let got = plan_removal(&state, &reports, &policy(), Millis(11_000), me, name)
                .map(|r| r.id)
                .map_err(|e| e.status());
            assert_eq!(got, want, "{fresh:?} remove {name}");
        }
    }

    #[test]
    fn reports_only_from_raft_members() {
        let members: BTreeSet<NodeId> = [1, 2].into();
        assert!(accepts_report(&members, 1));
        assert!(!accepts_report(&members, 3));
    }

    #[test]
    fn addition_needs_the_agent_of_that_address_to_answer() {
        let addr = "d:7000";
        let id = node_id(addr);
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let mut members = voters.clone();
        assert_eq!(plan_addition(&members, &voters, addr, true, Ok(id)), Ok(id));
        let refused = [
            plan_addition(&members, &voters, addr, true, Err("refused".into())),
            plan_addition(&members, &voters, addr, true, Ok(7)),
        ];
        for r in refused {
            assert_eq!(r.map_err(|e| e.status()), Err(400));
        }
        members.insert(id);
        // A learner may be promoted to voter, but not added again as a learner.
        assert_eq!(plan_addition(&members, &voters, addr, true, Ok(id)), Ok(id));
        assert_eq!(
            plan_addition(&members, &voters, addr, false, Ok(id)).map_err(|e| e.status()),
            Err(409)
        );
    }
}
