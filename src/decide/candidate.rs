//! Who may become master right now, why each other member may not, and the order
//! in which the eligible ones are preferred.

use std::cmp::Ordering;
use std::fmt;

use super::{Moment, Policy, Reports};
use crate::model::{
    ClusterState, Member, MemberKind, Millis, NodeId, RedisHealth, RedisRole, RedisStatus,
};

/// A member that could be promoted: eligible, freshly reported, Redis up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    pub id: NodeId,
    pub member: &'a Member,
    pub status: &'a RedisStatus,
}

/// Why a member is not a candidate; shown to operators when nobody can be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Witness,
    NoPromote,
    NoRedisAddr,
    NoReport,
    Stale(Millis),
    RedisDown,
    NoRedisStatus,
    Lagging(u64),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Witness => f.write_str("witness"),
            Refusal::NoPromote => f.write_str("no-promote"),
            Refusal::NoRedisAddr => f.write_str("no redis address"),
            Refusal::NoReport => f.write_str("no report"),
            Refusal::Stale(age) => write!(f, "stale report ({} ms old)", age.0),
            Refusal::RedisDown => f.write_str("redis down"),
            Refusal::NoRedisStatus => f.write_str("no redis status"),
            Refusal::Lagging(bytes) => write!(f, "lagging {bytes} bytes"),
        }
    }
}

/// Every registered member sorted into candidates and refusals.
#[derive(Debug, Default)]
pub(crate) struct Field<'a> {
    pub candidates: Vec<Candidate<'a>>,
    pub refused: Vec<(&'a str, Refusal)>,
}

impl<'a> Field<'a> {
    /// Assess every registered member except `exclude` (the failed master: it is the
    /// one being replaced, so it is neither a candidate nor worth explaining).
    pub(crate) fn assess(
        state: &'a ClusterState,
        reports: &'a Reports,
        policy: &Policy,
        now: &Moment,
        exclude: Option<NodeId>,
    ) -> Field<'a> {
        let mut field = Field::default();
        for (&id, member) in &state.members {
            if Some(id) == exclude {
                continue;
            }
            match eligible_status(id, member, reports, policy, now) {
                Ok(status) => field.candidates.push(Candidate { id, member, status }),
                Err(refusal) => field.refused.push((member.name.as_str(), refusal)),
            }
        }
        field
    }

    /// Move every candidate more than `max_lag` bytes behind `reference` to the refusals:
    /// promoting it would silently drop the writes it never received.
    pub(crate) fn refuse_lagging(&mut self, reference: u64, max_lag: u64) {
        let refused = &mut self.refused;
        self.candidates.retain(|c| {
            let lag = reference.saturating_sub(c.status.repl_offset);
            if lag > max_lag {
                refused.push((c.member.name.as_str(), Refusal::Lagging(lag)));
                false
            } else {
                true
            }
        });
    }

    /// "b lagging 5000 bytes, w witness": one clause per refused member, by name.
    pub(crate) fn describe_refusals(&self) -> String {
        if self.refused.is_empty() {
            return "no other member is registered".to_string();
        }
        let mut refused = self.refused.clone();
        refused.sort_by(|a, b| a.0.cmp(b.0));
        refused
            .iter()
            .map(|(name, refusal)| format!("{name} {refusal}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The member's Redis status if it may be promoted now, else why not. Eligibility
/// itself is `Member::can_be_master`; the kind/flag checks only pick the explanation.
fn eligible_status<'a>(
    id: NodeId,
    member: &Member,
    reports: &'a Reports,
    policy: &Policy,
    now: &Moment,
) -> Result<&'a RedisStatus, Refusal> {
    if !member.can_be_master() {
        return Err(if member.kind == MemberKind::Witness {
            Refusal::Witness
        } else if member.no_promote {
            Refusal::NoPromote
        } else {
            Refusal::NoRedisAddr
        });
    }
    let received = reports.latest.get(&id).ok_or(Refusal::NoReport)?;
    if !now.fresh(received, policy) {
        return Err(Refusal::Stale(now.since(received.received_at)));
    }
    match &received.report.redis {
        Some(RedisHealth::Up(status)) => Ok(status),
        Some(RedisHealth::Down { .. }) => Err(Refusal::RedisDown),
        None => Err(Refusal::NoRedisStatus),
    }
}

/// First election: a node holding data beats an empty one, and a Redis that already
/// is master beats a replica (so an existing master with data keeps its role), then
/// the usual failover order.
pub(crate) fn first_election_order(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    let has_data = |c: &Candidate<'_>| c.status.keys > 0;
    let is_master = |c: &Candidate<'_>| c.status.role == RedisRole::Master;
    has_data(b)
        .cmp(&has_data(a))
        .then_with(|| is_master(b).cmp(&is_master(a)))
        .then_with(|| failover_order(a, b))
}

/// Failover: most replicated bytes, then operator priority, then name; the id only
/// makes the order total if two members share a name.
pub(crate) fn failover_order(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    b.status
        .repl_offset
        .cmp(&a.status.repl_offset)
        .then_with(|| b.member.priority.cmp(&a.member.priority))
        .then_with(|| a.member.name.cmp(&b.member.name))
        .then_with(|| a.id.cmp(&b.id))
}
