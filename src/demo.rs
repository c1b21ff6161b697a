//! `redis-orchestrator demo`: a three-site cluster on 127.0.0.1 (two Redis data nodes
//! and a witness), a live status table, a writer, and a master kill to watch fail over.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::client::ApiClient;
use crate::lock;
use crate::wire::StateView;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Kill the master's redis-server (SIGKILL) after this long, instead of waiting for Enter.
    #[arg(long, value_parser = crate::duration::parse)]
    pub kill_master_after: Option<Duration>,
    /// Stop the demo by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = crate::duration::parse)]
    pub exit_after: Option<Duration>,
    /// First of the local ports used (redis, raft and API ports follow from it).
    #[arg(long, default_value_t = 17000)]
    pub base_port: u16,
    /// The same certificate for every agent (it must name 127.0.0.1), passed on to them.
    #[command(flatten)]
    pub tls: crate::config::TlsArgs,
}

struct Site {
    name: &'static str,
    redis_port: Option<u16>,
    raft_port: u16,
    api_port: u16,
    redis: Option<Child>,
    agent: Option<Child>,
}

impl Site {
    fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }
}

/// Writes observed by the demo's writer.
#[derive(Default)]
struct WriterStats {
    acked: u64,
    failed: u64,
    last_ok: Option<Instant>,
    last_target: Option<String>,
    /// (kill time, first acknowledged write on the new master after it)
    outage: Option<(Instant, Option<Instant>)>,
}

fn find_redis_server() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    })
}

/// Wait until a freshly spawned process listens on `port`; if it exits first (a port
/// already taken, say), say which and where its log is.
async fn wait_listening(
    child: &mut Child,
    port: u16,
    what: &str,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited at start ({status}); see {}",
                log.display()
            ));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} does not listen on port {port}; see {}",
                log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spawn_redis(bin: &Path, port: u16, dir: &Path) -> std::io::Result<Child> {
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("redis.log"))?;
    Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            // A Redis that (re)starts refuses writes until its agent has placed it.
            "--min-replicas-to-write",
            "1",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

fn spawn_agent(
    site: &Site,
    peers: &str,
    secret: &str,
    tls: &crate::config::TlsArgs,
    dir: &Path,
) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("agent.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg(format!("--raft-peers={peers}"))
        .arg(format!("--raft-advertise=127.0.0.1:{}", site.raft_port))
        .arg(format!("--raft-bind=127.0.0.1:{}", site.raft_port))
        .arg(format!("--api-bind=127.0.0.1:{}", site.api_port))
        .arg(format!("--raft-data-dir={}", dir.join("raft").display()))
        .arg(format!("--site={}", site.name))
        .arg(format!("--node-name={}", site.name))
        .arg("--election-mode=raft")
        // A person reads these files: text, not the JSON a log collector gets by default.
        .arg("--log-format=text")
        .env("SHARED_SECRET", secret)
        .env("TLS_CERT_FILE", &tls.tls_cert_file)
        .env("TLS_KEY_FILE", &tls.tls_key_file)
        .env("TLS_CA_FILE", &tls.tls_ca_file)
        .env("TLS_CLIENT_AUTH", tls.tls_client_auth.to_string())
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match site.redis_port {
        Some(port) => cmd.args([
            "--redis-host=127.0.0.1".to_string(),
            format!("--redis-port={port}"),
        ]),
        None => cmd.arg("--standalone"),
    };
    cmd.spawn()
}

