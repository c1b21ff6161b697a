//! Operator requests handled by the coordinator: planned switchover, maintenance
//! pause, member removal. Each is validated against the coordinator's current view and
//! committed to the Raft log; the API forwards them here from any agent.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::Agent;
use crate::decide::{SwitchoverRefusal, is_fresh, plan_switchover};
use crate::model::{Command, CommandResponse, NodeId};

/// A refused or failed operator request, with the HTTP status that says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OperatorError {
    pub status: u16,
    pub message: String,
}

impl OperatorError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        OperatorError {
            status,
            message: message.into(),
        }
    }
}

/// The answer to a completed switchover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverDone {
    pub from: String,
    pub to: String,
    pub epoch: u64,
    /// From the request to the commit of the new master.
    pub took_ms: u64,
}

impl From<SwitchoverRefusal> for OperatorError {
    fn from(r: SwitchoverRefusal) -> Self {
        let status = match r {
            SwitchoverRefusal::UnknownMember(_) => 404,
            SwitchoverRefusal::Invalid(_) => 400,
            SwitchoverRefusal::Conflict(_) => 409,
        };
        OperatorError::new(status, r.to_string())
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Agent {
    fn not_leader(&self) -> OperatorError {
        OperatorError::new(
            503,
            "this agent is not the coordinator (raft leader) right now; retry",
        )
    }

    async fn commit(&self, command: Command) -> Result<(), OperatorError> {
        match self.raft.client_write(command.clone()).await {
            Ok(resp) => match resp.data {
                CommandResponse::Applied => {
                    info!(
                        ?command,
                        log_index = resp.log_id.index,
                        "committed operator request"
                    );
                    Ok(())
                }
                CommandResponse::Rejected(why) => Err(OperatorError::new(409, why)),
            },
            Err(e) => Err(OperatorError::new(503, format!("could not commit: {e}"))),
        }
    }

    /// Begin a switchover and wait until the new master is committed or it is abandoned.
    pub async fn switchover(&self, to: Option<&str>) -> Result<SwitchoverDone, OperatorError> {
        let started = Instant::now();
        let now = self.now();
        let (reports, state) = self
            .coordinator_snapshot(now)
            .ok_or_else(|| self.not_leader())?;
        let command = plan_switchover(&state, &reports, &self.policy(), now, to)?;
        let Command::BeginSwitchover { from, to, epoch } = command else {
            return Err(OperatorError::new(
                500,
                "switchover planning returned another command",
            ));
        };
        let (from_name, to_name) = (
            state.member_name(from).to_string(),
            state.member_name(to).to_string(),
        );
        info!(from = %from_name, to = %to_name, epoch, "switchover requested");
        let mut committed = self.subscribe();
        self.commit(command).await?;
        self.decide_now.notify_one();
        let limit =
            self.settings.switchover_timeout + self.settings.down_after + Duration::from_secs(2);
        loop {
            let current = committed.borrow_and_update().clone();
            if current.switchover.is_none() {
                if current.master == Some(to) && current.epoch == epoch + 1 {
                    return Ok(SwitchoverDone {
                        from: from_name,
                        to: to_name,
                        epoch: current.epoch,
                        took_ms: elapsed_ms(started),
                    });
                }
                let why = current
                    .last_switchover_abort
                    .unwrap_or_else(|| format!("ended without making {to_name} master"));
                return Err(OperatorError::new(
                    409,
                    format!("switchover abandoned: {why}"),
                ));
            }
            let left = limit.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, committed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(OperatorError::new(503, "agent is shutting down")),
                Err(_) => {
                    return Err(OperatorError::new(
                        504,
                        format!(
                            "switchover to {to_name} still running after {} ms; see /state",
                            elapsed_ms(started)
                        ),
                    ));
                }
            }
        }
    }

    pub async fn set_paused(&self, paused: bool) -> Result<(), OperatorError> {
        if self.coordinator_snapshot(self.now()).is_none() {
            return Err(self.not_leader());
        }
        self.commit(Command::SetPaused { paused }).await?;
        info!(paused, "maintenance pause changed");
        Ok(())
    }

    /// Take a member out of the voter set, if a majority of the remaining voters is live.
    pub async fn remove_member(&self, name: &str) -> Result<NodeId, OperatorError> {
        let now = self.now();
        let (reports, state) = self
            .coordinator_snapshot(now)
            .ok_or_else(|| self.not_leader())?;
        let by_name = state
            .members
            .iter()
            .find(|(_, m)| m.name == name)
            .map(|(id, _)| *id);
        let by_addr = reports
            .voters
            .iter()
            .copied()
            .find(|id| crate::config::node_id(name) == *id);
        let id = by_name
            .or(by_addr)
            .ok_or_else(|| OperatorError::new(404, format!("no member named {name}")))?;
        if state.master == Some(id) {
            return Err(OperatorError::new(
                409,
                format!("{name} is the master; switch over first"),
            ));
        }
        let remaining: BTreeSet<NodeId> = reports
            .voters
            .iter()
            .copied()
            .filter(|v| *v != id)
            .collect();
        let me = self.settings.me.id;
        let policy = self.policy();
        let live = remaining
            .iter()
            .filter(|v| {
                **v == me
                    || reports
                        .latest
                        .get(v)
                        .is_some_and(|r| is_fresh(r, &policy, now))
            })
            .count();
        if remaining.is_empty() || live * 2 <= remaining.len() {
            return Err(OperatorError::new(
                409,
                format!(
                    "removing {name} would leave {} voters of which only {live} are live: no majority could serve",
                    remaining.len()
                ),
            ));
        }
        if reports.voters.contains(&id) {
            let change = ChangeMembers::RemoveVoters(std::iter::once(id).collect());
            self.raft
                .change_membership(change, false)
                .await
                .map_err(|e| {
                    OperatorError::new(409, format!("cannot remove {name} from the voters: {e}"))
                })?;
        }
        if state.members.contains_key(&id) {
            self.commit(Command::RemoveMember { id }).await?;
        }
        info!(%name, "removed member");
        Ok(id)
    }
}
