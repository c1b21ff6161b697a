//! The edges that publish the committed state outward: Kubernetes (the pod's role label
//! and the master EndpointSlice) and the Sentinel-compatible endpoint's view.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::consensus::{Consensus, RaftFacts};
use super::lock;
use super::member::LocalState;
use crate::config::Settings;
use crate::decide::lease::is_isolated;
use crate::kube::ClusterApi;
use crate::model::{ClusterState, Millis, NodeId, RedisRole};
use crate::sentinel::{SentinelFacts, SentinelView};

/// Kubernetes updates of one member loop; each call is bounded so a slow API server only
/// delays labels, never the loop's Redis actions.
pub struct KubeFeed {
    api: Arc<dyn ClusterApi>,
    call_limit: Duration,
    /// Last error logged per kind of update, so a persisting one is logged once.
    errors: BTreeMap<&'static str, String>,
    /// (epoch, master address, when) of the last master endpoints update.
    endpoints_synced: Option<(u64, String, Instant)>,
}

impl KubeFeed {
    pub fn new(api: Arc<dyn ClusterApi>, probe_interval: Duration) -> KubeFeed {
        KubeFeed {
            api,
            call_limit: probe_interval,
            errors: BTreeMap::new(),
            endpoints_synced: None,
        }
    }

    pub async fn label(&mut self, desired: Option<RedisRole>) {
        let result =
            tokio::time::timeout(self.call_limit, self.api.ensure_role_label(desired)).await;
        self.note("pod label", result);
    }

    /// Point the selector-less master Service at the committed master, whichever site it
    /// is in. Resolving and checking happen on a change, and every 30 s to repair drift.
    pub async fn sync_master_endpoints(&mut self, state: &ClusterState) {
        let Some(addr) = state.master_member().and_then(|m| m.redis_addr.clone()) else {
            return;
        };
        let due = self
            .endpoints_synced
            .as_ref()
            .is_none_or(|(epoch, synced_addr, at)| {
                *epoch != state.epoch
                    || *synced_addr != addr
                    || at.elapsed() >= Duration::from_secs(30)
            });
        if !due {
            return;
        }
        let limit = self.call_limit.max(Duration::from_secs(1));
        let api = self.api.clone();
        let result = tokio::time::timeout(limit, async {
            let (ip, port) = crate::kube::resolve_redis_addr(&addr).await?;
            api.ensure_master_endpoints(state.epoch, &ip, port).await
        })
        .await;
        if matches!(result, Ok(Ok(()))) {
            self.endpoints_synced = Some((state.epoch, addr, Instant::now()));
        }
        self.note("master endpoints", result);
    }

    /// Log a failure once (until it changes or clears); the next cycle retries.
    fn note<E: std::fmt::Display>(
        &mut self,
        what: &'static str,
        result: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) {
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("kubernetes API did not answer in time".to_string()),
        };
        match error {
            Some(e) if self.errors.get(what) != Some(&e) => {
                warn!(update = what, error = %e, "kubernetes update failed; retrying every cycle");
                self.errors.insert(what, e);
            }
            Some(_) => {}
            None => {
                if self.errors.remove(what).is_some() {
                    info!(update = what, "kubernetes update succeeds again");
                }
            }
        }
    }
}

/// What the Sentinel endpoint's view needs from the settings.
pub struct SentinelFeed {
    me: NodeId,
    lease: Millis,
    redis_down_after: Duration,
    down_after: Duration,
    failover_timeout: Duration,
}

impl SentinelFeed {
    pub fn new(s: &Settings) -> SentinelFeed {
        SentinelFeed {
            me: s.me.id,
            lease: super::millis(s.lease),
            redis_down_after: s.redis_down_after,
            down_after: s.down_after,
            failover_timeout: s.switchover_timeout,
        }
    }

    /// What the Sentinel endpoint serves: the committed master, flagged stale while this
    /// agent has no confirmed quorum contact (it may not know of a newer master), and the
    /// coordinator's member health from the last ack.
    pub fn view(
        &self,
        state: &ClusterState,
        raft: &RaftFacts,
        local: &LocalState,
        now: Millis,
        previous: &SentinelView,
    ) -> SentinelView {
        let (health_age, health) = local
            .cluster_health
            .clone()
            .map_or((Millis(0), BTreeMap::new()), |(at, h)| (now.since(at), h));
        let facts = SentinelFacts {
            now: std::time::Instant::now(),
            own: self.me,
            coordinator: raft.leader,
            voters: raft.voters.len(),
            health,
            health_age: Duration::from_millis(health_age.0),
            stale: is_isolated(local.contact_at.map(|c| now.since(c)), self.lease)
                || raft.state == openraft::ServerState::Shutdown,
            redis_down_after: self.redis_down_after,
            down_after: self.down_after,
            failover_timeout: self.failover_timeout,
        };
        crate::sentinel::build_view(state, &facts, previous)
    }
}

/// Publish a new view on every committed change and every `tick` (staleness and health
/// change with time alone).
pub async fn feed_sentinel<C: Consensus>(
    feed: SentinelFeed,
    consensus: Arc<C>,
    local: Arc<Mutex<LocalState>>,
    clock: super::Clock,
    tick: Duration,
    views: watch::Sender<SentinelView>,
) {
    let mut committed = consensus.subscribe();
    let mut interval = tokio::time::interval(tick);
    while !views.is_closed() {
        tokio::select! {
            _ = interval.tick() => {}
            changed = committed.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let fresh = {
            let previous = views.borrow();
            feed.view(
                &consensus.state(),
                &consensus.facts(),
                &lock(&local),
                clock.now(),
                &previous,
            )
        };
        views.send_if_modified(|current| {
            let changed = *current != fresh;
            if changed {
                *current = fresh;
            }
            changed
        });
    }
}
