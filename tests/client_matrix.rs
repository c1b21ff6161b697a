//! Stock Redis clients through the agents' Sentinel endpoints (issue 12): redis-py 8
//! (RESP2 and RESP3) `Sentinel.master_for`, ioredis with `sentinels`, node-redis 5
//! `createSentinel` and Jedis 5.2 `JedisSentinelPool`, each with default options, all
//! writing at once in one real cluster through (a) a SIGKILL of the master's redis-server
//! and (b) a planned switchover. Each must write on the new master within 2 s of the event,
//! without a restart, surfacing at most one error to its caller.
//!
//! The drivers live in tests/clients/ and are installed by scripts/install-clients.sh
//! (cached). A library whose runtime is missing fails the test when CI is set and is
//! skipped with a printed reason otherwise.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{Cluster, SECRET, run_serial};
use redis_orchestrator::client::ApiClient;
use redis_orchestrator::wire::SwitchoverDone;

const SETTLE: Duration = Duration::from_secs(25);
/// What every client must meet after each event.
const BOUND_MS: u64 = 2_000;
const MAX_ERRORS: usize = 1;
/// How long to keep measuring a client that misses the bound, for the table.
const OBSERVE: Duration = Duration::from_secs(8);
/// The drivers' own bound on their write loop.
const DRIVER_SECONDS: &str = "120";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One JSON line of a driver (tests/clients/README.md).
#[derive(Clone, Debug)]
struct Event {
    ev: String,
    t: u64,
    port: Option<u16>,
    msg: String,
}

fn parse_event(line: &str) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Event {
        ev: v["ev"].as_str()?.to_string(),
        t: v["t"].as_u64()?,
        port: v["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
        msg: v["msg"].as_str().unwrap_or_default().to_string(),
    })
}

struct Driver {
    name: String,
    child: Child,
    events: Arc<Mutex<Vec<Event>>>,
    stderr_path: std::path::PathBuf,
}

impl Driver {
    fn spawn(name: &str, prefix: &str, sentinels: &str, dir: &std::path::Path) -> Driver {
        let mut words = prefix.split_whitespace();
        let program = words.next().expect("a command");
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = File::create(&stderr_path).expect("driver stderr file");
        let mut child = Command::new(program)
            .args(words)
            .args([sentinels, &format!("matrix:{name}"), DRIVER_SECONDS])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} driver ({program}): {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(event) = parse_event(&line) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(event);
                }
            }
        });
        Driver {
            name: name.to_string(),
            child,
            events,
            stderr_path,
        }
    }

    fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first write acknowledged by the server on `port` at or after `since`.
    fn first_ok_on(&self, port: u16, since: u64) -> Option<u64> {
        self.events()
            .iter()
            .find(|e| e.ev == "ok" && e.t >= since && e.port == Some(port))
            .map(|e| e.t)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The drivers scripts/install-clients.sh could install: (name, command prefix).
fn installed_drivers() -> Vec<(String, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-clients.sh");
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-clients.sh");
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(
        out.status.success() || !in_ci,
        "scripts/install-clients.sh failed with CI set: {}",
        out.status
    );
    let mut drivers = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, what)) = line.split_once('=') else {
            continue;
        };
        if let Some(reason) = what.strip_prefix("skip: ") {
            assert!(!in_ci, "{name} is not installed and CI is set: {reason}");
            eprintln!(
                "\n!!! SKIPPED client {name}: {reason}. Install its runtime and run \
                 scripts/install-clients.sh.\n"
            );
        } else {
            drivers.push((name.to_string(), what.to_string()));
        }
    }
    drivers
}

/// One client's outcome for one event.
struct Outcome {
    /// Event to first acknowledged write on the new master.
    reached_ms: Option<u64>,
    /// Errors surfaced between the event and that write.
    errors: usize,
    /// Those of them surfaced after every endpoint named the new master.
    errors_after_named: usize,
    /// Acknowledged by another server after it had reached the new master.
    flapped: bool,
    first_error: Option<String>,
}

