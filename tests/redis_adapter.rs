//! The redis-rs adapter against real redis-server processes.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{RedisServer, ServerOptions, command, eventually};
use redis_orchestrator::model::{RedisRole, RedisStatus};
use redis_orchestrator::redis::client::RedisClient;
use redis_orchestrator::redis::{RedisConfig, RedisError, RedisNode};

/// Upper bound for a full sync of a tiny dataset on localhost.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than any test, so only `unpause` (or the test's end) lifts a pause.
const LONG_PAUSE: Duration = Duration::from_secs(10);
/// What "at once" means for a command that must not wait for a pause.
const PROMPT: Duration = Duration::from_millis(500);
/// Failure must be reported within the 1 s timeouts plus slack.
const FAILURE_BOUND: Duration = Duration::from_millis(1500);

/// Has spaces, quotes and URL metacharacters, so it only works if nothing
/// formats it into a URL or a config line.
const ODD_PASSWORD: &str = "p@ss w:rd\"/#?%";

fn client(config: RedisConfig) -> RedisClient {
    RedisClient::new(config).expect("valid config")
}

async fn probe(client: &RedisClient) -> RedisStatus {
    client.probe().await.expect("probe")
}

/// Waits until `replica` reports an up link to `master`.
async fn wait_link_up(replica: &RedisClient, master: &RedisServer) {
    eventually("replication link up", SYNC_TIMEOUT, || async {
        replica.probe().await.is_ok_and(|s| {
            s.role == RedisRole::Replica
                && s.master_addr.as_deref() == Some(master.addr().as_str())
                && s.master_link_up
        })
    })
    .await;
}

/// Starts `SET key value` on its own connection in a thread; the receiver gets
/// the outcome.
fn spawn_write(server: &RedisServer, key: &str) -> mpsc::Receiver<redis::RedisResult<()>> {
    let mut conn = server.connection();
    let cmd = command(&["SET", key, "v"]);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // The test may have ended and dropped the receiver; nothing to report then.
        let _ = tx.send(cmd.query::<()>(&mut conn));
    });
    rx
}