fn render(
    views: &[(String, Option<StateView>)],
    stats: &WriterStats,
    events: &[String],
    tty: bool,
) -> String {
    let mut out = String::new();
    if tty {
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str("redis-orchestrator demo: three sites on 127.0.0.1 (Ctrl-C to stop)\n\n");
    out.push_str(&format!(
        "{:<8} {:<8} {:<8} {:<9} {:>5} {:<10} {:<9} {:>10}  {}\n",
        "NODE", "SITE", "KIND", "REDIS", "EPOCH", "RAFT", "LEADER", "OFFSET", "NOTE"
    ));
    for (name, view) in views {
        match view {
            Some(v) => out.push_str(&format!(
                "{:<8} {:<8} {:<8} {:<9} {:>5} {:<10} {:<9} {:>10}  {}\n",
                v.name,
                v.site,
                if v.is_witness { "witness" } else { "data" },
                v.role,
                v.epoch,
                v.raft_state,
                v.raft_leader.as_deref().unwrap_or("-"),
                v.repl_offset.map_or("-".to_string(), |o| o.to_string()),
                if v.fenced {
                    "FENCED".to_string()
                } else if v.is_master {
                    "<- master".to_string()
                } else {
                    v.redis_error.clone().unwrap_or_default()
                },
            )),
            None => out.push_str(&format!("{name:<8} (agent not answering)\n")),
        }
    }
    out.push_str(&format!(
        "\nwriter: {} writes acknowledged, {} refused, writing to {}\n",
        stats.acked,
        stats.failed,
        stats.last_target.as_deref().unwrap_or("-")
    ));
    for e in events.iter().rev().take(8).rev() {
        out.push_str(&format!("  {e}\n"));
    }
    out
}

/// Address of the node whose agent says its Redis is the writable master.
fn master_redis(views: &[(String, Option<StateView>)]) -> Option<(String, String)> {
    views
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .find(|v| v.is_master)
        .and_then(|v| v.redis_addr.clone().map(|a| (v.name.clone(), a)))
}

async fn write_loop(target: Arc<Mutex<Option<(String, String)>>>, stats: Arc<Mutex<WriterStats>>) {
    let mut conn: Option<(String, redis::aio::MultiplexedConnection)> = None;
    let mut seen_master = false;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some((name, addr)) = lock(&target).clone() else {
            // Before the first election there is nothing to refuse writes yet.
            if seen_master {
                lock(&stats).failed += 1;
            }
            continue;
        };
        seen_master = true;
        if conn.as_ref().is_none_or(|(a, _)| *a != addr) {
            conn = match connect(&addr).await {
                Some(c) => Some((addr.clone(), c)),
                None => {
                    lock(&stats).failed += 1;
                    continue;
                }
            };
        }
        let Some((_, c)) = conn.as_mut() else {
            continue;
        };
        let result: redis::RedisResult<i64> =
            redis::cmd("INCR").arg("demo:counter").query_async(c).await;
        let mut s = lock(&stats);
        match result {
            Ok(_) => {
                s.acked += 1;
                s.last_ok = Some(Instant::now());
                // The old master is dead, so the first acknowledgement after the kill comes from the new one.
                if let Some((_, first_ok @ None)) = s.outage.as_mut() {
                    *first_ok = Some(Instant::now());
                }
                s.last_target = Some(name);
            }
            Err(_) => {
                s.failed += 1;
                conn = None;
            }
        }
    }
}

async fn connect(addr: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()
}

