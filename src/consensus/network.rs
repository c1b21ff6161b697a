//! Raft RPC client: signed JSON over HTTP to peers, plus the server-side
//! dispatcher the HTTP layer calls after it has checked the signature.
//!
//! Wire format: `POST http://{addr}/raft/{append|vote|snapshot}` with the JSON
//! request as body; the answer is the JSON of the `Result` the peer's
//! `Raft` returned.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::recovery::{VoteGuard, may_vote};
use super::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, LogId, Vote, VoteRequest, VoteResponse,
};
use super::{Raft, TypeConfig};
use crate::client::{SendError, SignedClient};
use crate::decide::round_trip::{Notice, PeerWatch, Timing, judge, late_answer_wait};
use crate::duration::whole_millis as millis;
use crate::lock;
use crate::metrics::{Metrics, PeerLabel};
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

/// Why an RPC did not produce an answer from the peer's Raft.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot encode the request: {0}")]
    Encode(serde_json::Error),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("cannot decode the answer from {addr}: {source}")]
    Decode {
        addr: String,
        source: serde_json::Error,
    },
    #[error("refused the answer from {addr}: {why}")]
    OutOfRange { addr: String, why: String },
    #[error("the request to {addr} ended without an answer")]
    NoAnswer { addr: String },
}

/// Creates connections to peers; clones share the signed client (its connection pool and
/// the log of peers that rejected our signature), the set of peers known unreachable and
/// how each peer's AppendEntries fare against the heartbeat.
#[derive(Clone)]
pub struct PeerNetwork {
    client: SignedClient,
    /// Peers whose last RPC failed: a peer not deployed yet is logged once, not per RPC.
    failing: Arc<Mutex<HashSet<NodeId>>>,
    round_trips: Arc<Mutex<HashMap<NodeId, PeerWatch>>>,
    metrics: Arc<Metrics>,
}

