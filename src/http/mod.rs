//! The two HTTP servers: the peer port (Raft RPC and reports, every request signed)
//! and the API port (public health/role checks, signed everything else).
//!
//! Both are served by one accept loop that holds an attacker to a bounded cost before
//! authentication: at most [`MAX_CONNECTIONS`] connections per port (more wait in the
//! kernel's backlog), TLS handshakes and request headers bounded in time, a declared
//! body over [`MAX_BODY_BYTES`] refused at once, the signature checked from the headers
//! before any body byte is read, and the body itself read against a deadline.

pub mod api;
pub mod raft_rpc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tracing::{debug, error, warn};

use crate::agent::Agent;
use crate::auth::{self, SignedHeaders, Verifier};
use crate::metrics::{Metrics, ReasonLabel};
use crate::tls::Reloading;

/// Largest request body accepted (snapshots of our state are a few KiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Connections served at once per port.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send a request's headers within this (an idle keep-alive connection
/// is closed after it too).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive within this once its headers did.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration both ports serve, re-read when its files change.
pub type ServerTls = Arc<Reloading<Arc<rustls::ServerConfig>>>;

/// The address a connection arrived on, for requests addressed by IP.
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub SocketAddr);

pub fn spawn_servers(
    agent: Arc<Agent>,
    raft_listener: tokio::net::TcpListener,
    api_listener: tokio::net::TcpListener,
    tls: Option<ServerTls>,
) {
    let guard = SignatureGuard {
        verifier: agent.verifier(),
        metrics: agent.metrics(),
    };
    let peer_router = raft_rpc::router(Arc::new(raft_rpc::AgentPeer(agent.clone())), guard.clone());
    let api_router = api::router(agent, guard);
    tokio::spawn(serve("peer", raft_listener, peer_router, tls.clone()));
    tokio::spawn(serve("api", api_listener, api_router, tls));
}

/// Accept connections forever, each in its own task, HTTPS only when `tls` is set.
pub async fn serve(
    what: &'static str,
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<ServerTls>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Take a slot before accepting, so excess clients wait in the backlog and cost
        // the agent nothing.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            error!(server = what, "connection limiter closed");
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                warn!(server = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Answers are one small write each; never hold one back waiting for an ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(server = what, %peer, error = %e, "cannot set TCP_NODELAY");
        }
        let local = stream.local_addr().ok().map(LocalAddr);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(tls) = tls else {
                serve_connection(TokioIo::new(stream), router, local).await;
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), router, local).await,
                Ok(Err(e)) => debug!(server = what, %peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(server = what, %peer, "TLS handshake timed out"),
            }
        });
    }
}

async fn serve_connection<I>(io: TokioIo<I>, router: Router, local: Option<LocalAddr>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if let Some(local) = local {
                req.extensions_mut().insert(local);
            }
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, req).await }
        });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service)
        .await;
    if let Err(e) = result {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Checks request signatures; without a shared secret every request passes.
#[derive(Clone)]
pub struct SignatureGuard {
    pub verifier: Option<Arc<Verifier>>,
    pub metrics: Arc<Metrics>,
}

impl SignatureGuard {
    fn refuse(&self, method: &str, path: &str, e: auth::AuthError) -> Response {
        warn!(%method, %path, reason = e.reason(), "rejected unauthenticated request");
        self.metrics
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: e.reason().into(),
            })
            .inc();
        (StatusCode::UNAUTHORIZED, format!("unauthorized: {e}")).into_response()
    }
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn signed_headers(req: &Request) -> Option<SignedHeaders> {
    Some(SignedHeaders {
        timestamp: header(req, auth::TIMESTAMP_HEADER)?,
        nonce: header(req, auth::NONCE_HEADER)?,
        digest: header(req, auth::CONTENT_DIGEST_HEADER)?,
        signature: header(req, auth::SIGNATURE_HEADER)?,
    })
}

/// Middleware: refuse an oversized body at once, verify the signature from the headers,
/// then read the body (bounded in size and time) and check it is the one signed. The
/// answer to a signed request is signed over its nonce.
pub async fn require_signature(
    State(guard): State<SignatureGuard>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    let method = req.method().as_str().to_string();
    let path = req.uri().path_and_query().map_or_else(
        || req.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let signed = match &guard.verifier {
        None => None,
        Some(verifier) => {
            let authority = header(&req, "host")
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default();
            let local = req.extensions().get::<LocalAddr>().map(|l| l.0);
            let headers = signed_headers(&req);
            match verifier.verify_head(
                &method,
                &authority,
                local,
                &path,
                headers.as_ref(),
                auth::unix_now(),
            ) {
                Ok(digest) => headers.map(|h| (verifier.clone(), h.nonce, digest)),
                Err(e) => return guard.refuse(&method, &path, e),
            }
        }
    };
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, to_bytes(body, MAX_BODY_BYTES)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
        }
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "request body too slow").into_response(),
    };
    let Some((verifier, nonce, digest)) = signed else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    if let Err(e) = auth::check_body(&digest, &bytes) {
        return guard.refuse(&method, &path, e);
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    sign_reply(verifier.secret(), &nonce, response).await
}

/// Buffer our own answer (small JSON) and add its signature header.
async fn sign_reply(secret: &[u8], nonce: &str, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer",
        )
            .into_response();
    };
    let signature = auth::sign_reply(secret, nonce, parts.status.as_u16(), &bytes);
    if let Ok(value) = HeaderValue::from_str(&signature) {
        parts.headers.insert(auth::REPLY_SIGNATURE_HEADER, value);
    }
    Response::from_parts(parts, Body::from(bytes))
}
