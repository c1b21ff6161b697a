//! Every demotion closes the demoted Redis's client connections, on real processes: a
//! client connected straight to the old master's address is disconnected within 1 s of
//! the demotion (a planned switchover, and a SIGKILLed master's Redis coming back after the
//! failover), never sees a READONLY reply, and no write it had acknowledged is lost.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, SECRET, run_serial};
use common::command;
use redis_orchestrator::client::ApiClient;
use redis_orchestrator::wire::SwitchoverDone;

const SETTLE: Duration = Duration::from_secs(25);
/// The bound the design promises between a demotion and its clients' disconnection.
const DISCONNECT_BOUND: Duration = Duration::from_secs(1);
/// Longer than any pause a demotion should hold a write for.
const READ_TIMEOUT: Duration = Duration::from_secs(8);

/// An idle TCP client that only waits for the server to close it.
fn idle_client(port: u16) -> JoinHandle<Result<Instant, String>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect idle client");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => Ok(Instant::now()),
            Ok(n) => Err(format!(
                "unexpected data: {:?}",
                String::from_utf8_lossy(&buf[..n])
            )),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(Instant::now()),
            Err(e) => Err(format!("not disconnected: {e}")),
        }
    })
}

/// What a writer on one fixed connection saw.
struct WriterLog {
    /// (key, when acknowledged).
    acks: Vec<(u64, Instant)>,
    /// When the connection failed, and how.
    ended: Option<(Instant, redis::RedisError)>,
}

/// Writes `prefix:N` every 5 ms on one connection to `port` until it fails or `stop`.
fn writer(port: u16, prefix: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<WriterLog> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("connect writer");
    conn.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    thread::spawn(move || {
        let mut log = WriterLog {
            acks: Vec::new(),
            ended: None,
        };
        let mut key = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let result = command(&["SET", &format!("{prefix}:{key}"), "1"]).query::<()>(&mut conn);
            match result {
                Ok(()) => log.acks.push((key, Instant::now())),
                // A Redis that restarted refuses writes until its agent has placed it
                // (it starts with min-replicas-to-write 1): refused, never acknowledged.
                Err(e) if e.code() == Some("NOREPLICAS") => {}
                Err(e) => {
                    log.ended = Some((Instant::now(), e));
                    break;
                }
            }
            key += 1;
            thread::sleep(Duration::from_millis(5));
        }
        log
    })
}

/// Polls `ROLE` on fresh connections every 10 ms: when the Redis was first seen a replica.
fn demotion_watch(port: u16, stop: Arc<AtomicBool>) -> JoinHandle<Option<Instant>> {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let role = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
                .and_then(|mut conn| command(&["ROLE"]).query::<Vec<redis::Value>>(&mut conn));
            if let Ok(role) = role
                && role.first() == Some(&redis::Value::BulkString(b"slave".to_vec()))
            {
                return Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    })
}

