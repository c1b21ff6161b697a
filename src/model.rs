//! Plain data shared by every layer: the replicated cluster state, the commands
//! that change it, and the soft-state reports agents send the coordinator.
//!
//! Nothing here does I/O or reads a clock; time arrives as [`Millis`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Raft node id: a stable hash of the node's `--raft-peers` entry.
pub type NodeId = u64;

/// A monotonic timestamp or duration in milliseconds, supplied by the caller.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Millis {
        Millis(self.0.saturating_sub(earlier.0))
    }

    /// The moment `later` after `self` (saturating: a bound past `u64` never comes).
    pub fn plus(self, later: Millis) -> Millis {
        Millis(self.0.saturating_add(later.0))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    /// Runs beside one redis-server and may become master.
    Data,
    /// Votes in Raft, never holds the Redis master.
    Witness,
}

/// What a node tells the cluster about itself; committed with `Register`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub site: String,
    pub kind: MemberKind,
    /// Address replicas use to reach this node's Redis (`host:port`); `None` for a witness.
    pub redis_addr: Option<String>,
    pub api_addr: String,
    pub raft_addr: String,
    /// Higher wins when replication offsets are equal.
    pub priority: u32,
    pub no_promote: bool,
    /// Where this agent serves the Sentinel protocol for other agents' `SENTINEL sentinels`
    /// (`host:port`); `None` when the endpoint is off.
    #[serde(default)]
    pub sentinel_addr: Option<String>,
}

impl Member {
    pub fn can_be_master(&self) -> bool {
        self.kind == MemberKind::Data && !self.no_promote && self.redis_addr.is_some()
    }
}

/// A candidate's replication offset when a master was chosen, kept in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateOffset {
    pub name: String,
    pub offset: u64,
}

/// One committed master change, kept for `/history`, `/state` and logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterChange {
    pub epoch: u64,
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub reason: String,
    /// Wall-clock time chosen by the coordinator when it proposed the change.
    pub at_unix_ms: u64,
    pub candidates: Vec<CandidateOffset>,
}

/// A planned switchover in progress: the master's agent pauses writes until the target has
/// its final offset, then the coordinator commits the target as master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    pub from: NodeId,
    pub to: NodeId,
    /// The epoch it was begun at; the `SetMaster` that completes it carries `epoch + 1`.
    pub epoch: u64,
}

/// How many master changes `/history` keeps.
pub const HISTORY_LEN: usize = 100;

/// The replicated state machine. The Redis master is a value here, never
/// "whoever is Raft leader".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// +1 on every master change; the fencing token.
    pub epoch: u64,
    pub master: Option<NodeId>,
    /// `run_id` of the master's redis-server when it was chosen. A different
    /// run_id later means the process restarted (possibly empty).
    pub master_run_id: Option<String>,
    pub members: BTreeMap<NodeId, Member>,
    #[serde(default)]
    pub switchover: Option<Switchover>,
    /// Maintenance mode: no automatic failover or demotion.
    #[serde(default)]
    pub paused: bool,
    /// Latest master changes, oldest first, at most [`HISTORY_LEN`].
    #[serde(default)]
    pub history: Vec<MasterChange>,
    /// Why the last switchover was abandoned, if it was.
    #[serde(default)]
    pub last_switchover_abort: Option<String>,
}

/// Raft log entry payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Register {
        id: NodeId,
        member: Member,
    },
    /// Rejected unless `epoch == current + 1`, `node` may be master and the cluster is not paused.
    SetMaster {
        node: NodeId,
        epoch: u64,
        run_id: String,
        reason: String,
        #[serde(default)]
        at_unix_ms: u64,
        #[serde(default)]
        candidates: Vec<CandidateOffset>,
    },
    /// Rejected unless `from` is the master at `epoch`, `to` may be master, and nothing
    /// else (a switchover, a pause) is in the way.
    BeginSwitchover {
        from: NodeId,
        to: NodeId,
        epoch: u64,
    },
    /// Abandon the switchover begun at `epoch`; roles stay as they are.
    EndSwitchover {
        epoch: u64,
        reason: String,
    },
    SetPaused {
        paused: bool,
    },
    /// Forget a member taken out of the Raft voter set; never the master.
    RemoveMember {
        id: NodeId,
    },
}

