//! The coordinator's failover rules: a pure function of the committed state,
//! the latest reports and the time. No async, no I/O, no clock.

pub mod local;

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ClusterState, Command, Millis, NodeId, NodeReport};

/// Tunables that shape every decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The master's own agent must report its Redis down this long before we fail over.
    pub redis_down_after: Millis,
    /// Silence from the master's agent (with no replica seeing a live link) before failover.
    /// Also the fencing bound: never commit a new master sooner after the old one's last contact.
    pub down_after: Millis,
    /// Refuse a candidate whose offset is further behind the master's last known offset.
    pub max_lag_bytes: u64,
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub commands: Vec<Command>,
    /// One human-readable sentence: what was decided and why (or why nothing).
    pub reason: String,
}

/// Decide what to commit next.
pub fn decide(state: &ClusterState, reports: &Reports, policy: &Policy, now: Millis) -> Decision {
    let _ = (state, reports, policy, now);
    Decision {
        commands: Vec::new(),
        reason: "not implemented".into(),
    }
}
