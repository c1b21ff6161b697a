//! Read views of the agent for the API: each built from one read of the committed
//! state, the Raft metrics and the member loop's local state.

use std::time::SystemTime;

use axum::http::StatusCode;
use openraft::ServerState;

use super::consensus::Consensus;
use super::{Agent, lock};
use crate::consensus::recovery::Guard;
use crate::model::{DownKind, RedisHealth, RedisRole};
use crate::wire::{ClusterView, HistoryEntry, MemberView, PeerView, RaftStatus, StateView};

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn raft_state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

/// Why the agent is not ready, if it is not.
#[derive(Debug, PartialEq, Eq)]
pub struct NotReady(pub String);

impl Agent {
    fn has_redis(&self) -> bool {
        self.settings.redis.is_some()
    }

    fn pod_ip_uid(&self) -> (String, String) {
        match &self.kube {
            Some(k) => (k.pod_info().ip.clone(), k.pod_info().uid.clone()),
            None => (self.settings.me.host.clone(), String::new()),
        }
    }

    pub fn state_view(&self) -> StateView {
        let s = &self.settings;
        let cluster = self.consensus.state();
        let facts = self.consensus.facts();
        let (health, last_seen, fenced, reason) = {
            let local = lock(&self.local);
            (
                local.health.clone(),
                local.last_seen,
                local.fenced,
                local.last_plan_reason.clone(),
            )
        };
        let me = s.me.id;
        let status = health.status();
        let role = if !self.has_redis() {
            "witness".to_string()
        } else {
            status.map_or_else(|| "down".to_string(), |st| st.role.to_string())
        };
        let raft_leader = facts.leader.map(|id| {
            cluster
                .members
                .get(&id)
                .map(|m| m.name.clone())
                .or_else(|| facts.nodes.get(&id).cloned())
                .unwrap_or_else(|| id.to_string())
        });
        let (pod_ip, pod_uid) = self.pod_ip_uid();
        StateView {
            pod_name: s.pod_name.clone(),
            pod_ip,
            pod_uid,
            namespace: s.namespace.clone(),
            is_master: cluster.master == Some(me)
                && status.is_some_and(|st| st.role == RedisRole::Master)
                && !fenced,
            is_healthy: !self.has_redis() || status.is_some(),
            is_witness: !self.has_redis(),
            startup_time: rfc3339(self.started_wall),
            last_seen: last_seen.map(rfc3339),
            name: s.name.clone(),
            site: s.site.clone(),
            node_id: me,
            role,
            epoch: cluster.epoch,
            master: cluster.master_member().map(|m| m.name.clone()),
            redis_addr: s.redis_announce.clone(),
            raft_leader,
            raft_state: raft_state_name(facts.state).to_string(),
            raft_term: facts.term,
            raft_store_recovering: matches!(
                self.vote_guard.get(),
                Guard::Asking | Guard::Lost { .. }
            ),
            fenced: fenced && self.has_redis(),
            repl_offset: status.map(|st| st.repl_offset),
            master_link_up: status
                .filter(|st| st.role == RedisRole::Replica)
                .map(|st| st.master_link_up),
            redis_run_id: status.map(|st| st.run_id.clone()),
            redis_error: match &health {
                RedisHealth::Down { error, .. } if self.has_redis() => Some(error.clone()),
                _ => None,
            },
            reconcile: reason,
            paused: cluster.paused,
            switchover: cluster.switchover.as_ref().map(|sw| {
                format!(
                    "{} -> {}",
                    cluster.member_name(sw.from),
                    cluster.member_name(sw.to)
                )
            }),
            last_switchover_abort: cluster.last_switchover_abort.clone(),
            members: cluster
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    id: *id,
                    name: m.name.clone(),
                    site: m.site.clone(),
                    kind: m.kind,
                    redis_addr: m.redis_addr.clone(),
                    api_addr: m.api_addr.clone(),
                    no_promote: m.no_promote,
                })
                .collect(),
        }
    }

    /// `/health` (liveness): fails only for what a restart of the agent repairs, a Raft
    /// core that stopped.
    pub fn health(&self) -> Result<&'static str, (StatusCode, String)> {
        match crate::consensus::core_failure(&self.consensus.raft) {
            None => Ok("OK"),
            Some(why) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{why}; restart the agent"),
            )),
        }
    }

    /// `/ready`: a running Raft core, registered in the committed state, a Raft leader
    /// known, and a local Redis that takes the agent's credentials.
    pub fn ready(&self) -> Result<(), NotReady> {
        if let Some(why) = crate::consensus::core_failure(&self.consensus.raft) {
            return Err(NotReady(why));
        }
        if !self
            .consensus
            .state()
            .members
            .contains_key(&self.settings.me.id)
        {
            return Err(NotReady("not registered in the cluster state yet".into()));
        }
        if self.consensus.facts().leader.is_none() {
            return Err(NotReady("no raft leader known".into()));
        }
        if let RedisHealth::Down {
            kind: DownKind::Unauthorized,
            error,
            ..
        } = &lock(&self.local).health
        {
            return Err(NotReady(format!(
                "local redis refuses this agent's credentials (fix --redis-password): {error}"
            )));
        }
        Ok(())
    }

    /// `/replica`: a replica with a live link, lagging at most `max_lag` bytes if given.
    pub fn replica_check(&self, max_lag: Option<u64>) -> Result<(), String> {
        let local = lock(&self.local);
        let Some(status) = local
            .health
            .status()
            .filter(|s| s.role == RedisRole::Replica)
        else {
            return Err("not a replica".into());
        };
        if !status.master_link_up {
            return Err("replication link down".into());
        }
        if let Some(max_lag) = max_lag {
            let master_offset = local
                .master_offset
                .ok_or("lag unknown: no master offset from the coordinator yet")?;
            let lag = master_offset.saturating_sub(status.repl_offset);
            if lag > max_lag {
                return Err(format!("lagging {lag} bytes"));
            }
        }
        Ok(())
    }

    pub fn raft_status(&self) -> RaftStatus {
        let facts = self.consensus.facts();
        RaftStatus {
            leader_addr: facts.leader_addr().unwrap_or_default().to_string(),
            leader_id: facts.leader.map(|id| id.to_string()).unwrap_or_default(),
            state: raft_state_name(facts.state).to_string(),
            term: facts.term,
            pod_name: self.settings.pod_name.clone(),
            pod_uid: self.pod_ip_uid().1,
            peers: facts.nodes.values().cloned().collect(),
        }
    }

    pub fn raft_peers(&self) -> Vec<PeerView> {
        let facts = self.consensus.facts();
        let cluster = self.consensus.state();
        facts
            .nodes
            .iter()
            .map(|(id, addr)| PeerView {
                id: id.to_string(),
                address: addr.clone(),
                name: cluster.members.get(id).map(|m| m.name.clone()),
                kind: cluster.members.get(id).map(|m| m.kind),
                voter: facts.voters.contains(id),
                leader: facts.leader == Some(*id),
            })
            .collect()
    }

    pub fn history(&self) -> Vec<HistoryEntry> {
        let state = self.consensus.state();
        state
            .history
            .iter()
            .map(|c| HistoryEntry {
                epoch: c.epoch,
                at: rfc3339(
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(c.at_unix_ms),
                ),
                from: c.from.map(|id| state.member_name(id).to_string()),
                to: state.member_name(c.to).to_string(),
                reason: c.reason.clone(),
                candidates: c.candidates.clone(),
            })
            .collect()
    }

    /// `/metrics` in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let v = self.state_view();
        let lag = match (
            v.role.as_str(),
            lock(&self.local).master_offset,
            v.repl_offset,
        ) {
            ("replica", Some(master), Some(own)) => Some(master.saturating_sub(own)),
            _ => None,
        };
        self.metrics.render(&crate::metrics::Snapshot {
            role: &v.role,
            is_master: v.is_master,
            redis_up: v.redis_run_id.is_some(),
            epoch: v.epoch,
            raft_term: v.raft_term,
            raft_state: &v.raft_state,
            fenced: v.fenced,
            paused: v.paused,
            repl_offset: v.repl_offset,
            repl_lag: lag,
            redis_unauthorized: matches!(
                lock(&self.local).health,
                RedisHealth::Down {
                    kind: DownKind::Unauthorized,
                    ..
                }
            ),
        })
    }

    /// `GET /cluster`: this namespace's pods matching `--label-selector`.
    pub async fn cluster(&self) -> Result<ClusterView, (u16, String)> {
        let Some(kube) = &self.kube else {
            return Ok(ClusterView {
                kubernetes: false,
                pods: Vec::new(),
            });
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), kube.list_pods()).await {
            Ok(Ok(pods)) => Ok(ClusterView {
                kubernetes: true,
                pods,
            }),
            Ok(Err(e)) => Err((502, format!("listing pods failed: {e}"))),
            Err(_) => Err((504, "the Kubernetes API did not answer in time".into())),
        }
    }
}
