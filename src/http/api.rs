//! API port: `/health`, `/ready`, `/master`, `/replica` are public (probes and load
//! balancers); everything else is signed.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};

use axum::body::Bytes;

use crate::agent::{Agent, OperatorError};
use crate::config::{Peer, node_id};
use crate::model::{CandidateOffset, MemberKind, NodeId, RedisHealth, RedisRole};

pub fn router(agent: Arc<Agent>) -> Router {
    let signed = Router::new()
        .route("/state", get(state))
        .route("/raft/status", get(raft_status))
        .route("/raft/peers", get(raft_peers))
        .route("/raft/add-voter", post(add_voter))
        .route("/raft/add-nonvoter", post(add_nonvoter))
        .route("/raft/remove", post(remove))
        .route("/switchover", post(switchover))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/history", get(history))
        .route("/cluster", get(cluster))
        .layer(middleware::from_fn_with_state(
            agent.clone(),
            super::require_signature,
        ));
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(ready))
        .route("/master", get(master))
        .route("/replica", get(replica))
        .route("/metrics", get(metrics))
        .merge(signed)
        .with_state(agent)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

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

async fn ready(State(agent): State<Arc<Agent>>) -> Response {
    let known = agent
        .cluster_state()
        .members
        .contains_key(&agent.settings.me.id);
    let leader = agent.raft.metrics().borrow().current_leader;
    match (known, leader) {
        (true, Some(_)) => (StatusCode::OK, "ready").into_response(),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered in the cluster state yet",
        )
            .into_response(),
        (true, None) => (StatusCode::SERVICE_UNAVAILABLE, "no raft leader known").into_response(),
    }
}

fn raft_state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

pub fn state_view(agent: &Agent) -> StateView {
    let s = &agent.settings;
    let cluster = agent.cluster_state();
    let local = agent.local_snapshot();
    let metrics = agent.raft.metrics().borrow().clone();
    let me = s.me.id;
    let status = local.health.status();
    let role = if !agent.has_redis() {
        "witness".to_string()
    } else {
        status.map_or_else(|| "down".to_string(), |st| st.role.to_string())
    };
    let raft_leader = metrics.current_leader.map(|id| {
        cluster
            .members
            .get(&id)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| {
                metrics
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map_or_else(|| id.to_string(), |n| n.addr.clone())
            })
    });
    StateView {
        pod_name: s.pod_name.clone(),
        pod_ip: agent
            .kube
            .as_ref()
            .map_or_else(|| s.me.host.clone(), |k| k.pod_info().ip.clone()),
        pod_uid: agent
            .kube
            .as_ref()
            .map(|k| k.pod_info().uid.clone())
            .unwrap_or_default(),
        namespace: s.namespace.clone(),
        is_master: cluster.master == Some(me)
            && status.is_some_and(|st| st.role == RedisRole::Master)
            && !local.fenced,
        is_healthy: !agent.has_redis() || status.is_some(),
        is_witness: !agent.has_redis(),
        startup_time: rfc3339(agent.started_wall),
        last_seen: local.last_seen.map(rfc3339),
        name: s.name.clone(),
        site: s.site.clone(),
        node_id: me,
        role,
        epoch: cluster.epoch,
        master: cluster.master_member().map(|m| m.name.clone()),
        redis_addr: s.redis_announce.clone(),
        raft_leader,
        raft_state: raft_state_name(metrics.state).to_string(),
        raft_term: metrics.current_term,
        fenced: local.fenced && agent.has_redis(),
        repl_offset: status.map(|st| st.repl_offset),
        master_link_up: status
            .filter(|st| st.role == RedisRole::Replica)
            .map(|st| st.master_link_up),
        redis_run_id: status.map(|st| st.run_id.clone()),
        redis_error: match &local.health {
            RedisHealth::Down { error, .. } if agent.has_redis() => Some(error.clone()),
            _ => None,
        },
        reconcile: local.reason,
        paused: cluster.paused,
        switchover: cluster.switchover.as_ref().map(|sw| {
            format!(
                "{} -> {}",
                cluster.member_name(sw.from),
                cluster.member_name(sw.to)
            )
        }),
        last_switchover_abort: cluster.last_switchover_abort.clone(),
        members: cluster
            .members
            .iter()
            .map(|(id, m)| MemberView {
                id: *id,
                name: m.name.clone(),
                site: m.site.clone(),
                kind: m.kind,
                redis_addr: m.redis_addr.clone(),
                api_addr: m.api_addr.clone(),
                no_promote: m.no_promote,
            })
            .collect(),
    }
}

