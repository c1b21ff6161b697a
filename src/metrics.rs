//! Prometheus metrics (`GET /metrics`). Counters are bumped where events happen;
//! gauges that describe the present are set from the agent's state at each scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `election`, `failover` or `switchover`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// The present, as one scrape sees it.
pub struct Snapshot<'a> {
    /// `master`, `replica`, `witness` or `down`.
    pub role: &'a str,
    pub is_master: bool,
    pub redis_up: bool,
    pub epoch: u64,
    pub raft_term: u64,
    pub raft_state: &'a str,
    pub fenced: bool,
    pub paused: bool,
    pub repl_offset: Option<u64>,
    pub repl_lag: Option<u64>,
    /// The local Redis refuses the agent's credentials.
    pub redis_unauthorized: bool,
}

const ROLES: [&str; 4] = ["master", "replica", "witness", "down"];
const RAFT_STATES: [&str; 4] = ["Leader", "Follower", "Candidate", "Learner"];

pub struct Metrics {
    registry: Registry,
    pub failovers: Family<KindLabel, Counter>,
    pub last_failover_seconds: Gauge<f64, AtomicU64>,
    pub reports_received: Family<PeerLabel, Counter>,
    pub reports_failed: Family<PeerLabel, Counter>,
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// By peer Raft address.
    pub raft_appends_abandoned: Family<PeerLabel, Counter>,
    /// By peer Raft address.
    pub raft_append_round_trip_ms: Family<PeerLabel, Gauge>,
    /// Campaigns a witness started to take the leadership from a data agent.
    pub witness_takeovers: Counter,
    role: Family<RoleLabel, Gauge>,
    raft_state: Family<StateLabel, Gauge>,
    is_master: Gauge,
    redis_up: Gauge,
    redis_unauthorized: Gauge,
    epoch: Gauge,
    raft_term: Gauge,
    fenced: Gauge,
    paused: Gauge,
    repl_offset: Gauge,
    repl_lag: Gauge,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("redis_orchestrator");
        let m = Metrics {
            registry: Registry::default(),
            failovers: Family::default(),
            last_failover_seconds: Gauge::default(),
            reports_received: Family::default(),
            reports_failed: Family::default(),
            auth_failures: Family::default(),
            raft_appends_abandoned: Family::default(),
            raft_append_round_trip_ms: Family::default(),
            witness_takeovers: Counter::default(),
            role: Family::default(),
            raft_state: Family::default(),
            is_master: Gauge::default(),
            redis_up: Gauge::default(),
            redis_unauthorized: Gauge::default(),
            epoch: Gauge::default(),
            raft_term: Gauge::default(),
            fenced: Gauge::default(),
            paused: Gauge::default(),
            repl_offset: Gauge::default(),
            repl_lag: Gauge::default(),
        };
        registry.register(
            "failovers",
            "Master changes committed by this coordinator, by kind",
            m.failovers.clone(),
        );
        registry.register(
            "last_failover_duration_seconds",
            "From the failure (or switchover request) to the commit of the new master",
            m.last_failover_seconds.clone(),
        );
        registry.register(
            "reports_received",
            "Node reports received as coordinator, by sender",
            m.reports_received.clone(),
        );
        registry.register(
            "reports_failed",
            "Node reports this agent could not deliver, by coordinator",
            m.reports_failed.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests rejected by signature checks, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "raft_appends_abandoned",
            "Raft AppendEntries to a peer that openraft abandoned at --raft-heartbeat before \
             the answer came, by peer: the round trip is too long for the heartbeat",
            m.raft_appends_abandoned.clone(),
        );
        registry.register(
            "raft_append_round_trip_milliseconds",
            "Last measured round trip of a Raft AppendEntries to a peer (abandoned ones \
             included), by peer",
            m.raft_append_round_trip_ms.clone(),
        );
        registry.register(
            "raft_witness_takeovers",
            "Campaigns this witness started to take the Raft leadership from a data agent",
            m.witness_takeovers.clone(),
        );
        registry.register(
            "role",
            "1 for this node's current Redis role",
            m.role.clone(),
        );
        registry.register(
            "raft_state",
            "1 for this node's current Raft state",
            m.raft_state.clone(),
        );
        registry.register(
            "is_master",
            "1 if this node's Redis is the committed, writable master",
            m.is_master.clone(),
        );
        registry.register(
            "redis_up",
            "1 if the local Redis answered the last probe",
            m.redis_up.clone(),
        );
        registry.register(
            "redis_unauthorized",
            "1 if the local Redis refuses the agent's credentials (check --redis-password)",
            m.redis_unauthorized.clone(),
        );
        registry.register("epoch", "Committed master epoch", m.epoch.clone());
        registry.register("raft_term", "Current Raft term", m.raft_term.clone());
        registry.register(
            "fenced",
            "1 while the local Redis is paused by fencing or a switchover",
            m.fenced.clone(),
        );
        registry.register(
            "paused",
            "1 while the cluster is paused for maintenance",
            m.paused.clone(),
        );
        registry.register(
            "replication_offset_bytes",
            "Replication offset of the local Redis",
            m.repl_offset.clone(),
        );
        registry.register(
            "replication_lag_bytes",
            "How far the local replica is behind the master",
            m.repl_lag.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Set the gauges from `now` and encode everything in the Prometheus text format.
    pub fn render(&self, now: &Snapshot<'_>) -> String {
        for role in ROLES {
            self.role
                .get_or_create(&RoleLabel { role: role.into() })
                .set(i64::from(role == now.role));
        }
        for state in RAFT_STATES {
            self.raft_state
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(i64::from(state == now.raft_state));
        }
        self.is_master.set(i64::from(now.is_master));
        self.redis_up.set(i64::from(now.redis_up));
        self.redis_unauthorized
            .set(i64::from(now.redis_unauthorized));
        self.epoch.set(gauge_value(now.epoch));
        self.raft_term.set(gauge_value(now.raft_term));
        self.fenced.set(i64::from(now.fenced));
        self.paused.set(i64::from(now.paused));
        self.repl_offset.set(now.repl_offset.map_or(0, gauge_value));
        self.repl_lag.set(now.repl_lag.map_or(0, gauge_value));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn count_failover(&self, kind: &str, seconds: Option<f64>) {
        self.failovers
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
        if let Some(s) = seconds {
            self.last_failover_seconds.set(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_units_and_counters() {
        let m = Metrics::new();
        m.count_failover("failover", Some(0.5));
        m.reports_received
            .get_or_create(&PeerLabel {
                peer: "site-b".into(),
            })
            .inc();
        m.auth_failures
            .get_or_create(&ReasonLabel {
                reason: "stale".into(),
            })
            .inc();
        let peer = PeerLabel {
            peer: "10.0.0.2:7000".into(),
        };
        m.raft_appends_abandoned.get_or_create(&peer).inc();
        m.raft_append_round_trip_ms.get_or_create(&peer).set(103);
        let text = m.render(&Snapshot {
            role: "master",
            is_master: true,
            redis_up: true,
            epoch: 3,
            raft_term: 7,
            raft_state: "Leader",
            fenced: false,
            paused: false,
            repl_offset: Some(1234),
            repl_lag: None,
            redis_unauthorized: false,
        });
        for line in [
            "redis_orchestrator_failovers_total{kind=\"failover\"} 1",
            "redis_orchestrator_last_failover_duration_seconds 0.5",
            "redis_orchestrator_reports_received_total{peer=\"site-b\"} 1",
            "redis_orchestrator_auth_failures_total{reason=\"stale\"} 1",
            "redis_orchestrator_raft_appends_abandoned_total{peer=\"10.0.0.2:7000\"} 1",
            "redis_orchestrator_raft_append_round_trip_milliseconds{peer=\"10.0.0.2:7000\"} 103",
            "redis_orchestrator_role{role=\"master\"} 1",
            "redis_orchestrator_role{role=\"replica\"} 0",
            "redis_orchestrator_raft_state{state=\"Leader\"} 1",
            "redis_orchestrator_epoch 3",
            "redis_orchestrator_raft_term 7",
            "redis_orchestrator_is_master 1",
            "redis_orchestrator_replication_offset_bytes 1234",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
