//! Sentinel-compatible endpoint (`--sentinel-bind`, usually port 26379), so stock
//! Redis clients and monitoring find the committed master across sites the way they
//! find it with Redis Sentinel 7.
//!
//! The endpoint only reports; it never decides. Its input is a [`SentinelView`] the
//! agent publishes on a `tokio::sync::watch` channel, built by [`build_view`] from the
//! committed state and [`SentinelFacts`] (the coordinator's latest member health, which
//! every agent learns with each report acknowledgement, see [`health_summary`]).
//! Changes between consecutive views become Sentinel's pub/sub events ([`events`]).
//!
//! Layout: [`resp`] encodes replies (RESP2 and RESP3), `decode` splits the input
//! (multibulk and inline), [`command`] is the command set, `events` the event diff,
//! `clients` the connection registry behind `CLIENT LIST/KILL` and `INFO`, and
//! `server` runs the sockets.

mod clients;
pub mod command;
mod decode;
mod events;
mod glob;
mod report;
pub mod resp;
mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use clients::Clients;
pub use events::events;
pub use server::serve;

use crate::addr::split_host_port;
use crate::decide::ReceivedReport;
use crate::duration::whole_millis as ms;
use crate::model::{
    ClusterState, Member, MemberHealth, MemberKind, Millis, NodeId, RedisHealth, RedisRole,
};

/// Port assumed for a `redis_addr` written without one.
const DEFAULT_REDIS_PORT: u16 = 6379;
/// Port assumed for a `sentinel_addr` written without one.
const DEFAULT_SENTINEL_PORT: u16 = 26379;
/// Sentinel's own default, reported for members with the default priority too.
const NO_PROMOTE_PRIORITY: u32 = 0;

/// A server as clients should reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Member name, for logs; Sentinel itself names instances by address.
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn addr(&self) -> String {
        crate::addr::join_host_port(&self.host, self.port)
    }
}

/// What the agents last knew of one Redis data node. Since-times are on this
/// process's monotonic clock; the endpoint renders them as ages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Subjectively down (`s_down`) since then: its Redis refused or failed probes for
    /// `--redis-down-after`, or its agent has been silent for `--down-after`.
    pub down_since: Option<Instant>,
    /// When the report this is built from reached the coordinator (`info-refresh`).
    pub reported_at: Option<Instant>,
    /// Last report that saw it answering (`last-ok-ping-reply`).
    pub last_ok: Option<Instant>,
    /// Last known role (kept while it is down, as Sentinel keeps `role-reported`).
    pub role: Option<RedisRole>,
    pub role_since: Option<Instant>,
    /// Last known run id and replication offset.
    pub run_id: String,
    pub offset: u64,
    /// Its replication link to a master is up.
    pub link_up: bool,
    /// Since when the link has been known down.
    pub link_down_since: Option<Instant>,
    /// For a replica: the master it replicates from, as it reported.
    pub master_addr: Option<(String, u16)>,
    /// Its agent cannot reach it right now, down for `--redis-down-after` or not yet: Sentinel
    /// flags an instance whose link is down `disconnected`, and clients (node-redis) skip a
    /// master so flagged instead of connecting to an address that refuses them.
    pub disconnected: bool,
}

impl Health {
    pub fn s_down(&self) -> bool {
        self.down_since.is_some()
    }
}

/// One Redis data node in the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub node: NodeId,
    pub endpoint: Endpoint,
    pub health: Health,
    /// `slave-priority`: 0 for `--no-promote`, as Sentinel never promotes priority 0.
    pub priority: u32,
}

/// Another agent's Sentinel endpoint (`SENTINEL sentinels`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSentinel {
    pub runid: String,
    pub host: String,
    pub port: u16,
    /// Its agent has been silent for `--down-after` since then.
    pub down_since: Option<Instant>,
    /// Its last report to the coordinator (`last-hello-message`).
    pub last_seen: Option<Instant>,
}