async fn state(State(agent): State<Arc<Agent>>) -> Json<StateView> {
    Json(state_view(&agent))
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

async fn raft_status(State(agent): State<Arc<Agent>>) -> Json<RaftStatus> {
    let m = agent.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let leader_addr = m
        .current_leader
        .and_then(|id| membership.get_node(&id).map(|n| n.addr.clone()))
        .unwrap_or_default();
    Json(RaftStatus {
        leader_addr,
        leader_id: m
            .current_leader
            .map(|id| id.to_string())
            .unwrap_or_default(),
        state: raft_state_name(m.state).to_string(),
        term: m.current_term,
        pod_name: agent.settings.pod_name.clone(),
        pod_uid: agent
            .kube
            .as_ref()
            .map(|k| k.pod_info().uid.clone())
            .unwrap_or_default(),
        peers: membership.nodes().map(|(_, n)| n.addr.clone()).collect(),
    })
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

async fn raft_peers(State(agent): State<Arc<Agent>>) -> Json<Vec<PeerView>> {
    let m = agent.raft.metrics().borrow().clone();
    let cluster = agent.cluster_state();
    let membership = m.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    Json(
        membership
            .nodes()
            .map(|(id, node)| PeerView {
                id: id.to_string(),
                address: node.addr.clone(),
                name: cluster.members.get(id).map(|mm| mm.name.clone()),
                kind: cluster.members.get(id).map(|mm| mm.kind),
                voter: voters.contains(id),
                leader: m.current_leader == Some(*id),
            })
            .collect(),
    )
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AddPeerRequest {
    /// A name for logs; the node id is derived from the address like every `--raft-peers` entry.
    #[serde(default)]
    pub id: String,
    pub address: String,
}

fn not_leader(agent: &Agent) -> Option<Response> {
    let m = agent.raft.metrics().borrow().clone();
    if m.state == ServerState::Leader {
        return None;
    }
    let leader = m
        .current_leader
        .and_then(|id| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        })
        .unwrap_or_else(|| "unknown".into());
    Some(
        (
            StatusCode::BAD_REQUEST,
            format!("not the leader; the leader is {leader}"),
        )
            .into_response(),
    )
}

async fn add_peer(agent: Arc<Agent>, req: AddPeerRequest, voter: bool) -> Response {
    if let Some(resp) = not_leader(&agent) {
        return resp;
    }
    let peer = match Peer::parse(&req.address) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let id = node_id(&peer.addr);
    let node = BasicNode {
        addr: peer.addr.clone(),
    };
    if let Err(e) = agent.raft.add_learner(id, node, true).await {
        return (
            StatusCode::BAD_REQUEST,
            format!("cannot add {}: {e}", peer.addr),
        )
            .into_response();
    }
    if voter {
        let change = ChangeMembers::AddVoterIds(std::iter::once(id).collect());
        if let Err(e) = agent.raft.change_membership(change, false).await {
            return (
                StatusCode::BAD_REQUEST,
                format!("added {} as learner but not as voter: {e}", peer.addr),
            )
                .into_response();
        }
    }
    tracing::info!(name = %req.id, address = %peer.addr, voter, "added raft member");
    Json(serde_json::json!({"id": id.to_string(), "address": peer.addr, "voter": voter}))
        .into_response()
}

async fn add_voter(State(agent): State<Arc<Agent>>, Json(req): Json<AddPeerRequest>) -> Response {
    add_peer(agent, req, true).await
}

async fn add_nonvoter(
    State(agent): State<Arc<Agent>>,
    Json(req): Json<AddPeerRequest>,
) -> Response {
    add_peer(agent, req, false).await
}

async fn master(State(agent): State<Arc<Agent>>) -> Response {
    let v = state_view(&agent);
    if v.is_master {
        (StatusCode::OK, "master").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not master (role {})", v.role),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ReplicaQuery {
    lag: Option<u64>,
}

async fn replica(State(agent): State<Arc<Agent>>, Query(q): Query<ReplicaQuery>) -> Response {
    let local = agent.local_snapshot();
    let Some(status) = local
        .health
        .status()
        .filter(|s| s.role == RedisRole::Replica)
    else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not a replica").into_response();
    };
    if !status.master_link_up {
        return (StatusCode::SERVICE_UNAVAILABLE, "replication link down").into_response();
    }
    if let Some(max_lag) = q.lag {
        let Some(master_offset) = local.master_offset else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "lag unknown: no master offset from the coordinator yet",
            )
                .into_response();
        };
        let lag = master_offset.saturating_sub(status.repl_offset);
        if lag > max_lag {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("lagging {lag} bytes"),
            )
                .into_response();
        }
    }
    (StatusCode::OK, "replica").into_response()
}

