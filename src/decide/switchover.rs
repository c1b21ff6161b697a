//! Planned switchover: which requests are accepted, and how the coordinator sees one
//! through (commit the target once Redis `FAILOVER` made it master, or abandon it when
//! Redis gave up and the old master still holds the role).

use super::addr::same_redis_addr;
use super::candidate::{Candidate, Field, failover_order};
use super::{Outcome, Policy, Reports, candidate_offsets, is_fresh};
use crate::model::{ClusterState, Command, Millis, NodeId, RedisRole, RedisStatus, Switchover};

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
    now: Millis,
    id: NodeId,
) -> Option<&'a RedisStatus> {
    reports
        .latest
        .get(&id)
        .filter(|r| is_fresh(r, policy, now))
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

/// Validate a switchover request (to `to`, or to the best replica) into the command
/// that begins it.
pub fn plan_switchover(
    state: &ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: Millis,
    to: Option<&str>,
) -> Result<Command, SwitchoverRefusal> {
    use SwitchoverRefusal::{Conflict, Invalid, UnknownMember};
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
            let Some((&id, member)) = state.members.iter().find(|(_, m)| m.name == name) else {
                return Err(UnknownMember(format!("no member named {name}")));
            };
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
/// once it is master, abandon when Redis gave up, otherwise wait.
pub(super) fn progress(
    state: &ClusterState,
    reports: &Reports,
    policy: &Policy,
    now: Millis,
    sw: &Switchover,
) -> Outcome {
    let (from, to) = (state.member_name(sw.from), state.member_name(sw.to));
    let elapsed = reports
        .switchover_since
        .map_or(Millis(0), |since| now.since(since));
    let target = fresh_status(reports, policy, now, sw.to);
    if let Some(status) = target.filter(|s| s.role == RedisRole::Master) {
        let epoch = state.epoch + 1;
        let reason = format!(
            "switchover from {from} to {to} handed over after {} ms: committing {to} (offset {}) at epoch {epoch}",
            elapsed.0, status.repl_offset
        );
        let field = Field::assess(state, reports, policy, now, Some(sw.from));
        let command = Command::SetMaster {
            node: sw.to,
            epoch,
            run_id: status.run_id.clone(),
            reason: reason.clone(),
            at_unix_ms: 0,
            candidates: candidate_offsets(&field),
        };
        return Outcome::commit(command, reason, reports.switchover_since);
    }
    // Redis aborts FAILOVER after its TIMEOUT and the old master keeps the role; give it
    // one --down-after more so we never abandon a hand-over that is about to land.
    let deadline = Millis(policy.switchover_timeout.0 + policy.down_after.0);
    if elapsed < deadline {
        return Outcome::wait(format!(
            "switchover from {from} to {to} in progress for {} ms",
            elapsed.0
        ));
    }
    let old_still_master =
        fresh_status(reports, policy, now, sw.from).is_some_and(|s| s.role == RedisRole::Master);
    let target_not_master = target.is_none_or(|s| s.role == RedisRole::Replica);
    if old_still_master && target_not_master {
        let reason = format!(
            "switchover to {to} timed out after {} ms; {from} stays master",
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
    Outcome::wait(format!(
        "switchover from {from} to {to} unresolved after {} ms: waiting for both agents to report",
        elapsed.0
    ))
}