/// What the endpoint reports: plain data, fed by the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentinelView {
    /// Sentinel run id of this agent (`SENTINEL myid`).
    pub myid: String,
    /// The committed epoch (`config-epoch`).
    pub epoch: u64,
    /// The committed master; `None` before the first one is chosen.
    pub master: Option<Instance>,
    /// Every other data member, by name.
    pub replicas: Vec<Instance>,
    /// The other agents serving the Sentinel protocol.
    pub sentinels: Vec<PeerSentinel>,
    /// Raft voters, and how many of them (this agent included) reported recently.
    pub voters: u32,
    pub usable: u32,
    /// Votes needed to commit a master change (`quorum`): a majority of the voters.
    pub quorum: u32,
    /// Run id of the agent coordinating (the Raft leader), when known.
    pub coordinator: Option<String>,
    /// The target of a planned switchover in progress (`failover_in_progress`).
    pub failover_to: Option<NodeId>,
    /// `down-after-milliseconds` and `failover-timeout`.
    pub down_after: Duration,
    pub failover_timeout: Duration,
    /// This agent cannot vouch that its committed state is current (it lost contact
    /// with a quorum). The master is then flagged `s_down,o_down` and
    /// `get-master-addr-by-name` answers null, so clients ask another endpoint
    /// instead of following a possibly deposed master.
    pub stale: bool,
}

impl SentinelView {
    /// The master as clients must treat it: down when its node is, or when this
    /// agent cannot vouch for it.
    pub fn master_down(&self) -> bool {
        self.stale || self.master.as_ref().is_some_and(|m| m.health.s_down())
    }

    pub fn instance(&self, node: NodeId) -> Option<&Instance> {
        self.master
            .iter()
            .chain(&self.replicas)
            .find(|i| i.node == node)
    }

    pub fn is_coordinator(&self) -> bool {
        self.coordinator.as_deref() == Some(self.myid.as_str())
    }
}

/// What the agent knows besides the committed state.
#[derive(Clone, Debug)]
pub struct SentinelFacts {
    pub now: Instant,
    pub own: NodeId,
    /// The Raft leader, when known.
    pub coordinator: Option<NodeId>,
    pub voters: usize,
    /// The coordinator's latest health of every member, and how old that copy is.
    pub health: BTreeMap<NodeId, MemberHealth>,
    pub health_age: Duration,
    pub stale: bool,
    /// This agent's own write probe found nothing listening at the master's address: it is
    /// flagged `disconnected` now, before the coordinator's health says so.
    pub master_refused_here: bool,
    /// `--redis-down-after`: a Redis seen down this long is `s_down`.
    pub redis_down_after: Duration,
    /// `--down-after`: an agent silent this long is `s_down`, with its Redis.
    pub down_after: Duration,
    /// `--switchover-timeout`, shown as `failover-timeout`.
    pub failover_timeout: Duration,
}

/// Stable Sentinel run id of an agent: 40 hex characters derived from its node id.
pub fn runid(node: NodeId) -> String {
    let digest = Sha256::digest(format!("redis-orchestrator sentinel {node}").as_bytes());
    hex::encode(&digest[..20])
}

/// The coordinator's reports, compacted for every agent (see `ReportAck::health`).
pub fn health_summary(
    reports: &BTreeMap<NodeId, ReceivedReport>,
    now: Millis,
) -> BTreeMap<NodeId, MemberHealth> {
    reports
        .iter()
        .map(|(id, received)| {
            let mut health = MemberHealth {
                report_age_ms: now.since(received.received_at).0,
                ..MemberHealth::default()
            };
            match &received.report.redis {
                Some(RedisHealth::Up(status)) => {
                    health.role = Some(status.role);
                    health.run_id = status.run_id.clone();
                    health.repl_offset = status.repl_offset;
                    health.master_link_up = status.master_link_up;
                    health.master_addr = status.master_addr.clone();
                }
                Some(RedisHealth::Down { for_ms, .. }) => health.redis_down_ms = Some(*for_ms),
                None => {}
            }
            (*id, health)
        })
        .collect()
}

fn ago(now: Instant, ms: u64) -> Instant {
    now.checked_sub(Duration::from_millis(ms)).unwrap_or(now)
}