fn operator_error(e: OperatorError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, e.message).into_response()
}

/// Pass an operator request on to the coordinator, or answer why we cannot.
async fn forward(agent: &Agent, path: &str, body: &serde_json::Value) -> Response {
    let Some(leader) = agent.leader_api_addr() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no coordinator (raft leader) known; retry",
        )
            .into_response();
    };
    match agent
        .api_client()
        .send(reqwest::Method::POST, &leader, path, Some(body))
        .await
    {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = resp.text().await.unwrap_or_default();
            (status, [("content-type", "application/json")], text).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("forwarding to the coordinator failed: {e}"),
        )
            .into_response(),
    }
}

/// Parse an optional JSON body; an empty body means defaults.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    #[serde(default)]
    pub to: Option<String>,
}

async fn switchover(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    let req: SwitchoverRequest = match optional_json(&body) {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    if !agent.is_leader() {
        return forward(&agent, "/switchover", &serde_json::json!(req)).await;
    }
    match agent.switchover(req.to.as_deref()).await {
        Ok(done) => Json(done).into_response(),
        Err(e) => operator_error(e),
    }
}

async fn set_paused(agent: Arc<Agent>, paused: bool) -> Response {
    if !agent.is_leader() {
        let path = if paused { "/pause" } else { "/resume" };
        return forward(&agent, path, &serde_json::json!({})).await;
    }
    match agent.set_paused(paused).await {
        Ok(()) => Json(serde_json::json!({ "paused": paused })).into_response(),
        Err(e) => operator_error(e),
    }
}

async fn pause(State(agent): State<Arc<Agent>>) -> Response {
    set_paused(agent, true).await
}

async fn resume(State(agent): State<Arc<Agent>>) -> Response {
    set_paused(agent, false).await
}

#[derive(Debug, Deserialize, Serialize)]
pub struct RemoveRequest {
    /// Member name, or its `--raft-peers` address.
    pub name: String,
}

async fn remove(State(agent): State<Arc<Agent>>, Json(req): Json<RemoveRequest>) -> Response {
    if !agent.is_leader() {
        return forward(&agent, "/raft/remove", &serde_json::json!(req)).await;
    }
    match agent.remove_member(&req.name).await {
        Ok(id) => {
            Json(serde_json::json!({ "removed": req.name, "id": id.to_string() })).into_response()
        }
        Err(e) => operator_error(e),
    }
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

async fn history(State(agent): State<Arc<Agent>>) -> Json<Vec<HistoryEntry>> {
    let state = agent.cluster_state();
    Json(
        state
            .history
            .iter()
            .map(|c| HistoryEntry {
                epoch: c.epoch,
                at: rfc3339(
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(c.at_unix_ms),
                ),
                from: c.from.map(|id| state.member_name(id).to_string()),
                to: state.member_name(c.to).to_string(),
                reason: c.reason.clone(),
                candidates: c.candidates.clone(),
            })
            .collect(),
    )
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    let v = state_view(&agent);
    let lag = match (
        v.role.as_str(),
        agent.local_snapshot().master_offset,
        v.repl_offset,
    ) {
        ("replica", Some(master), Some(own)) => Some(master.saturating_sub(own)),
        _ => None,
    };
    let text = agent.metrics.render(&crate::metrics::Snapshot {
        role: &v.role,
        is_master: v.is_master,
        redis_up: v.redis_run_id.is_some(),
        epoch: v.epoch,
        raft_term: v.raft_term,
        raft_state: &v.raft_state,
        fenced: v.fenced,
        paused: v.paused,
        repl_offset: v.repl_offset,
        repl_lag: lag,
    });
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /cluster`: this namespace's pods matching `--label-selector`, with their labels.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterView {
    /// False outside Kubernetes: then there are no pods to list.
    pub kubernetes: bool,
    pub pods: Vec<crate::kube::PodSummary>,
}

async fn cluster(State(agent): State<Arc<Agent>>) -> Response {
    let Some(kube) = &agent.kube else {
        return Json(ClusterView {
            kubernetes: false,
            pods: Vec::new(),
        })
        .into_response();
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), kube.list_pods()).await {
        Ok(Ok(pods)) => Json(ClusterView {
            kubernetes: true,
            pods,
        })
        .into_response(),
        Ok(Err(e)) => {
            (StatusCode::BAD_GATEWAY, format!("listing pods failed: {e}")).into_response()
        }
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the Kubernetes API did not answer in time",
        )
            .into_response(),
    }
}
