//! Partitions, crashes and WAN latency across three sites on one machine.
//!
//! Each test builds the seed topology as separate network namespaces (see `netns/mod.rs`),
//! runs one writer per site, injects one fault, heals it and checks the whole history:
//! at most one writable master, epochs monotonic and unambiguous, convergence within
//! [`CONVERGE`] after the heal. They skip loudly where namespaces cannot be created.

mod netns;

use std::collections::BTreeSet;
use std::time::Duration;

use netns::checker::Report;
use netns::topology::Site;
use netns::workload::Records;
use netns::{CONVERGE, DOWN_AFTER, Fault, Harness, LEASE, Options, PROBE, SETTLE};
use redis_orchestrator::client::ApiClient;
use redis_orchestrator::wire::SwitchoverDone;

/// Time for writers to reach the master before a fault.
const WARM_UP: Duration = Duration::from_secs(2);
/// Time allowed on top of `--down-after` for a failover. When the isolated master is also
/// the Raft leader, the others first elect a coordinator (up to four times the election
/// timeout, see [`netns::TIMING`]), and a new coordinator counts silence from its own
/// leadership; then one report, one commit and one reconcile.
const FAILOVER_SLACK: Duration = Duration::from_millis(3500);
/// How late after `--lease` an isolated master may still acknowledge a write: one probe
/// to notice, one round trip to pause, and a write already in flight.
const FENCE_SLACK: Duration = Duration::from_millis(500);

fn site_of(v: &redis_orchestrator::wire::StateView) -> Option<Site> {
    Site::from_name(&v.name)
}

/// Epochs any agent reported between two run times.
fn epochs_between(records: &Records, from: Duration, to: Duration) -> BTreeSet<u64> {
    records
        .rounds
        .iter()
        .filter(|r| r.at >= from && r.at <= to)
        .flat_map(|r| r.views.iter().flatten().map(|v| v.epoch))
        .collect()
}

/// The Raft leader's site, as the agents report it.
async fn raft_leader(h: &Harness) -> Option<Site> {
    h.states()
        .await
        .iter()
        .flatten()
        .find_map(|v| v.raft_leader.as_deref().and_then(Site::from_name))
}

/// Settle with the Raft leadership on the witness, where it moves by itself
/// (`decide::leadership`); the master's site.
async fn witness_leads(h: &mut Harness) -> Site {
    let m = h.settled(SETTLE).await;
    assert_eq!(
        raft_leader(h).await,
        Some(Site::C),
        "the witness takes the Raft leadership over once a leader settles"
    );
    println!("master {}, raft leader site-c", m.name());
    m
}

async fn finish_clean(h: &mut Harness, name: &str) -> Report {
    let report = h.finish().await;
    println!("--- {name} ---\n{}", report.summary());
    if !report.ok() {
        h.dump_logs(60);
        panic!("{name}: invariants violated:\n{}", report.summary());
    }
    report
}

