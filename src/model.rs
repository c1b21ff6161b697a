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
}

impl Member {
    pub fn can_be_master(&self) -> bool {
        self.kind == MemberKind::Data && !self.no_promote && self.redis_addr.is_some()
    }
}

/// One committed master change, kept for `/state` and logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterChange {
    pub epoch: u64,
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub reason: String,
}

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
    pub last_change: Option<MasterChange>,
}

/// Raft log entry payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Register {
        id: NodeId,
        member: Member,
    },
    /// Rejected unless `epoch == current + 1` and `node` may be master.
    SetMaster {
        node: NodeId,
        epoch: u64,
        run_id: String,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    Applied,
    Rejected(String),
}

impl ClusterState {
    /// Apply one committed command. Deterministic: every replica computes the same result.
    pub fn apply(&mut self, command: &Command) -> CommandResponse {
        match command {
            Command::Register { id, member } => {
                self.members.insert(*id, member.clone());
                CommandResponse::Applied
            }
            Command::SetMaster {
                node,
                epoch,
                run_id,
                reason,
            } => {
                if *epoch != self.epoch + 1 {
                    return CommandResponse::Rejected(format!(
                        "stale epoch {epoch}: current is {}",
                        self.epoch
                    ));
                }
                match self.members.get(node) {
                    Some(m) if m.can_be_master() => {}
                    Some(m) => {
                        return CommandResponse::Rejected(format!(
                            "{} cannot be master (witness or no-promote)",
                            m.name
                        ));
                    }
                    None => return CommandResponse::Rejected(format!("unknown node {node}")),
                }
                self.last_change = Some(MasterChange {
                    epoch: *epoch,
                    from: self.master,
                    to: *node,
                    reason: reason.clone(),
                });
                self.epoch = *epoch;
                self.master = Some(*node);
                self.master_run_id = Some(run_id.clone());
                CommandResponse::Applied
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
}

/// Why the local Redis could not be probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownKind {
    /// Connection refused: nothing listens, the process is gone.
    Refused,
    /// Timeout or any other failure: the process may be hung or unreachable.
    Unreachable,
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
}