impl Command {
    /// Stamp wall-clock time on a master change; the state machine itself reads no clock.
    pub fn stamped(mut self, now_unix_ms: u64) -> Command {
        if let Command::SetMaster { at_unix_ms, .. } = &mut self {
            *at_unix_ms = now_unix_ms;
        }
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    Applied,
    Rejected(String),
}

impl ClusterState {
    /// Apply one committed command. Deterministic: every replica computes the same result.
    pub fn apply(&mut self, command: &Command) -> CommandResponse {
        match self.check(command) {
            Err(why) => CommandResponse::Rejected(why),
            Ok(()) => {
                self.apply_checked(command);
                CommandResponse::Applied
            }
        }
    }

    fn promotable(&self, node: NodeId) -> Result<&Member, String> {
        match self.members.get(&node) {
            Some(m) if m.can_be_master() => Ok(m),
            Some(m) => Err(format!(
                "{} cannot be master (witness or no-promote)",
                m.name
            )),
            None => Err(format!("unknown node {node}")),
        }
    }

    fn check(&self, command: &Command) -> Result<(), String> {
        match command {
            Command::Register { .. } => Ok(()),
            Command::SetMaster { node, epoch, .. } => {
                if *epoch != self.epoch + 1 {
                    return Err(format!("stale epoch {epoch}: current is {}", self.epoch));
                }
                if self.paused {
                    return Err("the cluster is paused for maintenance".into());
                }
                self.promotable(*node).map(|_| ())
            }
            Command::BeginSwitchover { from, to, epoch } => {
                if *epoch != self.epoch || self.master != Some(*from) {
                    return Err(format!(
                        "switchover from {} at epoch {epoch} is stale: master is {} at epoch {}",
                        self.member_name(*from),
                        self.master.map_or("none", |m| self.member_name(m)),
                        self.epoch
                    ));
                }
                if self.paused {
                    return Err("the cluster is paused for maintenance".into());
                }
                if let Some(sw) = &self.switchover {
                    return Err(format!(
                        "a switchover to {} is already running",
                        self.member_name(sw.to)
                    ));
                }
                if from == to {
                    return Err(format!("{} is already master", self.member_name(*to)));
                }
                self.promotable(*to).map(|_| ())
            }
            Command::EndSwitchover { epoch, .. } => match &self.switchover {
                Some(sw) if sw.epoch == *epoch => Ok(()),
                _ => Err(format!("no switchover running at epoch {epoch}")),
            },
            Command::RemoveMember { id } => {
                if self.master == Some(*id) {
                    Err(format!(
                        "{} is the master; switch over first",
                        self.member_name(*id)
                    ))
                } else {
                    Ok(())
                }
            }
            Command::SetPaused { paused } => match &self.switchover {
                Some(sw) if *paused => Err(format!(
                    "a switchover to {} is running; pause after it ends",
                    self.member_name(sw.to)
                )),
                _ => Ok(()),
            },
        }
    }

    fn apply_checked(&mut self, command: &Command) {
        match command {
            Command::Register { id, member } => {
                self.members.insert(*id, member.clone());
            }
            Command::SetMaster {
                node,
                epoch,
                run_id,
                reason,
                at_unix_ms,
                candidates,
            } => {
                self.history.push(MasterChange {
                    epoch: *epoch,
                    from: self.master,
                    to: *node,
                    reason: reason.clone(),
                    at_unix_ms: *at_unix_ms,
                    candidates: candidates.clone(),
                });
                if self.history.len() > HISTORY_LEN {
                    let excess = self.history.len() - HISTORY_LEN;
                    self.history.drain(..excess);
                }
                self.epoch = *epoch;
                self.master = Some(*node);
                self.master_run_id = Some(run_id.clone());
                self.switchover = None;
            }
            Command::BeginSwitchover { from, to, epoch } => {
                self.switchover = Some(Switchover {
                    from: *from,
                    to: *to,
                    epoch: *epoch,
                });
                self.last_switchover_abort = None;
            }
            Command::EndSwitchover { reason, .. } => {
                self.switchover = None;
                self.last_switchover_abort = Some(reason.clone());
            }
            Command::SetPaused { paused } => self.paused = *paused,
            Command::RemoveMember { id } => {
                self.members.remove(id);
            }
        }
    }

