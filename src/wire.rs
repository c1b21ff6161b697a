//! Request and response bodies of the agent's HTTP API, shared by the server, the API
//! client, the CLI, the demo, the benchmark and the tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{CandidateOffset, MemberKind, NodeId};

/// One member as seen in the committed state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub name: String,
    pub site: String,
    pub kind: MemberKind,
    pub redis_addr: Option<String>,
    pub api_addr: String,
    pub no_promote: bool,
}

/// `GET /state`: the original tool's fields plus the committed cluster view.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateView {
    pub pod_name: String,
    pub pod_ip: String,
    pub pod_uid: String,
    pub namespace: String,
    pub is_master: bool,
    pub is_healthy: bool,
    pub is_witness: bool,
    pub startup_time: String,
    pub last_seen: Option<String>,
    pub name: String,
    pub site: String,
    pub node_id: NodeId,
    /// `master`, `replica`, `witness` or `down`.
    pub role: String,
    pub epoch: u64,
    pub master: Option<String>,
    pub redis_addr: Option<String>,
    pub raft_leader: Option<String>,
    pub raft_state: String,
    pub raft_term: u64,
    /// This node found its Raft store empty at start and has not yet got the committed
    /// state back (asking its peers, or recovering a lost store): its epoch and master say
    /// nothing yet, they are not an older view.
    #[serde(default)]
    pub raft_store_recovering: bool,
    pub fenced: bool,
    pub repl_offset: Option<u64>,
    pub master_link_up: Option<bool>,
    pub redis_run_id: Option<String>,
    pub redis_error: Option<String>,
    pub reconcile: String,
    /// Maintenance pause: no automatic failover or demotion.
    pub paused: bool,
    /// `"a -> b"` while a planned switchover runs.
    pub switchover: Option<String>,
    pub last_switchover_abort: Option<String>,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RaftStatus {
    pub leader_addr: String,
    pub leader_id: String,
    pub state: String,
    pub term: u64,
    pub pod_name: String,
    pub pod_uid: String,
    pub peers: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerView {
    pub id: String,
    pub address: String,
    pub name: Option<String>,
    pub kind: Option<MemberKind>,
    pub voter: bool,
    pub leader: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPeerRequest {
    /// A name for logs; the node id is derived from the address like every `--raft-peers` entry.
    #[serde(default)]
    pub id: String,
    pub address: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// Member name, or its `--raft-peers` address.
    pub name: String,
}

/// One committed master change, as `/history` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    pub epoch: u64,
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub candidates: Vec<CandidateOffset>,
}

/// `GET /cluster`: this namespace's pods matching `--label-selector`, with their labels.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterView {
    /// False outside Kubernetes: then there are no pods to list.
    pub kubernetes: bool,
    pub pods: Vec<PodSummary>,
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

/// One pod of the status view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSummary {
    pub name: String,
    pub ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The pod's `Ready` condition.
    pub ready: bool,
}

/// `POST /hello` on the peer port: the answering agent's node id, so a member about to be
/// added is known to run an agent that shares our secret at that address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub node: NodeId,
    /// Its Raft state, so a node that starts with an empty store can tell a new cluster from
    /// one it ran in (absent from agents older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<HelloRaft>,
}

/// The Raft state an agent tells a peer that says hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRaft {
    /// It holds a membership (it bootstrapped or was replicated to).
    pub initialized: bool,
    pub term: u64,
    /// The highest log index it has applied.
    pub applied: Option<u64>,
    /// The members registered in its committed state.
    pub registered: Vec<NodeId>,
}

/// Decode a request body that must be one JSON object (an empty body means defaults).
/// serde alone would also take `[]` for a struct, so the shape is checked first.
pub fn object_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    required_object_body(body)
}

/// Decode a request body that must be one JSON object.
pub fn required_object_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    if !value.is_object() {
        return Err("the request body must be a JSON object".into());
    }
    serde_json::from_value(value).map_err(|e| format!("bad request body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_must_be_objects_of_known_fields() {
        let ok: SwitchoverRequest = object_body(b"").expect("empty means defaults");
        assert_eq!(ok.to, None);
        let ok: SwitchoverRequest = object_body(br#"{"to":"site-b"}"#).expect("object");
        assert_eq!(ok.to.as_deref(), Some("site-b"));
        for bad in [
            &b"[]"[..],
            b"[\"site-b\"]",
            b"\"site-b\"",
            b"{\"too\":\"site-b\"}",
            b"{",
        ] {
            assert!(object_body::<SwitchoverRequest>(bad).is_err(), "{bad:?}");
        }
        assert!(required_object_body::<RemoveRequest>(b"[\"a\"]").is_err());
    }
}
