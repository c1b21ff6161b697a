//! The two HTTP servers: the peer port (Raft RPC and reports, every request signed)
//! and the API port (public health/role checks, signed everything else).

pub mod api;
pub mod raft_rpc;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{error, warn};

use crate::agent::Agent;
use crate::auth::{self, SignedHeaders, Verifier};
use crate::metrics::{Metrics, ReasonLabel};

/// Largest request body accepted (snapshots of our state are a few KiB).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub fn spawn_servers(
    agent: Arc<Agent>,
    raft_listener: tokio::net::TcpListener,
    api_listener: tokio::net::TcpListener,
) {
    let guard = SignatureGuard {
        verifier: agent.verifier(),
        metrics: agent.metrics(),
    };
    let peer_router = raft_rpc::router(Arc::new(raft_rpc::AgentPeer(agent.clone())), guard.clone());
    let api_router = api::router(agent, guard);
    tokio::spawn(serve("peer", raft_listener, peer_router));
    tokio::spawn(serve("api", api_listener, api_router));
}

async fn serve(what: &'static str, listener: tokio::net::TcpListener, router: Router) {
    if let Err(e) = axum::serve(listener, router).await {
        error!(server = what, error = %e, "HTTP server stopped");
    }
}

/// Checks request signatures; without a shared secret every request passes.
#[derive(Clone)]
pub struct SignatureGuard {
    pub verifier: Option<Arc<Verifier>>,
    pub metrics: Arc<Metrics>,
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Middleware: reject any request whose signature does not verify, before a handler runs.
pub async fn require_signature(
    State(guard): State<SignatureGuard>,
    req: Request,
    next: Next,
) -> Response {
    let Some(verifier) = &guard.verifier else {
        return next.run(req).await;
    };
    let headers = match (
        header(&req, auth::TIMESTAMP_HEADER),
        header(&req, auth::NONCE_HEADER),
        header(&req, auth::SIGNATURE_HEADER),
    ) {
        (Some(timestamp), Some(nonce), Some(signature)) => Some(SignedHeaders {
            timestamp,
            nonce,
            signature,
        }),
        _ => None,
    };
    let method = req.method().as_str().to_string();
    let path = req.uri().path_and_query().map_or_else(
        || req.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    if let Err(e) = verifier.verify(&method, &path, headers.as_ref(), &bytes, auth::unix_now()) {
        warn!(%method, %path, reason = e.reason(), "rejected unauthenticated request");
        guard
            .metrics
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: e.reason().into(),
            })
            .inc();
        return (StatusCode::UNAUTHORIZED, format!("unauthorized: {e}")).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
