//! The coordinator's failover rules: a pure function of the committed state,
//! the latest reports and the time. No async, no I/O, no clock.

mod candidate;
pub mod leadership;
pub mod lease;
pub mod local;
pub mod membership;
pub mod round_trip;
mod switchover;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::{
    CandidateOffset, ClusterState, Command, DownKind, Member, MemberKind, Millis, NodeId,
    NodeReport, RedisHealth, RedisRole,
};

use crate::addr::same_redis_addr;
use candidate::{Field, failover_order, first_election_order};
pub use switchover::{SwitchoverRefusal, plan_switchover};

/// Tunables that shape every decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The master's own agent must report its Redis down this long before we fail over.
    pub redis_down_after: Millis,
    /// Silence from the master's agent (with no replica seeing a live link) before failover.
    /// Also the fencing bound: never commit a new master sooner after the old one's last contact.
    pub down_after: Millis,
    /// How long a master's agent lets its Redis take writes after its last confirmed quorum
    /// contact (`--lease`, less than `down_after`).
    pub lease: Millis,
    /// Refuse a candidate whose offset is further behind the master's last known offset.
    pub max_lag_bytes: u64,
    /// How long a planned switchover may hold the master's writes paused before it is abandoned.
    pub switchover_timeout: Millis,
    /// `--raft-election-timeout`: no node campaigns, and none votes for another, sooner
    /// than this after it last heard the leader.
    pub election_timeout: Millis,
}

/// A report and when the coordinator received it (coordinator's monotonic clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedReport {
    pub report: NodeReport,
    pub received_at: Millis,
}

/// Everything the coordinator has heard, as one snapshot for one decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reports {
    /// When this node became leader: nobody counts as silent for longer than that.
    pub leader_since: Millis,
    /// Voter ids from the Raft membership.
    pub voters: BTreeSet<NodeId>,
    pub latest: BTreeMap<NodeId, ReceivedReport>,
    /// When this coordinator first saw the committed switchover in progress, if any.
    pub switchover_since: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub commands: Vec<Command>,
    /// One human-readable sentence: what was decided and why (or why nothing).
    pub reason: String,
    /// When the failure (or switchover) that a `SetMaster` answers began, for metrics.
    pub failing_since: Option<Millis>,
    /// The earliest moment at which the same state and reports may decide otherwise (a
    /// report going stale, a silence or wait reaching its bound, a switchover timing out):
    /// the coordinator decides again then. `None`: only new reports or commits can change
    /// this decision.
    pub decide_again_at: Option<Millis>,
}

/// The decision's `now`. Every rule asks it whether a bound has come, and it keeps the
/// earliest bound not yet come: until then every such question gets the same answer, so the
/// same inputs decide the same commands. That makes `decide_again_at` complete by
/// construction, as long as no rule branches on `now` itself (only reasons print it).
pub(crate) struct Moment {
    now: Millis,
    next_change: Cell<Option<Millis>>,
}

impl Moment {
    pub(crate) fn new(now: Millis) -> Moment {
        Moment {
            now,
            next_change: Cell::new(None),
        }
    }

    /// Whether `at` has come; if not, the answer changes at `at`.
    pub(crate) fn reached(&self, at: Millis) -> bool {
        if self.now >= at {
            return true;
        }
        let earliest = self.next_change.get().map_or(at, |next| next.min(at));
        self.next_change.set(Some(earliest));
        false
    }

    /// Whether `received` still counts (see [`is_fresh`]).
    pub(crate) fn fresh(&self, received: &ReceivedReport, policy: &Policy) -> bool {
        !self.reached(fresh_until(received, policy))
    }

    /// How long ago `earlier` was, for reasons only.
    pub(crate) fn since(&self, earlier: Millis) -> Millis {
        self.now.since(earlier)
    }

    /// The earliest bound asked about that has not come yet.
    pub(crate) fn next_change(&self) -> Option<Millis> {
        self.next_change.get()
    }
}

