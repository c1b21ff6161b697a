//! Raft RPC client: signed JSON over HTTP to peers, plus the server-side
//! dispatcher the HTTP layer calls after it has checked the signature.
//!
//! Wire format: `POST http://{addr}/raft/{append|vote|snapshot}` with the JSON
//! request as body; the answer is the JSON of the `Result` the peer's
//! `Raft` returned.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use super::{Raft, TypeConfig};
use crate::model::NodeId;

/// Which Raft RPC a request carries; the last segment of `/raft/{rpc}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcKind {
    Append,
    Vote,
    Snapshot,
}

impl RpcKind {
    pub fn from_path_segment(segment: &str) -> Option<RpcKind> {
        match segment {
            "append" => Some(RpcKind::Append),
            "vote" => Some(RpcKind::Vote),
            "snapshot" => Some(RpcKind::Snapshot),
            _ => None,
        }
    }

    /// The request path, exactly as signed.
    pub fn path(self) -> &'static str {
        match self {
            RpcKind::Append => "/raft/append",
            RpcKind::Vote => "/raft/vote",
            RpcKind::Snapshot => "/raft/snapshot",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkInitError {
    #[error("cannot build the HTTP client for Raft peers: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why an RPC did not produce an answer from the peer's Raft.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot encode the request: {0}")]
    Encode(serde_json::Error),
    #[error("request to {addr} failed: {source}")]
    Http {
        addr: String,
        source: reqwest::Error,
    },
    #[error("peer {addr} rejected our signature (HTTP 401)")]
    Unauthorized { addr: String },
    #[error("peer {addr} answered HTTP {status}")]
    Status { addr: String, status: u16 },
    #[error("cannot decode the answer from {addr}: {source}")]
    Decode {
        addr: String,
        source: serde_json::Error,
    },
}

/// Creates connections to peers. Clones share the HTTP client (and its
/// connection pool) and the set of peers that rejected our signature.
#[derive(Clone)]
pub struct PeerNetwork {
    client: reqwest::Client,
    secret: Option<Arc<[u8]>>,
    /// Peers whose last answer was 401; the warning is logged when one is added.
    rejected: Arc<Mutex<HashSet<String>>>,
}

impl PeerNetwork {
    /// Needs a process-wide rustls crypto provider installed first (reqwest is
    /// built without one).
    pub fn new(secret: Option<Arc<[u8]>>) -> Result<Self, NetworkInitError> {
        // Peer traffic goes straight to the configured addresses, never via an
        // HTTP(S)_PROXY from the environment.
        let client = reqwest::Client::builder().no_proxy().build()?;
        Ok(Self::with_client(client, secret))
    }

    pub fn with_client(client: reqwest::Client, secret: Option<Arc<[u8]>>) -> Self {
        PeerNetwork {
            client,
            secret,
            rejected: Arc::default(),
        }
    }

    /// Peer addresses whose last answer was a 401, sorted.
    pub fn rejected_peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.rejected().iter().cloned().collect();
        peers.sort();
        peers
    }

    fn rejected(&self) -> MutexGuard<'_, HashSet<String>> {
        // A set of strings cannot be left half-updated, so poisoning is harmless.
        self.rejected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn note_rejected(&self, addr: &str) {
        if self.rejected().insert(addr.to_string()) {
            tracing::warn!(
                peer = addr,
                "peer {addr} rejected our signature: the shared secret likely differs between sites"
            );
        }
    }

    fn note_accepted(&self, addr: &str) {
        // Forget a past rejection so a later one (secret changed again) is logged again.
        self.rejected().remove(addr);
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            net: self.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// Sends RPCs to one peer.
pub struct PeerConnection {
    net: PeerNetwork,
    target: NodeId,
    node: BasicNode,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        ttl: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self.node.addr.as_str();
        let network = |e: TransportError| RPCError::Network(NetworkError::new(&e));

        let body = serde_json::to_vec(req).map_err(|e| network(TransportError::Encode(e)))?;
        let path = kind.path();
        let mut request = self
            .net
            .client
            .post(format!("http://{addr}{path}"))
            .timeout(ttl)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.net.secret {
            let signed = crate::auth::sign(secret, "POST", path, &body, crate::auth::unix_now());
            for (name, value) in signed.pairs() {
                request = request.header(name, value);
            }
        }

        let http_err = |source: reqwest::Error| {
            let connect = source.is_connect();
            let e = TransportError::Http {
                addr: addr.to_string(),
                source,
            };
            // Unreachable makes openraft back off instead of retrying at once.
            if connect {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                network(e)
            }
        };
        let response = request.body(body).send().await.map_err(http_err)?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            self.net.note_rejected(addr);
            return Err(network(TransportError::Unauthorized {
                addr: addr.to_string(),
            }));
        }
        if !status.is_success() {
            return Err(network(TransportError::Status {
                addr: addr.to_string(),
                status: status.as_u16(),
            }));
        }
        self.net.note_accepted(addr);
        let bytes = response.bytes().await.map_err(http_err)?;
        let answer: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&bytes).map_err(|source| {
                network(TransportError::Decode {
                    addr: addr.to_string(),
                    source,
                })
            })?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse, openraft::error::Infallible> {
        self.call(RpcKind::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse, InstallSnapshotError> {
        self.call(RpcKind::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> RpcResult<VoteResponse, openraft::error::Infallible> {
        self.call(RpcKind::Vote, &rpc, option.hard_ttl()).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeRpcError {
    /// The body is not a valid request of that kind; answer 400.
    #[error("bad Raft RPC request: {0}")]
    BadRequest(String),
    #[error("cannot encode the Raft RPC response: {0}")]
    Encode(serde_json::Error),
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ServeRpcError> {
    serde_json::from_slice(body).map_err(|e| ServeRpcError::BadRequest(e.to_string()))
}

fn encode<T: Serialize>(answer: &T) -> Result<Vec<u8>, ServeRpcError> {
    serde_json::to_vec(answer).map_err(ServeRpcError::Encode)
}

/// Handle one authenticated Raft RPC: decode `body`, hand it to `raft`, and
/// return the JSON of the `Result` it produced.
pub async fn serve_rpc(raft: &Raft, kind: RpcKind, body: &[u8]) -> Result<Vec<u8>, ServeRpcError> {
    match kind {
        RpcKind::Append => encode(&raft.append_entries(decode(body)?).await),
        RpcKind::Vote => encode(&raft.vote(decode(body)?).await),
        RpcKind::Snapshot => encode(&raft.install_snapshot(decode(body)?).await),
    }
}
