//! Peer port: `/raft/{append,vote,snapshot}` for openraft, `/report` for node reports and
//! `/hello` for a coordinator checking a member it is about to add. The router takes a
//! [`PeerService`], so it can be served over a bare Raft node in tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router, middleware};

use super::SignatureGuard;
use crate::agent::Agent;
use crate::consensus::Raft;
use crate::consensus::network::{RpcKind, ServeRpcError, serve_rpc};
use crate::model::{NodeReport, ReportAck};
use crate::wire::Hello;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the peer port serves.
pub trait PeerService: Send + Sync + 'static {
    fn raft_rpc<'a>(
        &'a self,
        kind: RpcKind,
        body: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, ServeRpcError>>;
    /// `Err` is answered 400 with its text.
    fn report(&self, report: NodeReport) -> BoxFuture<'_, Result<ReportAck, String>>;
    fn hello(&self) -> Hello;
}

/// The peer port of a running agent.
pub struct AgentPeer(pub Arc<Agent>);

impl PeerService for AgentPeer {
    fn raft_rpc<'a>(
        &'a self,
        kind: RpcKind,
        body: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, ServeRpcError>> {
        Box::pin(self.0.serve_raft(kind, body))
    }

    fn report(&self, report: NodeReport) -> BoxFuture<'_, Result<ReportAck, String>> {
        Box::pin(async move {
            self.0
                .handle_report(report)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn hello(&self) -> Hello {
        self.0.hello()
    }
}

/// A Raft node alone (no coordinator): reports are refused.
pub struct RaftPeer {
    pub raft: Raft,
    pub hello: Hello,
}

impl PeerService for RaftPeer {
    fn raft_rpc<'a>(
        &'a self,
        kind: RpcKind,
        body: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, ServeRpcError>> {
        Box::pin(serve_rpc(&self.raft, kind, body))
    }

    fn report(&self, report: NodeReport) -> BoxFuture<'_, Result<ReportAck, String>> {
        let refusal = format!("no coordinator here for {}", report.member.name);
        Box::pin(std::future::ready(Err(refusal)))
    }

    fn hello(&self) -> Hello {
        self.hello.clone()
    }
}

pub fn router(peer: Arc<dyn PeerService>, guard: SignatureGuard) -> Router {
    Router::new()
        .route("/raft/{rpc}", post(raft_rpc))
        .route("/report", post(report))
        .route("/hello", post(hello))
        .layer(middleware::from_fn_with_state(
            guard,
            super::require_signature,
        ))
        .with_state(peer)
}

async fn raft_rpc(
    State(peer): State<Arc<dyn PeerService>>,
    Path(rpc): Path<String>,
    body: Bytes,
) -> Response {
    let Some(kind) = RpcKind::from_path_segment(&rpc) else {
        return (StatusCode::NOT_FOUND, format!("unknown raft rpc {rpc:?}")).into_response();
    };
    match peer.raft_rpc(kind, &body).await {
        Ok(bytes) => ([("content-type", "application/json")], bytes).into_response(),
        Err(ServeRpcError::BadRequest(why)) => (StatusCode::BAD_REQUEST, why).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn report(State(peer): State<Arc<dyn PeerService>>, body: Bytes) -> Response {
    let report: NodeReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("malformed report: {e}")).into_response();
        }
    };
    match peer.report(report).await {
        Ok(ack) => Json(ack).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    }
}

async fn hello(State(peer): State<Arc<dyn PeerService>>) -> Json<Hello> {
    Json(peer.hello())
}
