//! Operator requests handled by the coordinator: planned switchover, maintenance pause,
//! member removal and addition. Each is validated by a pure rule against one snapshot of
//! the coordinator's view and committed to the Raft log; any agent forwards them here.

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::info;

use super::consensus::Consensus;
use super::coordinator::Coordinator;
use crate::decide::membership::{MembershipRefusal, plan_addition, plan_removal};
use crate::decide::{SwitchoverRefusal, plan_switchover};
use crate::model::{Command, CommandResponse, NodeId};
use crate::wire::SwitchoverDone;

/// A refused or failed operator request, with the HTTP status that says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OperatorError {
    pub status: u16,
    pub message: String,
}

impl OperatorError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        OperatorError {
            status,
            message: message.into(),
        }
    }

    pub fn not_leader() -> Self {
        OperatorError::new(
            503,
            "this agent is not the coordinator (raft leader) right now; retry",
        )
    }
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

impl From<MembershipRefusal> for OperatorError {
    fn from(r: MembershipRefusal) -> Self {
        OperatorError::new(r.status(), r.to_string())
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    crate::duration::whole_millis(since.elapsed())
}

async fn commit<C: Consensus>(consensus: &C, command: Command) -> Result<(), OperatorError> {
    match consensus.commit(command.clone()).await {
        Ok(CommandResponse::Applied) => {
            info!(?command, "committed operator request");
            Ok(())
        }
        Ok(CommandResponse::Rejected(why)) => Err(OperatorError::new(409, why)),
        Err(e) => Err(OperatorError::new(503, format!("could not commit: {e}"))),
    }
}

impl Coordinator {
    /// Begin a switchover and wait until the new master is committed or it is abandoned.
    pub async fn switchover<C: Consensus>(
        &self,
        consensus: &C,
        to: Option<&str>,
    ) -> Result<SwitchoverDone, OperatorError> {
        let started = Instant::now();
        let turn = self.turn.lock().await;
        let (reports, state) = self
            .snapshot(&consensus.facts(), consensus.state())
            .ok_or_else(OperatorError::not_leader)?;
        let command = plan_switchover(&state, &reports, &self.policy, self.clock.now(), to)?;
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
        let mut committed = consensus.subscribe();
        commit(consensus, command).await?;
        drop(turn);
        self.decide_now.notify_one();
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
            let left = self.switchover_wait.saturating_sub(started.elapsed());
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

    pub async fn set_paused<C: Consensus>(
        &self,
        consensus: &C,
        paused: bool,
    ) -> Result<(), OperatorError> {
        let _turn = self.turn.lock().await;
        if !consensus.facts().is_leader() {
            return Err(OperatorError::not_leader());
        }
        commit(consensus, Command::SetPaused { paused }).await?;
        info!(paused, "maintenance pause changed");
        Ok(())
    }

    /// Take a member out of the voter set and the committed members.
    pub async fn remove_member<C: Consensus>(
        &self,
        consensus: &C,
        me: NodeId,
        name: &str,
    ) -> Result<NodeId, OperatorError> {
        let _turn = self.turn.lock().await;
        let (reports, state) = self
            .snapshot(&consensus.facts(), consensus.state())
            .ok_or_else(OperatorError::not_leader)?;
        let removal = plan_removal(&state, &reports, &self.policy, self.clock.now(), me, name)?;
        if removal.voter {
            consensus.remove_voter(removal.id).await.map_err(|e| {
                OperatorError::new(409, format!("cannot remove {name} from the voters: {e}"))
            })?;
        }
        self.forget(removal.id);
        if removal.registered {
            commit(consensus, Command::RemoveMember { id: removal.id }).await?;
        }
        info!(%name, "removed member");
        Ok(removal.id)
    }

    /// Add the agent at `addr` (a normalized `--raft-peers` entry) as voter or learner,
    /// once `hello` has shown that an agent sharing our secret answers there as that node.
    pub async fn add_member<C: Consensus>(
        &self,
        consensus: &C,
        addr: &str,
        voter: bool,
        hello: impl Future<Output = Result<NodeId, String>>,
    ) -> Result<NodeId, OperatorError> {
        let facts = consensus.facts();
        if !facts.is_leader() {
            return Err(OperatorError::not_leader());
        }
        let id = plan_addition(&facts.members(), &facts.voters, addr, voter, hello.await)?;
        // A learner catching up may take a while; bound it so the request answers.
        tokio::time::timeout(
            Duration::from_secs(30),
            consensus.add_node(id, addr.to_string(), voter),
        )
        .await
        .map_err(|_| OperatorError::new(504, format!("{addr} did not catch up within 30 s")))?
        .map_err(|e| OperatorError::new(409, format!("cannot add {addr}: {e}")))?;
        info!(address = %addr, voter, "added raft member");
        Ok(id)
    }
}
