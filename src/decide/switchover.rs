//! Planned switchover: which requests are accepted, and how the coordinator sees one
//! through. The master's agent pauses writes and reports its final offset; once the
//! target reports it has every byte (a live link, offset at least that), the target is
//! committed and the usual reconcile promotes it and demotes the old master before
//! unpausing, so no acknowledged write is lost. Redis never swaps roles on its own, so
//! abandoning a switchover that does not complete in time is always safe.
//!
//! Redis `FAILOVER` would do the same hand-over, but it waits for the replica's
//! once-per-second offset acknowledgement (Redis sends no GETACK while clients are
//! paused), which adds half a second of write pause on average.

use super::candidate::{Candidate, Field, failover_order};
use super::{Moment, Outcome, Policy, Reports, candidate_offsets};
use crate::addr::same_redis_addr;
use crate::model::{
    ClusterState, Command, Member, MemberKind, Millis, NodeId, RedisRole, RedisStatus, Switchover,
};

/// Why a switchover request is refused; the API maps each kind to a 4xx status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SwitchoverRefusal {
    #[error("{0}")]
    UnknownMember(String),
    /// The named target can never take the role (witness, no-promote, already master).
    #[error("{0}")]
    Invalid(String),
    /// The cluster is not in a state that allows it now (paused, unhealthy, busy).
    #[error("{0}")]
    Conflict(String),
}

fn fresh_status<'a>(
    reports: &'a Reports,
    policy: &Policy,
    now: &Moment,
    id: NodeId,
) -> Option<&'a RedisStatus> {
    reports
        .latest
        .get(&id)
        .filter(|r| now.fresh(r, policy))
        .and_then(|r| r.report.redis.as_ref())
        .and_then(|h| h.status())
}

/// Whether `status` shows a live replication link to the master's advertised address.
fn replicates_from(status: &RedisStatus, master_addr: &str) -> bool {
    status.role == RedisRole::Replica
        && status.master_link_up
        && status
            .master_addr
            .as_deref()
            .is_some_and(|a| same_redis_addr(a, master_addr))
}

