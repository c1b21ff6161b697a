//! The member and coordinator loops on a fake Redis and a fake consensus, in tokio's
//! paused time: every cycle is driven by hand and the clock only moves when told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::consensus::{Consensus, FakeConsensus};
use super::coordinator::{Coordinator, ReportRefusal};
use super::member::{LocalState, MemberConfig, MemberLoop, ReportSink};
use super::{Clock, lock};
use crate::addr::node_id;
use crate::decide::Policy;
use crate::decide::local::{DETACHED_HOST, DETACHED_PORT};
use crate::metrics::Metrics;
use crate::model::{
    ClusterState, Member, MemberKind, Millis, NodeId, NodeReport, RedisHealth, RedisRole,
    RedisStatus, ReportAck,
};
use crate::redis::RedisError;
use crate::redis::fake::FakeRedis;
use openraft::ServerState;

const PROBE: Duration = Duration::from_millis(200);
const LEASE: Duration = Duration::from_secs(3);
const DOWN_AFTER: Duration = Duration::from_secs(5);

fn id(name: &str) -> NodeId {
    node_id(&format!("{name}:7000"))
}

fn member(name: &str, kind: MemberKind) -> Member {
    Member {
        name: name.into(),
        site: name.into(),
        kind,
        redis_addr: (kind == MemberKind::Data).then(|| format!("{name}:6379")),
        api_addr: format!("{name}:8080"),
        raft_addr: format!("{name}:7000"),
        priority: 100,
        no_promote: false,
        sentinel_addr: None,
    }
}

/// Data members a and b, witness c; `master` elected at epoch 1 with `run_id`.
fn cluster(master: &str, run_id: &str) -> ClusterState {
    let mut s = ClusterState::default();
    s.members.insert(id("a"), member("a", MemberKind::Data));
    s.members.insert(id("b"), member("b", MemberKind::Data));
    s.members.insert(id("c"), member("c", MemberKind::Witness));
    s.master = Some(id(master));
    s.master_run_id = Some(run_id.into());
    s.epoch = 1;
    s
}

fn policy() -> Policy {
    Policy {
        redis_down_after: Millis(300),
        lease: Millis(3_000),
        down_after: Millis(5_000),
        max_lag_bytes: 1_048_576,
        switchover_timeout: Millis(5_000),
        election_timeout: Millis(500),
    }
}

/// A coordinator led by `leader`, with a, b, c as voters.
fn coordinator(leader: &str, state: ClusterState) -> (Arc<FakeConsensus>, Arc<Coordinator>) {
    let consensus = Arc::new(FakeConsensus::leading(
        id(leader),
        &[id("a"), id("b"), id("c")],
    ));
    consensus.set_state(|s| *s = state);
    let coordinator = Arc::new(Coordinator::new(
        policy(),
        Clock::start(),
        Arc::new(Metrics::new()),
    ));
    // Leadership starts with the coordinator's first look: what was heard before is dropped.
    let _ = coordinator.snapshot(&consensus.facts(), consensus.state());
    (consensus, coordinator)
}

/// Reports go straight to an in-process coordinator.
struct InProcess {
    consensus: Arc<FakeConsensus>,
    coordinator: Arc<Coordinator>,
}

impl ReportSink for InProcess {
    async fn deliver(&self, report: NodeReport, _: Duration) -> Result<ReportAck, String> {
        let quorum_ack_age = self.consensus.quorum_ack_age().await;
        self.coordinator
            .handle_report(
                &self.consensus.facts(),
                quorum_ack_age,
                &self.consensus.state(),
                report,
            )
            .map_err(|e| e.to_string())
    }
}

/// Answers every report with `ack` (none: unreachable) and keeps what was sent; while
/// `silent`, each report first waits out its whole timeout (a leader that stopped).
#[derive(Clone, Default)]
struct Scripted {
    ack: Arc<Mutex<Option<ReportAck>>>,
    sent: Arc<Mutex<Vec<NodeReport>>>,
    silent: Arc<Mutex<bool>>,
}

impl Scripted {
    fn answer(&self, ack: Option<ReportAck>) {
        *lock(&self.ack) = ack;
    }
}