fn outcome(driver: &Driver, event_at: u64, named_at: u64, until: u64, new_port: u16) -> Outcome {
    let events = driver.events();
    let window: Vec<&Event> = events
        .iter()
        .filter(|e| e.t >= event_at && e.t <= until)
        .collect();
    let reached = driver
        .first_ok_on(new_port, event_at)
        .filter(|&t| t <= until);
    let errors: Vec<&&Event> = window
        .iter()
        .filter(|e| e.ev == "err" && reached.is_none_or(|r| e.t <= r))
        .collect();
    let flapped = reached.is_some_and(|r| {
        window
            .iter()
            .any(|e| e.ev == "ok" && e.t > r && e.port != Some(new_port))
    });
    Outcome {
        reached_ms: reached.map(|r| r - event_at),
        errors: errors.len(),
        errors_after_named: errors.iter().filter(|e| e.t >= named_at).count(),
        flapped,
        first_error: errors.first().map(|e| e.msg.clone()),
    }
}

/// When every Sentinel endpoint named `port` as the master (polled every 10 ms, for at
/// most `limit`): from then on a client that still fails has only itself to blame.
fn all_endpoints_name(
    endpoints: Vec<u16>,
    port: u16,
    limit: Duration,
) -> std::thread::JoinHandle<Option<u64>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut pending = endpoints;
        while Instant::now() < deadline {
            pending.retain(|&endpoint| {
                let named = redis::Client::open(format!("redis://127.0.0.1:{endpoint}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
                    .and_then(|mut conn| {
                        redis::cmd("SENTINEL")
                            .arg("get-master-addr-by-name")
                            .arg("mymaster")
                            .query::<Option<(String, u16)>>(&mut conn)
                    });
                !matches!(named, Ok(Some((_, p))) if p == port)
            });
            if pending.is_empty() {
                return Some(now_ms());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    })
}

/// Waits until every driver wrote on `port` since `since`, or `limit` passes.
async fn wait_all_on(drivers: &[Driver], port: u16, since: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if drivers.iter().all(|d| d.first_ok_on(port, since).is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One event, as the test saw it (wall-clock ms).
struct Measured {
    what: &'static str,
    at: u64,
    /// When every Sentinel endpoint named the new master.
    named_at: u64,
    /// The end of the measuring window.
    until: u64,
    new_port: u16,
}

impl Measured {
    fn print(&self) {
        println!(
            "{}: every Sentinel endpoint named the new master after {} ms",
            self.what,
            self.named_at - self.at
        );
    }
}

/// Adds `d`'s row for `event` to the table (keyed by client name) and its failures; on a
/// failure, prints its events and stderr (a restart for the next event loses them). Every
/// client is held to the bound, node-redis after a SIGKILL too: it rediscovers the moment
/// the master's socket closes, so it needs the agents to have seen the exit by then.
fn judge(
    d: &mut Driver,
    event: &Measured,
    table: &mut Vec<(String, String)>,
    failures: &mut Vec<String>,
) -> Option<u64> {
    let o = outcome(d, event.at, event.named_at, event.until, event.new_port);
    let alive = d.alive();
    let what = event.what;
    let reached = o.reached_ms.map_or_else(
        || format!(">{}", event.until - event.at),
        |ms| ms.to_string(),
    );
    let restart = if o.reached_ms.is_some() && alive {
        "no"
    } else {
        "needed"
    };
    table.push((
        d.name.clone(),
        format!(
            "{:<16} {:<22} {:>14} {:>7} {:>12} {:>8}  {}",
            d.name,
            what,
            reached,
            o.errors,
            o.errors_after_named,
            restart,
            o.first_error.as_deref().unwrap_or("-")
        ),
    ));
    let before = failures.len();
    if o.reached_ms.is_none_or(|ms| ms > BOUND_MS) {
        failures.push(format!(
            "{} after {what}: first write on the new master after {reached} ms (bound {BOUND_MS}; the endpoints named it after {} ms)",
            d.name,
            event.named_at - event.at
        ));
    }
    // Until the endpoints name the new master, a client that fails fast fails each call
    // (the dead master refuses connections), as with real Sentinel: those are reported,
    // and only the errors after it are the client's own.
    if o.errors_after_named > MAX_ERRORS {
        failures.push(format!(
            "{} after {what}: {} errors surfaced once the new master was named (at most {MAX_ERRORS})",
            d.name, o.errors_after_named
        ));
    }
    if o.flapped {
        failures.push(format!(
            "{} after {what}: wrote to another server after reaching the new master",
            d.name
        ));
    }
    if !alive {
        failures.push(format!("{} exited", d.name));
    }
    if failures.len() > before {
        eprintln!(
            "--- {} events around {what} (ms from the event) ---",
            d.name
        );
        for e in d.events() {
            let t = i128::from(e.t) - i128::from(event.at);
            eprintln!("{t:>7} {} {:?} {}", e.ev, e.port, e.msg);
        }
        eprintln!("--- {} stderr ---\n{}", d.name, d.stderr_tail());
    }
    o.reached_ms
}

/// Where the clients write: two Redis behind three Sentinel-protocol endpoints, with a way
/// to kill the master's Redis, bring it back, and switch over to it again.
trait Deployment {
    fn endpoints(&self) -> Vec<u16>;
    fn dir(&self) -> &std::path::Path;
    /// The master's and the replica's Redis ports, once settled.
    fn ports(&self) -> (u16, u16);
    fn kill_master(&mut self);
    /// Restarts the killed Redis (empty) and waits until it is the replica of the survivor.
    async fn restart_killed(&mut self);
    /// A planned switchover to the first master.
    async fn switch_over_back(&mut self);
}

/// Our three agents (two data nodes and the witness) with their Sentinel endpoints.
struct Ours {
    cluster: Cluster,
    endpoints: Vec<u16>,
    first: usize,
}

impl Ours {
    /// `defaults`: the agent's default timings instead of the tests' fast ones.
    async fn start(defaults: bool) -> Ours {
        let mut cluster = Cluster::new();
        if defaults {
            cluster.timing.clear();
        }
        let endpoints: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
        for (node, port) in cluster.nodes.iter_mut().zip(&endpoints) {
            node.extra_args
                .push(format!("--sentinel-bind=127.0.0.1:{port}"));
        }
        cluster.start_all();
        let first = cluster.wait_stable_master(SETTLE).await;
        Ours {
            cluster,
            endpoints,
            first,
        }
    }
}

impl Deployment for Ours {
    fn endpoints(&self) -> Vec<u16> {
        self.endpoints.clone()
    }

    fn dir(&self) -> &std::path::Path {
        self.cluster.dir()
    }

    fn ports(&self) -> (u16, u16) {
        (
            self.cluster.nodes[self.first].redis().port(),
            self.cluster.nodes[1 - self.first].redis().port(),
        )
    }

    fn kill_master(&mut self) {
        self.cluster.nodes[self.first].redis_mut().kill();
    }

    async fn restart_killed(&mut self) {
        self.cluster.nodes[self.first].redis_mut().restart();
        assert_eq!(
            self.cluster.wait_stable_master(SETTLE).await,
            1 - self.first
        );
    }

    async fn switch_over_back(&mut self) {
        let api = ApiClient::new(Some(SECRET.as_bytes()), Duration::from_secs(15)).expect("api");
        let name = self.cluster.nodes[self.first].name.clone();
        let done: SwitchoverDone = api
            .post(
                &self.cluster.nodes[2].api_addr(),
                "/switchover",
                &serde_json::json!({ "to": name }),
            )
            .await
            .expect("switchover");
        assert_eq!(done.to, name);
    }
}

/// Real Redis Sentinel: the two Redis (the second a replica) and three sentinels, quorum 2.
struct RealSentinel {
    redis: Vec<common::RedisServer>,
    sentinels: Vec<Child>,
    endpoints: Vec<u16>,
    dir: tempfile::TempDir,
}

impl RealSentinel {
    async fn start(down_after: Duration) -> RealSentinel {
        let redis = vec![common::RedisServer::start(), common::RedisServer::start()];
        let master = redis[0].port();
        redis[1]
            .query::<()>(&["REPLICAOF", "127.0.0.1", &master.to_string()])
            .expect("replicaof");
        let dir = tempfile::tempdir().expect("temp dir");
        let endpoints: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
        let sentinels = endpoints
            .iter()
            .map(|port| {
                let conf = dir.path().join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\n\
                         sentinel monitor mymaster 127.0.0.1 {master} 2\n\
                         sentinel down-after-milliseconds mymaster {}\n\
                         sentinel failover-timeout mymaster {}\n\
                         sentinel parallel-syncs mymaster 1\n",
                        dir.path().display(),
                        down_after.as_millis(),
                        (down_after * 10).max(Duration::from_secs(10)).as_millis()
                    ),
                )
                .expect("sentinel config");
                Command::new(common::server_program::redis_server())
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start a sentinel")
            })
            .collect();
        let deployment = RealSentinel {
            redis,
            sentinels,
            endpoints,
            dir,
        };
        deployment.settle(0).await;
        deployment
    }

    /// Every sentinel names `redis[master]` and knows the other Redis as its replica.
    async fn settle(&self, master: usize) {
        let want = self.redis[master].port();
        let other = self.redis[1 - master].port();
        common::eventually("the sentinels agree", SETTLE, || {
            let endpoints = self.endpoints.clone();
            let ok = endpoints.iter().all(|&e| {
                let query = |args: &[&str]| {
                    redis::Client::open(format!("redis://127.0.0.1:{e}/"))
                        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
                        .and_then(|mut conn| common::command(args).query::<redis::Value>(&mut conn))
                };
                let named = matches!(
                    query(&["SENTINEL", "get-master-addr-by-name", "mymaster"]),
                    Ok(redis::Value::Array(ref a)) if a.get(1) == Some(&redis::Value::BulkString(want.to_string().into_bytes()))
                );
                let replicas = format!("{:?}", query(&["SENTINEL", "replicas", "mymaster"]));
                named && replicas.contains(&other.to_string()) && !replicas.contains("s_down")
            });
            async move { ok }
        })
        .await;
    }
}

impl Drop for RealSentinel {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Deployment for RealSentinel {
    fn endpoints(&self) -> Vec<u16> {
        self.endpoints.clone()
    }

    fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn ports(&self) -> (u16, u16) {
        (self.redis[0].port(), self.redis[1].port())
    }

    fn kill_master(&mut self) {
        self.redis[0].kill();
    }

    async fn restart_killed(&mut self) {
        self.redis[0].restart();
        self.settle(1).await;
    }

    async fn switch_over_back(&mut self) {
        // SENTINEL FAILOVER promotes the (only) replica: the first Redis.
        let port = self.endpoints[0];
        let answer = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut conn| {
                common::command(&["SENTINEL", "FAILOVER", "mymaster"]).query::<String>(&mut conn)
            });
        assert_eq!(answer.ok().as_deref(), Some("OK"), "SENTINEL FAILOVER");
    }
}

/// One client's time from an event to its first write on the new master.
type Reached = Vec<((String, &'static str), Option<u64>)>;

/// Every installed client through a SIGKILL of the master's Redis and a planned
/// switchover back; the table rows, the failures against the bound, and the times.
async fn run_matrix<D: Deployment>(
    d: &mut D,
    installed: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>, Reached) {
    let endpoints = d.endpoints();
    let sentinels = endpoints
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut drivers: Vec<Driver> = installed
        .iter()
        .map(|(name, prefix)| Driver::spawn(name, prefix, &sentinels, d.dir()))
        .collect();
    let (first_port, survivor_port) = d.ports();
    // A JVM and the Sentinel discovery take a few seconds on a loaded machine.
    wait_all_on(&drivers, first_port, 0, Duration::from_secs(30)).await;
    for driver in &drivers {
        assert!(
            driver.first_ok_on(first_port, 0).is_some(),
            "{} never wrote on the first master; stderr:\n{}",
            driver.name,
            driver.stderr_tail()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut reached = Vec::new();

    // (a) SIGKILL of the master's redis-server.
    let named = all_endpoints_name(endpoints.clone(), survivor_port, SETTLE);
    let killed_at = now_ms();
    d.kill_master();
    wait_all_on(&drivers, survivor_port, killed_at, OBSERVE).await;
    let event = Measured {
        what: "SIGKILL master redis",
        at: killed_at,
        named_at: named
            .join()
            .expect("endpoint watch")
            .expect("every endpoint names the new master"),
        until: now_ms(),
        new_port: survivor_port,
    };
    event.print();
    for driver in &mut drivers {
        reached.push((
            (driver.name.clone(), event.what),
            judge(driver, &event, &mut table, &mut failures),
        ));
    }
    // The killed Redis comes back (empty) and is demoted to a replica.
    d.restart_killed().await;
    // A client that needed a restart gets one, so that (b) measures it afresh.
    for (driver, (name, prefix)) in drivers.iter_mut().zip(installed) {
        if driver.first_ok_on(survivor_port, killed_at).is_none() {
            *driver = Driver::spawn(name, prefix, &sentinels, d.dir());
        }
    }
    let since = now_ms();
    wait_all_on(&drivers, survivor_port, since, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (b) A planned switchover back to the first node.
    let named = all_endpoints_name(endpoints, first_port, SETTLE);
    let switch_at = now_ms();
    d.switch_over_back().await;
    wait_all_on(&drivers, first_port, switch_at, OBSERVE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = Measured {
        what: "planned switchover",
        at: switch_at,
        named_at: named
            .join()
            .expect("endpoint watch")
            .expect("every endpoint names the new master"),
        until: now_ms(),
        new_port: first_port,
    };
    event.print();
    for driver in &mut drivers {
        reached.push((
            (driver.name.clone(), event.what),
            judge(driver, &event, &mut table, &mut failures),
        ));
    }
    table.sort();
    (table, failures, reached)
}

fn print_table(table: &[(String, String)]) {
    println!(
        "\n{:<16} {:<22} {:>14} {:>7} {:>12} {:>8}  first error",
        "client", "event", "unavailable ms", "errors", "after named", "restart"
    );
    for row in table {
        println!("{}", row.1);
    }
}

#[test]
fn stock_clients_follow_a_failover_and_a_switchover() {
    let installed = installed_drivers();
    if installed.is_empty() {
        eprintln!("\n!!! SKIPPED: no stock client could be installed\n");
        return;
    }
    run_serial(async {
        let mut ours = Ours::start(false).await;
        let (table, failures, _) = run_matrix(&mut ours, &installed).await;
        print_table(&table);
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    });
}

/// The benchmark of issue 12.4 (on demand: `bench/clients-vs-sentinel.sh`): each client's
/// write unavailability through both events with our agents at their defaults, next to
/// the same client against real Redis Sentinel (down-after 1 s; its default is 30 s) in
/// the same run.
#[test]
#[ignore]
fn bench_clients_ours_vs_real_sentinel() {
    let installed = installed_drivers();
    assert!(!installed.is_empty(), "no stock client could be installed");
    run_serial(async {
        let mut ours = Ours::start(true).await;
        let (table, _, ours_reached) = run_matrix(&mut ours, &installed).await;
        print_table(&table);
        drop(ours);
        let mut sentinel = RealSentinel::start(Duration::from_secs(1)).await;
        let (table, _, sentinel_reached) = run_matrix(&mut sentinel, &installed).await;
        print_table(&table);
        println!(
            "\n{:<16} {:<22} {:>10} {:>13} {:>9}",
            "client", "event", "ours ms", "sentinel ms", "ours/sen"
        );
        let show = |ms: Option<u64>| ms.map_or_else(|| "never".to_string(), |m| m.to_string());
        for ((key, ours_ms), (_, sentinel_ms)) in ours_reached.iter().zip(&sentinel_reached) {
            let ratio = match (ours_ms, sentinel_ms) {
                (Some(o), Some(s)) if *s > 0 => format!("{:.2}", *o as f64 / *s as f64),
                _ => "-".into(),
            };
            println!(
                "{:<16} {:<22} {:>10} {:>13} {:>9}",
                key.0,
                key.1,
                show(*ours_ms),
                show(*sentinel_ms),
                ratio
            );
        }
    });
}