/// The view from the committed state and the agent's facts. `previous` is the last view
/// built: what the agents last knew of a node (role, run id, offset) stays while it is
/// down, and since-times stay put while nothing changes, as in Sentinel's tables.
pub fn build_view(
    state: &ClusterState,
    facts: &SentinelFacts,
    previous: &SentinelView,
) -> SentinelView {
    let instance = |id: NodeId, member: &Member| -> Option<Instance> {
        let endpoint = endpoint_of(member)?;
        let prev = previous.instance(id).map(|i| &i.health);
        Some(Instance {
            node: id,
            endpoint,
            health: health_of(facts, facts.health.get(&id), prev),
            priority: if member.no_promote {
                NO_PROMOTE_PRIORITY
            } else {
                member.priority
            },
        })
    };
    let master = state
        .master
        .and_then(|id| state.members.get(&id).and_then(|m| instance(id, m)))
        .map(|mut master| {
            master.health.disconnected |= facts.master_refused_here;
            master
        });
    let mut replicas: Vec<Instance> = state
        .members
        .iter()
        .filter(|(id, member)| Some(**id) != state.master && member.kind == MemberKind::Data)
        .filter_map(|(id, member)| instance(*id, member))
        .collect();
    replicas.sort_by(|a, b| a.endpoint.name.cmp(&b.endpoint.name));

    let silent = |id: &NodeId| {
        facts
            .health
            .get(id)
            .map(|h| h.report_age_ms.saturating_add(ms(facts.health_age)) >= ms(facts.down_after))
    };
    let mut sentinels: Vec<PeerSentinel> = state
        .members
        .iter()
        .filter(|(id, _)| **id != facts.own)
        .filter_map(|(id, member)| {
            let addr = member.sentinel_addr.as_deref()?;
            let (host, port) = split_host_port(addr, DEFAULT_SENTINEL_PORT).ok()?;
            let last_seen = facts.health.get(id).map(|h| {
                ago(
                    facts.now,
                    h.report_age_ms.saturating_add(ms(facts.health_age)),
                )
            });
            let prev = previous.sentinels.iter().find(|s| s.runid == runid(*id));
            let down_since = match silent(id) {
                Some(true) => prev
                    .and_then(|p| p.down_since)
                    .or(last_seen)
                    .or(Some(facts.now)),
                _ => None,
            };
            Some(PeerSentinel {
                runid: runid(*id),
                host,
                port,
                down_since,
                last_seen,
            })
        })
        .collect();
    sentinels.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));

    let others_alive = state
        .members
        .keys()
        .filter(|id| **id != facts.own && silent(id) == Some(false))
        .count();
    let voters = u32::try_from(facts.voters).unwrap_or(u32::MAX);
    SentinelView {
        myid: runid(facts.own),
        epoch: state.epoch,
        master,
        replicas,
        sentinels,
        voters,
        usable: u32::try_from(others_alive + 1).unwrap_or(u32::MAX),
        quorum: voters / 2 + 1,
        coordinator: facts.coordinator.map(runid),
        failover_to: state.switchover.as_ref().map(|sw| sw.to),
        down_after: facts.redis_down_after,
        failover_timeout: facts.failover_timeout,
        stale: facts.stale,
    }
}

/// How long after `facts.now` time alone changes what [`build_view`] returns for these
/// facts: the next member whose report age reaches `--down-after` (silent: `s_down`, and
/// no longer counted as usable) or whose Redis reaches `--redis-down-after` down. `None`
/// when nothing is still on its way to a threshold.
pub fn next_change(facts: &SentinelFacts) -> Option<Duration> {
    let down_after = ms(facts.down_after);
    let redis_down_after = ms(facts.redis_down_after);
    facts
        .health
        .values()
        .flat_map(|h| {
            let age = h.report_age_ms.saturating_add(ms(facts.health_age));
            let silent_in = down_after.checked_sub(age).filter(|&left| left > 0);
            let redis_down_in = h
                .redis_down_ms
                .map(|d| d.saturating_add(age))
                .and_then(|d| redis_down_after.checked_sub(d))
                .filter(|&left| left > 0);
            [silent_in, redis_down_in]
        })
        .flatten()
        .min()
        .map(Duration::from_millis)
}