impl PeerNetwork {
    /// With metrics of its own; see [`PeerNetwork::reporting_to`].
    pub fn new(client: SignedClient) -> Self {
        PeerNetwork {
            client,
            failing: Arc::default(),
            round_trips: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// Count abandoned AppendEntries and round trips in the agent's `metrics`.
    pub fn reporting_to(self, metrics: Arc<Metrics>) -> Self {
        PeerNetwork { metrics, ..self }
    }

    /// Log a peer's first failure once at WARN with its root cause, and its recovery.
    fn note(&self, target: NodeId, addr: &str, failure: Option<&SendError>) {
        let mut failing = lock(&self.failing);
        match failure {
            // Already logged by the client, with its own advice.
            Some(SendError::Unauthorized { .. }) => {}
            Some(e) => {
                if failing.insert(target) {
                    tracing::warn!(
                        peer = addr,
                        reason = %root_cause(e),
                        "peer {addr} does not answer Raft RPCs yet; retrying quietly"
                    );
                }
            }
            None => {
                if failing.remove(&target) {
                    tracing::info!(peer = addr, "peer {addr} answers Raft RPCs");
                }
            }
        }
    }

    /// Peer addresses whose last answer was a 401, sorted.
    pub fn rejected_peers(&self) -> Vec<String> {
        self.client.rejected_peers()
    }

    /// Record an AppendEntries answered after `round_trip` (`awaited`: openraft still
    /// waited for it) and explain, rate-limited, what a round trip near or past the
    /// heartbeat does to the cluster.
    fn time_append(
        &self,
        target: NodeId,
        addr: &str,
        heartbeat: Duration,
        round_trip: Duration,
        awaited: bool,
    ) {
        let timing = judge(round_trip, awaited, heartbeat);
        let label = PeerLabel {
            peer: addr.to_string(),
        };
        let rtt = millis(round_trip);
        let hb = millis(heartbeat);
        if timing != Timing::Cancelled {
            self.metrics
                .raft_append_round_trip_ms
                .get_or_create(&label)
                .set(i64::try_from(rtt).unwrap_or(i64::MAX));
        }
        if timing == Timing::Abandoned {
            self.metrics
                .raft_appends_abandoned
                .get_or_create(&label)
                .inc();
        }
        let notice = lock(&self.round_trips)
            .entry(target)
            .or_default()
            .observe(timing, Instant::now());
        match notice {
            None => {}
            Some(Notice::Abandoning) => tracing::warn!(
                peer = addr,
                round_trip_ms = rtt,
                heartbeat_ms = hb,
                "Raft AppendEntries to {addr} take {rtt} ms, longer than --raft-heartbeat \
                 ({hb} ms), the time openraft gives each one: it abandons them, so this leader \
                 cannot count {addr} toward its quorum. Without a quorum no lease renews and \
                 the master pauses writes for as long as this lasts, while the followers still \
                 hear heartbeats and elect nobody else. Raise --raft-heartbeat above the round \
                 trip between sites (--raft-election-timeout must stay above it)"
            ),
            Some(Notice::StillAbandoning { abandoned, lasted }) => tracing::warn!(
                peer = addr,
                round_trip_ms = rtt,
                heartbeat_ms = hb,
                abandoned,
                "Raft AppendEntries to {addr} still take longer than --raft-heartbeat ({hb} ms), \
                 last {rtt} ms: {abandoned} more abandoned, for {} s now; this leader cannot \
                 count {addr} toward its quorum, and without one the master pauses writes. \
                 Raise --raft-heartbeat above the round trip between sites \
                 (--raft-election-timeout must stay above it)",
                lasted.as_secs()
            ),
            Some(Notice::KeepsUp { abandoned, lasted }) => tracing::info!(
                peer = addr,
                round_trip_ms = rtt,
                heartbeat_ms = hb,
                abandoned,
                "Raft AppendEntries to {addr} complete within --raft-heartbeat ({hb} ms) again, \
                 in {rtt} ms, after {abandoned} were abandoned over {} s",
                lasted.as_secs()
            ),
            Some(Notice::NearLimit) => tracing::warn!(
                peer = addr,
                round_trip_ms = rtt,
                heartbeat_ms = hb,
                "a Raft AppendEntries to {addr} took {rtt} ms, close to --raft-heartbeat \
                 ({hb} ms), the time openraft gives each one: past it every one is abandoned, \
                 this leader cannot count {addr} toward its quorum and, without one, the \
                 master pauses writes. Raise --raft-heartbeat well above the round trip \
                 between sites (--raft-election-timeout must stay above it)"
            ),
        }
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
        Resp: DeserializeOwned + Bounded,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self.node.addr.as_str();
        let network = |e: TransportError| RPCError::Network(NetworkError::new(&e));

        let body = serde_json::to_vec(req).map_err(|e| network(TransportError::Encode(e)))?;
        let bytes = match kind {
            // openraft gives an AppendEntries the heartbeat: its TTL.
            RpcKind::Append => self.send_timed(body, ttl).await.ok_or_else(|| {
                network(TransportError::NoAnswer {
                    addr: addr.to_string(),
                })
            })?,
            RpcKind::Vote | RpcKind::Snapshot => {
                let bytes = self
                    .net
                    .client
                    .call(
                        reqwest::Method::POST,
                        addr,
                        kind.path(),
                        Some(body),
                        Some(ttl),
                    )
                    .await;
                self.net.note(self.target, addr, bytes.as_ref().err());
                bytes
            }
        };
        let bytes = bytes.map_err(|e| match e {
            // Unreachable makes openraft back off instead of retrying at once.
            SendError::Connect { .. } => {
                RPCError::Unreachable(Unreachable::new(&TransportError::Send(e)))
            }
            e => network(TransportError::Send(e)),
        })?;
        let answer: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&bytes).map_err(|source| {
                network(TransportError::Decode {
                    addr: addr.to_string(),
                    source,
                })
            })?;
        if let Ok(resp) = &answer {
            resp.check_bounds().map_err(|why| {
                network(TransportError::OutOfRange {
                    addr: addr.to_string(),
                    why,
                })
            })?;
        }
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// Send an AppendEntries `body` on a task of its own and wait for the answer.
    ///
    /// openraft drops this future when the heartbeat passes; the task then keeps waiting
    /// (for [`late_answer_wait`]) only to measure the round trip, and discards the answer.
    /// That an AppendEntries was abandoned and how late its answer came is what lets the
    /// agent tell a heartbeat shorter than the round trip from a peer that does not answer.
    /// `None` only if the task ended without a result (the runtime is shutting down).
    async fn send_timed(
        &self,
        body: Vec<u8>,
        heartbeat: Duration,
    ) -> Option<Result<Vec<u8>, SendError>> {
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
        let net = self.net.clone();
        let target = self.target;
        let addr = self.node.addr.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let answer = net
                .client
                .call(
                    reqwest::Method::POST,
                    &addr,
                    RpcKind::Append.path(),
                    Some(body),
                    Some(late_answer_wait(heartbeat)),
                )
                .await;
            let round_trip = started.elapsed();
            net.note(target, &addr, answer.as_ref().err());
            let answered = answer.is_ok();
            // Fails only once openraft has dropped the receiver: it stopped waiting.
            let awaited = answer_tx.send(answer).is_ok();
            if answered {
                net.time_append(target, &addr, heartbeat, round_trip, awaited);
            }
        });
        answer_rx.await.ok()
    }
}

/// The innermost error of a chain, in one line ("Connection refused (os error 111)"),
/// prefixed by the outermost when they differ, so the reason fits on a log line.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    if std::ptr::addr_eq(inner, e) {
        e.to_string()
    } else {
        format!("{}: {inner}", short_kind(e))
    }
}