/// The member `to` names: by member name, else the one data member of that site (the
/// seed's deployment has one data node per site, and its README switches `--to site-b`).
fn member_named<'a>(
    state: &'a ClusterState,
    to: &str,
) -> Result<(NodeId, &'a Member), SwitchoverRefusal> {
    if let Some((&id, member)) = state.members.iter().find(|(_, m)| m.name == to) {
        return Ok((id, member));
    }
    let in_site: Vec<(NodeId, &Member)> = state
        .members
        .iter()
        .filter(|(_, m)| !to.is_empty() && m.site == to && m.kind == MemberKind::Data)
        .map(|(&id, m)| (id, m))
        .collect();
    match in_site.as_slice() {
        [] => Err(SwitchoverRefusal::UnknownMember(format!(
            "no member named {to}, and no data member in a site named {to}"
        ))),
        [one] => Ok(*one),
        many => Err(SwitchoverRefusal::Invalid(format!(
            "site {to} has several data members ({}): name one",
            many.iter()
                .map(|(_, m)| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Validate a switchover request (to `to`, or to the best replica) into the command
/// that begins it.
pub fn plan_switchover(
    state: &ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: Millis,
    to: Option<&str>,
) -> Result<Command, SwitchoverRefusal> {
    use SwitchoverRefusal::{Conflict, Invalid};
    // A request is answered once; when it would be answered otherwise does not matter.
    let now = &Moment::new(now);
    if state.paused {
        return Err(Conflict(
            "the cluster is paused for maintenance; resume it first".into(),
        ));
    }
    let (Some(master), Some(master_member)) = (state.master, state.master_member()) else {
        return Err(Conflict("no master has been elected yet".into()));
    };
    if let Some(sw) = &state.switchover {
        return Err(Conflict(format!(
            "a switchover to {} is already running",
            state.member_name(sw.to)
        )));
    }
    let master_name = &master_member.name;
    let master_addr = master_member.redis_addr.as_deref().unwrap_or_default();
    match fresh_status(reports, policy, now, master) {
        Some(s)
            if s.role == RedisRole::Master
                && state.master_run_id.as_deref() == Some(s.run_id.as_str()) => {}
        _ => {
            return Err(Conflict(format!(
                "master {master_name} is not reporting a healthy master redis; a planned switchover needs it"
            )));
        }
    }
    let mut field = Field::assess(state, reports, policy, now, Some(master));
    let target: Candidate<'_> = match to {
        Some(name) => {
            let (id, member) = member_named(state, name)?;
            let name = member.name.as_str();
            if id == master {
                return Err(Invalid(format!("{name} is already master")));
            }
            if let Some((_, refusal)) = field.refused.iter().find(|(n, _)| *n == name) {
                let why = format!("{name} cannot take over: {refusal}");
                return Err(if member.can_be_master() {
                    Conflict(why)
                } else {
                    Invalid(why)
                });
            }
            let Some(candidate) = field.candidates.iter().find(|c| c.id == id).copied() else {
                return Err(Conflict(format!("{name} cannot take over now")));
            };
            if !replicates_from(candidate.status, master_addr) {
                return Err(Conflict(format!(
                    "{name} is not replicating from the master {master_name} with a live link"
                )));
            }
            candidate
        }
        None => {
            field
                .candidates
                .retain(|c| replicates_from(c.status, master_addr));
            field.candidates.sort_by(failover_order);
            *field.candidates.first().ok_or_else(|| {
                Conflict(format!(
                    "no healthy replica of {master_name} to switch over to ({})",
                    field.describe_refusals()
                ))
            })?
        }
    };
    Ok(Command::BeginSwitchover {
        from: master,
        to: target.id,
        epoch: state.epoch,
    })
}

/// The committed master is healthy and a switchover is in progress: commit the target
/// once it holds every byte of the paused master, abandon after the timeout, else wait.
pub(super) fn progress(
    state: &ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: &Moment,
    sw: &Switchover,
) -> Outcome {
    let (from, to) = (state.member_name(sw.from), state.member_name(sw.to));
    let elapsed = reports
        .switchover_since
        .map_or(Millis(0), |since| now.since(since));
    // Without a start (the coordinator always records one) only a zero timeout has run out.
    let timed_out = match reports.switchover_since {
        Some(since) => now.reached(since.plus(policy.switchover_timeout)),
        None => policy.switchover_timeout == Millis(0),
    };
    if timed_out {
        let reason = format!(
            "switchover to {to} did not complete in {} ms; {from} stays master",
            elapsed.0
        );
        return Outcome::commit(
            Command::EndSwitchover {
                epoch: sw.epoch,
                reason: reason.clone(),
            },
            reason,
            None,
        );
    }
    let paused_master = reports
        .latest
        .get(&sw.from)
        .filter(|r| now.fresh(r, policy) && r.report.handover_paused)
        .and_then(|r| r.report.redis.as_ref())
        .and_then(|h| h.status())
        .filter(|s| s.role == RedisRole::Master);
    let Some(master_status) = paused_master else {
        return Outcome::wait(format!(
            "switchover from {from} to {to}: waiting for {from} to pause writes"
        ));
    };
    let from_addr = state
        .members
        .get(&sw.from)
        .and_then(|m| m.redis_addr.as_deref())
        .unwrap_or_default();
    let target =
        fresh_status(reports, policy, now, sw.to).filter(|s| replicates_from(s, from_addr));
    let Some(target_status) = target.filter(|s| s.repl_offset >= master_status.repl_offset) else {
        return Outcome::wait(format!(
            "switchover from {from} to {to}: {to} catching up to offset {} ({} ms)",
            master_status.repl_offset, elapsed.0
        ));
    };
    let epoch = state.epoch + 1;
    let reason = format!(
        "switchover from {from} to {to}: {to} has all {} bytes after {} ms; committing it at epoch {epoch}",
        master_status.repl_offset, elapsed.0
    );
    let field = Field::assess(state, reports, policy, now, Some(sw.from));
    let command = Command::SetMaster {
        node: sw.to,
        epoch,
        run_id: target_status.run_id.clone(),
        reason: reason.clone(),
        at_unix_ms: 0,
        candidates: candidate_offsets(&field),
    };
    Outcome::commit(command, reason, reports.switchover_since)
}