/// The clients and the watch around one demotion of the Redis on `port`.
struct Watch {
    idle: JoinHandle<Result<Instant, String>>,
    writer: JoinHandle<WriterLog>,
    demoted: JoinHandle<Option<Instant>>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    fn start(port: u16, prefix: &'static str) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        Watch {
            idle: idle_client(port),
            writer: writer(port, prefix, stop.clone()),
            demoted: demotion_watch(port, stop.clone()),
            stop,
        }
    }

    /// Waits for the demotion and both disconnections; checks the bound and that the
    /// writer never got READONLY (the close came with the demotion, not after it).
    /// Returns the writer's acknowledged keys.
    async fn finish(self, what: &str) -> Vec<u64> {
        let deadline = Instant::now() + SETTLE;
        while !(self.demoted.is_finished() && self.idle.is_finished()) {
            assert!(Instant::now() < deadline, "{what}: no demotion seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let demoted = self
            .demoted
            .join()
            .expect("watch")
            .unwrap_or_else(|| panic!("{what}: never saw the old master as a replica"));
        let idle = self
            .idle
            .join()
            .expect("idle client")
            .unwrap_or_else(|e| panic!("{what}: idle client: {e}"));
        let log = self.writer.join().expect("writer");
        let (ended, error) = log
            .ended
            .unwrap_or_else(|| panic!("{what}: the writer's connection was never closed"));
        assert!(
            error.code().is_none(),
            "{what}: the writer got an error reply ({error}) instead of a closed connection"
        );
        // The watch sees the demotion up to one poll late, so a close is at most that early.
        for (client, closed) in [("idle", idle), ("writer", ended)] {
            let late = closed.saturating_duration_since(demoted);
            let early = demoted.saturating_duration_since(closed);
            println!(
                "{what}: {client} client closed {} ms after the demotion was seen ({} ms before)",
                late.as_millis(),
                early.as_millis()
            );
            assert!(late <= DISCONNECT_BOUND, "{what}: {client} closed too late");
            assert!(
                early <= Duration::from_millis(500),
                "{what}: {client} closed long before any demotion"
            );
        }
        let after: Vec<_> = log.acks.iter().filter(|(_, at)| *at > demoted).collect();
        assert!(
            after.is_empty(),
            "{what}: writes acknowledged by the old master after its demotion: {after:?}"
        );
        log.acks.iter().map(|(k, _)| *k).collect()
    }
}

fn keys_present(port: u16, prefix: &str, keys: &[u64]) -> usize {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("connect");
    keys.chunks(500)
        .map(|chunk| {
            let mut cmd = redis::cmd("EXISTS");
            for k in chunk {
                cmd.arg(format!("{prefix}:{k}"));
            }
            cmd.query::<usize>(&mut conn).expect("EXISTS")
        })
        .sum()
}

#[test]
fn switchover_closes_the_old_masters_clients_and_loses_no_acknowledged_write() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let target = 1 - m;
        let old_port = c.nodes[m].redis().port();
        let watch = Watch::start(old_port, "sw");
        tokio::time::sleep(Duration::from_millis(300)).await;

        let api = ApiClient::new(Some(SECRET.as_bytes()), Duration::from_secs(15)).expect("api");
        let done: SwitchoverDone = api
            .post(
                &c.nodes[2].api_addr(),
                "/switchover",
                &serde_json::json!({ "to": c.nodes[target].name }),
            )
            .await
            .expect("switchover");
        assert_eq!(done.to, c.nodes[target].name);
        let acked = watch.finish("switchover").await;
        assert!(acked.len() > 10, "the writer wrote before: {}", acked.len());
        assert_eq!(c.wait_stable_master(SETTLE).await, target);
        let new_port = c.nodes[target].redis().port();
        assert_eq!(
            keys_present(new_port, "sw", &acked),
            acked.len(),
            "every write the old master acknowledged is on the new master"
        );
    });
}

#[test]
fn a_sigkilled_master_coming_back_is_demoted_and_its_clients_closed() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let survivor = 1 - m;
        c.nodes[m].redis_mut().kill();
        let name = c.nodes[survivor].name.clone();
        c.wait_until("failover to the survivor", SETTLE, |s| {
            s[survivor]
                .as_ref()
                .is_some_and(|v| v.is_master && v.master.as_deref() == Some(name.as_str()))
        })
        .await;

        // Hold the old master's agent so that clients are surely connected to the stale,
        // empty master before its agent sees it again (it would otherwise demote it first).
        assert!(c.signal_agent(m, "STOP"), "stop the old master's agent");
        c.nodes[m].redis_mut().restart();
        let old_port = c.nodes[m].redis().port();
        let watch = Watch::start(old_port, "stale");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(c.signal_agent(m, "CONT"), "continue the old master's agent");
        watch.finish("stale master rejoining").await;
        assert_eq!(c.wait_stable_master(SETTLE).await, survivor);
    });
}