/// What kind of failure a [`SendError`]-like error is, without its nested details.
fn short_kind(e: &dyn std::error::Error) -> String {
    let text = e.to_string();
    text.split(": ").next().unwrap_or(&text).to_string()
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

/// The largest term or log index a peer may send. A real cluster never comes near it
/// (2^48 elections at one a millisecond take nine thousand years), while a term near
/// `u64::MAX` makes openraft's core overflow `term + 1` and stop: refused here, before
/// anything is stored, it cannot poison a node.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 48;

fn check_term(what: &str, term: u64) -> Result<(), String> {
    if term > MAX_TERM_OR_INDEX {
        Err(format!(
            "{what} term {term} is out of range (max {MAX_TERM_OR_INDEX})"
        ))
    } else {
        Ok(())
    }
}

fn check_vote(what: &str, vote: &Vote) -> Result<(), String> {
    check_term(what, vote.leader_id().get_term())
}

fn check_log_id(what: &str, log_id: Option<&LogId>) -> Result<(), String> {
    let Some(log_id) = log_id else { return Ok(()) };
    check_term(what, log_id.leader_id.get_term())?;
    if log_id.index > MAX_TERM_OR_INDEX {
        return Err(format!(
            "{what} index {} is out of range (max {MAX_TERM_OR_INDEX})",
            log_id.index
        ));
    }
    Ok(())
}

/// Terms and indexes in a request, bounded before openraft sees them.
pub trait Bounded {
    fn check_bounds(&self) -> Result<(), String>;
}

impl Bounded for AppendEntriesRequest {
    fn check_bounds(&self) -> Result<(), String> {
        check_vote("vote", &self.vote)?;
        check_log_id("prev_log_id", self.prev_log_id.as_ref())?;
        check_log_id("leader_commit", self.leader_commit.as_ref())?;
        self.entries
            .iter()
            .try_for_each(|e| check_log_id("entry", Some(&e.log_id)))
    }
}

impl Bounded for VoteRequest {
    fn check_bounds(&self) -> Result<(), String> {
        check_vote("vote", &self.vote)?;
        check_log_id("last_log_id", self.last_log_id.as_ref())
    }
}

impl Bounded for InstallSnapshotRequest {
    fn check_bounds(&self) -> Result<(), String> {
        check_vote("vote", &self.vote)?;
        check_log_id("snapshot last_log_id", self.meta.last_log_id.as_ref())?;
        check_log_id(
            "snapshot membership log_id",
            self.meta.last_membership.log_id().as_ref(),
        )
    }
}

impl Bounded for AppendEntriesResponse {
    fn check_bounds(&self) -> Result<(), String> {
        match self {
            AppendEntriesResponse::PartialSuccess(log_id) => {
                check_log_id("matched", log_id.as_ref())
            }
            AppendEntriesResponse::HigherVote(vote) => check_vote("higher vote", vote),
            AppendEntriesResponse::Success | AppendEntriesResponse::Conflict => Ok(()),
        }
    }
}

impl Bounded for VoteResponse {
    fn check_bounds(&self) -> Result<(), String> {
        check_vote("vote", &self.vote)?;
        check_log_id("last_log_id", self.last_log_id.as_ref())
    }
}

impl Bounded for InstallSnapshotResponse {
    fn check_bounds(&self) -> Result<(), String> {
        check_vote("vote", &self.vote)
    }
}

fn decode_bounded<T: DeserializeOwned + Bounded>(body: &[u8]) -> Result<T, ServeRpcError> {
    let request: T = decode(body)?;
    request.check_bounds().map_err(ServeRpcError::BadRequest)?;
    Ok(request)
}

/// Handle one authenticated Raft RPC: decode `body`, refuse terms and indexes out of
/// range, hand it to `raft`, and return the JSON of the `Result` it produced.
pub async fn serve_rpc(raft: &Raft, kind: RpcKind, body: &[u8]) -> Result<Vec<u8>, ServeRpcError> {
    serve_rpc_guarded(raft, kind, body, &VoteGuard::default()).await
}

/// [`serve_rpc`], answering "not granted" to a vote request `guard` refuses (a node whose
/// store was empty at start, see [`super::recovery`]). The answer carries this node's
/// current vote, as openraft's own refusal does, so the candidate counts a refusal rather
/// than an unreachable peer.
pub async fn serve_rpc_guarded(
    raft: &Raft,
    kind: RpcKind,
    body: &[u8],
    guard: &VoteGuard,
) -> Result<Vec<u8>, ServeRpcError> {
    match kind {
        RpcKind::Append => encode(&raft.append_entries(decode_bounded(body)?).await),
        RpcKind::Vote => {
            let request: VoteRequest = decode_bounded(body)?;
            let (vote, last_applied, last_index) = {
                let m = raft.metrics();
                let m = m.borrow();
                (m.vote, m.last_applied, m.last_log_index)
            };
            let term = request.vote.leader_id().get_term();
            if let Err(why) = may_vote(guard.get(), term, last_index) {
                tracing::info!(
                    candidate = request.vote.leader_id().voted_for(),
                    term,
                    "{why}"
                );
                let refused: Result<VoteResponse, RaftError<NodeId, openraft::error::Infallible>> =
                    Ok(VoteResponse {
                        vote,
                        vote_granted: false,
                        last_log_id: last_applied,
                    });
                return encode(&refused);
            }
            encode(&raft.vote(request).await)
        }
        RpcKind::Snapshot => encode(&raft.install_snapshot(decode_bounded(body)?).await),
    }
}
