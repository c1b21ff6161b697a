//! openraft glue: type config, durable storage and the signed HTTP transport.

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;

use crate::model::{Command, CommandResponse, NodeId};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