    pub fn member_name(&self, id: NodeId) -> &str {
        self.members.get(&id).map_or("?", |m| m.name.as_str())
    }

    pub fn master_member(&self) -> Option<&Member> {
        self.master.and_then(|id| self.members.get(&id))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisRole {
    Master,
    Replica,
}

impl fmt::Display for RedisRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedisRole::Master => "master",
            RedisRole::Replica => "replica",
        })
    }
}

/// What one probe of the local Redis saw (INFO server/replication/keyspace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisStatus {
    pub run_id: String,
    pub role: RedisRole,
    /// For a replica: `host:port` it replicates from, exactly as configured.
    pub master_addr: Option<String>,
    /// For a replica: `master_link_status:up`.
    pub master_link_up: bool,
    /// `master_repl_offset` (the master's write position, or what a replica has received).
    pub repl_offset: u64,
    /// Keys in all databases (keyspace section).
    pub keys: u64,
    /// For a master: replicas in `state=online` (`slaveN:` lines).
    #[serde(default)]
    pub online_replicas: u32,
}

/// Why the local Redis could not be probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownKind {
    /// Connection refused: nothing listens, the process is gone.
    Refused,
    /// Timeout or any other failure: the process may be hung or unreachable.
    Unreachable,
    /// Redis answers but refuses the agent's credentials (NOAUTH, WRONGPASS, NOPERM): it is
    /// alive, may still accept clients' writes, and the agent can neither watch nor fence it.
    Unauthorized,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum RedisHealth {
    Up(RedisStatus),
    Down {
        kind: DownKind,
        /// How long the agent has seen it down, by its own monotonic clock.
        for_ms: u64,
        error: String,
    },
}

impl RedisHealth {
    pub fn status(&self) -> Option<&RedisStatus> {
        match self {
            RedisHealth::Up(s) => Some(s),
            RedisHealth::Down { .. } => None,
        }
    }
}

/// Soft state an agent sends the coordinator every probe interval. Never logged to Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: NodeId,
    pub member: Member,
    /// `None` for a witness.
    pub redis: Option<RedisHealth>,
    /// Whether this agent currently holds its Redis paused because it lost contact.
    pub fenced: bool,
    /// The master's agent paused its Redis's writes for the switchover in progress, and
    /// `redis` was probed after that: its offset is final.
    #[serde(default)]
    pub handover_paused: bool,
    /// For a replica following the committed master: whether that master's Redis accepted a
    /// harmless write (`PUBLISH`) from this agent just now. `Some(false)`: it held or refused
    /// it (paused, read-only, hung); `None`: not probed.
    #[serde(default)]
    pub master_accepts_writes: Option<bool>,
}

/// The coordinator's answer to a report: the contact that renews the sender's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// Set only by a leader that a quorum has acknowledged: how long ago that was.
    /// The sender's lease then counts from `sent_at - quorum_ack_age_ms`, which is never
    /// later than the acknowledgement itself, whatever the network delay.
    pub quorum_ack_age_ms: Option<u64>,
    pub epoch: u64,
    pub master: Option<NodeId>,
    /// The master's last reported replication offset, so replicas can tell their lag.
    pub master_offset: Option<u64>,
    /// The coordinator's latest report of every member, so each agent's Sentinel endpoint
    /// shows the same health (only the coordinator holds reports).
    #[serde(default)]
    pub health: BTreeMap<NodeId, MemberHealth>,
}

