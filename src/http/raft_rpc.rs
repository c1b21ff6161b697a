//! Peer port: `/raft/{append,vote,snapshot}` for openraft and `/report` for node reports.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router, middleware};

use crate::agent::Agent;
use crate::consensus::network::{RpcKind, ServeRpcError, serve_rpc};
use crate::model::NodeReport;

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/raft/{rpc}", post(raft_rpc))
        .route("/report", post(report))
        .layer(middleware::from_fn_with_state(
            agent.clone(),
            super::require_signature,
        ))
        .with_state(agent)
}

async fn raft_rpc(
    State(agent): State<Arc<Agent>>,
    Path(rpc): Path<String>,
    body: Bytes,
) -> Response {
    let Some(kind) = RpcKind::from_path_segment(&rpc) else {
        return (StatusCode::NOT_FOUND, format!("unknown raft rpc {rpc:?}")).into_response();
    };
    match serve_rpc(&agent.raft, kind, &body).await {
        Ok(bytes) => ([("content-type", "application/json")], bytes).into_response(),
        Err(ServeRpcError::BadRequest(why)) => (StatusCode::BAD_REQUEST, why).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn report(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    let report: NodeReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("malformed report: {e}")).into_response();
        }
    };
    match agent.handle_report(report) {
        Ok(ack) => Json(ack).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    }
}
