//! A node whose Raft store is wiped while the cluster runs (three real agents: two
//! redis-server data nodes and a witness on 127.0.0.1): it must not bootstrap, must not vote
//! in a term it may already have voted in, must say so, and must rejoin. Every agent's
//! `/state` is sampled throughout: no leader a twice-cast vote could explain, and nothing
//! committed is lost (the epoch, the master and the switchover history survive).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, SECRET, run_serial, switch_over};
use redis_orchestrator::client::ApiClient;
use redis_orchestrator::wire::HistoryEntry;

const SETTLE: Duration = Duration::from_secs(20);

/// Every leader seen on any agent's `/state` until stopped: term → (node id, name) → when
/// first seen.
type Leaders = BTreeMap<u64, BTreeMap<(u64, String), Instant>>;

struct LeaderSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Leaders, Vec<String>)>,
}

impl LeaderSampler {
    /// Also checks every answer: a node's epoch never drops below what it showed before,
    /// unless it says it is recovering a lost Raft store (then it claims no epoch at all).
    fn start(c: &Cluster) -> LeaderSampler {
        let addrs: Vec<String> = c.nodes.iter().map(|n| n.api_addr()).collect();
        let api = ApiClient::new(Some(SECRET.as_bytes()), Duration::from_millis(300))
            .expect("api client");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Leaders::new();
            let mut highest: BTreeMap<String, u64> = BTreeMap::new();
            let mut regressions = Vec::new();
            while !stopped.load(Ordering::SeqCst) {
                for addr in &addrs {
                    let Ok(v) = api.state(addr).await else {
                        continue;
                    };
                    if v.raft_state == "Leader" {
                        seen.entry(v.raft_term)
                            .or_default()
                            .entry((v.node_id, v.name.clone()))
                            .or_insert_with(Instant::now);
                    }
                    if v.raft_store_recovering {
                        continue;
                    }
                    let top = highest.entry(v.name.clone()).or_default();
                    if v.epoch < *top {
                        regressions.push(format!(
                            "{} showed epoch {} after {} without saying it recovers",
                            v.name, v.epoch, top
                        ));
                    }
                    *top = (*top).max(v.epoch);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (seen, regressions)
        });
        LeaderSampler { stop, task }
    }

    /// The leaders seen; panics if a node showed an older epoch unflagged.
    async fn finish(self) -> Leaders {
        self.stop.store(true, Ordering::SeqCst);
        let (leaders, regressions) = self.task.await.expect("sampler");
        assert_eq!(regressions, Vec::<String>::new());
        leaders
    }
}

async fn leader(c: &Cluster) -> usize {
    let states = c
        .wait_until("a raft leader", SETTLE, |s| {
            s.iter().flatten().any(|v| v.raft_state == "Leader")
        })
        .await;
    states
        .iter()
        .position(|s| s.as_ref().is_some_and(|v| v.raft_state == "Leader"))
        .expect("checked")
}

async fn history(c: &Cluster, i: usize) -> Vec<HistoryEntry> {
    c.api
        .get(&c.nodes[i].api_addr(), "/history")
        .await
        .unwrap_or_default()
}

/// Kill agent `w`, delete its `--raft-data-dir`, start it again.
fn wipe(c: &mut Cluster, w: usize) {
    c.kill_agent(w);
    std::fs::remove_dir_all(c.nodes[w].data_dir()).expect("wipe the raft store");
    c.start_agent(w);
}

/// A cluster with a committed switchover: master changed twice (epoch 2). Returns the
/// index of the master and the committed history.
async fn cluster_with_history(c: &mut Cluster) -> (usize, Vec<HistoryEntry>) {
    c.start_all();
    let m = c.wait_stable_master(SETTLE).await;
    let to = c
        .nodes
        .iter()
        .find(|n| !n.is_witness() && n.name != c.nodes[m].name)
        .map(|n| n.name.clone())
        .expect("a second data node");
    switch_over(c, &to, SETTLE).await;
    let m = c.wait_stable_master(SETTLE).await;
    assert_eq!(c.state(m).await.expect("state").epoch, 2);
    let before = history(c, m).await;
    assert!(
        before.len() >= 2,
        "two master changes committed: {before:?}"
    );
    (m, before)
}

/// openraft (without `single-term-leader`) orders leader ids by (term, node id): a term may
/// see a second leader with a greater node id, never one with a smaller id after a greater
/// one, since every voter of the second would have granted the smaller after the greater,
/// a vote cast twice. Polling lag is allowed for: a smaller id first seen within 300 ms of a
/// greater one may have been elected first.
fn assert_no_vote_cast_twice(leaders: &Leaders) {
    println!("leaders by term: {leaders:?}");
    assert!(!leaders.is_empty(), "the sampler saw leaders");
    for (term, seen) in leaders {
        for ((big, big_name), big_at) in seen {
            for ((small, small_name), small_at) in seen {
                assert!(
                    !(small < big && *small_at > *big_at + Duration::from_millis(300)),
                    "term {term}: {small_name} led after {big_name}, whose leader id is greater: a vote was cast twice"
                );
            }
        }
    }
}

