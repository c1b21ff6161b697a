//! What an operator reads: the real binary's stderr while the other sites are not deployed
//! yet (their peer ports refuse connections), on a first start and on a restart. JSON by
//! default when stderr is not a terminal, text on request, never ANSI colours in a file;
//! no ERROR line; at most one WARN per absent peer.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{RedisServer, free_port};
use serde_json::Value;

const RUN_FOR: Duration = Duration::from_secs(5);

struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the agent (first of three peers; the other two absent) for [`RUN_FOR`], then stop it
/// with SIGTERM; returns its stderr.
fn run_agent(redis: &RedisServer, peers: &str, data: &Path, extra: &[&str]) -> String {
    let stderr_path = data.with_extension(format!("stderr-{}", free_port()));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let me = peers.split(',').next().expect("own peer");
    let api_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_redis-orchestrator"))
        .arg(format!("--raft-peers={peers}"))
        .arg(format!("--raft-advertise={me}"))
        .arg(format!("--raft-bind={me}"))
        .arg(format!("--api-bind=127.0.0.1:{api_port}"))
        .arg(format!("--raft-data-dir={}", data.display()))
        .arg("--redis-host=127.0.0.1")
        .arg(format!("--redis-port={}", redis.port()))
        .arg("--election-mode=raft")
        .arg("--kubernetes=off")
        .arg("--site=site-a")
        .arg("--node-name=site-a")
        .args(extra)
        // The default filter is under test, not the caller's.
        .env_remove("RUST_LOG")
        .env("SHARED_SECRET", "logs-test-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the agent");
    let mut agent = Agent { child };
    std::thread::sleep(RUN_FOR);
    // SAFETY: kill(2) on the child's own pid, which has not been reaped yet.
    let pid = i32::try_from(agent.child.id()).expect("pid");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
    let status = agent.child.wait().expect("wait for the agent");
    assert!(status.success(), "agent exits cleanly on SIGTERM: {status}");
    std::fs::read_to_string(&stderr_path).expect("read stderr")
}

/// (level, message, peer) of every line; panics on a line that is not JSON.
fn json_lines(stderr: &str) -> Vec<(String, String, Option<String>)> {
    stderr
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            (
                field("level").unwrap_or_default(),
                field("message").unwrap_or_default(),
                field("peer"),
            )
        })
        .collect()
}

fn assert_quiet(what: &str, lines: &[(String, String, Option<String>)], absent: &[&str]) {
    let errors: Vec<_> = lines.iter().filter(|(l, _, _)| l == "ERROR").collect();
    assert!(errors.is_empty(), "{what}: ERROR lines: {errors:#?}");
    let mut warns: BTreeMap<String, usize> = BTreeMap::new();
    for (level, message, peer) in lines {
        if level == "WARN" {
            let key = peer.clone().unwrap_or_else(|| message.clone());
            *warns.entry(key).or_default() += 1;
        }
    }
    for (key, count) in &warns {
        assert!(
            absent.contains(&key.as_str()),
            "{what}: a WARN not about an absent peer: {key}"
        );
        assert_eq!(*count, 1, "{what}: WARNs about {key}");
    }
}

#[test]
fn absent_peers_are_one_warn_each_and_nothing_is_an_error() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("raft");
    let peers: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let absent = [peers[1].as_str(), peers[2].as_str()];
    let peers = peers.join(",");

    // First start, JSON because stderr is a file.
    let first = run_agent(&redis, &peers, &data, &[]);
    assert!(!first.contains('\x1b'), "no ANSI codes in a file: {first}");
    let lines = json_lines(&first);
    assert!(
        lines
            .iter()
            .any(|(_, m, _)| m.contains("initialized a new cluster")),
        "the first start bootstraps: {first}"
    );
    assert_quiet("first start", &lines, &absent);
    for peer in absent {
        assert!(
            lines
                .iter()
                .any(|(l, _, p)| l == "WARN" && p.as_deref() == Some(peer)),
            "the absent peer {peer} is named once: {first}"
        );
    }

    // A restart on the same Raft data: openraft's "Can not initialize" must not show.
    let again = run_agent(&redis, &peers, &data, &[]);
    let lines = json_lines(&again);
    assert!(
        lines
            .iter()
            .any(|(_, m, _)| m.contains("raft state found on disk")),
        "the restart rejoins: {again}"
    );
    assert_quiet("restart", &lines, &absent);

    // Text on request: still no colours, one event per line, same levels.
    let text = run_agent(&redis, &peers, &data, &["--log-format=text"]);
    assert!(!text.contains('\x1b'), "no ANSI codes in a file: {text}");
    assert!(
        text.lines().all(|l| !l.trim_start().starts_with('{')),
        "text, not JSON: {text}"
    );
    assert!(!text.contains(" ERROR "), "no ERROR in text either: {text}");
    assert!(
        text.contains(" INFO ") && text.contains("starting agent"),
        "{text}"
    );
    for peer in absent {
        let warns = text
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(peer))
            .count();
        assert_eq!(warns, 1, "one WARN for {peer}: {text}");
    }
}