/// One node's health from the coordinator's summary, carrying over what is unknown
/// while it is down (or not reported yet) from the previous view.
fn health_of(
    facts: &SentinelFacts,
    summary: Option<&MemberHealth>,
    prev: Option<&Health>,
) -> Health {
    let now = facts.now;
    let prev = prev.cloned().unwrap_or_default();
    let Some(summary) = summary else {
        return prev;
    };
    let age = summary.report_age_ms.saturating_add(ms(facts.health_age));
    let reported_at = ago(now, age);
    let redis_down = summary.redis_down_ms.map(|d| d.saturating_add(age));
    let silent = age >= ms(facts.down_after);
    let down_for = match redis_down {
        Some(d) if d >= ms(facts.redis_down_after) => Some(d),
        _ if silent => Some(age),
        _ => None,
    };
    let down_since = down_for.map(|d| prev.down_since.unwrap_or_else(|| ago(now, d)));
    let mut health = Health {
        down_since,
        reported_at: Some(reported_at),
        disconnected: redis_down.is_some(),
        ..prev.clone()
    };
    match summary.role {
        Some(role) if redis_down.is_none() => {
            health.last_ok = Some(reported_at);
            health.run_id = summary.run_id.clone();
            health.offset = summary.repl_offset;
            health.link_up = role == RedisRole::Replica && summary.master_link_up;
            health.master_addr = summary
                .master_addr
                .as_deref()
                .and_then(|a| split_host_port(a, DEFAULT_REDIS_PORT).ok());
            if prev.role != Some(role) {
                health.role = Some(role);
                health.role_since = Some(reported_at);
            }
        }
        _ => health.link_up = false,
    }
    health.link_down_since = if health.link_up {
        None
    } else {
        prev.link_down_since
            .filter(|_| !prev.link_up)
            .or(Some(redis_down.map_or(reported_at, |d| ago(now, d))))
    };
    health
}

fn endpoint_of(member: &Member) -> Option<Endpoint> {
    let addr = member.redis_addr.as_deref()?;
    let (host, port) = split_host_port(addr, DEFAULT_REDIS_PORT).ok()?;
    Some(Endpoint {
        name: member.name.clone(),
        host,
        port,
    })
}

/// Settings of the endpoint.
#[derive(Clone)]
pub struct SentinelConfig {
    /// The name clients ask for (`--sentinel-master-name`).
    pub master_name: String,
    /// Required with `AUTH`/`HELLO ... AUTH` when set (`--sentinel-password`, by
    /// default the Redis password, so clients use one secret for Sentinel and Redis).
    pub password: Option<String>,
}