/// Every committed history entry from before is still there, in order, on agent `i`.
async fn assert_history_kept(c: &Cluster, i: usize, before: &[HistoryEntry]) {
    let now = history(c, i).await;
    assert!(
        now.len() >= before.len() && now[..before.len()] == *before,
        "{}: committed history lost; before {before:?}, now {now:?}",
        c.nodes[i].name
    );
}

#[test]
fn a_wiped_replica_rejoins_without_bootstrapping_or_voting_twice() {
    run_serial(async {
        let mut c = Cluster::new();
        let (m, before) = cluster_with_history(&mut c).await;
        let master = c.state(m).await.expect("state").master;
        let sampler = LeaderSampler::start(&c);

        // Wipe the replica's agent; not the raft leader, so the election after it needs it.
        let l = leader(&c).await;
        let w = (0..3)
            .find(|&i| i != m && i != l && !c.nodes[i].is_witness())
            .or_else(|| (0..3).find(|&i| i != m && i != l))
            .expect("a follower");
        let started = Instant::now();
        wipe(&mut c, w);
        common::eventually("the wiped node says it lost its store", SETTLE, || {
            let said = c.nodes[w].log().contains("its store was wiped or lost");
            async move { said }
        })
        .await;
        common::eventually("the wiped node recovers", SETTLE, || {
            let said = c.nodes[w]
                .log()
                .contains("recovered from the lost raft store");
            async move { said }
        })
        .await;
        println!("wiped node recovered in {:?}", started.elapsed());
        c.wait_until("the wiped node has the committed state", SETTLE, |s| {
            s[w].as_ref()
                .is_some_and(|v| v.epoch == 2 && v.master == master)
        })
        .await;
        assert_history_kept(&c, w, &before).await;

        // An election that needs the wiped node's vote: the leader goes, two remain.
        let l = leader(&c).await;
        let term_before = c.state(l).await.expect("state").raft_term;
        c.kill_agent(l);
        let t0 = Instant::now();
        let states = c
            .wait_until("a new leader without the old one", SETTLE, |s| {
                s.iter()
                    .enumerate()
                    .any(|(i, v)| i != l && v.as_ref().is_some_and(|v| v.raft_state == "Leader"))
            })
            .await;
        println!("new leader after {:?}", t0.elapsed());
        let new_term = states
            .iter()
            .flatten()
            .find(|v| v.raft_state == "Leader")
            .map(|v| v.raft_term)
            .expect("checked");
        assert!(new_term > term_before);
        c.start_agent(l);
        let m2 = c.wait_stable_master(SETTLE).await;
        let after = c.state(m2).await.expect("state");
        assert!(after.epoch >= 2, "no committed master change lost");
        for i in 0..3 {
            assert_history_kept(&c, i, &before).await;
        }
        assert_no_vote_cast_twice(&sampler.finish().await);

        let log = c.nodes[w].log();
        assert_eq!(
            log.matches("initialized a new cluster").count(),
            1,
            "only the first start bootstraps"
        );
        assert!(c.state(w).await.is_some_and(|v| v.is_healthy));
    });
}

#[test]
fn a_wiped_node_whose_peer_is_down_waits_for_it_then_rejoins() {
    run_serial(async {
        let mut c = Cluster::new();
        let (m, before) = cluster_with_history(&mut c).await;
        let sampler = LeaderSampler::start(&c);

        // The witness is wiped while the master's agent is down: the one peer it hears
        // (the replica) is not enough to say which term it may have voted in, so it asks
        // for the bound, names the silent peer, and votes only once the log is back.
        let wit = c.index_of("site-c");
        c.kill_agent(m);
        wipe(&mut c, wit);
        common::eventually("the wiped witness names the silent peer", SETTLE, || {
            let log = c.nodes[wit].log();
            let said = log.contains("waiting for") && log.contains("did not answer within");
            async move { said }
        })
        .await;
        // No leader can form: the replica alone is no quorum and the witness has no log.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let states = c.states().await;
        assert!(
            !states
                .iter()
                .flatten()
                .any(|v| v.raft_state == "Leader" && v.name == c.nodes[wit].name),
            "the wiped witness must not lead before it has the log: {states:?}"
        );
        c.start_agent(m);
        common::eventually("the wiped witness recovers", SETTLE, || {
            let said = c.nodes[wit]
                .log()
                .contains("recovered from the lost raft store");
            async move { said }
        })
        .await;
        let m2 = c.wait_stable_master(SETTLE).await;
        let after = c.state(m2).await.expect("state");
        assert!(after.epoch >= 2, "no committed master change lost");
        for i in 0..3 {
            assert_history_kept(&c, i, &before).await;
        }
        assert_no_vote_cast_twice(&sampler.finish().await);
    });
}
