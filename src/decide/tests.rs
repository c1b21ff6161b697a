//! Scenario tests of `decide`, built from small Patroni-style fixtures: members,
//! Redis probes and reports received at a given time.

use std::collections::BTreeSet;

use super::*;
use crate::model::{DownKind, MemberKind, RedisHealth, RedisRole, RedisStatus, Switchover};

use MemberKind::{Data, Witness};

const REDIS_DOWN_AFTER: u64 = 5_000;
const DOWN_AFTER: u64 = 15_000;
const MAX_LAG: u64 = 1_000;
/// The coordinator's clock for every scenario; leadership started at 0 unless set.
const NOW: u64 = 100_000;
/// Old enough to be stale, young enough to matter: the last time a silent node spoke.
const STALE_AT: u64 = NOW - DOWN_AFTER;
const SWITCHOVER_TIMEOUT: u64 = 5_000;
const ELECTION_TIMEOUT: u64 = 1_000;

fn policy() -> Policy {
    Policy {
        redis_down_after: Millis(REDIS_DOWN_AFTER),
        lease: Millis(3_000),
        down_after: Millis(DOWN_AFTER),
        max_lag_bytes: MAX_LAG,
        switchover_timeout: Millis(SWITCHOVER_TIMEOUT),
        election_timeout: Millis(ELECTION_TIMEOUT),
    }
}