// Hand-written so the password never reaches a log line.
impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("master_name", &self.master_name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why one client connection ended early. Never fatal to the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    // Sent to the client after "ERR " before closing, as Redis words it.
    #[error("Protocol error: {0}")]
    Protocol(String),
    #[error("Protocol error: request larger than {0} bytes")]
    RequestTooLarge(usize),
    #[error("client did not read its replies within {0:?}")]
    WriteTimeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeReport, RedisStatus};

    fn member(name: &str, kind: MemberKind, redis_addr: Option<&str>) -> Member {
        Member {
            name: name.to_string(),
            site: format!("site-{name}"),
            kind,
            redis_addr: redis_addr.map(str::to_string),
            api_addr: format!("{name}:8080"),
            raft_addr: format!("{name}:7000"),
            priority: 100,
            no_promote: false,
            sentinel_addr: Some(format!("{name}:26379")),
        }
    }

    fn state() -> ClusterState {
        let mut state = ClusterState::default();
        for (id, m) in [
            (1, member("b", MemberKind::Data, Some("10.0.0.2:6380"))),
            (2, member("a", MemberKind::Data, Some("[fd00::1]:6379"))),
            (3, member("w", MemberKind::Witness, None)),
            (4, member("c", MemberKind::Data, Some("redis-c.example"))),
        ] {
            state.members.insert(id, m);
        }
        state
    }

    fn facts(now: Instant) -> SentinelFacts {
        SentinelFacts {
            now,
            own: 1,
            coordinator: Some(3),
            voters: 4,
            health: BTreeMap::new(),
            health_age: Duration::ZERO,
            stale: false,
            master_refused_here: false,
            redis_down_after: Duration::from_millis(300),
            down_after: Duration::from_secs(5),
            failover_timeout: Duration::from_secs(5),
        }
    }

    fn up(role: RedisRole, offset: u64, link: bool) -> MemberHealth {
        MemberHealth {
            report_age_ms: 10,
            redis_down_ms: None,
            role: Some(role),
            run_id: format!("run-{offset}"),
            repl_offset: offset,
            master_link_up: link,
            master_addr: (role == RedisRole::Replica).then(|| "[fd00::1]:6379".to_string()),
        }
    }

    fn down(for_ms: u64) -> MemberHealth {
        MemberHealth {
            report_age_ms: 10,
            redis_down_ms: Some(for_ms),
            ..MemberHealth::default()
        }
    }

    #[test]
    fn before_any_master_all_data_members_are_replicas() {
        let view = build_view(&state(), &facts(Instant::now()), &SentinelView::default());
        assert!(view.master.is_none());
        assert_eq!(view.epoch, 0);
        let names: Vec<&str> = view
            .replicas
            .iter()
            .map(|r| r.endpoint.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!((view.voters, view.quorum), (4, 3));
        assert_eq!(view.myid, runid(1));
        assert_eq!(view.coordinator, Some(runid(3)));
    }

    #[test]
    fn the_view_changes_with_time_alone_when_a_report_or_a_redis_reaches_its_threshold() {
        let ms = Duration::from_millis;
        let report = |age: u64, redis_down: Option<u64>| MemberHealth {
            report_age_ms: age,
            redis_down_ms: redis_down,
            ..up(RedisRole::Master, 1, false)
        };
        // (members' (report age, redis down for), health copy's age, want); down-after 5 s,
        // redis-down-after 300 ms.
        /// (report age, Redis down for) of each member, in ms.
        type Members = Vec<(u64, Option<u64>)>;
        let cases: [(Members, u64, Option<u64>); 7] = [
            (vec![], 0, None),
            // A fresh report: silent when it is 5 s old.
            (vec![(10, None)], 0, Some(4_990)),
            // The copy of the coordinator's health ages too.
            (vec![(10, None)], 990, Some(4_000)),
            // A Redis down 100 ms: `s_down` 200 ms on, before its report goes silent.
            (vec![(10, Some(90))], 0, Some(200)),
            // Down past its threshold, and silent already: nothing left to cross.
            (vec![(5_000, Some(400))], 0, None),
            (vec![(6_000, None)], 0, None),
            // The earliest of several members.
            (vec![(4_000, None), (10, Some(100))], 0, Some(190)),
        ];
        for (members, health_age, want) in cases {
            let mut f = facts(Instant::now());
            f.health_age = ms(health_age);
            for (id, (age, down)) in (1..).zip(&members) {
                f.health.insert(id, report(*age, *down));
            }
            assert_eq!(
                next_change(&f),
                want.map(ms),
                "{members:?}, health {health_age} ms old"
            );
            // At that moment (and not a millisecond before) the view differs.
            if let Some(after) = want {
                let mut state = state();
                state.master = Some(2);
                let view_at = |elapsed: u64| {
                    let mut later = f.clone();
                    later.health_age = ms(health_age + elapsed);
                    build_view(&state, &later, &SentinelView::default())
                };
                let before = view_at(after - 1);
                let at = view_at(after);
                let flags = |v: &SentinelView| {
                    (
                        v.usable,
                        v.instance(1).map(|i| i.health.s_down()),
                        v.instance(2).map(|i| i.health.s_down()),
                    )
                };
                assert_eq!(flags(&before), flags(&view_at(0)), "{members:?}");
                assert_ne!(flags(&at), flags(&before), "{members:?}");
            }
        }
    }

    #[test]
    fn runids_are_stable_distinct_and_40_hex() {
        assert_eq!(runid(7), runid(7));
        assert_ne!(runid(7), runid(8));
        assert_eq!(runid(7).len(), 40);
        assert!(runid(7).bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn the_committed_master_is_reported_from_its_redis_addr() {
        let mut state = state();
        state.master = Some(2);
        state.epoch = 1;
        let view = build_view(&state, &facts(Instant::now()), &SentinelView::default());
        assert_eq!(view.epoch, 1);
        let master = view.master.as_ref().expect("master");
        assert_eq!(
            master.endpoint,
            Endpoint {
                name: "a".into(),
                host: "fd00::1".into(),
                port: 6379
            }
        );
        assert_eq!(view.replicas.len(), 2);
        let c = &view.replicas[1];
        assert_eq!(
            (c.endpoint.host.as_str(), c.endpoint.port),
            ("redis-c.example", 6379)
        );
        assert!(!c.health.s_down() && !c.health.link_up, "nothing known yet");
    }

    #[test]
    fn health_flags_offsets_and_carry_over() {
        let mut state = state();
        state.master = Some(2);
        state.epoch = 1;
        state.members.get_mut(&4).expect("c").no_promote = true;
        let t0 = Instant::now();
        let mut f = facts(t0);
        f.health.insert(2, up(RedisRole::Master, 900, false));
        f.health.insert(1, up(RedisRole::Replica, 800, true));
        f.health.insert(4, up(RedisRole::Replica, 700, true));
        f.health.insert(
            3,
            MemberHealth {
                report_age_ms: 100,
                ..MemberHealth::default()
            },
        );
        let v1 = build_view(&state, &f, &SentinelView::default());
        let b = &v1.replicas[0];
        assert_eq!(b.endpoint.name, "b");
        assert!(b.health.link_up && !b.health.s_down());
        assert_eq!(
            (b.health.offset, b.health.run_id.as_str()),
            (800, "run-800")
        );
        assert_eq!(b.health.master_addr, Some(("fd00::1".to_string(), 6379)));
        assert_eq!(v1.replicas[1].priority, 0, "no-promote");
        assert_eq!(b.priority, 100);
        assert_eq!(v1.usable, 4);

        // c's Redis goes down: not s_down before --redis-down-after, then s_down with
        // its last offset, role and run id kept, and its link down.
        let t1 = t0 + Duration::from_secs(1);
        let mut f1 = facts(t1);
        f1.health = f.health.clone();
        f1.health.insert(4, down(100));
        let v2 = build_view(&state, &f1, &v1);
        let c = &v2.replicas[1];
        assert!(!c.health.s_down() && !c.health.link_up);
        let link_down = c.health.link_down_since.expect("link down");
        f1.health.insert(4, down(8000));
        f1.now = t1 + Duration::from_millis(50);
        let v3 = build_view(&state, &f1, &v2);
        let c = &v3.replicas[1];
        assert!(c.health.s_down());
        assert_eq!(c.health.link_down_since, Some(link_down), "since stays put");
        assert_eq!(
            (c.health.offset, c.health.role),
            (700, Some(RedisRole::Replica))
        );
        assert_eq!(c.health.last_ok, v1.replicas[1].health.last_ok);
        let since = c.health.down_since;
        f1.now += Duration::from_millis(50);
        assert_eq!(
            build_view(&state, &f1, &v3).replicas[1].health.down_since,
            since
        );

        // The coordinator's copy grows old: every node and peer is then s_down.
        let mut old = f1.clone();
        old.health_age = Duration::from_secs(6);
        let v4 = build_view(&state, &old, &v3);
        assert!(v4.master.as_ref().is_some_and(|m| m.health.s_down()));
        assert!(v4.sentinels.iter().all(|s| s.down_since.is_some()));
        assert_eq!(v4.usable, 1, "only itself");
    }

    #[test]
    fn sentinels_are_the_other_agents_with_an_endpoint() {
        let mut state = state();
        state.members.get_mut(&4).expect("c").sentinel_addr = None;
        let view = build_view(&state, &facts(Instant::now()), &SentinelView::default());
        let listed: Vec<(String, u16, String)> = view
            .sentinels
            .iter()
            .map(|s| (s.host.clone(), s.port, s.runid.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                ("a".to_string(), 26379, runid(2)),
                ("w".to_string(), 26379, runid(3))
            ]
        );
    }

    #[test]
    fn health_summary_compacts_reports() {
        let status = RedisStatus {
            run_id: "r1".into(),
            role: RedisRole::Replica,
            master_addr: Some("10.0.0.1:6379".into()),
            master_link_up: true,
            repl_offset: 42,
            keys: 0,
            online_replicas: 0,
        };
        let report = |node, redis| ReceivedReport {
            report: NodeReport {
                node,
                member: member("x", MemberKind::Data, Some("x:1")),
                redis,
                fenced: false,
                handover_paused: false,
                master_accepts_writes: None,
            },
            received_at: Millis(1000),
        };
        let reports = BTreeMap::from([
            (1, report(1, Some(RedisHealth::Up(status)))),
            (
                2,
                report(
                    2,
                    Some(RedisHealth::Down {
                        kind: crate::model::DownKind::Refused,
                        for_ms: 70,
                        error: "refused".into(),
                    }),
                ),
            ),
            (3, report(3, None)),
        ]);
        let summary = health_summary(&reports, Millis(1250));
        assert_eq!(summary[&1].report_age_ms, 250);
        assert_eq!(summary[&1].role, Some(RedisRole::Replica));
        assert_eq!(summary[&1].repl_offset, 42);
        assert_eq!(summary[&2].redis_down_ms, Some(70));
        assert_eq!(
            summary[&3],
            MemberHealth {
                report_age_ms: 250,
                ..MemberHealth::default()
            }
        );
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let config = SentinelConfig {
            master_name: "mymaster".into(),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