#[tokio::test]
async fn probe_reports_a_fresh_master_and_counts_keys() {
    let server = RedisServer::start();
    let client = client(server.config());

    let status = probe(&client).await;
    assert_eq!(status.role, RedisRole::Master);
    assert_eq!(status.run_id.len(), 40, "run_id {:?}", status.run_id);
    assert!(status.run_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(status.master_addr, None);
    assert!(!status.master_link_up);
    assert_eq!(status.keys, 0);

    server.query::<()>(&["SET", "a", "1"]).unwrap();
    server.query::<()>(&["SET", "b", "2"]).unwrap();
    server.query::<()>(&["SELECT", "3"]).unwrap();
    server.query::<()>(&["MSET", "c", "3", "d", "4"]).unwrap();
    let mut conn = server.connection();
    command(&["SELECT", "2"]).query::<()>(&mut conn).unwrap();
    command(&["SET", "e", "5"]).query::<()>(&mut conn).unwrap();

    let after = probe(&client).await;
    assert_eq!(after.keys, 5, "keys summed over db0 and db2");
    assert_eq!(after.run_id, status.run_id);
}

#[tokio::test]
async fn replicate_from_makes_a_replica_and_promote_reverts_it() {
    let master = RedisServer::start();
    let replica = RedisServer::start();
    master.query::<()>(&["SET", "before", "1"]).unwrap();
    let master_client = client(master.config());
    let replica_client = client(replica.config());

    replica_client
        .replicate_from("127.0.0.1", master.port())
        .await
        .unwrap();
    wait_link_up(&replica_client, &master).await;
    let status = probe(&replica_client).await;
    assert_eq!(status.role, RedisRole::Replica);
    assert_eq!(status.master_addr, Some(master.addr()));
    assert_eq!(status.keys, 1);
    assert_eq!(
        replica.query::<String>(&["GET", "before"]).unwrap(),
        "1",
        "initial sync copied the data"
    );

    // With a replica attached, the master's offset moves with every write,
    // and the replica catches up to it.
    let offset_before = probe(&master_client).await.repl_offset;
    master.query::<()>(&["SET", "after", "2"]).unwrap();
    let offset_after = probe(&master_client).await.repl_offset;
    assert!(
        offset_after > offset_before,
        "{offset_after} > {offset_before}"
    );
    eventually("replica catches up", SYNC_TIMEOUT, || async {
        replica_client
            .probe()
            .await
            .is_ok_and(|s| s.repl_offset >= offset_after && s.keys == 2)
    })
    .await;
    assert_eq!(replica.query::<String>(&["GET", "after"]).unwrap(), "2");

    // Repeating is harmless.
    replica_client
        .replicate_from("127.0.0.1", master.port())
        .await
        .unwrap();

    replica_client.promote().await.unwrap();
    let promoted = probe(&replica_client).await;
    assert_eq!(promoted.role, RedisRole::Master);
    assert_eq!(promoted.master_addr, None);
    assert!(!promoted.master_link_up);
    assert_eq!(promoted.keys, 2, "promotion keeps the data");
    replica.query::<()>(&["SET", "writable", "yes"]).unwrap();
    replica_client.promote().await.unwrap();
}

#[tokio::test]
async fn replicate_from_sets_masterauth_for_a_password_protected_master() {
    let options = ServerOptions {
        requirepass: Some(ODD_PASSWORD.to_string()),
        masterauth: None,
        ..Default::default()
    };
    let master = RedisServer::start_with(options.clone());
    let replica = RedisServer::start_with(options);
    master.query::<()>(&["SET", "k", "v"]).unwrap();
    let replica_client = client(replica.config());

    replica_client
        .replicate_from("127.0.0.1", master.port())
        .await
        .unwrap();
    wait_link_up(&replica_client, &master).await;
    assert_eq!(replica.query::<String>(&["GET", "k"]).unwrap(), "v");
}

#[tokio::test]
async fn pause_blocks_writes_but_not_reads_until_unpause() {
    let server = RedisServer::start();
    server.query::<()>(&["SET", "k", "old"]).unwrap();
    let client = client(server.config());

    client.pause_writes(LONG_PAUSE).await.unwrap();
    let write = spawn_write(&server, "k");
    assert!(
        write.recv_timeout(Duration::from_millis(300)).is_err(),
        "write went through a paused server"
    );
    assert_eq!(server.query::<String>(&["GET", "k"]).unwrap(), "old");
    assert_eq!(probe(&client).await.keys, 1);

    client.unpause().await.unwrap();
    let outcome = write.recv_timeout(PROMPT).expect("write resumes");
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(server.query::<String>(&["GET", "k"]).unwrap(), "v");
    client.unpause().await.unwrap();
}

/// The write probe of a master: its run_id even while it holds writes, and whether it
/// takes them; the held probe never delays the next one.
#[tokio::test]
async fn the_master_probe_reads_the_run_id_of_a_paused_master_and_sees_its_writes_held() {
    let master = RedisServer::start();
    let replica = RedisServer::start();
    let master_client = client(master.config());
    let replica_client = client(replica.config());
    let run_id = probe(&master_client).await.run_id;
    let probe_master = || async {
        let started = Instant::now();
        let found = replica_client
            .probe_master("127.0.0.1", master.port(), Duration::from_millis(300))
            .await
            .expect("the master answers");
        (found, started.elapsed())
    };
    let (found, _) = probe_master().await;
    assert_eq!(found.run_id.as_deref(), Some(run_id.as_str()));
    assert!(
        found.accepts_writes,
        "an unpaused master takes the probe's write"
    );

    master_client.pause_writes(LONG_PAUSE).await.unwrap();
    for _ in 0..2 {
        let (found, took) = probe_master().await;
        assert_eq!(
            found.run_id.as_deref(),
            Some(run_id.as_str()),
            "INFO is answered while writes are held"
        );
        assert!(
            !found.accepts_writes,
            "a paused master holds the probe's write"
        );
        assert!(took < PROMPT, "the probe ends at its timeout: {took:?}");
    }

    master_client.unpause().await.unwrap();
    let (found, _) = probe_master().await;
    assert!(found.accepts_writes, "writes taken again after the pause");
}

/// The fencing order from the design: demote while paused, then unpause, and
/// the writes held by the pause are refused instead of acknowledged.
#[tokio::test]
async fn demoting_a_paused_master_fails_its_blocked_writes_with_readonly() {
    let old_master = RedisServer::start();
    let new_master = RedisServer::start();
    let client = client(old_master.config());

    client.pause_writes(LONG_PAUSE).await.unwrap();
    let write = spawn_write(&old_master, "lost");
    thread::sleep(Duration::from_millis(100));

    let started = Instant::now();
    client
        .replicate_from("127.0.0.1", new_master.port())
        .await
        .unwrap();
    assert!(started.elapsed() < PROMPT, "REPLICAOF waited for the pause");
    assert_eq!(probe(&client).await.role, RedisRole::Replica);
    assert!(
        write.try_recv().is_err(),
        "the blocked write stays blocked until unpause"
    );

    client.unpause().await.unwrap();
    let outcome = write.recv_timeout(PROMPT).expect("write resumes");
    let err = outcome.expect_err("write on a demoted master must fail");
    assert_eq!(err.code(), Some("READONLY"), "{err}");
    assert_eq!(
        new_master
            .query::<Option<String>>(&["GET", "lost"])
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn demote_closes_normal_and_pubsub_clients_but_keeps_its_own_connection() {
    let old_master = RedisServer::start_with(ServerOptions {
        requirepass: Some(ODD_PASSWORD.to_string()),
        masterauth: None,
        ..Default::default()
    });
    let new_master = RedisServer::start_with(ServerOptions {
        requirepass: Some(ODD_PASSWORD.to_string()),
        masterauth: None,
        ..Default::default()
    });
    let client = client(old_master.config());
    let before = probe(&client).await;

    client.pause_writes(LONG_PAUSE).await.unwrap();
    let write = spawn_write(&old_master, "lost");
    let mut idle = old_master.connection();
    let mut subscriber = old_master.connection();
    command(&["SUBSCRIBE", "news"])
        .query::<redis::Value>(&mut subscriber)
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    let connections = |info: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("total_connections_received")
    };
    let mut admin = old_master.connection();
    let received = connections(
        &command(&["INFO", "stats"])
            .query::<String>(&mut admin)
            .unwrap(),
    );

    let started = Instant::now();
    client.demote("127.0.0.1", new_master.port()).await.unwrap();
    assert!(
        started.elapsed() < PROMPT,
        "the demotion waited for the pause"
    );

    // Still paused: the held write is dropped with its connection, never acknowledged.
    let outcome = write.recv_timeout(PROMPT).expect("the held write ends");
    let err = outcome.expect_err("a write held on a demoted master must fail");
    assert!(err.is_connection_dropped() || err.is_io_error(), "{err}");
    for (what, conn) in [("idle client", &mut idle), ("subscriber", &mut subscriber)] {
        let result = command(&["PING"]).query::<String>(conn);
        assert!(result.is_err(), "{what} survived the demotion: {result:?}");
    }

    let after = probe(&client).await;
    assert_eq!(after.role, RedisRole::Replica);
    assert_eq!(after.run_id, before.run_id);
    wait_link_up(&client, &new_master).await;
    client.unpause().await.unwrap();
    // The agent's connection was skipped by the kills: no new connection was opened
    // (the killed ones did not reconnect, and `admin` itself was killed).
    let mut check = old_master.connection();
    assert_eq!(
        connections(
            &command(&["INFO", "stats"])
                .query::<String>(&mut check)
                .unwrap()
        ),
        received + 1,
        "only the check connection is new: the adapter kept its own"
    );
    assert_eq!(
        new_master
            .query::<Option<String>>(&["GET", "lost"])
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn killed_server_is_refused_and_a_restart_reconnects() {
    let mut server = RedisServer::start();
    let client = client(server.config());
    let first = probe(&client).await;

    server.kill();
    let started = Instant::now();
    let err = client.probe().await.expect_err("probe of a killed server");
    assert!(matches!(err, RedisError::Refused(_)), "{err:?}");
    assert!(started.elapsed() < FAILURE_BOUND);
    let again = client.probe().await.expect_err("still down");
    assert!(matches!(again, RedisError::Refused(_)), "{again:?}");

    server.restart();
    let second = probe(&client).await;
    assert_ne!(second.run_id, first.run_id, "a restart has a new run_id");
    assert_eq!(second.keys, 0);
}

/// The exit of the process closes the connection the agent holds, and the adapter says so
/// at once: the member loop's event, sooner than any probe.
#[tokio::test]
async fn a_killed_server_closes_the_held_connection_at_once() {
    let mut server = RedisServer::start();
    let client = client(server.config());
    probe(&client).await;
    let closed = client.closed();
    tokio::pin!(closed);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut closed)
            .await
            .is_err(),
        "no close event while the server runs"
    );
    server.kill();
    let killed_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(1), closed)
        .await
        .expect("a close event after SIGKILL");
    let after = killed_at.elapsed();
    assert!(
        after < Duration::from_millis(100),
        "close event {after:?} after SIGKILL"
    );
    let err = client.probe().await.expect_err("probe of a killed server");
    assert!(matches!(err, RedisError::Refused(_)), "{err:?}");
}

#[tokio::test]
async fn restart_while_connected_reconnects_on_the_next_call() {
    let mut server = RedisServer::start();
    let client = client(server.config());
    let first = probe(&client).await;

    server.restart();
    let second = probe(&client).await;
    assert_ne!(second.run_id, first.run_id);
}

#[tokio::test]
async fn stopped_server_is_unreachable_within_the_timeouts() {
    let server = RedisServer::start();
    let client = client(server.config());
    probe(&client).await;

    server.stop();
    // First over the cached connection (response timeout), then over a new
    // one (connect timeout: the kernel accepts, nobody answers).
    for attempt in ["cached connection", "new connection"] {
        let started = Instant::now();
        let err = client.probe().await.expect_err("probe of a stopped server");
        let took = started.elapsed();
        assert!(
            matches!(err, RedisError::Unreachable(_)),
            "{attempt}: {err:?}"
        );
        assert!(took < FAILURE_BOUND, "{attempt}: took {took:?}");
    }

    server.cont();
    let status = probe(&client).await;
    assert_eq!(status.role, RedisRole::Master);
}

#[tokio::test]
async fn wrong_or_missing_password_is_an_auth_error() {
    let server = RedisServer::start_with(ServerOptions {
        requirepass: Some("right".to_string()),
        masterauth: None,
        ..Default::default()
    });
    for password in [Some("wrong".to_string()), None] {
        let client = client(RedisConfig {
            password: password.clone(),
            ..server.config()
        });
        let err = client.probe().await.expect_err("bad credentials");
        assert!(
            matches!(err, RedisError::Auth(_)),
            "password {password:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn error_reply_is_a_command_error_and_keeps_the_connection() {
    let server = RedisServer::start();
    let client = client(server.config());

    let err = client
        .pause_writes(Duration::MAX)
        .await
        .expect_err("Redis rejects the timeout");
    assert!(matches!(err, RedisError::Command(_)), "{err:?}");
    assert_eq!(probe(&client).await.role, RedisRole::Master);
}

#[tokio::test]
async fn tune_replication_sets_the_ping_period_and_timeout() {
    let server = RedisServer::start();
    let c = client(server.config());
    c.tune_replication(Duration::from_secs(1), Duration::from_secs(3))
        .await
        .expect("tune");
    let timeout: Vec<String> = server
        .query(&["CONFIG", "GET", "repl-timeout"])
        .expect("get");
    let ping: Vec<String> = server
        .query(&["CONFIG", "GET", "repl-ping-replica-period"])
        .expect("get");
    assert_eq!(timeout, vec!["repl-timeout".to_string(), "3".to_string()]);
    assert_eq!(
        ping,
        vec!["repl-ping-replica-period".to_string(), "1".to_string()]
    );
}