/// Decide what to commit next.
///
/// Registrations come first and are applied to a private copy of the state, so a
/// member that just reported can be elected in the same call.
pub fn decide(state: &ClusterState, reports: &Reports, policy: &Policy, now: Millis) -> Decision {
    let now = Moment::new(now);
    let registrations = registrations(state, reports);
    let mut working = state.clone();
    for command in &registrations {
        working.apply(command);
    }
    let outcome = match working.master {
        _ if working.paused => {
            Outcome::wait("paused for maintenance: no automatic failover".to_string())
        }
        None => first_election(&working, reports, policy, &now),
        Some(master) => watch_master(&working, reports, policy, &now, master),
    };
    let reason = if registrations.is_empty() {
        outcome.reason
    } else {
        let names: Vec<&str> = registrations
            .iter()
            .filter_map(|c| match c {
                Command::Register { member, .. } => Some(member.name.as_str()),
                _ => None,
            })
            .collect();
        format!("registering {}; {}", names.join(", "), outcome.reason)
    };
    let mut commands = registrations;
    commands.extend(outcome.command);
    Decision {
        commands,
        reason,
        failing_since: outcome.failing_since,
        decide_again_at: now.next_change(),
    }
}

/// A report counts only while younger than `down_after`: older ones describe a node
/// we may already have to treat as gone.
pub fn is_fresh(received: &ReceivedReport, policy: &Policy, now: Millis) -> bool {
    now < fresh_until(received, policy)
}

/// When `received` stops counting.
fn fresh_until(received: &ReceivedReport, policy: &Policy) -> Millis {
    received.received_at.plus(policy.down_after)
}

/// What one branch of the decision wants to commit, if anything, and why.
struct Outcome {
    command: Option<Command>,
    reason: String,
    failing_since: Option<Millis>,
}

impl Outcome {
    fn wait(reason: String) -> Outcome {
        Outcome {
            command: None,
            reason,
            failing_since: None,
        }
    }

    fn commit(command: Command, reason: String, failing_since: Option<Millis>) -> Outcome {
        Outcome {
            command: Some(command),
            reason,
            failing_since,
        }
    }
}

/// The offsets of the candidates considered, for the history.
fn candidate_offsets(field: &Field<'_>) -> Vec<CandidateOffset> {
    field
        .candidates
        .iter()
        .map(|c| CandidateOffset {
            name: c.member.name.clone(),
            offset: c.status.repl_offset,
        })
        .collect()
}

/// `Register` for every reporter whose self-description differs from the committed one.
fn registrations(state: &ClusterState, reports: &Reports) -> Vec<Command> {
    reports
        .latest
        .iter()
        .filter(|(id, received)| state.members.get(id) != Some(&received.report.member))
        .map(|(&id, received)| Command::Register {
            id,
            member: received.report.member.clone(),
        })
        .collect()
}

/// Member name, or the raw id for a voter that has not registered yet.
fn display_name(state: &ClusterState, id: NodeId) -> String {
    state
        .members
        .get(&id)
        .map_or_else(|| format!("node {id}"), |m| m.name.clone())
}

/// No master yet: wait until everyone had a chance to report (so an existing master
/// holding data is not passed over for an empty node that happened to report first),
/// then elect the best-placed Redis.
fn first_election(
    state: &ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: &Moment,
) -> Outcome {
    let mut missing: Vec<String> = reports
        .voters
        .iter()
        .filter(|id| !reports.latest.contains_key(id))
        .map(|&id| display_name(state, id))
        .collect();
    missing.sort();
    if !missing.is_empty() && !now.reached(reports.leader_since.plus(policy.down_after)) {
        let leading_for = now.since(reports.leader_since);
        return Outcome::wait(format!(
            "first election waits for {} of {} members to report ({}), at most {} ms more",
            missing.len(),
            reports.voters.len(),
            missing.join(", "),
            policy.down_after.since(leading_for).0
        ));
    }
    let mut field = Field::assess(state, reports, policy, now, None);
    field.candidates.sort_by(first_election_order);
    let Some(best) = field.candidates.first() else {
        return Outcome::wait(format!(
            "no candidate for the first master: {}",
            field.describe_refusals()
        ));
    };
    let epoch = state.epoch + 1;
    let without = if missing.is_empty() {
        String::new()
    } else {
        format!(" without a report from {}", missing.join(", "))
    };
    let reason = format!(
        "first master: electing {} ({}, {} keys, offset {}) at epoch {epoch}{without}",
        best.member.name, best.status.role, best.status.keys, best.status.repl_offset
    );
    let command = Command::SetMaster {
        node: best.id,
        epoch,
        run_id: best.status.run_id.clone(),
        reason: reason.clone(),
        at_unix_ms: 0,
        candidates: candidate_offsets(&field),
    };
    Outcome::commit(command, reason, None)
}