impl ReportSink for Scripted {
    async fn deliver(&self, report: NodeReport, timeout: Duration) -> Result<ReportAck, String> {
        lock(&self.sent).push(report);
        if *lock(&self.silent) {
            tokio::time::sleep(timeout).await;
            return Err("timed out".into());
        }
        lock(&self.ack).clone().ok_or_else(|| "unreachable".into())
    }
}

fn confirmed(epoch: u64) -> Option<ReportAck> {
    Some(ReportAck {
        quorum_ack_age_ms: Some(0),
        epoch,
        master: None,
        master_offset: None,
        health: Default::default(),
    })
}

fn member_loop<S: ReportSink>(
    name: &str,
    redis: FakeRedis,
    consensus: Arc<FakeConsensus>,
    sink: S,
) -> MemberLoop<FakeRedis, FakeConsensus, S> {
    MemberLoop {
        config: MemberConfig {
            me: id(name),
            member: member(name, MemberKind::Data),
            probe_interval: PROBE,
            lease: LEASE,
            keep_alive: Duration::from_millis(750),
            down_after: DOWN_AFTER,
            redis_down_after: Duration::from_millis(300),
        },
        redis: Some(redis),
        consensus,
        sink,
        local: Arc::new(Mutex::new(LocalState::default())),
        kube: None,
        metrics: Arc::new(Metrics::new()),
        clock: Clock::start(),
    }
}

/// Node a's member loop, its reports answered by a confirmed coordinator at epoch 1.
fn node_a(
    state: ClusterState,
    redis: &FakeRedis,
) -> (MemberLoop<FakeRedis, FakeConsensus, Scripted>, Scripted) {
    let (consensus, _) = coordinator("c", state);
    let sink = Scripted::default();
    sink.answer(confirmed(1));
    (
        member_loop("a", redis.clone(), consensus, sink.clone()),
        sink,
    )
}

/// Cycle (reporting every time) for `total`, one probe interval at a time.
async fn run_for<S: ReportSink>(m: &mut MemberLoop<FakeRedis, FakeConsensus, S>, total: Duration) {
    let mut left = total;
    while !left.is_zero() {
        let step = left.min(PROBE);
        tokio::time::advance(step).await;
        left -= step;
        m.cycle(true).await;
    }
}

fn paused(redis: &FakeRedis) -> bool {
    redis.snapshot().paused.is_some()
}

