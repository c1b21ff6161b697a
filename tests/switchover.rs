//! Operator features end to end on real processes: planned switchover with zero lost
//! acknowledged writes, maintenance pause, history, member removal.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, DOWN_AFTER, run_serial};
use redis::AsyncCommands;
use redis_orchestrator::client::{ApiClient, ApiError};
use redis_orchestrator::wire::SwitchoverDone;
use redis_orchestrator::wire::{HistoryEntry, PeerView};

const SETTLE: Duration = Duration::from_secs(25);

async fn redis_conn(
    port: u16,
    timeout: Duration,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// One acknowledged write: key number, the node that acknowledged it, when.
struct Ack {
    key: u64,
    node: String,
    at: Instant,
}

/// Write unique keys as fast as possible to whichever node the agents call master
/// (`is_master` in `/state`), rediscovering after any error. Returns every acknowledged write.
async fn hammer(
    api: ApiClient,
    nodes: Vec<(String, String, u16)>,
    stop: Arc<AtomicBool>,
) -> Vec<Ack> {
    let mut acks = Vec::new();
    let mut conn: Option<(String, redis::aio::MultiplexedConnection)> = None;
    let mut key = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some((node, c)) = conn.as_mut() else {
            for (api_addr, name, port) in &nodes {
                if api.state(api_addr).await.is_ok_and(|s| s.is_master) {
                    conn = redis_conn(*port, Duration::from_secs(3))
                        .await
                        .ok()
                        .map(|c| (name.clone(), c));
                    break;
                }
            }
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            continue;
        };
        let result: redis::RedisResult<()> = c.set(format!("w:{key}"), key).await;
        match result {
            Ok(()) => {
                acks.push(Ack {
                    key,
                    node: node.clone(),
                    at: Instant::now(),
                });
                key += 1;
            }
            Err(_) => conn = None,
        }
    }
    acks
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[test]
fn repeated_switchovers_lose_no_acknowledged_write() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let first = c.wait_stable_master(SETTLE).await;
        let data: Vec<(String, String, u16)> = [0, 1]
            .iter()
            .map(|&i| {
                (
                    c.nodes[i].api_addr(),
                    c.nodes[i].name.clone(),
                    c.nodes[i].redis().port(),
                )
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(hammer(c.api.clone(), data.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;

        const SWITCHOVERS: usize = 20;
        // A switchover answers once committed: allow for Redis FAILOVER's own timeout.
        let slow_api = ApiClient::new(
            Some(common::cluster::SECRET.as_bytes()),
            Duration::from_secs(15),
        )
        .expect("client");
        let mut master = first;
        let mut windows = Vec::new();
        for round in 0..SWITCHOVERS {
            let target = 1 - master;
            // Ask a different agent each time: non-leaders forward to the coordinator.
            let via = round % 3;
            let requested = Instant::now();
            let done: SwitchoverDone = slow_api
                .post(
                    &c.nodes[via].api_addr(),
                    "/switchover",
                    &serde_json::json!({ "to": c.nodes[target].name }),
                )
                .await
                .unwrap_or_else(|e| panic!("switchover {round} to {}: {e}", c.nodes[target].name));
            assert_eq!(done.to, c.nodes[target].name);
            assert_eq!(done.epoch, round as u64 + 2, "epoch +1 per switchover");
            windows.push((requested, c.nodes[master].name.clone(), done.to.clone()));
            master = c.wait_stable_master(SETTLE).await;
            assert_eq!(master, target);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let acks = writer.await.expect("writer");

        // Write pause of each switchover: last ack on the old master to first on the new one.
        let mut pauses = Vec::new();
        for (requested, from, to) in &windows {
            let first_new = acks
                .iter()
                .position(|a| a.at >= *requested && &a.node == to)
                .expect("writes resumed");
            let last_old = acks[..first_new]
                .iter()
                .rev()
                .find(|a| &a.node == from)
                .expect("writes before");
            pauses.push(acks[first_new].at.duration_since(last_old.at).as_millis());
        }
        println!(
            "switchover write pause over {SWITCHOVERS} switchovers: median {} ms, max {} ms ({} writes acknowledged)",
            median(pauses.clone()),
            pauses.iter().max().copied().unwrap_or_default(),
            acks.len()
        );

        // Every acknowledged write is on the final master and, once synced, on the replica.
        let final_port = c.nodes[master].redis().port();
        let mut conn = redis_conn(final_port, Duration::from_secs(5))
            .await
            .expect("master");
        let keys: Vec<String> = acks.iter().map(|a| format!("w:{}", a.key)).collect();
        let mut lost = 0;
        for chunk in keys.chunks(500) {
            let values: Vec<Option<u64>> = conn.mget(chunk).await.expect("mget");
            lost += values.iter().filter(|v| v.is_none()).count();
        }
        assert!(acks.len() > 1000, "the writer kept writing: {}", acks.len());
        assert_eq!(
            lost, 0,
            "acknowledged writes lost across {SWITCHOVERS} switchovers"
        );

        let history: Vec<HistoryEntry> = c
            .api
            .get(&c.nodes[2].api_addr(), "/history")
            .await
            .expect("history");
        assert_eq!(
            history.len(),
            SWITCHOVERS + 1,
            "the first election and every switchover"
        );
        assert!(
            history[1..].iter().all(|h| h.reason.contains("switchover")),
            "{history:#?}"
        );
        assert!(
            history.iter().all(|h| h.at.starts_with("20")),
            "wall-clock times: {history:#?}"
        );
    });
}

fn status_of(e: ApiError) -> u16 {
    e.status()
        .unwrap_or_else(|| panic!("expected an HTTP status, got {e}"))
}

#[test]
fn bad_switchovers_are_refused_and_pause_stops_failover() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let any = c.nodes[2].api_addr();
        let post = |path: &'static str, body: serde_json::Value| {
            let api = c.api.clone();
            let any = any.clone();
            async move { api.post::<serde_json::Value>(&any, path, &body).await }
        };
        let refuse = |to: &str| serde_json::json!({ "to": to });
        assert_eq!(
            status_of(
                post("/switchover", refuse("site-c"))
                    .await
                    .expect_err("witness")
            ),
            400
        );
        assert_eq!(
            status_of(
                post("/switchover", refuse(&c.nodes[m].name))
                    .await
                    .expect_err("master")
            ),
            400
        );
        assert_eq!(
            status_of(
                post("/switchover", refuse("nobody"))
                    .await
                    .expect_err("unknown")
            ),
            404
        );

        post("/pause", serde_json::json!({})).await.expect("pause");
        c.wait_until("everyone sees the pause", SETTLE, |s| {
            s.iter().flatten().all(|v| v.paused)
        })
        .await;
        assert_eq!(
            status_of(
                post("/switchover", serde_json::json!({}))
                    .await
                    .expect_err("paused")
            ),
            409
        );

        // The master's Redis dies while paused: no failover.
        c.nodes[m].redis_mut().kill();
        tokio::time::sleep(DOWN_AFTER).await;
        let s = c.state(2).await.expect("witness state");
        assert_eq!(
            (s.epoch, s.master.clone()),
            (1, Some(c.nodes[m].name.clone())),
            "paused: no failover"
        );

        post("/resume", serde_json::json!({}))
            .await
            .expect("resume");
        let r = 1 - m;
        let r_name = c.nodes[r].name.clone();
        c.wait_until("failover once resumed", SETTLE, |s| {
            s[r].as_ref().is_some_and(|v| {
                v.is_master && v.epoch == 2 && v.master.as_deref() == Some(r_name.as_str())
            })
        })
        .await;
    });
}