/// Whether the committed master has failed, and if so who replaces it.
fn watch_master(
    state: &ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: &Moment,
    master: NodeId,
) -> Outcome {
    let Some(member) = state.members.get(&master) else {
        return Outcome::wait(format!(
            "committed master node {master} is not a registered member; nothing to decide"
        ));
    };
    let (cause, failing_since) = match judge_master(state, reports, policy, now, master, member) {
        Verdict::Kept(reason) => {
            return match &state.switchover {
                Some(sw) => switchover::progress(state, reports, policy, now, sw),
                None => Outcome::wait(reason),
            };
        }
        Verdict::Failed(cause, since) => (cause, since),
    };

    let mut field = Field::assess(state, reports, policy, now, Some(master));
    field.candidates.sort_by(failover_order);
    // The master's own position (if it last reported Up) is what a successor must not
    // fall too far behind; with no such figure the best candidate sets the bar.
    let master_offset = reports
        .latest
        .get(&master)
        .and_then(|r| r.report.redis.as_ref())
        .and_then(RedisHealth::status)
        .map(|s| s.repl_offset);
    let best_offset = field.candidates.first().map(|c| c.status.repl_offset);
    if let Some(reference) = master_offset.max(best_offset) {
        field.refuse_lagging(reference, policy.max_lag_bytes);
    }
    let Some(chosen) = field.candidates.first() else {
        return Outcome::wait(format!(
            "{cause}, but no candidate: {}",
            field.describe_refusals()
        ));
    };
    let epoch = state.epoch + 1;
    let reason = format!(
        "{cause}: promoting {} (offset {}) at epoch {epoch}",
        chosen.member.name, chosen.status.repl_offset
    );
    let command = Command::SetMaster {
        node: chosen.id,
        epoch,
        run_id: chosen.status.run_id.clone(),
        reason: reason.clone(),
        at_unix_ms: 0,
        candidates: candidate_offsets(&field),
    };
    Outcome::commit(command, reason, Some(failing_since))
}

/// The committed master is either kept (with why) or failed (with the cause and
/// when the failure began by the coordinator's clock).
enum Verdict {
    Kept(String),
    Failed(String, Millis),
}