/// One member's latest report as the coordinator holds it, compacted for [`ReportAck`].
/// Ages are relative to when the ack was built: clocks of different agents do not compare.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHealth {
    /// How long before the ack the coordinator received the report.
    pub report_age_ms: u64,
    /// Its agent saw its Redis down for this long (`None`: up, or a witness).
    pub redis_down_ms: Option<u64>,
    /// Role, run id, offset and link of its Redis when it was up.
    pub role: Option<RedisRole>,
    pub run_id: String,
    pub repl_offset: u64,
    pub master_link_up: bool,
    /// For a replica: the `host:port` it replicates from.
    pub master_addr: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Member {
        Member {
            name: name.into(),
            site: String::new(),
            kind: MemberKind::Data,
            redis_addr: Some(format!("{name}:6379")),
            api_addr: String::new(),
            raft_addr: String::new(),
            priority: 0,
            no_promote: false,
            sentinel_addr: None,
        }
    }

    fn set_master(node: NodeId, epoch: u64) -> Command {
        Command::SetMaster {
            node,
            epoch,
            run_id: format!("run-{node}"),
            reason: "test".into(),
            at_unix_ms: 42,
            candidates: Vec::new(),
        }
    }

    fn cluster() -> ClusterState {
        let mut s = ClusterState::default();
        for (id, name) in [(1, "a"), (2, "b")] {
            assert_eq!(
                s.apply(&Command::Register {
                    id,
                    member: data(name)
                }),
                CommandResponse::Applied
            );
        }
        let mut witness = data("w");
        witness.kind = MemberKind::Witness;
        s.apply(&Command::Register {
            id: 3,
            member: witness,
        });
        assert_eq!(s.apply(&set_master(1, 1)), CommandResponse::Applied);
        s
    }

    fn rejected(r: CommandResponse) -> bool {
        matches!(r, CommandResponse::Rejected(_))
    }

    #[test]
    fn set_master_needs_the_next_epoch_a_promotable_node_and_no_pause() {
        let mut s = cluster();
        assert!(rejected(s.apply(&set_master(2, 1))), "stale epoch");
        assert!(rejected(s.apply(&set_master(2, 3))), "skipped epoch");
        assert!(rejected(s.apply(&set_master(3, 2))), "witness");
        assert!(rejected(s.apply(&set_master(9, 2))), "unknown");
        s.apply(&Command::SetPaused { paused: true });
        assert!(rejected(s.apply(&set_master(2, 2))), "paused");
        s.apply(&Command::SetPaused { paused: false });
        assert_eq!(s.apply(&set_master(2, 2)), CommandResponse::Applied);
        assert_eq!((s.epoch, s.master), (2, Some(2)));
        let last = s.history.last().cloned();
        assert_eq!(
            last.map(|c| (c.epoch, c.from, c.to, c.at_unix_ms)),
            Some((2, Some(1), 2, 42))
        );
    }

    #[test]
    fn switchover_lifecycle() {
        let mut s = cluster();
        let begin = Command::BeginSwitchover {
            from: 1,
            to: 2,
            epoch: 1,
        };
        assert!(
            rejected(s.apply(&Command::BeginSwitchover {
                from: 2,
                to: 1,
                epoch: 1
            })),
            "from is not master"
        );
        assert!(
            rejected(s.apply(&Command::BeginSwitchover {
                from: 1,
                to: 3,
                epoch: 1
            })),
            "to a witness"
        );
        assert!(
            rejected(s.apply(&Command::BeginSwitchover {
                from: 1,
                to: 1,
                epoch: 1
            })),
            "to itself"
        );
        assert_eq!(s.apply(&begin), CommandResponse::Applied);
        assert!(rejected(s.apply(&begin)), "one at a time");
        assert!(
            rejected(s.apply(&Command::SetPaused { paused: true })),
            "no pause mid-switchover"
        );
        assert!(
            rejected(s.apply(&Command::EndSwitchover {
                epoch: 0,
                reason: "x".into()
            })),
            "wrong epoch"
        );
        assert_eq!(
            s.apply(&Command::EndSwitchover {
                epoch: 1,
                reason: "timed out".into()
            }),
            CommandResponse::Applied
        );
        assert_eq!((s.switchover.clone(), s.master), (None, Some(1)));
        assert_eq!(s.last_switchover_abort.as_deref(), Some("timed out"));

        s.apply(&begin);
        assert_eq!(s.apply(&set_master(2, 2)), CommandResponse::Applied);
        assert_eq!(
            s.switchover, None,
            "the new master completes the switchover"
        );
    }

    #[test]
    fn history_is_bounded_and_the_master_cannot_be_removed() {
        let mut s = cluster();
        for epoch in 2..(HISTORY_LEN as u64 + 10) {
            s.apply(&set_master(if epoch % 2 == 0 { 2 } else { 1 }, epoch));
        }
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.history.last().map(|c| c.epoch), Some(s.epoch));
        let master = s.master.unwrap_or_default();
        assert!(rejected(s.apply(&Command::RemoveMember { id: master })));
        assert_eq!(
            s.apply(&Command::RemoveMember { id: 3 }),
            CommandResponse::Applied
        );
        assert!(!s.members.contains_key(&3));
    }
}
