//! What a data agent does to its own Redis: a pure plan from the committed
//! state, the local probe and how recently a quorum-holding coordinator confirmed contact.

use crate::model::{ClusterState, Millis, NodeId, RedisHealth};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalAction {
    /// `REPLICAOF NO ONE`
    Promote,
    /// `REPLICAOF host port`
    ReplicateFrom { host: String, port: u16 },
    /// `CLIENT PAUSE <ms> WRITE` (renewed every cycle while isolated)
    PauseWrites,
    /// `CLIENT UNPAUSE`
    Unpause,
}

#[derive(Clone, Debug)]
pub struct LocalView<'a> {
    pub self_id: NodeId,
    pub state: &'a ClusterState,
    pub redis: &'a RedisHealth,
    /// Time since the last confirmed contact with a quorum-holding coordinator; `None` if never.
    pub contact_age: Option<Millis>,
    /// Whether this agent may have left its Redis paused.
    pub fenced: bool,
    pub lease: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPlan {
    pub actions: Vec<LocalAction>,
    pub reason: String,
}

pub fn plan_local(view: &LocalView<'_>) -> LocalPlan {
    let _ = view;
    LocalPlan {
        actions: Vec::new(),
        reason: "not implemented".into(),
    }
}
