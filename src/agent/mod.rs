//! The agent runtime: the only place that calls both the pure decisions and the adapters.
//!
//! Two loops run per agent, each over one snapshot per cycle:
//! - the **member** loop ([`member`], every agent): probe the local Redis, send a
//!   [`crate::model::NodeReport`] to the coordinator, run [`crate::decide::local::plan_local`]
//!   and execute it (a witness only reports);
//! - the **coordinator** loop ([`coordinator`], acts only while Raft leader): run
//!   [`crate::decide::decide`] over the latest reports and commit what it returns.
//!
//! [`feeds`] publishes the committed state to Kubernetes and the Sentinel endpoint.
//! The HTTP layer sees only [`Agent`]: read views and operator requests.

pub mod consensus;
pub mod coordinator;
mod feeds;
mod leadership;
pub mod member;
mod operator;
#[cfg(test)]
mod tests;
mod views;

pub use coordinator::ReportRefusal;
pub use operator::OperatorError;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use openraft::{BasicNode, Config};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::auth::Verifier;
use crate::client::{SendError, SignedClient};
use crate::config::Settings;
use crate::consensus::network::{PeerNetwork, RpcKind, ServeRpcError, serve_rpc_guarded};
use crate::consensus::recovery::{Guard, VoteGuard};
use crate::consensus::rejoin::{self, Rejoin};
use crate::consensus::{Raft, open_storage};
use crate::decide::Policy;
use crate::decide::lease::keep_alive_interval;
use crate::duration::whole_millis;
use crate::kube::ClusterApi;
use crate::metrics::Metrics;
use crate::model::{Member, MemberKind, Millis, NodeId, NodeReport, ReportAck};
use crate::redis::client::RedisClient;
use crate::wire::{AddPeerRequest, Hello, RemoveRequest, SwitchoverRequest};
use consensus::{Consensus, RaftConsensus};
use coordinator::Coordinator;
use feeds::KubeFeed;
use member::{LocalState, MemberConfig, MemberLoop, ToCoordinator};

/// Startup failures; each ends the process with a message naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open Raft storage: {0}")]
    Storage(String),
    #[error("invalid Raft settings: {0}")]
    RaftConfig(String),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error("cannot set up the Redis client: {0}")]
    Redis(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, whole_millis)
}

pub(crate) use crate::lock;

pub(crate) fn millis(d: Duration) -> Millis {
    Millis(whole_millis(d))
}

/// The agent's monotonic clock (tokio's, so tests can pause it): time since start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            started: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        millis(self.started.elapsed())
    }
}

/// An operator request, served by the coordinator and forwarded there by any other agent.
#[derive(Debug)]
pub enum OperatorRequest {
    Switchover(SwitchoverRequest),
    Pause,
    Resume,
    Remove(RemoveRequest),
    AddPeer {
        request: AddPeerRequest,
        voter: bool,
    },
}

impl OperatorRequest {
    fn path(&self) -> &'static str {
        match self {
            OperatorRequest::Switchover(_) => "/switchover",
            OperatorRequest::Pause => "/pause",
            OperatorRequest::Resume => "/resume",
            OperatorRequest::Remove(_) => "/raft/remove",
            OperatorRequest::AddPeer { voter: true, .. } => "/raft/add-voter",
            OperatorRequest::AddPeer { voter: false, .. } => "/raft/add-nonvoter",
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            OperatorRequest::Switchover(r) => serde_json::json!(r),
            OperatorRequest::Pause | OperatorRequest::Resume => serde_json::json!({}),
            OperatorRequest::Remove(r) => serde_json::json!(r),
            OperatorRequest::AddPeer { request, .. } => serde_json::json!(request),
        }
    }
}

/// The running agent as the HTTP layer sees it.
pub struct Agent {
    settings: Arc<Settings>,
    consensus: Arc<RaftConsensus>,
    /// Refuses votes while a node whose store was empty at start may have voted before.
    vote_guard: Arc<VoteGuard>,
    coordinator: Arc<Coordinator>,
    local: Arc<Mutex<LocalState>>,
    metrics: Arc<Metrics>,
    kube: Option<Arc<dyn ClusterApi>>,
    client: SignedClient,
    verifier: Option<Arc<Verifier>>,
    clock: Clock,
    started_wall: SystemTime,
}

