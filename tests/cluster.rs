//! End-to-end behaviour of the agent on real processes: redis-server and the
//! redis-orchestrator binary, over real TCP on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, DOWN_AFTER, LEASE, run_serial};
use redis::AsyncCommands;
use redis_orchestrator::wire::PeerView;

const SETTLE: Duration = Duration::from_secs(25);

async fn redis_conn(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_response_timeout(Some(Duration::from_millis(300)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn info_field(port: u16, field: &str) -> Option<String> {
    let mut c = redis_conn(port).await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .ok()?;
    info.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

/// Write `count` keys with prefix through the given port; panic on any failure.
async fn write_keys(port: u16, prefix: &str, count: usize) {
    let mut c = redis_conn(port).await.expect("connect to master");
    for i in 0..count {
        let _: () = c
            .set(format!("{prefix}:{i}"), i)
            .await
            .expect("write to master");
    }
}

/// Sum of one metric line's value over every agent's `/metrics` (public endpoint).
async fn metric_sum(c: &Cluster, line_prefix: &str) -> f64 {
    let mut sum = 0.0;
    for n in &c.nodes {
        let Ok(resp) = reqwest::get(format!("http://{}/metrics", n.api_addr())).await else {
            continue;
        };
        let text = resp.text().await.unwrap_or_default();
        sum += text
            .lines()
            .filter_map(|l| l.strip_prefix(line_prefix))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

/// Wait until `metric_sum` reaches `want` (metrics follow the next probe, not the commit).
async fn wait_for_metric(c: &Cluster, line_prefix: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = metric_sum(c, line_prefix).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{line_prefix}: {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count_keys(port: u16, prefix: &str) -> usize {
    let Ok(mut c) = redis_conn(port).await else {
        return 0;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    keys.len()
}

#[test]
fn forms_one_cluster_in_every_start_order() {
    run_serial(async {
        for (label, order, gap) in [
            ("A, B, C", [0, 1, 2], Duration::from_millis(1500)),
            ("C, B, A", [2, 1, 0], Duration::from_millis(1500)),
            ("all at once", [0, 1, 2], Duration::ZERO),
        ] {
            let mut c = Cluster::new();
            for i in order {
                c.start_agent(i);
                tokio::time::sleep(gap).await;
            }
            let m = c.wait_stable_master(SETTLE).await;
            assert!(
                !c.nodes[m].is_witness(),
                "{label}: the witness must never be master"
            );
            let replica = 1 - m;
            let master_port = c.nodes[m].redis().port().to_string();
            assert_eq!(
                info_field(c.nodes[replica].redis().port(), "master_port").await,
                Some(master_port),
                "{label}"
            );
            let states = c.states().await;
            let epochs: Vec<u64> = states.iter().flatten().map(|s| s.epoch).collect();
            assert_eq!(
                epochs,
                vec![1, 1, 1],
                "{label}: exactly one election, seen by all"
            );
            assert_eq!(states[2].as_ref().map(|s| s.role.as_str()), Some("witness"));
            let peers: Vec<PeerView> = c
                .api
                .get(&c.nodes[0].api_addr(), "/raft/peers")
                .await
                .expect("peers");
            assert_eq!(peers.len(), 3, "{label}");
            assert!(
                peers.iter().all(|p| p.voter),
                "{label}: every member, witness included, votes: {peers:?}"
            );
            let leaders = states
                .iter()
                .flatten()
                .filter(|s| s.raft_state == "Leader")
                .count();
            assert_eq!(leaders, 1, "{label}: exactly one raft leader");
        }
    });
}

#[test]
fn sigkill_of_master_redis_promotes_the_replica_and_keeps_replicated_writes() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let r = 1 - m;
        let (m_port, r_port) = (c.nodes[m].redis().port(), c.nodes[r].redis().port());
        write_keys(m_port, "before", 500).await;
        let offset = |port| async move {
            info_field(port, "master_repl_offset")
                .await
                .and_then(|o| o.parse::<u64>().ok())
        };
        let master_offset = offset(m_port).await.expect("offset");
        let deadline = Instant::now() + Duration::from_secs(5);
        // At least: the master's replication pings keep moving both offsets on.
        while offset(r_port).await.is_none_or(|o| o < master_offset) {
            assert!(Instant::now() < deadline, "replica never caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let killed_at = Instant::now();
        c.nodes[m].redis_mut().kill();
        let (new_master, r_name) = (c.nodes[r].name.clone(), c.nodes[r].name.clone());
        let mut conn = None;
        let took = loop {
            assert!(
                killed_at.elapsed() < Duration::from_secs(15),
                "no failover after SIGKILL of the master's redis"
            );
            if conn.is_none() {
                conn = redis_conn(r_port).await.ok();
            }
            if let Some(conn) = conn.as_mut() {
                let ok: redis::RedisResult<()> = conn.set("after", 1).await;
                if ok.is_ok() {
                    break killed_at.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "failover: {r_name} acknowledged writes {} ms after SIGKILL of the master's redis",
            took.as_millis()
        );
        let states = c
            .wait_until("new master committed everywhere", SETTLE, |s| {
                s.iter().flatten().count() == 3
                    && s.iter()
                        .flatten()
                        .all(|v| v.master.as_deref() == Some(&new_master))
            })
            .await;
        let old = states[m].as_ref().expect("old master agent up");
        assert_eq!(
            old.role, "down",
            "the old master's agent reports its redis down"
        );
        assert!(old.redis_error.is_some());
        assert!(
            states.iter().flatten().all(|v| v.epoch == 2),
            "epoch +1 exactly: {states:#?}"
        );
        assert_eq!(
            count_keys(r_port, "before").await,
            500,
            "writes that reached the replica survive"
        );
        wait_for_metric(
            &c,
            "redis_orchestrator_failovers_total{kind=\"failover\"} ",
            1.0,
        )
        .await;
        wait_for_metric(&c, "redis_orchestrator_is_master ", 1.0).await;
        let took = metric_sum(&c, "redis_orchestrator_last_failover_duration_seconds ").await;
        assert!(
            took > 0.0 && took < 5.0,
            "failover duration recorded: {took}"
        );

        c.nodes[m].redis_mut().restart();
        let new_m = c.wait_stable_master(SETTLE).await;
        assert_eq!(new_m, r, "the old node rejoins as a replica, not as master");
        let deadline = Instant::now() + Duration::from_secs(10);
        while count_keys(m_port, "before").await != 500 {
            assert!(
                Instant::now() < deadline,
                "restarted node never resynced from the new master"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn master_agent_death_alone_does_not_fail_over_but_its_redis_dying_too_does() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let r = 1 - m;
        let master_name = c.nodes[m].name.clone();
        let agent_killed = Instant::now();
        c.kill_agent(m);

        // Well past --down-after: the replica still sees a live link, so nothing changes.
        tokio::time::sleep(DOWN_AFTER * 2).await;
        for i in [r, 2] {
            let s = c.state(i).await.expect("agent answers");
            assert_eq!(
                s.master.as_deref(),
                Some(master_name.as_str()),
                "no failover while the replica sees the master"
            );
            assert_eq!(s.epoch, 1);
        }
        assert_eq!(
            info_field(c.nodes[r].redis().port(), "master_link_status")
                .await
                .as_deref(),
            Some("up")
        );

        c.nodes[m].redis_mut().kill();
        let r_name = c.nodes[r].name.clone();
        c.wait_until("failover after the master's redis died too", SETTLE, |s| {
            s[r].as_ref().is_some_and(|v| {
                v.is_master && v.master.as_deref() == Some(r_name.as_str()) && v.epoch == 2
            })
        })
        .await;
        assert!(
            agent_killed.elapsed() >= DOWN_AFTER,
            "never sooner than --down-after after the last contact"
        );
    });
}

#[test]
fn witness_loss_changes_nothing_and_an_isolated_master_fences_itself() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let r = 1 - m;
        let m_port = c.nodes[m].redis().port();
        c.kill_agent(2);

        let mut conn = redis_conn(m_port).await.expect("connect to master");
        let until = Instant::now() + DOWN_AFTER * 2;
        let mut writes = 0;
        while Instant::now() < until {
            let _: () = conn
                .incr("witness-down", 1)
                .await
                .expect("writes continue with the witness down");
            writes += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(writes > 50);
        let s = c.state(r).await.expect("replica agent");
        assert_eq!(
            (s.epoch, s.master.clone()),
            (1, Some(c.nodes[m].name.clone())),
            "witness loss changes nothing"
        );

        // Now the master's agent is alone: no quorum.
        let isolated_at = Instant::now();
        c.kill_agent(r);
        let fenced_after = loop {
            let elapsed = isolated_at.elapsed();
            assert!(
                elapsed < LEASE + Duration::from_millis(600),
                "isolated master kept taking writes past --lease"
            );
            let ok: redis::RedisResult<()> = conn.incr("isolated", 1).await;
            if ok.is_err() {
                break elapsed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "isolated master stopped acknowledging writes {} ms after losing quorum",
            fenced_after.as_millis()
        );
        let s = c.state(m).await.expect("isolated agent answers");
        assert!(s.fenced, "isolated master reports itself fenced");
        assert!(!s.is_master);
        assert_eq!(s.epoch, 1, "no new master without quorum");
        assert_eq!(
            info_field(c.nodes[r].redis().port(), "role")
                .await
                .as_deref(),
            Some("slave")
        );

        c.start_agent(r);
        c.start_agent(2);
        let back = c.wait_stable_master(SETTLE).await;
        assert_eq!(back, m, "the same master serves again after healing");
        let mut conn = redis_conn(m_port).await.expect("reconnect");
        let _: () = conn
            .incr("healed", 1)
            .await
            .expect("writes resume after healing");
    });
}

#[test]
fn restarting_every_agent_recovers_epoch_and_master_from_disk() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let before = c.state(m).await.expect("state");
        for i in 0..3 {
            c.kill_agent(i);
        }
        for i in [2, 1, 0] {
            c.start_agent(i);
        }
        let m2 = c.wait_stable_master(SETTLE).await;
        let after = c.state(m2).await.expect("state");
        assert_eq!(m2, m);
        assert_eq!(
            (after.epoch, after.master.clone()),
            (before.epoch, before.master.clone())
        );
        assert!(c.nodes[m].log().contains("raft state found on disk"));
    });
}

#[test]
fn unauthenticated_requests_get_401_and_change_nothing() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let before = c.state(m).await.expect("state");
        let http = reqwest::Client::new();
        let add = serde_json::json!({"id": "intruder", "address": "127.0.0.1:1"});
        let body = add.to_string();
        let now = redis_orchestrator::auth::unix_now();
        let secret = common::cluster::SECRET.as_bytes();
        for (target, path) in [
            (c.nodes[m].api_addr(), "/raft/add-voter"),
            (c.nodes[m].raft_addr(), "/report"),
        ] {
            let url = format!("http://{target}{path}");
            let good =
                redis_orchestrator::auth::sign(secret, "POST", &target, path, body.as_bytes(), now);
            let cases = vec![
                ("unsigned", None, body.clone()),
                (
                    "wrong secret",
                    Some(redis_orchestrator::auth::sign(
                        b"wrong",
                        "POST",
                        &target,
                        path,
                        body.as_bytes(),
                        now,
                    )),
                    body.clone(),
                ),
                (
                    "tampered",
                    Some(good.clone()),
                    body.replace("127.0.0.1:1", "127.0.0.1:2"),
                ),
                (
                    "stale",
                    Some(redis_orchestrator::auth::sign(
                        secret,
                        "POST",
                        &target,
                        path,
                        body.as_bytes(),
                        now - 60,
                    )),
                    body.clone(),
                ),
            ];
            for (label, headers, sent) in cases {
                let mut req = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(sent);
                if let Some(h) = &headers {
                    for (k, v) in h.pairs() {
                        req = req.header(k, v);
                    }
                }
                let status = req.send().await.expect("send").status();
                assert_eq!(status, 401, "{label} {path}");
            }
        }
        // Replay: the same signed GET twice.
        let h = redis_orchestrator::auth::sign(
            secret,
            "GET",
            &c.nodes[m].api_addr(),
            "/state",
            b"",
            now,
        );
        let url = format!("http://{}/state", c.nodes[m].api_addr());
        let send = |h: redis_orchestrator::auth::SignedHeaders| {
            let mut req = http.get(&url);
            for (k, v) in h.pairs() {
                req = req.header(k, v.to_string());
            }
            req.send()
        };
        assert_eq!(send(h.clone()).await.expect("first").status(), 200);
        assert_eq!(
            send(h).await.expect("replay").status(),
            401,
            "replayed nonce"
        );
        // Malformed but signed raft message: a 400, and the agent keeps running.
        let junk = b"{not json";
        let h = redis_orchestrator::auth::sign(
            secret,
            "POST",
            &c.nodes[m].raft_addr(),
            "/raft/append",
            junk,
            now,
        );
        let mut req = http
            .post(format!("http://{}/raft/append", c.nodes[m].raft_addr()))
            .body(junk.to_vec());
        for (k, v) in h.pairs() {
            req = req.header(k, v);
        }
        assert_eq!(req.send().await.expect("junk").status(), 400);

        let peers: Vec<PeerView> = c
            .api
            .get(&c.nodes[m].api_addr(), "/raft/peers")
            .await
            .expect("peers");
        assert_eq!(peers.len(), 3, "no member was added");
        let after = c.state(m).await.expect("state");
        assert_eq!((after.epoch, after.master), (before.epoch, before.master));
        assert_eq!(
            http.get(format!("http://{}/health", c.nodes[m].api_addr()))
                .send()
                .await
                .expect("health")
                .status(),
            200
        );
        let view: redis_orchestrator::wire::ClusterView = c
            .api
            .get(&c.nodes[m].api_addr(), "/cluster")
            .await
            .expect("cluster view");
        assert!(
            !view.kubernetes && view.pods.is_empty(),
            "outside Kubernetes there are no pods to list"
        );
        for reason in ["missing", "bad_signature", "stale", "replayed"] {
            let n = metric_sum(
                &c,
                &format!("redis_orchestrator_auth_failures_total{{reason=\"{reason}\"}} "),
            )
            .await;
            assert!(n >= 1.0, "auth failures counted by reason {reason}: {n}");
        }
    });
}

#[test]
fn an_agent_with_the_wrong_secret_stays_out_and_says_why() {
    run_serial(async {
        let mut c = Cluster::new();
        c.nodes[2].secret = "not-the-shared-secret".into();
        c.start_all();
        let m = c
            .wait_until(
                "data nodes elect a master without the witness",
                SETTLE,
                |s| {
                    [0, 1]
                        .iter()
                        .all(|&i| s[i].as_ref().is_some_and(|v| v.master.is_some()))
                },
            )
            .await;
        assert!(
            m[2].is_none(),
            "our secret is rejected by the misconfigured witness too"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = c.nodes[2].log();
        assert!(
            log.contains("shared secret likely differs"),
            "witness log says why: {log}"
        );
        let outsider = redis_orchestrator::client::ApiClient::new(
            Some(b"not-the-shared-secret"),
            Duration::from_secs(1),
        )
        .expect("client");
        let s = outsider
            .state(&c.nodes[2].api_addr())
            .await
            .expect("witness answers its own secret");
        assert_eq!(s.epoch, 0, "the witness never learned the cluster state");
        assert!(s.members.is_empty());
    });
}

#[test]
fn bad_flags_exit_2_with_a_reason() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--raft-peers=127.0.0.1:1", "--down-after=5"],
            "missing unit",
        ),
        (
            &["--raft-peers=127.0.0.1:1", "--lease=5s", "--down-after=5s"],
            "must be shorter than --down-after",
        ),
        (
            &["--raft-peers=127.0.0.1:1", "--standalone"],
            "requires --election-mode=raft",
        ),
        (&["--no-such-flag"], "unexpected argument"),
        (
            &["--raft-peers=10.255.255.1:7000,10.255.255.2:7000"],
            "cannot tell which --raft-peers entry",
        ),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new(common::cluster::binary())
            .args(*args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn sentinel_endpoint_names_the_committed_master_and_follows_a_failover() {
    run_serial(async {
        let mut c = Cluster::new();
        let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
        for (node, port) in c.nodes.iter_mut().zip(&ports) {
            node.extra_args
                .push(format!("--sentinel-bind=127.0.0.1:{port}"));
        }
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let ask = |port: u16| async move {
            let mut conn = redis_conn(port).await.ok()?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg("mymaster")
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
                .ok()
                .flatten()
        };
        let master_port = c.nodes[m].redis().port();
        for &port in &ports {
            assert_eq!(
                ask(port).await,
                Some(("127.0.0.1".to_string(), master_port)),
                "every site's endpoint"
            );
        }
        c.nodes[m].redis_mut().kill();
        let new_port = c.nodes[1 - m].redis().port();
        let deadline = Instant::now() + SETTLE;
        for &port in &ports {
            while ask(port).await != Some(("127.0.0.1".to_string(), new_port)) {
                assert!(
                    Instant::now() < deadline,
                    "endpoint on {port} never named the new master"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
}

#[test]
fn the_witness_takes_the_raft_leadership_from_a_data_agent_while_the_master_keeps_writing() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_agent(0);
        c.start_agent(1);
        let m = c.wait_stable_master(SETTLE).await;
        let states = c.states().await;
        let data_leader = states
            .iter()
            .flatten()
            .find(|v| v.raft_state == "Leader")
            .map(|v| v.name.clone())
            .expect("the two data agents elect a leader");
        let mut conn = redis_conn(c.nodes[m].redis().port())
            .await
            .expect("connect to master");

        let witness = 2;
        c.start_agent(witness);
        let started = Instant::now();
        let mut write = async |key: &str| {
            let _: () = conn
                .incr(key, 1)
                .await
                .expect("the master takes every write while the leadership moves");
        };
        loop {
            write("placement").await;
            let leads = c
                .state(witness)
                .await
                .is_some_and(|v| v.raft_state == "Leader");
            if leads {
                break;
            }
            assert!(
                started.elapsed() < SETTLE,
                "the witness never took the leadership from {data_leader}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "the witness leads {} ms after it started",
            started.elapsed().as_millis()
        );
        let term = c.state(witness).await.expect("witness").raft_term;
        // Longer than a lease: the master's contact carried over to the new coordinator.
        let until = Instant::now() + LEASE + Duration::from_secs(1);
        while Instant::now() < until {
            write("after").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let states = c.states().await;
        for v in states.iter().flatten() {
            assert_eq!(
                (v.epoch, v.master.as_deref()),
                (1, Some(c.nodes[m].name.as_str())),
                "{}: moving the leadership changes no master",
                v.name
            );
            assert_eq!(v.raft_term, term, "{}: nobody took it back", v.name);
        }
        let master = states[m].as_ref().expect("master agent");
        assert!(master.is_master && !master.fenced);
        assert!(
            c.nodes[witness].log().contains(&format!(
                "taking the Raft leadership over from data agent {data_leader}"
            )),
            "the witness says whose leadership it took and why"
        );
        assert_eq!(
            metric_sum(&c, "redis_orchestrator_raft_witness_takeovers_total ").await,
            1.0,
            "one campaign"
        );
    });
}