pub async fn run(args: DemoArgs) -> ExitCode {
    let Some(redis_bin) = find_redis_server() else {
        eprintln!(
            "redis-server was not found on PATH.\nInstall it first, e.g. on Debian/Ubuntu: sudo apt-get install -y redis-server\n(or run ./scripts/demo.sh, which installs it when it can)"
        );
        return ExitCode::FAILURE;
    };
    let dir = match tempfile::Builder::new()
        .prefix("redis-orchestrator-demo-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let b = args.base_port;
    let mut sites = vec![
        Site {
            name: "site-a",
            redis_port: Some(b + 1),
            raft_port: b + 101,
            api_port: b + 201,
            redis: None,
            agent: None,
        },
        Site {
            name: "site-b",
            redis_port: Some(b + 2),
            raft_port: b + 102,
            api_port: b + 202,
            redis: None,
            agent: None,
        },
        Site {
            name: "site-c",
            redis_port: None,
            raft_port: b + 103,
            api_port: b + 203,
            redis: None,
            agent: None,
        },
    ];
    let peers = sites
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.raft_port))
        .collect::<Vec<_>>()
        .join(",");
    let secret = hex::encode(rand::random::<[u8; 16]>());
    for site in &mut sites {
        let site_dir = dir.path().join(site.name);
        if let Some(port) = site.redis_port {
            match spawn_redis(&redis_bin, port, &site_dir).await {
                Ok(mut c) => {
                    let what = format!("redis-server of {} (port {port})", site.name);
                    if let Err(e) =
                        wait_listening(&mut c, port, &what, &site_dir.join("redis.log")).await
                    {
                        eprintln!("{e}\n(choose other ports with --base-port)");
                        return ExitCode::FAILURE;
                    }
                    site.redis = Some(c);
                }
                Err(e) => {
                    eprintln!("cannot start redis-server for {}: {e}", site.name);
                    return ExitCode::FAILURE;
                }
            }
        }
        match spawn_agent(site, &peers, &secret, &args.tls, &site_dir) {
            Ok(mut c) => {
                let what = format!("agent of {} (API port {})", site.name, site.api_port);
                if let Err(e) =
                    wait_listening(&mut c, site.api_port, &what, &site_dir.join("agent.log")).await
                {
                    eprintln!("{e}\n(choose other ports with --base-port)");
                    return ExitCode::FAILURE;
                }
                site.agent = Some(c);
            }
            Err(e) => {
                eprintln!("cannot start the agent for {}: {e}", site.name);
                return ExitCode::FAILURE;
            }
        }
    }
    let tls = match args.tls.files() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let api = match ApiClient::with_tls(
        Some(secret.as_bytes()),
        Duration::from_millis(500),
        tls.as_ref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot build the HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tty = std::io::stdout().is_terminal();
    let mut events = vec![format!(
        "logs of every process are under {}",
        dir.path().display()
    )];
    if args.kill_master_after.is_none() {
        events.push("press Enter to SIGKILL the master's redis-server".into());
    }
    let target = Arc::new(Mutex::new(None));
    let stats = Arc::new(Mutex::new(WriterStats::default()));
    let writer = tokio::spawn(write_loop(target.clone(), stats.clone()));
    let (enter_tx, mut enter_rx) = tokio::sync::mpsc::channel::<()>(1);
    if args.kill_master_after.is_none() {
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                if enter_tx.blocking_send(()).is_err() {
                    break;
                }
                line.clear();
            }
        });
    }

    let started = Instant::now();
    let mut killed: Option<(usize, Instant)> = None;
    let mut restarted = false;
    let mut reported_outage = false;
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let code = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break ExitCode::SUCCESS,
            _ = tick.tick() => {}
            Some(()) = enter_rx.recv() => {
                if killed.is_none() {
                    killed = kill_master(&mut sites, &target, &stats, &mut events);
                }
            }
        }
        if args.exit_after.is_some_and(|d| started.elapsed() >= d) {
            break ExitCode::SUCCESS;
        }
        let mut views = Vec::new();
        for site in &sites {
            views.push((
                site.name.to_string(),
                api.state(&site.api_addr()).await.ok(),
            ));
        }
        let master = master_redis(&views);
        *lock(&target) = master.clone();
        if killed.is_none()
            && args
                .kill_master_after
                .is_some_and(|d| started.elapsed() >= d)
            && master.is_some()
        {
            killed = kill_master(&mut sites, &target, &stats, &mut events);
        }
        if let Some((index, at)) = killed {
            let outage = lock(&stats).outage;
            if let (false, Some((_, Some(first_ok)))) = (reported_outage, outage) {
                reported_outage = true;
                let new_master = master.as_ref().map_or("?", |(n, _)| n.as_str()).to_string();
                events.push(format!(
                    "failover: {new_master} took writes {} ms after the kill",
                    first_ok.duration_since(at).as_millis()
                ));
            }
            if reported_outage && !restarted && at.elapsed() >= Duration::from_secs(5) {
                restarted = true;
                let site = &mut sites[index];
                if let (Some(port), Some(_)) = (site.redis_port, site.redis.as_ref()) {
                    match spawn_redis(&redis_bin, port, &dir.path().join(site.name)).await {
                        Ok(c) => {
                            site.redis = Some(c);
                            events.push(format!(
                                "restarted {}'s redis-server (empty): watch it rejoin as a replica",
                                site.name
                            ));
                        }
                        Err(e) => events.push(format!(
                            "could not restart {}'s redis-server: {e}",
                            site.name
                        )),
                    }
                }
            }
        }
        let refresh = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        };
        if last_print.elapsed() >= refresh {
            last_print = Instant::now();
            print!("{}", render(&views, &lock(&stats), &events, tty));
        }
    };
    // One last table, so what stays on screen is the final state.
    let mut views = Vec::new();
    for site in &sites {
        views.push((
            site.name.to_string(),
            api.state(&site.api_addr()).await.ok(),
        ));
    }
    print!("{}", render(&views, &lock(&stats), &events, false));
    writer.abort();
    for site in &mut sites {
        for child in [site.agent.as_mut(), site.redis.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill().await;
        }
    }
    println!("\nstopped all processes; removed {}", dir.path().display());
    code
}

fn kill_master(
    sites: &mut [Site],
    target: &Arc<Mutex<Option<(String, String)>>>,
    stats: &Arc<Mutex<WriterStats>>,
    events: &mut Vec<String>,
) -> Option<(usize, Instant)> {
    let (master_name, _) = lock(target).clone()?;
    let index = sites.iter().position(|s| s.name == master_name)?;
    let child = sites[index].redis.as_mut()?;
    if let Err(e) = child.start_kill() {
        events.push(format!("could not kill {master_name}'s redis-server: {e}"));
        return None;
    }
    let at = Instant::now();
    lock(stats).outage = Some((at, None));
    events.push(format!(
        "SIGKILLed {master_name}'s redis-server (the master)"
    ));
    Some((index, at))
}