#[test]
fn a_member_is_removed_only_while_a_live_majority_remains() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let r = 1 - m;
        c.kill_agent(r);
        tokio::time::sleep(DOWN_AFTER).await;
        let remove = |name: String| {
            let api = c.api.clone();
            let addr = c.nodes[m].api_addr();
            async move {
                api.post::<serde_json::Value>(
                    &addr,
                    "/raft/remove",
                    &serde_json::json!({ "name": name }),
                )
                .await
            }
        };
        let refused = remove("site-c".into())
            .await
            .expect_err("would leave one live voter of two");
        assert_eq!(status_of(refused), 409);
        assert_eq!(
            status_of(remove(c.nodes[m].name.clone()).await.expect_err("master")),
            409
        );
        remove(c.nodes[r].name.clone())
            .await
            .expect("the dead replica can go");
        let peers: Vec<PeerView> = c
            .api
            .get(&c.nodes[m].api_addr(), "/raft/peers")
            .await
            .expect("peers");
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert!(peers.iter().all(|p| p.voter));
        // The leader answered once it committed the removal; the master's agent may be a
        // follower that applies it a heartbeat later.
        common::eventually(
            "the removal applied to the master's committed members too",
            Duration::from_secs(5),
            || async { c.state(m).await.is_some_and(|s| s.members.len() == 2) },
        )
        .await;
    });
}