#[test]
fn isolating_the_master_site_promotes_the_other_and_fences_the_old() {
    netns::run(
        "isolate master site",
        Options::default(),
        |mut h| async move {
            let m = h.settled(SETTLE).await;
            let r = m.other_data().expect("the master is a data site");
            h.start_writers();
            tokio::time::sleep(WARM_UP).await;

            let fault = h.inject(Fault::Isolate(m)).await.expect("isolate");
            let isolated_at = fault.at;
            let (promoted_at, _) = h
                .wait_for(
                    "the other data site promoted",
                    DOWN_AFTER + FAILOVER_SLACK + Duration::from_secs(5),
                    |s| s[r.index()].as_ref().is_some_and(|v| v.is_master),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let took = promoted_at - isolated_at;
            println!(
                "{} promoted {} ms after {} was isolated",
                r.name(),
                took.as_millis(),
                m.name()
            );
            // --down-after after the master's last report; or, when the isolated site held
            // the Raft leader, halfway from --lease to --down-after less an election timeout
            // after the new one's election, which is at least an election timeout after the
            // isolation. Both come after the isolated master's lease has run out.
            assert!(
                took + PROBE * 2 >= (LEASE + DOWN_AFTER) / 2,
                "promoted after {} ms, before the old master's lease surely ran out",
                took.as_millis()
            );
            assert!(
                took <= DOWN_AFTER + FAILOVER_SLACK,
                "promotion took {} ms",
                took.as_millis()
            );
            // Writers at the promoted site and the witness site now reach the new master.
            tokio::time::sleep(WARM_UP).await;

            let records = h.history.snapshot();
            let last_old = records
                .acks
                .iter()
                .filter(|a| a.node == m && a.at >= isolated_at)
                .map(|a| a.at)
                .max();
            if let Some(last) = last_old {
                let fenced_after = last - isolated_at;
                println!(
                    "isolated {} acknowledged its last write {} ms after isolation",
                    m.name(),
                    fenced_after.as_millis()
                );
                assert!(
                    last < promoted_at,
                    "the isolated master acknowledged a write after the promotion"
                );
                assert!(
                    fenced_after <= LEASE + FENCE_SLACK,
                    "isolated master acknowledged writes {} ms after isolation (--lease {} ms)",
                    fenced_after.as_millis(),
                    LEASE.as_millis()
                );
            }
            assert!(
                records.rounds.iter().any(|round| round.at > isolated_at
                    && round.views[m.index()]
                        .as_ref()
                        .is_some_and(|v| v.fenced && !v.is_master)),
                "the isolated master reported itself fenced"
            );
            assert!(
                records
                    .acks
                    .iter()
                    .any(|a| a.node == r && a.at > promoted_at),
                "the new master acknowledged writes"
            );

            h.heal(fault).await.expect("heal");
            let (master, took) = h
                .wait_converged(CONVERGE)
                .await
                .unwrap_or_else(|e| panic!("after heal: {e}"));
            println!("converged {} ms after heal", took.as_millis());
            assert_eq!(master, r, "the old master rejoins as a replica");
            let report = finish_clean(&mut h, "isolate master site").await;
            assert_eq!(report.failovers.len(), 1, "exactly one failover");
        },
    );
}

#[test]
fn isolating_the_witness_changes_nothing() {
    netns::run("isolate witness", Options::default(), |mut h| async move {
        // The hard case: the witness is also the coordinator, so cutting it off costs the
        // cluster its Raft leader too.
        let m = witness_leads(&mut h).await;
        h.start_writers();
        tokio::time::sleep(WARM_UP).await;
        let fault = h.inject(Fault::Isolate(Site::C)).await.expect("isolate");
        let at = fault.at;
        tokio::time::sleep(DOWN_AFTER * 2).await;
        let healed_at = h.heal(fault).await.expect("heal");
        let records = h.history.snapshot();
        let epochs = epochs_between(&records, at, healed_at);
        assert_eq!(epochs.len(), 1, "no master change: epochs {epochs:?}");
        let gap = records.longest_write_gap(at, healed_at);
        println!(
            "longest write gap with the witness cut off: {} ms",
            gap.as_millis()
        );
        assert!(
            gap < LEASE,
            "writes stalled {} ms with only the witness cut off",
            gap.as_millis()
        );
        assert!(
            records
                .rounds
                .iter()
                .filter(|r| r.at >= at && r.at <= healed_at)
                .all(|r| r.views[m.index()].as_ref().is_none_or(|v| !v.fenced)),
            "the master was never fenced"
        );
        let master = h.settled(CONVERGE).await;
        assert_eq!(master, m);
        let report = finish_clean(&mut h, "isolate witness").await;
        assert!(report.failovers.is_empty());
    });
}

#[test]
fn cutting_the_data_sites_apart_keeps_one_master_without_flapping() {
    netns::run("cut A<->B", Options::default(), |mut h| async move {
        let m = h.settled(SETTLE).await;
        let states = h.states().await;
        let leader = states[0].as_ref().and_then(|v| v.raft_leader.clone());
        println!("master {}, raft leader {leader:?}", m.name());
        h.start_writers();
        tokio::time::sleep(WARM_UP).await;
        let fault = h.inject(Fault::CutDataSites).await.expect("cut");
        let at = fault.at;
        tokio::time::sleep(DOWN_AFTER * 4).await;
        let healed_at = h.heal(fault).await.expect("heal");
        let records = h.history.snapshot();
        let epochs = epochs_between(&records, at, healed_at + CONVERGE);
        println!("epochs during the cut: {epochs:?}");
        assert!(
            epochs.len() <= 2,
            "at most one failover while A and B cannot see each other: {epochs:?}"
        );
        // One writable master at any time is the checker's job; here also check that
        // the agents' own view never showed two.
        for round in records.rounds.iter().filter(|r| r.at >= at) {
            let claims = round.views.iter().flatten().filter(|v| v.is_master).count();
            assert!(claims <= 1, "two agents claim master at {:?}", round.at);
        }
        let (master, took) = h
            .wait_converged(CONVERGE)
            .await
            .unwrap_or_else(|e| panic!("after heal: {e}"));
        println!(
            "master after the cut: {} (converged {} ms after heal)",
            master.name(),
            took.as_millis()
        );
        finish_clean(&mut h, "cut A<->B").await;
    });
}

#[test]
fn fifty_ms_between_sites_for_a_minute_causes_no_failover() {
    netns::run("WAN latency", Options::default(), |mut h| async move {
        let m = h.settled(SETTLE).await;
        h.start_writers();
        tokio::time::sleep(WARM_UP).await;
        let fault = h
            .inject(Fault::Wan {
                delay: Duration::from_millis(50),
                loss_percent: 0,
            })
            .await
            .expect("latency");
        let at = fault.at;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let healed_at = h.heal(fault).await.expect("heal");
        let records = h.history.snapshot();
        let epochs = epochs_between(&records, at, healed_at);
        assert_eq!(epochs.len(), 1, "no failover under latency: {epochs:?}");
        let slow_acks: Vec<Duration> = records
            .acks
            .iter()
            .filter(|a| a.at > at + Duration::from_secs(1) && a.writer != a.node)
            .map(|a| a.at - a.sent)
            .collect();
        let fastest = slow_acks.iter().min().copied().unwrap_or_default();
        println!(
            "{} cross-site acks under latency; fastest round trip {} ms",
            slow_acks.len(),
            fastest.as_millis()
        );
        assert!(
            fastest >= Duration::from_millis(95),
            "the relay delays each direction by 50 ms"
        );
        let fenced_rounds = records
            .rounds
            .iter()
            .filter(|r| r.at >= at && r.at <= healed_at)
            .filter(|r| r.views[m.index()].as_ref().is_some_and(|v| v.fenced))
            .count();
        assert_eq!(fenced_rounds, 0, "latency alone never fences the master");
        assert_eq!(h.settled(CONVERGE).await, m);
        let report = finish_clean(&mut h, "WAN latency").await;
        assert!(report.failovers.is_empty());
    });
}

#[test]
fn pausing_the_master_agent_past_down_after_never_gives_two_writable_masters() {
    netns::run(
        "pause master agent",
        Options::default(),
        |mut h| async move {
            let m = h.settled(SETTLE).await;
            h.start_writers();
            tokio::time::sleep(WARM_UP).await;
            let fault = h.inject(Fault::PauseAgent(m)).await.expect("SIGSTOP");
            let at = fault.at;
            tokio::time::sleep(DOWN_AFTER * 2).await;
            let healed_at = h.heal(fault).await.expect("SIGCONT");
            let (master, took) = h
                .wait_converged(CONVERGE)
                .await
                .unwrap_or_else(|e| panic!("after SIGCONT: {e}"));
            println!(
                "master {} after SIGCONT of {}'s agent (converged {} ms after heal)",
                master.name(),
                m.name(),
                took.as_millis()
            );
            let records = h.history.snapshot();
            let epochs = epochs_between(&records, at, healed_at);
            println!("epochs while the agent was stopped: {epochs:?}");
            finish_clean(&mut h, "pause master agent").await;
        },
    );
}

#[test]
fn a_planned_switchover_across_sites_loses_no_acknowledged_write() {
    netns::run(
        "planned switchover",
        Options::default(),
        |mut h| async move {
            let m = h.settled(SETTLE).await;
            let target = m.other_data().expect("data site");
            h.start_writers();
            tokio::time::sleep(WARM_UP).await;
            // Over the WAN with 20 ms each way, so the handover waits on real round trips.
            let wan = h
                .inject(Fault::Wan {
                    delay: Duration::from_millis(20),
                    loss_percent: 0,
                })
                .await
                .expect("latency");
            // Asked of the witness, which forwards to the coordinator if it is not one.
            let operator = ApiClient::new(Some(netns::SECRET.as_bytes()), Duration::from_secs(15))
                .expect("api client");
            let witness = netns::workload::addr_from(None, Site::C, netns::workload::API_PORT);
            let done: SwitchoverDone = operator
                .post(&witness, "/switchover", &serde_json::json!({}))
                .await
                .unwrap_or_else(|e| panic!("switchover: {e}"));
            println!(
                "switchover {} -> {} at epoch {} took {} ms",
                done.from, done.to, done.epoch, done.took_ms
            );
            assert_eq!(done.to, target.name());
            tokio::time::sleep(WARM_UP).await;
            h.heal(wan).await.expect("heal");
            assert_eq!(h.settled(CONVERGE).await, target);
            let report = finish_clean(&mut h, "planned switchover").await;
            assert_eq!(report.failovers.len(), 1);
            assert!(
                report.lost.is_empty(),
                "a planned switchover loses no acknowledged write: {} lost",
                report.lost.len()
            );
        },
    );
}

/// With Redis's own defaults (`repl-timeout` 60 s, a ping every 10 s) a replica cut off by
/// dropped packets would report a live link to the old master for up to a minute, keeping
/// the silent master; the agent sets both on its Redis so the failover follows --down-after.
#[test]
fn isolating_the_master_site_with_default_redis_settings() {
    netns::run(
        "isolate master site, default redis",
        Options::default().redis_defaults(),
        |mut h| async move {
            let m = h.settled(SETTLE).await;
            let r = m.other_data().expect("data site");
            h.start_writers();
            tokio::time::sleep(WARM_UP).await;
            let fault = h.inject(Fault::Isolate(m)).await.expect("isolate");
            let promoted = h
                .wait_for(
                    "the other data site promoted",
                    DOWN_AFTER + FAILOVER_SLACK,
                    |s| s[r.index()].as_ref().is_some_and(|v| v.is_master),
                )
                .await;
            let states = h.states().await;
            let replica_view = states[r.index()].as_ref().map(|v| {
                (
                    v.role.clone(),
                    v.master_link_up,
                    v.master.clone(),
                    site_of(v),
                )
            });
            h.heal(fault).await.expect("heal");
            if let Err(e) = promoted {
                panic!(
                    "no failover within --down-after + {} ms of isolating {}; the replica still \
                     reports (role, link up, master): {replica_view:?}\n{e}",
                    FAILOVER_SLACK.as_millis(),
                    m.name()
                );
            }
        },
    );
}

/// openraft gives each AppendEntries `--raft-heartbeat` to complete. With a 100 ms heartbeat
/// and a 100 ms round trip it abandons every one: the leader's quorum acknowledgement ages
/// without bound, no report renews any lease and the master fences itself for as long as the
/// latency lasts, while the followers still hear the heartbeats and elect nobody else.
/// Counting an abandoned acknowledgement would make the lease unsafe, so the agent explains
/// instead: within seconds the leader logs a warning that names a slow peer and
/// `--raft-heartbeat`, and its /metrics count the abandoned AppendEntries. Once the latency
/// ends the same master takes writes again, and the history holds no violation.
#[test]
fn a_heartbeat_below_the_round_trip_between_sites_is_explained_loudly() {
    netns::run(
        "WAN latency, 100 ms heartbeat",
        Options::default()
            .with("--raft-heartbeat", "100ms")
            .with("--raft-election-timeout", "400ms"),
        |mut h| async move {
            let m = h.settled(SETTLE).await;
            let leader = raft_leader(&h).await.expect("a Raft leader once settled");
            h.start_writers();
            tokio::time::sleep(WARM_UP).await;
            let logged_before = h.agent_log(leader).len();
            let abandoned_before = abandoned_appends(&h, leader).await;
            let fault = h
                .inject(Fault::Wan {
                    delay: Duration::from_millis(50),
                    loss_percent: 0,
                })
                .await
                .expect("latency");
            let warning = async {
                loop {
                    let log = h.agent_log(leader);
                    let new = log.get(logged_before..).unwrap_or_default();
                    if let Some(line) = new.lines().find(|l| is_heartbeat_warning(l)) {
                        return line.to_string();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            let warning = tokio::time::timeout(WARNED_WITHIN, warning).await;
            let abandoned_then = abandoned_appends(&h, leader).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let abandoned_later = abandoned_appends(&h, leader).await;
            let metrics = h.metrics(leader).await.unwrap_or_default();
            let round_trips: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with(ROUND_TRIP_METRIC))
                .collect();
            // Past the lease, with a second to spare: what the warning says the master suffers.
            tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
            let healed_at = h.heal(fault).await.expect("heal");
            let records = h.history.snapshot();
            let fenced = records
                .rounds
                .iter()
                .filter(|r| r.at >= healed_at.saturating_sub(Duration::from_secs(1)))
                .filter(|r| r.at <= healed_at)
                .filter(|r| r.views[m.index()].as_ref().is_some_and(|v| v.fenced))
                .count();
            println!(
                "leader {}: abandoned AppendEntries {abandoned_before} before the latency, \
                 {abandoned_then} at the warning, {abandoned_later} a second later; \
                 {round_trips:?}; master {} fenced in {fenced} polls of the last second",
                leader.name(),
                m.name()
            );
            let Ok(warning) = warning else {
                h.dump_logs(40);
                panic!(
                    "{} logged no warning naming --raft-heartbeat within {} ms of a 100 ms \
                     round trip between sites",
                    leader.name(),
                    WARNED_WITHIN.as_millis()
                );
            };
            println!("{warning}");
            let peers: Vec<String> = Site::ALL
                .into_iter()
                .filter(|&s| s != leader)
                .map(|s| format!("{}:{}", s.wan(), netns::workload::RAFT_PORT))
                .collect();
            assert!(
                peers.iter().any(|p| warning.contains(p.as_str())),
                "the warning names a peer ({peers:?}): {warning}"
            );
            assert!(
                abandoned_then > abandoned_before && abandoned_later > abandoned_then,
                "/metrics of {} count abandoned AppendEntries, rising while the latency lasts: \
                 {abandoned_before}, then {abandoned_then}, then {abandoned_later}",
                leader.name()
            );
            assert!(fenced > 0, "the master pauses writes, as the warning says");
            assert_eq!(
                h.settled(CONVERGE).await,
                m,
                "the same master takes writes again once the round trip fits the heartbeat"
            );
            finish_clean(&mut h, "WAN latency, 100 ms heartbeat").await;
        },
    );
}

/// How soon the leader explains a heartbeat below the round trip: the first answer comes
/// one round trip after the latency starts; the rest is room for a loaded machine.
const WARNED_WITHIN: Duration = Duration::from_secs(5);
const ABANDONED_METRIC: &str = "redis_orchestrator_raft_appends_abandoned_total";
const ROUND_TRIP_METRIC: &str = "redis_orchestrator_raft_append_round_trip_milliseconds";

/// The agent's warning that its AppendEntries outlast the 100 ms heartbeat.
fn is_heartbeat_warning(line: &str) -> bool {
    line.contains("\"level\":\"WARN\"")
        && line.contains("longer than --raft-heartbeat (100 ms)")
        && line.contains("Raise --raft-heartbeat above the round trip between sites")
}

/// The AppendEntries `site`'s agent has abandoned at the heartbeat, all peers together.
async fn abandoned_appends(h: &Harness, site: Site) -> u64 {
    let text = h
        .metrics(site)
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"));
    text.lines()
        .filter(|l| l.starts_with(ABANDONED_METRIC))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// openraft 0.9 makes a follower that knows a leader wait the leader lease (the maximum
/// election timeout) plus a random election timeout before campaigning, so a lost leader is
/// replaced only after up to four election timeouts. The master's contact at that moment
/// may already be a keep-alive old, so the agent keeps its keep-alive within what the lease
/// leaves and refuses a `--lease` that leaves less than a probe interval. With the tightest
/// timings it accepts, cutting off the witness while it leads must not fence the master.
#[test]
fn losing_the_witness_as_raft_leader_does_not_fence_the_master() {
    netns::run(
        "lose the witness as leader",
        Options::default()
            .with("--down-after", "3s")
            .with("--lease", "1650ms")
            .with("--raft-election-timeout", "300ms"),
        |mut h| async move {
            let m = witness_leads(&mut h).await;
            h.start_writers();
            tokio::time::sleep(WARM_UP).await;
            let fault = h.inject(Fault::Isolate(Site::C)).await.expect("isolate");
            let at = fault.at;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let healed_at = h.heal(fault).await.expect("heal");
            let records = h.history.snapshot();
            let fenced = records
                .rounds
                .iter()
                .filter(|r| r.at >= at && r.at <= healed_at)
                .filter(|r| r.views[m.index()].as_ref().is_some_and(|v| v.fenced))
                .count();
            let gap = records.longest_write_gap(at, healed_at);
            assert_eq!(
                fenced,
                0,
                "{} fenced itself in {fenced} polls (writes stopped {} ms) when the witness, \
                 its Raft leader, was cut off",
                m.name(),
                gap.as_millis()
            );
        },
    );
}

/// The witness takes the Raft leadership over only across a link to the leader that answers
/// within half a heartbeat: across a slower one its own AppendEntries would miss their
/// heartbeat and fence the master, so the leadership stays where it is until the link is fast.
#[test]
fn the_witness_leaves_the_leadership_alone_across_a_slow_link() {
    netns::run(
        "slow link, witness follows",
        Options::default()
            .with("--raft-heartbeat", "100ms")
            .with("--raft-election-timeout", "400ms"),
        |mut h| async move {
            let m = witness_leads(&mut h).await;
            // 60 ms round trips: within the data leader's 100 ms heartbeat, past half of it.
            let wan = h
                .inject(Fault::Wan {
                    delay: Duration::from_millis(30),
                    loss_percent: 0,
                })
                .await
                .expect("latency");
            let kill = h.inject(Fault::KillAgent(Site::C)).await.expect("kill");
            h.wait_for("a data agent leads", CONVERGE, |s| {
                s.iter().flatten().any(|v| v.raft_state == "Leader")
            })
            .await
            .expect("the data agents elect a leader without the witness");
            let logged_before = h.agent_log(Site::C).len();
            h.heal(kill).await.expect("restart the witness");
            // Settling (2 s), a still log (1 s) and a measured report: over a fast link the
            // leadership would have moved within this.
            tokio::time::sleep(Duration::from_secs(8)).await;
            let leader = raft_leader(&h).await;
            let log = h.agent_log(Site::C);
            let new = log.get(logged_before..).unwrap_or_default();
            assert!(
                matches!(leader, Some(Site::A | Site::B)),
                "a data agent still leads across 60 ms round trips: {leader:?}"
            );
            assert!(
                !new.contains("taking the Raft leadership over"),
                "the witness did not campaign across the slow link"
            );
            h.heal(wan).await.expect("heal");
            h.wait_for("the witness leads again", Duration::from_secs(20), |s| {
                s[Site::C.index()]
                    .as_ref()
                    .is_some_and(|v| v.raft_state == "Leader")
            })
            .await
            .expect("the witness takes the leadership over once the link is fast");
            assert_eq!(h.settled(CONVERGE).await, m, "the same master throughout");
            finish_clean(&mut h, "slow link, witness follows").await;
        },
    );
}