#[tokio::test(start_paused = true)]
async fn an_isolated_master_fences_at_the_lease_and_not_before() {
    let redis = FakeRedis::master("run-a");
    let (mut m, sink) = node_a(cluster("a", "run-a"), &redis);
    m.cycle(true).await;
    assert!(
        !paused(&redis),
        "confirmed contact lifts the start-up fence"
    );
    sink.answer(None);
    run_for(&mut m, LEASE - PROBE).await;
    assert!(!paused(&redis), "still inside the lease");
    run_for(&mut m, 2 * PROBE).await;
    assert!(paused(&redis), "past the lease: writes paused");
    let pause = redis.snapshot().paused.expect("paused");
    assert!(
        pause >= Duration::from_secs(30),
        "a crashed agent leaves it fenced: {pause:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_ack_from_a_newer_epoch_does_not_renew_the_lease() {
    let redis = FakeRedis::master("run-a");
    let (mut m, sink) = node_a(cluster("a", "run-a"), &redis);
    m.cycle(true).await;
    // The coordinator has moved on to epoch 2 (maybe our successor); we have not seen it.
    sink.answer(confirmed(2));
    run_for(&mut m, LEASE + PROBE).await;
    assert!(
        paused(&redis),
        "acks ahead of our epoch must not keep us writable"
    );
}

#[tokio::test(start_paused = true)]
async fn demotion_comes_before_unpause() {
    let redis = FakeRedis::master("run-a");
    let (mut m, _sink) = node_a(cluster("b", "run-b"), &redis);
    m.cycle(true).await;
    let changes: Vec<String> = redis
        .changes()
        .into_iter()
        .filter(|c| !c.starts_with("CONFIG"))
        .collect();
    assert_eq!(
        changes,
        [
            "MULTI REPLICAOF b 6379; CLIENT KILL TYPE normal; CLIENT KILL TYPE pubsub EXEC",
            "CLIENT UNPAUSE"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn no_redis_command_when_everything_is_already_right() {
    let redis = FakeRedis::master("run-a");
    let (mut m, _sink) = node_a(cluster("a", "run-a"), &redis);
    m.cycle(true).await;
    redis.clear_commands();
    run_for(&mut m, Duration::from_secs(2)).await;
    assert_eq!(redis.changes(), Vec::<String>::new());
    assert!(!redis.snapshot().commands.is_empty(), "it kept probing");
}

#[tokio::test(start_paused = true)]
async fn a_replica_follows_the_committed_master_once() {
    let redis = FakeRedis::replica_of("run-a", "old:6379");
    let (mut m, _sink) = node_a(cluster("b", "run-b"), &redis);
    run_for(&mut m, Duration::from_secs(1)).await;
    let replicaof: Vec<String> = redis
        .changes()
        .into_iter()
        .filter(|c| c.starts_with("REPLICAOF"))
        .collect();
    assert_eq!(replicaof, ["REPLICAOF b 6379"]);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_master_is_fenced_not_trusted() {
    // Same node, another process: it may have come back empty.
    let redis = FakeRedis::master("run-a-restarted");
    let (mut m, _sink) = node_a(cluster("a", "run-a"), &redis);
    m.cycle(true).await;
    assert!(paused(&redis));
    assert!(!redis.changes().iter().any(|c| c.contains("UNPAUSE")));
}

#[tokio::test(start_paused = true)]
async fn a_redis_that_refuses_auth_is_reported_with_the_reason() {
    let redis = FakeRedis::master("run-a");
    redis.with(|s| {
        s.failing = Some(RedisError::Unreachable(
            "INFO: WRONGPASS invalid username-password pair".into(),
        ))
    });
    let (mut m, sink) = node_a(cluster("a", "run-a"), &redis);
    m.cycle(true).await;
    let sent = lock(&sink.sent).clone();
    let Some(RedisHealth::Down { error, .. }) = sent.last().and_then(|r| r.redis.clone()) else {
        panic!("reported up: {sent:?}");
    };
    assert!(error.contains("WRONGPASS"), "{error}");
    assert!(lock(&m.local).last_plan_reason.contains("down"));
}

#[tokio::test(start_paused = true)]
async fn the_coordinator_elects_the_best_reporting_data_node() {
    let mut state = cluster("a", "run-a");
    state.master = None;
    state.master_run_id = None;
    state.epoch = 0;
    let (consensus, coordinator) = coordinator("c", state);
    let a = FakeRedis::master("run-a");
    a.with(|s| s.offset = 100);
    let b = FakeRedis::master("run-b");
    let sink = || InProcess {
        consensus: consensus.clone(),
        coordinator: coordinator.clone(),
    };
    let mut ma = member_loop("a", a.clone(), consensus.clone(), sink());
    let mut mb = member_loop("b", b.clone(), consensus.clone(), sink());
    coordinator
        .handle_report(
            &consensus.facts(),
            consensus.quorum_ack_age_now(),
            &consensus.state(),
            NodeReport {
                node: id("c"),
                member: member("c", MemberKind::Witness),
                redis: None,
                fenced: false,
                handover_paused: false,
                master_accepts_writes: None,
            },
        )
        .expect("witness report");
    ma.cycle(true).await;
    mb.cycle(true).await;
    coordinator.decide_once(consensus.as_ref()).await;
    let state = consensus.state();
    assert_eq!(state.master, Some(id("a")), "the node holding data wins");
    assert_eq!(state.epoch, 1);
    mb.cycle(true).await;
    assert!(
        b.changes()
            .iter()
            .any(|c| c.starts_with("MULTI REPLICAOF a 6379;")),
        "{:?}",
        b.changes()
    );
}

#[tokio::test(start_paused = true)]
async fn reports_from_non_members_are_refused_and_a_removed_member_stays_removed() {
    let (consensus, coordinator) = coordinator("c", cluster("a", "run-a"));
    let ghost = NodeReport {
        node: id("ghost"),
        member: member("ghost", MemberKind::Data),
        redis: None,
        fenced: false,
        handover_paused: false,
        master_accepts_writes: None,
    };
    let refused = coordinator.handle_report(
        &consensus.facts(),
        consensus.quorum_ack_age_now(),
        &consensus.state(),
        ghost,
    );
    assert!(
        matches!(refused, Err(ReportRefusal::NotMember { .. })),
        "{refused:?}"
    );

    // b reports, is removed, and its cached report must not register it again.
    let b_report = NodeReport {
        node: id("b"),
        member: member("b", MemberKind::Data),
        redis: None,
        fenced: false,
        handover_paused: false,
        master_accepts_writes: None,
    };
    for name in ["a", "c"] {
        let mut r = b_report.clone();
        r.node = id(name);
        r.member = member(name, MemberKind::Data);
        coordinator
            .handle_report(
                &consensus.facts(),
                consensus.quorum_ack_age_now(),
                &consensus.state(),
                r,
            )
            .expect("member report");
    }
    coordinator
        .handle_report(
            &consensus.facts(),
            consensus.quorum_ack_age_now(),
            &consensus.state(),
            b_report.clone(),
        )
        .expect("b is a member");
    coordinator
        .remove_member(consensus.as_ref(), id("c"), "b")
        .await
        .expect("a and c are live");
    coordinator.decide_once(consensus.as_ref()).await;
    assert!(!consensus.state().members.contains_key(&id("b")));
    let again = coordinator.handle_report(
        &consensus.facts(),
        consensus.quorum_ack_age_now(),
        &consensus.state(),
        b_report,
    );
    assert!(
        matches!(again, Err(ReportRefusal::NotMember { .. })),
        "{again:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_report_to_a_non_leader_renews_no_lease() {
    let (consensus, coordinator) = coordinator("c", cluster("a", "run-a"));
    consensus.set_facts(|f| {
        f.state = openraft::ServerState::Follower;
        f.leader = Some(id("b"));
    });
    let sink = InProcess {
        consensus: consensus.clone(),
        coordinator,
    };
    let redis = FakeRedis::master("run-a");
    let mut m = member_loop("a", redis.clone(), consensus, sink);
    m.cycle(true).await;
    assert!(lock(&m.local).contact_at.is_none());
    assert!(paused(&redis), "never confirmed: stays fenced");
}

#[tokio::test(start_paused = true)]
async fn switchover_pauses_then_promotes_then_demotes_then_unpauses() {
    let (consensus, coordinator) = coordinator("c", cluster("a", "run-a"));
    let a = FakeRedis::master("run-a");
    a.with(|s| s.offset = 500);
    let b = FakeRedis::replica_of("run-b", "a:6379");
    b.with(|s| s.offset = 500);
    let sink = || InProcess {
        consensus: consensus.clone(),
        coordinator: coordinator.clone(),
    };
    let mut ma = member_loop("a", a.clone(), consensus.clone(), sink());
    let mut mb = member_loop("b", b.clone(), consensus.clone(), sink());
    ma.cycle(true).await;
    mb.cycle(true).await;
    a.clear_commands();
    b.clear_commands();

    let requested = {
        let (consensus, coordinator) = (consensus.clone(), coordinator.clone());
        tokio::spawn(async move { coordinator.switchover(consensus.as_ref(), Some("b")).await })
    };
    for _ in 0..20 {
        if consensus.state().master == Some(id("b")) && consensus.state().switchover.is_none() {
            break;
        }
        tokio::time::advance(Duration::from_millis(20)).await;
        ma.cycle(true).await;
        mb.cycle(true).await;
        coordinator.decide_once(consensus.as_ref()).await;
    }
    ma.cycle(true).await;
    mb.cycle(true).await;
    let done = requested.await.expect("joined").expect("switchover done");
    assert_eq!((done.from.as_str(), done.to.as_str()), ("a", "b"));
    let a_changes: Vec<String> = a
        .changes()
        .into_iter()
        .filter(|c| !c.starts_with("CONFIG"))
        .collect();
    let first_pause = a_changes
        .iter()
        .position(|c| c.starts_with("CLIENT PAUSE"))
        .expect("paused");
    let demote = a_changes
        .iter()
        .position(|c| c.starts_with("MULTI REPLICAOF b 6379; CLIENT KILL"))
        .expect("demoted, its clients closed");
    let unpause = a_changes
        .iter()
        .position(|c| c == "CLIENT UNPAUSE")
        .expect("unpaused");
    assert!(first_pause < demote && demote < unpause, "{a_changes:?}");
    assert_eq!(b.changes(), ["REPLICAOF NO ONE"]);
    assert!(
        !paused(&a),
        "the demoted master is writable as a replica again"
    );
}

fn kube_feed(
    name: &str,
) -> (
    Arc<crate::kube::testing::FakeCluster>,
    super::feeds::KubeFeed,
) {
    let cluster = Arc::new(crate::kube::testing::FakeCluster::new(
        crate::kube::PodInfo {
            name: format!("{name}-0"),
            namespace: "ns".into(),
            uid: "uid".into(),
            ip: "10.0.0.1".into(),
        },
    ));
    let feed = super::feeds::KubeFeed::new(cluster.clone(), PROBE);
    (cluster, feed)
}

#[tokio::test(start_paused = true)]
async fn a_confirmed_promotion_is_labelled_master_in_the_same_cycle() {
    use crate::kube::testing::Call;
    use crate::model::RedisRole::{Master, Replica};
    let redis = FakeRedis::replica_of("run-a", "b:6379");
    let (mut m, _sink) = node_a(cluster("a", "run-a"), &redis);
    let (kube, feed) = kube_feed("a");
    m.kube = Some(feed);
    m.cycle(true).await;
    assert!(
        redis
            .changes()
            .iter()
            .any(|c| c.starts_with("REPLICAOF NO ONE")),
        "{:?}",
        redis.changes()
    );
    let labels: Vec<Call> = kube
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::EnsureRoleLabel(_)))
        .collect();
    assert_eq!(
        labels,
        [
            Call::EnsureRoleLabel(Some(Replica)),
            Call::EnsureRoleLabel(Some(Master))
        ],
        "not a probe interval later"
    );
    assert_eq!(kube.label(), Some(Master));
}

#[tokio::test(start_paused = true)]
async fn a_failing_label_write_is_backed_off_and_never_holds_back_the_fence() {
    use crate::kube::testing::Call;
    let redis = FakeRedis::master("run-a");
    let (mut m, sink) = node_a(cluster("a", "run-a"), &redis);
    let (kube, feed) = kube_feed("a");
    m.kube = Some(feed);
    for _ in 0..1000 {
        kube.fail_next(crate::kube::KubeError::Api {
            op: "patch pod a-0".into(),
            code: 403,
            reason: "Forbidden".into(),
            message: "no patch".into(),
        });
    }
    m.cycle(true).await;
    // The start-up fence asks for replica once; then master: at 0.2 s, then after 0, 1, 2,
    // 4 s of backoff (0.4, 1.4, 3.4, 7.4 s) — 6 calls in 10 s of cycles, not 51.
    run_for(&mut m, Duration::from_secs(10)).await;
    let label_calls = |k: &crate::kube::testing::FakeCluster| {
        k.calls()
            .iter()
            .filter(|c| matches!(c, Call::EnsureRoleLabel(_)))
            .count()
    };
    assert_eq!(label_calls(&kube), 6);
    // Isolation: the label must move to replica; that is a new request, tried at once, and
    // the fence does not wait for it.
    sink.answer(None);
    let before = label_calls(&kube);
    run_for(&mut m, LEASE + PROBE).await;
    assert!(
        paused(&redis),
        "fenced at the lease despite the failing API"
    );
    assert!(
        kube.calls()
            .iter()
            .skip(before)
            .any(|c| *c == Call::EnsureRoleLabel(Some(crate::model::RedisRole::Replica))),
        "the move away from master is tried without waiting out the backoff"
    );
}

/// The downs reported so far, as (refused, for_ms).
fn downs(sink: &Scripted) -> Vec<(bool, u64)> {
    lock(&sink.sent)
        .iter()
        .filter_map(|r| match &r.redis {
            Some(RedisHealth::Down { kind, for_ms, .. }) => {
                Some((*kind == crate::model::DownKind::Refused, *for_ms))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_redis_exit_is_reported_at_once_and_again_when_it_counts_as_failed() {
    let redis = FakeRedis::master("run-a");
    let (m, sink) = node_a(cluster("a", "run-a"), &redis);
    let task = tokio::spawn(m.run());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = lock(&sink.sent).len();
    assert!(
        before >= 1,
        "the loop reports its first observation at once"
    );
    // Between probes (the next is 150 ms away): only the closed connection can tell.
    redis.exit();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        downs(&sink),
        vec![(true, 0)],
        "the exit is reported within a millisecond, not at the next probe"
    );
    // Looks every 50 ms while down, one of them exactly when it has been refused for
    // --redis-down-after (300 ms): the failover is not a poll late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = downs(&sink);
    assert_eq!(seen.last(), Some(&(true, 300)), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[1].1 - w[0].1 <= 50), "{seen:?}");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_view_is_reported_as_a_keep_alive_and_a_change_at_once() {
    let redis = FakeRedis::master("run-a");
    let (m, sink) = node_a(cluster("a", "run-a"), &redis);
    let task = tokio::spawn(m.run());
    // 3 s of probes every 200 ms, but reports only every lease/4 = 750 ms.
    tokio::time::sleep(Duration::from_millis(3_010)).await;
    let reports = lock(&sink.sent).len();
    assert!(
        (4..=6).contains(&reports),
        "{reports} reports in 3 s: a keep-alive every 750 ms, not one per 200 ms probe"
    );
    let probes = redis
        .snapshot()
        .commands
        .iter()
        .filter(|c| *c == "INFO")
        .count();
    assert!(
        probes >= 15,
        "the Redis is still probed every 200 ms ({probes} probes)"
    );
    // The Redis becomes a replica behind the agent's back: reported within one probe.
    redis.with(|s| {
        s.role = crate::model::RedisRole::Replica;
        s.master_addr = Some("b:6379".into());
    });
    let sent_before = lock(&sink.sent).len();
    tokio::time::sleep(Duration::from_millis(201)).await;
    let roles: Vec<_> = lock(&sink.sent)[sent_before..]
        .iter()
        .filter_map(|r| r.redis.as_ref().and_then(|h| h.status()).map(|s| s.role))
        .collect();
    assert!(
        roles.contains(&crate::model::RedisRole::Replica),
        "a role change is reported within one probe: {roles:?}"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn the_running_loop_fences_when_the_lease_runs_out_not_a_probe_later() {
    let redis = FakeRedis::master("run-a");
    let (m, sink) = node_a(cluster("a", "run-a"), &redis);
    let task = tokio::spawn(m.run());
    // Acked reports at 0 ms and at the first probe after the 750 ms keep-alive (800 ms);
    // then the coordinator is gone.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!paused(&redis), "a master in contact takes writes");
    sink.answer(None);
    tokio::time::sleep(Duration::from_millis(2_790)).await;
    assert!(!paused(&redis), "fenced before the lease ran out");
    tokio::time::sleep(Duration::from_millis(13)).await;
    assert!(
        paused(&redis),
        "fenced within 2 ms of the lease's end (3 s after the last ack at 800 ms)"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_commit_cuts_short_a_hung_write_probe_of_the_master() {
    let redis = FakeRedis::replica_of("run-a", "b:6379");
    let (m, _sink) = node_a(cluster("b", "run-b"), &redis);
    let consensus = m.consensus.clone();
    let task = tokio::spawn(m.run());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // b's host stops: from the next cycle (200 ms) a's write probe of b's Redis waits for
    // its whole 300 ms timeout.
    redis.with(|s| s.master_hangs = true);
    tokio::time::sleep(Duration::from_millis(240)).await;
    consensus.set_state(|s| {
        s.master = Some(id("a"));
        s.master_run_id = Some("run-a".into());
        s.epoch = 2;
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        redis.snapshot().role,
        RedisRole::Master,
        "promoted within 1 ms of the commit, not when the probe times out: {:?}",
        redis.changes()
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_replica_detaches_from_a_vanished_master_before_a_report_to_a_silent_leader() {
    let redis = FakeRedis::replica_of("run-a", "b:6379");
    let (m, sink) = node_a(cluster("b", "run-b"), &redis);
    let task = tokio::spawn(m.run());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // b's host stops with b's agent, the Raft leader: reports wait out their timeout, and
    // b's address hangs up on connect (a proxy in front of it stays).
    *lock(&sink.silent) = true;
    redis.with(|s| s.master_fails = Some(RedisError::HungUp("connection reset".into())));
    tokio::time::sleep(PROBE + Duration::from_millis(5)).await;
    let detached = format!("{DETACHED_HOST}:{DETACHED_PORT}");
    assert_eq!(
        redis.snapshot().master_addr.as_deref(),
        Some(detached.as_str()),
        "detached within 5 ms of the next probe, not after the report times out: {:?}",
        redis.changes()
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_follower_starts_coordinating_the_moment_it_becomes_leader() {
    let (consensus, coordinator) = coordinator("c", cluster("a", "run-a"));
    consensus.set_facts(|f| {
        f.state = ServerState::Follower;
        f.leader = Some(id("a"));
    });
    consensus.set_quorum_ack_age(None);
    let task = tokio::spawn(coordinator.clone().run(consensus.clone()));
    tokio::time::sleep(Duration::from_millis(2_345)).await;
    // a's host is lost with the Raft leader; c wins the election.
    consensus.set_facts(|f| {
        f.state = ServerState::Leader;
        f.term = 2;
        f.leader = Some(id("c"));
    });
    consensus.set_quorum_ack_age(Some(0));
    let elected = tokio::time::Instant::now();
    // b's first report reaches the new leader only a second later.
    for at in [1_000, 2_000, 3_000] {
        tokio::time::sleep_until(elected + Duration::from_millis(at)).await;
        hear(&consensus, &coordinator, replica_b());
    }
    // A new leader that has not heard the master waits max(lease, lease + (down-after −
    // lease)/2 − election timeout) = 3.5 s from its election.
    tokio::time::sleep_until(elected + Duration::from_millis(3_450)).await;
    assert_eq!(
        consensus.state().epoch,
        1,
        "not before the new leader's wait"
    );
    tokio::time::sleep_until(elected + Duration::from_millis(3_550)).await;
    assert_eq!(
        consensus.state().master,
        Some(id("b")),
        "failed over 3.5 s after the election, not counted from the first report"
    );
    task.abort();
}

/// A Redis with one key at offset 100 and its replication link down.
fn status(run_id: &str, role: RedisRole, master_addr: Option<&str>) -> RedisStatus {
    RedisStatus {
        run_id: run_id.into(),
        role,
        master_addr: master_addr.map(str::to_string),
        master_link_up: false,
        repl_offset: 100,
        keys: 1,
        online_replicas: 0,
    }
}

/// a's report as master.
fn master_a() -> NodeReport {
    report_of("a", Some(status("run-a", RedisRole::Master, None)))
}

/// b's report as a's replica (its link down).
fn replica_b() -> NodeReport {
    report_of(
        "b",
        Some(status("run-b", RedisRole::Replica, Some("a:6379"))),
    )
}

/// The coordinator hears a member's report, as from the peer port.
fn hear(consensus: &FakeConsensus, coordinator: &Coordinator, report: NodeReport) {
    coordinator
        .handle_report(
            &consensus.facts(),
            consensus.quorum_ack_age_now(),
            &consensus.state(),
            report,
        )
        .expect("a member's report");
}

fn report_of(name: &str, redis: Option<RedisStatus>) -> NodeReport {
    let kind = if redis.is_some() {
        MemberKind::Data
    } else {
        MemberKind::Witness
    };
    NodeReport {
        node: id(name),
        member: member(name, kind),
        redis: redis.map(RedisHealth::Up),
        fenced: false,
        handover_paused: false,
        master_accepts_writes: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_coordinator_fails_a_silent_master_over_when_its_silence_reaches_down_after() {
    let (consensus, coordinator) = coordinator("c", cluster("a", "run-a"));
    let hear = |report: NodeReport| hear(&consensus, &coordinator, report);
    hear(master_a());
    hear(report_of("c", None));
    let task = tokio::spawn(coordinator.clone().run(consensus.clone()));
    let start = tokio::time::Instant::now();
    // b keeps reporting (its link to a is down), never on the moment a's silence runs out.
    for at in [700, 1_700, 2_700, 3_700, 4_700] {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        hear(replica_b());
        hear(report_of("c", None));
    }
    tokio::time::sleep_until(start + Duration::from_millis(4_999)).await;
    assert_eq!(consensus.state().epoch, 1, "not before 5 s of silence");
    tokio::time::sleep_until(start + Duration::from_millis(5_001)).await;
    assert_eq!(
        consensus.state().master,
        Some(id("b")),
        "failed over within 1 ms of the 5 s of silence, not at the next look"
    );
    task.abort();
}

/// A fake consensus that counts reads of the committed state: the coordinator reads it
/// once per decision.
struct Counting {
    inner: Arc<FakeConsensus>,
    states: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn decisions(&self) -> usize {
        self.states.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Consensus for Counting {
    fn facts(&self) -> super::consensus::RaftFacts {
        self.inner.facts()
    }

    async fn quorum_ack_age(&self) -> Option<u64> {
        self.inner.quorum_ack_age().await
    }

    fn state(&self) -> ClusterState {
        self.states
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.state()
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<ClusterState> {
        self.inner.subscribe()
    }

    async fn until_leader(&self) {
        self.inner.until_leader().await;
    }

    async fn commit(
        &self,
        command: crate::model::Command,
    ) -> Result<crate::model::CommandResponse, String> {
        self.inner.commit(command).await
    }

    async fn add_node(&self, id: NodeId, addr: String, voter: bool) -> Result<(), String> {
        self.inner.add_node(id, addr, voter).await
    }

    async fn remove_voter(&self, id: NodeId) -> Result<(), String> {
        self.inner.remove_voter(id).await
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_leader_decides_only_on_news_yet_fails_a_silent_master_over_at_its_bound() {
    let (consensus, coordinator) = coordinator("c", cluster("a", "run-a"));
    let counting = Arc::new(Counting {
        inner: consensus.clone(),
        states: Default::default(),
    });
    let hear = |report: NodeReport| hear(&consensus, &coordinator, report);
    hear(master_a());
    hear(replica_b());
    hear(report_of("c", None));
    let task = tokio::spawn(coordinator.clone().run(counting.clone()));
    let start = tokio::time::Instant::now();
    // Ten idle seconds: every member sends the same keep-alive once a second.
    for second in 0..10 {
        for (offset, report) in [
            (0, master_a()),
            (300, replica_b()),
            (600, report_of("c", None)),
        ] {
            tokio::time::sleep_until(start + Duration::from_millis(second * 1_000 + offset)).await;
            hear(report);
        }
    }
    tokio::time::sleep_until(start + Duration::from_millis(10_000)).await;
    let idle = counting.decisions();
    assert!(
        idle <= 35,
        "{idle} decisions in 10 idle seconds: one per report (30) and hardly any more, \
         not one every half probe (50 more)"
    );
    assert_eq!(
        consensus.state().epoch,
        1,
        "nothing to change while healthy"
    );
    // a's agent falls silent after its report at 9 s; b and c go on, never on its bound.
    let silent_from = start + Duration::from_millis(9_000);
    for at in [10_300, 11_300, 12_300, 13_300] {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        hear(replica_b());
        hear(report_of("c", None));
    }
    tokio::time::sleep_until(silent_from + DOWN_AFTER - Duration::from_millis(1)).await;
    assert_eq!(consensus.state().epoch, 1, "not before 5 s of silence");
    tokio::time::sleep_until(silent_from + DOWN_AFTER + Duration::from_millis(1)).await;
    assert_eq!(
        consensus.state().master,
        Some(id("b")),
        "failed over within 1 ms of a's silence reaching down_after, not at the next look"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_commit_wakes_the_leader_as_a_report_does() {
    let mut paused = cluster("a", "run-a");
    paused.paused = true;
    let (consensus, coordinator) = coordinator("c", paused);
    let hear = |report: NodeReport| hear(&consensus, &coordinator, report);
    hear(master_a());
    let task = tokio::spawn(coordinator.clone().run(consensus.clone()));
    let start = tokio::time::Instant::now();
    // a falls silent during maintenance; b and c report at 5.5 s, so a paused cluster's
    // coordinator, with no bound to wait for, would look next at 6.5 s.
    tokio::time::sleep_until(start + Duration::from_millis(5_500)).await;
    hear(replica_b());
    hear(report_of("c", None));
    tokio::time::sleep_until(start + Duration::from_millis(6_000)).await;
    assert_eq!(consensus.state().epoch, 1, "no failover while paused");
    coordinator
        .set_paused(consensus.as_ref(), false)
        .await
        .expect("resumed");
    tokio::time::sleep_until(start + Duration::from_millis(6_001)).await;
    assert_eq!(
        consensus.state().master,
        Some(id("b")),
        "the resume's commit woke the coordinator: failed over at once, not at its next look"
    );
    task.abort();
}