fn judge_master(
    state: &ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: &Moment,
    master: NodeId,
    member: &Member,
) -> Verdict {
    let name = &member.name;
    let latest = reports.latest.get(&master);

    // The master's agent is talking to us: trust what it says about its Redis.
    // Kept on its report only while that is fresh (the moment records when it goes stale):
    // then its silence counts.
    if let Some(received) = latest.filter(|r| now.fresh(r, policy)) {
        return match &received.report.redis {
            Some(RedisHealth::Up(status))
                if state.master_run_id.as_deref() != Some(status.run_id.as_str()) =>
            {
                // A restarted Redis may have come back empty; replicas that resync
                // from it would drop their data, so it must not stay master.
                Verdict::Failed(
                    format!("master {name}'s redis restarted (run_id changed)"),
                    received.received_at,
                )
            }
            Some(RedisHealth::Up(_)) => {
                Verdict::Kept(format!("master {name} healthy (epoch {})", state.epoch))
            }
            Some(RedisHealth::Down {
                kind: DownKind::Refused,
                for_ms,
                ..
            }) => {
                // Refused means nothing listens: the process is gone, so the short
                // timeout is enough.
                if Millis(*for_ms) >= policy.redis_down_after {
                    Verdict::Failed(
                        format!("master {name}'s redis down (connection refused) for {for_ms} ms"),
                        Millis(received.received_at.0.saturating_sub(*for_ms)),
                    )
                } else {
                    Verdict::Kept(format!(
                        "master {name}'s redis down (connection refused) for {for_ms} ms; failover at {} ms",
                        policy.redis_down_after.0
                    ))
                }
            }
            Some(RedisHealth::Down {
                kind: DownKind::Unreachable,
                for_ms,
                ..
            }) => {
                // A hung or unreachable process may still be serving someone, so only
                // the long (fencing) timeout applies.
                if Millis(*for_ms) >= policy.down_after {
                    Verdict::Failed(
                        format!("master {name}'s redis unreachable for {for_ms} ms"),
                        Millis(received.received_at.0.saturating_sub(*for_ms)),
                    )
                } else {
                    Verdict::Kept(format!(
                        "master {name}'s redis unreachable for {for_ms} ms; failover at {} ms",
                        policy.down_after.0
                    ))
                }
            }
            Some(RedisHealth::Down {
                kind: DownKind::Unauthorized,
                for_ms,
                error,
            }) => {
                // Its Redis answers, so it is alive and may take clients' writes, and an
                // agent that cannot command it cannot fence it either: promoting another
                // node would make two writable masters. Only the operator can end this.
                Verdict::Kept(format!(
                    "master {name}'s agent cannot command its redis for {for_ms} ms ({error}); \
                     that redis is alive and may take writes, so it stays master until the \
                     agent's --redis-password is fixed"
                ))
            }
            None => Verdict::Kept(format!("master {name} reports no redis status; keeping it")),
        };
    }

    // A coordinator that has heard the master's agent counts its silence from that report.
    // One that has not heard it since it took over counts from its own leadership: every
    // contact the master's lease rests on was confirmed by a quorum before this leadership
    // began, so that master has fenced itself by `leader_since + lease`. Waiting halfway
    // from the lease to `down_after` leaves its agent time to run the fence, and spares a
    // host loss that took the Raft leader with it a second full `down_after`.
    let (last_contact, needed) = match latest {
        Some(r) => (r.received_at.max(reports.leader_since), policy.down_after),
        None => (reports.leader_since, new_leader_wait(policy)),
    };
    let silent = now.since(last_contact);
    if !now.reached(last_contact.plus(needed)) {
        return Verdict::Kept(format!(
            "master {name} silent for {} ms; failover at {} ms",
            silent.0, needed.0
        ));
    }
    let links = live_links_to(state, reports, policy, now, master, member);
    if let Some((replica, _)) = links.iter().find(|(_, writes)| *writes != Some(false)) {
        return Verdict::Kept(format!(
            "master {name} silent for {} ms but {replica} still has a live link to it; keeping it",
            silent.0
        ));
    }
    if let Some((replica, _)) = links.first() {
        // Its agent fenced it (the lease ran out: it cannot reach us, e.g. a different
        // shared secret); nobody can write there, so keeping it only keeps writes blocked.
        return Verdict::Failed(
            format!(
                "master {name} silent for {} ms and its redis holds writes (seen by {replica} \
                 through a live link): it fenced itself",
                silent.0
            ),
            last_contact,
        );
    }
    Verdict::Failed(
        format!(
            "master {name} silent for {} ms and no replica sees it",
            silent.0
        ),
        last_contact,
    )
}

/// How long a new coordinator that has not heard the master's agent waits from its own
/// leadership before the master counts as silent.
///
/// The old master's lease rests on a contact some quorum confirmed; that quorum shares a
/// node with the one that elected us, and that node had heard nothing from the old leader
/// for at least an election timeout before it campaigned or voted. So the old master has
/// fenced itself by `leader_since - election_timeout + lease`; we wait until halfway from
/// there to `down_after`, leaving its agent that long to run the fence (never less than
/// the lease from our leadership).
pub fn new_leader_wait(policy: &Policy) -> Millis {
    let lease = policy.lease.min(policy.down_after);
    let margin = (policy.down_after.0 - lease.0) / 2;
    Millis(
        (lease.0 + margin)
            .saturating_sub(policy.election_timeout.0)
            .max(lease.0),
    )
}

/// Data members that freshly report a live replication link to the master (proof its
/// Redis is alive and only its agent, or our path to it, is not), each with what its write
/// probe of that master found.
fn live_links_to<'a>(
    state: &'a ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: &Moment,
    master: NodeId,
    member: &Member,
) -> Vec<(&'a str, Option<bool>)> {
    let Some(master_addr) = member.redis_addr.as_deref() else {
        return Vec::new();
    };
    state
        .members
        .iter()
        .filter(|(id, m)| **id != master && m.kind == MemberKind::Data)
        .filter_map(|(id, m)| {
            let received = reports.latest.get(id).filter(|r| now.fresh(r, policy))?;
            let status = received.report.redis.as_ref()?.status()?;
            let sees = status.role == RedisRole::Replica
                && status.master_link_up
                && status
                    .master_addr
                    .as_deref()
                    .is_some_and(|a| same_redis_addr(a, master_addr));
            sees.then_some((m.name.as_str(), received.report.master_accepts_writes))
        })
        .collect()
}