impl Agent {
    /// Open storage and start the Raft node; no loop runs yet.
    pub async fn open(
        settings: Settings,
        kube: Option<Arc<dyn ClusterApi>>,
    ) -> Result<Arc<Agent>, StartError> {
        let settings = Arc::new(settings);
        let (mut log_store, state_machine) = open_storage(&settings.raft_data_dir)
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let empty_store = rejoin::store_is_empty(&mut log_store)
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let election_min = whole_millis(settings.raft_election_timeout);
        let config = Config {
            cluster_name: "redis-orchestrator".into(),
            heartbeat_interval: whole_millis(settings.raft_heartbeat),
            election_timeout_min: election_min,
            election_timeout_max: election_min.saturating_mul(2),
            // Our snapshots are a few KiB; keep chunks far below the HTTP body limit.
            snapshot_max_chunk_size: 256 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::RaftConfig(e.to_string()))?;
        let client =
            SignedClient::with_tls(settings.secret.as_deref(), None, settings.tls.as_ref())
                .map_err(StartError::Http)?;
        let metrics = Arc::new(Metrics::new());
        let raft = Raft::new(
            settings.me.id,
            Arc::new(config),
            PeerNetwork::new(client.clone()).reporting_to(metrics.clone()),
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        // An empty store may be a lost one: no vote and no candidacy until `bootstrap` has
        // asked the peers (their RPCs can arrive before it runs).
        let vote_guard = Arc::new(VoteGuard::default());
        if empty_store {
            vote_guard.set(Guard::Asking);
            raft.runtime_config().elect(false);
        }
        let clock = Clock::start();
        let policy = Policy {
            redis_down_after: millis(settings.redis_down_after),
            lease: millis(settings.lease),
            down_after: millis(settings.down_after),
            max_lag_bytes: settings.max_lag_on_failover,
            switchover_timeout: millis(settings.switchover_timeout),
            election_timeout: millis(settings.raft_election_timeout),
        };
        Ok(Arc::new(Agent {
            verifier: settings
                .secret
                .as_deref()
                .map(|s| Arc::new(Verifier::new(s).bound_to(settings.own_authorities()))),
            coordinator: Arc::new(Coordinator::new(policy, clock, metrics.clone())),
            consensus: Arc::new(RaftConsensus::new(raft, state_machine)),
            vote_guard,
            local: Arc::new(Mutex::new(LocalState::default())),
            metrics,
            kube,
            client,
            clock,
            started_wall: SystemTime::now(),
            settings,
        }))
    }

    /// Bootstrap if new, then spawn the loops (and the Sentinel endpoint when bound).
    pub async fn start(
        self: &Arc<Self>,
        sentinel_listener: Option<tokio::net::TcpListener>,
    ) -> Result<(), StartError> {
        self.bootstrap().await;
        let s = &self.settings;
        let redis = match &s.redis {
            Some(cfg) => {
                Some(RedisClient::new(cfg.clone()).map_err(|e| StartError::Redis(e.to_string()))?)
            }
            None => None,
        };
        let round_trip = Arc::new(leadership::LeaderRoundTrip::default());
        let member = MemberLoop {
            config: MemberConfig {
                me: s.me.id,
                member: self.member(),
                probe_interval: s.probe_interval,
                lease: s.lease,
                keep_alive: keep_alive_interval(s.lease, &s.lease_timings()),
                down_after: s.down_after,
                redis_down_after: s.redis_down_after,
            },
            redis,
            consensus: self.consensus.clone(),
            sink: ToCoordinator {
                me: s.me.id,
                consensus: self.consensus.clone(),
                coordinator: self.coordinator.clone(),
                client: self.client.clone(),
                round_trip: round_trip.clone(),
            },
            local: self.local.clone(),
            kube: self
                .kube
                .clone()
                .map(|api| KubeFeed::new(api, s.probe_interval)),
            metrics: self.metrics.clone(),
            clock: self.clock,
        };
        tokio::spawn(member.run());
        tokio::spawn(self.coordinator.clone().run(self.consensus.clone()));
        if s.witness {
            tokio::spawn(leadership::take_over_from_data_leaders(
                self.consensus.clone(),
                s.me.id,
                self.vote_guard.clone(),
                round_trip,
                crate::decide::leadership::TakeoverTiming::for_raft(
                    millis(s.raft_election_timeout),
                    millis(s.raft_heartbeat),
                ),
                self.metrics.clone(),
            ));
        }
        if let Some(listener) = sentinel_listener {
            let feed = feeds::SentinelFeed::new(s);
            let (first, _) = feed.view(
                &self.consensus.state(),
                &self.consensus.facts(),
                &lock(&self.local),
                self.clock.now(),
                &Default::default(),
            );
            let (view_tx, view_rx) = watch::channel(first);
            let config = crate::sentinel::SentinelConfig {
                master_name: s.sentinel_master_name.clone(),
                password: s.sentinel_password.clone(),
            };
            info!(addr = %s.sentinel_bind.map_or_else(String::new, |a| a.to_string()), "serving the Sentinel-compatible endpoint");
            tokio::spawn(crate::sentinel::serve(listener, config, view_rx));
            tokio::spawn(feeds::feed_sentinel(
                feed,
                self.consensus.clone(),
                self.local.clone(),
                self.clock,
                view_tx,
            ));
        }
        Ok(())
    }

    /// Every agent initializes with the identical full voter set from `--raft-peers`,
    /// so any start order forms exactly one cluster; a node whose store is empty asks its
    /// peers first (`consensus::recovery`): it may be new or may have lost its store.
    async fn bootstrap(&self) {
        let raft = &self.consensus.raft;
        if self.vote_guard.get() == Guard::Asking {
            let s = &self.settings;
            let rejoin = Rejoin {
                raft: raft.clone(),
                client: self.client.clone(),
                me: s.me.id,
                voters: s.peers.iter().map(|p| (p.id, p.addr.clone())).collect(),
                guard: self.vote_guard.clone(),
                // Several elections' worth: a restarting peer answers well within it.
                bound: s.raft_election_timeout.saturating_mul(10),
                data_dir: s.raft_data_dir.clone(),
            };
            Arc::new(rejoin).start().await;
            return;
        }
        match raft.is_initialized().await {
            Ok(true) => info!("raft state found on disk; rejoining the cluster"),
            Ok(false) => {
                // A vote without a log: it voted, then stopped before any entry came.
                let members: BTreeMap<NodeId, BasicNode> = self
                    .settings
                    .peers
                    .iter()
                    .map(|p| {
                        (
                            p.id,
                            BasicNode {
                                addr: p.addr.clone(),
                            },
                        )
                    })
                    .collect();
                match raft.initialize(members).await {
                    Ok(()) => info!(
                        voters = self.settings.peers.len(),
                        "initialized a new cluster with every --raft-peers entry as voter"
                    ),
                    Err(e) => {
                        debug!(error = %e, "initialize skipped: this node already has a log or vote")
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot read raft state"),
        }
    }

    fn member(&self) -> Member {
        let s = &self.settings;
        Member {
            name: s.name.clone(),
            site: s.site.clone(),
            kind: if s.witness {
                MemberKind::Witness
            } else {
                MemberKind::Data
            },
            redis_addr: s.redis_announce.clone(),
            api_addr: s.api_advertise.clone(),
            raft_addr: s.me.addr.clone(),
            priority: s.priority,
            no_promote: s.no_promote,
            sentinel_addr: s.sentinel_announce.clone(),
        }
    }

    pub fn verifier(&self) -> Option<Arc<Verifier>> {
        self.verifier.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// A report from a member, on the peer port.
    pub async fn handle_report(&self, report: NodeReport) -> Result<ReportAck, ReportRefusal> {
        let quorum_ack_age = self.consensus.quorum_ack_age().await;
        self.coordinator.handle_report(
            &self.consensus.facts(),
            quorum_ack_age,
            &self.consensus.state(),
            report,
        )
    }

    /// `POST /hello` on the peer port.
    pub fn hello(&self) -> Hello {
        Hello {
            node: self.settings.me.id,
            raft: Some(rejoin::hello_raft(
                &self.consensus.raft,
                &self.consensus.state(),
            )),
        }
    }

    /// One authenticated Raft RPC from a peer.
    pub async fn serve_raft(&self, kind: RpcKind, body: &[u8]) -> Result<Vec<u8>, ServeRpcError> {
        serve_rpc_guarded(&self.consensus.raft, kind, body, &self.vote_guard).await
    }

    /// Serve an operator request here if this agent coordinates, else forward it (signed
    /// anew, for the coordinator) to the coordinator's API.
    pub async fn operate(
        &self,
        request: OperatorRequest,
    ) -> Result<serde_json::Value, OperatorError> {
        if !self.consensus.facts().is_leader() {
            return self.forward(&request).await;
        }
        let c = self.consensus.as_ref();
        match request {
            OperatorRequest::Switchover(r) => {
                let done = self.coordinator.switchover(c, r.to.as_deref()).await?;
                Ok(serde_json::json!(done))
            }
            OperatorRequest::Pause | OperatorRequest::Resume => {
                let paused = matches!(request, OperatorRequest::Pause);
                self.coordinator.set_paused(c, paused).await?;
                Ok(serde_json::json!({ "paused": paused }))
            }
            OperatorRequest::Remove(r) => {
                let id = self
                    .coordinator
                    .remove_member(c, self.settings.me.id, &r.name)
                    .await?;
                Ok(serde_json::json!({ "removed": r.name, "id": id.to_string() }))
            }
            OperatorRequest::AddPeer { request, voter } => {
                let peer = crate::config::Peer::parse(&request.address)
                    .map_err(|e| OperatorError::new(400, e.to_string()))?;
                let hello = self.say_hello(&peer.addr);
                let id = self
                    .coordinator
                    .add_member(c, &peer.addr, voter, hello)
                    .await?;
                Ok(serde_json::json!({"id": id.to_string(), "address": peer.addr, "voter": voter}))
            }
        }
    }

    async fn say_hello(&self, addr: &str) -> Result<NodeId, String> {
        let answer = self
            .client
            .call(
                reqwest::Method::POST,
                addr,
                "/hello",
                Some(b"{}".to_vec()),
                Some(Duration::from_secs(2)),
            )
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<Hello>(&answer)
            .map(|h| h.node)
            .map_err(|e| format!("unreadable hello: {e}"))
    }

    async fn forward(&self, request: &OperatorRequest) -> Result<serde_json::Value, OperatorError> {
        let leader = self
            .leader_api_addr()
            .ok_or_else(|| OperatorError::new(503, "no coordinator (raft leader) known; retry"))?;
        let body = request.body().to_string().into_bytes();
        let resp = self
            .client
            .send(
                reqwest::Method::POST,
                &leader,
                request.path(),
                Some(body),
                None,
            )
            .await
            .map_err(|e: SendError| {
                OperatorError::new(502, format!("forwarding to the coordinator failed: {e}"))
            })?;
        let status = resp.status;
        let text = String::from_utf8_lossy(&resp.body);
        if (200..300).contains(&status) {
            serde_json::from_str(&text).map_err(|e| {
                OperatorError::new(502, format!("unreadable answer from the coordinator: {e}"))
            })
        } else {
            Err(OperatorError::new(status, text.into_owned()))
        }
    }

    /// API address of the current coordinator, from its committed registration.
    fn leader_api_addr(&self) -> Option<String> {
        let leader = self.consensus.facts().leader?;
        self.consensus
            .state()
            .members
            .get(&leader)
            .map(|m| m.api_addr.clone())
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.consensus.raft.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
    }
}