/// Stable id per name, so tests never spell raw ids.
fn id(name: &str) -> NodeId {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn member(name: &str, kind: MemberKind) -> Member {
    Member {
        name: name.to_string(),
        site: format!("site-{name}"),
        kind,
        redis_addr: (kind == Data).then(|| addr(name)),
        api_addr: format!("{name}:8080"),
        raft_addr: format!("{name}:7000"),
        priority: 0,
        no_promote: false,
        sentinel_addr: None,
    }
}

fn addr(name: &str) -> String {
    format!("{name}:6379")
}

fn with_priority(member: Member, priority: u32) -> Member {
    Member { priority, ..member }
}

fn no_promote(member: Member) -> Member {
    Member {
        no_promote: true,
        ..member
    }
}

fn up_master(run_id: &str, offset: u64, keys: u64) -> RedisHealth {
    RedisHealth::Up(RedisStatus {
        run_id: run_id.to_string(),
        role: RedisRole::Master,
        master_addr: None,
        master_link_up: false,
        repl_offset: offset,
        keys,
        online_replicas: 0,
    })
}

/// A replica of `master_addr`; it holds keys once it has received any bytes.
fn up_replica_of(master_addr: &str, link: bool, offset: u64) -> RedisHealth {
    RedisHealth::Up(RedisStatus {
        run_id: format!("run-replica-{offset}"),
        role: RedisRole::Replica,
        master_addr: Some(master_addr.to_string()),
        master_link_up: link,
        repl_offset: offset,
        keys: u64::from(offset > 0),
        online_replicas: 0,
    })
}

fn down(kind: DownKind, for_ms: u64) -> RedisHealth {
    RedisHealth::Down {
        kind,
        for_ms,
        error: "probe failed".to_string(),
    }
}

fn run_id_of(health: &RedisHealth) -> String {
    health
        .status()
        .map(|s| s.run_id.clone())
        .unwrap_or_default()
}

/// One scenario: committed state plus what the coordinator heard.
#[derive(Clone)]
struct Scenario {
    state: ClusterState,
    reports: Reports,
}

impl Scenario {
    /// All `members` registered and voting; no master; this node leads since 0.
    fn new(members: &[Member]) -> Scenario {
        let mut state = ClusterState::default();
        for m in members {
            state.members.insert(id(&m.name), m.clone());
        }
        let voters: BTreeSet<NodeId> = members.iter().map(|m| id(&m.name)).collect();
        Scenario {
            state,
            reports: Reports {
                leader_since: Millis(0),
                voters,
                latest: BTreeMap::new(),
                switchover_since: None,
            },
        }
    }

    /// `name` is master at epoch 7, elected with `run_id`.
    fn master(mut self, name: &str, run_id: &str) -> Scenario {
        self.state.epoch = 7;
        self.state.master = Some(id(name));
        self.state.master_run_id = Some(run_id.to_string());
        self
    }

    fn leader_since(mut self, ms: u64) -> Scenario {
        self.reports.leader_since = Millis(ms);
        self
    }

    /// The registered member `name` reported `redis` at coordinator time `ms`.
    fn report_at(self, name: &str, redis: Option<RedisHealth>, ms: u64) -> Scenario {
        let member = self
            .state
            .members
            .get(&id(name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not registered in this scenario"));
        self.report_member_at(member, redis, ms)
    }

    /// A report carrying `member` as its self-description (possibly unregistered).
    fn report_member_at(mut self, member: Member, redis: Option<RedisHealth>, ms: u64) -> Scenario {
        let node = id(&member.name);
        self.reports.latest.insert(
            node,
            ReceivedReport {
                report: NodeReport {
                    node,
                    member,
                    redis,
                    fenced: false,
                    handover_paused: false,
                    master_accepts_writes: None,
                },
                received_at: Millis(ms),
            },
        );
        self
    }

    /// Fresh report (received now).
    fn report(self, name: &str, redis: RedisHealth) -> Scenario {
        self.report_at(name, Some(redis), NOW)
    }

    fn decide(&self) -> Decision {
        self.decide_at(NOW)
    }

    fn decide_at(&self, now: u64) -> Decision {
        decide(&self.state, &self.reports, &policy(), Millis(now))
    }
}

/// The node and epoch of the decision's SetMaster, if any.
fn elected(decision: &Decision) -> Option<(NodeId, u64)> {
    decision.commands.iter().find_map(|c| match c {
        Command::SetMaster { node, epoch, .. } => Some((*node, *epoch)),
        _ => None,
    })
}

fn elected_node(decision: &Decision) -> Option<NodeId> {
    elected(decision).map(|(node, _)| node)
}

fn three_nodes() -> Vec<Member> {
    vec![member("a", Data), member("b", Data), member("w", Witness)]
}

/// a is master at offset 5000 with data, b a replica with a live link and all bytes.
fn healthy_pair() -> Scenario {
    Scenario::new(&three_nodes())
        .master("a", "run-a")
        .report("a", up_master("run-a", 5_000, 10))
        .report("b", up_replica_of(&addr("a"), true, 5_000))
        .report_at("w", None, NOW)
}

// === registration ===

#[test]
fn registers_new_and_changed_members() {
    let moved = Member {
        redis_addr: Some("a-new:6379".to_string()),
        ..member("a", Data)
    };
    let s = Scenario::new(&[member("a", Data), member("w", Witness)])
        .master("a", "run-a")
        .report_member_at(moved.clone(), Some(up_master("run-a", 10, 1)), NOW)
        .report_member_at(
            member("b", Data),
            Some(up_replica_of("a-new:6379", true, 10)),
            NOW,
        )
        .report_at("w", None, NOW);
    let d = s.decide();
    assert_eq!(
        d.commands,
        vec![
            Command::Register {
                id: id("a"),
                member: moved
            },
            Command::Register {
                id: id("b"),
                member: member("b", Data)
            },
        ]
    );
    assert!(
        d.reason.starts_with("registering a, b; master a healthy"),
        "{}",
        d.reason
    );
}

#[test]
fn unchanged_members_are_not_registered_again() {
    let d = healthy_pair().decide();
    assert!(d.commands.is_empty(), "{:?}", d.commands);
    assert_eq!(d.reason, "master a healthy (epoch 7)");
}

#[test]
fn registration_and_first_election_in_one_call() {
    let mut s = Scenario::new(&[]);
    s.reports.voters = [id("a"), id("b")].into();
    let s = s
        .report_member_at(member("a", Data), Some(up_master("run-a", 100, 3)), NOW)
        .report_member_at(
            member("b", Data),
            Some(up_replica_of(&addr("a"), true, 100)),
            NOW,
        );
    let d = s.decide();
    assert_eq!(d.commands.len(), 3, "{:?}", d.commands);
    assert!(matches!(d.commands[0], Command::Register { .. }));
    assert!(matches!(d.commands[1], Command::Register { .. }));
    assert_eq!(
        d.commands[2],
        Command::SetMaster {
            node: id("a"),
            epoch: 1,
            run_id: "run-a".to_string(),
            reason: "first master: electing a (master, 3 keys, offset 100) at epoch 1".to_string(),
            at_unix_ms: 0,
            candidates: vec![
                CandidateOffset {
                    name: "a".into(),
                    offset: 100
                },
                CandidateOffset {
                    name: "b".into(),
                    offset: 100
                },
            ],
        }
    );
}

// === first election ===

#[test]
fn first_election_waits_for_every_voter_until_down_after() {
    let s = Scenario::new(&three_nodes())
        .leader_since(NOW - 1_000)
        .report("a", up_master("run-a", 0, 0))
        .report_at("w", None, NOW);
    let d = s.decide();
    assert_eq!(elected(&d), None);
    assert_eq!(
        d.reason,
        "first election waits for 1 of 3 members to report (b), at most 14000 ms more"
    );

    // Once every voter reported, no need to wait.
    let d = s.report("b", up_replica_of(&addr("a"), false, 0)).decide();
    assert_eq!(elected(&d), Some((id("a"), 1)));
}

#[test]
fn first_election_proceeds_without_all_voters_after_down_after() {
    let s = Scenario::new(&three_nodes())
        .leader_since(NOW - DOWN_AFTER)
        .report("a", up_master("run-a", 0, 0));
    let d = s.decide();
    assert_eq!(elected(&d), Some((id("a"), 1)));
    assert!(
        d.reason.ends_with("without a report from b, w"),
        "{}",
        d.reason
    );
}

#[test]
fn first_election_names_unregistered_voters_by_id() {
    let mut s = Scenario::new(&[member("a", Data)]).report("a", up_master("run-a", 0, 0));
    s.reports.voters.insert(42);
    s.reports.leader_since = Millis(NOW);
    let d = s.decide();
    assert_eq!(
        d.reason,
        "first election waits for 1 of 2 members to report (node 42), at most 15000 ms more"
    );
}

#[test]
fn first_election_ranking() {
    // (case, a's redis, b's redis, priorities (a, b), expected winner)
    let cases = [
        (
            "existing master with data beats an empty master",
            up_master("run-a", 500, 10),
            up_master("run-b", 900, 0),
            (0, 0),
            "a",
        ),
        (
            "a replica with data beats an empty master",
            up_master("run-a", 0, 0),
            up_replica_of(&addr("c"), false, 100),
            (0, 0),
            "b",
        ),
        (
            "with data on both, the master beats a replica ahead of it",
            up_master("run-a", 100, 5),
            up_replica_of(&addr("a"), true, 900),
            (0, 0),
            "a",
        ),
        (
            "same role and data: higher offset wins",
            up_master("run-a", 100, 5),
            up_master("run-b", 200, 5),
            (0, 0),
            "b",
        ),
        (
            "same offset: higher priority wins",
            up_master("run-a", 100, 5),
            up_master("run-b", 100, 5),
            (0, 1),
            "b",
        ),
        (
            "all equal: name decides",
            up_master("run-a", 0, 0),
            up_master("run-b", 0, 0),
            (0, 0),
            "a",
        ),
    ];
    for (case, a, b, (pa, pb), want) in cases {
        let want_run_id = run_id_of(if want == "a" { &a } else { &b });
        let s = Scenario::new(&[
            with_priority(member("a", Data), pa),
            with_priority(member("b", Data), pb),
        ])
        .report("a", a)
        .report("b", b);
        let d = s.decide();
        let Some(Command::SetMaster { node, run_id, .. }) = d.commands.first() else {
            panic!("{case}: no SetMaster: {}", d.reason);
        };
        assert_eq!(*node, id(want), "{case}: {}", d.reason);
        assert_eq!(*run_id, want_run_id, "{case}");
    }
}

#[test]
fn first_election_skips_ineligible_and_explains_when_nobody_fits() {
    let s = Scenario::new(&[
        member("a", Data),
        no_promote(member("b", Data)),
        member("c", Data),
        member("w", Witness),
    ])
    .report("a", down(DownKind::Refused, 60_000))
    .report("b", up_master("run-b", 100, 10))
    .report_at("c", Some(up_master("run-c", 100, 10)), STALE_AT)
    .report_at("w", None, NOW);
    let d = s.decide();
    assert_eq!(elected(&d), None);
    assert_eq!(
        d.reason,
        "no candidate for the first master: a redis down, b no-promote, c stale report (15000 ms old), w witness"
    );
}

// === master failure detection ===

#[test]
fn healthy_master_is_kept() {
    let d = healthy_pair().decide();
    assert_eq!(elected(&d), None);
    assert_eq!(d.reason, "master a healthy (epoch 7)");
}

#[test]
fn refused_master_fails_over_only_after_redis_down_after() {
    let cases = [
        (REDIS_DOWN_AFTER - 1, None),
        (REDIS_DOWN_AFTER, Some(id("b"))),
    ];
    for (for_ms, want) in cases {
        let d = healthy_pair()
            .report("a", down(DownKind::Refused, for_ms))
            .decide();
        assert_eq!(elected_node(&d), want, "{for_ms}: {}", d.reason);
    }
    let d = healthy_pair()
        .report("a", down(DownKind::Refused, REDIS_DOWN_AFTER))
        .decide();
    assert_eq!(
        d.reason,
        "master a's redis down (connection refused) for 5000 ms: promoting b (offset 5000) at epoch 8"
    );
}

#[test]
fn unreachable_master_needs_down_after() {
    let cases = [
        (REDIS_DOWN_AFTER, None),
        (DOWN_AFTER - 1, None),
        (DOWN_AFTER, Some(id("b"))),
    ];
    for (for_ms, want) in cases {
        let d = healthy_pair()
            .report("a", down(DownKind::Unreachable, for_ms))
            .decide();
        assert_eq!(elected_node(&d), want, "{for_ms}: {}", d.reason);
    }
}

#[test]
fn silent_master_fails_over_only_after_down_after_and_without_live_link() {
    let b_link_down = up_replica_of(&addr("a"), false, 5_000);
    let b_link_up = up_replica_of(&addr("a"), true, 5_000);
    // (a last heard at, b's redis, expected)
    let cases = [
        (STALE_AT + 1, b_link_down.clone(), None),
        (STALE_AT, b_link_down.clone(), Some(id("b"))),
        (STALE_AT, b_link_up.clone(), None),
    ];
    for (heard_at, b, want) in cases {
        let d = healthy_pair()
            .report_at("a", Some(up_master("run-a", 5_000, 10)), heard_at)
            .report("b", b)
            .decide();
        assert_eq!(elected_node(&d), want, "{heard_at}: {}", d.reason);
    }

    let d = healthy_pair()
        .report_at("a", Some(up_master("run-a", 5_000, 10)), STALE_AT)
        .report("b", b_link_up)
        .decide();
    assert_eq!(
        d.reason,
        "master a silent for 15000 ms but b still has a live link to it; keeping it"
    );
    let d = healthy_pair()
        .report_at("a", Some(up_master("run-a", 5_000, 10)), STALE_AT)
        .report("b", b_link_down)
        .decide();
    assert_eq!(
        d.reason,
        "master a silent for 15000 ms and no replica sees it: promoting b (offset 5000) at epoch 8"
    );
}

#[test]
fn master_whose_agent_is_refused_by_its_redis_is_never_failed_over() {
    // However long, and whatever the replica sees: that Redis answers, so it may take
    // writes, and its agent can fence nothing.
    for for_ms in [0, REDIS_DOWN_AFTER, DOWN_AFTER, 10 * DOWN_AFTER] {
        for b_link in [true, false] {
            let d = healthy_pair()
                .report("a", down(DownKind::Unauthorized, for_ms))
                .report("b", up_replica_of(&addr("a"), b_link, 5_000))
                .decide();
            assert_eq!(elected(&d), None, "{for_ms} {b_link}: {}", d.reason);
            assert!(
                d.reason.contains("cannot command its redis")
                    && d.reason.contains("--redis-password"),
                "{}",
                d.reason
            );
        }
    }
}

/// b reports a live link to a and what its write probe of a found.
fn b_probed_a(s: Scenario, writes: Option<bool>) -> Scenario {
    let mut s = s.report("b", up_replica_of(&addr("a"), true, 5_000));
    if let Some(r) = s.reports.latest.get_mut(&id("b")) {
        r.report.master_accepts_writes = writes;
    }
    s
}

#[test]
fn silent_master_holding_writes_behind_a_live_link_fails_over_after_down_after() {
    // (a last heard at, b's write probe of a, expected)
    let cases = [
        (STALE_AT, Some(false), Some(id("b"))),
        (STALE_AT + 1, Some(false), None),
        (STALE_AT, Some(true), None),
        (STALE_AT, None, None),
    ];
    for (heard_at, writes, want) in cases {
        let s = healthy_pair().report_at("a", Some(up_master("run-a", 5_000, 10)), heard_at);
        let d = b_probed_a(s, writes).decide();
        assert_eq!(
            elected_node(&d),
            want,
            "{heard_at} {writes:?}: {}",
            d.reason
        );
    }
    let s = healthy_pair().report_at("a", Some(up_master("run-a", 5_000, 10)), STALE_AT);
    assert_eq!(
        b_probed_a(s, Some(false)).decide().reason,
        "master a silent for 15000 ms and its redis holds writes (seen by b through a live \
         link): it fenced itself: promoting b (offset 5000) at epoch 8"
    );
}

#[test]
fn a_master_that_reports_is_judged_by_its_own_report_not_the_write_probe() {
    // A fresh report of a healthy master outranks a replica's probe (a switchover pause,
    // a slow moment): no failover.
    let d = b_probed_a(healthy_pair(), Some(false)).decide();
    assert_eq!(elected(&d), None, "{}", d.reason);
}

#[test]
fn live_link_counts_only_from_a_fresh_report() {
    let d = healthy_pair()
        .report_at("a", Some(up_master("run-a", 5_000, 10)), STALE_AT)
        .report_at("b", Some(up_replica_of(&addr("a"), true, 5_000)), STALE_AT)
        .decide();
    assert_eq!(elected(&d), None);
    assert!(
        d.reason
            .starts_with("master a silent for 15000 ms and no replica sees it, but no candidate"),
        "{}",
        d.reason
    );
}

#[test]
fn a_new_coordinator_never_waits_less_than_the_lease() {
    let mut p = policy();
    assert_eq!(new_leader_wait(&p), Millis(8_000));
    p.election_timeout = Millis(10_000);
    assert_eq!(
        new_leader_wait(&p),
        p.lease,
        "a margin of the election timeout itself"
    );
    p.lease = p.down_after;
    p.election_timeout = Millis(0);
    assert_eq!(new_leader_wait(&p), p.down_after);
}

#[test]
fn leader_since_bounds_silence() {
    // A new coordinator that never heard from the master must not fail it over before
    // the old master's lease (3 s) has surely run out on its own clock: it ran out by an
    // election timeout (1 s) before this leadership plus the lease, 2 s; then halfway from
    // the lease to down_after (15 s), 8 s.
    let s = Scenario::new(&three_nodes())
        .master("a", "run-a")
        .report("b", up_replica_of(&addr("a"), false, 5_000));
    let d = s.clone().leader_since(NOW - 1_000).decide();
    assert_eq!(elected(&d), None);
    assert_eq!(d.reason, "master a silent for 1000 ms; failover at 8000 ms");
    assert_eq!(
        d.decide_again_at,
        Some(Millis(NOW + 7_000)),
        "the coordinator decides again when the wait ends"
    );
    let d = s.clone().leader_since(NOW - 7_999).decide();
    assert_eq!(elected(&d), None, "{}", d.reason);
    let d = s.leader_since(NOW - 8_000).decide();
    assert_eq!(elected(&d), Some((id("b"), 8)), "{}", d.reason);

    // Same with an old report from a previous term.
    let d = Scenario::new(&three_nodes())
        .master("a", "run-a")
        .report_at("a", Some(up_master("run-a", 5_000, 10)), 1_000)
        .report("b", up_replica_of(&addr("a"), false, 5_000))
        .leader_since(NOW - 1_000)
        .decide();
    assert_eq!(elected(&d), None, "{}", d.reason);

    // Heard once since it took over: the full down_after from that report.
    let d = Scenario::new(&three_nodes())
        .master("a", "run-a")
        .report_at("a", Some(up_master("run-a", 5_000, 10)), NOW - 9_000)
        .report("b", up_replica_of(&addr("a"), false, 5_000))
        .leader_since(NOW - DOWN_AFTER)
        .decide();
    assert_eq!(elected(&d), None, "{}", d.reason);
    let d = Scenario::new(&three_nodes())
        .master("a", "run-a")
        .report("b", up_replica_of(&addr("a"), false, 5_000))
        .leader_since(NOW - DOWN_AFTER)
        .decide();
    assert_eq!(elected(&d), Some((id("b"), 8)), "{}", d.reason);
}

#[test]
fn restarted_master_fails_over_at_once_to_replica_with_data() {
    let d = healthy_pair()
        .report("a", up_master("run-a-restarted", 0, 0))
        .report("b", up_replica_of(&addr("a"), true, 5_000))
        .decide();
    assert_eq!(elected(&d), Some((id("b"), 8)));
    assert_eq!(
        d.reason,
        "master a's redis restarted (run_id changed): promoting b (offset 5000) at epoch 8"
    );
}

#[test]
fn no_promote_master_is_kept_while_healthy() {
    let d = Scenario::new(&[no_promote(member("a", Data)), member("b", Data)])
        .master("a", "run-a")
        .report("a", up_master("run-a", 5_000, 10))
        .report("b", up_replica_of(&addr("a"), true, 5_000))
        .decide();
    assert!(d.commands.is_empty(), "{:?}", d.commands);
    assert_eq!(d.reason, "master a healthy (epoch 7)");
}

// === choosing the successor ===

#[test]
fn failover_candidate_ranking() {
    // (case, (b offset, b priority), (c offset, c priority), expected)
    let cases = [
        ("higher offset wins", (4_900, 0), (5_000, 0), "c"),
        ("offset beats priority", (5_000, 0), (4_900, 9), "b"),
        (
            "same offset: higher priority wins",
            (5_000, 0),
            (5_000, 1),
            "c",
        ),
        ("all equal: name decides", (5_000, 3), (5_000, 3), "b"),
    ];
    for (case, (bo, bp), (co, cp), want) in cases {
        let d = Scenario::new(&[
            member("a", Data),
            with_priority(member("b", Data), bp),
            with_priority(member("c", Data), cp),
        ])
        .master("a", "run-a")
        .report("a", down(DownKind::Refused, REDIS_DOWN_AFTER))
        .report("b", up_replica_of(&addr("a"), false, bo))
        .report("c", up_replica_of(&addr("a"), false, co))
        .decide();
        assert_eq!(elected_node(&d), Some(id(want)), "{case}: {}", d.reason);
    }
}

#[test]
fn no_promote_and_witness_are_never_chosen() {
    let d = Scenario::new(&[
        member("a", Data),
        no_promote(member("b", Data)),
        member("c", Data),
        member("w", Witness),
    ])
    .master("a", "run-a")
    .report("a", down(DownKind::Refused, REDIS_DOWN_AFTER))
    .report("b", up_replica_of(&addr("a"), false, 9_000))
    .report("c", up_replica_of(&addr("a"), false, 8_500))
    .report_at("w", None, NOW)
    .decide();
    assert_eq!(elected_node(&d), Some(id("c")), "{}", d.reason);
}

#[test]
fn no_candidate_means_no_command_and_says_why() {
    let d = Scenario::new(&[
        member("a", Data),
        member("b", Data),
        member("c", Data),
        no_promote(member("d", Data)),
        member("e", Data),
        member("w", Witness),
    ])
    .master("a", "run-a")
    .report("a", down(DownKind::Refused, REDIS_DOWN_AFTER))
    .report_at("c", Some(up_replica_of(&addr("a"), false, 5_000)), STALE_AT)
    .report("d", up_replica_of(&addr("a"), false, 5_000))
    .report("e", down(DownKind::Unreachable, 100))
    .report_at("w", None, NOW)
    .decide();
    assert!(d.commands.is_empty(), "{:?}", d.commands);
    assert_eq!(
        d.reason,
        "master a's redis down (connection refused) for 5000 ms, but no candidate: \
         b no report, c stale report (15000 ms old), d no-promote, e redis down, w witness"
    );
}

#[test]
fn lagging_candidate_refused_beyond_max_lag_and_accepted_within() {
    // The silent master last reported offset 10_000: that is the bar.
    let cases = [
        (10_000 - MAX_LAG, Some(id("b"))),
        (10_000 - MAX_LAG - 1, None),
    ];
    for (b_offset, want) in cases {
        let d = healthy_pair()
            .report_at("a", Some(up_master("run-a", 10_000, 10)), STALE_AT)
            .report("b", up_replica_of(&addr("a"), false, b_offset))
            .decide();
        assert_eq!(elected_node(&d), want, "{b_offset}: {}", d.reason);
    }
}

#[test]
fn lagging_refusal_is_explained() {
    let d = healthy_pair()
        .report_at("a", Some(up_master("run-a", 20_000, 10)), STALE_AT)
        .report("b", up_replica_of(&addr("a"), false, 5_000))
        .decide();
    assert_eq!(elected(&d), None);
    assert_eq!(
        d.reason,
        "master a silent for 15000 ms and no replica sees it, but no candidate: \
         b lagging 15000 bytes, w witness"
    );
}

#[test]
fn without_a_master_offset_the_best_candidate_sets_the_bar() {
    // The master's last report is Down, so its offset is unknown; c is the only
    // candidate and cannot lag behind itself.
    let d = Scenario::new(&[member("a", Data), member("b", Data), member("c", Data)])
        .master("a", "run-a")
        .report("a", down(DownKind::Refused, REDIS_DOWN_AFTER))
        .report("b", down(DownKind::Refused, 1))
        .report("c", up_replica_of(&addr("a"), false, 1_500))
        .decide();
    assert_eq!(elected_node(&d), Some(id("c")), "{}", d.reason);
}

#[test]
fn epoch_is_exactly_previous_plus_one() {
    for epoch in [0, 1, 7, 1_000] {
        let mut s = healthy_pair().report("a", down(DownKind::Refused, REDIS_DOWN_AFTER));
        s.state.epoch = epoch;
        let d = s.decide();
        assert_eq!(elected(&d), Some((id("b"), epoch + 1)));
    }
}

#[test]
fn set_master_carries_candidate_run_id_and_is_accepted_by_the_state_machine() {
    let b = up_replica_of(&addr("a"), true, 5_000);
    let s = healthy_pair()
        .report("a", down(DownKind::Refused, REDIS_DOWN_AFTER))
        .report("b", b.clone());
    let d = s.decide();
    let mut state = s.state.clone();
    for command in &d.commands {
        assert_eq!(state.apply(command), crate::model::CommandResponse::Applied);
    }
    assert_eq!(state.master, Some(id("b")));
    assert_eq!(state.master_run_id, Some(run_id_of(&b)));
}

#[test]
fn stale_candidate_reports_are_ignored() {
    let d = Scenario::new(&[member("a", Data), member("b", Data), member("c", Data)])
        .master("a", "run-a")
        .report("a", down(DownKind::Refused, REDIS_DOWN_AFTER))
        .report_at("b", Some(up_replica_of(&addr("a"), false, 9_000)), STALE_AT)
        .report("c", up_replica_of(&addr("a"), false, 8_500))
        .decide();
    assert_eq!(elected_node(&d), Some(id("c")), "{}", d.reason);
}

#[test]
fn candidate_with_redis_down_is_never_chosen() {
    let d = Scenario::new(&[member("a", Data), member("b", Data), member("c", Data)])
        .master("a", "run-a")
        .report("a", down(DownKind::Refused, REDIS_DOWN_AFTER))
        .report("b", down(DownKind::Refused, 1))
        .report("c", up_replica_of(&addr("a"), false, 0))
        .decide();
    assert_eq!(elected_node(&d), Some(id("c")), "{}", d.reason);
}

// === maintenance pause ===

#[test]
fn paused_cluster_never_fails_over() {
    let mut s = healthy_pair().report("a", down(DownKind::Refused, REDIS_DOWN_AFTER * 10));
    s.state.paused = true;
    let d = s.decide();
    assert_eq!(elected(&d), None, "{}", d.reason);
    assert!(d.reason.contains("paused"), "{}", d.reason);
}

// === planned switchover ===

fn request(s: &Scenario, to: Option<&str>) -> Result<Command, SwitchoverRefusal> {
    plan_switchover(&s.state, &s.reports, &policy(), Millis(NOW), to)
}

#[test]
fn switchover_request_is_validated() {
    let begin = Command::BeginSwitchover {
        from: id("a"),
        to: id("b"),
        epoch: 7,
    };
    assert_eq!(request(&healthy_pair(), Some("b")), Ok(begin.clone()));
    assert_eq!(
        request(&healthy_pair(), None),
        Ok(begin),
        "the best replica by default"
    );

    let conflict = |s: &Scenario, to: Option<&str>| {
        matches!(request(s, to), Err(SwitchoverRefusal::Conflict(_)))
    };
    let mut paused = healthy_pair();
    paused.state.paused = true;
    assert!(conflict(&paused, Some("b")), "paused");
    let mut running = healthy_pair();
    running.state.switchover = Some(Switchover {
        from: id("a"),
        to: id("b"),
        epoch: 7,
    });
    assert!(conflict(&running, Some("b")), "another switchover runs");
    let lagging_link = healthy_pair().report("b", up_replica_of(&addr("a"), false, 5_000));
    assert!(conflict(&lagging_link, Some("b")), "target's link is down");
    let elsewhere = healthy_pair().report("b", up_replica_of("x:6379", true, 5_000));
    assert!(
        conflict(&elsewhere, Some("b")),
        "target replicates from someone else"
    );
    let target_down = healthy_pair().report("b", down(DownKind::Refused, 1));
    assert!(conflict(&target_down, Some("b")), "target unhealthy");
    let master_down = healthy_pair().report("a", down(DownKind::Refused, 1));
    assert!(conflict(&master_down, Some("b")), "master unhealthy");
    assert!(
        conflict(&lagging_link, None),
        "no healthy replica for an automatic choice"
    );

    assert!(
        matches!(
            request(&healthy_pair(), Some("w")),
            Err(SwitchoverRefusal::Invalid(_))
        ),
        "witness"
    );
    assert!(
        matches!(
            request(&healthy_pair(), Some("a")),
            Err(SwitchoverRefusal::Invalid(_))
        ),
        "already master"
    );
    assert!(matches!(
        request(&healthy_pair(), Some("zz")),
        Err(SwitchoverRefusal::UnknownMember(_))
    ));
    let mut standby = Scenario::new(&[
        member("a", Data),
        no_promote(member("b", Data)),
        member("w", Witness),
    ])
    .master("a", "run-a")
    .report("a", up_master("run-a", 5_000, 10))
    .report("b", up_replica_of(&addr("a"), true, 5_000));
    standby.reports.switchover_since = None;
    assert!(
        matches!(
            request(&standby, Some("b")),
            Err(SwitchoverRefusal::Invalid(_))
        ),
        "no-promote"
    );
}

fn switching(s: Scenario, since: u64) -> Scenario {
    let mut s = s;
    s.state.switchover = Some(Switchover {
        from: id("a"),
        to: id("b"),
        epoch: 7,
    });
    s.reports.switchover_since = Some(Millis(since));
    s
}

/// The master's agent has paused writes for the hand-over and reported its final offset.
fn paused_for_handover(mut s: Scenario, offset: u64) -> Scenario {
    s = s.report("a", up_master("run-a", offset, 10));
    if let Some(r) = s.reports.latest.get_mut(&id("a")) {
        r.report.handover_paused = true;
    }
    s
}

#[test]
fn switchover_target_is_a_member_name_or_a_site() {
    let to_b = Ok(Command::BeginSwitchover {
        from: id("a"),
        to: id("b"),
        epoch: 7,
    });
    let mut two_in_site = healthy_pair();
    for m in two_in_site.state.members.values_mut() {
        m.site = "site-x".to_string();
    }
    let cases: Vec<(&str, Scenario, &str, Result<Command, &str>)> = vec![
        ("by member name", healthy_pair(), "b", to_b.clone()),
        ("by site", healthy_pair(), "site-b", to_b),
        (
            "the master's site",
            healthy_pair(),
            "site-a",
            Err("Invalid"),
        ),
        (
            "a witness's site has no data member",
            healthy_pair(),
            "site-w",
            Err("UnknownMember"),
        ),
        ("unknown", healthy_pair(), "site-z", Err("UnknownMember")),
        ("empty", healthy_pair(), "", Err("UnknownMember")),
        (
            "a site with two data members is ambiguous",
            two_in_site,
            "site-x",
            Err("Invalid"),
        ),
    ];
    for (what, scenario, to, want) in cases {
        let got = request(&scenario, Some(to));
        let got_kind = got.as_ref().map_err(|e| match e {
            SwitchoverRefusal::UnknownMember(_) => "UnknownMember",
            SwitchoverRefusal::Invalid(_) => "Invalid",
            SwitchoverRefusal::Conflict(_) => "Conflict",
        });
        assert_eq!(got_kind.cloned(), want, "{what}: {got:?}");
    }
}

#[test]
fn switchover_commits_the_target_once_it_has_every_byte_of_the_paused_master() {
    let not_paused = switching(healthy_pair(), NOW - 100).decide();
    assert!(
        not_paused.commands.is_empty(),
        "writes still flow: {}",
        not_paused.reason
    );
    assert!(
        not_paused.reason.contains("waiting for a to pause"),
        "{}",
        not_paused.reason
    );

    let behind = switching(paused_for_handover(healthy_pair(), 6_000), NOW - 100).decide();
    assert!(behind.commands.is_empty(), "{}", behind.reason);
    assert!(
        behind.reason.contains("catching up to offset 6000"),
        "{}",
        behind.reason
    );

    let link_down = switching(
        paused_for_handover(healthy_pair(), 5_000)
            .report("b", up_replica_of(&addr("a"), false, 5_000)),
        NOW - 100,
    )
    .decide();
    assert!(link_down.commands.is_empty(), "{}", link_down.reason);

    let caught_up = switching(paused_for_handover(healthy_pair(), 5_000), NOW - 100);
    let d = caught_up.decide();
    assert_eq!(elected(&d), Some((id("b"), 8)), "{}", d.reason);
    assert_eq!(d.failing_since, Some(Millis(NOW - 100)));
    let Some(Command::SetMaster { run_id, .. }) = d.commands.first() else {
        panic!("{d:?}")
    };
    assert_eq!(
        run_id,
        &run_id_of(&up_replica_of(&addr("a"), true, 5_000)),
        "the target's own run_id"
    );
}

#[test]
fn switchover_is_abandoned_after_its_timeout() {
    let waiting = switching(
        paused_for_handover(healthy_pair(), 6_000),
        NOW - SWITCHOVER_TIMEOUT + 1,
    )
    .decide();
    assert!(waiting.commands.is_empty(), "{}", waiting.reason);
    let late = switching(
        paused_for_handover(healthy_pair(), 6_000),
        NOW - SWITCHOVER_TIMEOUT,
    )
    .decide();
    assert!(
        matches!(
            late.commands.as_slice(),
            [Command::EndSwitchover { epoch: 7, .. }]
        ),
        "{late:?}"
    );
    let caught_up_late = switching(
        paused_for_handover(healthy_pair(), 5_000),
        NOW - SWITCHOVER_TIMEOUT,
    )
    .decide();
    assert!(
        matches!(
            caught_up_late.commands.as_slice(),
            [Command::EndSwitchover { .. }]
        ),
        "past the timeout the pause may be about to end: never commit then: {caught_up_late:?}"
    );
}

#[test]
fn master_dying_during_a_switchover_fails_over_normally() {
    let s = switching(
        healthy_pair().report("a", down(DownKind::Refused, REDIS_DOWN_AFTER)),
        NOW - 100,
    );
    let d = s.decide();
    assert_eq!(elected(&d), Some((id("b"), 8)), "{}", d.reason);
}

// === when the same inputs decide otherwise ===

/// a is master and last reported at `a_at`; b is a fresh replica with a live link.
fn master_heard_at(a_at: u64) -> Scenario {
    healthy_pair().report_at("a", Some(up_master("run-a", 5_000, 10)), a_at)
}

#[test]
fn decide_again_at_is_the_bound_of_the_rule_that_waits() {
    let b_link_down = up_replica_of(&addr("a"), false, 5_000);
    let cases: Vec<(&str, Scenario, Option<u64>)> = vec![
        (
            "a healthy master counts until its report goes stale",
            master_heard_at(NOW - 1_000),
            Some(NOW - 1_000 + DOWN_AFTER),
        ),
        (
            // for_ms is the master's own measure: only its next report moves it.
            "a refused redis short of redis_down_after: until that report goes stale",
            healthy_pair().report_at("a", Some(down(DownKind::Refused, 1_000)), NOW - 2_000),
            Some(NOW - 2_000 + DOWN_AFTER),
        ),
        (
            "an unreachable redis short of down_after: until that report goes stale",
            healthy_pair().report_at("a", Some(down(DownKind::Unreachable, 1_000)), NOW - 2_000),
            Some(NOW - 2_000 + DOWN_AFTER),
        ),
        (
            "an agent its redis refuses: until that report goes stale",
            healthy_pair().report_at("a", Some(down(DownKind::Unauthorized, 1_000)), NOW - 2_000),
            Some(NOW - 2_000 + DOWN_AFTER),
        ),
        (
            "silence counted from a leadership younger than the master's last report",
            master_heard_at(1_000)
                .report("b", b_link_down.clone())
                .leader_since(NOW - 1_000),
            Some(NOW - 1_000 + DOWN_AFTER),
        ),
        (
            "a new coordinator that never heard the master: leader_since + new_leader_wait",
            Scenario::new(&three_nodes())
                .master("a", "run-a")
                .report("b", b_link_down.clone())
                .leader_since(NOW - 1_000),
            Some(NOW - 1_000 + new_leader_wait(&policy()).0),
        ),
        (
            "a silent master kept by a live link: until that link's report goes stale",
            master_heard_at(STALE_AT).report_at(
                "b",
                Some(up_replica_of(&addr("a"), true, 5_000)),
                NOW - 3_000,
            ),
            Some(NOW - 3_000 + DOWN_AFTER),
        ),
        (
            "a failover commits to the candidates fresh now; the first to go stale changes them",
            master_heard_at(STALE_AT).report_at("b", Some(b_link_down.clone()), NOW - 4_000),
            Some(NOW - 4_000 + DOWN_AFTER),
        ),
        (
            "no candidate: until a refused candidate's report goes stale",
            master_heard_at(STALE_AT).report_at(
                "b",
                Some(down(DownKind::Refused, 100)),
                NOW - 4_000,
            ),
            Some(NOW - 4_000 + DOWN_AFTER),
        ),
        (
            "a first election waits for a missing voter until leader_since + down_after",
            Scenario::new(&three_nodes())
                .leader_since(NOW - 1_000)
                .report("a", up_master("run-a", 0, 0)),
            Some(NOW - 1_000 + DOWN_AFTER),
        ),
        (
            "a first election elects among the fresh; the first to go stale changes the field",
            Scenario::new(&three_nodes())
                .report_at("a", Some(up_master("run-a", 10, 1)), NOW - 6_000)
                .report_at("b", Some(up_replica_of(&addr("a"), true, 10)), NOW - 2_000)
                .report_at("w", None, NOW - 7_000),
            Some(NOW - 6_000 + DOWN_AFTER),
        ),
        (
            "a switchover waiting for the pause: until its timeout",
            switching(healthy_pair(), NOW - 100),
            Some(NOW - 100 + SWITCHOVER_TIMEOUT),
        ),
        (
            "a switchover waiting for the target to catch up: until its timeout",
            switching(paused_for_handover(healthy_pair(), 6_000), NOW - 100),
            Some(NOW - 100 + SWITCHOVER_TIMEOUT),
        ),
        (
            "a switchover whose master's report goes stale before the timeout",
            switching(master_heard_at(NOW - DOWN_AFTER + 1_000), NOW - 100),
            Some(NOW + 1_000),
        ),
        (
            "paused: time changes nothing",
            {
                let mut s = master_heard_at(STALE_AT);
                s.state.paused = true;
                s
            },
            None,
        ),
        (
            "a master not registered: time changes nothing",
            Scenario::new(&three_nodes()).master("x", "run-x"),
            None,
        ),
    ];
    for (what, scenario, want) in cases {
        let d = scenario.decide();
        assert_eq!(d.decide_again_at, want.map(Millis), "{what}: {}", d.reason);
    }
}

/// The commands without their reasons: those quote elapsed times, which is the point.
fn commands_without_reasons(decision: &Decision) -> Vec<Command> {
    decision
        .commands
        .iter()
        .cloned()
        .map(|mut command| {
            if let Command::SetMaster { reason, .. } | Command::EndSwitchover { reason, .. } =
                &mut command
            {
                reason.clear();
            }
            command
        })
        .collect()
}

/// Deterministic pseudo-random picks (a linear congruential generator): no new crate.
struct Picks(u64);

impl Picks {
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let index = (self.0 >> 33) % from.len() as u64;
        &from[usize::try_from(index).unwrap_or(0)]
    }
}

/// One of many snapshots around every bound: reports just fresh, just stale or long gone,
/// each health a master or replica can report, new and old leaderships, switchovers.
fn generated(picks: &mut Picks) -> Scenario {
    let ages = [
        0,
        1,
        999,
        4_000,
        REDIS_DOWN_AFTER,
        7_999,
        8_000,
        DOWN_AFTER - 1,
        DOWN_AFTER,
        DOWN_AFTER + 1,
        3 * DOWN_AFTER,
    ];
    let at = |picks: &mut Picks| NOW - *picks.pick(&ages);
    let a_health = [
        None,
        Some(up_master("run-a", 5_000, 10)),
        Some(up_master("run-a", 6_000, 10)),
        Some(up_master("run-a-restarted", 0, 0)),
        Some(down(DownKind::Refused, 1_000)),
        Some(down(DownKind::Refused, REDIS_DOWN_AFTER)),
        Some(down(DownKind::Unreachable, 1_000)),
        Some(down(DownKind::Unreachable, DOWN_AFTER)),
        Some(down(DownKind::Unauthorized, 1_000)),
    ];
    let b_health = [
        None,
        Some(up_replica_of(&addr("a"), true, 5_000)),
        Some(up_replica_of(&addr("a"), false, 5_000)),
        Some(up_replica_of(&addr("a"), true, 3_000)),
        Some(up_master("run-b", 0, 0)),
        Some(down(DownKind::Refused, 100)),
    ];
    let mut s = Scenario::new(&[
        member("a", Data),
        member("b", Data),
        member("c", Data),
        member("w", Witness),
    ]);
    if *picks.pick(&[true, true, true, false]) {
        s = s.master("a", "run-a");
    }
    s = s.leader_since(at(picks));
    // Each member reported (or not), something, some time ago.
    if *picks.pick(&[true, true, true, false]) {
        let health = picks.pick(&a_health).clone();
        s = s.report_at("a", health, at(picks));
        if let Some(r) = s.reports.latest.get_mut(&id("a")) {
            r.report.handover_paused = *picks.pick(&[false, true]);
        }
    }
    for name in ["b", "c"] {
        if *picks.pick(&[true, true, false]) {
            let health = picks.pick(&b_health).clone();
            s = s.report_at(name, health, at(picks));
            if let Some(r) = s.reports.latest.get_mut(&id(name)) {
                r.report.master_accepts_writes = *picks.pick(&[None, Some(false), Some(true)]);
            }
        }
    }
    if *picks.pick(&[true, false]) {
        s = s.report_at("w", None, at(picks));
    }
    if *picks.pick(&[false, false, false, false, false, false, false, true]) {
        s.reports.voters.insert(42);
    }
    if s.state.master.is_some() && *picks.pick(&[false, false, true]) {
        let since = NOW - *picks.pick(&[0, 100, SWITCHOVER_TIMEOUT - 1, SWITCHOVER_TIMEOUT]);
        s = switching(s, since);
    }
    s.state.paused = *picks.pick(&[false, false, false, false, false, false, false, true]);
    s
}

#[test]
fn until_decide_again_at_the_same_inputs_decide_the_same_commands() {
    let mut picks = Picks(14);
    let (mut timed, mut changed_at_bound) = (0, 0);
    for n in 0..5_000 {
        let s = generated(&mut picks);
        let now = s.decide();
        let want = commands_without_reasons(&now);
        let later: Vec<u64> = match now.decide_again_at {
            Some(at) => {
                assert!(at.0 > NOW, "#{n}: a bound already reached: {}", now.reason);
                timed += 1;
                let span = at.0 - NOW;
                changed_at_bound +=
                    usize::from(commands_without_reasons(&s.decide_at(at.0)) != want);
                (0..8)
                    .map(|k| NOW + span * k / 8)
                    .chain([at.0 - 1])
                    .collect()
            }
            None => [1, DOWN_AFTER, 3 * DOWN_AFTER, 10 * DOWN_AFTER]
                .iter()
                .map(|d| NOW + d)
                .collect(),
        };
        for t in later {
            let then = s.decide_at(t);
            assert_eq!(
                commands_without_reasons(&then),
                want,
                "#{n}: decided otherwise at {t} (now {NOW}, decide_again_at {:?}): {} / then: {}",
                now.decide_again_at,
                now.reason,
                then.reason
            );
        }
    }
    // The generator reaches the timed rules, and their bounds are where decisions change.
    assert!(timed > 3_000, "{timed} of 5000 timed");
    assert!(
        changed_at_bound > 1_000,
        "{changed_at_bound} changed at the bound"
    );
}
