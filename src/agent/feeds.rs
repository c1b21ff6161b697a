//! The edges that publish the committed state outward: Kubernetes (the pod's role label
//! and the master EndpointSlice) and the Sentinel-compatible endpoint's view.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::consensus::Consensus;
use super::lock;
use super::member::LocalState;
use crate::decide::lease::is_isolated;
use crate::kube::ClusterApi;
use crate::model::{ClusterState, Millis, RedisRole};
use crate::sentinel::SentinelView;

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

/// What the Sentinel endpoint serves: the committed master, flagged stale while this
/// agent has no confirmed quorum contact (it may not know of a newer master).
pub fn sentinel_view(
    state: &ClusterState,
    contact_age: Option<Millis>,
    lease: Millis,
) -> SentinelView {
    let mut view = crate::sentinel::view_from_state(state);
    view.stale = is_isolated(contact_age, lease);
    view
}

/// Publish a new view on every committed change and every `tick` (staleness changes
/// with time alone).
pub async fn feed_sentinel<C: Consensus>(
    consensus: Arc<C>,
    local: Arc<Mutex<LocalState>>,
    clock: super::Clock,
    lease: Millis,
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
        let contact_age = lock(&local).contact_at.map(|c| clock.now().since(c));
        let fresh = sentinel_view(&consensus.state(), contact_age, lease);
        views.send_if_modified(|current| {
            let changed = *current != fresh;
            if changed {
                *current = fresh;
            }
            changed
        });
    }
}
