//! API port: `/health`, `/ready`, `/master`, `/replica`, `/metrics` are public (probes and
//! load balancers); everything else is signed. Handlers only decode, call the agent and
//! encode: the views and the operator requests live in the agent.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;

use super::SignatureGuard;
use crate::agent::{Agent, OperatorError, OperatorRequest};
use crate::wire::{
    AddPeerRequest, HistoryEntry, PeerView, RaftStatus, RemoveRequest, StateView,
    SwitchoverRequest, object_body, required_object_body,
};

pub fn router(agent: Arc<Agent>, guard: SignatureGuard) -> Router {
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
            guard,
            super::require_signature,
        ));
    Router::new()
        .route(
            "/health",
            get(|State(agent): State<Arc<Agent>>| async move { agent.health() }),
        )
        .route("/ready", get(ready))
        .route("/master", get(master))
        .route("/replica", get(replica))
        .route("/metrics", get(metrics))
        .merge(signed)
        .with_state(agent)
}

async fn ready(State(agent): State<Arc<Agent>>) -> Response {
    match agent.ready() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.0).into_response(),
    }
}

async fn state(State(agent): State<Arc<Agent>>) -> Json<StateView> {
    Json(agent.state_view())
}

async fn raft_status(State(agent): State<Arc<Agent>>) -> Json<RaftStatus> {
    Json(agent.raft_status())
}

async fn raft_peers(State(agent): State<Arc<Agent>>) -> Json<Vec<PeerView>> {
    Json(agent.raft_peers())
}

async fn history(State(agent): State<Arc<Agent>>) -> Json<Vec<HistoryEntry>> {
    Json(agent.history())
}

async fn master(State(agent): State<Arc<Agent>>) -> Response {
    let v = agent.state_view();
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
    match agent.replica_check(q.lag) {
        Ok(()) => (StatusCode::OK, "replica").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        agent.metrics_text(),
    )
        .into_response()
}

async fn cluster(State(agent): State<Arc<Agent>>) -> Response {
    match agent.cluster().await {
        Ok(view) => Json(view).into_response(),
        Err((status, why)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            why,
        )
            .into_response(),
    }
}

async fn operate(agent: &Agent, request: Result<OperatorRequest, String>) -> Response {
    let request = match request {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    match agent.operate(request).await {
        Ok(answer) => Json(answer).into_response(),
        Err(OperatorError { status, message }) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
        )
            .into_response(),
    }
}

async fn switchover(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    let request = object_body::<SwitchoverRequest>(&body).map(OperatorRequest::Switchover);
    operate(&agent, request).await
}

async fn pause(State(agent): State<Arc<Agent>>) -> Response {
    operate(&agent, Ok(OperatorRequest::Pause)).await
}

async fn resume(State(agent): State<Arc<Agent>>) -> Response {
    operate(&agent, Ok(OperatorRequest::Resume)).await
}

async fn remove(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    let request = required_object_body::<RemoveRequest>(&body).map(OperatorRequest::Remove);
    operate(&agent, request).await
}

async fn add_peer(agent: &Agent, body: &[u8], voter: bool) -> Response {
    let request = required_object_body::<AddPeerRequest>(body)
        .map(|request| OperatorRequest::AddPeer { request, voter });
    operate(agent, request).await
}

async fn add_voter(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    add_peer(&agent, &body, true).await
}

async fn add_nonvoter(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    add_peer(&agent, &body, false).await
}
