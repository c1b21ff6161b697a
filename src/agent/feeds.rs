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

/// First pause after a repeated failure of one kind of Kubernetes update.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between two tries of a failing update.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Retry pacing of one kind of update after lasting API errors: the first failure is
/// retried next cycle (a blip), then after 1 s, 2 s, 4 s … up to 30 s. A success, or a
/// request for something else (a new label, a new master), tries at once: backing off
/// must never hold back a change.
#[derive(Debug, Default)]
struct Backoff {
    /// What the failing update asked for.
    key: Option<String>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    fn ready(&self, key: &str, now: Instant) -> bool {
        self.key.as_deref() != Some(key) || self.retry_at.is_none_or(|at| now >= at)
    }

    /// Record a failure of `key`; returns the pause before the next try.
    fn failed(&mut self, key: &str, now: Instant) -> Duration {
        if self.key.as_deref() != Some(key) {
            self.key = Some(key.to_string());
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let delay = match self.failures {
            1 => Duration::ZERO,
            n => BACKOFF_FIRST
                .saturating_mul(1 << (n - 2).min(5))
                .min(BACKOFF_MAX),
        };
        self.retry_at = Some(now + delay);
        delay
    }

    fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

/// Kubernetes updates of one member loop; each call is bounded so a slow API server only
/// delays labels, never the loop's Redis actions, and a failing one is backed off so a
/// lasting error costs one call per 30 s, not two per probe.
pub struct KubeFeed {
    api: Arc<dyn ClusterApi>,
    call_limit: Duration,
    /// Last error logged per kind of update, so a persisting one is logged once.
    errors: BTreeMap<&'static str, String>,
    backoff: BTreeMap<&'static str, Backoff>,
    /// (epoch, master address, when) of the last master endpoints update.
    endpoints_synced: Option<(u64, String, Instant)>,
}

const LABEL: &str = "pod label";
const ENDPOINTS: &str = "master endpoints";

impl KubeFeed {
    pub fn new(api: Arc<dyn ClusterApi>, probe_interval: Duration) -> KubeFeed {
        KubeFeed {
            api,
            call_limit: probe_interval,
            errors: BTreeMap::new(),
            backoff: BTreeMap::new(),
            endpoints_synced: None,
        }
    }

    /// Make the pod's role label `desired`, unless the same request failed lately and its
    /// backoff has not run out: then this returns at once, so the Redis actions that
    /// follow are never delayed by it.
    pub async fn label(&mut self, desired: Option<RedisRole>) {
        let key = format!("{desired:?}");
        if !self.ready(LABEL, &key) {
            return;
        }
        let result =
            tokio::time::timeout(self.call_limit, self.api.ensure_role_label(desired)).await;
        self.note(LABEL, &key, result);
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
        let key = format!("{} {addr}", state.epoch);
        if !due || !self.ready(ENDPOINTS, &key) {
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
        self.note(ENDPOINTS, &key, result);
    }

    fn ready(&self, what: &'static str, key: &str) -> bool {
        self.backoff
            .get(what)
            .is_none_or(|b| b.ready(key, Instant::now()))
    }

    /// Log a failure once (until it changes or clears) and back off its retries.
    fn note<E: std::fmt::Display>(
        &mut self,
        what: &'static str,
        key: &str,
        result: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) {
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("kubernetes API did not answer in time".to_string()),
        };
        let backoff = self.backoff.entry(what).or_default();
        match error {
            Some(e) => {
                let delay = backoff.failed(key, Instant::now());
                if self.errors.get(what) != Some(&e) {
                    warn!(
                        update = what,
                        error = %e,
                        retry_in = %crate::duration::format(delay),
                        "kubernetes update failed; retrying with backoff up to {}",
                        crate::duration::format(BACKOFF_MAX)
                    );
                    self.errors.insert(what, e);
                }
            }
            None => {
                backoff.succeeded();
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
    /// coordinator's member health from the last ack. Also how long until time alone
    /// changes it: the lease running out, or a member's health reaching a threshold.
    pub fn view(
        &self,
        state: &ClusterState,
        raft: &RaftFacts,
        local: &LocalState,
        now: Millis,
        previous: &SentinelView,
    ) -> (SentinelView, Option<Duration>) {
        let (health_age, health) = local
            .cluster_health
            .clone()
            .map_or((Millis(0), BTreeMap::new()), |(at, h)| (now.since(at), h));
        let contact_age = local.contact_at.map(|c| now.since(c));
        let stale = is_isolated(contact_age, self.lease);
        // `is_isolated` is strict: the lease has run out a millisecond past it.
        let stale_in = contact_age
            .filter(|_| !stale)
            .map(|age| Duration::from_millis(self.lease.0.saturating_sub(age.0).saturating_add(1)));
        let facts = SentinelFacts {
            now: std::time::Instant::now(),
            own: self.me,
            coordinator: raft.leader,
            voters: raft.voters.len(),
            health,
            health_age: Duration::from_millis(health_age.0),
            stale: stale || raft.state == openraft::ServerState::Shutdown,
            master_refused_here: local.master_found == crate::decide::local::MasterFound::Gone,
            redis_down_after: self.redis_down_after,
            down_after: self.down_after,
            failover_timeout: self.failover_timeout,
        };
        let changes_in = [crate::sentinel::next_change(&facts), stale_in]
            .into_iter()
            .flatten()
            .min();
        (
            crate::sentinel::build_view(state, &facts, previous),
            changes_in,
        )
    }
}

/// The longest the Sentinel view goes unrebuilt: it also shows the Raft leader, which
/// changes without a commit (and usually with a member cycle, which rebuilds it anyway).
const VIEW_BACKSTOP: Duration = Duration::from_secs(1);

/// Publish a new view on every committed change, after every member cycle, and when the
/// last view said time alone would change it (staleness, a member going silent or down).
pub async fn feed_sentinel<C: Consensus>(
    feed: SentinelFeed,
    consensus: Arc<C>,
    local: Arc<Mutex<LocalState>>,
    clock: super::Clock,
    views: watch::Sender<SentinelView>,
) {
    let mut committed = consensus.subscribe();
    let updated = lock(&local).updated.clone();
    let mut rebuild_in = Duration::ZERO;
    while !views.is_closed() {
        tokio::select! {
            () = tokio::time::sleep(rebuild_in) => {}
            () = updated.notified() => {}
            changed = committed.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let (fresh, changes_in) = {
            let previous = views.borrow();
            feed.view(
                &consensus.state(),
                &consensus.facts(),
                &lock(&local),
                clock.now(),
                &previous,
            )
        };
        rebuild_in = changes_in.map_or(VIEW_BACKSTOP, |d| d.min(VIEW_BACKSTOP));
        views.send_if_modified(|current| {
            let changed = *current != fresh;
            if changed {
                *current = fresh;
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.ready("replica", t0));
        let delays: Vec<u64> = (0..9).map(|_| b.failed("replica", t0).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 30, 30, 30]);
        assert!(!b.ready("replica", t0 + Duration::from_secs(29)));
        assert!(b.ready("replica", t0 + Duration::from_secs(30)));
        // A different request is never held back by the old one's failures.
        assert!(b.ready("master", t0));
        assert_eq!(b.failed("master", t0), Duration::ZERO);
        assert_eq!(b.failed("master", t0), Duration::from_secs(1));
        b.succeeded();
        assert!(b.ready("master", t0));
        assert_eq!(b.failed("master", t0), Duration::ZERO);
    }
}
